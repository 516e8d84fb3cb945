"""Conversation sessions and turns: one open session per user×channel (or DM), closed after an
idle timeout. Everything is in SQL (activity times, counts, links to the previous session), so a
restart neither loses nor doubles a session; a partial unique index enforces "one open session".

`record_turn` is the acknowledgement of an incoming message: in ONE transaction it rolls the
session over if it went idle (queueing the old one's summary), stores the raw turn, bumps the
session and queues the background memory job. Nothing else happens before the reply.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, desc, select, update
from sqlalchemy.exc import IntegrityError

from storage.db import Engines
from storage.errors import InvalidInput
from storage.jobs import JobQueue
from storage.models import MessageRow, SessionRow
from storage.sqlutil import aware
from storage.text import MAX_FACT_CHARS, check_scope_id, clean_text

SUMMARY_JOB = "session_summary"

# Core statements with parameter dicts (compiled once) for the acknowledgement path.
_INSERT_SESSION = SessionRow.__table__.insert().returning(SessionRow.__table__.c.id)
_INSERT_MESSAGE = MessageRow.__table__.insert().returning(MessageRow.__table__.c.id)


@dataclass(slots=True)
class Session:
    id: int
    user_id: str
    channel_id: str
    scope_id: str
    is_dm: bool
    status: str
    started_at: datetime
    last_activity_at: datetime
    closed_at: datetime | None
    message_count: int
    previous_id: int | None
    summary_fact_id: int | None


@dataclass(slots=True)
class Turn:
    id: int
    session_id: int | None
    speaker: str
    speaker_id: str | None
    role: str
    content: str
    created_at: datetime


@dataclass(slots=True)
class TurnRecord:
    """What `record_turn` did: the stored message id, the (possibly new) open session, and the
    session it closed for being idle (its summary job is queued), if any."""

    message_id: int
    session: Session
    closed: Session | None
    new_session: bool


def provenance_of(fact_ids: Iterable[int] = (), users: Iterable[str] = ()) -> dict | None:
    """The `messages.provenance` value for a bot/plugin message: sorted unique fact ids (at most
    200) and principals, or None when there is neither."""
    facts = sorted({int(i) for i in fact_ids})[:200]
    who = sorted({str(u) for u in users})[:50]
    out = {k: v for k, v in (("facts", facts), ("users", who)) if v}
    return out or None


def _session(r: Any) -> Session:
    return Session(
        r.id,
        r.user_id,
        r.channel_id,
        r.scope_id,
        bool(r.is_dm),
        r.status,
        aware(r.started_at),
        aware(r.last_activity_at),
        aware(r.closed_at),
        r.message_count,
        r.previous_id,
        r.summary_fact_id,
    )


def _turn(r: Any) -> Turn:
    return Turn(r.id, r.session_id, r.speaker, r.speaker_id, r.role, r.content, aware(r.created_at))


class SessionStore:
    def __init__(self, engines: Engines, jobs: JobQueue):
        self.engines = engines
        self.jobs = jobs
        self.dialect = engines.dialect

    async def record_turn(
        self,
        *,
        user_id: str,
        channel_id: str,
        scope_id: str,
        is_dm: bool,
        speaker: str,
        content: str,
        now: datetime,
        idle: timedelta,
        role: str = "user",
        external_id: str | None = None,
        job: tuple[str, dict[str, Any]] | None = None,
    ) -> TurnRecord:
        """Store one turn in the user×channel session (opening/rolling it as needed) and queue `job`
        (kind, payload; the payload gets `message_id` and `session_id`) — all in one transaction.
        Raises InvalidInput for bad text or an unknown scope. ~2–4 ms on SQLite."""
        check_scope_id(scope_id)
        content = clean_text(content, "message", MAX_FACT_CHARS)
        speaker = clean_text(speaker, "speaker", 200)
        for attempt in range(8):
            try:
                return await self._record(
                    user_id, channel_id, scope_id, is_dm, speaker, content, now, idle, role, external_id, job
                )
            except IntegrityError as exc:
                # Two first messages raced to open the session (PostgreSQL); the loser retries and
                # joins the winner's session. An unknown scope is a real error.
                if "scope" in str(exc.orig).lower() and "foreign" in str(exc.orig).lower() or attempt == 7:
                    raise InvalidInput(f"could not record the message in {scope_id!r}: {exc.orig}") from exc
                await asyncio.sleep(0.005 * (attempt + 1))
        raise AssertionError("unreachable")

    async def _record(self, user_id, channel_id, scope_id, is_dm, speaker, content, now, idle, role, external_id, job):
        def write(conn: Connection) -> TurnRecord:
            q = select(SessionRow).where(
                SessionRow.user_id == user_id, SessionRow.channel_id == channel_id, SessionRow.status == "open"
            )
            if self.dialect == "postgresql":
                q = q.with_for_update()
            row = conn.execute(q).first()
            closed = None
            if row is not None and now - aware(row.last_activity_at) > idle:
                closed = self._close(conn, row.id, now)
                previous_id, row = row.id, None
            elif row is None:
                previous_id = conn.execute(
                    select(SessionRow.id)
                    .where(SessionRow.user_id == user_id, SessionRow.channel_id == channel_id)
                    .order_by(desc(SessionRow.started_at), desc(SessionRow.id))
                    .limit(1)
                ).scalar()
            new = row is None
            if new:
                sid = conn.execute(
                    _INSERT_SESSION,
                    dict(
                        user_id=user_id,
                        channel_id=channel_id,
                        scope_id=scope_id,
                        is_dm=int(is_dm),
                        status="open",
                        started_at=now,
                        last_activity_at=now,
                        message_count=0,
                        previous_id=previous_id,
                    ),
                ).scalar_one()
            else:
                sid = row.id
            mid = self._append(
                conn,
                sid,
                scope_id,
                channel_id,
                speaker,
                user_id if role == "user" else None,
                role,
                content,
                external_id,
                now,
                None if new else row.last_activity_at,
            )
            if job is not None:
                kind, payload = job
                self.jobs.enqueue_in(conn, kind, {**payload, "message_id": mid, "session_id": sid}, principal=user_id)
            session = _session(conn.execute(select(SessionRow).where(SessionRow.id == sid)).one())
            return TurnRecord(mid, session, closed, new)

        return await self.engines.run_write(write)

    @staticmethod
    def _append(
        conn: Connection,
        session_id: int,
        scope_id: str,
        channel_id: str,
        speaker: str,
        speaker_id: str | None,
        role: str,
        content: str,
        external_id: str | None,
        now: datetime,
        last_activity: datetime | str | None,
        provenance: dict | None = None,
    ) -> int:
        """Insert one turn into a session and count it as activity (never moving the session's
        last activity backwards; `last_activity` None = a brand-new session). Returns its id."""
        mid = conn.execute(
            _INSERT_MESSAGE,
            dict(
                scope_id=scope_id,
                channel=channel_id,
                speaker=speaker,
                speaker_id=speaker_id,
                role=role,
                content=content,
                external_id=external_id,
                created_at=now,
                session_id=session_id,
                provenance=provenance,
            ),
        ).scalar_one()
        conn.execute(
            update(SessionRow)
            .where(SessionRow.id == session_id)
            .values(
                message_count=SessionRow.message_count + 1,
                last_activity_at=now if last_activity is None else max(now, aware(last_activity)),
            )
        )
        return mid

    def _close(self, conn: Connection, session_id: int, now: datetime) -> Session | None:
        """Close an open session and queue its summary, once (the UPDATE decides who closed it)."""
        done = conn.execute(
            update(SessionRow)
            .where(SessionRow.id == session_id, SessionRow.status == "open")
            .values(status="closed", closed_at=now)
        )
        if done.rowcount == 0:
            return None
        row = conn.execute(select(SessionRow).where(SessionRow.id == session_id)).one()
        self.jobs.enqueue_in(
            conn, SUMMARY_JOB, {"session_id": session_id}, key=f"summary:{session_id}", principal=row.user_id
        )
        return _session(row)

    async def close_idle(self, now: datetime, idle: timedelta, limit: int = 500) -> list[Session]:
        """Close every open session idle for longer than `idle` (the periodic sweep); their
        summaries are queued. Returns the sessions closed."""

        def write(conn: Connection) -> list[Session]:
            ids = (
                conn.execute(
                    select(SessionRow.id)
                    .where(SessionRow.status == "open", SessionRow.last_activity_at < now - idle)
                    .limit(limit)
                )
                .scalars()
                .all()
            )
            closed = [self._close(conn, sid, now) for sid in ids]
            return [s for s in closed if s is not None]

        return await self.engines.run_write(write)

    async def close(self, session_id: int, now: datetime) -> Session | None:
        """Close one session now (e.g. `!summary`), queueing its summary. None if already closed."""
        return await self.engines.run_write(self._close, session_id, now)

    async def set_summary(self, session_id: int, fact_id: int) -> None:
        async with self.engines.writer.begin() as conn:
            await conn.execute(update(SessionRow).where(SessionRow.id == session_id).values(summary_fact_id=fact_id))

    async def record_reply(
        self,
        session_id: int,
        scope_id: str,
        channel_id: str,
        speaker: str,
        content: str,
        now: datetime,
        *,
        source_fact_ids: Iterable[int] = (),
    ) -> int:
        """Store the bot's reply in the session (role assistant; never mined for facts); it counts
        as session activity. `source_fact_ids`: the facts the reply was written from (its context
        and tool results), kept as its provenance (`{"facts": [...]}`) so that erasing a user
        finds the replies that used their facts. Returns the message id."""
        speaker = clean_text(speaker, "speaker", 200)
        content = clean_text(content or "…", "reply", MAX_FACT_CHARS)
        provenance = provenance_of(source_fact_ids)

        def write(conn: Connection) -> int:
            row = conn.execute(select(SessionRow.last_activity_at).where(SessionRow.id == session_id)).first()
            return self._append(
                conn,
                session_id,
                scope_id,
                channel_id,
                speaker,
                None,
                "assistant",
                content,
                None,
                now,
                row.last_activity_at if row is not None else None,
                provenance,
            )

        mid = await self.engines.run_write(write)
        return mid

    async def get(self, session_id: int) -> Session | None:
        async with self.engines.reader.connect() as conn:
            row = (await conn.execute(select(SessionRow).where(SessionRow.id == session_id))).first()
        return _session(row) if row else None

    async def open_session(self, user_id: str, channel_id: str) -> Session | None:
        async with self.engines.reader.connect() as conn:
            row = (
                await conn.execute(
                    select(SessionRow).where(
                        SessionRow.user_id == user_id, SessionRow.channel_id == channel_id, SessionRow.status == "open"
                    )
                )
            ).first()
        return _session(row) if row else None

    async def list_sessions(self, user_id: str, channel_id: str | None = None, limit: int = 20) -> list[Session]:
        """A user's sessions, newest first (optionally in one channel)."""
        q = select(SessionRow).where(SessionRow.user_id == user_id)
        if channel_id is not None:
            q = q.where(SessionRow.channel_id == channel_id)
        async with self.engines.reader.connect() as conn:
            rows = (await conn.execute(q.order_by(desc(SessionRow.started_at), desc(SessionRow.id)).limit(limit))).all()
        return [_session(r) for r in rows]

    async def turns(
        self, session_id: int, limit: int = 50, *, roles: tuple[str, ...] = ("user", "assistant")
    ) -> list[Turn]:
        """The last `limit` turns of a session, oldest first."""
        async with self.engines.reader.connect() as conn:
            rows = (
                await conn.execute(
                    select(MessageRow)
                    .where(MessageRow.session_id == session_id, MessageRow.role.in_(roles))
                    .order_by(desc(MessageRow.id))
                    .limit(limit)
                )
            ).all()
        return [_turn(r) for r in reversed(rows)]

    async def summary_fact_ids(self, message_ids: list[int]) -> list[int]:
        """The summary facts of the sessions these messages belong to."""
        if not message_ids:
            return []
        async with self.engines.reader.connect() as conn:
            sessions = select(MessageRow.session_id).where(MessageRow.id.in_(list(message_ids)[:500]))
            rows = await conn.execute(
                select(SessionRow.summary_fact_id).where(
                    SessionRow.id.in_(sessions), SessionRow.summary_fact_id.is_not(None)
                )
            )
            return sorted(set(rows.scalars().all()))

    async def message(self, message_id: int) -> Turn | None:
        async with self.engines.reader.connect() as conn:
            row = (await conn.execute(select(MessageRow).where(MessageRow.id == message_id))).first()
        return _turn(row) if row else None
