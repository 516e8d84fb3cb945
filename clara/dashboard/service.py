"""What the dashboard reads and changes, on top of the store's public API (plus read-only SQL on
`storage.models` tables, and one new verb: merging two entities, done here in one transaction)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import String, cast, delete, desc, func, or_, select, text, update

from clara.dashboard.metrics import ErrorBuffer, RecallTimings
from clara.labels import outdated_note
from storage.errors import FactNotFound, InvalidInput
from storage.models import (
    EntityRow,
    FactEntityRow,
    FactRow,
    IndexJobRow,
    MemoryJobRow,
    MessageRow,
    RelationRow,
    ScopeRow,
    SessionRow,
)
from storage.naming import t as tname
from storage.sqlutil import aware
from storage.store import _fact
from storage.types import Fact, FactKind, FactStatus

log = logging.getLogger(__name__)

KINDS = [k.value for k in FactKind]
STATUSES = [s.value for s in FactStatus]
PAGE = 50

# Read-only plugin tables shown when the plugin is loaded: (title, table, columns).
PLUGIN_TABLES: dict[str, list[tuple[str, str, list[str]]]] = {
    "invoices": [
        ("Clients", "invoices_clients", ["id", "owner_id", "name", "email", "phone", "status_override", "created_at"]),
        (
            "Invoices",
            "invoices_invoices",
            ["id", "owner_id", "client_id", "number", "amount", "currency", "issued", "due", "status"],
        ),
        ("Payments", "invoices_payments", ["id", "owner_id", "invoice_id", "amount", "currency", "paid_on", "method"]),
    ],
    "reminders": [
        (
            "Reminders",
            "reminders_reminders",
            ["id", "owner_id", "owner_name", "target", "text", "cron", "next_at", "status", "tz"],
        ),
        ("Deliveries", "reminders_deliveries", ["id", "reminder_id", "owner_id", "occurrence_at", "status", "late"]),
    ],
}


@dataclass
class DashboardState:
    """Everything the dashboard needs. Only `store` is required; attach the chat `engine`, the
    `plugins` host, the discord.py `bot` and the `llm` when the process has them."""

    store: Any
    settings: Any = None  # clara.dashboard.config.DashboardSettings (default: from the environment)
    engine: Any = None
    plugins: Any = None
    bot: Any = None
    llm: Any = None
    errors: ErrorBuffer = field(default_factory=ErrorBuffer)
    timings: RecallTimings = field(default_factory=RecallTimings)
    started_at: datetime | None = None  # default: the store's clock at construction

    def __post_init__(self) -> None:
        if self.started_at is None:
            self.started_at = self.store.clock()
        if self.plugins is None and self.engine is not None:
            self.plugins = getattr(self.engine, "plugins", None)
        if self.llm is None and self.engine is not None:
            self.llm = getattr(self.engine, "llm", None)


@dataclass
class FactFilter:
    scope: str = ""
    user: str = ""
    kind: str = ""
    status: str = "active"
    q: str = ""
    mode: str = "recall"  # recall (hybrid, as chat) | text (substring)
    page: int = 0


class DashboardService:
    def __init__(self, state: DashboardState):
        self.state = state
        self.store = state.store

    # ------------------------------------------------------------------ status
    async def status(self) -> dict:
        store = self.store
        async with store.engines.reader.connect() as conn:
            mem = (
                await conn.execute(
                    select(MemoryJobRow.status, MemoryJobRow.kind, func.count(), func.min(MemoryJobRow.created_at))
                    .group_by(MemoryJobRow.status, MemoryJobRow.kind)
                    .order_by(MemoryJobRow.status, MemoryJobRow.kind)
                )
            ).all()
            idx = (
                await conn.execute(
                    select(
                        IndexJobRow.op, func.count(), func.min(IndexJobRow.enqueued_at), func.max(IndexJobRow.attempts)
                    )
                    .group_by(IndexJobRow.op)
                    .order_by(IndexJobRow.op)
                )
            ).all()
            lag = (
                await conn.execute(
                    select(func.count(), func.min(FactRow.created_at)).where(
                        FactRow.status == "active", FactRow.indexed_at.is_(None)
                    )
                )
            ).one()
            by_status = dict((await conn.execute(select(FactRow.status, func.count()).group_by(FactRow.status))).all())
            failed_idx = (
                await conn.execute(select(func.count()).select_from(IndexJobRow).where(IndexJobRow.attempts > 0))
            ).scalar_one()
        now = store.clock()
        memory_jobs = [
            {"status": s, "kind": k, "count": n, "oldest": aware(oldest), "age": _age(now, aware(oldest))}
            for s, k, n, oldest in mem
        ]
        backlog = sum(j["count"] for j in memory_jobs if j["status"] in ("pending", "running"))
        oldest_backlog = min(
            (j["oldest"] for j in memory_jobs if j["status"] in ("pending", "running") and j["oldest"]), default=None
        )
        index_jobs = [
            {"op": op, "count": n, "oldest": aware(o), "age": _age(now, aware(o)), "max_attempts": a}
            for op, n, o, a in idx
        ]
        try:
            vectors = await store.index.count()
        except Exception as exc:  # the page must render even when the index is unhappy
            vectors = f"error: {exc}"
        return {
            "now": now,
            "uptime": _age(now, self.state.started_at),
            "bot": self.bot_status(),
            "memory_jobs": memory_jobs,
            "memory_backlog": backlog,
            "memory_backlog_age": _age(now, oldest_backlog),
            "index_jobs": index_jobs,
            "index_backlog": sum(j["count"] for j in index_jobs),
            "index_retrying": failed_idx,
            "vector_lag": lag[0],
            "vector_lag_age": _age(now, aware(lag[1])),
            "facts_by_status": by_status,
            "vectors": vectors,
            "embedder": f"{getattr(store.embedder, 'name', '?')} ({getattr(store.embedder, 'dim', '?')} dims)",
            "database": store.dialect,
            "llm": self.llm_status(),
            "plugins": self.plugin_list(),
            "errors": self.state.errors.recent(50),
            "recall_p50": self.state.timings.percentile(50),
            "recall_p95": self.state.timings.percentile(95),
            "recall_n": len(self.state.timings.samples),
        }

    def bot_status(self) -> dict | None:
        bot = self.state.bot
        if bot is None:
            return None
        guilds = []
        for g in list(getattr(bot, "guilds", []) or []):
            channels = [
                {"id": str(c.id), "name": getattr(c, "name", str(c.id))}
                for c in list(getattr(g, "text_channels", []) or [])
            ]
            guilds.append(
                {
                    "id": str(g.id),
                    "name": getattr(g, "name", str(g.id)),
                    "members": getattr(g, "member_count", None),
                    "channels": channels,
                }
            )
        user = getattr(bot, "user", None)
        ready = getattr(bot, "is_ready", None)
        latency = getattr(bot, "latency", None)
        return {
            "user": str(user) if user else None,
            "ready": bool(ready()) if callable(ready) else None,
            "latency_ms": round(latency * 1000) if isinstance(latency, float) and latency == latency else None,
            "guilds": guilds,
        }

    def llm_status(self) -> dict:
        llm = self.state.llm
        if llm is None:
            return {"configured": False, "provider": "none (memory-only mode)", "model": None}
        model = None
        with _suppress():
            model = llm.model_for(None)
        recent = [e for e in self.state.errors.records if e.logger.startswith(("clara.llm", "clara.chat"))]
        return {
            "configured": True,
            "provider": getattr(llm, "name", type(llm).__name__),
            "model": model or getattr(llm, "model", None),
            "recent_errors": len(recent),
            "last_error": recent[-1] if recent else None,
        }

    async def check_llm(self, timeout: float = 15.0) -> tuple[bool, str]:
        """A one-token completion: is the provider reachable right now?"""
        llm = self.state.llm
        if llm is None:
            return False, "no LLM configured (memory-only mode)"
        from clara.llm import ChatMessage

        t0 = asyncio.get_running_loop().time()
        try:
            await llm.complete(
                [ChatMessage(role="user", content="Reply with the word ok.")], max_tokens=2, timeout=timeout
            )
        except Exception as exc:
            return False, f"{type(exc).__name__}: {str(exc)[:200]}"
        return True, f"answered in {(asyncio.get_running_loop().time() - t0) * 1000:.0f} ms"

    def plugin_list(self) -> list:
        host = self.state.plugins
        return host.plugins() if host is not None else []

    def plugin_loaded(self, name: str) -> bool:
        host = self.state.plugins
        return bool(host is not None and name in getattr(host, "loaded", {}) and host.loaded[name].status == "loaded")

    # ------------------------------------------------------------------ charts
    async def growth(self, days: int = 30) -> list[tuple[str, int]]:
        """Facts ever created (any status still stored), cumulative per day over the last `days`."""
        since = (self.store.clock() - timedelta(days=days - 1)).replace(hour=0, minute=0, second=0, microsecond=0)
        day = func.date(FactRow.created_at)
        async with self.store.engines.reader.connect() as conn:
            base = (
                await conn.execute(select(func.count()).select_from(FactRow).where(FactRow.created_at < since))
            ).scalar_one()
            rows = (
                await conn.execute(
                    select(day, func.count()).where(FactRow.created_at >= since).group_by(day).order_by(day)
                )
            ).all()
        per_day = {str(d)[:10]: n for d, n in rows}
        out, total = [], base
        for i in range(days):
            d = (since + timedelta(days=i)).date().isoformat()
            total += per_day.get(d, 0)
            out.append((d, total))
        return out

    # ------------------------------------------------------------------ memories
    async def scopes(self) -> list[dict]:
        async with self.store.engines.reader.connect() as conn:
            rows = (
                await conn.execute(
                    select(ScopeRow.id, ScopeRow.kind, ScopeRow.name, ScopeRow.owner).order_by(ScopeRow.id).limit(2000)
                )
            ).all()
        return [{"id": r.id, "kind": r.kind, "name": r.name, "owner": r.owner} for r in rows]

    async def _all_scope_ids(self) -> list[str]:
        async with self.store.engines.reader.connect() as conn:
            return list((await conn.execute(select(ScopeRow.id))).scalars().all())

    async def search(self, f: FactFilter) -> tuple[list[dict], bool]:
        """Facts matching the filter: (rows of {fact, score, signals}, has_more)."""
        if f.q and f.mode == "recall":
            if f.scope:
                scopes = [f.scope]
            elif f.user:
                scopes = await self.store.readable_scopes(f.user)
            else:
                scopes = await self._all_scope_ids()
            if not scopes:
                return [], False
            hits = await self.store.recall(
                f.q,
                scopes,
                k=PAGE,
                kinds=[f.kind] if f.kind else None,
                include_superseded=f.status in ("superseded", "any"),
                bump=False,
            )
            now = self.store.clock()
            rows = [
                {"fact": h.fact, "score": h.score, "signals": h.signals, "note": outdated_note(h.fact, now)}
                for h in hits
                if f.status in ("any", "") or h.fact.status == f.status
            ]
            return rows, False
        q = select(FactRow)
        if f.scope:
            q = q.where(FactRow.scope_id == f.scope)
        if f.user:
            q = q.where(or_(FactRow.scope_id == f"user:{f.user}", FactRow.created_by == f.user))
        if f.kind:
            q = q.where(FactRow.kind == f.kind)
        if f.status and f.status != "any":
            q = q.where(FactRow.status == f.status)
        if f.q:
            needle = f.q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            q = q.where(func.lower(FactRow.content).like(f"%{needle.lower()}%", escape="\\"))
        q = q.order_by(desc(FactRow.created_at), desc(FactRow.id)).limit(PAGE + 1).offset(max(0, f.page) * PAGE)
        async with self.store.engines.reader.connect() as conn:
            facts = [_fact(r) for r in (await conn.execute(q)).all()]
        now = self.store.clock()
        rows = [{"fact": x, "score": None, "signals": {}, "note": outdated_note(x, now)} for x in facts[:PAGE]]
        return rows, len(facts) > PAGE

    async def fact_detail(self, fact_id: int) -> dict:
        fact = await self.store.get(fact_id)
        history = await self.store.history(fact.id)
        # The chain of versions: back through supersedes_id, forward through superseded_by_id.
        versions: list[Fact] = [fact]
        seen = {fact.id}
        cur = fact
        while cur.supersedes_id and cur.supersedes_id not in seen and len(seen) < 50:
            try:
                cur = await self.store.get(cur.supersedes_id)
            except FactNotFound:
                break
            seen.add(cur.id)
            versions.insert(0, cur)
        cur = fact
        while cur.superseded_by_id and cur.superseded_by_id not in seen and len(seen) < 100:
            try:
                cur = await self.store.get(cur.superseded_by_id)
            except FactNotFound:
                break
            seen.add(cur.id)
            versions.append(cur)
        async with self.store.engines.reader.connect() as conn:
            messages = []
            if fact.source_message_ids:
                ids = [int(i) for i in fact.source_message_ids if str(i).isdigit()][:50]
                messages = (
                    await conn.execute(select(MessageRow).where(MessageRow.id.in_(ids)).order_by(MessageRow.id))
                ).all()
            entities = (
                await conn.execute(
                    select(EntityRow.id, EntityRow.name, EntityRow.type, FactEntityRow.role)
                    .join(FactEntityRow, FactEntityRow.entity_id == EntityRow.id)
                    .where(FactEntityRow.fact_id == fact.id)
                    .order_by(EntityRow.name)
                )
            ).all()
            scope = (await conn.execute(select(ScopeRow).where(ScopeRow.id == fact.scope_id))).first()
        version_history = {v.id: await self.store.history(v.id) for v in versions if v.id != fact.id}
        return {
            "fact": fact,
            "history": history,
            "versions": versions,
            "version_history": version_history,
            "messages": [
                {
                    "id": m.id,
                    "speaker": m.speaker,
                    "role": m.role,
                    "content": m.content,
                    "at": aware(m.created_at),
                    "session_id": m.session_id,
                }
                for m in messages
            ],
            "entities": entities,
            "scope": scope,
        }

    async def edit(self, fact_id: int, new_text: str, *, kind: str | None = None, importance=None, reason=None) -> int:
        """Edit = supersede with the new text: the old version stays (history kept)."""
        new_text = (new_text or "").strip()
        if not new_text:
            raise InvalidInput("the new text is empty")
        if kind and kind not in KINDS:
            raise InvalidInput(f"unknown kind {kind!r}")
        imp = None
        if importance not in (None, ""):
            try:
                imp = float(importance)
            except ValueError as exc:
                raise InvalidInput("importance must be a number in [0, 1]") from exc
        return await self.store.supersede(
            fact_id, new_text, actor=None, kind=kind or None, importance=imp, context=(reason or None)
        )

    async def forget(self, fact_id: int) -> Fact:
        return await self.store.forget(fact_id)

    async def purge_user(self, user_id: str) -> dict:
        """Like `!forgetme` (`clara.forget.forget_user`: the store's purge with plugins' data,
        channel summaries rebuilt when the chat engine is attached, files, compaction). Returns
        {"report": PurgeReport, "plugins": {name: result}, "summaries_rebuilt": n, "files": [...]}.
        Raises InvalidInput for an empty user id."""
        from clara.forget import forget_user

        engine = self.state.engine
        done = await forget_user(
            self.store,
            user_id,
            plugins=self.state.plugins,
            writer=engine.memory.writer if engine is not None else None,
        )
        return {
            "report": done.store,
            "plugins": done.plugins,
            "summaries_rebuilt": done.summaries_rebuilt,
            "files": done.files,
        }

    # ------------------------------------------------------------------ entities
    async def entities(self, q: str = "", scope: str = "", limit: int = 200) -> list[dict]:
        links = (
            select(FactEntityRow.entity_id, func.count().label("n"))
            .join(FactRow, FactRow.id == FactEntityRow.fact_id)
            .where(FactRow.status == "active")
            .group_by(FactEntityRow.entity_id)
            .subquery()
        )
        stmt = (
            select(EntityRow, func.coalesce(links.c.n, 0).label("facts"))
            .outerjoin(links, links.c.entity_id == EntityRow.id)
            .order_by(desc(func.coalesce(links.c.n, 0)), EntityRow.name)
            .limit(limit)
        )
        if scope:
            stmt = stmt.where(EntityRow.scope_id == scope)
        if q:
            needle = "%" + q.lower().replace("%", "").replace("_", "") + "%"
            aliases = func.lower(cast(EntityRow.aliases, String))
            stmt = stmt.where(or_(EntityRow.norm_name.like(needle), aliases.like(needle)))
        async with self.store.engines.reader.connect() as conn:
            rows = (await conn.execute(stmt)).all()
        return [
            {
                "id": r.id,
                "scope_id": r.scope_id,
                "name": r.name,
                "type": r.type,
                "aliases": list(r.aliases or []),
                "facts": r.facts,
            }
            for r in rows
        ]

    async def entity_detail(self, entity_id: int) -> dict:
        async with self.store.engines.reader.connect() as conn:
            row = (await conn.execute(select(EntityRow).where(EntityRow.id == entity_id))).first()
            if row is None:
                raise FactNotFound(f"no entity #{entity_id}")
            facts = (
                await conn.execute(
                    select(FactRow)
                    .join(FactEntityRow, FactEntityRow.fact_id == FactRow.id)
                    .where(FactEntityRow.entity_id == entity_id)
                    .order_by(desc(FactRow.created_at), desc(FactRow.id))
                    .limit(200)
                )
            ).all()
            others = (
                await conn.execute(
                    select(EntityRow.id, EntityRow.name, EntityRow.type)
                    .where(EntityRow.scope_id == row.scope_id, EntityRow.id != entity_id)
                    .order_by(EntityRow.name)
                    .limit(500)
                )
            ).all()
        relations = await self.store.graph.relations([row.scope_id], [entity_id])
        return {
            "entity": row,
            "facts": [_fact(f) for f in facts],
            "relations": relations,
            "others": others,
        }

    async def merge_entities(self, keep_id: int, merge_id: int) -> dict:
        """Merge entity `merge_id` into `keep_id` (same scope only): its fact links and relations
        move over, its name and aliases become aliases of the kept one, then it is deleted."""
        if keep_id == merge_id:
            raise InvalidInput("pick two different entities")
        async with self.store.engines.writer.begin() as conn:
            pair = select(EntityRow).where(EntityRow.id.in_([keep_id, merge_id]))
            rows = {r.id: r for r in (await conn.execute(pair)).all()}
            if keep_id not in rows or merge_id not in rows:
                raise FactNotFound("no such entity")
            keep, gone = rows[keep_id], rows[merge_id]
            if keep.scope_id != gone.scope_id:
                raise InvalidInput("entities live in different scopes: merging them would move knowledge across scopes")
            already = select(FactEntityRow.fact_id).where(FactEntityRow.entity_id == keep_id)
            moved = (
                await conn.execute(
                    update(FactEntityRow)
                    .where(FactEntityRow.entity_id == merge_id, FactEntityRow.fact_id.not_in(already))
                    .values(entity_id=keep_id)
                )
            ).rowcount
            await conn.execute(delete(FactEntityRow).where(FactEntityRow.entity_id == merge_id))
            rel = (
                await conn.execute(
                    update(RelationRow).where(RelationRow.source_id == merge_id).values(source_id=keep_id)
                )
            ).rowcount
            rel += (
                await conn.execute(
                    update(RelationRow).where(RelationRow.target_id == merge_id).values(target_id=keep_id)
                )
            ).rowcount
            # An edge between the two is now a self-loop with no meaning.
            await conn.execute(
                delete(RelationRow).where(RelationRow.source_id == keep_id, RelationRow.target_id == keep_id)
            )
            aliases = sorted((set(keep.aliases or []) | set(gone.aliases or []) | {gone.norm_name}) - {keep.norm_name})
            changes: dict = {"aliases": aliases}
            if keep.type == "thing" and gone.type != "thing":
                changes["type"] = gone.type
            await conn.execute(delete(EntityRow).where(EntityRow.id == merge_id))
            await conn.execute(update(EntityRow).where(EntityRow.id == keep_id).values(**changes))
        return {"kept": keep.name, "merged": gone.name, "facts_moved": moved, "relations_moved": rel}

    # ------------------------------------------------------------------ sessions
    async def sessions(self, user: str = "", status: str = "", limit: int = 100) -> list[dict]:
        q = select(SessionRow).order_by(desc(SessionRow.last_activity_at), desc(SessionRow.id)).limit(limit)
        if user:
            q = q.where(SessionRow.user_id == user)
        if status:
            q = q.where(SessionRow.status == status)
        async with self.store.engines.reader.connect() as conn:
            rows = (await conn.execute(q)).all()
            summary_ids = [r.summary_fact_id for r in rows if r.summary_fact_id]
            summaries = {}
            if summary_ids:
                summaries = dict(
                    (await conn.execute(select(FactRow.id, FactRow.content).where(FactRow.id.in_(summary_ids)))).all()
                )
        return [
            {
                "id": r.id,
                "user_id": r.user_id,
                "channel_id": r.channel_id,
                "scope_id": r.scope_id,
                "is_dm": bool(r.is_dm),
                "status": r.status,
                "started_at": aware(r.started_at),
                "last_activity_at": aware(r.last_activity_at),
                "message_count": r.message_count,
                "summary_fact_id": r.summary_fact_id,
                "summary": summaries.get(r.summary_fact_id),
            }
            for r in rows
        ]

    async def session_detail(self, session_id: int) -> dict:
        session = await self.store.sessions.get(session_id)
        if session is None:
            raise FactNotFound(f"no session #{session_id}")
        turns = await self.store.sessions.turns(session_id, limit=200)
        summary = None
        if session.summary_fact_id:
            with _suppress():
                summary = await self.store.get(session.summary_fact_id)
        channel_summary = await self.store.find_slug(session.scope_id, "channel-summary")
        return {"session": session, "turns": turns, "summary": summary, "channel_summary": channel_summary}

    # ------------------------------------------------------------------ plugins
    async def plugin_tables(self, name: str, limit: int = 200) -> list[dict]:
        out = []
        for title, table, columns in PLUGIN_TABLES.get(name, []):
            cols = ", ".join(columns)
            try:
                async with self.store.engines.reader.connect() as conn:
                    rows = (
                        await conn.execute(
                            text(f"SELECT {cols} FROM {tname(table)} ORDER BY id DESC LIMIT :n"), {"n": limit}
                        )
                    ).all()
                out.append({"title": title, "columns": columns, "rows": [tuple(r) for r in rows], "error": None})
            except Exception as exc:  # table missing (plugin never migrated here)
                out.append({"title": title, "columns": columns, "rows": [], "error": str(exc).splitlines()[0]})
        return out


def _age(now: datetime, then: datetime | None) -> str | None:
    if then is None:
        return None
    s = max(0, int((now - then).total_seconds()))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60}m"
    return f"{s // 86400}d {s % 86400 // 3600}h"


class _suppress:
    """contextlib.suppress(Exception) that also logs what it swallowed."""

    def __enter__(self):
        return self

    def __exit__(self, et, ev, tb):
        if ev is not None and isinstance(ev, Exception):
            log.warning("dashboard: %s: %s", type(ev).__name__, ev)
            return True
        return False
