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
    assert migrate.current_revision(url) == migrate.head_revision() == "0004_purge"
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
    assert migrate.current_revision(url) == "0004_purge"
    migrate.downgrade(url, "0001")  # steps down keep the store readable
    assert migrate.current_revision(url) == "0001"
