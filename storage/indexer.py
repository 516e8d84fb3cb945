"""The background indexer: drains the durable `index_jobs` queue into the vector index.

Jobs are written in the same transaction as the fact they concern, so an acknowledged fact always
has either its vector or a pending job, also after a crash. The indexer reads a batch of jobs,
embeds the facts' text off the event loop, writes/removes the vectors, then deletes exactly the jobs
it processed (a newer job for the same fact, written meanwhile, stays and is processed next).
A failing batch is retried with exponential backoff (capped at 60 s); nothing is dropped.
"""

from __future__ import annotations

import asyncio
import logging
import time

from sqlalchemy import Connection, delete, func, select, update

from storage.clock import Clock, system_clock
from storage.cpu import run_background
from storage.db import Engines
from storage.embeddings import Embedder
from storage.models import FactRow, IndexJobRow
from storage.vectors import VectorIndex, VectorPoint

log = logging.getLogger(__name__)


class Indexer:
    def __init__(
        self,
        engines: Engines,
        embedder: Embedder,
        index: VectorIndex,
        batch: int = 256,
        debounce: float = 0.05,
        clock: Clock = system_clock,
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
        self.processed = 0
        self.failures = 0

    def notify(self) -> None:
        """Tell the indexer new jobs exist (it also polls every few seconds)."""
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
                    await asyncio.wait_for(self._wake.wait(), timeout=5.0)
                    # Let a burst of writes accumulate: one embedding batch and one write
                    # transaction for many facts instead of one per fact, which would compete
                    # with the writes being acknowledged.
                    await asyncio.sleep(self.debounce)
                except TimeoutError:
                    pass

    async def run_once(self) -> int:
        """Process one batch of jobs; returns how many jobs were consumed (0 = queue empty)."""
        jobs, last_op, rows = await self.engines.run_read(self._pending, self.batch)
        if not jobs:
            return 0
        found = {r.id for r in rows}
        live = [r for r in rows if r.status != "deleted"]
        delete_ids = [fid for fid, op in last_op.items() if op == "delete" or fid not in found] + [
            r.id for r in rows if r.status == "deleted"
        ]
        try:
            await self._apply(live, delete_ids)
        except Exception as exc:
            error = str(exc)[:2000]
            await self.engines.run_write(
                lambda conn: conn.execute(
                    update(IndexJobRow)
                    .where(IndexJobRow.id.in_([j.id for j in jobs]))
                    .values(attempts=IndexJobRow.attempts + 1, last_error=error)
                )
            )
            raise
        now = self.clock()

        def done(conn: Connection) -> None:
            if live:
                conn.execute(update(FactRow).where(FactRow.id.in_([r.id for r in live])).values(indexed_at=now))
            conn.execute(delete(IndexJobRow).where(IndexJobRow.id.in_([j.id for j in jobs])))

        # One short transaction in the write thread: an acknowledgement waiting behind it waits
        # for ~1 ms, not for a chain of event-loop round trips.
        await self.engines.run_write(done)
        self.processed += len(jobs)
        return len(jobs)

    @staticmethod
    def _pending(conn: Connection, limit: int) -> tuple[list, dict[int, str], list]:
        """The oldest `limit` jobs, the op that decides each fact's fate, and the facts to upsert
        (id, scope, status, content)."""
        jobs = conn.execute(
            select(IndexJobRow.id, IndexJobRow.fact_id, IndexJobRow.op).order_by(IndexJobRow.id).limit(limit)
        ).all()
        # The last job for a fact decides what happens to it.
        last_op: dict[int, str] = {}
        for j in jobs:
            last_op[j.fact_id] = j.op
        upsert_ids = [fid for fid, op in last_op.items() if op == "upsert"]
        rows = (
            conn.execute(
                select(FactRow.id, FactRow.scope_id, FactRow.status, FactRow.content).where(FactRow.id.in_(upsert_ids))
            ).all()
            if upsert_ids
            else []
        )
        return jobs, last_op, rows

    async def _apply(self, live, delete_ids) -> None:
        if live:
            # A fact's vector is its content alone: its context is matched lexically, and the
            # dense-in-context signal is computed at query time from the previous turn's vector
            # (storage/recall.py), which ranks as well as embedding "context + content" at half the cost.
            texts = [r.content for r in live]
            vectors = await run_background(self.embedder.embed_documents, texts)
            await self.index.upsert(
                [VectorPoint(r.id, v, r.scope_id, r.status) for r, v in zip(live, vectors, strict=True)]
            )
        if delete_ids:
            await self.index.delete(delete_ids)

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
