"""Invoices & clients: a freelancer's ledger inside Clara.

Each user keeps their own clients, invoices and payments (nobody else sees them), asks who is
overdue — today or on any past date, rebuilt exactly from the history — and gets one fact per
client in their private memory ("Claudia Alz owes $320.00 …"), so ordinary chat knows what
each client owes. Commands: !client, !invoice, !task, !overdue, !ledger, !invoices-export,
!invoices-import. LLM tools: sync_client, get_overdue_clients, log_payment, find_client.
A daily job (06:00 UTC) marks overdue invoices, opens follow-up tasks and writes a summary.

Settings (ctx.config, target "user:<id>"): `currency` (default USD, for amounts given without
one) and `terms_days` (default 30: due date when none is given; with a due date but no issue
date, the issue date is the earlier of today and due − terms, so past invoices can be typed
as `!invoice add Claudia 320 due 2026-09-15`; the invoice number is optional — the next free
`<year>-NNN` is used).
"""

from __future__ import annotations

from datetime import datetime

from clara.plugin_api import Manifest

from . import memory as M
from . import service as S
from .commands import register

MANIFEST = Manifest(
    name="invoices",
    version="1.0",
    description="Clients, invoices and payments: who owes what, overdue reports (also for past dates), "
    "ledgers, CSV import/export, and memory of what each client owes.",
    data_statement=(
        "For each user, only visible to that user: the clients they record (name, email, phone, notes, "
        "status), their invoices, payments, follow-up tasks, a history of invoice status changes and daily "
        "financial summaries; plus one memory fact per client and a daily summary fact in the user's private "
        "memory. !forgetme erases all of it; !export includes it."
    ),
)


async def setup(ctx) -> None:
    register(ctx)
    ctx.schedule("daily", daily, trigger="cron", hour=6, minute=0)


async def teardown(ctx) -> None:
    """Nothing to release: state lives in the database."""


def _now(ctx) -> datetime:
    return S.aware(ctx.now())


async def daily(ctx) -> None:
    """The 06:00 job, per owner: mark invoices that became overdue (events + follow-up tasks),
    write today's summary rows, re-sync client facts (no-op when unchanged) and the summary fact.
    One owner's failure doesn't stop the others; the job reports failure at the end."""
    now = _now(ctx)
    failed = []
    for owner in await S.owners(ctx):
        try:
            result = await S.run_daily(ctx, owner, now)
            await M.sync_clients(ctx, owner, now.date())
            await M.sync_summary(ctx, owner, result.summary)
        except Exception:
            ctx.log.exception("daily invoices job failed for %s", owner)
            failed.append(owner)
    if failed:
        raise RuntimeError(f"daily invoices job failed for {len(failed)} user(s)")


async def delete_user_data(ctx, user_id: str) -> int:
    """Erase every row this user owns in the plugin's tables and the plugin's facts in their
    private memory. Returns rows + facts removed."""
    keys = [v.norm_name for v in await S.list_clients(ctx, user_id, _now(ctx).date())]
    rows = await S.delete_owner(ctx, user_id)
    facts = await M.forget_owner(ctx, user_id, keys)
    return rows + facts


async def export_user_data(ctx, user_id: str) -> dict:
    """Every row this user owns, table by table (amounts as strings, dates ISO)."""
    return await S.export_owner(ctx, user_id)
