"""The change feed on PostgreSQL wakes followers with LISTEN/NOTIFY (issue 17): two stores (two
nodes: a data dir each, one database) whose polls are set to 60 s, so only a notification can
bring a remote write to the other node within the test's seconds; and a LISTEN connection the
server drops is re-established."""

from __future__ import annotations

import asyncio
import dataclasses
import time

import psycopg
import pytest
from sqlalchemy.engine import make_url

from storage import FactStore
from tests.conftest import assert_private, two_users


@pytest.fixture
def pg_config(store_config, backend):
    if backend != "postgresql":
        pytest.skip("LISTEN/NOTIFY is PostgreSQL's")
    return store_config


async def _until(pred, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await pred():
            return True
        await asyncio.sleep(0.05)
    return False


async def test_a_remote_write_reaches_the_other_node_by_notification_and_after_a_dropped_listen(
    pg_config, embedder, tmp_path
):
    slow = {"feed_poll": 60.0, "feed_listen_poll": 60.0}
    cfg_a = dataclasses.replace(pg_config, data_dir=tmp_path / "a", extra=slow)
    cfg_b = dataclasses.replace(pg_config, data_dir=tmp_path / "b", extra=slow)
    a = await FactStore.open(cfg_a, embedder=embedder)
    b = await FactStore.open(cfg_b, embedder=embedder)
    try:
        assert await _until(lambda: _true(b.feed.listens == 1 and a.feed.listens == 1))
        await two_users(a)
        before = b.feed.notified
        fid = await a.add("I adore hiking in the mountains on weekends", "user:alice", actor="alice")
        await a.add("My favourite hobby is trekking up hills", "user:bob", actor="bob")
        await a.indexer.drain(30)  # A embedded and stored the vectors (a `vector` change each)
        assert await _until(lambda: _has(b, fid)), "B never applied A's write"
        assert b.feed.notified > before  # woken by NOTIFY, not by its (60 s) poll
        hits = await b.recall("outdoor walks alpine", ["user:alice"], k=2)
        assert hits[0].fact.id == fid and "dense" in hits[0].signals
        await assert_private(b, "hiking hills trekking", "alice", "user:bob")

        # The server drops B's LISTEN connection: B reconnects (with backoff) and is woken again.
        old_pid = b.feed.listen_pid
        dsn = make_url(pg_config.database_url).set(drivername="postgresql").render_as_string(hide_password=False)
        with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
            assert conn.execute("SELECT pg_terminate_backend(%s)", (old_pid,)).fetchone()[0]
        assert await _until(lambda: _true(b.feed.listens == 2), timeout=20), "LISTEN was not re-established"
        assert b.feed.listen_pid != old_pid
        before = b.feed.notified
        await a.forget(fid, actor="alice")
        assert await _until(lambda: _gone(b, fid)), "B never applied A's forget"
        assert b.feed.notified > before
        assert await b.recall("hiking mountains", ["user:alice"]) == []
        assert b.feed.failures == 0
    finally:
        await a.aclose()
        await b.aclose()


async def _true(value: bool) -> bool:
    return value


async def _has(store: FactStore, fid: int) -> bool:
    return fid in await store.index.ids()


async def _gone(store: FactStore, fid: int) -> bool:
    return fid not in await store.index.ids()
