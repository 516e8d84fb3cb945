"""MemoryManager: sessions, context gathering and the background memory write path.

Per message: `where()` resolves the scopes (user, conversation, active project); `acknowledge()`
stores the raw turn and queues its memory job in one transaction (the message is safe from here
on); `context()` gathers memories for the prompt; `record_reply()` stores the bot's answer.
Everything slow (extraction, entity linking, summaries) runs afterwards in `run_worker()`, a
single background task draining the durable `memory_jobs` queue, so it never delays a reply and
jobs left by a crash are finished after a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from clara.context import AssembledContext, Budgets, ContextBuilder
from clara.llm import LLMProvider
from clara.messages import IncomingMessage
from clara.settings import Settings, get_settings
from clara.writer import EXTRACT_JOB, MemoryWriter
from storage import FactStore, RecallHit
from storage.sessions import SUMMARY_JOB, Session, TurnRecord
from storage.text import norm_name

if TYPE_CHECKING:
    from clara.extract.attributes import QuestionKeys

log = logging.getLogger(__name__)

CORE = "core"  # settings namespace of the core
DEFAULT_PERSONA = (
    "You are {bot}, a warm, concise assistant with a long-term memory. Use what you remember about "
    "the people you talk to when it helps, say so when you don't know, and never invent memories. "
    "Memories below are tagged with their ids, e.g. [#12]."
)
_PROJECT_NAME = re.compile(r"^[\w][\w .\-]{0,59}$")


@dataclass(slots=True)
class Where:
    """The scopes of one message: the user's private scope, the conversation's scope (the user
    scope in a DM, else the channel's), the active project's scope, and everything recall may read."""

    user: str
    conversation: str
    project: str | None
    project_name: str | None
    readable: list[str]
    user_id: str = ""
    speaker: str = ""
    # The company (Discord server) scope `guild:<id>`: readable and writable by the people who
    # talk to Clara in that server, recalled in its channels (not in DMs); `!remember --company`.
    company: str | None = None


def _relevant(hits: list[RecallHit], min_dense: float) -> list[RecallHit]:
    """Hits worth showing a person: a word in common with the query, a close embedding (the
    embedder's own `relevance_floor`), or a fact holding the attribute the question is about."""
    return [
        h
        for h in hits
        if "lexical_rank" in h.signals or "attribute" in h.signals or h.signals.get("dense", 0.0) >= min_dense
    ]


def collapse(hits: list[RecallHit], *, prefer_turns: bool = True) -> list[RecallHit]:
    """Each thing said shown once: a raw turn and the facts extracted from it share their source
    message; they take the place of the best-ranked of them, shown as the turn itself (the
    person's own words, of which an extracted fact may keep only a part) — or, with
    `prefer_turns=False` (the LLM's context, which has the recent turns anyway), as the extracted
    fact. Questions and small talk only when nothing else is left. Summaries (which cite many
    turns) are never collapsed."""
    groups: list[list[RecallHit]] = []
    owner: dict[int, list[RecallHit]] = {}
    for h in hits:
        src = set(h.fact.source_message_ids or ()) if h.fact.kind != "summary" else set()
        group = next((owner[m] for m in src if m in owner), None)
        if group is None:
            group = []
            groups.append(group)
        group.append(h)
        for m in src:
            owner.setdefault(m, group)
    turn = ("observation", "question")
    out = [next((h for h in g if (h.fact.kind in turn) == prefer_turns), g[0]) for g in groups]
    answers = [h for h in out if h.fact.kind != "question"]
    return answers or out


# Measured on `clara bench current --set dev --limit 200` (current@1): no reordering .515; window 3
# margin .35 .645; 3/.6 .700; 5/.5 .690; 5/1.0 .680 (stale-above-current .42 → .25 at 3/.6).
# Also for present-tense questions no attribute rule recognised (first 200 scenarios, full store):
# dev .725 → .750, holdout .540 → .570; stale .225 → .205 / .340 → .320; history@5, paraphrase@5 same.
RECENCY_WINDOW = 3
RECENCY_MARGIN = 0.6


def newest_statement_first(
    hits: list[RecallHit], window: int | None = None, margin: float | None = None
) -> list[RecallHit]:
    """For a question about someone's current state ("where do I live?"): of the leading hits
    that answer it about as well as the best one (score within `margin` of it, among the first
    `window`), the most recent statement goes first — the last thing said about a state is the
    best guess of what holds now, even when the change was phrased in a way no rule recognised.
    Questions, summaries and what is known to be outdated never move up."""
    window = RECENCY_WINDOW if window is None else window
    margin = RECENCY_MARGIN if margin is None else margin
    if len(hits) < 2:
        return hits
    lead = hits[0].score
    floor = lead - margin * abs(lead)
    contenders = [
        i
        for i, h in enumerate(hits[:window])
        if h.score >= floor and h.current and h.fact.kind not in ("question", "summary")
    ]
    if len(contenders) < 2:
        return hits
    newest = max(contenders, key=lambda i: (hits[i].fact.valid_from or hits[i].fact.created_at, hits[i].fact.id))
    if newest == contenders[0]:
        return hits
    out = list(hits)
    out.insert(contenders[0], out.pop(newest))
    return out


def statements_first(
    hits: list[RecallHit],
    attribute: str,
    subject: str | None,
    where: Where,
    names: Iterable[str] = (),
    session_gap: timedelta = timedelta(minutes=30),
) -> list[RecallHit]:
    """For a question about one current state ("where do I live?", "¿dónde trabaja Ana?"): the
    hits that state that attribute of that subject — keyed to it, or said in its words
    (`clara.extract.attributes.speaks_about`) — go first, the most recent statement first (the
    last thing said about a state is what holds now); the other hits follow in their order. A
    leading hit no rule recognises keeps its place when it was said in a later conversation than
    every recognised one (more than `session_gap` after: a change phrased in words no rule knows,
    which `newest_statement_first` put there; small talk said just after a statement is not one),
    unless it is recognised as a statement about something else. Only what still holds moves up; the
    asker's own state only from the asker's own words. `hits` as collapsed for display."""
    from clara.extract.attributes import speaks_about, statements

    def said(f) -> str:
        text = f.content
        if f.speaker and text.startswith(f"{f.speaker}: "):
            text = text[len(f.speaker) + 2 :]
        return text

    def movable(h: RecallHit) -> bool:
        f = h.fact
        if not h.current or f.kind in ("question", "summary"):
            return False
        return subject is not None or f.created_by in (None, where.user_id)  # not someone else's "I live in…"

    def states(h: RecallHit) -> bool:
        return movable(h) and ("attribute" in h.signals or speaks_about(said(h.fact), attribute, subject, names))

    def when(h: RecallHit):
        return (h.fact.valid_from or h.fact.created_at, h.fact.id)

    answers = [h for h in hits if states(h)]
    if not answers:
        return hits
    answers.sort(key=when, reverse=True)
    lead = hits[0]
    if (
        lead not in answers
        and movable(lead)
        and when(lead)[0] - when(answers[0])[0] > session_gap
        and not statements(said(lead.fact), names)  # about nothing else either
    ):
        answers.insert(0, lead)
    chosen = {id(h) for h in answers}
    return answers + [h for h in hits if id(h) not in chosen]


def _asks_one_current_state(query: str, keys: list[str], past: bool) -> bool:
    """A question about one present state: one attribute recognised, or none recognised but the
    query is a question that does not ask about the past ("what do I listen to?")."""
    if past or len(keys) > 1:
        return False
    if keys:
        return True
    from clara.extract.attributes import asks_about_past, is_question

    return is_question(query) and not asks_about_past(query)


def project_slug(name: str) -> str:
    return norm_name(name).replace(" ", "-")[:60]


class MemoryManager:
    def __init__(
        self,
        store: FactStore,
        llm: LLMProvider | None = None,
        *,
        settings: Settings | None = None,
        budgets: Budgets | None = None,
        extra_scopes: list[str] | None = None,
        sweep_every: float = 60.0,
        lease: float | None = None,
    ):
        self.store = store
        self.llm = llm
        self.settings = settings or get_settings()
        self.clock = store.clock  # the one clock (storage.clock), injected into the store
        self.idle = timedelta(minutes=self.settings.session_idle_minutes)
        self.builder = ContextBuilder(budgets)
        self.extra_scopes = list(extra_scopes or [])
        self.writer = MemoryWriter(store, llm)
        self.sweep_every = sweep_every
        self.lease = lease if lease is not None else self.settings.memory_job_lease
        self._claimed: list[int] = []
        self._turns = 0
        self._quiet = asyncio.Event()
        self._quiet.set()
        self.yield_max = 0.25  # seconds a background job waits for in-flight turns
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._closed = False

    # ------------------------------------------------------------------ scopes
    async def where(self, msg: IncomingMessage) -> Where:
        """Create the user's (and channel's) scopes if new and return where this message lives.
        Raises InvalidInput for an unknown extra scope; ScopeDenied if access checks fail."""
        us = f"user:{msg.user_id}"
        await self.store.ensure_scope(us, "user", name=msg.display_name, owner=msg.user_id)
        conv = us
        if not msg.is_dm:
            conv = f"channel:{msg.channel_id}"
            await self.store.ensure_scope(conv, "channel", name=f"#{msg.channel_id}", members=[msg.user_id])
        own = list(dict.fromkeys([us, conv]))
        company = None
        if not msg.is_dm and msg.guild_id:
            company = f"guild:{msg.guild_id}"
            await self.store.ensure_scope(company, "guild", name=f"server {msg.guild_id}", members=[msg.user_id])
            own.append(company)
        project_name = await self.store.settings.get(CORE, conv, "project")
        project = None
        if project_name:
            project = f"project:{project_slug(project_name)}"
            await self.store.ensure_scope(project, "project", name=project_name, members=[msg.user_id])
            own.append(project)
        await self.store.check_access(own, msg.user_id)  # defence in depth: fail closed
        extra = [s for s in self.extra_scopes if s not in own]
        for s in extra:
            await self.store.get_scope(s)  # raises InvalidInput for an unknown scope
        return Where(us, conv, project, project_name, [*own, *extra], msg.user_id, msg.display_name, company)

    async def set_project(self, msg: IncomingMessage, name: str | None) -> str | None:
        """Set (or clear, with None) the active project of this conversation; returns its scope."""
        conv = f"user:{msg.user_id}" if msg.is_dm else f"channel:{msg.channel_id}"
        if name is None:
            await self.store.settings.delete(CORE, conv, "project")
            return None
        name = name.strip()
        if not _PROJECT_NAME.match(name) or not project_slug(name):
            raise ValueError("a project name is 1–60 letters, digits, spaces, dots or dashes")
        scope = f"project:{project_slug(name)}"
        await self.store.ensure_scope(scope, "project", name=name, members=[msg.user_id])
        await self.store.settings.set(CORE, conv, "project", name)
        return scope

    # ------------------------------------------------------------------ the turn
    async def acknowledge(self, msg: IncomingMessage, text: str, where: Where) -> TurnRecord:
        """Store the user's turn and queue its memory job (one transaction, a few ms). From here
        on the message survives a crash; extraction happens later in the worker."""
        payload = {
            "user_id": msg.user_id,
            "display_name": msg.display_name,
            "channel_id": msg.channel_id,
            "is_dm": msg.is_dm,
            "user_scope": where.user,
            "conversation_scope": where.conversation,
            "project_scope": where.project,
            "timestamp": msg.timestamp.isoformat(),
        }
        rec = await self.store.sessions.record_turn(
            user_id=msg.user_id,
            channel_id=msg.channel_id,
            scope_id=where.conversation,
            is_dm=msg.is_dm,
            speaker=msg.display_name,
            content=text,
            now=msg.timestamp,
            idle=self.idle,
            external_id=msg.external_id,
            job=(EXTRACT_JOB, payload),
        )
        self.notify()
        return rec

    async def record_reply(
        self,
        rec: TurnRecord,
        where: Where,
        text: str,
        now: datetime | None = None,
        *,
        source_fact_ids: Iterable[int] = (),
    ) -> int:
        """Store the bot's reply in the session (never mined for facts), with the ids of the facts
        it was written from as its provenance (see `SessionStore.record_reply`)."""
        return await self.store.sessions.record_reply(
            rec.session.id,
            where.conversation,
            rec.session.channel_id,
            self.settings.bot_name,
            text,
            now or self.clock(),
            source_fact_ids=source_fact_ids,
        )

    async def recall(
        self,
        query: str,
        where: Where,
        k: int = 5,
        *,
        scopes: list[str] | None = None,
        history: bool | None = None,
        prefer_turns: bool = True,
    ) -> list[RecallHit]:
        """Up to `k` memories worth showing for `query`, what is true now first (each hit says
        whether it still holds: `RecallHit.current`). The question's attribute keys ("where do I
        live" → "<user>/residence") reach facts that share no word with it; a question about the
        past ("before", "antes", "vorher") — or `history=True` (`!recall --all`) — includes
        superseded facts and ranks them first. Raises InvalidInput for a bad query."""
        asked, names = await self._asked(query, where)
        keys, past = await self._keys(asked, where)
        hist = past if history is None else history
        # Over-fetched and filtered here: no access is counted for what is not shown (callers
        # count what they show: `FactStore.note_access`).
        hits = await self.store.recall(
            query, scopes or where.readable, k=max(3 * k, 15), attributes=keys, history=hist, bump=False
        )
        hits = _relevant(hits, self.store.embedder.relevance_floor)
        if _asks_one_current_state(query, keys, hist):  # its latest statement first
            hits = newest_statement_first(hits)
        hits = collapse(hits, prefer_turns=prefer_turns)
        if asked is not None and len(asked.attributes) == 1 and not hist:
            hits = statements_first(hits, asked.attributes[0], asked.subject, where, names, self.idle)
        return hits[:k]

    async def question_keys(self, query: str, where: Where) -> tuple[list[str], bool]:
        """The attribute keys a question is about, and whether it asks about the past."""
        asked, _ = await self._asked(query, where)
        return await self._keys(asked, where)

    async def _asked(self, query: str, where: Where) -> tuple[QuestionKeys | None, list[str]]:
        """What the question asks about (None: no attribute), and the people known here."""
        from clara.extract.attributes import question_keys

        asked = question_keys(query)
        if asked is None:
            return None, []
        names = await self.store.graph.names(where.readable)
        if asked.subject is None:  # "who does tom report to": people known here, however typed
            asked = question_keys(query, names) or asked
        return asked, list(names)

    async def _keys(self, asked: QuestionKeys | None, where: Where) -> tuple[list[str], bool]:
        if asked is None:
            return [], False
        keys = [
            await self.writer.attribute_key(asked.subject, a, where.speaker, where.user_id, where.readable)
            for a in asked.attributes
        ]
        return keys, asked.history

    async def context(
        self, msg: IncomingMessage, text: str, where: Where, rec: TurnRecord | None, *, debug_query: bool = False
    ) -> AssembledContext:
        """Gather memories for `text` and assemble the prompt (see clara.context)."""
        now = self.clock()
        personal = [s for s in where.readable if s != where.project]
        hits = await self.recall(text, where, k=10, scopes=personal, prefer_turns=False)
        profile = await self.store.list_facts(
            [where.user], kinds=("biographical", "preference", "note", "decision", "plan"), limit=8
        )
        # Only the speaker's own scope is "what you know about <speaker>"; channel and extra scopes
        # hold other people's words too.
        user_facts = [h.fact for h in hits if h.fact.scope_id == where.user]
        user_facts += [f for f in profile if f.importance >= 0.5]
        shared_facts = [h.fact for h in hits if h.fact.scope_id != where.user]
        project_facts = []
        if where.project:
            project_facts = [
                h.fact for h in await self.recall(text, where, k=6, scopes=[where.project], prefer_turns=False)
            ]
        channel_summary = None
        if where.conversation != where.user:
            channel_summary = await self.store.find_slug(where.conversation, "channel-summary")
        session = rec.session if rec else await self.store.sessions.open_session(msg.user_id, msg.channel_id)
        recent, session_summary = await self._carry_over(session, exclude=rec.message_id if rec else None)
        entity_lines = await self._entity_lines(text, msg.display_name, where)
        new_text = text
        if msg.reply_to:
            chain = "\n".join(f"> {s}: {t}" for s, t in msg.reply_to)
            new_text = f"(replying to)\n{chain}\n{text}"
        # An attachments-only message has them as its text already (ChatEngine._converse).
        for a in msg.attachments if msg.text.strip() else ():
            new_text += f"\n[attachment {a.filename}]\n{a.text}"
        persona = self.settings.persona or DEFAULT_PERSONA.format(bot=self.settings.bot_name)
        assembled = self.builder.build(
            persona=persona,
            now=now,
            speaker=msg.display_name,
            new_message=new_text,
            is_dm=msg.is_dm,
            user_facts=user_facts,
            shared_facts=shared_facts,
            project=where.project_name,
            project_facts=project_facts,
            channel_summary=channel_summary,
            entity_lines=entity_lines,
            session_summary=session_summary,
            recent=recent,
        )
        self.store.note_access(assembled.fact_ids())  # what reaches the prompt counts as shown
        return assembled

    async def _carry_over(self, session: Session | None, exclude: int | None):
        """This session's turns plus the last N turns and the summary of the previous one."""
        if session is None:
            return [], None
        turns = [t for t in await self.store.sessions.turns(session.id, 40) if t.id != exclude]
        summary = None
        if session.previous_id:
            prev = await self.store.sessions.get(session.previous_id)
            n = self.settings.carryover_messages
            carried = await self.store.sessions.turns(prev.id, n) if prev and n else []
            turns = carried + turns
            if prev and prev.summary_fact_id:
                got = await self.store.get_many([prev.summary_fact_id], scopes=[prev.scope_id])
                summary = got[0] if got and got[0].status == "active" else None
        return turns, summary

    async def _entity_lines(self, text: str, speaker: str, where: Where) -> list[tuple[str, str]]:
        """Known entities the message mentions (names and "my <relation>" aliases), with their
        current relations, from the readable scopes only."""
        from clara.extract import extract_entities

        mentions = await asyncio.to_thread(extract_entities, text, speaker=speaker)
        names = [m.name for m in mentions]
        names += [f"{speaker}'s {rel}" for rel in re.findall(r"\bmy (\w+)", text, flags=re.I)]
        lines: list[tuple[str, str]] = []
        seen: set[int] = set()
        for name in dict.fromkeys(names):
            for ent in await self.store.graph.resolve(where.readable, name):
                if ent.id in seen:
                    continue
                seen.add(ent.id)
                rels = await self.store.graph.relations(where.readable, [ent.id], current_only=True)
                desc = "; ".join(f"{r.source} {r.relation.replace('_', ' ')} {r.target}" for r in rels[:5])
                alias = f" (aka {', '.join(ent.aliases[:3])})" if ent.aliases else ""
                lines.append(
                    (
                        f"{ent.name} [{ent.type}]{alias}" + (f": {desc}" if desc else ""),
                        f"entity {ent.id} {ent.scope_id}",
                    )
                )
        return lines

    # ------------------------------------------------------------------ background work
    def start(self) -> None:
        """Start the background worker (idempotent; also started by the first message)."""
        if self._task is None or self._task.done():
            self._closed = False
            self._task = asyncio.create_task(self.run_worker(), name="clara-memory-worker")

    def notify(self) -> None:
        self._idle.clear()
        self._wake.set()
        self.start()

    async def aclose(self, grace: float = 10.0) -> None:
        """Stop the worker: it finishes the job in hand (up to `grace` s, then it is cancelled);
        jobs it had claimed but not started are handed back; everything else stays queued in SQL."""
        self._closed = True
        self._wake.set()
        if self._task:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), grace)
            except (TimeoutError, asyncio.CancelledError, Exception):
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await self._task
            self._task = None
        if self._claimed:
            with contextlib.suppress(Exception):
                await self.store.jobs.release(self._claimed)
            self._claimed = []

    async def drain(self, timeout: float = 120.0, *, index: bool = True) -> None:
        """Wait until every due memory job is done (and, with `index`, embedded and indexed).
        Raises TimeoutError."""
        async with asyncio.timeout(timeout):
            self.notify()
            while await self.store.jobs.count(kinds=(EXTRACT_JOB, SUMMARY_JOB)):
                self._wake.set()
                await asyncio.sleep(0.02)
            if index:
                await self.store.drain(timeout)

    async def sweep(self, now: datetime | None = None) -> list[Session]:
        """Close sessions idle for longer than SESSION_IDLE_MINUTES (summaries get queued)."""
        closed = await self.store.sessions.close_idle(now or self.clock(), self.idle)
        if closed:
            self.notify()
        return closed

    @contextlib.asynccontextmanager
    async def foreground(self):
        """Mark a turn in progress: background jobs wait (briefly) so the reply goes first."""
        self._turns += 1
        self._quiet.clear()
        try:
            yield
        finally:
            self._turns -= 1
            if self._turns == 0:
                self._quiet.set()

    async def _yield_to_turns(self) -> None:
        """Let in-flight turns finish before the next job takes the writer and the CPU (bounded by
        `yield_max` seconds, so background work still progresses under constant load)."""
        if self._turns:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.yield_max):
                    await self._quiet.wait()

    async def run_worker(self) -> None:
        """Drain the memory queue forever: extraction and summaries, one job at a time (so two
        messages never race to write the same fact in this process; slugs guard across processes)."""
        last_sweep = 0.0
        loop = asyncio.get_running_loop()
        while not self._closed:
            try:
                if loop.time() - last_sweep >= self.sweep_every:
                    last_sweep = loop.time()
                    await self.sweep()
                # Shielded: a cancellation must not lose track of jobs the database already leased us.
                claim = asyncio.ensure_future(self.store.jobs.claim(4, lease=self.lease))
                try:
                    jobs = await asyncio.shield(claim)
                except asyncio.CancelledError:
                    with contextlib.suppress(Exception):
                        await self.store.jobs.release([j.id for j in await claim])
                    raise
                self._claimed = [j.id for j in jobs]
                if not jobs:
                    self._idle.set()
                    self._wake.clear()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(1.0):
                            await self._wake.wait()
                    continue
                for job in jobs:
                    if self._closed:
                        break  # aclose hands the rest back
                    await self._yield_to_turns()
                    try:
                        await self.writer.process(job)
                    except asyncio.CancelledError:
                        raise
                    except Exception as exc:  # one bad job must not stop the queue
                        log.exception("memory job %s (%s) failed", job.id, job.kind)
                        await self.store.jobs.fail(job, f"{type(exc).__name__}: {exc}")
                    else:
                        await self.store.jobs.complete(job.id)
                    self._claimed.remove(job.id)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("memory worker error; retrying in 1 s")
                await asyncio.sleep(1.0)
