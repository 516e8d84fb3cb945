"""Reminders and proactive messages: Clara reaches out on her own — only with a reason.

Reminders: `!remind me in 2 hours to call Anna`, `!remind #channel every Monday 9:00 standup`
(natural-language times via dateparser, in the user's timezone: `!timezone Europe/Berlin`),
one-off or recurring (cron in local wall time, DST-correct), `!reminders` (list / cancel / snooze).
Delivered where asked (the channel, or the DM). Persisted, with a delivery log unique per
occurrence: a restart neither loses nor repeats one; missed ones arrive late with a note.
LLM tools: create_reminder (also for other plugins via ctx.call_tool), list_reminders,
cancel_reminder.

Proactive loop (opt-in: PROACTIVE_ENABLED/ORS_ENABLED for the bot, `!proactive on` per user,
`!proactive guild on` for a server channel): a periodic assessment per active user decides
WAIT / THINK / SPEAK from plans/events in memory, upcoming reminders, overdue invoices, notes and
silence — see proactive.py for the rules and limits.

One job, `tick`, every minute: delivers due reminders, then runs the proactive assessments that
are due (each user has their own next-assessment time, ORS_BASE_INTERVAL_MINUTES with back-off).
Settings (ctx.config "user:<id>"): timezone, proactive, proactive_where, quiet; "guild:<id>":
proactive; "global": enabled (overrides the environment).
"""

from __future__ import annotations

from datetime import UTC, datetime

from clara.plugin_api import Manifest

from . import proactive as P
from . import service as S
from .commands import register

MANIFEST = Manifest(
    name="reminders",
    version="1.0",
    description="Reminders (one-off and recurring, in your timezone) and opt-in proactive messages.",
    data_statement=(
        "For each user: the reminders they set (text, time, where to deliver) and a log of their deliveries; "
        "their timezone, quiet hours and proactive opt-in; when they last talked to Clara (time and channel, not "
        "the text); the proactive messages Clara sent them and whether they replied; Clara's short notes about "
        "what might be worth raising (they fade after a week). !forgetme erases all of it; !export includes it."
    ),
)


async def setup(ctx) -> None:
    register(ctx)
    ctx.schedule("tick", tick, trigger="interval", minutes=1)


async def teardown(ctx) -> None:
    """Nothing to release: state lives in the database."""


def _now(ctx) -> datetime:
    now = ctx.now()
    return now.replace(tzinfo=UTC) if now.tzinfo is None else now.astimezone(UTC)


async def tick(ctx) -> None:
    """Every minute: deliver due reminders, then run the proactive assessments that are due."""
    now = _now(ctx)
    await S.deliver_due(ctx, now)
    await P.assess_all(ctx, now)


async def delete_user_data(ctx, user_id: str) -> int:
    return await S.delete_user(ctx, user_id)


async def export_user_data(ctx, user_id: str) -> dict:
    return await S.export_user(ctx, user_id)
