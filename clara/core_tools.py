"""The core's LLM tools — remember, recall, forget, remember_preference, recall_preference — bound
to one message's scopes and user, so the model can only touch what the person talking may touch
(checked in the store's queries). Preferences are slug-keyed facts `pref:<key>` in the user's scope."""

from __future__ import annotations

from typing import TYPE_CHECKING

from clara.labels import check_slug, importance_10, importance_from_10
from clara.llm import Tool, ToolSpec
from storage import StoreError

if TYPE_CHECKING:
    from clara.memory import MemoryManager, Where
    from clara.messages import IncomingMessage


def core_tools(memory: MemoryManager, msg: IncomingMessage, where: Where, used: set[int] | None = None) -> list[Tool]:
    """The core tools for one message. `used` (optional) collects the ids of the facts `recall`
    showed the model: the reply's provenance."""
    store = memory.store

    def _common(importance: float) -> dict:
        return dict(
            speaker=msg.display_name,
            importance=importance,
            actor=msg.user_id,
            created_by=msg.user_id,
            entities=[(msg.display_name, "person")],
        )

    async def remember(args: dict) -> str:
        try:
            importance = importance_from_10(args["importance"]) if "importance" in args else 0.7
            slug = check_slug(args["key"]) if args.get("key") else None
        except ValueError as exc:
            return f"error: {exc}"
        try:
            if slug is None:
                fid = await store.add(args["text"], where.user, kind="note", **_common(importance))
                return f"saved as #{fid} (private to {msg.display_name})"
            fid, outcome = await store.upsert(slug, args["text"], where.user, kind="note", **_common(importance))
        except StoreError as exc:
            return f"error: {exc}"
        return f"{outcome} #{fid} under key {slug!r} (private to {msg.display_name})"

    async def remember_preference(args: dict) -> str:
        try:
            key = check_slug(args["key"])
            importance = importance_from_10(args.get("importance", 8))
        except ValueError as exc:
            return f"error: {exc}"
        value = str(args["value"]).strip()
        try:
            fid, outcome = await store.upsert(
                f"pref:{key}",
                f"{msg.display_name}'s preference {key}: {value}",
                where.user,
                kind="preference",
                context=f"preference {key} = {value}",
                **_common(importance),
            )
        except StoreError as exc:
            return f"error: {exc}"
        return f"{outcome} preference {key!r} = {value!r} (#{fid}, private to {msg.display_name})"

    async def recall_preference(args: dict) -> str:
        try:
            key = check_slug(args["key"])
        except ValueError as exc:
            return f"error: {exc}"
        fact = await store.find_slug(where.user, f"pref:{key}")
        if fact is None or fact.status != "active":
            return f"no preference {key!r} saved for {msg.display_name}"
        value = (fact.context or "").partition(" = ")[2] or fact.content
        if used is not None:
            used.add(fact.id)
        return f"{key} = {value} [#{fact.id}, importance {importance_10(fact.importance)}/10]"

    async def recall(args: dict) -> str:
        try:
            hits = await memory.recall(args["query"], where, k=int(args.get("k", 5)))
        except StoreError as exc:
            return f"error: {exc}"
        if not hits:
            return "nothing found"
        if used is not None:
            used.update(h.fact.id for h in hits)
        store.note_access(h.fact.id for h in hits)
        return "\n".join(f"[#{h.fact.id}] {h.fact.content}" for h in hits)

    async def forget(args: dict) -> str:
        try:
            fact = await store.get(int(args["fact_id"]), scopes=where.readable)
            if fact.scope_id != where.user and fact.created_by != msg.user_id:
                return f"error: memory #{fact.id} is not {msg.display_name}'s to forget"
            await store.forget(fact.id, scopes=where.readable)
        except StoreError as exc:
            return f"error: {exc}"
        return f"forgot #{fact.id}"

    return [
        Tool(
            ToolSpec(
                "remember",
                "Save a note the user asked you to remember (private to them). With `key` (a short id "
                "such as favourite-color), saving the same key again updates that memory instead of adding "
                "another. `importance` is 1-10 (default 7).",
                {
                    "type": "object",
                    "properties": {
                        "text": {"type": "string", "minLength": 1},
                        "key": {"type": "string", "minLength": 1, "maxLength": 100},
                        "importance": {"type": "integer", "minimum": 1, "maximum": 10},
                    },
                    "required": ["text"],
                },
            ),
            remember,
        ),
        Tool(
            ToolSpec(
                "remember_preference",
                "Store one of the user's preferences under a key (e.g. key=preferred_time, value=morning); "
                "the same key again replaces the value. `importance` 1-10 (default 8).",
                {
                    "type": "object",
                    "properties": {
                        "key": {"type": "string", "minLength": 1, "maxLength": 100},
                        "value": {"type": "string", "minLength": 1, "maxLength": 2000},
                        "importance": {"type": "integer", "minimum": 1, "maximum": 10},
                    },
                    "required": ["key", "value"],
                },
            ),
            remember_preference,
        ),
        Tool(
            ToolSpec(
                "recall_preference",
                "Look up one of the user's saved preferences by its key.",
                {
                    "type": "object",
                    "properties": {"key": {"type": "string", "minLength": 1, "maxLength": 100}},
                    "required": ["key"],
                },
            ),
            recall_preference,
        ),
        Tool(
            ToolSpec(
                "recall",
                "Search your memories of this user and conversation.",
                {
                    "type": "object",
                    "properties": {
                        "query": {"type": "string", "minLength": 1},
                        "k": {"type": "integer", "minimum": 1, "maximum": 20},
                    },
                    "required": ["query"],
                },
            ),
            recall,
        ),
        Tool(
            ToolSpec(
                "forget",
                "Forget one memory by its id, when the user asks you to.",
                {"type": "object", "properties": {"fact_id": {"type": "integer"}}, "required": ["fact_id"]},
            ),
            forget,
        ),
    ]
