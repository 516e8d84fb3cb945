"""The LLM extraction contract: prompts and a strict parser. No LLM calls here (the memory writer
calls the provider and falls back to `clara.extract.heuristics` when parsing fails twice).

Extraction output (strict JSON, one object)::

    {"facts": [{"action": "ADD" | "UPDATE" | "END" | "NOOP",
                "target_id": int | null,
                "content": str,          # one self-contained fact, explicit subject, no "I"/"my"
                "kind": str,             # one of FACT_KINDS
                "subject": str,          # who/what the fact is about
                "importance": int,       # 1 (mundane) … 10 (must never forget)
                "entities": [{"name": str, "type": str}],
                "relation": [subject, relation, object] | null,
                "event_date": "YYYY-MM-DD" | null}]}

Parser policy (`parse_extraction`), chosen to keep usable facts without accepting garbage:
- the JSON object may be wrapped in a ```json fence or surrounded by prose: the first JSON
  object in the text is used; anything else that does not validate raises
  `ExtractionParseError` with a message fit to send back to the model for one repair;
- wrong types are rejected (content must be a string, importance a number, entities a list…);
  extra keys are ignored;
- an unknown `kind` is mapped to "observation" (not rejected: an LLM inventing "fact" or
  "personal_info" should not sink the whole batch, and observation is the least committal
  kind); an unknown entity type is mapped to "thing";
- `action` is case-insensitive; UPDATE whose target_id is missing or not one of the existing
  facts shown is downgraded to ADD; ADD never carries a target_id; NOOP keeps its target only
  if it is known;
- importance (1–10; out-of-range values are clamped) is divided by 10 → [0.1, 1.0], the same
  scale as the offline `importance()`.
"""

from __future__ import annotations

import json
import re
from datetime import date, datetime
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError, field_validator

from .heuristics import _FIRST_PERSON_RE, FACT_KINDS, _is_question_start, is_chitchat, split_sentences
from .ner import DATE_RE, ENTITY_TYPES, extract_entities

__all__ = [
    "EXTRACTION_SYSTEM_PROMPT",
    "SUMMARY_SYSTEM_PROMPT",
    "ExtractedEntity",
    "ExtractedFact",
    "ExtractionParseError",
    "extraction_messages",
    "extractive_summary",
    "parse_extraction",
    "summary_messages",
]


class ExtractionParseError(ValueError):
    """The model's extraction output is not the JSON object the schema asks for."""


EXTRACTION_SYSTEM_PROMPT = f"""\
You extract long-term memories from a chat user's messages for a personal assistant's memory.

Rules:
- Use ONLY the user's messages given. The assistant's replies are not shown and must never be \
a source of facts. Do not guess or infer beyond what the user stated.
- One fact per item, self-contained, in the third person with an explicit subject: write the \
user's name instead of "I"/"me"/"my" (e.g. "alice moved to Porto", "alice's sister Anna lives \
in Lisbon"). Keep the user's meaning; no embellishment.
- Skip greetings, thanks, small talk, questions and requests to the assistant: they are not facts.
- kind is one of: {", ".join(FACT_KINDS)}.
  preference = likes/dislikes/allergies; decision = a choice made; plan = intention or future \
action; event = something that happened or will happen at a time; biographical = identity, \
home, work, family, pets; error = a problem/bug the user hit; insight = a lesson learned; \
note = something the user asked to be remembered; observation = anything else worth keeping.
- importance: integer 1-10, how costly it would be to forget (1 = mundane, 10 = critical, \
e.g. a severe allergy).
- entities: the named people, places, organisations, projects, pets, dates and things in the \
fact, each with a type from: {", ".join(ENTITY_TYPES)}.
- relation: for residence, work, family, ownership and similar state facts, a triple \
[subject, relation, object] with relation in lowercase snake_case (lives_in, works_at, sister, \
owns, ...); otherwise null.
- event_date: the absolute date (YYYY-MM-DD) the fact refers to when it has one, resolved \
against the current date given; null if none or unsure.
- For each fact decide against the EXISTING facts listed (id: content):
  ADD = new information (target_id null);
  UPDATE = it changes or replaces an existing fact (target_id = that fact's id; the new content \
must be the complete, current version);
  END = an existing fact is no longer true and nothing replaces it (target_id = that fact; \
content = the statement that ends it, e.g. "Alice sold her car");
  NOOP = already known (target_id = the fact that already says it).

Reply with ONE JSON object and nothing else:
{{"facts": [{{"action": "ADD|UPDATE|END|NOOP", "target_id": null, "content": "...", "kind": "...", \
"subject": "...", "importance": 5, "entities": [{{"name": "...", "type": "..."}}], \
"relation": null, "event_date": null}}]}}
If there is nothing worth remembering, reply {{"facts": []}}."""


def extraction_messages(
    user_turns: list[str], speaker: str, existing: list[tuple[int, str]], now: datetime
) -> list[dict]:
    """Chat messages for the extraction call: the system prompt, then one user message with
    the current date, the speaker's name, the similar existing facts (id, content) and the
    user's turns (only the user's — the assistant's words are never included)."""
    lines = [
        f"Current date: {now.strftime('%A')} {now.date().isoformat()}",
        f"User's name (use it as the subject instead of I/me/my): {speaker}",
        "",
        "EXISTING facts (id: content):",
    ]
    lines += [f"{fid}: {' '.join(str(content).split())}" for fid, content in existing] or ["(none)"]
    lines += ["", f"Messages from {speaker}:"]
    lines += [f"[{i}] {turn.strip()}" for i, turn in enumerate(user_turns, 1)]
    lines += ["", "Extract the facts as one JSON object."]
    return [{"role": "system", "content": EXTRACTION_SYSTEM_PROMPT}, {"role": "user", "content": "\n".join(lines)}]


# --------------------------------------------------------------------------- parsing
class ExtractedEntity(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    name: StrictStr = Field(min_length=1)
    type: StrictStr = "thing"

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        v = " ".join(v.split())
        if not v:
            raise ValueError("empty entity name")
        return v

    @field_validator("type")
    @classmethod
    def _type(cls, v: str) -> str:
        v = v.strip().lower()
        v = {
            "organization": "organisation",
            "org": "organisation",
            "location": "place",
            "animal": "pet",
            "people": "person",
            "time": "date",
        }.get(v, v)
        return v if v in ENTITY_TYPES else "thing"


class ExtractedFact(BaseModel):
    """One validated fact; `importance` is already scaled to [0.1, 1.0]."""

    model_config = ConfigDict(extra="ignore")

    action: Literal["ADD", "UPDATE", "END", "NOOP"] = "ADD"
    target_id: StrictInt | None = None
    content: StrictStr = Field(min_length=1)
    kind: StrictStr = "observation"
    subject: StrictStr = Field(min_length=1)
    importance: float
    entities: list[ExtractedEntity] = Field(default_factory=list)
    relation: tuple[StrictStr, StrictStr, StrictStr] | None = None
    event_date: date | None = None

    @field_validator("action", mode="before")
    @classmethod
    def _action(cls, v: Any) -> Any:
        return v.strip().upper() if isinstance(v, str) else v

    @field_validator("content", "subject")
    @classmethod
    def _text(cls, v: str) -> str:
        v = " ".join(v.split())
        if not v:
            raise ValueError("must not be blank")
        return v

    @field_validator("kind")
    @classmethod
    def _kind(cls, v: str) -> str:
        v = v.strip().lower()
        return v if v in FACT_KINDS else "observation"

    @field_validator("importance", mode="before")
    @classmethod
    def _importance(cls, v: Any) -> float:
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise ValueError("importance must be a number from 1 to 10")
        return max(1.0, min(10.0, float(v))) / 10.0

    @field_validator("relation", mode="before")
    @classmethod
    def _relation(cls, v: Any) -> Any:
        if v is None:
            return None
        if not isinstance(v, list | tuple) or len(v) != 3:
            raise ValueError("relation must be [subject, relation, object] or null")
        if any(not isinstance(x, str) or not x.strip() for x in v):
            raise ValueError("relation items must be non-empty strings")
        s, r, o = (" ".join(x.split()) for x in v)
        return (s, re.sub(r"[^0-9a-z]+", "_", r.lower()).strip("_") or r, o)

    @field_validator("event_date", mode="before")
    @classmethod
    def _event_date(cls, v: Any) -> Any:
        if v is None or v == "":
            return None
        if not isinstance(v, str) or not re.fullmatch(r"\d{4}-\d{2}-\d{2}", v.strip()):
            raise ValueError("event_date must be 'YYYY-MM-DD' or null")
        return v.strip()


class _Envelope(BaseModel):
    model_config = ConfigDict(extra="ignore")

    facts: list[ExtractedFact]


_FENCE_RE = re.compile(r"```(?:json|JSON)?\s*(.*?)```", re.DOTALL)


def _first_json_object(raw: str) -> Any:
    if not isinstance(raw, str) or not raw.strip():
        raise ExtractionParseError('empty output: expected a JSON object {"facts": [...]}')
    sources = [m.group(1) for m in _FENCE_RE.finditer(raw)] + [raw]
    decoder = json.JSONDecoder()
    for src in sources:
        for m in re.finditer(r"\{", src):
            try:
                obj, _ = decoder.raw_decode(src, m.start())
            except json.JSONDecodeError:
                continue
            if isinstance(obj, dict):
                return obj
    raise ExtractionParseError('no JSON object found: reply with a single JSON object {"facts": [...]}')


def _error_text(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(x) for x in err["loc"])
        parts.append(f"{loc}: {err['msg']}")
    more = f" (+{len(exc.errors()) - 5} more)" if len(exc.errors()) > 5 else ""
    return "; ".join(parts) + more


def parse_extraction(raw: str, *, existing_ids: set[int]) -> list[ExtractedFact]:
    """Validate the model's extraction output (see the module docstring for the policy).
    Raises ExtractionParseError with a message naming the offending fields."""
    obj = _first_json_object(raw)
    if "facts" not in obj:
        raise ExtractionParseError("missing key 'facts': expected {\"facts\": [...]}")
    try:
        env = _Envelope.model_validate(obj)
    except ValidationError as exc:
        raise ExtractionParseError(f"schema violation: {_error_text(exc)}") from None
    out: list[ExtractedFact] = []
    for f in env.facts:
        known = f.target_id is not None and f.target_id in existing_ids
        if f.action in ("UPDATE", "END") and not known:
            f = f.model_copy(update={"action": "ADD", "target_id": None})
        elif f.action == "ADD" and f.target_id is not None:
            f = f.model_copy(update={"target_id": None})
        elif f.action == "NOOP" and not known:
            f = f.model_copy(update={"target_id": None})
        out.append(f)
    return out


# --------------------------------------------------------------------------- summaries
SUMMARY_SYSTEM_PROMPT = """\
You summarise a finished chat session for a personal assistant's long-term memory.
Write 2-6 short sentences in the third person, naming people explicitly (no "I"/"you").
Keep what matters later: facts the users stated about themselves and others, decisions, plans \
with dates, problems and how they were resolved, open questions. Attribute each point to who \
said it. Skip greetings and small talk. Do not add anything that was not said.
Reply with the summary text only."""


def summary_messages(turns: list[tuple[str, str]]) -> list[dict]:
    """Chat messages for a session summary of (speaker, text) turns."""
    transcript = "\n".join(f"{spk}: {' '.join(str(text).split())}" for spk, text in turns if str(text).strip())
    return [
        {"role": "system", "content": SUMMARY_SYSTEM_PROMPT},
        {"role": "user", "content": f"Session transcript:\n{transcript or '(empty)'}\n\nSummary:"},
    ]


ASSISTANT_SPEAKERS = frozenset({"assistant", "clara", "bot", "system", "ai"})
_STOP = frozenset(
    """a an the and or but if so to of in on at by for from with about as into over after before is are was
    were be been being am do does did have has had i me my we our you your he she it they them his her their
    this that these those there here what which who when where why how not no yes just also very really can
    could will would should shall may might must ok okay thanks thank lol yeah yep hi hello hey""".split()
)


def _terms(text: str) -> list[str]:
    return [w for w in re.findall(r"[a-z0-9]+(?:'[a-z]+)?", text.lower()) if w not in _STOP and len(w) > 1]


def extractive_summary(turns: list[tuple[str, str]], max_sentences: int = 5) -> str:
    """Offline summary of (speaker, text) turns: the `max_sentences` most informative
    sentences, in their original order, each as "speaker: sentence" on its own line.

    Score = √(0.5 + LexRank-style centrality) (PageRank over the TF-IDF cosine graph of the
    sentences, mean 1: sentences sharing vocabulary with the rest of the session rank high; the
    square root keeps one-off facts competitive) × an
    information boost: ×1.5 for a user's (non-assistant) sentence, +0.3 each for a named
    entity, a date, and a first-person statement; questions ×0.3; greetings/acknowledgements
    and sentences without content words are dropped. Selection is greedy and redundancy-aware:
    each pick discounts the rest by their similarity to it (×(1 − 0.7·cos)), near-duplicates
    (cos > 0.8) are skipped. Deterministic (ties by position); "" for no content."""
    items: list[tuple[str, str]] = []
    for speaker, text in turns:
        text = str(text or "")
        for s, e in split_sentences(text):
            sent = " ".join(text[s:e].split())
            if len(sent) > 600:
                sent = sent[:600].rsplit(" ", 1)[0] + "…"
            if is_chitchat(sent) or len(_terms(sent)) == 0:
                continue
            items.append((str(speaker), sent))
    if not items or max_sentences <= 0:
        return ""
    n = len(items)
    docs = [_terms(s) for _, s in items]
    vocab = {w: i for i, w in enumerate(sorted({w for d in docs for w in d}))}
    tf = np.zeros((n, len(vocab)))
    for r, d in enumerate(docs):
        for w in d:
            tf[r, vocab[w]] += 1.0
    df = (tf > 0).sum(axis=0)
    idf = np.log((1 + n) / (1 + df)) + 1.0
    x = tf * idf
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    x = np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)
    sim = x @ x.T
    np.fill_diagonal(sim, 0.0)
    if n > 1 and sim.sum() > 0:
        rows = sim.sum(axis=1, keepdims=True)
        trans = np.divide(sim, rows, out=np.full_like(sim, 1.0 / n), where=rows > 0)
        rank = np.full(n, 1.0 / n)
        for _ in range(50):
            new = 0.15 / n + 0.85 * trans.T @ rank
            if np.abs(new - rank).sum() < 1e-9:
                rank = new
                break
            rank = new
        centrality = rank * n  # mean 1
    else:
        centrality = np.ones(n)
    scores = np.zeros(n)
    for r, (speaker, sent) in enumerate(items):
        info = 1.0
        is_user = speaker.strip().lower() not in ASSISTANT_SPEAKERS
        if is_user:
            info *= 1.5
        ents = extract_entities(sent, backend="rules")
        if any(e.type != "date" for e in ents):
            info += 0.3
        if DATE_RE.search(sent):
            info += 0.3
        if is_user and _FIRST_PERSON_RE.search(sent):
            info += 0.3
        if sent.rstrip().endswith("?") or _is_question_start(sent):
            info *= 0.3
        scores[r] = np.sqrt(0.5 + centrality[r]) * info * min(1.0, 0.4 + 0.1 * len(docs[r]))
    # greedy, redundancy-aware selection (MMR-like): a sentence's score is discounted by its
    # similarity to what was already chosen; near-duplicates (cosine > 0.8) are skipped
    chosen: list[int] = []
    left = set(range(n))
    while left and len(chosen) < max_sentences:

        def gain(r: int) -> float:
            overlap = max((float(sim[r, c]) for c in chosen), default=0.0)
            return -1.0 if overlap > 0.8 else round(float(scores[r]) * (1.0 - 0.7 * overlap), 12)

        best = max(sorted(left), key=lambda r: (gain(r), -r))
        if gain(best) < 0:
            break
        chosen.append(best)
        left.discard(best)
    return "\n".join(f"{items[r][0]}: {items[r][1]}" for r in sorted(chosen))
