"""`QdrantServerIndex` as a shared index (issue 17), through qdrant-client's local mode: two
stores on one database sharing one in-memory collection (as nodes sharing a Qdrant server), the
collection's invariants (one vector size, one point per id, chunked requests), and the CLI on
`QDRANT_URL=local:PATH`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from qdrant_client import AsyncQdrantClient

from storage import FactStore, StoreError
from storage.vectors import IndexMismatch, QdrantServerIndex, VectorPoint
from tests.conftest import assert_private, two_users

ROOT = Path(__file__).parent.parent


def _unit(rng: np.random.Generator, dim: int) -> np.ndarray:
    v = rng.standard_normal(dim).astype(np.float32)
    return v / np.linalg.norm(v)


async def test_two_stores_share_one_index_and_a_rebuild_reconciles_instead_of_clearing(
    store_config, embedder, monkeypatch
):
    client = AsyncQdrantClient(location=":memory:")
    deleted_collections: list[str] = []
    real_delete = client.delete_collection

    async def spy(name, *a, **kw):
        deleted_collections.append(name)
        return await real_delete(name, *a, **kw)

    monkeypatch.setattr(client, "delete_collection", spy)
    name = f"shared_{embedder.name}"
    a = await FactStore.open(store_config, embedder=embedder, index=QdrantServerIndex(None, name, 384, client=client))
    b = await FactStore.open(store_config, embedder=embedder, index=QdrantServerIndex(None, name, 384, client=client))
    try:
        assert a.slot.n != b.slot.n  # a feed position each, one collection
        await two_users(a)
        hike = await a.add("I adore hiking in the mountains on weekends", "user:alice", actor="alice")
        pizza = await a.add("Pineapple on pizza is my guilty pleasure", "user:alice", actor="alice")
        bob = await a.add("My favourite hobby is trekking up hills", "user:bob", actor="bob")
        await a.drain()
        await b.drain()
        # B finds A's write densely (no shared stem with the query).
        hits = await b.recall("outdoor walks alpine", ["user:alice"], k=2)
        assert hits[0].fact.id == hike and "dense" in hits[0].signals
        # The collection drifts from SQL: a point a crashed node never deleted (no such fact), a
        # forgotten fact's point left behind, and a live fact's point missing.
        await a.forget(pizza, actor="alice")
        await a.drain()
        await b.drain()
        rng = np.random.default_rng(3)
        stray = VectorPoint(10**9, _unit(rng, 384), "user:alice", "active")
        ghost = VectorPoint(pizza, _unit(rng, 384), "user:alice", "active")
        await a.index.upsert([stray, ghost])
        await a.index.delete([hike])
        assert await b.index.ids() == {bob, 10**9, pizza}
        # B rebuilds: the collection is reconciled with SQL, never dropped under A.
        assert await b.reindex() == 2
        assert deleted_collections == []
        assert await a.index.ids() == {hike, bob}
        hits = await a.recall("outdoor walks alpine", ["user:alice"], k=2)
        assert hits[0].fact.id == hike and "dense" in hits[0].signals
        assert all(h.fact.id != pizza for h in await a.recall("pizza pineapple", ["user:alice"], k=5))
        await assert_private(a, "hiking hills trekking", "alice", "user:bob")
        await assert_private(b, "hiking hills trekking", "alice", "user:bob")
        # A node joining later (no saved position) reconciles too: nothing is dropped.
        await b.aclose()
        b = await FactStore.open(
            store_config, embedder=embedder, index=QdrantServerIndex(None, name, 384, client=client)
        )
        assert b.feed.opened in ("rebuilt", "caught-up") and deleted_collections == []
        assert await b.index.ids() == {hike, bob}
    finally:
        await a.aclose()
        await b.aclose()
        await client.close()


async def test_an_existing_collection_of_another_vector_size_is_refused_with_one_clear_error():
    client = AsyncQdrantClient(location=":memory:")
    try:
        small = QdrantServerIndex(None, "facts", 8, client=client)
        await small.upsert([VectorPoint(1, np.ones(8, dtype=np.float32) / np.sqrt(8), "user:a", "active")])
        other = QdrantServerIndex(None, "facts", 384, client=client)
        with pytest.raises(IndexMismatch, match="8-dimensional vectors but the embedder gives 384") as err:
            await other.count()
        assert isinstance(err.value, StoreError) and "\n" not in str(err.value)
        # A second node of the right size uses the collection as it is (created by the first).
        same = QdrantServerIndex(None, "facts", 8, client=client)
        assert await same.count() == 1
    finally:
        await client.close()


async def test_upserts_go_in_chunks_one_point_per_id_last_one_wins():
    client = AsyncQdrantClient(location=":memory:")
    calls: list[int] = []
    real = client.upsert

    async def counting(name, points, **kw):
        calls.append(len(points))
        return await real(name, points=points, **kw)

    client.upsert = counting
    try:
        index = QdrantServerIndex(None, "facts", 16, client=client, chunk=40)
        rng = np.random.default_rng(5)
        points = [VectorPoint(i, _unit(rng, 16), "user:a", "active") for i in range(1, 101)]
        again = [VectorPoint(p.id, _unit(rng, 16), "user:b", "superseded") for p in points[:30]]
        await index.upsert(points + again)
        assert calls == [40, 40, 20]  # 100 distinct ids, at most 40 a request
        assert await index.count() == 100
        latest = {p.id: p for p in points + again}
        got = await index.cosines([1, 1, 2, 50], latest[1].vector)
        assert set(got) == {1, 2, 50} and got[1] == pytest.approx(1.0, abs=1e-5)
        # The duplicated ids carry the last payload: they are only found under user:b.
        hits = await index.search(latest[1].vector, ["user:b"], 50, statuses=("superseded",))
        assert {i for i, _ in hits} == set(range(1, 31))
        assert await index.search(latest[1].vector, ["user:a"], 100) and all(
            i > 30 for i, _ in await index.search(latest[1].vector, ["user:a"], 100)
        )
        await index.delete([1, 1, 2] + list(range(3, 90)))
        assert await index.ids() == set(range(90, 101))
    finally:
        await client.close()


def _clara(args: list[str], data: Path, qdrant: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "LLM_PROVIDER")}
    env.update(CLARA_DATA_DIR=str(data), QDRANT_URL=qdrant)
    return subprocess.run(
        [sys.executable, "-m", "clara", *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120
    )


async def test_cli_on_a_local_mode_collection_and_a_mismatched_one(tmp_path, embedder):
    """Facts written by one process into `QDRANT_URL=local:PATH` are recalled densely by the CLI
    (another process, reopening the persisted collection); bad settings are one line, exit 2."""
    from storage import StoreConfig

    data, qdir = tmp_path / "data", tmp_path / "qdrant"
    url = f"local:{qdir}"
    store = await FactStore.open(StoreConfig(data_dir=data, qdrant_url=url), embedder=embedder)
    try:
        await two_users(store)
        await store.add("I adore hiking in the mountains on weekends", "user:alice", actor="alice")
        await store.add("My favourite hobby is trekking up hills", "user:bob", actor="bob")
        await store.drain()
    finally:
        await store.aclose()
    assert any(p.is_dir() for p in qdir.iterdir())  # local mode persisted its collection there
    rec = _clara(["memory", "recall", "outdoor walks alpine", "--user", "alice", "-k", "5"], data, url)
    assert rec.returncode == 0, rec.stderr
    assert "hiking" in rec.stdout and "trekking" not in rec.stdout and "dense" in rec.stdout
    bad = _clara(["memory", "stats"], tmp_path / "other", "local:")
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0 and "local:PATH" in bad.stderr
    # A collection of another vector size under the store's collection name: one line, exit 2.
    from qdrant_client import QdrantClient, models

    odd = tmp_path / "odd"
    sync = QdrantClient(path=str(odd))
    params = models.VectorParams(size=8, distance=models.Distance.COSINE)
    sync.create_collection(f"clara_facts_{embedder.name}", vectors_config=params)
    sync.close()
    res = _clara(["memory", "stats"], tmp_path / "data2", f"local:{odd}")
    assert res.returncode == 2 and "8-dimensional" in res.stderr and "Traceback" not in res.stderr, res.stderr
