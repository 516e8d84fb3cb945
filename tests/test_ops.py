"""Operations: docker-compose shape, structured logs with secret redaction, doctor/health, backup
and restore, JSON Lines export/import round trip, and the mem0 importer (Platform export always;
Qdrant + history layout with qdrant-client; the real mem0ai package when installed)."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import sqlite3
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from clara.ops import backup as backup_mod
from clara.ops.logs import JsonFormatter, RedactingFilter, parse_levels, secrets_from, setup_logging
from clara.ops.mem0_import import import_mem0
from clara.ops.portable import export_jsonl, import_jsonl
from storage import FactStore, StoreConfig
from tests.conftest import assert_private

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.timeout(120)


# ------------------------------------------------------------------------------ docker-compose
def test_docker_compose_runs_bot_mcp_and_dashboard_on_one_postgres():
    doc = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = doc["services"]
    assert set(services) == {"bot", "mcp", "dashboard", "postgres", "qdrant"}
    assert services["qdrant"]["profiles"] == ["qdrant"]  # optional: each process has a local index
    for name in ("bot", "mcp", "dashboard"):
        svc = services[name]
        assert svc["build"] == "." and "profiles" not in svc
        env = svc["environment"]
        assert env["DATABASE_URL"].startswith("postgresql://") and "@postgres:5432/" in env["DATABASE_URL"]
        assert {"QDRANT_URL", "CLARA_DATA_DIR"} <= set(env)
        assert any(v.endswith(":" + env["CLARA_DATA_DIR"]) for v in svc["volumes"])
        assert svc["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["bot"]["command"] == ["clara", "bot"]
    assert services["mcp"]["command"][:4] == ["clara", "mcp", "serve", "--http"]
    assert services["dashboard"]["command"][:2] == ["clara", "dashboard"]
    pg = services["postgres"]
    assert {"POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"} <= set(pg["environment"])
    assert "pg_isready" in " ".join(pg["healthcheck"]["test"])
    # Every named volume used is declared; the secret password is never hard-coded without a default var.
    used = {v.split(":")[0] for s in services.values() for v in s.get("volumes", [])}
    assert used <= set(doc["volumes"])
    assert "${POSTGRES_PASSWORD" in pg["environment"]["POSTGRES_PASSWORD"]
    assert (ROOT / "Dockerfile").is_file()


# ------------------------------------------------------------------------------ logs
def _record(msg, *args, exc=None, name="clara.test"):
    return logging.LogRecord(name, logging.WARNING, __file__, 1, msg, args, exc)


def test_redacting_filter_removes_secrets_from_message_args_and_tracebacks():
    f = RedactingFilter({"sk-live-abcdef123456", "discord-token-XYZ"})
    rec = _record("calling with key %s and %r", "sk-live-abcdef123456", {"t": "discord-token-XYZ"})
    f.filter(rec)
    assert "sk-live" not in rec.getMessage() and "discord-token" not in rec.getMessage()
    assert rec.getMessage().count("[REDACTED]") == 2
    try:
        raise RuntimeError("auth failed for sk-live-abcdef123456")
    except RuntimeError:
        import sys

        rec = _record("boom", exc=sys.exc_info())
    f.filter(rec)
    assert "sk-live" not in rec.exc_text and "[REDACTED]" in rec.exc_text
    rec = _record("connect postgresql://clara:hunter22@db:5432/clara failed")
    f.filter(rec)
    assert "hunter22" not in rec.getMessage() and "clara:[REDACTED]@db" in rec.getMessage()


def test_secrets_come_from_env_and_settings():
    from clara.settings import Settings

    env = {
        "DISCORD_BOT_TOKEN": "tok-123456",
        "OPENROUTER_API_KEY": "or-key-9999",
        "CLARA_MCP_TOKENS": "mcp-secret-1=agent1,mcp-secret-2=agent2",
        "DATABASE_URL": "postgresql://u:pw-secret@h/db",
        "HOME": "/root",
        "SHORT_TOKEN": "abc",  # too short to redact safely
    }
    s = Settings(OPENAI_API_KEY="sk-from-settings")
    got = secrets_from(env, s)
    assert {"tok-123456", "or-key-9999", "mcp-secret-1", "mcp-secret-2", "pw-secret", "sk-from-settings"} <= got
    assert "/root" not in got and "abc" not in got


def test_setup_logging_json_levels_and_redaction():
    stream = io.StringIO()
    env = {
        "CLARA_LOG_FORMAT": "json",
        "LOG_LEVEL": "WARNING",
        "CLARA_LOG_LEVELS": "clara.opstest.chatty=DEBUG, clara.opstest.quiet=ERROR",
        "DISCORD_BOT_TOKEN": "very-secret-discord-token",
    }
    handler = setup_logging(env=env, stream=stream)
    try:
        logging.getLogger("clara.opstest.chatty").debug("debug line with %s", "very-secret-discord-token")
        logging.getLogger("clara.opstest.quiet").warning("hidden warning")
        logging.getLogger("clara.opstest.other").info("hidden info")
        logging.getLogger("discord.client").warning("token very-secret-discord-token rejected")
        lines = [json.loads(x) for x in stream.getvalue().splitlines()]
        assert [x["logger"] for x in lines] == ["clara.opstest.chatty", "discord.client"]
        assert all({"ts", "level", "logger", "msg"} <= set(x) for x in lines)
        assert "very-secret" not in stream.getvalue()
        assert lines[0]["level"] == "DEBUG" and "[REDACTED]" in lines[0]["msg"]
        assert isinstance(handler.formatter, JsonFormatter)
        # Idempotent: a second setup replaces its own handler instead of adding one.
        setup_logging(env={}, stream=stream)
        assert sum(getattr(h, "_clara_ops_handler", False) for h in logging.getLogger().handlers) == 1
    finally:
        logging.getLogger().removeHandler(logging.getLogger().handlers[-1])
        for name in ("clara.opstest.chatty", "clara.opstest.quiet"):
            logging.getLogger(name).setLevel(logging.NOTSET)
        logging.getLogger().setLevel(logging.WARNING)


def test_bad_log_levels_are_a_clear_error():
    assert parse_levels("a=debug,b=Warning") == {"a": logging.DEBUG, "b": logging.WARNING}
    with pytest.raises(ValueError, match="CLARA_LOG_LEVELS"):
        parse_levels("clara.writer")
    with pytest.raises(ValueError):
        parse_levels("clara=LOUD")


# ------------------------------------------------------------------------------ doctor / health
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


def _cli(*args):
    from clara.cli import app

    return CliRunner().invoke(app, list(args))


async def _acli(*args):
    """The CLI from an async test (it runs its own event loop)."""
    import asyncio

    return await asyncio.to_thread(_cli, *args)


async def _seed(data_dir: Path, embedder, n: int = 3) -> None:
    async with await FactStore.open(StoreConfig(data_dir=data_dir), embedder=embedder) as store:
        await store.ensure_scope("user:alice", "user", owner="alice")
        for i in range(n):
            await store.add(f"alice keeps plant number {i} on the balcony", "user:alice")
        await store.drain()


async def test_doctor_and_health_report_a_healthy_store_then_a_lost_index(cli_env, embedder):
    await _seed(cli_env, embedder)
    res = await _acli("doctor", "--json")
    assert res.exit_code == 0, res.output
    checks = {c["name"]: c for c in json.loads(res.output)}
    for name in ("settings", "data dir", "database", "migrations", "index queue", "memory jobs", "embedder"):
        assert checks[name]["status"] == "ok", checks[name]
    assert checks["vector index"]["status"] == "ok" and "3 vectors = 3 indexed" in checks["vector index"]["detail"]
    assert checks["discord token"]["status"] == "warn"
    assert (await _acli("doctor", "--strict")).exit_code == 1  # the missing token is a warning
    res = await _acli("health")
    assert res.exit_code == 0
    h = json.loads(res.output)
    assert h["ok"] and h["db"]["ok"] and h["migrations"]["at_head"]
    assert h["queues"]["index_jobs"] == 0 and h["queues"]["facts_indexed"] == 3
    # Lose the local vector index: nothing to do, it is rebuilt from the vectors stored in SQL.
    import shutil
    import sqlite3

    shutil.rmtree(cli_env / "index")
    res = await _acli("doctor", "--json")
    assert res.exit_code == 0, res.output
    # Lose the stored vectors: doctor fails and says what to do.
    with sqlite3.connect(cli_env / "clara.db") as con:
        con.execute("DELETE FROM fact_vectors")
    res = await _acli("doctor", "--json")
    assert res.exit_code == 1
    vi = {c["name"]: c for c in json.loads(res.output)}["vector index"]
    assert vi["status"] == "fail" and "reindex" in vi["detail"]


def test_doctor_and_health_fail_when_the_database_is_unreachable(cli_env, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "postgresql://nobody:pw@127.0.0.1:1/none")
    from clara.settings import get_settings

    get_settings.cache_clear()
    res = _cli("health")
    assert res.exit_code == 1
    h = json.loads(res.output)
    assert h["ok"] is False and h["db"]["ok"] is False and "pw" not in res.output.replace("password", "")
    res = _cli("doctor", "--no-index", "--json")
    assert res.exit_code == 1
    db = {c["name"]: c for c in json.loads(res.output)}["database"]
    assert db["status"] == "fail"


def test_doctor_reports_a_schema_behind_head(cli_env):
    from storage import migrate
    from storage.db import async_url

    url = async_url(None, cli_env)
    cli_env.mkdir(parents=True)
    migrate.upgrade(url, "0001")
    res = _cli("doctor", "--no-index", "--json")
    assert res.exit_code == 1
    mig = {c["name"]: c for c in json.loads(res.output)}["migrations"]
    assert mig["status"] == "fail" and "clara db upgrade" in mig["detail"]
    assert _cli("health").exit_code == 1


@pytest.fixture
def fresh_database(backend, cli_env, monkeypatch):
    """Nothing created yet: no data dir (SQLite), or an empty PostgreSQL database (DATABASE_URL)."""
    if backend == "sqlite":
        yield None
        return
    import psycopg
    from sqlalchemy.engine import make_url

    from clara.settings import get_settings
    from storage.db import async_url
    from tests.conftest import PG_URL

    base = make_url(async_url(PG_URL, "."))
    admin = base.set(drivername="postgresql").render_as_string(hide_password=False)
    name = f"clara_doctor_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin, autocommit=True, connect_timeout=10) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    monkeypatch.setenv("DATABASE_URL", base.set(database=name).render_as_string(hide_password=False))
    get_settings.cache_clear()
    try:
        yield name
    finally:
        with psycopg.connect(admin, autocommit=True, connect_timeout=10) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_doctor_on_a_fresh_data_dir_warns_what_first_use_creates(cli_env, fresh_database):
    assert not cli_env.exists()
    res = _cli("doctor", "--no-index", "--json")
    assert res.exit_code == 0, res.output  # warnings only
    checks = {c["name"]: c for c in json.loads(res.output)}
    assert not [c for c in checks.values() if c["status"] == "fail"], checks
    mig = checks["migrations"]
    assert mig["status"] == "warn" and "will be created (migrated to head" in mig["detail"], mig
    assert "first use" in mig["detail"] and checks["database"]["status"] == "ok"
    assert not cli_env.exists()  # doctor made neither the data dir nor an SQLite file
    # An existing but empty SQLite file (what older doctors left behind) is just as fresh.
    if fresh_database is None:
        cli_env.mkdir()
        (cli_env / "clara.db").touch()
        res = _cli("doctor", "--no-index", "--json")
        assert res.exit_code == 0, res.output
        assert {c["name"]: c for c in json.loads(res.output)}["migrations"]["status"] == "warn"
    # What it promised: the first use migrates to head, and doctor is then happy with the schema.
    assert _cli("db", "upgrade").exit_code == 0
    res = _cli("doctor", "--no-index", "--json")
    assert {c["name"]: c for c in json.loads(res.output)}["migrations"]["status"] == "ok", res.output


def test_doctor_fails_on_an_unknown_revision_or_unversioned_tables(cli_env):
    import sqlalchemy as sa

    from storage import migrate
    from storage.db import async_url, sync_url

    url = async_url(None, cli_env)
    cli_env.mkdir(parents=True)
    migrate.upgrade(url)
    engine = sa.create_engine(sync_url(url))
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("UPDATE alembic_version SET version_num = 'ffff9999'"))
        res = _cli("doctor", "--no-index", "--json")
        assert res.exit_code == 1
        mig = {c["name"]: c for c in json.loads(res.output)}["migrations"]
        assert mig["status"] == "fail" and "unknown revision ffff9999" in mig["detail"], mig
        # Clara's tables but no alembic_version: not something first use can migrate.
        with engine.begin() as conn:
            conn.execute(sa.text("DROP TABLE alembic_version"))
    finally:
        engine.dispose()
    res = _cli("doctor", "--no-index", "--json")
    assert res.exit_code == 1
    mig = {c["name"]: c for c in json.loads(res.output)}["migrations"]
    assert mig["status"] == "fail" and "no schema version" in mig["detail"], mig


# ------------------------------------------------------------------------------ backup / restore
async def test_sqlite_backup_and_restore_via_cli(cli_env, embedder):
    await _seed(cli_env, embedder, n=2)
    res = await _acli("db", "backup", str(cli_env.parent / "b.sqlite"))
    assert res.exit_code == 0, res.output
    await _seed(cli_env, embedder, n=1)  # written after the backup: gone after the restore
    res = await _acli("db", "restore", str(cli_env.parent / "b.sqlite"), "--yes")
    assert res.exit_code == 0, res.output
    async with await FactStore.open(StoreConfig(data_dir=cli_env), embedder=embedder) as store:
        assert await store.count_facts(["user:alice"]) == 2
        assert await store.index.count() == 2
        assert (await store.recall("plant balcony", ["user:alice"]))[0].signals.get("dense")
    bad = cli_env.parent / "not-a-backup"
    bad.write_text("hello")
    res = await _acli("db", "restore", str(bad), "--yes")
    assert res.exit_code == 2 and "not an SQLite backup" in res.output


async def test_postgresql_backup_and_restore(embedder, tmp_path, request):
    from tests.conftest import PG_URL

    if not PG_URL:
        pytest.skip("CLARA_TEST_DATABASE_URL not set")
    url = request.getfixturevalue("pg_database")
    from tests.conftest import _truncate

    _truncate(url)
    cfg = StoreConfig(database_url=url, data_dir=tmp_path, auto_migrate=False)
    async with await FactStore.open(cfg, embedder=embedder) as store:
        await store.ensure_scope("user:pg", "user", owner="pg")
        await store.add("pg fact before the backup", "user:pg")
        info = backup_mod.backup(url, tmp_path / "pg.dump")
        assert info["bytes"] > 0 and (tmp_path / "pg.dump").read_bytes()[:5] == b"PGDMP"
        await store.add("pg fact after the backup", "user:pg")
    backup_mod.restore(url, tmp_path / "pg.dump")
    async with await FactStore.open(cfg, embedder=embedder) as store:
        facts = await store.list_facts(["user:pg"])
        assert [f.content for f in facts] == ["pg fact before the backup"]


# ------------------------------------------------------------------------------ export / import
async def test_export_import_round_trip_into_a_fresh_store(store, embedder, tmp_path):
    await store.ensure_scope("user:alice", "user", owner="alice")
    await store.ensure_scope("user:bob", "user", owner="bob")
    await store.ensure_scope("channel:general", "channel", members=["alice", "bob"])
    old = await store.add(
        "alice lives in Lisbon", "user:alice", kind="biographical", importance=0.8, entities=[("Lisbon", "place")]
    )
    new = await store.supersede(old, "alice lives in Porto", actor="alice")
    await store.upsert("diet", "alice is vegetarian", "user:alice", kind="preference")
    await store.add("the team standup is at 9", "channel:general", created_by="alice", kind="plan")
    gone = await store.add("alice's old phone number", "user:alice")
    await store.forget(gone)
    await store.add("bob likes chess", "user:bob")
    path = tmp_path / "alice.jsonl"
    info = await export_jsonl(store, path, user="alice")
    assert info["facts"] == 4  # two versions + diet + the channel fact alice wrote; not bob's, not forgotten
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert lines[0]["type"] == "header" and all("bob likes chess" not in json.dumps(x) for x in lines)
    chan = next(x for x in lines if x["type"] == "scope" and x["id"] == "channel:general")
    assert chan["members"] == ["alice"]  # bob's membership is not alice's to export
    before = {
        f.content: f
        for f in await store.list_facts(["user:alice", "channel:general"], statuses=("active", "superseded"))
    }

    fresh = await FactStore.open(StoreConfig(data_dir=tmp_path / "fresh"), embedder=embedder)
    try:
        report = await import_jsonl(fresh, path)
        assert (report.imported, report.failed) == (4, 0)
        after = {
            f.content: f
            for f in await fresh.list_facts(["user:alice", "channel:general"], statuses=("active", "superseded"))
        }
        assert set(after) == set(before)
        for text, f in before.items():
            g = after[text]
            assert (g.scope_id, g.kind, g.status, g.slug, g.importance, g.created_by) == (
                f.scope_id,
                f.kind,
                f.status,
                f.slug,
                f.importance,
                f.created_by,
            )
            assert g.created_at == f.created_at and g.valid_to == f.valid_to
        porto, lisbon = after["alice lives in Porto"], after["alice lives in Lisbon"]
        assert porto.supersedes_id == lisbon.id and lisbon.superseded_by_id == porto.id
        assert before["alice lives in Porto"].id == new
        scope = await fresh.get_scope("user:alice")
        assert scope.owner == "alice" and scope.read_policy == "owner"
        await fresh.drain()
        hits = await fresh.recall("where does alice live", ["user:alice"], k=3)
        assert hits[0].fact.content == "alice lives in Porto" and "dense" in hits[0].signals
        assert "Lisbon" in [n for n, _ in await _entities(fresh, lisbon.id)]
        # Importing again changes nothing.
        again = await import_jsonl(fresh, path)
        assert (again.imported, again.skipped) == (0, 4)
        assert await fresh.count_facts(None, ("active", "superseded")) == 4
    finally:
        await fresh.aclose()


async def _entities(store, fact_id):
    from sqlalchemy import select

    from storage.models import EntityRow, FactEntityRow

    async with store.engines.reader.connect() as conn:
        rows = await conn.execute(
            select(EntityRow.name, EntityRow.type)
            .join(FactEntityRow, FactEntityRow.entity_id == EntityRow.id)
            .where(FactEntityRow.fact_id == fact_id)
        )
        return rows.all()


async def test_import_rejects_bad_lines_and_keeps_good_ones(store, tmp_path):
    path = tmp_path / "mixed.jsonl"
    path.write_text(
        "\n".join(
            [
                json.dumps({"type": "header", "format": "clara-memory", "version": 1}),
                "{not json",
                json.dumps({"type": "fact", "scope": "user:zed", "content": "zed plays the oboe"}),
                json.dumps({"type": "fact", "scope": "user:zed", "content": ""}),
                json.dumps({"type": "fact", "scope": "user:zed", "content": "x", "kind": "weird"}),
                json.dumps({"type": "fact", "scope": "user:zed", "content": "y", "created_at": "yesterday-ish"}),
                json.dumps({"type": "alien"}),
            ]
        )
    )
    report = await import_jsonl(store, path)
    assert (report.imported, report.failed) == (1, 5)
    assert {e["line"] for e in report.errors} == {2, 4, 5, 6, 7}
    assert [f.content for f in await store.list_facts(["user:zed"])] == ["zed plays the oboe"]
    assert (await store.get_scope("user:zed")).owner == "zed"


def test_cli_export_and_import_jsonl(cli_env, tmp_path):
    assert _cli("memory", "add", "I collect stamps", "--user", "carol").exit_code == 0
    out = tmp_path / "all.jsonl"
    res = _cli("memory", "export", str(out))
    assert res.exit_code == 0 and "exported 1 facts" in res.output
    res = _cli("import", "jsonl", str(out))  # same store: already present
    assert res.exit_code == 0 and "already present 1" in res.output


# ------------------------------------------------------------------------------ mem0
MEM0_EXPORT = [
    {
        "id": "8d1c-aaaa",
        "memory": "Likes green tea",
        "user_id": "alice",
        "hash": "h1",
        "metadata": {"source": "app"},
        "categories": ["food"],
        "created_at": "2025-03-01T10:00:00-08:00",
        "updated_at": "2025-03-02T10:00:00-08:00",
    },
    {"id": "8d1c-bbbb", "memory": "Prefers short answers", "agent_id": "helper", "created_at": "2025-04-01T00:00:00Z"},
    {"id": "8d1c-cccc", "memory": "Works at Acme", "user_id": "bob", "agent_id": "helper"},
    {"id": "8d1c-dddd", "memory": "orphan memory"},
    {"id": "", "memory": "no id"},
]


async def test_mem0_platform_export_maps_scopes_and_keeps_provenance(store, tmp_path):
    path = tmp_path / "mem0.json"
    path.write_text(json.dumps({"results": MEM0_EXPORT}))
    report = await import_mem0(store, export=path)
    assert (report.imported, report.failed) == (3, 2)
    alice = (await store.list_facts(["user:alice"]))[0]
    assert alice.content == "Likes green tea" and alice.source_ref == "mem0:8d1c-aaaa"
    assert alice.created_at == datetime(2025, 3, 1, 18, 0, tzinfo=UTC)
    assert "food" in alice.context and '"source": "app"' in alice.context
    agent = (await store.list_facts(["agent:helper"]))[0]
    assert agent.created_by == "agent:helper" and (await store.get_scope("agent:helper")).owner == "agent:helper"
    bob = (await store.list_facts(["user:bob"]))[0]
    assert bob.created_by == "agent:helper"
    assert (await store.get_scope("user:bob")).read_policy == "owner"
    # Idempotent; --default-scope picks up the orphan.
    again = await import_mem0(store, export=path, default_scope="project:legacy")
    assert (again.imported, again.skipped) == (1, 3)
    assert [f.content for f in await store.list_facts(["project:legacy"])] == ["orphan memory"]
    await store.drain()
    assert (await store.recall("tea", ["user:alice"]))[0].fact.id == alice.id


def _mem0_layout(root: Path) -> tuple[Path, Path]:
    """A mem0 open-source store as mem0 writes it: Qdrant local path (collection `mem0`, payload
    data/hash/user_id/agent_id/created_at/updated_at + custom metadata) and the SQLite history DB."""
    from qdrant_client import QdrantClient, models

    qpath = root / "qdrant"
    client = QdrantClient(path=str(qpath))
    client.create_collection("mem0", vectors_config=models.VectorParams(size=4, distance=models.Distance.COSINE))
    client.create_collection(
        "mem0migrations", vectors_config=models.VectorParams(size=4, distance=models.Distance.COSINE)
    )
    ids = [
        "11111111-1111-1111-1111-111111111111",
        "22222222-2222-2222-2222-222222222222",
        "33333333-3333-3333-3333-333333333333",
    ]
    payloads = [
        {
            "data": "Lives in Porto",
            "hash": "a",
            "user_id": "alice",
            "created_at": "2025-01-01T00:00:00+00:00",
            "updated_at": "2025-02-01T00:00:00+00:00",
            "mood": "happy",
        },
        {"data": "Deleted memory", "hash": "b", "user_id": "alice", "created_at": "2025-01-02T00:00:00+00:00"},
        {"data": "Uses vim", "hash": "c", "agent_id": "coder", "created_at": "2025-01-03T00:00:00+00:00"},
    ]
    client.upsert(
        "mem0",
        [models.PointStruct(id=i, vector=[0.1, 0.2, 0.3, 0.4], payload=p) for i, p in zip(ids, payloads, strict=True)],
    )
    client.close()
    hist = root / "history.db"
    db = sqlite3.connect(hist)
    db.execute(
        "CREATE TABLE history (id TEXT PRIMARY KEY, memory_id TEXT, old_memory TEXT, new_memory TEXT, event TEXT, "
        "created_at DATETIME, updated_at DATETIME, is_deleted INTEGER, actor_id TEXT, role TEXT)"
    )
    rows = [
        ("h1", ids[0], None, "Lives in Lisbon", "ADD", "2025-01-01T00:00:00+00:00"),
        ("h2", ids[0], "Lives in Lisbon", "Lives in Porto", "UPDATE", "2025-02-01T00:00:00+00:00"),
        ("h3", ids[1], None, "Deleted memory", "ADD", "2025-01-02T00:00:00+00:00"),
        ("h4", ids[1], "Deleted memory", None, "DELETE", "2025-01-05T00:00:00+00:00"),
        ("h5", ids[2], None, "Uses vim", "ADD", "2025-01-03T00:00:00+00:00"),
    ]
    db.executemany(
        "INSERT INTO history (id, memory_id, old_memory, new_memory, event, created_at) VALUES (?,?,?,?,?,?)", rows
    )
    db.commit()
    db.close()
    return qpath, hist


async def test_mem0_qdrant_and_history_layout(store, tmp_path):
    qpath, hist = _mem0_layout(tmp_path)
    report = await import_mem0(store, qdrant_path=qpath)  # history.db found next to the Qdrant dir
    assert report.failed == 0 and report.imported == 3 and report.skipped == 1  # the DELETEd one
    facts = await store.list_facts(["user:alice"], statuses=("active", "superseded"))
    by = {f.content: f for f in facts}
    assert set(by) == {"Lives in Porto", "Lives in Lisbon"}
    porto, lisbon = by["Lives in Porto"], by["Lives in Lisbon"]
    assert porto.status == "active" and lisbon.status == "superseded"
    assert porto.supersedes_id == lisbon.id and lisbon.superseded_by_id == porto.id
    assert porto.source_ref == "mem0:11111111-1111-1111-1111-111111111111"
    assert porto.created_at == datetime(2025, 1, 1, tzinfo=UTC) and "happy" in porto.context
    assert [f.content for f in await store.list_facts(["agent:coder"])] == ["Uses vim"]
    assert (await import_mem0(store, qdrant_path=qpath, history_db=hist)).imported == 0
    await store.drain()
    assert (await store.recall("where does alice live", ["user:alice"]))[0].fact.content == "Lives in Porto"


def _write_with_real_mem0(root: Path) -> None:
    """A store written by the real mem0ai package (infer=False: no LLM), embedding through the
    local OpenAI-compatible endpoint (our MiniLM), as the seed bot's users have them."""
    import os

    os.environ.setdefault("MEM0_TELEMETRY", "False")
    mem0 = pytest.importorskip("mem0")
    from clara.bench.embed_server import serve_embeddings
    from storage.embeddings import make_embedder

    server, base_url = serve_embeddings(make_embedder("local"))
    try:
        llm = {"model": "unused", "api_key": "local", "openai_base_url": base_url}
        memory = mem0.Memory.from_config(
            {
                "vector_store": {
                    "provider": "qdrant",
                    "config": {"collection_name": "mem0", "path": str(root / "qdrant"), "embedding_model_dims": 384},
                },
                "embedder": {"provider": "openai", "config": {**llm, "model": "minilm", "embedding_dims": 384}},
                "llm": {"provider": "openai", "config": llm},
                "history_db_path": str(root / "history.db"),
            }
        )
        first = memory.add("Alice lives in Lisbon", user_id="alice", infer=False)["results"][0]["id"]
        memory.update(first, "Alice lives in Porto")
        memory.add("The coder agent prefers vim", agent_id="coder", infer=False)
        gone = memory.add("Alice's old phone number is 555-0100", user_id="alice", infer=False)["results"][0]["id"]
        memory.delete(gone)
        del memory  # releases the embedded Qdrant's lock
    finally:
        server.shutdown()


async def test_mem0_store_written_by_the_real_package(store, tmp_path):
    await asyncio.to_thread(_write_with_real_mem0, tmp_path)
    report = await import_mem0(store, qdrant_path=tmp_path / "qdrant", history_db=tmp_path / "history.db")
    assert report.failed == 0, report
    active = [f.content for f in await store.list_facts(["user:alice"])]
    assert active == ["Alice lives in Porto"]  # updated text, deleted memory not imported
    assert [f.content for f in await store.list_facts(["agent:coder"])] == ["The coder agent prefers vim"]
    fact = (await store.list_facts(["user:alice"]))[0]
    assert fact.source_ref.startswith("mem0:")
    await assert_private(store, "Alice lives Porto", "bob", "user:alice")


def test_mem0_cli_reports_missing_sources(cli_env, tmp_path):
    res = _cli("import", "mem0", "--qdrant-path", str(tmp_path / "nope"))
    assert res.exit_code == 2 and "no Qdrant directory" in res.output
    res = _cli("import", "mem0")
    assert res.exit_code == 2 and "either an export file or a Qdrant path" in res.output


# ------------------------------------------------------------------------------ bootstrap / clear
PROFILE = "I live in Porto. I work at Acme as a nurse.\nMy sister is Anna. I am allergic to peanuts.\n"


def test_bootstrap_dry_run_prints_facts_then_apply_stores_them_once(cli_env, tmp_path):
    profile = tmp_path / "profile.txt"
    profile.write_text(PROFILE)
    res = _cli("memory", "bootstrap", str(profile), "--user", "alice")
    assert res.exit_code == 0, res.output
    dry = json.loads(res.output)
    assert dry["dry_run"] is True and dry["user"] == "alice"
    facts = {f["content"]: f for f in dry["facts"]}
    assert facts["alice lives in Porto"]["slug"] == "alice/residence"
    assert facts["alice lives in Porto"]["relation"] == ["alice", "lives_in", "Porto"]
    assert all(f["scope"] == "user:alice" for f in dry["facts"])
    listed = _cli("memory", "list", "--user", "alice")
    assert "Porto" not in listed.output  # a dry run stores nothing
    first = json.loads(_cli("memory", "bootstrap", str(profile), "--user", "alice", "--apply").output)
    assert first["added"] == len(dry["facts"]) and first["unchanged"] == 0
    again = json.loads(_cli("memory", "bootstrap", str(profile), "--user", "alice", "--apply").output)
    assert again["added"] == 0 and again["unchanged"] == len(dry["facts"])
    got = _cli("memory", "recall", "where does alice live", "--user", "alice")
    assert "Porto" in got.output
    other = _cli("memory", "recall", "where does alice live peanuts", "--user", "bob", "--channel", "terminal")
    assert "Porto" not in other.output and "peanuts" not in other.output
    for bad, why in ((tmp_path / "missing.txt", "No such file"), (tmp_path / "empty.txt", "empty")):
        if bad.name == "empty.txt":
            bad.write_text("  \n")
        res = _cli("memory", "bootstrap", str(bad), "--user", "alice")
        assert res.exit_code == 2 and why in res.output and "Traceback" not in res.output


def test_clear_one_user_or_everything_with_confirmation(cli_env):
    for user, text in (("carol", "I collect stamps"), ("dave", "I race pigeons")):
        assert _cli("memory", "add", text, "--user", user).exit_code == 0
    res = CliRunner().invoke(_app(), ["memory", "clear", "--user", "carol"], input="n\n")
    assert res.exit_code == 1 and "nothing cleared" in res.output
    assert "stamps" in _cli("memory", "list", "--user", "carol").output
    res = _cli("memory", "clear", "--user", "carol", "--yes")
    assert res.exit_code == 0, res.output
    assert "stamps" not in _cli("memory", "list", "--user", "carol").output
    assert "pigeons" in _cli("memory", "list", "--user", "dave").output
    res = CliRunner().invoke(_app(), ["memory", "clear"], input="n\n")
    assert res.exit_code == 1 and "pigeons" in _cli("memory", "list", "--user", "dave").output
    res = CliRunner().invoke(_app(), ["memory", "clear"], input="y\n")
    assert res.exit_code == 0 and "cleared:" in res.output and "facts" in res.output, res.output
    assert "pigeons" not in _cli("memory", "list", "--user", "dave").output
    assert "already empty" in _cli("memory", "clear", "--yes").output
    assert _cli("memory", "add", "I start again", "--user", "dave").exit_code == 0  # the store still works


def _app():
    from clara.cli import app

    return app
