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
    # Turns (or session dates) that could not be read: {"index": "session N turn i", "error": ...};
    # reported by `ingest` with the store's own refusals.
    skipped: list[dict] = field(default_factory=list)

    def scored_questions(self) -> list[Question]:
        """Questions of categories 1-4 with evidence (category 5 is adversarial: skipped)."""
        return [q for q in self.questions if q.category in (1, 2, 3, 4) and q.evidence]


def parse_time(value: str | None) -> datetime | None:
    """Parse LoCoMo's '1:56 pm on 8 May, 2023' (falls back to dateparser for other spellings).
    None when absent; ValueError for a value that is no date (e.g. '31 February')."""
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > 100:
        raise ValueError(f"not a date: {value!r:.60}")
    for fmt in ("%I:%M %p on %d %B, %Y", "%I:%M %p on %d %b, %Y"):
        try:
            return datetime.strptime(value.strip(), fmt).replace(tzinfo=UTC)
        except ValueError:
            pass
    import dateparser

    try:
        parsed = dateparser.parse(value, settings={"TIMEZONE": "UTC", "RETURN_AS_TIMEZONE_AWARE": True})
    except (ValueError, OverflowError, TypeError) as exc:
        raise ValueError(f"not a date: {value!r:.60}") from exc
    if parsed is None:
        raise ValueError(f"not a date: {value!r:.60}")
    return parsed


def _label(value: object, what: str, most: int = 200) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError(f"{what} must be text, got {type(value).__name__}")
    text = str(value).strip()
    if not text or len(text) > most:
        raise ValueError(f"{what} must be 1-{most} characters, got {len(text):,}")
    return text


def _conversation(obj: object, fallback_id: str) -> Conversation:
    """One conversation. ValueError (one line) if `obj` is not a LoCoMo conversation at all; turns
    and session dates that cannot be read are listed in `skipped` and the rest is kept."""
    from storage.text import check_scope_id

    conv = obj.get("conversation", obj) if isinstance(obj, dict) else None
    if not isinstance(conv, dict) or "speaker_a" not in conv:
        raise ValueError(f"{fallback_id}: not a LoCoMo conversation (no speaker_a)")
    cid = _label(obj.get("sample_id") or fallback_id, f"{fallback_id}: sample_id", 100)
    check_scope_id(f"locomo:{cid}")  # InvalidInput (a ValueError) names it
    speakers = tuple(
        _label(conv.get(k) or "?", f"{fallback_id}: {k}", 200) if conv.get(k) is not None else ""
        for k in ("speaker_a", "speaker_b")
    )
    out = Conversation(cid, speakers)
    sessions = sorted(int(m.group(1)) for k in conv if isinstance(k, str) and (m := _SESSION.match(k)) and len(k) < 20)
    for n in sessions:
        turns = conv.get(f"session_{n}") or []
        if not isinstance(turns, list):
            out.skipped.append({"index": f"session {n}", "error": f"session_{n} is not a list of turns"})
            continue
        try:
            when = parse_time(conv.get(f"session_{n}_date_time"))
        except ValueError as exc:
            when = None
            out.skipped.append(
                {"index": f"session {n}", "error": f"session_{n}_date_time: {exc} (its turns are kept without a time)"}
            )
        for i, t in enumerate(turns):
            try:
                if not isinstance(t, dict):
                    raise ValueError(f"a turn must be an object, got {type(t).__name__}")
                text = t.get("text")
                if text is None or isinstance(text, str) and not text.strip():
                    continue
                if not isinstance(text, str):
                    raise ValueError(f"text must be text, got {type(text).__name__}")
                caption = t.get("blip_caption") or None
                if caption is not None and not isinstance(caption, str):
                    raise ValueError(f"blip_caption must be text, got {type(caption).__name__}")
                turn = Turn(
                    _label(t.get("dia_id"), "dia_id", 100),
                    _label(t.get("speaker", "?"), "speaker", 200),
                    text.strip(),
                    n,
                    i,
                    when,
                    caption,
                )
            except ValueError as exc:
                out.skipped.append({"index": f"session {n}, turn {i}", "error": str(exc)})
                continue
            out.turns.append(turn)
    qa = obj.get("qa", conv.get("qa", [])) or []
    for q in qa if isinstance(qa, list) else []:
        if not isinstance(q, dict):
            continue  # questions are only read by `clara bench locomo`: a malformed one is not scored
        ev = q.get("evidence") or []
        try:
            category = int(q.get("category", 0))
        except (TypeError, ValueError, OverflowError):
            continue
        out.questions.append(
            Question(
                str(q.get("question", "")),
                str(q.get("answer", q.get("adversarial_answer", ""))),
                [str(e).strip() for e in ev if isinstance(e, str)] if isinstance(ev, list) else [],
                category,
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
    except RecursionError:
        raise ValueError(f"{p}: cannot read JSON (nested too deeply)") from None
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
    errors = list(conv.skipped)
    for start in range(0, len(items), batch):
        res = await store.add_many(items[start : start + batch], scope)
        errors += [{**e, "index": start + e["index"]} for e in res.errors]
        if on_batch:
            on_batch(res.saved)
    return errors
