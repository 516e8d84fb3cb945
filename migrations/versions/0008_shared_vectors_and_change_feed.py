"""One memory, many processes: vectors in SQL (`fact_vectors`), the change feed every process
tails (`changes`), and leases on index jobs (`index_jobs.lease_until`) so exactly one worker of
any process embeds a fact.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

from storage.naming import t

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.add_column(t("index_jobs"), sa.Column("lease_until", TS, nullable=True))
    op.create_table(
        t("fact_vectors"),
        sa.Column("fact_id", PK, sa.ForeignKey(t("facts") + ".id", ondelete="CASCADE"), primary_key=True),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("dim", sa.Integer(), nullable=False),
        sa.Column("encoding", sa.String(10), nullable=False),
        sa.Column("content_hash", sa.String(40), nullable=False),
        sa.Column("vector", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_table(
        t("changes"),
        sa.Column("id", PK, primary_key=True, autoincrement=True),
        sa.Column("fact_id", PK, nullable=False),
        sa.Column("op", sa.String(12), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sqlite_autoincrement=True,
    )


def downgrade() -> None:
    op.drop_table(t("changes"))
    op.drop_table(t("fact_vectors"))
    op.execute(f"ALTER TABLE {t('index_jobs')} DROP COLUMN lease_until")  # SQLite >= 3.35 too
