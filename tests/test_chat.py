"""The chat engine end to end: tell a fact, recall it; commands; privacy; bad input."""

from __future__ import annotations

import pytest

from clara.chat import MAX_MESSAGE_CHARS, ChatEngine, IncomingMessage


def msg(text: str, user: str = "alice", channel: str = "general", dm: bool = False) -> IncomingMessage:
    return IncomingMessage(user_id=user, display_name=user.title(), channel_id=channel, text=text, is_dm=dm)


@pytest.fixture
async def engine(store):
    e = ChatEngine(store)
    yield e
    await e.aclose()


async def test_tell_a_fact_then_recall_it(engine, store):
    told = await engine.handle(msg("My sister Anna is moving to Porto in June"))
    assert not told.error and told.message_id
    await engine.drain()
    reply = await engine.handle(msg("!recall where is my sister moving"))
    assert "Anna is moving to Porto" in reply.text and reply.text.splitlines()[1].startswith("1. ")
    assert "#general" in reply.text
    # The next normal message brings it back too.
    reply = await engine.handle(msg("I need to plan a trip to Porto"))
    assert "Anna is moving to Porto" in reply.text and "No language model" in reply.text


async def test_remember_is_private_across_channels_and_users(engine, store):
    r = await engine.handle(msg("!remember my locker code is 7731"))
    assert "remember" in r.text and r.stored_fact_id
    await engine.drain()
    # Same user, another channel and a DM: found.
    assert "7731" in (await engine.handle(msg("!recall locker code", channel="random"))).text
    assert "7731" in (await engine.handle(msg("!recall locker code", channel="dm-alice", dm=True))).text
    # Another user, same channel: never.
    for query in ("!recall locker code", "!recall 7731", "!memories", "what is the locker code"):
        assert "7731" not in (await engine.handle(msg(query, user="bob"))).text
    assert "user:alice" not in await store.readable_scopes("bob")


async def test_channel_messages_stay_in_their_channel(engine, store):
    await engine.handle(msg("The staging server password rotates on Mondays", channel="ops"))
    await engine.drain()
    assert "rotates" in (await engine.handle(msg("!recall staging server", channel="ops"))).text
    assert "rotates" not in (await engine.handle(msg("!recall staging server", channel="random"))).text
    assert "rotates" not in (await engine.handle(msg("!recall staging server", channel="d", dm=True))).text


async def test_memories_and_forget_by_number_and_id(engine, store):
    await engine.handle(msg("!remember I like green tea"))
    second = await engine.handle(msg("!remember I dislike coffee"))
    listing = await engine.handle(msg("!memories"))
    assert listing.text.splitlines()[1].startswith("1. I dislike coffee")
    gone = await engine.handle(msg("!forget 1"))
    assert "Forgotten" in gone.text and "coffee" in gone.text
    assert "coffee" not in (await engine.handle(msg("!memories"))).text
    again = await engine.handle(msg(f"!forget #{second.stored_fact_id}"))
    assert again.error or "already" in again.text
    # Bob cannot forget Alice's memory by id.
    tea = (await store.list_facts(["user:alice"]))[0]
    refused = await engine.handle(msg(f"!forget #{tea.id}", user="bob"))
    assert refused.error and (await store.get(tea.id)).status == "active"


@pytest.mark.parametrize(
    "text, expect",
    [
        ("", "empty"),
        ("   ", "empty"),
        ("x" * (MAX_MESSAGE_CHARS + 1), "split it up"),
        ("x" * 100_000, "split it up"),
        ("bin\x00ary", "binary"),
        ("!remember", "Usage"),
        ("!recall", "Usage"),
        ("!forget", "Usage"),
        ("!forget abc", "Usage"),
        ("!forget 99", "no item 99"),
        ("!forget #notanumber", "Usage"),
        ("!memories lots", "Usage"),
        ("!frobnicate now", "Unknown command"),
    ],
)
async def test_bad_input_gets_clear_error_and_stores_nothing(engine, store, text, expect):
    reply = await engine.handle(msg(text))
    assert reply.error and expect in reply.text
    assert await store.count_facts(None, ("active", "superseded", "deleted")) == 0


async def test_sql_ish_message_is_just_text(engine, store):
    r = await engine.handle(msg("'; DROP TABLE facts; -- my favourite SQL joke"))
    assert not r.error
    await engine.drain()
    assert "DROP TABLE" in (await engine.handle(msg("!recall SQL joke"))).text


async def test_help(engine):
    assert "!remember" in (await engine.handle(msg("!help"))).text


async def test_memories_lists_own_facts_even_in_a_busy_channel(engine, store):
    await engine.handle(msg("I grow chillies on my balcony"))
    await engine.drain()
    await store.ensure_scope("channel:general", "channel", members=["bob"])
    await store.add_many([{"content": f"bob: message {i}", "created_by": "bob"} for i in range(300)], "channel:general")
    listing = (await engine.handle(msg("!memories"))).text
    assert "chillies" in listing and "bob: message" not in listing
    assert "chillies" not in (await engine.handle(msg("!memories", user="bob"))).text


async def test_paraphrase_is_recalled_without_shared_words(engine, store):
    await engine.handle(msg("!remember I am terrified of spiders"))
    await engine.drain()
    reply = await engine.handle(msg("!recall arachnophobia phobia of eight-legged creatures"))
    assert "spiders" in reply.text
    assert "spiders" not in (await engine.handle(msg("!recall arachnophobia phobia", user="bob"))).text


async def test_first_message_is_recalled_immediately_in_a_fresh_store(engine, store):
    """One fact, not yet embedded (bm25 is ~0 with a single document): still recalled."""
    store.indexer.stop()
    await engine.handle(msg("I love sailing", user="solo", channel="fresh"))
    await engine.drain(index=False)  # the memory write, not the embedding
    reply = await engine.handle(msg("!recall sailing", user="solo", channel="fresh"))
    assert "I love sailing" in reply.text
    assert "sailing" not in (await engine.handle(msg("!recall sailing", user="other", channel="elsewhere"))).text


async def test_a_message_with_only_a_text_attachment_is_stored_and_answered(engine, store):
    from clara.messages import Attachment

    m = msg("")
    m.attachments = [Attachment("todo.txt", "buy oat milk and stamps")]
    reply = await engine.handle(m)
    assert not reply.error and reply.message_id, reply.text
    turn = await store.sessions.message(reply.message_id)
    assert "[attachment todo.txt]" in turn.content and "oat milk" in turn.content
