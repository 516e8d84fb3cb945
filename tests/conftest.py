"""Shared fixtures: a fresh FactStore per test on SQLite, and on PostgreSQL when
CLARA_TEST_DATABASE_URL is set (a private database is created for the session and emptied
between tests)."""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime

import pytest
from hypothesis import settings
from sqlalchemy.engine import make_url

from storage import FactStore, StoreConfig
from storage.clock import ManualClock
from storage.embeddings import make_embedder

PG_URL = os.environ.get("CLARA_TEST_DATABASE_URL")

# Property tests are derandomized by default so CI is reproducible; HYPOTHESIS_PROFILE=explore
# draws fresh random inputs (and CLARA_FUZZ_EXAMPLES=10000 makes the long run).
settings.register_profile("ci", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def pytest_configure(config: pytest.Config) -> None:
    """Test data dirs on tmpfs when the machine has one (unless --basetemp is given): creating an
    embedded vector index costs ~0.7 s of fsyncs on disk and ~15 ms on /dev/shm, and nearly every
    test opens a store. Each run gets a directory of its own (parallel runs never share one); the
    controller removes it at the end (xdist workers use sub-directories of it)."""
    import tempfile

    if config.option.basetemp or hasattr(config, "workerinput") or os.environ.get("CLARA_TEST_DISK_TMP"):
        return
    shm = "/dev/shm"
    if os.path.isdir(shm) and os.access(shm, os.W_OK) and os.statvfs(shm).f_bavail * os.statvfs(shm).f_frsize > 2**31:
        config.option.basetemp = tempfile.mkdtemp(prefix="clara-pytest-", dir=shm)
        config._clara_shm_basetemp = config.option.basetemp


def pytest_unconfigure(config: pytest.Config) -> None:
    import shutil

    path = getattr(config, "_clara_shm_basetemp", None)
    if path:
        shutil.rmtree(path, ignore_errors=True)


BACKENDS = ["sqlite"] + (["postgresql"] if PG_URL else [])
TABLES = (
    "handoffs, changes, fact_vectors, scheduler_jobs, memory_jobs, sessions, settings, index_jobs, fact_history, "
    "relations, fact_entities, entities, facts, messages, scope_members, scopes"
)


@pytest.fixture(scope="session")
def embedder():
    return make_embedder("local")


@pytest.fixture(scope="session")
def pg_database():
    """A throwaway PostgreSQL database for this test session, migrated to head."""
    if not PG_URL:
        pytest.skip("CLARA_TEST_DATABASE_URL not set")
    import psycopg

    from storage import migrate
    from storage.db import async_url

    base = make_url(async_url(PG_URL, "."))
    name = f"clara_test_{uuid.uuid4().hex[:10]}"
    admin = base.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True, connect_timeout=10) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = base.set(database=name).render_as_string(hide_password=False)
    migrate.upgrade(url)
    yield url
    with psycopg.connect(admin, autocommit=True, connect_timeout=10) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _truncate(url: str) -> None:
    import psycopg

    plain = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(plain, autocommit=True) as conn:
        # Plugins' own tables too (they are created when a test loads a plugin).
        extra = [
            r[0]
            for r in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename NOT LIKE '%alembic_version%'"
            ).fetchall()
        ]
        names = sorted({t.strip() for t in TABLES.split(",")} | set(extra))
        conn.execute(f"TRUNCATE {', '.join(names)} RESTART IDENTITY CASCADE")


@pytest.fixture(params=BACKENDS)
def backend(request):
    return request.param


# Every store a test opens reads this clock: a pinned date that moves with real elapsed time (so
# leases and retries still come due). Tests move it with `clock.set(t)` / `clock.advance(d)`, or
# freeze it with `clock.ticking = False`. Nothing in a test depends on today's date.
T_BASE = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T_BASE, ticking=True)


@pytest.fixture
def store_config(backend, tmp_path, request, clock) -> StoreConfig:
    if backend == "postgresql":
        url = request.getfixturevalue("pg_database")
        _truncate(url)
        return StoreConfig(database_url=url, data_dir=tmp_path, auto_migrate=False, clock=clock)
    return StoreConfig(data_dir=tmp_path, clock=clock)


@pytest.fixture
async def store(store_config, embedder):
    s = await FactStore.open(store_config, embedder=embedder)
    yield s
    await s.aclose()


async def two_users(store: FactStore) -> None:
    await store.ensure_scope("user:alice", "user", owner="alice")
    await store.ensure_scope("user:bob", "user", owner="bob")


async def assert_private(store: FactStore, query: str, reader: str, other_scope: str) -> None:
    """`reader` recalling `query` over everything they may read never sees `other_scope`."""
    scopes = await store.readable_scopes(reader)
    assert other_scope not in scopes
    for hit in await store.recall(query, scopes, k=50):
        assert hit.fact.scope_id != other_scope, f"{reader} recalled {other_scope}'s fact {hit.fact.content!r}"


def helper_clock() -> ManualClock:
    """The clock of a helper process started by `run_then_kill`: it continues the test's clock
    from the time passed in CLARA_TEST_NOW (ticking), so both processes agree on leases."""
    start = os.environ.get("CLARA_TEST_NOW")
    return ManualClock(datetime.fromisoformat(start) if start else T_BASE, ticking=True)


def run_then_kill(script: str, args: list[str], after: int, now: datetime | None = None) -> list[int]:
    """Run tests/<script> with `args`, collect the ids it prints as it acknowledges work, and
    SIGKILL it once `after` ids were printed (crash-and-restart tests). `now` (the test's clock
    reading) starts the helper's clock (`helper_clock`)."""
    import signal
    import subprocess
    import sys
    from pathlib import Path

    here = Path(__file__).parent
    proc = subprocess.Popen(
        [sys.executable, str(here / script), *args],
        stdout=subprocess.PIPE,
        text=True,
        cwd=here.parent,
        env={**os.environ, "CLARA_TEST_NOW": (now or T_BASE).isoformat()},
    )
    acked: list[int] = []
    try:
        for line in proc.stdout:
            if line.strip().isdigit():
                acked.append(int(line))
            if len(acked) >= after:
                break
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    return acked
