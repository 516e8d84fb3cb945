"""`clara memory export [--user U] FILE.jsonl` / `clara memory import FILE.jsonl`.

JSON Lines, one object per line, each with a `type`:

- `header`: `{"type": "header", "format": "clara-memory", "version": 1, "exported_at", "user"}`
- `scope`:  `{"type": "scope", "id", "kind", "name", "owner", "read_policy", "write_policy", "members"}`
- `fact`:   `{"type": "fact", "id", "scope", "content", "context", "kind", "status", "slug",
  "importance", "relevance", "speaker", "source_ref", "created_by", "created_at", "updated_at",
  "valid_from", "valid_to", "supersedes", "superseded_by", "entities": [[name, type], ...]}`
- `entity`: `{"type": "entity", "scope", "name", "entity_type", "aliases"}` (v2: names, types and aliases)
- `relation`: `{"type": "relation", "scope", "source": [name, type], "relation", "target": [name, type],
  "fact", "valid_from", "valid_to", "created_at"}` (v2: the graph `!about` shows; `fact` is a fact
  record's id)

Active and superseded facts are exported (forgotten ones are not). On import, ids are new: the
`supersedes`/`superseded_by` links are remapped to the new ids; times, status and provenance are
kept; relations are recreated between the same-named entities (their fact link remapped, an
identical relation already present is skipped); a fact already present (same scope, text and
creation time) is skipped, so importing twice changes nothing. Invalid lines are reported and
skipped; valid ones are written in one transaction.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import insert, or_, select, update

from storage.errors import InvalidInput
from storage.graph import upsert_entity
from storage.models import (
    EntityRow,
    FactEntityRow,
    FactHistoryRow,
    FactRow,
    IndexJobRow,
    RelationRow,
    ScopeMemberRow,
    ScopeRow,
)
from storage.sqlutil import aware
from storage.text import MAX_FACT_CHARS, MAX_NAME_CHARS, check_name, check_scope_id, clean_text, shown

FORMAT = "clara-memory"
VERSION = 2
STATUSES = ("active", "superseded", "deleted")
BATCH = 500


@dataclass
class ImportReport:
    read: int = 0
    imported: int = 0
    skipped: int = 0  # already present
    failed: int = 0
    scopes: int = 0
    relations: int = 0
    errors: list[dict] = field(default_factory=list)
    ids: dict[Any, int] = field(default_factory=dict)  # source id → new fact id

    def summary(self) -> dict:
        return {
            "read": self.read,
            "imported": self.imported,
            "skipped": self.skipped,
            "failed": self.failed,
            "scopes": self.scopes,
            "relations": self.relations,
            "errors": self.errors[:20],
        }


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.isoformat()


def parse_time(value: Any, what: str) -> datetime | None:
    """ISO 8601 (a trailing Z too) or Unix seconds → aware UTC datetime; None stays None."""
    if value is None or value == "":
        return None
    try:
        if isinstance(value, bool):
            raise TypeError
        if isinstance(value, int | float):
            dt = datetime.fromtimestamp(float(value), UTC)
        else:
            s = str(value).strip()
            if s.endswith("Z"):
                s = s[:-1] + "+00:00"
            dt = datetime.fromisoformat(s)
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
        return dt.astimezone(UTC)  # 0001-01-01T00:00+05:00 is no UTC time: OverflowError
    except (TypeError, ValueError, OverflowError, OSError) as exc:
        raise InvalidInput(f"{what}: not a date/time: {shown(value)}") from exc


# ---------------------------------------------------------------------------------------- export
async def export_records(store, user: str | None = None) -> Iterator[dict]:
    """The export as a list of dicts (header, scopes, facts oldest first)."""
    async with store.engines.reader.connect() as conn:
        if user is None:
            scope_rows = (await conn.execute(select(ScopeRow).order_by(ScopeRow.id))).all()
            fact_q = select(FactRow).where(FactRow.status.in_(["active", "superseded"]))
        else:
            owned = select(ScopeRow.id).where(ScopeRow.owner == user)
            fact_q = select(FactRow).where(
                FactRow.status.in_(["active", "superseded"]),
                or_(FactRow.scope_id.in_(owned), FactRow.created_by == user),
            )
            fact_scopes = select(FactRow.scope_id).where(FactRow.id.in_(fact_q.with_only_columns(FactRow.id)))
            scope_rows = (
                await conn.execute(
                    select(ScopeRow)
                    .where(or_(ScopeRow.owner == user, ScopeRow.id.in_(fact_scopes)))
                    .order_by(ScopeRow.id)
                )
            ).all()
        facts = (await conn.execute(fact_q.order_by(FactRow.created_at, FactRow.id))).all()
        members: dict[str, list[str]] = {}
        for r in (await conn.execute(select(ScopeMemberRow))).all():
            members.setdefault(r.scope_id, []).append(r.principal)
        ents: dict[int, list[list[str]]] = {}
        ids = [f.id for f in facts]
        for i in range(0, len(ids), BATCH):
            rows = (
                await conn.execute(
                    select(FactEntityRow.fact_id, EntityRow.name, EntityRow.type)
                    .join(EntityRow, EntityRow.id == FactEntityRow.entity_id)
                    .where(FactEntityRow.fact_id.in_(ids[i : i + BATCH]))
                    .order_by(FactEntityRow.fact_id, EntityRow.id)
                )
            ).all()
            for r in rows:
                ents.setdefault(r.fact_id, []).append([r.name, r.type])
        exported_scopes = [s.id for s in scope_rows]
        fact_ids = set(ids)
        src, tgt = EntityRow.__table__.alias("src"), EntityRow.__table__.alias("tgt")
        rel_q = (
            select(
                RelationRow,
                src.c.name.label("s_name"),
                src.c.type.label("s_type"),
                tgt.c.name.label("t_name"),
                tgt.c.type.label("t_type"),
            )
            .join(src, src.c.id == RelationRow.source_id)
            .join(tgt, tgt.c.id == RelationRow.target_id)
            .order_by(RelationRow.id)
        )
        if user is not None:
            owned_ids = [s.id for s in scope_rows if s.owner == user]
            rel_rows = [
                r
                for r in (await conn.execute(rel_q.where(RelationRow.scope_id.in_(exported_scopes)))).all()
                if r.scope_id in owned_ids or r.fact_id in fact_ids
            ]
        else:
            rel_rows = (await conn.execute(rel_q)).all()
        ent_q = select(EntityRow).where(EntityRow.aliases.is_not(None)).order_by(EntityRow.id)
        if user is not None:
            owned_ids = [s.id for s in scope_rows if s.owner == user]
            ent_q = ent_q.where(EntityRow.scope_id.in_(owned_ids))
        alias_rows = [e for e in (await conn.execute(ent_q)).all() if e.aliases]
    out: list[dict] = [
        {"type": "header", "format": FORMAT, "version": VERSION, "exported_at": _iso(store.clock()), "user": user}
    ]
    for s in scope_rows:
        mem = sorted(members.get(s.id, []))
        if user is not None and s.owner != user:
            mem = [m for m in mem if m == user]  # another person's membership is theirs to export
        out.append(
            {
                "type": "scope",
                "id": s.id,
                "kind": s.kind,
                "name": s.name,
                "owner": s.owner,
                "read_policy": s.read_policy,
                "write_policy": s.write_policy,
                "members": mem,
            }
        )
    exported = {f.id for f in facts}
    for f in facts:
        out.append(
            {
                "type": "fact",
                "id": f.id,
                "scope": f.scope_id,
                "content": f.content,
                "context": f.context,
                "kind": f.kind,
                "status": f.status,
                "slug": f.slug,
                "importance": f.importance,
                "relevance": f.relevance,
                "speaker": f.speaker,
                "source_ref": f.source_ref,
                "created_by": f.created_by,
                "created_at": _iso(f.created_at),
                "updated_at": _iso(f.updated_at),
                "valid_from": _iso(f.valid_from),
                "valid_to": _iso(f.valid_to),
                "supersedes": f.supersedes_id if f.supersedes_id in exported else None,
                "superseded_by": f.superseded_by_id if f.superseded_by_id in exported else None,
                "entities": ents.get(f.id, []),
            }
        )
    for e in alias_rows:
        out.append({"type": "entity", "scope": e.scope_id, "name": e.name, "entity_type": e.type, "aliases": e.aliases})
    for r in rel_rows:
        out.append(
            {
                "type": "relation",
                "scope": r.scope_id,
                "source": [r.s_name, r.s_type],
                "relation": r.relation,
                "target": [r.t_name, r.t_type],
                "fact": r.fact_id if r.fact_id in fact_ids else None,
                "valid_from": _iso(r.valid_from),
                "valid_to": _iso(r.valid_to),
                "created_at": _iso(r.created_at),
            }
        )
    return out


async def export_jsonl(store, path: Path, user: str | None = None) -> dict:
    records = await export_records(store, user)
    tmp = Path(path).with_name(Path(path).name + ".partial")

    def write() -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            for r in records:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
        tmp.replace(path)

    await asyncio.to_thread(write)
    return {
        "file": str(path),
        "scopes": sum(r["type"] == "scope" for r in records),
        "facts": sum(r["type"] == "fact" for r in records),
        "relations": sum(r["type"] == "relation" for r in records),
    }


# ---------------------------------------------------------------------------------------- import
def read_jsonl(path: Path) -> Iterator[tuple[int, Any]]:
    """(line number, parsed object or the InvalidInput) for every non-blank line."""
    with open(path, encoding="utf-8", errors="replace") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield n, json.loads(line)
            except json.JSONDecodeError as exc:
                yield n, InvalidInput(f"not JSON: {exc.msg}")
            except RecursionError:
                yield n, InvalidInput("not JSON this program can read: nested too deeply")


def fact_values(rec: dict, *, now: datetime, default_scope: str | None = None) -> dict:
    """Validate one fact record → FactRow values (without ids/links); `now` stands in for a missing
    creation time. Raises InvalidInput."""
    from storage.store import _importance, _kind

    if not isinstance(rec, dict):
        raise InvalidInput("a fact must be an object")
    scope = check_scope_id(rec.get("scope") or default_scope)
    status = rec.get("status") or "active"
    if status not in STATUSES:
        raise InvalidInput(f"unknown status {shown(status)}")
    created = parse_time(rec.get("created_at"), "created_at") or now
    updated = parse_time(rec.get("updated_at"), "updated_at") or created
    relevance = rec.get("relevance", 1.0)
    if not isinstance(relevance, int | float) or isinstance(relevance, bool) or not 0 <= relevance <= 1:
        relevance = 1.0

    def opt(key: str, limit: int) -> str | None:
        v = rec.get(key)
        return clean_text(v, key, limit) if v not in (None, "") else None

    return dict(
        scope_id=scope,
        content=clean_text(rec.get("content"), "fact", MAX_FACT_CHARS),
        context=opt("context", MAX_FACT_CHARS),
        kind=_kind(rec.get("kind") or "observation"),
        slug=opt("slug", 200),
        importance=_importance(rec.get("importance")),
        relevance=float(relevance),
        access_count=0,
        status=status,
        valid_from=parse_time(rec.get("valid_from"), "valid_from") or created,
        valid_to=parse_time(rec.get("valid_to"), "valid_to"),
        source_ref=opt("source_ref", 200),
        speaker=opt("speaker", 200),
        created_by=opt("created_by", 200),
        created_at=created,
        updated_at=updated,
    )


MAX_ENTITIES = 500  # per fact


def _entities(rec: dict) -> list[tuple[str, str | None]]:
    """A fact record's entities as (name, type): names refused (InvalidInput) if not text or longer
    than MAX_NAME_CHARS, never cut."""
    raw = rec.get("entities") or []
    if not isinstance(raw, list):
        raise InvalidInput(f"entities must be a list, got {type(raw).__name__}")
    if len(raw) > MAX_ENTITIES:
        raise InvalidInput(f"too many entities: {len(raw):,} (at most {MAX_ENTITIES})")
    out = []
    for e in raw:
        name, etype = (e, None) if not isinstance(e, list) else ((e or [None])[0], e[1] if len(e) > 1 else None)
        if isinstance(name, str) and not name.strip():
            continue
        name = check_name(name, "entity name", MAX_NAME_CHARS)
        out.append((name, etype if isinstance(etype, str) else None))
    return out


def _ref(value: Any, what: str) -> Any:
    """A record id (or a supersede link to one): a string or an integer, or None."""
    if value is None or isinstance(value, str | int) and not isinstance(value, bool):
        return value
    raise InvalidInput(f"{what} must be a string or a number, got {type(value).__name__}")


def scope_record(rec: dict) -> dict:
    """Validate a `scope` record (InvalidInput, with the field named) so one bad line cannot stop
    the import when the scopes are created."""
    from storage.types import Policy, ScopeKind

    sid = check_scope_id(rec.get("id"))
    kind = rec.get("kind") or sid.partition(":")[0]
    if kind not in {k.value for k in ScopeKind}:
        raise InvalidInput(f"unknown scope kind {shown(kind)}")
    for key in ("read_policy", "write_policy"):
        if rec.get(key) is not None and rec[key] not in {p.value for p in Policy}:
            raise InvalidInput(f"unknown {key} {shown(rec[key])}")
    members = rec.get("members") or []
    if not isinstance(members, list) or len(members) > 10_000:
        raise InvalidInput("members must be a list of at most 10,000 principals")
    out = {
        "id": sid,
        "kind": kind,
        "read_policy": rec.get("read_policy"),
        "write_policy": rec.get("write_policy"),
        "members": [check_name(m, "member", MAX_NAME_CHARS) for m in members],
    }
    for key in ("name", "owner"):
        if rec.get(key) not in (None, ""):
            out[key] = check_name(rec[key], f"scope {key}", MAX_NAME_CHARS)
    return out


async def ensure_scopes(store, scopes: Iterable[dict]) -> int:
    """Create the (validated: `scope_record`, `scope_for`) scopes of an import."""
    n = 0
    for s in scopes:
        sid = check_scope_id(s["id"])
        kind = s.get("kind") or sid.partition(":")[0]
        await store.ensure_scope(
            sid,
            kind,
            name=s.get("name"),
            owner=s.get("owner"),
            read_policy=s.get("read_policy"),
            write_policy=s.get("write_policy"),
            members=[m for m in s.get("members") or [] if isinstance(m, str)],
        )
        n += 1
    return n


def scope_for(scope_id: str) -> dict:
    """A scope record for an id seen only on facts: user:/agent: scopes are owned by their name."""
    kind, _, name = scope_id.partition(":")
    if kind in ("user", "agent"):
        return {"id": scope_id, "kind": kind, "owner": name if kind == "user" else scope_id}
    if kind in ("channel", "guild", "project", "public"):
        return {"id": scope_id, "kind": kind}
    return {"id": scope_id, "kind": "project"}


async def write_facts(
    store, facts: list[tuple[Any, dict, list, Any, Any]], report: ImportReport, *, actor: str
) -> None:
    """Insert facts [(source id, values, entities, supersedes source id, superseded_by source id)]
    in one transaction, skipping those already present (same scope, text and creation time, or the
    same non-empty source_ref in the scope); then remap supersede links."""
    if not facts:
        return
    now = store.clock()
    async with store.engines.writer.begin() as conn:
        new_ids: dict[Any, int] = {}
        for src_id, values, ents, _, _ in facts:
            q = select(FactRow.id).where(FactRow.scope_id == values["scope_id"])
            undated = values.pop("_undated", False)
            if values.get("source_ref") and str(values["source_ref"]).startswith("mem0:"):
                q = q.where(FactRow.source_ref == values["source_ref"])
            elif undated:  # no creation time in the file: the same text in the scope is the same fact
                q = q.where(FactRow.content == values["content"])
            else:
                q = q.where(FactRow.content == values["content"], FactRow.created_at == values["created_at"])
            existing = (await conn.execute(q.limit(1))).scalar()
            if existing is not None:
                report.skipped += 1
                if src_id is not None:
                    report.ids[src_id] = existing
                continue
            if values.get("slug"):
                taken = (
                    await conn.execute(
                        select(FactRow.id).where(FactRow.scope_id == values["scope_id"], FactRow.slug == values["slug"])
                    )
                ).scalar()
                if taken is not None or values["status"] != "active":
                    values = {**values, "slug": None}
            fid = (await conn.execute(insert(FactRow).values(**values).returning(FactRow.id))).scalar_one()
            await conn.execute(
                insert(FactHistoryRow).values(
                    fact_id=fid,
                    action="import",
                    actor=actor,
                    at=now,
                    old_content=None,
                    new_content=values["content"],
                    old_status=None,
                    new_status=values["status"],
                )
            )
            if values["status"] != "deleted":
                await conn.execute(insert(IndexJobRow).values(fact_id=fid, op="upsert", attempts=0, enqueued_at=now))
            cache: dict[str, int] = {}
            seen: set[int] = set()
            for name, etype in ents:
                eid = cache.get(name) or await conn.run_sync(upsert_entity, values["scope_id"], name, etype, now)
                cache[name] = eid
                if eid not in seen:
                    seen.add(eid)
                    await conn.execute(insert(FactEntityRow).values(fact_id=fid, entity_id=eid, role="mention"))
            report.imported += 1
            if src_id is not None:
                new_ids[src_id] = fid
                report.ids[src_id] = fid
        for src_id, _, _, sup, sup_by in facts:
            if src_id not in new_ids:
                continue
            links = {}
            if sup is not None and sup in report.ids:
                links["supersedes_id"] = report.ids[sup]
            if sup_by is not None and sup_by in report.ids:
                links["superseded_by_id"] = report.ids[sup_by]
            if links:
                await conn.execute(update(FactRow).where(FactRow.id == new_ids[src_id]).values(**links))
    store.indexer.notify()


def _named(value: Any, what: str) -> tuple[str, str | None]:
    """[name, type] (or a bare name) of a relation end."""
    name, etype = (
        (value, None) if not isinstance(value, list) else ((value or [None])[0], value[1] if len(value) > 1 else None)
    )
    return check_name(name, what, MAX_NAME_CHARS), etype if isinstance(etype, str) else None


def relation_record(rec: dict) -> dict:
    """Validate a `relation` record (InvalidInput naming the field)."""
    from storage.text import norm_name

    rel = norm_name(check_name(rec.get("relation"), "relation", 100)).replace(" ", "_")
    if not rel:
        raise InvalidInput(f"bad relation name {shown(rec.get('relation'))}")
    return {
        "scope": check_scope_id(rec.get("scope")),
        "source": _named(rec.get("source"), "relation source"),
        "relation": rel,
        "target": _named(rec.get("target"), "relation target"),
        "fact": _ref(rec.get("fact"), "fact"),
        "valid_from": parse_time(rec.get("valid_from"), "valid_from"),
        "valid_to": parse_time(rec.get("valid_to"), "valid_to"),
        "created_at": parse_time(rec.get("created_at"), "created_at"),
    }


def entity_record(rec: dict) -> dict:
    aliases = rec.get("aliases") or []
    if not isinstance(aliases, list) or len(aliases) > 100:
        raise InvalidInput("aliases must be a list of at most 100 names")
    etype = rec.get("entity_type")
    return {
        "scope": check_scope_id(rec.get("scope")),
        "name": check_name(rec.get("name"), "entity name", MAX_NAME_CHARS),
        "type": etype if isinstance(etype, str) else None,
        "aliases": [check_name(a, "alias", MAX_NAME_CHARS) for a in aliases],
    }


async def write_graph(store, entities: list[dict], relations: list[dict], report: ImportReport) -> int:
    """Recreate entities' aliases and relations (after the facts: fact links are remapped through
    `report.ids`). An identical relation (same scope, ends, name and start) is not added twice."""
    if not entities and not relations:
        return 0
    now = store.clock()
    added = 0
    async with store.engines.writer.begin() as conn:
        for e in entities:
            await conn.run_sync(upsert_entity, e["scope"], e["name"], e["type"], now, e["aliases"])
        for r in relations:
            sid = await conn.run_sync(upsert_entity, r["scope"], r["source"][0], r["source"][1], now)
            tid = await conn.run_sync(upsert_entity, r["scope"], r["target"][0], r["target"][1], now)
            q = select(RelationRow.id, RelationRow.valid_from).where(
                RelationRow.scope_id == r["scope"],
                RelationRow.source_id == sid,
                RelationRow.target_id == tid,
                RelationRow.relation == r["relation"],
            )
            since = r["valid_from"] or r["created_at"] or now
            if any(
                row.valid_from is not None and abs((aware(row.valid_from) - since).total_seconds()) < 1e-3
                for row in (await conn.execute(q)).all()
            ):
                continue
            await conn.execute(
                insert(RelationRow).values(
                    scope_id=r["scope"],
                    source_id=sid,
                    relation=r["relation"],
                    target_id=tid,
                    fact_id=report.ids.get(r["fact"]) if r["fact"] is not None else None,
                    valid_from=since,
                    valid_to=r["valid_to"],
                    created_at=r["created_at"] or now,
                )
            )
            added += 1
    return added


async def import_jsonl(store, path: Path, *, actor: str = "import") -> ImportReport:
    """Import a file written by `export_jsonl` (see the module docstring)."""
    report = ImportReport()
    scopes: dict[str, dict] = {}
    facts: list[tuple[Any, dict, list, Any, Any]] = []
    entities: list[dict] = []
    relations: list[dict] = []
    header_seen = False
    for n, rec in read_jsonl(Path(path)):
        report.read += 1
        try:
            if isinstance(rec, Exception):
                raise rec
            if not isinstance(rec, dict):
                raise InvalidInput("each line must be a JSON object")
            kind = rec.get("type")
            if kind == "header":
                version = rec.get("version", 0)
                if rec.get("format") != FORMAT or not isinstance(version, int) or version > VERSION:
                    raise InvalidInput(
                        f"not a {FORMAT} v{VERSION} export: {shown(rec.get('format'))} v{shown(rec.get('version'))}"
                    )
                header_seen = True
            elif kind == "scope":
                valid = scope_record(rec)
                scopes[valid["id"]] = valid
            elif kind == "fact":
                ids = [_ref(rec.get(k), k) for k in ("id", "supersedes", "superseded_by")]
                values = fact_values(rec, now=store.clock())
                if rec.get("created_at") in (None, ""):
                    values["_undated"] = True  # matched on scope and text only (see write_facts)
                facts.append((ids[0], values, _entities(rec), ids[1], ids[2]))
            elif kind == "relation":
                relations.append(relation_record(rec))
            elif kind == "entity":
                entities.append(entity_record(rec))
            else:
                raise InvalidInput(f"unknown record type {shown(kind)}")
        except (InvalidInput, TypeError, ValueError, OverflowError, RecursionError) as exc:
            report.failed += 1
            report.errors.append({"line": n, "error": str(exc)})
    if not header_seen and report.read:
        report.errors.insert(0, {"line": 0, "error": "no header line (imported anyway)"})
    for sid in [v["scope_id"] for _, v, *_ in facts] + [g["scope"] for g in entities + relations]:
        scopes.setdefault(sid, scope_for(sid))
    report.scopes = await ensure_scopes(store, scopes.values())
    await write_facts(store, facts, report, actor=actor)
    report.relations = await write_graph(store, entities, relations, report)
    return report
