"""Each fact's previous fact in its scope, stored at insert time (`facts.prev_id`).

Recall's neighbour smoothing needs, for a candidate, the previous and next fact of its scope. As
correlated "previous id in scope" subqueries PostgreSQL planned them as walks of the primary key,
crossing every other scope's rows between two neighbours (seconds per recall once 100K facts sit
among other scopes). Stored, the previous neighbour is a primary-key seek and the next one an
index seek on `prev_id`, on both dialects. A trigger fills it for every insert path (store, bulk
import, restore), in the inserting transaction.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

from storage.naming import t

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.add_column(t("facts"), sa.Column("prev_id", PK, nullable=True))
    op.create_index(t("ix_facts_scope_id"), t("facts"), ["scope_id", "id"])
    facts = t("facts")
    op.execute(
        f"UPDATE {facts} SET prev_id = "
        f"(SELECT max(p.id) FROM {facts} p WHERE p.scope_id = {facts}.scope_id AND p.id < {facts}.id)"
    )
    op.create_index(t("ix_facts_prev_id"), t("facts"), ["prev_id"])
    if op.get_bind().dialect.name == "sqlite":
        op.execute(
            f"CREATE TRIGGER {t('facts_prev_ai')} AFTER INSERT ON {facts} WHEN new.prev_id IS NULL BEGIN "
            f"UPDATE {facts} SET prev_id = (SELECT max(p.id) FROM {facts} p WHERE p.scope_id = new.scope_id "
            "AND p.id < new.id) WHERE id = new.id; END"
        )
    else:
        op.execute(
            f"CREATE FUNCTION {t('facts_set_prev_id')}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            f"IF NEW.prev_id IS NULL THEN NEW.prev_id := (SELECT max(p.id) FROM {facts} p "
            "WHERE p.scope_id = NEW.scope_id AND p.id < NEW.id); END IF; RETURN NEW; END $$"
        )
        op.execute(
            f"CREATE TRIGGER {t('facts_prev_bi')} BEFORE INSERT ON {facts} FOR EACH ROW "
            f"EXECUTE FUNCTION {t('facts_set_prev_id')}()"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute(f"DROP TRIGGER IF EXISTS {t('facts_prev_ai')}")
    else:
        op.execute(f"DROP TRIGGER IF EXISTS {t('facts_prev_bi')} ON {t('facts')}")
        op.execute(f"DROP FUNCTION IF EXISTS {t('facts_set_prev_id')}()")
    op.drop_index(t("ix_facts_prev_id"), table_name=t("facts"))
    op.drop_index(t("ix_facts_scope_id"), table_name=t("facts"))
    op.execute(f"ALTER TABLE {t('facts')} DROP COLUMN prev_id")  # SQLite >= 3.35 too (no table rebuild)
