"""SQLAlchemy 2 table definitions. The schema is created by Alembic (`migrations/`), never by
`create_all` in production; `tests/test_migrations.py` checks the two agree."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    Unicode,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from storage.naming import t

# BIGINT on PostgreSQL, INTEGER (rowid alias, autoincrement) on SQLite.
PK = BigInteger().with_variant(Integer(), "sqlite")
TS = DateTime(timezone=True)


class Base(DeclarativeBase):
    pass


class ScopeRow(Base):
    __tablename__ = t("scopes")
    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    kind: Mapped[str] = mapped_column(String(20))
    name: Mapped[str] = mapped_column(String(200))
    owner: Mapped[str | None] = mapped_column(String(200), index=True)
    read_policy: Mapped[str] = mapped_column(String(20))
    write_policy: Mapped[str] = mapped_column(String(20))
    created_at: Mapped[datetime] = mapped_column(TS)


class ScopeMemberRow(Base):
    __tablename__ = t("scope_members")
    scope_id: Mapped[str] = mapped_column(ForeignKey(t("scopes") + ".id", ondelete="CASCADE"), primary_key=True)
    principal: Mapped[str] = mapped_column(String(200), primary_key=True, index=True)
    can_write: Mapped[int] = mapped_column(Integer, default=1)


class MessageRow(Base):
    __tablename__ = t("messages")
    id: Mapped[int] = mapped_column(PK, primary_key=True, autoincrement=True)
    scope_id: Mapped[str] = mapped_column(ForeignKey(t("scopes") + ".id", ondelete="CASCADE"))
    channel: Mapped[str | None] = mapped_column(String(200))
    speaker: Mapped[str] = mapped_column(String(200))
    speaker_id: Mapped[str | None] = mapped_column(String(200), index=True)
    role: Mapped[str] = mapped_column(String(20), default="user")
    content: Mapped[str] = mapped_column(Text)
    external_id: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(TS)
    session_id: Mapped[int | None] = mapped_column(PK)
    # What a bot/plugin message was written from: {"facts": [fact ids in its context or tool
    # results], "users": [principals a proactive message is about]} (None for people's turns).
    provenance: Mapped[dict | None] = mapped_column(JSON)
    __table_args__ = (
        Index(t("ix_messages_scope_created"), "scope_id", "created_at"),
        Index(t("ix_messages_session"), "session_id", "id"),
    )


class FactRow(Base):
    __tablename__ = t("facts")
    id: Mapped[int] = mapped_column(PK, primary_key=True, autoincrement=True)
    scope_id: Mapped[str] = mapped_column(ForeignKey(t("scopes") + ".id", ondelete="CASCADE"))
    content: Mapped[str] = mapped_column(Text)
    context: Mapped[str | None] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(String(30))
    slug: Mapped[str | None] = mapped_column(String(200))
    importance: Mapped[float] = mapped_column(Float, default=0.5)
    relevance: Mapped[float] = mapped_column(Float, default=1.0)
    access_count: Mapped[int] = mapped_column(Integer, default=0)
    last_accessed_at: Mapped[datetime | None] = mapped_column(TS)
    status: Mapped[str] = mapped_column(String(20), default="active")
    valid_from: Mapped[datetime | None] = mapped_column(TS)
    valid_to: Mapped[datetime | None] = mapped_column(TS)
    supersedes_id: Mapped[int | None] = mapped_column(PK)
    superseded_by_id: Mapped[int | None] = mapped_column(PK)
    source_message_ids: Mapped[list | None] = mapped_column(JSON)
    source_ref: Mapped[str | None] = mapped_column(String(200))
    speaker: Mapped[str | None] = mapped_column(String(200))
    created_by: Mapped[str | None] = mapped_column(String(200), index=True)
    created_at: Mapped[datetime] = mapped_column(TS)
    updated_at: Mapped[datetime] = mapped_column(TS)
    indexed_at: Mapped[datetime | None] = mapped_column(TS)
    # The previous fact of the same scope at insert time (a trigger fills it: migration 0004);
    # recall's neighbour smoothing reads it instead of searching for the neighbours.
    prev_id: Mapped[int | None] = mapped_column(PK, index=True)
    # (subject, attribute) key of a statement, on every version (migration 0005); system time at
    # which the fact stopped being current (world time: valid_from / valid_to).
    attr: Mapped[str | None] = mapped_column(String(200))
    superseded_at: Mapped[datetime | None] = mapped_column(TS)
    __table_args__ = (
        UniqueConstraint("scope_id", "slug", name=t("uq_facts_scope_slug")),
        Index(t("ix_facts_scope_status_created"), "scope_id", "status", "created_at"),
        Index(t("ix_facts_scope_status_id"), "scope_id", "status", "id"),
        Index(t("ix_facts_scope_id"), "scope_id", "id"),
        Index(t("ix_facts_scope_attr"), "scope_id", "attr"),
    )


class EntityRow(Base):
    __tablename__ = t("entities")
    id: Mapped[int] = mapped_column(PK, primary_key=True, autoincrement=True)
    scope_id: Mapped[str] = mapped_column(ForeignKey(t("scopes") + ".id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    norm_name: Mapped[str] = mapped_column(String(200))
    type: Mapped[str] = mapped_column(String(30), default="thing")
    aliases: Mapped[list | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(TS)
    __table_args__ = (UniqueConstraint("scope_id", "norm_name", name=t("uq_entities_scope_name")),)


class FactEntityRow(Base):
    __tablename__ = t("fact_entities")
    fact_id: Mapped[int] = mapped_column(ForeignKey(t("facts") + ".id", ondelete="CASCADE"), primary_key=True)
    entity_id: Mapped[int] = mapped_column(
        ForeignKey(t("entities") + ".id", ondelete="CASCADE"), primary_key=True, index=True
    )
    role: Mapped[str] = mapped_column(String(30), default="mention")


class RelationRow(Base):
    __tablename__ = t("relations")
    id: Mapped[int] = mapped_column(PK, primary_key=True, autoincrement=True)
    scope_id: Mapped[str] = mapped_column(ForeignKey(t("scopes") + ".id", ondelete="CASCADE"))
    source_id: Mapped[int] = mapped_column(ForeignKey(t("entities") + ".id", ondelete="CASCADE"), index=True)
    relation: Mapped[str] = mapped_column(String(100))
    target_id: Mapped[int] = mapped_column(ForeignKey(t("entities") + ".id", ondelete="CASCADE"), index=True)
    fact_id: Mapped[int | None] = mapped_column(ForeignKey(t("facts") + ".id", ondelete="SET NULL"))
    valid_from: Mapped[datetime | None] = mapped_column(TS)
    valid_to: Mapped[datetime | None] = mapped_column(TS)
    created_at: Mapped[datetime] = mapped_column(TS)


class FactHistoryRow(Base):
    __tablename__ = t("fact_history")
    id: Mapped[int] = mapped_column(PK, primary_key=True, autoincrement=True)
    fact_id: Mapped[int] = mapped_column(ForeignKey(t("facts") + ".id", ondelete="CASCADE"), index=True)
    action: Mapped[str] = mapped_column(String(20))
    actor: Mapped[str | None] = mapped_column(String(200))
    at: Mapped[datetime] = mapped_column(TS)
    old_content: Mapped[str | None] = mapped_column(Text)
    new_content: Mapped[str | None] = mapped_column(Text)
    old_status: Mapped[str | None] = mapped_column(String(20))
    new_status: Mapped[str | None] = mapped_column(String(20))


class IndexJobRow(Base):
    """The durable indexing queue: one row per fact whose vector must be (re)written or removed.

    Written in the same transaction as the fact, drained by `storage.indexer.Indexer`; rows left by
    a crash are picked up at the next start."""

    __tablename__ = t("index_jobs")
    id: Mapped[int] = mapped_column(PK, primary_key=True, autoincrement=True)
    fact_id: Mapped[int] = mapped_column(PK, index=True)
    op: Mapped[str] = mapped_column(String(10))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    enqueued_at: Mapped[datetime] = mapped_column(TS)
    # Set while one worker (of any process) embeds the job; an expired lease is claimable again.
    lease_until: Mapped[datetime | None] = mapped_column(TS)


class FactVectorRow(Base):
    """The embedding of a fact's current text, computed once by whichever worker leased its index
    job: `model` and `dim` name the embedder, `vector` holds `dim` little-endian float16 values
    (unit length before rounding), `content_hash` the hash of the text it was computed from (a
    status change re-uses it instead of re-embedding). Every process's local vector index is a
    cache rebuilt from these rows."""

    __tablename__ = t("fact_vectors")
    fact_id: Mapped[int] = mapped_column(ForeignKey(t("facts") + ".id", ondelete="CASCADE"), primary_key=True)
    model: Mapped[str] = mapped_column(String(200))
    dim: Mapped[int] = mapped_column(Integer)
    encoding: Mapped[str] = mapped_column(String(10))
    content_hash: Mapped[str] = mapped_column(String(40))
    vector: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(TS)


class ChangeRow(Base):
    """The change feed: one row per change of a fact's indexed state (op: upsert, supersede,
    forget, purge, vector = its vector was stored), written in the transaction of the change.
    `id` is monotonic; every process tails it from its last applied id to keep its own vector
    index in step (`storage.feed`). Holds no text."""

    __tablename__ = t("changes")
    id: Mapped[int] = mapped_column(PK, primary_key=True, autoincrement=True)
    fact_id: Mapped[int] = mapped_column(PK)
    op: Mapped[str] = mapped_column(String(12))
    created_at: Mapped[datetime] = mapped_column(TS)
    # AUTOINCREMENT on SQLite: an id is never reused, even after the newest rows are pruned.
    __table_args__ = {"sqlite_autoincrement": True}


class SessionRow(Base):
    """A conversation session of one user in one channel (or DM). At most one is open per
    user×channel (partial unique index); activity times live here, not in process memory."""

    __tablename__ = t("sessions")
    id: Mapped[int] = mapped_column(PK, primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(String(200))
    channel_id: Mapped[str] = mapped_column(String(200))
    scope_id: Mapped[str] = mapped_column(ForeignKey(t("scopes") + ".id", ondelete="CASCADE"))
    is_dm: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(20))
    started_at: Mapped[datetime] = mapped_column(TS)
    last_activity_at: Mapped[datetime] = mapped_column(TS)
    closed_at: Mapped[datetime | None] = mapped_column(TS)
    message_count: Mapped[int] = mapped_column(Integer)
    previous_id: Mapped[int | None] = mapped_column(PK)
    summary_fact_id: Mapped[int | None] = mapped_column(PK)
    __table_args__ = (
        Index(t("ix_sessions_user_channel"), "user_id", "channel_id", "started_at"),
        Index(t("ix_sessions_status_activity"), "status", "last_activity_at"),
        Index(
            t("uq_sessions_open"),
            "user_id",
            "channel_id",
            unique=True,
            sqlite_where=text("status = 'open'"),
            postgresql_where=text("status = 'open'"),
        ),
    )


class MemoryJobRow(Base):
    """The durable queue of background memory work (extraction, summaries): written in the same
    transaction as the message it is about, leased by a worker, retried with backoff, and picked up
    again after a crash when its lease runs out. `key` (unique) de-duplicates jobs."""

    __tablename__ = t("memory_jobs")
    id: Mapped[int] = mapped_column(PK, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(30))
    key: Mapped[str | None] = mapped_column(String(200))
    principal: Mapped[str | None] = mapped_column(String(200), index=True)
    payload: Mapped[dict] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(20))
    attempts: Mapped[int] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    run_after: Mapped[datetime] = mapped_column(TS)
    lease_until: Mapped[datetime | None] = mapped_column(TS)
    created_at: Mapped[datetime] = mapped_column(TS)
    updated_at: Mapped[datetime] = mapped_column(TS)
    __table_args__ = (
        UniqueConstraint("key", name=t("uq_memory_jobs_key")),
        Index(t("ix_memory_jobs_status_run"), "status", "run_after", "id"),
    )


class SettingRow(Base):
    """Namespaced settings (Red-DiscordBot's Config idea): (namespace, target, key) → JSON value,
    e.g. ("core", "channel:42", "project") → "falcon". `expires_at` for short-lived values."""

    __tablename__ = t("settings")
    namespace: Mapped[str] = mapped_column(String(100), primary_key=True)
    target: Mapped[str] = mapped_column(String(200), primary_key=True)
    key: Mapped[str] = mapped_column(String(100), primary_key=True)
    value: Mapped[object | None] = mapped_column(JSON)
    expires_at: Mapped[datetime | None] = mapped_column(TS)
    updated_at: Mapped[datetime] = mapped_column(TS)


class SchedulerJobRow(Base):
    """APScheduler's SQLAlchemyJobStore table (plugins' persisted jobs), owned by Alembic here."""

    __tablename__ = t("scheduler_jobs")
    id: Mapped[str] = mapped_column(Unicode(191), primary_key=True)
    next_run_time: Mapped[float | None] = mapped_column(Float(25), index=True)
    job_state: Mapped[bytes] = mapped_column(LargeBinary)


class HandoffRow(Base):
    """A conversation handed from one agent to another (the Engram seed's `handoffs`): who, which
    session, the summary, and the handoff it continues (`parent_id`: the context chain)."""

    __tablename__ = t("handoffs")
    id: Mapped[int] = mapped_column(PK, primary_key=True, autoincrement=True)
    session: Mapped[str] = mapped_column(String(200), index=True)
    from_agent: Mapped[str] = mapped_column(String(200))
    to_agent: Mapped[str] = mapped_column(String(200))
    parent_id: Mapped[int | None] = mapped_column(ForeignKey(t("handoffs") + ".id", ondelete="SET NULL"))
    scope_id: Mapped[str | None] = mapped_column(ForeignKey(t("scopes") + ".id", ondelete="SET NULL"))
    summary: Mapped[str] = mapped_column(Text)
    fact_ids: Mapped[list | None] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(20))
    created_at: Mapped[datetime] = mapped_column(TS)
    picked_up_at: Mapped[datetime | None] = mapped_column(TS)
    __table_args__ = (Index(t("ix_handoffs_to_status"), "to_agent", "status", "id"),)
