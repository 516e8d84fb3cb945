"""Chat commands and LLM tools of the invoices plugin (registered by `register(ctx)`).

Every command works on the caller's own ledger (`inv.user_id` is the owner). Arguments are
split with `shlex`, so multi-word names can be quoted; a malformed command answers with an
error and the usage line. Answers that show financial data are `private=True`.
"""

from __future__ import annotations

import csv
import io
import re
import shlex
from collections.abc import Awaitable, Callable
from typing import Any

from clara.plugin_api import Invocation, PluginError, Result

from . import ledger as L
from . import memory as M
from . import service as S

USAGE = {
    "client": (
        "!client add <name> [email=…] [phone=…] [notes=…] [status=active|overdue|blacklist|auto] · "
        "!client set <name> key=value… · !client show <name> · !client list"
    ),
    "invoice": (
        '!invoice add [<number>] "<client>" <amount> [due <date>] [issued <date>] [note <text>] · '
        "!invoice pay <number> [<amount>] [on <date>] [by <method>] · !invoice void <number> [on <date>] · "
        "!invoice show <number> · !invoice list [<client>]"
    ),
    "overdue": "!overdue [on <date>]  (e.g. !overdue, !overdue on 2026-10-31)",
    "task": (
        '!task add <title or "quoted title"> [due <date>] [priority high|normal|low] [client <name>] '
        "[invoice <number>] · "
        "!task list [all] [client <name>] · !task done <n>"
    ),
    "ledger": "!ledger <client> [on <date>]",
    "invoices-export": "!invoices-export",
    "invoices-import": "!invoices-import <CSV text: clients, invoices and/or payments blocks, header first>",
}
HELP = {
    "client": "Your clients: add, update, show (owed, rating) and list them.",
    "invoice": "Your invoices: add, record (partial) payments, void, show, list.",
    "overdue": "Which clients are overdue — today, or on any past date.",
    "task": "Your tasks: add (due date, priority, linked client/invoice), list, mark done.",
    "ledger": "A client's account: every invoice, payment and void with a running balance.",
    "invoices-export": "Download your clients, invoices and payments as CSV files.",
    "invoices-import": "Import clients, invoices and payments from CSV (all rows checked first).",
}
_MONEY_START = re.compile(r"^(?:[-−(+]|[$€£¥₹₩₺]|[A-Z]{1,2}\$|\d)")


class Usage(Exception):
    """A malformed command: answered with the message and the usage line."""


def _split(args: str) -> list[str]:
    try:
        return shlex.split(args or "")
    except ValueError as exc:
        raise Usage(f"couldn't read the arguments ({exc}); quote names with spaces or apostrophes") from None


def _keyword_split(tokens: list[str], keywords: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    """Tokens before the first keyword, and the text after each keyword (up to the next)."""
    head: list[str] = []
    found: dict[str, list[str]] = {}
    current: list[str] | None = None
    for tok in tokens:
        key = keywords.get(tok.lower())
        if key is not None and key not in found:
            current = found.setdefault(key, [])
            continue
        (current if current is not None else head).append(tok)
    for key, words in found.items():
        if not words:
            raise Usage(f"'{key}' needs a value")
    return head, {k: " ".join(v) for k, v in found.items()}


_TASK_KEYS = ("due", "priority", "client", "invoice")


def _task_split(tokens: list[str]) -> tuple[list[str], dict[str, str]]:
    """`!task add` words: the title, and the values after `due`, `priority`, `client`, `invoice`.
    A keyword with no value after it (the next word is another keyword, or nothing) is part of
    the title, so "Call Claudia about the invoice due friday" keeps "invoice" in the title; a
    quoted title is never split."""
    head: list[str] = []
    found: dict[str, list[str]] = {}
    current: list[str] | None = None
    for i, tok in enumerate(tokens):
        key = tok.lower()
        nxt = tokens[i + 1].lower() if i + 1 < len(tokens) else None
        if key in _TASK_KEYS and key not in found and nxt is not None and nxt not in _TASK_KEYS:
            current = found.setdefault(key, [])
            continue
        (current if current is not None else head).append(tok)
    return head, {k: " ".join(v) for k, v in found.items()}


def _kv(tokens: list[str], allowed: tuple[str, ...]) -> tuple[str, dict[str, str]]:
    name_parts, kv = [], {}
    for tok in tokens:
        if "=" in tok and tok.split("=", 1)[0].lower() in allowed:
            k, v = tok.split("=", 1)
            kv[k.lower()] = v
        elif "=" in tok and " " not in tok:
            raise Usage(f"unknown field {tok.split('=', 1)[0]!r} (one of {', '.join(allowed)})")
        else:
            name_parts.append(tok)
    return " ".join(name_parts), kv


def _looks_like_money(tok: str, nxt: str | None) -> bool:
    if _MONEY_START.match(tok):
        return True
    return tok.upper() in L.ISO_4217 and nxt is not None and nxt[:1].isdigit()


def _csv_rows(data: bytes) -> int:
    return max(0, sum(1 for _ in csv.reader(io.StringIO(data.decode()))) - 1)


def _owner(inv: Invocation) -> str:
    return inv.user_id


def _today(inv: Invocation):
    return S.aware(inv.now).date()


# ------------------------------------------------------------------------------------ formatting
def fmt_client(v: S.ClientView, tasks: list[Any] = ()) -> str:
    lines = [f"{v.name} — {v.status}" + (" (set by hand)" if v.status_override else "")]
    if v.contact:
        lines.append(f"Contact: {v.contact}")
    if v.notes:
        lines.append(f"Notes: {v.notes}")
    lines.append(
        f"Owes: {L.format_amounts(v.owed)} · Total paid: {L.format_amounts(v.spent)} · Rating: {v.rating.describe()}"
    )
    open_invs = v.open_invoices()
    if open_invs:
        lines.append("Open invoices:")
        for i in open_invs:
            status = L.invoice_status(i, v.day)
            late = f", {L.days_overdue(i, v.day)} days overdue" if status == "overdue" else ""
            lines.append(
                f"• {i.number} — {L.format_money(L.open_balance(i, v.day), i.currency)} open of "
                f"{L.format_money(i.amount, i.currency)}, due {i.due}{late}"
            )
    elif v.invoices:
        lines.append(f"No open invoices ({len(v.invoices)} in total).")
    else:
        lines.append("No invoices yet.")
    if tasks:
        lines.append("To do: " + "; ".join(t.title for t in tasks))
    return "\n".join(lines)


def fmt_invoice(f: L.InvoiceFacts, status: str, day) -> str:
    left = L.open_balance(f, day)
    state = f"overdue by {L.days_overdue(f, day)} days" if status == "overdue" else status.replace("_", " ")
    return (
        f"Invoice {f.number} — {f.client}: {L.format_money(f.amount, f.currency)}, issued {f.issued}, "
        f"due {f.due} — {state}; open {L.format_money(left, f.currency)}"
    )


def fmt_task(t: S.TaskView, today) -> str:
    state = f"done {t.done_at.date()}" if t.done and t.done_at else ("done" if t.done else "")
    due = ""
    if t.due:
        late = " (overdue)" if not t.done and t.due < today else (" (today)" if t.due == today else "")
        due = f" — due {t.due}{late}"
    links = " · ".join(x for x in (t.client or "", f"invoice {t.invoice}" if t.invoice else "") if x)
    return (
        f"#{t.id} [{t.priority}] {t.title}{due}"
        + (f" · {links}" if links else "")
        + (f" · {state}" if state else "")
    )


def fmt_overdue(rows: list[L.OverdueClient], day, today) -> str:
    when = "today" if day == today else f"on {day}"
    if not rows:
        return f"No client was overdue {when}." if day != today else "No client is overdue today."
    total: dict[str, Any] = {}
    for r in rows:
        for c, a in r.owed.items():
            total[c] = total.get(c, 0) + a
    verb = "were" if day != today else "are"
    head = f"{len(rows)} client(s) {verb} overdue {when} — {L.format_amounts(total)} in total:"
    return "\n".join([head, *(f"• {r.describe()}" for r in rows)])


# --------------------------------------------------------------------------------- registration
def register(ctx) -> None:
    def command(name: str):
        def deco(fn: Callable[[Invocation, list[str], str], Awaitable[Result | str]]):
            async def handler(inv: Invocation, args: str) -> Result:
                try:
                    out = await fn(inv, args)
                except Usage as exc:
                    return Result(f"{exc}\nUsage: {USAGE[name]}", error=True, private=True)
                except PluginError as exc:
                    return Result(str(exc), error=True, private=True)
                return out if isinstance(out, Result) else Result(str(out), private=True)

            ctx.command(name, help=HELP[name], usage=USAGE[name])(handler)
            return handler

        return deco

    async def after_change(owner: str, view: S.ClientView) -> None:
        await M.sync_client(ctx, owner, view)

    # ------------------------------------------------------------------ !client
    @command("client")
    async def client_cmd(inv: Invocation, args: str):
        tokens = _split(args)
        if not tokens:
            raise Usage("which client command?")
        verb, rest = tokens[0].lower(), tokens[1:]
        owner, today = _owner(inv), _today(inv)
        if verb in ("add", "set", "update"):
            name, kv = _kv(rest, ("email", "phone", "notes", "status"))
            if not name:
                raise Usage("the client's name is missing")
            view, outcome = await S.upsert_client(
                ctx,
                owner,
                name,
                now=inv.now,
                create=verb == "add",
                update_existing=verb != "add",
                **kv,
            )
            await after_change(owner, view)
            word = {"added": "Added client", "updated": "Updated", "unchanged": "Nothing changed for"}[outcome]
            return Result(f"{word} {view.name}.\n{fmt_client(view)}", private=True)
        if verb == "show":
            if not rest:
                raise Usage("which client?")
            view = await S.get_client(ctx, owner, " ".join(rest), today)
            return Result(fmt_client(view, await S.open_tasks(ctx, owner, view.id)), private=True)
        if verb == "list":
            views = await S.list_clients(ctx, owner, today)
            if not views:
                return Result("You have no clients yet. Add one with !client add <name>.", private=True)
            lines = [f"• {v.name} — {v.status}, owes {L.format_amounts(v.owed)}, {v.rating.describe()}" for v in views]
            return Result(f"{len(views)} client(s):\n" + "\n".join(lines), private=True)
        raise Usage(f"unknown client command {verb!r}")

    # ------------------------------------------------------------------ !invoice
    @command("invoice")
    async def invoice_cmd(inv: Invocation, args: str):
        tokens = _split(args)
        if not tokens:
            raise Usage("which invoice command?")
        verb, rest = tokens[0].lower(), tokens[1:]
        owner, today = _owner(inv), _today(inv)
        if verb == "add":
            head, kw = _keyword_split(
                rest, {"due": "due", "issued": "issued", "note": "note", "description": "note", "for": "note"}
            )
            # The number is optional: a first word with a digit (2026-014, #12, INV7), or any
            # first word before a quoted client name, is one; otherwise the next free number is
            # given (`!invoice add Claudia 320`).
            number: str | None = None
            body = head
            if len(head) >= 3 and " " not in head[0] and (any(c.isdigit() for c in head[0]) or " " in head[1]):
                number, body = head[0], head[1:]
            if len(body) < 2:
                raise Usage("an invoice needs a client and an amount (and optionally a number first)")
            if " " in body[0]:  # a quoted client name
                client, money = body[0], body[1:]
            else:
                cut = next(
                    (
                        i
                        for i, t in enumerate(body)
                        if i and _looks_like_money(t, body[i + 1] if i + 1 < len(body) else None)
                    ),
                    None,
                )
                if cut is None:
                    raise Usage("the amount is missing (e.g. $320)")
                client, money = " ".join(body[:cut]), body[cut:]
            if not money:
                raise Usage("the amount is missing (e.g. $320)")
            facts, view = await S.add_invoice(
                ctx,
                owner,
                number,
                client,
                " ".join(money),
                now=inv.now,
                issued=kw.get("issued"),
                due=kw.get("due"),
                description=kw.get("note"),
                actor=inv.user_id,
            )
            await after_change(owner, view)
            status = L.invoice_status(facts, today) or "unpaid"
            note = ""
            if facts.due >= today:  # a due-date reminder, when the reminders plugin is there
                done = await ctx.call_tool(
                    "create_reminder",
                    inv,
                    {
                        "text": f"invoice {facts.number} ({L.format_money(facts.amount, facts.currency)}) is due today",
                        "when": f"{facts.due.isoformat()} 09:00",
                        "where": "dm",
                        "source": "plugin:invoices",
                    },
                )
                if not done.startswith("error"):
                    note = " I'll remind you on the due date."
            if not kw.get("issued") and kw.get("due") and facts.issued != today:
                note += (
                    f" (Issue date {facts.issued} inferred from your {(facts.due - facts.issued).days}-day terms; "
                    "add `issued <date>` to set it.)"
                )
            return Result(f"Added {fmt_invoice(facts, status, today)}.{note}", private=True)
        if verb == "pay":
            head, kw = _keyword_split(rest, {"on": "on", "by": "by", "via": "by", "with": "by"})
            if not head:
                raise Usage("which invoice?")
            facts, payment, view = await S.pay(
                ctx,
                owner,
                head[0],
                " ".join(head[1:]) or None,
                now=inv.now,
                paid_on=kw.get("on"),
                method=kw.get("by"),
                actor=inv.user_id,
            )
            await after_change(owner, view)
            left = L.open_balance(facts)
            tail = (
                f"{L.format_money(left, facts.currency)} still open."
                if left
                else f"Invoice {facts.number} is now paid in full."
            )
            return Result(
                f"Recorded {L.format_money(payment.amount, facts.currency)} from {facts.client} on {payment.paid_on} "
                f"for invoice {facts.number}. {tail}",
                private=True,
            )
        if verb == "void":
            head, kw = _keyword_split(rest, {"on": "on"})
            if len(head) != 1:
                raise Usage("which invoice? (one number)")
            facts, view = await S.void(ctx, owner, head[0], now=inv.now, on=kw.get("on"), actor=inv.user_id)
            await after_change(owner, view)
            return Result(f"Invoice {facts.number} ({facts.client}) is void from {facts.voided_on}.", private=True)
        if verb == "show":
            if len(rest) != 1:
                raise Usage("which invoice? (one number)")
            d = await S.show_invoice(ctx, owner, rest[0], today)
            lines = [fmt_invoice(d.facts, d.status, today)]
            if d.description:
                lines.append(f"Note: {d.description}")
            for p in d.facts.payments:
                how = f" by {p.method}" if p.method else ""
                lines.append(f"• paid {L.format_money(p.amount, d.facts.currency)} on {p.paid_on}{how}")
            if d.facts.voided_on:
                lines.append(f"• void from {d.facts.voided_on}")
            return Result("\n".join(lines), private=True)
        if verb == "list":
            rows = await S.list_invoices(ctx, owner, today, client=" ".join(rest) or None)
            if not rows:
                return Result("No invoices yet.", private=True)
            return Result("\n".join(f"• {fmt_invoice(f, s, today)}" for f, s in rows), private=True)
        raise Usage(f"unknown invoice command {verb!r}")

    # ------------------------------------------------------------------ !task
    @command("task")
    async def task_cmd(inv: Invocation, args: str):
        tokens = _split(args)
        if not tokens:
            raise Usage("which task command?")
        verb, rest = tokens[0].lower(), tokens[1:]
        owner, today = _owner(inv), _today(inv)
        if verb == "add":
            head, kw = _task_split(rest)
            t = await S.add_task(
                ctx, owner, " ".join(head), now=inv.now, due=kw.get("due"), priority=kw.get("priority"),
                client=kw.get("client"), invoice=kw.get("invoice"),
            )  # fmt: skip
            await M.sync_task(ctx, owner, t)
            return Result(f"Added {fmt_task(t, today)}", private=True)
        if verb == "list":
            head, kw = _keyword_split(rest, {"client": "client"})
            if head and [h.lower() for h in head] != ["all"]:
                raise Usage(f"unknown list option {' '.join(head)!r}")
            rows = await S.list_tasks(ctx, owner, include_done=bool(head), client=kw.get("client"))
            if not rows:
                return Result("No open tasks." if not head else "No tasks yet.", private=True)
            return Result("\n".join(fmt_task(t, today) for t in rows), private=True)
        if verb in ("done", "complete", "finish"):
            if len(rest) != 1:
                raise Usage("which task? (its number from !task list)")
            t = await S.complete_task(ctx, owner, rest[0], now=inv.now)
            await M.sync_task(ctx, owner, t)
            return Result(f"Done: {fmt_task(t, today)}", private=True)
        raise Usage(f"unknown task command {verb!r}")

    # ------------------------------------------------------------------ !overdue
    @command("overdue")
    async def overdue_cmd(inv: Invocation, args: str):
        tokens = _split(args)
        if tokens and tokens[0].lower() in ("on", "as", "at"):
            tokens = tokens[1:]
            if tokens and tokens[0].lower() == "of":
                tokens = tokens[1:]
            if not tokens:
                raise Usage("which date?")
        today = _today(inv)
        day = L.parse_date(" ".join(tokens), inv.now) if tokens else today
        if day > today:
            raise PluginError(f"{day} is in the future; I can only tell who was overdue up to today")
        rows = await S.overdue(ctx, _owner(inv), day)
        return Result(fmt_overdue(rows, day, today), private=True)

    # ------------------------------------------------------------------ !ledger
    @command("ledger")
    async def ledger_cmd(inv: Invocation, args: str):
        head, kw = _keyword_split(_split(args), {"on": "on", "until": "on"})
        if not head:
            raise Usage("which client?")
        today = _today(inv)
        day = L.parse_date(kw["on"], inv.now) if "on" in kw else today
        view, entries = await S.client_ledger(ctx, _owner(inv), " ".join(head), day)
        if not entries:
            return Result(f"{view.name} has no invoices yet.", private=True)
        lines = [f"Ledger of {view.name} up to {day}:"]
        for e in entries:
            sign = "+" if e.change >= 0 else "-"
            lines.append(
                f"{e.day}  {e.text:<34} {sign}{L.format_money(abs(e.change), e.currency):>12}  "
                f"balance {L.format_money(e.balance, e.currency)}"
            )
        lines.append(f"Owed on {day}: {L.format_amounts(L.owed_by_currency(view.invoices, day))}")
        return Result("\n".join(lines), private=True)

    # ------------------------------------------------------------------ CSV
    @command("invoices-export")
    async def export_cmd(inv: Invocation, args: str):
        files = await S.export_csv(ctx, _owner(inv), _today(inv))
        counts = ", ".join(f"{name} ({_csv_rows(data)} rows)" for name, data in files)
        return Result(f"Your invoice data as CSV: {counts}.", files=files, private=True)

    @command("invoices-import")
    async def import_cmd(inv: Invocation, args: str):
        if not (args or "").strip():
            raise Usage("paste the CSV after the command (header row first)")
        counts = await S.import_csv(ctx, _owner(inv), args, now=inv.now, actor=inv.user_id)
        await M.sync_clients(ctx, _owner(inv), _today(inv))
        return Result(
            f"Imported {counts['clients_added']} new client(s) ({counts['clients_updated']} updated), "
            f"{counts['invoices']} invoice(s) and {counts['payments']} payment(s).",
            private=True,
        )

    register_tools(ctx, after_change)


# ------------------------------------------------------------------------------------- LLM tools
def register_tools(ctx, after_change) -> None:
    @ctx.tool(
        "sync_client",
        description=(
            "Create a client in the user's own client list, or update their details (email, phone, notes, "
            "status override). Use when the user tells you about a client or asks to change one."
        ),
        parameters={
            "type": "object",
            "properties": {
                "name": {"type": "string", "minLength": 1, "maxLength": 200, "description": "The client's name"},
                "email": {"type": "string", "maxLength": 320},
                "phone": {"type": "string", "maxLength": 64},
                "notes": {"type": "string", "maxLength": 2000},
                "status": {
                    "type": "string",
                    "enum": ["active", "overdue", "blacklist", "auto"],
                    "description": "Set only when the user asks; auto = computed from invoices",
                },
            },
            "required": ["name"],
            "additionalProperties": False,
        },
    )
    async def sync_client(inv: Invocation, args: dict[str, Any]) -> str:
        fields = {k: args.get(k) for k in ("email", "phone", "notes", "status") if args.get(k) is not None}
        view, outcome = await S.upsert_client(ctx, inv.user_id, args["name"], now=inv.now, **fields)
        await after_change(inv.user_id, view)
        return f"{outcome}: {fmt_client(view)}"

    @ctx.tool(
        "get_overdue_clients",
        description=(
            "List the user's clients with overdue invoices (amounts, invoice numbers, days overdue) — today, "
            "or as they were on a past date (as_of), rebuilt exactly from the payment history."
        ),
        parameters={
            "type": "object",
            "properties": {"as_of": {"type": "string", "description": "A past date, e.g. 2026-10-31 or '2 weeks ago'"}},
            "additionalProperties": False,
        },
    )
    async def get_overdue_clients(inv: Invocation, args: dict[str, Any]) -> str:
        today = _today(inv)
        day = L.parse_date(args["as_of"], inv.now) if args.get("as_of") else today
        if day > today:
            raise PluginError(f"{day} is in the future")
        return fmt_overdue(await S.overdue(ctx, inv.user_id, day), day, today)

    @ctx.tool(
        "log_payment",
        description=(
            "Record a payment the user received for one of their invoices (partial payments allowed; leave "
            "amount out to record the whole open balance). Dates default to today."
        ),
        parameters={
            "type": "object",
            "properties": {
                "invoice": {"type": "string", "minLength": 1, "description": "Invoice number, e.g. 2026-014"},
                "amount": {"type": ["string", "number"], "description": "e.g. 100, '$100' or '100.50 EUR'"},
                "date": {"type": "string", "description": "When it was paid, e.g. 2026-11-02 or 'yesterday'"},
                "method": {"type": "string", "maxLength": 60, "description": "e.g. transfer, cash, card"},
            },
            "required": ["invoice"],
            "additionalProperties": False,
        },
    )
    async def log_payment(inv: Invocation, args: dict[str, Any]) -> str:
        facts, payment, view = await S.pay(
            ctx,
            inv.user_id,
            args["invoice"],
            args.get("amount"),
            now=inv.now,
            paid_on=args.get("date"),
            method=args.get("method"),
            actor=inv.user_id,
        )
        await after_change(inv.user_id, view)
        left = L.open_balance(facts)
        return (
            f"Recorded {L.format_money(payment.amount, facts.currency)} on {payment.paid_on} for invoice "
            f"{facts.number} ({facts.client}); open balance now {L.format_money(left, facts.currency)}. "
            f"{facts.client} owes {L.format_amounts(view.owed)} in total."
        )

    @ctx.tool(
        "find_client",
        description=(
            "Look up one of the user's clients by name (partial names work): contact details, status, "
            "what they owe, open invoices and payment rating."
        ),
        parameters={
            "type": "object",
            "properties": {"name": {"type": "string", "minLength": 1, "maxLength": 200}},
            "required": ["name"],
            "additionalProperties": False,
        },
    )
    async def find_client(inv: Invocation, args: dict[str, Any]) -> str:
        view = await S.get_client(ctx, inv.user_id, args["name"], _today(inv))
        return fmt_client(view)
