"""Security: no cross-user or cross-guild leak through any recall path (chat prompt, commands,
slash commands via the fake Discord, LLM tools, MCP), admin commands refused for members, and
secrets absent from logs."""

from __future__ import annotations

import asyncio
import io
import logging

import pytest

pytest.importorskip("discord")

from clara.mcp_server.service import MemoryService  # noqa: E402
from clara.ops.logs import setup_logging  # noqa: E402
from storage import ScopeDenied  # noqa: E402
from tests.conftest import assert_private  # noqa: E402
from tests.llm_stub import Reply, error, tool_call  # noqa: E402
from tests.test_discord import ADA, ALICE, BOB, _world  # noqa: E402

pytestmark = pytest.mark.timeout(120)
SECRET, CHANNEL_SECRET = "locker code 7731", "swordfish-42"


@pytest.fixture
def backend():
    return "sqlite"


def _prompts(stub) -> str:
    return "\n".join(str(m.get("content")) for r in stub.requests for m in r.get("messages", []))


async def test_no_recall_path_leaks_across_users_or_guilds(store, tmp_path):
    w, close = await _world(store, tmp_path)
    fake = w.fake
    try:
        other = fake.add_guild("Elsewhere", owner_id=BOB)
        lobby = fake.add_channel(other, "lobby")
        fake.add_member(other, ALICE, "alice")
        fake.add_member(other, BOB, "bob")
        # Alice: a private note, and a fact told in guild Home's #general.
        await fake.post_message(w.general, ALICE, f"!remember my {SECRET}")
        await fake.wait_for_message(w.general, lambda m: "remember that" in m["content"])
        asked = await fake.post_message(w.general, ALICE, f"our deploy password is {CHANNEL_SECRET}", mentions_bot=True)
        await fake.wait_for_message(w.general, lambda m: CHANNEL_SECRET in m["content"], after=asked)
        await w.engine.drain()
        w.stub.requests.clear()

        # 1. Chat: Bob asks in Home #general → his prompt never holds Alice's private note.
        asked = await fake.post_message(w.general, BOB, "what is alice's locker code?", mentions_bot=True)
        await fake.wait_for_message(w.general, lambda m: "locker" in m["content"], after=asked)
        assert "7731" not in _prompts(w.stub)
        # 2. Cross-guild: in another guild's channel, neither Bob nor Alice gets Home #general's fact.
        for user in (BOB, ALICE):
            w.stub.requests.clear()
            asked = await fake.post_message(lobby, user, "what is the deploy password?", mentions_bot=True)
            await fake.wait_for_message(lobby, lambda m: "deploy password" in m["content"], after=asked)
            assert CHANNEL_SECRET not in _prompts(w.stub), user
        # 3. Commands: !recall / !memories / !about, in the channel and in Bob's DMs.
        for cmd in ("!recall locker code", "!memories", "!about alice", "!recall deploy password"):
            await fake.post_message(lobby, BOB, cmd)
        await asyncio.sleep(1.0)
        seen = [m["content"] for ch in (w.general, lobby, fake.dm_channel(BOB)) for m in fake.sent(ch)]
        assert not any("7731" in c for c in seen)
        assert not any(CHANNEL_SECRET in c for c in fake.sent(lobby) for c in [c["content"]])
        # 4. Slash commands.
        for channel in (w.general, lobby):
            inter = await fake.invoke_slash(channel, BOB, "recall", {"query": "alice locker code"})
            await inter.wait_done()
            assert all("7731" not in (m.get("content") or "") for m in inter.messages)
        # 5. LLM tools: the model asks the recall tool on Bob's behalf; the tool result is Bob's only.
        w.model.chat += [tool_call("recall", {"query": "locker code"}), Reply(text="done looking")]
        w.stub.requests.clear()
        asked = await fake.post_message(w.general, BOB, "look up the locker code", mentions_bot=True)
        await fake.wait_for_message(w.general, lambda m: "done looking" in m["content"], after=asked)
        tool_msgs = [m for r in w.stub.requests for m in r.get("messages", []) if m.get("role") == "tool"]
        assert tool_msgs and all("7731" not in str(m.get("content")) for m in tool_msgs)
        # 6. MCP: an agent reads nothing of Alice's, and asking for her scope is refused.
        service = MemoryService(store)
        out = await service.recall("helper", "locker code 7731")
        assert all("7731" not in f["content"] for f in out["facts"])
        with pytest.raises(ScopeDenied):
            await service.recall("helper", "locker", scopes=[f"user:{ALICE}"])
        with pytest.raises(ScopeDenied):
            await service.search("helper", "swordfish", scopes=[f"channel:{w.general.id}"])
        await service.aclose()
        # 7. The store itself, over everything Bob may read.
        await assert_private(store, "locker code 7731", str(BOB), f"user:{ALICE}")
    finally:
        await close()


async def test_admin_commands_are_refused_for_members(world):
    fake = world.fake
    await fake.post_message(world.general, BOB, "!context hello")
    got = await fake.wait_for_message(fake.dm_channel(BOB), lambda m: "admins" in m["content"])
    assert "CLARA_ADMIN_USERS" in got["content"]
    for sub, opts in (("stats", {}), ("search", {"query": "x"}), ("forget-user", {"member": ALICE})):
        inter = await fake.invoke_slash(world.general, BOB, "memory", opts, subcommand=sub)
        await inter.wait_done()
        assert "You need to be" in inter.messages[0]["content"], sub
    ok = await fake.invoke_slash(world.general, ADA, "memory", {}, subcommand="stats")
    await ok.wait_done()
    assert "active memories" in ok.messages[0]["content"]


@pytest.fixture
async def world(store, tmp_path):
    w, close = await _world(store, tmp_path)
    yield w
    await close()


async def test_secrets_never_reach_the_logs(world, monkeypatch):
    key = "sk-or-v1-very-secret-key-0123456789"
    monkeypatch.setenv("OPENROUTER_API_KEY", key)
    monkeypatch.setenv("DISCORD_BOT_TOKEN", "discord-secret-token-abcdef")
    buf = io.StringIO()
    handler = setup_logging(
        env={**__import__("os").environ, "LOG_LEVEL": "DEBUG", "CLARA_LOG_FORMAT": "json"}, stream=buf
    )
    try:
        # A provider error that echoes the key (some gateways do) is logged by the pipeline.
        world.model.chat.append(error(500, message=f"invalid api key {key} for token discord-secret-token-abcdef"))
        asked = await world.fake.post_message(world.general, ALICE, "hello there", mentions_bot=True)
        await world.fake.wait_for_message(world.general, lambda m: "language model" in m["content"], after=asked)
        logging.getLogger("clara.test").error("direct: %s", {"auth": f"Bearer {key}"})
        await world.engine.drain()
        text = buf.getvalue()
        assert "LLM failed" in text or "direct" in text
        assert key not in text and "discord-secret-token-abcdef" not in text
        assert "[REDACTED]" in text
    finally:
        logging.getLogger().removeHandler(handler)
        logging.getLogger().setLevel(logging.WARNING)
