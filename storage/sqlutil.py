"""Small SQL helpers shared by the store's modules (dialect-neutral insert-or-ignore, aware UTC times).
The current time comes from the injected clock (`storage.clock`), never from here."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy.dialects import postgresql, sqlite


def aware(value: datetime | None) -> datetime | None:
    """SQLite returns naive datetimes; every time the store hands out is UTC-aware."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def dialect_insert(dialect: str, table: Any):
    """`INSERT` with ON CONFLICT support for the connection's dialect (SQLite or PostgreSQL)."""
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)
