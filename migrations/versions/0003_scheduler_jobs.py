"""The persisted scheduler's job table (APScheduler's SQLAlchemyJobStore layout), created here so
the schema stays under Alembic.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21
"""

import sqlalchemy as sa
from alembic import op

from storage.naming import t

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        t("scheduler_jobs"),
        sa.Column("id", sa.Unicode(191), primary_key=True),
        sa.Column("next_run_time", sa.Float(25), nullable=True),
        sa.Column("job_state", sa.LargeBinary(), nullable=False),
    )
    op.create_index(t("ix_scheduler_jobs_next_run_time"), t("scheduler_jobs"), ["next_run_time"])


def downgrade() -> None:
    op.drop_index(t("ix_scheduler_jobs_next_run_time"), table_name=t("scheduler_jobs"))
    op.drop_table(t("scheduler_jobs"))
