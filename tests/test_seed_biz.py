"""Seed parity (Fizko brain, AI receptionist) through the chat engine: `!remember key=…` updates
instead of duplicating, company (guild) memories shared within one server only, importance on
the 1–10 scale, the `remember` tool with a key, `remember_preference` / `recall_preference`,
and a `tool_execution` record for every tool call (never recalled into chat). Each test that
recalls also checks that another user's private facts never come back."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from clara.chat import ChatEngine, IncomingMessage
from clara.llm import OpenAICompatProvider
from clara.settings import Settings
from storage.clock import ManualClock
from tests.conftest import assert_private
from tests.llm_stub import LLMStub, Reply, json_reply, tool_call

NOW = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(NOW, ticking=True)


def dm(user: str, text: str) -> IncomingMessage:
    return IncomingMessage(user_id=user, display_name=user.title(), channel_id=f"dm-{user}", text=text, is_dm=True)


def in_server(user: str, text: str, guild: str = "g1", channel: str = "c1") -> IncomingMessage:
    return IncomingMessage(user_id=user, display_name=user.title(), channel_id=channel, text=text, guild_id=guild)


async def test_remember_with_a_key_updates_never_duplicates(store, tmp_path):
    engine = ChatEngine(store, None, settings=Settings(CLARA_DATA_DIR=tmp_path))
    try:
        r = await engine.handle(dm("alice", "!remember key=favourite-color importance=9 My favourite colour is blue"))
        assert not r.error and "as `favourite-color`" in r.text and "private to you" in r.text, r.text
        first = r.stored_fact_id
        r = await engine.handle(dm("alice", "!remember key=Favourite-Color My favourite colour is green"))
        assert not r.error and r.stored_fact_id == first and "Updated `favourite-color`" in r.text, r.text
        r = await engine.handle(dm("alice", "!remember key=favourite-color My favourite colour is green"))
        assert r.stored_fact_id == first and "already remember" in r.text
        facts = await store.list_facts(["user:alice"])
        assert [f.content for f in facts if f.slug == "favourite-color"] == ["My favourite colour is green"]
        assert [h.new_content for h in await store.history(first)][-1] == "My favourite colour is green"
        listing = (await engine.handle(dm("alice", "!memories"))).text
        assert "My favourite colour is green" in listing and "blue" not in listing
        assert "importance 7/10, key `favourite-color`" in listing, listing
        await engine.handle(dm("alice", "!remember importance=2 I once had a goldfish"))
        assert "I once had a goldfish  — " in (listing := (await engine.handle(dm("alice", "!memories"))).text)
        assert "importance 2/10" in listing
        # Bad keys and importances: one clear error, nothing written.
        before = len(await store.list_facts(["user:alice"]))
        for bad, says in [
            ("!remember key=two words", None),  # "words" is text: fine, a key "two"
            ("!remember key=bad*key Something", "not a valid key"),
            ("!remember importance=11 Something", "from 1 to 10"),
            ("!remember importance=high Something", "from 1 to 10"),
            ("!remember key=only-a-key", "Usage"),
            ("!remember --company Our tax regime is ProPyme", "Company memories belong to a server"),
        ]:
            r = await engine.handle(dm("alice", bad))
            if says is None:
                assert not r.error
                before += 1
                continue
            assert r.error and says in r.text and "Traceback" not in r.text, (bad, r.text)
        assert len(await store.list_facts(["user:alice"])) == before
        # Bob's key of the same name is his own fact; neither sees the other's.
        r = await engine.handle(dm("bob", "!remember key=favourite-color Red, always red"))
        assert r.stored_fact_id != first
        assert "green" not in (await engine.handle(dm("bob", "!recall favourite colour"))).text
        await assert_private(store, "favourite colour", "bob", "user:alice")
        await assert_private(store, "favourite colour", "alice", "user:bob")
    finally:
        await engine.aclose()


async def test_company_memories_are_shared_within_one_server_only(store, tmp_path):
    engine = ChatEngine(store, None, settings=Settings(CLARA_DATA_DIR=tmp_path))
    try:
        await engine.handle(dm("alice", "!remember My salary is 4200 euros"))
        r = await engine.handle(
            in_server("alice", "!remember --company key=company-tax-regime The tax regime is ProPyme")
        )
        assert not r.error and "shared with everyone in this server" in r.text, r.text
        fid = r.stored_fact_id
        assert (await store.get(fid)).scope_id == "guild:g1"
        # Carol, in another channel of the same server, recalls it; the update keeps one fact.
        hit = await engine.handle(in_server("carol", "!recall tax regime", channel="c2"))
        assert "The tax regime is ProPyme" in hit.text and "company" in hit.text, hit.text
        r = await engine.handle(
            in_server("carol", "!remember --company key=company-tax-regime The tax regime is General")
        )
        assert r.stored_fact_id == fid
        assert "General" in (await engine.handle(in_server("alice", "!recall tax regime"))).text
        # Dave in another server and Carol in a DM don't get it; nobody gets Alice's private note.
        assert "regime" not in (await engine.handle(in_server("dave", "!recall tax regime", guild="g2"))).text
        assert "regime" not in (await engine.handle(dm("carol", "!recall tax regime"))).text
        assert "4200" not in (await engine.handle(in_server("carol", "!recall salary euros"))).text
        await assert_private(store, "salary euros", "carol", "user:alice")
        await assert_private(store, "tax regime", "dave", "guild:g1")
        # Alice's !memories (in the server) lists the company memory she created, marked "company".
        listing = (await engine.handle(in_server("alice", "!memories"))).text
        assert "The tax regime is General" in listing and "company, importance 7/10" in listing, listing
    finally:
        await engine.aclose()


class Peer:
    """Plays the model: chat requests (those offering tools) take the queued replies; memory
    extraction gets no facts; anything else a short answer."""

    def __init__(self):
        self.chat: list[Reply] = []

    def __call__(self, body):
        if body.get("tools") and self.chat:
            return self.chat.pop(0)
        if body.get("response_format"):
            return json_reply({"facts": []})
        return Reply(text="Done.")


async def test_tools_keys_preferences_and_tool_execution_records(store, tmp_path):
    peer = Peer()
    with LLMStub(responder=peer) as stub:
        llm = OpenAICompatProvider(base_url=stub.base_url, api_key="k", model="m", timeout=10, max_retries=0)
        engine = ChatEngine(store, llm, settings=Settings(CLARA_DATA_DIR=tmp_path))
        try:
            peer.chat += [
                tool_call("remember_preference", {"key": "preferred_time", "value": "morning", "importance": 8}),
                Reply(text="Noted: mornings."),
                tool_call("remember_preference", {"key": "preferred_time", "value": "evening"}),
                Reply(text="Noted: evenings."),
                tool_call("recall_preference", {"key": "preferred_time"}),
                Reply(text="You prefer evenings."),
                tool_call("remember", {"text": "Alice's dentist is Dr Ruiz", "key": "dentist", "importance": 6}),
                Reply(text="Saved."),
                tool_call("remember", {"text": "Alice's dentist is Dr Pons", "key": "dentist"}),
                Reply(text="Updated."),
                tool_call("recall_preference", {"key": "bad key!"}),
                Reply(text="Hmm."),
                tool_call("no_such_tool", {}),
                Reply(text="Oops."),
            ]
            for text in ["I prefer mornings", "actually evenings", "when do I like appointments?",
                         "my dentist is Dr Ruiz", "no, Dr Pons", "check", "try"]:  # fmt: skip
                assert not (await engine.handle(dm("alice", text))).error
            prefs = [f for f in await store.list_facts(["user:alice"]) if f.slug == "pref:preferred_time"]
            assert len(prefs) == 1 and prefs[0].kind == "preference" and "evening" in prefs[0].content
            assert prefs[0].importance == 0.8  # 1–10 scale: 8 by default for preferences
            dentist = [f for f in await store.list_facts(["user:alice"]) if f.slug == "dentist"]
            assert [f.content for f in dentist] == ["Alice's dentist is Dr Pons"]
            results = [
                m["content"]
                for req in stub.requests
                if req.get("tools")
                for m in req["messages"]
                if m["role"] == "tool"
            ]
            assert any(r.startswith("preferred_time = evening") for r in results), "\n".join(results)
            assert any("not a valid key" in r for r in results)

            # Every tool call is a tool_execution record: name, arguments, result, duration, error.
            records = await store.list_facts(["user:alice"], kinds=("tool_execution",), limit=50)
            assert len(records) == 7, [r.content for r in records]
            by_tool = [json.loads(r.context) for r in reversed(records)]
            assert [r["tool"] for r in by_tool] == [
                "remember_preference", "remember_preference", "recall_preference",
                "remember", "remember", "recall_preference", "no_such_tool",
            ]  # fmt: skip
            assert all(r["duration_ms"] >= 0 for r in by_tool)
            assert by_tool[0]["arguments"] == {"key": "preferred_time", "value": "morning", "importance": 8}
            assert by_tool[0]["error"] is None and by_tool[0]["result"].startswith("added preference")
            assert "unknown tool" in by_tool[-1]["error"] and "not a valid key" in by_tool[-2]["error"]
            # Records are never recalled into a conversation nor listed by !memories.
            assert all(f.kind != "tool_execution" for f in await store.list_facts(["user:alice"], limit=100))
            hits = await engine.memory.recall(
                "tool remember_preference preferred_time", await engine.memory.where(dm("alice", "x")), k=20
            )
            assert all(h.fact.kind != "tool_execution" for h in hits)
            assert "tool remember" not in (await engine.handle(dm("alice", "!memories"))).text

            # Bob's model can't read Alice's preference: his key is his own.
            peer.chat += [tool_call("recall_preference", {"key": "preferred_time"}), Reply(text="None.")]
            await engine.handle(dm("bob", "what time do I like?"))
            chat = [req for req in stub.requests if req.get("tools")]
            last = [m["content"] for m in chat[-1]["messages"] if m["role"] == "tool"]
            assert last == ["no preference 'preferred_time' saved for Bob"]
            await assert_private(store, "preferred time evening", "bob", "user:alice")
            await engine.drain()
        finally:
            await engine.aclose()
            await llm.aclose()


# ------------------------------------------------------------------ mem0 import + MCP, with slugs
@pytest.fixture
def cli_env(tmp_path, monkeypatch):
    from clara.settings import get_settings

    for var in ("DATABASE_URL", "QDRANT_URL", "DISCORD_BOT_TOKEN", "LLM_PROVIDER"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("CLARA_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)
    get_settings.cache_clear()
    yield tmp_path / "data"
    get_settings.cache_clear()


async def test_slugs_survive_mem0_import_and_mcp_writes_update_never_duplicate(cli_env, tmp_path, embedder):
    import asyncio

    from mcp import Client
    from typer.testing import CliRunner

    from clara.cli import app
    from clara.mcp_server import MemoryService, stdio_server
    from storage import FactStore, StoreConfig

    export = tmp_path / "mem0.json"
    export.write_text(
        json.dumps(
            [
                {
                    "id": "m-1",
                    "memory": "Tax regime: ProPyme General",
                    "agent_id": "fizko",
                    "metadata": {"slug": "company_tax_regime", "category": "company_tax"},
                },
                {"id": "m-2", "memory": "Alice earns 4200 a month", "user_id": "alice"},
            ]
        )
    )
    done = await asyncio.to_thread(CliRunner().invoke, app, ["import", "mem0", str(export)])
    assert done.exit_code == 0, done.output

    def cli(*args):
        return CliRunner().invoke(app, list(args))

    add = ["memory", "add", "--user", "alice", "--slug", "contact", "--importance", "8"]
    assert "added #" in (await asyncio.to_thread(cli, *add, "Alice prefers email")).output
    assert "updated #" in (await asyncio.to_thread(cli, *add, "Alice prefers phone calls")).output
    bad = await asyncio.to_thread(cli, *add[:-1], "11", "x")
    assert bad.exit_code == 2 and "Traceback" not in bad.output
    listed = (await asyncio.to_thread(cli, "memory", "list", "--user", "alice")).output
    assert "phone calls" in listed and "email" not in listed and " 8 " in listed, listed
    async with await FactStore.open(StoreConfig(data_dir=cli_env), embedder=embedder) as store:
        imported = await store.find_slug("agent:fizko", "company_tax_regime")
        assert imported is not None and imported.content == "Tax regime: ProPyme General"
        svc = MemoryService(store)
        try:
            async with Client(stdio_server(svc, "fizko")) as fizko:

                async def tool(name, **args):
                    res = await fizko.call_tool(name, args)
                    return res.is_error, (res.content[0].text if res.is_error else res.structured_content)

                err, got = await tool(
                    "memory_store_fact", content="Tax regime: Régimen General", slug="company_tax_regime", importance=9
                )
                assert not err and got["fact_id"] == imported.id and got["outcome"] == "updated", got
                err, got = await tool(
                    "memory_store_facts",
                    facts=[
                        {"slug": "company_tax_regime", "content": "Tax regime: Régimen General", "importance": 9},
                        {
                            "slug": "company_activity",
                            "content": "Activity: software development",
                            "kind": "biographical",
                        },
                        {"slug": "company_activity", "content": "Activity: software consulting"},
                        {"slug": "bad slug!", "content": "refused"},
                        {"slug": "company_start_date", "content": ""},
                        {"slug": "company_size", "content": "12 people", "importance": 0},
                        {"content": "An unkeyed note about the company"},
                    ],
                )
                assert not err, got
                assert (got["saved"], got["failed"]) == (4, 3), got
                assert [(e["index"], e["slug"]) for e in got["errors"]] == [
                    (3, "bad slug!"),
                    (4, "company_start_date"),
                    (5, "company_size"),
                ]
                assert "not a valid key" in got["errors"][0]["error"] and "1 to 10" in got["errors"][2]["error"]
                outcomes = {(r["index"], r.get("slug"), r["outcome"]) for r in got["results"]}
                assert outcomes == {
                    (0, "company_tax_regime", "unchanged"),
                    (1, "company_activity", "added"),
                    (2, "company_activity", "updated"),
                    (6, None, "added"),
                }
                err, msg = await tool("memory_store_fact", content="x", importance=11)
                assert err and "10" in msg
                facts = await store.list_facts(["agent:fizko"], limit=50)
                keyed = sorted((f.slug, f.content) for f in facts if f.slug)
                assert keyed == [
                    ("company_activity", "Activity: software consulting"),
                    ("company_tax_regime", "Tax regime: Régimen General"),
                ]
                await store.drain()
                err, got = await tool("memory_recall", query="tax regime")
                top = got["facts"][0]
                assert top["slug"] == "company_tax_regime" and top["importance"] == 9, top
                err, got = await tool("memory_recall", query="how much does Alice earn")
                assert "4200" not in json.dumps(got)
                await assert_private(store, "Alice earns", "agent:fizko", "user:alice")
        finally:
            await svc.aclose()


# ------------------------------------------------------------------ in-memory database
async def test_in_memory_database_url_works_and_leaves_nothing_behind(tmp_path, embedder, monkeypatch):
    """`sqlite:///:memory:` (the receptionist's test setup): a whole store — migrations, chat,
    recall, vectors — that disappears when closed; the data dir is never touched. Also through
    the CLI (`DATABASE_URL=sqlite:///:memory: clara memory add …`)."""
    import asyncio

    from typer.testing import CliRunner

    from clara.cli import app
    from clara.settings import get_settings
    from storage import FactStore, StoreConfig

    data_dir = tmp_path / "never-created"
    for url in ("sqlite:///:memory:", "sqlite://"):
        store = await FactStore.open(StoreConfig(database_url=url, data_dir=data_dir), embedder=embedder)
        where = store._ephemeral
        engine = ChatEngine(store, None, settings=Settings(CLARA_DATA_DIR=data_dir))
        try:
            r = await engine.handle(dm("alice", "!remember key=favourite-color Blue, like the sea"))
            assert not r.error, r.text
            await engine.handle(dm("bob", "!remember Bob's favourite colour is red"))
            await engine.drain()
            assert "Blue, like the sea" in (await engine.handle(dm("alice", "!recall favourite colour"))).text
            assert "Blue" not in (await engine.handle(dm("bob", "!recall favourite colour"))).text
            await assert_private(store, "favourite colour", "bob", "user:alice")
        finally:
            await engine.aclose()
            await store.aclose()
        assert where is not None and not where.exists()
    assert not data_dir.exists()

    monkeypatch.setenv("DATABASE_URL", "sqlite:///:memory:")
    monkeypatch.setenv("CLARA_DATA_DIR", str(data_dir))
    monkeypatch.chdir(tmp_path)
    get_settings.cache_clear()
    try:
        done = await asyncio.to_thread(CliRunner().invoke, app, ["memory", "add", "Likes tea", "--user", "alice"])
        assert done.exit_code == 0 and "added #1" in done.output, done.output
    finally:
        get_settings.cache_clear()
    assert not (data_dir / "clara.db").exists()


async def test_session_summary_keeps_decisions_and_outstanding_items(store, tmp_path):
    """Bella's session summary: the closed session's summary fact names the decisions and plans
    said in it (recallable afterwards), and stays out of another user's recall."""
    from datetime import timedelta

    engine = ChatEngine(store, None, settings=Settings(CLARA_DATA_DIR=tmp_path))
    try:
        for text in [
            "We decided to use PostgreSQL for the ledger",
            "I plan to call the accountant on Monday",
            "The weather is nice today",
        ]:
            assert not (await engine.handle(dm("alice", text))).error
        await engine.drain()
        kinds = {f.kind for f in await store.list_facts(["user:alice"], limit=50)}
        assert {"decision", "plan"} <= kinds, kinds
        assert await engine.memory.sweep(NOW + timedelta(hours=2))
        await engine.drain()
        summaries = await store.list_facts(["user:alice"], kinds=("summary",))
        assert len(summaries) == 1
        text = summaries[0].content
        assert "Decisions:" in text and "PostgreSQL" in text.split("Decisions:", 1)[1], text
        assert "Outstanding items:" in text and "accountant" in text.split("Outstanding items:", 1)[1], text
        got = (await engine.handle(dm("alice", "!recall decisions ledger"))).text
        assert "PostgreSQL" in got
        assert "PostgreSQL" not in (await engine.handle(dm("bob", "!recall decisions ledger"))).text
        await assert_private(store, "decisions PostgreSQL ledger", "bob", "user:alice")
    finally:
        await engine.aclose()


async def test_long_attachments_are_kept_as_linked_chunks_with_a_summary(store, tmp_path):
    """Bella's memory chunks: a long attachment is stored as parts (slug chunk:<msg>:<file>:<n>)
    plus a summary fact; a question about one passage recalls its part; nobody else recalls it."""
    from clara.messages import Attachment

    filler = [f"Section {i}. The cleaning schedule for site {i} covers floors, windows and bins." for i in range(400)]
    filler[237] = "Section 237. The boiler service contract number is BX-4471, renewed every March."
    manual = "\n\n".join(filler)
    assert len(manual) > 30_000
    engine = ChatEngine(store, None, settings=Settings(CLARA_DATA_DIR=tmp_path))
    try:
        m = dm("alice", "here is the operations manual")
        m.attachments = [Attachment("ops manual.txt", manual)]
        r = await engine.handle(m)
        assert not r.error, r.text
        only = dm("alice", "")
        only.attachments = [Attachment("notes.txt", "\n\n".join(filler[:150]))]  # > 8000: not kept in the message
        assert not (await engine.handle(only)).error
        facts = await store.list_facts(["user:alice"], limit=500)
        parts = [f for f in facts if (f.slug or "").startswith(f"chunk:{r.message_id}:ops_manual.txt:")]
        summary = [f for f in parts if f.slug.endswith(":summary")]
        assert len(summary) == 1 and summary[0].kind == "summary" and "ops manual.txt" in summary[0].content
        body = sorted((f for f in parts if f.kind == "note"), key=lambda f: int(f.slug.rsplit(":", 1)[1]))
        assert len(body) >= 20 and all(len(f.content) <= 1500 for f in body)
        assert "\n\n".join(f.content for f in body) == manual  # nothing lost, in order
        assert all(f.source_message_ids == [r.message_id] for f in body)
        assert any(f.slug.startswith("chunk:") and "notes.txt" in (f.context or "") for f in facts)
        await engine.drain()
        got = (await engine.handle(dm("alice", "!recall boiler service contract number"))).text
        assert "BX-4471" in got, got
        assert "BX-4471" not in (await engine.handle(dm("bob", "!recall boiler service contract number"))).text
        await assert_private(store, "boiler service contract", "bob", "user:alice")
    finally:
        await engine.aclose()
