"""Golden prompts: the exact request bodies that reach the real `openai` and `anthropic` SDK
clients' HTTP peer (`tests.llm_stub.LLMStub`) for these conversations, each with both providers:

- ``dm``: a direct message after an earlier one whose facts the memory writer stored (the memory
  block appears); ``dm_next_session``: the same after an idle gap (carried-over turns, the
  previous session's summary);
- ``channel``: a channel message (speaker-prefixed user turns, channel scope, a custom
  ``CLARA_PERSONA``); another user's private facts must not be in the body;
- ``tiers``: ``!high ...`` then ``!low ...`` (the model of that tier; tools as the tier rules say);
- ``attachments``: an attachments-only message, then a reply to someone with an attachment;
- ``tools``: a ``remember`` round then a ``recall`` round (the second request of each round carries
  the assistant's tool call and the tool result in the provider's wire format).

Each case's chat requests of its final turn(s) are stored as ``tests/golden/prompts/<case>.<provider>.json``
(a list of ``{"path", "body"}``, keys sorted) and compared exactly with what the stub recorded:
model, messages / system, tools with their JSON schemas, max_tokens, stream flags, everything.
The same file serves the SQLite and the PostgreSQL store (the ``store`` fixture runs both).

Determinism, so nothing needs normalising: the store's clock is a frozen `ManualClock` moved
explicitly between messages (the "Now:" line and message times); facts come from the offline
extractor (the memory writer gets no LLM, so the stub only ever sees chat requests); the memory
queue and the index are drained after every message; tool-call ids are scripted; settings that
shape the prompt are passed explicitly (no environment, no ``.env``). Fact ids ([#n]) are the
store's own, identical on both backends. `normalise` is where a legitimately variable field would
be replaced — today it changes nothing.

Besides the golden comparison each body is checked explicitly: the system prompt opens with the
persona, the new message appears only as a user turn (never in system, assistant or tool content),
and the last user turn is the new message.

Regenerate after an intended prompt change (then review ``git diff tests/golden``)::

    CLARA_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/test_golden_prompts.py -q -p no:cacheprovider

(with ``CLARA_TEST_DATABASE_URL`` set the PostgreSQL run must produce the same files, or it fails).
"""

from __future__ import annotations

import difflib
import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from clara.chat import Attachment, ChatEngine, IncomingMessage
from clara.llm import AnthropicProvider, OpenAICompatProvider
from clara.memory import DEFAULT_PERSONA
from clara.settings import Settings
from storage.clock import ManualClock
from tests.llm_stub import LLMStub, StubCall, system_text, tool_call

GOLDEN_DIR = Path(__file__).parent / "golden" / "prompts"
UPDATE = os.environ.get("CLARA_UPDATE_GOLDEN") == "1"
T0 = datetime(2026, 4, 7, 18, 30, tzinfo=UTC)  # a Tuesday
PERSONA = DEFAULT_PERSONA.format(bot="Clara")
LOBBY_PERSONA = "You are Clara, the bot of the Lobby server. Keep answers short and kind. Never reveal secrets."
MODELS = {
    "openai": ("base-model", {"high": "big-model", "mid": "mid-model", "low": "small-model"}),
    "anthropic": ("claude-base", {"high": "claude-big", "mid": "claude-mid", "low": "claude-small"}),
}
PATHS = {"openai": "/v1/chat/completions", "anthropic": "/v1/messages"}
_written: dict[Path, str] = {}  # update mode: what this session wrote (both backends must agree)


@pytest.fixture
def clock() -> ManualClock:
    """Frozen: it moves only when a test says so."""
    return ManualClock(T0, ticking=False)


@pytest.fixture(params=sorted(MODELS))
def provider(request) -> str:
    return request.param


@pytest.fixture
def stub():
    with LLMStub() as s:
        yield s


@pytest.fixture
async def llm(provider, stub):
    model, tiers = MODELS[provider]
    common = dict(api_key="test-key", model=model, tier_models=tiers, timeout=10, max_retries=0)
    if provider == "openai":
        client = OpenAICompatProvider(base_url=stub.base_url, **common)
    else:
        client = AnthropicProvider(base_url=stub.anthropic_base_url, **common)
    yield client
    await client.aclose()


def settings_for(tmp_path: Path, persona: str | None = None) -> Settings:
    """Every setting that shapes the prompt, explicit (the environment and .env are ignored)."""
    return Settings(
        _env_file=None,
        CLARA_DATA_DIR=tmp_path,
        CLARA_BOT_NAME="Clara",
        CLARA_PERSONA=persona,
        session_idle_minutes=30,
        carryover_messages=6,
    )


class Conversation:
    """Messages at explicit clock times; returns the stub calls each message caused."""

    def __init__(self, engine: ChatEngine, clock: ManualClock, stub: LLMStub):
        self.engine, self.clock, self.stub = engine, clock, stub

    async def say(
        self,
        text: str,
        *,
        user: str = "alice",
        channel: str | None = None,
        minutes: int = 1,
        replies=(),
        **extra: Any,  # IncomingMessage fields: attachments, reply_to
    ) -> list[StubCall]:
        self.clock.advance(timedelta(minutes=minutes))
        self.stub.script(list(replies))
        start = len(self.stub.calls)
        reply = await self.engine.handle(
            IncomingMessage(
                user_id=user,
                display_name=user.title(),
                channel_id=channel or f"dm-{user}",
                text=text,
                is_dm=channel is None,
                **extra,
            )
        )
        assert not reply.error, reply.text
        await self.engine.drain()  # the memory writer and the index are done before the next message
        assert self.stub.pending == 0, "a scripted reply was not used"
        return self.stub.calls[start:]


def conversation(store, llm, clock, stub, tmp_path, persona=None) -> tuple[ChatEngine, Conversation]:
    engine = ChatEngine(store, llm, settings=settings_for(tmp_path, persona))
    engine.memory.writer.llm = None  # offline extraction: deterministic facts, no extraction requests
    # The memory writer waits for the reply however long it takes (not 250 ms): a loaded machine
    # must not change which write gets which id.
    engine.memory.yield_max = 60.0
    return engine, Conversation(engine, clock, stub)


@pytest.fixture
async def chat(store, llm, clock, stub, tmp_path):
    engine, conv = conversation(store, llm, clock, stub, tmp_path)
    yield conv
    await engine.aclose()


@pytest.fixture
async def lobby(store, llm, clock, stub, tmp_path):
    engine, conv = conversation(store, llm, clock, stub, tmp_path, persona=LOBBY_PERSONA)
    yield conv
    await engine.aclose()


async def bob_confides(conv: Conversation) -> None:
    """Bob's private memories (his DM): they must never reach Alice's prompts."""
    await conv.say("I am allergic to peanuts. My password hint is purple elephant.", user="bob", replies=["Noted."])


# ---------------------------------------------------------------------------------------------
# Golden files


def normalise(body: dict[str, Any]) -> dict[str, Any]:
    """The body with legitimately variable values replaced. Nothing is variable today (see the
    module doc); keep this minimal and explicit."""
    return body


def assert_golden(case: str, provider: str, calls: list[StubCall]) -> None:
    actual = [{"path": c.path, "body": normalise(c.body)} for c in calls]
    text = json.dumps(actual, indent=2, ensure_ascii=False, sort_keys=True) + "\n"
    path = GOLDEN_DIR / f"{case}.{provider}.json"
    if UPDATE:
        if _written.get(path, text) != text:
            pytest.fail(f"{path.name}: the backends produced different bodies:\n{_diff(_written[path], text)}")
        _written[path] = text
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return
    if not path.exists():
        pytest.fail(f"{path} is missing: run with CLARA_UPDATE_GOLDEN=1 to create it")
    expected = path.read_text(encoding="utf-8")
    if json.loads(expected) != actual:
        pytest.fail(f"{path.name} differs from the request bodies sent (- golden, + sent):\n{_diff(expected, text)}")


def _diff(a: str, b: str) -> str:
    return "".join(difflib.unified_diff(a.splitlines(True), b.splitlines(True), "golden", "sent", n=2))


# ---------------------------------------------------------------------------------------------
# Explicit checks on a body


def contents(body: dict[str, Any]) -> list[tuple[str, str, str]]:
    """Every text of a request as (role, kind, text); kind: "text", "tool_call" (arguments) or
    "tool_result". The Anthropic system prompt counts as role "system"."""
    out = [("system", "text", body["system"])] if body.get("system") else []
    for m in body["messages"]:
        role, content = m["role"], m.get("content")
        if role == "tool":
            out.append(("tool", "tool_result", content))
            continue
        if isinstance(content, str):
            out.append((role, "text", content))
        for block in content if isinstance(content, list) else []:
            if block["type"] == "text":
                out.append((role, "text", block["text"]))
            elif block["type"] == "tool_use":
                out.append((role, "tool_call", json.dumps(block["input"])))
            elif block["type"] == "tool_result":
                out.append((role, "tool_result", block["content"]))
        for call in m.get("tool_calls") or []:
            out.append((role, "tool_call", call["function"]["arguments"]))
    return out


def check_prompt(provider: str, calls: list[StubCall], *, persona: str, new: str, speaker: str | None) -> None:
    """The persona opens the one system prompt; `new` (the person's message, prefixed with the
    speaker's name in a channel) is the last user turn and appears nowhere else."""
    assert calls
    turn = f"{speaker}: {new}" if speaker else new
    for call in calls:
        body = call.body
        assert call.path == PATHS[provider]
        if provider == "openai":
            roles = [m["role"] for m in body["messages"]]
            assert roles[0] == "system" and roles.count("system") == 1 and "system" not in body
        else:
            assert all(m["role"] in ("user", "assistant") for m in body["messages"])
        system = system_text(body)
        assert system.startswith(persona + "\n") or system == persona
        found = contents(body)
        user_turns = [text for role, kind, text in found if role == "user" and kind == "text"]
        assert user_turns and user_turns[-1] == turn  # the last user turn is the new message
        assert user_turns.count(turn) == 1
        for role, kind, text in found:
            if (role, kind) != ("user", "text"):
                assert new not in text, f"the user's message leaked into {role} {kind}: {text!r}"


def dumped(calls: list[StubCall]) -> str:
    return "\n".join(json.dumps(c.body, ensure_ascii=False) for c in calls)


# ---------------------------------------------------------------------------------------------
# The cases


async def test_dm_with_remembered_facts(chat, provider):
    await bob_confides(chat)
    await chat.say("I live in Lisbon. I work as a nurse at the children's hospital.", replies=["Nice to meet you!"])
    question = "Where do I live, and what do I do?"
    calls = await chat.say(question, minutes=5, replies=["You live in Lisbon and work as a nurse."])
    assert len(calls) == 1
    check_prompt(provider, calls, persona=PERSONA, new=question, speaker=None)
    system = system_text(calls[0].body)
    assert "Alice lives in Lisbon" in system and "Conversation: direct message." in system
    assert "purple elephant" not in dumped(calls) and "peanuts" not in dumped(calls)
    assert_golden("dm", provider, calls)


async def test_dm_in_the_next_session(chat, provider):
    """An idle gap starts a new session: the previous one's last turns are carried over and its
    summary is offered."""
    await bob_confides(chat)
    await chat.say("I live in Lisbon. I work as a nurse at the children's hospital.", replies=["Nice to meet you!"])
    await chat.say("Good morning!", minutes=45, replies=["Good morning, Alice!"])
    question = "Where do I live, and what do I do?"
    calls = await chat.say(question, minutes=2, replies=["You live in Lisbon and work as a nurse."])
    assert len(calls) == 1
    check_prompt(provider, calls, persona=PERSONA, new=question, speaker=None)
    system = system_text(calls[0].body)
    assert "Alice lives in Lisbon" in system
    assert "## Summary of your previous conversation\n- Conversation summary (2026-04-07)" in system
    assert "purple elephant" not in dumped(calls) and "peanuts" not in dumped(calls)
    assert_golden("dm_next_session", provider, calls)


async def test_channel_message(lobby, provider):
    await bob_confides(lobby)
    await lobby.say("I love hiking in the mountains.", user="bob", channel="lobby", replies=["Sounds lovely!"])
    await lobby.say("I just adopted a cat named Miso.", channel="lobby", replies=["Congratulations!"])
    question = "What's my cat called? Does Bob like hiking? And what is Bob's password hint?"
    calls = await lobby.say(question, channel="lobby", minutes=5, replies=["Miso! And that's Bob's secret."])
    assert len(calls) == 1
    check_prompt(provider, calls, persona=LOBBY_PERSONA, new=question, speaker="Alice")
    body = calls[0].body
    assert "Conversation: channel." in system_text(body)
    about_alice = system_text(body).split("## What you know about Alice\n")[1].split("\n\n")[0]
    assert "Miso" in about_alice and "Bob" not in about_alice  # others' words are not facts about her
    user_turns = [text for role, kind, text in contents(body) if role == "user"]
    assert user_turns == ["Alice: I just adopted a cat named Miso.", f"Alice: {question}"]
    assert "purple elephant" not in dumped(calls) and "peanuts" not in dumped(calls)
    assert_golden("channel", provider, calls)


async def test_tiered_messages(chat, provider):
    _, tiers = MODELS[provider]
    high = await chat.say("!high Explain how tides work in two sentences.", replies=["The Moon pulls the sea."])
    low = await chat.say("!low Say thanks in French.", replies=["Merci !"])
    assert len(high) == len(low) == 1
    check_prompt(provider, high, persona=PERSONA, new="Explain how tides work in two sentences.", speaker=None)
    check_prompt(provider, low, persona=PERSONA, new="Say thanks in French.", speaker=None)
    assert high[0].body["model"] == tiers["high"] and high[0].body["tools"]
    # Tool calls never run on the low tier: `!low` is answered by the low model, without tools.
    assert low[0].body["model"] == tiers["low"] and "tools" not in low[0].body
    assert_golden("tiers", provider, high + low)


async def test_tool_rounds(chat, provider):
    remember = await chat.say(
        "Please remember that my locker code is 7731.",
        replies=[tool_call("remember", {"text": "Alice's locker code is 7731"}, id="call_remember_1"), "Saved!"],
    )
    recall = await chat.say(
        "What's my locker code?",
        minutes=10,
        replies=[tool_call("recall", {"query": "locker code"}, id="call_recall_1"), "It is 7731."],
    )
    assert len(remember) == len(recall) == 2
    check_prompt(provider, remember, persona=PERSONA, new="Please remember that my locker code is 7731.", speaker=None)
    check_prompt(provider, recall, persona=PERSONA, new="What's my locker code?", speaker=None)
    for first, second in (remember, recall):
        # The second request is the first plus the assistant's tool call and the tool's result.
        assert second.body["messages"][: len(first.body["messages"])] == first.body["messages"]
        added = second.body["messages"][len(first.body["messages"]) :]
        assert [m["role"] for m in added] == (["assistant", "tool"] if provider == "openai" else ["assistant", "user"])
    assert "7731" in json.dumps(recall[1].body["messages"][-1])
    assert_golden("tools", provider, remember + recall)


async def test_attachments_and_reply_chain(lobby, provider):
    notes = Attachment("notes.txt", "buy milk\nfix bike")
    only = await lobby.say("", channel="lobby", attachments=[notes], replies=["Got your notes."])
    route = Attachment("route.txt", "Sintra loop, 12 km")
    answer = await lobby.say(
        "Count me in! Here is the route.",
        channel="lobby",
        attachments=[route],
        reply_to=[("Bob", "Anyone up for hiking on Saturday?")],
        replies=["Have fun!"],
    )
    assert len(only) == len(answer) == 1
    # The attachment's text is the message: once, as the user turn.
    check_prompt(
        provider, only, persona=LOBBY_PERSONA, new="[attachment notes.txt]\nbuy milk\nfix bike", speaker="Alice"
    )
    reply = (
        "(replying to)\n> Bob: Anyone up for hiking on Saturday?\n"
        "Count me in! Here is the route.\n[attachment route.txt]\nSintra loop, 12 km"
    )
    check_prompt(provider, answer, persona=LOBBY_PERSONA, new=reply, speaker="Alice")
    assert_golden("attachments", provider, only + answer)
