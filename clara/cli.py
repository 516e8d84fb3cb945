"""The `clara` command line (typer + rich)."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

app = typer.Typer(help="Clara: a memory-first chat bot.", no_args_is_help=True, add_completion=False)
memory_app = typer.Typer(help="Inspect and manage the fact store.", no_args_is_help=True)
import_app = typer.Typer(help="Import memories from other formats.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
bench_app = typer.Typer(help="Benchmarks (print tables; --json for machine-readable figures).", no_args_is_help=True)
memory_app.add_typer(import_app, name="import")
app.add_typer(memory_app, name="memory")
app.add_typer(db_app, name="db")
app.add_typer(bench_app, name="bench")

console = Console(soft_wrap=not sys.stdout.isatty())
err = Console(stderr=True, soft_wrap=True)  # an error is one line, never wrapped at 80 columns
MAX_INT64 = 2**63 - 1  # storage.text.MAX_INT64 (not imported: `clara --help` stays fast)


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=False,
    )


def _named_tasks(prog: Progress):
    """A `progress(name, done, total)` callback that keeps one progress bar per name."""
    tasks: dict[str, int] = {}

    def progress(name: str, done: int, total: int) -> None:
        if name not in tasks:
            tasks[name] = prog.add_task(name, total=total)
        prog.update(tasks[name], completed=done, total=total)

    return progress


def _run(coro):
    """Run a coroutine; store errors (bad input, unknown ids, denied scopes) and operational
    failures become a one-line error and exit code 2 — commands need no handlers of their own."""
    from pydantic import ValidationError
    from sqlalchemy.exc import OperationalError

    from storage import StoreError
    from storage.vectors import IndexInUse

    try:
        return asyncio.run(coro)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    except ValidationError as exc:  # a bad setting in the environment or .env
        _fail(settings_error(exc))
    except (IndexInUse, StoreError) as exc:
        _fail(str(exc))
    except OperationalError as exc:
        _fail(f"database unreachable or unusable: {exc.orig}")
    except OSError as exc:  # a file named on the command line that cannot be read or written
        _fail(f"{exc.strerror or exc}: {exc.filename}" if exc.filename else str(exc))


def settings_error(exc) -> str:
    """A pydantic settings ValidationError as one line naming each variable (no traceback)."""
    parts = []
    for e in exc.errors(include_url=False, include_input=False)[:3]:
        name = ".".join(str(p) for p in e["loc"]).upper() or "settings"
        parts.append(f"{name}: {e['msg']}")
    return "bad setting — " + "; ".join(parts)


def _fail(message: str) -> None:
    err.print(f"[red]error:[/red] {message}")
    raise typer.Exit(2)


# --------------------------------------------------------------------------- chat
@app.command()
def chat(
    user: Annotated[str, typer.Option(help="Your user name (identity for private memories).")] = "you",
    channel: Annotated[str, typer.Option(help="Channel name; its memories are shared by its members.")] = "terminal",
    dm: Annotated[bool, typer.Option(help="Talk as in a direct message (private scope only).")] = False,
    scope: Annotated[
        list[str] | None, typer.Option(help="Also recall from this scope, e.g. locomo:conv-26 (repeatable).")
    ] = None,
) -> None:
    """Chat with Clara in the terminal. Reads one message per line when stdin is not a terminal."""
    from clara.terminal import run_chat

    _check_identity(user=user, channel=channel)

    _run(run_chat(user=user, channel=channel, dm=dm, console=console, extra_scopes=scope or []))


@app.command("bot")
def bot(
    invite: Annotated[
        bool,
        typer.Option("--invite", help="Print the link that adds the bot to a server (DISCORD_CLIENT_ID), then exit."),
    ] = False,
    mcp_http: Annotated[
        str | None,
        typer.Option(
            "--mcp-http",
            metavar="[HOST:]PORT",
            help="Also serve the memory MCP server over HTTP there (default CLARA_MCP_HTTP; tokens: CLARA_MCP_TOKENS).",
        ),
    ] = None,
) -> None:
    """Run Clara on Discord (needs DISCORD_BOT_TOKEN; LLM_PROVIDER optional). Stops on SIGTERM.
    With --mcp-http / CLARA_MCP_HTTP the same process serves the memory MCP server at /mcp
    (bearer tokens CLARA_MCP_TOKENS="token=agent,…", grants CLARA_MCP_GRANTS="agent=scope,…")."""
    from pydantic import ValidationError

    from clara.discord_adapter.logmirror import invite_url
    from clara.discord_adapter.run import MissingToken, run_bot
    from clara.discord_adapter.settings import DiscordSettings

    try:
        dsettings = DiscordSettings()
    except ValidationError as exc:
        _fail(settings_error(exc))
    if invite:
        if not dsettings.discord_client_id:
            _fail("DISCORD_CLIENT_ID is not set (the application id, in the Discord developer portal)")
        console.print(invite_url(dsettings.discord_client_id))
        return
    if not dsettings.discord_bot_token:  # before anything else is checked or opened
        console.print(f"[red]error:[/red] {MissingToken.MESSAGE}")
        raise typer.Exit(2)
    mcp = _mcp_http_config(listen=mcp_http)
    if dsettings.discord_client_id:
        console.print(f"invite link: {invite_url(dsettings.discord_client_id)}")

    try:
        _run(run_bot(mcp_http=mcp))
    except MissingToken as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None


@app.command("dashboard")
def dashboard(
    host: Annotated[str | None, typer.Option(help="Bind address (default CLARA_DASHBOARD_HOST, 127.0.0.1).")] = None,
    port: Annotated[
        int | None, typer.Option(min=1, max=65535, help="Port (default DISCORD_MONITOR_PORT, 8001).")
    ] = None,
) -> None:
    """The web dashboard alone (the bot serves it too). Login token: CLARA_DASHBOARD_TOKEN."""
    from clara.dashboard import serve
    from storage import StoreError
    from storage.vectors import IndexInUse

    try:
        serve(host=host, port=port)
    except (IndexInUse, StoreError) as exc:
        _fail(str(exc))
    except OSError as exc:  # e.g. the port is taken
        _fail(f"cannot serve the dashboard: {exc.strerror or exc}")


mcp_app = typer.Typer(help="Share Clara's memory with other agents over MCP.", no_args_is_help=True)
app.add_typer(mcp_app, name="mcp")


@mcp_app.command("serve")
def mcp_serve(
    agent: Annotated[str | None, typer.Option(help="stdio: the agent identity (or CLARA_MCP_AGENT).")] = None,
    scope: Annotated[list[str] | None, typer.Option(help="stdio: a shared scope the agent joins.")] = None,
    http: Annotated[bool, typer.Option(help="Serve streamable HTTP at /mcp instead of stdio.")] = False,
    host: str = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8765,
    grant: Annotated[list[str] | None, typer.Option(help="http: AGENT=SCOPE (repeatable).")] = None,
) -> None:
    """The memory MCP server (tools memory_store_fact, memory_recall, …). stdio: one agent per
    process; HTTP: one agent per bearer token from CLARA_MCP_TOKENS="token=agent,…", shared scopes
    from --grant and CLARA_MCP_GRANTS="agent=scope,…" (`clara bot --mcp-http` serves the same)."""
    from clara.mcp_server.__main__ import main as mcp_main

    if http:
        from clara.mcp_server.server import serve_http

        config = _mcp_http_config(listen=(host, port), grants=grant or [])
        _run(serve_http(config))
        return
    argv = ["--host", host, "--port", str(port)]
    if http:
        argv.append("--http")
    if agent:
        argv += ["--agent", agent]
    for s in scope or []:
        argv += ["--scope", s]
    for g in grant or []:
        argv += ["--grant", g]
    mcp_main(argv)


def _mcp_http_config(listen, grants=()):
    """The HTTP memory server's configuration from the settings and options, or a one-line error
    (exit 2) for a bad address, no or weak tokens, a bad agent name or grant."""
    from pydantic import ValidationError

    from clara.mcp_server.server import http_config_from_settings
    from clara.settings import get_settings

    try:
        return http_config_from_settings(get_settings(), listen=listen, grants=grants)
    except ValidationError as exc:
        _fail(settings_error(exc))
    except ValueError as exc:
        where = "--mcp-http / CLARA_MCP_HTTP" if not isinstance(listen, tuple) else "clara mcp serve --http"
        _fail(f"{where}: {exc}")


def _check_identity(**names: str | None) -> None:
    """--user / --channel name scopes (user:<name>, channel:<name>): refuse a name that cannot be one."""
    from storage import InvalidInput
    from storage.text import check_scope_id

    for what, value in names.items():
        if value is None:
            continue
        try:
            check_scope_id(f"{what}:{value}")
        except InvalidInput:
            _fail(f"--{what} {value[:60]!r} is not a usable name: 1-190 letters, digits, spaces or . : @ # / + - _")


# --------------------------------------------------------------------------- memory
async def _with_store(fn, bulk: bool = False):
    from clara.app import open_store

    store = await open_store(bulk=bulk)
    try:
        return await fn(store)
    finally:
        await store.aclose()


def _scopes_for(user: str | None, channel: str | None, scope: list[str] | None) -> list[str]:
    out = list(scope or [])
    if user:
        out.append(f"user:{user}")
    if channel:
        out.append(f"channel:{channel}")
    if not out:
        _fail("name at least one of --user, --channel or --scope")
    return out


@memory_app.command("add")
def memory_add(
    text: str,
    user: Annotated[str, typer.Option(help="Owner: stored in user:<user>.")],
    kind: str = "note",
    slug: Annotated[str | None, typer.Option(help="Keyed upsert: same slug updates the same fact.")] = None,
    importance: Annotated[int | None, typer.Option(min=1, max=10, help="1 (trivia) to 10 (vital).")] = None,
) -> None:
    """Store a fact in a user's private scope."""
    weight = importance / 10 if importance is not None else None

    async def go(store):
        await store.ensure_scope(f"user:{user}", "user", owner=user)
        if slug:
            fid, outcome = await store.upsert(slug, text, f"user:{user}", kind=kind, actor=user, importance=weight)
            console.print(f"{outcome} #{fid}")
        else:
            fid = await store.add(text, f"user:{user}", kind=kind, actor=user, importance=weight)
            console.print(f"added #{fid}")

    _run(_with_store(go))


@memory_app.command("recall")
def memory_recall(
    query: str,
    user: Annotated[str | None, typer.Option()] = None,
    channel: Annotated[str | None, typer.Option()] = None,
    scope: Annotated[list[str] | None, typer.Option(help="Explicit scope id (repeatable).")] = None,
    k: Annotated[int, typer.Option("-k", "--k", min=1, max=200, help="How many results.")] = 10,
    superseded: Annotated[bool, typer.Option(help="Include superseded facts.")] = False,
) -> None:
    """Hybrid recall within the given scopes."""
    scopes = _scopes_for(user, channel, scope)

    async def go(store):
        hits = await store.recall(query, scopes, k=k, include_superseded=superseded)
        table = Table("#", "id", "score", "scope", "status", "fact", "signals")
        for i, h in enumerate(hits, 1):
            sig = " ".join(f"{a}={b:g}" for a, b in h.signals.items())
            table.add_row(
                str(i), str(h.fact.id), f"{h.score:.4f}", h.fact.scope_id, h.fact.status, h.fact.content[:200], sig
            )
        console.print(table)

    _run(_with_store(go))


@memory_app.command("list")
def memory_list(
    user: Annotated[str | None, typer.Option()] = None,
    channel: Annotated[str | None, typer.Option()] = None,
    scope: Annotated[list[str] | None, typer.Option()] = None,
    limit: Annotated[int, typer.Option(min=1, max=100_000)] = 50,
    offset: Annotated[int, typer.Option(min=0, max=MAX_INT64)] = 0,
    status: Annotated[str, typer.Option(help="active, superseded, deleted or all")] = "active",
    kind: Annotated[
        list[str] | None,
        typer.Option(help="Only these kinds (repeatable); records: tool_execution, system (not listed otherwise)."),
    ] = None,
) -> None:
    """List facts, newest first (importance on the 1–10 scale). `--kind system` alone lists
    Clara's own system records (scope agent:clara)."""
    from clara.system_events import SYSTEM_SCOPE
    from storage.store import KINDS

    only_system = bool(kind) and set(kind) == {"system"} and not (user or channel or scope)
    scopes = [SYSTEM_SCOPE] if only_system else _scopes_for(user, channel, scope)
    if status not in ("active", "superseded", "deleted", "all"):
        _fail(f"--status must be active, superseded, deleted or all, got {status[:40]!r}")
    bad = [k for k in kind or () if k not in KINDS]
    if bad:
        _fail(f"unknown --kind {bad[0][:40]!r} (one of {', '.join(sorted(KINDS))})")
    statuses = ("active", "superseded", "deleted") if status == "all" else (status,)

    async def go(store):
        from clara.labels import importance_10

        facts = await store.list_facts(scopes, statuses=statuses, kinds=kind or None, limit=limit, offset=offset)
        table = Table("id", "created", "scope", "kind", "status", "imp", "fact")
        for f in facts:
            table.add_row(
                str(f.id),
                f.created_at.strftime("%Y-%m-%d %H:%M"),
                f.scope_id,
                f.kind,
                f.status,
                str(importance_10(f.importance)),
                f.content[:200],
            )
        console.print(table)

    _run(_with_store(go))


@memory_app.command("forget")
def memory_forget(fact_id: str) -> None:
    """Soft-delete one fact (kept in history, never recalled)."""

    async def go(store):
        fact = await store.forget(fact_id, actor=None)
        console.print(f"forgotten #{fact.id}: {fact.content[:200]}")

    _run(_with_store(go))


@memory_app.command("history")
def memory_history(fact_id: str) -> None:
    """Every recorded change of a fact."""

    async def go(store):
        table = Table("at", "action", "actor", "old", "new")
        for h in await store.history(fact_id):
            table.add_row(
                h.at.strftime("%Y-%m-%d %H:%M:%S"),
                h.action,
                h.actor or "",
                (h.old_content or "")[:80],
                (h.new_content or "")[:80],
            )
        console.print(table)

    _run(_with_store(go))


@memory_app.command("purge-user")
def memory_purge_user(
    user: str, yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False
) -> None:
    """Erase everything about a user for real, as `!forgetme` does: facts, messages, sessions,
    vectors, history text, plugins' data, copies of their words in others' bot replies and
    summaries, their export file; channel summaries rebuilt without them."""
    _check_identity(user=user)
    if not yes and not typer.confirm(f"Erase all memories of {user}? This cannot be undone"):
        raise typer.Exit(1)
    _purge_user(user)


def _purge_user(user: str) -> None:
    async def go(store):
        from rich.markup import escape

        from clara.forget import forget_user
        from clara.llm import LLMSettings, make_llm
        from clara.plugin_host import PluginHost
        from clara.writer import MemoryWriter

        llm = make_llm(LLMSettings())
        plugins = PluginHost(store, llm=llm)
        try:
            for result in await plugins.load_all():
                if not result.ok:
                    why = escape(f"plugin {result.name} not loaded ({result.error}): its data is not erased")
                    err.print(f"[yellow]{why}[/yellow]")
            done = await forget_user(store, user, plugins=plugins, writer=MemoryWriter(store, llm))
        finally:
            await plugins.aclose()
            if llm is not None:
                await llm.aclose()
        console.print(done.store)
        for name, value in sorted(done.plugins.items()):
            console.print(f"plugin {name}: {value}")
        console.print(f"channel summaries rebuilt: {done.summaries_rebuilt}; files deleted: {len(done.files)}")

    _run(_with_store(go))


@memory_app.command("clear")
def memory_clear(
    user: Annotated[
        str | None, typer.Option(help="Clear one user only (as `purge-user`: facts, messages, plugins' data).")
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
) -> None:
    """Clear the memory (MyPalClara's clear_dbs): everything — facts, entities, relations, messages,
    sessions, scopes, queued memory work, handoffs and the vector index (settings, schedules and
    plugins' own data stay) — or, with --user, everything about one user."""
    if user is not None:
        _check_identity(user=user)
        if not yes and not typer.confirm(f"Erase all memories of {user}? This cannot be undone"):
            err.print("nothing cleared")
            raise typer.Exit(1)
        _purge_user(user)
        return
    if not yes and not typer.confirm("Erase ALL of Clara's memory, for every user? This cannot be undone"):
        err.print("nothing cleared")
        raise typer.Exit(1)
    from clara.ops.bootstrap import clear_all

    counts = _run(_with_store(clear_all))
    console.print(
        "cleared: " + ", ".join(f"{n} {table}" for table, n in counts.items() if n)
        if any(counts.values())
        else "cleared: the memory was already empty"
    )


@memory_app.command("bootstrap")
def memory_bootstrap(
    profile: Annotated[Path, typer.Argument(help="A text file about the user, in the first person.")],
    user: Annotated[str, typer.Option(help="Whose profile it is: stored in user:<user>.")] = "you",
    apply: Annotated[bool, typer.Option("--apply", help="Store the facts (default: dry run, print them).")] = False,
) -> None:
    """Extract facts from a profile with the offline extractor: a dry run prints them as JSON;
    --apply stores them (with entities and relations) in the user's private scope. Idempotent."""
    from clara.ops.bootstrap import apply as apply_facts
    from clara.ops.bootstrap import plan, read_profile

    _check_identity(user=user)

    async def go(store):
        facts = await plan(store, read_profile(profile), user)
        if not apply:
            return {"dry_run": True, "user": user, "facts": facts}
        done = await apply_facts(store, facts, user)
        await store.drain(timeout=3600)
        return {"dry_run": False, "user": user, **done, "facts": facts}

    result = _run(_with_store(go))
    console.print_json(json.dumps(result, ensure_ascii=False))
    if not result["facts"]:
        err.print("no facts found in the profile (write it in the first person: “I live in …”)")


@memory_app.command("reindex")
def memory_reindex() -> None:
    """Rebuild the vector index from SQL (the source of truth)."""

    async def go(store):
        with _progress() as prog:
            task = prog.add_task("reindexing", total=None)
            n = await store.reindex(progress=lambda done, total: prog.update(task, completed=done, total=total))
        console.print(f"reindexed {n} facts")

    _run(_with_store(go, bulk=True))


@memory_app.command("decay")
def memory_decay() -> None:
    """Recompute relevance of every active fact (forgetting curve; see storage/decay.py)."""
    console.print(f"updated {_run(_with_store(lambda s: s.decay()))} facts")


maintenance_app = typer.Typer(
    help="Scheduled maintenance: decay (daily), rerank (weekly), cleanup (daily), backup (with BACKUP_DIR).",
    no_args_is_help=True,
)
app.add_typer(maintenance_app, name="maintenance")


@maintenance_app.command("list")
def maintenance_list() -> None:
    """The maintenance jobs the bot's scheduler runs and their schedules (crontab, UTC)."""
    from clara.maintenance import schedules
    from clara.settings import Settings

    try:
        plan = schedules(Settings())
    except Exception as exc:  # pydantic ValidationError: a bad MAINTENANCE_* / BACKUP_* value
        _fail(settings_error(exc) if hasattr(exc, "errors") else str(exc))
    table = Table("job", "schedule (UTC)")
    for name, cron in plan.items():
        table.add_row(name, cron or "off")
    console.print(table)


@maintenance_app.command("run")
def maintenance_run(job: Annotated[str, typer.Argument(help="decay, rerank, cleanup or backup")]) -> None:
    """Run one maintenance job now (what the scheduler does), printing its result as JSON."""
    from clara.maintenance import RUNNERS
    from clara.settings import get_settings

    if job not in RUNNERS:
        _fail(f"unknown job {job!r}: one of {', '.join(RUNNERS)}")

    from clara.ops.backup import BackupError

    async def go(store):
        try:
            return await RUNNERS[job](store, get_settings())
        except BackupError as exc:
            return {"job": job, "error": str(exc)}

    result = _run(_with_store(go))
    console.print_json(json.dumps(result, default=str))
    if "error" in result:
        raise typer.Exit(1)


@memory_app.command("stats")
def memory_stats() -> None:
    """Counts of facts by status and pending indexing jobs."""

    async def go(store):
        table = Table("status", "facts")
        for st in ("active", "superseded", "deleted"):
            table.add_row(st, str(await store.count_facts(None, (st,))))
        console.print(table)
        console.print(f"pending index jobs: {await store.pending_jobs()}; vectors: {await store.index.count()}")

    _run(_with_store(go))


@import_app.command("locomo")
def import_locomo(
    files: Annotated[list[Path], typer.Argument(help="LoCoMo JSON files or directories.")],
    wait: Annotated[bool, typer.Option(help="Wait until every turn is embedded.")] = True,
) -> None:
    """Load LoCoMo-format conversations, one scope per conversation (`locomo:<id>`)."""
    from clara import locomo

    try:
        convs = [c for f in locomo.expand(files) for c in locomo.load(f)]
    except ValueError as exc:
        _fail(str(exc))
    if not convs:
        _fail("no conversations found")

    async def go(store):
        total = sum(len(c.turns) for c in convs)
        with _progress() as prog:
            task = prog.add_task("importing turns", total=total)
            for conv in convs:
                for e in await locomo.ingest(store, conv, on_batch=lambda n: prog.advance(task, n)):
                    where = e["index"] if isinstance(e["index"], str) else f"turn {e['index']}"
                    err.print(f"[yellow]skipped {where} of {conv.id}: {e['error']}", markup=False)
            if wait:
                emb = prog.add_task("embedding", total=total)
                await store.indexer.drain(
                    timeout=24 * 3600, progress=lambda d, t: prog.update(emb, completed=d, total=t)
                )
        for conv in convs:
            console.print(f"locomo:{conv.id}: {len(conv.turns)} turns — chat with: clara chat --scope locomo:{conv.id}")

    _run(_with_store(go, bulk=True))


# --------------------------------------------------------------------------- db
@db_app.command("upgrade")
def db_upgrade(revision: str = "head") -> None:
    """Apply the Alembic migrations to DATABASE_URL (default: the SQLite file in CLARA_DATA_DIR)."""
    from clara.settings import get_settings
    from storage import migrate
    from storage.db import async_url

    s = get_settings()
    s.data_dir.mkdir(parents=True, exist_ok=True)
    url = async_url(s.database_url, s.data_dir)
    migrate.upgrade(url, revision)
    console.print(f"database at revision {migrate.current_revision(url)} (head {migrate.head_revision()})")


@db_app.command("current")
def db_current() -> None:
    """Show the schema revision of the configured database."""
    from clara.settings import get_settings
    from storage import migrate
    from storage.db import async_url

    s = get_settings()
    url = async_url(s.database_url, s.data_dir)
    console.print(f"current {migrate.current_revision(url)}; head {migrate.head_revision()}")


# --------------------------------------------------------------------------- bench
@bench_app.command("locomo")
def bench_locomo(
    paths: Annotated[list[Path], typer.Argument(help="LoCoMo files or directories.")],
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write every figure as JSON.")] = None,
    database_url: Annotated[str | None, typer.Option(help="Run Clara on this database (default temp SQLite).")] = None,
    mem0: Annotated[bool | None, typer.Option(help="Include mem0 (default: when installed).")] = None,
    distractors: Annotated[
        int,
        typer.Option(min=0, max=10_000_000, help="Also recall over a scope of this many synthetic facts (Clara only)."),
    ] = 0,
    context: Annotated[
        bool, typer.Option("--context", help="Also: share of questions whose evidence reaches the assembled prompt.")
    ] = False,
    access: Annotated[
        bool,
        typer.Option(
            "--access", help="Also: access-count ablation (held-out half, before/after the other half is asked)."
        ),
    ] = False,
) -> None:
    """Retrieval recall@k of Clara vs BM25-only and dense-only (and mem0) in one run."""
    from clara.bench import locomo as bench

    with _progress() as prog:
        progress = _named_tasks(prog)
        try:
            res = _run(
                bench.run(
                    paths,
                    database_url=database_url,
                    with_mem0=mem0,
                    progress=progress,
                    distractors=distractors,
                    context=context,
                    access=access,
                )
            )
        except ValueError as exc:
            _fail(str(exc))
    _print_bench(
        {k: v for k, v in res.items() if not k.startswith(("context:", "access:"))},
        "LoCoMo retrieval",
        ["R@1", "R@5", "R@10", "R@25", "query_p50_ms", "query_p95_ms", "ingest_turns_per_s"],
    )
    ctx = {k: v for k, v in res.items() if k.startswith("context:")}
    if ctx:
        _print_bench(
            ctx,
            "Evidence inside the assembled prompt (default budgets)",
            ["all_in_prompt", "any_in_prompt", "tokens_p50", "questions"],
        )
    if "access:on" in res:
        _print_bench(
            {k: v for k, v in res.items() if k.startswith("access:")},
            "Access-count ablation (held-out half of the questions)",
            ["R@1", "R@5", "R@10", "R@25", "questions"],
        )
        on, off = res["access:on"], res["access:off"]
        console.print(
            "access on − off: " + ", ".join(f"R@{k} {on[f'R@{k}'] - off[f'R@{k}']:+.4f}" for k in (1, 5, 10, 25))
        )
    if "bm25" in res:
        c, b = res["clara"], res["bm25"]
        console.print(f"clara/bm25 R@10 ratio: {c['R@10'] / b['R@10']:.2f}; run: {res['run']}")
    _write_json(res, json_out)


@bench_app.command("scale")
def bench_scale(
    facts: Annotated[str, typer.Option(help="Comma-separated store sizes.")] = "10000,100000",
    queries: Annotated[int, typer.Option(min=1, max=1_000_000)] = 200,
    adds: Annotated[int, typer.Option(min=1, max=1_000_000)] = 500,
    json_out: Annotated[Path | None, typer.Option("--json")] = None,
    database_url: Annotated[
        str | None, typer.Option(help="A PostgreSQL server: each size runs in a private database, then dropped.")
    ] = None,
    synthetic: Annotated[
        bool, typer.Option("--synthetic", help="Embed facts with a fast hashed bag-of-words stand-in.")
    ] = False,
    explain: Annotated[
        bool, typer.Option("--explain", help="Print the plan of every SQL statement of one recall per size.")
    ] = False,
) -> None:
    """Add-ack and recall latency (p50/p95, query embedding included) and RSS as the store grows."""
    from clara.bench import scale

    parts = [x.strip() for x in facts.split(",") if x.strip()]
    if not parts or not all(x.isascii() and x.isdigit() and 0 < len(x) <= 9 for x in parts):
        _fail(f"--facts takes comma-separated sizes from 1 to 999,999,999, got {facts[:60]!r}")
    sizes = [int(x) for x in parts]
    with _progress() as prog:
        progress = _named_tasks(prog)
        res = _run(
            scale.run(
                sizes,
                queries=queries,
                adds=adds,
                database_url=database_url,
                synthetic=synthetic,
                explain=explain,
                progress=progress,
            )
        )
    plans = {k: res.pop(k)["text"] for k in list(res) if k.startswith("explain ")}
    table = Table(title="Store scale (latencies in ms, query embedding included)")
    table.add_column("metric")
    for size in res:
        table.add_column(f"{int(size):,} facts", justify="right")
    for metric in next(iter(res.values())):
        table.add_row(metric, *[_fmt(res[size].get(metric)) for size in res])
    console.print(table)
    for title, text in plans.items():
        console.print(f"\n# {title} facts\n{text}", markup=False, highlight=False)
    _write_json({**res, **{k: {"text": v} for k, v in plans.items()}}, json_out)


@bench_app.command("ablation")
def bench_ablation(
    paths: Annotated[list[Path], typer.Argument(help="LoCoMo files or directories.")],
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write every figure as JSON.")] = None,
    database_url: Annotated[str | None, typer.Option(help="Run Clara on this database (default SQLite).")] = None,
    data_dir: Annotated[
        Path | None, typer.Option(help="Keep the ingested store here between runs (default: a temp dir).")
    ] = None,
    variants: Annotated[str, typer.Option(help="Comma-separated variants (full, -lexical, ...).")] = (
        "full,-lexical,-lexical_ctx,-dense,-dense_ctx,-neighbour,-entity,-names,-lexical_path"
    ),
    repeat: Annotated[int, typer.Option(min=1, max=20, help="Latency runs per variant.")] = 1,
    profile: Annotated[bool, typer.Option("--profile", help="Also print a cProfile of the full variant.")] = False,
) -> None:
    """R@k and query latency with each recall signal switched off in turn (ablation)."""
    from clara.bench import ablation

    chosen = tuple(v.strip() for v in variants.split(",") if v.strip())
    unknown = [v for v in chosen if v not in ablation.VARIANTS and v != "-dense_path"]
    if unknown or not chosen:
        _fail(f"unknown variants {unknown}; choose from {', '.join(ablation.VARIANTS)}, -dense_path")
    with _progress() as prog:
        progress = _named_tasks(prog)
        try:
            res = _run(
                ablation.run(
                    paths,
                    database_url=database_url,
                    data_dir=data_dir,
                    variants=chosen,
                    repeat=repeat,
                    profile=profile,
                    progress=progress,
                )
            )
        except ValueError as exc:
            _fail(str(exc))
    prof = res.pop("profile", None)
    _print_bench(res, "Recall ablation", ["R@1", "R@5", "R@10", "R@25", "query_p50_ms", "query_p95_ms"], "variant")
    if prof:
        console.print(prof["text"], markup=False, highlight=False)
    _write_json(res, json_out)


@bench_app.command("nodes")
def bench_nodes(
    nodes: Annotated[int, typer.Option(min=1, max=16, help="How many Clara processes share the store.")] = 3,
    writes: Annotated[int, typer.Option(min=1, max=100_000, help="Paced writes, spread over the nodes.")] = 200,
    rate: Annotated[float, typer.Option(min=0.1, max=10_000, help="Paced writes per second (all nodes).")] = 20.0,
    catchup: Annotated[int, typer.Option(min=0, max=10_000_000, help="Stored vectors a late joiner loads.")] = 20_000,
    json_out: Annotated[Path | None, typer.Option("--json")] = None,
    database_url: Annotated[str | None, typer.Option(help="PostgreSQL URL (default: one SQLite data dir).")] = None,
    catchup_only: Annotated[
        bool, typer.Option("--catchup-only", help="Only the late joiner's catch-up, --runs times (median).")
    ] = False,
    runs: Annotated[int, typer.Option(min=1, max=20, help="Late-joiner runs with --catchup-only.")] = 3,
) -> None:
    """Several processes on one store: sync lag, recall latency per node, write throughput vs
    one node, a late joiner's catch-up rate from stored vectors, RSS per node."""
    from clara.bench import nodes as bench

    with _progress() as prog:
        progress = _named_tasks(prog)
        if catchup_only:
            res = bench.catchup_runs(catchup or 100_000, runs=runs, database_url=database_url, progress=progress)
        else:
            res = bench.run(
                nodes, writes=writes, rate=rate, catchup=catchup, database_url=database_url, progress=progress
            )
    title = "Late joiner catch-up from stored vectors" if catchup_only else f"{nodes} Clara processes on one store"
    table = Table(title=f"{title} (ms, MB, per second)")
    table.add_column("metric")
    for name in res:
        table.add_column(name, justify="right")
    metrics = list(dict.fromkeys(k for vals in res.values() for k in vals))
    for metric in metrics:
        table.add_row(metric, *[_fmt(res[name].get(metric)) for name in res])
    console.print(table)
    _write_json(res, json_out)


@bench_app.command("chat")
def bench_chat(
    users: Annotated[int, typer.Option(min=1, max=10_000)] = 20,
    messages: Annotated[int, typer.Option(min=1, max=10_000)] = 10,
    json_out: Annotated[Path | None, typer.Option("--json")] = None,
    database_url: Annotated[str | None, typer.Option()] = None,
) -> None:
    """The chat pipeline's own costs: acknowledgement, turn, context assembly, background writes."""
    from clara.bench import pipeline

    with _progress() as prog:
        progress = _named_tasks(prog)
        res = _run(pipeline.run(users, messages, database_url=database_url, progress=progress))
    cols = sorted({c for v in res.values() for c in v}, key=lambda c: (c != "n", c))
    _print_bench(res, f"Chat pipeline, {users} users x {messages} messages concurrently (ms)", cols)
    _write_json(res, json_out)


@bench_app.command("current")
def bench_current(
    set_name: Annotated[str, typer.Option("--set", help="Phrasing set: dev (tune on it) or holdout.")] = "dev",
    limit: Annotated[int | None, typer.Option(min=1, help="Only the first N scenarios (a quick run).")] = None,
    seed: Annotated[int, typer.Option(help="Scenario generator seed.")] = 1,
    lang: Annotated[str | None, typer.Option(help="Only these languages, comma-separated (en,es,pt,fr,de).")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write every figure as JSON.")] = None,
    database_url: Annotated[str | None, typer.Option(help="Run on this database (default temp SQLite).")] = None,
) -> None:
    """Recall what is true now: facts that change (moved, new job, broke up…) over weeks of
    sessions; is the current state recalled first, the old one kept as history?"""
    from clara.bench import current

    langs = [x.strip() for x in lang.split(",") if x.strip()] if lang else None
    with _progress() as prog:
        progress = _named_tasks(prog)
        try:
            res = _run(
                current.run(set_name, seed=seed, limit=limit, langs=langs, database_url=database_url, progress=progress)
            )
        except ValueError as exc:
            _fail(str(exc))
    rows = {k: res[k] for k in current.TABLE_ROWS if k in res}
    run = res["run"]
    _print_bench(
        rows,
        f"Recall what is true now — set {run['set']}, {run['scenarios']} scenarios, {run['database']}",
        ["n", *current.METRICS, "query_p50_ms", "query_p95_ms", "privacy_violations", *current.DIAGNOSTICS],
        first="scenarios",
    )
    console.print(
        f"turns {run['turns']}, facts {run['facts']}, {run['seconds']:.0f} s; per attribute: --json"
        + (f"; [red]paraphrase overlaps {run['paraphrase_overlaps']}[/red]" if run["paraphrase_overlaps"] else "")
    )
    _write_json(res, json_out, nested=current.BREAKDOWNS)


@bench_app.command("startup")
def bench_startup(
    runs: Annotated[int, typer.Option(min=1, max=1000)] = 5,
    json_out: Annotated[Path | None, typer.Option("--json")] = None,
) -> None:
    """Cold start of `clara chat` (memory-only, fresh process per run) to its first reply: wall and CPU
    seconds and idle RSS, p50/p95 over RUNS, on an existing data dir and on fresh ones."""
    from clara.bench import startup

    res = startup.run(runs)
    _print_bench(res, f"clara chat cold start, {runs} runs per case", list(next(iter(res.values()))), first="case")
    _write_json(res, json_out)


def _print_bench(res: dict, title: str, cols: list[str], first: str = "system") -> None:
    table = Table(title=title)
    table.add_column(first)
    for c in cols:
        table.add_column(c, justify="right")
    for name, vals in res.items():
        if name == "run":
            continue
        table.add_row(name, *[_fmt(vals.get(c)) for c in cols])
    console.print(table)


def _fmt(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.3f}" if v < 10 else f"{v:.1f}"
    return str(v)


def _write_json(res: dict, path: Path | None, nested: tuple[str, ...] = ()) -> None:
    """`res` as JSON: "system.metric" keys plus the whole dict under "systems" (`nested` keys
    — breakdowns, per-item details — only there)."""
    if path is None:
        return
    flat = {f"{sys_}.{k}": v for sys_, vals in res.items() if sys_ not in nested for k, v in vals.items()}
    path.parent.mkdir(parents=True, exist_ok=True)  # e.g. bench-results/ on a fresh checkout
    path.write_text(json.dumps({**flat, "systems": res}, indent=2, default=str))
    err.print(f"wrote {path}")


# --------------------------------------------------------------------------- operations (clara/ops)
app.add_typer(import_app, name="import")  # `clara import mem0|jsonl|locomo` = `clara memory import ...`


def _ops_logging() -> None:
    from clara.ops.logs import setup_logging
    from clara.settings import get_settings

    try:
        setup_logging(get_settings())
    except ValueError as exc:
        _fail(str(exc))


@app.command("doctor")
def doctor(
    index: Annotated[bool, typer.Option(help="Open the vector index and compare its count with SQL.")] = True,
    strict: Annotated[bool, typer.Option(help="Exit non-zero on warnings too.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the checks as JSON.")] = False,
) -> None:
    """Check configuration, database and migrations, queues, vector index, embedder and Discord
    token. Exit 1 when a check fails (or warns, with --strict). Creates nothing: a fresh data dir is
    a warning (its database is created and migrated on first use)."""
    from clara.ops.doctor import FAIL, WARN, run_doctor

    checks = asyncio.run(run_doctor(open_index=index))
    if json_out:
        print(json.dumps([c.as_dict() for c in checks]))
    else:
        table = Table("check", "status", "detail", title="clara doctor")
        colour = {"ok": "green", "warn": "yellow", "fail": "red"}
        for c in checks:
            table.add_row(c.name, f"[{colour[c.status]}]{c.status}[/]", c.detail)
        console.print(table)
    bad = {FAIL, WARN} if strict else {FAIL}
    if any(c.status in bad for c in checks):
        raise typer.Exit(1)


@app.command("health")
def health() -> None:
    """Print a JSON health probe (db, migrations, queue depths, index lag); exit 1 when unhealthy."""
    from clara.ops.doctor import health as probe

    report = asyncio.run(probe())
    print(json.dumps(report, default=str))
    if not report.get("ok"):
        raise typer.Exit(1)


@db_app.command("backup")
def db_backup(file: Path) -> None:
    """Back up the database (SQLite online backup API; PostgreSQL pg_dump -Fc) to FILE."""
    from clara.ops.backup import BackupError, backup
    from clara.settings import get_settings
    from storage.db import async_url

    s = get_settings()
    try:
        info = backup(async_url(s.database_url, s.data_dir), file)
    except BackupError as exc:
        _fail(str(exc))
    console.print(f"backed up {info['backend']} database to {info['file']} ({info['bytes']:,} bytes)")


@db_app.command("restore")
def db_restore(
    file: Path,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
    reindex: Annotated[bool, typer.Option(help="Rebuild the vector index from the restored SQL.")] = True,
) -> None:
    """Replace the database with a backup made by `clara db backup` (stop the bot first), then
    rebuild the vector index."""
    from clara.ops.backup import BackupError, restore
    from clara.settings import get_settings
    from storage.db import async_url

    if not yes and not typer.confirm(f"Replace the current database with {file}?"):
        raise typer.Exit(1)
    s = get_settings()
    try:
        info = restore(async_url(s.database_url, s.data_dir), file)
    except BackupError as exc:
        _fail(str(exc))
    console.print(f"restored {info['backend']} database from {file}")
    if reindex:
        _run(_reindex_quietly())


async def _reindex_quietly() -> None:
    """Rebuild the index with the indexer started only after the clear (store.reindex's clear
    races a running indexer: "Shard is not initialized", retried)."""
    from clara.app import open_store

    store = await open_store(start_indexer=False, bulk=True)
    try:
        n = await store.reindex(wait=False)
        store.start()
        await store.drain(timeout=24 * 3600)
        console.print(f"reindexed {n} facts")
    finally:
        await store.aclose()


@memory_app.command("export")
def memory_export(
    file: Path,
    user: Annotated[str | None, typer.Option(help="Only this user's memories (default: everything).")] = None,
) -> None:
    """Export facts (scope, kind, status, slug, importance, times, supersede links, entities) as JSON Lines."""
    from clara.ops.portable import export_jsonl

    info = _run(_with_store(lambda store: export_jsonl(store, file, user), bulk=False))
    console.print(
        f"exported {info['facts']} facts and {info['relations']} relations in {info['scopes']} scopes to {info['file']}"
    )


def _print_import(report) -> None:
    for e in report.errors[:20]:
        err.print(f"[yellow]skipped {e}")
    console.print(
        f"read {report.read}, imported {report.imported}, already present {report.skipped}, "
        f"failed {report.failed}, scopes {report.scopes}"
        + (f", relations {report.relations}" if getattr(report, "relations", 0) else "")
    )
    if report.failed:
        raise typer.Exit(1)


@import_app.command("jsonl")
def import_jsonl_cmd(
    file: Path, wait: Annotated[bool, typer.Option(help="Wait until every fact is embedded.")] = True
) -> None:
    """Import a `clara memory export` JSON Lines file (ids remapped; importing twice changes nothing)."""
    from clara.ops.portable import import_jsonl

    async def go(store):
        report = await import_jsonl(store, file)
        if wait:
            await store.drain(timeout=24 * 3600)
        return report

    _print_import(_run(_with_store(go, bulk=True)))


@import_app.command("mem0")
def import_mem0_cmd(
    export: Annotated[Path | None, typer.Argument(help="A mem0 Platform JSON (or JSON Lines) export.")] = None,
    qdrant_path: Annotated[Path | None, typer.Option(help="mem0's Qdrant directory (local path mode).")] = None,
    collection: Annotated[str, typer.Option(help="mem0's Qdrant collection.")] = "mem0",
    history_db: Annotated[
        Path | None, typer.Option(help="mem0's SQLite history DB (default: <qdrant>/../history.db).")
    ] = None,
    default_scope: Annotated[str | None, typer.Option(help="Scope for memories with no user_id/agent_id.")] = None,
    wait: Annotated[bool, typer.Option(help="Wait until every fact is embedded.")] = True,
) -> None:
    """Import mem0 memories: user_id → user:<id>, agent_id → agent:<id>, source_ref mem0:<id>, times kept."""
    from clara.ops.mem0_import import import_mem0

    async def go(store):
        report = await import_mem0(
            store,
            export=export,
            qdrant_path=qdrant_path,
            collection=collection,
            history_db=history_db,
            default_scope=default_scope,
        )
        if wait:
            await store.drain(timeout=24 * 3600)
        return report

    _print_import(_run(_with_store(go, bulk=True)))


@bench_app.command("load")
def bench_load(
    users: Annotated[int, typer.Option(min=1, max=10_000)] = 50,
    messages: Annotated[int, typer.Option(min=1, max=10_000)] = 20,
    llm_delay: Annotated[
        float, typer.Option(min=0, max=3600, help="Seconds the stub model waits per chat answer.")
    ] = 0.0,
    json_out: Annotated[Path | None, typer.Option("--json")] = None,
    database_url: Annotated[str | None, typer.Option()] = None,
) -> None:
    """N users x M messages concurrently through the fake Discord: lost messages, duplicate facts,
    undelivered replies, turn overhead excluding LLM time (needs a source checkout)."""
    from clara.ops.load import run_load

    with _progress() as prog:
        progress = _named_tasks(prog)
        try:
            res = _run(run_load(users, messages, database_url=database_url, llm_delay=llm_delay, progress=progress))
        except RuntimeError as exc:
            _fail(str(exc))
    table = Table(title=f"Load: {users} users x {messages} messages through the fake Discord")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in res.items():
        table.add_row(k, _fmt(v))
    console.print(table)
    _write_json({"load": res}, json_out)
    if any(res[k] for k in ("lost_messages", "undelivered_replies", "duplicate_facts", "missing_facts")):
        raise typer.Exit(1)


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
