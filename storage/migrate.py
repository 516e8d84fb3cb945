"""Run the Alembic migrations in `migrations/` against a database URL.

Fast path: `upgrade()` / `upgrade_branch()` to the head(s) first read the version table with one
SQL query and compare it with the head revisions read from the revision files' source (`ast`, no
Alembic): when the schema is already at head, Alembic is never imported (~0.2 s of a cold start).
Anything else (missing table, older or unknown revision, branched history) takes the slow path:
Alembic under the cross-process migration lock, which re-checks and migrates.
"""

from __future__ import annotations

import ast
import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import create_engine, exc, text

from storage.db import install_sqlite_pragmas, sync_url
from storage.naming import t

if TYPE_CHECKING:
    from alembic.config import Config
    from alembic.runtime.migration import MigrationContext

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


def version_table() -> str:
    """The core schema's Alembic version table: `alembic_version` with the table prefix."""
    return t("alembic_version")


def _context(conn) -> MigrationContext:
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(conn, opts={"version_table": version_table()})


def alembic_config() -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return cfg


def _engine(url: str):
    engine = create_engine(sync_url(url))
    if engine.dialect.name == "sqlite":
        install_sqlite_pragmas(engine)

    return engine


def script_heads(versions_dir: Path) -> frozenset[str] | None:
    """The head revision ids of the Alembic revision files in `versions_dir`, read from their
    source with `ast` (no Alembic import, a few ms); None when a file's `revision` /
    `down_revision` is not a plain literal (the caller then asks Alembic)."""
    revisions: set[str] = set()
    downs: set[str] = set()
    for path in sorted(Path(versions_dir).glob("*.py")):
        found: dict[str, object] = {}
        for node in ast.parse(path.read_text(encoding="utf-8"), str(path)).body:
            target = node.targets[0] if isinstance(node, ast.Assign) and len(node.targets) == 1 else None
            if isinstance(node, ast.AnnAssign):
                target = node.target
            if isinstance(target, ast.Name) and target.id in ("revision", "down_revision") and node.value:
                try:
                    found[target.id] = ast.literal_eval(node.value)
                except ValueError:
                    return None
        rev, down = found.get("revision"), found.get("down_revision")
        if not isinstance(rev, str):
            return None
        revisions.add(rev)
        if isinstance(down, str):
            downs.add(down)
        elif isinstance(down, (tuple, list)):
            downs.update(d for d in down if isinstance(d, str))
        elif down is not None:
            return None
    return frozenset(revisions - downs) or None


def _stamped(engine, table: str) -> frozenset[str] | None:
    """The revisions recorded in version table `table` (one SELECT); None if it cannot be read
    (no such table yet)."""
    if not table.isidentifier():
        raise ValueError(f"bad version table name {table!r}")
    try:
        with engine.connect() as conn:
            return frozenset(r[0] for r in conn.execute(text(f"SELECT version_num FROM {table}")))
    except exc.DBAPIError:
        return None


def at_head(engine, versions_dir: Path, table: str) -> bool:
    """True when version table `table` holds exactly the head revision(s) of `versions_dir`."""
    heads = script_heads(versions_dir)
    return heads is not None and _stamped(engine, table) == heads


def upgrade(url: str, revision: str = "head") -> None:
    """Upgrade the schema at `url` to `revision` (blocking; call from a thread in async code).
    At head already: one SELECT on the version table and return, without importing Alembic."""
    engine = _engine(url)
    try:
        if revision == "head" and at_head(engine, MIGRATIONS_DIR / "versions", version_table()):
            return
        from alembic import command

        cfg = alembic_config()
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
    from alembic import command

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
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config()).get_current_head()


BRANCH_ENV = Path(__file__).resolve().parent / "branch_env"


def _branch_config(versions_dir: Path, version_table: str) -> Config:
    from alembic.config import Config

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
    schema's history. Blocking; call from a thread in async code. At its heads already: one SELECT,
    no Alembic import."""
    if revision == "heads":
        engine = _engine(url)
        try:
            if at_head(engine, Path(versions_dir), version_table):
                return
        finally:
            engine.dispose()
    from alembic import command

    _run_branch(url, _branch_config(versions_dir, version_table), command.upgrade, revision)


def downgrade_branch(url: str, versions_dir: Path, version_table: str, revision: str = "base") -> None:
    from alembic import command

    _run_branch(url, _branch_config(versions_dir, version_table), command.downgrade, revision)
