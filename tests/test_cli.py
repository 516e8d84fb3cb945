"""The `clara` command as a user runs it: scripted chat, memory commands, db, bench smoke run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from storage import migrate

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "tests" / "data" / "tiny_locomo.json"


def clara(args: list[str], data_dir: Path, stdin: str | None = None, timeout: int = 180) -> subprocess.CompletedProcess:
    env = {**os.environ, "CLARA_DATA_DIR": str(data_dir), "COLUMNS": "200"}
    env.pop("DATABASE_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "clara.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=timeout,
    )


def test_scripted_chat_remembers_across_runs(tmp_path):
    first = clara(
        ["chat", "--user", "alice", "--channel", "general"],
        tmp_path,
        "I keep my spare keys under the blue flowerpot\n!remember my dentist is Dr. Okafor\n",
    )
    assert first.returncode == 0, first.stderr
    assert "Got it" in first.stdout
    second = clara(
        ["chat", "--user", "alice", "--channel", "general"], tmp_path, "!recall spare keys\n!recall dentist\n"
    )
    assert second.returncode == 0, second.stderr
    assert "blue flowerpot" in second.stdout and "Dr. Okafor" in second.stdout
    other = clara(["chat", "--user", "mallory", "--channel", "elsewhere"], tmp_path, "!recall dentist\n!recall keys\n")
    assert "Okafor" not in other.stdout and "flowerpot" not in other.stdout
    assert "Traceback" not in first.stderr + second.stderr + other.stderr


def test_bot_py_without_a_token_says_how_to_chat_locally(tmp_path):
    env = {**os.environ, "CLARA_DATA_DIR": str(tmp_path)}
    env.pop("DISCORD_BOT_TOKEN", None)
    res = subprocess.run(
        [sys.executable, str(ROOT / "bot.py")], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120
    )
    assert res.returncode == 2
    assert "DISCORD_BOT_TOKEN is not set" in res.stdout and "make run" in res.stdout
    assert "Traceback" not in res.stdout + res.stderr


def test_memory_commands_and_db(tmp_path):
    assert clara(["db", "upgrade"], tmp_path).returncode == 0
    cur = clara(["db", "current"], tmp_path)
    assert f"current {migrate.head_revision()}" in cur.stdout
    add = clara(["memory", "add", "Alice prefers window seats", "--user", "alice", "--slug", "seat"], tmp_path)
    assert "added #1" in add.stdout
    upd = clara(["memory", "add", "Alice prefers aisle seats", "--user", "alice", "--slug", "seat"], tmp_path)
    assert "updated #1" in upd.stdout
    rec = clara(["memory", "recall", "which seat", "--user", "alice"], tmp_path)
    assert "aisle" in rec.stdout and "window" not in rec.stdout
    hist = clara(["memory", "history", "1"], tmp_path)
    assert "window" in hist.stdout and "update" in hist.stdout
    bad = clara(["memory", "recall", "", "--user", "alice"], tmp_path)
    assert bad.returncode == 2 and "empty" in bad.stderr and "Traceback" not in bad.stderr
    assert "forgotten #1" in clara(["memory", "forget", "1"], tmp_path).stdout
    nope = clara(["memory", "forget", "1"], tmp_path)
    assert nope.returncode == 2 and "no fact #1" in nope.stderr
    assert "facts" in clara(["memory", "stats"], tmp_path).stdout
    purge = clara(["memory", "purge-user", "alice", "--yes"], tmp_path)
    assert purge.returncode == 0 and "facts=1" in purge.stdout


def test_import_locomo_then_chat_in_its_scope(tmp_path):
    res = clara(["memory", "import", "locomo", str(TINY)], tmp_path)
    assert res.returncode == 0, res.stderr
    assert "locomo:tiny_locomo: 12 turns" in res.stdout
    rec = clara(["memory", "recall", "what is the dog called", "--scope", "locomo:tiny_locomo", "-k", "3"], tmp_path)
    assert "Biscuit" in rec.stdout
    chat = clara(["chat", "--user", "reader", "--scope", "locomo:tiny_locomo"], tmp_path, "!recall skipper licence\n")
    assert "passed my skipper licence" in chat.stdout
    bad = clara(["memory", "import", "locomo", str(ROOT / "pyproject.toml")], tmp_path)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr


@pytest.mark.slow
def test_bench_locomo_smoke_writes_json(tmp_path):
    out = tmp_path / "bench.json"
    res = clara(["bench", "locomo", str(TINY), "--json", str(out), "--no-mem0"], tmp_path)
    assert res.returncode == 0, res.stderr
    data = json.loads(out.read_text())
    for system in ("clara", "bm25", "dense"):
        for key in ("R@1", "R@5", "R@10", "R@25", "query_p50_ms", "query_p95_ms"):
            assert 0 <= data[f"{system}.{key}"] == data[f"{system}.{key}"]  # present, not NaN
    assert data["clara.questions"] == 4
    assert data["clara.R@10"] >= 0.75
    assert "LoCoMo retrieval" in res.stdout


@pytest.mark.slow
def test_bench_locomo_with_distractors(tmp_path):
    """`--distractors N` recalls over the conversation plus N synthetic facts (all embedded)."""
    out = tmp_path / "bench.json"
    res = clara(["bench", "locomo", str(TINY), "--distractors", "300", "--json", str(out), "--no-mem0"], tmp_path)
    assert res.returncode == 0, res.stderr
    data = json.loads(out.read_text())
    assert data["run.distractors"] == 300
    assert data["run.facts"] == data["run.turns"] + 300
    assert data["clara.questions"] == 4 and 0 <= data["clara.R@10"] <= 1
    bad = clara(["bench", "locomo", str(TINY), "--distractors", "-5", "--no-mem0"], tmp_path)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr


@pytest.mark.slow
def test_bench_scale_smoke(tmp_path):
    out = tmp_path / "results" / "scale.json"  # a folder that does not exist yet
    res = clara(["bench", "scale", "--facts", "300", "--queries", "20", "--adds", "20", "--json", str(out)], tmp_path)
    assert res.returncode == 0, res.stderr
    data = json.loads(out.read_text())
    assert data["300.recall_p95_ms"] > 0 and data["300.add_ack_p95_ms"] > 0 and data["300.rss_mb"] > 0


@pytest.mark.slow
def test_bench_locomo_with_mem0_peer(tmp_path):
    """Only where the optional `mem0` extra is installed (it is not in CI's lock)."""
    pytest.importorskip("mem0")
    out = tmp_path / "bench.json"
    res = clara(["bench", "locomo", str(TINY), "--json", str(out), "--mem0"], tmp_path)
    assert res.returncode == 0, res.stderr
    data = json.loads(out.read_text())
    # Same embedder, verbatim storage: mem0 must rank exactly like the dense baseline.
    assert data["mem0.R@10"] == pytest.approx(data["dense.R@10"])
    assert data["mem0.questions"] == 4


def test_purge_user_erases_plugin_data_and_files_like_forgetme(tmp_path):
    import secrets
    import sqlite3

    note, said = ("zq" + secrets.token_hex(6) + "7" for _ in range(2))
    script = (
        f'!client add Zed Corp "notes=met at the fair {note}"\n'
        f'!invoice add 2026-001 "Zed Corp" $120 due 2099-01-01 note {note}\n'
        f"my locker code is {said}\n!export\n"
    )
    chat = clara(["chat", "--user", "alice", "--channel", "general"], tmp_path, script)
    assert chat.returncode == 0, chat.stderr
    assert (tmp_path / "exports" / "clara-export-alice.json").is_file()
    clara(["chat", "--user", "bob", "--channel", "general"], tmp_path, "!client add Bob Client\n")
    purge = clara(["memory", "purge-user", "alice", "--yes"], tmp_path)
    assert purge.returncode == 0, purge.stderr
    assert "plugin invoices:" in purge.stdout and "files deleted: 1" in purge.stdout
    assert not (tmp_path / "exports" / "clara-export-alice.json").exists()
    con = sqlite3.connect(tmp_path / "clara.db")
    try:
        owners = {
            t: con.execute(f"SELECT owner_id FROM {t}").fetchall() for t in ("invoices_clients", "invoices_invoices")
        }
    finally:
        con.close()
    assert owners == {"invoices_clients": [("bob",)], "invoices_invoices": []}
    for path in tmp_path.rglob("*"):
        if path.is_file():
            blob = path.read_bytes()
            assert note.encode() not in blob and said.encode() not in blob, path


def test_terminal_admin_is_only_the_operator(tmp_path):
    """`clara chat --user NAME` does not make NAME an admin: only CLARA_OPERATOR (default `you`)."""
    script = "!context hello\n!mcp list\n"
    mallory = clara(["chat", "--user", "mallory"], tmp_path, script)
    assert mallory.returncode == 0, mallory.stderr
    assert "!context is for admins" in mallory.stdout and "needs admin" in mallory.stdout
    operator = clara(["chat"], tmp_path, script)
    assert "!context is for admins" not in operator.stdout and "needs admin" not in operator.stdout
    assert "No MCP servers configured" in operator.stdout
    env_op = subprocess.run(
        [sys.executable, "-m", "clara.cli", "chat", "--user", "mallory"],
        input="!mcp list\n",
        capture_output=True,
        text=True,
        env={**os.environ, "CLARA_DATA_DIR": str(tmp_path), "CLARA_OPERATOR": "mallory", "COLUMNS": "200"},
        cwd=ROOT,
        timeout=180,
    )
    assert "No MCP servers configured" in env_op.stdout, env_op.stdout + env_op.stderr
def test_export_import_round_trip_keeps_relations_for_about(tmp_path):
    """`!about` shows the same relation lines after `clara memory export` → `clara import jsonl`
    into a fresh data dir; another user still sees nothing of them."""
    src, dst, dump = tmp_path / "src", tmp_path / "dst", tmp_path / "all.jsonl"
    said = clara(["chat", "--user", "alice"], src, "I live in Porto\n!about alice\n")
    assert said.returncode == 0, said.stderr
    assert "alice lives in Porto" in said.stdout
    exported = clara(["memory", "export", str(dump)], src)
    assert exported.returncode == 0, exported.stderr
    assert "1 relations" in exported.stdout
    records = [json.loads(line) for line in dump.read_text().splitlines()]
    rel = next(r for r in records if r["type"] == "relation")
    assert rel["source"][0] == "alice" and rel["relation"] == "lives_in" and rel["target"][0] == "Porto"
    for _ in range(2):  # importing twice adds nothing
        imported = clara(["import", "jsonl", str(dump)], dst)
        assert imported.returncode == 0, imported.stderr
    about = clara(["chat", "--user", "alice"], dst, "!about alice\n")
    assert about.returncode == 0, about.stderr
    assert about.stdout.count("• alice lives in Porto") == 1, about.stdout
    other = clara(["chat", "--user", "mallory", "--channel", "elsewhere"], dst, "!about alice\n!recall Porto\n")
    assert "Porto" not in other.stdout
    assert "Traceback" not in said.stderr + exported.stderr + imported.stderr + about.stderr + other.stderr


def test_bench_locomo_access_ablation_smoke(tmp_path):
    """`--access`: the held-out half scored before and after the other half is asked (access counts,
    then the nightly decay and rerank), both arms on the same questions."""
    out = tmp_path / "bench.json"
    res = clara(["bench", "locomo", str(TINY), "--access", "--json", str(out), "--no-mem0"], tmp_path)
    assert res.returncode == 0, res.stderr
    data = json.loads(out.read_text())
    assert data["access:off.questions"] == data["access:on.questions"] == 2
    assert data["access:on.usage_questions"] == 2
    for arm in ("access:off", "access:on"):
        assert 0 <= data[f"{arm}.R@10"] <= 1
    assert "Access-count ablation" in res.stdout and "access on − off" in res.stdout
