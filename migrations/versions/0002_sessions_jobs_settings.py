"""Sessions, the durable memory-job queue, namespaced settings, message→session links.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21
"""

import sqlalchemy as sa
from alembic import op

from storage.naming import t

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        t("sessions"),
        sa.Column("id", PK, primary_key=True, autoincrement=True),
        sa.Column("user_id", sa.String(200), nullable=False),
        sa.Column("channel_id", sa.String(200), nullable=False),
        sa.Column("scope_id", sa.String(200), sa.ForeignKey(t("scopes") + ".id", ondelete="CASCADE"), nullable=False),
        sa.Column("is_dm", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("started_at", TS, nullable=False),
        sa.Column("last_activity_at", TS, nullable=False),
        sa.Column("closed_at", TS, nullable=True),
        sa.Column("message_count", sa.Integer(), nullable=False),
        sa.Column("previous_id", PK, nullable=True),
        sa.Column("summary_fact_id", PK, nullable=True),
    )
    op.create_index(t("ix_sessions_user_channel"), t("sessions"), ["user_id", "channel_id", "started_at"])
    op.create_index(t("ix_sessions_status_activity"), t("sessions"), ["status", "last_activity_at"])
    # At most one open session per user×channel, enforced by the database (no double sessions).
    op.create_index(
        t("uq_sessions_open"),
        t("sessions"),
        ["user_id", "channel_id"],
        unique=True,
        sqlite_where=sa.text("status = 'open'"),
        postgresql_where=sa.text("status = 'open'"),
    )
    op.add_column(t("messages"), sa.Column("session_id", PK, nullable=True))
    op.create_index(t("ix_messages_session"), t("messages"), ["session_id", "id"])
    op.create_table(
        t("memory_jobs"),
        sa.Column("id", PK, primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(30), nullable=False),
        sa.Column("key", sa.String(200), nullable=True),
        sa.Column("principal", sa.String(200), nullable=True),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("run_after", TS, nullable=False),
        sa.Column("lease_until", TS, nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.UniqueConstraint("key", name=t("uq_memory_jobs_key")),
    )
    op.create_index(t("ix_memory_jobs_status_run"), t("memory_jobs"), ["status", "run_after", "id"])
    op.create_index(t("ix_memory_jobs_principal"), t("memory_jobs"), ["principal"])
    op.create_table(
        t("settings"),
        sa.Column("namespace", sa.String(100), primary_key=True),
        sa.Column("target", sa.String(200), primary_key=True),
        sa.Column("key", sa.String(100), primary_key=True),
        sa.Column("value", sa.JSON(), nullable=True),
        sa.Column("expires_at", TS, nullable=True),
        sa.Column("updated_at", TS, nullable=False),
    )


def downgrade() -> None:
    op.drop_table(t("settings"))
    op.drop_table(t("memory_jobs"))
    op.drop_index(t("ix_messages_session"), table_name=t("messages"))
    with op.batch_alter_table(t("messages")) as batch:
        batch.drop_column("session_id")
    op.drop_index(t("uq_sessions_open"), table_name=t("sessions"))
    op.drop_table(t("sessions"))
