"""The write path's plumbing: `Engines.run_write` (one transaction per call, on SQLite in the write
thread behind the gate shared with the async writer) and the low-priority background threads."""

from __future__ import annotations

import asyncio
import os
import sys
import threading

import pytest
from sqlalchemy import func, insert, select

from storage.cpu import BACKGROUND_NICE, run_background
from storage.models import ScopeRow
from tests.conftest import T_BASE


def _add_scope(conn, scope_id: str) -> None:
    conn.execute(
        insert(ScopeRow).values(
            id=scope_id,
            kind="channel",
            name=scope_id,
            read_policy="members",
            write_policy="members",
            created_at=T_BASE,
        )
    )


async def _scopes(store, prefix: str) -> int:
    async with store.engines.reader.connect() as conn:
        return (
            await conn.execute(select(func.count()).select_from(ScopeRow).where(ScopeRow.id.like(f"{prefix}%")))
        ).scalar_one()


async def test_run_write_is_one_transaction(store):
    def half_then_fail(conn):
        _add_scope(conn, "tx:first")
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        await store.engines.run_write(half_then_fail)
    assert await _scopes(store, "tx:") == 0  # nothing half-written

    def two(conn):
        _add_scope(conn, "tx:a")
        _add_scope(conn, "tx:b")
        return "done"

    assert await store.engines.run_write(two) == "done"
    assert await _scopes(store, "tx:") == 2


async def test_async_writer_and_write_thread_take_turns(store):
    """A run_write issued while an async write transaction is open waits for it (no interleaving,
    no SQLITE_BUSY), and both commit."""
    order: list[str] = []
    opened = asyncio.Event()

    async def async_tx():
        async with store.engines.writer.begin() as conn:
            opened.set()
            await conn.run_sync(_add_scope, "turn:async")
            await asyncio.sleep(0.2)  # hold the transaction (and, on SQLite, the gate)
            order.append("async-commit")

    def thread_tx(conn):
        _add_scope(conn, "turn:thread")
        order.append("thread")

    task = asyncio.create_task(async_tx())
    await opened.wait()
    await store.engines.run_write(thread_tx)
    await task
    if store.dialect == "sqlite":
        assert order == ["async-commit", "thread"]
    assert await _scopes(store, "turn:") == 2


async def test_cancelled_caller_leaves_a_whole_transaction(store):
    """Cancelling the awaiting coroutine does not tear the transaction: it commits in its thread
    (SQLite) or rolls back (PostgreSQL), and the next write works."""
    started = threading.Event()

    def slow(conn):
        started.set()
        _add_scope(conn, "cancel:1")
        _add_scope(conn, "cancel:2")

    task = asyncio.create_task(store.engines.run_write(slow))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await store.engines.run_write(lambda conn: _add_scope(conn, "cancel:after"))
    n = await _scopes(store, "cancel:")
    assert n in (1, 3)  # both or neither of the first two, plus the later one


async def test_many_concurrent_adds_all_land(store):
    await store.ensure_scope("chan:busy", "channel")

    async def writer(i: int) -> list[int]:
        return [await store.add(f"message {i}-{j}", "chan:busy") for j in range(10)]

    ids = [fid for batch in await asyncio.gather(*(writer(i) for i in range(10))) for fid in batch]
    assert len(set(ids)) == 100
    facts = await store.list_facts(["chan:busy"], limit=200)
    assert {f.content for f in facts} == {f"message {i}-{j}" for i in range(10) for j in range(10)}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread priorities are a Linux feature")
async def test_background_threads_run_at_lower_priority():
    def nice_of_this_thread() -> int:
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    assert await run_background(nice_of_this_thread) >= min(BACKGROUND_NICE, 19)
    assert nice_of_this_thread() < BACKGROUND_NICE  # the caller's own thread is untouched
