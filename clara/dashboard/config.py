"""The dashboard's own settings (environment / `.env`), kept apart from `clara.settings`."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class DashboardSettings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore", populate_by_name=True)

    token: str | None = Field(
        default=None,
        validation_alias="CLARA_DASHBOARD_TOKEN",
        description="admin login token; unset = a random one is generated at start and logged once",
    )
    host: str = Field(default="127.0.0.1", validation_alias="CLARA_DASHBOARD_HOST")
    port: int = Field(default=8001, ge=0, le=65535, validation_alias="DISCORD_MONITOR_PORT")
    secure_cookie: bool = Field(
        default=False, validation_alias="CLARA_DASHBOARD_SECURE_COOKIE", description="set behind HTTPS"
    )
    session_hours: float = Field(default=12.0, gt=0, validation_alias="CLARA_DASHBOARD_SESSION_HOURS")
