"""The fact store's write verbs and recall, on SQLite and PostgreSQL, each with both vector
index classes: the embedded Qdrant Edge index and `QdrantServerIndex` (through qdrant-client's
local mode, `QDRANT_URL=:memory:`, since no Qdrant server can run here)."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest
from sqlalchemy import text

from storage import FactNotFound, FactStore, InvalidInput, ScopeDenied
from storage.vectors import EdgeIndex, QdrantServerIndex
from tests.conftest import assert_private, two_users


@pytest.fixture(params=["edge", "qdrant-local"])
def index_kind(request) -> str:
    return request.param


@pytest.fixture
async def store(store_config, embedder, index_kind):
    """A store on the backend's database with the `index_kind` vector index."""
    if index_kind == "qdrant-local":
        store_config = dataclasses.replace(store_config, qdrant_url=":memory:")
    s = await FactStore.open(store_config, embedder=embedder)
    assert isinstance(s.index, QdrantServerIndex if index_kind == "qdrant-local" else EdgeIndex)
    yield s
    await s.aclose()


async def test_add_then_recall_lexically_before_and_densely_after_indexing(store):
    await two_users(store)
    fid = await store.add("Alice's cat is called Miso", "user:alice", actor="alice")
    await store.add("Bob's dog is called Rex", "user:bob", actor="bob")
    # Before the indexer has run, the fact is still found through full text.
    store.indexer.stop()
    hits = await store.recall("what is the cat called", ["user:alice"], k=5)
    assert hits and hits[0].fact.id == fid and "lexical" in hits[0].signals
    await assert_private(store, "what is the dog called", "alice", "user:bob")


async def test_dense_recall_finds_paraphrase(store):
    await two_users(store)
    fid = await store.add("I adore hiking in the mountains on weekends", "user:alice", actor="alice")
    await store.add("Pineapple on pizza is my guilty pleasure", "user:alice", actor="alice")
    await store.add("My favourite hobby is trekking up hills", "user:bob", actor="bob")
    await store.drain()
    hits = await store.recall("outdoor walks alpine", ["user:alice"], k=2)
    assert hits[0].fact.id == fid
    assert "dense" in hits[0].signals
    await assert_private(store, "hiking hills trekking", "alice", "user:bob")


async def test_recall_bumps_access_count(store):
    await two_users(store)
    fid = await store.add("The wifi password is on the fridge", "user:alice")
    await store.recall("wifi password", ["user:alice"])
    await store._flush_access()
    assert (await store.get(fid)).access_count == 1
    await assert_private(store, "wifi password", "bob", "user:alice")


async def test_scope_denied_for_other_users_scope(store):
    await two_users(store)
    await store.add("Bob's bank PIN hint: birthday", "user:bob", actor="bob")
    with pytest.raises(ScopeDenied):
        await store.recall("PIN", ["user:bob"], actor="alice")
    with pytest.raises(ScopeDenied):
        await store.add("sneaky", "user:bob", actor="alice")
    assert await store.count_facts(["user:bob"]) == 1


async def test_channel_scope_members(store):
    await two_users(store)
    await store.ensure_scope("channel:general", "channel", members=["alice"])
    await store.add("The release is on Friday", "channel:general", actor="alice")
    assert "channel:general" in await store.readable_scopes("alice")
    assert "channel:general" not in await store.readable_scopes("bob")
    with pytest.raises(ScopeDenied):
        await store.recall("release", ["channel:general"], actor="bob")
    await store.ensure_scope("channel:general", "channel", members=["bob"])
    assert (await store.recall("release", ["channel:general"], actor="bob"))[0].fact.content.startswith("The release")


async def test_slug_upsert_under_20_concurrent_writers_leaves_one_fact(store):
    await two_users(store)
    results = await asyncio.gather(
        *[store.upsert("home_city", f"Alice lives in city number {i}", "user:alice", actor="alice") for i in range(20)]
    )
    ids = {fid for fid, _ in results}
    assert len(ids) == 1
    assert sum(1 for _, outcome in results if outcome == "added") == 1
    facts = await store.list_facts(["user:alice"], statuses=("active", "superseded", "deleted"))
    assert len(facts) == 1 and facts[0].slug == "home_city"
    history = await store.history(ids.pop())
    assert history[0].action == "add" and len(history) >= 2
    await assert_private(store, "city", "bob", "user:alice")


async def test_slug_upsert_unchanged_and_updated(store):
    await two_users(store)
    fid, outcome = await store.upsert("diet", "Alice is vegetarian", "user:alice")
    assert outcome == "added"
    assert await store.upsert("diet", "Alice is vegetarian", "user:alice") == (fid, "unchanged")
    assert await store.upsert("diet", "Alice is vegan", "user:alice") == (fid, "updated")
    await store.drain()
    hits = await store.recall("vegan vegetarian diet", ["user:alice"])
    assert [h.fact.content for h in hits] == ["Alice is vegan"]
    assert [h.old_content for h in await store.history(fid)] == [None, "Alice is vegetarian"]


async def test_supersede_keeps_history_and_recall_returns_newest(store):
    await two_users(store)
    old = await store.add("Alice lives in Lisbon", "user:alice", actor="alice")
    await store.add("Bob lives in Lisbon too", "user:bob", actor="bob")
    new = await store.supersede(old, "Alice moved from Lisbon to Porto", actor="alice")
    await store.drain()
    hits = await store.recall("where does Alice live", ["user:alice"])
    assert hits[0].fact.id == new and "Porto" in hits[0].fact.content
    assert all(h.fact.id != old for h in hits)
    old_fact = await store.get(old)
    assert old_fact.status == "superseded" and old_fact.valid_to is not None and old_fact.superseded_by_id == new
    assert (await store.get(new)).supersedes_id == old
    with_old = await store.recall("where does Alice live Lisbon", ["user:alice"], include_superseded=True)
    assert {h.fact.id for h in with_old} >= {old, new}
    assert [h.action for h in await store.history(old)] == ["add", "supersede"]
    with pytest.raises(InvalidInput):
        await store.supersede(old, "again")
    await assert_private(store, "Lisbon", "bob", "user:alice")


async def test_forget_excludes_from_recall_and_removes_vector(store):
    await two_users(store)
    fid = await store.add("Alice's locker code is 4512", "user:alice")
    await store.drain()
    assert await store.index.count() == 1
    await store.forget(fid, actor="alice")
    await store.drain()
    assert await store.recall("locker code", ["user:alice"]) == []
    assert await store.index.count() == 0
    assert (await store.get(fid)).status == "deleted"
    with pytest.raises(FactNotFound):
        await store.forget(fid)
    with pytest.raises(FactNotFound):
        await store.forget(fid + 1000)


async def test_forget_respects_scopes(store):
    await two_users(store)
    fid = await store.add("Bob's secret", "user:bob")
    with pytest.raises(FactNotFound):
        await store.forget(fid, scopes=["user:alice"])
    with pytest.raises(ScopeDenied):
        await store.forget(fid, actor="alice")
    assert (await store.get(fid)).status == "active"


async def test_purge_user_leaves_nothing(store):
    await two_users(store)
    await store.ensure_scope("channel:general", "channel", members=["alice", "bob"])
    a1 = await store.add("Alice's diary: zanzibar holiday plans", "user:alice", actor="alice", entities=["Zanzibar"])
    a2 = await store.add("alice: I think zanzibar is lovely", "channel:general", actor="alice", entities=["Alice"])
    b1 = await store.add("bob: zanzibar? never heard of it", "channel:general", actor="bob")
    await store.add_message("channel:general", "alice", "I think zanzibar is lovely", speaker_id="alice")
    await store.supersede(a1, "Alice's diary: zanzibar trip booked", actor="alice")
    await store.drain()
    report = await store.purge_user("alice")
    assert report.facts == 3 and report.messages == 1 and report.scopes == 1
    await store.drain()
    hits = await store.recall("zanzibar", ["user:alice", "channel:general"], k=50, include_superseded=True)
    assert [h.fact.id for h in hits] == [b1]
    assert await store.index.count() == 1
    for fid in (a1, a2):
        with pytest.raises(FactNotFound):
            await store.get(fid)
        assert await store.history(fid) == []
    async with store.engines.reader.connect() as conn:
        dump = []
        for table in ("facts", "messages", "fact_history", "entities"):
            dump += [str(v) for row in (await conn.execute(text(f"SELECT * FROM {table}"))).all() for v in row]
        texts = " ".join(dump)
        assert "lovely" not in texts and "diary" not in texts and "Zanzibar" not in texts and "Alice" not in texts
        if store.dialect == "sqlite":
            n = (
                await conn.execute(text("SELECT count(*) FROM facts_fts WHERE facts_fts MATCH 'lovely OR diary'"))
            ).scalar()
            assert n == 0


async def test_add_many_reports_per_item(store):
    await two_users(store)
    res = await store.add_many(
        [
            {"content": "one"},
            {"content": ""},
            {"content": "bad\x00"},
            {"content": "two", "kind": "nonsense"},
            {"content": "three", "kind": "plan"},
            "not a dict",
            {"content": "x", "colour": "red"},
        ],
        "user:alice",
    )
    assert res.as_dict()["saved"] == 2 and res.failed == 5
    assert [e["index"] for e in res.errors] == [1, 2, 3, 5, 6]
    assert res.ids[0] is not None and res.ids[4] is not None and res.ids[1] is None
    assert await store.count_facts(["user:alice"]) == 2


@pytest.mark.parametrize(
    "content, message",
    [
        ("", "empty"),
        ("   \n\t ", "empty"),
        ("x" * 100_000, "too long"),
        ("a\x00b", "NUL"),
        (b"bytes", "bytes"),
        (None, "text"),
    ],
)
async def test_bad_input_is_refused_and_nothing_is_written(store, content, message):
    await two_users(store)
    with pytest.raises(InvalidInput, match=message):
        await store.add(content, "user:alice")
    assert await store.count_facts(None, ("active", "superseded", "deleted")) == 0
    assert await store.pending_jobs() == 0


async def test_bad_ids_and_scopes(store):
    await two_users(store)
    for bad in ("abc", -1, 0, "1; DROP TABLE facts", 2**70, True):
        with pytest.raises(InvalidInput):
            await store.get(bad)
    with pytest.raises(FactNotFound):
        await store.get(424242)
    with pytest.raises(InvalidInput, match="unknown scope"):
        await store.add("hello", "user:nobody")
    with pytest.raises(InvalidInput):
        await store.recall("hello", ["user:alice'; --"])
    with pytest.raises(InvalidInput):
        await store.recall("", ["user:alice"])
    with pytest.raises(InvalidInput):
        await store.add("hello", "user:alice", importance=3)
    with pytest.raises(InvalidInput):
        await store.add("hello", "user:alice", kind="gossip")


async def test_sql_ish_text_is_stored_verbatim_and_harmless(store):
    await two_users(store)
    evil = "Robert'); DROP TABLE facts;-- \" OR 1=1 NEAR(a b) * AND ^col: {x}"
    fid = await store.add(evil, "user:alice")
    hits = await store.recall(evil, ["user:alice"])
    assert hits[0].fact.id == fid and hits[0].fact.content == evil
    assert await store.recall('"unbalanced quote AND OR NOT (', ["user:alice"]) is not None
    assert await store.count_facts() == 1


async def test_entities_link_and_boost(store):
    await two_users(store)
    await store.add("We talked about the weather", "user:alice", entities=["Anna"])
    target = await store.add("Anna said the weather is lovely", "user:alice", entities=["Anna"])
    await store.add("The weather is lovely says Tom", "user:alice", entities=["Tom"])
    await store.drain()
    hits = await store.recall("what did Anna say about the weather", ["user:alice"], k=3)
    assert hits[0].fact.id == target and hits[0].signals.get("entity") == 1


async def test_decay_lowers_relevance_of_old_unused_facts(store):
    from datetime import timedelta

    await two_users(store)
    fid = await store.add("An unimportant passing remark", "user:alice", importance=0.1)
    keep = await store.add("A crucial fact", "user:alice", importance=1.0)
    n = await store.decay(now=store.clock() + timedelta(days=60))
    assert n == 2
    low, high = (await store.get(fid)).relevance, (await store.get(keep)).relevance
    assert 0 < low < high < 1
    assert low < 0.5


async def test_messages_round_trip(store):
    await two_users(store)
    mid = await store.add_message("user:alice", "alice", "hello there", speaker_id="alice")
    assert (await store.recent_messages("user:alice"))[-1]["id"] == mid
    with pytest.raises(InvalidInput):
        await store.add_message("user:alice", "alice", "")


async def test_large_scope_lexical_tiers_keep_scores_and_partition(store, monkeypatch):
    """Above the lexical budget the full-text query runs in tiers (rare terms, or all frequent
    ones). Every row it returns keeps the exact score of the plain OR query, the best rows are the
    same, and another user's private facts never come back."""
    await two_users(store)
    await store.ensure_scope("chan:big", "channel")
    filler = [{"content": f"we talked about the weather and the weekend plans, note {i}"} for i in range(240)]
    filler += [{"content": "the weekend plans include a pottery class in Porto"}]
    filler += [{"content": f"the weather was fine for the pottery fair, day {i}"} for i in range(6)]
    await store.add_many(filler, "chan:big")
    await store.add("alice's pottery class in Porto is secret", "user:alice", actor="alice")
    query = "pottery class Porto weather weekend plans"

    def lexical(conn):
        store.recaller._stats.clear()
        return store.recaller.lexical(conn, query, ["chan:big"], ("active",), 20)

    monkeypatch.setattr(type(store.recaller), "LEXICAL_BUDGET", 10**9)
    plain = await store.engines.run_read(lexical)
    monkeypatch.setattr(type(store.recaller), "LEXICAL_BUDGET", 50)
    tiered = await store.engines.run_read(lexical)
    assert len(plain) == 20
    if store.dialect == "sqlite":  # (PostgreSQL's full-text query has no tiers)
        assert 7 <= len(tiered) < 20  # tiers ran: the rows with a rare term (words on most rows score ~0)
    scores = {fid: (s1, s2) for fid, s1, s2 in plain}
    for fid, s1, s2 in tiered:
        if fid in scores:
            assert scores[fid] == pytest.approx((s1, s2))
    assert [fid for fid, *_ in tiered[:5]] == [fid for fid, *_ in plain[:5]]
    hits = await store.recall(query, ["chan:big"], k=5)
    assert hits[0].fact.content == "the weekend plans include a pottery class in Porto"
    await assert_private(store, query, "bob", "user:alice")


async def test_neighbours_are_stored_per_scope_on_every_insert_path(store):
    """Interleaved scopes: each fact's stored previous neighbour is the previous fact of its own
    scope, whether written by add, add_many or supersede; recall's hydration reads them (and the
    next neighbour) by index seeks."""
    from sqlalchemy import select

    from storage.models import FactRow
    from storage.recall import _hydrate_stmt

    await two_users(store)
    a1 = await store.add("alice one", "user:alice")
    b1 = await store.add("bob one", "user:bob")
    a2 = await store.add("alice two", "user:alice")
    res = await store.add_many([{"content": "bob two"}, {"content": "bob three"}], "user:bob")
    b2, b3 = res.ids
    a3 = await store.supersede(a2, "alice two, corrected")
    async with store.engines.reader.connect() as conn:
        prev = dict((await conn.execute(select(FactRow.id, FactRow.prev_id))).all())
        assert prev == {a1: None, b1: None, a2: a1, b2: b1, b3: b2, a3: a2}
        rows = (
            await conn.execute(
                _hydrate_stmt(False, store.dialect),
                {"ids": [a1, b2], "scopes": ["user:alice", "user:bob"], "statuses": ["active"], "now": store.clock()},
            )
        ).all()
    got = {r.id: (r.prev_id, r.next_id) for r in rows}
    # a2 is superseded: with active facts only, a1 has no next neighbour.
    assert got == {a1: (None, None), b2: (b1, b3)}
    if store.dialect == "postgresql":
        from sqlalchemy import text

        async with store.engines.reader.connect() as conn:
            stmt = _hydrate_stmt(False, store.dialect).params(
                ids=[a1, b2], scopes=["user:alice", "user:bob"], statuses=["active"], now=store.clock()
            )
            sql = str(stmt.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True}))
            await conn.execute(text("SET enable_seqscan = off"))  # a tiny table would be seq-scanned
            plan = "\n".join(r[0] for r in (await conn.execute(text("EXPLAIN " + sql))).all())
        assert "Index Cond: (prev_id = facts.id)" in plan, plan  # the next neighbour: a prev_id seek


async def test_reindex_rebuilds_from_stored_vectors_without_embedding(store):
    """A rebuild loads stored vectors (no embedding), leaves forgotten and superseded facts out of
    dense recall, and keeps the scope partition."""
    await two_users(store)
    keep = await store.add("I adore hiking in the mountains on weekends", "user:alice", actor="alice")
    gone = await store.add("My locker code is 4512", "user:alice", actor="alice")
    old = await store.add("Alice lives in Lisbon", "user:alice", actor="alice")
    await store.add("My favourite hobby is trekking up hills", "user:bob", actor="bob")
    await store.drain()
    new = await store.supersede(old, "Alice moved to Porto", actor="alice")
    await store.forget(gone, actor="alice")
    await store.drain()
    embedded = store.indexer.embedded
    assert await store.reindex() == 4
    assert store.indexer.embedded == embedded
    assert await store.index.ids() == {keep, old, new} | {f.id for f in await store.list_facts(["user:bob"])}
    hits = await store.recall("outdoor walks alpine", ["user:alice"], k=3)
    assert hits[0].fact.id == keep and "dense" in hits[0].signals
    assert all(h.fact.id not in (gone, old) for h in await store.recall("locker code Lisbon", ["user:alice"], k=10))
    await assert_private(store, "hiking hills trekking", "alice", "user:bob")
