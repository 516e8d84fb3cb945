"""The transport-agnostic conversational core: one pipeline for every transport.

    message → validation → commands | (acknowledge → context → LLM, streamed → reply) → background write

`ChatEngine.handle` never raises for bad input or provider trouble: the person gets a short,
clear reply, and the message itself is already stored (acknowledged) before the LLM is called.
Without an LLM (memory-only mode) the reply is built from what Clara recalls, and says so.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Awaitable, Callable
from contextlib import aclosing

from clara.commands import Commands
from clara.core_tools import core_tools
from clara.llm import ChatMessage, LLMError, LLMProvider, LLMTimeout, ToolLoopResult, run_tool_loop
from clara.memory import MemoryManager, Where
from clara.messages import Attachment, IncomingMessage, Reply
from clara.settings import Settings, get_settings
from clara.system_events import record_system
from storage import InvalidInput, RecallHit, StoreError
from storage.text import join_surrogates, unicode_problem

__all__ = ["MAX_MESSAGE_CHARS", "Attachment", "ChatEngine", "IncomingMessage", "Reply"]

log = logging.getLogger(__name__)
MAX_MESSAGE_CHARS = 8000
MAX_COMMAND_CHARS = 4 * MAX_MESSAGE_CHARS  # a command with its attached text (e.g. a CSV to import)
TIERS = {
    "!high": "high",
    "!opus": "high",
    "!mid": "mid",
    "!sonnet": "mid",
    "!low": "low",
    "!haiku": "low",
    "!fast": "low",
}  # the seed bot's aliases: !opus/!sonnet/!haiku/!fast
TIER_PROMPT = (
    "Classify how demanding it is to answer the user's next message. Reply with exactly one word: "
    "low (greetings, small talk, quick facts), mid (explanations, summaries, most questions) or high "
    "(complex reasoning, long code, careful analysis). Judge the next message in the light of the "
    "recent conversation: a short reply such as 'yes' or 'ok' continues the demanding of what came before."
)
TIER_CONTEXT_MESSAGES = 4  # recent messages the AUTO_TIER_SELECTION classifier sees (as in the seed)
NEEDS_TOOLS = "[[NEEDS_TOOLS]]"
LOW_TIER_NOTE = (
    "\n\nThis reply is written without tools. If answering properly needs one of your tools ({names}), "
    f"reply with exactly {NEEDS_TOOLS} and nothing else; otherwise just answer."
)
# Messages that clearly need a tool go to the base model with tools without a low-tier attempt.
CLEARLY_NEEDS_TOOLS = re.compile(
    r"\b(remind me|set (a|an|the) (reminder|alarm)|remember (that|this)|forget (that|this)|"
    r"(save|store|delete|send|read|list) (this|that|it|the|my) (\w+ )?files?|mcp|install)\b",
    re.IGNORECASE,
)
INTERNAL_ERROR = (
    "Sorry — something went wrong on my side with that message (the details are in my log). "
    "Please try again or rephrase it."
)
APOLOGY = "Sorry — I couldn't reach my language model just now ({why}). Your message is saved; please try again."

OnText = Callable[[str], Awaitable[None]]


class ChatEngine:
    """Answers messages for one store (and optional LLM). Start-up is lazy: the background memory
    worker starts with the first message; call `aclose()` to stop it (queued work stays on disk)."""

    def __init__(
        self,
        store,
        llm: LLMProvider | None = None,
        *,
        settings: Settings | None = None,
        extra_scopes: list[str] | None = None,
        recall_k: int = 5,
        llm_timeout: float | None = None,
        auto_tier: bool = False,
        plugins=None,
    ):
        self.store = store
        self.llm = llm
        self.settings = settings or get_settings()
        self.memory = MemoryManager(store, llm, settings=self.settings, extra_scopes=extra_scopes)
        self.commands = Commands(self)
        self.recall_k = recall_k
        self.llm_timeout = llm_timeout or 120.0
        self.auto_tier = auto_tier
        self.plugins = plugins  # clara.plugin_host.PluginHost, optional
        self._background: set[asyncio.Task] = set()
        self.memory.writer.on_session_closed = self._session_closed
        if plugins is not None:
            if plugins.llm is None:
                plugins.llm = llm

    async def drain(self, timeout: float = 120.0, *, index: bool = True) -> None:
        """Wait for background memory writes (and indexing) to finish (tests, shutdown)."""
        await self.memory.drain(timeout, index=index)

    async def aclose(self) -> None:
        for t in list(self._background):
            t.cancel()
        await self.memory.aclose()

    def invocation(self, msg: IncomingMessage, where: Where):
        """The plugin API's view of who is asking, and where."""
        from clara.plugin_api import Invocation, Level

        return Invocation(
            user_id=msg.user_id,
            display_name=msg.display_name,
            channel_id=msg.channel_id,
            guild_id=msg.guild_id,
            is_dm=msg.is_dm,
            level=Level(min(int(msg.level), int(Level.BOT_OWNER))),
            now=msg.timestamp,
            user_scope=where.user,
            conversation_scope=where.conversation,
        )

    async def _session_closed(self, session) -> None:
        await record_system(
            self.store, "session.close",
            f"session {session.id} of {session.user_id} in {session.channel_id} closed "
            f"({session.message_count} messages)",
            session=session.id, user=session.user_id, channel=session.channel_id, messages=session.message_count,
        )  # fmt: skip
        if self.plugins is not None:
            await self.plugins.emit("session_closed", session.id, session.user_id, session.channel_id)

    def _emit_later(self, event: str, *args) -> None:
        """Plugin event hooks run after the reply, off its path (errors isolated by the host)."""
        task = asyncio.create_task(self.plugins.emit(event, *args))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # ---------------------------------------------------------------- entry point
    async def handle(self, msg: IncomingMessage, *, on_text: OnText | None = None) -> Reply:
        """Answer one message. `on_text` receives reply text deltas as they stream (the whole
        reply at once in memory-only mode). Never raises for bad input or LLM failure: errors
        come back as a Reply with `error=True` fit to show the user; nothing partial is stored."""
        if msg.timestamp is None:
            msg.timestamp = self.store.clock()
        try:
            problem = self._invalid(msg)
            if problem:
                return Reply(problem, error=True)
            # Surrogate pairs (valid, e.g. from a JSON escape) become the characters they spell, so no
            # command, plugin or database sees UTF-16 halves.
            msg.text = join_surrogates(msg.text)
            for a in msg.attachments:
                a.text = join_surrogates(a.text)
            text = msg.text.strip()
            where = await self.memory.where(msg)
            tier = None
            head = text.split(maxsplit=1)[0].lower() if text else ""  # attachments only: no text
            if head in TIERS:
                tier, text = TIERS[head], text[len(head) :].strip()
                if not text:
                    return Reply(f"Usage: {head} <message> — answer with the {tier} model tier.", error=True)
            elif text.startswith("!"):
                for a in msg.attachments:  # e.g. a CSV to import: commands get attached text as input
                    text += f"\n{a.text}"
                if len(text) > MAX_COMMAND_CHARS:
                    return Reply(
                        f"That command with its attachments is {len(text):,} characters; commands take at most "
                        f"{MAX_COMMAND_CHARS:,}. Nothing was done.",
                        error=True,
                    )
                return await self.commands.run(msg, text, where)
            if self.plugins is not None and any(a.data is not None for a in msg.attachments):
                inv = self.invocation(msg, where)
                for a in msg.attachments:  # before the reply, so the model can already use saved files
                    if a.data is not None:
                        await self.plugins.emit("attachment", inv, a.filename, a.data)
            async with self.memory.foreground():
                reply = await self._converse(msg, text, where, tier, on_text)
            if self.plugins is not None:
                reply.files += self.plugins.take_files(msg.user_id, msg.channel_id)
            return reply
        except (InvalidInput, StoreError) as exc:
            return Reply(f"Sorry, I couldn't do that: {exc}", error=True)
        except Exception:
            # A bug, not bad input: the person gets a plain sentence (never a traceback), the operator
            # the traceback in the log, and the next message is answered as usual.
            log.exception("handling a message from %s in %s failed", msg.user_id, msg.channel_id)
            return Reply(INTERNAL_ERROR, error=True)

    def _invalid(self, msg: IncomingMessage) -> str | None:
        if not isinstance(msg.text, str) or "\x00" in msg.text:
            return "I can't read that message: it contains binary data. Nothing was stored."
        for what, value in [
            ("message", msg.text),
            *((f"attachment {a.filename!r:.80}", a.text) for a in msg.attachments),
        ]:
            if not isinstance(value, str) or "\x00" in value:
                return f"I can't read that {what}: it contains binary data. Nothing was stored."
            problem = unicode_problem(value)
            if problem:
                return f"I can't read that {what}: {problem}. Nothing was stored."
        text = msg.text.strip()
        if not text and not msg.attachments:
            return "That message was empty, so there's nothing to remember."
        if len(text) > MAX_MESSAGE_CHARS:
            return (
                f"That message is {len(text):,} characters; I store at most {MAX_MESSAGE_CHARS:,}. "
                "Nothing was stored — please split it up."
            )
        return None

    async def _converse(
        self, msg: IncomingMessage, text: str, where: Where, tier: str | None, on_text: OnText | None
    ) -> Reply:
        if not text:  # attachments only: stored whole, or (too long to store) named, never cut
            text = "\n".join(f"[attachment {a.filename}]\n{a.text}" for a in msg.attachments)
            if len(text) > MAX_MESSAGE_CHARS:
                text = "\n".join(
                    f"[attachment {a.filename}: {len(a.text):,} characters, read but too long to keep in memory "
                    f"(max {MAX_MESSAGE_CHARS:,})]"
                    for a in msg.attachments
                )
        hits = None if self.llm else await self.memory.recall(text, where, k=self.recall_k)
        rec = await self.memory.acknowledge(msg, text, where)
        if rec.new_session:
            s = rec.session
            await record_system(
                self.store, "session.open", f"session {s.id} of {msg.user_id} in {msg.channel_id} opened",
                session=s.id, user=msg.user_id, channel=msg.channel_id, previous=s.previous_id,
            )  # fmt: skip
        await self._keep_attachments(msg, where, rec, text)
        if self.llm is None:
            reply = await self._recall_reply(msg, where, hits or [])
            if on_text:
                await on_text(reply)
            shown = [h.fact.id for h in (hits or [])[:3]]
            self.store.note_access(shown)
            await self.memory.record_reply(rec, where, reply, msg.timestamp, source_fact_ids=shown)
            if self.plugins is not None:
                self._emit_later("message", self.invocation(msg, where), text)
            return Reply(reply, message_id=rec.message_id)
        used: set[int] = set()  # facts the recall tool showed the model (provenance, with the context's)
        try:
            ctx = await self.memory.context(msg, text, where, rec)
            used |= ctx.fact_ids()
            if tier is not None:  # a !high / !mid / !low prefix
                await self._tier_record(msg, rec, "tier.prefix", f"the message asked for the {tier} tier", tier=tier)
            elif self.auto_tier:
                tier = await self.choose_tier(text, ctx.messages[:-1])
                if tier is not None:
                    await self._tier_record(msg, rec, "tier.auto", f"auto tier selection chose {tier}", tier=tier)
            tools = self._tools(msg, where, used)
            result = None
            if tools and self._low_first(tier, text, tools):
                result = await self._low_tier_answer(ctx.messages, tools, on_text)
                if result is None:
                    await self._tier_record(
                        msg, rec, "tier.switch", "low tier needed a tool: re-run on the base model with tools",
                        tier="base", previous="low",
                    )  # fmt: skip
            if result is None:  # not low tier, or the low model asked for a tool: base model with tools
                result = await run_tool_loop(
                    self.llm,
                    ctx.messages,
                    tools,
                    tier=tier,
                    timeout=self.llm_timeout,
                    on_text=on_text,
                    on_tool=lambda call, out, secs: self._log_tool(msg, where, call, out, secs),
                )
            reply = result.text.strip() or "…"
        except LLMError as exc:
            log.warning("LLM failed for message %s: %s", rec.message_id, exc)
            reply = APOLOGY.format(why=str(exc)[:120])
            await self.memory.record_reply(rec, where, reply, msg.timestamp)
            return Reply(reply, message_id=rec.message_id, error=True)
        await self.memory.record_reply(rec, where, reply, msg.timestamp, source_fact_ids=used)
        if self.plugins is not None:
            self._emit_later("message", self.invocation(msg, where), text)
        return Reply(reply, message_id=rec.message_id)

    async def _keep_attachments(self, msg: IncomingMessage, where: Where, rec, stored: str) -> None:
        """Long attachments not stored whole with the message are kept as linked parts plus a
        summary in the conversation's scope (clara/chunks.py). A failure is logged, never in the
        way of the reply."""
        from clara.chunks import CHUNK_MIN, store_chunks

        for a in msg.attachments:
            if len(a.text) < CHUNK_MIN or a.text in stored:
                continue
            try:
                await store_chunks(
                    self.store, filename=a.filename, text=a.text, scope=where.conversation,
                    message_id=rec.message_id, speaker=msg.display_name, user_id=msg.user_id,
                )  # fmt: skip
            except Exception:
                log.exception("keeping attachment %r of message %s failed", a.filename[:80], rec.message_id)

    async def _tier_record(self, msg: IncomingMessage, rec, event: str, text: str, **detail) -> None:
        """A `system` record of a model tier choice or switch for message `rec`."""
        await record_system(
            self.store, event, f"{text} (message {rec.message_id} of {msg.user_id})",
            message=rec.message_id, session=rec.session.id, user=msg.user_id, **detail,
        )  # fmt: skip

    async def _log_tool(self, msg: IncomingMessage, where: Where, call, result: str, seconds: float) -> None:
        """One `tool_execution` record per tool call the model made (seed 003): name, arguments,
        result, duration and error, in the caller's private scope (never recalled into a chat;
        `clara memory list --kind tool_execution`, `!export`). A failed write is logged, never
        in the way of the reply."""
        error = result if result[:6].lower() == "error:" else None
        args = json.dumps(call.arguments, ensure_ascii=False, sort_keys=True, default=str)
        ms = round(seconds * 1000, 1)
        record = {
            "tool": call.name,
            "arguments": call.arguments,
            "result": result[:2000],
            "duration_ms": ms,
            "error": error[:500] if error else None,
        }
        outcome = f"failed: {error[6:200].strip()}" if error else f"→ {result[:200]}"
        try:
            await self.store.add(
                f"tool {call.name}({args[:300]}) {outcome} ({ms:g} ms)",
                where.user,
                kind="tool_execution",
                importance=0.2,
                context=json.dumps(record, ensure_ascii=False, default=str)[:4000],
                source_ref=f"tool:{call.name}"[:200],
                created_by=msg.user_id,
            )
        except Exception:
            log.exception("recording the tool execution %s failed", call.name)

    def _tools(self, msg: IncomingMessage, where: Where, used: set[int]) -> list:
        """The tools this message may use (core memory tools plus the plugins')."""
        tools = core_tools(self.memory, msg, where, used)
        if self.plugins is not None:
            tools += self.plugins.tools(self.invocation(msg, where))
        return tools

    def _low_first(self, tier: str | None, text: str, tools: list) -> bool:
        """Whether this turn is first answered by the low model without tools: the turn's tier (or
        the provider's default tier, ``MODEL_TIER``) is ``low`` and the message does not clearly need
        a tool (`CLEARLY_NEEDS_TOOLS`, or it names one of the tools)."""
        if (tier or getattr(self.llm, "default_tier", None)) != "low":
            return False
        if CLEARLY_NEEDS_TOOLS.search(text):
            return False
        lowered = text.lower()
        return not any(t.name.lower() in lowered for t in tools)

    async def _low_tier_answer(self, messages: list[ChatMessage], tools: list, on_text: OnText | None):
        """The low tier's answer, made without tools; None when the low model asked for a tool
        (it answered `NEEDS_TOOLS`, or emitted a tool call anyway): the caller then re-runs the
        turn on the base model with tools. Text is streamed to `on_text` as soon as it cannot be
        the start of `NEEDS_TOOLS` any more, so a refused turn shows nothing."""
        names = ", ".join(sorted(t.name for t in tools)[:40])
        first = messages[0]
        if first.role == "system":
            messages = [ChatMessage.system(first.content + LOW_TIER_NOTE.format(names=names)), *messages[1:]]
        else:
            messages = [ChatMessage.system(LOW_TIER_NOTE.format(names=names).strip()), *messages]
        held: list[str] = []
        passing = False

        async def gate(delta: str) -> None:
            nonlocal passing
            if passing:
                if on_text:
                    await on_text(delta)
                return
            held.append(delta)
            so_far = "".join(held).lstrip()
            if so_far and not NEEDS_TOOLS.startswith(so_far[: len(NEEDS_TOOLS)]) or len(so_far) > len(NEEDS_TOOLS):
                passing = True
                if on_text:
                    await on_text("".join(held))

        texts: list[str] = []
        asked = False
        try:
            async with asyncio.timeout(self.llm_timeout):
                async with aclosing(self.llm.stream(messages, tier="low", max_tokens=1024)) as events:
                    async for event in events:
                        if event.kind == "text" and event.text:
                            texts.append(event.text)
                            await gate(event.text)
                        elif event.kind == "tool_call":
                            asked = True
        except TimeoutError as exc:
            raise LLMTimeout(f"The model took longer than {self.llm_timeout:g} s.", provider=self.llm.name) from exc
        text = "".join(texts)
        if asked or NEEDS_TOOLS in text:
            log.info("the low tier asked for a tool; re-running the turn on the base model with tools")
            return None
        if not passing and on_text and held:
            await on_text("".join(held))
        return ToolLoopResult(text, 1, messages=[*messages, ChatMessage.assistant(text)])

    async def choose_tier(self, text: str, history: list[ChatMessage] | None = None) -> str | None:
        """AUTO_TIER_SELECTION: ask the low-tier model how demanding `text` is (one word), showing
        it up to `TIER_CONTEXT_MESSAGES` recent user/assistant messages of `history` so that a short
        "yes" in a demanding discussion stays on a demanding tier. None (= the default tier) when
        the answer is unusable or the call fails; never raises."""
        recent = [m for m in history or [] if m.role in ("user", "assistant") and m.content.strip()]
        recent = recent[-TIER_CONTEXT_MESSAGES:]
        prompt = text[:2000]
        if recent:
            lines = [f"{'User' if m.role == 'user' else 'Assistant'}: {m.content.strip()[:500]}" for m in recent]
            prompt = "Recent conversation:\n" + "\n".join(lines) + f"\n\nNext message:\n{prompt}"
        try:
            done = await self.llm.complete(
                [ChatMessage(role="system", content=TIER_PROMPT), ChatMessage(role="user", content=prompt)],
                tier="low",
                max_tokens=3,
                timeout=min(15.0, self.llm_timeout),
            )
        except LLMError as exc:
            log.info("tier selection failed (%s); using the default tier", exc)
            return None
        word = done.text.strip().strip(".").lower()
        return word if word in ("low", "mid", "high") else None

    async def _recall_reply(self, msg: IncomingMessage, where: Where, hits: list[RecallHit]) -> str:
        if not hits:
            return (
                "Noted — I've stored that. I don't recall anything related yet. "
                "(No language model is configured, so I can only remember and recall, not chat.)"
            )
        lines = ["Noted. Here is what I remember that relates to it:"]
        facts = [h.fact for h in hits[:3]]
        await self.commands.save_listing(msg, facts)
        lines += self.commands.numbered(msg, where, facts)
        lines.append("(No language model is configured, so I answer with what I recall.)")
        return "\n".join(lines)
