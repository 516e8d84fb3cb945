"""Keeps Clara's memory in step with the ledger, so "what does Claudia owe?" is answered from
recall in ordinary chat.

One active fact per (owner, client) in the owner's private scope ("user:<owner>"), slug
`invoices/client/<norm_name>`, linked to the client as a person entity. A change of text
supersedes the previous fact (the old version stays, status superseded, so the history of what
was owed is kept); unchanged text writes nothing. The wording only depends on the ledger (due
dates, "overdue since", never "N days overdue"), so re-syncing every day is a no-op unless
something really changed. The daily job also supersedes one `summary` fact
(`invoices/summary`) per owner.

Never called inside a `ctx.db()` transaction (on SQLite the store has one writer connection).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, timedelta

from . import ledger as L
from . import service as S

CLIENT_SLUG = "invoices/client/{}"
SUMMARY_SLUG = "invoices/summary"
TASK_SLUG = "invoices/task/{}"
OWN_SLUGS = ("invoices/client/", "invoices/task/", SUMMARY_SLUG)
SOURCE_REF = "plugin:invoices"


def client_fact(view: S.ClientView) -> str:
    """The sentence Clara remembers about a client (see module doc)."""
    name = view.name
    open_invs = view.open_invoices()
    last = view.last_payment()
    last_txt = f"last payment {L.format_money(last[0].amount, last[1])} on {last[0].paid_on}" if last else ""
    if open_invs:
        parts = []
        for inv in open_invs:
            left = L.open_balance(inv, view.day)
            of = "" if left == inv.amount else f" of {L.format_money(inv.amount, inv.currency)}"
            state = (
                f"overdue since {inv.due + timedelta(days=1)}"
                if L.invoice_status(inv, view.day) == "overdue"
                else f"due {inv.due}"
            )
            parts.append(f"invoice {inv.number}: {L.format_money(left, inv.currency)}{of} open, {state}")
        text = f"{name} owes {L.format_amounts(view.owed)} ({'; '.join(parts)})."
        if last:
            text += f" Last payment: {L.format_money(last[0].amount, last[1])} on {last[0].paid_on}."
    elif last_txt:
        text = f"{name} has paid everything and owes nothing ({last_txt})."
    elif view.invoices:
        text = f"{name} owes nothing (no open invoices)."
    else:
        text = f"{name} is a client with no invoices yet and owes nothing."
    if view.rating.counted:
        text += f" Payment record: {view.rating.describe()}."
    if view.status_override == "blacklist":
        text += f" {name} is blacklisted."
    elif view.status_override:
        text += f" Status set to {view.status_override}."
    if view.contact:
        text += f" Contact: {view.contact}."
    return text


async def _ensure_scope(ctx, owner: str) -> str:
    scope = S.scope_of(owner)
    await ctx.memory.ensure_scope(scope, "user", owner=owner)
    return scope


async def _write(ctx, scope: str, slug: str, text: str, *, kind: str, importance: float, entities, owner: str):
    """Add the fact, or supersede the current one if its text changed. Returns the active id."""
    for _attempt in range(3):
        current = await ctx.memory.find_slug(scope, slug)
        if current is None:
            fid = await ctx.memory.add(
                text, scope, kind=kind, importance=importance, entities=entities, slug=slug, created_by=owner
            )
            current = await ctx.memory.find_slug(scope, slug)
            if current is None or current.content == text:
                return fid
            continue  # a concurrent writer added it first: supersede its text
        if current.content == text:
            return current.id
        try:
            return await ctx.memory.supersede(current.id, text)
        except Exception:  # superseded concurrently: look again
            ctx.log.debug("supersede of %s raced; retrying", slug, exc_info=True)
    raise RuntimeError(f"could not update memory fact {slug}")


async def sync_client(ctx, owner: str, view: S.ClientView) -> int | None:
    """Write the client's fact (errors are logged, not raised: the ledger is already committed
    and the next change or daily job re-syncs)."""
    try:
        scope = await _ensure_scope(ctx, owner)
        return await _write(
            ctx,
            scope,
            CLIENT_SLUG.format(view.norm_name),
            client_fact(view),
            kind="note",
            importance=0.7,
            entities=[(view.name, "person")],
            owner=owner,
        )
    except Exception:
        ctx.log.exception("memory sync for client %s of %s failed", view.name, owner)
        return None


async def sync_clients(ctx, owner: str, day: date, norm_names: Iterable[str] | None = None) -> int:
    """Re-sync the facts of the owner's clients (all, or those named). Returns facts checked."""
    wanted = None if norm_names is None else set(norm_names)
    n = 0
    for view in await S.list_clients(ctx, owner, day):
        if wanted is None or view.norm_name in wanted:
            await sync_client(ctx, owner, view)
            n += 1
    return n


def task_fact(t: S.TaskView) -> str:
    """The sentence Clara remembers about a task (so "what do I have to do for Claudia?" recalls it)."""
    parts = (f"for {t.client}" if t.client else "", f"invoice {t.invoice}" if t.invoice else "")
    links = ", ".join(x for x in parts if x)
    due = f", due {t.due}" if t.due else ""
    head = f"Task done on {t.done_at.date()}" if t.done and t.done_at else ("Task done" if t.done else "Open task")
    return f"{head} ({t.priority} priority{due}{', ' + links if links else ''}): {t.title}"


async def sync_task(ctx, owner: str, t: S.TaskView) -> int | None:
    try:
        scope = await _ensure_scope(ctx, owner)
        entities = [(t.client, "person")] if t.client else ()
        importance = {"high": 0.8, "normal": 0.6, "low": 0.4}.get(t.priority, 0.6)
        return await _write(
            ctx, scope, TASK_SLUG.format(t.id), task_fact(t), kind="plan", importance=importance,
            entities=entities, owner=owner,
        )  # fmt: skip
    except Exception:
        ctx.log.exception("memory sync of task %s of %s failed", t.id, owner)
        return None


async def sync_summary(ctx, owner: str, text: str) -> int | None:
    try:
        scope = await _ensure_scope(ctx, owner)
        return await _write(ctx, scope, SUMMARY_SLUG, text, kind="summary", importance=0.5, entities=(), owner=owner)
    except Exception:
        ctx.log.exception("memory sync of the daily summary of %s failed", owner)
        return None


async def forget_owner(ctx, owner: str, client_keys: Iterable[str]) -> int:
    """Remove the plugin's facts about `owner` from their scope: every version (active and
    superseded) when the host's memory offers list_facts/erase (hard delete), else the active
    facts by slug (soft forget). Returns how many facts were removed."""
    scope = S.scope_of(owner)
    mem = ctx.memory
    list_facts, erase = getattr(mem, "list_facts", None), getattr(mem, "erase", None)
    try:
        if list_facts is not None and erase is not None:
            ids: list[int] = []
            offset = 0
            while True:
                page = await list_facts([scope], statuses=("active", "superseded", "deleted"), limit=500, offset=offset)
                ids += [
                    f.id
                    for f in page
                    if f.source_ref == SOURCE_REF or (f.slug or "").startswith(OWN_SLUGS)
                ]
                if len(page) < 500:
                    break
                offset += 500
            return await erase(ids) if ids else 0
        n = 0
        for slug in [*(CLIENT_SLUG.format(k) for k in client_keys), SUMMARY_SLUG]:
            fact = await mem.find_slug(scope, slug)
            if fact is not None:
                await mem.forget(fact.id)
                n += 1
        return n
    except Exception:  # e.g. the scope was already purged by the core
        ctx.log.info("no invoice facts left to remove for %s", owner, exc_info=True)
        return 0
