"""Run the Alembic migrations in `migrations/` against a database URL."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine

from storage.db import install_sqlite_pragmas, sync_url
from storage.naming import t

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


def version_table() -> str:
    """The core schema's Alembic version table: `alembic_version` with the table prefix."""
    return t("alembic_version")


def _context(conn) -> MigrationContext:
    return MigrationContext.configure(conn, opts={"version_table": version_table()})


def alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return cfg


def _engine(url: str):
    engine = create_engine(sync_url(url))
    if engine.dialect.name == "sqlite":
        install_sqlite_pragmas(engine)

    return engine


def upgrade(url: str, revision: str = "head") -> None:
    """Upgrade the schema at `url` to `revision` (blocking; call from a thread in async code).
    Returns quickly when the database is already at head."""
    cfg = alembic_config()
    engine = _engine(url)
    try:
        if revision == "head":
            with engine.connect() as conn:
                if _context(conn).get_current_revision() == head_revision():
                    return
        # Several processes may start at once on one database (bot, MCP server, CLI): one
        # migrates, the others wait for it and then find the schema at head.
        with _migration_lock(engine), engine.begin() as conn:
            if engine.dialect.name == "postgresql":
                conn.exec_driver_sql("SELECT pg_advisory_xact_lock(7424917)")
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
    finally:
        engine.dispose()


@contextlib.contextmanager
def _migration_lock(engine) -> Iterator[None]:
    """An exclusive file lock next to a SQLite database file, held while migrating (no-op for
    other databases, which lock inside the migration transaction)."""
    db = engine.url.database if engine.dialect.name == "sqlite" else None
    if not db or db == ":memory:":
        yield
        return
    fd = os.open(f"{db}.migrate.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def downgrade(url: str, revision: str) -> None:
    cfg = alembic_config()
    engine = _engine(url)
    try:
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, revision)
    finally:
        engine.dispose()


def current_revision(url: str) -> str | None:
    engine = _engine(url)
    try:
        with engine.connect() as conn:
            return _context(conn).get_current_revision()
    finally:
        engine.dispose()


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


BRANCH_ENV = Path(__file__).resolve().parent / "branch_env"


def _branch_config(versions_dir: Path, version_table: str) -> Config:
    if not version_table.isidentifier():
        raise ValueError(f"bad version table name {version_table!r}")
    cfg = Config()
    cfg.set_main_option("script_location", str(BRANCH_ENV))
    cfg.set_main_option("version_locations", str(versions_dir))
    cfg.set_main_option("path_separator", "os")
    cfg.attributes["version_table"] = version_table
    return cfg


def _run_branch(url: str, cfg: Config, step, revision: str) -> None:
    engine = _engine(url)
    try:
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            step(cfg, revision)
    finally:
        engine.dispose()


def upgrade_branch(url: str, versions_dir: Path, version_table: str, revision: str = "heads") -> None:
    """Run an independent migration history (its revisions in `versions_dir`, its state in
    `version_table`) against `url` — how plugins get their own tables without touching the core
    schema's history. Blocking; call from a thread in async code."""
    _run_branch(url, _branch_config(versions_dir, version_table), command.upgrade, revision)


def downgrade_branch(url: str, versions_dir: Path, version_table: str, revision: str = "base") -> None:
    _run_branch(url, _branch_config(versions_dir, version_table), command.downgrade, revision)
