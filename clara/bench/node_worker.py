"""One node of `clara bench nodes`: a FactStore (indexer + change-feed follower) in a process of
its own, driven by JSON lines on stdin, answering JSON lines on stdout.

    python -m clara.bench.node_worker DATA_DIR [DATABASE_URL]

First line out: {"ready": true, "open_s": float, "opened": str, "vectors": int}. Commands:
{"op": "write", "n": int, "interval": float, "prefix": str} → {"acks": [[id, t_ack]]}
{"op": "seen"} → {"seen": {id: t}}: when each fact's vector first reached this node's index
{"op": "recall", "queries": [str]} → {"ms": [float]}
{"op": "stats"} → {"rss_mb": float, "vectors": int, "embedded": int}
Times are `time.monotonic()` seconds (one clock for every process of the machine).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

from storage import FactStore, StoreConfig

SCOPE = "bench:nodes"


async def main(data_dir: str, url: str | None) -> None:
    t0 = time.monotonic()
    store = await FactStore.open(StoreConfig(database_url=url, data_dir=Path(data_dir)))
    open_s = time.monotonic() - t0
    seen: dict[int, float] = {}
    real_upsert = store.index.upsert_batch  # what the change-feed follower writes with

    async def upsert(batch):
        await real_upsert(batch)
        now = time.monotonic()
        for fid in batch.ids:
            seen.setdefault(fid, now)

    store.index.upsert_batch = upsert
    await store.ensure_scope(SCOPE, "project", members=["bench"])
    out = sys.stdout
    out.write(
        json.dumps(
            {
                "ready": True,
                "open_s": open_s,
                "opened": store.feed.opened,
                "vectors": await store.index.count(),
                "rebuild_s": store.feed.rebuild_seconds,
                "rebuilt": store.feed.rebuild_loaded,
            }
        )
        + "\n"
    )
    out.flush()
    loop = asyncio.get_running_loop()
    try:
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if not line:
                return
            cmd = json.loads(line)
            if cmd["op"] == "write":
                acks = []
                start = time.monotonic()
                for i in range(cmd["n"]):
                    due = start + i * cmd["interval"]
                    if due > time.monotonic():
                        await asyncio.sleep(due - time.monotonic())
                    fid = await store.add(f"{cmd['prefix']} note {i}: a reading about topic {i * 7919 % 1000}", SCOPE)
                    acks.append([fid, time.monotonic()])
                res: dict = {"acks": acks}
            elif cmd["op"] == "seen":
                res = {"seen": seen}
            elif cmd["op"] == "recall":
                ms = []
                for q in cmd["queries"]:
                    t = time.perf_counter()
                    await store.recall(q, [SCOPE], k=10, bump=False)
                    ms.append((time.perf_counter() - t) * 1000)
                res = {"ms": ms}
            elif cmd["op"] == "stats":
                import psutil

                res = {
                    "rss_mb": psutil.Process().memory_info().rss / 2**20,
                    "vectors": await store.index.count(),
                    "embedded": store.indexer.embedded,
                }
            else:
                res = {"error": f"unknown op {cmd['op']!r}"}
            out.write(json.dumps(res) + "\n")
            out.flush()
    finally:
        await store.aclose()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 and sys.argv[2] else None))
