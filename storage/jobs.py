"""The durable queue of background memory work (`memory_jobs`).

A job is written in the same transaction as whatever it is about (a message, a closed session), so
an acknowledged message always has its pending work on disk. Workers `claim` jobs with a lease;
a job whose worker died (crash, SIGKILL) becomes claimable again when the lease runs out. Finished
jobs are deleted; a job that keeps failing is parked as `failed` after `max_attempts` (kept for
inspection, never silently dropped). `key` (unique) makes enqueueing idempotent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from storage.clock import Clock, system_clock
from storage.db import Engines
from storage.models import MemoryJobRow
from storage.sqlutil import aware, dialect_insert


@dataclass(slots=True)
class Job:
    id: int
    kind: str
    key: str | None
    principal: str | None
    payload: dict[str, Any]
    attempts: int
    created_at: datetime


class JobQueue:
    """Enqueue / claim / complete / fail background jobs. All times are UTC."""

    def __init__(self, engines: Engines, *, max_attempts: int = 6, clock: Clock = system_clock):
        self.engines = engines
        self.clock = clock
        self.dialect = engines.dialect
        self.max_attempts = max_attempts

    def enqueue_in(
        self,
        conn: Connection,
        kind: str,
        payload: dict[str, Any],
        *,
        key: str | None = None,
        principal: str | None = None,
        run_after: datetime | None = None,
    ) -> bool:
        """Queue a job inside the caller's (synchronous) transaction `conn`. Returns False when a
        job with the same `key` is already queued (nothing written)."""
        now = self.clock()
        stmt = (
            dialect_insert(self.dialect, MemoryJobRow)
            .values(
                kind=kind,
                key=key,
                principal=principal,
                payload=payload,
                status="pending",
                attempts=0,
                run_after=run_after or now,
                created_at=now,
                updated_at=now,
            )
            .on_conflict_do_nothing(index_elements=["key"])
        )
        return conn.execute(stmt).rowcount > 0

    async def enqueue(self, kind: str, payload: dict[str, Any], **options: Any) -> bool:
        """`enqueue_in` (same options: key, principal, run_after) in a transaction of its own."""
        return await self.engines.run_write(lambda conn: self.enqueue_in(conn, kind, payload, **options))

    async def claim(self, limit: int = 8, *, lease: float = 120.0, kinds: Sequence[str] | None = None) -> list[Job]:
        """Lease up to `limit` due jobs, oldest first: pending ones whose `run_after` has come, and
        running ones whose lease expired (their worker died). Safe with several workers/processes."""
        now = self.clock()
        due = or_(
            and_(MemoryJobRow.status == "pending", MemoryJobRow.run_after <= now),
            and_(MemoryJobRow.status == "running", MemoryJobRow.lease_until < now),
        )
        q = select(MemoryJobRow).where(due).order_by(MemoryJobRow.id).limit(limit)
        if kinds:
            q = q.where(MemoryJobRow.kind.in_(list(kinds)))
        if self.dialect == "postgresql":
            q = q.with_for_update(skip_locked=True)
        async with self.engines.writer.begin() as conn:
            rows = (await conn.execute(q)).all()
            if not rows:
                return []
            await conn.execute(
                update(MemoryJobRow)
                .where(MemoryJobRow.id.in_([r.id for r in rows]))
                .values(status="running", lease_until=now + timedelta(seconds=lease), updated_at=now)
            )
        return [Job(r.id, r.kind, r.key, r.principal, dict(r.payload), r.attempts, aware(r.created_at)) for r in rows]

    async def complete(self, job_id: int) -> None:
        """The job's work is committed: remove it."""
        async with self.engines.writer.begin() as conn:
            await conn.execute(delete(MemoryJobRow).where(MemoryJobRow.id == job_id))

    async def fail(self, job: Job, error: str, *, retry_in: float | None = None) -> bool:
        """Record a failed attempt. Retries with exponential backoff (2, 4, 8 … s, capped at 5 min)
        until `max_attempts`, then parks the job as `failed`. Returns True if it will be retried."""
        now = self.clock()
        attempts = job.attempts + 1
        retry = attempts < self.max_attempts
        delay = retry_in if retry_in is not None else min(300.0, 2.0**attempts)
        async with self.engines.writer.begin() as conn:
            await conn.execute(
                update(MemoryJobRow)
                .where(MemoryJobRow.id == job.id)
                .values(
                    status="pending" if retry else "failed",
                    attempts=attempts,
                    last_error=error[:2000],
                    run_after=now + timedelta(seconds=delay),
                    lease_until=None,
                    updated_at=now,
                )
            )
        return retry

    async def release(self, job_ids: Sequence[int]) -> None:
        """Give leased jobs back unfinished (graceful shutdown): claimable again at once."""
        if job_ids:
            async with self.engines.writer.begin() as conn:
                await conn.execute(
                    update(MemoryJobRow)
                    .where(MemoryJobRow.id.in_(list(job_ids)), MemoryJobRow.status == "running")
                    .values(status="pending", lease_until=None, updated_at=self.clock())
                )

    async def count(self, statuses: Sequence[str] = ("pending", "running"), kinds: Sequence[str] | None = None) -> int:
        """How many jobs are in the given states (default: not yet done)."""
        q = select(func.count()).select_from(MemoryJobRow).where(MemoryJobRow.status.in_(list(statuses)))
        if kinds:
            q = q.where(MemoryJobRow.kind.in_(list(kinds)))
        async with self.engines.reader.connect() as conn:
            return (await conn.execute(q)).scalar_one()

    async def next_due(self) -> datetime | None:
        """When the earliest pending job becomes due (None if there is none)."""
        q = select(func.min(MemoryJobRow.run_after)).where(MemoryJobRow.status == "pending")
        async with self.engines.reader.connect() as conn:
            return aware((await conn.execute(q)).scalar())

    async def drop_principal(self, principal: str, conn: AsyncConnection | None = None) -> int:
        """Delete every job about `principal` (used by purge: pending work must not re-create
        what was erased). Returns the number removed."""
        stmt = delete(MemoryJobRow).where(MemoryJobRow.principal == principal)
        if conn is not None:
            return (await conn.execute(stmt)).rowcount
        async with self.engines.writer.begin() as c:
            return (await c.execute(stmt)).rowcount
