"""Namespaced settings in SQL (Red-DiscordBot's Config idea): values keyed by
(namespace, target, key), e.g. ("core", "channel:42", "project"). JSON values; optional expiry
for short-lived values such as a pending confirmation code. Used by the core and, through the
plugin API, by plugins (each in its own namespace)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import delete, select

from storage.clock import Clock, system_clock
from storage.db import Engines
from storage.errors import InvalidInput
from storage.models import SettingRow
from storage.sqlutil import aware, dialect_insert
from storage.text import shown


def _check(namespace: str, target: str, key: str) -> None:
    for name, value in (("namespace", namespace), ("target", target), ("key", key)):
        if (
            not isinstance(value, str)
            or not value
            or len(value) > (100 if name != "target" else 200)
            or "\x00" in value
        ):
            raise InvalidInput(f"bad setting {name}: {shown(value)}")


class SettingsStore:
    def __init__(self, engines: Engines, clock: Clock = system_clock):
        self.engines = engines
        self.clock = clock
        self.dialect = engines.dialect

    async def get(self, namespace: str, target: str, key: str, default: Any = None, *, now: datetime | None = None):
        """The stored value, or `default` if unset or expired."""
        _check(namespace, target, key)
        now = now or self.clock()
        async with self.engines.reader.connect() as conn:
            row = (
                await conn.execute(
                    select(SettingRow.value, SettingRow.expires_at).where(
                        SettingRow.namespace == namespace, SettingRow.target == target, SettingRow.key == key
                    )
                )
            ).first()
        if row is None or (row.expires_at is not None and aware(row.expires_at) <= now):
            return default
        return row.value

    async def set(
        self, namespace: str, target: str, key: str, value: Any, *, expires_at: datetime | None = None
    ) -> None:
        """Create or replace a value (JSON-serialisable)."""
        _check(namespace, target, key)
        now = self.clock()
        stmt = dialect_insert(self.dialect, SettingRow).values(
            namespace=namespace, target=target, key=key, value=value, expires_at=expires_at, updated_at=now
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=["namespace", "target", "key"],
            set_={"value": stmt.excluded.value, "expires_at": stmt.excluded.expires_at, "updated_at": now},
        )
        async with self.engines.writer.begin() as conn:
            await conn.execute(stmt)

    async def delete(self, namespace: str, target: str, key: str | None = None) -> int:
        """Remove one value, or every value of `target` in `namespace` when `key` is None."""
        cond = [SettingRow.namespace == namespace, SettingRow.target == target]
        if key is not None:
            cond.append(SettingRow.key == key)
        async with self.engines.writer.begin() as conn:
            return (await conn.execute(delete(SettingRow).where(*cond))).rowcount

    async def take(self, namespace: str, target: str, key: str, *, now: datetime | None = None) -> Any:
        """Read and delete a value atomically (one-shot tokens). None if unset or expired."""
        _check(namespace, target, key)
        now = now or self.clock()
        cond = (SettingRow.namespace == namespace, SettingRow.target == target, SettingRow.key == key)
        async with self.engines.writer.begin() as conn:
            row = (await conn.execute(select(SettingRow.value, SettingRow.expires_at).where(*cond))).first()
            if row is None:
                return None
            await conn.execute(delete(SettingRow).where(*cond))
        if row.expires_at is not None and aware(row.expires_at) <= now:
            return None
        return row.value

    async def export_target(self, target: str) -> dict[str, dict[str, Any]]:
        """Every namespace's values for one target: {namespace: {key: value}}."""
        async with self.engines.reader.connect() as conn:
            rows = (await conn.execute(select(SettingRow).where(SettingRow.target == target))).all()
        out: dict[str, dict[str, Any]] = {}
        for r in rows:
            out.setdefault(r.namespace, {})[r.key] = r.value
        return out

    async def purge_targets(self, targets: list[str], conn=None) -> int:
        """Delete every value stored for these targets, in all namespaces (user erasure)."""
        if not targets:
            return 0
        stmt = delete(SettingRow).where(SettingRow.target.in_(targets))
        if conn is not None:
            return (await conn.execute(stmt)).rowcount
        async with self.engines.writer.begin() as c:
            return (await c.execute(stmt)).rowcount
