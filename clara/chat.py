"""The transport-agnostic chat core (first version): commands and memory-backed replies.

An `IncomingMessage` comes from any transport (the terminal today, Discord next); `ChatEngine`
answers it and records it. Scopes: each user has a private scope `user:<id>`; each channel a
members-only scope `channel:<id>` (posting makes you a member). Messages in a channel are stored
there (created_by = the user); DMs and `!remember` go to the user's private scope. Recall in a
channel searches the user's scope and that channel's scope; in a DM only the user's scope.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

import humanize

from storage import FactStore, InvalidInput, RecallHit, StoreError
from storage.types import Fact

MAX_MESSAGE_CHARS = 8000
PAGE = 10
HELP = """Commands:
  !remember <text>   save something about you (private to you, recalled in any channel)
  !recall <query>    show what I remember that matches (numbered, with age and scope)
  !memories [page]   list your memories, newest first
  !forget <n|#id>    forget item n of your last list, or the fact with id #id
  !help              this help
Anything else is a message: I store it and tell you what I recall about it."""


@dataclass(slots=True)
class IncomingMessage:
    user_id: str
    display_name: str
    channel_id: str
    text: str
    is_dm: bool = False
    guild_id: str | None = None
    timestamp: datetime = field(default_factory=lambda: datetime.now(UTC))


@dataclass(slots=True)
class Reply:
    text: str
    stored_fact_id: int | None = None
    error: bool = False


def _relevant(hits: list[RecallHit], min_dense: float = 0.35) -> list[RecallHit]:
    """Hits worth showing a person: a word in common with the query, or a close embedding."""
    return [h for h in hits if "lexical_rank" in h.signals or h.signals.get("dense", 0.0) >= min_dense]


def _age(when: datetime, now: datetime) -> str:
    return humanize.naturaltime(now - when)


class ChatEngine:
    """Handles messages for one store. `last_listing` remembers, per (user, channel), the fact ids
    of the last numbered list shown, so `!forget 2` means what the user saw."""

    def __init__(self, store: FactStore, *, recall_k: int = 5, extra_scopes: list[str] | None = None):
        """`extra_scopes`: scopes every recall also reads (for a trusted local operator, e.g. an
        imported conversation); they must exist."""
        self.store = store
        self.extra_scopes = list(extra_scopes or [])
        self.recall_k = recall_k
        self.last_listing: dict[tuple[str, str], list[int]] = {}

    # ---------------------------------------------------------------- scopes
    @staticmethod
    def user_scope(msg: IncomingMessage) -> str:
        return f"user:{msg.user_id}"

    @staticmethod
    def channel_scope(msg: IncomingMessage) -> str:
        return f"channel:{msg.channel_id}"

    async def _ensure_scopes(self, msg: IncomingMessage) -> list[str]:
        """Create the user's (and channel's) scopes; returns the scopes recall may search here."""
        us = self.user_scope(msg)
        await self.store.ensure_scope(us, "user", name=msg.display_name, owner=msg.user_id)
        extra = [s for s in self.extra_scopes if s != us]
        for s in extra:
            await self.store.get_scope(s)  # raises InvalidInput for an unknown scope
        own = [us]
        if not msg.is_dm:
            cs = self.channel_scope(msg)
            await self.store.ensure_scope(cs, "channel", name=f"#{msg.channel_id}", members=[msg.user_id])
            own.append(cs)
        await self.store.check_access(own, msg.user_id)  # defence in depth: fail closed
        return [*own, *extra]

    # ---------------------------------------------------------------- entry point
    async def handle(self, msg: IncomingMessage) -> Reply:
        """Answer one message. Never raises for bad input: errors come back as a Reply with
        `error=True` and a message fit to show the user; nothing partial is stored."""
        try:
            if not isinstance(msg.text, str) or "\x00" in msg.text:
                return Reply("I can't read that message: it contains binary data. Nothing was stored.", error=True)
            text = msg.text.strip()
            if not text:
                return Reply("That message was empty, so there's nothing to remember.", error=True)
            if len(text) > MAX_MESSAGE_CHARS:
                return Reply(
                    f"That message is {len(text):,} characters; I store at most {MAX_MESSAGE_CHARS:,}. "
                    "Nothing was stored — please split it up.",
                    error=True,
                )
            scopes = await self._ensure_scopes(msg)
            if text.startswith("!"):
                return await self._command(msg, text, scopes)
            return await self._message(msg, text, scopes)
        except (InvalidInput, StoreError) as exc:
            return Reply(f"Sorry, I couldn't do that: {exc}", error=True)

    async def _message(self, msg: IncomingMessage, text: str, scopes: list[str]) -> Reply:
        hits = await self.store.recall(text, scopes, k=self.recall_k)
        reply = self._recall_reply(msg, hits)
        fact_id = await self.record(msg, text)
        return Reply(reply, stored_fact_id=fact_id)

    async def record(self, msg: IncomingMessage, text: str) -> int:
        """Store a user's message: the raw turn and an observation fact in the conversation's scope."""
        scope = self.user_scope(msg) if msg.is_dm else self.channel_scope(msg)
        mid = await self.store.add_message(
            scope, msg.display_name, text, speaker_id=msg.user_id, channel=msg.channel_id, created_at=msg.timestamp
        )
        return await self.store.add(
            f"{msg.display_name}: {text}",
            scope,
            kind="observation",
            speaker=msg.display_name,
            entities=[msg.display_name],
            source_message_ids=[mid],
            created_by=msg.user_id,
            valid_from=msg.timestamp,
        )

    def _recall_reply(self, msg: IncomingMessage, hits: list[RecallHit]) -> str:
        relevant = _relevant(hits)
        if not relevant:
            return (
                "Noted — I've stored that. I don't recall anything related yet. "
                "(No language model is configured, so I can only remember and recall, not chat.)"
            )
        lines = ["Noted. Here is what I remember that relates to it:"]
        lines += self._numbered(msg, [h.fact for h in relevant[:3]])
        lines.append("(No language model is configured, so I answer with what I recall.)")
        return "\n".join(lines)

    def _numbered(self, msg: IncomingMessage, facts: list[Fact]) -> list[str]:
        now = datetime.now(UTC)
        self.last_listing[(msg.user_id, msg.channel_id)] = [f.id for f in facts]
        out = []
        for i, f in enumerate(facts, 1):
            where = "you (private)" if f.scope_id == self.user_scope(msg) else f.scope_id.replace("channel:", "#")
            out.append(f"{i}. {f.content}  — {_age(f.valid_from or f.created_at, now)}, {where} [#{f.id}]")
        return out

    # ---------------------------------------------------------------- commands
    async def _command(self, msg: IncomingMessage, text: str, scopes: list[str]) -> Reply:
        name, _, arg = text[1:].partition(" ")
        name, arg = name.lower().strip(), arg.strip()
        if name == "remember":
            if not arg:
                return Reply("Usage: !remember <text> — for example `!remember I'm allergic to peanuts`.", error=True)
            fid = await self.store.add(
                arg,
                self.user_scope(msg),
                kind="note",
                speaker=msg.display_name,
                entities=[msg.display_name],
                created_by=msg.user_id,
                importance=0.7,
                actor=msg.user_id,
            )
            return Reply(f"Got it, I'll remember that (#{fid}, private to you).", stored_fact_id=fid)
        if name == "recall":
            if not arg:
                return Reply("Usage: !recall <query> — for example `!recall where do I live`.", error=True)
            hits = _relevant(await self.store.recall(arg, scopes, k=PAGE))
            if not hits:
                return Reply("I don't remember anything about that.")
            return Reply("\n".join([f"What I recall about “{arg}”:"] + self._numbered(msg, [h.fact for h in hits])))
        if name == "memories":
            page = int(arg) if arg.isdigit() and int(arg) > 0 else 1
            if arg and not arg.isdigit():
                return Reply("Usage: !memories [page number]", error=True)
            facts = await self._own_facts(msg, scopes, page)
            if not facts:
                return Reply("I have no memories of you yet." if page == 1 else f"There is no page {page}.")
            head = f"Your memories (page {page}, newest first):"
            return Reply("\n".join([head] + self._numbered(msg, facts)))
        if name == "forget":
            return await self._forget(msg, arg, scopes)
        if name == "help":
            return Reply(HELP)
        return Reply(f"Unknown command `!{name[:30]}`. Type !help for the list.", error=True)

    async def _own_facts(self, msg: IncomingMessage, scopes: list[str], page: int) -> list[Fact]:
        """The user's facts here, newest first: their private scope plus what they said in this
        channel (paged in SQL, so a busy channel cannot push them out of view)."""
        us = self.user_scope(msg)
        want = PAGE * page
        facts = await self.store.list_facts([us], limit=want)
        others = [s for s in scopes if s != us and s.startswith("channel:")]
        if others:
            facts += await self.store.list_facts(others, created_by=msg.user_id, limit=want)
        facts.sort(key=lambda f: (f.created_at, f.id), reverse=True)
        return facts[(page - 1) * PAGE : want]

    async def _forget(self, msg: IncomingMessage, arg: str, scopes: list[str]) -> Reply:
        usage = "Usage: !forget <n> (item n of your last list) or !forget #<id>."
        if not arg:
            return Reply(usage, error=True)
        if arg.startswith("#"):
            if not arg[1:].isdigit():
                return Reply(usage, error=True)
            fid = int(arg[1:])
        elif arg.isdigit():
            listing = self.last_listing.get((msg.user_id, msg.channel_id), [])
            n = int(arg)
            if not 1 <= n <= len(listing):
                return Reply(f"There is no item {n} in your last list. {usage}", error=True)
            fid = listing[n - 1]
        else:
            return Reply(usage, error=True)
        try:
            fact = await self.store.get(fid, scopes=scopes)
        except StoreError:
            return Reply(f"I have no memory #{fid} that you can forget.", error=True)
        if fact.scope_id != self.user_scope(msg) and fact.created_by != msg.user_id:
            return Reply(f"Memory #{fid} isn't yours to forget.", error=True)
        if fact.status == "deleted":
            return Reply(f"Memory #{fid} is already forgotten.")
        await self.store.forget(fid, scopes=scopes)
        return Reply(f"Forgotten: “{fact.content[:200]}” (#{fid}).")
