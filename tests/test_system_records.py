"""System records (seed 003's `system` type): Clara records its own events — sessions opened and
closed, model tier choices and switches, plugins loaded/unloaded/failed/disabled, plugins' own
records — as `system` facts in the scope `agent:clara`; `clara memory list --kind system` shows
them, and they are never recalled into a chat nor readable by a user."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from clara.plugin_host import PluginHost
from clara.system_events import SYSTEM_SCOPE
from tests.conftest import assert_private
from tests.llm_stub import LLMStub
from tests.test_plugins import inv

ROOT = Path(__file__).resolve().parent.parent


def clara(args: list[str], data_dir: Path, stdin: str | None = None, **extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "CLARA_DATA_DIR": str(data_dir), "COLUMNS": "250"}
    for var in ("DATABASE_URL", "CLARA_TABLE_PREFIX", "LLM_PROVIDER"):
        env.pop(var, None)
    return subprocess.run(
        [sys.executable, "-m", "clara.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env={**env, **extra},
        cwd=ROOT,
        timeout=180,
    )


def test_chat_records_sessions_and_plugins_and_never_recalls_them(tmp_path):
    chat = clara(
        ["chat", "--user", "alice"],
        tmp_path,
        "!remember I keep my bike in the plugin shed\nhello there\n!recall plugin loaded session opened\n",
    )
    assert chat.returncode == 0, chat.stderr[-2000:]
    # Recalled into the chat: alice's own note only, never a record of Clara's.
    recall = chat.stdout.split("What I recall about", 1)[1]
    items = [line for line in recall.splitlines() if re.match(r"\d+\. ", line)]
    assert len(items) == 1 and "bike" in items[0], chat.stdout
    assert "agent:clara" not in chat.stdout and "plugin.load" not in chat.stdout
    listed = clara(["memory", "list", "--kind", "system"], tmp_path)
    assert listed.returncode == 0, listed.stderr[-2000:]
    out = listed.stdout
    for line in (
        "plugin.load: plugin invoices",
        "plugin.load: plugin reminders",
        "session.open: session 1 of alice in terminal opened",
        "plugin.unload: plugin invoices unloaded",
    ):
        assert line in out, out
    assert out.count("agent:clara") >= 9 and "bike" not in out
    # Not listed with the user's memories, nor readable by her.
    mine = clara(["memory", "list", "--user", "alice"], tmp_path).stdout
    assert "bike" in mine and "plugin.load" not in mine and "session.open" not in mine
    # Asked for by kind in her scope: nothing (the records live in agent:clara only).
    assert "session.open" not in clara(["memory", "list", "--user", "alice", "--kind", "system"], tmp_path).stdout


def test_tier_choice_and_switch_are_recorded(tmp_path):
    with LLMStub() as stub:
        stub.responder = lambda body: "[[NEEDS_TOOLS]]" if body.get("model") == "low-m" else "It is late."
        env = {
            "LLM_PROVIDER": "openai",
            "CUSTOM_OPENAI_BASE_URL": stub.base_url,
            "CUSTOM_OPENAI_API_KEY": "test",
            "CUSTOM_OPENAI_MODEL": "base-m",
            "CUSTOM_OPENAI_MODEL_LOW": "low-m",
        }
        chat = clara(["chat", "--user", "alice"], tmp_path, "!low what time is it\n", **env)
        assert chat.returncode == 0, chat.stderr[-2000:]
        assert "It is late." in chat.stdout and "NEEDS_TOOLS" not in chat.stdout
        assert {b.get("model") for b in stub.requests} >= {"low-m", "base-m"}
    out = clara(["memory", "list", "--kind", "system"], tmp_path).stdout
    assert "tier.prefix: the message asked for the low tier" in out, out
    assert "tier.switch: low tier needed a tool: re-run on the base model with tools" in out, out


async def test_plugin_failures_and_plugin_records(store):
    h = PluginHost(store, packages="tests.plugin_fixtures")
    results = {r.name: r for r in await h.load_all()}
    assert not results["broken"].ok
    await store.ensure_scope("user:u1", "user", owner="u1")
    for _ in range(5):
        await h.run_command(inv(), "crash", "")
    await h.unload("notes")
    await h.aclose()
    records = await store.list_facts([SYSTEM_SCOPE], kinds=["system"], limit=100)
    text = "\n".join(f.content for f in records)
    assert "plugin.load_failed: plugin broken failed to load" in text
    assert "plugin:flaky.ready: flaky is ready to crash" in text  # written through the plugin API
    assert "plugin.error: plugin flaky failed in" in text and "ZeroDivisionError" in text
    assert "plugin.disabled: plugin flaky disabled after 5 failures" in text
    assert "plugin.unload: plugin notes unloaded" in text
    assert all(f.kind == "system" and f.scope_id == SYSTEM_SCOPE for f in records)
    ready = next(f for f in records if "flaky is ready" in f.content)
    assert '"mood": "grumpy"' in ready.context and '"plugin": "flaky"' in ready.context
    # Never recalled for a user, even for a query made of the records' words.
    for hit in await store.recall("plugin flaky failed disabled", await store.readable_scopes("u1"), k=50):
        assert hit.fact.kind != "system"
    await assert_private(store, "plugin flaky ready crash", "u1", SYSTEM_SCOPE)


async def test_an_idle_session_closing_is_recorded(store, clock):
    from datetime import timedelta

    from clara.chat import ChatEngine, IncomingMessage

    engine = ChatEngine(store)
    try:
        m = IncomingMessage(user_id="alice", display_name="Alice", channel_id="general", text="I live in Lisbon")
        await engine.handle(m)
        clock.advance(timedelta(hours=2))
        closed = await engine.memory.sweep()
        assert closed
        await engine.drain()
        records = [f.content for f in await store.list_facts([SYSTEM_SCOPE], kinds=["system"], limit=50)]
        sid = closed[0].id
        assert f"session.open: session {sid} of alice in general opened" in records
        assert f"session.close: session {sid} of alice in general closed (2 messages)" in records, records
    finally:
        await engine.aclose()
