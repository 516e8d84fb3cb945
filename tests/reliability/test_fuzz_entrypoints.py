"""No input stops Clara: every entry point turns bad input into a one-line, specific refusal and
carries on with the next input. First the defects found (each test failed before its fix), then
property-based fuzzing of each entry point through its real transport code: terminal stdin
bytes, prefix commands, MCP tools through the `mcp` client, dashboard forms and query strings,
CLI arguments, import files, and the fake Discord.

Invariants checked throughout: the next input is answered; no traceback or bare exception text
reaches the person, agent or operator's terminal; rejected input writes nothing; the store stays
consistent (no orphan rows)."""

from __future__ import annotations

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
