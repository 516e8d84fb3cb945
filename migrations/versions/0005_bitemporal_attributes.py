"""Bi-temporal facts keyed by attribute.

`facts.attr`: the (subject, attribute) key of a statement ("alice/residence", "anna/work"), kept on
every version so the past of an attribute stays askable (history questions, `--superseded`); the
current holder of a key also holds its slug. `facts.superseded_at`: system time at which the
store learnt the fact stopped being current (world time is `valid_from`/`valid_to`; recorded is
`created_at`).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

from storage.naming import t

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.add_column(t("facts"), sa.Column("attr", sa.String(200), nullable=True))
    op.add_column(t("facts"), sa.Column("superseded_at", TS, nullable=True))
    op.create_index(t("ix_facts_scope_attr"), t("facts"), ["scope_id", "attr"])
    # Facts superseded before this revision: their system end is when they were last updated.
    op.execute(f"UPDATE {t('facts')} SET superseded_at = updated_at WHERE status = 'superseded'")


def downgrade() -> None:
    op.drop_index(t("ix_facts_scope_attr"), table_name=t("facts"))
    for col in ("superseded_at", "attr"):
        op.execute(f"ALTER TABLE {t('facts')} DROP COLUMN {col}")
