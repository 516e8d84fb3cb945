"""`clara bench locomo`: retrieval recall@k on LoCoMo-format conversations (NOTES.md §3 metric).

Every turn of a conversation is stored in that conversation's own scope; for each question of
category 1-4 with evidence, the top-k results are mapped back to their source turns and
recall@k = |evidence ∩ turns of top k| / |evidence|, averaged over all questions. In the same run
the same turns are ranked by BM25 alone (rank-bm25) and by dense MiniLM alone (exact cosine), and
by mem0 (`infer=False`, same embedder) when the optional `mem0` extra is installed.
No LLM is used at query time.
"""

from __future__ import annotations

import os
import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from clara import locomo
from clara.bench.stats import pct, recall_at, rss_mb
from storage import FactStore, StoreConfig
from storage.text import words

KS = (1, 5, 10, 25)


@dataclass
class SystemResult:
    name: str
    recalls: dict[int, list[float]] = field(default_factory=lambda: {k: [] for k in KS})
    latencies_ms: list[float] = field(default_factory=list)
    ingest_turns: int = 0
    ingest_s: float = 0.0
    ack_s: float = 0.0

    def add(self, ranked: list[str], evidence: list[str], ms: float) -> None:
        for k in KS:
            self.recalls[k].append(recall_at(ranked, evidence, k))
        self.latencies_ms.append(ms)

    def summary(self) -> dict[str, float]:
        out = {f"R@{k}": float(np.mean(v)) if v else float("nan") for k, v in self.recalls.items()}
        out["query_p50_ms"] = pct(self.latencies_ms, 50)
        out["query_p95_ms"] = pct(self.latencies_ms, 95)
        out["questions"] = len(self.latencies_ms)
        if self.ingest_s:
            out["ingest_turns_per_s"] = self.ingest_turns / self.ingest_s
        if self.ack_s:
            out["ack_turns_per_s"] = self.ingest_turns / self.ack_s
        return out


def _evidence(q: locomo.Question) -> list[str]:
    out = []
    for e in q.evidence:
        out.extend(x.strip() for x in re.split(r"[;,]", e) if x.strip())
    return out


async def run(
    files: list[str | Path],
    *,
    database_url: str | None = None,
    with_mem0: bool | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    distractors: int = 0,
    context: bool = False,
    access: bool = False,
) -> dict[str, dict[str, float]]:
    """Run the benchmark; returns {system: {metric: value}} (systems: clara, bm25, dense, mem0).

    With `distractors` > 0, Clara recalls each question over its conversation's scope AND a scope
    of that many synthetic chat facts (`clara bench scale`'s sentences, embedded like the turns):
    recall and latency in a large store. The baselines and mem0 still see the conversation only.
    With `context`, also: the share of questions whose evidence turns are inside the prompt the
    chat would assemble at the default budgets (`MemoryManager.context`), per category, as the
    system "context" (all evidence inside / any evidence inside / tokens).
    With `access`, the access-count ablation (`_access_ablation`): systems "access:off" and
    "access:on", recall@k on the same held-out half of the questions."""
    convs = [c for f in locomo.expand(files) for c in locomo.load(f)]
    if not convs:
        raise ValueError("no LoCoMo conversations found in the given paths")
    n_questions = sum(len(c.scored_questions()) for c in convs)
    results = {name: SystemResult(name) for name in ("clara", "bm25", "dense")}
    with tempfile.TemporaryDirectory(prefix="clara-bench-") as tmp:
        store = await FactStore.open(
            StoreConfig(database_url=database_url, data_dir=Path(tmp), embed_threads=os.cpu_count() or 1)
        )
        try:
            noise = await _distractors(store, distractors, progress) if distractors > 0 else []
            await _run_clara(store, convs, results["clara"], progress, n_questions, noise)
            ctx_figures = await _context_share(store, convs, progress, n_questions) if context else None
            ablation = await _access_ablation(store, convs, progress) if access else None
            _run_baselines(store.embedder, convs, results, progress, n_questions)
            extra = {"rss_mb": rss_mb(), "facts": await store.count_facts()}
        finally:
            await store.aclose()
    if with_mem0 is not False:
        try:
            from clara.bench.mem0_peer import run_mem0
        except ImportError:
            if with_mem0:
                raise
        else:
            results["mem0"] = SystemResult("mem0")
            await run_mem0(convs, results["mem0"], progress, n_questions, _evidence)
    out = {name: r.summary() for name, r in results.items()}
    if ctx_figures:
        out.update(ctx_figures)
    if ablation:
        out.update(ablation)
    out["run"] = {
        "conversations": len(convs),
        "turns": sum(len(c.turns) for c in convs),
        "distractors": distractors,
        **extra,
    }
    return out


DISTRACTOR_SCOPE = "bench:distractors"


async def _distractors(store: FactStore, n: int, progress) -> list[str]:
    """Fill DISTRACTOR_SCOPE with `n` synthetic facts, embedded and indexed; returns [that scope]."""
    import random

    from clara.bench.scale import sentence

    rng = random.Random(n)
    await store.ensure_scope(DISTRACTOR_SCOPE, "channel")
    for start in range(0, n, 1000):
        items = [{"content": sentence(rng, start + j)} for j in range(min(1000, n - start))]
        await store.add_many(items, DISTRACTOR_SCOPE)
    await store.indexer.drain(
        timeout=24 * 3600, progress=(lambda d, tot: progress("distractors", d, tot)) if progress else None
    )
    await store.index.optimize()
    return [DISTRACTOR_SCOPE]


async def _run_clara(
    store: FactStore, convs, result: SystemResult, progress, n_questions: int, noise: list[str]
) -> None:
    t0 = time.perf_counter()
    for conv in convs:
        errors = await locomo.ingest(store, conv)
        if errors:
            raise RuntimeError(f"ingest failed: {errors[:3]}")
        result.ingest_turns += len(conv.turns)
        if progress:
            progress("ingest", result.ingest_turns, sum(len(c.turns) for c in convs))
    result.ack_s = time.perf_counter() - t0
    await store.drain(timeout=3600)
    result.ingest_s = time.perf_counter() - t0
    done = 0
    for conv in convs:
        scope = f"locomo:{conv.id}"
        for q in conv.scored_questions():
            t = time.perf_counter()
            hits = await store.recall(q.question, [scope, *noise], k=max(KS), bump=False)
            ms = (time.perf_counter() - t) * 1000
            result.add([h.fact.source_ref for h in hits], _evidence(q), ms)
            done += 1
            if progress and done % 20 == 0:
                progress("clara", done, n_questions)


ACCESS_SWEEP = (0.0, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2, 0.3, 0.5)


async def _access_ablation(store: FactStore, convs, progress) -> dict[str, dict[str, float]]:
    """Do access counts feed ranking measurably? Each conversation's scored questions are split
    (even positions: "usage", odd: held out). Arm off: the nightly jobs (decay, rerank) run with no
    access recorded, then the held-out half is scored. Then the usage half is asked (recall with
    access bumps, as a user or agent asking would), the access counts flushed, the same nightly jobs
    run again, and the held-out half scored again (arm on). The facts, the clock and the queries are
    the same in both arms: only what access counts feed (relevance's memory strength and last use,
    importance's recall floor) differs. Questions never count their own access."""
    from clara.maintenance import run_decay, run_rerank

    def halves():
        for conv in convs:
            qs = conv.scored_questions()
            yield f"locomo:{conv.id}", qs[0::2], qs[1::2]

    async def score(name: str) -> SystemResult:
        res = SystemResult(name)
        for scope, _, held in halves():
            for q in held:
                t = time.perf_counter()
                hits = await store.recall(q.question, [scope], k=max(KS), bump=False)
                res.add([h.fact.source_ref for h in hits], _evidence(q), (time.perf_counter() - t) * 1000)
        return res

    await run_decay(store)
    await run_rerank(store)
    off = await score("access:off")
    used = 0
    for scope, usage, _ in halves():
        for q in usage:
            await store.recall(q.question, [scope], k=10, bump=True)
            used += 1
            if progress and used % 20 == 0:
                progress("access usage", used, used)
    await store._flush_access()
    await run_decay(store)
    raised = (await run_rerank(store))["raised"]
    on = await score("access:on")
    out = {"access:off": off.summary(), "access:on": on.summary()}
    out["access:on"]["usage_questions"] = used
    out["access:on"]["importance_raised"] = raised
    # The access prior's weight (storage.recall.W_ACCESS) swept on the same used store: w=0 keeps
    # every other effect of the usage (decay, rerank) and removes only the prior.
    default = store.recaller.w_access
    try:
        for w in ACCESS_SWEEP:
            store.recaller.w_access = w
            out[f"access:on w={w:g}"] = (await score(f"access:on w={w:g}")).summary()
    finally:
        store.recaller.w_access = default
    return out


CATEGORIES = {1: "multi-hop", 2: "temporal", 3: "open-domain", 4: "single-hop"}


async def _context_share(store: FactStore, convs, progress, n_questions: int) -> dict[str, dict[str, float]]:
    """Per category: the share of questions whose evidence turns all (and any) reach the prompt
    that `MemoryManager.context` assembles for them at the default budgets, and its tokens."""
    from clara.memory import MemoryManager, Where
    from clara.messages import IncomingMessage
    from clara.settings import Settings

    memory = MemoryManager(store, settings=Settings(_env_file=None))
    rows: dict[str, list[tuple[float, float, int]]] = {}
    done = 0
    for conv in convs:
        scope = f"locomo:{conv.id}"
        asker = conv.speakers[0]
        where = Where(scope, scope, None, None, [scope], f"bench-{conv.id}", asker)
        for q in conv.scored_questions():
            msg = IncomingMessage(user_id=where.user_id, display_name=asker, channel_id=scope, text=q.question)
            ctx = await memory.context(msg, q.question, where, None)
            facts = await store.get_many(sorted(ctx.fact_ids()), scopes=[scope])
            inside = {f.source_ref for f in facts}
            ev = _evidence(q)
            hit = [e in inside for e in ev]
            row = (float(all(hit)), float(any(hit)), ctx.total_tokens)
            rows.setdefault(CATEGORIES.get(q.category, str(q.category)), []).append(row)
            rows.setdefault("all", []).append(row)
            done += 1
            if progress and done % 20 == 0:
                progress("context", done, n_questions)
    return {
        f"context:{cat}": {
            "all_in_prompt": float(np.mean([r[0] for r in rs])),
            "any_in_prompt": float(np.mean([r[1] for r in rs])),
            "tokens_p50": pct([r[2] for r in rs], 50),
            "questions": len(rs),
        }
        for cat, rs in rows.items()
    }


def _run_baselines(embedder, convs, results, progress, n_questions: int) -> None:
    from rank_bm25 import BM25Okapi

    done = 0
    for conv in convs:
        ids = [t.dia_id for t in conv.turns]
        docs = [t.content for t in conv.turns]
        bm25 = BM25Okapi([words(d) for d in docs])
        t = time.perf_counter()
        mat = embedder.embed_documents(docs)
        results["dense"].ingest_s += time.perf_counter() - t
        results["dense"].ingest_turns += len(docs)
        for q in conv.scored_questions():
            ev = _evidence(q)
            t = time.perf_counter()
            scores = bm25.get_scores(words(q.question))
            order = np.argsort(-scores, kind="stable")[: max(KS)]
            results["bm25"].add([ids[i] for i in order], ev, (time.perf_counter() - t) * 1000)
            t = time.perf_counter()
            sims = mat @ embedder.embed_documents([q.question])[0]
            order = np.argsort(-sims, kind="stable")[: max(KS)]
            results["dense"].add([ids[i] for i in order], ev, (time.perf_counter() - t) * 1000)
            done += 1
            if progress and done % 20 == 0:
                progress("baselines", done, n_questions)
