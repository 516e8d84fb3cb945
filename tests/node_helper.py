"""Helper process for test_nodes: one Clara node (a FactStore with its indexer and change-feed
follower) on a data dir / database, driven by JSON lines on stdin, answering JSON lines on stdout.

    python tests/node_helper.py DATA_DIR [DATABASE_URL] [--no-embed]

Prints {"ready": ..., "slot": n, "opened": "rebuilt"|"caught-up"} once open. Commands:
{"op": "add", "content": str, "scope": str} → {"id": int}
{"op": "recall", "query": str, "scope": str, "k": int} → {"hits": [[id, content, signals]]}
{"op": "wait_dense", "query": str, "scope": str, "id": int, "present": bool, "wait": float}
    → {"ok": bool, "seconds": float}: until fact `id` is (or is not) a dense hit
{"op": "forget", "id": int} → {"ok": true}
{"op": "drain"} → {"ok": true}
{"op": "stats"} → {"embedded": int (texts this process embedded), "vectors": int, "position": int}
`--no-embed`: an embedder whose embed_documents raises (a late joiner must not need it); queries
are still embedded.
"""

import asyncio
import json
import sys
import time
from pathlib import Path

from conftest import helper_clock  # tests/ is this script's sys.path[0]

from storage import FactStore, StoreConfig
from storage.embeddings import make_embedder


class CountingEmbedder:
    """Wraps the local embedder; counts documents embedded, or refuses them (`refuse`)."""

    def __init__(self, inner, refuse: bool):
        self._inner = inner
        self.refuse = refuse
        self.documents = 0

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def embed_documents(self, texts):
        if self.refuse:
            raise RuntimeError("this node must not embed documents")
        self.documents += len(texts)
        return self._inner.embed_documents(texts)


async def main(argv: list[str]) -> None:
    refuse = "--no-embed" in argv
    args = [a for a in argv if not a.startswith("--")]
    data_dir, url = args[0], (args[1] if len(args) > 1 and args[1] else None)
    embedder = CountingEmbedder(make_embedder("local"), refuse)
    store = await FactStore.open(
        StoreConfig(database_url=url, data_dir=Path(data_dir), clock=helper_clock(), extra={"index_lease": 5.0}),
        embedder=embedder,
    )
    out = sys.stdout
    out.write(json.dumps({"ready": True, "slot": store.slot.n, "opened": store.feed.opened}) + "\n")
    out.flush()
    loop = asyncio.get_running_loop()
    try:
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if not line:
                return
            cmd = json.loads(line)
            op = cmd["op"]
            if op == "add":
                await store.ensure_scope(cmd["scope"], "user", owner=cmd["scope"].split(":")[-1])
                res = {"id": await store.add(cmd["content"], cmd["scope"])}
            elif op == "recall":
                hits = await store.recall(cmd["query"], [cmd["scope"]], k=cmd.get("k", 5), bump=False)
                res = {"hits": [[h.fact.id, h.fact.content, sorted(h.signals)] for h in hits]}
            elif op == "wait_dense":
                t0 = time.monotonic()
                ok = False
                while time.monotonic() - t0 < cmd["wait"]:
                    qvec = await asyncio.to_thread(store.embedder.embed_query, cmd["query"])
                    found = {i for i, _ in await store.index.search(qvec, [cmd["scope"]], 10)}
                    hits = await store.recall(cmd["query"], [cmd["scope"]], k=10, bump=False)
                    recalled = {h.fact.id for h in hits if "dense" in h.signals}
                    if cmd.get("present", True):
                        ok = cmd["id"] in found and cmd["id"] in recalled
                    else:
                        ok = cmd["id"] not in found and cmd["id"] not in {h.fact.id for h in hits}
                    if ok:
                        break
                    await asyncio.sleep(0.02)
                res = {"ok": ok, "seconds": time.monotonic() - t0}
            elif op == "forget":
                await store.forget(cmd["id"])
                res = {"ok": True}
            elif op == "drain":
                await store.drain(timeout=cmd.get("wait", 120))
                res = {"ok": True}
            elif op == "stats":
                res = {
                    "embedded": embedder.documents,
                    "vectors": await store.index.count(),
                    "position": store.feed.position,
                }
            else:
                res = {"error": f"unknown op {op}"}
            out.write(json.dumps(res) + "\n")
            out.flush()
    finally:
        await store.aclose()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
