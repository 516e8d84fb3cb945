"""PostgreSQL full text without accents: "Valparaiso" finds "Valparaíso", "donde" finds "dónde".

The generated `tsv` column folds accented Latin letters (translate(), IMMUTABLE, no extension
needed) before the english configuration; recall folds the query's terms the same way
(storage.text.strip_accents). SQLite's FTS5 index already tokenises with remove_diacritics 2.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03
"""

from alembic import op

from storage.naming import t

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

# Only letters whose NFKD decomposition is base letter + accent, so Python's strip_accents agrees.
FROM = "áàâäãåāăąçćčďéèêëēėęěíìîïīįñńňóòôöõōőŕřśšşťúùûüūůűųýÿźżž"
TO = "aaaaaaaaacccdeeeeeeeeiiiiiinnnooooooorrssstuuuuuuuuyyzzz"


def _tsv(fold: bool) -> str:
    def col(name: str) -> str:
        text = f"coalesce({name}, '')"
        return f"translate(lower({text}), '{FROM}', '{TO}')" if fold else text

    return (
        f"ALTER TABLE {t('facts')} ADD COLUMN tsv tsvector GENERATED ALWAYS AS ("
        f"setweight(to_tsvector('english', {col('content')}), 'A') || "
        f"setweight(to_tsvector('english', {col('context')}), 'B')) STORED"
    )


def _rebuild(fold: bool) -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    facts, ix = t("facts"), t("ix_facts_tsv")
    op.execute(f"DROP INDEX IF EXISTS {ix}")
    op.execute(f"ALTER TABLE {facts} DROP COLUMN IF EXISTS tsv")
    op.execute(_tsv(fold))
    op.execute(f"CREATE INDEX {ix} ON {facts} USING gin (tsv)")


def upgrade() -> None:
    _rebuild(True)


def downgrade() -> None:
    _rebuild(False)
