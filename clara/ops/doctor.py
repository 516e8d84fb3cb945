"""`clara doctor` (a full check with a readable report) and `clara health` (a cheap JSON probe).

Each check yields `Check(name, status, detail)` with status ok / warn / fail; the commands exit
non-zero when any check fails (doctor: also on warnings with `--strict`).

On a fresh data dir doctor only warns (every command creates and migrates the database on first
use) and creates nothing itself: no data dir, no SQLite file.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import func, select, text

from storage.clock import Clock, system_clock
from storage.naming import t as tname

OK, WARN, FAIL = "ok", "warn", "fail"
PLUGINS_DIR = Path(__file__).resolve().parent.parent.parent / "plugins"


@dataclass
class Check:
    name: str
    status: str
    detail: str

    def as_dict(self) -> dict:
        return asdict(self)


def plugin_branches() -> dict[str, Path]:
    """Plugin name → its migrations/versions directory (plugins with their own tables)."""
    out = {}
    if PLUGINS_DIR.is_dir():
        for p in sorted(PLUGINS_DIR.iterdir()):
            versions = p / "migrations" / "versions"
            if versions.is_dir() and any(versions.glob("*.py")):
                out[p.name] = versions
    return out


def _branch_head(versions: Path) -> str | None:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from storage.migrate import BRANCH_ENV

    cfg = Config()
    cfg.set_main_option("script_location", str(BRANCH_ENV))
    cfg.set_main_option("version_locations", str(versions))
    cfg.set_main_option("path_separator", "os")
    heads = ScriptDirectory.from_config(cfg).get_heads()
    return heads[0] if len(heads) == 1 else ",".join(sorted(heads)) or None


def _known_revision(revision: str) -> bool:
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    from storage import migrate

    try:
        return ScriptDirectory.from_config(migrate.alembic_config()).get_revision(revision) is not None
    except CommandError:
        return False


def migration_state(url: str) -> dict:
    """{"core": {"current", "head", "known", "clara_tables"}, "plugins": {name: {"current", "head"}}}
    (blocking). `known`: False when `current` is no revision of this Clara's migrations;
    `clara_tables`: the core tables present (sorted names; lets a never-migrated empty database be
    told apart from tables made some other way)."""
    from sqlalchemy import inspect

    from storage import migrate
    from storage.models import Base

    current = migrate.current_revision(url)
    out = {
        "core": {
            "current": current,
            "head": migrate.head_revision(),
            "known": current is None or _known_revision(current),
        },
        "plugins": {},
    }
    engine = migrate._engine(url)
    try:
        with engine.connect() as conn:
            tables = set(inspect(conn).get_table_names())
            out["core"]["clara_tables"] = sorted(tables & set(Base.metadata.tables))
            for name, versions in plugin_branches().items():
                table = tname(f"alembic_version_{name}")
                current = None
                if table in tables:
                    current = conn.execute(text(f"SELECT version_num FROM {table}")).scalar()
                out["plugins"][name] = {"current": current, "head": _branch_head(versions)}
    finally:
        engine.dispose()
    return out


async def queue_state(engines, now: datetime) -> dict:
    """Depths of the durable queues and the indexing lag at `now` (seconds), from SQL only."""
    from storage.models import ChangeRow, FactRow, FactVectorRow, IndexJobRow, MemoryJobRow

    async with engines.reader.connect() as conn:
        index_jobs = (await conn.execute(select(func.count()).select_from(IndexJobRow))).scalar_one()
        failing_index = (
            await conn.execute(select(func.count()).select_from(IndexJobRow).where(IndexJobRow.attempts > 0))
        ).scalar_one()
        oldest = (await conn.execute(select(func.min(IndexJobRow.enqueued_at)))).scalar()
        mem = dict((await conn.execute(select(MemoryJobRow.status, func.count()).group_by(MemoryJobRow.status))).all())
        live = FactRow.status != "deleted"
        unindexed = (
            await conn.execute(select(func.count()).select_from(FactRow).where(live, FactRow.indexed_at.is_(None)))
        ).scalar_one()
        indexed = (
            await conn.execute(select(func.count()).select_from(FactRow).where(live, FactRow.indexed_at.is_not(None)))
        ).scalar_one()
        stored = dict(
            (
                await conn.execute(
                    select(FactVectorRow.model, func.count())
                    .join(FactRow, FactRow.id == FactVectorRow.fact_id)
                    .where(live)
                    .group_by(FactVectorRow.model)
                )
            ).all()
        )
        changes = (await conn.execute(select(func.max(ChangeRow.id)))).scalar() or 0
    lag = None
    if oldest is not None:
        if oldest.tzinfo is None:
            oldest = oldest.replace(tzinfo=UTC)
        lag = max(0.0, (now - oldest).total_seconds())
    return {
        "index_jobs": index_jobs,
        "index_jobs_retrying": failing_index,
        "index_lag_seconds": lag,
        "facts_indexed": indexed,
        "facts_missing_vectors": unindexed,
        "vectors_stored": stored,
        "changes": changes,
        "memory_jobs_pending": mem.get("pending", 0),
        "memory_jobs_running": mem.get("running", 0),
        "memory_jobs_failed": mem.get("failed", 0),
    }


def _check_settings():
    from pydantic import ValidationError

    from clara.settings import Settings

    try:
        s = Settings()
    except ValidationError as exc:
        return None, Check(
            "settings", FAIL, f"invalid settings: {exc.error_count()} error(s): {exc.errors()[0]['msg']}"
        )
    return s, Check("settings", OK, f"parsed (embedding provider {s.embedding_provider})")


def _fresh_state() -> dict:
    """`migration_state` of a database that does not exist yet (nothing is opened or created)."""
    from storage import migrate

    return {
        "core": {"current": None, "head": migrate.head_revision(), "known": True, "clara_tables": []},
        "plugins": {name: {"current": None, "head": _branch_head(v)} for name, v in plugin_branches().items()},
    }


def _missing_sqlite_file(url: str) -> Path | None:
    """The SQLite database file of `url` when it does not exist yet (connecting would create it), else None."""
    from sqlalchemy.engine import make_url

    u = make_url(url)
    if u.get_backend_name() != "sqlite" or not u.database or u.database == ":memory:" or u.query.get("uri"):
        return None
    path = Path(u.database)
    return None if path.exists() else path


def _check_data_dir(data_dir: Path) -> Check:
    if not data_dir.exists():
        # Not created here: say whether the first real use will be able to.
        parent = data_dir.absolute().parent
        while not parent.exists():
            parent = parent.parent
        if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
            return Check("data dir", FAIL, f"{data_dir.absolute()} does not exist and {parent} is not writable")
        return Check("data dir", OK, f"{data_dir.absolute()} does not exist yet: it will be created on first use")
    try:
        with tempfile.NamedTemporaryFile(dir=data_dir, prefix=".doctor-", delete=True) as f:
            f.write(b"ok")
            f.flush()
    except OSError as exc:
        return Check("data dir", FAIL, f"{data_dir} is not writable: {exc}")
    return Check("data dir", OK, f"{data_dir.resolve()} writable")


def _migration_checks(state: dict) -> list[Check]:
    core = state["core"]
    checks = []
    if core["current"] is None and core.get("clara_tables"):
        checks.append(
            Check(
                "migrations",
                FAIL,
                f"Clara tables ({', '.join(core['clara_tables'][:5])}) "
                f"but no schema version ({tname('alembic_version')}): "
                "not made by Clara's migrations, so they cannot be upgraded safely",
            )
        )
    elif core["current"] is None:
        checks.append(
            Check(
                "migrations",
                WARN,
                f"database not initialised yet: it will be created (migrated to head {core['head']}) on first use "
                "(or now: `clara db upgrade`)",
            )
        )
    elif not core.get("known", True):
        checks.append(
            Check(
                "migrations",
                FAIL,
                f"at unknown revision {core['current']} (this Clara's head is {core['head']}): "
                "written by a newer Clara or another tool; run that version or restore a backup",
            )
        )
    elif core["current"] != core["head"]:
        checks.append(Check("migrations", FAIL, f"at {core['current']}, head {core['head']}: run `clara db upgrade`"))
    else:
        checks.append(Check("migrations", OK, f"at head {core['head']}"))
    for name, p in state["plugins"].items():
        if p["current"] is None:
            checks.append(
                Check(f"plugin {name} schema", WARN, f"not created yet (head {p['head']}; made at plugin load)")
            )
        elif p["current"] != p["head"]:
            checks.append(Check(f"plugin {name} schema", FAIL, f"at {p['current']}, head {p['head']}"))
        else:
            checks.append(Check(f"plugin {name} schema", OK, f"at head {p['head']}"))
    return checks


def _queue_checks(q: dict) -> list[Check]:
    checks = []
    lag = q["index_lag_seconds"]
    detail = (
        f"{q['index_jobs']} pending index jobs ({q['index_jobs_retrying']} retrying), "
        f"{q['facts_missing_vectors']} facts without vectors"
        + (f", oldest job {lag:.0f}s old" if lag is not None else "")
    )
    status = OK
    if q["index_jobs_retrying"] or (lag is not None and lag > 600):
        status = WARN
    if q["facts_missing_vectors"] and not q["index_jobs"]:
        status = FAIL
        detail += " and no job queued for them: run `clara memory reindex`"
    checks.append(Check("index queue", status, detail))
    mstatus = WARN if q["memory_jobs_failed"] else OK
    checks.append(
        Check(
            "memory jobs",
            mstatus,
            f"{q['memory_jobs_pending']} pending, {q['memory_jobs_running']} running, {q['memory_jobs_failed']} failed",
        )
    )
    return checks


async def _database_checks(url: str, checks: list[Check], clock: Clock) -> dict | None:
    """Append the database, migrations and queue checks for an existing database; its queue state
    when the schema is at head (else None)."""
    from storage.db import make_engines

    engines = make_engines(url)
    db_ok = False
    queues = None
    try:
        t0 = time.perf_counter()
        async with engines.reader.connect() as conn:
            await asyncio.wait_for(conn.execute(text("SELECT 1")), 15)
        db_ok = True
        checks.append(
            Check("database", OK, f"{engines.dialect} reachable ({(time.perf_counter() - t0) * 1000:.0f} ms)")
        )
    except Exception as exc:
        checks.append(Check("database", FAIL, f"unreachable: {_short(exc)}"))
    if db_ok:
        try:
            state = await asyncio.to_thread(migration_state, url)
            checks += _migration_checks(state)
            if state["core"]["current"] == state["core"]["head"]:
                queues = await queue_state(engines, clock())
                checks += _queue_checks(queues)
        except Exception as exc:
            checks.append(Check("migrations", FAIL, _short(exc)))
    await engines.dispose()
    return queues


async def run_doctor(*, open_index: bool = True, embedder=None, clock: Clock = system_clock) -> list[Check]:
    """Every check, in order; a failing step skips what depends on it. Creates nothing: on a fresh
    SQLite data dir the database is reported as to be created on first use (a warning)."""
    from storage.db import async_url

    checks: list[Check] = []
    settings, c = _check_settings()
    checks.append(c)
    if settings is None:
        return checks
    checks.append(_check_data_dir(settings.data_dir))
    url = async_url(settings.database_url, settings.data_dir)
    queues = None
    missing = _missing_sqlite_file(url)
    if missing is not None:
        # Connecting would create the file: report what first use will make instead.
        checks.append(Check("database", OK, f"sqlite: {missing} does not exist yet: it will be created on first use"))
        checks += _migration_checks(_fresh_state())
    else:
        queues = await _database_checks(url, checks, clock)
    # The embedder (loads the model and embeds one string).
    if embedder is None:
        try:
            from storage.embeddings import make_embedder

            t0 = time.perf_counter()
            embedder = await asyncio.to_thread(
                make_embedder,
                settings.embedding_provider,
                model=settings.embedding_model,
                openai_api_key=settings.openai_api_key,
                openai_base_url=settings.openai_base_url,
                cohere_api_key=settings.cohere_api_key,
                cohere_base_url=settings.cohere_base_url,
                threads=1,
            )
            vec = await asyncio.to_thread(embedder.embed_query, "doctor check")
            checks.append(
                Check("embedder", OK, f"{embedder.name} dim {len(vec)} ({(time.perf_counter() - t0) * 1000:.0f} ms)")
            )
        except Exception as exc:
            checks.append(Check("embedder", FAIL, f"cannot load/embed: {_short(exc)}"))
            embedder = None
    if open_index and embedder is not None and queues is not None:
        checks.append(await _index_check(settings, embedder, queues))
    checks.append(_token_check())
    return checks


async def _index_check(settings, embedder, queues: dict) -> Check:
    """The vectors are stored in SQL (`fact_vectors`); each process's local index is a cache of
    them (rebuilt at its start when lost), so the check compares SQL with SQL and lists the
    local index folders with how far each has followed the change feed."""
    from storage.feed import NodeSlot

    n = int(queues.get("vectors_stored", {}).get(embedder.name, 0))
    expected = queues["facts_indexed"]
    nodes = []
    if not settings.qdrant_url:
        root = settings.data_dir / "index" / tname(f"{embedder.name}-{embedder.dim}")
        for state_path in sorted(root.glob("node-*.json")) if root.exists() else []:
            state = NodeSlot(root, int(state_path.stem.split("-")[1]), -1).read_state() or {}
            behind = max(0, queues.get("changes", 0) - int(state.get("position", 0)))
            nodes.append(f"{state_path.stem} {behind} behind")
    where = f"; local indexes: {', '.join(nodes)}" if nodes else ""
    if n >= expected:
        return Check("vector index", OK, f"{n} vectors = {expected} indexed facts (stored in SQL){where}")
    status = WARN if queues["index_jobs"] else FAIL
    hint = " (index jobs pending)" if queues["index_jobs"] else ": run `clara memory reindex`"
    return Check("vector index", status, f"{n} vectors but {expected} indexed facts in SQL{hint}{where}")


def _token_check() -> Check:
    try:
        from clara.discord_adapter.settings import DiscordSettings

        token = DiscordSettings().discord_bot_token
    except Exception:
        token = os.environ.get("DISCORD_BOT_TOKEN")
    if token:
        return Check("discord token", OK, "DISCORD_BOT_TOKEN is set (validity not checked)")
    return Check("discord token", WARN, "DISCORD_BOT_TOKEN not set (`clara bot` will refuse to start)")


async def health(clock: Clock = system_clock) -> dict:
    """Cheap probe for monitoring: database, migrations, queue depths, index lag (SQL only; never
    opens the vector index or the model). `ok` is False when the database is unreachable or the
    schema is behind."""
    from clara.settings import get_settings
    from storage.db import async_url, make_engines

    s = get_settings()
    url = async_url(s.database_url, s.data_dir)
    engines = make_engines(url)
    out: dict = {"ok": False, "db": {"ok": False, "dialect": engines.dialect}}
    try:
        t0 = time.perf_counter()
        async with engines.reader.connect() as conn:
            await asyncio.wait_for(conn.execute(text("SELECT 1")), 10)
        out["db"] = {"ok": True, "dialect": engines.dialect, "latency_ms": round((time.perf_counter() - t0) * 1000, 1)}
        state = await asyncio.to_thread(migration_state, url)
        core = state["core"]
        out["migrations"] = {
            "current": core["current"],
            "head": core["head"],
            "at_head": core["current"] == core["head"],
            "plugins": state["plugins"],
        }
        if core["current"] == core["head"]:
            out["queues"] = await queue_state(engines, clock())
        out["ok"] = out["migrations"]["at_head"]
    except Exception as exc:
        out["error"] = _short(exc)
    finally:
        await engines.dispose()
    return out


def _short(exc: BaseException) -> str:
    msg = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return f"{type(exc).__name__}: {msg[0] if msg else ''}"[:300]
