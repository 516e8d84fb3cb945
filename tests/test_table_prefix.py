"""CLARA_TABLE_PREFIX end to end: three Clara stores (no prefix, `aa_`, `bb_`) in ONE SQLite file
and in ONE PostgreSQL database, each driven through the real CLI (`clara chat`, `clara memory
list`, `clara doctor`) in its own process: each migrates, writes, recalls, forgets and keeps
invoices without seeing the others' rows; the prefixed schemas are the unprefixed one with the
prefix on every name, and a prefixed database migrated from an old revision equals a fresh one."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
PG_URL = os.environ.get("CLARA_TEST_DATABASE_URL")
PREFIXES = ("", "aa_", "bb_")
# One word per store that no other store's recall may ever show.
WORD = {"": "zorvath", "aa_": "quimbly", "bb_": "plexaro"}
BOB_WORD = {"": "snarkel", "aa_": "trundlex", "bb_": "vospari"}


def run(args: list[str], env: dict, stdin: str | None = None, timeout: int = 180) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "clara.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=timeout,
    )


def env_for(prefix: str, data_dir: Path, url: str | None) -> dict:
    env = {**os.environ, "CLARA_DATA_DIR": str(data_dir), "COLUMNS": "200", "CLARA_TABLE_PREFIX": prefix}
    env.pop("DATABASE_URL", None)
    env.pop("LLM_PROVIDER", None)
    if url:
        env["DATABASE_URL"] = url
    return env


def scenario(prefix: str, data_dir: Path, url: str | None) -> dict:
    """bob then alice chat under `prefix`; returns what each step printed."""
    env = env_for(prefix, data_dir, url)
    w, b = WORD[prefix], BOB_WORD[prefix]
    bob = run(["chat", "--user", "bob"], env, f"!remember My locker code word is {b}\n")
    assert bob.returncode == 0, bob.stderr[-2000:]
    alice = run(
        ["chat", "--user", "alice"],
        env,
        f"!remember My cat is called {w}\n"
        "!recall what is my cat called\n"
        "!recall locker code word\n"
        "!memories\n"
        "!forget 1\n"
        "!recall what is my cat called\n"
        "!client add Claudia\n"
        "!invoice add Claudia 320 due 2026-09-15\n",
    )
    assert alice.returncode == 0, alice.stderr[-2000:]
    doctor = run(["doctor"], env)
    return {"alice": alice.stdout, "doctor": doctor}


def check(results: dict) -> None:
    for prefix, out in results.items():
        mine, others = WORD[prefix], [WORD[p] for p in PREFIXES if p != prefix] + list(BOB_WORD.values())
        assert mine in out["alice"], out["alice"]
        seen = out["alice"]
        for word in others:  # another store's facts, and bob's private fact in this store
            assert word not in seen, f"store {prefix!r} showed {word!r}:\n{seen}"
        assert "Added Invoice 2026-001" in out["alice"], out["alice"]  # each store numbers its own ledger
        before, _, after = seen.partition("Forgotten: ")
        assert before.count(mine) == 2 and after.count(mine) == 1, seen  # recalled, listed; then gone
        doc = out["doctor"]
        assert doc.returncode == 0, doc.stdout[-3000:]
        assert "at head 0009" in doc.stdout and "plugin invoices schema" in doc.stdout, doc.stdout


def run_all(data_dir: Path, url: str | None) -> dict:
    with ThreadPoolExecutor(len(PREFIXES)) as pool:
        futures = {p: pool.submit(scenario, p, data_dir, url) for p in PREFIXES}
        return {p: f.result() for p, f in futures.items()}


def normalised(objects: list[tuple[str, str]], prefix: str) -> list[tuple[str, str]]:
    """Schema objects of `prefix` with the prefix taken out of every name (and SQL text)."""
    out = []
    for name, sql in objects:
        if prefix:
            name = name.replace(prefix, "")
            sql = (sql or "").replace(prefix, "")
        out.append((name, " ".join((sql or "").split())))
    return sorted(out)


def sqlite_objects(db: Path, prefix: str) -> list[tuple[str, str]]:
    import sqlite3

    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT name, sql, tbl_name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'").fetchall()
    names = [(n, s) for n, s, tbl in rows if tbl.startswith(prefix) and (prefix or not re.match(r"(aa|bb|cc)_", tbl))]
    if prefix:  # every object of a prefixed table carries the prefix itself
        assert all(prefix in n for n, _ in names), [n for n, _ in names if prefix not in n]
    return normalised(names, prefix)


def test_three_prefixes_share_one_sqlite_file(tmp_path):
    results = run_all(tmp_path, None)
    check(results)
    db = tmp_path / "clara.db"
    plain = sqlite_objects(db, "")
    assert any(n == "facts_fts" for n, _ in plain) and len(plain) > 60
    for prefix in ("aa_", "bb_"):
        assert sqlite_objects(db, prefix) == plain
    # Their own local vector indexes, side by side in one data dir.
    assert {p.name for p in (tmp_path / "index").iterdir()} == {
        "minilm-l6-int8-384",
        "aa_minilm-l6-int8-384",
        "bb_minilm-l6-int8-384",
    }
    # A prefixed store migrated from an old revision equals a fresh one.
    env = env_for("cc_", tmp_path, None)
    for rev in ("0004", "head"):
        res = run(["db", "upgrade", "--revision", rev], env)
        assert res.returncode == 0, res.stderr[-2000:]
    core = [o for o in plain if "invoices" not in o[0] and "reminders" not in o[0]]  # plugins migrate at load
    assert sqlite_objects(db, "cc_") == core


def test_invalid_prefix_is_one_line(tmp_path):
    res = run(["memory", "list", "--user", "alice"], env_for("Bad-Prefix", tmp_path, None))
    assert res.returncode != 0
    assert "Traceback" not in res.stderr + res.stdout
    assert "CLARA_TABLE_PREFIX" in res.stderr + res.stdout
    assert not (tmp_path / "clara.db").exists()  # nothing created under a wrong name


@pytest.mark.skipif(not PG_URL, reason="CLARA_TEST_DATABASE_URL not set")
def test_three_prefixes_share_one_postgresql_database(tmp_path):
    import psycopg

    from storage.db import async_url

    base = make_url(async_url(PG_URL, "."))
    admin = base.set(drivername="postgresql").render_as_string(hide_password=False)
    name = f"clara_prefix_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin, autocommit=True, connect_timeout=10) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = base.set(database=name).render_as_string(hide_password=False)
    try:
        check(run_all(tmp_path, url))
        plain_dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
        with psycopg.connect(plain_dsn, connect_timeout=10) as conn:
            tables = [r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
            indexes = conn.execute("SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'").fetchall()
            funcs = [r[0] for r in conn.execute("SELECT proname FROM pg_proc WHERE proname LIKE '%facts_set_prev_id'")]
            trig = [r[0] for r in conn.execute("SELECT tgname FROM pg_trigger WHERE NOT tgisinternal")]
        plain = sorted(t for t in tables if not t.startswith(("aa_", "bb_")))
        for prefix in ("aa_", "bb_"):
            assert sorted(t.removeprefix(prefix) for t in tables if t.startswith(prefix)) == plain
            mine = [(n, d) for n, d in indexes if f" {prefix}" in d.split(" USING ")[0]]
            assert mine and all(prefix in n for n, _ in mine)
            assert f"{prefix}facts_set_prev_id" in funcs and f"{prefix}facts_prev_bi" in trig
    finally:
        with psycopg.connect(admin, autocommit=True, connect_timeout=10) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
