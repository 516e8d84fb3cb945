"""Context assembly: what the LLM sees for one incoming message.

Blocks, in prompt order, each with its own token budget (counted with `clara.tokens`):
persona → user memories (the speaker's private scope) → shared memories (the channel's and other
readable scopes) → project memories → channel summary → entities → previous-session summary →
recent messages (carry-over + this session) → the new message. Facts are de-duplicated
across blocks (by id, by normalised text, and against the turns already in "recent messages"), and
every item keeps its provenance (fact id, scope, kind, age) so `!context` can show where each line
came from.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

import humanize

from clara.labels import current_first, with_note
from clara.llm import ChatMessage
from clara.tokens import count_tokens, truncate_tokens
from storage.sessions import Turn
from storage.text import norm_name
from storage.types import Fact


@dataclass(slots=True)
class Budgets:
    """Token budget per block (defaults sum to ~6K tokens: fits any current chat model). The
    persona's is a guide only: it is never truncated (`!context` shows it over budget)."""

    persona: int = 500
    user_memories: int = 700
    shared_memories: int = 300
    project_memories: int = 400
    channel_summary: int = 300
    entities: int = 300
    session_summary: int = 300
    recent_messages: int = 1800
    new_message: int = 1200


@dataclass(slots=True)
class Item:
    text: str
    source: str
    fact_id: int | None = None
    tokens: int = 0


@dataclass(slots=True)
class Block:
    name: str
    title: str
    budget: int
    items: list[Item] = field(default_factory=list)
    dropped: int = 0

    @property
    def tokens(self) -> int:
        return sum(i.tokens for i in self.items)


@dataclass(slots=True)
class AssembledContext:
    blocks: list[Block]
    messages: list[ChatMessage]

    @property
    def total_tokens(self) -> int:
        return sum(b.tokens for b in self.blocks)

    def block(self, name: str) -> Block:
        return next(b for b in self.blocks if b.name == name)

    def fact_ids(self) -> set[int]:
        return {i.fact_id for b in self.blocks for i in b.items if i.fact_id is not None}

    def render(self, max_chars: int = 1800) -> str:
        """A human-readable account for `!context`: blocks, token counts, provenance."""
        lines = [f"Context: {self.total_tokens} tokens in {len(self.blocks)} blocks"]
        for b in self.blocks:
            more = f", {b.dropped} dropped for budget" if b.dropped else ""
            lines.append(f"■ {b.title}: {b.tokens}/{b.budget} tokens, {len(b.items)} items{more}")
            for item in b.items[:6]:
                lines.append(f"   · {item.text[:90]}{'…' if len(item.text) > 90 else ''}  ⟨{item.source}⟩")
            if len(b.items) > 6:
                lines.append(f"   · … {len(b.items) - 6} more")
        text = "\n".join(lines)
        return text if len(text) <= max_chars else text[: max_chars - 1] + "…"


def fact_source(f: Fact, now: datetime) -> str:
    when = f.valid_from or f.created_at
    return f"#{f.id} {f.scope_id} {f.kind}, {humanize.naturaltime(now - when)}"


def _bullet(item: Item) -> str:
    """One list item; the lines of a multi-line memory (e.g. an extractive summary) are indented
    under it, so none of them reads as a line of the prompt of its own ("Alice: ..." at the start
    of a line looks like a turn)."""
    text = "\n  ".join(line.strip() for line in item.text.splitlines() if line.strip())
    return f"- {text} [{item.source.split(' ')[0]}]" if item.fact_id else f"- {text}"


class ContextBuilder:
    def __init__(self, budgets: Budgets | None = None):
        self.budgets = budgets or Budgets()

    def build(
        self,
        *,
        persona: str,
        now: datetime,
        speaker: str,
        new_message: str,
        is_dm: bool,
        user_facts: Iterable[Fact] = (),
        shared_facts: Iterable[Fact] = (),
        project: str | None = None,
        project_facts: Iterable[Fact] = (),
        channel_summary: Fact | None = None,
        entity_lines: Iterable[tuple[str, str]] = (),
        session_summary: Fact | None = None,
        recent: Iterable[Turn] = (),
    ) -> AssembledContext:
        """Assemble the blocks and the chat messages. Pure (no I/O); ~1 ms for a full context.

        `user_facts` are the speaker's own (private scope) memories, `shared_facts` those of the
        conversation's and other readable scopes (e.g. what others said in the channel): they get
        separate blocks so the model never reads another person's words as facts about the speaker."""
        b = self.budgets
        recent = list(recent)
        in_recent = {t.id for t in recent}
        # The channel summary and the previous session's summary have blocks of their own: recall
        # hits in the blocks before them must not claim them first.
        seen_ids: set[int] = {f.id for f in (channel_summary, session_summary) if f is not None}
        seen_text: set[str] = set()

        def fact_items(facts: Iterable[Fact], *, designated: bool = False) -> list[Item]:
            # What holds now first (the budget drops from the end), what no longer holds labelled.
            out = []
            for f in current_first(list(facts), now):
                key = norm_name(f.content)
                if (f.id in seen_ids and not designated) or key in seen_text:
                    continue
                if f.kind == "observation" and f.source_message_ids and set(f.source_message_ids) <= in_recent:
                    continue  # the turn itself is already in "recent messages"
                seen_ids.add(f.id)
                seen_text.add(key)
                out.append(Item(with_note(f, now), fact_source(f, now), f.id))
            return out

        blocks = [Block("persona", "Persona", b.persona, [Item(persona, "settings: CLARA_PERSONA")])]
        blocks.append(Block("user_memories", f"What you know about {speaker}", b.user_memories))
        blocks[-1].items = fact_items(user_facts)
        blocks.append(Block("shared_memories", "Shared memories", b.shared_memories))
        blocks[-1].items = fact_items(shared_facts)
        blocks.append(Block("project_memories", f"Project {project}" if project else "Project", b.project_memories))
        blocks[-1].items = fact_items(project_facts)
        blocks.append(
            Block(
                "channel_summary",
                "Channel summary",
                b.channel_summary,
                fact_items([channel_summary] if channel_summary else [], designated=True),
            )
        )
        blocks.append(
            Block(
                "entities",
                "People, places and things mentioned",
                b.entities,
                [Item(text, src) for text, src in entity_lines],
            )
        )
        blocks.append(
            Block(
                "session_summary",
                "Summary of your previous conversation",
                b.session_summary,
                fact_items([session_summary] if session_summary else [], designated=True),
            )
        )
        turns = Block("recent_messages", "Recent messages", b.recent_messages)
        turns.items = [Item(f"{t.speaker}: {t.content}", f"message {t.id} ({t.role})", None) for t in recent]
        blocks.append(turns)
        blocks.append(Block("new_message", "New message", b.new_message, [Item(new_message, "incoming message")]))

        for block in blocks:
            if block.name == "persona":  # the operator's instructions and rules go whole, never cut
                for item in block.items:
                    item.tokens = count_tokens(item.text)
                continue
            self._fit(block, newest_last=block.name == "recent_messages")
        # History that opens with a reply (its question fell outside the carry-over or the budget)
        # starts at the first user turn instead: a reply to nothing misleads the model, and the
        # Anthropic API rejects a conversation whose first turn is the assistant's.
        while turns.items and turns.items[0].source.endswith("(assistant)"):
            turns.items.pop(0)
            turns.dropped += 1

        persona_block = blocks[0]
        memory_blocks = [mb for mb in blocks[1:] if mb.name not in ("recent_messages", "new_message")]
        # The persona (and its rules) opens the system message; the user's words are only ever a
        # `user` turn below, never system text.
        system = [persona_block.items[0].text if persona_block.items else ""]
        for mb in memory_blocks:
            if mb.items:
                system.append(f"\n## {mb.title}")
                system += [_bullet(i) for i in mb.items]
        system.append(f"\nNow: {now:%A %Y-%m-%d %H:%M} UTC. Conversation: {'direct message' if is_dm else 'channel'}.")
        messages = [ChatMessage(role="system", content="\n".join(system).strip())]
        kept = {item.source for item in turns.items}
        for t in recent:
            if f"message {t.id} ({t.role})" not in kept:
                continue
            if t.role == "assistant":
                messages.append(ChatMessage(role="assistant", content=t.content))
            else:
                messages.append(ChatMessage(role="user", content=t.content if is_dm else f"{t.speaker}: {t.content}"))
        new = blocks[-1].items[0].text if blocks[-1].items else ""
        messages.append(ChatMessage(role="user", content=new if is_dm else f"{speaker}: {new}"))
        return AssembledContext(blocks, messages)

    @staticmethod
    def _fit(block: Block, *, newest_last: bool) -> None:
        """Keep items in order until the budget is spent; for recent messages keep the newest.
        A single item larger than the whole budget is truncated rather than dropped."""
        items = list(reversed(block.items)) if newest_last else list(block.items)
        kept, used = [], 0
        for item in items:
            item.tokens = count_tokens(item.text)
            if used + item.tokens > block.budget or (newest_last and block.dropped):
                if not kept and block.budget > 0:
                    item.text = truncate_tokens(item.text, block.budget)
                    item.tokens = count_tokens(item.text)
                    kept.append(item)
                    used += item.tokens
                    continue
                block.dropped += 1
                continue
            kept.append(item)
            used += item.tokens
        block.items = list(reversed(kept)) if newest_last else kept
