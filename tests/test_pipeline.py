"""The conversational pipeline with a real LLM client against the stub peer on 127.0.0.1:
golden two-session conversation (prompt contents, carried-over summary, supersede, privacy),
streaming, tools, tiers, provider failures, concurrency and restart mid-extraction."""

from __future__ import annotations

import asyncio
import collections
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from clara.chat import ChatEngine, IncomingMessage
from clara.llm import OpenAICompatProvider
from clara.settings import Settings
from storage import FactStore
from storage.clock import ManualClock
from tests.conftest import assert_private, run_then_kill
from tests.llm_stub import LLMStub, Reply, json_reply, tool_call

HERE = Path(__file__).parent
T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


@pytest.fixture
def clock() -> ManualClock:
    """The store's clock for this module: pinned at T0, moving with real elapsed time."""
    return ManualClock(T0, ticking=True)


# What the "model" extracts from each user sentence (keyed by a phrase in it).
EXTRACTIONS = {
    "live in Lisbon": [("Alice lives in Lisbon", "biographical", "Alice", ["Alice", "lives_in", "Lisbon"], "Lisbon")],
    "work as a nurse": [("Alice works as a nurse", "biographical", "Alice", None, None)],
    "moved to Porto": [("Alice lives in Porto", "biographical", "Alice", ["Alice", "lives_in", "Porto"], "Porto")],
    "purple elephant": [("Bob's password hint is purple elephant", "note", "Bob", None, None)],
    "green tea": [("{who} likes green tea", "preference", "{who}", None, None)],
}


def _prompt_text(body: dict) -> str:
    parts = []
    for m in body.get("messages", []):
        c = m.get("content")
        parts.append(c if isinstance(c, str) else json.dumps(c))
    return "\n".join(parts)


class Peer:
    """Plays the model. Chat requests (those offering tools) take `chat` replies first; extraction
    requests (JSON mode) are answered from EXTRACTIONS unless `extract` replies are queued. Keyed
    by request type, because the background worker's requests interleave with the chat's."""

    def __init__(self):
        self.chat: collections.deque = collections.deque()
        self.extract: collections.deque = collections.deque()
        self.low: collections.deque = collections.deque()  # low-tier chat answers (no tools offered)

    def __call__(self, body: dict):
        if "Classify how demanding" in _prompt_text(body):
            asked = body["messages"][-1]["content"]
            nxt = asked.split("Next message:\n")[-1]
            # "prove" makes a message demanding; a short reply inherits it from the recent conversation.
            high = "prove" in nxt or ("prove" in asked and len(nxt.split()) <= 2)
            return Reply(text="high" if high else "banana")
        if body.get("tools") and self.chat:
            return self.chat.popleft()
        if self.low and "[[NEEDS_TOOLS]]" in _prompt_text(body):
            return self.low.popleft()
        if body.get("response_format") and self.extract:
            return self.extract.popleft()
        return responder(body)


def responder(body: dict):
    """JSON extraction for json-mode requests, a summary for summary requests, otherwise a short
    chat answer."""
    prompt = _prompt_text(body)
    if body.get("response_format", {}).get("type") == "json_object":
        user = body["messages"][-1]["content"] if body["messages"][-1]["role"] == "user" else prompt
        # The speaker comes from the request's user turn (the system prompt's examples name people too).
        who = re.search(r"\b(Alice|Bob|U\d+)\b", user)
        facts = []
        for phrase, items in EXTRACTIONS.items():
            if phrase not in user:
                continue
            for content, kind, subject, rel, place in items:
                content, subject = (
                    content.format(who=who.group(1) if who else "someone"),
                    subject.format(who=who.group(1) if who else "someone"),
                )
                fact = {
                    "action": "ADD",
                    "target_id": None,
                    "content": content,
                    "kind": kind,
                    "subject": subject,
                    "importance": 7,
                    "entities": [{"name": subject, "type": "person"}],
                    "relation": rel,
                    "event_date": None,
                }
                if place:
                    fact["entities"].append({"name": place, "type": "place"})
                old = re.search(r"(\d+)\D{0,12}Alice lives in Lisbon", prompt)
                if place == "Porto" and old:
                    fact.update(action="UPDATE", target_id=int(old.group(1)))
                facts.append(fact)
        return json_reply({"facts": facts})
    if "summar" in prompt.lower() and not body.get("tools"):
        return Reply(text="Alice said she lives in Lisbon and works as a nurse.")
    return Reply(text="Happy to help with that!")


@pytest.fixture
def peer():
    return Peer()


@pytest.fixture
def stub(peer):
    with LLMStub(responder=peer) as s:
        yield s


@pytest.fixture
def settings(tmp_path):
    return Settings(CLARA_DATA_DIR=tmp_path, session_idle_minutes=30)


def llm_for(stub, **kw):
    return OpenAICompatProvider(
        base_url=stub.base_url,
        api_key="test-key",
        model="base-model",
        tier_models={"high": "big-model", "mid": "mid-model", "low": "small-model"},
        timeout=kw.pop("timeout", 10),
        max_retries=kw.pop("max_retries", 1),
        retry_backoff=0.01,
        **kw,
    )


@pytest.fixture
async def engine(store, stub, settings):
    llm = llm_for(stub)
    e = ChatEngine(store, llm, settings=settings)
    yield e
    await e.aclose()
    await llm.aclose()


def m(text, user="alice", at=None, dm=True, channel=None):
    return IncomingMessage(
        user_id=user,
        display_name=user.title(),
        channel_id=channel or f"dm-{user}",
        text=text,
        is_dm=dm,
        timestamp=at or datetime.now(UTC),
    )


def chat_requests(stub):
    return [r for r in stub.requests if r.get("tools")]


async def test_golden_conversation_across_two_sessions(engine, store, stub):
    # Session 1.
    r = await engine.handle(m("Hi! I live in Lisbon and I work as a nurse.", at=T0))
    assert r.text == "Happy to help with that!" and not r.error
    await engine.handle(m("My password hint is purple elephant", user="bob", at=T0))
    await engine.drain()
    active = await store.list_facts(["user:alice"], kinds=("biographical",))
    assert {f.content for f in active} == {"Alice lives in Lisbon", "Alice works as a nurse"}
    # Extraction saw only the user's words, never the assistant's reply.
    extraction = [r for r in stub.requests if r.get("response_format")]
    assert extraction and all("Happy to help" not in _prompt_text(r) for r in extraction)

    # Session 2, after the idle timeout: the contradiction supersedes the old fact.
    await engine.handle(m("Big news: I moved to Porto!", at=T0 + timedelta(hours=2)))
    await engine.drain()
    stub.requests.clear()
    await engine.handle(m("So where do I live now, and what's my job?", at=T0 + timedelta(hours=2, minutes=5)))
    prompt = _prompt_text(chat_requests(stub)[-1])
    assert "Alice lives in Porto" in prompt and "Alice works as a nurse" in prompt
    assert "Alice lives in Lisbon [" not in prompt  # the superseded fact is not offered as current
    assert "Alice said she lives in Lisbon and works as a nurse." in prompt  # session-1 summary carried over
    assert "purple elephant" not in prompt  # user B's facts never reach user A's prompt
    old = await store.list_facts(["user:alice"], statuses=("superseded",))
    assert [f.content for f in old] == ["Alice lives in Lisbon"]
    new = await store.get(old[0].superseded_by_id)
    assert new.content == "Alice lives in Porto" and new.status == "active"
    await engine.drain()
    hits = await store.recall("where does alice live", ["user:alice"], k=10)
    places = [h.fact.content for h in hits if "Porto" in h.fact.content or "Lisbon" in h.fact.content]
    assert places and "Porto" in places[0]
    await assert_private(store, "password hint purple elephant", "alice", "user:bob")


async def test_streaming_deltas_and_tier_prefix(engine, stub, peer):
    peer.chat.append(Reply(text="one two three four five six"))
    deltas: list[str] = []

    async def on_text(d):
        deltas.append(d)

    r = await engine.handle(m("!high tell me a story", at=T0), on_text=on_text)
    assert len(deltas) > 2 and "".join(deltas).strip() == r.text == "one two three four five six"
    assert chat_requests(stub)[-1]["model"] == "big-model"
    assert chat_requests(stub)[-1]["messages"][-1]["content"] == "tell me a story"
    await engine.handle(m("plain message", at=T0 + timedelta(minutes=1)))
    assert chat_requests(stub)[-1]["model"] == "base-model"


async def test_auto_tier_selection(store, stub, settings):
    llm = llm_for(stub)
    engine = ChatEngine(store, llm, settings=settings, auto_tier=True)
    try:
        await engine.handle(m("please prove that sqrt(2) is irrational", at=T0))
        assert chat_requests(stub)[-1]["model"] == "big-model"
        await engine.handle(m("hi there, how is your day?", at=T0 + timedelta(minutes=1)))  # unusable → default
        assert chat_requests(stub)[-1]["model"] == "base-model"
    finally:
        await engine.aclose()
        await llm.aclose()


async def test_model_uses_recall_tool_within_the_callers_scopes(engine, store, stub, peer):
    await engine.handle(m("!remember my locker code is 7731", at=T0))
    await engine.handle(m("!remember my safe code is 1234", user="bob", at=T0))
    await engine.drain()
    peer.chat.extend([tool_call("recall", {"query": "code"}), Reply(text="Your locker code is 7731.")])
    r = await engine.handle(m("what's my code?", at=T0 + timedelta(minutes=1)))
    assert r.text == "Your locker code is 7731."
    tool_result = [msg for msg in chat_requests(stub)[-1]["messages"] if msg["role"] == "tool"]
    assert tool_result and "7731" in tool_result[0]["content"] and "1234" not in tool_result[0]["content"]


async def test_provider_errors_apologise_and_keep_the_message(store, stub, peer, settings):
    llm = llm_for(stub, timeout=0.5, max_retries=1)
    engine = ChatEngine(store, llm, settings=settings)
    # Extraction gets garbage throughout: the offline path takes over, the raw message is never lost.
    peer.extract.extend([Reply(raw="{not json"), Reply(text="still not json")] * 4)
    try:
        peer.chat.extend([Reply(status=500), Reply(status=500)])
        r = await engine.handle(m("I adopted a cat named Miso", at=T0))
        assert r.error and "Sorry" in r.text and "saved" in r.text
        peer.chat.extend([Reply(delay=2.0, text="too late"), Reply(delay=2.0, text="too late")])
        r = await engine.handle(m("Miso is a tabby", at=T0 + timedelta(minutes=1)))
        assert r.error and "Sorry" in r.text
        # Extraction gets garbage: the offline path takes over, the raw message is never lost.
        await engine.drain()
        contents = [f.content for f in await store.list_facts(["user:alice"], limit=100)]
        assert any("Miso" in c and "cat" in c for c in contents)
        assert any("tabby" in c for c in contents)
    finally:
        await engine.aclose()
        await llm.aclose()


async def test_concurrent_users_every_message_once_no_duplicate_facts(engine, store, stub):
    users = [f"u{i}" for i in range(20)]

    async def talk(u):
        replies = []
        for j in range(10):
            text = "I like green tea" if j % 3 == 0 else f"note {j} from {u} about the weather"
            replies.append(
                await engine.handle(m(text, user=u, dm=False, channel="lobby", at=T0 + timedelta(seconds=j)))
            )
        return replies

    results = await asyncio.gather(*(talk(u) for u in users))
    assert all(not r.error and r.text for rs in results for r in rs)  # every reply delivered
    await engine.drain(timeout=300)
    for u in users:
        observations = await store.list_facts(["channel:lobby"], created_by=u, kinds=("observation",), limit=100)
        assert len(observations) == 10  # every message stored once
        assert len({tuple(f.source_message_ids) for f in observations}) == 10
        prefs = await store.list_facts([f"user:{u}"], kinds=("preference",))
        assert [f.content for f in prefs] == [f"{u.title()} likes green tea"]  # said 4 times, stored once
    assert await store.jobs.count(("pending", "running", "failed")) == 0


def _chat_then_kill(store_config, after: int) -> list[int]:
    args = [str(store_config.data_dir), store_config.database_url or "", "30"]
    return run_then_kill("crash_chat.py", args, after, now=store_config.clock())


async def test_restart_mid_extraction_completes_queued_writes(store_config, embedder, settings):
    acked = await asyncio.to_thread(_chat_then_kill, store_config, 20)
    assert len(acked) >= 20
    store = await FactStore.open(store_config, embedder=embedder)
    engine = ChatEngine(store, settings=settings)
    try:
        await asyncio.sleep(2.1)  # the dead worker's leases run out
        await engine.drain(timeout=120)
        facts = await store.list_facts(["channel:crash"], kinds=("observation",), limit=500)
        stored = {mid for f in facts for mid in f.source_message_ids}
        assert set(acked) <= stored
        assert len(facts) == len(stored)  # no message extracted twice
        hits = await store.recall("kiwi plant balcony", ["channel:crash"], k=5)
        assert hits and all(h.fact.scope_id == "channel:crash" for h in hits)
    finally:
        await engine.aclose()
        await store.aclose()


def _model_requests(stub, model):
    return [r for r in stub.requests if r.get("model") == model and not r.get("response_format")]


async def test_seed_tier_aliases(engine, stub):
    for alias, model in [("!opus", "big-model"), ("!sonnet", "mid-model"), ("!haiku", "small-model")]:
        stub.requests.clear()
        r = await engine.handle(m(f"{alias} say hi", at=T0))
        assert not r.error and "Unknown command" not in r.text
        chat = [q for q in stub.requests if not q.get("response_format")]  # not the background extraction
        assert chat[0]["model"] == model
    r = await engine.handle(m("!fast", at=T0))
    assert r.error and "Usage: !fast" in r.text


async def test_low_tier_answers_chat_without_tools_and_escalates_tool_turns(engine, stub, peer):
    # Plain chat on the low tier: one request, low model, no tools.
    stub.requests.clear()
    deltas: list[str] = []

    async def on_text(d):
        deltas.append(d)

    r = await engine.handle(m("!low how are you today?", at=T0), on_text=on_text)
    chat = [q for q in stub.requests if q.get("tools") or "[[NEEDS_TOOLS]]" in _prompt_text(q)]
    assert [q["model"] for q in chat] == ["small-model"] and "tools" not in chat[0]
    assert "[[NEEDS_TOOLS]]" in chat[0]["messages"][0]["content"]  # the low model can ask for tools
    assert r.text == "Happy to help with that!" == "".join(deltas).strip()

    # The low model asks for a tool: the turn re-runs on the base model with tools (and runs them).
    stub.requests.clear()
    deltas.clear()
    peer.low.append(Reply(text="[[NEEDS_TOOLS]]"))
    peer.chat.extend([tool_call("remember", {"text": "my bike is blue"}), Reply(text="Saved: your bike is blue.")])
    r = await engine.handle(m("!haiku note down: my bike is blue", at=T0 + timedelta(minutes=1)), on_text=on_text)
    chat = [q for q in stub.requests if q.get("tools") or "[[NEEDS_TOOLS]]" in _prompt_text(q)]
    assert [q["model"] for q in chat] == ["small-model", "base-model", "base-model"]
    assert chat[1]["tools"] and "[[NEEDS_TOOLS]]" not in chat[1]["messages"][0]["content"]
    assert r.text == "Saved: your bike is blue." == "".join(deltas).strip()  # the refusal never showed
    assert any(q["role"] == "tool" for q in chat[2]["messages"])

    # A message that clearly needs a tool skips the low attempt.
    stub.requests.clear()
    peer.chat.append(Reply(text="I'll remind you."))
    await engine.handle(m("!fast remind me to call mum in 1 hour", at=T0 + timedelta(minutes=2)))
    chat = [q for q in stub.requests if q.get("tools") or "[[NEEDS_TOOLS]]" in _prompt_text(q)]
    assert [q["model"] for q in chat] == ["base-model"] and chat[0]["tools"]


async def test_auto_tier_selection_sees_recent_messages(store, stub, settings, peer):
    llm = llm_for(stub)
    engine = ChatEngine(store, llm, settings=settings, auto_tier=True)
    try:
        await engine.handle(m("please prove that sqrt(2) is irrational", at=T0))
        await engine.handle(m("yes", at=T0 + timedelta(minutes=1)))
        classify = [q for q in stub.requests if "Classify how demanding" in _prompt_text(q)]
        last = classify[-1]["messages"][-1]["content"]
        assert "Recent conversation:" in last and "prove that sqrt(2)" in last and last.endswith("Next message:\nyes")
        # "prove" in the context keeps the short reply on the high tier.
        assert chat_requests(stub)[-1]["model"] == "big-model"
        for i in range(6):
            await engine.handle(m(f"message number {i}", at=T0 + timedelta(minutes=2 + i)))
        last = [q for q in stub.requests if "Classify how demanding" in _prompt_text(q)][-1]["messages"][-1]["content"]
        history = last.split("\n\nNext message:")[0].splitlines()[1:]
        assert len(history) == 4  # at most 4 recent messages
    finally:
        await engine.aclose()
        await llm.aclose()
