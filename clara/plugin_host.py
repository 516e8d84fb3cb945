"""The plugin host: loads plugins from a package (default `plugins`), gives each a
`PluginContext`, and routes commands, LLM tools, events, scheduled jobs and user-data hooks to
them — isolating every call (see clara/plugin_api.py for the plugin side).

Lifecycle (modelled on discord.py's cogs): `load` imports the package, runs its own migrations,
then `setup`; `reload` re-imports and swaps atomically (the old registrations stay if the new
setup fails); `unload` calls `teardown` and drops every registration. Per-guild enable/disable is a
setting read on every call. A plugin whose setup fails is marked failed; one whose handlers fail
`MAX_FAILURES` times in a row is disabled; neither ever takes the bot down.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import pkgutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from clara.llm import Tool, ToolSpec, validate_arguments
from clara.plugin_api import EVENTS, Invocation, Level, Manifest, PluginError, Result, version_table
from clara.system_events import record_system

log = logging.getLogger(__name__)
CORE_NS = "core"
CORE_JOBS = "core"  # persisted core jobs are `core:<name>` (clara/maintenance.py)
MAX_FAILURES = 5
SETUP_TIMEOUT = 30.0
CALL_TIMEOUT = 60.0
_HOSTS: list[PluginHost] = []  # for scheduled-job trampolines (APScheduler stores a module-level ref)


@dataclass
class LoadResult:
    name: str
    ok: bool
    error: str | None = None


@dataclass
class PluginInfo:
    name: str
    version: str
    description: str
    data_statement: str
    status: str  # loaded | failed | disabled
    error: str | None = None


@dataclass
class _Command:
    plugin: str
    name: str
    help: str
    level: Level
    usage: str
    handler: Callable


@dataclass
class _ToolReg:
    plugin: str
    spec: ToolSpec
    handler: Callable
    level: Level = Level.MEMBER  # offered only to invocations at this level or above


@dataclass
class _Loaded:
    module: Any
    manifest: Manifest
    ctx: _Context
    commands: dict[str, _Command] = field(default_factory=dict)
    tools: dict[str, _ToolReg] = field(default_factory=dict)
    events: dict[str, list[Callable]] = field(default_factory=dict)
    jobs: dict[str, Callable] = field(default_factory=dict)
    triggers: dict[str, tuple[str, dict]] = field(default_factory=dict)
    failures: int = 0
    status: str = "loaded"
    error: str | None = None


class _Config:
    def __init__(self, store, name: str):
        self._s = store.settings
        self._ns = f"plugin:{name}"

    async def get(self, target: str, key: str, default: Any = None) -> Any:
        return await self._s.get(self._ns, target, key, default)

    async def set(self, target: str, key: str, value: Any) -> None:
        await self._s.set(self._ns, target, key, value)

    async def delete(self, target: str, key: str | None = None) -> int:
        return await self._s.delete(self._ns, target, key)


class _Memory:
    """The store verbs a plugin may use (trusted writes: the plugin decides the scope)."""

    def __init__(self, store, name: str):
        self._store = store
        self._name = name

    async def add(self, content, scope, *, kind="note", importance=0.5, entities=(), slug=None, created_by=None):
        return await self._store.add(
            content,
            scope,
            kind=kind,
            importance=importance,
            entities=entities,
            slug=slug,
            created_by=created_by,
            source_ref=f"plugin:{self._name}",
        )

    async def upsert(self, slug, content, scope, *, kind="note", importance=0.5):
        return await self._store.upsert(slug, content, scope, kind=kind, importance=importance)

    async def supersede(self, fact_id, content):
        return await self._store.supersede(fact_id, content)

    async def forget(self, fact_id):
        await self._store.forget(fact_id)

    async def find_slug(self, scope, slug):
        return await self._store.find_slug(scope, slug)

    async def recall(self, query, scopes, k=5):
        return await self._store.recall(query, list(scopes), k=k)

    async def ensure_scope(self, scope, kind, *, name=None, owner=None, members=()):
        await self._store.ensure_scope(scope, kind, name=name, owner=owner, members=members)

    async def erase(self, fact_ids):
        return await self._store.erase(list(fact_ids))

    async def list_facts(self, scopes, **kw):
        return await self._store.list_facts(list(scopes), **kw)


class _Context:
    def __init__(self, host: PluginHost, manifest: Manifest, loaded: _Loaded | None = None):
        self.host = host
        self.manifest = manifest
        self.config = _Config(host.store, manifest.name)
        self.memory = _Memory(host.store, manifest.name)
        self.log = logging.getLogger(f"clara.plugins.{manifest.name}")
        self._reg: _Loaded | None = loaded
        self._now: datetime | None = None

    def command(self, name: str, *, help: str, level: Level = Level.MEMBER, usage: str = ""):
        if not name.replace("-", "").isalnum() or name.lower() != name:
            raise ValueError(f"bad command name {name!r}: lowercase letters, digits and dashes")

        def deco(fn):
            self._reg.commands[name] = _Command(self.manifest.name, name, help, Level(level), usage, fn)
            return fn

        return deco

    def tool(self, name: str, *, description: str, parameters: dict[str, Any], level: Level = Level.MEMBER):
        def deco(fn):
            spec = ToolSpec(name, description, parameters)
            self._reg.tools[name] = _ToolReg(self.manifest.name, spec, fn, Level(level))
            return fn

        return deco

    def remove_tool(self, name: str) -> bool:
        """Unregister a tool added earlier (e.g. a bridged server went away)."""
        return self._reg.tools.pop(name, None) is not None

    def on(self, event: str):
        if event not in EVENTS:
            raise ValueError(f"unknown event {event!r} (one of {', '.join(EVENTS)})")

        def deco(fn):
            self._reg.events.setdefault(event, []).append(fn)
            return fn

        return deco

    def schedule(self, job_id: str, func, *, trigger: str = "cron", **trigger_args) -> None:
        self._reg.jobs[job_id] = func
        self._reg.triggers[job_id] = (trigger, trigger_args)

    def db(self):
        return self.host.store.engines.writer.begin()

    def read(self):
        return self.host.store.engines.reader.connect()

    async def send(self, target: str, text: str, *, about: Sequence[str] = ()) -> bool:
        """Deliver a proactive message through the transport and write it into the conversation
        history of that channel/DM (role assistant). `about`: the users whose data the message
        carries (e.g. the reminder's owner), kept as its provenance so that erasing them removes it
        from a shared channel. False if there is no transport or it failed."""
        if self.host.sender is None:
            return False
        try:
            await self.host.sender(target, text)
        except Exception:
            self.log.exception("proactive send to %s failed", target)
            return False
        kind, _, raw = target.partition(":")
        scope = f"user:{raw}" if kind == "user" else f"channel:{raw}"
        try:
            await self.host.store.ensure_scope(
                scope, "user" if kind == "user" else "channel", owner=raw if kind == "user" else None
            )
            await self.host.store.add_message(
                scope,
                self.host.bot_name,
                text,
                role="assistant",
                channel=raw if kind == "channel" else f"dm-{raw}",
                created_at=self.now(),
                about=list(about),
            )
        except Exception:
            self.log.exception("could not record the proactive message to %s", target)
        return True

    def attach(self, inv: Invocation, filename: str, data: bytes) -> None:
        """Queue a file for the reply to the message `inv` stands for (the chat engine takes it)."""
        self.host._outbox.setdefault((inv.user_id, inv.channel_id), []).append((filename, bytes(data)))

    async def call_tool(self, name: str, inv: Invocation, args: dict) -> str:
        """Call another plugin's LLM tool (e.g. reminders asking invoices for overdue clients);
        validated and isolated like a model's call. "error: ..." if missing or disabled."""
        for tool in self.host.tools(inv):
            if tool.spec.name == name:
                return await tool.handler(args)
        return f"error: no tool {name!r}"

    async def complete(
        self, system: str, user: str, *, tier: str = "low", json_mode: bool = False, max_tokens: int = 600
    ) -> str | None:
        """One LLM completion, or None when no LLM is configured or it failed (callers fall back
        to their rule-based path)."""
        llm = self.host.llm
        if llm is None:
            return None
        from clara.llm import ChatMessage, LLMError

        try:
            done = await llm.complete(
                [ChatMessage(role="system", content=system), ChatMessage(role="user", content=user)],
                tier=tier,
                json_mode=json_mode,
                max_tokens=max_tokens,
                timeout=60,
            )
        except LLMError as exc:
            self.log.warning("LLM call failed: %s", exc)
            return None
        return done.text

    async def record_system(self, event: str, text: str, **detail: Any) -> int | None:
        """A `system` record from this plugin (event `plugin:<name>.<event>`, see clara.system_events)."""
        name = self.manifest.name
        return await record_system(self.host.store, f"plugin:{name}.{event}", text, plugin=name, **detail)

    def now(self) -> datetime:
        return self._now or self.host.clock()

    @property
    def data_dir(self) -> Path:
        """This plugin's own folder under the data dir (``<CLARA_DATA_DIR>/plugins/<name>``), created on use."""
        path = Path(self.host.store.config.data_dir) / "plugins" / self.manifest.name
        path.mkdir(parents=True, exist_ok=True)
        return path


class PluginHost:
    def __init__(
        self,
        store,
        *,
        packages: str = "plugins",
        sender: Callable | None = None,
        scheduler: bool = False,
        llm=None,
        bot_name: str = "Clara",
        core_jobs: dict | None = None,
    ):
        """`sender(target, text)` delivers proactive messages (the transport's send API);
        `scheduler=True` runs persisted jobs (APScheduler, SQL job store) — the bot turns it on.
        `core_jobs`: name → (crontab or None = off, coroutine function), the core's own scheduled
        jobs (`clara.maintenance.core_jobs`), persisted as `core:<name>`."""
        self.store = store
        self.package = packages
        self.clock = store.clock  # the one clock (storage.clock): jobs, events and plugins read it
        self.sender = sender
        self.llm = llm  # clara.llm.LLMProvider or None (memory-only): plugins use ctx.complete()
        self.bot_name = bot_name
        self.loaded: dict[str, _Loaded] = {}
        self.failed: dict[str, LoadResult] = {}
        self._outbox: dict[tuple[str, str], list[tuple[str, bytes]]] = {}  # files plugins attach to replies
        self._scheduler = None
        self._want_scheduler = scheduler
        self.core_jobs = dict(core_jobs or {})
        _HOSTS.append(self)

    # ------------------------------------------------------------------ discovery and lifecycle
    def available(self) -> list[str]:
        """Plugin package names found under the plugins package."""
        pkg = importlib.import_module(self.package)
        return sorted(m.name for m in pkgutil.iter_modules(pkg.__path__) if m.ispkg)

    async def load_all(self, names: list[str] | None = None) -> list[LoadResult]:
        return [await self.load(n) for n in (names if names is not None else self.available())]

    async def load(self, name: str, *, fresh_import: bool = False) -> LoadResult:
        """Import, migrate and set up plugin `name`. Never raises: a failure is logged and
        returned; a plugin already loaded keeps running if its replacement fails."""
        modname = f"{self.package}.{name}"
        try:
            if fresh_import:
                for key in [k for k in sys.modules if k == modname or k.startswith(modname + ".")]:
                    del sys.modules[key]
                _forget_tables(name)
            module = importlib.import_module(modname)
            manifest = getattr(module, "MANIFEST", None)
            if not isinstance(manifest, Manifest) or manifest.name != name:
                raise PluginError(f"{modname}.MANIFEST must be a Manifest named {name!r}")
            for hook in ("setup", "delete_user_data", "export_user_data"):
                if not asyncio.iscoroutinefunction(getattr(module, hook, None)):
                    raise PluginError(f"{modname} must define `async def {hook}(...)`")
            versions = Path(module.__file__).parent / "migrations" / "versions"
            if versions.is_dir():
                from storage import migrate

                url = self.store.engines.writer.url.render_as_string(hide_password=False)
                await asyncio.to_thread(migrate.upgrade_branch, url, versions, version_table(name))
            reg = _Loaded(module, manifest, None)  # type: ignore[arg-type]
            reg.ctx = _Context(self, manifest, reg)
            async with asyncio.timeout(SETUP_TIMEOUT):
                await module.setup(reg.ctx)
            clash = [c for c in reg.commands if c in self._commands(exclude=name) or c in _core_commands()]
            if clash:
                raise PluginError(f"command names already taken: {', '.join(clash)}")
        except Exception as exc:
            log.exception("plugin %s failed to load", name)
            res = LoadResult(name, False, f"{type(exc).__name__}: {exc}")
            await record_system(self.store, "plugin.load_failed", f"plugin {name} failed to load: {res.error}"[:300],
                                plugin=name, error=res.error[:1000])  # fmt: skip
            if name not in self.loaded:
                self.failed[name] = res
            return res
        old = self.loaded.get(name)
        self.loaded[name] = reg
        self.failed.pop(name, None)
        if old is not None:
            await self._teardown(name, old)
        for job_id, (trigger, args) in reg.triggers.items():
            self._schedule(name, job_id, trigger, args)
        event, what = ("plugin.reload", "reloaded") if old is not None else ("plugin.load", "loaded")
        await record_system(
            self.store, event, f"plugin {name} {manifest.version} {what}", plugin=name, version=manifest.version
        )
        return LoadResult(name, True)

    async def reload(self, name: str) -> LoadResult:
        """Re-import the plugin's code and swap it in atomically."""
        return await self.load(name, fresh_import=True)

    async def unload(self, name: str) -> bool:
        reg = self.loaded.pop(name, None)
        if reg is None:
            return False
        await self._teardown(name, reg)
        await record_system(self.store, "plugin.unload", f"plugin {name} unloaded", plugin=name)
        return True

    async def _teardown(self, name: str, reg: _Loaded) -> None:
        teardown = getattr(reg.module, "teardown", None)
        if teardown is not None:
            try:
                async with asyncio.timeout(SETUP_TIMEOUT):
                    await teardown(reg.ctx)
            except Exception:
                log.exception("plugin %s failed in teardown", name)
        if self._scheduler is not None:
            for job_id in reg.jobs:
                if name not in self.loaded or job_id not in self.loaded[name].jobs:
                    with contextlib.suppress(Exception):
                        self._scheduler.remove_job(f"{name}:{job_id}")

    def plugins(self) -> list[PluginInfo]:
        out = [
            PluginInfo(n, r.manifest.version, r.manifest.description, r.manifest.data_statement, r.status, r.error)
            for n, r in sorted(self.loaded.items())
        ]
        out += [PluginInfo(n, "?", "", "", "failed", f.error) for n, f in sorted(self.failed.items())]
        return out

    # ------------------------------------------------------------------ per-guild switch
    async def enabled(self, name: str, guild_id: str | None) -> bool:
        reg = self.loaded.get(name)
        if reg is None or reg.status != "loaded":
            return False
        if guild_id is None:
            return True
        return not await self.store.settings.get(CORE_NS, f"guild:{guild_id}", f"plugin-off:{name}", False)

    async def set_enabled(self, name: str, guild_id: str, on: bool) -> None:
        if name not in self.loaded and name not in self.failed:
            raise PluginError(f"no plugin called {name!r}")
        if on:
            await self.store.settings.delete(CORE_NS, f"guild:{guild_id}", f"plugin-off:{name}")
        else:
            await self.store.settings.set(CORE_NS, f"guild:{guild_id}", f"plugin-off:{name}", True)

    # ------------------------------------------------------------------ calls into plugins
    def _commands(self, exclude: str | None = None) -> dict[str, _Command]:
        return {
            c: cmd
            for n, r in self.loaded.items()
            if n != exclude and r.status == "loaded"
            for c, cmd in r.commands.items()
        }

    def commands(self) -> dict[str, _Command]:
        return self._commands()

    async def _guarded(self, plugin: str, what: str, coro):
        """Run a plugin call: PluginError → its message; anything else → logged, counted, and
        after MAX_FAILURES in a row the plugin is disabled. Returns (ok, value_or_message)."""
        reg = self.loaded[plugin]
        try:
            async with asyncio.timeout(CALL_TIMEOUT):
                value = await coro
        except PluginError as exc:
            return False, str(exc)
        except Exception as exc:
            reg.failures += 1
            log.exception("plugin %s failed in %s (%d in a row)", plugin, what, reg.failures)
            if reg.failures >= MAX_FAILURES:
                reg.status, reg.error = "disabled", f"{type(exc).__name__}: {exc}"
                log.error("plugin %s disabled after %d failures", plugin, reg.failures)
                await record_system(self.store, "plugin.disabled",
                                    f"plugin {plugin} disabled after {reg.failures} failures in a row ({what})",
                                    plugin=plugin, error=reg.error[:1000], during=what)  # fmt: skip
            else:
                error = f"{type(exc).__name__}: {exc}"[:1000]
                await record_system(self.store, "plugin.error", f"plugin {plugin} failed in {what}: {error}"[:300],
                                    plugin=plugin, error=error, during=what)  # fmt: skip
            return False, f"The {plugin} plugin failed on that (it has been logged)."
        reg.failures = 0
        return True, value

    async def run_command(self, inv: Invocation, name: str, args: str) -> Result | None:
        """Run a plugin command; None if no plugin has it. Checks the per-guild switch and the
        command's privilege level (fail-closed: the transport computed `inv.level`)."""
        cmd = self.commands().get(name)
        if cmd is None:
            return None
        if not await self.enabled(cmd.plugin, inv.guild_id):
            return Result(f"The {cmd.plugin} plugin is disabled here.", error=True)
        if inv.level < cmd.level:
            return Result(f"!{name} needs {cmd.level.name.lower().replace('_', ' ')} rights.", error=True)
        ok, value = await self._guarded(cmd.plugin, f"!{name}", cmd.handler(inv, args))
        if not ok:
            return Result(value, error=True)
        return value if isinstance(value, Result) else Result(str(value))

    def tools(self, inv: Invocation) -> list[Tool]:
        """The loaded plugins' LLM tools bound to this invocation (arguments validated against
        the schema before the handler runs); a tool registered with a level is offered only to
        invocations at that level or above (its handler should check again)."""
        out = []
        for reg in [r for r in self.loaded.values() if r.status == "loaded"]:
            for t in list(reg.tools.values()):
                if inv.level < t.level:
                    continue
                out.append(Tool(t.spec, self._tool_handler(t, inv)))
        return out

    def _tool_handler(self, t: _ToolReg, inv: Invocation):
        async def handler(args: dict) -> str:
            if inv.level < t.level:  # fail-closed, even if a caller kept the tool
                return f"error: {t.spec.name} needs {t.level.name.lower().replace('_', ' ')} rights"
            if not await self.enabled(t.plugin, inv.guild_id):
                return f"error: the {t.plugin} plugin is disabled here"
            problems = validate_arguments(t.spec.parameters, args)
            if problems:
                return "error: invalid arguments: " + "; ".join(problems)
            ok, value = await self._guarded(t.plugin, f"tool {t.spec.name}", t.handler(inv, args))
            return str(value) if ok else f"error: {value}"

        return handler

    def take_files(self, user_id: str, channel_id: str) -> list[tuple[str, bytes]]:
        """The files plugins attached (`ctx.attach`) to the reply for this user in this channel."""
        return self._outbox.pop((user_id, channel_id), [])

    async def emit(self, event: str, *args: Any) -> None:
        """Call every plugin's handlers for `event` (errors isolated)."""
        for name, reg in list(self.loaded.items()):
            if reg.status != "loaded":
                continue
            for fn in reg.events.get(event, []):
                await self._guarded(name, f"event {event}", fn(*args))

    async def delete_user_data(self, user_id: str) -> dict[str, Any]:
        """Fan out `!forgetme` to every plugin (loaded or disabled: the data is still there)."""
        out = {}
        for name, reg in list(self.loaded.items()):
            ok, value = await self._guarded(name, "delete_user_data", reg.module.delete_user_data(reg.ctx, user_id))
            out[name] = value if ok else f"error: {value}"
        await self.emit("user_forgotten", user_id)
        return out

    async def export_user_data(self, user_id: str) -> dict[str, Any]:
        out = {}
        for name, reg in list(self.loaded.items()):
            ok, value = await self._guarded(name, "export_user_data", reg.module.export_user_data(reg.ctx, user_id))
            out[name] = value if ok else {"error": value}
        return out

    # ------------------------------------------------------------------ scheduled jobs
    async def run_job(self, plugin: str, job_id: str, now: datetime | None = None) -> bool:
        """Run a plugin's scheduled job now (the scheduler calls this; tests pass `now`)."""
        if plugin == CORE_JOBS:
            if job_id not in self.core_jobs:
                return False
            try:
                await self.core_jobs[job_id][1]()
            except Exception:
                log.exception("core job %s failed", job_id)
                return False
            return True
        reg = self.loaded.get(plugin)
        if reg is None or reg.status != "loaded" or job_id not in reg.jobs:
            return False
        reg.ctx._now = now
        try:
            ok, _ = await self._guarded(plugin, f"job {job_id}", reg.jobs[job_id](reg.ctx))
        finally:
            reg.ctx._now = None
        return ok

    async def run_interval_jobs(self) -> int:
        """Run every loaded plugin's interval jobs once (the terminal's ticker, which has no
        persisted scheduler); the number run."""
        ran = 0
        for name, reg in list(self.loaded.items()):
            for job_id, (trigger, _args) in list(reg.triggers.items()):
                if trigger == "interval" and await self.run_job(name, job_id):
                    ran += 1
        return ran

    def _schedule(self, plugin: str, job_id: str, trigger: str, trigger_args: dict) -> None:
        if self._scheduler is None:
            return
        job_key = f"{plugin}:{job_id}"
        if self._scheduler.get_job(job_key) is not None:
            return  # persisted by an earlier run: keep its next run time (a restart never doubles a run)
        self._scheduler.add_job(
            _job_trampoline,
            trigger,
            args=[plugin, job_id],
            id=job_key,
            coalesce=True,
            misfire_grace_time=6 * 3600,
            **trigger_args,
        )

    async def start(self) -> None:
        """Start the persisted scheduler (jobs survive restarts; missed runs within the grace
        window run late, once)."""
        if not self._want_scheduler or self._scheduler is not None:
            return
        from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
        from apscheduler.schedulers.asyncio import AsyncIOScheduler

        from storage.db import sync_url
        from storage.naming import t as tname

        url = sync_url(self.store.engines.writer.url.render_as_string(hide_password=False))
        self._scheduler = AsyncIOScheduler(
            jobstores={"default": SQLAlchemyJobStore(url=url, tablename=tname("scheduler_jobs"))}, timezone="UTC"
        )
        self._scheduler.start()
        for name, reg in self.loaded.items():
            for job_id, (trigger, args) in reg.triggers.items():
                self._schedule(name, job_id, trigger, args)
        self._schedule_core()

    def _schedule_core(self) -> None:
        """Add, update or remove the persisted `core:<name>` jobs to match `core_jobs`: a job whose
        schedule did not change keeps its next run time; one turned off is removed."""
        from apscheduler.triggers.cron import CronTrigger

        for job_id, (cron, _) in self.core_jobs.items():
            key = f"{CORE_JOBS}:{job_id}"
            job = self._scheduler.get_job(key)
            if cron is None:
                if job is not None:
                    self._scheduler.remove_job(key)
                continue
            trigger = CronTrigger.from_crontab(cron, timezone="UTC")
            if job is not None and str(job.trigger) == str(trigger):
                continue
            self._scheduler.add_job(
                _job_trampoline,
                trigger,
                args=[CORE_JOBS, job_id],
                id=key,
                coalesce=True,
                misfire_grace_time=6 * 3600,
                replace_existing=True,
            )

    def scheduled(self) -> dict[str, Any]:
        """The persisted jobs: id → next run time (None when paused); empty without a scheduler."""
        if self._scheduler is None:
            return {}
        return {j.id: j.next_run_time for j in self._scheduler.get_jobs()}

    async def aclose(self) -> None:
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
            self._scheduler = None
        for name in list(self.loaded):
            await self.unload(name)
        with contextlib.suppress(ValueError):
            _HOSTS.remove(self)


def _forget_tables(name: str) -> None:
    """Drop a plugin's table definitions from the shared metadata so a re-import can declare
    them again (reload); the tables in the database are untouched."""
    from clara.plugin_api import PluginBase

    for table in [t for t in PluginBase.metadata.tables.values() if t.name.startswith(f"{name}_")]:
        PluginBase.metadata.remove(table)


def _core_commands() -> set[str]:
    """Names the core's own commands use (a plugin may not take them)."""
    from clara.chat import TIERS
    from clara.commands import Commands

    return {n[4:] for n in dir(Commands) if n.startswith("cmd_")} | {t[1:] for t in TIERS}


async def _job_trampoline(plugin: str, job_id: str) -> None:
    """What the persisted job store references: finds the running host and runs the job."""
    for host in list(_HOSTS):
        if plugin in host.loaded or (plugin == CORE_JOBS and job_id in host.core_jobs):
            await host.run_job(plugin, job_id)
            return
    log.warning("scheduled job %s:%s fired with no host running it", plugin, job_id)
