"""What a transport hands the core, and what it gets back. No transport library is imported here."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


@dataclass(slots=True)
class Attachment:
    """An attachment already read by the transport: `text` is what goes into the context (size-limited
    there, or a note such as "(not a text file: not read)"); `data` the raw bytes when the transport
    downloaded them (plugins such as files keep them; None when not downloaded)."""

    filename: str
    text: str
    data: bytes | None = None


@dataclass(slots=True)
class IncomingMessage:
    """One message from a person. `user_id` is the stable identity (Discord user id, terminal
    name); `display_name` may change. `reply_to` holds the text of the replied-to chain, oldest
    first, as (speaker, text) pairs."""

    user_id: str
    display_name: str
    channel_id: str
    text: str
    is_dm: bool = False
    guild_id: str | None = None
    # When it was said; None = now by the store's clock (set by ChatEngine.handle). Simulations and
    # imports pass the time explicitly.
    timestamp: datetime | None = None
    attachments: list[Attachment] = field(default_factory=list)
    reply_to: list[tuple[str, str]] = field(default_factory=list)
    external_id: str | None = None
    level: int = 0  # clara.plugin_api.Level, computed by the transport (fail-closed)


@dataclass(slots=True)
class Reply:
    """The core's answer. `files` are (filename, bytes) for the transport to attach (e.g. `!export`).
    `message_id` is the stored turn (its memory write is queued); `stored_fact_id` is set when a
    command stored a fact directly."""

    text: str
    stored_fact_id: int | None = None
    message_id: int | None = None
    error: bool = False
    files: list[tuple[str, bytes]] = field(default_factory=list)
    private: bool = False  # shows private data: transports keep it out of shared channels
