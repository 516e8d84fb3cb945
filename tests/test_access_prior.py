"""Access counts feed ranking (Engram): recall has a bounded access prior (how often and how lately
a fact was shown, halving every ACCESS_HALF_LIFE_DAYS), and chat counts only what it shows."""

from __future__ import annotations

from datetime import timedelta

from clara.chat import ChatEngine, IncomingMessage
from storage import recall as R
from tests.conftest import assert_private, two_users


async def test_shown_facts_rank_higher_within_the_bound_and_the_prior_decays(store, clock):
    await two_users(store)
    # The same words twice (a tie on every signal: hours apart, so not each other's neighbours)
    # and a weaker third candidate.
    old = await store.add("Alice keeps the spare key under the flowerpot", "user:alice")
    clock.advance(timedelta(hours=7))
    new = await store.add("Alice keeps the spare key under the flowerpot", "user:alice")
    clock.advance(timedelta(hours=7))
    await store.add("Alice waters the flowerpot on Sundays", "user:alice")
    await store.add("Bob keeps the spare key under the doormat flowerpot", "user:bob")
    await store.drain()
    first = [h.fact.id for h in await store.recall("where is the spare key flowerpot", ["user:alice"], bump=False)]
    assert first[:2] == [new, old]  # a tie on text: newest first
    for _ in range(8):
        store.note_access([old])
    await store._flush_access()
    assert (await store.get(old)).access_count == 8
    shown = [h.fact.id for h in await store.recall("where is the spare key flowerpot", ["user:alice"], bump=False)]
    assert shown[:2] == [old, new]
    # Switched off (the ablation), the order is the text order again.
    store.recaller.off = frozenset({"access"})
    assert [h.fact.id for h in await store.recall("spare key flowerpot", ["user:alice"], bump=False)][:2] == [new, old]
    store.recaller.off = frozenset()
    # Bounded and decaying: saturates at ACCESS_SATURATION, halves per half-life.
    import numpy as np

    p = R._access_prior(
        np.array([0.0, 1.0, 8.0, 1000.0, 8.0]), np.array([np.inf, 0.0, 0.0, 0.0, R.ACCESS_HALF_LIFE_DAYS])
    )
    assert p[0] == 0 and 0 < p[1] < p[2] == 1.0 == p[3] and abs(p[4] - 0.5) < 1e-9
    # The SQL side measures days since the last access on the store's clock.
    clock.advance(timedelta(days=R.ACCESS_HALF_LIFE_DAYS))
    now = clock().replace(tzinfo=None)
    rows = (
        await store.engines.run_read(
            store.recaller._hydrate, [old, new], ["user:alice"], ["active"], None, [], "sqlite", now
        )
        if store.dialect == "sqlite"
        else None
    )
    if rows is not None:
        prior = dict(zip(rows[0].tolist(), rows[-1].tolist(), strict=True))
        assert abs(prior[old] - 0.5) < 0.01 and prior[new] == 0.0
    await assert_private(store, "spare key flowerpot", "alice", "user:bob")


async def test_chat_counts_only_the_memories_it_shows(store):
    engine = ChatEngine(store)
    try:

        def m(text: str, user: str = "alice") -> IncomingMessage:
            return IncomingMessage(user_id=user, display_name=user.title(), channel_id="general", text=text)

        for i in range(14):
            await engine.handle(m(f"!remember parcel locker {i} code is {1000 + i}"))
        await engine.handle(m("!remember the parcel of bob is secret", user="bob"))
        await engine.drain()
        await store._flush_access()
        before = {f.id: f.access_count for f in await store.list_facts(["user:alice"], limit=100)}
        reply = await engine.handle(m("!recall parcel locker code"))
        await store._flush_access()
        after = {f.id: f.access_count for f in await store.list_facts(["user:alice"], limit=100)}
        listed = {int(x) for x in __import__("re").findall(r"\[#(\d+)\]", reply.text)}
        assert len(listed) == 10  # one page of the 14
        for fid, n in after.items():
            assert n - before[fid] == (1 if fid in listed else 0), (fid, before[fid], n)
        assert "secret" not in reply.text
    finally:
        await engine.aclose()
