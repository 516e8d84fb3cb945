"""Vector indexes behind one interface. The index is derived from SQL and can be rebuilt at any
time (`FactStore.reindex`); it holds one point per fact: id = fact id, payload = scope + status.

`EdgeIndex` (default) embeds the Qdrant engine in-process via qdrant-edge-py: one process per
folder (it holds a WAL lock). `QdrantServerIndex` talks to a Qdrant server through qdrant-client
(`QDRANT_URL`), for several bot processes sharing one index; `QDRANT_URL=:memory:` or
`local:PATH` runs the same class on qdrant-client's local mode (pure Python, no server), which is
how the tests exercise it.

Scope filtering is a payload filter inside the vector query (a hard partition), never a filter on a
global top-k.
"""

from __future__ import annotations

import asyncio
import shutil
import warnings
from abc import ABC, abstractmethod
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from storage.errors import InvalidInput, StoreError


class IndexInUse(RuntimeError):
    """The embedded index folder is locked by another process."""


@dataclass(slots=True)
class VectorPoint:
    id: int
    vector: np.ndarray
    scope_id: str
    status: str


@dataclass(slots=True)
class VectorBatch:
    """Many points at once, columnar: `ids[i]` has vector `vectors[i]` (an (n, dim) float32
    array of unit rows), scope `scopes[i]` and status `statuses[i]`. What a rebuild or a feed step
    hands the index (no per-point Python objects until the index library needs them)."""

    ids: list[int]
    vectors: np.ndarray
    scopes: list[str]
    statuses: list[str]

    def __len__(self) -> int:
        return len(self.ids)

    def points(self) -> list[VectorPoint]:
        cols = zip(self.ids, self.vectors, self.scopes, self.statuses, strict=True)
        return [VectorPoint(i, v, sc, st) for i, v, sc, st in cols]


def _dot(records, query: np.ndarray) -> dict[int, float]:
    """{id: stored vector · query} for retrieved Qdrant records (each with `.id` and `.vector`)."""
    if not records:
        return {}
    sims = np.asarray([r.vector for r in records], dtype=np.float32) @ query
    return {int(r.id): float(c) for r, c in zip(records, sims, strict=True)}


class VectorIndex(ABC):
    dim: int
    # True when other nodes use the same points (a Qdrant server): never cleared to rebuild.
    shared: bool = False

    @abstractmethod
    async def upsert(self, points: list[VectorPoint]) -> None: ...

    async def upsert_batch(self, batch: VectorBatch) -> None:
        """Upsert a columnar batch (same effect as `upsert(batch.points())`; indexes override it
        with a cheaper path)."""
        await self.upsert(batch.points())

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
    async def ids(self) -> set[int]:
        """Every point id held (a rebuild of a shared index deletes those SQL no longer has)."""

    @abstractmethod
    async def clear(self) -> None:
        """Drop every point (before a rebuild of a local index; `clara memory clear`)."""

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
        await self.upsert_batch(
            VectorBatch(
                [p.id for p in points],
                np.stack([p.vector for p in points]).astype(np.float32, copy=False),
                [p.scope_id for p in points],
                [p.status for p in points],
            )
        )

    def _upsert_batch(self, batch: VectorBatch) -> None:
        # Each vector goes to qe.Point as a memoryview slice of the batch's float32 buffer: the
        # binding reads it in ~13-18 µs per 384-dim point, against ~27 µs for a numpy row and
        # ~32 µs for `.tolist()` + a list (measured). One payload dict per (scope, status) pair.
        qe = self._qe
        d = self.dim
        flat = memoryview(np.ascontiguousarray(batch.vectors, dtype=np.float32).reshape(-1))
        payloads: dict[tuple[str, str], dict[str, str]] = {}
        pts = [
            qe.Point(
                id=i,
                vector=flat[n * d : (n + 1) * d],
                payload=payloads.get((sc, st)) or payloads.setdefault((sc, st), {"scope": sc, "status": st}),
            )
            for n, (i, sc, st) in enumerate(zip(batch.ids, batch.scopes, batch.statuses, strict=True))
        ]
        self._shard.update(qe.UpdateOperation.upsert_points(pts))

    async def upsert_batch(self, batch: VectorBatch) -> None:
        """On the index thread: Point objects are built there too, off the event loop. Cost here
        (2 cores, busy): ~15 µs per point to build + ~20-30 µs to upsert, both holding the GIL."""
        if len(batch):
            await self._call(self._upsert_batch, batch)

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

    def _ids(self) -> set[int]:
        qe = self._qe
        out: set[int] = set()
        offset = None
        while True:
            records, offset = self._shard.scroll(
                qe.ScrollRequest(offset=offset, limit=2000, with_payload=False, with_vector=False)
            )
            out.update(int(r.id) for r in records)
            if offset is None:
                return out

    async def ids(self) -> set[int]:
        return await self._call(self._ids)

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


class IndexMismatch(StoreError):
    """The shared collection exists with vectors of another size than the embedder's."""


def check_qdrant_url(url: str) -> None:
    """Raise InvalidInput (one line) unless `url` is `:memory:`, `local:PATH` or http(s)://…"""
    if url == ":memory:":
        return
    if url.startswith("local:"):
        if not url[len("local:") :].strip():
            raise InvalidInput("QDRANT_URL=local:PATH needs a folder, e.g. local:data/qdrant")
        return
    if not url.startswith(("http://", "https://")):
        raise InvalidInput(f"QDRANT_URL must be http(s)://host:port, :memory: or local:PATH, not {url!r}")


def qdrant_client_for(url: str, api_key: str | None = None, timeout: int = 10):
    """An `AsyncQdrantClient` for a `QDRANT_URL`: `http(s)://host:port` → a Qdrant server
    (`timeout` s per request); `:memory:` → qdrant-client's local mode in this process's memory
    (gone at exit); `local:PATH` → local mode persisted in the folder PATH (one process at a time).
    Local mode is the same API in pure Python: for tests and small trials (slow beyond ~20K points).
    Raises InvalidInput (a ValueError) for anything else (`check_qdrant_url`)."""
    from qdrant_client import AsyncQdrantClient

    check_qdrant_url(url)
    if url == ":memory:":
        return AsyncQdrantClient(location=":memory:")
    if url.startswith("local:"):
        path = url[len("local:") :].strip()
        Path(path).mkdir(parents=True, exist_ok=True)
        return AsyncQdrantClient(path=path)
    return AsyncQdrantClient(url=url, api_key=api_key, timeout=timeout)


class QdrantServerIndex(VectorIndex):
    """A collection on a Qdrant server (`QDRANT_URL`, see `qdrant_client_for`), via the async
    qdrant-client. The collection is shared: several nodes (processes, machines) write to it, so
    `shared` is True and a node's rebuild reconciles it with SQL instead of clearing it.

    `client`: an existing `AsyncQdrantClient` to use instead of opening one from `url` (it is then
    not closed by `close()`; e.g. two stores in one process sharing one local-mode index).
    `chunk`: points per upsert/delete request (a server refuses requests over 32 MB; 512 points of
    384 floats is ~1 MB of JSON). Raises `IndexMismatch` (on first use) when the collection exists
    with another vector size."""

    shared = True

    def __init__(
        self,
        url: str | None,
        collection: str,
        dim: int,
        api_key: str | None = None,
        *,
        client=None,
        chunk: int = 512,
    ):
        if client is None and not url:
            raise ValueError("QdrantServerIndex needs a url or a client")
        self.dim = dim
        self.collection = collection
        self.chunk = max(1, int(chunk))
        self._owns_client = client is None
        self._client = client if client is not None else qdrant_client_for(url, api_key)
        self._ready = False
        self._ensure_lock = asyncio.Lock()

    async def _ensure(self) -> None:
        if self._ready:
            return
        async with self._ensure_lock:
            if self._ready:
                return
            from qdrant_client import models as m

            if not await self._client.collection_exists(self.collection):
                try:
                    await self._client.create_collection(
                        self.collection, vectors_config=m.VectorParams(size=self.dim, distance=m.Distance.COSINE)
                    )
                except Exception:
                    # Another node created it between our check and our create (the server answers
                    # 409, local mode raises ValueError): use theirs; anything else is re-raised.
                    if not await self._client.collection_exists(self.collection):
                        raise
            info = await self._client.get_collection(self.collection)
            size = _vector_size(info)
            if size is not None and size != self.dim:
                raise IndexMismatch(
                    f"Qdrant collection {self.collection!r} holds {size}-dimensional vectors but the embedder "
                    f"gives {self.dim}: set QDRANT_COLLECTION to another name or delete that collection"
                )
            # Idempotent (an existing index is kept), so every node may ask for it. Local mode has
            # no payload indexes (it warns and filters by scanning).
            for field in ("scope", "status"):
                with warnings.catch_warnings():
                    warnings.filterwarnings("ignore", "Payload indexes have no effect", UserWarning)
                    await self._client.create_payload_index(
                        self.collection, field_name=field, field_schema=m.PayloadSchemaType.KEYWORD
                    )
            self._ready = True

    async def upsert(self, points: list[VectorPoint]) -> None:
        if not points:
            return
        last = list({p.id: p for p in points}.values())  # one point per id: the last one given wins
        await self._upsert_unique(
            [p.id for p in last],
            np.stack([p.vector for p in last]).astype(np.float32, copy=False),
            [p.scope_id for p in last],
            [p.status for p in last],
        )

    async def upsert_batch(self, batch: VectorBatch) -> None:
        if not len(batch):
            return
        where = {int(i): n for n, i in enumerate(batch.ids)}  # the last row of each id wins
        rows = sorted(where.values())
        if len(rows) == len(batch):
            await self._upsert_unique(batch.ids, batch.vectors, batch.scopes, batch.statuses)
        else:
            await self._upsert_unique(
                [batch.ids[r] for r in rows],
                batch.vectors[rows],
                [batch.scopes[r] for r in rows],
                [batch.statuses[r] for r in rows],
            )

    async def _upsert_unique(self, ids, vectors: np.ndarray, scopes, statuses) -> None:
        from qdrant_client import models as m

        await self._ensure()
        for i in range(0, len(ids), self.chunk):
            j = i + self.chunk
            cols = zip(ids[i:j], vectors[i:j].tolist(), scopes[i:j], statuses[i:j], strict=True)
            await self._client.upsert(
                self.collection,
                points=[
                    m.PointStruct(id=int(fid), vector=v, payload={"scope": sc, "status": st}) for fid, v, sc, st in cols
                ],
            )

    async def delete(self, ids: list[int]) -> None:
        if not ids:
            return
        from qdrant_client import models as m

        await self._ensure()
        unique = list(dict.fromkeys(int(i) for i in ids))
        for i in range(0, len(unique), self.chunk * 8):
            await self._client.delete(
                self.collection, points_selector=m.PointIdsList(points=unique[i : i + self.chunk * 8])
            )

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
        res = await self._client.query_points(
            self.collection, query=np.asarray(vector, dtype=np.float32).tolist(), query_filter=flt, limit=k
        )
        return [(int(p.id), float(p.score)) for p in res.points]

    async def cosines(self, ids: list[int], query: np.ndarray) -> dict[int, float]:
        if not ids:
            return {}
        await self._ensure()
        unique = list(dict.fromkeys(int(i) for i in ids))
        return _dot(
            await self._client.retrieve(self.collection, ids=unique, with_payload=False, with_vectors=True), query
        )

    async def count(self) -> int:
        await self._ensure()
        return (await self._client.count(self.collection, exact=True)).count

    async def ids(self) -> set[int]:
        """Every point id in the collection (scrolled 2,000 at a time, no payloads or vectors)."""
        await self._ensure()
        out: set[int] = set()
        offset = None
        while True:
            records, offset = await self._client.scroll(
                self.collection, limit=2000, offset=offset, with_payload=False, with_vectors=False
            )
            out.update(int(r.id) for r in records)
            if offset is None:
                return out

    async def clear(self) -> None:
        async with self._ensure_lock:
            if await self._client.collection_exists(self.collection):
                await self._client.delete_collection(self.collection)
            self._ready = False
        await self._ensure()

    async def close(self) -> None:
        if self._owns_client:
            await self._client.close()


def _vector_size(info) -> int | None:
    """The size of the collection's (single, unnamed) dense vector from `get_collection`, or None."""
    vectors = info.config.params.vectors
    if isinstance(vectors, dict):
        vectors = vectors.get("")
    return getattr(vectors, "size", None)
