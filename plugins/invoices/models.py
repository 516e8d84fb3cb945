"""The invoices plugin's tables (created by migrations/versions/0001_invoices.py; 0002: task priority).

Every row carries `owner_id`: the user who keeps this ledger. Every query filters by it, so one
user's clients, invoices and payments are never visible to another user.

Amounts are `Numeric(14, 2)` with a 3-letter ISO 4217 `currency`, read and written as `Decimal`.
On SQLite (no native decimal type) the `Money` type binds decimals as text and reads values back
through their shortest repr, so no float arithmetic ever touches an amount; sums are done in
Python with Decimal, never with SQL SUM().

Computed, not stored: a client's amount owed (sum of open balances), total spent (sum of
payments), payment rating and status when no override is set — derived on read from invoices
and payments (ledger.py), so they can't drift. `invoices_invoices.status` is the status as last
marked (on each change and by the daily job); readers recompute it for the day they ask about.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

from sqlalchemy import (
    BigInteger,
    Boolean,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from clara.plugin_api import PluginBase, table_name

from .ledger import to_decimal

# A reload (`PluginHost.reload`) re-executes this module: forget the previous definitions of our
# tables on the shared PluginBase metadata first, or SQLAlchemy refuses to define them again.
for _stale in [t for name, t in PluginBase.metadata.tables.items() if name.startswith(table_name("invoices_"))]:
    PluginBase.metadata.remove(_stale)

PK = BigInteger().with_variant(Integer(), "sqlite")
TS = DateTime(timezone=True)


class Money(TypeDecorator):
    """NUMERIC(14, 2) as Decimal on every backend (see module doc for SQLite)."""

    impl = Numeric(14, 2)
    cache_ok = True

    def load_dialect_impl(self, dialect):
        if dialect.name == "sqlite":
            return dialect.type_descriptor(Numeric(14, 2, asdecimal=False))
        return dialect.type_descriptor(Numeric(14, 2, asdecimal=True))

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        d = to_decimal(value)
        return str(d) if dialect.name == "sqlite" else d

    def process_result_value(self, value, dialect) -> Decimal | None:
        return None if value is None else to_decimal(value)


class Client(PluginBase):
    __tablename__ = table_name("invoices_clients")
    __table_args__ = (
        UniqueConstraint("owner_id", "norm_name", name=table_name("uq_invoices_clients_owner_name")),
        Index(table_name("ix_invoices_clients_owner"), "owner_id"),
    )

    id: Mapped[int] = mapped_column(PK, primary_key=True, autoincrement=True)
    owner_id: Mapped[str] = mapped_column(String(200), nullable=False)
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    norm_name: Mapped[str] = mapped_column(String(200), nullable=False)
    email: Mapped[str | None] = mapped_column(String(320), nullable=True)
    phone: Mapped[str | None] = mapped_column(String(64), nullable=True)
    notes: Mapped[str | None] = mapped_column(Text, nullable=True)
    status_override: Mapped[str | None] = mapped_column(String(20), nullable=True)  # active|overdue|blacklist
    created_at: Mapped[datetime] = mapped_column(TS, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(TS, nullable=False)


class Invoice(PluginBase):
    __tablename__ = table_name("invoices_invoices")
    __table_args__ = (
        UniqueConstraint("owner_id", "number", name=table_name("uq_invoices_invoices_owner_number")),
        Index(table_name("ix_invoices_invoices_owner_due"), "owner_id", "due"),
        Index(table_name("ix_invoices_invoices_client"), "client_id"),
    )

    id: Mapped[int] = mapped_column(PK, primary_key=True, autoincrement=True)
    owner_id: Mapped[str] = mapped_column(String(200), nullable=False)
    client_id: Mapped[int] = mapped_column(
        PK, ForeignKey(table_name("invoices_clients") + ".id", ondelete="CASCADE"), nullable=False
    )
    number: Mapped[str] = mapped_column(String(64), nullable=False)
    amount: Mapped[Decimal] = mapped_column(Money, nullable=False)
    currency: Mapped[str] = mapped_column(String(3), nullable=False)
    issued: Mapped[date] = mapped_column(Date, nullable=False)
    due: Mapped[date] = mapped_column(Date, nullable=False)
    status: Mapped[str] = mapped_column(String(20), nullable=False)  # unpaid|partially_paid|paid|overdue|void
    description: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(TS, nullable=False)


class Payment(PluginBase):
    __tablename__ = table_name("invoices_payments")
    __table_args__ = (
        Index(table_name("ix_invoices_payments_invoice"), "invoice_id"),
        Index(table_name("ix_invoices_payments_owner_paid"), "owner_id", "paid_on"),
    )

    id: Mapped[int] = mapped_column(PK, primary_key=True, autoincrement=True)
    owner_id: Mapped[str] = mapped_column(String(200), nullable=False)
    invoice_id: Mapped[int] = mapped_column(
        PK, ForeignKey(table_name("invoices_invoices") + ".id", ondelete="CASCADE"), nullable=False
    )
    amount: Mapped[Decimal] = mapped_column(Money, nullable=False)
    currency: Mapped[str] = mapped_column(String(3), nullable=False)
    paid_on: Mapped[date] = mapped_column(Date, nullable=False)
    method: Mapped[str | None] = mapped_column(String(60), nullable=True)
    created_at: Mapped[datetime] = mapped_column(TS, nullable=False)


class Task(PluginBase):
    __tablename__ = table_name("invoices_tasks")
    __table_args__ = (Index(table_name("ix_invoices_tasks_owner_done"), "owner_id", "done"),)

    id: Mapped[int] = mapped_column(PK, primary_key=True, autoincrement=True)
    owner_id: Mapped[str] = mapped_column(String(200), nullable=False)
    title: Mapped[str] = mapped_column(String(500), nullable=False)
    due: Mapped[date | None] = mapped_column(Date, nullable=True)
    done: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    priority: Mapped[str] = mapped_column(String(10), nullable=False, default="normal", server_default="normal")
    client_id: Mapped[int | None] = mapped_column(
        PK, ForeignKey(table_name("invoices_clients") + ".id", ondelete="SET NULL"), nullable=True
    )
    invoice_id: Mapped[int | None] = mapped_column(
        PK, ForeignKey(table_name("invoices_invoices") + ".id", ondelete="SET NULL"), nullable=True
    )
    created_at: Mapped[datetime] = mapped_column(TS, nullable=False)
    done_at: Mapped[datetime | None] = mapped_column(TS, nullable=True)


class Event(PluginBase):
    """Append-only history of an invoice: created, payment, overdue (marked), void. `at` is when
    it was recorded; `effective_on` the business date it takes effect (issue date, paid_on, the
    day after the due date, the void date) — what past states are reconstructed from."""

    __tablename__ = table_name("invoices_events")
    __table_args__ = (
        Index(table_name("ix_invoices_events_invoice"), "invoice_id", "id"),
        Index(table_name("ix_invoices_events_owner_kind"), "owner_id", "kind"),
    )

    id: Mapped[int] = mapped_column(PK, primary_key=True, autoincrement=True)
    owner_id: Mapped[str] = mapped_column(String(200), nullable=False)
    invoice_id: Mapped[int] = mapped_column(
        PK, ForeignKey(table_name("invoices_invoices") + ".id", ondelete="CASCADE"), nullable=False
    )
    client_id: Mapped[int] = mapped_column(PK, nullable=False)
    kind: Mapped[str] = mapped_column(String(20), nullable=False)  # created|payment|overdue|void
    old_status: Mapped[str | None] = mapped_column(String(20), nullable=True)
    new_status: Mapped[str] = mapped_column(String(20), nullable=False)
    amount: Mapped[Decimal | None] = mapped_column(Money, nullable=True)
    payment_id: Mapped[int | None] = mapped_column(PK, nullable=True)
    effective_on: Mapped[date] = mapped_column(Date, nullable=False)
    at: Mapped[datetime] = mapped_column(TS, nullable=False)
    actor: Mapped[str | None] = mapped_column(String(200), nullable=True)
    note: Mapped[str | None] = mapped_column(Text, nullable=True)


class DailySummary(PluginBase):
    """One row per owner, day and currency, written by the daily job."""

    __tablename__ = table_name("invoices_daily_summaries")
    __table_args__ = (
        UniqueConstraint("owner_id", "day", "currency", name=table_name("uq_invoices_daily_owner_day_cur")),
    )

    id: Mapped[int] = mapped_column(PK, primary_key=True, autoincrement=True)
    owner_id: Mapped[str] = mapped_column(String(200), nullable=False)
    day: Mapped[date] = mapped_column(Date, nullable=False)
    currency: Mapped[str] = mapped_column(String(3), nullable=False)
    open_invoices: Mapped[int] = mapped_column(Integer, nullable=False)
    outstanding: Mapped[Decimal] = mapped_column(Money, nullable=False)
    overdue_invoices: Mapped[int] = mapped_column(Integer, nullable=False)
    overdue_amount: Mapped[Decimal] = mapped_column(Money, nullable=False)
    overdue_clients: Mapped[int] = mapped_column(Integer, nullable=False)
    received: Mapped[Decimal] = mapped_column(Money, nullable=False)  # payments dated the day before
    summary: Mapped[str] = mapped_column(Text, nullable=False)
    created_at: Mapped[datetime] = mapped_column(TS, nullable=False)


clients = Client.__table__
invoices = Invoice.__table__
payments = Payment.__table__
tasks = Task.__table__
events = Event.__table__
daily_summaries = DailySummary.__table__
# Children first: the order rows are deleted in.
ALL_TABLES = (events, payments, tasks, daily_summaries, invoices, clients)
