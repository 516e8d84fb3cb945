"""Console-log mirroring to a Discord channel (MyPalClara's `DISCORD_LOG_CHANNEL_ID`) and the
bot's invite link (`DISCORD_CLIENT_ID`).

With `DISCORD_LOG_CHANNEL_ID` set, what the console log shows (the root logger's level,
`LOG_LEVEL`; `DISCORD_LOG_LEVEL` raises it for the channel) is posted to that channel, several
lines per message (at most 2000 characters, in order), secrets redacted as on the console. The
lifecycle events are posted whatever the level: 🟢 started, 🟡 disconnected, 🔄 resumed /
reconnected, 🔴 shutting down. Records of discord.py's own loggers are not mirrored (posting them
would log again), and a failed post is dropped (never retried in a loop, never raised).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from urllib.parse import urlencode

log = logging.getLogger(__name__)

MAX_CHARS = 2000
QUEUE_SIZE = 1000
# Send Messages, Send Messages in Threads, Embed Links, Attach Files, Read Message History, View
# Channels, Add Reactions, Use Application Commands — what Clara's replies, files and slash commands use.
INVITE_PERMISSIONS = (1 << 11) | (1 << 38) | (1 << 14) | (1 << 15) | (1 << 16) | (1 << 10) | (1 << 6) | (1 << 31)
_SKIP = ("discord", "aiohttp", "websockets", __name__, "clara.discord_adapter.lifecycle")

STARTED, DISCONNECTED, RESUMED, RECONNECTED, STOPPING = (
    "🟢 Clara started",
    "🟡 Clara disconnected from Discord",
    "🔄 Clara resumed its Discord session",
    "🔄 Clara reconnected to Discord",
    "🔴 Clara shutting down",
)


def invite_url(client_id: int | str, permissions: int = INVITE_PERMISSIONS) -> str:
    """The OAuth2 URL that adds the bot (with slash commands) to a server."""
    cid = str(client_id).strip()
    if not cid.isdigit():
        raise ValueError(f"DISCORD_CLIENT_ID must be the application's numeric id, not {cid[:40]!r}")
    query = urlencode({"client_id": cid, "permissions": permissions, "scope": "bot applications.commands"})
    return f"https://discord.com/oauth2/authorize?{query}"


class _Handler(logging.Handler):
    def __init__(self, mirror: LogMirror, level: int):
        super().__init__(level)
        from clara.ops.logs import RedactingFilter, secrets_from

        self.mirror = mirror
        self.addFilter(RedactingFilter(secrets_from(os.environ)))
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith(_SKIP):
            return False
        return super().filter(record)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.mirror.post(self.format(record))
        except Exception:  # logging must never raise
            self.handleError(record)


class LogMirror:
    """Posts log lines and lifecycle events to one channel through `send(channel_id, text)`."""

    def __init__(self, send, channel_id: int, *, level: int = logging.NOTSET):
        self.send = send
        self.channel_id = channel_id
        self.handler = _Handler(self, level)
        self.queue: asyncio.Queue[str] = asyncio.Queue(QUEUE_SIZE)
        self.task: asyncio.Task | None = None
        self.dropped = 0
        self.pending = 0  # lines queued or being posted
        self.idle = asyncio.Event()
        self.idle.set()

    def start(self) -> None:
        if self.task is None:
            logging.getLogger().addHandler(self.handler)
            self.task = asyncio.create_task(self._run(), name="discord-log-mirror")

    def post(self, line: str) -> None:
        """Queue one line (from any thread: logging may happen off the event loop)."""
        try:
            loop = self.task.get_loop() if self.task else asyncio.get_running_loop()
        except RuntimeError:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._put(line)
        else:
            loop.call_soon_threadsafe(self._put, line)

    def _put(self, line: str) -> None:
        try:
            self.queue.put_nowait(line[: MAX_CHARS - 10])
            self.pending += 1
            self.idle.clear()
        except asyncio.QueueFull:
            self.dropped += 1

    def event(self, text: str) -> None:
        self.post(f"**{text}**")

    async def _run(self) -> None:
        while True:
            lines = [await self.queue.get()]
            size = len(lines[0])
            while not self.queue.empty():
                nxt = self.queue.get_nowait()
                if size + 1 + len(nxt) > MAX_CHARS:
                    await self._send(lines)
                    lines, size = [], 0
                lines.append(nxt)
                size += len(nxt) + 1
            await self._send(lines)

    async def _send(self, lines: list[str]) -> None:
        try:
            if lines:
                await asyncio.wait_for(self.send(self.channel_id, "\n".join(lines)), 15)
        except Exception as exc:  # noqa: BLE001 - a lost log line is no reason to stop the bot
            self.dropped += len(lines)
            log.debug("log lines not mirrored: %s", exc)
        finally:
            self.pending -= len(lines)
            if self.pending <= 0:
                self.idle.set()

    async def aclose(self, timeout: float = 5.0) -> None:
        """Post what is queued (bounded by `timeout`), then stop mirroring."""
        logging.getLogger().removeHandler(self.handler)
        if self.task is None:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self.idle.wait()
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self.task
        self.task = None
