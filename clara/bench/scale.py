"""`clara bench scale`: add-acknowledgement and recall latency, and RSS, as the store grows.

For each size N a fresh store gets N facts in one scope (`bench:main`) plus N/100 facts in each of
five small scopes; then it measures single `add` acknowledgements (while the indexer works) and
`recall` latency — the query embedding included, every query text distinct so no cache helps —
over the big scope ("one scope", every fact eligible) and over one small scope ("scoped").
Sentences are generated from a fixed vocabulary with a seeded RNG, so runs are comparable.

On PostgreSQL (`database_url`) each size runs in a private database created for it and dropped
afterwards (the server's other databases are untouched). With `synthetic`, facts are embedded by
`SyntheticEmbedder` (a hashed bag-of-words projection, ~1000x faster than the model, so that
100K-1M facts load in minutes) while every recall still pays a real MiniLM query embedding.
With `explain`, every SQL statement of one recall over the big scope is captured and its plan
returned (PostgreSQL: EXPLAIN (ANALYZE, BUFFERS); SQLite: EXPLAIN QUERY PLAN) under "explain".
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import random
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from clara.bench.stats import pct, rss_mb
from storage import FactStore, StoreConfig
from storage.embeddings import Embedder, make_embedder
from storage.naming import t as tname
from storage.text import words

NAMES = (
    "Anna Ben Carla Dmitri Elena Farid Grace Hiro Ines Jonas Kemi Luis Mara Nils Olga Priya Quinn Rosa Sami Tara"
).split()
VERBS = "visited loves hates painted cooked booked bought fixed sold planned missed remembered organised".split()
THINGS = (
    "a red bicycle|the old piano|a sourdough loaf|the garden shed|a trip to Kyoto|the quarterly report|"
    "a birthday party|the kitchen sink|a marathon|the family car|a pottery class|the tax return|a new laptop|"
    "a camping weekend|the wedding cake|a chess tournament|the roof tiles|a jazz concert|the dog's vet visit"
).split("|")
PLACES = "Lisbon Porto Berlin Nairobi Osaka Lima Oslo Quito Hanoi Tunis Austin Leeds Perth Cork Graz".split()
WHEN = "on Monday|last week|in March|yesterday|next summer|at dawn|after work|on her birthday|in 2019".split("|")


def sentence(rng: random.Random, i: int) -> str:
    return (
        f"{rng.choice(NAMES)} {rng.choice(VERBS)} {rng.choice(THINGS)} in {rng.choice(PLACES)} "
        f"{rng.choice(WHEN)} (note {i})"
    )


def question(rng: random.Random, i: int) -> str:
    return f"what did {rng.choice(NAMES)} do with {rng.choice(THINGS)} in {rng.choice(PLACES)} #{i}"


class SyntheticEmbedder(Embedder):
    """Fast stand-in for loading large stores: a text's vector is the normalised sum of one fixed
    random unit vector per word (seeded by the word's hash), so texts sharing words are close.
    Queries are embedded the same way, after running the real model on the query (result
    discarded) so that recall latency includes a real query embedding. Shape (n, dim), float32."""

    name = "synthetic-bow"

    def __init__(self, real: Embedder | None = None, dim: int = 384) -> None:
        super().__init__()
        self.dim = dim
        self.real = real
        self._words: dict[str, np.ndarray] = {}

    def _word(self, w: str) -> np.ndarray:
        v = self._words.get(w)
        if v is None:
            seed = int.from_bytes(hashlib.blake2b(w.encode(), digest_size=8).digest(), "little")
            v = np.random.default_rng(seed).standard_normal(self.dim).astype(np.float32)
            v = self._words[w] = v / np.linalg.norm(v)
        return v

    def embed_documents(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            for w in words(t):
                out[i] += self._word(w)
            norm = float(np.linalg.norm(out[i]))
            out[i] = out[i] / norm if norm else self._word("")
        return out

    def _embed_query(self, text: str) -> np.ndarray:
        if self.real is not None:
            self.real.embed_query(text)  # the cost of a real query embedding
        return self.embed_documents([text])[0]


@contextlib.contextmanager
def private_database(url: str) -> Iterator[str]:
    """A fresh PostgreSQL database on the server of `url` (created, yielded as a URL, dropped)."""
    import psycopg
    from sqlalchemy.engine import make_url

    base = make_url(url)
    name = f"clara_scale_{uuid.uuid4().hex[:10]}"
    admin = base.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True, connect_timeout=10) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield base.set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(admin, autocommit=True, connect_timeout=10) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def run(
    sizes: list[int],
    *,
    queries: int = 200,
    adds: int = 500,
    database_url: str | None = None,
    synthetic: bool = False,
    explain: bool = False,
    progress: Callable[[str, int, int], None] | None = None,
) -> dict[str, dict[str, float]]:
    """{str(size): {metric: value}} (latencies in ms, rates per second, RSS in MiB); with
    `explain`, also {"explain <size>": {"text": the plans of one recall's statements}}."""
    out: dict[str, dict] = {}
    pg = bool(database_url) and database_url.split(":", 1)[0].startswith("postgres")
    for n in sizes:
        with tempfile.TemporaryDirectory(prefix="clara-scale-") as tmp:
            with private_database(database_url) if pg else contextlib.nullcontext(database_url) as url:
                out[str(n)] = await _one(n, queries, adds, url, Path(tmp), progress, synthetic, explain)
        if explain:
            out[f"explain {n}"] = {"text": out[str(n)].pop("explain")}
    return out


async def _one(n, queries, adds, database_url, tmp: Path, progress, synthetic, explain) -> dict[str, float]:
    rng = random.Random(n)
    res: dict = {"facts": n}
    t = time.perf_counter()
    threads = os.cpu_count() or 1
    embedder = SyntheticEmbedder(make_embedder("local", threads=threads)) if synthetic else None
    store = await FactStore.open(
        StoreConfig(database_url=database_url, data_dir=tmp, embed_threads=threads), embedder=embedder
    )
    await store.ensure_scope("bench:main", "channel")
    small = [f"bench:small{i}" for i in range(5)]
    for s in small:
        await store.ensure_scope(s, "user", owner=s)
    await store.recall("warm up the model", ["bench:main"])
    res["open_s"] = time.perf_counter() - t
    res["rss_mb_open"] = rss_mb()
    try:
        plan = [("bench:main", n)] + [(s, max(1, n // 100)) for s in small]
        total = sum(c for _, c in plan)
        done = 0
        t = time.perf_counter()
        for scope, count in plan:
            for start in range(0, count, 1000):
                items = [{"content": sentence(rng, done + j)} for j in range(min(1000, count - start))]
                r = await store.add_many(items, scope)
                done += r.saved
                if progress:
                    progress(f"load {n}", done, total)
        res["import_ack_per_s"] = total / (time.perf_counter() - t)
        await store.indexer.drain(
            timeout=24 * 3600, progress=(lambda d, tot: progress(f"embed {n}", d, tot)) if progress else None
        )
        res["import_indexed_per_s"] = total / (time.perf_counter() - t)
        t = time.perf_counter()
        await store.index.optimize()
        res["optimize_s"] = time.perf_counter() - t
        if store.dialect != "sqlite":
            # What autovacuum does to a store in steady state: statistics for the planner, and
            # the GIN index's pending list merged (a bulk load leaves every new row in it, and
            # each full-text query then scans that list linearly).
            t = time.perf_counter()
            await asyncio.to_thread(_vacuum_analyze, database_url)
            res["vacuum_analyze_s"] = time.perf_counter() - t

        ack = []
        for i in range(adds):
            t = time.perf_counter()
            await store.add(sentence(rng, total + i), "bench:main")
            ack.append((time.perf_counter() - t) * 1000)
        res["add_ack_p50_ms"], res["add_ack_p95_ms"] = pct(ack, 50), pct(ack, 95)
        await store.drain(timeout=600)

        for label, scopes in (("recall", ["bench:main"]), ("recall_scoped", [small[0]])):
            lat = []
            for i in range(queries):
                q = question(rng, i + (0 if label == "recall" else queries))
                t = time.perf_counter()
                await store.recall(q, scopes, k=10, bump=False)
                lat.append((time.perf_counter() - t) * 1000)
                if progress and i % 20 == 0:
                    progress(f"{label} {n}", i + 1, queries)
            res[f"{label}_p50_ms"], res[f"{label}_p95_ms"] = pct(lat, 50), pct(lat, 95)
        res["rss_mb"] = rss_mb()
        if explain:
            res["explain"] = await explain_recall(store, question(rng, 10**6), ["bench:main"])
    finally:
        await store.aclose()
    return res


def _vacuum_analyze(url: str) -> None:
    """VACUUM ANALYZE the fact tables of the PostgreSQL database at `url`."""
    import psycopg
    from sqlalchemy.engine import make_url

    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
        for table in ("facts", "fact_entities", "entities"):
            conn.execute(f"VACUUM ANALYZE {tname(table)}")


async def explain_recall(store: FactStore, query: str, scopes: list[str]) -> str:
    """The plan of every SQL statement one `store.recall(query, scopes)` runs on the read engine,
    as text: PostgreSQL EXPLAIN (ANALYZE, BUFFERS) (each statement executed again), SQLite
    EXPLAIN QUERY PLAN."""
    from sqlalchemy import event

    engine = store.engines.sync_reader
    seen: list[tuple[str, object]] = []

    def capture(conn, cursor, statement, parameters, context, executemany):
        seen.append((statement, parameters))

    store.embedder.clear_cache()
    event.listen(engine, "before_cursor_execute", capture)
    try:
        await store.recall(query, scopes, k=10, bump=False)
    finally:
        event.remove(engine, "before_cursor_execute", capture)
    pg = store.dialect != "sqlite"
    prefix = "EXPLAIN (ANALYZE, BUFFERS) " if pg else "EXPLAIN QUERY PLAN "

    def plans() -> str:
        out = []
        raw = engine.raw_connection()
        try:
            cur = raw.cursor()
            for statement, params in seen:
                cur.execute(prefix + statement, params)
                rows = cur.fetchall()
                plan = "\n".join(str(r[0]) if pg else f"{r[1]:>3} {r[3]}" for r in rows)
                out.append(f"-- {statement.strip()}\n{plan}")
            raw.rollback()
        finally:
            raw.close()
        return "\n\n".join(out)

    return await asyncio.to_thread(plans)
