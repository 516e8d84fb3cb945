"""The background indexer: drains the durable `index_jobs` queue into SQL-stored vectors.

Jobs are written in the same transaction as the fact they concern, so an acknowledged fact always
has either its vector or a pending job, also after a crash. Any process may run an indexer: a
worker leases a batch of jobs (`lease_until`; an expired lease — its worker died or hangs — is
claimable again), embeds the facts' current text off the event loop (unless the stored vector
was computed from the same text: a status change re-uses it), then in ONE transaction stores the
vectors in `fact_vectors`, appends a `vector` change to the feed and deletes exactly the jobs it
leased. The local vector index is then updated by the change feed's follower (`storage.feed`),
like every other process's. A failing batch is retried with exponential backoff (capped at 60 s);
nothing is dropped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta

from sqlalchemy import Connection, delete, func, or_, select, update

from storage import feed
from storage.clock import Clock, system_clock
from storage.cpu import run_background
from storage.db import Engines
from storage.embeddings import Embedder
from storage.models import FactRow, FactVectorRow, IndexJobRow
from storage.sqlutil import dialect_insert
from storage.vectors import VectorIndex

log = logging.getLogger(__name__)

_VECTOR_COLUMNS = ("model", "dim", "encoding", "content_hash", "vector", "created_at")


class Indexer:
    def __init__(
        self,
        engines: Engines,
        embedder: Embedder,
        index: VectorIndex,
        batch: int = 256,
        debounce: float = 0.05,
        clock: Clock = system_clock,
        lease: float = 60.0,
        poll: float = 1.0,
        after_commit: Callable[[], Awaitable[object]] | None = None,
    ):
        self.engines = engines
        self.clock = clock
        self.debounce = debounce
        self.embedder = embedder
        self.index = index
        self.batch = batch
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._stopping = False
        self.lease = lease
        self.poll = poll
        self.after_commit = after_commit
        self.processed = 0
        self.embedded = 0
        self.failures = 0

    def notify(self) -> None:
        """Tell the indexer new jobs exist (it also polls every `poll` seconds: jobs written by
        other processes)."""
        self._idle.clear()
        self._wake.set()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    async def run(self) -> None:
        backoff = 0.5
        while not self._stopping:
            try:
                n = await self.run_once()
                backoff = 0.5
            except asyncio.CancelledError:
                raise
            except Exception:
                self.failures += 1
                log.exception("indexing batch failed; retrying in %.1fs", backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 60.0)
                continue
            if n == 0:
                self._idle.set()
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout=self.poll)
                    # Let a burst of writes accumulate: one embedding batch and one write
                    # transaction for many facts instead of one per fact, which would compete
                    # with the writes being acknowledged.
                    await asyncio.sleep(self.debounce)
                except TimeoutError:
                    pass

    async def run_once(self) -> int:
        """Lease and process one batch of jobs; returns how many jobs were consumed (0 = none due)."""
        # A read first: several processes' indexers poll, and a claim is a write transaction
        # (SQLite: the database's one write lock), so only try to claim when a job is due.
        if not await self.engines.run_read(self._any_due):
            return 0
        jobs, rows, stored = await self.engines.run_write(self._claim, self.batch)
        if not jobs:
            return 0
        job_ids = [j.id for j in jobs]
        try:
            todo = [r for r in rows if r.status != "deleted" and stored.get(r.id) != feed.content_hash(r.content)]
            vectors = await run_background(self.embedder.embed_documents, [r.content for r in todo]) if todo else []
        except BaseException as exc:
            error = str(exc)[:2000] or type(exc).__name__
            # Hand the jobs back at once (a retry need not wait for the lease to run out).
            await self.engines.run_write(
                lambda conn: conn.execute(
                    update(IndexJobRow)
                    .where(IndexJobRow.id.in_(job_ids))
                    .values(attempts=IndexJobRow.attempts + 1, last_error=error, lease_until=None)
                )
            )
            raise
        embedded = {r.id: (feed.content_hash(r.content), v) for r, v in zip(todo, vectors, strict=True)}
        live = [r.id for r in rows if r.status != "deleted"]
        now = self.clock()
        # One short transaction in the write thread: an acknowledgement waiting behind it waits
        # for ~1 ms, not for a chain of event-loop round trips.
        await self.engines.run_write(self._done, job_ids, live, embedded, now)
        self.processed += len(jobs)
        self.embedded += len(todo)
        if self.after_commit is not None:
            await self.after_commit()
        return len(jobs)

    def _any_due(self, conn: Connection) -> bool:
        now = self.clock()
        q = select(IndexJobRow.id).where(or_(IndexJobRow.lease_until.is_(None), IndexJobRow.lease_until < now))
        return conn.execute(q.limit(1)).first() is not None

    def _claim(self, conn: Connection, limit: int) -> tuple[list, list, dict[int, str]]:
        """Lease the oldest `limit` due jobs (no lease, or an expired one; none for a fact another
        worker is embedding), and read their facts (id, scope, status, content) and the hash of
        each fact's stored vector (this model)."""
        now = self.clock()
        busy = select(IndexJobRow.fact_id).where(IndexJobRow.lease_until >= now)
        q = (
            select(IndexJobRow.id, IndexJobRow.fact_id)
            .where(or_(IndexJobRow.lease_until.is_(None), IndexJobRow.lease_until < now))
            .where(IndexJobRow.fact_id.not_in(busy))
            .order_by(IndexJobRow.id)
            .limit(limit)
        )
        if self.engines.dialect == "postgresql":
            q = q.with_for_update(skip_locked=True)
        jobs = conn.execute(q).all()
        if not jobs:
            return [], [], {}
        conn.execute(
            update(IndexJobRow)
            .where(IndexJobRow.id.in_([j.id for j in jobs]))
            .values(lease_until=now + timedelta(seconds=self.lease))
        )
        ids = sorted({j.fact_id for j in jobs})
        rows = conn.execute(
            select(FactRow.id, FactRow.scope_id, FactRow.status, FactRow.content).where(FactRow.id.in_(ids))
        ).all()
        stored = dict(
            conn.execute(
                select(FactVectorRow.fact_id, FactVectorRow.content_hash).where(
                    FactVectorRow.fact_id.in_(ids),
                    FactVectorRow.model == self.embedder.name,
                    FactVectorRow.dim == self.embedder.dim,
                )
            ).all()
        )
        return jobs, rows, stored

    def _done(self, conn: Connection, job_ids: list[int], live: list[int], embedded: dict, now) -> None:
        """Store the new vectors of facts whose text is still the embedded one and that are not
        deleted meanwhile (re-read under a row lock on PostgreSQL), mark them indexed, record the
        `vector` changes and delete the leased jobs."""
        if embedded:
            q = select(FactRow.id, FactRow.status, FactRow.content).where(FactRow.id.in_(list(embedded)))
            if self.engines.dialect == "postgresql":
                q = q.with_for_update()
            keep = [
                r.id
                for r in conn.execute(q).all()
                if r.status != "deleted" and feed.content_hash(r.content) == embedded[r.id][0]
            ]
            if keep:
                ins = dialect_insert(self.engines.dialect, FactVectorRow)
                rows = [
                    {
                        "fact_id": i,
                        "model": self.embedder.name,
                        "dim": self.embedder.dim,
                        "encoding": feed.ENCODING,
                        "content_hash": embedded[i][0],
                        "vector": feed.encode(embedded[i][1]),
                        "created_at": now,
                    }
                    for i in keep
                ]
                conn.execute(
                    ins.on_conflict_do_update(
                        index_elements=["fact_id"],
                        set_={c: ins.excluded[c] for c in _VECTOR_COLUMNS},
                    ),
                    rows,
                )
                feed.record(conn, keep, "vector", now)
        if live:
            conn.execute(update(FactRow).where(FactRow.id.in_(live)).values(indexed_at=now))
        conn.execute(delete(IndexJobRow).where(IndexJobRow.id.in_(job_ids)))

    async def drain(self, timeout: float = 300.0, progress=None) -> None:
        """Wait until the queue is empty. `progress(done, total)` is called as it shrinks.
        Raises TimeoutError if it is not empty after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        total = None
        while True:
            async with self.engines.reader.connect() as conn:
                left = (await conn.execute(select(func.count()).select_from(IndexJobRow))).scalar_one()
            total = max(total or 0, left)
            if progress:
                progress(total - left, total)
            if left == 0:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{left} indexing jobs still pending after {timeout:.0f}s")
            self.notify()
            await asyncio.sleep(0.05)
