"""The memory MCP server (in-process, stdio subprocess, streamable HTTP with bearer tokens) and
the MCP client bridge plugin (stdio child servers that crash or hang, HTTP, env allow-list)."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from mcp import Client, StdioServerParameters
from mcp.shared.exceptions import MCPError

from clara.chat import ChatEngine, IncomingMessage
from clara.mcp_server import MemoryService, http_app, stdio_server
from clara.plugin_api import Invocation, Level
from clara.plugin_host import PluginHost
from clara.settings import Settings
from storage.clock import ManualClock
from tests.conftest import assert_private

ROOT = Path(__file__).resolve().parents[1]
ECHO = str(ROOT / "tests" / "mcp_fixtures" / "echo_server.py")
T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


@pytest.fixture
def clock() -> ManualClock:
    """The store's clock for this module: pinned at T0, moving with real elapsed time."""
    return ManualClock(T0, ticking=True)


TOKENS = {"tok-coder-0123456789abcdef": "coder", "tok-reviewer-0123456789abcd": "reviewer"}
GRANTS = {"coder": ["project:falcon", "channel:c1"], "reviewer": ["project:falcon"]}
TOOLS = {
    "memory_store_fact",
    "memory_store_facts",
    "memory_recall",
    "memory_search",
    "memory_link_entity",
    "memory_get_context",
    "memory_observe",
    "memory_register_agent",
    "memory_query_raw",
    "memory_create_scope",
    "memory_grant_scope",
    "memory_revoke_scope",
    "memory_handoff",
    "memory_pickup",
}


async def call(client, tool: str, **args):
    """Call a tool; returns (is_error, structured content or the error text)."""
    res = await client.call_tool(tool, args)
    if res.is_error:
        return True, res.content[0].text
    return False, res.structured_content


async def ok(client, tool: str, **args):
    err, value = await call(client, tool, **args)
    assert not err, value
    return value


async def denied(client, tool: str, **args) -> str:
    err, value = await call(client, tool, **args)
    assert err, f"{tool} {args} should have failed: {value}"
    return value


def contents(result) -> list[str]:
    return [f["content"] for f in result["facts"]]


async def agents_share_and_stay_private(coder, reviewer) -> None:
    """The scenario every transport runs: two agents, one shared scope, private scopes."""
    reg = await ok(coder, "memory_register_agent", capabilities=["code"])
    assert reg["private_scope"] == "agent:coder" and "project:falcon" in reg["writable_scopes"]
    assert "agent:reviewer" not in reg["readable_scopes"]
    assert "cannot register as" in await denied(coder, "memory_register_agent", agent_id="reviewer")
    rev = await ok(reviewer, "memory_register_agent")
    assert "agent:coder" not in rev["readable_scopes"] and "project:falcon" in rev["readable_scopes"]

    shared = await ok(
        coder,
        "memory_store_fact",
        content="The falcon service deploys with blue-green releases",
        scope="project:falcon",
        kind="decision",
        entities=["Falcon"],
        tags=["deploy"],
    )
    await ok(coder, "memory_store_fact", content="My scratch idea: rewrite the falcon parser in Rust")
    # Shared scope: the reviewer recalls and searches the coder's fact.
    got = await ok(reviewer, "memory_recall", query="how does falcon deploy")
    assert "The falcon service deploys with blue-green releases" in contents(got)
    assert all(f["scope"] != "agent:coder" for f in got["facts"])
    found = await ok(reviewer, "memory_search", query="blue-green", kinds=["decision"])
    assert [f["id"] for f in found["facts"]] == [shared["fact_id"]]
    assert (await ok(reviewer, "memory_search", created_by="agent:coder"))["facts"][0]["id"] == shared["fact_id"]
    # Private scope: never readable by another agent, by recall, search, scopes or raw query.
    assert "rewrite the falcon parser" in " ".join(contents(await ok(coder, "memory_recall", query="falcon parser")))
    for tool, args in [
        ("memory_recall", {"query": "falcon parser"}),
        ("memory_search", {"query": "parser"}),
        ("memory_get_context", {"topic": "falcon parser"}),
    ]:
        assert "rewrite" not in json.dumps(await ok(reviewer, tool, **args))
    assert "scope denied" in await denied(reviewer, "memory_recall", query="parser", scopes=["agent:coder"])
    assert "scope denied" in await denied(reviewer, "memory_store_fact", content="x", scope="agent:coder")
    assert "scope denied" in await denied(reviewer, "memory_observe", content="x", scope="agent:coder")
    raw = await ok(reviewer, "memory_query_raw", table="facts", filters={"scope_id": "agent:coder"})
    assert raw["rows"] == []
    # Entities and relations, then the warm-start bundle.
    link = await ok(reviewer, "memory_link_entity", entity="Falcon", entity_type="project", fact_id=shared["fact_id"])
    assert link["scope"] == "project:falcon" and link["linked_fact"] == shared["fact_id"]
    await ok(
        reviewer,
        "memory_link_entity",
        entity="Falcon",
        scope="project:falcon",
        relation="owned_by",
        target="Platform team",
        target_type="organisation",
        alias="the bird service",
    )
    assert "scope denied" in await denied(reviewer, "memory_link_entity", entity="Falcon", scope="agent:coder")
    ctx = await ok(coder, "memory_get_context", topic="Falcon")
    ent = next(e for e in ctx["entities"] if e["name"] == "Falcon")
    assert ent["type"] == "project" and "the bird service" in ent["aliases"]
    assert {"source": "Falcon", "relation": "owned_by", "target": "Platform team"} in ent["relations"]
    assert shared["fact_id"] in [f["id"] for f in ent["facts"]]
    assert "The falcon service deploys with blue-green releases" in contents(ctx)
    assert any("scratch idea" in f["content"] for f in ctx["my_recent_facts"])
    # query_raw: whitelisted, read-only, parameterised.
    rows = (await ok(coder, "memory_query_raw", table="facts", filters={"kind": {"in": ["decision"]}}))["rows"]
    assert [r["id"] for r in rows] == [shared["fact_id"]]
    count = await ok(coder, "memory_query_raw", table="facts", operation="count")
    assert count["count"] == 2
    assert "read-only" in await denied(coder, "memory_query_raw", table="facts", operation="delete")
    assert "unknown table" in await denied(coder, "memory_query_raw", table="scope_members")
    assert "unknown table" in await denied(coder, "memory_query_raw", table="facts; DELETE FROM facts")
    assert "unknown column" in await denied(coder, "memory_query_raw", table="facts", filters={"1=1) OR (1": 1})
    assert "unknown column" in await denied(coder, "memory_query_raw", table="sessions", columns=["user_id"])
    assert "unknown filter operator" in await denied(
        coder, "memory_query_raw", table="facts", filters={"id": {"raw": "1"}}
    )
    inj = await ok(coder, "memory_query_raw", table="facts", filters={"content": "x' OR '1'='1"})
    assert inj["rows"] == []
    # Observe is fire-and-forget; the fact lands shortly after.
    assert (await ok(coder, "memory_observe", content="Build 412 of falcon was green"))["accepted"]
    for _ in range(50):
        if (await ok(coder, "memory_search", query="412"))["facts"]:
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("observation never stored")


# ---------------------------------------------------------------------- in-process (both backends)
@pytest.fixture
async def service(store):
    svc = MemoryService(store, GRANTS)
    yield svc
    await svc.aclose()


async def test_tools_scopes_and_sharing_in_process(service):
    async with Client(stdio_server(service, "coder")) as coder, Client(stdio_server(service, "reviewer")) as rev:
        assert {t.name for t in (await coder.list_tools()).tools} == TOOLS
        await agents_share_and_stay_private(coder, rev)


async def test_agent_facts_reach_chat_and_user_facts_never_reach_agents(service, store, tmp_path):
    engine = ChatEngine(store, settings=Settings(CLARA_DATA_DIR=tmp_path))

    def m(text, user="alice", channel="c1"):
        return IncomingMessage(
            user_id=user, display_name=user.title(), channel_id=channel, text=text, guild_id="g1", timestamp=T0
        )

    try:
        await engine.handle(m("hello everyone"))  # creates channel:c1 with alice as member
        private_id = (await engine.handle(m("!remember my locker code is 4512"))).stored_fact_id
        assert private_id
        await store.add("Alice said the team offsite is in Porto", "channel:c1", actor="alice")
        async with Client(stdio_server(service, "coder")) as coder, Client(stdio_server(service, "reviewer")) as rev:
            stored = await ok(
                coder, "memory_store_fact", content="The staging database moved to db-7", scope="channel:c1"
            )
            # The reviewer is not a member of the channel: it may not write or read there.
            assert "scope denied" in await denied(rev, "memory_store_fact", content="x", scope="channel:c1")
            assert "scope denied" in await denied(rev, "memory_recall", query="staging", scopes=["channel:c1"])
            await engine.drain()
            # Agent → chat: alice (a member of the channel) recalls it; bob in another channel doesn't.
            assert "db-7" in (await engine.handle(m("!recall staging database"))).text
            assert "db-7" not in (await engine.handle(m("!recall staging database", user="bob", channel="c2"))).text
            # Chat → agent: the channel's facts are readable by the member agent…
            got = await ok(coder, "memory_recall", query="where is the offsite")
            assert "Alice said the team offsite is in Porto" in contents(got)
            # …but a user's private fact never is, whatever the tool.
            for agent in (coder, rev):
                for tool, args in [
                    ("memory_recall", {"query": "locker code 4512"}),
                    ("memory_search", {"query": "locker code"}),
                    ("memory_get_context", {"topic": "locker code"}),
                    ("memory_query_raw", {"table": "facts", "filters": {"content": {"contains": "locker"}}}),
                    ("memory_query_raw", {"table": "scopes"}),
                ]:
                    out = json.dumps(await ok(agent, tool, **args))
                    assert "4512" not in out and "user:alice" not in out, (tool, out)
            assert "scope denied" in await denied(coder, "memory_recall", query="locker", scopes=["user:alice"])
            assert "scope denied" in await denied(coder, "memory_store_fact", content="x", scope="user:alice")
            assert "no fact" in await denied(coder, "memory_link_entity", entity="Alice", fact_id=private_id)
            await assert_private(store, "locker code 4512", "agent:coder", "user:alice")
            assert stored["scope"] == "channel:c1"
            # The warm start includes the channel's recent conversation sessions, never alice's DM/private ones.
            ctx = await ok(coder, "memory_get_context", topic="offsite")
            assert any(x["scope"] == "channel:c1" and x["messages"] >= 1 for x in ctx["recent_sessions"])
            assert all(x["scope"] in ctx["scopes"] for x in ctx["recent_sessions"])
            assert "user:alice" not in json.dumps(ctx["recent_sessions"])
    finally:
        await engine.aclose()


async def test_engram_registration_scope_membership_public_scopes_and_handoffs(service, store):
    """The Engram seed's multi-agent flow through the real MCP client: `new` on first registration,
    scopes created and shared by their owner, a public scope, and a handoff chain coder → reviewer
    → tester that keeps who/which session/summary and never passes on what the receiver may not read."""
    await store.ensure_scope("user:alice", "user", owner="alice")
    await store.add("alice's passport number is X99123", "user:alice", actor="alice")
    async with (
        Client(stdio_server(service, "coder")) as coder,
        Client(stdio_server(service, "reviewer")) as rev,
        Client(stdio_server(service, "tester")) as tester,
    ):
        await ok(coder, "memory_recall", query="anything")  # acting first does not make it "registered"
        assert (await ok(coder, "memory_register_agent", capabilities=["code"]))["new"] is True
        assert (await ok(coder, "memory_register_agent"))["new"] is False
        assert (await ok(rev, "memory_register_agent"))["new"] is True

        # A members-only scope owned by its creator; only the owner manages membership.
        made = await ok(coder, "memory_create_scope", scope="project:apollo", name="Apollo")
        assert made["created"] and made["owner"] == "agent:coder" and made["read_policy"] == "members"
        assert (await ok(coder, "memory_create_scope", scope="project:apollo"))["created"] is False
        assert "not yours" in await denied(rev, "memory_create_scope", scope="project:apollo")
        assert "agents may create" in await denied(coder, "memory_create_scope", scope="user:bob")
        fact = await ok(
            coder, "memory_store_fact", content="Apollo launches on the ninth of March", scope="project:apollo"
        )
        assert "scope denied" in await denied(rev, "memory_recall", query="launch", scopes=["project:apollo"])
        assert "does not own" in await denied(rev, "memory_grant_scope", scope="project:apollo", agent="reviewer")
        assert "private scope" in await denied(coder, "memory_grant_scope", scope="user:alice", agent="reviewer")
        granted = await ok(coder, "memory_grant_scope", scope="project:apollo", agent="reviewer")
        assert {"principal": "agent:reviewer", "access": "read"} in granted["members"]
        got = await ok(rev, "memory_recall", query="when does apollo launch", scopes=["project:apollo"])
        assert contents(got) == ["Apollo launches on the ninth of March"]
        assert "scope denied" in await denied(rev, "memory_store_fact", content="x", scope="project:apollo")
        await ok(coder, "memory_grant_scope", scope="project:apollo", agent="reviewer", access="write")
        await ok(rev, "memory_store_fact", content="Apollo needs a second launch window", scope="project:apollo")
        assert "project:apollo" not in (await ok(tester, "memory_register_agent"))["readable_scopes"]

        # A public scope: written by its owner, read by every agent, written by no one else.
        pub = await ok(coder, "memory_create_scope", scope="public:releases")
        assert pub["read_policy"] == "public" and pub["owner"] == "agent:coder"
        await ok(coder, "memory_store_fact", content="Release 2.4 ships the new parser", scope="public:releases")
        for other in (rev, tester):
            assert "Release 2.4 ships the new parser" in contents(await ok(other, "memory_recall", query="release 2.4"))
            assert "scope denied" in await denied(other, "memory_store_fact", content="x", scope="public:releases")

        # Handoff coder → reviewer → tester in one session: the chain is kept, facts filtered per receiver.
        secret = await ok(coder, "memory_store_fact", content="coder's private hunch: the bug is in the cache")
        sent = await ok(
            coder,
            "memory_handoff",
            to_agent="reviewer",
            summary="Apollo launch plan drafted; needs a review of the window",
            session="ticket-42",
            scope="project:apollo",
            fact_ids=[fact["fact_id"], secret["fact_id"]],
        )
        assert sent["session"] == "ticket-42" and len(sent["chain"]) == 1
        assert (await ok(tester, "memory_pickup"))["handoff"] is None  # not theirs
        assert "no handoff" in await denied(tester, "memory_pickup", handoff_id=sent["handoff_id"])
        picked = await ok(rev, "memory_pickup")
        assert picked["handoff"]["from_agent"] == "coder" and picked["handoff"]["status"] == "picked_up"
        assert picked["handoff"]["session"] == "ticket-42" and picked["pending"] == 0
        assert "Apollo launches on the ninth of March" in [f["content"] for f in picked["facts"]]
        assert "private hunch" not in json.dumps(picked)
        second = await ok(
            rev, "memory_handoff", to_agent="tester", summary="Reviewed: the window is fine", session="ticket-42"
        )
        assert [h["id"] for h in second["chain"]] == [sent["handoff_id"], second["handoff_id"]]
        taken = await ok(tester, "memory_pickup")
        chain = taken["chain"]
        assert [(h["from_agent"], h["to_agent"], h["session"]) for h in chain] == [
            ("coder", "reviewer", "ticket-42"),
            ("reviewer", "tester", "ticket-42"),
        ]
        assert (
            chain[0]["summary"].startswith("Apollo launch plan")
            and chain[1]["summary"] == "Reviewed: the window is fine"
        )
        assert (await ok(tester, "memory_pickup"))["handoff"] is None
        ctx = await ok(rev, "memory_get_context", topic="apollo")
        assert {h["id"] for h in ctx["recent_handoffs"]} == {sent["handoff_id"], second["handoff_id"]}
        assert "to itself" in await denied(coder, "memory_handoff", to_agent="coder", summary="x")
        assert "no fact" in await denied(
            rev, "memory_handoff", to_agent="tester", summary="x", fact_ids=[secret["fact_id"]]
        )

        # Revoked: the reviewer reads and writes Apollo no more.
        await ok(coder, "memory_revoke_scope", scope="project:apollo", agent="reviewer")
        assert "scope denied" in await denied(rev, "memory_recall", query="apollo", scopes=["project:apollo"])
        assert "scope denied" in await denied(rev, "memory_store_fact", content="x", scope="project:apollo")
        assert "Apollo" not in json.dumps(await ok(rev, "memory_recall", query="apollo launch"))
        # Nobody's outputs ever carry a user's private fact or another agent's private one.
        for client in (rev, tester):
            for tool, args in [
                ("memory_recall", {"query": "passport number hunch cache"}),
                ("memory_get_context", {"topic": "passport cache"}),
                ("memory_pickup", {}),
            ]:
                out = json.dumps(await ok(client, tool, **args))
                assert "X99123" not in out and "private hunch" not in out, (tool, out)
    await assert_private(store, "passport number X99123", "agent:coder", "user:alice")
    assert (await store.get_scope("project:apollo")).owner == "agent:coder"


def test_grants_never_include_private_scopes(store):
    for bad in ("user:alice", "agent:other", "weird"):
        with pytest.raises(ValueError):
            MemoryService(store, {"coder": [bad]})
    with pytest.raises(ValueError):
        MemoryService(store, {"bad name!": ["project:x"]})


# ---------------------------------------------------------------------- stdio subprocess
def _child_env(data_dir: Path) -> dict[str, str]:
    env = {k: os.environ[k] for k in ("PATH", "HOME", "LANG") if k in os.environ}
    env.update(CLARA_DATA_DIR=str(data_dir), PYTHONPATH=str(ROOT), LOG_LEVEL="WARNING")
    return env


def _stdio(agent: str, data_dir: Path, *scopes: str) -> Client:
    args = ["-m", "clara.cli", "mcp", "serve", "--agent", agent]  # the CLI entry point
    for s in scopes:
        args += ["--scope", s]
    params = StdioServerParameters(command=sys.executable, args=args, env=_child_env(data_dir), cwd=str(ROOT))
    return Client(params, read_timeout_seconds=30)


async def test_stdio_server_subprocess(tmp_path):
    async with _stdio("coder", tmp_path, "project:falcon") as coder:
        assert {t.name for t in (await coder.list_tools()).tools} == TOOLS
        assert (await ok(coder, "memory_register_agent"))["new"] is True  # the server prepared its scope first
        await ok(coder, "memory_store_fact", content="Falcon uses port 8443 in production", scope="project:falcon")
        await ok(coder, "memory_store_fact", content="coder's private note about port 9999")
    # A second agent, later, through the same store: shared scope yes, private scope no.
    async with _stdio("coder", tmp_path, "project:falcon") as coder:
        assert (await ok(coder, "memory_register_agent"))["new"] is False
    async with _stdio("reviewer", tmp_path, "project:falcon") as reviewer:
        got = await ok(reviewer, "memory_recall", query="falcon port")
        assert contents(got) == ["Falcon uses port 8443 in production"]
        assert "scope denied" in await denied(reviewer, "memory_search", query="port", scopes=["agent:coder"])


# ---------------------------------------------------------------------- streamable HTTP
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def http_server(tmp_path_factory):
    """The memory server's ASGI app under uvicorn in a background thread (its own event loop and
    store on a temporary SQLite database)."""
    import uvicorn

    data = tmp_path_factory.mktemp("mcp-http")
    app = http_app(TOKENS, grants=GRANTS, settings=Settings(CLARA_DATA_DIR=data))
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/mcp"
    server.should_exit = True
    thread.join(15)


def _http_client(url: str, token: str | None) -> Client:
    import httpx2
    from mcp.client.streamable_http import streamable_http_client

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return Client(streamable_http_client(url, http_client=httpx2.AsyncClient(headers=headers, timeout=30)))


async def test_http_server_with_tokens(http_server):
    async with (
        _http_client(http_server, "tok-coder-0123456789abcdef") as coder,
        _http_client(http_server, "tok-reviewer-0123456789abcd") as reviewer,
    ):
        assert {t.name for t in (await coder.list_tools()).tools} == TOOLS
        await agents_share_and_stay_private(coder, reviewer)


async def test_http_server_refuses_bad_tokens(http_server):
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    async with httpx.AsyncClient() as raw:
        for headers in ({}, {"Authorization": "Bearer wrong-token-0123456789"}, {"Authorization": "Basic abc"}):
            r = await raw.post(http_server, json=body, headers=headers)
            assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
    try:
        async with _http_client(http_server, "wrong-token-0123456789") as c:
            await c.list_tools()
    except BaseException as exc:  # the SDK surfaces the 401 as an MCPError inside task-group groups
        while isinstance(exc, BaseExceptionGroup):
            exc = exc.exceptions[0]
        assert isinstance(exc, MCPError), repr(exc)
    else:
        raise AssertionError("a bad token connected")


def test_http_app_rejects_weak_configuration():
    with pytest.raises(ValueError):
        http_app({})
    with pytest.raises(ValueError):
        http_app({"short": "coder"})
    with pytest.raises(ValueError):
        http_app({"long-enough-token-123": "bad name!"})


# ---------------------------------------------------------------------- the client bridge plugin
def inv(level=Level.ADMIN, user="admin1") -> Invocation:
    return Invocation(
        user_id=user,
        display_name=user,
        channel_id="c1",
        guild_id="g1",
        is_dm=False,
        level=level,
        now=T0,
        user_scope=f"user:{user}",
        conversation_scope="channel:c1",
    )


@pytest.fixture
async def bridge_host(store, backend, monkeypatch):
    if backend != "sqlite":
        pytest.skip("child-process behaviour does not depend on the database (settings are covered elsewhere)")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-parent-key")
    monkeypatch.setenv("DISCORD_BOT_TOKEN", "discord-secret-token")
    for key, value in (("call_timeout", 2), ("connect_timeout", 6), ("retry_after", 0)):
        await store.settings.set("plugin:mcp_bridge", "global", key, value)
    h = PluginHost(store, packages="plugins")
    assert (await h.load("mcp_bridge")).ok
    yield h
    await h.aclose()


def tools(h) -> dict:
    return {t.spec.name: t for t in h.tools(inv())}


async def mcp(h, args: str, level=Level.ADMIN):
    return await h.run_command(inv(level), "mcp", args)


async def test_bridge_manages_servers_and_isolates_failures(bridge_host, store):
    h = bridge_host
    add = f"add echo stdio FOO=bar {sys.executable} {ECHO}"
    for level in (Level.MEMBER, Level.MOD):
        res = await mcp(h, add, level)
        assert res.error and "needs admin" in res.text
    assert not any("__" in n for n in tools(h))
    res = await mcp(h, add)
    assert not res.error and "connected" in res.text and res.private
    t = tools(h)
    assert {"echo__echo", "echo__add", "echo__crash", "echo__hang", "echo__env_keys"} <= set(t)
    weird = [n for n in t if n.startswith("echo__weird")]
    assert len(weird) == 1 and all(len(n) <= 64 and n.replace("_", "").replace("-", "").isalnum() for n in t)
    assert await t["echo__echo"].handler({"text": "hi"}) == "hi"
    assert await t["echo__add"].handler({"a": 2, "b": 3}) == "5"
    assert await t[weird[0]].handler({}) == "weird ok"
    assert "invalid arguments" in await t["echo__add"].handler({"a": "two", "b": 3})  # schema from the server
    # Environment allow-list: the parent's secrets never reach the child; configured vars do.
    keys = set((await t["echo__env_keys"].handler({})).split(","))
    assert not keys & {"OPENAI_API_KEY", "DISCORD_BOT_TOKEN", "CLARA_DATA_DIR", "DATABASE_URL"}
    assert "FOO" in keys and "PATH" in keys
    assert await t["echo__getenv"].handler({"name": "OPENAI_API_KEY"}) == "<unset>"
    assert await t["echo__getenv"].handler({"name": "FOO"}) == "bar"
    # A hanging call is bounded and the server keeps serving other calls.
    start = time.monotonic()
    out = await t["echo__hang"].handler({})
    assert out.startswith("error:") and "did not answer" in out and time.monotonic() - start < 6
    assert await t["echo__echo"].handler({"text": "still here"}) == "still here"
    # A crash is reported; the next call reconnects (retry_after=0 here).
    out = await t["echo__crash"].handler({})
    assert out.startswith("error:") and "echo" in out
    assert "failed" in (await mcp(h, "list")).text
    assert await tools(h)["echo__echo"].handler({"text": "back"}) == "back"
    # Servers that never answer or die at start are reported, within the timeout, without tools.
    start = time.monotonic()
    res = await mcp(h, f"add stuck stdio {sys.executable} {ECHO} --hang-at-start")
    assert "failed" in res.text and ("no answer" in res.text or "timed out" in res.text)
    assert time.monotonic() - start < 30
    res = await mcp(h, f"add dead stdio {sys.executable} {ECHO} --exit-at-start")
    assert "failed" in res.text
    assert not any(n.startswith(("stuck__", "dead__")) for n in tools(h))
    listing = (await mcp(h, "list")).text
    assert "echo — stdio" in listing and "env: FOO" in listing and "bar" not in listing
    # The plugin itself was never marked failing, and the bot's other paths keep working.
    assert h.loaded["mcp_bridge"].status == "loaded" and h.loaded["mcp_bridge"].failures == 0
    # Disable / enable / remove, persisted in the plugin's settings.
    assert "Disabled" in (await mcp(h, "disable echo")).text
    assert not any(n.startswith("echo__") for n in tools(h))
    assert "connected" in (await mcp(h, "enable echo")).text
    assert "echo__echo" in tools(h)
    assert (await mcp(h, "add echo http http://127.0.0.1:1/mcp")).error  # name taken
    assert (await mcp(h, "add x ftp something")).error
    assert (await mcp(h, "add Bad/Name stdio true")).error
    assert "Removed" in (await mcp(h, "remove stuck")).text
    assert (await mcp(h, "remove nope")).error
    saved = await store.settings.get("plugin:mcp_bridge", "global", "servers")
    assert set(saved) == {"echo", "dead"} and saved["echo"]["env"] == {"FOO": "bar"}
    # A restarted host reconnects the saved, enabled servers in the background.
    await h.unload("mcp_bridge")
    assert not tools(h)
    assert (await h.load("mcp_bridge")).ok
    assert "echo__echo" in tools(h)  # offered at once (cached listing); the connection follows
    for _ in range(100):
        if "echo__echo" in tools(h):
            break
        await asyncio.sleep(0.05)
    assert await tools(h)["echo__echo"].handler({"text": "again"}) == "again"


async def test_bridge_over_http_to_the_memory_server(bridge_host, http_server):
    h = bridge_host
    res = await mcp(h, f"add mem http {http_server} bearer=tok-coder-0123456789abcdef")
    assert "connected" in res.text, res.text
    t = tools(h)
    assert {f"mem__{n}" for n in TOOLS} <= set(t)
    stored = await t["mem__memory_store_fact"].handler(
        {"content": "Bridge test: the cafe opens at 7", "scope": "project:falcon"}
    )
    assert "fact_id" in stored
    assert "cafe opens at 7" in await t["mem__memory_search"].handler({"query": "cafe"})
    assert "bearer" not in (await mcp(h, "list")).text.replace("bearer token set", "")
    res = await mcp(h, f"add badmem http {http_server} bearer=not-a-valid-token-123456")
    assert "failed" in res.text


NPM_ECHO = ROOT / "tests" / "mcp_fixtures" / "npm_echo"


async def test_management_tools_install_gate_and_survive_a_restart(bridge_host, store, tmp_path, monkeypatch):
    h = bridge_host
    t = tools(h)
    assert {
        "mcp_install",
        "mcp_uninstall",
        "mcp_list",
        "mcp_enable",
        "mcp_disable",
        "mcp_restart",
        "mcp_status",
    } <= set(t)
    # Fail-closed: members and mods are not offered the tools, and the handlers refuse them anyway.
    from plugins import mcp_bridge

    for level in (Level.MEMBER, Level.MOD):
        assert not any(x.spec.name.startswith("mcp_") for x in h.tools(inv(level, user="bob")))
        (bridge,) = mcp_bridge._BRIDGES.values()
        out = await bridge.tool_call("mcp_install", inv(level, user="bob"), {"source": ECHO, "name": "echo"})
        assert out.startswith("error:") and "Manage Channels" in out and "Clara-Admin" in out
    assert not any(n.startswith("echo__") for n in tools(h))
    # A local path (a .py file runs with this Python), through the LLM tool.
    out = await t["mcp_install"].handler({"source": ECHO, "name": "echo"})
    assert "Installed echo" in out and "connected" in out, out
    assert await tools(h)["echo__echo"].handler({"text": "hi"}) == "hi"
    assert "echo" in await t["mcp_list"].handler({})
    status = await t["mcp_status"].handler({"name": "echo"})
    assert "echo: connected" in status and "echo__echo" in status
    assert "Disabled" in await t["mcp_disable"].handler({"name": "echo"})
    assert "echo__echo" not in tools(h)
    assert "connected" in await t["mcp_enable"].handler({"name": "echo"})
    assert "Restarted" in await t["mcp_restart"].handler({"name": "echo"})
    assert (await t["mcp_restart"].handler({"name": "nope"})).startswith("error: no MCP server")
    # npm into a per-server prefix (a local package folder, so the test runs offline).
    out = await t["mcp_install"].handler({"source": f"npm:{NPM_ECHO}", "name": "shouter"})
    assert "Installed shouter" in out and "connected" in out, out
    prefix = store.config.data_dir / "plugins" / "mcp_bridge" / "servers" / "shouter"
    assert (prefix / "node_modules" / "clara-test-npm-echo" / "server.js").is_file()
    assert await tools(h)["shouter__shout"].handler({"text": "hey"}) == "HEY"
    # Clear errors for what can't be installed here.
    assert "no such file" in await t["mcp_install"].handler({"source": str(tmp_path / "missing.py")})
    assert "can't tell" in await t["mcp_install"].handler({"source": "not a source!"})
    monkeypatch.setenv("PATH", str(tmp_path))  # no git, no docker on this PATH
    assert "`git` is not installed" in await t["mcp_install"].handler({"source": "github.com/user/mcp-thing"})
    assert "`docker` is not installed" in await t["mcp_install"].handler({"source": "docker:mcp/everything"})
    monkeypatch.undo()
    # Restart: the configured servers' tools are there for the very first call, no waiting loop.
    await h.unload("mcp_bridge")
    assert (await h.load("mcp_bridge")).ok
    first = tools(h)
    assert "echo__echo" in first and "shouter__shout" in first
    assert await first["echo__echo"].handler({"text": "first"}) == "first"
    assert await first["shouter__shout"].handler({"text": "first"}) == "FIRST"
    # Uninstall removes the per-server prefix.
    assert "Removed" in await tools(h)["mcp_uninstall"].handler({"name": "shouter"})
    assert not prefix.exists() and "shouter__shout" not in tools(h)


async def test_first_chat_message_after_restart_can_use_a_configured_server(store, stub_llm_engine_parts):
    """Through the chat engine: a server configured before the restart answers the first message."""
    h, make_engine, stub = stub_llm_engine_parts
    await h.run_command(inv(), "mcp", f"add echo stdio {sys.executable} {ECHO}")
    await h.unload("mcp_bridge")
    await store.settings.delete("plugin:mcp_bridge", "global", "tool_cache")  # a listing never cached
    assert (await h.load("mcp_bridge")).ok
    from tests.llm_stub import Reply, tool_call

    stub.script([tool_call("echo__echo", {"text": "ping"}), Reply(text="It said ping.")])
    engine = make_engine(h)
    try:
        r = await engine.handle(
            IncomingMessage(user_id="admin1", display_name="A", channel_id="d", text="echo ping", is_dm=True, level=2)
        )
    finally:
        await engine.aclose()
    assert r.text == "It said ping."
    tool_msgs = [m for m in stub.requests[1]["messages"] if m["role"] == "tool"]
    assert tool_msgs and tool_msgs[0]["content"] == "ping"


@pytest.fixture
async def stub_llm_engine_parts(store, backend, tmp_path):
    if backend != "sqlite":
        pytest.skip("child-process behaviour does not depend on the database")
    from clara.llm import OpenAICompatProvider
    from tests.llm_stub import LLMStub

    for key, value in (("call_timeout", 15), ("connect_timeout", 15), ("retry_after", 0)):
        await store.settings.set("plugin:mcp_bridge", "global", key, value)
    h = PluginHost(store, packages="plugins")
    assert (await h.load("mcp_bridge")).ok
    with LLMStub() as stub:
        llm = OpenAICompatProvider(base_url=stub.base_url, api_key="k", model="base-model", timeout=10, max_retries=0)

        def make_engine(host):
            return ChatEngine(store, llm, settings=Settings(CLARA_DATA_DIR=tmp_path), plugins=host)

        yield h, make_engine, stub
        await llm.aclose()
    await h.aclose()
