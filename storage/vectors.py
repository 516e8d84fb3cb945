"""Vector indexes behind one interface. The index is derived from SQL and can be rebuilt at any
time (`FactStore.reindex`); it holds one point per fact: id = fact id, payload = scope + status.

`EdgeIndex` (default) embeds the Qdrant engine in-process via qdrant-edge-py: one process per
folder (it holds a WAL lock). `QdrantServerIndex` talks to a Qdrant server through qdrant-client
(`QDRANT_URL`), for several bot processes sharing one index.

Scope filtering is a payload filter inside the vector query (a hard partition), never a filter on a
global top-k.
"""

from __future__ import annotations

import asyncio
import shutil
from abc import ABC, abstractmethod
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np


class IndexInUse(RuntimeError):
    """The embedded index folder is locked by another process."""


@dataclass(slots=True)
class VectorPoint:
    id: int
    vector: np.ndarray
    scope_id: str
    status: str


def _dot(records, query: np.ndarray) -> dict[int, float]:
    """{id: stored vector · query} for retrieved Qdrant records (each with `.id` and `.vector`)."""
    if not records:
        return {}
    sims = np.asarray([r.vector for r in records], dtype=np.float32) @ query
    return {int(r.id): float(c) for r, c in zip(records, sims, strict=True)}


class VectorIndex(ABC):
    dim: int

    @abstractmethod
    async def upsert(self, points: list[VectorPoint]) -> None: ...

    @abstractmethod
    async def delete(self, ids: list[int]) -> None: ...

    @abstractmethod
    async def search(
        self, vector: np.ndarray, scope_ids: list[str], k: int, statuses: tuple[str, ...] = ("active",)
    ) -> list[tuple[int, float]]:
        """Up to `k` (fact id, cosine similarity) pairs, best first, only from `scope_ids` and
        `statuses`. Latency: ~1 ms at 10K points; grows with points in the matching scopes."""

    @abstractmethod
    async def cosines(self, ids: list[int], query: np.ndarray) -> dict[int, float]:
        """Cosine similarity of `query` (unit length) with the stored vector of each of `ids`;
        ids without a vector are absent. Stored vectors are unit length, so this is a dot product."""

    @abstractmethod
    async def count(self) -> int: ...

    @abstractmethod
    async def clear(self) -> None:
        """Drop every point (before a rebuild)."""

    async def optimize(self) -> None:  # noqa: B027 - optional hook
        """Build or refresh search structures after bulk writes (no-op where not needed)."""

    async def compact(self) -> None:  # noqa: B027 - optional hook
        """Make deleted points physically gone from local files (after a user's erasure). A
        no-op where the index lives elsewhere (a Qdrant server vacuums deleted points itself)."""

    @abstractmethod
    async def close(self) -> None: ...


class EdgeIndex(VectorIndex):
    """Embedded Qdrant (qdrant-edge-py) in `path`. Calls run on one dedicated thread."""

    def __init__(self, path: Path, dim: int):
        import qdrant_edge as qe

        self._qe = qe
        self.dim = dim
        self.path = Path(path)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="clara-vectors")
        for stale in (self._sibling("compact"), self._sibling("old")):  # left by a crashed compaction
            shutil.rmtree(stale, ignore_errors=True)
        self._shard = self._open()

    def _sibling(self, suffix: str) -> Path:
        return self.path.with_name(f"{self.path.name}.{suffix}")

    def _config(self):
        qe = self._qe
        return qe.EdgeConfig(
            vectors=qe.EdgeVectorParams(size=self.dim, distance=qe.Distance.Cosine),
            hnsw_config=qe.HnswIndexConfig(m=16, ef_construct=100, full_scan_threshold=10000),
        )

    def _open(self, path: Path | None = None):
        qe = self._qe
        path = path or self.path
        if path != self.path:  # a fresh shard elsewhere (compaction)
            path.mkdir(parents=True, exist_ok=True)
            return self._create(path)
        if self.path.exists() and any(self.path.iterdir()):
            try:
                return qe.EdgeShard.load(str(self.path))
            except Exception as exc:
                if "WouldBlock" in str(exc) or "lock" in str(exc).lower():
                    raise IndexInUse(
                        f"the vector index in {self.path} is open in another process; run one Clara process "
                        "per data dir, or set QDRANT_URL to share a Qdrant server"
                    ) from exc
                # Unreadable but not locked: it is only a cache of SQL, so start afresh; the store
                # notices the empty index and re-queues every fact.
                shutil.rmtree(self.path, ignore_errors=True)
        self.path.mkdir(parents=True, exist_ok=True)
        return self._create(self.path)

    def _create(self, path: Path):
        qe = self._qe
        shard = qe.EdgeShard.create(str(path), self._config())
        shard.update(qe.UpdateOperation.create_field_index("scope", qe.PayloadSchemaType.Keyword))
        shard.update(qe.UpdateOperation.create_field_index("status", qe.PayloadSchemaType.Keyword))
        return shard

    async def _call(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    async def upsert(self, points: list[VectorPoint]) -> None:
        if not points:
            return
        qe = self._qe
        pts = [
            qe.Point(id=p.id, vector=p.vector.tolist(), payload={"scope": p.scope_id, "status": p.status})
            for p in points
        ]
        await self._call(self._shard.update, qe.UpdateOperation.upsert_points(pts))

    async def delete(self, ids: list[int]) -> None:
        if ids:
            await self._call(self._shard.update, self._qe.UpdateOperation.delete_points(list(ids)))

    def _search(self, vector, scope_ids, k, statuses):
        qe = self._qe
        must = [
            qe.FieldCondition(key="scope", match=qe.MatchAny(list(scope_ids))),
            qe.FieldCondition(key="status", match=qe.MatchAny(list(statuses))),
        ]
        res = self._shard.query(
            qe.QueryRequest(
                limit=k,
                query=qe.Query.Nearest(vector.tolist()),
                filter=qe.Filter(must=must),
                params=qe.SearchParams(hnsw_ef=max(64, k)),
            )
        )
        return [(int(p.id), float(p.score)) for p in res]

    async def search(self, vector, scope_ids, k, statuses=("active",)):
        if not scope_ids or k <= 0:
            return []
        return await self._call(self._search, vector, scope_ids, k, statuses)

    def _cosines(self, ids: list[int], query: np.ndarray) -> dict[int, float]:
        """Scored inside the engine: an exact search restricted to `ids` (no vector crosses into
        Python; retrieving them cost ~1.5 ms per 100 ids, converting 384 floats each)."""
        qe = self._qe
        res = self._shard.query(
            qe.QueryRequest(
                limit=len(ids),
                query=qe.Query.Nearest(query.tolist()),
                filter=qe.Filter(must=[qe.HasIdCondition(set(ids))]),
                params=qe.SearchParams(exact=True),
            )
        )
        return {int(p.id): float(p.score) for p in res}

    async def cosines(self, ids: list[int], query: np.ndarray) -> dict[int, float]:
        # On the index thread, not the loop.
        if not ids:
            return {}
        return await self._call(self._cosines, list(dict.fromkeys(ids)), query)

    async def count(self) -> int:
        return int(await self._call(self._shard.count, self._qe.CountRequest()))

    async def clear(self) -> None:
        def _clear():
            self._shard.close()
            shutil.rmtree(self.path, ignore_errors=True)
            self._shard = self._open()

        await self._call(_clear)

    async def optimize(self) -> None:
        await self._call(self._shard.optimize)

    async def flush(self) -> None:
        await self._call(self._shard.flush)

    async def compact(self) -> None:
        """Rewrite the index with only its live points. Qdrant only marks a deleted point as
        deleted: its vector and payload stay in the segment files, and the upsert stays in the
        WAL, until the segment is vacuumed and the WAL wraps. So the live points are copied (in
        batches) into a new shard next to this one, which then replaces it; the old folder is
        removed. Nothing is re-embedded. A crash midway leaves either folder complete or none (the
        store then rebuilds the index from SQL). Runs on the index thread in batches of 500 points
        (~0.7 s per 10K points; searches wait for it). The new shard is not optimized (Qdrant's
        optimizer holds the GIL for the whole HNSW build, which would freeze the bot: a 20K-point
        build takes ~35 s here), so an index last optimized by `reindex` searches by full scan
        until the next `reindex`/`optimize` (~15 ms per 20K points)."""

        def _compact():
            qe = self._qe
            fresh, old = self._sibling("compact"), self._sibling("old")
            shutil.rmtree(fresh, ignore_errors=True)
            self._shard.flush()
            target = self._open(fresh)
            offset = None
            try:
                while True:
                    records, offset = self._shard.scroll(
                        qe.ScrollRequest(offset=offset, limit=500, with_payload=True, with_vector=True)
                    )
                    if records:
                        target.update(
                            qe.UpdateOperation.upsert_points(
                                [qe.Point(id=r.id, vector=r.vector, payload=r.payload) for r in records]
                            )
                        )
                    if offset is None:
                        break
                target.flush()
            finally:
                target.close()
            self._shard.close()
            try:
                self.path.rename(old)
                try:
                    fresh.rename(self.path)
                except OSError:
                    old.rename(self.path)
                    raise
            finally:
                self._shard = qe.EdgeShard.load(str(self.path))
            shutil.rmtree(old, ignore_errors=True)

        await self._call(_compact)

    async def close(self) -> None:
        def _close():
            self._shard.flush()
            self._shard.close()

        await self._call(_close)
        self._pool.shutdown(wait=True)


class QdrantServerIndex(VectorIndex):
    """A collection on a Qdrant server (`QDRANT_URL`), via the async qdrant-client (10 s timeout)."""

    def __init__(self, url: str, collection: str, dim: int, api_key: str | None = None):
        from qdrant_client import AsyncQdrantClient

        self.dim = dim
        self.collection = collection
        self._client = AsyncQdrantClient(url=url, api_key=api_key, timeout=10)
        self._ready = False

    async def _ensure(self) -> None:
        if self._ready:
            return
        from qdrant_client import models as m

        if not await self._client.collection_exists(self.collection):
            await self._client.create_collection(
                self.collection, vectors_config=m.VectorParams(size=self.dim, distance=m.Distance.COSINE)
            )
            for field in ("scope", "status"):
                await self._client.create_payload_index(
                    self.collection, field_name=field, field_schema=m.PayloadSchemaType.KEYWORD
                )
        self._ready = True

    async def upsert(self, points: list[VectorPoint]) -> None:
        if not points:
            return
        from qdrant_client import models as m

        await self._ensure()
        await self._client.upsert(
            self.collection,
            points=[
                m.PointStruct(id=p.id, vector=p.vector.tolist(), payload={"scope": p.scope_id, "status": p.status})
                for p in points
            ],
        )

    async def delete(self, ids: list[int]) -> None:
        if not ids:
            return
        from qdrant_client import models as m

        await self._ensure()
        await self._client.delete(self.collection, points_selector=m.PointIdsList(points=list(ids)))

    async def search(self, vector, scope_ids, k, statuses=("active",)):
        if not scope_ids or k <= 0:
            return []
        from qdrant_client import models as m

        await self._ensure()
        flt = m.Filter(
            must=[
                m.FieldCondition(key="scope", match=m.MatchAny(any=list(scope_ids))),
                m.FieldCondition(key="status", match=m.MatchAny(any=list(statuses))),
            ]
        )
        res = await self._client.query_points(self.collection, query=vector.tolist(), query_filter=flt, limit=k)
        return [(int(p.id), float(p.score)) for p in res.points]

    async def cosines(self, ids: list[int], query: np.ndarray) -> dict[int, float]:
        if not ids:
            return {}
        await self._ensure()
        return _dot(
            await self._client.retrieve(self.collection, ids=list(ids), with_payload=False, with_vectors=True), query
        )

    async def count(self) -> int:
        await self._ensure()
        return (await self._client.count(self.collection, exact=True)).count

    async def clear(self) -> None:
        if await self._client.collection_exists(self.collection):
            await self._client.delete_collection(self.collection)
        self._ready = False
        await self._ensure()

    async def close(self) -> None:
        await self._client.close()
