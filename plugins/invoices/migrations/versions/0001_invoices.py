"""Invoices plugin: clients, invoices, payments, tasks, the append-only invoice event history and
daily financial summaries (every row keyed by its owner).

Revision ID: inv0001
Revises:
Create Date: 2026-11-21
"""

import sqlalchemy as sa
from alembic import op

from clara.plugin_api import table_name

revision = "inv0001"
down_revision = None
branch_labels = ("invoices",)
depends_on = None

PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)
MONEY = sa.Numeric(14, 2)
OWNER = 200


def upgrade() -> None:
    op.create_table(
        table_name("invoices_clients"),
        sa.Column("id", PK, primary_key=True, autoincrement=True),
        sa.Column("owner_id", sa.String(OWNER), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("norm_name", sa.String(200), nullable=False),
        sa.Column("email", sa.String(320), nullable=True),
        sa.Column("phone", sa.String(64), nullable=True),
        sa.Column("notes", sa.Text(), nullable=True),
        sa.Column("status_override", sa.String(20), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.UniqueConstraint("owner_id", "norm_name", name=table_name("uq_invoices_clients_owner_name")),
    )
    op.create_index(table_name("ix_invoices_clients_owner"), table_name("invoices_clients"), ["owner_id"])
    op.create_table(
        table_name("invoices_invoices"),
        sa.Column("id", PK, primary_key=True, autoincrement=True),
        sa.Column("owner_id", sa.String(OWNER), nullable=False),
        sa.Column(
            "client_id", PK, sa.ForeignKey(table_name("invoices_clients") + ".id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("number", sa.String(64), nullable=False),
        sa.Column("amount", MONEY, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("issued", sa.Date(), nullable=False),
        sa.Column("due", sa.Date(), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.UniqueConstraint("owner_id", "number", name=table_name("uq_invoices_invoices_owner_number")),
    )
    op.create_index(table_name("ix_invoices_invoices_owner_due"), table_name("invoices_invoices"), ["owner_id", "due"])
    op.create_index(table_name("ix_invoices_invoices_client"), table_name("invoices_invoices"), ["client_id"])
    op.create_table(
        table_name("invoices_payments"),
        sa.Column("id", PK, primary_key=True, autoincrement=True),
        sa.Column("owner_id", sa.String(OWNER), nullable=False),
        sa.Column(
            "invoice_id", PK, sa.ForeignKey(table_name("invoices_invoices") + ".id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("amount", MONEY, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("paid_on", sa.Date(), nullable=False),
        sa.Column("method", sa.String(60), nullable=True),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_index(table_name("ix_invoices_payments_invoice"), table_name("invoices_payments"), ["invoice_id"])
    op.create_index(
        table_name("ix_invoices_payments_owner_paid"), table_name("invoices_payments"), ["owner_id", "paid_on"]
    )
    op.create_table(
        table_name("invoices_tasks"),
        sa.Column("id", PK, primary_key=True, autoincrement=True),
        sa.Column("owner_id", sa.String(OWNER), nullable=False),
        sa.Column("title", sa.String(500), nullable=False),
        sa.Column("due", sa.Date(), nullable=True),
        sa.Column("done", sa.Boolean(), nullable=False),
        sa.Column(
            "client_id", PK, sa.ForeignKey(table_name("invoices_clients") + ".id", ondelete="SET NULL"), nullable=True
        ),
        sa.Column(
            "invoice_id", PK, sa.ForeignKey(table_name("invoices_invoices") + ".id", ondelete="SET NULL"), nullable=True
        ),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("done_at", TS, nullable=True),
    )
    op.create_index(table_name("ix_invoices_tasks_owner_done"), table_name("invoices_tasks"), ["owner_id", "done"])
    op.create_table(
        table_name("invoices_events"),
        sa.Column("id", PK, primary_key=True, autoincrement=True),
        sa.Column("owner_id", sa.String(OWNER), nullable=False),
        sa.Column(
            "invoice_id", PK, sa.ForeignKey(table_name("invoices_invoices") + ".id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("client_id", PK, nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("old_status", sa.String(20), nullable=True),
        sa.Column("new_status", sa.String(20), nullable=False),
        sa.Column("amount", MONEY, nullable=True),
        sa.Column("payment_id", PK, nullable=True),
        sa.Column("effective_on", sa.Date(), nullable=False),
        sa.Column("at", TS, nullable=False),
        sa.Column("actor", sa.String(200), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
    )
    op.create_index(table_name("ix_invoices_events_invoice"), table_name("invoices_events"), ["invoice_id", "id"])
    op.create_index(table_name("ix_invoices_events_owner_kind"), table_name("invoices_events"), ["owner_id", "kind"])
    op.create_table(
        table_name("invoices_daily_summaries"),
        sa.Column("id", PK, primary_key=True, autoincrement=True),
        sa.Column("owner_id", sa.String(OWNER), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("open_invoices", sa.Integer(), nullable=False),
        sa.Column("outstanding", MONEY, nullable=False),
        sa.Column("overdue_invoices", sa.Integer(), nullable=False),
        sa.Column("overdue_amount", MONEY, nullable=False),
        sa.Column("overdue_clients", sa.Integer(), nullable=False),
        sa.Column("received", MONEY, nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.UniqueConstraint("owner_id", "day", "currency", name=table_name("uq_invoices_daily_owner_day_cur")),
    )


def downgrade() -> None:
    for table in (
        table_name("invoices_daily_summaries"),
        table_name("invoices_events"),
        table_name("invoices_tasks"),
        table_name("invoices_payments"),
        table_name("invoices_invoices"),
        table_name("invoices_clients"),
    ):
        op.drop_table(table)
