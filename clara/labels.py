"""How Clara says that a memory no longer holds: one wording for chat, `!recall`, `!about`, the LLM
context, MCP results and the dashboard."""

from __future__ import annotations

import re
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


# ------------------------------------------------------------------ importance and slugs
# Importance is stored in [0, 1]; people and agents see and set it on the seeds' 1–10 scale.
def importance_10(value: float) -> int:
    """A stored importance (0..1) on the 1–10 scale."""
    return max(1, min(10, round(float(value) * 10)))


def importance_from_10(value: object) -> float:
    """A 1–10 importance (a number, or text such as "8") as stored (0.1..1.0). ValueError otherwise."""
    problem = ValueError(f"importance is a number from 1 to 10, not {str(value)[:20]!r}")
    if isinstance(value, bool):
        raise problem
    try:
        n = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise problem from None
    if not 1 <= n <= 10:  # NaN fails too
        raise problem
    return round(n / 10, 3)


_SLUG = re.compile(r"[\w][\w.:/-]{0,99}")


def check_slug(value: object) -> str:
    """A memory key as people and agents type it ("favourite-color", "company_tax_regime",
    "pref:preferred_time"): 1–100 letters, digits, `_ . : / -`, case-folded. ValueError otherwise."""
    s = str(value or "").strip().lower()
    if not _SLUG.fullmatch(s):
        raise ValueError(
            f"{str(value)[:40]!r} is not a valid key (1–100 letters, digits, _ . : / -; e.g. favourite-color)"
        )
    return s
