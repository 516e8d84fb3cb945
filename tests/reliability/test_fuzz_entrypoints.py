"""No input stops Clara: every entry point turns bad input into a one-line, specific refusal and
carries on with the next input. First the defects found (each test failed before its fix), then
property-based fuzzing of each entry point through its real transport code: terminal stdin
bytes, prefix commands, MCP tools through the `mcp` client, dashboard forms and query strings,
CLI arguments, import files, and the fake Discord.

Invariants checked throughout: the next input is answered; no traceback or bare exception text
reaches the person, agent or operator's terminal; rejected input writes nothing; the store stays
consistent (no orphan rows)."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from clara.chat import ChatEngine, IncomingMessage
from clara.settings import Settings
from clara.terminal import MAX_LINE_BYTES, read_line
from storage import InvalidInput

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(600)


def clara(args: list[str], data_dir: Path, stdin: bytes | None = None, timeout: int = 180):
    """Run the `clara` command line with bytes on stdin (output decoded leniently)."""
    env = {**os.environ, "CLARA_DATA_DIR": str(data_dir), "COLUMNS": "200"}
    env.pop("DATABASE_URL", None)
    res = subprocess.run(
        [sys.executable, "-m", "clara.cli", *args], input=stdin, capture_output=True, env=env, cwd=ROOT, timeout=timeout
    )
    res.out = res.stdout.decode("utf-8", "replace")
    res.err = res.stderr.decode("utf-8", "replace")
    return res


def msg(text: str, user: str = "alice", **kw) -> IncomingMessage:
    return IncomingMessage(user_id=user, display_name=user, channel_id="general", text=text, **kw)


@pytest.fixture
async def engine(store, tmp_path):
    eng = ChatEngine(store, settings=Settings(CLARA_DATA_DIR=tmp_path))
    yield eng
    await eng.aclose()


# ------------------------------------------------------------------------------ found defects
def test_terminal_refuses_an_invalid_utf8_line_and_answers_the_next(tmp_path):
    # Before: TypeError from the tokenizer (lone surrogates from stdin's surrogateescape), exit 1,
    # every later line lost.
    res = clara(
        ["chat", "--user", "m"], tmp_path, b"hello \xc3\x28 bad \xa0\nI live in Lisbon\n!recall where do I live\n"
    )
    assert res.returncode == 0, res.err
    assert "not valid UTF-8 text (byte 0xC3 at position 7" in res.out
    assert "Lisbon" in res.out.split("where do I live")[-1]
    assert "Traceback" not in res.out + res.err and "TypeError" not in res.out + res.err


def test_terminal_line_reader_bounds_memory_and_names_the_limit():
    big = b"x" * (MAX_LINE_BYTES * 3) + b"\nnext\n"
    stream = io.BytesIO(big)
    text, problem = read_line(stream)
    assert text == "" and f"{MAX_LINE_BYTES * 3 + 1:,} bytes" in problem and "8,000 characters" in problem
    assert read_line(stream) == ("next\n", None)
    assert read_line(stream) is None
    assert read_line(io.BytesIO(b"caf\xc3\xa9 ok\r\n")) == ("café ok\r\n", None)
    assert "byte 0xFF at position 1 of 2" in read_line(io.BytesIO(b"\xff\n"))[1]


async def test_lone_surrogates_are_refused_before_the_store_and_the_embedder(store, engine):
    await store.ensure_scope("user:alice", "user", owner="alice")
    for bad in ["hello \udcc3( bad \udca0", "x\ud800", "\ud83d\ude00\ude00"]:
        with pytest.raises(InvalidInput, match="lone surrogate"):
            await store.add(bad, "user:alice")
        with pytest.raises(InvalidInput, match="lone surrogate"):
            await store.recall(bad, ["user:alice"])  # before: TypeError from the tokenizer
        for text in (bad, f"!remember {bad}", f"!recall {bad}"):
            reply = await engine.handle(msg(text))
            assert reply.error and "lone surrogate" in reply.text and "Nothing was stored" in reply.text
    # A surrogate *pair* is one character spelled in UTF-16: joined, stored, recalled.
    fid = await store.add("party \ud83c\udf89 time", "user:alice")
    assert (await store.get(fid)).content == "party 🎉 time"
    assert await store.count_facts() == 1


async def test_memories_and_forget_take_any_number_without_overflow(store, engine):
    # Before: OverflowError (Python int too large to convert to SQLite INTEGER) out of handle().
    for text, expect in [
        ("!memories 99999999999999999999", "There is no page 99999999999999999999"),
        ("!memories " + "9" * 5000, "There is no page 999"),
        ("!memories 100001", "There is no page 100001"),
        ("!memories ²", "Usage: !memories"),  # a digit to str.isdigit, not to int()
        ("!memories 00", "Usage: !memories"),
        ("!forget ²", "Usage: !forget"),
        ("!forget #" + "9" * 5000, "I have no memory #999"),
        ("!forget " + "9" * 40, "There is no item 999"),
        ("!forget #9223372036854775808", "I have no memory #9223372036854775808"),
    ]:
        reply = await engine.handle(msg(text))
        assert reply.error and reply.text.startswith(expect), (text[:40], reply.text)
    assert not (await engine.handle(msg("!memories 2"))).error


# ------------------------------------------------------------------------------ MCP helpers
def _unbounded(schema: dict, path: str = "") -> list[str]:
    """Paths in a JSON schema where a string, list, integer or object has no bound."""
    out = []
    for key in ("anyOf", "oneOf", "allOf"):
        for i, sub in enumerate(schema.get(key, [])):
            out += _unbounded(sub, f"{path}|{i}")
    kind = schema.get("type")
    if kind == "string" and "maxLength" not in schema and "enum" not in schema:
        out.append(f"{path}: string without maxLength")
    if kind == "array":
        if "maxItems" not in schema:
            out.append(f"{path}: array without maxItems")
        out += _unbounded(schema.get("items", {}), f"{path}[]")
    if kind == "integer" and ("minimum" not in schema or "maximum" not in schema):
        out.append(f"{path}: integer without minimum/maximum")
    if kind == "object":
        for name, sub in schema.get("properties", {}).items():
            out += _unbounded(sub, f"{path}.{name}")
        extra = schema.get("additionalProperties")
        if extra not in (None, False):
            if "maxProperties" not in schema:
                out.append(f"{path}: object without maxProperties")
            if isinstance(extra, dict):
                out += _unbounded(extra, f"{path}.*")
            names = schema.get("propertyNames", {})
            if "maxLength" not in names and "enum" not in names:
                out.append(f"{path}: object keys without maxLength")
    return out


async def entity_rows(store) -> int:
    from sqlalchemy import func, select

    from storage.models import EntityRow

    async with store.engines.reader.connect() as conn:
        return (await conn.execute(select(func.count()).select_from(EntityRow))).scalar_one()


@contextlib.asynccontextmanager
async def mcp_client(store, agent: str = "coder"):
    """The real `mcp` client on the server in-process (as tests/test_mcp.py)."""
    from mcp import Client

    from clara.mcp_server import MemoryService, stdio_server

    service = MemoryService(store)
    try:
        async with Client(stdio_server(service, agent)) as client:
            client.service = service
            yield client
    finally:
        await service.aclose()


async def tool(client, name: str, **args) -> tuple[bool, object]:
    res = await client.call_tool(name, args)
    return (True, res.content[0].text) if res.is_error else (False, res.structured_content)


async def test_every_mcp_tool_argument_is_bounded_in_its_input_schema(store):
    async with mcp_client(store) as mcp:
        tools = (await mcp.list_tools()).tools
    assert len(tools) == 8
    for t in tools:
        assert _unbounded(t.input_schema) == [], t.name


async def test_mcp_numbers_beyond_64_bits_get_a_clear_error_and_no_traceback(store, caplog):
    async with mcp_client(store) as mcp:
        await _numbers_beyond_64_bits(mcp, caplog)


async def _numbers_beyond_64_bits(mcp, caplog):
    # Before: a bare "Error executing tool memory_query_raw" for the agent and a traceback
    # (OverflowError: Python int too large to convert to SQLite INTEGER) in the server log.
    await tool(mcp, "memory_store_fact", content="the deploy key rotates monthly")
    for filters in ({"id": {"eq": 10**30}}, {"id": 10**30}, {"id": {"in": [1, -(10**20)]}}, {"id": {"gt": 2**63}}):
        err, text = await tool(mcp, "memory_query_raw", table="facts", filters=filters)
        assert err and "must be from -9,223,372,036,854,775,808 to 9,223,372,036,854,775,807" in text, text
    err, text = await tool(mcp, "memory_link_entity", entity="Falcon", fact_id=10**30)
    assert err and "fact_id: Input should be less than or equal to 9223372036854775807" in text
    err, text = await tool(mcp, "memory_recall", query="key", k=10**30)
    assert err and "k: Input should be less than or equal to 50" in text and "\n" not in text
    assert not [r for r in caplog.records if r.levelname == "ERROR"], [r.getMessage() for r in caplog.records]
    ok = await tool(mcp, "memory_query_raw", table="facts", filters={"id": {"lt": 2**63 - 1}})
    assert not ok[0] and len(ok[1]["rows"]) == 1


async def test_mcp_store_fact_refuses_too_many_or_too_long_entity_names(store):
    async with mcp_client(store) as mcp:
        await _entity_limits(mcp, store)


async def _entity_limits(mcp, store):
    # Before: 10,000 names in one call made 10,001 entity rows; a 1 MB name was cut to 200 chars.
    for args, expect in [
        ({"entities": [f"e{i}" for i in range(10_000)]}, "entities: List should have at most 50 items"),
        ({"entities": ["x" * 1_000_000]}, "entities.0: String should have at most 200 characters"),
        ({"tags": ["t"] * 21}, "tags: List should have at most 20 items"),
    ]:
        err, text = await tool(mcp, "memory_store_fact", content="a fact", **args)
        assert err and expect in text, text
    service = mcp.service  # in-process callers get the same limits, named
    with pytest.raises(InvalidInput, match=r"too many entities: 10,000 \(at most 50\)"):
        await service.store_fact("coder", "a fact", entities=[f"e{i}" for i in range(10_000)])
    with pytest.raises(InvalidInput, match=r"entity name is too long: 1,000,000 characters \(max 200\)"):
        await service.store_fact("coder", "a fact", entities=["x" * 1_000_000])
    with pytest.raises(InvalidInput, match=r"entity name is too long: 201 characters \(max 200\)"):
        await service.link_entity("coder", "y" * 201)
    with pytest.raises(InvalidInput, match=r"too many capabilities: 21 \(at most 20\)"):
        await service.register_agent("coder", capabilities=["c"] * 21)
    assert await store.count_facts() == 0 and await entity_rows(store) == 0
    got = await tool(mcp, "memory_store_fact", content="a fact", entities=["n" * 200, "Falcon"])
    assert not got[0] and await entity_rows(store) == 2


# ------------------------------------------------------------------------------ dashboard, CLI
@contextlib.asynccontextmanager
async def dashboard(store, **state_kw):
    """A logged-in httpx client on the dashboard app (as tests/test_dashboard.py drives it)."""
    from tests.test_dashboard import client_for, login, make_state

    state = make_state(store, **state_kw)
    try:
        async with client_for(state) as client:
            client.csrf = await login(client)
            yield client
    finally:
        state.errors.uninstall()


async def test_dashboard_ids_pages_and_query_strings_beyond_their_bounds_get_a_400(store):
    # Before: OverflowError (a 500 and a traceback) for 20-digit ids and pages; the search box was
    # cut to 500 characters without a word.
    await store.ensure_scope("user:alice", "user", owner="alice")
    await store.add("alice waters the ferns on sundays", "user:alice")
    big = "9" * 20
    async with dashboard(store) as c:
        for path, expect in [
            (f"/entities/{big}", "not an id"),
            (f"/sessions/{big}", "not an id"),
            (f"/facts/{big}", "not an id"),
            (f"/memories?page={big}", "page must be a number from 0 to 100,000"),
            ("/memories?page=-1", "page must be a number"),
            ("/memories?q=" + "x" * 501, "query is too long: 501 characters (max 500)"),
            ("/memories?scope=%00", "scope is not plain text"),
            ("/entities?q=a%00b", "query is not plain text"),
            ("/sessions?user=" + "u" * 201, "user is too long: 201 characters (max 200)"),
        ]:
            r = await c.get(path)
            assert r.status_code == 400 and expect in r.text, (path[:60], r.status_code, r.text[-300:])
        r = await c.post("/entities/merge", data={"keep": big, "merge": "1", "csrf_token": c.csrf})
        assert r.status_code == 400 and "not an id" in r.text
        assert "ferns" in (await c.get("/memories?q=ferns")).text


def test_cli_numbers_beyond_their_bounds_are_usage_errors(tmp_path):
    for args, expect in [
        (["memory", "list", "--user", "a", "--limit", "9" * 20], "less than or equal to 100000"),
        (["memory", "list", "--user", "a", "--offset", str(2**63)], "less than or equal to"),
        (["memory", "recall", "x", "--user", "a", "-k", "0"], "greater than or equal to 1"),
        (["bench", "scale", "--facts", "1e5"], "--facts takes comma-separated sizes"),
        (["mcp", "serve", "--agent", "bad/name"], "bad agent name"),
        (["chat", "--user", "bad%name"], "--user 'bad%name' is not a usable name"),
        (["memory", "import", "jsonl", str(tmp_path / "missing.jsonl")], "No such file or directory"),
    ]:
        res = clara(args, tmp_path, b"")
        assert res.returncode == 2 and expect in " ".join(res.err.split()), (args, res.err[-400:])
        assert "Traceback" not in res.out + res.err
