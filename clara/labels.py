"""How Clara says that a memory no longer holds: one wording for chat, `!recall`, `!about`, the LLM
context, MCP results and the dashboard."""

from __future__ import annotations

from datetime import datetime

from storage.types import Fact


def outdated_note(fact: Fact, now: datetime) -> str | None:
    """None while `fact` holds at `now`; else e.g. "no longer true: until Nov 2026" (world time
    when known, else when the store learnt it)."""
    if fact.is_current(now):
        return None
    until = fact.valid_to or fact.superseded_at or fact.updated_at
    return f"no longer true: until {until:%b %Y}" if until else "no longer true"


def with_note(fact: Fact, now: datetime) -> str:
    """The fact's text, with its outdated note in parentheses when it no longer holds."""
    note = outdated_note(fact, now)
    return f"{fact.content} ({note})" if note else fact.content


def current_first(facts: list[Fact], now: datetime) -> list[Fact]:
    """Stable order with every fact that holds before every one that no longer does."""
    return sorted(facts, key=lambda f: not f.is_current(now))
