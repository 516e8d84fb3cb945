"""One memory, many processes (issue 17): real processes sharing one store.

On SQLite every process opens the same data dir (each gets a local vector index folder of its
own); on PostgreSQL (CLARA_TEST_DATABASE_URL) each node has its own data dir on one database.
The paraphrase pair shares no word stem, so only the dense path (vectors stored in SQL by the node
that embedded them, followed through the change feed by the others) can find it.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

from storage import FactStore, StoreConfig, feed
from tests.conftest import T_BASE, run_then_kill

HERE = Path(__file__).parent
FACT = "My grandmother bakes wonderful sourdough bread every Sunday"
PARAPHRASE = "granny homemade loaves at the weekend"


class Node:
    """A node process (tests/node_helper.py) driven over JSON lines."""

    def __init__(self, data_dir: Path, url: str | None, *flags: str, now=T_BASE):
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "node_helper.py"), str(data_dir), url or "", *flags],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=HERE.parent,
            env={**os.environ, "CLARA_TEST_NOW": now.isoformat()},
        )
        self.info = self._read(timeout=180)
        assert self.info.get("ready"), self.info

    def _read(self, timeout: float) -> dict:
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            raise TimeoutError("node did not answer")
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"node exited with {self.proc.wait(timeout=10)}")
        return json.loads(line)

    def call(self, timeout: float = 120, **cmd) -> dict:
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        return self._read(timeout)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


@pytest.fixture
def place(backend, tmp_path, request):
    """`place(i)` → (data dir, database url) of node i: one SQLite data dir shared by all nodes,
    or on PostgreSQL a data dir per node on one (emptied) database."""
    from storage import migrate
    from storage.db import async_url
    from tests.conftest import _truncate

    if backend == "postgresql":
        url = request.getfixturevalue("pg_database")
        _truncate(url)
        return lambda i: (tmp_path / f"node{i}", url)
    (tmp_path / "data").mkdir()
    migrate.upgrade(async_url(None, tmp_path / "data"))
    return lambda i: (tmp_path / "data", None)


@pytest.fixture
def nodes():
    started: list[Node] = []
    yield started
    for n in started:
        n.close()


def start(nodes: list, where, i: int, *flags: str, now=T_BASE) -> Node:
    node = Node(*where(i), *flags, now=now)
    nodes.append(node)
    return node


def test_a_paraphrase_written_on_one_node_is_found_densely_on_the_others_and_forget_reaches_them(place, nodes):
    a, b, c = (start(nodes, place, i) for i in range(3))
    if len({a.info["slot"], b.info["slot"], c.info["slot"]}) < 3:
        assert a.info["slot"] == b.info["slot"] == c.info["slot"] == 0  # separate data dirs (PostgreSQL)
    fid = a.call(op="add", content=FACT, scope="user:alice")["id"]
    for node in (b, c):
        got = node.call(op="wait_dense", query=PARAPHRASE, scope="user:alice", id=fid, wait=15)
        assert got["ok"], got
        hit = next(h for h in node.call(op="recall", query=PARAPHRASE, scope="user:alice")["hits"] if h[0] == fid)
        assert "dense_rank" in hit[2] and "lexical_rank" not in hit[2]  # only the dense path found it
    # Embedded exactly once, by whichever node leased the job.
    assert sum(n.call(op="stats")["embedded"] for n in (a, b, c)) == 1
    b.call(op="forget", id=fid)
    for node in (a, c):
        got = node.call(op="wait_dense", query=PARAPHRASE, scope="user:alice", id=fid, present=False, wait=15)
        assert got["ok"], got


def test_a_late_joiner_builds_its_index_from_stored_vectors_without_embedding(place, nodes):
    a = start(nodes, place, 0)
    ids = [
        a.call(op="add", content=f"note {i}: the lighthouse keeper paints boat {i}", scope="user:l")["id"]
        for i in range(40)
    ]
    fid = a.call(op="add", content=FACT, scope="user:l")["id"]
    a.call(op="drain")
    late = start(nodes, place, 1, "--no-embed")  # embed_documents raises in this process
    assert late.info["opened"] == "rebuilt"
    stats = late.call(op="stats")
    assert stats["vectors"] == len(ids) + 1 and stats["embedded"] == 0
    assert late.call(op="wait_dense", query=PARAPHRASE, scope="user:l", id=fid, wait=5)["ok"]
    # Writes after it joined reach it through the feed (embedded elsewhere, still no embedding here).
    new = a.call(op="add", content="Grandpa repairs antique clocks in his workshop", scope="user:l")["id"]
    got = late.call(op="wait_dense", query="grandfather fixes old timepieces", scope="user:l", id=new, wait=15)
    assert got["ok"], got
    assert late.call(op="stats")["embedded"] == 0


def test_sigkill_mid_write_then_the_others_and_the_restarted_node_catch_up(place, nodes, backend):
    data_dir, url = place(0)
    # The survivor's clock runs 10 minutes ahead, so the killed writer's index leases are expired for it.
    later = T_BASE + timedelta(minutes=10)
    survivor = start(nodes, place, 1, now=later)
    args = [str(data_dir), url or "", "400", "index"]
    acked = run_then_kill("crash_writer.py", args, 120, now=T_BASE)
    assert len(acked) >= 120
    assert survivor.call(op="drain", wait=180)["ok"]
    want = acked[42]
    got = survivor.call(
        op="wait_dense", query="acknowledged fact number 42 about kiwis", scope="user:crash", id=want, wait=30
    )
    assert got["ok"], got
    # The killed node restarts on its data dir: it finds its own index folder and catches up.
    restarted = start(nodes, place, 0, now=later)
    if backend == "sqlite":
        # the survivor holds node-0, the killed writer held node-1: the restart takes node-1 again
        assert survivor.info["slot"] == 0 and restarted.info["slot"] == 1
        assert restarted.info["opened"] == "caught-up"
    restarted.call(op="drain", wait=180)
    s1, s2 = restarted.call(op="stats"), survivor.call(op="stats")
    assert s1["vectors"] == s2["vectors"] >= len(acked)
    assert restarted.call(
        op="wait_dense", query="acknowledged fact number 42 about kiwis", scope="user:crash", id=want, wait=10
    )["ok"]


def test_cli_commands_work_while_nodes_hold_the_data_dir(place, nodes, tmp_path, backend):
    """The bug of issue 17: `clara memory stats/recall` and `clara doctor` stopped with "the vector
    index is open in another process" while another Clara process ran."""
    if backend != "sqlite":
        pytest.skip("one SQLite data dir shared by processes")
    a = start(nodes, place, 0)
    fid = a.call(op="add", content=FACT, scope="user:cli")["id"]
    a.call(op="drain")
    env = {**os.environ, "CLARA_DATA_DIR": str(tmp_path / "data"), "COLUMNS": "250"}
    for var in ("DATABASE_URL", "QDRANT_URL", "DISCORD_BOT_TOKEN", "LLM_PROVIDER"):
        env.pop(var, None)
    for args in (["memory", "stats"], ["memory", "recall", PARAPHRASE, "--user", "cli"], ["doctor", "--json"]):
        res = subprocess.run(
            [sys.executable, "-m", "clara", *args], capture_output=True, text=True, timeout=180, cwd=tmp_path, env=env
        )
        assert "another process" not in res.stdout + res.stderr
        assert res.returncode in (0, 1), res.stdout + res.stderr  # doctor: 1 = the Discord token warning only
        if args[1] == "recall":
            assert "sourdough" in res.stdout, res.stdout
        if args[0] == "doctor":
            checks = {c["name"]: c for c in json.loads(res.stdout)}
            assert checks["vector index"]["status"] == "ok", checks["vector index"]
    assert a.call(op="stats")["vectors"] == 1 and fid


# --------------------------------------------------------------------------- in-process units
async def test_vectors_are_stored_in_sql_and_a_status_change_reuses_them(store_config, embedder):
    async with await FactStore.open(store_config, embedder=embedder) as store:
        await store.ensure_scope("user:v", "user", owner="v")
        fid = await store.add(FACT, "user:v")
        await store.drain()
        assert store.indexer.embedded == 1
        new = await store.supersede(fid, "My grandmother bakes rye bread every Saturday")
        await store.drain()
        assert store.indexer.embedded == 2  # the superseded fact kept its vector: only the new text was embedded
        from sqlalchemy import select

        from storage.models import ChangeRow, FactVectorRow

        async with store.engines.reader.connect() as conn:
            rows = {r.fact_id: r for r in (await conn.execute(select(FactVectorRow))).all()}
            ops = [(r.fact_id, r.op) for r in (await conn.execute(select(ChangeRow).order_by(ChangeRow.id))).all()]
        assert set(rows) == {fid, new} and rows[fid].model == embedder.name and rows[fid].dim == embedder.dim
        assert len(rows[fid].vector) == 2 * embedder.dim
        exact = embedder.embed_documents([FACT])[0]
        assert float(np.dot(feed.decode(rows[fid].vector), exact)) > 0.9999
        assert ops == [(fid, "upsert"), (fid, "vector"), (new, "upsert"), (fid, "supersede"), (new, "vector")]
        await store.forget(new)
        async with store.engines.reader.connect() as conn:
            left = (await conn.execute(select(FactVectorRow.fact_id))).scalars().all()
        assert left == [fid]  # a forgotten fact's vector is dropped in the forget's transaction


async def test_a_job_is_leased_by_one_worker_and_a_stuck_lease_expires(store_config, embedder, clock):
    """Two stores (two workers) on one database: a job leased by one is not done by the other
    until the lease runs out (its worker died or hangs)."""
    if store_config.database_url is None:
        other_config = store_config
    else:
        other_config = StoreConfig(
            database_url=store_config.database_url,
            data_dir=store_config.data_dir / "other",
            auto_migrate=False,
            clock=clock,
        )
    one = await FactStore.open(store_config, embedder=embedder, start_indexer=False)
    two = await FactStore.open(other_config, embedder=embedder, start_indexer=False)
    try:
        assert one.slot.path != two.slot.path
        await one.ensure_scope("user:j", "user", owner="j")
        ids = [await one.add(f"leased job {i}", "user:j") for i in range(3)]
        jobs, rows, _ = await one.engines.run_write(one.indexer._claim, 10)  # worker one leases, then hangs
        assert len(jobs) == 3 and {r.id for r in rows} == set(ids)
        assert await two.indexer.run_once() == 0  # nothing for worker two while the lease holds
        clock.advance(one.indexer.lease + 1)
        assert await two.indexer.run_once() == 3
        assert two.indexer.embedded == 3 and await two.pending_jobs() == 0
        await one.drain(timeout=30)
        assert await one.index.count() == 3 and await two.index.count() == 3
    finally:
        await two.aclose()
        await one.aclose()


async def test_a_lost_local_index_is_rebuilt_from_sql_without_embedding(store_config, embedder):
    async with await FactStore.open(store_config, embedder=embedder) as store:
        await store.ensure_scope("user:r", "user", owner="r")
        for i in range(5):
            await store.add(f"rebuild me {i}", "user:r")
        await store.drain()
        path = store.slot.path
    import shutil

    shutil.rmtree(path)
    async with await FactStore.open(store_config, embedder=embedder) as store:
        assert store.feed.opened == "rebuilt" and await store.index.count() == 5
        assert await store.pending_jobs() == 0 and store.indexer.embedded == 0
        assert await store.reindex() == 5 and store.indexer.embedded == 0  # reindex = from stored vectors
        assert await store.reindex(embed=True) == 5 and store.indexer.embedded == 5


async def test_a_hole_in_the_feed_does_not_stall_the_changes_after_it(store_config, embedder, clock):
    """PostgreSQL hands out ids before commit: a hole (a transaction not committed yet, or never)
    is waited for, but every change past it is applied at once, however many there are."""
    from sqlalchemy import func, insert, select

    from storage.models import ChangeRow

    async with await FactStore.open(store_config, embedder=embedder) as store:
        await store.ensure_scope("user:h", "user", owner="h")
        ids = [await store.add(f"note {i} about the garden", "user:h") for i in range(6)]
        await store.drain()
        store.feed.gap_timeout, store.feed.batch = 3600.0, 2  # a hole that stays open; small batches
        async with store.engines.reader.connect() as conn:
            top = (await conn.execute(select(func.max(ChangeRow.id)))).scalar_one()
        rows = [{"id": top + 2 + i, "fact_id": f, "op": "upsert", "created_at": clock()} for i, f in enumerate(ids)]
        await store.engines.run_write(lambda c: c.execute(insert(ChangeRow), rows))  # top + 1 is missing
        before = store.feed.applied
        await store.feed.catch_up()
        assert store.feed.applied - before == len(ids)  # all six past the hole, in batches of two
        assert store.feed.position == top  # the position waits at the hole
        hole = {"id": top + 1, "fact_id": ids[0], "op": "upsert", "created_at": clock()}
        await store.engines.run_write(lambda c: c.execute(insert(ChangeRow), [hole]))
        await store.feed.catch_up()
        assert store.feed.position == top + 1 + len(ids)  # the hole filled: the position moves past it all


async def test_a_node_stopped_before_its_first_vector_catches_up_instead_of_rebuilding(store_config, embedder):
    """A node that wrote facts but never held a vector (another worker embedded them) has an empty
    index and a valid position: it catches up from the feed, it does not rebuild; a node whose
    index held points and lost them still rebuilds."""
    import shutil

    other_dir = store_config.data_dir / "other"
    other_config = StoreConfig(
        database_url=store_config.database_url,
        data_dir=store_config.data_dir if store_config.database_url is None else other_dir,
        auto_migrate=False,
        clock=store_config.clock,
    )
    async with await FactStore.open(store_config, embedder=embedder, start_indexer=False) as writer:
        await writer.ensure_scope("user:e", "user", owner="e")
        await writer.ensure_scope("user:x", "user", owner="x")
        fid = await writer.add(FACT, "user:e")
        await writer.add("My secret is that I keep bees on the roof", "user:x")
        await writer.feed.catch_up()
        assert await writer.index.count() == 0
        writer_slot = writer.slot.path
        async with await FactStore.open(other_config, embedder=embedder) as worker:
            await worker.drain()  # the other node embeds and stores both vectors
            assert await worker.index.count() == 2
    async with await FactStore.open(store_config, embedder=embedder, start_indexer=False) as back:
        assert back.slot.path == writer_slot
        assert back.feed.opened == "caught-up" and await back.index.count() == 2
        hits = await back.recall(PARAPHRASE, ["user:e"], k=3)
        assert [h.fact.id for h in hits][:1] == [fid]
        assert all(h.fact.scope_id == "user:e" for h in hits)  # never the other user's private fact
    shutil.rmtree(writer_slot)  # the index folder is lost; its saved position says it held points
    async with await FactStore.open(store_config, embedder=embedder, start_indexer=False) as again:
        assert again.slot.path == writer_slot
        assert again.feed.opened == "rebuilt" and await again.index.count() == 2
