"""Scheduled memory maintenance (the Engram seed's crons): relevance decay daily, importance
rerank weekly, cleanup daily, and — when `BACKUP_DIR` is set — a daily backup with retention.

The bot's scheduler runs them (`PluginHost(core_jobs=...)`: APScheduler, jobs persisted in SQL
`scheduler_jobs` as `core:<name>`); `clara maintenance list|run` shows and runs them by hand. Each
schedule is a crontab line in UTC (`MAINTENANCE_DECAY`, `MAINTENANCE_RERANK`, `MAINTENANCE_CLEANUP`,
`BACKUP_SCHEDULE`), or `off`. Every job reads the store's clock and is idempotent: running it twice
at the same time leaves the store as running it once.

- decay: `relevance` recomputed from the forgetting curve (`storage/decay.py`), a pure function of
  the fact's age, recalls and importance — so recomputing never compounds.
- rerank: importance refreshed from the entity graph and from use. A fact's importance is raised to
  at least `min(0.8, 0.2 + 0.1·log2(1 + n))`, `n` being the number of other active facts and open
  relations around its most connected entity, or the number of times it was recalled if larger; importance is
  never lowered (what a person or agent set stays), so a second run changes nothing.
- cleanup: expired settings (confirmation codes, short-lived values), memory jobs that failed more
  than `MAINTENANCE_KEEP_FAILED_DAYS` ago, and handoffs picked up more than
  `MAINTENANCE_KEEP_HANDOFF_DAYS` ago.
- backup: `clara-YYYYMMDD.db` (SQLite) / `.dump` (PostgreSQL) in `BACKUP_DIR` (one per day: a second
  run that day replaces it), then backups older than `BACKUP_RETENTION_DAYS` are deleted.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import bindparam, delete, func, select, union_all, update

from storage.models import FactEntityRow, FactRow, HandoffRow, MemoryJobRow, RelationRow, SettingRow

log = logging.getLogger(__name__)

JOBS = ("decay", "rerank", "cleanup", "backup")
BACKUP_RE = re.compile(r"^clara-(\d{8})\.(db|dump)$")


def importance_floor(n: int) -> float:
    return min(0.8, 0.2 + 0.1 * math.log2(1 + max(0, n)))


async def run_decay(store, settings=None) -> dict[str, Any]:
    half_life = getattr(settings, "decay_half_life_days", 30.0) if settings is not None else 30.0
    n = await store.decay(now=store.clock(), half_life_days=half_life)
    return {"job": "decay", "updated": n}


async def run_rerank(store, settings=None) -> dict[str, Any]:
    """Raise importance from graph degree and recall counts (never lower it; see module docstring)."""
    async with store.engines.reader.connect() as conn:
        active = select(FactRow.id).where(FactRow.status == "active")
        mentions = select(FactEntityRow.entity_id.label("eid")).where(FactEntityRow.fact_id.in_(active)).subquery()
        rel_ends = union_all(
            select(RelationRow.source_id.label("eid")).where(RelationRow.valid_to.is_(None)),
            select(RelationRow.target_id.label("eid")).where(RelationRow.valid_to.is_(None)),
        ).subquery()
        degree: dict[int, int] = {}
        for q in (
            select(mentions.c.eid, func.count()).group_by(mentions.c.eid),
            select(rel_ends.c.eid, func.count()).group_by(rel_ends.c.eid),
        ):
            for eid, count in (await conn.execute(q)).all():
                degree[eid] = degree.get(eid, 0) + count
        best: dict[int, int] = {}
        links = await conn.execute(
            select(FactEntityRow.fact_id, FactEntityRow.entity_id).where(FactEntityRow.fact_id.in_(active))
        )
        for fid, eid in links.all():
            best[fid] = max(best.get(fid, 0), degree.get(eid, 0))
        rows = (
            await conn.execute(
                select(FactRow.id, FactRow.importance, FactRow.access_count).where(FactRow.status == "active")
            )
        ).all()
    changes = []
    for r in rows:
        # Other facts and relations around its most connected entity (itself excluded), or its recalls.
        n = max(best.get(r.id, 0) - 1, r.access_count or 0)
        if n <= 0:
            continue  # nothing connects or uses it: leave it as set
        floor = round(importance_floor(n), 4)
        if floor > (r.importance or 0) + 1e-9:
            changes.append({"fid": r.id, "imp": floor})
    if changes:
        async with store.engines.writer.begin() as conn:
            for i in range(0, len(changes), 1000):
                await conn.execute(
                    update(FactRow)
                    .where(FactRow.id == bindparam("fid"))
                    .values(importance=bindparam("imp"))
                    .execution_options(synchronize_session=False),
                    changes[i : i + 1000],
                )
    return {"job": "rerank", "raised": len(changes), "facts": len(rows)}


async def run_cleanup(store, settings=None) -> dict[str, Any]:
    now = store.clock()
    keep_failed = getattr(settings, "maintenance_keep_failed_days", 30) if settings is not None else 30
    keep_handoffs = getattr(settings, "maintenance_keep_handoff_days", 180) if settings is not None else 180
    async with store.engines.writer.begin() as conn:
        settings_n = (
            await conn.execute(
                delete(SettingRow).where(SettingRow.expires_at.is_not(None), SettingRow.expires_at <= now)
            )
        ).rowcount
        jobs_n = (
            await conn.execute(
                delete(MemoryJobRow).where(
                    MemoryJobRow.status == "failed", MemoryJobRow.updated_at < now - timedelta(days=keep_failed)
                )
            )
        ).rowcount
        # Children first keep the chain's links valid (parent_id is SET NULL on delete anyway).
        handoffs_n = (
            await conn.execute(
                delete(HandoffRow).where(
                    HandoffRow.status == "picked_up", HandoffRow.picked_up_at < now - timedelta(days=keep_handoffs)
                )
            )
        ).rowcount
    return {"job": "cleanup", "expired_settings": settings_n, "failed_jobs": jobs_n, "old_handoffs": handoffs_n}


def prune_backups(folder: Path, now: datetime, retention_days: int) -> list[str]:
    """Delete `clara-YYYYMMDD.*` backups in `folder` dated more than `retention_days` before `now`
    (by the date in the name: the store's clock, not file times). Returns the deleted names."""
    cutoff = (now - timedelta(days=retention_days)).strftime("%Y%m%d")
    gone = []
    for p in sorted(Path(folder).iterdir()) if Path(folder).is_dir() else []:
        m = BACKUP_RE.match(p.name)
        if m and m.group(1) < cutoff:
            p.unlink(missing_ok=True)
            gone.append(p.name)
    return gone


async def run_backup(store, settings=None) -> dict[str, Any]:
    """The scheduled backup: `clara-YYYYMMDD.db|.dump` into `BACKUP_DIR` and/or uploaded to
    `BACKUP_S3_URL` (clara/ops/s3.py), each pruned to `BACKUP_RETENTION_DAYS` by the date in the
    name. Skipped when neither is set."""
    import tempfile

    from clara.ops.backup import backend_of, backup

    folder = getattr(settings, "backup_dir", None) if settings is not None else None
    s3_url = getattr(settings, "backup_s3_url", None) if settings is not None else None
    if not folder and not s3_url:
        return {"job": "backup", "skipped": "neither BACKUP_DIR nor BACKUP_S3_URL is set"}
    now = store.clock()
    url = store.engines.writer.url.render_as_string(hide_password=False)
    ext = "db" if backend_of(url) == "sqlite" else "dump"
    retention = getattr(settings, "backup_retention_days", 7)
    with tempfile.TemporaryDirectory(prefix="clara-backup-") as tmp:
        where = Path(folder) if folder else Path(tmp)
        dest = where / f"clara-{now:%Y%m%d}.{ext}"
        info = await asyncio.to_thread(backup, url, dest)
        out: dict[str, Any] = {"job": "backup", "file": info["file"], "bytes": info["bytes"]}
        if folder:
            out["pruned"] = await asyncio.to_thread(prune_backups, where, now, retention)
        else:
            out["file"] = None  # only uploaded
        if s3_url:
            from clara.ops.backup import BackupError
            from clara.ops.s3 import upload_and_prune

            try:
                out |= await asyncio.to_thread(
                    upload_and_prune, dest, s3_url, now, retention,
                    endpoint_url=settings.backup_s3_endpoint_url, region=settings.backup_s3_region,
                )  # fmt: skip
            except Exception as exc:  # boto3 missing, endpoint down, denied, no bucket: one line
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise BackupError(f"S3 upload to {s3_url} failed: {first[:300]}") from exc
    return out


RUNNERS: dict[str, Callable[..., Awaitable[dict]]] = {
    "decay": run_decay,
    "rerank": run_rerank,
    "cleanup": run_cleanup,
    "backup": run_backup,
}


def schedules(settings) -> dict[str, str | None]:
    """Job name → crontab (UTC), None when off (backup is off without BACKUP_DIR)."""
    out = {
        "decay": settings.maintenance_decay,
        "rerank": settings.maintenance_rerank,
        "cleanup": settings.maintenance_cleanup,
        "backup": settings.backup_schedule if settings.backup_dir or settings.backup_s3_url else None,
    }
    return {k: (None if v is None or v.strip().lower() == "off" else v.strip()) for k, v in out.items()}


def core_jobs(store, settings) -> dict[str, tuple[str | None, Callable[[], Awaitable[dict]]]]:
    """The jobs the bot's scheduler runs: name → (crontab or None, coroutine function)."""

    def runner(name: str):
        async def run() -> dict:
            result = await RUNNERS[name](store, settings)
            log.info("maintenance %s: %s", name, result)
            return result

        return run

    return {name: (cron, runner(name)) for name, cron in schedules(settings).items()}


def check_crontab(value: str) -> str:
    """A 5-field crontab line or `off`; ValueError (with the reason) otherwise."""
    if value.strip().lower() == "off":
        return "off"
    from apscheduler.triggers.cron import CronTrigger

    try:
        CronTrigger.from_crontab(value.strip(), timezone="UTC")
    except ValueError as exc:
        raise ValueError(f"not a crontab line (minute hour day month weekday) or 'off': {value!r}: {exc}") from None
    return value.strip()
