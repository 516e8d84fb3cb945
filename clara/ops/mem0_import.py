"""`clara import mem0`: bring memories from a mem0 installation into Clara's store.

Sources (mem0ai itself is never imported: its data is read directly):

- a mem0 **Platform JSON export** (a list of memories, `{"results": [...]}` / `{"memories": [...]}`,
  or JSON Lines) with `id`, `memory`, `user_id`, `agent_id`, `created_at`, `updated_at`,
  `metadata`, `categories`;
- a mem0 **open-source store**: its Qdrant collection in local path mode (`vector_store.config.path`,
  collection `mem0` by default; payload keys `data`, `hash`, `user_id`, `agent_id`, `run_id`,
  `created_at`, `updated_at` and custom metadata) read with qdrant-client, plus optionally its
  SQLite history DB (`history` table: memory_id, old_memory, new_memory, event ADD/UPDATE/DELETE).
  Memories whose last event is DELETE are skipped; earlier versions from UPDATE events become
  superseded facts linked to the current one.

Scopes: `user_id` → `user:<user_id>`, else `agent_id` → `agent:<agent_id>`, else `--default-scope`.
Provenance: `source_ref = "mem0:<id>"` (older versions `mem0:<id>#v<n>`), `created_at`/`updated_at`
preserved, `created_by` = the agent for agent-written memories. Re-running skips what is present.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime
from pathlib import Path
from typing import Any

from clara.labels import check_slug
from clara.ops.portable import ImportReport, ensure_scopes, parse_time, scope_for, write_facts
from storage.errors import InvalidInput
from storage.text import MAX_FACT_CHARS, check_scope_id, clean_text, shown

RESERVED = {
    "data",
    "memory",
    "text",
    "content",
    "hash",
    "user_id",
    "agent_id",
    "run_id",
    "actor_id",
    "role",
    "app_id",
    "created_at",
    "updated_at",
    "metadata",
    "categories",
    "id",
    "score",
}


def _json_line(line: str) -> Any:
    try:
        return json.loads(line)
    except json.JSONDecodeError as exc:
        return InvalidInput(f"not JSON: {exc.msg}")
    except RecursionError:
        return InvalidInput("not JSON this program can read: nested too deeply")


def load_export(path: Path) -> list:
    """Memories from a Platform export (JSON, or JSON Lines where an unreadable line becomes an
    InvalidInput in its place, reported by `build`). Raises InvalidInput for a file that is neither."""
    raw = Path(path).read_text(encoding="utf-8", errors="replace")
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, RecursionError):
        data = [_json_line(line) for line in raw.splitlines() if line.strip()]
        if data and all(isinstance(d, Exception) for d in data):
            raise InvalidInput(f"{path} is neither JSON nor JSON Lines") from None
    if isinstance(data, dict):
        for key in ("results", "memories", "data", "items"):
            if isinstance(data.get(key), list):
                data = data[key]
                break
        else:
            raise InvalidInput(f"{path}: expected a list of memories (or results/memories)")
    if not isinstance(data, list):
        raise InvalidInput(f"{path}: expected a list of memories")
    return data


def load_qdrant(path: Path, collection: str = "mem0") -> list[dict]:
    """Every point payload of a mem0 Qdrant collection stored in local path mode."""
    from qdrant_client import QdrantClient

    if not Path(path).is_dir():
        raise InvalidInput(f"no Qdrant directory at {path}")
    client = QdrantClient(path=str(path))
    try:
        names = {c.name for c in client.get_collections().collections}
        if collection not in names:
            raise InvalidInput(f"no collection {collection!r} in {path} (found: {', '.join(sorted(names)) or 'none'})")
        out: list[dict] = []
        offset = None
        while True:
            points, offset = client.scroll(collection, limit=256, offset=offset, with_payload=True, with_vectors=False)
            for p in points:
                out.append({"id": str(p.id), **(p.payload or {})})
            if offset is None:
                break
        return out
    finally:
        client.close()


def load_history(path: Path) -> dict[str, list[dict]]:
    """memory_id → its history events, oldest first (mem0's SQLite history DB)."""
    if not Path(path).is_file():
        raise InvalidInput(f"no history database at {path}")
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    try:
        cols = {r[1] for r in conn.execute("PRAGMA table_info(history)")}
        if not {"memory_id", "event"} <= cols:
            raise InvalidInput(f"{path} has no mem0 history table")
        order = "created_at, rowid" if "created_at" in cols else "rowid"
        events: dict[str, list[dict]] = {}
        for r in conn.execute(f"SELECT * FROM history ORDER BY {order}"):
            events.setdefault(str(r["memory_id"]), []).append(dict(r))
        return events
    finally:
        conn.close()


def scope_of(mem: dict, default_scope: str | None) -> tuple[str, str | None]:
    """(scope id, created_by) for one memory. Raises InvalidInput when it has no owner."""
    user, agent = mem.get("user_id"), mem.get("agent_id")
    for what, value in (("user_id", user), ("agent_id", agent)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, str | int)):
            raise InvalidInput(f"{what} must be text, got {type(value).__name__}")
    if user not in (None, ""):
        agent_scope = check_scope_id(f"agent:{agent}") if agent not in (None, "") else None
        return check_scope_id(f"user:{user}"), agent_scope
    if agent not in (None, ""):
        sid = check_scope_id(f"agent:{agent}")
        return sid, sid
    if default_scope:
        return check_scope_id(default_scope), None
    raise InvalidInput("memory has neither user_id nor agent_id (pass --default-scope)")


def _context(mem: dict) -> str | None:
    parts = []
    cats = mem.get("categories")
    if isinstance(cats, list) and cats:
        parts.append("mem0 categories: " + ", ".join(str(c) for c in cats))
    meta = mem.get("metadata") if isinstance(mem.get("metadata"), dict) else {}
    extra = {k: v for k, v in mem.items() if k not in RESERVED and isinstance(v, str | int | float | bool)}
    extra.update({k: v for k, v in meta.items() if isinstance(v, str | int | float | bool)})
    if mem.get("run_id"):
        extra["run_id"] = mem["run_id"]
    if extra:
        parts.append("mem0 metadata: " + json.dumps(extra, ensure_ascii=False, sort_keys=True))
    # Checked like any fact's context (NUL, invalid Unicode, length: refused with the limit, never cut).
    return clean_text("; ".join(parts), "mem0 categories and metadata", MAX_FACT_CHARS) if parts else None


def _slug(mem: dict) -> str | None:
    """The memory's `metadata.slug` (seed 002's keyed memories), as Clara keys it (case-folded,
    like `!remember key=` and MCP `slug`); None when absent."""
    meta = mem.get("metadata") if isinstance(mem.get("metadata"), dict) else {}
    raw = meta.get("slug")
    if raw in (None, ""):
        return None
    if not isinstance(raw, str):
        raise InvalidInput(f"metadata.slug must be text, got {type(raw).__name__}")
    try:
        return check_slug(raw)
    except ValueError:
        return clean_text(raw.strip(), "metadata.slug", 200)


def _text(mem: dict) -> Any:
    for key in ("memory", "data", "text", "content"):
        if mem.get(key) not in (None, ""):
            return mem[key]
    return None


def build(
    memories: list[dict],
    history: dict[str, list[dict]] | None,
    default_scope: str | None,
    report: ImportReport,
    now: datetime,
) -> tuple[dict[str, dict], list]:
    """Validated (scopes, facts) ready for `write_facts`; `now` dates memories that carry no time."""
    scopes: dict[str, dict] = {}
    facts: list = []
    for i, mem in enumerate(memories):
        report.read += 1
        try:
            if isinstance(mem, Exception):
                raise mem
            if not isinstance(mem, dict):
                raise InvalidInput("a memory must be an object")
            raw_id = mem.get("id")
            if isinstance(raw_id, bool) or raw_id is not None and not isinstance(raw_id, str | int):
                raise InvalidInput(f"a memory id must be text, got {type(raw_id).__name__}")
            mid = str(raw_id or "").strip()
            if not mid:
                raise InvalidInput("memory without an id")
            if len(mid) > 180:  # kept whole in source_ref (mem0:<id>#v<n>, 200 characters)
                raise InvalidInput(f"memory id is too long: {len(mid):,} characters (max 180)")
            events = (history or {}).get(mid, [])
            if events and str(events[-1].get("event", "")).upper() == "DELETE":
                report.skipped += 1
                continue
            sid, created_by = scope_of(mem, default_scope)
            created = parse_time(mem.get("created_at"), "created_at")
            if created is None and events:
                created = parse_time(events[0].get("created_at"), "created_at")
            updated = parse_time(mem.get("updated_at"), "updated_at") or created
            base = dict(
                scope_id=sid,
                context=_context(mem),
                kind="observation",
                slug=None,
                importance=0.5,
                relevance=1.0,
                access_count=0,
                speaker=None,
                created_by=created_by,
            )
            # Earlier versions (UPDATE events) → superseded facts chained to the current one.
            versions = [e for e in events if str(e.get("event", "")).upper() == "UPDATE" and e.get("old_memory")]
            chain: list[tuple[str, dict]] = []
            start = created
            for n, e in enumerate(versions, 1):
                at = parse_time(e.get("created_at") or e.get("updated_at"), "history created_at") or updated
                chain.append(
                    (
                        f"mem0:{mid}#v{n}",
                        {
                            **base,
                            "content": clean_text(e["old_memory"], "memory", MAX_FACT_CHARS),
                            "status": "superseded",
                            "source_ref": f"mem0:{mid}#v{n}",
                            "created_at": start or at,
                            "updated_at": at,
                            "valid_from": start or at,
                            "valid_to": at,
                        },
                    )
                )
                start = at
            current = {
                **base,
                "slug": _slug(mem),  # metadata.slug: a later keyed write updates this fact
                "content": clean_text(_text(mem), "memory", MAX_FACT_CHARS),
                "status": "active",
                "source_ref": f"mem0:{mid}",
                "created_at": created or updated,
                "updated_at": updated or created,
                "valid_from": start or created,
                "valid_to": None,
            }
            if current["created_at"] is None:
                current["created_at"] = current["updated_at"] = current["valid_from"] = now
            chain.append((f"mem0:{mid}", current))
            for n, (ref, values) in enumerate(chain):
                prev = chain[n - 1][0] if n else None
                nxt = chain[n + 1][0] if n + 1 < len(chain) else None
                facts.append((ref, values, [], prev, nxt))
            scopes.setdefault(sid, scope_for(sid))
        except (InvalidInput, TypeError, ValueError, OverflowError) as exc:
            report.failed += 1
            ident = mem.get("id") if isinstance(mem, dict) else None
            report.errors.append({"index": i, "id": shown(ident) if ident is not None else None, "error": str(exc)})
    return scopes, facts


async def import_mem0(
    store,
    *,
    export: Path | None = None,
    qdrant_path: Path | None = None,
    collection: str = "mem0",
    history_db: Path | None = None,
    default_scope: str | None = None,
) -> ImportReport:
    """Import from a Platform export file or a Qdrant path (+ history DB). Raises InvalidInput."""
    if (export is None) == (qdrant_path is None):
        raise InvalidInput("give either an export file or a Qdrant path")
    if export is not None:
        memories = load_export(export)
        history = load_history(history_db) if history_db else None
    else:
        import asyncio

        memories = await asyncio.to_thread(load_qdrant, qdrant_path, collection)
        if history_db is None:
            guess = Path(qdrant_path).parent / "history.db"
            history_db = guess if guess.is_file() else None
        history = load_history(history_db) if history_db else None
    report = ImportReport()
    scopes, facts = build(memories, history, default_scope, report, store.clock())
    report.scopes = await ensure_scopes(store, scopes.values())
    await write_facts(store, facts, report, actor="import:mem0")
    return report
