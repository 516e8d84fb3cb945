"""Data access for the invoices plugin: every function takes the plugin context and the owner
(the user whose ledger it is) and filters every query by that owner.

Writes run in one `ctx.db()` transaction each and validate everything before the first INSERT,
so a rejected command writes nothing. Memory (facts) is never touched inside a transaction — on
SQLite the store has a single writer connection — callers sync facts after commit (memory.py).
"""

from __future__ import annotations

import csv
import difflib
import io
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from clara.plugin_api import PluginError

from . import ledger as L
from .models import ALL_TABLES, clients, daily_summaries, events, invoices, payments, tasks

DEFAULT_CURRENCY = "USD"
DEFAULT_TERMS_DAYS = 30
_NUMBER_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/#-]{0,63}")
_EMAIL_RE = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
MAX_IMPORT_ERRORS = 20


# ------------------------------------------------------------------------------------- helpers
def aware(value: datetime | None) -> datetime | None:
    """Times as UTC-aware datetimes (SQLite hands back naive ones; tests may pass naive `now`)."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def scope_of(owner: str) -> str:
    """The owner's private memory scope."""
    return f"user:{owner}"


def check_number(number: str) -> str:
    n = str(number or "").strip()
    if not _NUMBER_RE.fullmatch(n):
        raise PluginError(
            f"{number!r} is not a valid invoice number (1-64 letters, digits and . _ / # -, e.g. 2026-014)"
        )
    return n


def check_name(name: str) -> str:
    n = " ".join(str(name or "").split())
    if not n:
        raise PluginError("a client name is required")
    if len(n) > 200:
        raise PluginError("a client name is at most 200 characters")
    if not L.norm_name(n):
        raise PluginError(f"{name!r} is not a usable client name (it needs letters or digits)")
    return n


def check_status_override(value: str | None) -> str | None:
    if value is None:
        return None
    v = str(value).strip().lower()
    if v in ("", "auto", "computed", "none", "null"):
        return None
    if v == "blacklisted":
        v = "blacklist"
    if v not in L.CLIENT_STATUSES:
        raise PluginError(f"status must be one of {', '.join(L.CLIENT_STATUSES)} or auto (got {value!r})")
    return v


def check_email(value: str | None) -> str | None:
    if value is None or not str(value).strip():
        return None
    v = str(value).strip()
    if not _EMAIL_RE.fullmatch(v) or len(v) > 320:
        raise PluginError(f"{value!r} doesn't look like an email address")
    return v


def check_text(value: str | None, what: str, limit: int) -> str | None:
    if value is None or not str(value).strip():
        return None
    v = str(value).strip()
    if len(v) > limit:
        raise PluginError(f"{what} is at most {limit} characters")
    return v


async def default_currency(ctx, owner: str) -> str:
    value = await ctx.config.get(scope_of(owner), "currency", DEFAULT_CURRENCY)
    try:
        return L.check_currency(value or DEFAULT_CURRENCY)
    except PluginError:
        return DEFAULT_CURRENCY


async def terms_days(ctx, owner: str) -> int:
    value = await ctx.config.get(scope_of(owner), "terms_days", DEFAULT_TERMS_DAYS)
    try:
        return max(0, min(int(value), 3650))
    except (TypeError, ValueError):
        return DEFAULT_TERMS_DAYS


# ------------------------------------------------------------------------------------- loading
@dataclass
class ClientView:
    """A client with everything computed for one day."""

    id: int
    name: str
    norm_name: str
    email: str | None
    phone: str | None
    notes: str | None
    status_override: str | None
    invoices: list[L.InvoiceFacts]
    day: date
    status: str = "active"
    owed: dict[str, Decimal] = field(default_factory=dict)
    spent: dict[str, Decimal] = field(default_factory=dict)
    rating: L.Rating = field(default_factory=lambda: L.Rating(0, 0))

    def __post_init__(self) -> None:
        self.status = L.client_status(self.status_override, self.invoices, self.day)
        self.owed = L.owed_by_currency(self.invoices, self.day)
        self.spent = L.paid_by_currency(self.invoices, self.day)
        self.rating = L.payment_rating(self.invoices, self.day)

    @property
    def contact(self) -> str:
        return ", ".join(x for x in (self.email, self.phone) if x)

    def open_invoices(self) -> list[L.InvoiceFacts]:
        return [i for i in self.invoices if L.open_balance(i, self.day) > 0]

    def last_payment(self) -> tuple[L.Payment, str] | None:
        pays = [(p, i.currency) for i in self.invoices for p in i.payments if p.paid_on <= self.day]
        return max(pays, key=lambda t: (t[0].paid_on, t[0].id or 0)) if pays else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "email": self.email,
            "phone": self.phone,
            "notes": self.notes,
            "status_override": self.status_override,
            "status": self.status,
            "amount_owed": {c: str(v) for c, v in self.owed.items()},
            "total_spent": {c: str(v) for c, v in self.spent.items()},
            "payment_rating": str(self.rating.share) if self.rating.share is not None else None,
            "payment_rating_text": self.rating.describe(),
            "open_invoices": [
                {
                    "number": i.number,
                    "open": str(L.open_balance(i, self.day)),
                    "currency": i.currency,
                    "due": i.due.isoformat(),
                    "status": L.invoice_status(i, self.day),
                }
                for i in self.open_invoices()
            ],
        }


async def _load(conn, owner: str, *, client_ids: Sequence[int] | None = None, lock: bool = False):
    """(client rows by id, InvoiceFacts per client id, invoice rows by id) for `owner`."""
    cq = select(clients).where(clients.c.owner_id == owner)
    iq = select(invoices).where(invoices.c.owner_id == owner)
    if client_ids is not None:
        cq = cq.where(clients.c.id.in_(list(client_ids)))
        iq = iq.where(invoices.c.client_id.in_(list(client_ids)))
    if lock and conn.dialect.name == "postgresql":
        iq = iq.with_for_update()
    crows = {r.id: r for r in (await conn.execute(cq.order_by(clients.c.id))).all()}
    irows = {r.id: r for r in (await conn.execute(iq.order_by(invoices.c.issued, invoices.c.id))).all()}
    pays: dict[int, list[L.Payment]] = {}
    voids: dict[int, date] = {}
    if irows:
        ids = list(irows)
        pq = select(payments).where(payments.c.owner_id == owner)
        if client_ids is not None:
            pq = pq.where(payments.c.invoice_id.in_(ids))
        for p in (await conn.execute(pq.order_by(payments.c.paid_on, payments.c.id))).all():
            pays.setdefault(p.invoice_id, []).append(L.Payment(p.amount, p.paid_on, p.method, p.id))
        vq = select(events.c.invoice_id, events.c.effective_on).where(
            events.c.owner_id == owner, events.c.kind == "void"
        )
        if client_ids is not None:
            vq = vq.where(events.c.invoice_id.in_(ids))
        for v in (await conn.execute(vq)).all():
            voids[v.invoice_id] = min(v.effective_on, voids.get(v.invoice_id, v.effective_on))
    facts: dict[int, list[L.InvoiceFacts]] = {cid: [] for cid in crows}
    for r in irows.values():
        if r.client_id not in crows:
            continue
        facts[r.client_id].append(
            L.InvoiceFacts(
                number=r.number,
                amount=r.amount,
                currency=r.currency,
                issued=r.issued,
                due=r.due,
                payments=tuple(pays.get(r.id, ())),
                voided_on=voids.get(r.id),
                client=crows[r.client_id].name,
                id=r.id,
            )
        )
    return crows, facts, irows


def _view(row, invs: list[L.InvoiceFacts], day: date) -> ClientView:
    return ClientView(row.id, row.name, row.norm_name, row.email, row.phone, row.notes, row.status_override, invs, day)


async def _client_row(conn, owner: str, name: str, *, fuzzy: bool):
    """The owner's client called `name` (exact after normalising; with `fuzzy`, a unique client
    whose name contains every word given). PluginError if none or ambiguous."""
    key = L.norm_name(name)
    if not key:
        raise PluginError("a client name is required")
    row = (await conn.execute(select(clients).where(clients.c.owner_id == owner, clients.c.norm_name == key))).first()
    if row is not None:
        return row
    every = (await conn.execute(select(clients).where(clients.c.owner_id == owner))).all()
    if fuzzy:
        words = key.split("-")
        hits = [r for r in every if all(any(t.startswith(w) for t in r.norm_name.split("-")) for w in words)]
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            names = ", ".join(sorted(r.name for r in hits))
            raise PluginError(f"{name!r} matches several clients: {names}. Which one?")
    close = difflib.get_close_matches(key, [r.norm_name for r in every], n=1, cutoff=0.75)
    hint = ""
    if close:
        hint = f" Did you mean {next(r.name for r in every if r.norm_name == close[0])}?"
    raise PluginError(f"no client called {name!r}.{hint} Add one with !client add <name>.")


async def _invoice_row(conn, owner: str, number: str, *, lock: bool = False):
    n = str(number or "").strip()
    if not n:
        raise PluginError("an invoice number is required")
    q = select(invoices).where(invoices.c.owner_id == owner, invoices.c.number == n)
    if lock and conn.dialect.name == "postgresql":
        q = q.with_for_update()
    row = (await conn.execute(q)).first()
    if row is None:
        rows = (await conn.execute(select(invoices).where(invoices.c.owner_id == owner))).all()
        same = [r for r in rows if r.number.casefold() == n.casefold()]
        if len(same) == 1:
            return await _invoice_row(conn, owner, same[0].number, lock=lock)
        raise PluginError(f"no invoice number {n!r}")
    return row


async def _facts_for(conn, owner: str, inv_row) -> L.InvoiceFacts:
    _, facts, _ = await _load(conn, owner, client_ids=[inv_row.client_id])
    return next(f for f in facts[inv_row.client_id] if f.id == inv_row.id)


async def _event(conn, owner: str, inv_id: int, client_id: int, kind: str, old, new, eff: date, at, **kw) -> None:
    await conn.execute(
        insert(events).values(
            owner_id=owner,
            invoice_id=inv_id,
            client_id=client_id,
            kind=kind,
            old_status=old,
            new_status=new,
            effective_on=eff,
            at=at,
            amount=kw.get("amount"),
            payment_id=kw.get("payment_id"),
            actor=kw.get("actor"),
            note=kw.get("note"),
        )
    )


async def _close_tasks(conn, owner: str, inv_id: int, at: datetime) -> None:
    await conn.execute(
        update(tasks)
        .where(tasks.c.owner_id == owner, tasks.c.invoice_id == inv_id, tasks.c.done.is_(False))
        .values(done=True, done_at=at)
    )


# ------------------------------------------------------------------------------------- clients
async def upsert_client(
    ctx,
    owner: str,
    name: str,
    *,
    now: datetime,
    email: str | None = None,
    phone: str | None = None,
    notes: str | None = None,
    status: str | None = None,
    create: bool = True,
    update_existing: bool = True,
) -> tuple[ClientView, str]:
    """Create the client, or update the given (non-None) fields of an existing one.
    Returns (client, "added" | "updated" | "unchanged")."""
    name = check_name(name)
    given: dict[str, Any] = {}
    if email is not None:
        given["email"] = check_email(email)
    if phone is not None:
        given["phone"] = check_text(phone, "a phone number", 64)
    if notes is not None:
        given["notes"] = check_text(notes, "notes", 2000)
    if status is not None:
        given["status_override"] = check_status_override(status)
    key = L.norm_name(name)
    at = aware(now)
    try:
        async with ctx.db() as conn:
            row = (
                await conn.execute(select(clients).where(clients.c.owner_id == owner, clients.c.norm_name == key))
            ).first()
            if row is None:
                if not create:
                    raise PluginError(f"no client called {name!r}")
                cid = (
                    await conn.execute(
                        insert(clients)
                        .values(owner_id=owner, name=name, norm_name=key, created_at=at, updated_at=at, **given)
                        .returning(clients.c.id)
                    )
                ).scalar_one()
                outcome = "added"
            else:
                if not update_existing:
                    raise PluginError(f"{row.name} is already a client (change details with !client set)")
                cid = row.id
                changes = {k: v for k, v in given.items() if getattr(row, k) != v}
                if changes:
                    await conn.execute(update(clients).where(clients.c.id == cid).values(updated_at=at, **changes))
                outcome = "updated" if changes else "unchanged"
            crows, facts, _ = await _load(conn, owner, client_ids=[cid])
    except IntegrityError:
        raise PluginError(f"{name} is already a client") from None
    return _view(crows[cid], facts[cid], at.date()), outcome


async def get_client(ctx, owner: str, name: str, day: date) -> ClientView:
    async with ctx.read() as conn:
        row = await _client_row(conn, owner, name, fuzzy=True)
        crows, facts, _ = await _load(conn, owner, client_ids=[row.id])
    return _view(crows[row.id], facts[row.id], day)


async def list_clients(ctx, owner: str, day: date) -> list[ClientView]:
    async with ctx.read() as conn:
        crows, facts, _ = await _load(conn, owner)
    return sorted((_view(r, facts[cid], day) for cid, r in crows.items()), key=lambda v: v.name.casefold())


async def open_tasks(ctx, owner: str, client_id: int | None = None) -> list[Any]:
    q = select(tasks).where(tasks.c.owner_id == owner, tasks.c.done.is_(False))
    if client_id is not None:
        q = q.where(tasks.c.client_id == client_id)
    async with ctx.read() as conn:
        return list((await conn.execute(q.order_by(tasks.c.due, tasks.c.id))).all())


# ------------------------------------------------------------------------------------ invoices
async def add_invoice(
    ctx,
    owner: str,
    number: str | None,
    client_name: str,
    amount_text: object,
    *,
    now: datetime,
    issued: object = None,
    due: object = None,
    description: str | None = None,
    actor: str | None = None,
) -> tuple[L.InvoiceFacts, ClientView]:
    """Record an invoice for an existing client. PluginError (and nothing written) for a bad
    amount or date, an unknown client or a number already used.

    `number=None` gives the next free number of the issue year (`2026-001`, `2026-002`, …).
    Without `issued`, the issue date is today — or, for a due date given without an issue date,
    the earlier of today and the due date minus the owner's terms (`terms_days`, default 30), so
    a past invoice typed as "… due 2026-09-15" is recorded as issued 2026-08-16, not refused."""
    number = check_number(number) if number is not None else None
    amount, currency = L.parse_money(amount_text, await default_currency(ctx, owner))
    today = aware(now).date()
    terms = timedelta(days=await terms_days(ctx, owner))
    due_d = L.parse_date(due, now) if due not in (None, "") else None
    if issued not in (None, ""):
        issued_d = L.parse_date(issued, now)
    else:
        issued_d = min(today, due_d - terms) if due_d is not None else today
    if due_d is None:
        due_d = issued_d + terms
    L.check_new_invoice(amount, issued_d, due_d)
    description = check_text(description, "a description", 2000)
    at = aware(now)
    try:
        async with ctx.db() as conn:
            crow = await _client_row(conn, owner, client_name, fuzzy=False)
            if number is None:
                number = await _next_number(conn, owner, issued_d.year)
            taken = (
                await conn.execute(
                    select(invoices.c.id).where(invoices.c.owner_id == owner, invoices.c.number == number)
                )
            ).first()
            if taken is not None:
                raise PluginError(f"invoice number {number} is already used")
            facts = L.InvoiceFacts(number, amount, currency, issued_d, due_d, client=crow.name)
            status = L.invoice_status(facts, today) or "unpaid"
            iid = (
                await conn.execute(
                    insert(invoices)
                    .values(
                        owner_id=owner,
                        client_id=crow.id,
                        number=number,
                        amount=amount,
                        currency=currency,
                        issued=issued_d,
                        due=due_d,
                        status=status,
                        description=description,
                        created_at=at,
                    )
                    .returning(invoices.c.id)
                )
            ).scalar_one()
            await _event(conn, owner, iid, crow.id, "created", None, "unpaid", issued_d, at, amount=amount, actor=actor)
            if status == "overdue":
                await _event(conn, owner, iid, crow.id, "overdue", "unpaid", "overdue", due_d + timedelta(days=1), at)
            crows, allf, _ = await _load(conn, owner, client_ids=[crow.id])
    except IntegrityError:  # a concurrent add took the number first
        raise PluginError(f"invoice number {number} is already used") from None
    view = _view(crows[crow.id], allf[crow.id], today)
    return next(f for f in view.invoices if f.id == iid), view


async def _next_number(conn, owner: str, year: int) -> str:
    """The owner's next free invoice number of `year`: `<year>-<n:03d>`, one past the highest used."""
    prefix = f"{year}-"
    used = {
        r.number
        for r in await conn.execute(
            select(invoices.c.number).where(invoices.c.owner_id == owner, invoices.c.number.like(f"{prefix}%"))
        )
    }
    seqs = [int(n[len(prefix) :]) for n in used if n[len(prefix) :].isascii() and n[len(prefix) :].isdigit()]
    k = max(seqs, default=0) + 1
    while f"{prefix}{k:03d}" in used:
        k += 1
    return f"{prefix}{k:03d}"


async def pay(
    ctx,
    owner: str,
    number: str,
    amount_text: object | None,
    *,
    now: datetime,
    paid_on: object = None,
    method: str | None = None,
    actor: str | None = None,
) -> tuple[L.InvoiceFacts, L.Payment, ClientView]:
    """Record a (partial or full) payment; no amount = the whole open balance. PluginError for
    overpayment, a void/settled invoice, another currency, or a date before issue/in future."""
    today = aware(now).date()
    day = L.parse_date(paid_on, now) if paid_on not in (None, "") else today
    method = check_text(method, "the payment method", 60)
    at = aware(now)
    async with ctx.db() as conn:
        row = await _invoice_row(conn, owner, number, lock=True)
        facts = await _facts_for(conn, owner, row)
        if amount_text in (None, "", "full", "all", "rest"):
            amount, currency = L.open_balance(facts), facts.currency
            if amount == 0:
                raise PluginError(f"invoice {facts.number} has nothing left to pay")
        else:
            amount, currency = L.parse_money(amount_text, facts.currency)
        L.check_payment(facts, amount, currency, day, today)
        old = row.status
        pid = (
            await conn.execute(
                insert(payments)
                .values(
                    owner_id=owner,
                    invoice_id=row.id,
                    amount=amount,
                    currency=currency,
                    paid_on=day,
                    method=method,
                    created_at=at,
                )
                .returning(payments.c.id)
            )
        ).scalar_one()
        payment = L.Payment(amount, day, method, pid)
        after = replace(facts, payments=(*facts.payments, payment))
        new = L.invoice_status(after, today) or "unpaid"
        await conn.execute(update(invoices).where(invoices.c.id == row.id).values(status=new))
        await _event(
            conn, owner, row.id, row.client_id, "payment", old, new, day, at, amount=amount, payment_id=pid, actor=actor
        )
        if new == "paid":
            await _close_tasks(conn, owner, row.id, at)
        crows, allf, _ = await _load(conn, owner, client_ids=[row.client_id])
    view = _view(crows[row.client_id], allf[row.client_id], today)
    return next(f for f in view.invoices if f.id == row.id), payment, view


async def void(
    ctx, owner: str, number: str, *, now: datetime, on: object = None, actor: str | None = None
) -> tuple[L.InvoiceFacts, ClientView]:
    """Void an invoice from `on` (default today): what was still open is written off; payments
    already made stay recorded. PluginError if already void or fully paid."""
    today = aware(now).date()
    day = L.parse_date(on, now) if on not in (None, "") else today
    at = aware(now)
    async with ctx.db() as conn:
        row = await _invoice_row(conn, owner, number, lock=True)
        facts = await _facts_for(conn, owner, row)
        if facts.voided_on is not None:
            raise PluginError(f"invoice {facts.number} was already voided on {facts.voided_on}")
        if day > today:
            raise PluginError(f"the void date {day} is in the future")
        if day < facts.issued:
            raise PluginError(f"the void date {day} is before invoice {facts.number} was issued ({facts.issued})")
        if L.open_balance(facts) == 0:
            raise PluginError(f"invoice {facts.number} is paid in full; there is nothing to void")
        late = [p for p in facts.payments if p.paid_on > day]
        if late:
            raise PluginError(f"invoice {facts.number} has a payment dated {late[0].paid_on}, after {day}")
        written_off = L.open_balance(facts)
        await conn.execute(update(invoices).where(invoices.c.id == row.id).values(status="void"))
        await _event(
            conn, owner, row.id, row.client_id, "void", row.status, "void", day, at, amount=written_off, actor=actor
        )
        await _close_tasks(conn, owner, row.id, at)
        crows, allf, _ = await _load(conn, owner, client_ids=[row.client_id])
    view = _view(crows[row.client_id], allf[row.client_id], today)
    return next(f for f in view.invoices if f.id == row.id), view


@dataclass
class InvoiceDetail:
    facts: L.InvoiceFacts
    client: ClientView
    status: str
    description: str | None
    history: list[Any]


async def show_invoice(ctx, owner: str, number: str, day: date) -> InvoiceDetail:
    async with ctx.read() as conn:
        row = await _invoice_row(conn, owner, number)
        crows, allf, _ = await _load(conn, owner, client_ids=[row.client_id])
        hist = (
            await conn.execute(
                select(events).where(events.c.owner_id == owner, events.c.invoice_id == row.id).order_by(events.c.id)
            )
        ).all()
    view = _view(crows[row.client_id], allf[row.client_id], day)
    facts = next(f for f in view.invoices if f.id == row.id)
    return InvoiceDetail(facts, view, L.invoice_status(facts, day) or "not issued yet", row.description, list(hist))


async def list_invoices(ctx, owner: str, day: date, *, client: str | None = None) -> list[tuple[L.InvoiceFacts, str]]:
    async with ctx.read() as conn:
        ids = None
        if client:
            ids = [(await _client_row(conn, owner, client, fuzzy=True)).id]
        _, facts, _ = await _load(conn, owner, client_ids=ids)
    out = [(f, L.invoice_status(f, day) or "not issued yet") for fs in facts.values() for f in fs]
    return sorted(out, key=lambda t: (t[0].issued, t[0].number))


async def overdue(ctx, owner: str, day: date) -> list[L.OverdueClient]:
    """Clients with an overdue invoice at the end of `day` — today or any past day, rebuilt from
    issue/due dates, payments dated on or before `day` and voids effective by then."""
    async with ctx.read() as conn:
        crows, facts, _ = await _load(conn, owner)
    return L.overdue_report(((r.name, r.status_override, facts[cid]) for cid, r in crows.items()), day)


async def client_ledger(ctx, owner: str, name: str, day: date) -> tuple[ClientView, list[L.Entry]]:
    view = await get_client(ctx, owner, name, day)
    return view, L.ledger_entries(view.invoices, until=day)


# ---------------------------------------------------------------------------------------- CSV
CLIENT_COLS = ["name", "email", "phone", "notes", "status_override", "status", "amount_owed", "total_spent"]
INVOICE_COLS = ["number", "client", "amount", "currency", "issued", "due", "voided_on", "description", "status", "open"]
PAYMENT_COLS = ["invoice", "amount", "currency", "paid_on", "method"]


def _csv(header: list[str], rows: Iterable[list[Any]]) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    for r in rows:
        w.writerow(["" if v is None else v for v in r])
    return buf.getvalue().encode()


def _amounts_cell(amounts: dict[str, Decimal]) -> str:
    return "; ".join(f"{v} {c}" for c, v in sorted(amounts.items()))


async def export_csv(ctx, owner: str, day: date) -> list[tuple[str, bytes]]:
    """clients.csv, invoices.csv and payments.csv of the owner (status/owed/open columns are
    computed for `day` and ignored on import)."""
    views = await list_clients(ctx, owner, day)
    async with ctx.read() as conn:
        descs = {
            r.id: r.description
            for r in (
                await conn.execute(select(invoices.c.id, invoices.c.description).where(invoices.c.owner_id == owner))
            )
        }
    c_rows, i_rows, p_rows = [], [], []
    for v in views:
        c_rows.append(
            [
                v.name,
                v.email,
                v.phone,
                v.notes,
                v.status_override,
                v.status,
                _amounts_cell(v.owed),
                _amounts_cell(v.spent),
            ]
        )
        for f in v.invoices:
            i_rows.append(
                [
                    f.number,
                    v.name,
                    f.amount,
                    f.currency,
                    f.issued.isoformat(),
                    f.due.isoformat(),
                    f.voided_on.isoformat() if f.voided_on else None,
                    descs.get(f.id),
                    L.invoice_status(f, day),
                    L.open_balance(f, day),
                ]
            )
            for p in f.payments:
                p_rows.append([f.number, p.amount, f.currency, p.paid_on.isoformat(), p.method])
    i_rows.sort(key=lambda r: (r[4], r[0]))
    p_rows.sort(key=lambda r: (r[3], r[0]))
    return [
        ("clients.csv", _csv(CLIENT_COLS, c_rows)),
        ("invoices.csv", _csv(INVOICE_COLS, i_rows)),
        ("payments.csv", _csv(PAYMENT_COLS, p_rows)),
    ]


def _blocks(text: str) -> list[tuple[str, list[tuple[int, dict[str, str]]]]]:
    """Split CSV text into blocks (a header row, then rows until a blank line), each recognised
    by its header: clients (name…), invoices (number, client…), payments (invoice, paid_on…)."""
    body = text.strip()
    body = re.sub(r"^```[a-zA-Z]*\n|\n?```$", "", body).strip()
    if not body:
        raise PluginError("no CSV given: paste the rows after the command, header first")
    reader = csv.reader(io.StringIO(body))
    out: list[tuple[str, list[tuple[int, dict[str, str]]]]] = []
    header: list[str] | None = None
    rows: list[tuple[int, dict[str, str]]] = []
    kind = ""
    try:
        for rec in reader:
            line = reader.line_num
            if not rec or all(not c.strip() for c in rec):
                if header is not None:
                    out.append((kind, rows))
                header, rows = None, []
                continue
            if header is None:
                header = [c.strip().lower().replace(" ", "_") for c in rec]
                cols = set(header)
                if "number" in cols and "client" in cols:
                    kind = "invoices"
                elif "invoice" in cols and "paid_on" in cols:
                    kind = "payments"
                elif "name" in cols:
                    kind = "clients"
                else:
                    raise PluginError(
                        f"line {line}: unrecognised CSV header {', '.join(rec)!r} — expected clients "
                        "(name, email, …), invoices (number, client, amount, currency, issued, due) or "
                        "payments (invoice, amount, paid_on, method)"
                    )
                continue
            if len(rec) > len(header):
                extra = [c for c in rec[len(header) :] if c.strip()]
                if extra:
                    rows.append((line, {"__error__": f"{len(rec)} cells but the header has {len(header)}"}))
                    continue
            rows.append((line, {h: (rec[i].strip() if i < len(rec) else "") for i, h in enumerate(header)}))
    except csv.Error as exc:
        raise PluginError(f"line {reader.line_num}: not valid CSV ({exc})") from None
    if header is not None:
        out.append((kind, rows))
    return out


async def import_csv(ctx, owner: str, text: str, *, now: datetime, actor: str | None = None) -> dict[str, int]:
    """Import clients, invoices and payments from CSV text (one or more blocks, see `_blocks`).
    Every row is validated first; if any is bad nothing is written and the PluginError lists
    the bad lines. Existing clients get the non-empty contact fields of their row; invoice
    numbers must be new; payments may go to new or existing invoices (not void ones)."""
    try:
        return await _import_csv(ctx, owner, text, now=now, actor=actor)
    except IntegrityError:
        raise PluginError(
            "nothing was imported: a concurrent change added the same client or invoice number; try again"
        ) from None


async def _import_csv(ctx, owner: str, text: str, *, now: datetime, actor: str | None = None) -> dict[str, int]:
    blocks = _blocks(text)
    today = aware(now).date()
    at = aware(now)
    cur_default = await default_currency(ctx, owner)
    terms = await terms_days(ctx, owner)
    errors: list[str] = []

    def bad(line: int, msg: str) -> None:
        errors.append(f"line {line}: {msg}")

    async with ctx.db() as conn:
        crows, facts, _ = await _load(conn, owner, lock=True)
        by_norm = {r.norm_name: r for r in crows.values()}
        known_inv = {f.number: f for fs in facts.values() for f in fs}
        new_clients: dict[str, tuple[int, dict[str, Any]]] = {}  # norm → (line, values)
        new_invoices: dict[str, tuple[int, dict[str, Any]]] = {}  # number → (line, values)
        new_payments: list[tuple[int, dict[str, Any]]] = []
        for kind, rows in blocks:
            for line, row in rows:
                if "__error__" in row:
                    bad(line, row["__error__"])
                    continue
                try:
                    if kind == "clients":
                        name = check_name(row.get("name", ""))
                        key = L.norm_name(name)
                        if key in new_clients:
                            raise PluginError(f"client {name} appears twice (also line {new_clients[key][0]})")
                        vals = {
                            "name": name,
                            "email": check_email(row.get("email")),
                            "phone": check_text(row.get("phone"), "a phone number", 64),
                            "notes": check_text(row.get("notes"), "notes", 2000),
                        }
                        if row.get("status_override", "").strip():
                            vals["status_override"] = check_status_override(row["status_override"])
                        new_clients[key] = (line, vals)
                    elif kind == "invoices":
                        number = check_number(row.get("number", ""))
                        if number in known_inv:
                            raise PluginError(f"invoice number {number} is already used")
                        if number in new_invoices:
                            raise PluginError(f"invoice {number} appears twice (also line {new_invoices[number][0]})")
                        cname = row.get("client", "")
                        key = L.norm_name(cname)
                        if not key or (key not in by_norm and key not in new_clients):
                            raise PluginError(f"unknown client {cname!r} (add it first or include a clients block)")
                        cur = L.check_currency(row["currency"]) if row.get("currency") else cur_default
                        amount, currency = L.parse_money(row.get("amount", ""), cur)
                        if row.get("currency") and currency != cur:
                            raise PluginError(f"amount {row['amount']!r} is not in {cur}")
                        issued = L.parse_date(row["issued"], now) if row.get("issued") else today
                        due = L.parse_date(row["due"], now) if row.get("due") else issued + timedelta(days=terms)
                        L.check_new_invoice(amount, issued, due)
                        voided = L.parse_date(row["voided_on"], now) if row.get("voided_on") else None
                        if voided is not None and not issued <= voided <= today:
                            raise PluginError(f"voided_on {voided} must be between the issue date and today")
                        vals = {
                            "client_key": key,
                            "facts": L.InvoiceFacts(number, amount, currency, issued, due, voided_on=voided),
                            "description": check_text(row.get("description"), "a description", 2000),
                        }
                        new_invoices[number] = (line, vals)
                    else:
                        number = str(row.get("invoice", "")).strip()
                        target = new_invoices[number][1]["facts"] if number in new_invoices else known_inv.get(number)
                        if target is None:
                            raise PluginError(f"unknown invoice {number!r}")
                        if number not in new_invoices and target.voided_on is not None:
                            raise PluginError(f"invoice {number} is void; it can't take payments")
                        amount, currency = L.parse_money(row.get("amount", ""), row.get("currency") or target.currency)
                        if currency != target.currency:
                            raise PluginError(f"invoice {number} is in {target.currency}, not {currency}")
                        day = L.parse_date(row.get("paid_on", ""), now)
                        if day > today:
                            raise PluginError(f"the payment date {day} is in the future")
                        if day < target.issued:
                            raise PluginError(f"the payment date {day} is before invoice {number} was issued")
                        if target.voided_on is not None and day > target.voided_on:
                            raise PluginError(f"invoice {number} was void from {target.voided_on}")
                        method = check_text(row.get("method"), "the payment method", 60)
                        p = L.Payment(amount, day, method)
                        updated = replace(target, payments=(*target.payments, p))
                        L.balance(updated.amount, updated.payments)  # overpayment → PluginError
                        if number in new_invoices:
                            new_invoices[number][1]["facts"] = updated
                        else:
                            known_inv[number] = updated
                        new_payments.append((line, {"number": number, "payment": p}))
                except PluginError as exc:
                    bad(line, str(exc))
        if errors:
            shown = errors[:MAX_IMPORT_ERRORS]
            more = f"\n…and {len(errors) - len(shown)} more" if len(errors) > len(shown) else ""
            raise PluginError(f"nothing was imported: {len(errors)} bad row(s)\n" + "\n".join(shown) + more)
        counts = {"clients_added": 0, "clients_updated": 0, "invoices": 0, "payments": 0}
        for key, (_line, vals) in new_clients.items():
            row = by_norm.get(key)
            if row is None:
                cid = (
                    await conn.execute(
                        insert(clients)
                        .values(owner_id=owner, norm_name=key, created_at=at, updated_at=at, **vals)
                        .returning(clients.c.id)
                    )
                ).scalar_one()
                by_norm[key] = (await conn.execute(select(clients).where(clients.c.id == cid))).first()
                counts["clients_added"] += 1
            else:
                changes = {k: v for k, v in vals.items() if k != "name" and v is not None and getattr(row, k) != v}
                if changes:
                    await conn.execute(update(clients).where(clients.c.id == row.id).values(updated_at=at, **changes))
                    counts["clients_updated"] += 1
        inv_ids: dict[str, tuple[int, int, str]] = {}  # number → (invoice id, client id, stored status)
        for number, (_line, vals) in new_invoices.items():
            f: L.InvoiceFacts = vals["facts"]
            crow = by_norm[vals["client_key"]]
            base = replace(f, payments=(), voided_on=None)
            status = L.invoice_status(base, today) or "unpaid"
            iid = (
                await conn.execute(
                    insert(invoices)
                    .values(
                        owner_id=owner,
                        client_id=crow.id,
                        number=number,
                        amount=f.amount,
                        currency=f.currency,
                        issued=f.issued,
                        due=f.due,
                        status=status,
                        description=vals["description"],
                        created_at=at,
                    )
                    .returning(invoices.c.id)
                )
            ).scalar_one()
            await _event(
                conn,
                owner,
                iid,
                crow.id,
                "created",
                None,
                "unpaid",
                f.issued,
                at,
                amount=f.amount,
                actor=actor,
                note="imported",
            )
            if status == "overdue":
                await _event(conn, owner, iid, crow.id, "overdue", "unpaid", "overdue", f.due + timedelta(days=1), at)
            inv_ids[number] = (iid, crow.id, status)
            counts["invoices"] += 1
        existing_rows = {
            r.number: r for r in (await conn.execute(select(invoices).where(invoices.c.owner_id == owner))).all()
        }
        running: dict[str, L.InvoiceFacts] = {}
        for _line, vals in new_payments:
            number, p = vals["number"], vals["payment"]
            irow = existing_rows[number]
            if number not in running:
                start = known_inv.get(number) or new_invoices[number][1]["facts"]
                running[number] = replace(
                    start, payments=tuple(q for q in start.payments if q.id is not None), voided_on=None
                )
            pid = (
                await conn.execute(
                    insert(payments)
                    .values(
                        owner_id=owner,
                        invoice_id=irow.id,
                        amount=p.amount,
                        currency=irow.currency,
                        paid_on=p.paid_on,
                        method=p.method,
                        created_at=at,
                    )
                    .returning(payments.c.id)
                )
            ).scalar_one()
            cur = running[number]
            old = inv_ids[number][2] if number in inv_ids else irow.status
            cur = replace(cur, payments=(*cur.payments, L.Payment(p.amount, p.paid_on, p.method, pid)))
            running[number] = cur
            new = L.invoice_status(cur, today) or "unpaid"
            await _event(
                conn,
                owner,
                irow.id,
                irow.client_id,
                "payment",
                old,
                new,
                p.paid_on,
                at,
                amount=p.amount,
                payment_id=pid,
                actor=actor,
                note="imported",
            )
            await conn.execute(update(invoices).where(invoices.c.id == irow.id).values(status=new))
            if number in inv_ids:
                inv_ids[number] = (inv_ids[number][0], inv_ids[number][1], new)
            if new == "paid":
                await _close_tasks(conn, owner, irow.id, at)
            counts["payments"] += 1
        for number, (_line, vals) in new_invoices.items():
            f = vals["facts"]
            if f.voided_on is not None:
                iid, cid, old = inv_ids[number]
                left = L.balance(f.amount, [p for p in f.payments if p.paid_on <= f.voided_on])
                await conn.execute(update(invoices).where(invoices.c.id == iid).values(status="void"))
                await _event(conn, owner, iid, cid, "void", old, "void", f.voided_on, at, amount=left, note="imported")
    return counts


# ---------------------------------------------------------------------------------- daily job
@dataclass
class DailyResult:
    owner: str
    day: date
    newly_overdue: list[str]
    summary: str
    rows: int


async def owners(ctx) -> list[str]:
    async with ctx.read() as conn:
        return sorted((await conn.execute(select(clients.c.owner_id).distinct())).scalars().all())


async def run_daily(ctx, owner: str, now: datetime) -> DailyResult:
    """For one owner: mark invoices whose stored status is behind (newly overdue, or e.g. paid
    by a back-dated payment) with an event each, open a follow-up task for each overdue invoice
    that never had one, and (re)write today's summary rows. Idempotent for a given day."""
    at = aware(now)
    today = at.date()
    yesterday = today - timedelta(days=1)
    newly: list[str] = []
    async with ctx.db() as conn:
        crows, facts, irows = await _load(conn, owner, lock=True)
        for cid, fs in facts.items():
            for f in fs:
                row = irows[f.id]
                status = L.invoice_status(f, today)
                if status is None or status == row.status:
                    continue
                kind = "overdue" if status == "overdue" else "status"
                eff = f.due + timedelta(days=1) if status == "overdue" else today
                await conn.execute(update(invoices).where(invoices.c.id == f.id).values(status=status))
                await _event(conn, owner, f.id, cid, kind, row.status, status, eff, at, note="daily job")
                if status == "overdue":
                    newly.append(f.number)
        # A follow-up task for every overdue invoice that never had one (also back-filled ones).
        followed = set(
            (
                await conn.execute(
                    select(tasks.c.invoice_id).where(tasks.c.owner_id == owner, tasks.c.invoice_id.is_not(None))
                )
            )
            .scalars()
            .all()
        )
        for cid, fs in facts.items():
            for f in fs:
                if f.id not in followed and L.invoice_status(f, today) == "overdue":
                    left = L.open_balance(f, today)
                    await conn.execute(
                        insert(tasks).values(
                            owner_id=owner,
                            title=(
                                f"Follow up with {crows[cid].name}: invoice {f.number}, "
                                f"{L.format_money(left, f.currency)} overdue since {f.due + timedelta(days=1)}"
                            ),
                            due=today,
                            done=False,
                            client_id=cid,
                            invoice_id=f.id,
                            created_at=at,
                        )
                    )
        per_cur: dict[str, dict[str, Any]] = {}
        overdue_names: dict[str, dict[str, Decimal]] = {}
        for cid, fs in facts.items():
            for f in fs:
                s = per_cur.setdefault(
                    f.currency,
                    {
                        "open": 0,
                        "outstanding": Decimal("0.00"),
                        "od": 0,
                        "od_amount": Decimal("0.00"),
                        "clients": set(),
                        "received": Decimal("0.00"),
                    },
                )
                left = L.open_balance(f, today)
                if left > 0:
                    s["open"] += 1
                    s["outstanding"] += left
                if L.invoice_status(f, today) == "overdue":
                    s["od"] += 1
                    s["od_amount"] += left
                    s["clients"].add(cid)
                    by = overdue_names.setdefault(crows[cid].name, {})
                    by[f.currency] = by.get(f.currency, Decimal("0.00")) + left
                s["received"] += sum((p.amount for p in f.payments if p.paid_on == yesterday), Decimal("0.00"))
        summary = summary_text(today, per_cur, overdue_names, yesterday)
        summary += await _tasks_text(conn, owner, today, yesterday)
        await conn.execute(
            delete(daily_summaries).where(daily_summaries.c.owner_id == owner, daily_summaries.c.day == today)
        )
        for cur, s in sorted(per_cur.items()):
            await conn.execute(
                insert(daily_summaries).values(
                    owner_id=owner,
                    day=today,
                    currency=cur,
                    open_invoices=s["open"],
                    outstanding=s["outstanding"],
                    overdue_invoices=s["od"],
                    overdue_amount=s["od_amount"],
                    overdue_clients=len(s["clients"]),
                    received=s["received"],
                    summary=summary,
                    created_at=at,
                )
            )
    return DailyResult(owner, today, newly, summary, len(per_cur))


def summary_text(today: date, per_cur: dict[str, dict[str, Any]], overdue_names: dict, yesterday: date) -> str:
    outstanding = {c: s["outstanding"] for c, s in per_cur.items()}
    n_open = sum(s["open"] for s in per_cur.values())
    if not n_open:
        head = f"Invoices summary for {today}: nothing is outstanding."
    else:
        head = f"Invoices summary for {today}: {L.format_amounts(outstanding)} outstanding on {n_open} open invoice(s)."
    if overdue_names:
        od = {c: s["od_amount"] for c, s in per_cur.items()}
        who = ", ".join(
            f"{n} {L.format_amounts(a)}" for n, a in sorted(overdue_names.items(), key=lambda t: t[0].casefold())
        )
        head += f" Overdue: {L.format_amounts(od)} from {len(overdue_names)} client(s) ({who})."
    received = {c: s["received"] for c, s in per_cur.items()}
    if any(received.values()):
        head += f" Received on {yesterday}: {L.format_amounts(received)}."
    return head


async def _tasks_text(conn, owner: str, today: date, yesterday: date) -> str:
    """Bella's session summary parts: tasks completed the day before, and outstanding items (open
    tasks, by priority then due date; at most 10 named)."""
    rows = (await conn.execute(select(tasks).where(tasks.c.owner_id == owner))).all()
    completed = [r.title for r in rows if r.done and r.done_at is not None and aware(r.done_at).date() == yesterday]
    open_rows = sorted(
        (r for r in rows if not r.done),
        key=lambda r: (_PRIORITY_ORDER.get(r.priority, 1), r.due is None, r.due or date.max, r.id),
    )
    out = ""
    if completed:
        out += f" Tasks completed on {yesterday}: {'; '.join(completed[:10])}."
    if open_rows:
        items = [
            r.title + (f" (due {r.due}{', overdue' if r.due < today else ''})" if r.due else "") for r in open_rows[:10]
        ]
        more = f" and {len(open_rows) - 10} more" if len(open_rows) > 10 else ""
        out += f" Outstanding items: {'; '.join(items)}{more}."
    return out


# ------------------------------------------------------------------------ user-data hooks
async def delete_owner(ctx, owner: str) -> int:
    """Erase every row the owner has in this plugin's tables; returns how many."""
    total = 0
    async with ctx.db() as conn:
        for t in ALL_TABLES:
            total += (await conn.execute(delete(t).where(t.c.owner_id == owner))).rowcount or 0
    return total


def _jsonable(v: Any) -> Any:
    if isinstance(v, Decimal):
        return str(v)
    if isinstance(v, datetime):
        return aware(v).isoformat()
    if isinstance(v, date):
        return v.isoformat()
    return v


async def export_owner(ctx, owner: str) -> dict[str, Any]:
    """Every row of the owner, table by table, as JSON-ready dicts (amounts as strings)."""
    out: dict[str, Any] = {}
    async with ctx.read() as conn:
        for t in reversed(ALL_TABLES):
            rows = (await conn.execute(select(t).where(t.c.owner_id == owner).order_by(t.c.id))).mappings().all()
            out[t.name.removeprefix("invoices_")] = [{k: _jsonable(v) for k, v in r.items()} for r in rows]
    return out


# ------------------------------------------------------------------------------------ tasks
PRIORITIES = ("high", "normal", "low")
_PRIORITY_ORDER = {p: i for i, p in enumerate(PRIORITIES)}


@dataclass
class TaskView:
    id: int
    title: str
    due: date | None
    priority: str
    done: bool
    client: str | None
    invoice: str | None
    done_at: datetime | None


def check_priority(value: object) -> str:
    p = str(value or "normal").strip().lower()
    p = {"urgent": "high", "medium": "normal", "med": "normal", "normal": "normal"}.get(p, p)
    if p not in PRIORITIES:
        raise PluginError(f"priority must be high, normal or low, not {str(value)[:20]!r}")
    return p


async def add_task(
    ctx,
    owner: str,
    title: str,
    *,
    now: datetime,
    due: object = None,
    priority: object = None,
    client: str | None = None,
    invoice: str | None = None,
) -> TaskView:
    """A task (Bella's to-dos: follow up, send, call…), optionally linked to a client and/or an
    invoice (the invoice's client when no client is given). PluginError, nothing written, for a
    bad date, priority, unknown client or invoice."""
    title = check_text(title, "a task", 500)
    if not title:
        raise PluginError("a task needs a title (e.g. !task add Call Claudia about invoice 2026-014)")
    due_d = L.parse_date(due, now) if due not in (None, "") else None
    prio = check_priority(priority)
    at = aware(now)
    async with ctx.db() as conn:
        irow = await _invoice_row(conn, owner, invoice) if invoice else None
        crow = await _client_row(conn, owner, client, fuzzy=True) if client else None
        if crow is None and irow is not None:
            crow = (await conn.execute(select(clients).where(clients.c.id == irow.client_id))).first()
        if crow is not None and irow is not None and irow.client_id != crow.id:
            raise PluginError(f"invoice {irow.number} is not {crow.name}'s")
        tid = (
            await conn.execute(
                insert(tasks)
                .values(
                    owner_id=owner,
                    title=title,
                    due=due_d,
                    done=False,
                    priority=prio,
                    client_id=crow.id if crow else None,
                    invoice_id=irow.id if irow else None,
                    created_at=at,
                )
                .returning(tasks.c.id)
            )
        ).scalar_one()
    return TaskView(tid, title, due_d, prio, False, crow.name if crow else None, irow.number if irow else None, None)


async def list_tasks(ctx, owner: str, *, include_done: bool = False, client: str | None = None) -> list[TaskView]:
    """The owner's tasks: open ones by priority, then due date (undated last); done ones after."""
    async with ctx.read() as conn:
        q = (
            select(tasks, clients.c.name.label("client_name"), invoices.c.number.label("invoice_number"))
            .select_from(
                tasks.outerjoin(clients, clients.c.id == tasks.c.client_id).outerjoin(
                    invoices, invoices.c.id == tasks.c.invoice_id
                )
            )
            .where(tasks.c.owner_id == owner)
        )
        if not include_done:
            q = q.where(tasks.c.done.is_(False))
        if client:
            crow = await _client_row(conn, owner, client, fuzzy=True)
            q = q.where(tasks.c.client_id == crow.id)
        rows = (await conn.execute(q)).all()
    views = [
        TaskView(r.id, r.title, r.due, r.priority, bool(r.done), r.client_name, r.invoice_number, r.done_at)
        for r in rows
    ]
    views.sort(key=lambda t: (t.done, _PRIORITY_ORDER.get(t.priority, 1), t.due is None, t.due or date.max, t.id))
    return views


async def complete_task(ctx, owner: str, task_id: object, *, now: datetime) -> TaskView:
    """Mark one of the owner's tasks done. PluginError for an unknown id or a task already done."""
    raw = str(task_id or "").strip().lstrip("#")
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 18:
        raise PluginError(f"{str(task_id)[:30]!r} is not a task number (see !task list)")
    at = aware(now)
    async with ctx.db() as conn:
        row = (await conn.execute(select(tasks).where(tasks.c.owner_id == owner, tasks.c.id == int(raw)))).first()
        if row is None:
            raise PluginError(f"you have no task #{raw} (see !task list)")
        if row.done:
            raise PluginError(f"task #{raw} is already done")
        await conn.execute(update(tasks).where(tasks.c.id == row.id).values(done=True, done_at=at))
    return next(t for t in await list_tasks(ctx, owner, include_done=True) if t.id == row.id)
