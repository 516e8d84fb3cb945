"""The dashboard's own settings (environment / `.env`), kept apart from `clara.settings`."""

from __future__ import annotations

import ipaddress

from pydantic import Field, field_validator
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
    trusted_proxies: str = Field(
        default="",
        validation_alias="CLARA_DASHBOARD_TRUSTED_PROXIES",
        description=(
            "comma-separated IP addresses / CIDR networks of reverse proxies whose X-Forwarded-For names the "
            "real client (login throttling is per client); empty (default) = X-Forwarded-For is ignored"
        ),
    )

    @field_validator("trusted_proxies")
    @classmethod
    def _check_proxies(cls, value: str) -> str:
        entries = [e.strip() for e in value.split(",") if e.strip()]
        for entry in entries:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(
                    f"CLARA_DASHBOARD_TRUSTED_PROXIES: {entry!r} is not an IP address or CIDR network "
                    "(e.g. 127.0.0.1,10.0.0.0/8)"
                ) from None
        return ",".join(entries)

    @property
    def trusted_proxy_list(self) -> list[str]:
        """The trusted proxies as a list of IP/CIDR strings ([] = honour no X-Forwarded-For)."""
        return [e for e in self.trusted_proxies.split(",") if e]
