"""Engines for the store: URL normalisation, SQLite pragmas and single-writer discipline.

SQLite gets two engines: a one-connection writer that opens every transaction with
`BEGIN IMMEDIATE` (so concurrent writers queue instead of failing with SQLITE_BUSY, also across
processes thanks to `busy_timeout`) and a pooled reader. PostgreSQL gets one pooled engine.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

SQLITE_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=NORMAL",
    "PRAGMA foreign_keys=ON",
    "PRAGMA busy_timeout=15000",
    "PRAGMA temp_store=MEMORY",
    "PRAGMA cache_size=-32000",
    "PRAGMA secure_delete=FAST",
)


def async_url(url: str | None, data_dir: Path) -> str:
    """The async SQLAlchemy URL for `url` (None = `<data_dir>/clara.db`).

    `sqlite:///x.db` becomes `sqlite+aiosqlite:///x.db`; `postgres(ql)://` becomes
    `postgresql+psycopg://`. Raises ValueError for other backends."""
    if not url:
        return f"sqlite+aiosqlite:///{(Path(data_dir) / 'clara.db').resolve()}"
    u = make_url(url)
    backend = u.get_backend_name()
    if backend == "sqlite":
        return u.set(drivername="sqlite+aiosqlite").render_as_string(hide_password=False)
    if backend in ("postgresql", "postgres"):
        return u.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    raise ValueError(f"unsupported database backend {backend!r}: use sqlite or postgresql")


def sync_url(url: str) -> str:
    """The synchronous twin of an async URL (for Alembic and backups)."""
    u = make_url(url)
    backend = u.get_backend_name()
    if backend == "sqlite":
        return u.set(drivername="sqlite").render_as_string(hide_password=False)
    if backend in ("postgresql", "postgres"):
        return u.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    return url


@dataclass
class Engines:
    """`writer`/`reader` serve the async API. `sync_reader` + `read_pool` serve the recall hot
    path: its several small queries run back to back in one worker thread (one hop instead of one
    per statement, and no greenlet bridging per statement)."""

    writer: AsyncEngine
    reader: AsyncEngine
    dialect: str
    sync_reader: Engine
    read_pool: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(max_workers=4, thread_name_prefix="clara-read")
    )

    async def run_read(self, fn, *args):
        """Run `fn(connection, *args)` on a pooled synchronous read connection, off the event loop."""

        def call():
            with self.sync_reader.connect() as conn:
                return fn(conn, *args)

        return await asyncio.get_running_loop().run_in_executor(self.read_pool, call)

    async def dispose(self) -> None:
        await self.writer.dispose()
        if self.reader is not self.writer:
            await self.reader.dispose()
        self.read_pool.shutdown(wait=True)
        self.sync_reader.dispose()


def install_sqlite_pragmas(engine: Engine, *, manual_begin: bool = False) -> Engine:
    """Apply SQLITE_PRAGMAS to every new connection of a (sync) SQLite engine. With
    `manual_begin`, the driver's own BEGIN is disabled because the engine emits its own
    (SQLAlchemy's aiosqlite recipe)."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):  # pragma: no cover - exercised by every test
        if manual_begin:
            dbapi_connection.isolation_level = None
        cur = dbapi_connection.cursor()
        for pragma in SQLITE_PRAGMAS:
            cur.execute(pragma)
        cur.close()

    return engine


def _sqlite_engine(url: str, *, immediate: bool, pool_size: int) -> AsyncEngine:
    engine = create_async_engine(url, pool_size=pool_size, max_overflow=0, pool_timeout=60)

    install_sqlite_pragmas(engine.sync_engine, manual_begin=True)

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn):  # pragma: no cover
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


def make_engines(url: str) -> Engines:
    """Create the engines for an async URL from `async_url`."""
    u = make_url(url)
    if u.get_backend_name() == "sqlite":
        db_path = u.database
        if db_path and db_path != ":memory:":
            Path(db_path).parent.mkdir(parents=True, exist_ok=True)
        writer = _sqlite_engine(url, immediate=True, pool_size=1)
        reader = _sqlite_engine(url, immediate=False, pool_size=4)
        sync_reader = install_sqlite_pragmas(create_engine(sync_url(url), pool_size=4, max_overflow=0, pool_timeout=60))

        return Engines(writer=writer, reader=reader, dialect="sqlite", sync_reader=sync_reader)
    engine = create_async_engine(
        url,
        pool_size=10,
        max_overflow=10,
        pool_pre_ping=True,
        pool_timeout=30,
        connect_args={"connect_timeout": 10},
    )
    sync_reader = create_engine(
        sync_url(url), pool_size=4, max_overflow=4, pool_pre_ping=True, connect_args={"connect_timeout": 10}
    )
    return Engines(writer=engine, reader=engine, dialect="postgresql", sync_reader=sync_reader)
