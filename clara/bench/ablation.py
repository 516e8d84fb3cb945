"""`clara bench ablation`: recall@k and query latency of Clara's recall with each signal switched
off in turn, on LoCoMo-format conversations (the same metric as `clara bench locomo`).

The turns are ingested once into a store in `data_dir` (kept between runs when given, so that a
profile or an ablation does not pay the embedding of every turn again); then every question is
recalled once per variant. A variant switches off one signal of `storage.recall` through
`Recaller.off` (a benchmark hook; the bot never sets it):

  lexical, lexical_ctx, dense, dense_ctx   the four normalised signals (their weight set to 0)
  neighbour    neighbour smoothing
  entity       the entity-share boost
  names        the removal of speaker names from the searched query
  lexical_path no full-text candidates at all (the lexical signals of dense candidates are 0)
  dense_path   no vector search (no query embedding; the dense signals come only from the
               stored vectors of lexical candidates — so the embedding is still computed)

Latency is measured with the query embedding cache cleared before every question, so every
query is embedded (as in `clara bench locomo`, where every question text is new).
With `profile`, the full variant also runs under cProfile and the top functions are returned.
"""

from __future__ import annotations

import cProfile
import io
import os
import pstats
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from clara import locomo
from clara.bench.locomo import KS, _evidence
from clara.bench.stats import pct, recall_at
from storage import FactStore, StoreConfig

VARIANTS = (
    "full",
    "-lexical",
    "-lexical_ctx",
    "-dense",
    "-dense_ctx",
    "-neighbour",
    "-entity",
    "-names",
    "-lexical_path",
)


async def run(
    files: list[str | Path],
    *,
    database_url: str | None = None,
    data_dir: Path | None = None,
    variants: tuple[str, ...] = VARIANTS,
    repeat: int = 1,
    profile: bool = False,
    progress: Callable[[str, int, int], None] | None = None,
) -> dict[str, dict[str, float]]:
    """{variant: {"R@k": mean recall, "query_p50_ms", "query_p95_ms", "questions"}} and, with
    `profile`, {"profile": {"text": cProfile top functions of the full variant}}. `repeat`
    runs each variant that many times (latency: all runs pooled; recall: the first)."""
    convs = [c for f in locomo.expand(files) for c in locomo.load(f)]
    if not convs:
        raise ValueError("no LoCoMo conversations found in the given paths")
    with tempfile.TemporaryDirectory(prefix="clara-ablation-") as tmp:
        root = Path(data_dir) if data_dir else Path(tmp)
        store = await FactStore.open(
            StoreConfig(database_url=database_url, data_dir=root, embed_threads=os.cpu_count() or 1)
        )
        try:
            await _ingest(store, convs, progress)
            out: dict[str, dict[str, float]] = {}
            questions = [(f"locomo:{c.id}", q) for c in convs for q in c.scored_questions()]
            await _pass(store, questions[:20], frozenset())  # warm up caches and the model
            for v in variants:
                off = frozenset() if v == "full" else frozenset({v.lstrip("-")})
                lat: list[float] = []
                rec: dict[int, list[float]] = {}
                for r in range(repeat):
                    got, ms = await _pass(store, questions, off, progress=progress, label=v)
                    lat += ms
                    if r == 0:
                        rec = got
                out[v] = {f"R@{k}": float(np.mean(x)) for k, x in rec.items()}
                out[v] |= {"query_p50_ms": pct(lat, 50), "query_p95_ms": pct(lat, 95), "questions": len(questions)}
            if profile:
                prof = cProfile.Profile()
                prof.enable()
                await _pass(store, questions, frozenset())
                prof.disable()
                buf = io.StringIO()
                pstats.Stats(prof, stream=buf).sort_stats("cumulative").print_stats(45)
                out["profile"] = {"text": buf.getvalue()}  # type: ignore[dict-item]
        finally:
            store.recaller.off = frozenset()
            await store.aclose()
    return out


async def _ingest(store: FactStore, convs, progress) -> None:
    """Store every conversation not yet in the store (a kept `data_dir` has them already)."""
    total = sum(len(c.turns) for c in convs)
    done = 0
    for conv in convs:
        if await store.count_facts([f"locomo:{conv.id}"]) == 0:
            errors = await locomo.ingest(store, conv)
            if errors:
                raise RuntimeError(f"ingest failed: {errors[:3]}")
        done += len(conv.turns)
        if progress:
            progress("ingest", done, total)
    await store.drain(timeout=3600)


async def _pass(store: FactStore, questions, off: frozenset[str], *, progress=None, label: str = ""):
    """Recall every question once with `off` switched off: ({k: recalls}, latencies in ms)."""
    store.recaller.off = off
    rec: dict[int, list[float]] = {k: [] for k in KS}
    lat: list[float] = []
    for i, (scope, q) in enumerate(questions):
        store.embedder.clear_cache()
        t = time.perf_counter()
        hits = await store.recall(q.question, [scope], k=max(KS), bump=False)
        lat.append((time.perf_counter() - t) * 1000)
        ranked = [h.fact.source_ref for h in hits]
        for k in KS:
            rec[k].append(recall_at(ranked, _evidence(q), k))
        if progress and i % 50 == 0:
            progress(label or "warm-up", i + 1, len(questions))
    store.recaller.off = frozenset()
    return rec, lat
