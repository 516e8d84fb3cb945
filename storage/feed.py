"""One memory, many processes: vectors stored in SQL, and the change feed every process follows.

SQL is the source of truth for the vectors too. An embedding is computed once, by whichever worker
leased the fact's index job (`storage.indexer`), and stored in `fact_vectors` (float16, see
`encode`). Every change of a fact's indexed state appends a row to `changes` in the transaction
of the change (`record`). Each process keeps its own local vector index (a `NodeSlot` folder of
its own, reused across restarts) and a `Follower` that applies the feed to it: at open it catches
up from the last applied change id (stored next to the index), or rebuilds the index from the
stored vectors (no embedding) when the index is new, lost or for another model; while running it
tails the feed (polling every `poll` seconds, and at once after a local write).

Applying a change is state based: the follower reads the fact's current scope, status and vector
from SQL and makes the local point match (upsert, or delete when the fact is gone or forgotten).
So changes may be applied twice or out of order without harm, and a lagging node never resurrects
a forgotten fact (recall also re-checks status in SQL when it hydrates hits).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import Connection, exists, func, select, text

from storage.clock import system_clock
from storage.db import Engines
from storage.models import ChangeRow, FactRow, FactVectorRow
from storage.vectors import VectorBatch, VectorIndex

log = logging.getLogger(__name__)

ENCODING = "f16"
# The PostgreSQL notification channel of the change feed (NOTIFY is per database, so stores on
# different databases of one server never wake each other). Payload: empty (followers read SQL).
CHANNEL = "clara_changes"
_NOTIFY = text("SELECT pg_notify(:channel, '')")
_CHANGES = ChangeRow.__table__
_INSERT_CHANGE = _CHANGES.insert()


def encode(vector: np.ndarray) -> bytes:
    """A unit vector (dim floats) as `dim` little-endian float16 values (2 bytes each)."""
    return np.asarray(vector, dtype="<f2").tobytes()


def decode(blob: bytes) -> np.ndarray:
    """The float32 unit vector stored by `encode` (renormalised after the float16 rounding)."""
    v = np.frombuffer(blob, dtype="<f2").astype(np.float32)
    n = float(np.linalg.norm(v))
    return v / n if n > 0 else v


def decode_many(blobs: Sequence[bytes], dim: int) -> np.ndarray:
    """`decode` for many blobs at once: an (n, dim) float32 array of unit rows, from one
    `frombuffer` over the concatenated blobs (~40 ms per 20K vectors of 384 here, vs ~0.3 s
    one by one). Raises ValueError if a blob is not `dim` float16 values."""
    if not blobs:
        return np.empty((0, dim), dtype=np.float32)
    buf = b"".join(blobs)
    if len(buf) != 2 * dim * len(blobs):
        raise ValueError(f"stored vectors are not all {dim} float16 values")
    m = np.frombuffer(buf, dtype="<f2").reshape(len(blobs), dim).astype(np.float32)
    norms = np.linalg.norm(m, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    m /= norms
    return m


def content_hash(content: str) -> str:
    """The hash a stored vector is keyed on: 40 hex chars of SHA-1 of the UTF-8 text."""
    return hashlib.sha1(content.encode("utf-8")).hexdigest()


def record(conn: Connection, fact_ids: Iterable[int], op: str, now: datetime) -> None:
    """Append one change per fact to the feed, inside the caller's transaction `conn`.
    `op`: upsert | supersede | forget | purge | vector. On PostgreSQL the same transaction also
    sends `NOTIFY clara_changes` (delivered at commit, once per transaction; dropped on rollback),
    so every listening follower wakes at once instead of at its next poll."""
    rows = [{"fact_id": int(i), "op": op, "created_at": now} for i in fact_ids]
    if rows:
        conn.execute(_INSERT_CHANGE, rows)
        if conn.dialect.name == "postgresql":
            conn.execute(_NOTIFY, {"channel": CHANNEL})


class NodeSlot:
    """A process's own folder for its local vector index: `<root>/node-<n>`, held with an
    exclusive lock on `<root>/node-<n>.lock` for the life of the process. The lowest free `n` is
    taken, so a restarted process reuses its predecessor's folder (and its index) and processes
    running side by side get one each. `<root>/node-<n>.json` holds the last applied change id.
    Raises RuntimeError when `max_slots` processes already hold one."""

    def __init__(self, root: Path, n: int, fd: int):
        self.root = root
        self.n = n
        self._fd: int | None = fd
        self.path = root / f"node-{n}"
        self.state_path = root / f"node-{n}.json"

    @classmethod
    def acquire(cls, root: Path, max_slots: int = 256) -> NodeSlot:
        root = Path(root)
        root.mkdir(parents=True, exist_ok=True)
        for n in range(max_slots):
            fd = os.open(root / f"node-{n}.lock", os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                continue
            return cls(root, n, fd)
        raise RuntimeError(f"{max_slots} Clara processes already hold a vector index under {root}")

    def read_state(self) -> dict[str, Any] | None:
        """The saved state ({"position": int, "model": str, "dim": int, "points": bool}) or None
        (`points`: the index had been given vectors by then)."""
        try:
            state = json.loads(self.state_path.read_text())
        except (OSError, ValueError):
            return None
        return state if isinstance(state, dict) and isinstance(state.get("position"), int) else None

    def write_state(self, state: dict[str, Any]) -> None:
        """Save `state` atomically (write a temporary file, then rename)."""
        tmp = self.state_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(state))
        os.replace(tmp, self.state_path)

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._fd, fcntl.LOCK_UN)
                os.close(self._fd)
            self._fd = None


class Follower:
    """Keeps one local vector index in step with SQL by following the change feed.

    `model`/`dim` name the embedder whose stored vectors are used. `slot` stores the position
    (None: kept in memory only, e.g. a shared Qdrant server). `poll`: seconds between feed polls
    while idle (bounded tail latency). `gap_timeout`: how long a hole in the id sequence is
    waited for (PostgreSQL assigns ids before commit, so a lower id may commit later; an aborted
    transaction leaves a hole for good). `on_missing()` is called when a change names a live fact
    that has no stored vector yet (wake the local indexer: another process wrote it).

    On PostgreSQL `run()` also LISTENs on `CHANNEL` over a dedicated psycopg connection (10 s
    connect timeout, TCP keepalives; reconnected with exponential backoff 0.2–10 s when it drops)
    and applies a change as soon as its transaction commits; while that connection is up the poll
    is only a fallback, every `listen_poll` s (default 2 s)."""

    def __init__(
        self,
        engines: Engines,
        index: VectorIndex,
        *,
        model: str,
        dim: int,
        slot: NodeSlot | None = None,
        poll: float = 0.2,
        listen_poll: float = 2.0,
        gap_timeout: float | None = None,
        on_missing: Callable[[], None] | None = None,
        batch: int = 2000,
        rebuild_batch: int = 5000,
        clock: Callable[[], datetime] = system_clock,
    ):
        self.engines = engines
        self.clock = clock
        self.index = index
        self.model = model
        self.dim = dim
        self.slot = slot
        self.poll = poll
        self.listen_poll = max(poll, listen_poll)
        self.notified = 0  # PostgreSQL notifications received (wakes), LISTEN (re)connections
        self.listens = 0
        self.listen_pid: int | None = None  # the server process of the LISTEN connection
        self._listening = False
        self._holds_points = True  # whether a vector was ever put in the local index (saved with the position)
        self.gap_timeout = (0.0 if engines.dialect == "sqlite" else 10.0) if gap_timeout is None else gap_timeout
        self.on_missing = on_missing
        self.batch = batch
        self.rebuild_batch = rebuild_batch
        self.position = 0
        self.applied = 0
        self.failures = 0
        self.rebuilt = 0
        self.opened: str | None = None
        self.rebuild_seconds = 0.0  # the last rebuild: wall seconds and vectors loaded
        self.rebuild_loaded = 0
        self._ahead: set[int] = set()
        self._gaps: dict[int, float] = {}
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._stopping = False

    # ------------------------------------------------------------------ open / rebuild
    async def open(self) -> str:
        """Bring the local index up to date at start: returns "caught-up" or "rebuilt".
        Rebuilds from stored vectors when there is no saved position, it is for another model,
        it lies outside the feed (a restored or pruned database), or the index is empty while SQL
        holds vectors; otherwise applies the changes after the saved position."""
        state = self.slot.read_state() if self.slot else None
        lo, hi, has_vectors = await self.engines.run_read(self._bounds)
        reason = None
        if state is None or state.get("model") != self.model or state.get("dim") != self.dim:
            reason = "no saved position for this model"
        elif state["position"] > hi or (lo is not None and state["position"] < lo - 1):
            reason = "saved position outside the change feed"
        elif has_vectors and state.get("points", True) and await self.index.count() == 0:
            # (An index that was empty when the position was saved — a node killed before any
            # vector reached it — only needs to catch up.)
            reason = "local index empty"
        if reason is None:
            self.position = state["position"]
            self._holds_points = bool(state.get("points", True))
            await self.catch_up()
            self.opened = "caught-up"
        else:
            log.info("building the local vector index from stored vectors (%s)", reason)
            await self.rebuild()
            self.opened = "rebuilt"
        return self.opened

    def _bounds(self, conn: Connection) -> tuple[int | None, int, bool]:
        lo, hi = conn.execute(select(func.min(ChangeRow.id), func.max(ChangeRow.id))).one()
        has = conn.execute(select(FactVectorRow.fact_id).where(FactVectorRow.model == self.model).limit(1)).first()
        return lo, hi or 0, has is not None

    async def rebuild(self, progress: Callable[[int], None] | None = None) -> tuple[int, int]:
        """Clear the local index and load every live fact's stored vector (for this model/dim);
        queue an index job for each live fact without one. A shared index is reconciled with SQL
        instead of cleared (other nodes keep searching it meanwhile). Returns (vectors loaded, facts queued).
        Cost: no embedding; a decode and a local upsert per vector (~10K vectors/s here)."""
        started = time.monotonic()
        async with self._lock:
            _, hi, _ = await self.engines.run_read(self._bounds)
            # A shared index (a Qdrant server other nodes search) is reconciled, never cleared:
            # its ids are listed first, every stored vector is upserted, then each listed id SQL
            # did not give is made to match SQL (deleted unless live with a vector). Listing
            # before reading SQL means a point another node adds meanwhile is never taken for stale.
            shared = self.index.shared
            before = await self.index.ids() if shared else set()
            if not shared and await self.index.count():
                await self.index.clear()
            # Read in windows of fact ids, (lo, lo + span]: a bounded id range is an index range
            # scan whatever the planner's statistics say (with "id > last ORDER BY id LIMIT n",
            # PostgreSQL on a freshly loaded table chose a seq scan + sort of every row above
            # `last` per batch: 9 s of SQL per 100K). Pipelined: the next window is read (on the
            # read pool) while this one is decoded and upserted (on the index thread). Facts
            # above `top` are newer than `hi`'s changes, so `catch_up` below applies them.
            loaded = 0
            span = max(self.batch, self.rebuild_batch)
            top = await self.engines.run_read(lambda c: c.execute(select(func.max(FactRow.id))).scalar() or 0)
            lo = 0

            def next_window():
                nonlocal lo
                start, lo = lo, lo + span
                return asyncio.ensure_future(self.engines.run_read(self._stored_between, start, lo))

            fetch = next_window()
            try:
                while True:
                    rows = await fetch
                    if lo >= top and not rows:
                        break
                    fetch = next_window()
                    if not rows:
                        continue
                    batch = await asyncio.to_thread(self._batch, rows)
                    await self.index.upsert_batch(batch)
                    loaded += len(batch)
                    if shared:
                        before.difference_update(batch.ids)
                    if progress:
                        progress(loaded)
            finally:
                if not fetch.done():
                    fetch.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await fetch
            self._holds_points = loaded > 0  # (the reconcile below may add points too)
            if before:
                await self._apply(sorted(before))
            queued = await self.engines.run_write(self._queue_missing)
            self.position = hi
            self._ahead.clear()
            self._gaps.clear()
            self._save()
            self.rebuilt += 1
        # No `index.optimize()` here: building the HNSW graph costs ~2 s per 1K vectors on a busy
        # 2-core machine and would hold up the node; the loaded points are searchable at once
        # (exact scan). `FactStore.reindex(wait=True)` optimizes.
        self.rebuild_seconds = time.monotonic() - started
        self.rebuild_loaded = loaded
        await self.catch_up()
        if queued and self.on_missing:
            self.on_missing()
        return loaded, queued

    def _stored_between(self, conn: Connection, lo: int, hi: int) -> list:
        """(id, scope, status, blob) of live facts with lo < id <= hi and a vector of this model."""
        q = (
            select(FactRow.id, FactRow.scope_id, FactRow.status, FactVectorRow.vector)
            .join(FactVectorRow, FactVectorRow.fact_id == FactRow.id)
            .where(
                FactRow.id > lo,
                FactRow.id <= hi,
                FactRow.status != "deleted",
                FactVectorRow.model == self.model,
                FactVectorRow.dim == self.dim,
            )
        )  # no ORDER BY: a window's rows are distinct facts (PostgreSQL sorted 5,000 bytea rows on disk)
        if conn.dialect.name == "postgresql":
            # psycopg's binary protocol: bytea arrives as raw bytes instead of hex text (parsing the
            # hex held the GIL against the index upserts: ~2.5x less fetch time per window here).
            compiled = q.compile(dialect=conn.dialect)
            with conn.connection.driver_connection.cursor(binary=True) as cur:
                cur.execute(str(compiled), compiled.params)
                return cur.fetchall()
        return conn.execute(q).all()

    def _batch(self, rows: Sequence) -> VectorBatch:
        """Rows (id, scope, status, float16 blob) as a columnar batch (vectors decoded in bulk)."""
        vectors = decode_many([r[3] for r in rows], self.dim)
        return VectorBatch([r[0] for r in rows], vectors, [r[1] for r in rows], [r[2] for r in rows])

    def _queue_missing(self, conn: Connection) -> int:
        """Index jobs for live facts without a stored vector of this model (none already queued)."""
        from storage.models import IndexJobRow

        has_vector = exists().where(
            FactVectorRow.fact_id == FactRow.id, FactVectorRow.model == self.model, FactVectorRow.dim == self.dim
        )
        queued = exists().where(IndexJobRow.fact_id == FactRow.id)
        ids = conn.execute(select(FactRow.id).where(FactRow.status != "deleted", ~has_vector, ~queued)).scalars().all()
        now = self.clock()
        for i in range(0, len(ids), 1000):
            conn.execute(
                IndexJobRow.__table__.insert(),
                [{"fact_id": f, "op": "upsert", "attempts": 0, "enqueued_at": now} for f in ids[i : i + 1000]],
            )
        return len(ids)

    # ------------------------------------------------------------------ tailing
    def wake(self) -> None:
        """A change was just written by this process: apply it without waiting for the poll."""
        self._wake.set()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    async def catch_up(self) -> int:
        """Apply every change committed so far; returns how many changes were applied."""
        total = 0
        while True:
            n, more = await self.step()
            total += n
            if not more:
                return total

    async def step(self) -> tuple[int, bool]:
        """Apply up to `batch` changes after the position. Returns (applied, more may be waiting)."""
        async with self._lock:
            rows, tail = await self.engines.run_read(
                self._after, self.position, max(self._ahead, default=self.position), self.batch
            )
            fresh = [r for r in rows if r.id not in self._ahead]
            if fresh:
                missing = await self._apply(sorted({r.fact_id for r in fresh}))
                if missing and self.on_missing:
                    self.on_missing()
            self._advance([r.id for r in rows])
            self.applied += len(fresh)
            if rows:
                self._save()
            return len(fresh), bool(fresh) and tail >= self.batch

    @staticmethod
    def _after(conn: Connection, position: int, ahead: int, limit: int) -> tuple[list, int]:
        """The changes after `position`: every id up to `ahead` (the highest already applied past
        a hole — so a hole that fills is seen) and up to `limit` new ones beyond it. Returns
        (rows, how many rows lie beyond `ahead`)."""
        cols = select(ChangeRow.id, ChangeRow.fact_id)
        known = (
            conn.execute(cols.where(ChangeRow.id > position, ChangeRow.id <= ahead).order_by(ChangeRow.id)).all()
            if ahead > position
            else []
        )
        tail = conn.execute(cols.where(ChangeRow.id > ahead).order_by(ChangeRow.id).limit(limit)).all()
        return [*known, *tail], len(tail)

    def _advance(self, ids: list[int]) -> None:
        """Move the position over the fetched ids; a hole is waited for up to `gap_timeout` s
        (ids fetched beyond it are applied already and remembered in `_ahead`)."""
        pos = self.position
        now = time.monotonic()
        for i in sorted(ids):
            if i <= pos:
                continue
            if i == pos + 1:
                pos = i
                continue
            first = self._gaps.setdefault(pos + 1, now)
            if now - first >= self.gap_timeout:
                pos = i  # the hole is an aborted transaction's id: skip it
            else:
                self._ahead.add(i)
        while pos + 1 in self._ahead:
            pos += 1
        self._ahead = {i for i in self._ahead if i > pos}
        self._gaps = {k: v for k, v in self._gaps.items() if k > pos}
        self.position = pos

    async def _apply(self, fact_ids: list[int]) -> int:
        """Make the local points of `fact_ids` match SQL; returns how many live facts lack a vector."""
        rows = await self.engines.run_read(self._state, fact_ids)
        found = {r.id: r for r in rows}
        upserts = [r for r in rows if r.status != "deleted" and r.vector is not None]
        deletes = [i for i in fact_ids if i not in found or found[i].status == "deleted"]
        missing = sum(1 for r in rows if r.status != "deleted" and r.vector is None)
        if upserts:
            self._holds_points = True
            await self.index.upsert_batch(
                await asyncio.to_thread(self._batch, [(r.id, r.scope_id, r.status, r.vector) for r in upserts])
            )
        if deletes:
            await self.index.delete(deletes)
        return missing

    def _state(self, conn: Connection, fact_ids: list[int]) -> list:
        v = FactVectorRow.__table__.alias("v")
        on = (v.c.fact_id == FactRow.id) & (v.c.model == self.model) & (v.c.dim == self.dim)
        out = []
        for i in range(0, len(fact_ids), 500):
            out += conn.execute(
                select(FactRow.id, FactRow.scope_id, FactRow.status, v.c.vector)
                .outerjoin(v, on)
                .where(FactRow.id.in_(fact_ids[i : i + 500]))
            ).all()
        return out

    def _save(self) -> None:
        if self.slot is not None:
            state = {"position": self.position, "model": self.model, "dim": self.dim, "points": self._holds_points}
            self.slot.write_state(state)

    async def lag(self) -> int:
        """How many changes are committed but not yet applied here."""
        _, hi, _ = await self.engines.run_read(self._bounds)
        return max(0, hi - self.position)

    async def run(self) -> None:
        """Tail the feed until `stop()`: apply new changes, then wait for a wake (a local write,
        a PostgreSQL notification) or at most `poll` s (`listen_poll` s while LISTENing)."""
        listener = asyncio.create_task(self._listen(), name="clara-feed-listen") if self._can_listen() else None
        backoff = 0.5
        try:
            while not self._stopping:
                # Cleared before reading, so a wake that arrives during the step is not lost.
                self._wake.clear()
                try:
                    n, more = await self.step()
                    backoff = 0.5
                except asyncio.CancelledError:
                    raise
                except Exception:
                    self.failures += 1
                    log.exception("applying the change feed failed; retrying in %.1fs", backoff)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 30.0)
                    continue
                if more:
                    continue
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        self._wake.wait(), timeout=self.listen_poll if self._listening else self.poll
                    )
        finally:
            if listener is not None:
                listener.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await listener

    def _can_listen(self) -> bool:
        return self.engines.dialect == "postgresql" and hasattr(self.engines.reader, "url")

    def _listen_dsn(self) -> str:
        return self.engines.reader.url.set(drivername="postgresql").render_as_string(hide_password=False)

    async def _listen(self) -> None:
        """LISTEN until cancelled or `stop()`; any failure reconnects with backoff (tenacity)."""
        from tenacity import AsyncRetrying, retry_if_exception_type, wait_exponential

        def lost(state) -> None:
            exc = state.outcome.exception() if state.outcome else None
            log.warning("change-feed LISTEN connection lost (%s); reconnecting", exc)

        retrying = AsyncRetrying(
            wait=wait_exponential(multiplier=0.2, min=0.2, max=10.0),
            retry=retry_if_exception_type(Exception),
            before_sleep=lost,
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                await self._listen_once()

    async def _listen_once(self) -> None:
        import psycopg

        conn = await psycopg.AsyncConnection.connect(
            self._listen_dsn(),
            autocommit=True,
            connect_timeout=10,
            keepalives=1,
            keepalives_idle=10,
            keepalives_interval=5,
            keepalives_count=3,
        )
        try:
            await asyncio.wait_for(conn.execute(f"LISTEN {CHANNEL}"), timeout=10)
            self.listen_pid = conn.info.backend_pid
            self.listens += 1
            self._listening = True
            self._wake.set()  # notifications sent while not listening were missed: read the feed
            while not self._stopping:
                # A bounded wait, so a stop is noticed and a dead connection raises here.
                async for _ in conn.notifies(timeout=5.0):
                    self.notified += 1
                    self._wake.set()
                await asyncio.wait_for(conn.execute("SELECT 1"), timeout=10)
        finally:
            self._listening = False
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), timeout=5)
