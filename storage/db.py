"""Engines for the store: URL normalisation, SQLite pragmas and single-writer discipline.

SQLite gets a one-connection async writer that opens every transaction with `BEGIN IMMEDIATE`
(so concurrent writers queue instead of failing with SQLITE_BUSY, also across processes thanks to
`busy_timeout`), a pooled async reader, and for the hot paths a synchronous reader pool and a
synchronous one-connection writer driven by one dedicated thread (`Engines.run_write`). The two
writers take turns through one asyncio gate, so inside a process they never wait on SQLite's busy
handler. PostgreSQL gets one pooled async engine (and a sync reader for recall).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential

T = TypeVar("T")

WRITE_ATTEMPTS = 4


def _locked(exc: BaseException) -> bool:
    """SQLite's busy/locked error (another process holds the write lock past busy_timeout)."""
    return isinstance(exc, OperationalError) and any(w in str(exc).lower() for w in ("locked", "busy"))


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


def is_in_memory(url: str | None) -> bool:
    """`sqlite://`, `sqlite:///:memory:` (any sqlite driver): a database that lives as long as
    the store (see `ephemeral_dir`)."""
    if not url:
        return False
    try:
        u = make_url(url)
    except Exception:
        return False
    return u.get_backend_name() == "sqlite" and u.database in (None, "", ":memory:")


def ephemeral_dir() -> Path:
    """A private directory for an in-memory store: in RAM (/dev/shm) where the system has it.

    Why not SQLite's own `:memory:`: the store runs several engines (an async writer and reader,
    a sync reader pool and a sync writer thread, plus Alembic), and every `:memory:` connection is
    a separate, empty database — a StaticPool shares one connection within one engine only, and
    the async (aiosqlite) and sync (sqlite3) engines cannot share a connection. Shared-cache
    memory URIs replace busy waits with SQLITE_LOCKED errors under concurrent readers. A file
    in a RAM-backed temporary directory, removed when the store closes, behaves exactly like
    the default store and leaves nothing behind."""
    import tempfile

    shm = Path("/dev/shm")
    base = shm if shm.is_dir() and os.access(shm, os.W_OK) else None
    return Path(tempfile.mkdtemp(prefix="clara-memory-", dir=base))


def sync_url(url: str) -> str:
    """The synchronous twin of an async URL (for Alembic and backups)."""
    u = make_url(url)
    backend = u.get_backend_name()
    if backend == "sqlite":
        return u.set(drivername="sqlite").render_as_string(hide_password=False)
    if backend in ("postgresql", "postgres"):
        return u.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    return url


class GatedWriter:
    """The SQLite async writer behind the process's write gate (shared with `Engines.run_write`).
    Offers what callers use of an AsyncEngine: `begin()`, `connect()`, `url`, `dispose()`."""

    def __init__(self, engine: AsyncEngine, gate: asyncio.Lock):
        self.engine = engine
        self._gate = gate

    @property
    def url(self):
        return self.engine.url

    @asynccontextmanager
    async def begin(self) -> AsyncIterator[AsyncConnection]:
        async with self._gate, self.engine.begin() as conn:
            yield conn

    @asynccontextmanager
    async def connect(self) -> AsyncIterator[AsyncConnection]:
        async with self._gate, self.engine.connect() as conn:
            yield conn

    async def dispose(self) -> None:
        await self.engine.dispose()


@dataclass
class Engines:
    """`writer`/`reader` serve the async API. `sync_reader` + `read_pool` serve the recall hot
    path: its several small queries run back to back in one worker thread (one hop instead of one
    per statement, and no greenlet bridging per statement). `run_write` does the same for the
    acknowledgement writes (SQLite: `sync_writer` on the one `write_pool` thread)."""

    writer: AsyncEngine | GatedWriter
    reader: AsyncEngine
    dialect: str
    sync_reader: Engine
    sync_writer: Engine | None = None
    write_gate: asyncio.Lock | None = None
    read_pool: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(max_workers=4, thread_name_prefix="clara-read")
    )
    write_pool: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(max_workers=1, thread_name_prefix="clara-write")
    )

    async def run_write(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(connection, *args)` in ONE write transaction and return its result.

        SQLite: on the synchronous writer, in the one write thread, after taking the write gate
        (one thread hop for the whole transaction instead of several per statement; ~0.1 ms of
        SQLite work plus SQLAlchemy's statement handling). PostgreSQL: `fn` runs through
        `AsyncConnection.run_sync` on the async writer. `fn` must be synchronous and only use the
        connection it is given. Exceptions from `fn` roll the transaction back and propagate. If
        the caller is cancelled, the transaction still completes (or rolls back) in its thread."""
        if self.sync_writer is None or self.write_gate is None:
            async with self.writer.begin() as conn:
                return await conn.run_sync(fn, *args)

        def call() -> T:
            with self.sync_writer.begin() as conn:
                return fn(conn, *args)

        # Another process may hold SQLite's write lock longer than busy_timeout (a VACUUM, a
        # bulk import): the whole transaction is retried a few times (it was rolled back), so
        # "database is locked" does not reach a user unless the lock is held for ~20 s.
        async for attempt in AsyncRetrying(
            retry=retry_if_exception(_locked),
            stop=stop_after_attempt(WRITE_ATTEMPTS),
            wait=wait_exponential(multiplier=0.1, max=2.0),
            reraise=True,
        ):
            with attempt:
                async with self.write_gate:
                    return await asyncio.shield(asyncio.get_running_loop().run_in_executor(self.write_pool, call))
        raise AssertionError("unreachable")  # pragma: no cover

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
        self.write_pool.shutdown(wait=True)
        self.sync_reader.dispose()
        if self.sync_writer is not None:
            self.sync_writer.dispose()


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


def _emit_begin(engine: Engine, *, immediate: bool) -> None:
    install_sqlite_pragmas(engine, manual_begin=True)

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:  # pragma: no cover
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def _sqlite_engine(url: str, *, immediate: bool, pool_size: int) -> AsyncEngine:
    engine = create_async_engine(url, pool_size=pool_size, max_overflow=0, pool_timeout=60)
    _emit_begin(engine.sync_engine, immediate=immediate)
    return engine


def make_engines(url: str) -> Engines:
    """Create the engines for an async URL from `async_url`."""
    u = make_url(url)
    if u.get_backend_name() == "sqlite":
        db_path = u.database
        if db_path and db_path != ":memory:":
            Path(db_path).parent.mkdir(parents=True, exist_ok=True)
        gate = asyncio.Lock()
        writer = GatedWriter(_sqlite_engine(url, immediate=True, pool_size=1), gate)
        reader = _sqlite_engine(url, immediate=False, pool_size=4)
        sync_reader = install_sqlite_pragmas(create_engine(sync_url(url), pool_size=4, max_overflow=0, pool_timeout=60))
        # check_same_thread=False: the connection is created in the write thread and only ever
        # used there, but SQLAlchemy may close it from the disposing thread.
        sync_writer = create_engine(
            sync_url(url), pool_size=1, max_overflow=0, connect_args={"check_same_thread": False}
        )
        _emit_begin(sync_writer, immediate=True)
        return Engines(
            writer=writer,
            reader=reader,
            dialect="sqlite",
            sync_reader=sync_reader,
            sync_writer=sync_writer,
            write_gate=gate,
        )
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
