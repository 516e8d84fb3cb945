"""Initial schema: scopes, members, messages, facts (+ full-text index), entities, links,
relations, fact history and the durable indexing queue.

Revision ID: 0001
Revises:
Create Date: 2026-11-21
"""

import sqlalchemy as sa
from alembic import op

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
        "scopes",
        sa.Column("id", sa.String(200), primary_key=True),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("owner", sa.String(200), nullable=True),
        sa.Column("read_policy", sa.String(20), nullable=False),
        sa.Column("write_policy", sa.String(20), nullable=False),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_index("ix_scopes_owner", "scopes", ["owner"])
    op.create_table(
        "scope_members",
        sa.Column("scope_id", sa.String(200), sa.ForeignKey("scopes.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("principal", sa.String(200), primary_key=True),
        sa.Column("can_write", sa.Integer(), nullable=False),
    )
    op.create_index("ix_scope_members_principal", "scope_members", ["principal"])
    op.create_table(
        "messages",
        sa.Column("id", PK, primary_key=True, autoincrement=True),
        sa.Column("scope_id", sa.String(200), sa.ForeignKey("scopes.id", ondelete="CASCADE"), nullable=False),
        sa.Column("channel", sa.String(200), nullable=True),
        sa.Column("speaker", sa.String(200), nullable=False),
        sa.Column("speaker_id", sa.String(200), nullable=True),
        sa.Column("role", sa.String(20), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("external_id", sa.String(200), nullable=True),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_index("ix_messages_scope_created", "messages", ["scope_id", "created_at"])
    op.create_index("ix_messages_speaker_id", "messages", ["speaker_id"])
    op.create_table(
        "facts",
        sa.Column("id", PK, primary_key=True, autoincrement=True),
        sa.Column("scope_id", sa.String(200), sa.ForeignKey("scopes.id", ondelete="CASCADE"), nullable=False),
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
        sa.UniqueConstraint("scope_id", "slug", name="uq_facts_scope_slug"),
    )
    op.create_index("ix_facts_scope_status_created", "facts", ["scope_id", "status", "created_at"])
    op.create_index("ix_facts_scope_status_id", "facts", ["scope_id", "status", "id"])
    op.create_index("ix_facts_created_by", "facts", ["created_by"])
    op.create_table(
        "entities",
        sa.Column("id", PK, primary_key=True, autoincrement=True),
        sa.Column("scope_id", sa.String(200), sa.ForeignKey("scopes.id", ondelete="CASCADE"), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("norm_name", sa.String(200), nullable=False),
        sa.Column("type", sa.String(30), nullable=False),
        sa.Column("aliases", sa.JSON(), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.UniqueConstraint("scope_id", "norm_name", name="uq_entities_scope_name"),
    )
    op.create_table(
        "fact_entities",
        sa.Column("fact_id", PK, sa.ForeignKey("facts.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("entity_id", PK, sa.ForeignKey("entities.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("role", sa.String(30), nullable=False),
    )
    op.create_index("ix_fact_entities_entity_id", "fact_entities", ["entity_id"])
    op.create_table(
        "relations",
        sa.Column("id", PK, primary_key=True, autoincrement=True),
        sa.Column("scope_id", sa.String(200), sa.ForeignKey("scopes.id", ondelete="CASCADE"), nullable=False),
        sa.Column("source_id", PK, sa.ForeignKey("entities.id", ondelete="CASCADE"), nullable=False),
        sa.Column("relation", sa.String(100), nullable=False),
        sa.Column("target_id", PK, sa.ForeignKey("entities.id", ondelete="CASCADE"), nullable=False),
        sa.Column("fact_id", PK, sa.ForeignKey("facts.id", ondelete="SET NULL"), nullable=True),
        sa.Column("valid_from", TS, nullable=True),
        sa.Column("valid_to", TS, nullable=True),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_index("ix_relations_source_id", "relations", ["source_id"])
    op.create_index("ix_relations_target_id", "relations", ["target_id"])
    op.create_table(
        "fact_history",
        sa.Column("id", PK, primary_key=True, autoincrement=True),
        sa.Column("fact_id", PK, sa.ForeignKey("facts.id", ondelete="CASCADE"), nullable=False),
        sa.Column("action", sa.String(20), nullable=False),
        sa.Column("actor", sa.String(200), nullable=True),
        sa.Column("at", TS, nullable=False),
        sa.Column("old_content", sa.Text(), nullable=True),
        sa.Column("new_content", sa.Text(), nullable=True),
        sa.Column("old_status", sa.String(20), nullable=True),
        sa.Column("new_status", sa.String(20), nullable=True),
    )
    op.create_index("ix_fact_history_fact_id", "fact_history", ["fact_id"])
    op.create_table(
        "index_jobs",
        sa.Column("id", PK, primary_key=True, autoincrement=True),
        sa.Column("fact_id", PK, nullable=False),
        sa.Column("op", sa.String(10), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("enqueued_at", TS, nullable=False),
    )
    op.create_index("ix_index_jobs_fact_id", "index_jobs", ["fact_id"])

    if op.get_bind().dialect.name == "sqlite":
        # FTS5 index over facts, kept in step by triggers (same transaction). Besides the text it
        # indexes the scope (one opaque token per scope, SCOPE_TOKEN) and the status, so that recall
        # applies the scope partition inside the full-text query itself, with no join.
        op.execute(
            f"CREATE VIEW facts_fts_source AS SELECT id, content, coalesce(context, '') AS context, "
            f"{SCOPE_TOKEN.format(col='scope_id')} AS scope_token, status FROM facts"
        )
        op.execute(
            "CREATE VIRTUAL TABLE facts_fts USING fts5(content, context, scope_token, status, "
            "content='facts_fts_source', content_rowid='id', tokenize='porter unicode61 remove_diacritics 2')"
        )
        new_vals = (
            f"new.id, new.content, coalesce(new.context, ''), {SCOPE_TOKEN.format(col='new.scope_id')}, new.status"
        )
        old_vals = (
            f"old.id, old.content, coalesce(old.context, ''), {SCOPE_TOKEN.format(col='old.scope_id')}, old.status"
        )
        cols = "rowid, content, context, scope_token, status"
        op.execute(
            f"CREATE TRIGGER facts_fts_ai AFTER INSERT ON facts BEGIN "
            f"INSERT INTO facts_fts({cols}) VALUES ({new_vals}); END"
        )
        op.execute(
            f"CREATE TRIGGER facts_fts_ad AFTER DELETE ON facts BEGIN "
            f"INSERT INTO facts_fts(facts_fts, {cols}) VALUES ('delete', {old_vals}); END"
        )
        op.execute(
            f"CREATE TRIGGER facts_fts_au AFTER UPDATE OF content, context, scope_id, status ON facts BEGIN "
            f"INSERT INTO facts_fts(facts_fts, {cols}) VALUES ('delete', {old_vals}); "
            f"INSERT INTO facts_fts({cols}) VALUES ({new_vals}); END"
        )
    else:
        op.execute(
            "ALTER TABLE facts ADD COLUMN tsv tsvector GENERATED ALWAYS AS ("
            "setweight(to_tsvector('english', coalesce(content, '')), 'A') || "
            "setweight(to_tsvector('english', coalesce(context, '')), 'B')) STORED"
        )
        op.execute("CREATE INDEX ix_facts_tsv ON facts USING gin (tsv)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for trig in ("facts_fts_ai", "facts_fts_ad", "facts_fts_au"):
            op.execute(f"DROP TRIGGER IF EXISTS {trig}")
        op.execute("DROP TABLE IF EXISTS facts_fts")
        op.execute("DROP VIEW IF EXISTS facts_fts_source")
    for table in (
        "index_jobs",
        "fact_history",
        "relations",
        "fact_entities",
        "entities",
        "facts",
        "messages",
        "scope_members",
        "scopes",
    ):
        op.drop_table(table)
