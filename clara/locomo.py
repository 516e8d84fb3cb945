"""Reader for LoCoMo-format conversations (Maharana et al., ACL 2024).

Accepts a file holding one conversation as a flat object (`speaker_a`, `speaker_b`, `session_N`,
`session_N_date_time`, `qa`), an object with a `conversation` key (the upstream `locomo10.json`
sample shape, with `sample_id`), or a list of either. Only the raw turns are read: the dataset's
generated observations, summaries and event annotations are ignored.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

_SESSION = re.compile(r"^session_(\d+)$")


@dataclass(slots=True)
class Turn:
    dia_id: str
    speaker: str
    text: str
    session: int
    index: int
    time: datetime | None
    caption: str | None = None

    @property
    def content(self) -> str:
        """`"{speaker}: {text}"` plus `" [shares {caption}]"` when the turn shared an image."""
        base = f"{self.speaker}: {self.text}"
        return f"{base} [shares {self.caption}]" if self.caption else base


@dataclass(slots=True)
class Question:
    question: str
    answer: str
    evidence: list[str]
    category: int


@dataclass(slots=True)
class Conversation:
    id: str
    speakers: tuple[str, str]
    turns: list[Turn] = field(default_factory=list)
    questions: list[Question] = field(default_factory=list)

    def scored_questions(self) -> list[Question]:
        """Questions of categories 1-4 with evidence (category 5 is adversarial: skipped)."""
        return [q for q in self.questions if q.category in (1, 2, 3, 4) and q.evidence]


def parse_time(value: str | None) -> datetime | None:
    """Parse LoCoMo's '1:56 pm on 8 May, 2023' (falls back to dateparser for other spellings)."""
    if not value:
        return None
    for fmt in ("%I:%M %p on %d %B, %Y", "%I:%M %p on %d %b, %Y"):
        try:
            return datetime.strptime(value.strip(), fmt).replace(tzinfo=UTC)
        except ValueError:
            pass
    import dateparser

    parsed = dateparser.parse(value, settings={"TIMEZONE": "UTC", "RETURN_AS_TIMEZONE_AWARE": True})
    return parsed


def _conversation(obj: dict, fallback_id: str) -> Conversation:
    conv = obj.get("conversation", obj)
    if not isinstance(conv, dict) or "speaker_a" not in conv:
        raise ValueError(f"{fallback_id}: not a LoCoMo conversation (no speaker_a)")
    cid = str(obj.get("sample_id") or fallback_id)
    out = Conversation(cid, (conv["speaker_a"], conv.get("speaker_b", "")))
    sessions = sorted(int(m.group(1)) for k in conv if (m := _SESSION.match(k)))
    for n in sessions:
        turns = conv.get(f"session_{n}") or []
        when = parse_time(conv.get(f"session_{n}_date_time"))
        for i, t in enumerate(turns):
            text = (t.get("text") or "").strip()
            if not text:
                continue
            out.turns.append(
                Turn(str(t["dia_id"]), t.get("speaker", "?"), text, n, i, when, t.get("blip_caption") or None)
            )
    for q in obj.get("qa", conv.get("qa", [])) or []:
        ev = q.get("evidence") or []
        out.questions.append(
            Question(
                str(q.get("question", "")),
                str(q.get("answer", q.get("adversarial_answer", ""))),
                [str(e).strip() for e in ev if isinstance(e, str)],
                int(q.get("category", 0)),
            )
        )
    return out


def load(path: str | Path) -> list[Conversation]:
    """All conversations in one file. Raises ValueError for files not in LoCoMo format."""
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{p}: cannot read JSON ({exc})") from exc
    items = data if isinstance(data, list) else [data]
    if len(items) == 1:
        return [_conversation(items[0], p.stem)]
    return [_conversation(o, f"{p.stem}-{i}") for i, o in enumerate(items)]


def expand(paths: list[str | Path]) -> Iterator[Path]:
    """Files named, and `*.json` files inside directories named, in sorted order."""
    for path in paths:
        p = Path(path)
        if p.is_dir():
            yield from sorted(p.glob("*.json"))
        else:
            yield p


def turn_items(conv: Conversation, context_turns: int = 1) -> list[dict]:
    """`FactStore.add_many` items for a conversation's turns: content as in the benchmark metric,
    the speaker as entity, the session time as valid_from, the dia_id as source_ref, and the
    previous turn(s) of the same session as retrieval context."""
    items = []
    for i, t in enumerate(conv.turns):
        prev = (
            [p.content for p in conv.turns[max(0, i - context_turns) : i] if p.session == t.session]
            if context_turns
            else []
        )
        items.append(
            {
                "content": t.content,
                "speaker": t.speaker,
                "entities": [t.speaker],
                "valid_from": t.time,
                "source_ref": t.dia_id,
                "context": "\n".join(prev) or None,
            }
        )
    return items


async def ingest(store, conv: Conversation, on_batch=None, batch: int = 500) -> list[dict]:
    """Store a conversation's turns in scope `locomo:<id>` (created if missing) with
    `FactStore.add_many`; `on_batch(saved)` is called after each batch. Returns the per-turn
    errors (with `index` relative to the conversation)."""
    scope = f"locomo:{conv.id}"
    await store.ensure_scope(scope, "channel", name=f"LoCoMo {conv.id}")
    items = turn_items(conv)
    errors = []
    for start in range(0, len(items), batch):
        res = await store.add_many(items[start : start + batch], scope)
        errors += [{**e, "index": start + e["index"]} for e in res.errors]
        if on_batch:
            on_batch(res.saved)
    return errors
