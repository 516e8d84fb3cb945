"""Scheduled maintenance (clara/maintenance.py): decay daily, rerank weekly, cleanup daily and
backups with retention, registered on the bot's persisted scheduler (`scheduler_jobs`), changed or
turned off by settings, each job idempotent on the store clock."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from pydantic import ValidationError
from sqlalchemy import select, text
from typer.testing import CliRunner

from clara.maintenance import core_jobs, importance_floor, prune_backups, run_backup, run_cleanup, run_rerank
from clara.plugin_host import PluginHost
from clara.settings import Settings, get_settings
from storage.models import FactRow
from tests.conftest import assert_private


def _settings(tmp_path, **env) -> Settings:
    return Settings(CLARA_DATA_DIR=tmp_path, **env)


async def _jobs(store) -> dict[str, float]:
    async with store.engines.reader.connect() as conn:
        rows = (await conn.execute(text("SELECT id, next_run_time FROM scheduler_jobs ORDER BY id"))).all()
    return {r.id: r.next_run_time for r in rows}


async def _fact(store, fid: int):
    async with store.engines.reader.connect() as conn:
        return (await conn.execute(select(FactRow).where(FactRow.id == fid))).first()


async def test_jobs_are_registered_persisted_changed_and_turned_off_by_settings(store, tmp_path):
    s = _settings(tmp_path, BACKUP_DIR=str(tmp_path / "backups"))
    host = PluginHost(store, scheduler=True, core_jobs=core_jobs(store, s))
    await host.start()
    try:
        jobs = await _jobs(store)
        assert set(jobs) == {"core:decay", "core:rerank", "core:cleanup", "core:backup"}
        triggers = {j.id: str(j.trigger) for j in host._scheduler.get_jobs()}
        assert "day_of_week='*', hour='3', minute='0'" in triggers["core:decay"]
        assert "day_of_week='mon'" in triggers["core:rerank"] and "hour='4'" in triggers["core:rerank"]
        assert "hour='2'" in triggers["core:cleanup"]
    finally:
        await host.aclose()
    # A restart with the same settings keeps the persisted next run times (no reset, no doubles).
    again = PluginHost(store, scheduler=True, core_jobs=core_jobs(store, s))
    await again.start()
    try:
        assert await _jobs(store) == jobs
    finally:
        await again.aclose()
    # Changed and disabled schedules; no BACKUP_DIR → no backup job.
    changed = _settings(tmp_path, MAINTENANCE_DECAY="15 5 * * *", MAINTENANCE_RERANK="off")
    third = PluginHost(store, scheduler=True, core_jobs=core_jobs(store, changed))
    await third.start()
    try:
        assert set(await _jobs(store)) == {"core:decay", "core:cleanup"}
        decay = third._scheduler.get_job("core:decay")
        assert "hour='5'" in str(decay.trigger) and "minute='15'" in str(decay.trigger)
        # The scheduler's trampoline runs a core job through the host.
        await store.ensure_scope("user:alice", "user", owner="alice")
        fid = await store.add("alice waters the ferns on Sundays", "user:alice")
        store.clock.advance(timedelta(days=90))
        assert await third.run_job("core", "decay")
        assert (await _fact(store, fid)).relevance < 0.5
        assert not await third.run_job("core", "nonexistent")
    finally:
        await third.aclose()


def test_bad_schedules_are_clear_errors(tmp_path, monkeypatch):
    with pytest.raises(ValidationError, match="crontab"):
        _settings(tmp_path, MAINTENANCE_DECAY="every day")
    monkeypatch.setenv("MAINTENANCE_CLEANUP", "61 * * * *")
    monkeypatch.setenv("CLARA_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    from clara.cli import app

    try:
        for args in (["maintenance", "list"], ["maintenance", "run", "decay"]):
            res = CliRunner().invoke(app, args)
            assert res.exit_code == 2 and "MAINTENANCE_CLEANUP" in res.output, res.output
            assert "Traceback" not in res.output
        monkeypatch.delenv("MAINTENANCE_CLEANUP")
        get_settings.cache_clear()
        res = CliRunner().invoke(app, ["maintenance", "run", "sweep"])
        assert res.exit_code == 2 and "unknown job" in res.output
        res = CliRunner().invoke(app, ["maintenance", "list"])
        assert res.exit_code == 0 and "0 4 * * mon" in res.output and "backup" in res.output
        res = CliRunner().invoke(app, ["maintenance", "run", "decay"])
        assert res.exit_code == 0 and json.loads(res.output)["job"] == "decay"
    finally:
        get_settings.cache_clear()


async def test_decay_is_idempotent_on_the_store_clock(store, tmp_path):
    host = PluginHost(store, core_jobs=core_jobs(store, _settings(tmp_path)))
    await store.ensure_scope("user:alice", "user", owner="alice")
    fid = await store.add("alice keeps bees", "user:alice", importance=0.2)
    store.clock.ticking = False
    store.clock.advance(timedelta(days=40))
    assert await host.run_job("core", "decay")
    once = (await _fact(store, fid)).relevance
    assert await host.run_job("core", "decay")
    assert (await _fact(store, fid)).relevance == pytest.approx(once) and once < 0.8


async def test_rerank_raises_importance_from_the_graph_and_use_once(store):
    await store.ensure_scope("user:alice", "user", owner="alice")
    await store.ensure_scope("user:bob", "user", owner="bob")
    porto = [
        await store.add(f"alice's note {i} about Porto", "user:alice", importance=0.2, entities=[("Porto", "place")])
        for i in range(8)
    ]
    lonely = await store.add("alice likes quiet mornings", "user:alice", importance=0.2)
    set_high = await store.add(
        "alice's flat in Porto has a blue door", "user:alice", importance=0.9, entities=["Porto"]
    )
    await store.graph.relate("user:alice", ("alice", "person"), "lives_in", ("Porto", "place"))
    bob = await store.add("bob's secret: he is moving to Porto", "user:bob", importance=0.2, entities=["Porto"])
    first = await run_rerank(store)
    assert first["raised"] >= 8
    for fid in porto:
        # Porto: 9 facts and 1 relation in alice's scope → 9 others around it.
        assert (await _fact(store, fid)).importance == pytest.approx(importance_floor(9), abs=1e-3)
    assert (await _fact(store, lonely)).importance == pytest.approx(0.2)  # nothing connects it
    assert (await _fact(store, set_high)).importance == pytest.approx(0.9)  # never lowered
    assert (await _fact(store, bob)).importance == pytest.approx(0.2)  # bob's Porto is another entity
    assert (await run_rerank(store))["raised"] == 0  # idempotent
    await assert_private(store, "moving to Porto secret", "alice", "user:bob")


async def test_cleanup_removes_expired_settings_only(store):
    now = store.clock()
    await store.settings.set("core", "user:alice", "forgetme-code", "1234", expires_at=now + timedelta(minutes=5))
    await store.settings.set("core", "user:alice", "keep", "yes")
    store.clock.advance(timedelta(hours=1))
    first = await run_cleanup(store)
    assert first["expired_settings"] == 1
    assert await store.settings.get("core", "user:alice", "keep") == "yes"
    assert (await run_cleanup(store))["expired_settings"] == 0


async def test_scheduled_backup_one_per_day_with_retention(store, tmp_path, backend):
    if backend != "sqlite":
        pytest.skip("the PostgreSQL dump is covered by test_ops")
    folder = tmp_path / "backups"
    s = _settings(tmp_path, BACKUP_DIR=str(folder), BACKUP_RETENTION_DAYS=3)
    await store.ensure_scope("user:alice", "user", owner="alice")
    await store.add("alice backs up her photos", "user:alice")
    store.clock.ticking = False
    first = await run_backup(store, s)
    again = await run_backup(store, s)
    assert first["file"] == again["file"] and len(list(folder.iterdir())) == 1
    for _ in range(5):
        store.clock.advance(timedelta(days=1))
        last = await run_backup(store, s)
    names = sorted(p.name for p in folder.iterdir())
    assert len(names) == 4 and last["file"].endswith(names[-1])  # today and the 3 days before
    assert prune_backups(folder, store.clock(), 3) == []
    assert (await run_backup(store, _settings(tmp_path)))["skipped"]
