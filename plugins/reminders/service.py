"""Reminders: create, list, cancel, snooze, and the delivery pass the tick runs.

Delivery idempotency: each due occurrence is *claimed* in one transaction that (a) advances the
reminder (`next_at` moves on, or a one-off becomes done) guarded by its old `next_at`, and (b)
inserts a `reminders_deliveries` row unique per (reminder, occurrence). Only then is the message
sent, and the row marked sent (or failed: retried on later ticks within the grace window). So an
occurrence is delivered at most once — across ticks, restarts and concurrent hosts — and never
silently dropped: a reminder whose time passed while the bot was down is delivered late, with a
note.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from clara.plugin_api import PluginError

from . import models as M
from . import timeparse as T

LATE_AFTER = timedelta(minutes=2)  # delivered later than this → "late" note
MAX_ACTIVE = 200  # per user


def grace() -> timedelta:
    return timedelta(hours=float(os.environ.get("REMINDERS_GRACE_HOURS", "6")))


@dataclass
class Spec:
    """What to create: a one-off `when` or a recurring `cron` (local wall time in `tz`)."""

    text: str
    tz: str
    when: datetime | None = None
    cron: str | None = None


async def user_tz(ctx, user_id: str) -> str:
    return await ctx.config.get(f"user:{user_id}", "timezone", None) or os.environ.get("REMINDERS_DEFAULT_TZ", "UTC")


def parse_spec(text: str, now: datetime, tz: str) -> Spec:
    """`in 2 hours to call Anna` | `every Monday 9:00 standup` | `cron 0 9 * * 1 standup`."""
    T.zone(tz)
    rec = T.parse_recurrence(text)
    if rec is not None:
        cron, rest = rec
        return Spec(T.clean_text(rest), tz, cron=cron)
    when, rest = T.split_when(text, now, tz)
    return Spec(T.clean_text(rest), tz, when=when)


async def create(ctx, *, owner_id: str, owner_name: str, target: str, spec: Spec, source: str, now: datetime) -> dict:
    now = T.utc(now)
    if spec.cron:
        next_at = T.next_fire(spec.cron, spec.tz, now)
        if next_at is None:
            raise PluginError("that recurrence never fires")
    else:
        if spec.when is None or T.utc(spec.when) <= now:
            raise PluginError("that time is in the past")
        next_at = T.utc(spec.when)
    if not target.startswith(("channel:", "user:")) or len(target) > 220:
        raise PluginError(f"bad reminder target {target!r}")
    async with ctx.read() as conn:
        rows = (
            await conn.execute(
                select(M.reminders.c.id).where(M.reminders.c.owner_id == owner_id, M.reminders.c.status == "active")
            )
        ).all()
    if len(rows) >= MAX_ACTIVE:
        raise PluginError(f"you already have {MAX_ACTIVE} active reminders — cancel some first")
    values = dict(
        owner_id=owner_id,
        owner_name=owner_name[:200],
        target=target,
        text=spec.text,
        tz=spec.tz,
        cron=spec.cron,
        next_at=next_at,
        status="active",
        source=source[:64],
        created_at=now,
        updated_at=now,
    )
    async with ctx.db() as conn:
        rid = (await conn.execute(insert(M.reminders).values(**values).returning(M.reminders.c.id))).scalar_one()
    return {"id": rid, **values}


async def get(ctx, owner_id: str, rid: int) -> Any:
    async with ctx.read() as conn:
        row = (
            await conn.execute(select(M.reminders).where(M.reminders.c.id == rid, M.reminders.c.owner_id == owner_id))
        ).first()
    if row is None:
        raise PluginError(f"you have no reminder #{rid}")
    return row


async def list_active(ctx, owner_id: str, *, until: datetime | None = None) -> list[Any]:
    q = select(M.reminders).where(M.reminders.c.owner_id == owner_id, M.reminders.c.status == "active")
    if until is not None:
        q = q.where(M.reminders.c.next_at <= T.utc(until))
    async with ctx.read() as conn:
        return list((await conn.execute(q.order_by(M.reminders.c.next_at, M.reminders.c.id))).all())


async def cancel(ctx, owner_id: str, rid: int, now: datetime) -> Any:
    row = await get(ctx, owner_id, rid)
    if row.status != "active":
        raise PluginError(f"reminder #{rid} is already {row.status}")
    async with ctx.db() as conn:
        await conn.execute(
            update(M.reminders).where(M.reminders.c.id == rid).values(status="cancelled", updated_at=T.utc(now))
        )
    return row


async def snooze(ctx, owner_id: str, rid: int, delta: timedelta, now: datetime) -> dict | Any:
    """A one-off moves to now + delta (also one that just fired); a recurring one gets a one-off
    copy at now + delta (its schedule is unchanged)."""
    row = await get(ctx, owner_id, rid)
    at = T.utc(now) + delta
    if row.cron:
        spec = Spec(row.text, row.tz, when=at)
        return await create(
            ctx, owner_id=owner_id, owner_name=row.owner_name, target=row.target, spec=spec, source="snooze", now=now
        )
    if row.status == "cancelled":
        raise PluginError(f"reminder #{rid} was cancelled")
    async with ctx.db() as conn:
        await conn.execute(
            update(M.reminders)
            .where(M.reminders.c.id == rid)
            .values(status="active", next_at=at, updated_at=T.utc(now))
        )
    return await get(ctx, owner_id, rid)


def message(row: Any, occurrence: datetime, now: datetime) -> str:
    who = f" for {row.owner_name}" if row.target.startswith("channel:") else ""
    text = f"⏰ Reminder{who}: {row.text}"
    if T.utc(now) - occurrence > LATE_AFTER:
        text += f"\n(late — this was due {T.local(occurrence, row.tz)}; I couldn't deliver it on time)"
    if row.cron:
        text += f"\n(repeats {T.describe_cron(row.cron)} {row.tz} · !reminders cancel {row.id} to stop)"
    return text


async def deliver_due(ctx, now: datetime) -> int:
    """Deliver every occurrence due at `now` (see the module doc). Returns messages sent."""
    now = T.utc(now)
    sent = 0
    async with ctx.read() as conn:
        due = (
            await conn.execute(
                select(M.reminders)
                .where(M.reminders.c.status == "active", M.reminders.c.next_at <= now)
                .order_by(M.reminders.c.next_at)
                .limit(500)
            )
        ).all()
    for row in due:
        try:
            sent += await _deliver_one(ctx, row, now)
        except Exception:
            ctx.log.exception("delivering reminder #%s failed", row.id)
    sent += await _retry_failed(ctx, now)
    return sent


async def _deliver_one(ctx, row: Any, now: datetime) -> int:
    first = T.aware(row.next_at)
    occ, skipped = first, []
    if row.cron:
        # Collapse occurrences missed while down: only the latest one is delivered (if within grace).
        while (nxt := T.next_fire(row.cron, row.tz, occ)) is not None and nxt <= now:
            skipped.append(occ)
            occ = nxt
            if len(skipped) > 1000:
                break
        nxt = T.next_fire(row.cron, row.tz, now)
        values = {"next_at": nxt, "status": "active" if nxt else "done"}
        deliver = now - occ <= grace()
        if not deliver:
            skipped.append(occ)
    else:
        values = {"next_at": None, "status": "done"}
        deliver = True  # a one-off promise is kept, however late (with a note)
    claimed = False
    try:
        async with ctx.db() as conn:
            res = await conn.execute(
                update(M.reminders)
                .where(M.reminders.c.id == row.id, M.reminders.c.status == "active", M.reminders.c.next_at == first)
                .values(updated_at=now, **values)
            )
            if res.rowcount != 1:
                return 0  # someone else advanced it
            for s in skipped[-20:]:
                await conn.execute(
                    insert(M.deliveries).values(
                        reminder_id=row.id, owner_id=row.owner_id, occurrence_at=s, status="skipped", late=True, at=now
                    )
                )
            if deliver:
                await conn.execute(
                    insert(M.deliveries).values(
                        reminder_id=row.id,
                        owner_id=row.owner_id,
                        occurrence_at=occ,
                        status="claimed",
                        late=now - occ > LATE_AFTER,
                        at=now,
                    )
                )
                claimed = True
    except IntegrityError:
        # This occurrence was already claimed (delivered) before: never twice. Just move on.
        async with ctx.db() as conn:
            await conn.execute(
                update(M.reminders)
                .where(M.reminders.c.id == row.id, M.reminders.c.next_at == first)
                .values(updated_at=now, **values)
            )
        return 0
    if not claimed:
        return 0
    return await _send(ctx, row, occ, now)


async def _send(ctx, row: Any, occ: datetime, now: datetime) -> int:
    ok = await ctx.send(row.target, message(row, occ, now), about=[row.owner_id])
    async with ctx.db() as conn:
        await conn.execute(
            update(M.deliveries)
            .where(and_(M.deliveries.c.reminder_id == row.id, M.deliveries.c.occurrence_at == occ))
            .values(status="sent" if ok else "failed", at=now)
        )
    return int(ok)


async def _retry_failed(ctx, now: datetime) -> int:
    """Sends that failed (transport down) are retried each tick while within the grace window."""
    async with ctx.read() as conn:
        rows = (
            await conn.execute(
                select(M.deliveries.c.id, M.deliveries.c.occurrence_at, M.reminders)
                .join(M.reminders, M.reminders.c.id == M.deliveries.c.reminder_id)
                .where(M.deliveries.c.status == "failed", M.deliveries.c.occurrence_at >= now - grace())
                .limit(100)
            )
        ).all()
    sent = 0
    for r in rows:
        async with ctx.db() as conn:
            res = await conn.execute(
                update(M.deliveries)
                .where(M.deliveries.c.id == r[0], M.deliveries.c.status == "failed")
                .values(status="claimed", at=now)
            )
        if res.rowcount == 1:
            sent += await _send(ctx, r, T.aware(r.occurrence_at), now)
    return sent


async def delete_user(ctx, user_id: str) -> int:
    n = 0
    async with ctx.db() as conn:
        for table, col in (
            (M.deliveries, M.deliveries.c.owner_id),
            (M.reminders, M.reminders.c.owner_id),
            (M.activity, M.activity.c.user_id),
            (M.proactive, M.proactive.c.user_id),
            (M.notes, M.notes.c.user_id),
        ):
            n += (await conn.execute(delete(table).where(col == user_id))).rowcount or 0
    n += await ctx.config.delete(f"user:{user_id}")
    return n


def _plain(v: Any) -> Any:
    return T.utc(v).isoformat() if isinstance(v, datetime) else v


async def export_user(ctx, user_id: str) -> dict:
    out: dict[str, Any] = {}
    async with ctx.read() as conn:
        for table, col in (
            (M.reminders, M.reminders.c.owner_id),
            (M.deliveries, M.deliveries.c.owner_id),
            (M.activity, M.activity.c.user_id),
            (M.proactive, M.proactive.c.user_id),
            (M.notes, M.notes.c.user_id),
        ):
            rows = (await conn.execute(select(table).where(col == user_id))).mappings().all()
            out[table.name] = [{k: _plain(v) for k, v in r.items()} for r in rows]
    settings = {}
    for key in ("timezone", "proactive", "quiet", "proactive_where"):
        v = await ctx.config.get(f"user:{user_id}", key, None)
        if v is not None:
            settings[key] = v
    out["settings"] = settings
    return out
