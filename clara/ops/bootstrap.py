"""`clara memory bootstrap PROFILE.txt --user U [--apply]` (MyPalClara's `bootstrap_memory`) and
`clara memory clear` (its `clear_dbs.py`).

Bootstrap reads a profile written in the first person ("I live in Porto. My sister is Anna. I work
at Acme."), runs the offline extractor (`clara.extract.candidate_facts`: no LLM, no network) over
it as the user's own words, and either prints the facts it would store (dry run, JSON) or stores
them in `user:<id>` with their entities and relations. Keyed facts (a slug such as
`alice/residence`) replace the one holding the key; a fact already present is left alone, so
applying the same profile twice stores nothing new.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from sqlalchemy import delete, select

from storage.errors import InvalidInput
from storage.models import (
    EntityRow,
    FactEntityRow,
    FactHistoryRow,
    FactRow,
    HandoffRow,
    IndexJobRow,
    MemoryJobRow,
    MessageRow,
    RelationRow,
    ScopeMemberRow,
    ScopeRow,
    SessionRow,
)
from storage.text import norm_name

MAX_PROFILE_BYTES = 1_000_000


def read_profile(path: Path) -> str:
    """The profile's text; InvalidInput for an empty, binary or oversized file (OSError if unreadable)."""
    data = Path(path).read_bytes()
    if len(data) > MAX_PROFILE_BYTES:
        raise InvalidInput(f"{path}: profile too large ({len(data):,} bytes, at most {MAX_PROFILE_BYTES:,})")
    if b"\x00" in data:
        raise InvalidInput(f"{path}: not a text file")
    text = data.decode("utf-8", errors="replace").strip()
    if not text:
        raise InvalidInput(f"{path}: the profile is empty")
    return text


def _entities(c) -> list[list[str]]:
    return list(dict.fromkeys((e.name, e.type) for e in c.entities))


async def plan(store, text: str, user: str) -> list[dict[str, Any]]:
    """The facts the offline extractor finds in `text` said by `user`, as they would be stored."""
    from clara.extract import candidate_facts
    from clara.writer import _remap_slug

    now = store.clock()
    cands = await asyncio.to_thread(candidate_facts, text, speaker=user, speaker_id=user, now=now)
    out = []
    for c in cands:
        out.append(
            {
                "content": c.content,
                "kind": c.kind,
                "importance": round(float(c.importance), 3),
                "scope": f"user:{user}",
                # The chat writer's keys ("alice/residence"), so a later "I moved to Lisbon" replaces it.
                "slug": _remap_slug(c.slug) if c.slug else None,
                "entities": [list(e) for e in _entities(c)],
                "relation": list(c.relation) if c.relation else None,
            }
        )
    return out


async def apply(store, facts: list[dict[str, Any]], user: str) -> dict[str, Any]:
    """Store the planned facts in `user:<user>` (owner `user`). Returns counts and the fact ids."""
    scope = f"user:{user}"
    await store.ensure_scope(scope, "user", name=user, owner=user)
    added, updated, unchanged, ids = 0, 0, 0, []
    for f in facts:
        fid = None
        if f["slug"]:
            old = await store.find_slug(scope, f["slug"])
            if old is not None and old.content == f["content"]:
                unchanged += 1
                ids.append(old.id)
                continue
            if old is not None:
                fid = await store.supersede(
                    old.id, f["content"], actor=user, kind=f["kind"], importance=f["importance"]
                )
                updated += 1
        if fid is None and not f["slug"]:
            async with store.engines.reader.connect() as conn:
                same = (
                    await conn.execute(
                        select(FactRow.id).where(
                            FactRow.scope_id == scope, FactRow.content == f["content"], FactRow.status == "active"
                        )
                    )
                ).scalar()
            if same is not None:
                unchanged += 1
                ids.append(same)
                continue
        if fid is None:
            fid = await store.add(
                f["content"],
                scope,
                kind=f["kind"],
                importance=f["importance"],
                entities=[tuple(e) for e in f["entities"]],
                speaker=user,
                created_by=user,
                source_ref="bootstrap",
                slug=f["slug"],
                actor=user,
            )
            added += 1
        ids.append(fid)
        rel = f.get("relation")
        if rel and len(rel) == 3 and all(norm_name(str(x)) for x in rel):
            s, r, o = (str(x) for x in rel)
            otype = next((t for n, t in f["entities"] if norm_name(n) == norm_name(o)), "thing")
            await store.graph.relate(scope, (s, "person"), r, (o, otype), fact_id=fid, single_valued=bool(f["slug"]))
    return {"scope": scope, "added": added, "updated": updated, "unchanged": unchanged, "fact_ids": ids}


# Children before parents (foreign keys), every memory table of the core.
CLEAR_ORDER = (
    HandoffRow,
    FactEntityRow,
    RelationRow,
    FactHistoryRow,
    IndexJobRow,
    MemoryJobRow,
    SessionRow,
    EntityRow,
    FactRow,
    MessageRow,
    ScopeMemberRow,
    ScopeRow,
)


async def clear_all(store) -> dict[str, int]:
    """Erase every memory: facts, history, entities, relations, messages, sessions, queued memory
    work, handoffs, scopes and their members, and the vector index; then compact so no deleted
    text stays on disk. Settings, scheduled jobs and plugins' own tables are kept."""
    counts: dict[str, int] = {}
    async with store.engines.writer.begin() as conn:
        for model in CLEAR_ORDER:
            counts[model.__tablename__] = (await conn.execute(delete(model))).rowcount
    await store.index.clear()
    await store.compact()
    return counts
