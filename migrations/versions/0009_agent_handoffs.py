"""Conversation handoffs between MCP agents (`handoffs`): from/to agent, session, summary, the
handoff it continues (context chain), the facts passed along, pending/picked up.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

from storage.naming import t

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        t("handoffs"),
        sa.Column("id", PK, primary_key=True, autoincrement=True),
        sa.Column("session", sa.String(200), nullable=False),
        sa.Column("from_agent", sa.String(200), nullable=False),
        sa.Column("to_agent", sa.String(200), nullable=False),
        sa.Column("parent_id", PK, sa.ForeignKey(t("handoffs") + ".id", ondelete="SET NULL"), nullable=True),
        sa.Column("scope_id", sa.String(200), sa.ForeignKey(t("scopes") + ".id", ondelete="SET NULL"), nullable=True),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("fact_ids", sa.JSON(), nullable=True),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("picked_up_at", TS, nullable=True),
    )
    op.create_index(t("ix_handoffs_session"), t("handoffs"), ["session"])
    op.create_index(t("ix_handoffs_to_status"), t("handoffs"), ["to_agent", "status", "id"])


def downgrade() -> None:
    op.drop_index(t("ix_handoffs_to_status"), table_name=t("handoffs"))
    op.drop_index(t("ix_handoffs_session"), table_name=t("handoffs"))
    op.drop_table(t("handoffs"))
