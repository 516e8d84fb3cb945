"""One clock: every timestamp the store, the sessions, the job queue, settings, the plugin host and
the MCP service write comes from the clock injected into the store, and no module outside
storage/clock.py reads the wall clock (a ruff banned-api rule, checked here so it cannot be dropped)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text

from clara.chat import ChatEngine, IncomingMessage
from clara.plugin_host import PluginHost
from clara.settings import Settings
from storage.clock import ManualClock

ROOT = Path(__file__).resolve().parent.parent
# Far from today in both directions: a store that read the wall clock anywhere would show it.
FUTURE = datetime(2031, 3, 4, 5, 6, 7, tzinfo=UTC)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(FUTURE)


def _ruff() -> str:
    exe = Path(sys.executable).with_name("ruff")
    return str(exe) if exe.exists() else (shutil.which("ruff") or "ruff")


@pytest.mark.parametrize(
    "snippet",
    [
        "from datetime import datetime, UTC\nx = datetime.now(UTC)\n",
        "import datetime\nx = datetime.datetime.utcnow()\n",
        "from datetime import date\nx = date.today()\n",
        "import time\nx = time.time()\n",
        "import discord\nx = discord.utils.utcnow()\n",
    ],
)
@pytest.mark.parametrize("where", ["clara/x.py", "storage/x.py", "plugins/invoices/x.py"])
def test_wall_clock_reads_are_refused_by_the_linter(snippet, where):
    res = subprocess.run(
        [_ruff(), "check", "--no-cache", "--select", "TID251", "--stdin-filename", where, "-"],
        input=snippet,
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert res.returncode == 1 and "TID251" in res.stdout, res.stdout + res.stderr


def test_the_clock_module_and_monotonic_timers_are_allowed():
    for where, snippet in [
        ("storage/clock.py", "from datetime import datetime, UTC\nx = datetime.now(UTC)\n"),
        ("clara/x.py", "import time\nx = time.monotonic()\n"),
    ]:
        res = subprocess.run(
            [_ruff(), "check", "--no-cache", "--select", "TID251", "--stdin-filename", where, "-"],
            input=snippet,
            capture_output=True,
            text=True,
            cwd=ROOT,
        )
        assert res.returncode == 0, res.stdout


def test_manual_clock_moves_only_when_told():
    c = ManualClock(FUTURE)
    assert c() == FUTURE and c() == FUTURE
    assert c.advance(timedelta(hours=2)) == FUTURE + timedelta(hours=2)
    c.set(FUTURE)
    assert c.t == FUTURE
    ticking = ManualClock(FUTURE, ticking=True)
    assert FUTURE <= ticking() < FUTURE + timedelta(seconds=60)
    with pytest.raises(ValueError):
        ManualClock(datetime(2030, 1, 1))  # naive: refused


async def test_every_stored_timestamp_comes_from_the_injected_clock(store, clock, tmp_path):
    """A chat turn, a reply, a remembered fact, its entity, history, jobs, settings, a plugin's
    scheduled row and an MCP agent profile: all stamped with the injected clock's time."""
    assert store.clock is clock
    host = PluginHost(store, packages="plugins")
    assert (await host.load("reminders")).ok
    engine = ChatEngine(store, settings=Settings(CLARA_DATA_DIR=tmp_path), plugins=host)
    try:
        m = IncomingMessage(
            user_id="alice", display_name="Alice", channel_id="c1", text="My sister Anna lives in Porto"
        )
        assert not (await engine.handle(m)).error
        r = IncomingMessage(user_id="alice", display_name="Alice", channel_id="c1", text="!remember I like green tea")
        assert not (await engine.handle(r)).error
        rem = IncomingMessage(
            user_id="alice", display_name="Alice", channel_id="c1", text="!remind me in 2 hours to call Anna"
        )
        assert not (await engine.handle(rem)).error
        await engine.drain()
        from clara.mcp_server.service import MemoryService

        svc = MemoryService(store)
        await svc.register_agent("scout")
        await store.settings.set("core", "user:alice", "probe", 1)
    finally:
        await engine.aclose()
        await host.aclose()
    stamps: list[tuple[str, datetime]] = []
    columns = {
        "facts": ["created_at", "updated_at", "valid_from", "indexed_at"],
        "messages": ["created_at"],
        "sessions": ["started_at", "last_activity_at"],
        "fact_history": ["at"],
        "entities": ["created_at"],
        "scopes": ["created_at"],
        "settings": ["updated_at"],
        "index_jobs": ["enqueued_at"],
        "memory_jobs": ["created_at"],
        "reminders_reminders": ["created_at"],
    }
    async with store.engines.reader.connect() as conn:
        for table, cols in columns.items():
            for col in cols:
                for (v,) in (await conn.execute(text(f"SELECT {col} FROM {table} WHERE {col} IS NOT NULL"))).all():
                    if isinstance(v, str):
                        v = datetime.fromisoformat(v)
                    stamps.append((f"{table}.{col}", v if v.tzinfo else v.replace(tzinfo=UTC)))
    seen = {name for name, _ in stamps}
    for must in (
        "facts.created_at",
        "messages.created_at",
        "sessions.started_at",
        "fact_history.at",
        "scopes.created_at",
    ):
        assert must in seen, must
    wrong = [(n, v) for n, v in stamps if v != FUTURE]
    assert not wrong, f"timestamps not from the injected clock: {wrong[:5]}"
    profile = await store.settings.get("mcp", "agent:scout", "profile")
    assert profile["last_seen"].startswith("2031-03-04")
