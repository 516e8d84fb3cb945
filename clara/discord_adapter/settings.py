"""Discord adapter settings (names as in the seed bot)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

Ids = Annotated[frozenset[int], NoDecode]


def _ids(value) -> frozenset[int]:
    if value is None or value == "":
        return frozenset()
    if isinstance(value, int):
        return frozenset({value})
    if isinstance(value, list | set | frozenset | tuple):
        return frozenset(int(v) for v in value)
    out = set()
    for part in str(value).split(","):
        part = part.strip()
        if part:
            if not part.isdigit():
                raise ValueError(f"not a Discord id: {part!r}")
            out.add(int(part))
    return frozenset(out)


class DiscordSettings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    discord_bot_token: str | None = None
    discord_allowed_servers: Ids = Field(default=frozenset(), description="ids; all their channels")
    discord_allowed_channels: Ids = Field(default=frozenset(), description="ids (if no servers set)")
    discord_allowed_roles: Ids = Field(default=frozenset(), description="member needs one of them")
    discord_owner_ids: Ids = Field(default=frozenset(), description="bot owners (else app owner)")
    discord_mod_roles: Ids = Field(default=frozenset(), description="roles that count as moderator")
    discord_stop_phrases: str = "clara stop,stop clara,nevermind,never mind"
    discord_max_messages: int = Field(default=25, ge=1, le=100, description="reply-chain depth in context")
    discord_queue_size: int = Field(default=5, ge=1, le=100, description="waiting messages per channel")
    discord_edit_interval: float = Field(default=1.2, ge=0.05, description="seconds between streaming edits")
    clara_max_file_size: int = Field(
        default=50 * 1024 * 1024,
        ge=1,
        description="attachments up to this size are downloaded (the files plugin keeps them)",
    )
    discord_attachment_max_bytes: int = Field(default=100_000, ge=0)
    discord_client_id: int | None = Field(default=None, description="application id, for the invite link")
    discord_log_channel_id: int | None = Field(default=None, description="channel the console log is mirrored to")
    discord_log_level: str | None = Field(default=None, description="level mirrored there (default: LOG_LEVEL)")
    discord_api_base: str | None = Field(default=None, description="REST base URL (a proxy, or a local fake)")
    discord_gateway_url: str | None = Field(default=None, description="gateway URL (with DISCORD_API_BASE)")

    @field_validator(
        "discord_allowed_servers",
        "discord_allowed_channels",
        "discord_allowed_roles",
        "discord_owner_ids",
        "discord_mod_roles",
        mode="before",
    )
    @classmethod
    def _parse_ids(cls, v):
        return _ids(v)

    @property
    def stop_phrases(self) -> frozenset[str]:
        return frozenset(p.strip().lower() for p in self.discord_stop_phrases.split(",") if p.strip())
