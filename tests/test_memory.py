"""MemoryManager end to end without an LLM: sessions (idle roll-over, summary, carry-over,
restart), the offline write path (typed facts, supersede, relations, aliases), and the commands
added with it (!about, !project, !summary, !context, !export, !forgetme)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from clara.chat import ChatEngine, IncomingMessage
from clara.settings import Settings
from storage import FactStore
from storage.clock import ManualClock
from tests.conftest import assert_private

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


@pytest.fixture
def clock() -> ManualClock:
    """The store's clock for this module: pinned at T0, moving with real elapsed time."""
    return ManualClock(T0, ticking=True)


def msg(text, user="alice", channel="general", dm=False, at=None, admin=False) -> IncomingMessage:
    return IncomingMessage(
        user_id=user,
        display_name=user.title(),
        channel_id=channel,
        text=text,
        is_dm=dm,
        timestamp=at or datetime.now(UTC),
        level=2 if admin else 0,
    )


@pytest.fixture
def settings(tmp_path):
    return Settings(CLARA_DATA_DIR=tmp_path, session_idle_minutes=30, carryover_messages=4)


@pytest.fixture
async def engine(store, settings):
    e = ChatEngine(store, settings=settings)
    yield e
    await e.aclose()


async def test_idle_timeout_rolls_the_session_and_carries_summary_and_turns_over(engine, store):
    for i, text in enumerate(
        [
            "I adopted a greyhound called Biscuit",
            "She loves the beach at Matosinhos",
            "We go there every Sunday morning",
        ]
    ):
        r = await engine.handle(msg(text, dm=True, channel="dm", at=T0 + timedelta(minutes=i)))
        assert not r.error
    first = await store.sessions.open_session("alice", "dm")
    assert first.message_count == 6  # 3 turns + 3 replies
    # 40 minutes later: a new session, the old one closed and summarised exactly once.
    later = T0 + timedelta(minutes=45)
    await engine.handle(msg("Any plans for this weekend?", dm=True, channel="dm", at=later))
    second = await store.sessions.open_session("alice", "dm")
    assert second.id != first.id and second.previous_id == first.id
    await engine.drain()
    closed = await store.sessions.get(first.id)
    assert closed.status == "closed" and closed.summary_fact_id
    summary = (await store.get_many([closed.summary_fact_id], scopes=["user:alice"]))[0]
    assert summary.kind == "summary" and "Biscuit" in summary.content
    # The new session's context holds the previous summary and the last turns of session 1.
    ctx = await engine.memory.context(
        msg("remind me", dm=True, channel="dm", at=later),
        "remind me",
        await engine.memory.where(msg("x", dm=True, channel="dm")),
        None,
    )
    assert summary.id in ctx.fact_ids()
    recent = "\n".join(i.text for i in ctx.block("recent_messages").items)
    assert "every Sunday morning" in recent and "Any plans" in recent
    # Bob's context never shows Alice's private summary.
    await engine.handle(msg("hello there", user="bob", dm=True, channel="dm-bob", at=later))
    bob_ctx = await engine.memory.context(
        msg("Biscuit beach", user="bob", dm=True, channel="dm-bob"),
        "Biscuit beach",
        await engine.memory.where(msg("x", user="bob", dm=True, channel="dm-bob")),
        None,
    )
    bob_prompt = "\n".join(m.content for m in bob_ctx.messages)
    assert "greyhound" not in bob_prompt and "Matosinhos" not in bob_prompt
    await assert_private(store, "greyhound Biscuit beach", "bob", "user:alice")


async def test_sweep_closes_idle_sessions_and_restart_does_not_double_them(store_config, embedder, settings):
    store = await FactStore.open(store_config, embedder=embedder)
    engine = ChatEngine(store, settings=settings)
    await engine.handle(msg("first message", at=T0))
    sid = (await store.sessions.open_session("alice", "general")).id
    await engine.aclose()
    await store.aclose()
    # "Restart": a new process-like instance on the same data joins the same open session.
    store = await FactStore.open(store_config, embedder=embedder)
    engine = ChatEngine(store, settings=settings)
    try:
        await engine.handle(msg("second message", at=T0 + timedelta(minutes=10)))
        assert (await store.sessions.open_session("alice", "general")).id == sid
        assert len(await store.sessions.list_sessions("alice")) == 1
        closed = await engine.memory.sweep(T0 + timedelta(minutes=50))
        assert [s.id for s in closed] == [sid]
        assert await engine.memory.sweep(T0 + timedelta(minutes=55)) == []  # closed once
        await engine.drain()
        assert (await store.sessions.get(sid)).summary_fact_id
        assert await store.sessions.open_session("alice", "general") is None
    finally:
        await engine.aclose()
        await store.aclose()


async def test_moving_supersedes_residence_and_relation(engine, store):
    await engine.handle(msg("I live in Lisbon", dm=True, channel="dm", at=T0))
    await engine.drain()
    await engine.handle(msg("I moved to Porto last week", dm=True, channel="dm", at=T0 + timedelta(days=30)))
    await engine.drain()
    hits = await store.recall("where does Alice live", ["user:alice"], k=5)
    typed = [h.fact for h in hits if h.fact.kind == "biographical"]
    assert typed and "Porto" in typed[0].content
    old = await store.list_facts(["user:alice"], statuses=("superseded",))
    assert any("Lisbon" in f.content for f in old)
    about = (await engine.handle(msg("!about Alice", dm=True, channel="dm"))).text
    assert "lives in Porto" in about
    assert "lives in Lisbon until" in about
    await assert_private(store, "where does alice live Porto", "bob", "user:alice")


async def test_entities_aliases_and_about(engine, store):
    await engine.handle(msg("My sister Anna lives in Lisbon", dm=True, channel="dm", at=T0))
    await engine.drain()
    about = (await engine.handle(msg("!about my sister", dm=True, channel="dm"))).text
    assert "Anna" in about and "person" in about
    # Later, "my sister" alone resolves to Anna: the new fact is linked to her entity.
    await engine.handle(msg("My sister got a new job at Globex", dm=True, channel="dm", at=T0 + timedelta(hours=1)))
    await engine.drain()
    assert "new job at Globex" in (await engine.handle(msg("!about Anna", dm=True, channel="dm"))).text
    assert "Anna" in (await engine.handle(msg("!about Anna", dm=True, channel="dm"))).text
    # Bob knows nothing about Alice's sister.
    refused = (await engine.handle(msg("!about Anna", user="bob", dm=True, channel="dm-b"))).text
    assert "don't know anything" in refused
    assert (await engine.handle(msg("!about", dm=True, channel="dm"))).error


async def test_project_routes_decisions_and_is_shared_in_the_channel(engine, store):
    assert "No active project" in (await engine.handle(msg("!project", channel="dev"))).text
    assert "now “Falcon”" in (await engine.handle(msg("!project Falcon", channel="dev"))).text
    assert (await engine.handle(msg("!project ../../etc", channel="dev"))).error
    await engine.handle(msg("We decided to use PostgreSQL for the ledger", channel="dev", at=T0))
    await engine.drain()
    project_facts = await store.list_facts(["project:falcon"])
    assert any("PostgreSQL" in f.content and f.kind == "decision" for f in project_facts)
    # Bob in the same channel sees the project's memories; Carol elsewhere does not.
    ctx_bob = await engine.memory.context(
        msg("what database for the ledger", user="bob", channel="dev"),
        "what database for the ledger",
        await engine.memory.where(msg("x", user="bob", channel="dev")),
        None,
    )
    assert any("PostgreSQL" in i.text for i in ctx_bob.block("project_memories").items)
    await assert_private(store, "PostgreSQL ledger", "carol", "project:falcon")
    assert "cleared" in (await engine.handle(msg("!project none", channel="dev"))).text


async def test_context_command_is_admin_only_and_shows_token_counts(engine, store):
    await engine.handle(msg("I prefer tea over coffee", at=T0))
    await engine.drain()
    assert (await engine.handle(msg("!context tea"))).error
    shown = (await engine.handle(msg("!context what do I drink", admin=True))).text
    assert "tokens" in shown and "Persona" in shown and "Recent messages" in shown
    assert "tea" in shown


async def test_summary_command(engine):
    assert "nothing to summarise" in (await engine.handle(msg("!summary", channel="empty"))).text
    await engine.handle(msg("The release is planned for Friday the 13th", channel="ops", at=T0))
    out = (await engine.handle(msg("!summary", channel="ops"))).text
    assert "release" in out


async def test_export_and_forgetme(engine, store):
    await engine.handle(msg("!remember my bike lock code is 4412", channel="c1"))
    await engine.handle(msg("I work at Acme Robotics", channel="c1", at=T0))
    await engine.handle(msg("I like hiking", user="bob", channel="c1", at=T0))
    await engine.drain()
    await engine.memory.sweep(T0 + timedelta(hours=2))  # sessions close: a channel summary quoting Alice
    await engine.drain()
    assert "Acme" in (await store.find_slug("channel:c1", "channel-summary")).content
    exported = await engine.handle(msg("!export", channel="c1"))
    name, blob = exported.files[0]
    data = json.loads(blob)
    contents = [f["content"] for f in data["facts"]]
    assert name.endswith(".json") and any("4412" in c for c in contents) and any("Acme" in c for c in contents)
    assert not any("hiking" in c for c in contents)  # only the caller's memories
    # Confirmation is required; a wrong code erases nothing.
    ask = (await engine.handle(msg("!forgetme", channel="c1"))).text
    code = ask.split("`!forgetme ")[1][:6]
    assert (await engine.handle(msg("!forgetme 000000" if code != "000000" else "!forgetme 111111"))).error
    assert (await engine.handle(msg(f"!forgetme {code}", channel="c1"))).error  # the wrong try used it up
    code = (await engine.handle(msg("!forgetme", channel="c1"))).text.split("`!forgetme ")[1][:6]
    done = await engine.handle(msg(f"!forgetme {code}", channel="c1"))
    assert "erased" in done.text and not done.error
    await engine.drain()
    for q in ("bike lock code", "Acme Robotics", "work"):
        for hit in await store.recall(q, await store.readable_scopes("bob") + ["channel:c1"], k=20):
            assert "Alice" not in hit.fact.content and "4412" not in hit.fact.content
    assert await store.sessions.list_sessions("alice") == []
    summary = await store.find_slug("channel:c1", "channel-summary")
    assert "Acme" not in summary.content and "4412" not in summary.content and "hiking" in summary.content
    for entry in await store.history(summary.id):
        assert "Acme" not in (entry.old_content or "") + (entry.new_content or "")
    assert await store.jobs.count(("pending", "running", "failed")) == 0
    assert "hiking" in (await engine.handle(msg("!recall hiking", user="bob", channel="c1"))).text
