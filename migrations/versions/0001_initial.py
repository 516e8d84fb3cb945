"""Initial schema: scopes, members, messages, facts (+ full-text index), entities, links,
relations, fact history and the durable indexing queue.

Revision ID: 0001
Revises:
Create Date: 2026-11-21
"""

import sqlalchemy as sa
from alembic import op

from storage.naming import t

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
# SQL for a scope id's full-text token: "x" + hex(utf-8 of the id) + "0" — one alphanumeric token
# per scope that no stemmer rule touches (it ends in a digit). storage.text.scope_token is its twin.
SCOPE_TOKEN = "('x' || lower(hex({col})) || '0')"
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        t("scopes"),
        sa.Column("id", sa.String(200), primary_key=True),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("owner", sa.String(200), nullable=True),
        sa.Column("read_policy", sa.String(20), nullable=False),
        sa.Column("write_policy", sa.String(20), nullable=False),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_index(t("ix_scopes_owner"), t("scopes"), ["owner"])
    op.create_table(
        t("scope_members"),
        sa.Column("scope_id", sa.String(200), sa.ForeignKey(t("scopes") + ".id", ondelete="CASCADE"), primary_key=True),
        sa.Column("principal", sa.String(200), primary_key=True),
        sa.Column("can_write", sa.Integer(), nullable=False),
    )
    op.create_index(t("ix_scope_members_principal"), t("scope_members"), ["principal"])
    op.create_table(
        t("messages"),
        sa.Column("id", PK, primary_key=True, autoincrement=True),
        sa.Column("scope_id", sa.String(200), sa.ForeignKey(t("scopes") + ".id", ondelete="CASCADE"), nullable=False),
        sa.Column("channel", sa.String(200), nullable=True),
        sa.Column("speaker", sa.String(200), nullable=False),
        sa.Column("speaker_id", sa.String(200), nullable=True),
        sa.Column("role", sa.String(20), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("external_id", sa.String(200), nullable=True),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_index(t("ix_messages_scope_created"), t("messages"), ["scope_id", "created_at"])
    op.create_index(t("ix_messages_speaker_id"), t("messages"), ["speaker_id"])
    op.create_table(
        t("facts"),
        sa.Column("id", PK, primary_key=True, autoincrement=True),
        sa.Column("scope_id", sa.String(200), sa.ForeignKey(t("scopes") + ".id", ondelete="CASCADE"), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("context", sa.Text(), nullable=True),
        sa.Column("kind", sa.String(30), nullable=False),
        sa.Column("slug", sa.String(200), nullable=True),
        sa.Column("importance", sa.Float(), nullable=False),
        sa.Column("relevance", sa.Float(), nullable=False),
        sa.Column("access_count", sa.Integer(), nullable=False),
        sa.Column("last_accessed_at", TS, nullable=True),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("valid_from", TS, nullable=True),
        sa.Column("valid_to", TS, nullable=True),
        sa.Column("supersedes_id", PK, nullable=True),
        sa.Column("superseded_by_id", PK, nullable=True),
        sa.Column("source_message_ids", sa.JSON(), nullable=True),
        sa.Column("source_ref", sa.String(200), nullable=True),
        sa.Column("speaker", sa.String(200), nullable=True),
        sa.Column("created_by", sa.String(200), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("indexed_at", TS, nullable=True),
        sa.UniqueConstraint("scope_id", "slug", name=t("uq_facts_scope_slug")),
    )
    op.create_index(t("ix_facts_scope_status_created"), t("facts"), ["scope_id", "status", "created_at"])
    op.create_index(t("ix_facts_scope_status_id"), t("facts"), ["scope_id", "status", "id"])
    op.create_index(t("ix_facts_created_by"), t("facts"), ["created_by"])
    op.create_table(
        t("entities"),
        sa.Column("id", PK, primary_key=True, autoincrement=True),
        sa.Column("scope_id", sa.String(200), sa.ForeignKey(t("scopes") + ".id", ondelete="CASCADE"), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("norm_name", sa.String(200), nullable=False),
        sa.Column("type", sa.String(30), nullable=False),
        sa.Column("aliases", sa.JSON(), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.UniqueConstraint("scope_id", "norm_name", name=t("uq_entities_scope_name")),
    )
    op.create_table(
        t("fact_entities"),
        sa.Column("fact_id", PK, sa.ForeignKey(t("facts") + ".id", ondelete="CASCADE"), primary_key=True),
        sa.Column("entity_id", PK, sa.ForeignKey(t("entities") + ".id", ondelete="CASCADE"), primary_key=True),
        sa.Column("role", sa.String(30), nullable=False),
    )
    op.create_index(t("ix_fact_entities_entity_id"), t("fact_entities"), ["entity_id"])
    op.create_table(
        t("relations"),
        sa.Column("id", PK, primary_key=True, autoincrement=True),
        sa.Column("scope_id", sa.String(200), sa.ForeignKey(t("scopes") + ".id", ondelete="CASCADE"), nullable=False),
        sa.Column("source_id", PK, sa.ForeignKey(t("entities") + ".id", ondelete="CASCADE"), nullable=False),
        sa.Column("relation", sa.String(100), nullable=False),
        sa.Column("target_id", PK, sa.ForeignKey(t("entities") + ".id", ondelete="CASCADE"), nullable=False),
        sa.Column("fact_id", PK, sa.ForeignKey(t("facts") + ".id", ondelete="SET NULL"), nullable=True),
        sa.Column("valid_from", TS, nullable=True),
        sa.Column("valid_to", TS, nullable=True),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_index(t("ix_relations_source_id"), t("relations"), ["source_id"])
    op.create_index(t("ix_relations_target_id"), t("relations"), ["target_id"])
    op.create_table(
        t("fact_history"),
        sa.Column("id", PK, primary_key=True, autoincrement=True),
        sa.Column("fact_id", PK, sa.ForeignKey(t("facts") + ".id", ondelete="CASCADE"), nullable=False),
        sa.Column("action", sa.String(20), nullable=False),
        sa.Column("actor", sa.String(200), nullable=True),
        sa.Column("at", TS, nullable=False),
        sa.Column("old_content", sa.Text(), nullable=True),
        sa.Column("new_content", sa.Text(), nullable=True),
        sa.Column("old_status", sa.String(20), nullable=True),
        sa.Column("new_status", sa.String(20), nullable=True),
    )
    op.create_index(t("ix_fact_history_fact_id"), t("fact_history"), ["fact_id"])
    op.create_table(
        t("index_jobs"),
        sa.Column("id", PK, primary_key=True, autoincrement=True),
        sa.Column("fact_id", PK, nullable=False),
        sa.Column("op", sa.String(10), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("enqueued_at", TS, nullable=False),
    )
    op.create_index(t("ix_index_jobs_fact_id"), t("index_jobs"), ["fact_id"])

    facts, fts, src = t("facts"), t("facts_fts"), t("facts_fts_source")
    if op.get_bind().dialect.name == "sqlite":
        # FTS5 index over facts, kept in step by triggers (same transaction). Besides the text it
        # indexes the scope (one opaque token per scope, SCOPE_TOKEN) and the status, so that recall
        # applies the scope partition inside the full-text query itself, with no join.
        op.execute(
            f"CREATE VIEW {src} AS SELECT id, content, coalesce(context, '') AS context, "
            f"{SCOPE_TOKEN.format(col='scope_id')} AS scope_token, status FROM {facts}"
        )
        op.execute(
            f"CREATE VIRTUAL TABLE {fts} USING fts5(content, context, scope_token, status, "
            f"content='{src}', content_rowid='id', tokenize='porter unicode61 remove_diacritics 2')"
        )
        new_vals = (
            f"new.id, new.content, coalesce(new.context, ''), {SCOPE_TOKEN.format(col='new.scope_id')}, new.status"
        )
        old_vals = (
            f"old.id, old.content, coalesce(old.context, ''), {SCOPE_TOKEN.format(col='old.scope_id')}, old.status"
        )
        cols = "rowid, content, context, scope_token, status"
        op.execute(
            f"CREATE TRIGGER {t('facts_fts_ai')} AFTER INSERT ON {facts} BEGIN "
            f"INSERT INTO {fts}({cols}) VALUES ({new_vals}); END"
        )
        op.execute(
            f"CREATE TRIGGER {t('facts_fts_ad')} AFTER DELETE ON {facts} BEGIN "
            f"INSERT INTO {fts}({fts}, {cols}) VALUES ('delete', {old_vals}); END"
        )
        op.execute(
            f"CREATE TRIGGER {t('facts_fts_au')} AFTER UPDATE OF content, context, scope_id, status ON {facts} BEGIN "
            f"INSERT INTO {fts}({fts}, {cols}) VALUES ('delete', {old_vals}); "
            f"INSERT INTO {fts}({cols}) VALUES ({new_vals}); END"
        )
    else:
        op.execute(
            f"ALTER TABLE {facts} ADD COLUMN tsv tsvector GENERATED ALWAYS AS ("
            "setweight(to_tsvector('english', coalesce(content, '')), 'A') || "
            "setweight(to_tsvector('english', coalesce(context, '')), 'B')) STORED"
        )
        op.execute(f"CREATE INDEX {t('ix_facts_tsv')} ON {facts} USING gin (tsv)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for trig in ("facts_fts_ai", "facts_fts_ad", "facts_fts_au"):
            op.execute(f"DROP TRIGGER IF EXISTS {t(trig)}")
        op.execute(f"DROP TABLE IF EXISTS {t('facts_fts')}")
        op.execute(f"DROP VIEW IF EXISTS {t('facts_fts_source')}")
    for table in (
        t("index_jobs"),
        t("fact_history"),
        t("relations"),
        t("fact_entities"),
        t("entities"),
        t("facts"),
        t("messages"),
        t("scope_members"),
        t("scopes"),
    ):
        op.drop_table(table)
