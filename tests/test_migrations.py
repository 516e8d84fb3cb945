"""Alembic migrations run on SQLite and PostgreSQL, round-trip, and match the ORM models."""

from __future__ import annotations

import uuid

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from storage import migrate
from storage.db import async_url, sync_url
from storage.models import Base
from tests.conftest import PG_URL

EXPECTED = {
    "scopes",
    "scope_members",
    "messages",
    "facts",
    "entities",
    "fact_entities",
    "relations",
    "fact_history",
    "index_jobs",
    "sessions",
    "memory_jobs",
    "settings",
    "scheduler_jobs",
}


@pytest.fixture(params=["sqlite"] + (["postgresql"] if PG_URL else []))
def url(request, tmp_path):
    if request.param == "sqlite":
        yield async_url(None, tmp_path)
        return
    import psycopg
    from sqlalchemy.engine import make_url

    base = make_url(async_url(PG_URL, tmp_path))
    name = f"clara_mig_{uuid.uuid4().hex[:8]}"
    admin = base.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield base.set(database=name).render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _ignore_derived(obj, name, type_, reflected, compare_to):
    # The full-text index lives outside the ORM: FTS5 tables on SQLite, a generated tsvector on PostgreSQL.
    if type_ == "table" and name and name.startswith("facts_fts"):
        return False
    if type_ == "column" and name == "tsv":
        return False
    return not (type_ == "index" and name == "ix_facts_tsv")


def test_upgrade_downgrade_roundtrip_and_models_match(url):
    migrate.upgrade(url)
    head = migrate.head_revision()
    assert head is not None and migrate.current_revision(url) == head
    engine = create_engine(sync_url(url))
    try:
        assert EXPECTED <= set(inspect(engine).get_table_names())
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"include_object": _ignore_derived, "compare_type": False})
            diff = compare_metadata(ctx, Base.metadata)
        assert diff == [], f"models and migrations differ: {diff}"
    finally:
        engine.dispose()
    migrate.downgrade(url, "base")
    assert migrate.current_revision(url) is None
    engine = create_engine(sync_url(url))
    try:
        assert not (EXPECTED & set(inspect(engine).get_table_names()))
    finally:
        engine.dispose()
    migrate.upgrade(url)  # and back up again
    assert migrate.current_revision(url) == head
    migrate.downgrade(url, "0001")  # steps down keep the store readable
    assert migrate.current_revision(url) == "0001"


_OPEN_STORE = """
import asyncio, json, sys
from storage import FactStore, StoreConfig

async def main():
    store = await FactStore.open(StoreConfig(database_url=sys.argv[1], data_dir=sys.argv[2]), start_indexer=False)
    await store.aclose()

asyncio.run(main())
used_alembic = "alembic" in sys.modules
from storage import migrate
print(json.dumps({"alembic": used_alembic, "revision": migrate.current_revision(sys.argv[1])}))
"""


def _open_in_fresh_process(url: str, data_dir, prefix: str = "") -> dict:
    import json
    import os
    import subprocess
    import sys

    env = {**os.environ, "CLARA_TABLE_PREFIX": prefix}
    out = subprocess.run(
        [sys.executable, "-c", _OPEN_STORE, url, str(data_dir)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_fast_path_skips_alembic_at_head_and_still_migrates(url, tmp_path):
    """Opening a store whose schema is at head reads the version table and never imports Alembic;
    an older database (or one without this prefix's tables) still gets migrated."""
    head = migrate.head_revision()
    assert migrate.script_heads(migrate.MIGRATIONS_DIR / "versions") == {head}
    migrate.upgrade(url, "0005")  # an old database
    old = _open_in_fresh_process(url, tmp_path / "d1")
    assert old == {"alembic": True, "revision": head}
    at_head = _open_in_fresh_process(url, tmp_path / "d2")
    assert at_head == {"alembic": False, "revision": head}
    # Another table prefix in the same database has no schema yet: the fast path must not take
    # the unprefixed version table for its own.
    prefixed = _open_in_fresh_process(url, tmp_path / "d3", prefix="fp_")
    assert prefixed["alembic"] is True
    assert _open_in_fresh_process(url, tmp_path / "d4", prefix="fp_")["alembic"] is False
    engine = create_engine(sync_url(url))
    try:
        assert "fp_alembic_version" in inspect(engine).get_table_names()
    finally:
        engine.dispose()


def test_script_heads_match_alembic_for_plugin_branches():
    from pathlib import Path

    from alembic.config import Config
    from alembic.script import ScriptDirectory

    root = Path(migrate.__file__).resolve().parent.parent / "plugins"
    dirs = sorted(p for p in root.glob("*/migrations/versions") if p.is_dir())
    assert dirs
    for versions in dirs:
        cfg = Config()
        cfg.set_main_option("script_location", str(migrate.BRANCH_ENV))
        cfg.set_main_option("version_locations", str(versions))
        cfg.set_main_option("path_separator", "os")
        assert migrate.script_heads(versions) == set(ScriptDirectory.from_config(cfg).get_heads()), versions
