"""`clara bench nodes`: several Clara processes on one store (issue 17).

N node processes (`clara.bench.node_worker`) share one SQLite data dir (each with a local index of
its own), or with `database_url` one PostgreSQL database (a data dir each). Measured:

- sync lag: from a write's acknowledgement on one node to its vector in another node's local
  index (embedding by whichever node leased the job + the feed's tail), p50/p95 per observing
  node, at `rate` writes/s spread over the nodes;
- recall latency (query embedding included), p50/p95 per node;
- write throughput: acknowledged adds/s with every node writing at once vs one node alone;
- catch-up: a late joiner with an empty local index loads `catchup` stored vectors (no
  embedding): vectors/s of its rebuild;
- RSS per node (MB) at the end.

Times are `time.monotonic()` (one clock for every process of the machine).
"""

from __future__ import annotations

import asyncio
import json
import os
import select
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from clara.bench.stats import pct

QUERIES = [
    "what was the reading about topic 42",
    "notes on topic 7",
    "which note mentions a reading",
    "tell me about topic 512",
]


class _Node:
    def __init__(self, data_dir: Path, url: str | None):
        env = {**os.environ}
        env.pop("QDRANT_URL", None)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "clara.bench.node_worker", str(data_dir), url or ""],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.info = self.read(300)

    def read(self, timeout: float) -> dict:
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else ""
        if not line:
            self.proc.kill()
            raise RuntimeError("a bench node stopped answering")
        return json.loads(line)

    def call(self, timeout: float = 300, **cmd) -> dict:
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        return self.read(timeout)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()


async def _seed_vectors(data_dir: Path, url: str | None, n: int) -> None:
    """`n` facts with stored (random unit) vectors, written straight to SQL: the store a late
    joiner finds. Deterministic (seed 17)."""
    from storage import FactStore, StoreConfig
    from storage import feed as feedmod
    from storage.models import FactRow, FactVectorRow

    store = await FactStore.open(StoreConfig(database_url=url, data_dir=data_dir), start_indexer=False)
    try:
        await store.ensure_scope("bench:catchup", "project")
        rng = np.random.default_rng(17)
        now = store.clock()
        for start in range(0, n, 5000):
            m = min(5000, n - start)
            vecs = rng.standard_normal((m, store.embedder.dim)).astype(np.float32)
            vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
            rows = [
                dict(
                    scope_id="bench:catchup",
                    content=f"catch-up fact {start + i}",
                    kind="observation",
                    importance=0.5,
                    relevance=1.0,
                    access_count=0,
                    status="active",
                    valid_from=now,
                    created_at=now,
                    updated_at=now,
                    indexed_at=now,
                )
                for i in range(m)
            ]

            def write(conn, rows=rows, vecs=vecs):
                table = FactRow.__table__
                ids = conn.execute(table.insert().returning(table.c.id, sort_by_parameter_order=True), rows)
                ids = list(ids.scalars().all())
                feedmod.record(conn, ids, "vector", now)
                conn.execute(
                    FactVectorRow.__table__.insert(),
                    [
                        dict(
                            fact_id=fid,
                            model=store.embedder.name,
                            dim=store.embedder.dim,
                            encoding=feedmod.ENCODING,
                            content_hash=feedmod.content_hash(r["content"]),
                            vector=feedmod.encode(v),
                            created_at=now,
                        )
                        for fid, r, v in zip(ids, rows, vecs, strict=True)
                    ],
                )

            await store.engines.run_write(write)
    finally:
        await store.aclose()
        # The seeding process is not a node: forget its local index, so the late joiner (which
        # would reuse this folder) starts empty.
        import shutil

        shutil.rmtree(store.slot.path, ignore_errors=True)
        store.slot.state_path.unlink(missing_ok=True)


def run(
    nodes: int = 3,
    *,
    writes: int = 200,
    rate: float = 20.0,
    burst: int = 300,
    catchup: int = 20_000,
    database_url: str | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> dict[str, dict[str, float]]:
    """Run the benchmark (blocking; minutes). Returns {row name: {metric: value}}: one row per
    node ("node 0" …), "late joiner" and "all nodes"."""
    report = progress or (lambda name, done, total: None)
    with tempfile.TemporaryDirectory(prefix="clara-nodes-") as tmp:
        root = Path(tmp)

        def where(i: int) -> Path:
            return root / (f"node{i}" if database_url else "data")

        url = database_url
        procs: list[_Node] = []
        try:
            for i in range(nodes):
                report("start nodes", i, nodes)
                procs.append(_Node(where(i), database_url))
            report("start nodes", nodes, nodes)
            pool = ThreadPoolExecutor(max_workers=nodes)
            per = max(1, writes // nodes)
            interval = nodes / rate
            report("paced writes", 0, 1)
            futs = [
                pool.submit(p.call, op="write", n=per, interval=interval, prefix=f"paced{i}")
                for i, p in enumerate(procs)
            ]
            acks = {i: f.result()["acks"] for i, f in enumerate(futs)}
            ids = {fid for a in acks.values() for fid, _ in a}
            deadline = time.monotonic() + 60
            seen: dict[int, dict[int, float]] = {}
            while time.monotonic() < deadline:
                seen = {i: {int(k): v for k, v in p.call(op="seen")["seen"].items()} for i, p in enumerate(procs)}
                if all(ids <= set(s) for s in seen.values()):
                    break
                time.sleep(0.2)
            report("paced writes", 1, 1)
            res: dict[str, dict[str, float]] = {}
            for i, p in enumerate(procs):
                lags = [(seen[i][fid] - t) * 1000 for j, a in acks.items() if j != i for fid, t in a if fid in seen[i]]
                missing = sum(1 for j, a in acks.items() if j != i for fid, _ in a if fid not in seen[i])
                ms = p.call(op="recall", queries=QUERIES * 10)["ms"]
                res[f"node {i}"] = {
                    "open_s": p.info["open_s"],
                    "sync_lag_p50_ms": pct(lags, 50),
                    "sync_lag_p95_ms": pct(lags, 95),
                    "not_synced": missing,
                    "recall_p50_ms": pct(ms, 50),
                    "recall_p95_ms": pct(ms, 95),
                }
            # Throughput: one node alone, then every node at once (as fast as acks come back).
            report("write throughput", 0, 2)
            t = time.monotonic()
            procs[0].call(op="write", n=burst, interval=0.0, prefix="solo")
            solo = burst / (time.monotonic() - t)
            report("write throughput", 1, 2)
            t = time.monotonic()
            futs = [
                pool.submit(p.call, op="write", n=max(1, burst // nodes), interval=0.0, prefix=f"burst{i}")
                for i, p in enumerate(procs)
            ]
            for f in futs:
                f.result()
            together = nodes * max(1, burst // nodes) / (time.monotonic() - t)
            report("write throughput", 2, 2)
            # Catch-up of a late joiner from stored vectors.
            late_row: dict[str, float] = {}
            if catchup:
                report("late joiner", 0, 1)
                asyncio.run(_seed_vectors(where(0), url, catchup))
                late = _Node(where(nodes), database_url)
                procs.append(late)
                info = late.info
                late_row = {
                    "open_s": info["open_s"],
                    "vectors_loaded": info["rebuilt"],
                    "rebuild_s": info["rebuild_s"],
                    "catchup_vectors_per_s": info["rebuilt"] / info["rebuild_s"] if info["rebuild_s"] else None,
                }
                report("late joiner", 1, 1)
            for i, p in enumerate(procs):
                st = p.call(op="stats")
                name = f"node {i}" if i < nodes else "late joiner"
                res.setdefault(name, {}).update(late_row if i >= nodes else {})
                res[name]["rss_mb"] = st["rss_mb"]
                res[name]["embedded"] = st["embedded"]
            res["all nodes"] = {
                "writes_per_s_one_node": solo,
                "writes_per_s_all_nodes": together,
                "paced_rate_per_s": rate,
                "paced_writes": len(ids),
            }
            pool.shutdown()
            return res
        finally:
            for p in procs:
                p.close()


def catchup_runs(
    catchup: int = 100_000,
    *,
    runs: int = 3,
    database_url: str | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> dict[str, dict[str, float]]:
    """Only the late-joiner part of `run`, `runs` times: seed `catchup` facts with stored vectors
    once, then start a node process with an empty local index `runs` times (its folder is removed
    between runs) and read its rebuild rate. Returns one row per run and a "median" row
    (`catchup_vectors_per_s`: vectors loaded / rebuild seconds, the node's own measurement)."""
    import shutil
    import statistics

    report = progress or (lambda name, done, total: None)
    with tempfile.TemporaryDirectory(prefix="clara-catchup-") as tmp:
        root = Path(tmp)
        seed_dir = root / ("seed" if database_url else "data")
        report("seed", 0, 1)
        asyncio.run(_seed_vectors(seed_dir, database_url, catchup))
        report("seed", 1, 1)
        res: dict[str, dict[str, float]] = {}
        for r in range(runs):
            report("late joiner", r, runs)
            where = root / f"late{r}" if database_url else seed_dir
            if not database_url:  # one data dir: the joiner reuses node-0, emptied first
                for folder in (where / "index").glob("*/node-0"):
                    shutil.rmtree(folder, ignore_errors=True)
                    folder.with_suffix(".json").unlink(missing_ok=True)
            node = _Node(where, database_url)
            try:
                info = node.info
            finally:
                node.close()
            res[f"run {r + 1}"] = {
                "open_s": info["open_s"],
                "vectors_loaded": info["rebuilt"],
                "rebuild_s": info["rebuild_s"],
                "catchup_vectors_per_s": info["rebuilt"] / info["rebuild_s"] if info["rebuild_s"] else 0.0,
            }
        report("late joiner", runs, runs)
        res["median"] = {k: statistics.median(v[k] for v in res.values()) for k in next(iter(res.values()))}
        return res
