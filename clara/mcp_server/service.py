"""The memory service behind the MCP tools: one method per tool, each acting as one agent.

Identity: an agent named `coder` acts as the principal `agent:coder` and owns the private scope
`agent:coder` (owner-only read and write). Shared scopes are granted by the operator (`grants`:
agent name → scope ids); the agent becomes a member of them when it first acts (members policy:
readable and writable by members; `public:*` scopes are readable by anyone, writable by members).
Agents can never be granted `user:*` or `agent:*` scopes. An agent may also create `project:*` and
`public:*` scopes, which it then owns (`scopes.owner`): only the owner grants other agents read or
read-write access (`scope_members.can_write`) and revokes it. Handoffs (`handoffs` table) pass a
conversation to another agent with its chain of earlier handoffs; the receiver only ever gets the
facts it may read.

Every call passes `actor=<principal>` to the store (which raises ScopeDenied) or restricts its
SQL to the principal's readable scopes, so a private scope is never readable by another agent and
a user's private facts are never returned to an agent.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import desc, func, or_, select, update

from clara.labels import check_slug, importance_10, importance_from_10, outdated_note
from clara.mcp_server.query import run_query
from storage import FactStore
from storage.errors import FactNotFound, InvalidInput, ScopeDenied
from storage.graph import entity_norm, upsert_entity
from storage.models import FactEntityRow, FactRow, HandoffRow, SessionRow
from storage.sqlutil import aware
from storage.text import (
    MAX_FACT_CHARS,
    MAX_INT64,
    MAX_NAME_CHARS,
    check_int,
    check_name,
    check_scope_id,
    clean_text,
    norm_name,
    shown,
    unicode_problem,
)
from storage.types import RECORD_KINDS

log = logging.getLogger(__name__)

# Bounds of the tools' list and string arguments (also in their input schemas: see server.py).
MAX_SCOPES = 50
MAX_BULK = 500  # facts per memory_store_facts call
MAX_ENTITIES = 50
MAX_TAGS = 20
MAX_TAG_CHARS = 50
MAX_CAPABILITIES = 20
MAX_CAPABILITY_CHARS = 50
MAX_DESCRIPTION_CHARS = 500
MAX_PRINCIPAL_CHARS = 200
MAX_SUMMARY_CHARS = 8000
MAX_HANDOFF_FACTS = 50
MAX_CHAIN = 50
HANDOFF_TOP_FACTS = 10
# Scopes an agent may create (and then owns): shared project scopes and public ones.
_CREATABLE = {"project": "project", "shared": "project", "public": "public"}

AGENT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
SETTINGS_NS = "mcp"
_GRANT_KINDS = {"channel": "channel", "guild": "guild", "project": "project", "public": "public", "shared": "project"}


class ToolFailure(Exception):
    """An expected failure with a message fit to return to the agent."""


def check_agent_name(name: object) -> str:
    if not isinstance(name, str) or not AGENT_RE.match(name):
        raise ValueError(f"bad agent name {name!r}: 1-64 of letters, digits, '_', '.', '-'")
    return name


def principal_of(agent: str) -> str:
    return f"agent:{check_agent_name(agent)}"


def check_grants(grants: Mapping[str, Sequence[str]] | None) -> dict[str, list[str]]:
    """Validate operator grants (agent name → shared scope ids). Raises ValueError."""
    out: dict[str, list[str]] = {}
    for agent, scopes in (grants or {}).items():
        check_agent_name(agent)
        for sid in scopes:
            check_scope_id(sid)
            kind = sid.partition(":")[0]
            if kind not in _GRANT_KINDS:
                raise ValueError(
                    f"cannot grant scope {sid!r} to an agent (shared scopes: {', '.join(sorted(_GRANT_KINDS))})"
                )
        out[agent] = list(dict.fromkeys(scopes))
    return out


def _bounded_list(value: Any, what: str, most: int) -> list:
    if value is None:
        return []
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise InvalidInput(f"{what} must be a list, got {type(value).__name__}")
    if len(value) > most:
        raise InvalidInput(f"too many {what}: {len(value):,} (at most {most})")
    return list(value)


def _label(value: Any, what: str, most: int) -> str:
    """A short text argument compared in SQL or stored as given: refused if too long (the limit is
    named) or unreadable (NUL, lone surrogates: PostgreSQL and the encoder reject them)."""
    if not isinstance(value, str):
        raise InvalidInput(f"{what} must be text, got {type(value).__name__}")
    if len(value) > most:
        raise InvalidInput(f"{what} is too long: {len(value):,} characters (max {most:,})")
    if "\x00" in value:
        raise InvalidInput(f"{what} contains NUL bytes")
    problem = unicode_problem(value)
    if problem:
        raise InvalidInput(f"{what} is unreadable: {problem}")
    return value


def _kinds(kinds: Any) -> list[str] | None:
    from storage.store import _kind

    return [_kind(_label(k, "kind", 40)) for k in _bounded_list(kinds, "kinds", 20)] or None


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def fact_dict(f, score: float | None = None, now: datetime | None = None) -> dict[str, Any]:
    """A fact as a tool result. With `now`, says whether it still holds (`current`) and, when it
    no longer does, the same note chat shows ("no longer true: until Nov 2026")."""
    out = {
        "id": f.id,
        "scope": f.scope_id,
        "content": f.content,
        "kind": f.kind,
        "status": f.status,
        "importance": importance_10(f.importance),  # the seeds' 1–10 scale (stored as 0..1)
        "created_by": f.created_by,
        "created_at": _iso(f.created_at),
    }
    if f.context:
        out["context"] = f.context
    if f.slug:
        out["slug"] = f.slug
    if f.superseded_by_id:
        out["superseded_by"] = f.superseded_by_id
    if f.valid_from:
        out["valid_from"] = _iso(f.valid_from)
    if f.valid_to:
        out["valid_to"] = _iso(f.valid_to)
    if now is not None:
        out["current"] = f.is_current(now)
        note = outdated_note(f, now)
        if note:
            out["note"] = note
    if score is not None:
        out["score"] = round(float(score), 4)
    return out


class MemoryService:
    def __init__(self, store: FactStore, grants: Mapping[str, Sequence[str]] | None = None):
        self.store = store
        self.grants = check_grants(grants)
        self._ready: set[str] = set()
        self._lock = asyncio.Lock()
        self._background: set[asyncio.Task] = set()

    # ------------------------------------------------------------------ identity
    async def ensure_agent(self, agent: str) -> tuple[str, bool]:
        """Create the agent's private scope and join its granted shared scopes (once per process).
        Returns (principal, whether the private scope was new)."""
        principal = principal_of(agent)
        if principal in self._ready:
            return principal, False
        async with self._lock:
            if principal in self._ready:
                return principal, False
            try:
                await self.store.get_scope(principal)
                new = False
            except InvalidInput:
                new = True
            scope = await self.store.ensure_scope(principal, "agent", name=f"agent {agent}", owner=principal)
            if scope.owner != principal or scope.read_policy != "owner":
                # Someone pre-created this id with another owner or policy: refuse to use it.
                raise ToolFailure(f"scope {principal} exists but is not this agent's private scope")
            for sid in self.grants.get(agent, []):
                kind = _GRANT_KINDS[sid.partition(":")[0]]
                await self.store.ensure_scope(sid, kind, members=[principal])
            self._ready.add(principal)
            return principal, new

    async def _readable(self, principal: str, scopes: Sequence[str] | None) -> list[str]:
        """The scopes to read: all readable ones by default; requested ones are checked (ScopeDenied)."""
        if scopes:
            wanted = list(dict.fromkeys(check_scope_id(s) for s in _bounded_list(scopes, "scopes", MAX_SCOPES)))
            await self.store.check_access(wanted, principal)
            return wanted
        return await self.store.readable_scopes(principal)

    async def _writable(self, principal: str, scopes: Sequence[str]) -> list[str]:
        out = []
        for sid in scopes:
            try:
                await self.store.check_access([sid], principal, write=True)
                out.append(sid)
            except (ScopeDenied, InvalidInput):
                pass
        return out

    # ------------------------------------------------------------------ tools
    async def register_agent(
        self, agent: str, *, description: str | None = None, capabilities: Sequence[str] = ()
    ) -> dict[str, Any]:
        if description is not None:
            _label(description, "description", MAX_DESCRIPTION_CHARS)
        caps = [
            _label(c, "capability", MAX_CAPABILITY_CHARS)
            for c in _bounded_list(capabilities, "capabilities", MAX_CAPABILITIES)
        ]
        principal, created = await self.ensure_agent(agent)
        # New = never registered before (the profile is the agent record; the private scope may
        # already exist because the server or another tool call prepared it).
        new = created or await self.store.settings.get(SETTINGS_NS, principal, "profile") is None
        profile = {
            "description": description or "",
            "capabilities": caps,
            "last_seen": self.store.clock().isoformat(),
        }
        await self.store.settings.set(SETTINGS_NS, principal, "profile", profile)
        readable = await self.store.readable_scopes(principal)
        return {
            "agent": agent,
            "principal": principal,
            "private_scope": principal,
            "new": new,
            "readable_scopes": readable,
            "writable_scopes": await self._writable(principal, readable),
        }

    async def store_fact(
        self,
        agent: str,
        content: str,
        *,
        scope: str | None = None,
        kind: str = "observation",
        importance: float | None = None,
        entities: Sequence[str] = (),
        source: str | None = None,
        tags: Sequence[str] = (),
        slug: str | None = None,
    ) -> dict[str, Any]:
        """One fact; `importance` on the 1–10 scale. With `slug`, a keyed write: the scope's fact
        with that slug is updated in place (never duplicated); `outcome` says added/updated/unchanged."""
        principal, _ = await self.ensure_agent(agent)
        sid = scope or principal
        item = self._item(content, kind, importance, entities, source, tags, slug)
        if slug is None:
            fid = await self.store.add(
                item["content"], sid, source_ref=f"mcp:{agent}", created_by=principal, actor=principal,
                **{k: v for k, v in item.items() if k != "content"},
            )  # fmt: skip
            return {"fact_id": fid, "scope": sid, "outcome": "added"}
        fid, outcome = await self.store.upsert(
            item.pop("slug"), item.pop("content"), sid, source_ref=f"mcp:{agent}", created_by=principal,
            actor=principal, **item,
        )  # fmt: skip
        return {"fact_id": fid, "scope": sid, "outcome": outcome, "slug": slug and check_slug(slug)}

    @staticmethod
    def _item(content, kind, importance, entities, source, tags, slug) -> dict[str, Any]:
        """Validated `add` arguments for one fact as an agent gives it. Raises InvalidInput."""
        names = [
            check_name(e, "entity name", MAX_NAME_CHARS) for e in _bounded_list(entities, "entities", MAX_ENTITIES)
        ]
        tags = [_label(t, "tag", MAX_TAG_CHARS) for t in _bounded_list(tags, "tags", MAX_TAGS)]
        if source is not None:
            _label(source, "source", 200)
        try:
            weight = importance_from_10(importance) if importance is not None else None
            key = check_slug(slug) if slug is not None else None
        except ValueError as exc:
            raise InvalidInput(str(exc)) from None
        context = "; ".join(
            part for part in (f"source: {source}" if source else "", f"tags: {', '.join(tags)}" if tags else "") if part
        )
        item: dict[str, Any] = dict(
            content=content, kind=kind, importance=weight, entities=names, context=context or None
        )
        if key is not None:
            item["slug"] = key
        return item

    async def store_facts(self, agent: str, facts: Sequence[Mapping[str, Any]], *, scope: str | None = None) -> dict:
        """Bulk save (seed 002's `save_company_memories`): each item {content, slug?, kind?,
        importance? (1–10), entities?, source?, tags?}; slug items update the scope's fact with
        that slug. One transaction; returns {saved, failed, errors: [{index, slug?, error}],
        results: [{index, fact_id, slug?, outcome}]} — bad items are reported, the rest saved."""
        principal, _ = await self.ensure_agent(agent)
        sid = scope or principal
        items: list[dict | None] = []
        errors: list[dict] = []
        allowed = {"content", "slug", "kind", "importance", "entities", "source", "tags"}
        for i, raw in enumerate(_bounded_list(facts, "facts", MAX_BULK)):
            try:
                if not isinstance(raw, Mapping):
                    raise InvalidInput("each fact is an object with 'content'")
                unknown = set(raw) - allowed
                if unknown:
                    raise InvalidInput(f"unknown fields: {', '.join(sorted(map(str, unknown)))[:200]}")
                item = self._item(
                    raw.get("content"), raw.get("kind", "observation"), raw.get("importance"),
                    raw.get("entities") or (), raw.get("source"), raw.get("tags") or (), raw.get("slug"),
                )  # fmt: skip
                items.append({**item, "source_ref": f"mcp:{agent}", "created_by": principal})
            except (InvalidInput, TypeError, ValueError) as exc:
                items.append(None)
                err = {"index": i, "error": str(exc)}
                if isinstance(raw, Mapping) and isinstance(raw.get("slug"), str):
                    err["slug"] = raw["slug"][:100]
                errors.append(err)
        good = [(i, it) for i, it in enumerate(items) if it is not None]
        res = await self.store.add_many([it for _, it in good], sid, actor=principal)
        for e in res.errors:  # the store's own checks (text, kind, …), mapped back to the caller's index
            i, it = good[e["index"]]
            err = {"index": i, "error": e["error"]}
            if it.get("slug"):
                err["slug"] = it["slug"]
            errors.append(err)
        results = []
        for n, (i, it) in enumerate(good):
            if res.ids[n] is None:
                continue
            row = {"index": i, "fact_id": res.ids[n], "outcome": res.outcomes.get(n, "added")}
            if it.get("slug"):
                row["slug"] = it["slug"]
            results.append(row)
        errors.sort(key=lambda e: e["index"])
        return {"saved": res.saved, "failed": len(errors), "errors": errors, "results": results, "scope": sid}

    async def observe(self, agent: str, content: str, *, scope: str | None = None) -> dict[str, Any]:
        """Fire-and-forget: the access check and input check happen now, the write after return."""
        principal, _ = await self.ensure_agent(agent)
        sid = scope or principal
        await self.store.check_access([sid], principal, write=True)
        # Everything the write would refuse is refused now: an accepted observation is not lost.
        content = clean_text(content, "observation", MAX_FACT_CHARS)

        async def write() -> None:
            try:
                await self.store.add(
                    content,
                    sid,
                    kind="observation",
                    importance=0.3,
                    source_ref=f"mcp:{agent}",
                    created_by=principal,
                    actor=principal,
                )
            except Exception:
                log.exception("memory_observe write for %s failed", principal)

        task = asyncio.create_task(write())
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return {"accepted": True, "scope": sid}

    async def recall(
        self,
        agent: str,
        query: str,
        *,
        scopes: Sequence[str] | None = None,
        k: int = 10,
        kinds: Sequence[str] | None = None,
        include_superseded: bool = False,
        history: bool = False,
    ) -> dict[str, Any]:
        """What is true now first, each fact saying whether it still holds; `history=True` asks
        about the past (superseded facts included and ranked first)."""
        k = check_int(k, "k", 1, 50)
        kinds = _kinds(kinds)
        principal, _ = await self.ensure_agent(agent)
        readable = await self._readable(principal, scopes)
        hits = await self.store.recall(
            query,
            readable,
            k=k,
            kinds=kinds,
            include_superseded=include_superseded,
            actor=principal,
            history=bool(history),
        )
        return {"facts": [fact_dict(h.fact, h.score, self.store.clock()) for h in hits]}

    async def search(
        self,
        agent: str,
        query: str | None = None,
        *,
        scopes: Sequence[str] | None = None,
        kinds: Sequence[str] | None = None,
        created_by: str | None = None,
        limit: int = 20,
    ) -> dict[str, Any]:
        """Full-text (exact words, no embeddings) search with filters; without `query`, the newest
        facts matching the filters."""
        if query is not None:
            _label(query, "query", 2000)
        if created_by is not None:
            _label(created_by, "created_by", MAX_PRINCIPAL_CHARS)
        kinds = _kinds(kinds)
        limit = check_int(limit, "limit", 1, 100)
        principal, _ = await self.ensure_agent(agent)
        readable = await self._readable(principal, scopes)
        if not readable:
            return {"facts": []}
        if not query or not query.strip():
            facts = await self.store.list_facts(readable, kinds=kinds or None, created_by=created_by, limit=limit)
            return {"facts": [fact_dict(f, now=self.store.clock()) for f in facts]}
        rows = await self.store.engines.run_read(
            self.store.recaller.lexical, query, readable, ("active",), max(limit * 4, 50)
        )
        facts = await self.store.get_many([r[0] for r in rows], scopes=readable)
        score = {r[0]: r[2] for r in rows}
        facts = [
            f
            for f in facts
            if (f.kind in kinds if kinds else f.kind not in RECORD_KINDS)  # records only when asked for
            and (created_by is None or f.created_by == created_by)
        ][:limit]
        return {"facts": [fact_dict(f, score.get(f.id), self.store.clock()) for f in facts]}

    async def link_entity(
        self,
        agent: str,
        entity: str,
        *,
        entity_type: str | None = None,
        scope: str | None = None,
        fact_id: int | None = None,
        alias: str | None = None,
        relation: str | None = None,
        target: str | None = None,
        target_type: str | None = None,
    ) -> dict[str, Any]:
        """Create/find an entity in a scope the agent may write, and optionally link it to a fact
        (in that scope), give it an alias, or relate it to a target entity."""
        if fact_id is not None:
            fact_id = check_int(fact_id, "fact_id", 1, MAX_INT64)
        # Every name is checked before anything is written (a bad target must not leave the entity).
        entity_norm(entity, "entity name")
        for what, value in (("alias", alias), ("target", target)):
            if value is not None:
                entity_norm(value, what)
        if relation is not None and not norm_name(check_name(relation, "relation", 100)):
            raise InvalidInput(f"bad relation name {relation!r:.80}: no letters or digits")
        for what, value in (("entity_type", entity_type), ("target_type", target_type)):
            if value is not None:
                _label(value, what, 40)
        principal, _ = await self.ensure_agent(agent)
        if bool(relation) != bool(target):
            raise InvalidInput("relation and target go together")
        sid = scope
        if fact_id is not None:
            readable = await self.store.readable_scopes(principal)
            fact = await self.store.get(fact_id, scopes=readable)  # FactNotFound if not readable
            if fact.status == "deleted":
                raise FactNotFound(f"no fact #{fact.id}")
            if sid is not None and sid != fact.scope_id:
                raise InvalidInput(f"fact #{fact.id} is in scope {fact.scope_id}, not {sid}")
            sid = fact.scope_id
        sid = sid or principal
        await self.store.check_access([check_scope_id(sid)], principal, write=True)
        if not norm_name(str(entity)):
            raise InvalidInput(f"bad entity name {shown(entity)}")
        now = self.store.clock()
        linked = False
        async with self.store.engines.writer.begin() as conn:
            eid = await conn.run_sync(upsert_entity, sid, entity, entity_type, now, [alias] if alias else ())
            if fact_id is not None:
                exists = (
                    await conn.execute(
                        select(FactEntityRow.fact_id).where(
                            FactEntityRow.fact_id == int(fact_id), FactEntityRow.entity_id == eid
                        )
                    )
                ).first()
                if exists is None:
                    await conn.execute(FactEntityRow.__table__.insert().values(fact_id=int(fact_id), entity_id=eid))
                linked = True
        out: dict[str, Any] = {"entity_id": eid, "scope": sid, "linked_fact": int(fact_id) if linked else None}
        if relation:
            rid, closed = await self.store.graph.relate(
                sid, (entity, entity_type), relation, (target, target_type), fact_id=fact_id
            )
            out["relation_id"], out["closed_relations"] = rid, closed
        ents = await self.store.graph.resolve([sid], entity)
        out["entity"] = [{"id": e.id, "name": e.name, "type": e.type, "aliases": e.aliases} for e in ents][:1]
        return out

    async def get_context(
        self, agent: str, topic: str, *, scopes: Sequence[str] | None = None, k: int = 8
    ) -> dict[str, Any]:
        """A warm-start bundle for `topic`: the best facts, the entities named in it with their
        current relations and linked facts, the agent's own latest facts, and recent sessions in
        the readable scopes (with their summaries when readable)."""
        k = check_int(k, "k", 1, 30)
        if not isinstance(topic, str):
            raise InvalidInput(f"topic must be text, got {type(topic).__name__}")
        principal, _ = await self.ensure_agent(agent)
        readable = await self._readable(principal, scopes)
        hits = await self.store.recall(topic, readable, k=k, actor=principal) if readable else []
        entities: list[dict] = []
        seen: set[int] = set()
        words = [w for w in re.split(r"[\s,;]+", topic) if w]
        candidates = [topic, *words, *(" ".join(words[i : i + 2]) for i in range(len(words) - 1))]
        for name in dict.fromkeys(candidates):
            if len(entities) >= 10 or not norm_name(name):
                continue
            for e in await self.store.graph.resolve(readable, name):
                if e.id in seen:
                    continue
                seen.add(e.id)
                rels = await self.store.graph.relations(readable, [e.id], current_only=True)
                fids = await self.store.graph.entity_fact_ids(readable, [e.id], limit=5)
                facts = await self.store.get_many(fids, scopes=readable)
                entities.append(
                    {
                        "id": e.id,
                        "name": e.name,
                        "type": e.type,
                        "scope": e.scope_id,
                        "aliases": e.aliases,
                        "relations": [
                            {"source": r.source, "relation": r.relation, "target": r.target} for r in rels[:10]
                        ],
                        "facts": [fact_dict(f, now=self.store.clock()) for f in facts],
                    }
                )
        mine = await self.store.list_facts(readable, created_by=principal, limit=5) if readable else []
        sessions = []
        if readable:
            async with self.store.engines.reader.connect() as conn:
                rows = (
                    await conn.execute(
                        select(SessionRow)
                        .where(SessionRow.scope_id.in_(readable))
                        .order_by(desc(SessionRow.last_activity_at), desc(SessionRow.id))
                        .limit(5)
                    )
                ).all()
            summaries = await self.store.get_many(
                [r.summary_fact_id for r in rows if r.summary_fact_id], scopes=readable
            )
            by_id = {f.id: f.content for f in summaries}
            sessions = [
                {
                    "id": r.id,
                    "scope": r.scope_id,
                    "status": r.status,
                    "started_at": _iso(r.started_at),
                    "last_activity_at": _iso(r.last_activity_at),
                    "messages": r.message_count,
                    "summary": by_id.get(r.summary_fact_id),
                }
                for r in rows
            ]
        return {
            "topic": topic,
            "facts": [fact_dict(h.fact, h.score, self.store.clock()) for h in hits],
            "entities": entities,
            "my_recent_facts": [fact_dict(f, now=self.store.clock()) for f in mine],
            "recent_sessions": sessions,
            "recent_handoffs": await self.recent_handoffs(principal),
            "scopes": readable,
        }

    async def query_raw(
        self,
        agent: str,
        table: str,
        *,
        filters: Mapping[str, Any] | None = None,
        columns: Sequence[str] | None = None,
        order_by: str | None = None,
        descending: bool = True,
        limit: int = 50,
        operation: str = "select",
    ) -> dict[str, Any]:
        principal, _ = await self.ensure_agent(agent)
        readable = await self.store.readable_scopes(principal)
        return await run_query(
            self.store,
            readable,
            table,
            filters=filters or {},
            columns=columns,
            order_by=order_by,
            descending=descending,
            limit=limit,
            operation=operation,
        )

    # ------------------------------------------------------------------ scope membership
    def _scope_dict(self, scope, principal: str) -> dict[str, Any]:
        out = {
            "scope": scope.id,
            "kind": scope.kind,
            "name": scope.name,
            "owner": scope.owner,
            "read_policy": scope.read_policy,
            "write_policy": scope.write_policy,
        }
        if scope.owner == principal:  # members are the owner's to see
            out["members"] = [
                {"principal": m, "access": "read" if m in scope.read_only else "write"} for m in scope.members
            ]
        return out

    async def create_scope(
        self, agent: str, scope: str, *, name: str | None = None, public: bool | None = None
    ) -> dict[str, Any]:
        """Create a shared scope owned by this agent: `project:<x>` (or `shared:<x>`: members
        only) or `public:<x>` (readable by anyone, writable by its owner and the members it grants
        write). Creating a scope you already own again changes nothing."""
        sid = check_scope_id(scope)
        prefix = sid.partition(":")[0]
        if prefix not in _CREATABLE:
            raise InvalidInput(f"agents may create {', '.join(f'{k}:<name>' for k in sorted(_CREATABLE))} scopes only")
        if name is not None:
            _label(name, "name", MAX_NAME_CHARS)
        kind = _CREATABLE[prefix]
        principal, _ = await self.ensure_agent(agent)
        try:
            existing = await self.store.get_scope(sid)
        except InvalidInput:
            existing = None
        if existing is not None:
            if existing.owner != principal:
                raise ToolFailure(f"scope {sid} already exists and is not yours")
            return {**self._scope_dict(existing, principal), "created": False}
        read = "public" if (public if public is not None else kind == "public") else "members"
        made = await self.store.ensure_scope(
            sid, kind, name=name or sid, owner=principal, read_policy=read, write_policy="members"
        )
        if made.owner != principal:  # lost a race with another creator
            raise ToolFailure(f"scope {sid} already exists and is not yours")
        return {**self._scope_dict(made, principal), "created": True}

    async def grant_scope(self, agent: str, scope: str, member: str, *, access: str = "read") -> dict[str, Any]:
        """The owner of `scope` lets agent `member` read it (`access="read"`) or read and write it."""
        if access not in ("read", "write"):
            raise InvalidInput(f"access must be 'read' or 'write', not {shown(access)}")
        target = principal_of(member)
        principal, _ = await self.ensure_agent(agent)
        sid = check_scope_id(scope)
        if sid.partition(":")[0] in ("user", "agent"):
            raise InvalidInput(f"{sid} is a private scope: it has no members")
        done = await self.store.set_member(sid, target, write=access == "write", actor=principal)
        return self._scope_dict(done, principal)

    async def revoke_scope(self, agent: str, scope: str, member: str) -> dict[str, Any]:
        """The owner of `scope` removes agent `member` from it (it can no longer read a members-only
        scope, nor write any)."""
        target = principal_of(member)
        principal, _ = await self.ensure_agent(agent)
        done = await self.store.remove_member(check_scope_id(scope), target, actor=principal)
        return self._scope_dict(done, principal)

    # ------------------------------------------------------------------ handoffs
    @staticmethod
    def _handoff_dict(r) -> dict[str, Any]:
        return {
            "id": r.id,
            "session": r.session,
            "from_agent": r.from_agent.removeprefix("agent:"),
            "to_agent": r.to_agent.removeprefix("agent:"),
            "summary": r.summary,
            "scope": r.scope_id,
            "status": r.status,
            "parent_id": r.parent_id,
            "created_at": _iso(aware(r.created_at)),
            "picked_up_at": _iso(aware(r.picked_up_at)),
        }

    async def _chain(self, conn, row) -> list[dict[str, Any]]:
        """The handoffs `row` continues, oldest first, then `row` itself."""
        chain = [row]
        seen = {row.id}
        while chain[-1].parent_id is not None and len(chain) < MAX_CHAIN:
            parent = (await conn.execute(select(HandoffRow).where(HandoffRow.id == chain[-1].parent_id))).first()
            if parent is None or parent.id in seen:
                break
            seen.add(parent.id)
            chain.append(parent)
        return [self._handoff_dict(r) for r in reversed(chain)]

    async def handoff(
        self,
        agent: str,
        to_agent: str,
        summary: str,
        *,
        session: str | None = None,
        scope: str | None = None,
        fact_ids: Sequence[int] = (),
        parent_id: int | None = None,
    ) -> dict[str, Any]:
        """Hand the conversation to `to_agent`: a summary, the session it belongs to, the scope
        where its facts live and facts to pass along. It continues the handoff this agent picked up
        in the same session (or `parent_id`), so the receiver gets the whole chain."""
        target = principal_of(to_agent)
        summary = clean_text(summary, "summary", MAX_SUMMARY_CHARS)
        if session is not None:
            session = _label(session, "session", 200).strip()
            if not session:
                raise InvalidInput("session must not be blank")
        ids = [check_int(i, "fact id", 1, MAX_INT64) for i in _bounded_list(fact_ids, "fact_ids", MAX_HANDOFF_FACTS)]
        if parent_id is not None:
            parent_id = check_int(parent_id, "parent_id", 1, MAX_INT64)
        principal, _ = await self.ensure_agent(agent)
        if target == principal:
            raise InvalidInput("an agent cannot hand a conversation to itself")
        if scope is not None:
            await self.store.check_access([check_scope_id(scope)], principal)
        if ids:
            readable = await self.store.readable_scopes(principal)
            found = {f.id for f in await self.store.get_many(ids, scopes=readable)}
            missing = [i for i in ids if i not in found]
            if missing:
                raise FactNotFound(f"no fact #{missing[0]}")
        now = self.store.clock()
        async with self.store.engines.writer.begin() as conn:
            parent = None
            if parent_id is not None:
                parent = (
                    await conn.execute(
                        select(HandoffRow).where(
                            HandoffRow.id == parent_id,
                            or_(HandoffRow.to_agent == principal, HandoffRow.from_agent == principal),
                        )
                    )
                ).first()
                if parent is None:
                    raise ToolFailure(f"no handoff #{parent_id} of yours")
            elif session is not None:
                parent = (
                    await conn.execute(
                        select(HandoffRow)
                        .where(HandoffRow.session == session, HandoffRow.to_agent == principal)
                        .order_by(desc(HandoffRow.id))
                        .limit(1)
                    )
                ).first()
            if session is None:
                session = parent.session if parent is not None else None
            if session is None:
                n = (await conn.execute(select(func.count()).select_from(HandoffRow))).scalar_one()
                session = f"{agent}-{now:%Y%m%dT%H%M%S}-{n + 1}"
            hid = (
                await conn.execute(
                    HandoffRow.__table__.insert()
                    .values(
                        session=session,
                        from_agent=principal,
                        to_agent=target,
                        parent_id=parent.id if parent is not None else None,
                        scope_id=scope,
                        summary=summary,
                        fact_ids=ids,
                        status="pending",
                        created_at=now,
                        picked_up_at=None,
                    )
                    .returning(HandoffRow.id)
                )
            ).scalar_one()
            row = (await conn.execute(select(HandoffRow).where(HandoffRow.id == hid))).first()
            chain = await self._chain(conn, row)
        return {"handoff_id": hid, "session": session, "to_agent": to_agent, "chain": chain}

    async def pickup(self, agent: str, *, handoff_id: int | None = None, session: str | None = None) -> dict[str, Any]:
        """Take over a conversation handed to this agent (the oldest pending one, or `handoff_id`,
        or the latest in `session`): the handoff, its whole chain (who handed to whom, which
        session, each summary), and the facts passed along plus the most important facts of its
        scope — only those this agent may read."""
        if handoff_id is not None:
            handoff_id = check_int(handoff_id, "handoff_id", 1, MAX_INT64)
        if session is not None:
            _label(session, "session", 200)
        principal, _ = await self.ensure_agent(agent)
        now = self.store.clock()
        async with self.store.engines.writer.begin() as conn:
            q = select(HandoffRow).where(HandoffRow.to_agent == principal)
            if handoff_id is not None:
                q = q.where(HandoffRow.id == handoff_id)
            elif session is not None:
                q = q.where(HandoffRow.session == session).order_by(desc(HandoffRow.id))
            else:
                q = q.where(HandoffRow.status == "pending").order_by(HandoffRow.id)
            row = (await conn.execute(q.limit(1))).first()
            pending = (
                await conn.execute(
                    select(func.count())
                    .select_from(HandoffRow)
                    .where(HandoffRow.to_agent == principal, HandoffRow.status == "pending")
                )
            ).scalar_one()
            if row is None:
                if handoff_id is not None:
                    raise ToolFailure(f"no handoff #{handoff_id} for you")
                return {"handoff": None, "chain": [], "facts": [], "pending": pending}
            if row.status == "pending":
                await conn.execute(
                    update(HandoffRow).where(HandoffRow.id == row.id).values(status="picked_up", picked_up_at=now)
                )
                pending -= 1
                row = (await conn.execute(select(HandoffRow).where(HandoffRow.id == row.id))).first()
            chain = await self._chain(conn, row)
        readable = await self.store.readable_scopes(principal)
        facts = await self.store.get_many(list(row.fact_ids or []), scopes=readable)
        if row.scope_id and row.scope_id in readable:
            top = await self._top_facts(row.scope_id)
            facts += await self.store.get_many([i for i in top if i not in {f.id for f in facts}], scopes=readable)
        facts = [f for f in facts if f.status != "deleted"]
        return {
            "handoff": self._handoff_dict(row),
            "chain": chain,
            "facts": [fact_dict(f, now=now) for f in facts],
            "pending": pending,
        }

    async def _top_facts(self, scope_id: str) -> list[int]:
        async with self.store.engines.reader.connect() as conn:
            return list(
                (
                    await conn.execute(
                        select(FactRow.id)
                        .where(FactRow.scope_id == scope_id, FactRow.status == "active")
                        .order_by(desc(FactRow.importance), desc(FactRow.created_at))
                        .limit(HANDOFF_TOP_FACTS)
                    )
                )
                .scalars()
                .all()
            )

    async def recent_handoffs(self, principal: str, limit: int = 5) -> list[dict[str, Any]]:
        async with self.store.engines.reader.connect() as conn:
            rows = (
                await conn.execute(
                    select(HandoffRow)
                    .where(or_(HandoffRow.to_agent == principal, HandoffRow.from_agent == principal))
                    .order_by(desc(HandoffRow.id))
                    .limit(limit)
                )
            ).all()
        return [self._handoff_dict(r) for r in rows]

    async def aclose(self) -> None:
        if self._background:
            await asyncio.wait(list(self._background), timeout=10)


EXPECTED = (ToolFailure, InvalidInput, ScopeDenied, FactNotFound, ValueError)

__all__ = ["EXPECTED", "MemoryService", "ToolFailure", "check_agent_name", "principal_of"]
