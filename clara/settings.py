"""Clara's settings, read from the environment and `.env` (pydantic-settings).

Variable names follow the seed bot where they exist (`DATABASE_URL`, `QDRANT_URL`, `OPENAI_API_KEY`).
"""

from __future__ import annotations

from dataclasses import fields
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from storage import StoreConfig


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    data_dir: Path = Field(default=Path("./data"), validation_alias="CLARA_DATA_DIR")
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL; default sqlite file <data_dir>/clara.db. postgresql:// uses psycopg 3.",
    )
    qdrant_url: str | None = Field(default=None, description="Qdrant server; unset = embedded Qdrant Edge")
    qdrant_api_key: str | None = None
    qdrant_collection: str = "clara_facts"
    table_prefix: str = Field(
        default="",
        validation_alias="CLARA_TABLE_PREFIX",
        description="prefix of every table, index, trigger and version table (storage/naming.py); read once at start",
    )

    embedding_provider: Literal["local", "openai", "cohere"] = "local"
    embedding_model: str | None = None
    openai_api_key: str | None = None
    openai_base_url: str | None = None
    cohere_api_key: str | None = None
    cohere_base_url: str | None = None

    session_idle_minutes: float = Field(default=30, gt=0, description="idle time that closes a session")
    memory_job_lease: float = Field(
        default=120, ge=5, description="seconds a worker owns a memory job; after a crash it is retried then"
    )
    carryover_messages: int = Field(default=6, ge=0, le=50, description="previous-session turns carried over")
    bot_name: str = Field(default="Clara", validation_alias="CLARA_BOT_NAME")
    persona: str | None = Field(default=None, validation_alias="CLARA_PERSONA")
    admin_users: str = Field(default="", validation_alias="CLARA_ADMIN_USERS", description="comma-separated ids")
    operator: str = Field(
        default="you",
        validation_alias="CLARA_OPERATOR",
        description="the terminal's operator (`clara chat --user`; default: the default user): the only terminal admin",
    )

    embed_threads: int = Field(default=1, ge=1, le=16, description="cores for background embedding")
    log_level: str = "WARNING"

    # Scheduled maintenance (clara/maintenance.py): crontab lines in UTC, or "off".
    maintenance_decay: str = Field(default="0 3 * * *", description="relevance decay (daily)")
    maintenance_rerank: str = Field(default="0 4 * * mon", description="importance rerank (weekly)")
    maintenance_cleanup: str = Field(default="0 2 * * *", description="expired settings, old failed jobs (daily)")
    maintenance_keep_failed_days: int = Field(default=30, ge=1)
    maintenance_keep_handoff_days: int = Field(default=180, ge=1)
    decay_half_life_days: float = Field(default=30.0, gt=0)
    backup_dir: Path | None = Field(default=None, description="folder for scheduled backups (unset = none)")
    backup_schedule: str = Field(default="30 1 * * *", description="when the scheduled backup runs")
    backup_retention_days: int = Field(default=7, ge=1, description="backups older than this are deleted")
    backup_s3_url: str | None = Field(default=None, description="s3://bucket/prefix for scheduled backups (extra s3)")
    backup_s3_endpoint_url: str | None = Field(default=None, description="S3-compatible endpoint (MinIO, R2, ...)")
    backup_s3_region: str = Field(default="us-east-1", description="the bucket's region")

    @field_validator("backup_s3_url")
    @classmethod
    def _s3_url(cls, v: str | None) -> str | None:
        if not v:
            return None
        from clara.ops.s3 import parse_s3_url

        parse_s3_url(v)
        return v.strip()

    @field_validator("table_prefix")
    @classmethod
    def _table_prefix(cls, v: str) -> str:
        from storage import naming

        return naming.check_configured(v)

    # The memory MCP server over HTTP (`clara mcp serve --http`, and inside `clara bot` with CLARA_MCP_HTTP).
    mcp_http: str | None = Field(
        default=None,
        validation_alias="CLARA_MCP_HTTP",
        description="[host:]port: `clara bot` also serves the memory MCP server there (host default 127.0.0.1)",
    )
    mcp_tokens: SecretStr = Field(
        default=SecretStr(""), validation_alias="CLARA_MCP_TOKENS", description="token=agent,… (bearer tokens)"
    )
    mcp_grants: str = Field(
        default="", validation_alias="CLARA_MCP_GRANTS", description="agent=scope,…: shared scopes agents join"
    )

    @field_validator("mcp_http")
    @classmethod
    def _listen(cls, v: str | None) -> str | None:
        if v is None or not v.strip():
            return None
        from clara.http_serve import parse_listen

        host, port = parse_listen(v)
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    @field_validator("maintenance_decay", "maintenance_rerank", "maintenance_cleanup", "backup_schedule")
    @classmethod
    def _crontab(cls, v: str) -> str:
        from clara.maintenance import check_crontab

        return check_crontab(v)

    def store_config(self) -> StoreConfig:
        """The store's configuration: every StoreConfig field that has a setting of the same name."""
        shared = {f.name for f in fields(StoreConfig)} & set(type(self).model_fields)
        return StoreConfig(**{name: getattr(self, name) for name in shared})


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
