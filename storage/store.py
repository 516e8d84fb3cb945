"""`FactStore`: the one async API every part of Clara uses to write and recall memories.

Verbs (mem0-sized): `add`, `add_many`, `upsert` (by slug), `supersede`, `forget`, `purge_user`,
`recall`, plus reads (`get`, `list_facts`, `history`) and maintenance (`reindex`, `decay`,
`drain`). Writes commit to SQL and return; embeddings are computed afterwards by the `Indexer`
from the durable `index_jobs` queue written in the same transaction.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, delete, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from storage import feed, migrate, naming
from storage.clock import Clock, system_clock
from storage.db import Engines, async_url, ephemeral_dir, is_in_memory, make_engines
from storage.embeddings import Embedder, make_embedder
from storage.errors import FactNotFound, InvalidInput, ScopeDenied
from storage.feed import Follower, NodeSlot
from storage.graph import Graph, upsert_entity
from storage.indexer import Indexer
from storage.jobs import JobQueue
from storage.kv import SettingsStore
from storage.models import (
    EntityRow,
    FactEntityRow,
    FactHistoryRow,
    FactRow,
    FactVectorRow,
    IndexJobRow,
    MemoryJobRow,
    MessageRow,
    RelationRow,
    ScopeMemberRow,
    ScopeRow,
    SessionRow,
    SettingRow,
)
from storage.naming import t as tname
from storage.purge import redact_copies as _redact_copies
from storage.recall import Recaller
from storage.redact import Quotes
from storage.sessions import SessionStore, provenance_of
from storage.sqlutil import aware as _aware
from storage.sqlutil import dialect_insert
from storage.text import (
    MAX_FACT_CHARS,
    MAX_NAME_CHARS,
    check_fact_id,
    check_name,
    check_scope_id,
    clean_text,
    norm_name,
    shown,
)
from storage.types import (
    RECORD_KINDS,
    BatchResult,
    Fact,
    FactKind,
    FactStatus,
    HistoryEntry,
    Policy,
    PurgeReport,
    RecallHit,
    Scope,
    ScopeKind,
)
from storage.vectors import EdgeIndex, QdrantServerIndex, VectorIndex, check_qdrant_url

log = logging.getLogger(__name__)

KINDS = frozenset(k.value for k in FactKind)
RECALLED_KINDS = tuple(sorted(KINDS - RECORD_KINDS))  # recall and listings unless `kinds` is given

# Core (not ORM-enabled) statements with parameter dicts: compiled once, cached, and several times
# cheaper per call than `insert(FactRow).values(**values)` on the acknowledgement path.
_FACTS = FactRow.__table__
_INSERT_FACT = _FACTS.insert().returning(_FACTS.c.id)
_INSERT_FACT_MANY = _FACTS.insert().returning(_FACTS.c.id, sort_by_parameter_order=True)
_INSERT_HISTORY = FactHistoryRow.__table__.insert()
_INSERT_INDEX_JOB = IndexJobRow.__table__.insert()
_INSERT_LINK = FactEntityRow.__table__.insert()


@dataclass
class StoreConfig:
    """Where and how the store keeps its data. `database_url=None` = SQLite in `data_dir`."""

    database_url: str | None = None
    data_dir: Path = Path("./data")
    qdrant_url: str | None = None
    qdrant_api_key: str | None = None
    qdrant_collection: str = "clara_facts"
    embedding_provider: str = "local"
    embedding_model: str | None = None
    openai_api_key: str | None = None
    openai_base_url: str | None = None
    cohere_api_key: str | None = None
    cohere_base_url: str | None = None
    embed_threads: int = 1
    auto_migrate: bool = True
    index_batch: int = 256
    # The one clock (storage.clock): every timestamp the store writes or compares comes from it.
    clock: Clock = system_clock
    extra: dict[str, Any] = field(default_factory=dict)


def _discard_result(task: asyncio.Future) -> None:
    """Done-callback for a background load nobody awaits any more: consume its outcome."""
    if not task.cancelled():
        task.exception()


def _fact(row: Any) -> Fact:
    return Fact(
        id=row.id,
        scope_id=row.scope_id,
        content=row.content,
        kind=row.kind,
        status=row.status,
        importance=row.importance,
        relevance=row.relevance,
        access_count=row.access_count,
        created_at=_aware(row.created_at),
        updated_at=_aware(row.updated_at),
        valid_from=_aware(row.valid_from),
        valid_to=_aware(row.valid_to),
        slug=row.slug,
        speaker=row.speaker,
        context=row.context,
        supersedes_id=row.supersedes_id,
        superseded_by_id=row.superseded_by_id,
        source_message_ids=list(row.source_message_ids or []),
        source_ref=row.source_ref,
        created_by=row.created_by,
        indexed_at=_aware(row.indexed_at),
        last_accessed_at=_aware(row.last_accessed_at),
        attr=row.attr,
        superseded_at=_aware(row.superseded_at),
    )


def _importance(value: float | None) -> float:
    if value is None:
        return 0.5
    try:
        v = float(value)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"importance must be a number in [0, 1], got {shown(value)}") from exc
    if not 0.0 <= v <= 1.0:
        raise InvalidInput(f"importance must be in [0, 1], got {v}")
    return v


def _entity_names(items: Sequence[str | tuple[str, str]] | None) -> list[str | tuple[str, str]]:
    """Validate the entities of a fact (names or (name, type) pairs) before anything is written:
    a name longer than MAX_NAME_CHARS, or not text, is refused (InvalidInput), never cut."""
    if items is None:
        return []
    if isinstance(items, str | bytes) or not isinstance(items, Sequence):
        raise InvalidInput(f"entities must be a list of names, got {type(items).__name__}")
    for item in items:
        name = item if isinstance(item, str) else (item[0] if isinstance(item, tuple | list) and item else item)
        check_name(name, "entity name", MAX_NAME_CHARS)
    return list(items)


def _kind(kind: str) -> str:
    k = str(kind).lower()
    if k not in KINDS:
        raise InvalidInput(f"unknown fact kind {shown(kind)} (one of {', '.join(sorted(KINDS))})")
    return k


class FactStore:
    """The shared fact/entity store. Open with `await FactStore.open(config)`; close with `aclose()`.

    Access control: methods that take `actor` check the scope's read/write policy for that
    principal and raise `ScopeDenied`; `actor=None` means trusted internal code. Recall and listing
    always filter by the given scopes inside the SQL and vector queries."""

    def __init__(
        self,
        config: StoreConfig,
        engines: Engines,
        embedder: Embedder,
        index: VectorIndex,
        slot: NodeSlot | None = None,
    ):
        self.config = config
        self.engines = engines
        self.embedder = embedder
        self.index = index
        self.slot = slot
        self.dialect = engines.dialect
        self.clock: Clock = config.clock
        # The follower applies the change feed (every process's writes, and this process's
        # indexer's vectors) to the local index; the indexer embeds and stores vectors in SQL.
        self.feed = Follower(
            engines,
            index,
            model=embedder.name,
            dim=embedder.dim,
            slot=slot,
            poll=float(config.extra.get("feed_poll", 0.2)),
            listen_poll=float(config.extra.get("feed_listen_poll", 2.0)),
            clock=self.clock,
        )
        self.indexer = Indexer(
            engines,
            embedder,
            index,
            batch=config.index_batch,
            clock=self.clock,
            lease=float(config.extra.get("index_lease", 60.0)),
            after_commit=self.feed.catch_up,
        )
        self.feed.on_missing = self.indexer.notify
        self.recaller = Recaller(self)
        self.jobs = JobQueue(engines, clock=self.clock)
        self.sessions = SessionStore(engines, self.jobs)
        self.settings = SettingsStore(engines, self.clock)
        self.graph = Graph(engines, self.clock)
        self._access: Counter[int] = Counter()
        self._tasks: list[asyncio.Task] = []
        self._closed = False
        self._ephemeral: Path | None = None  # the private directory of an in-memory store

    # ------------------------------------------------------------------ lifecycle
    @classmethod
    async def open(
        cls,
        config: StoreConfig | None = None,
        *,
        embedder: Embedder | None = None,
        index: VectorIndex | None = None,
        start_indexer: bool = True,
    ) -> FactStore:
        """Open (and by default migrate) the store described by `config`.

        `index`: a vector index to use instead of the one `config` names (e.g. one
        `QdrantServerIndex` client shared by several stores in a process); the store closes it.

        Starts the background indexer, which first finishes any jobs left by an earlier process.
        Raises sqlalchemy errors if the database is unreachable; ValueError for a bad config
        (including an invalid `CLARA_TABLE_PREFIX`, see storage/naming.py)."""
        config = config or StoreConfig()
        if config.qdrant_url and index is None:
            check_qdrant_url(config.qdrant_url)  # a bad setting fails before anything is opened
        naming.check_configured()
        data_dir = Path(config.data_dir)
        ephemeral = None
        if is_in_memory(config.database_url):  # sqlite:///:memory: — gone when the store closes
            ephemeral = data_dir = ephemeral_dir()
            url = async_url(None, data_dir)
        else:
            data_dir.mkdir(parents=True, exist_ok=True)
            url = async_url(config.database_url, data_dir)
        loading = None
        if embedder is None:
            # A local model loads on a worker thread (the store opens, and commands are answered,
            # meanwhile; the first embedding waits for it); a cloud client is built while the
            # schema is checked.
            make = functools.partial(
                make_embedder,
                config.embedding_provider,
                model=config.embedding_model,
                openai_api_key=config.openai_api_key,
                openai_base_url=config.openai_base_url,
                cohere_api_key=config.cohere_api_key,
                cohere_base_url=config.cohere_base_url,
                threads=config.embed_threads,
            )
            if config.embedding_provider == "local":
                embedder = make(background=True)
            else:
                loading = asyncio.ensure_future(asyncio.to_thread(make))
        try:
            if config.auto_migrate:
                await asyncio.to_thread(migrate.upgrade, url)
        except BaseException:
            if loading is not None:
                loading.add_done_callback(_discard_result)
            raise
        engines = make_engines(url)
        if loading is not None:
            try:
                embedder = await loading
            except BaseException:
                await engines.dispose()
                raise
        # With a table prefix the collection and the local index folder carry it too, so stores
        # sharing one database (and data dir) under different prefixes never share an index.
        collection = tname(f"{config.qdrant_collection}_{embedder.name}")
        # Each process gets an index folder (and feed position) of its own, the lowest free one:
        # a restarted process finds its predecessor's index and only catches up.
        shared = bool(config.qdrant_url) if index is None else index.shared
        local = tname(f"{embedder.name}-{embedder.dim}")
        root = data_dir / "index" / (f"qdrant-{collection}" if shared else local)
        slot = await asyncio.to_thread(NodeSlot.acquire, root)
        try:
            if index is not None:
                pass
            elif config.qdrant_url:
                index = QdrantServerIndex(config.qdrant_url, collection, embedder.dim, config.qdrant_api_key)
            else:
                index = await asyncio.to_thread(EdgeIndex, slot.path, embedder.dim)
        except BaseException:
            slot.release()
            await engines.dispose()
            raise
        store = cls(config, engines, embedder, index, slot=slot)
        store._ephemeral = ephemeral
        try:
            await store.feed.open()
        except BaseException:
            await store.aclose()
            raise
        if start_indexer:
            store.start()
        return store

    def start(self) -> None:
        """Start the background indexer and access-count flusher (idempotent)."""
        if not self._tasks:
            self._tasks = [
                asyncio.create_task(self.indexer.run(), name="clara-indexer"),
                asyncio.create_task(self.feed.run(), name="clara-feed"),
                asyncio.create_task(self._access_flusher(), name="clara-access-flush"),
            ]

    async def aclose(self) -> None:
        """Stop background work (pending jobs stay queued in SQL) and release files/connections."""
        if self._closed:
            return
        self._closed = True
        self.indexer.stop()
        self.feed.stop()
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            try:
                await t
            except (asyncio.CancelledError, Exception):
                pass
        try:
            await self._flush_access()
            await self.index.close()
            await self.engines.dispose()
        finally:
            if self.slot is not None:
                self.slot.release()
            if self._ephemeral is not None:
                import shutil

                await asyncio.to_thread(shutil.rmtree, self._ephemeral, True)

    async def __aenter__(self) -> FactStore:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()

    async def drain(self, timeout: float = 300.0) -> None:
        """Wait until every queued indexing job is done (by any process) and this process's index
        has applied every change committed so far. Raises TimeoutError after `timeout` s."""
        deadline = time.monotonic() + timeout
        await self.indexer.drain(timeout)
        while True:
            try:
                await self.feed.catch_up()
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                log.warning("applying the change feed failed; retrying", exc_info=True)
                await asyncio.sleep(0.1)

    def _changed(self) -> None:
        """This process committed a fact change: wake the indexer and the feed follower."""
        self.indexer.notify()
        self.feed.wake()

    # ------------------------------------------------------------------ scopes
    async def ensure_scope(
        self,
        scope_id: str,
        kind: str | ScopeKind,
        *,
        name: str | None = None,
        owner: str | None = None,
        read_policy: str | Policy | None = None,
        write_policy: str | Policy | None = None,
        members: Iterable[str] = (),
    ) -> Scope:
        """Create the scope if missing (existing scopes keep their policy) and add `members`.

        Default policies: user and agent scopes are owner-only; channel/guild/project scopes are
        members-only; public scopes are readable by anyone and writable by members."""
        check_scope_id(scope_id)
        kind = ScopeKind(kind).value
        default_read = {"user": "owner", "agent": "owner", "public": "public"}.get(kind, "members")
        default_write = {"user": "owner", "agent": "owner"}.get(kind, "members")
        rp = Policy(read_policy or default_read).value
        wp = Policy(write_policy or default_write).value
        members = list(dict.fromkeys(members))
        # Fast path (every message calls this): nothing to write → no write transaction.
        try:
            known = await self.get_scope(scope_id)
        except InvalidInput:
            known = None
        if known is not None and set(members) <= set(known.members):
            return known
        async with self.engines.writer.begin() as conn:
            row = (await conn.execute(select(ScopeRow).where(ScopeRow.id == scope_id))).first()
            if row is None:  # ON CONFLICT DO NOTHING: two first messages may race to create it
                await conn.execute(
                    dialect_insert(self.dialect, ScopeRow)
                    .values(
                        id=scope_id,
                        kind=kind,
                        name=name or scope_id,
                        owner=owner,
                        read_policy=rp,
                        write_policy=wp,
                        created_at=self.clock(),
                    )
                    .on_conflict_do_nothing(index_elements=["id"])
                )
            existing = set(
                (await conn.execute(select(ScopeMemberRow.principal).where(ScopeMemberRow.scope_id == scope_id)))
                .scalars()
                .all()
            )
            new = [m for m in dict.fromkeys(members) if m not in existing]
            if new:
                await conn.execute(
                    dialect_insert(self.dialect, ScopeMemberRow).on_conflict_do_nothing(
                        index_elements=["scope_id", "principal"]
                    ),
                    [{"scope_id": scope_id, "principal": m, "can_write": 1} for m in new],
                )
        return await self.get_scope(scope_id)

    async def get_scope(self, scope_id: str) -> Scope:
        """The scope `scope_id` with its policies and members. Raises InvalidInput if unknown."""
        async with self.engines.reader.connect() as conn:
            return await conn.run_sync(self._scope, scope_id)

    @staticmethod
    def _scope(conn: Connection, scope_id: str) -> Scope:
        row = conn.execute(select(ScopeRow).where(ScopeRow.id == scope_id)).first()
        if row is None:
            raise InvalidInput(f"unknown scope {shown(scope_id)}")
        rows = conn.execute(
            select(ScopeMemberRow.principal, ScopeMemberRow.can_write).where(ScopeMemberRow.scope_id == scope_id)
        ).all()
        return Scope(
            row.id,
            row.kind,
            row.name,
            row.owner,
            row.read_policy,
            row.write_policy,
            tuple(r.principal for r in rows),
            tuple(r.principal for r in rows if r.can_write == 0),
        )

    @staticmethod
    def _allowed(scope: Scope, actor: str, policy: str, write: bool = False) -> bool:
        if actor == scope.owner:
            return True
        if write and actor in scope.read_only:
            return False
        if policy == "public":
            return True
        return policy == "members" and actor in scope.members

    async def set_member(self, scope_id: str, principal: str, *, write: bool, actor: str) -> Scope:
        """Add `principal` to the scope (or change its access): read only, or read and write.
        Only the scope's owner may (ScopeDenied otherwise; InvalidInput for an unknown scope)."""
        check_scope_id(scope_id)
        check_name(principal, "member", 200)
        async with self.engines.writer.begin() as conn:
            scope = await conn.run_sync(self._scope, scope_id)
            if scope.owner is None or scope.owner != actor:
                raise ScopeDenied(f"{actor} does not own scope {scope_id}")
            if principal == scope.owner:
                raise InvalidInput(f"{principal} owns scope {scope_id}: it always reads and writes it")
            if principal in scope.members:
                await conn.execute(
                    update(ScopeMemberRow)
                    .where(ScopeMemberRow.scope_id == scope_id, ScopeMemberRow.principal == principal)
                    .values(can_write=int(write))
                )
            else:
                await conn.execute(
                    ScopeMemberRow.__table__.insert().values(
                        scope_id=scope_id, principal=principal, can_write=int(write)
                    )
                )
        return await self.get_scope(scope_id)

    async def remove_member(self, scope_id: str, principal: str, *, actor: str) -> Scope:
        """Remove `principal` from the scope's members (owner only, as `set_member`)."""
        check_scope_id(scope_id)
        async with self.engines.writer.begin() as conn:
            scope = await conn.run_sync(self._scope, scope_id)
            if scope.owner is None or scope.owner != actor:
                raise ScopeDenied(f"{actor} does not own scope {scope_id}")
            if principal == scope.owner:
                raise InvalidInput(f"{principal} owns scope {scope_id}: the owner cannot be removed")
            await conn.execute(
                delete(ScopeMemberRow).where(ScopeMemberRow.scope_id == scope_id, ScopeMemberRow.principal == principal)
            )
        return await self.get_scope(scope_id)

    async def readable_scopes(self, actor: str) -> list[str]:
        """Every scope id `actor` may read: owned, member-of (members policy) and public scopes."""
        async with self.engines.reader.connect() as conn:
            member_of = select(ScopeMemberRow.scope_id).where(ScopeMemberRow.principal == actor)
            rows = await conn.execute(
                select(ScopeRow.id).where(
                    or_(
                        ScopeRow.read_policy == "public",
                        ScopeRow.owner == actor,
                        (ScopeRow.read_policy == "members") & ScopeRow.id.in_(member_of),
                    )
                )
            )
            return sorted(rows.scalars().all())

    async def check_access(self, scope_ids: Sequence[str], actor: str | None, *, write: bool = False) -> None:
        """Raise ScopeDenied unless `actor` may read (or write) every scope; InvalidInput if unknown."""
        if actor is None:
            return
        ids = [check_scope_id(sid) for sid in scope_ids]
        async with self.engines.reader.connect() as conn:
            for sid in ids:
                await conn.run_sync(self._check_in_tx, sid, actor, write)

    # ------------------------------------------------------------------ writes
    def _fact_values(
        self,
        scope_id: str,
        content: str,
        *,
        kind: str,
        slug: str | None,
        importance: float | None,
        speaker: str | None,
        context: str | None,
        source_message_ids: Sequence[int] | None,
        source_ref: str | None,
        created_by: str | None,
        valid_from: datetime | None,
        now: datetime,
        attr: str | None = None,
    ) -> dict:
        check_scope_id(scope_id)
        return dict(
            attr=clean_text(attr, "attribute key", 200) if attr is not None else None,
            scope_id=scope_id,
            content=clean_text(content, "fact", MAX_FACT_CHARS),
            context=clean_text(context, "context", MAX_FACT_CHARS) if context else None,
            kind=_kind(kind),
            slug=clean_text(slug, "slug", 200) if slug is not None else None,
            importance=_importance(importance),
            relevance=1.0,
            access_count=0,
            status=FactStatus.ACTIVE.value,
            valid_from=valid_from or now,
            source_message_ids=[int(i) for i in source_message_ids] if source_message_ids else None,
            source_ref=source_ref,
            speaker=speaker,
            created_by=created_by,
            created_at=now,
            updated_at=now,
        )

    async def add(
        self,
        content: str,
        scope_id: str,
        *,
        kind: str = "observation",
        importance: float | None = None,
        speaker: str | None = None,
        context: str | None = None,
        entities: Sequence[str | tuple[str, str]] = (),
        source_message_ids: Sequence[int] | None = None,
        source_ref: str | None = None,
        created_by: str | None = None,
        valid_from: datetime | None = None,
        actor: str | None = None,
        slug: str | None = None,
        attr: str | None = None,
    ) -> int:
        """Store one fact and return its id once committed (p95 ~1-3 ms on SQLite).

        The embedding is computed afterwards from the durable queue; until then the fact is found
        lexically. `entities` are names or (name, type) pairs linked to the fact (created in the
        scope if new). `attr` is the statement's (subject, attribute) key ("alice/residence"), kept
        on every later version so the attribute's past stays askable. With `slug`, the add is
        idempotent: if the scope already has a fact with that slug, its id is returned and nothing
        is written (use `upsert` to replace text).
        Raises InvalidInput (bad text, kind, importance or unknown scope) or ScopeDenied."""
        now = self.clock()
        values = self._fact_values(
            scope_id,
            content,
            kind=kind,
            slug=slug,
            importance=importance,
            speaker=speaker,
            context=context,
            source_message_ids=source_message_ids,
            source_ref=source_ref,
            created_by=created_by or actor,
            valid_from=valid_from,
            now=now,
            attr=attr,
        )
        entities = _entity_names(entities)

        def write(conn: Connection) -> tuple[int, bool]:
            self._check_in_tx(conn, scope_id, actor, True)
            if slug is not None:
                existing = self._slug_id(conn, scope_id, values["slug"])
                if existing is not None:
                    return existing, False
            fact_id = conn.execute(_INSERT_FACT, values).scalar_one()
            self._after_insert(conn, [fact_id], [values], actor, now)
            if entities:
                self._link_entities(conn, fact_id, scope_id, entities, now)
            return fact_id, True

        try:
            fact_id, added = await self.engines.run_write(write)
        except IntegrityError as exc:
            if slug is not None:  # a concurrent writer added the same slug first (PostgreSQL)
                async with self.engines.reader.connect() as conn:
                    existing = await conn.run_sync(self._slug_id, scope_id, values["slug"])
                if existing is not None:
                    return existing
            raise InvalidInput(f"unknown scope {shown(scope_id)}") from exc
        if added:
            self._changed()
        return fact_id

    @staticmethod
    def _slug_id(conn: Connection, scope_id: str, slug: str) -> int | None:
        q = select(FactRow.id).where(FactRow.scope_id == scope_id, FactRow.slug == slug)
        return conn.execute(q).scalar()

    async def find_slug(self, scope_id: str, slug: str) -> Fact | None:
        """The fact holding `slug` in `scope_id` (active, or None)."""
        async with self.engines.reader.connect() as conn:
            row = (
                await conn.execute(select(FactRow).where(FactRow.scope_id == scope_id, FactRow.slug == slug))
            ).first()
        return _fact(row) if row is not None else None

    async def facts_by_slugs(self, scope_ids: Sequence[str], slugs: Sequence[str]) -> list[Fact]:
        """The facts holding any of `slugs` in `scope_ids` (any status but deleted), by id."""
        if not scope_ids or not slugs:
            return []
        async with self.engines.reader.connect() as conn:
            rows = (
                await conn.execute(
                    select(FactRow)
                    .where(
                        FactRow.scope_id.in_(list(scope_ids)),
                        FactRow.slug.in_(list(slugs)[:500]),
                        FactRow.status != "deleted",
                    )
                    .order_by(FactRow.id)
                )
            ).all()
        return [_fact(r) for r in rows]

    @staticmethod
    def _after_insert(conn: Connection, ids: list[int], values: list[dict], actor: str | None, now: datetime) -> None:
        conn.execute(
            _INSERT_HISTORY,
            [
                {
                    "fact_id": i,
                    "action": "add",
                    "actor": actor or v.get("created_by"),
                    "at": now,
                    "old_content": None,
                    "new_content": v["content"],
                    "old_status": None,
                    "new_status": "active",
                }
                for i, v in zip(ids, values, strict=True)
            ],
        )
        FactStore._enqueue(conn, ids, "upsert", now)

    async def add_many(self, items: Sequence[dict], scope_id: str, *, actor: str | None = None) -> BatchResult:
        """Store many facts in one transaction. Each item is a dict of `add`'s keyword arguments
        plus `content`; an item with a `slug` is an `upsert` (the scope's fact with that slug is
        updated in place, never duplicated — a slug given twice in one batch: the later item wins).
        Invalid items are reported ({index, slug?, error}) and skipped; valid ones are saved.
        Returns BatchResult with `ids` aligned to `items` (None where failed) and, for slug items,
        `outcomes` ("added" | "updated" | "unchanged")."""
        await self.check_access([scope_id], actor, write=True)
        await self.get_scope(scope_id)
        now = self.clock()
        result = BatchResult(ids=[None] * len(items))
        good: list[tuple[int, dict, Sequence[str]]] = []
        keyed: list[tuple[int, dict, Sequence[str]]] = []
        for i, item in enumerate(items):
            slug = item.get("slug") if isinstance(item, dict) else None
            try:
                if not isinstance(item, dict):
                    raise InvalidInput("item must be a mapping with 'content'")
                unknown = set(item) - {
                    "content",
                    "kind",
                    "importance",
                    "speaker",
                    "context",
                    "entities",
                    "source_message_ids",
                    "source_ref",
                    "created_by",
                    "valid_from",
                    "slug",
                }
                if unknown:
                    raise InvalidInput(f"unknown fields: {', '.join(sorted(unknown))}")
                if slug is not None and (not isinstance(slug, str) or not slug.strip()):
                    raise InvalidInput("slug must be non-empty text")
                values = self._fact_values(
                    scope_id,
                    item.get("content"),
                    kind=item.get("kind", "observation"),
                    slug=slug.strip() if slug is not None else None,
                    importance=item.get("importance"),
                    speaker=item.get("speaker"),
                    context=item.get("context"),
                    source_message_ids=item.get("source_message_ids"),
                    source_ref=item.get("source_ref"),
                    created_by=item.get("created_by") or actor,
                    valid_from=item.get("valid_from"),
                    now=now,
                )
                (keyed if slug is not None else good).append((i, values, _entity_names(item.get("entities") or ())))
            except (InvalidInput, TypeError, ValueError) as exc:
                result.failed += 1
                err = {"index": i, "error": str(exc)}
                if isinstance(slug, str):
                    err["slug"] = shown(slug)
                result.errors.append(err)
        if good or keyed:

            def write(conn: Connection) -> tuple[list[int], list[tuple[int, str]]]:
                rows = [v for _, v, _ in good]
                ids = list(conn.execute(_INSERT_FACT_MANY, rows).scalars().all()) if rows else []
                if rows:
                    self._after_insert(conn, ids, rows, actor, now)
                cache: dict[str, int] = {}
                for fid, (_, _, ents) in zip(ids, good, strict=True):
                    if ents:
                        self._link_entities(conn, fid, scope_id, ents, now, cache)
                done = [self._upsert_tx(conn, scope_id, v, ents, actor, now) for _, v, ents in keyed]
                return ids, done

            ids, done = await self.engines.run_write(write)
            for (i, _, _), fid in zip(good, ids, strict=True):
                result.ids[i] = fid
            for (i, _, _), (fid, outcome) in zip(keyed, done, strict=True):
                result.ids[i] = fid
                result.outcomes[i] = outcome
            result.saved = len(ids) + len(done)
            self._changed()
        return result

    def _upsert_tx(
        self,
        conn: Connection,
        scope_id: str,
        values: dict,
        entities: Sequence[str | tuple[str, str]],
        actor: str | None,
        now: datetime,
    ) -> tuple[int, str]:
        """The keyed write inside a transaction: insert the slug's fact, or update it in place."""
        q = select(FactRow).where(FactRow.scope_id == scope_id, FactRow.slug == values["slug"])
        if self.dialect == "postgresql":
            q = q.with_for_update()
        row = conn.execute(q).first()
        if row is None:
            fid = conn.execute(_INSERT_FACT, values).scalar_one()
            self._after_insert(conn, [fid], [values], actor, now)
            if entities:
                self._link_entities(conn, fid, scope_id, entities, now)
            return fid, "added"
        if (
            row.content == values["content"]
            and row.status == "active"
            and row.kind == values["kind"]
            and row.importance == values["importance"]
            and row.context == values["context"]
        ):
            return row.id, "unchanged"
        conn.execute(
            update(FactRow)
            .where(FactRow.id == row.id)
            .values(
                content=values["content"],
                kind=values["kind"],
                importance=values["importance"],
                context=values["context"],
                status="active",
                valid_to=None,
                updated_at=now,
            )
        )
        self._history(conn, row.id, "update", actor, now, row.content, values["content"], row.status, "active")
        self._enqueue(conn, [row.id], "upsert", now)
        return row.id, "updated"

    async def upsert(
        self,
        slug: str,
        content: str,
        scope_id: str,
        *,
        kind: str = "observation",
        importance: float | None = None,
        actor: str | None = None,
        source_message_ids: Sequence[int] | None = None,
        speaker: str | None = None,
        context: str | None = None,
        source_ref: str | None = None,
        created_by: str | None = None,
        entities: Sequence[str | tuple[str, str]] = (),
    ) -> tuple[int, str]:
        """Keyed write (seed 002's brain pattern): the fact with `slug` in `scope_id` is created or
        updated in place (old text kept in history). Safe under concurrent writers: exactly one
        fact per (scope, slug). `entities` are linked when the fact is created.
        Returns (fact id, "added" | "updated" | "unchanged")."""
        await self.check_access([scope_id], actor, write=True)
        slug = clean_text(slug, "slug", 200)
        now = self.clock()
        values = self._fact_values(
            scope_id,
            content,
            kind=kind,
            slug=slug,
            importance=importance,
            speaker=speaker,
            context=context,
            source_message_ids=source_message_ids,
            source_ref=source_ref,
            created_by=created_by or actor,
            valid_from=None,
            now=now,
        )
        entities = _entity_names(entities)

        def write(conn: Connection) -> tuple[int, str]:
            return self._upsert_tx(conn, scope_id, values, entities, actor, now)

        for _attempt in range(8):
            try:
                fid, outcome = await self.engines.run_write(write)
                if outcome != "unchanged":
                    self._changed()
                return fid, outcome
            except IntegrityError:
                # A concurrent writer inserted the same slug first (PostgreSQL): retry as an update.
                await asyncio.sleep(0.005)
        raise InvalidInput(f"could not upsert slug {shown(slug)}: too much contention")

    async def supersede(
        self,
        fact_id: int | str,
        new_content: str,
        *,
        actor: str | None = None,
        kind: str | None = None,
        importance: float | None = None,
        source_message_ids: Sequence[int] | None = None,
        context: str | None = None,
        valid_from: datetime | None = None,
        attr: str | None = None,
        speaker: str | None = None,
    ) -> int:
        """Replace an active fact with a new one, bi-temporally: the old fact stays (status
        superseded, world-time `valid_to` = the new fact's `valid_from` (default now), system-time
        `superseded_at` = now, `superseded_by_id` set); the new fact points back via supersedes_id
        and takes over the slug and the attribute key (`attr` overrides it). Nothing is deleted.
        Returns the new fact id. Raises FactNotFound, InvalidInput (not active), ScopeDenied."""
        fid = check_fact_id(fact_id)
        now = self.clock()
        since = valid_from or now

        def write(conn: Connection) -> int:
            old = conn.execute(select(FactRow).where(FactRow.id == fid)).first()
            if old is None or old.status == "deleted":
                raise FactNotFound(f"no fact #{fid}")
            self._check_in_tx(conn, old.scope_id, actor, True)
            if old.status != "active":
                raise InvalidInput(f"fact #{fid} is already superseded by #{old.superseded_by_id}")
            values = self._fact_values(
                old.scope_id,
                new_content,
                kind=kind or old.kind,
                slug=None,
                importance=old.importance if importance is None else importance,
                speaker=speaker or old.speaker,
                context=context,
                source_message_ids=source_message_ids,
                source_ref=old.source_ref,
                created_by=actor or old.created_by,
                valid_from=since,
                now=now,
                attr=attr or old.attr,
            )
            conn.execute(
                update(FactRow)
                .where(FactRow.id == fid)
                .values(status="superseded", valid_to=since, superseded_at=now, updated_at=now, slug=None)
            )
            values.update(supersedes_id=fid, slug=old.slug)
            new_id = conn.execute(_INSERT_FACT, values).scalar_one()
            conn.execute(update(FactRow).where(FactRow.id == fid).values(superseded_by_id=new_id))
            self._after_insert(conn, [new_id], [values], actor, now)
            self._history(conn, fid, "supersede", actor, now, old.content, values["content"], "active", "superseded")
            self._enqueue(conn, [fid], "upsert", now, change="supersede")
            links = conn.execute(select(FactEntityRow).where(FactEntityRow.fact_id == fid)).all()
            if links:
                conn.execute(
                    _INSERT_LINK, [{"fact_id": new_id, "entity_id": r.entity_id, "role": r.role} for r in links]
                )
            return new_id

        new_id = await self.engines.run_write(write)
        self._changed()
        return new_id

    async def outdate(self, fact_ids: Sequence[int], *, until: datetime, by_fact_id: int | None = None) -> int:
        """Mark facts that stay active as no longer true from `until` (world time) — e.g. the raw
        turns a superseded statement was extracted from: kept for history and provenance, ranked
        after current facts and labelled by recall (`RecallHit.current`). Facts already ended
        earlier keep their end. Returns how many were marked."""
        ids = [check_fact_id(i) for i in fact_ids]
        if not ids:
            return 0
        now = self.clock()

        def write(conn: Connection) -> int:
            live = (
                conn.execute(
                    select(FactRow.id).where(
                        FactRow.id.in_(ids),
                        FactRow.status == "active",
                        or_(FactRow.valid_to.is_(None), FactRow.valid_to > until),
                    )
                )
                .scalars()
                .all()
            )
            if live:
                conn.execute(
                    update(FactRow)
                    .where(FactRow.id.in_(live))
                    .values(valid_to=until, superseded_at=now, superseded_by_id=by_fact_id, updated_at=now)
                )
            for i in live:
                self._history(conn, i, "outdate", None, now, None, None, "active", "active")
            return len(live)

        return await self.engines.run_write(write)

    async def forget(
        self, fact_id: int | str, *, actor: str | None = None, scopes: Sequence[str] | None = None
    ) -> Fact:
        """Soft-delete a fact: status deleted, excluded from recall, vector removed, history kept.
        With `scopes`, the fact must be in one of them (else FactNotFound, revealing nothing).
        Returns the fact as it was. Raises FactNotFound, ScopeDenied."""
        fid = check_fact_id(fact_id)
        now = self.clock()

        def write(conn: Connection):
            row = conn.execute(select(FactRow).where(FactRow.id == fid)).first()
            if row is None or row.status == "deleted" or (scopes is not None and row.scope_id not in scopes):
                raise FactNotFound(f"no fact #{fid}")
            self._check_in_tx(conn, row.scope_id, actor, True)
            conn.execute(
                update(FactRow)
                .where(FactRow.id == fid)
                .values(status="deleted", valid_to=now, updated_at=now, slug=None)
            )
            self._history(conn, fid, "forget", actor, now, row.content, None, row.status, "deleted")
            self._enqueue(conn, [fid], "delete", now, change="forget")
            return row

        row = await self.engines.run_write(write)
        self._changed()
        return _fact(row)

    async def purge_user(self, principal: str, *, extra_texts: Sequence[str] = (), compact: bool = True) -> PurgeReport:
        """Erase a user for real, in ONE transaction: scopes they own (with all facts, messages,
        sessions, entities, history), facts they created and messages they sent elsewhere, their
        sessions and the bot's replies in them, relations drawn from their facts, entities only
        their facts named, aliases in their name, their memberships, settings, queued jobs and
        their name as a history actor. Copies of their words in text machines wrote elsewhere are
        cut out (`storage.redact`): bot replies in other people's conversations (using the
        replies' recorded provenance), summaries, agents' facts, facts' context and history;
        proactive messages sent only about them are deleted. `extra_texts` are more of their words
        to look for (their plugin data). Then their vectors go, and with `compact` the deleted
        bytes are made physically gone (`compact`). Irreversible; running it again is harmless.

        Returns a PurgeReport (counts; `redacted` = other rows whose text was cut). Raises
        InvalidInput for a bad id."""
        principal = clean_text(principal, "user id", 200)
        report, vector_ids = await self.engines.run_write(self._purge_in_tx, principal, list(extra_texts))
        try:
            await self.index.delete(vector_ids)
            report.vectors = len(vector_ids)
        except Exception:  # the queued delete jobs will retry
            log.exception("vector delete during purge failed; queued for retry")
        self.embedder.clear_cache()  # query texts (their messages were recall queries)
        if compact:
            await self.compact()
        self._changed()
        return report

    def _purge_in_tx(self, conn: Connection, principal: str, extra_texts: list[str]) -> tuple[PurgeReport, list[int]]:
        report = PurgeReport()
        owned_rows = conn.execute(select(ScopeRow.id, ScopeRow.kind, ScopeRow.name).where(ScopeRow.owner == principal))
        owned_rows = owned_rows.all()
        owned = [r.id for r in owned_rows]
        facts = conn.execute(
            select(FactRow.id, FactRow.content, FactRow.speaker).where(
                or_(FactRow.scope_id.in_(owned), FactRow.created_by == principal)
            )
        ).all()
        fact_ids = [r.id for r in facts]
        theirs = {r.id: r.content for r in facts}
        # Everything they said or owned, to find copies of it in text machines wrote from it.
        texts = [r.content for r in facts] + list(extra_texts)
        for chunk in _chunks(fact_ids, 500):
            for r in conn.execute(
                select(FactHistoryRow.old_content, FactHistoryRow.new_content).where(FactHistoryRow.fact_id.in_(chunk))
            ):
                texts += [t for t in r if t]
                report.history += 1
        said = or_(MessageRow.speaker_id == principal, MessageRow.scope_id.in_(owned))
        names = {principal} | {r.speaker for r in facts if r.speaker} | {r.name for r in owned_rows if r.kind == "user"}
        for r in conn.execute(select(MessageRow.content, MessageRow.speaker).where(said, MessageRow.role == "user")):
            texts.append(r.content)
            names.add(r.speaker)
        report.facts = len(fact_ids)
        # Graph: relations drawn from their facts go; entities their facts named are candidates
        # for removal (kept if anyone else's fact or relation still names them).
        named: set[int] = set()
        for chunk in _chunks(fact_ids, 500):
            named.update(
                conn.execute(select(FactEntityRow.entity_id).where(FactEntityRow.fact_id.in_(chunk))).scalars()
            )
            for r in conn.execute(
                select(RelationRow.source_id, RelationRow.target_id).where(RelationRow.fact_id.in_(chunk))
            ):
                named.update(r)
            conn.execute(delete(RelationRow).where(RelationRow.fact_id.in_(chunk)))
        sessions = select(SessionRow.id).where(or_(SessionRow.user_id == principal, SessionRow.scope_id.in_(owned)))
        report.messages = conn.execute(
            delete(MessageRow).where(or_(said, MessageRow.session_id.in_(sessions)))  # the bot's replies to them too
        ).rowcount
        conn.execute(delete(SessionRow).where(SessionRow.id.in_(sessions)))
        # Pending background work about them must not re-create what is being erased.
        conn.execute(delete(MemoryJobRow).where(MemoryJobRow.principal == principal))
        conn.execute(delete(SettingRow).where(SettingRow.target.in_([principal, *owned])))
        report.entities = conn.execute(delete(EntityRow).where(EntityRow.scope_id.in_(owned))).rowcount
        for chunk in _chunks(fact_ids, 500):
            conn.execute(delete(FactRow).where(FactRow.id.in_(chunk)))
        linked = select(FactEntityRow.entity_id)
        related = select(RelationRow.source_id).union(select(RelationRow.target_id))
        for chunk in _chunks(sorted(named), 500):
            report.entities += conn.execute(
                delete(EntityRow).where(
                    EntityRow.id.in_(chunk), EntityRow.id.not_in(linked), EntityRow.id.not_in(related)
                )
            ).rowcount
        conn.execute(delete(ScopeMemberRow).where(ScopeMemberRow.principal == principal))
        conn.execute(update(FactHistoryRow).where(FactHistoryRow.actor == principal).values(actor=None))
        report.scopes = conn.execute(delete(ScopeRow).where(ScopeRow.id.in_(owned))).rowcount
        changed = _redact_copies(conn, report, principal, Quotes(texts), theirs, names)
        now = self.clock()
        for chunk in _chunks(fact_ids, 500):
            self._enqueue(conn, chunk, "delete", now, change="purge")
        for chunk in _chunks(changed, 500):
            self._enqueue(conn, chunk, "upsert", now)  # re-embedded from the redacted text
        return report, fact_ids + changed

    async def erase(self, fact_ids: Sequence[int]) -> int:
        """Hard-delete facts with their history, links and vectors (for derived text that may
        quote an erased user, e.g. a channel summary). Returns how many were erased."""
        ids = [check_fact_id(i) for i in fact_ids]
        if not ids:
            return 0
        async with self.engines.writer.begin() as conn:
            await conn.execute(delete(FactHistoryRow).where(FactHistoryRow.fact_id.in_(ids)))
            n = (await conn.execute(delete(FactRow).where(FactRow.id.in_(ids)))).rowcount
            await conn.run_sync(self._enqueue, ids, "delete", self.clock(), "purge")
        self._changed()
        return n

    async def erase_user_in(self, principal: str, scope_ids: Sequence[str]) -> PurgeReport:
        """Erase what `principal` said in the given (shared) scopes only: their facts (with
        history and vectors) and raw messages there. Their private scope is untouched."""
        principal = clean_text(principal, "user id", 200)
        report = PurgeReport()
        scopes = [check_scope_id(s) for s in scope_ids]
        if not scopes:
            return report
        async with self.engines.writer.begin() as conn:
            ids = (
                (
                    await conn.execute(
                        select(FactRow.id).where(FactRow.scope_id.in_(scopes), FactRow.created_by == principal)
                    )
                )
                .scalars()
                .all()
            )
            report.messages = (
                await conn.execute(
                    delete(MessageRow).where(MessageRow.scope_id.in_(scopes), MessageRow.speaker_id == principal)
                )
            ).rowcount
        report.facts = await self.erase(ids)
        report.vectors = len(ids)
        await self.compact()
        return report

    async def compact(self) -> None:
        """Make deleted text physically gone (run after a purge): merge the full-text index's
        segments (deleted entries dropped), then on SQLite VACUUM (rebuilds the file: no free
        page, no stale cell left by a delete or a page rebalance keeps old bytes — neither
        `secure_delete=FAST` nor `ON` guarantees that) and truncate the WAL; on PostgreSQL VACUUM
        the text-bearing tables; and rewrite the embedded vector index without its deleted points
        (their vectors, payloads and WAL entries). Waits (up to 60 s) for queued vector jobs first,
        so the deletes a purge queued are applied. Cost on SQLite: ~1.5 s for a 50 MB database
        (FTS merge + VACUUM), writes wait meanwhile; the vector index ~0.7 s per 10K points. Best
        effort on a busy database: a checkpoint that cannot complete is logged and happens at the
        next automatic one."""
        if self._tasks:
            try:
                await self.drain(timeout=60)
            except TimeoutError:
                log.warning("index queue not drained before compaction; some deleted vectors stay until the next")
        if self.dialect == "sqlite":
            async with self.engines.writer.begin() as conn:
                fts = tname("facts_fts")
                await conn.exec_driver_sql(f"INSERT INTO {fts}({fts}) VALUES ('optimize')")
            db_path = self.engines.writer.url.database
            gate = self.engines.write_gate or asyncio.Lock()
            async with gate:  # this process's writers wait instead of failing on a busy database
                await asyncio.to_thread(_vacuum_sqlite, db_path)
        else:
            async with self.engines.writer.connect() as conn:
                ac = await conn.execution_options(isolation_level="AUTOCOMMIT")
                for table in ("facts", "messages", "fact_history", "entities", "relations", "settings"):
                    await ac.exec_driver_sql(f"VACUUM {tname(table)}")
        await self.index.compact()

    def _check_in_tx(self, conn: Connection, scope_id: str, actor: str | None, write: bool = False) -> None:
        """The policy check of `check_access` for one scope, on the caller's connection/transaction."""
        if actor is None:
            return
        scope = self._scope(conn, scope_id)
        if not self._allowed(scope, actor, scope.write_policy if write else scope.read_policy, write):
            raise ScopeDenied(f"{actor} may not {'write to' if write else 'read'} scope {scope_id}")

    @staticmethod
    def _history(conn: Connection, fid, action, actor, now, old, new, old_status, new_status) -> None:
        conn.execute(
            _INSERT_HISTORY,
            dict(
                fact_id=fid,
                action=action,
                actor=actor,
                at=now,
                old_content=old,
                new_content=new,
                old_status=old_status,
                new_status=new_status,
            ),
        )

    @staticmethod
    def _enqueue(conn: Connection, ids: Sequence[int], op: str, now: datetime, change: str | None = None) -> None:
        """Queue index jobs (`op` upsert | delete) and append the change (`change`, default
        upsert | forget) to the feed, in the caller's transaction. A delete also drops the
        stored vectors at once (a forgotten fact's vector is not kept anywhere)."""
        if not ids:
            return
        conn.execute(_INSERT_INDEX_JOB, [{"fact_id": i, "op": op, "attempts": 0, "enqueued_at": now} for i in ids])
        if op == "delete":
            conn.execute(delete(FactVectorRow).where(FactVectorRow.fact_id.in_(list(ids))))
        feed.record(conn, ids, change or ("forget" if op == "delete" else "upsert"), now)

    @staticmethod
    def _link_entities(
        conn: Connection,
        fact_id: int,
        scope_id: str,
        names: Sequence[str | tuple[str, str]],
        now: datetime,
        cache: dict[str, int] | None = None,
    ) -> None:
        """Link a fact to entities given as names or (name, type) pairs, creating them in the scope."""
        cache = {} if cache is None else cache
        seen: set[int] = set()
        for item in names:
            name, etype = (item, None) if isinstance(item, str) else (str(item[0]), item[1])
            norm = norm_name(str(name))
            if not norm:
                continue
            eid = cache.get(norm)
            if eid is None or etype:
                eid = upsert_entity(conn, scope_id, name, etype, now)
                cache[norm] = eid
            if eid in seen:
                continue
            seen.add(eid)
            conn.execute(_INSERT_LINK, dict(fact_id=fact_id, entity_id=eid, role="mention"))

    async def add_message(
        self,
        scope_id: str,
        speaker: str,
        content: str,
        *,
        speaker_id: str | None = None,
        channel: str | None = None,
        role: str = "user",
        external_id: str | None = None,
        created_at: datetime | None = None,
        about: Sequence[str] = (),
    ) -> int:
        """Record a raw conversation turn; returns the message id. `about`: the principals a
        bot/plugin message was written about (its provenance: erasing one of them deletes or
        redacts it). Raises InvalidInput."""
        check_scope_id(scope_id)
        values = dict(
            scope_id=scope_id,
            channel=channel,
            speaker=clean_text(speaker, "speaker", 200),
            speaker_id=speaker_id,
            role=role,
            content=clean_text(content, "message", MAX_FACT_CHARS),
            external_id=external_id,
            created_at=created_at or self.clock(),
            provenance=provenance_of(users=about),
        )
        try:
            async with self.engines.writer.begin() as conn:
                return (await conn.execute(insert(MessageRow).values(**values).returning(MessageRow.id))).scalar_one()
        except IntegrityError as exc:
            raise InvalidInput(f"unknown scope {shown(scope_id)}") from exc

    # ------------------------------------------------------------------ reads
    async def get(self, fact_id: int | str, *, scopes: Sequence[str] | None = None) -> Fact:
        """One fact by id (any status). With `scopes`, raises FactNotFound unless it is in them."""
        fid = check_fact_id(fact_id)
        async with self.engines.reader.connect() as conn:
            row = (await conn.execute(select(FactRow).where(FactRow.id == fid))).first()
        if row is None or (scopes is not None and row.scope_id not in scopes):
            raise FactNotFound(f"no fact #{fid}")
        return _fact(row)

    async def get_many(self, fact_ids: Sequence[int], *, scopes: Sequence[str]) -> list[Fact]:
        """Facts by id, restricted (in SQL) to `scopes`; unknown or out-of-scope ids are skipped.
        Returned in the order of `fact_ids`."""
        ids = [check_fact_id(i) for i in fact_ids]
        if not ids or not scopes:
            return []
        async with self.engines.reader.connect() as conn:
            rows = (
                await conn.execute(select(FactRow).where(FactRow.id.in_(ids), FactRow.scope_id.in_(list(scopes))))
            ).all()
        by_id = {r.id: _fact(r) for r in rows}
        return [by_id[i] for i in ids if i in by_id]

    async def list_facts(
        self,
        scopes: Sequence[str],
        *,
        statuses: Sequence[str] = ("active",),
        kinds: Sequence[str] | None = None,
        created_by: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[Fact]:
        """Up to `limit` facts from `scopes` (optionally only those `created_by` a principal),
        newest first (no silent cap: page with `offset`). Records (tool_execution, system) only
        when `kinds` names them."""
        if not scopes:
            return []
        q = select(FactRow).where(FactRow.scope_id.in_(list(scopes)), FactRow.status.in_(list(statuses)))
        q = q.where(FactRow.kind.in_(list(kinds or RECALLED_KINDS)))
        if created_by is not None:
            q = q.where(FactRow.created_by == created_by)
        q = q.order_by(FactRow.created_at.desc(), FactRow.id.desc()).limit(max(0, limit)).offset(max(0, offset))
        async with self.engines.reader.connect() as conn:
            return [_fact(r) for r in (await conn.execute(q)).all()]

    async def count_facts(self, scopes: Sequence[str] | None = None, statuses: Sequence[str] = ("active",)) -> int:
        q = select(func.count()).select_from(FactRow).where(FactRow.status.in_(list(statuses)))
        if scopes is not None:
            q = q.where(FactRow.scope_id.in_(list(scopes)))
        async with self.engines.reader.connect() as conn:
            return (await conn.execute(q)).scalar_one()

    async def history(self, fact_id: int | str) -> list[HistoryEntry]:
        """Every recorded change of a fact, oldest first."""
        fid = check_fact_id(fact_id)
        async with self.engines.reader.connect() as conn:
            rows = (
                await conn.execute(
                    select(FactHistoryRow).where(FactHistoryRow.fact_id == fid).order_by(FactHistoryRow.id)
                )
            ).all()
        return [
            HistoryEntry(
                r.id,
                r.fact_id,
                r.action,
                r.actor,
                _aware(r.at),
                r.old_content,
                r.new_content,
                r.old_status,
                r.new_status,
            )
            for r in rows
        ]

    async def recent_messages(self, scope_id: str, limit: int = 20) -> list[dict]:
        """The last `limit` messages of a scope, oldest first."""
        async with self.engines.reader.connect() as conn:
            rows = (
                await conn.execute(
                    select(MessageRow)
                    .where(MessageRow.scope_id == scope_id)
                    .order_by(MessageRow.created_at.desc(), MessageRow.id.desc())
                    .limit(limit)
                )
            ).all()
        return [
            {"id": r.id, "speaker": r.speaker, "role": r.role, "content": r.content, "created_at": _aware(r.created_at)}
            for r in reversed(rows)
        ]

    async def pending_jobs(self) -> int:
        async with self.engines.reader.connect() as conn:
            return (await conn.execute(select(func.count()).select_from(IndexJobRow))).scalar_one()

    # ------------------------------------------------------------------ recall
    async def recall(
        self,
        query: str,
        scopes: Sequence[str],
        k: int = 10,
        *,
        kinds: Sequence[str] | None = None,
        include_superseded: bool = False,
        actor: str | None = None,
        bump: bool = True,
        attributes: Sequence[str] = (),
        history: bool = False,
    ) -> list[RecallHit]:
        """Hybrid recall: up to `k` facts from `scopes` only, best first.

        Signals: lexical (FTS5 bm25 / PostgreSQL ts_rank), dense (embedding index), entity and
        speaker mentions, neighbouring turns, the attribute keys the question is about
        (`attributes`, e.g. "alice/residence": facts holding one are candidates even with no word in
        common), importance and relevance, fused as min-max normalised scores (formula in
        storage/recall.py). What is true now comes first: facts that no longer hold (superseded,
        or ended in world time) and questions/small talk rank after current facts, and each hit
        says whether it is current (`RecallHit.current`). Superseded facts only with
        `include_superseded`; `history=True` (a question about the past) includes them, ranks
        them first and drops the current-first order. Deleted facts never.
        Bumps access counts (asynchronously). Raises InvalidInput (empty/overlong query, bad scope)
        or ScopeDenied. Latency grows with the number of facts matching the query's words."""
        if not scopes:
            return []
        for s in scopes:
            check_scope_id(s)
        await self.check_access(scopes, actor)
        keys = [clean_text(a, "attribute key", 200) for a in list(dict.fromkeys(attributes))[:20]]
        hits = await self.recaller.recall(
            query,
            list(dict.fromkeys(scopes)),
            k,
            kinds=kinds or RECALLED_KINDS,
            include_superseded=include_superseded or history,
            attributes=keys,
            history=history,
        )
        if bump:
            self._access.update(h.fact.id for h in hits)
        return hits

    def note_access(self, fact_ids: Iterable[int]) -> None:
        """Count one access for each of `fact_ids` — facts actually shown to a person or an agent
        (in a prompt, a recall listing, a tool or MCP result). Flushed to `access_count` /
        `last_accessed_at` in the background (every ~2 s, and at close); feeds recall's access
        prior and the forgetting curve. Never raises, never waits."""
        self._access.update(int(i) for i in fact_ids)

    async def _access_flusher(self) -> None:
        while True:
            await asyncio.sleep(2.0)
            try:
                await self._flush_access()
            except Exception:
                log.exception("flushing access counts failed")

    async def _flush_access(self) -> None:
        if not self._access:
            return
        pending, self._access = self._access, Counter()
        now = self.clock()
        by_count: dict[int, list[int]] = {}
        for fid, n in pending.items():
            by_count.setdefault(n, []).append(fid)
        async with self.engines.writer.begin() as conn:
            for n, ids in by_count.items():
                await conn.execute(
                    update(FactRow)
                    .where(FactRow.id.in_(ids))
                    .values(access_count=FactRow.access_count + n, last_accessed_at=now)
                )

    # ------------------------------------------------------------------ maintenance
    async def reindex(self, *, wait: bool = True, progress=None, embed: bool = False) -> int:
        """Rebuild this process's vector index from the vectors stored in SQL (no embedding) and
        queue an index job for every live fact without a stored vector of this model. With
        `embed`, every stored vector of this model is dropped first, so all facts are embedded
        again. Returns the number of live facts indexed or queued; with `wait`, returns after the
        queued ones are embedded (`progress(done, total)` is called meanwhile)."""
        if embed:

            def drop(conn: Connection) -> None:
                conn.execute(delete(FactVectorRow).where(FactVectorRow.model == self.embedder.name))

            await self.engines.run_write(drop)
        loaded, queued = await self.feed.rebuild()
        self._changed()
        if wait:
            await self.indexer.drain(timeout=24 * 3600, progress=progress)
            await self.drain(timeout=3600)
            await self.index.optimize()
        return loaded + queued

    async def decay(self, now: datetime | None = None, half_life_days: float = 30.0) -> int:
        """Recompute every active fact's relevance in [0, 1] (Ebbinghaus forgetting curve with
        recall-strengthened memory, as in MemoryBank; formula in `storage.decay`). Returns the
        number of facts updated. Meant to run daily from the scheduler."""
        from storage.decay import decay_relevance

        return await decay_relevance(self, now or self.clock(), half_life_days)


def _vacuum_sqlite(path: str, attempts: int = 5) -> None:
    """VACUUM the database, then copy the WAL back into the file and truncate it to zero bytes
    (so no old page image survives there). Retried while other connections are busy; best effort
    after that (logged; the next purge or automatic checkpoint does it)."""
    import sqlite3
    import time

    vacuumed = False
    for attempt in range(attempts):
        try:
            con = sqlite3.connect(path, timeout=15, isolation_level=None)
            try:
                if not vacuumed:
                    con.execute("VACUUM")
                    vacuumed = True
                busy = con.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
            finally:
                con.close()
        except sqlite3.Error as exc:
            log.info("VACUUM/checkpoint after purge: %s (attempt %d)", exc, attempt + 1)
            busy = 1
        if not busy:
            return
        time.sleep(0.2 * (attempt + 1))
    log.warning("VACUUM or WAL checkpoint after purge deferred (database busy)")


def _chunks(seq: Sequence[int], n: int) -> Iterable[list[int]]:
    for i in range(0, len(seq), n):
        yield list(seq[i : i + n])
