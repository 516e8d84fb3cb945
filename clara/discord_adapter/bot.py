"""Clara on Discord: a thin discord.py adapter over the transport-agnostic core (`ChatEngine`).

What it adds is Discord behaviour only: who may talk to the bot (allow-lists, per-channel reply
modes), one reply at a time per channel (bounded queue, typing indicator, stop phrases that cancel
the running reply and clear the queue), reply chains and text attachments as context, streaming by
editing, long replies split for Discord, commands (cog.py) and a `send` API for proactive messages.
Nothing slow runs on the event loop: the core offloads CPU work and all network calls have timeouts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from dataclasses import dataclass, field

import discord
from discord.ext import commands

from clara.chat import ChatEngine
from clara.discord_adapter.privileges import Level, privilege
from clara.discord_adapter.settings import DiscordSettings
from clara.discord_adapter.streaming import StreamingReply
from clara.messages import Attachment, IncomingMessage

log = logging.getLogger(__name__)
NS = "discord"  # settings namespace
MODES = ("mention", "active", "off")
TEXT_TYPES = ("text/", "application/json", "application/xml", "application/x-yaml")
TEXT_SUFFIXES = (".txt", ".md", ".py", ".json", ".csv", ".log", ".yaml", ".yml", ".toml", ".ini", ".sql", ".js", ".ts")


@dataclass
class ChannelLane:
    """One channel's queue and the reply running in it."""

    queue: asyncio.Queue
    worker: asyncio.Task | None = None
    current: asyncio.Task | None = None
    pending: set[int] = field(default_factory=set)


class ClaraBot(commands.Bot):
    def __init__(self, engine: ChatEngine, settings: DiscordSettings | None = None, **kw):
        intents = discord.Intents.default()
        intents.message_content = True
        intents.members = True
        super().__init__(command_prefix="!", intents=intents, help_command=None, **kw)
        self.engine = engine
        self.store = engine.store
        self.dsettings = settings or DiscordSettings()
        self.lanes: dict[int, ChannelLane] = {}
        self._gates: dict[int, asyncio.Lock] = {}
        self._app_owner_ids: frozenset[int] = frozenset()
        self.log_mirror = None  # clara.discord_adapter.logmirror.LogMirror with DISCORD_LOG_CHANNEL_ID
        self._was_ready = False
        self.add_listener(self._lifecycle_ready, "on_ready")
        self.add_listener(self._lifecycle_resumed, "on_resumed")
        self.add_listener(self._lifecycle_disconnect, "on_disconnect")

    # ------------------------------------------------------------------ lifecycle
    async def setup_hook(self) -> None:
        from clara.discord_adapter.cog import MemoryCog, PluginCommands
        from clara.discord_adapter.logmirror import LogMirror, invite_url

        if self.dsettings.discord_log_channel_id and self.log_mirror is None:
            name = (self.dsettings.discord_log_level or "").upper()
            level = logging.getLevelName(name) if name else logging.NOTSET
            self.log_mirror = LogMirror(
                self._post_log, self.dsettings.discord_log_channel_id, level=level if isinstance(level, int) else 0
            )
            self.log_mirror.start()
        client_id = self.dsettings.discord_client_id or self.application_id
        if client_id:
            log.info("invite link: %s", invite_url(client_id))

        await self.add_cog(MemoryCog(self))
        if self.engine.plugins is not None:
            self.engine.plugins.sender = self.send
            await self.add_cog(PluginCommands(self))
        try:
            info = await self.application_info()
            owners = {info.owner.id} if info.owner else set()
            if info.team:
                owners |= {m.id for m in info.team.members}
            self._app_owner_ids = frozenset(owners)
        except discord.HTTPException:
            log.warning("could not read the application owner; only DISCORD_OWNER_IDS are bot owners")
        await self.tree.sync()

    async def _post_log(self, channel_id: int, text: str) -> None:
        channel = self.get_channel(channel_id) or await self.fetch_channel(channel_id)
        await channel.send(text, allowed_mentions=discord.AllowedMentions.none())

    def _lifecycle(self, text: str) -> None:
        # Its own logger, not mirrored as a log line: the mirror posts the event itself (once).
        logging.getLogger("clara.discord_adapter.lifecycle").info("%s", text)
        if self.log_mirror is not None:
            self.log_mirror.event(text)

    async def _lifecycle_ready(self) -> None:
        from clara.discord_adapter.logmirror import RECONNECTED, STARTED

        if self._was_ready:
            self._lifecycle(RECONNECTED)
            return
        self._was_ready = True
        self._lifecycle(f"{STARTED} as {self.user} in {len(self.guilds)} server(s)")

    async def _lifecycle_resumed(self) -> None:
        from clara.discord_adapter.logmirror import RESUMED

        self._lifecycle(RESUMED)

    async def _lifecycle_disconnect(self) -> None:
        from clara.discord_adapter.logmirror import DISCONNECTED

        if not self.is_closed():
            self._lifecycle(DISCONNECTED)

    async def close(self) -> None:
        if self.log_mirror is not None:
            from clara.discord_adapter.logmirror import STOPPING

            self._lifecycle(STOPPING)
            mirror, self.log_mirror = self.log_mirror, None
            await mirror.aclose()
        for lane in self.lanes.values():
            for t in (lane.current, lane.worker):
                if t:
                    t.cancel()
        # discord.py waits `guild_ready_timeout` (2 s) after READY before dispatching `ready`; a
        # stop inside that window let the pending dispatch run after close() had dropped the
        # loop (AttributeError: '_MissingSentinel' … 'create_task'): cancel it first.
        ready = getattr(self._connection, "_ready_task", None)
        if ready is not None and not ready.done():
            ready.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(ready, 2)
        await super().close()

    # ------------------------------------------------------------------ who and where
    def level(self, user: discord.abc.User, guild: discord.Guild | None) -> Level:
        return privilege(user, guild, self.dsettings, self._app_owner_ids)

    def allowed(self, message: discord.Message) -> bool:
        """Allow-lists (DMs always pass): DISCORD_ALLOWED_SERVERS (all their channels) or else
        DISCORD_ALLOWED_CHANNELS; and DISCORD_ALLOWED_ROLES when set."""
        s = self.dsettings
        if message.guild is None:
            return True
        if s.discord_allowed_servers:
            if message.guild.id not in s.discord_allowed_servers:
                return False
        elif s.discord_allowed_channels and message.channel.id not in s.discord_allowed_channels:
            return False
        if s.discord_allowed_roles:
            roles = getattr(message.author, "roles", None)
            if not roles or not any(r.id in s.discord_allowed_roles for r in roles):
                return False
        return True

    async def channel_mode(self, channel_id: int) -> str:
        return await self.store.settings.get(NS, f"channel:{channel_id}", "mode", "mention")

    def _addressed(self, message: discord.Message) -> bool:
        if self.user in message.mentions:
            return True
        ref = message.reference.resolved if message.reference else None
        return isinstance(ref, discord.Message) and ref.author.id == self.user.id

    def _strip_mention(self, text: str) -> str:
        return re.sub(rf"<@!?{self.user.id}>", "", text).strip()

    # ------------------------------------------------------------------ messages
    async def on_message(self, message: discord.Message) -> None:
        if message.author.bot or not self.allowed(message):
            return
        # discord.py runs each event in its own task: a per-channel FIFO lock, taken before any
        # other await, keeps messages in arrival order (a stop phrase sees what came before it).
        gate = self._gates.setdefault(message.channel.id, asyncio.Lock())
        async with gate:
            await self._on_message(message)

    async def _on_message(self, message: discord.Message) -> None:
        text = self._strip_mention(message.content)
        if text.lower().strip(" .!") in self.dsettings.stop_phrases and message.channel.id in self.lanes:
            if message.guild is None or await self.channel_mode(message.channel.id) != "off":
                await self.stop_channel(message.channel.id)
                await message.channel.send("Stopped.")
                return
        if message.guild is not None:
            mode = await self.channel_mode(message.channel.id)
            if mode == "off":
                return  # slash commands still work (an admin can switch it back on)
            if mode == "mention" and not self._addressed(message) and not text.startswith("!"):
                return
        if text.startswith("!"):
            name = text[1:].split(maxsplit=1)[0].lower() if len(text) > 1 else ""
            if self.get_command(name) is not None:
                message.content = text  # the mention was stripped
                await self.process_commands(message)
                return
        await self.enqueue(message, text)

    async def enqueue(self, message: discord.Message, text: str) -> None:
        lane = self.lanes.get(message.channel.id)
        if lane is None or lane.worker is None or lane.worker.done():
            lane = self.lanes[message.channel.id] = ChannelLane(asyncio.Queue(self.dsettings.discord_queue_size))
            lane.worker = asyncio.create_task(self._lane_worker(lane), name=f"lane-{message.channel.id}")
        try:
            lane.queue.put_nowait((message, text))
        except asyncio.QueueFull:
            await message.reply(
                "I'm still answering earlier messages here — please try again in a moment.", mention_author=False
            )

    async def stop_channel(self, channel_id: int) -> None:
        """Cancel the reply running in the channel and drop its queue (stop phrases)."""
        lane = self.lanes.get(channel_id)
        if lane is None:
            return
        while not lane.queue.empty():
            lane.queue.get_nowait()
            lane.queue.task_done()
        if lane.current and not lane.current.done():
            lane.current.cancel()

    async def _lane_worker(self, lane: ChannelLane) -> None:
        while True:
            message, text = await lane.queue.get()
            try:
                lane.current = asyncio.create_task(self.respond(message, text))
                with contextlib.suppress(asyncio.CancelledError):
                    await lane.current
            except Exception:
                log.exception("reply failed in channel %s", message.channel.id)
            finally:
                lane.current = None
                lane.queue.task_done()

    async def to_incoming(self, message: discord.Message, text: str) -> IncomingMessage:
        """The core's view of a Discord message: stable ids, reply chain, text attachments."""
        return IncomingMessage(
            user_id=str(message.author.id),
            display_name=getattr(message.author, "display_name", message.author.name),
            channel_id=str(message.channel.id),
            text=text,
            is_dm=message.guild is None,
            guild_id=str(message.guild.id) if message.guild else None,
            attachments=await self._attachments(message),
            reply_to=await self._reply_chain(message),
            external_id=str(message.id),
            level=int(self.level(message.author, message.guild)),
        )

    async def respond(self, message: discord.Message, text: str) -> None:
        """Answer one message: typing indicator, streamed reply, split, files."""
        incoming = await self.to_incoming(message, text)
        reply_box = StreamingReply(message.channel, reference=message, interval=self.dsettings.discord_edit_interval)
        try:
            async with message.channel.typing():
                if incoming.text.startswith("!"):  # a command: answered whole, never streamed
                    reply = await self.engine.handle(incoming)
                else:
                    reply = await self.engine.handle(incoming, on_text=reply_box.feed)
            if reply.private and message.guild is not None:
                dm = message.author.dm_channel or await message.author.create_dm()
                await StreamingReply(dm, interval=0).finish(reply.text, reply.files)
                await reply_box.finish("I've sent you the answer in a DM (it includes private data).")
            else:
                await reply_box.finish(reply.text, reply.files)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await reply_box.finish(reply_box.text.rstrip() + " … (stopped)")
            raise

    async def _attachments(self, message: discord.Message) -> list[Attachment]:
        """Text attachments are read into the context (up to DISCORD_ATTACHMENT_MAX_BYTES); every
        attachment up to CLARA_MAX_FILE_SIZE is downloaded whole into `Attachment.data` (the files
        plugin saves it in the sender's folder)."""
        out = []
        limit = self.dsettings.discord_attachment_max_bytes
        keep = self.dsettings.clara_max_file_size
        for a in message.attachments:
            is_text = (a.content_type or "").startswith(TEXT_TYPES) or a.filename.lower().endswith(TEXT_SUFFIXES)
            blob = None
            if a.size <= max(keep, limit if is_text else 0):
                try:
                    blob = await asyncio.wait_for(a.read(), 60)
                except (discord.HTTPException, TimeoutError):
                    out.append(Attachment(a.filename, "(could not be downloaded)"))
                    continue
            data = blob if blob is not None and len(blob) <= keep else None
            if not is_text:
                out.append(Attachment(a.filename, "(not a text file: not read)", data=data))
            elif a.size > limit or blob is None:
                out.append(Attachment(a.filename, f"(too large to read: {a.size:,} bytes, limit {limit:,})", data=data))
            else:
                text = blob.decode("utf-8", errors="replace").replace("\x00", "")
                out.append(Attachment(a.filename, text, data=data))
        return out

    async def _reply_chain(self, message: discord.Message) -> list[tuple[str, str]]:
        """The replied-to messages, oldest first, up to DISCORD_MAX_MESSAGES."""
        chain: list[tuple[str, str]] = []
        ref = message.reference
        while ref is not None and ref.message_id and len(chain) < self.dsettings.discord_max_messages:
            prev = ref.resolved if isinstance(ref.resolved, discord.Message) else None
            if prev is None:
                try:
                    prev = await asyncio.wait_for(message.channel.fetch_message(ref.message_id), 10)
                except (discord.HTTPException, TimeoutError):
                    break
            chain.append((getattr(prev.author, "display_name", prev.author.name), prev.content))
            ref = prev.reference
        return list(reversed(chain))

    # ------------------------------------------------------------------ proactive
    async def send(self, target: str, text: str, files: list[tuple[str, bytes]] = ()) -> list[discord.Message]:
        """Send a message on Clara's own initiative: `target` is "channel:<id>" or "user:<id>" (a
        DM). Long text is split; returns the messages sent. Raises ValueError for a bad target and
        PermissionError for a channel whose mode is off."""
        kind, _, raw = target.partition(":")
        if not raw.isdigit() or kind not in ("channel", "user"):
            raise ValueError(f"bad target {target!r}: use channel:<id> or user:<id>")
        if kind == "user":
            user = self.get_user(int(raw)) or await self.fetch_user(int(raw))
            channel = user.dm_channel or await user.create_dm()
        else:
            if await self.channel_mode(int(raw)) == "off":  # channel modes bind proactive messages too
                raise PermissionError(f"channel {raw} is in mode off")
            channel = self.get_channel(int(raw)) or await self.fetch_channel(int(raw))
        return await StreamingReply(channel, interval=0).finish(text, list(files))
