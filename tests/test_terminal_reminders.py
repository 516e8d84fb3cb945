"""`clara chat` runs the plugins' interval jobs: a reminder set in a terminal session is delivered
in that session (the real terminal loop, a pipe for stdin, the store's ManualClock)."""

from __future__ import annotations

import asyncio
import io
import os
from datetime import UTC, datetime, timedelta

import pytest
from rich.console import Console

from clara.terminal import run_chat
from storage.clock import ManualClock

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


@pytest.fixture
def backend():
    return "sqlite"


async def _until(buf: io.StringIO, needle: str, timeout: float = 30) -> str:
    for _ in range(int(timeout * 10)):
        if needle in buf.getvalue():
            return buf.getvalue()
        await asyncio.sleep(0.1)
    raise AssertionError(f"{needle!r} not printed within {timeout:g} s: {buf.getvalue()[-500:]}")


async def test_reminder_set_in_the_terminal_is_delivered_there(store, clock, monkeypatch):
    monkeypatch.delenv("LLM_PROVIDER", raising=False)
    r, w = os.pipe()
    stdin, feed = os.fdopen(r, "rb"), os.fdopen(w, "wb", buffering=0)
    buf = io.StringIO()
    console = Console(file=buf, width=200, force_terminal=False)
    chat = asyncio.create_task(
        run_chat(
            user="you",
            channel="terminal",
            dm=False,
            console=console,
            extra_scopes=[],
            stdin=stdin,
            store=store,
            tick_seconds=0.2,
        )
    )
    try:
        feed.write(b"!remind me in 1 minute to stretch my legs\n")
        out = await _until(buf, "clara>")
        assert "stretch" in out and "error" not in out.lower(), out
        await asyncio.sleep(0.6)  # ticks before it is due deliver nothing
        assert "clara (proactive)>" not in buf.getvalue()
        clock.advance(timedelta(minutes=2))
        out = await _until(buf, "clara (proactive)>")
        assert "stretch my legs" in out.split("clara (proactive)>")[1]
    finally:
        feed.close()
        await asyncio.wait_for(chat, 60)
        stdin.close()
