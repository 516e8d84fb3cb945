"""Invoices plugin: tasks get a priority (high, normal, low) — Bella's tasks as first-class records.

Revision ID: inv0002
Revises: inv0001
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

from clara.plugin_api import table_name

revision = "inv0002"
down_revision = "inv0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        table_name("invoices_tasks"), sa.Column("priority", sa.String(10), nullable=False, server_default="normal")
    )


def downgrade() -> None:
    with op.batch_alter_table(table_name("invoices_tasks")) as batch:
        batch.drop_column("priority")
