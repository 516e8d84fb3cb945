"""A reply that streams into Discord: the first text creates a message; later text edits it at
most once per `interval` seconds; past 2000 characters the text continues in new messages (split
on paragraph/line boundaries, code fences kept intact — see split.py)."""

from __future__ import annotations

import io
import time

import discord

from clara.discord_adapter.split import DISCORD_LIMIT, split_message


class StreamingReply:
    def __init__(
        self,
        channel: discord.abc.Messageable,
        *,
        reference: discord.Message | None = None,
        interval: float = 1.2,
        limit: int = DISCORD_LIMIT,
    ):
        self.channel = channel
        self.reference = reference
        self.interval = interval
        self.limit = limit
        self.text = ""
        self.messages: list[discord.Message] = []
        self._shown: list[str] = []
        self._last = 0.0

    async def feed(self, delta: str) -> None:
        """Add streamed text; shows it if the last update is older than `interval`."""
        self.text += delta
        if time.monotonic() - self._last >= self.interval:
            await self._render()

    async def finish(self, text: str | None = None, files: list[tuple[str, bytes]] = ()) -> list[discord.Message]:
        """Show the final text (replacing the streamed one when given) and attach `files`."""
        if text is not None:
            self.text = text
        await self._render()
        if files:
            attachments = [discord.File(io.BytesIO(blob), filename=name) for name, blob in files]
            if self.messages:
                self.messages.append(await self.channel.send(files=attachments))
            else:
                self.messages.append(await self._send(None, files=attachments))
        return self.messages

    async def _send(self, content: str | None, **kw) -> discord.Message:
        ref = self.reference if not self.messages else None
        allowed = discord.AllowedMentions(everyone=False, roles=False, users=True, replied_user=False)
        if ref is not None:
            try:
                return await self.channel.send(
                    content, reference=ref, mention_author=False, allowed_mentions=allowed, **kw
                )
            except discord.HTTPException:
                pass  # the message replied to is gone: send without the reference
        return await self.channel.send(content, allowed_mentions=allowed, **kw)

    async def _render(self) -> None:
        self._last = time.monotonic()
        chunks = split_message(self.text, self.limit)
        for i, chunk in enumerate(chunks):
            if i < len(self.messages):
                if self._shown[i] != chunk:
                    await self.messages[i].edit(content=chunk)
                    self._shown[i] = chunk
            else:
                self.messages.append(await self._send(chunk))
                self._shown.append(chunk)
