"""The proactive loop (Organic Response System): per active, opted-in user, gather context, decide
WAIT / THINK / SPEAK (LLM with strict JSON when configured, rules otherwise), then apply hard
limits the decision can't override: quiet hours, minimum gap (doubling per ignored message), a
daily cap, opt-outs (user, guild), at most one unanswered proactive message, no repeats.

Response tracking: the "message" event marks a pending proactive message *engaged* and resets
the ignored streak; one left unanswered for ORS_IGNORE_AFTER_HOURS becomes *ignored*, the streak
grows, and both the assessment interval and the speak gap back off (×2 each), until the user
talks again. After ORS_MAX_IGNORED ignored in a row Clara stays silent until the user is back.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import func, insert, select, update

from clara.plugin_api import Invocation, Level

from . import models as M
from . import service as S
from . import timeparse as T

ACTIONS = ("WAIT", "THINK", "SPEAK")
MAX_MESSAGE = 600


def _env(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        return default


def env_on(*names: str) -> bool:
    return any(os.environ.get(n, "").strip().lower() in ("1", "true", "yes", "on") for n in names)


@dataclass
class Limits:
    interval: timedelta
    min_gap: timedelta
    active: timedelta
    decay_days: float
    max_per_day: int
    ignore_after: timedelta
    max_ignored: int

    @classmethod
    def from_env(cls) -> Limits:
        return cls(
            interval=timedelta(minutes=_env("ORS_BASE_INTERVAL_MINUTES", 15)),
            min_gap=timedelta(hours=_env("ORS_MIN_SPEAK_GAP_HOURS", 2)),
            active=timedelta(days=_env("ORS_ACTIVE_DAYS", 7)),
            decay_days=max(0.1, _env("ORS_NOTE_DECAY_DAYS", 7)),
            max_per_day=int(_env("ORS_MAX_PER_DAY", 3)),
            ignore_after=timedelta(hours=_env("ORS_IGNORE_AFTER_HOURS", 8)),
            max_ignored=int(_env("ORS_MAX_IGNORED", 3)),
        )


@dataclass
class Decision:
    action: str
    reason: str
    message: str | None = None
    note: str | None = None
    key: str | None = None  # what it is about (a SPEAK on the same key is never repeated)


# ------------------------------------------------------------------------------ LLM decisions
SYSTEM = (
    "You decide whether Clara, a friendly assistant, should reach out to a user on her own. Reach out only "
    "with a genuine, specific reason (an event today, a plan due, something they asked to be reminded of, an "
    "overdue invoice they care about); never just to chat. Answer with ONE JSON object and nothing else: "
    '{"decision": "WAIT" | "THINK" | "SPEAK", "reason": "<why, one sentence>", '
    '"message": "<the message to send, only for SPEAK>", "note": "<an observation to keep, only for THINK>"}'
)


def parse_decision(raw: str | None) -> Decision | None:
    """Strict parser for the model's answer; None (→ the rule-based path) for anything malformed:
    not JSON, not an object, unknown decision, missing reason, SPEAK without a message, THINK
    without a note, or over-long fields."""
    if not raw or not isinstance(raw, str):
        return None
    text = raw.strip()
    fence = re.fullmatch(r"```(?:json)?\s*(.*?)\s*```", text, re.S)
    if fence:
        text = fence.group(1)
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        return None
    if not isinstance(data, dict):
        return None
    action, reason = data.get("decision"), data.get("reason")
    if not isinstance(action, str) or action.strip().upper() not in ACTIONS:
        return None
    if not isinstance(reason, str) or not reason.strip() or len(reason) > 500:
        return None
    action = action.strip().upper()
    msg, note = data.get("message"), data.get("note")
    if action == "SPEAK":
        if not isinstance(msg, str) or not msg.strip() or len(msg) > MAX_MESSAGE:
            return None
        return Decision("SPEAK", reason.strip(), message=msg.strip(), key=_key(data))
    if action == "THINK":
        if not isinstance(note, str) or not note.strip() or len(note) > 500:
            return None
        return Decision("THINK", reason.strip(), note=note.strip(), key=_key(data))
    return Decision("WAIT", reason.strip())


def _key(data: dict) -> str | None:
    k = data.get("about")
    return f"llm:{k[:180]}" if isinstance(k, str) and k.strip() else None


# ------------------------------------------------------------------------------ context
@dataclass
class Context:
    user_id: str
    tz: str
    now: datetime
    local_now: datetime
    since_last: timedelta
    dated_facts: list[dict]
    reminders: list[dict]
    overdue: str | None
    notes: list[dict]
    pending: bool
    ignored_streak: int
    spoken_keys: set[str]

    def for_llm(self) -> str:
        return json.dumps(
            {
                "local_time": self.local_now.strftime("%A %Y-%m-%d %H:%M"),
                "hours_since_last_message": round(self.since_last.total_seconds() / 3600, 1),
                "plans_and_events": self.dated_facts,
                "upcoming_reminders": self.reminders,
                "overdue_invoices": self.overdue,
                "notes": self.notes,
                "ignored_in_a_row": self.ignored_streak,
                "already_raised": sorted(self.spoken_keys)[-20:],
            },
            ensure_ascii=False,
            default=str,
        )


def _invocation(act: Any, now: datetime) -> Invocation:
    return Invocation(
        user_id=act.user_id,
        display_name=act.display_name,
        channel_id=act.last_channel_id,
        guild_id=act.last_guild_id,
        is_dm=bool(act.last_is_dm),
        level=Level.MEMBER,
        now=now,
        user_scope=f"user:{act.user_id}",
        conversation_scope=f"user:{act.user_id}" if act.last_is_dm else f"channel:{act.last_channel_id}",
    )


async def gather(ctx, act: Any, now: datetime, limits: Limits) -> Context:
    uid = act.user_id
    tz = await S.user_tz(ctx, uid)
    zi = ZoneInfo(tz)
    local_now = now.astimezone(zi)
    facts = []
    lister = getattr(ctx.memory, "list_facts", None)
    if lister is not None:
        try:
            for f in await lister([f"user:{uid}"], kinds=["plan", "event"], limit=30):
                when = T.aware(f.valid_from)
                if when is None:
                    continue
                facts.append(
                    {
                        "id": f.id,
                        "kind": f.kind,
                        "content": f.content,
                        "date": when.astimezone(zi).date().isoformat(),
                        "mentioned": T.aware(f.created_at).astimezone(zi).date().isoformat(),
                    }
                )
        except Exception:
            ctx.log.exception("listing facts for %s failed", uid)
    rems = [
        {"id": r.id, "text": r.text, "at": T.local(r.next_at, r.tz)}
        for r in await S.list_active(ctx, uid, until=now + timedelta(hours=24))
    ]
    overdue = None
    try:
        res = await ctx.call_tool("get_overdue_clients", _invocation(act, now), {})
        if res and not res.startswith("error") and not res.startswith("No client"):
            overdue = res[:1500]
    except Exception:
        ctx.log.exception("asking invoices for overdue clients failed")
    async with ctx.read() as conn:
        note_rows = (
            await conn.execute(
                select(M.notes)
                .where(M.notes.c.user_id == uid, M.notes.c.created_at >= now - timedelta(days=limits.decay_days))
                .order_by(M.notes.c.created_at.desc())
                .limit(20)
            )
        ).all()
        keys = (
            await conn.execute(
                select(M.proactive.c.key).where(M.proactive.c.user_id == uid, M.proactive.c.key.is_not(None))
            )
        ).all()
        pending = (
            await conn.execute(
                select(func.count()).where(M.proactive.c.user_id == uid, M.proactive.c.outcome == "pending")
            )
        ).scalar_one()
    notes = []
    for n in note_rows:
        age = (now - T.aware(n.created_at)).total_seconds() / 86400
        notes.append({"text": n.text, "key": n.key, "relevance": round(max(0.0, 1 - age / limits.decay_days), 2)})
    return Context(
        user_id=uid,
        tz=tz,
        now=now,
        local_now=local_now,
        since_last=now - T.aware(act.last_message_at),
        dated_facts=facts,
        reminders=rems,
        overdue=overdue,
        notes=[n for n in notes if n["relevance"] > 0],
        pending=bool(pending),
        ignored_streak=act.ignored_streak,
        spoken_keys={k[0] for k in keys},
    )


# ------------------------------------------------------------------------------ rules
def decide_by_rules(c: Context) -> Decision:
    today = c.local_now.date()
    if c.pending:
        return Decision("WAIT", "my last message is still unanswered")
    noted = {n["key"] for n in c.notes}
    for f in c.dated_facts:
        key = f"fact:{f['id']}"
        if f["date"] == today.isoformat() and f["mentioned"] < today.isoformat() and key not in c.spoken_keys:
            return Decision(
                "SPEAK",
                f"the user mentioned a {f['kind']} for today",
                message=f"Today's the day: you told me “{f['content']}”. Good luck — let me know how it goes!",
                key=key,
            )
    for f in c.dated_facts:
        key = f"fact:{f['id']}:soon"
        if f["date"] == (today + timedelta(days=1)).isoformat() and key not in noted:
            return Decision("THINK", "a plan or event is due tomorrow", note=f"Tomorrow: {f['content']}", key=key)
    if c.overdue:
        key = f"invoices:{today.isoformat()}"
        recent = {f"invoices:{(today - timedelta(days=d)).isoformat()}" for d in range(3)}
        if not (recent & c.spoken_keys):
            first = c.overdue.splitlines()[0]
            return Decision(
                "SPEAK",
                "the user has overdue invoices",
                message=f"Heads-up on your invoices: {first} Want me to draft a friendly nudge?",
                key=key,
            )
    if c.since_last >= timedelta(days=3) and c.notes:
        best = max(c.notes, key=lambda n: n["relevance"])
        key = f"checkin:{best['key'] or best['text'][:60]}"
        if best["relevance"] >= 0.3 and key not in c.spoken_keys:
            return Decision(
                "SPEAK",
                "quiet for a few days and a note is still relevant",
                message=f"Hey, it's been a few days — I was thinking about this: {best['text']} How's it going?",
                key=key,
            )
    return Decision("WAIT", "nothing worth interrupting for")


async def decide(ctx, c: Context) -> tuple[Decision, str]:
    raw = await ctx.complete(SYSTEM, c.for_llm(), json_mode=True, max_tokens=300)
    if raw is not None:
        d = parse_decision(raw)
        if d is not None:
            return d, "llm"
        ctx.log.warning("malformed proactive decision from the LLM; using rules: %r", raw[:200])
    return decide_by_rules(c), "rules"


# ------------------------------------------------------------------------------ limits
def parse_quiet(value: str) -> tuple[time, time]:
    m = re.fullmatch(r"\s*(\d{1,2})(?::(\d{2}))?\s*-\s*(\d{1,2})(?::(\d{2}))?\s*", value or "")
    if not m or int(m.group(1)) > 23 or int(m.group(3)) > 23 or int(m.group(2) or 0) > 59 or int(m.group(4) or 0) > 59:
        from clara.plugin_api import PluginError

        raise PluginError("quiet hours look like 22:00-08:00")
    return time(int(m.group(1)), int(m.group(2) or 0)), time(int(m.group(3)), int(m.group(4) or 0))


def in_quiet(local_now: datetime, quiet: str | None) -> bool:
    if not quiet:
        return False
    start, end = parse_quiet(quiet)
    t = local_now.time()
    return (start <= t < end) if start <= end else (t >= start or t < end)


async def target_for(ctx, act: Any) -> str | None:
    """Where a proactive message goes: the user's DM, or the channel they chose with
    `!proactive here` if its guild opted in. None if nowhere is allowed."""
    where = await ctx.config.get(f"user:{act.user_id}", "proactive_where", "dm")
    if isinstance(where, dict) and where.get("channel"):
        guild = where.get("guild")
        if guild and await ctx.config.get(f"guild:{guild}", "proactive", False):
            return f"channel:{where['channel']}"
        return None
    return f"user:{act.user_id}"


async def blocked(ctx, act: Any, c: Context, d: Decision, limits: Limits) -> str | None:
    uid = act.user_id
    if c.ignored_streak >= limits.max_ignored:
        return f"ignored {c.ignored_streak} times in a row: silent until the user is back"
    quiet = await ctx.config.get(f"user:{uid}", "quiet", os.environ.get("ORS_QUIET_HOURS", "22:00-08:00"))
    if in_quiet(c.local_now, quiet):
        return "quiet hours"
    if c.since_last < timedelta(minutes=_env("ORS_IDLE_TIMEOUT_MINUTES", 30)):
        return "the user is mid-conversation"
    if d.key and d.key in c.spoken_keys:
        return "already said"
    gap = limits.min_gap * (2 ** min(c.ignored_streak, 6))
    day_start = datetime.combine(c.local_now.date(), time(0), tzinfo=ZoneInfo(c.tz))
    async with ctx.read() as conn:
        last = (
            await conn.execute(select(func.max(M.proactive.c.sent_at)).where(M.proactive.c.user_id == uid))
        ).scalar_one()
        today = (
            await conn.execute(
                select(func.count()).where(M.proactive.c.user_id == uid, M.proactive.c.sent_at >= T.utc(day_start))
            )
        ).scalar_one()
    if last is not None and c.now - T.aware(last) < gap:
        return f"minimum gap ({gap}) not reached"
    if today >= limits.max_per_day:
        return "daily maximum reached"
    return None


# ------------------------------------------------------------------------------ the loop
async def enabled_globally(ctx) -> bool:
    value = await ctx.config.get("global", "enabled", None)
    return bool(value) if value is not None else env_on("PROACTIVE_ENABLED", "ORS_ENABLED")


async def expire_pending(ctx, now: datetime, limits: Limits) -> None:
    """Pending proactive messages unanswered for too long count as ignored (streak + 1)."""
    async with ctx.read() as conn:
        rows = (
            await conn.execute(
                select(M.proactive.c.id, M.proactive.c.user_id).where(
                    M.proactive.c.outcome == "pending", M.proactive.c.sent_at <= now - limits.ignore_after
                )
            )
        ).all()
    for pid, uid in rows:
        async with ctx.db() as conn:
            res = await conn.execute(
                update(M.proactive)
                .where(M.proactive.c.id == pid, M.proactive.c.outcome == "pending")
                .values(outcome="ignored")
            )
            if res.rowcount == 1:
                await conn.execute(
                    update(M.activity)
                    .where(M.activity.c.user_id == uid)
                    .values(ignored_streak=M.activity.c.ignored_streak + 1)
                )


async def assess_all(ctx, now: datetime) -> list[tuple[str, Decision, str]]:
    """One pass over active users due for an assessment; returns (user, decision, outcome)."""
    if not await enabled_globally(ctx):
        return []
    limits = Limits.from_env()
    await expire_pending(ctx, now, limits)
    async with ctx.read() as conn:
        users = (
            await conn.execute(
                select(M.activity)
                .where(
                    M.activity.c.last_message_at >= now - limits.active,
                    (M.activity.c.next_assess_at.is_(None)) | (M.activity.c.next_assess_at <= now),
                )
                .order_by(M.activity.c.user_id)
            )
        ).all()
    out = []
    for act in users:
        if not await ctx.config.get(f"user:{act.user_id}", "proactive", False):
            continue
        try:
            out.append((act.user_id, *await assess(ctx, act, now, limits)))
        except Exception:
            ctx.log.exception("proactive assessment for %s failed", act.user_id)
    return out


async def assess(ctx, act: Any, now: datetime, limits: Limits) -> tuple[Decision, str]:
    c = await gather(ctx, act, now, limits)
    d, how = await decide(ctx, c)
    outcome = d.action.lower()
    if d.action == "SPEAK":
        why = await blocked(ctx, act, c, d, limits)
        target = None if why else await target_for(ctx, act)
        if why is None and target is None:
            why = "no allowed place to speak (guild not opted in)"
        if why:
            outcome = f"held: {why}"
            if why != "already said" and not c.pending:
                await _note(
                    ctx, act.user_id, f"Wanted to say ({d.reason}): {d.message}", d.key and d.key + ":held", now
                )
        elif await ctx.send(target, d.message, about=[act.user_id]):
            async with ctx.db() as conn:
                await conn.execute(
                    insert(M.proactive).values(
                        user_id=act.user_id,
                        target=target,
                        text=d.message,
                        reason=f"{how}: {d.reason}"[:1000],
                        key=d.key,
                        sent_at=now,
                        outcome="pending",
                    )
                )
        else:
            outcome = "held: send failed"
    elif d.action == "THINK":
        await _note(ctx, act.user_id, d.note or d.reason, d.key, now)
    interval = min(limits.interval * (2 ** min(c.ignored_streak, 6)), timedelta(hours=8))
    async with ctx.db() as conn:
        await conn.execute(
            update(M.activity).where(M.activity.c.user_id == act.user_id).values(next_assess_at=now + interval)
        )
    return d, outcome


async def _note(ctx, uid: str, text: str, key: str | None, now: datetime) -> None:
    async with ctx.db() as conn:
        if key is not None:
            dup = (
                await conn.execute(select(M.notes.c.id).where(M.notes.c.user_id == uid, M.notes.c.key == key))
            ).first()
            if dup is not None:
                return
        await conn.execute(insert(M.notes).values(user_id=uid, text=text[:1000], key=key, created_at=now))


async def on_message(ctx, inv: Invocation, now: datetime) -> None:
    """Track the interaction; a reply after a proactive message counts as engagement."""
    values = dict(
        display_name=inv.display_name[:200],
        last_message_at=now,
        last_channel_id=inv.channel_id,
        last_guild_id=inv.guild_id,
        last_is_dm=inv.is_dm,
        ignored_streak=0,
        next_assess_at=now + Limits.from_env().interval,
    )
    async with ctx.db() as conn:
        res = await conn.execute(update(M.activity).where(M.activity.c.user_id == inv.user_id).values(**values))
        if res.rowcount == 0:
            await conn.execute(insert(M.activity).values(user_id=inv.user_id, **values))
        await conn.execute(
            update(M.proactive)
            .where(M.proactive.c.user_id == inv.user_id, M.proactive.c.outcome == "pending")
            .values(outcome="engaged")
        )
