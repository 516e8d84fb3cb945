"""Entities, aliases and relations: the store's small knowledge graph.

Entities live in a scope (unique by normalised name there) with a type (person, place,
organisation, project, pet, date, thing) and aliases ("alice's sister"). Relations link two
entities with validity: `relate(..., single_valued=True)` closes (valid_to = now) the subject's
open relation of the same name to another target, so "lives_in Porto" supersedes "lives_in
Lisbon" while the old edge stays as history. Every read takes the caller's scopes and filters in
SQL.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Connection, String, and_, cast, desc, insert, or_, select, update

from storage.clock import Clock, system_clock
from storage.db import Engines
from storage.errors import InvalidInput
from storage.models import EntityRow, FactEntityRow, FactRow, RelationRow
from storage.sqlutil import aware
from storage.text import MAX_NAME_CHARS, check_name, norm_name

ENTITY_TYPES = frozenset({"person", "place", "organisation", "project", "pet", "date", "thing"})


@dataclass(slots=True)
class Entity:
    id: int
    scope_id: str
    name: str
    type: str
    aliases: list[str] = field(default_factory=list)


@dataclass(slots=True)
class Relation:
    id: int
    scope_id: str
    source: str
    relation: str
    target: str
    fact_id: int | None
    valid_from: datetime | None
    valid_to: datetime | None


def _etype(value: str | None) -> str:
    t = (value or "thing").lower()
    return t if t in ENTITY_TYPES else "thing"


def entity_norm(name: str, what: str = "entity name") -> str:
    """The normalised form of a valid entity name. Raises InvalidInput for a name that is not text,
    is longer than MAX_NAME_CHARS (refused, never cut) or has no letters or digits."""
    check_name(name, what, MAX_NAME_CHARS)
    n = norm_name(name)
    if not n:
        raise InvalidInput(f"bad {what} {name!r:.80}: no letters or digits")
    return n


def upsert_entity(
    conn: Connection, scope_id: str, name: str, etype: str | None, now: datetime, aliases: Sequence[str] = ()
) -> int:
    """Find or create the entity `name` in `scope_id` on `conn` (inside the caller's transaction;
    a synchronous connection: async callers use `await conn.run_sync(upsert_entity, ...)`).
    A known type replaces "thing"; new aliases are merged. Returns the entity id."""
    norm = entity_norm(name)
    etype = _etype(etype)
    row = conn.execute(select(EntityRow).where(EntityRow.scope_id == scope_id, EntityRow.norm_name == norm)).first()
    new_aliases = [a for a in (entity_norm(x, "alias") for x in aliases) if a != norm]
    if row is None:
        return conn.execute(
            insert(EntityRow)
            .values(
                scope_id=scope_id,
                name=check_name(name, "entity name"),
                norm_name=norm,
                type=etype,
                aliases=sorted(set(new_aliases)),
                created_at=now,
            )
            .returning(EntityRow.id)
        ).scalar_one()
    changes: dict = {}
    if row.type == "thing" and etype != "thing":
        changes["type"] = etype
    merged = sorted(set(row.aliases or []) | set(new_aliases))
    if merged != sorted(row.aliases or []):
        changes["aliases"] = merged
    if changes:
        conn.execute(update(EntityRow).where(EntityRow.id == row.id).values(**changes))
    return row.id


class Graph:
    def __init__(self, engines: Engines, clock: Clock = system_clock):
        self.engines = engines
        self.clock = clock

    async def add_alias(self, scope_id: str, name: str, alias: str, etype: str | None = None) -> int:
        """Attach `alias` (e.g. "alice's sister") to the entity `name` in `scope_id` (created if new)."""
        async with self.engines.writer.begin() as conn:
            return await conn.run_sync(upsert_entity, scope_id, name, etype, self.clock(), [alias])

    async def resolve(self, scopes: Sequence[str], name: str) -> list[Entity]:
        """Entities called `name` (by normalised name or alias) in the given scopes only."""
        norm = norm_name(str(name))
        if not norm or not scopes:
            return []
        alias_match = cast(EntityRow.aliases, String).like(f'%"{norm.replace("%", "").replace("_", "")}"%')
        async with self.engines.reader.connect() as conn:
            rows = (
                await conn.execute(
                    select(EntityRow)
                    .where(EntityRow.scope_id.in_(list(scopes)), or_(EntityRow.norm_name == norm, alias_match))
                    .order_by(EntityRow.id)
                    .limit(20)
                )
            ).all()
        return [
            Entity(r.id, r.scope_id, r.name, r.type, list(r.aliases or []))
            for r in rows
            if r.norm_name == norm or norm in (r.aliases or [])
        ]

    async def names(self, scopes: Sequence[str], etype: str = "person", limit: int = 500) -> list[str]:
        """Names of the entities of `etype` in `scopes` (most recent first, up to `limit`)."""
        if not scopes:
            return []
        async with self.engines.reader.connect() as conn:
            rows = await conn.execute(
                select(EntityRow.name)
                .where(EntityRow.scope_id.in_(list(scopes)), EntityRow.type == etype)
                .order_by(EntityRow.id.desc())
                .limit(limit)
            )
            return list(dict.fromkeys(rows.scalars().all()))

    async def relate(
        self,
        scope_id: str,
        source: tuple[str, str | None],
        relation: str,
        target: tuple[str, str | None],
        *,
        fact_id: int | None = None,
        valid_from: datetime | None = None,
        single_valued: bool = True,
    ) -> tuple[int, list[int]]:
        """Record `source -relation-> target` in `scope_id` (entities given as (name, type), created
        if new). With `single_valued`, the source's open relations of the same name to other
        targets are closed (valid_to = valid_from). An identical open relation is reused.
        Returns (relation id, ids of the relations it closed)."""
        rel = norm_name(check_name(relation, "relation name", 100)).replace(" ", "_")
        if not rel:
            raise InvalidInput(f"bad relation name {relation!r:.80}")
        now = self.clock()
        since = valid_from or now
        async with self.engines.writer.begin() as conn:
            sid = await conn.run_sync(upsert_entity, scope_id, source[0], source[1], now)
            tid = await conn.run_sync(upsert_entity, scope_id, target[0], target[1], now)
            open_rel = and_(
                RelationRow.scope_id == scope_id,
                RelationRow.source_id == sid,
                RelationRow.relation == rel,
                RelationRow.valid_to.is_(None),
            )
            rows = (await conn.execute(select(RelationRow.id, RelationRow.target_id).where(open_rel))).all()
            same = [r.id for r in rows if r.target_id == tid]
            closed = [r.id for r in rows if r.target_id != tid] if single_valued else []
            if closed:
                await conn.execute(update(RelationRow).where(RelationRow.id.in_(closed)).values(valid_to=since))
            if same:
                return same[0], closed
            rid = (
                await conn.execute(
                    insert(RelationRow)
                    .values(
                        scope_id=scope_id,
                        source_id=sid,
                        relation=rel,
                        target_id=tid,
                        fact_id=fact_id,
                        valid_from=since,
                        valid_to=None,
                        created_at=now,
                    )
                    .returning(RelationRow.id)
                )
            ).scalar_one()
        return rid, closed

    async def relations(
        self, scopes: Sequence[str], entity_ids: Sequence[int], *, current_only: bool = False
    ) -> list[Relation]:
        """Relations touching these entities, in the given scopes, newest first."""
        if not entity_ids or not scopes:
            return []
        src, tgt = EntityRow.__table__.alias("src"), EntityRow.__table__.alias("tgt")
        q = (
            select(RelationRow, src.c.name.label("sname"), tgt.c.name.label("tname"))
            .join(src, src.c.id == RelationRow.source_id)
            .join(tgt, tgt.c.id == RelationRow.target_id)
            .where(
                RelationRow.scope_id.in_(list(scopes)),
                or_(RelationRow.source_id.in_(list(entity_ids)), RelationRow.target_id.in_(list(entity_ids))),
            )
            .order_by(desc(RelationRow.valid_from), desc(RelationRow.id))
            .limit(100)
        )
        if current_only:
            q = q.where(RelationRow.valid_to.is_(None))
        async with self.engines.reader.connect() as conn:
            rows = (await conn.execute(q)).all()
        return [
            Relation(r.id, r.scope_id, r.sname, r.relation, r.tname, r.fact_id, aware(r.valid_from), aware(r.valid_to))
            for r in rows
        ]

    async def entity_fact_ids(self, scopes: Sequence[str], entity_ids: Sequence[int], limit: int = 20) -> list[int]:
        """Active facts linked to these entities, in the given scopes, newest first."""
        if not entity_ids or not scopes:
            return []
        q = (
            select(FactRow.id)
            .join(FactEntityRow, FactEntityRow.fact_id == FactRow.id)
            .where(
                FactEntityRow.entity_id.in_(list(entity_ids)),
                FactRow.scope_id.in_(list(scopes)),
                FactRow.status == "active",
            )
            .order_by(desc(FactRow.importance), desc(FactRow.id))
            .limit(limit)
        )
        async with self.engines.reader.connect() as conn:
            return list(dict.fromkeys((await conn.execute(q)).scalars().all()))
