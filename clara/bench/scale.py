"""`clara bench scale`: add-acknowledgement and recall latency, and RSS, as the store grows.

For each size N a fresh store gets N facts in one scope (`bench:main`) plus N/100 facts in each of
five small scopes; then it measures single `add` acknowledgements (while the indexer works) and
`recall` latency — the query embedding included, every query text distinct so no cache helps —
over the big scope ("one scope", every fact eligible) and over one small scope ("scoped").
Sentences are generated from a fixed vocabulary with a seeded RNG, so runs are comparable.
"""

from __future__ import annotations

import os
import random
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from clara.bench.stats import pct, rss_mb
from storage import FactStore, StoreConfig

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


async def run(
    sizes: list[int],
    *,
    queries: int = 200,
    adds: int = 500,
    database_url: str | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for n in sizes:
        with tempfile.TemporaryDirectory(prefix="clara-scale-") as tmp:
            out[str(n)] = await _one(n, queries, adds, database_url, Path(tmp), progress)
    return out


async def _one(n, queries, adds, database_url, tmp: Path, progress) -> dict[str, float]:
    rng = random.Random(n)
    res: dict[str, float] = {"facts": n}
    t = time.perf_counter()
    store = await FactStore.open(
        StoreConfig(database_url=database_url, data_dir=tmp, embed_threads=os.cpu_count() or 1)
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
    finally:
        await store.aclose()
    return res
