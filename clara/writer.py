"""The memory write path, run by the worker after the reply (never on the reply's path).

For each user turn (the bot's own words are never mined):
1. the raw turn becomes an `observation` fact in the conversation's scope (idempotent: slug
   `msg:<id>`), linked to the speaker and the entities found in it — so nothing is lost even if
   every later step fails;
2. typed facts are extracted with an explicit subject — by the LLM when one is configured (strict
   JSON, one repair retry, then the offline path), else by `clara.extract.heuristics`;
3. each candidate is compared with similar existing facts → ADD, UPDATE (supersede; the old fact
   and its history stay) or NOOP. Keyed attributes ("alice/lives_in") supersede by slug; other
   facts are de-duplicated by a content slug and a near-duplicate embedding check;
4. entities are linked with types, relations recorded with validity (a new "lives_in" closes the
   old one), and aliases like "alice's sister" attached.

Where a fact goes: about the speaker → their private user scope; decisions/plans/errors/insights
while a project is active → the project scope; anything else → the conversation's scope.
Session summaries (and the channel summary) are written here too.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from clara.llm import ChatMessage, LLMError, LLMProvider
from storage import FactStore, InvalidInput
from storage.cpu import run_background
from storage.jobs import Job
from storage.sessions import SUMMARY_JOB
from storage.text import MAX_NAME_CHARS, norm_name

log = logging.getLogger(__name__)

EXTRACT_JOB = "extract"
PROJECT_KINDS = frozenset({"decision", "plan", "error", "insight"})
NEAR_DUPLICATE = 0.92  # cosine above which a new fact is taken as already known


@dataclass(slots=True)
class Proposal:
    """One candidate fact, whichever extractor produced it."""

    content: str
    kind: str
    subject: str
    importance: float
    action: str = "ADD"
    target_id: int | None = None
    entities: list[tuple[str, str]] = field(default_factory=list)
    relation: tuple[str, str, str] | None = None
    slug: str | None = None
    event_date: date | None = None
    attr: str | None = None  # (subject, attribute) key: "alice/residence"


@dataclass(slots=True)
class Outcome:
    action: str
    fact_id: int | None
    content: str


def _entity_pairs(items: Any) -> list[tuple[str, str]]:
    out = []
    for e in items or []:
        if isinstance(e, dict):
            out.append((str(e.get("name", "")), str(e.get("type", "thing"))))
        elif isinstance(e, tuple | list):
            out.append((str(e[0]), str(e[1]) if len(e) > 1 else "thing"))
        else:
            out.append((str(getattr(e, "name", e)), str(getattr(e, "type", "thing"))))
    # A "name" longer than any entity name (an extractor's or a model's mistake) is no entity: skipped
    # here, because the store refuses it rather than cutting it.
    return [(n, t) for n, t in out if norm_name(n) and len(n) <= MAX_NAME_CHARS]


def content_slug(kind: str, content: str) -> str:
    return "auto:" + hashlib.sha1(f"{kind}|{norm_name(content)}".encode()).hexdigest()[:20]


class MemoryWriter:
    def __init__(self, store: FactStore, llm: LLMProvider | None = None, *, llm_timeout: float = 60.0):
        self.store = store
        self.llm = llm
        self.llm_timeout = llm_timeout
        self.on_session_closed = None  # async callable(session), e.g. plugin event fan-out

    async def process(self, job: Job) -> None:
        """Do one queued job. Raises on transient failure (the queue retries with backoff)."""
        if job.kind == EXTRACT_JOB:
            await self.extract(job.payload)
        elif job.kind == SUMMARY_JOB:
            await self.summarize_session(job.payload["session_id"])
        else:
            log.warning("unknown memory job kind %r dropped", job.kind)

    # ------------------------------------------------------------------ extraction
    async def extract(self, p: dict[str, Any]) -> list[Outcome]:
        from clara.extract import candidate_facts, extract_entities, relationship_mentions

        turn = await self.store.sessions.message(p["message_id"])
        if turn is None:  # erased (forgetme) before we got to it
            return []
        name, user_id = p["display_name"], p["user_id"]
        conv, user_scope, project = p["conversation_scope"], p["user_scope"], p.get("project_scope")
        when = datetime.fromisoformat(p["timestamp"])
        text = turn.content
        mentions = await run_background(extract_entities, text, speaker=name)
        writable = [s for s in dict.fromkeys([user_scope, conv, project]) if s]
        ents = await self._resolve([(name, "person"), *_entity_pairs(mentions)], writable)
        previous = [t for t in await self.store.sessions.turns(p["session_id"], 3) if t.id < turn.id]
        context = f"{previous[-1].speaker}: {previous[-1].content}" if previous else None
        asked = await run_background(is_only_questions, text)
        obs_id = await self.store.add(
            f"{name}: {text}",
            conv,
            # A question or small talk stays conversation (provenance, history), never an answer.
            kind="question" if asked else "observation",
            importance=0.3,
            speaker=name,
            context=context[:2000] if context else None,
            entities=ents,
            source_message_ids=[turn.id],
            created_by=user_id,
            valid_from=when,
            slug=f"msg:{turn.id}",
        )
        outcomes = [Outcome("ADD", obs_id, text)]
        proposals: list[Proposal] | None = None
        if self.llm is not None:
            proposals = await self._llm_proposals(text, name, writable, when)
        if proposals is None:
            cands = await run_background(candidate_facts, text, speaker=name, speaker_id=user_id, now=when)
            proposals = [
                Proposal(
                    content=c.content,
                    kind=c.kind,
                    subject=c.subject,
                    importance=float(c.importance),
                    entities=_entity_pairs(c.entities),
                    relation=tuple(c.relation) if c.relation else None,
                    slug=c.slug,
                    event_date=c.event_date,
                )
                for c in cands
                if c.kind != "observation"
            ]
        names = [n for n, t in ents if t == "person"]
        proposals = await self._key_changes(proposals, text, name, user_id, names, writable)
        for prop in proposals:
            prop.entities = await self._resolve(prop.entities, writable)
            try:
                outcomes.append(await self._apply(prop, name, user_id, user_scope, conv, project, turn.id, when))
            except InvalidInput as exc:  # one bad candidate must not sink the others
                log.warning("candidate fact rejected: %s", exc)
        for rel, other in await run_background(relationship_mentions, text):
            alias = f"{name}'s {rel}"
            if len(alias) > MAX_NAME_CHARS or len(other) > MAX_NAME_CHARS:
                continue  # no entity has such a name (the store refuses it rather than cut it)
            for scope in dict.fromkeys([user_scope, conv]):
                await self.store.graph.add_alias(scope, other, alias, "person")
        return outcomes

    async def _resolve(self, pairs: list[tuple[str, str]], scopes: list[str]) -> list[tuple[str, str]]:
        """Map mentions onto entities already known in these scopes, by name or alias: "alice's
        sister" becomes "Anna" once Alice has said "my sister Anna"."""
        out = []
        for name, etype in pairs:
            known = await self.store.graph.resolve(scopes, name)
            if known and norm_name(known[0].name) != norm_name(name):
                out.append((known[0].name, known[0].type if known[0].type != "thing" else etype))
            else:
                out.append((name, etype))
        return list(dict.fromkeys(out))

    async def _llm_proposals(self, text: str, name: str, writable: list[str], when: datetime) -> list[Proposal] | None:
        """LLM extraction + ADD/UPDATE/NOOP decision. None means "use the offline path"."""
        from clara.extract import ExtractionParseError, extraction_messages, parse_extraction

        similar = await self.store.recall(text, writable, k=8, bump=False)
        existing = [(h.fact.id, h.fact.content) for h in similar if h.fact.kind not in ("observation", "summary")]
        messages = [
            ChatMessage(role=m["role"], content=m["content"]) for m in extraction_messages([text], name, existing, when)
        ]
        ids = {i for i, _ in existing}
        for attempt in range(2):
            try:
                done = await self.llm.complete(
                    messages, tier="low", json_mode=True, max_tokens=1200, timeout=self.llm_timeout
                )
                facts = parse_extraction(done.text, existing_ids=ids)
            except ExtractionParseError as exc:
                if attempt == 0:
                    messages += [
                        ChatMessage(role="assistant", content=done.text[:4000]),
                        ChatMessage(
                            role="user",
                            content=f"That was not valid: {exc}. Reply with the JSON "
                            "object only, exactly in the schema.",
                        ),
                    ]
                    continue
                log.warning("extraction output unusable twice; using the offline extractor")
                return None
            except LLMError as exc:
                log.warning("LLM extraction failed (%s); using the offline extractor", exc)
                return None
            return [
                Proposal(
                    content=f.content,
                    kind=f.kind,
                    subject=f.subject,
                    importance=float(f.importance),
                    action=f.action,
                    target_id=f.target_id,
                    entities=_entity_pairs(f.entities),
                    relation=tuple(f.relation) if f.relation else None,
                    event_date=f.event_date,
                )
                for f in facts
            ]
        return None

    async def _apply(
        self,
        prop: Proposal,
        name: str,
        user_id: str,
        user_scope: str,
        conv: str,
        project: str | None,
        message_id: int,
        when: datetime,
    ) -> Outcome:
        if prop.action == "NOOP":
            return Outcome("NOOP", prop.target_id, prop.content)
        about_speaker = norm_name(prop.subject) in {norm_name(name), norm_name(user_id), "i", "me", "user"}
        if about_speaker and prop.kind not in PROJECT_KINDS or (about_speaker and not project):
            scope = user_scope
        elif project and prop.kind in PROJECT_KINDS:
            scope = project
        else:
            scope = conv
        content = prop.content
        if prop.event_date and prop.event_date.isoformat() not in content:
            content = f"{content} (on {prop.event_date.isoformat()})"
        ents = list(
            dict.fromkeys([(prop.subject, "person") if about_speaker else (prop.subject, "thing"), *prop.entities])
        )
        ents = [e for e in ents if norm_name(e[0])]
        # The relation in plain words ("alice lives in Porto") is searchable context for "moved to Porto".
        rel_text = " ".join(str(x).replace("_", " ") for x in prop.relation) if prop.relation else None
        common = dict(
            kind=prop.kind,
            importance=max(0.0, min(1.0, prop.importance)),
            source_message_ids=[message_id],
            context=rel_text,
        )
        writable = [s for s in (user_scope, conv, project) if s]

        # UPDATE replaces a fact; END says it stopped being true: either way the statement becomes
        # the current version (the old one keeps its history, ended when this was said).
        if prop.action in ("UPDATE", "END") and prop.target_id:
            got = await self.store.get_many([prop.target_id], scopes=writable)
            if got and got[0].status == "active":
                if norm_name(got[0].content) == norm_name(content):
                    return Outcome("NOOP", got[0].id, content)
                fid = await self.store.supersede(
                    got[0].id, content, valid_from=when, attr=prop.attr, speaker=name, **common
                )
                await self._outdate_sources(got[0], writable, when, fid, message_id)
                await self._relate(prop, got[0].scope_id, fid, when)
                return Outcome("UPDATE", fid, content)
        if prop.slug:
            existing = await self.store.find_slug(scope, prop.slug)
            if existing is not None and existing.status == "active":
                if norm_name(existing.content) == norm_name(content):
                    return Outcome("NOOP", existing.id, content)
                fid = await self.store.supersede(
                    existing.id, content, valid_from=when, attr=prop.attr, speaker=name, **common
                )
                await self._outdate_sources(existing, writable, when, fid, message_id)
                await self._relate(prop, scope, fid, when)
                return Outcome("UPDATE", fid, content)
        else:
            for hit in await self.store.recall(content, [scope], k=3, kinds=[prop.kind], bump=False):
                same = norm_name(hit.fact.content) == norm_name(content)
                if same or hit.signals.get("dense", 0.0) >= NEAR_DUPLICATE:
                    return Outcome("NOOP", hit.fact.id, content)
        fid = await self.store.add(
            content,
            scope,
            speaker=name,
            entities=ents,
            created_by=user_id,
            valid_from=when,
            slug=prop.slug or content_slug(prop.kind, content),
            attr=prop.attr,
            **common,
        )
        await self._relate(prop, scope, fid, when)
        return Outcome("ADD", fid, content)

    # ------------------------------------------------------------------ change detection
    async def _key_changes(
        self,
        proposals: list[Proposal],
        text: str,
        name: str,
        user_id: str,
        names: list[str],
        writable: list[str],
    ) -> list[Proposal]:
        """Key every statement about a subject's attribute as "<subject>/<attribute>"
        (clara.extract.attributes): a keyed proposal supersedes the current holder of its key,
        whatever the language and whether it gives a new value or only ends the old one. Offline
        candidates with their own attribute slugs take the same keys; LLM proposals are keyed
        from their text; statements no proposal covers ("Me mudé a Santiago", "I quit") become
        proposals of their own."""
        from clara.extract.attributes import statements

        known = await self.store.graph.names(writable)  # people named before, however typed now
        stmts = await run_background(statements, text, [name, *names, *known])
        keyed: dict[str, Proposal] = {}
        for st in stmts:
            key = await self.attribute_key(st.subject, st.attribute, name, user_id, writable)
            # A short turn is kept whole ("new job! I'm at Orbital Games now"): its sentences
            # belong together; a long one keeps the sentence that states the attribute.
            said = text if len(text) <= 240 else st.sentence
            keyed[key] = Proposal(
                content=statement_text(said, name, st.subject),
                kind="preference" if st.attribute in PREFERENCE_ATTRIBUTES else "biographical",
                subject=name if st.subject is None else st.subject.removeprefix("kin:"),
                importance=0.7,
                slug=key,
                attr=key,
            )
        if not stmts:  # "I don't do chess anymore": ends the state it names, if one is keyed
            keyed.update(await self._ended_keys(text, name, user_id, [name, *names, *known], writable))
        out: list[Proposal] = []
        taken: set[str] = set()
        for prop in proposals:
            key = None
            if prop.slug:
                key = _remap_slug(prop.slug)
            elif prop.action in ("ADD", "UPDATE", "END"):
                own = await run_background(statements, prop.content, [name, prop.subject])
                if len(own) == 1:
                    # The turn's own statement of that attribute names its subject more reliably
                    # than a rewrite ("Maya and I broke up" → "Maya and Cy broke up").
                    said = [k for k in keyed if k.endswith(f"/{own[0].attribute}")]
                    subj = own[0].subject
                    if subj is not None and norm_name(subj) in (norm_name(name), norm_name(user_id)):
                        subj = None
                    key = (
                        said[0]
                        if len(said) == 1
                        else await self.attribute_key(subj, own[0].attribute, name, user_id, writable)
                    )
            if key is not None:
                if key in taken:
                    continue  # one statement per key and turn: two would supersede each other
                taken.add(key)
                prop.attr = key
                if not (prop.action in ("UPDATE", "END") and prop.target_id):  # inherits its slug
                    prop.slug = key
                keyed.pop(key, None)  # the same statement found twice: the extractor's text wins
            out.append(prop)
        return out + [p for k, p in keyed.items() if k not in taken]

    async def _ended_keys(
        self, text: str, name: str, user_id: str, names: list[str], writable: list[str]
    ) -> dict[str, Proposal]:
        """A turn no rule keys that says a state ended ("I don't do chess anymore", "ya no estoy
        en Energías del Sur", "gave up on Spanish"): if its words (names aside) name the value of
        exactly one keyed fact the speaker told, that key ends — {key: the ending statement};
        else nothing (never a guess between two)."""
        from clara.extract.attributes import ended_values, fold, sentences

        ended: set[str] = set()
        for s, e in sentences(text):
            ended |= ended_values(text[s:e]) or set()
        ended -= {w for n in names if n for w in fold(n).split()}
        if not ended:
            return {}
        facts = await self.store.list_facts(writable, created_by=user_id, limit=200)
        hit = {
            f.attr: f for f in facts if f.attr and ended & set(re.findall(r"[a-z0-9][a-z0-9'\-]{2,}", fold(f.content)))
        }
        if len(hit) != 1:
            return {}
        key = next(iter(hit))
        parts = key.split("/")
        subject = None if parts[0] == user_id and len(parts) == 2 else parts[-2]
        said = text if len(text) <= 240 else text[:240]
        return {
            key: Proposal(
                content=statement_text(said, name, subject),
                kind="preference" if parts[-1] in PREFERENCE_ATTRIBUTES else "biographical",
                subject=name if subject is None else subject,
                importance=0.7,
                slug=key,
                attr=key,
            )
        }

    async def attribute_key(
        self, subject: str | None, attribute: str, name: str, user_id: str, scopes: list[str]
    ) -> str:
        """ "<subject>/<attribute>": the speaker by user id, a person by name, an unnamed relative
        by the person it resolves to in `scopes` ("alice's sister" → anna) or else by the word."""
        if subject is None or norm_name(subject) in (norm_name(name), norm_name(user_id)):
            return f"{user_id}/{attribute}"
        if subject.startswith("kin:"):
            kin = subject[4:]
            known = await self.store.graph.resolve(scopes, f"{name}'s {kin}")
            return f"{slug_key(known[0].name)}/{attribute}" if known else f"{user_id}/{slug_key(kin)}/{attribute}"
        return f"{slug_key(subject)}/{attribute}"

    async def _outdate_sources(self, old, scopes: list[str], when: datetime, by_fact_id: int, current: int) -> None:
        """The raw turns a superseded statement came from no longer hold either: mark them
        outdated (kept for history and provenance; recall ranks and labels them)."""
        sources = [m for m in old.source_message_ids if m != current]
        if not sources:
            return
        turns = await self.store.facts_by_slugs(scopes, [f"msg:{m}" for m in sources])
        # The summaries of the sessions they were said in quote them too.
        summaries = await self.store.sessions.summary_fact_ids(sources)
        await self.store.outdate([t.id for t in turns] + summaries, until=when, by_fact_id=by_fact_id)

    async def _relate(self, prop: Proposal, scope: str, fact_id: int, when: datetime) -> None:
        if not prop.relation or len(prop.relation) != 3:
            return
        s, r, o = (str(x) for x in prop.relation)
        if not (norm_name(s) and norm_name(r) and norm_name(o)):
            return
        otype = next((t for n, t in prop.entities if norm_name(n) == norm_name(o)), "thing")
        await self.store.graph.relate(
            scope,
            (s, "person"),
            r,
            (o, otype),
            fact_id=fact_id,
            valid_from=when,
            single_valued=prop.slug is not None or r in SINGLE_VALUED,
        )

    # ------------------------------------------------------------------ summaries
    async def summarize_session(self, session_id: int) -> int | None:
        """Summarise a closed session into a `summary` fact in its scope (idempotent) and, for a
        channel, refresh the channel summary. Returns the summary fact id (None: empty session)."""
        session = await self.store.sessions.get(session_id)
        if session is None:
            return None
        turns = await self.store.sessions.turns(session_id, 200)
        people = [t.content for t in turns if t.role == "user"]
        if not turns or all(is_only_questions(c) for c in people):
            return None  # nothing was said that a summary should keep
        text = await self.summarize([(t.speaker, t.content, t.role) for t in turns])
        text += await self._decisions_and_plans(session, {t.id for t in turns})
        day = session.started_at.strftime("%Y-%m-%d")
        fid = await self.store.add(
            f"Conversation summary ({day}): {text}",
            session.scope_id,
            kind="summary",
            importance=0.6,
            created_by=session.user_id,
            valid_from=session.started_at,
            source_message_ids=[t.id for t in turns[-100:]],
            slug=f"session:{session_id}",
        )
        await self.store.sessions.set_summary(session_id, fid)
        # Written after a later statement outdated one of its turns: it quotes what no longer holds.
        ended = [
            t.valid_to
            for t in await self.store.facts_by_slugs([session.scope_id], [f"msg:{x.id}" for x in turns[-100:]])
            if t.valid_to is not None
        ]
        if ended:
            await self.store.outdate([fid], until=min(ended))
        if not session.is_dm:
            await self.refresh_channel_summary(session.scope_id)
        if self.on_session_closed is not None:
            await self.on_session_closed(session)
        return fid

    async def _decisions_and_plans(self, session, turn_ids: set[int]) -> str:
        """The decisions and plans extracted from this session's turns (Bella's session summary:
        decisions made, outstanding items), as sentences appended to the summary; "" if none.
        Only facts whose source is one of these turns — words everyone reading the summary's
        scope saw said — from the session's scope and the projects they were routed to."""
        projects = [s for s in await self.store.readable_scopes(session.user_id) if s.startswith("project:")]
        found = await self.store.list_facts([session.scope_id, *projects], kinds=("decision", "plan"), limit=200)
        mine = [f for f in reversed(found) if turn_ids & set(f.source_message_ids or ())]
        out = ""
        decisions = [f.content.rstrip(".") for f in mine if f.kind == "decision"][:10]
        plans = [f.content.rstrip(".") for f in mine if f.kind == "plan"][:10]
        if decisions:
            out += f" Decisions: {'; '.join(decisions)}."
        if plans:
            out += f" Outstanding items: {'; '.join(plans)}."
        return out

    async def refresh_channel_summary(self, scope_id: str) -> int:
        recent = await self.store.recent_messages(scope_id, 120)
        text = await self.summarize([(m["speaker"], m["content"], m["role"]) for m in recent])
        fid, _ = await self.store.upsert(
            "channel-summary", f"Channel summary: {text}", scope_id, kind="summary", importance=0.5
        )
        return fid

    async def summarize(self, turns: list[tuple[str, str, str]]) -> str:
        """Summary of (speaker, text, role) turns: by the LLM when configured (falling back on any
        LLM error), else extractive over the people's turns (the bot's words carry no new facts)."""
        from clara.extract import extractive_summary, summary_messages

        pairs = [(speaker, text) for speaker, text, _ in turns]
        if self.llm is not None and turns:
            try:
                msgs = [ChatMessage(role=m["role"], content=m["content"]) for m in summary_messages(pairs)]
                done = await self.llm.complete(msgs, tier="low", max_tokens=400, timeout=self.llm_timeout)
                if done.text.strip():
                    return done.text.strip()[:4000]
            except LLMError as exc:
                log.warning("LLM summary failed (%s); using the extractive summary", exc)
        people = [(speaker, text) for speaker, text, role in turns if role == "user"]
        return await asyncio.to_thread(extractive_summary, people) or "(nothing to summarise)"


SINGLE_VALUED = frozenset({"lives_in", "works_at", "name", "age", "job", "partner", "spouse"})
PREFERENCE_ATTRIBUTES = frozenset({"diet", "appointment_time", "hobby"})
# The offline extractor's own relation slugs → the attribute of clara.extract.attributes.
_SLUG_ATTRIBUTE = {
    "lives_in": "residence",
    "works_at": "work",
    "works_as": "work",
    "born_in": "birthplace",
    "name": "name",
    "age": "age",
    "birthday": "birthday",
    **{k: "partner" for k in ("wife", "husband", "partner", "spouse", "girlfriend", "boyfriend", "fiance", "fiancee")},
    **{k: "manager" for k in ("boss", "manager")},
}


def _remap_slug(slug: str) -> str:
    """ "u1/lives_in" → "u1/residence", "u1/favourite_dish" → "u1/favourite_food"; other slugs kept."""
    from clara.extract.attributes import favourite_thing

    head, _, rel = slug.rpartition("/")
    if not head:
        return slug
    if rel.startswith("favourite_"):
        return f"{head}/favourite_{favourite_thing(rel.removeprefix('favourite_').replace('_', ' '))}"
    return f"{head}/{_SLUG_ATTRIBUTE[rel]}" if rel in _SLUG_ATTRIBUTE else slug


def slug_key(name: str) -> str:
    return re.sub(r"[^0-9a-z]+", "-", norm_name(name)).strip("-") or "someone"


def statement_text(sentence: str, speaker: str, subject: str | None) -> str:
    """The stored text of an attribute statement: English first person rewritten with the
    explicit subject ("I moved to Porto" → "alice moved to Porto"); other languages keep the
    user's own words, attributed ("alice: Me mudé a Santiago")."""
    from clara.extract.attributes import fold
    from clara.extract.heuristics import rewrite_first_person

    s = sentence.strip().rstrip(".!;: ")
    if re.search(r"\b(?:i|my|i'm|i've|we|our)\b", fold(s)):
        return rewrite_first_person(s, speaker)
    if subject is not None and fold(s).startswith(fold(subject.removeprefix("kin:"))):
        return s
    return f"{speaker}: {s}"


def is_only_questions(text: str) -> bool:
    """True when every sentence of a turn is a question, a greeting or small talk."""
    from clara.extract.attributes import is_question, sentences
    from clara.extract.heuristics import is_chitchat

    parts = [text[a:b].strip() for a, b in sentences(text)]
    return bool(parts) and all(is_question(p) or is_chitchat(p) for p in parts if p)
