"""The core's LLM tools — remember, recall, forget — bound to one message's scopes and user, so
the model can only touch what the person talking may touch (checked in the store's queries)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from clara.llm import Tool, ToolSpec
from storage import StoreError

if TYPE_CHECKING:
    from clara.memory import MemoryManager, Where
    from clara.messages import IncomingMessage


def core_tools(memory: MemoryManager, msg: IncomingMessage, where: Where, used: set[int] | None = None) -> list[Tool]:
    """The three tools for one message. `used` (optional) collects the ids of the facts `recall`
    showed the model: the reply's provenance."""
    store = memory.store

    async def remember(args: dict) -> str:
        try:
            fid = await store.add(
                args["text"],
                where.user,
                kind="note",
                speaker=msg.display_name,
                importance=0.7,
                actor=msg.user_id,
                created_by=msg.user_id,
                entities=[(msg.display_name, "person")],
            )
        except StoreError as exc:
            return f"error: {exc}"
        return f"saved as #{fid} (private to {msg.display_name})"

    async def recall(args: dict) -> str:
        try:
            hits = await memory.recall(args["query"], where, k=int(args.get("k", 5)))
        except StoreError as exc:
            return f"error: {exc}"
        if not hits:
            return "nothing found"
        if used is not None:
            used.update(h.fact.id for h in hits)
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
                "Save a note the user asked you to remember (private to them).",
                {"type": "object", "properties": {"text": {"type": "string", "minLength": 1}}, "required": ["text"]},
            ),
            remember,
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
