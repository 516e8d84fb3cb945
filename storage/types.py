"""Plain value types returned by the store (no SQLAlchemy objects leak out)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum


class ScopeKind(StrEnum):
    USER = "user"
    CHANNEL = "channel"
    GUILD = "guild"
    PROJECT = "project"
    AGENT = "agent"
    PUBLIC = "public"


class Policy(StrEnum):
    """Who may read or write a scope: its owner only, its members (and owner), or anyone."""

    OWNER = "owner"
    MEMBERS = "members"
    PUBLIC = "public"


class FactKind(StrEnum):
    OBSERVATION = "observation"
    PREFERENCE = "preference"
    DECISION = "decision"
    PLAN = "plan"
    EVENT = "event"
    BIOGRAPHICAL = "biographical"
    ERROR = "error"
    INSIGHT = "insight"
    SUMMARY = "summary"
    NOTE = "note"
    QUESTION = "question"  # a question or small talk: kept as conversation, ranked after facts
    # Records (seed 003's typed memory): kept, listed and searchable on request (`kinds=`), but
    # never recalled into a conversation or listed by default (RECORD_KINDS).
    TOOL_EXECUTION = "tool_execution"  # an LLM tool call: arguments, result, duration, error
    SYSTEM = "system"  # an event of the system itself (not something a person said)


RECORD_KINDS = frozenset({FactKind.TOOL_EXECUTION.value, FactKind.SYSTEM.value})


class FactStatus(StrEnum):
    ACTIVE = "active"
    SUPERSEDED = "superseded"
    DELETED = "deleted"


@dataclass(slots=True)
class Scope:
    id: str
    kind: str
    name: str
    owner: str | None
    read_policy: str
    write_policy: str
    members: tuple[str, ...] = ()
    read_only: tuple[str, ...] = ()  # members granted read access only (scope_members.can_write = 0)


@dataclass(slots=True)
class Fact:
    id: int
    scope_id: str
    content: str
    kind: str
    status: str
    importance: float
    relevance: float
    access_count: int
    created_at: datetime
    updated_at: datetime
    valid_from: datetime | None = None
    valid_to: datetime | None = None
    slug: str | None = None
    speaker: str | None = None
    context: str | None = None
    supersedes_id: int | None = None
    superseded_by_id: int | None = None
    source_message_ids: list[int] = field(default_factory=list)
    source_ref: str | None = None
    created_by: str | None = None
    indexed_at: datetime | None = None
    last_accessed_at: datetime | None = None
    attr: str | None = None
    superseded_at: datetime | None = None

    def is_current(self, now: datetime) -> bool:
        """True while the fact holds: active and its world-time validity not over at `now`."""
        return self.status == FactStatus.ACTIVE and (self.valid_to is None or self.valid_to > now)


@dataclass(slots=True)
class RecallHit:
    """One recalled fact with its fused score and the signals that produced it.

    `signals` maps a signal name (`lexical`, `dense`, `entity`, `neighbour`, ...) to that signal's
    1-based rank or raw value, for provenance and debugging.
    """

    fact: Fact
    score: float
    signals: dict[str, float] = field(default_factory=dict)
    current: bool = True  # the fact holds at recall time (see Fact.is_current); else label it


@dataclass(slots=True)
class HistoryEntry:
    id: int
    fact_id: int
    action: str
    actor: str | None
    at: datetime
    old_content: str | None
    new_content: str | None
    old_status: str | None
    new_status: str | None


@dataclass(slots=True)
class BatchResult:
    """Outcome of a batch write: ids of saved items (None where failed) and per-item errors."""

    saved: int = 0
    failed: int = 0
    errors: list[dict] = field(default_factory=list)
    ids: list[int | None] = field(default_factory=list)
    outcomes: dict[int, str] = field(default_factory=dict)  # item index → "added"/"updated"/"unchanged" (slug items)

    def as_dict(self) -> dict:
        return {"saved": self.saved, "failed": self.failed, "errors": list(self.errors)}


@dataclass(slots=True)
class PurgeReport:
    """What a user's erasure removed: their facts, messages (and the bot's replies to them),
    entities, history rows, owned scopes and vectors; `redacted` = other people's rows (bot
    replies, summaries, agents' facts, contexts, aliases) whose copies of their words were cut."""

    facts: int = 0
    messages: int = 0
    entities: int = 0
    history: int = 0
    scopes: int = 0
    vectors: int = 0
    redacted: int = 0
