"""Kill the process after acknowledgements (SIGKILL, mid-indexing) and restart: every acknowledged
fact is present and the pending embeddings are finished by the next process."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from storage import FactStore
from tests.conftest import run_then_kill

HERE = Path(__file__).resolve().parent


def _write_then_kill(store_config, indexing: str, after: int) -> list[int]:
    """Run crash_writer.py, collect the ids it acknowledged, SIGKILL it after `after` of them."""
    args = [str(store_config.data_dir), store_config.database_url or "", "400", indexing]
    return run_then_kill("crash_writer.py", args, after, now=store_config.clock())


@pytest.mark.parametrize("indexing", ["index", "noindex"])
async def test_sigkill_after_acks_then_restart_loses_nothing(store_config, embedder, indexing):
    """`index`: killed while the indexer runs (vector index WAL mid-write); `noindex`: killed
    before any embedding was made, so every job is left to the next process."""
    acked = await asyncio.to_thread(_write_then_kill, store_config, indexing, 150)
    assert len(acked) >= 150

    store = await FactStore.open(store_config, embedder=embedder, start_indexer=False)
    try:
        if indexing == "noindex":
            assert await store.pending_jobs() >= len(acked)
        store.start()
        for fid in acked:
            fact = await store.get(fid)
            assert fact.scope_id == "user:crash"
        await store.drain(timeout=120)
        assert await store.pending_jobs() == 0
        total = await store.count_facts(["user:crash"])
        assert total >= len(acked)
        assert await store.index.count() == total
        for fid in acked[:20]:
            assert (await store.get(fid)).indexed_at is not None
        hits = await store.recall("acknowledged fact number 42 about kiwis", ["user:crash"], k=3)
        assert hits and "dense" in hits[0].signals
        await store.ensure_scope("user:other", "user", owner="other")
        assert await store.recall("kiwis", ["user:other"]) == []
    finally:
        await store.aclose()


async def test_second_process_on_same_data_dir_gets_a_clear_error(store_config, embedder, tmp_path):
    """One embedded index folder is single-process: a second opener of the same folder is
    refused, nothing is deleted (a second FactStore takes a folder of its own: test_nodes)."""
    store = await FactStore.open(store_config, embedder=embedder)
    try:
        await store.ensure_scope("user:x", "user", owner="x")
        await store.add("the index must survive a second opener", "user:x")
        await store.drain()
        code = (
            "import sys\n"
            "from storage.vectors import EdgeIndex, IndexInUse\n"
            "try:\n"
            f"    EdgeIndex(__import__('pathlib').Path({str(store.index.path)!r}), 384)\n"
            "except IndexInUse as e:\n"
            "    print('REFUSED', e)\n"
        )
        res = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=HERE.parent
        )
        assert "REFUSED" in res.stdout and "QDRANT_URL" in res.stdout, res.stderr
        assert await store.index.count() == 1
    finally:
        await store.aclose()


async def test_indexing_failures_are_retried_and_nothing_is_dropped(store):
    """A vector index that fails for a while: jobs stay queued (attempts recorded), then finish."""
    await store.ensure_scope("user:r", "user", owner="r")
    real_upsert = store.index.upsert_batch  # what the change-feed follower writes with
    failures = {"left": 2}

    async def flaky(batch):
        if failures["left"]:
            failures["left"] -= 1
            raise ConnectionError("index unavailable")
        await real_upsert(batch)

    store.index.upsert_batch = flaky
    store.indexer.debounce = 0
    ids = [await store.add(f"retry me {i}", "user:r") for i in range(5)]
    await store.drain(timeout=60)
    # The local index is written by the change-feed follower (after the indexer's commit, by its
    # tail loop or by drain): each failure is retried by one of them.
    assert failures["left"] == 0 and store.indexer.failures + store.feed.failures >= 1
    assert await store.index.count() == 5
    for fid in ids:
        assert (await store.get(fid)).indexed_at is not None
    hits = await store.recall("retry me", ["user:r"], k=5)
    assert {h.fact.id for h in hits} == set(ids)


async def test_lost_vector_index_is_rebuilt_from_sql_at_start(store_config, embedder):
    import shutil

    store = await FactStore.open(store_config, embedder=embedder)
    await store.ensure_scope("user:v", "user", owner="v")
    ids = [await store.add(f"rebuild me {i}", "user:v") for i in range(3)]
    await store.drain()
    path = store.index.path
    await store.aclose()
    shutil.rmtree(path)
    store = await FactStore.open(store_config, embedder=embedder)
    try:
        await store.drain(timeout=60)
        assert await store.index.count() == 3
        hits = await store.recall("rebuild me", ["user:v"], k=3)
        assert {h.fact.id for h in hits} == set(ids) and all("dense" in h.signals for h in hits)
    finally:
        await store.aclose()
