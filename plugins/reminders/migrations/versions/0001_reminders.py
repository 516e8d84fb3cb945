"""Reminders plugin: reminders, their per-occurrence delivery log, per-user activity and the
proactive loop's messages and notes.

Revision ID: rem0001
Revises:
Create Date: 2026-11-21
"""

import sqlalchemy as sa
from alembic import op

from clara.plugin_api import table_name

revision = "rem0001"
down_revision = None
branch_labels = ("reminders",)
depends_on = None

PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)
USER = 200


def upgrade() -> None:
    op.create_table(
        table_name("reminders_reminders"),
        sa.Column("id", PK, primary_key=True, autoincrement=True),
        sa.Column("owner_id", sa.String(USER), nullable=False),
        sa.Column("owner_name", sa.String(200), nullable=False),
        sa.Column("target", sa.String(220), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("tz", sa.String(64), nullable=False),
        sa.Column("cron", sa.String(120), nullable=True),
        sa.Column("next_at", TS, nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("source", sa.String(64), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
    )
    op.create_index(table_name("ix_reminders_due"), table_name("reminders_reminders"), ["status", "next_at"])
    op.create_index(table_name("ix_reminders_owner"), table_name("reminders_reminders"), ["owner_id"])
    op.create_table(
        table_name("reminders_deliveries"),
        sa.Column("id", PK, primary_key=True, autoincrement=True),
        sa.Column("reminder_id", PK, nullable=False),
        sa.Column("owner_id", sa.String(USER), nullable=False),
        sa.Column("occurrence_at", TS, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("late", sa.Boolean(), nullable=False),
        sa.Column("at", TS, nullable=False),
        sa.UniqueConstraint("reminder_id", "occurrence_at", name=table_name("uq_reminders_delivery_occurrence")),
    )
    op.create_index(table_name("ix_reminders_deliveries_owner"), table_name("reminders_deliveries"), ["owner_id"])
    op.create_table(
        table_name("reminders_activity"),
        sa.Column("user_id", sa.String(USER), primary_key=True),
        sa.Column("display_name", sa.String(200), nullable=False),
        sa.Column("last_message_at", TS, nullable=False),
        sa.Column("last_channel_id", sa.String(200), nullable=False),
        sa.Column("last_guild_id", sa.String(200), nullable=True),
        sa.Column("last_is_dm", sa.Boolean(), nullable=False),
        sa.Column("ignored_streak", sa.Integer(), nullable=False),
        sa.Column("next_assess_at", TS, nullable=True),
    )
    op.create_table(
        table_name("reminders_proactive"),
        sa.Column("id", PK, primary_key=True, autoincrement=True),
        sa.Column("user_id", sa.String(USER), nullable=False),
        sa.Column("target", sa.String(220), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("key", sa.String(200), nullable=True),
        sa.Column("sent_at", TS, nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
    )
    op.create_index(
        table_name("ix_reminders_proactive_user"), table_name("reminders_proactive"), ["user_id", "sent_at"]
    )
    op.create_table(
        table_name("reminders_notes"),
        sa.Column("id", PK, primary_key=True, autoincrement=True),
        sa.Column("user_id", sa.String(USER), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("key", sa.String(200), nullable=True),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_index(table_name("ix_reminders_notes_user"), table_name("reminders_notes"), ["user_id", "created_at"])


def downgrade() -> None:
    for table in (
        table_name("reminders_notes"),
        table_name("reminders_proactive"),
        table_name("reminders_activity"),
        table_name("reminders_deliveries"),
        table_name("reminders_reminders"),
    ):
        op.drop_table(table)
