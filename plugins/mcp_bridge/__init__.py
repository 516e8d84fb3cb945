"""MCP bridge: external MCP servers' tools for Clara's LLM.

Admins manage servers with `!mcp install <source> [name]` (npm package, local path, git URL or
docker:IMAGE — see install.py), `!mcp add <name> stdio [KEY=VALUE ...] <command...>`,
`!mcp add <name> http <url> [bearer=<token>]`, `!mcp remove|enable|disable|restart <name>`,
`!mcp list` and `!mcp status [name]`, or in chat through the LLM tools `mcp_install`,
`mcp_uninstall`, `mcp_list`, `mcp_enable`, `mcp_disable`, `mcp_restart` and `mcp_status`. All of
them need level ADMIN (on Discord: Administrator, Manage Server, Manage Channels or a role named
Clara-Admin; in the terminal: the operator), checked fail-closed by the handler itself.
The configuration lives in the plugin's settings (ctx.config, target "global", key "servers");
npm and git installs go to `<data_dir>/servers/<name>` (one prefix per server, removed on uninstall).

Tools of configured servers are offered from the first message after a restart: the tool list of
each server is cached in the settings ("tool_cache") and registered at setup, before the
connection is up; the first call waits (bounded by `connect_timeout`) for the background start,
or connects then. A server without a cached list is awaited at setup, bounded the same way.

Each connected server's tools are registered for the LLM as `<server>__<tool>` (sanitised to
^[a-zA-Z0-9_-]{1,64}$). Child processes get only PATH, HOME and LANG from the bot's environment
plus the variables configured for that server — never the bot's secrets. Every call has a
timeout (`call_timeout`, default 30 s; `connect_timeout`, default 15 s — both settable in
ctx.config "global"); a server that crashes or hangs returns an error for its own tools only.
"""

from __future__ import annotations

import asyncio
import contextlib
import shlex
from typing import Any

from clara.plugin_api import Invocation, Level, Manifest, PluginError, Result

from .bridge import Connection, ServerSpec, parse_add, sanitize_tool_name
from .install import resolve_source

MANIFEST = Manifest(
    name="mcp_bridge",
    version="1.0",
    description="Use tools from external MCP servers (stdio commands or HTTP URLs) that admins add with !mcp.",
    data_statement=(
        "Keeps only the list of MCP servers admins configured (name, command or URL, configured environment "
        "variables, optional bearer token). Tool arguments are sent to the external server that owns the tool; "
        "this plugin stores no user data."
    ),
)

USAGE = (
    "!mcp install <npm package | local path | git URL | docker:IMAGE> [name] | "
    "!mcp add <name> stdio [KEY=VALUE ...] <command...> | !mcp add <name> http <url> [bearer=<token>] | "
    "!mcp remove|enable|disable|restart <name> | !mcp list | !mcp status [name]"
)
NOT_ADMIN = (
    "error: managing MCP servers needs admin rights (Discord: Administrator, Manage Channels or the "
    "Clara-Admin role; terminal: the operator)."
)
NAME_ARG = {"type": "object", "properties": {"name": {"type": "string", "minLength": 1, "maxLength": 24}}}
MANAGEMENT_TOOLS: dict[str, tuple[str, dict]] = {
    "mcp_install": (
        "Install an MCP server (admins only) from an npm package (e.g. @modelcontextprotocol/server-everything), "
        "a local path, a git URL or docker:IMAGE, and connect it; its tools become <name>__<tool>.",
        {
            "type": "object",
            "properties": {
                "source": {"type": "string", "minLength": 1, "maxLength": 500},
                "name": {"type": "string", "minLength": 1, "maxLength": 24},
            },
            "required": ["source"],
        },
    ),
    "mcp_uninstall": (
        "Remove an installed MCP server and its files (admins only).",
        {**NAME_ARG, "required": ["name"]},
    ),
    "mcp_list": ("List the MCP servers and their tools (admins only).", {"type": "object", "properties": {}}),
    "mcp_enable": ("Enable and connect an MCP server (admins only).", {**NAME_ARG, "required": ["name"]}),
    "mcp_disable": ("Disable an MCP server without uninstalling it (admins only).", {**NAME_ARG, "required": ["name"]}),
    "mcp_restart": ("Restart an MCP server (admins only).", {**NAME_ARG, "required": ["name"]}),
    "mcp_status": ("Detailed status of one MCP server or all (admins only).", NAME_ARG),
}
_BRIDGES: dict[int, Bridge] = {}


class Bridge:
    def __init__(self, ctx, *, connect_timeout: float, call_timeout: float, retry_after: float):
        self.ctx = ctx
        self.connect_timeout = connect_timeout
        self.call_timeout = call_timeout
        self.retry_after = retry_after
        self.specs: dict[str, ServerSpec] = {}
        self.conns: dict[str, Connection] = {}
        self.tool_names: dict[str, dict[str, str]] = {}  # server → {registered name: mcp tool name}
        self.lock = asyncio.Lock()
        self.started: asyncio.Task | None = None

    # ------------------------------------------------------------------ config
    async def load(self) -> None:
        raw = await self.ctx.config.get("global", "servers", {}) or {}
        self.specs = {}
        for name, data in raw.items():
            try:
                self.specs[name] = ServerSpec.from_json(name, data)
            except Exception:
                self.ctx.log.exception("ignoring bad MCP server config %r", name)

    async def save(self) -> None:
        await self.ctx.config.set("global", "servers", {n: s.to_json() for n, s in self.specs.items()})

    async def register_cached(self) -> list[str]:
        """Register the cached tool lists of enabled servers (so the first message has them);
        the servers that have no cached list."""
        cache = await self.ctx.config.get("global", "tool_cache", {}) or {}
        missing = []
        for name, spec in self.specs.items():
            if not spec.enabled:
                continue
            listed = cache.get(name)
            if not isinstance(listed, list):
                missing.append(name)
                continue
            self._register(name, [_CachedTool(**t) for t in listed if isinstance(t, dict) and "name" in t])
        return missing

    async def _cache_tools(self, name: str, conn: Connection) -> None:
        cache = await self.ctx.config.get("global", "tool_cache", {}) or {}
        cache[name] = [
            {
                "name": t.name,
                "description": t.description or "",
                "input_schema": t.input_schema if isinstance(t.input_schema, dict) else {},
            }
            for t in conn.tools
        ]
        await self.ctx.config.set("global", "tool_cache", cache)

    async def _uncache(self, name: str) -> None:
        cache = await self.ctx.config.get("global", "tool_cache", {}) or {}
        if cache.pop(name, None) is not None:
            await self.ctx.config.set("global", "tool_cache", cache)

    # ------------------------------------------------------------------ connections and tools
    async def start_all(self) -> None:
        async with self.lock:
            await asyncio.gather(*(self.connect(n) for n, s in list(self.specs.items()) if s.enabled))

    async def connect(self, name: str) -> Connection:
        spec = self.specs[name]
        conn = self.conns.get(name)
        if conn is not None:
            await conn.stop()
        conn = Connection(spec, connect_timeout=self.connect_timeout, call_timeout=self.call_timeout, log=self.ctx.log)
        self.conns[name] = conn
        if await conn.start():
            self._register(name, conn.tools)
            await self._cache_tools(name, conn)
            await self.ctx.record_system(
                "server_start", f"MCP server {name} started ({len(conn.tools)} tools)",
                server=name, transport=spec.transport, tools=len(conn.tools),
            )  # fmt: skip
        else:
            await self.ctx.record_system(
                "server_failed", f"MCP server {name} failed to start: {conn.error}"[:300],
                server=name, transport=spec.transport, error=(conn.error or "")[:1000],
            )  # fmt: skip
        return conn

    def _register(self, server: str, tools: list) -> None:
        self._unregister(server)
        taken = {n for names in self.tool_names.values() for n in names}
        names: dict[str, str] = {}
        for tool in tools:
            reg = sanitize_tool_name(server, tool.name, taken)
            taken.add(reg)
            names[reg] = tool.name
            schema = tool.input_schema if isinstance(tool.input_schema, dict) else {}
            if schema.get("type") != "object":
                schema = {"type": "object", "properties": {}}
            desc = f"[MCP server {server}] {tool.description or tool.name}"[:1000]
            self.ctx.tool(reg, description=desc, parameters=schema)(self._handler(server, tool.name))
        self.tool_names[server] = names

    def _handler(self, server: str, tool: str):
        async def handler(inv: Invocation, args: dict[str, Any]) -> str:
            spec = self.specs.get(server)
            if spec is None or not spec.enabled:
                return f"error: MCP server {server!r} is not enabled"
            if self.started is not None and not self.started.done():  # just restarted: the start is under way
                with contextlib.suppress(TimeoutError, Exception):
                    async with asyncio.timeout(self.connect_timeout + 1):
                        await asyncio.shield(self.started)
            conn = self.conns.get(server)
            if conn is None:  # not started yet (or the start was skipped): connect now, bounded
                async with self.lock:
                    conn = self.conns.get(server) or await self.connect(server)
            try:
                return await conn.call(tool, dict(args), retry_after=self.retry_after)
            except Exception as exc:  # never let one server's failure count against the plugin
                self.ctx.log.exception("MCP call %s/%s failed", server, tool)
                return f"error: MCP server {server!r} failed: {type(exc).__name__}"

        return handler

    def _unregister(self, server: str) -> None:
        for reg in self.tool_names.pop(server, {}):
            _remove_tool(self.ctx, reg)

    async def disconnect(self, name: str) -> None:
        self._unregister(name)
        conn = self.conns.pop(name, None)
        if conn is not None:
            await conn.stop()
            await self.ctx.record_system("server_stop", f"MCP server {name} stopped", server=name)

    async def aclose(self) -> None:
        if self.started is not None:
            self.started.cancel()
            with contextlib.suppress(BaseException):
                await self.started
        for name in list(self.conns):
            with contextlib.suppress(Exception):
                await self.disconnect(name)

    # ------------------------------------------------------------------ the !mcp command
    async def command(self, inv: Invocation, args: str) -> Result:
        if not isinstance(inv.level, int) or inv.level < Level.ADMIN:  # fail closed (the host checks too)
            raise PluginError("!mcp needs admin rights.")
        try:
            words = shlex.split(args)
        except ValueError as exc:
            raise PluginError(f"could not parse that: {exc}") from exc
        if not words:
            return Result(USAGE)
        sub, rest = words[0].lower(), words[1:]
        if sub == "install":
            if not 1 <= len(rest) <= 2:
                return Result(f"Usage: {USAGE}", error=True)
            return Result(await self.install(rest[0], rest[1] if len(rest) > 1 else None), private=True)
        if sub == "status":
            return Result(self._status(rest[0].lower() if rest else None), private=True)
        async with self.lock:
            if sub == "add":
                spec = parse_add(rest)
                if spec.name in self.specs:
                    raise PluginError(f"an MCP server called {spec.name!r} exists (remove it first)")
                self.specs[spec.name] = spec
                await self.save()
                conn = await self.connect(spec.name)
                return Result(f"Added {spec.name}: {self._state(spec.name, conn)}", private=True)
            if sub == "list":
                return Result(self._listing(), private=True)
            if sub not in ("remove", "enable", "disable", "restart") or len(rest) != 1:
                return Result(f"Usage: {USAGE}", error=True)
            name = rest[0].lower()
            if name not in self.specs:
                raise PluginError(f"no MCP server called {name!r}")
            if sub == "remove":
                await self._remove(name)
                return Result(f"Removed {name}.")
            if sub == "disable":
                self.specs[name].enabled = False
                await self.save()
                await self.disconnect(name)
                return Result(f"Disabled {name}: its tools are gone until `!mcp enable {name}`.")
            self.specs[name].enabled = True
            await self.save()
            conn = await self.connect(name)
            return Result(f"{'Enabled' if sub == 'enable' else 'Restarted'} {name}: {self._state(name, conn)}")

    async def install(self, source: str, name: str | None) -> str:
        """Install and connect a server from `source`; the outcome in one sentence."""
        from .install import default_name

        wanted = (name or default_name(source.strip())).strip().lower()
        if wanted in self.specs:
            raise PluginError(f"an MCP server called {wanted!r} exists (uninstall it first, or pick another name)")
        spec, folder = await resolve_source(source, wanted, self.ctx.data_dir / "servers")
        spec.folder = str(folder) if folder else None
        async with self.lock:
            self.specs[spec.name] = spec
            await self.save()
            conn = await self.connect(spec.name)
        return f"Installed {spec.name} ({spec.describe()}): {self._state(spec.name, conn)}"

    async def _remove(self, name: str) -> None:
        await self.disconnect(name)
        spec = self.specs.pop(name)
        await self.save()
        await self._uncache(name)
        folder = getattr(spec, "folder", None)
        if folder:
            import shutil

            shutil.rmtree(folder, ignore_errors=True)

    async def tool_call(self, tool: str, inv: Invocation, args: dict[str, Any]) -> str:
        """The management tools: fail-closed on the caller's level; errors as "error: ..." text."""
        if not isinstance(inv.level, int) or inv.level < Level.ADMIN:
            return NOT_ADMIN
        try:
            if tool == "mcp_install":
                return await self.install(args["source"], args.get("name"))
            if tool == "mcp_list":
                return self._listing()
            if tool == "mcp_status":
                return self._status((args.get("name") or "").lower() or None)
            name = str(args.get("name", "")).lower()
            if name not in self.specs:
                return f"error: no MCP server called {name!r} (installed: {', '.join(sorted(self.specs)) or 'none'})"
            sub = {"mcp_uninstall": "remove", "mcp_enable": "enable", "mcp_disable": "disable"}.get(tool, "restart")
            return (await self.command(inv, f"{sub} {name}")).text
        except PluginError as exc:
            return f"error: {exc}"

    def _status(self, name: str | None) -> str:
        names = [name] if name else sorted(self.specs)
        if name and name not in self.specs:
            return f"error: no MCP server called {name!r}"
        if not names:
            return "No MCP servers configured."
        lines = []
        for n in names:
            spec, conn = self.specs[n], self.conns.get(n)
            status = "disabled" if not spec.enabled else (conn.status if conn else "not started")
            tools = sorted(self.tool_names.get(n, {}))
            line = f"• {n}: {status} — {spec.describe()} — {len(tools)} tools"
            if conn is not None and conn.error:
                line += f" — last error: {conn.error}"
            if conn is not None and conn.timeouts:
                line += f" — timeouts in a row: {conn.timeouts}"
            lines.append(line + (f"\n  tools: {', '.join(tools)}" if tools else ""))
        return "\n".join(lines)

    def _state(self, name: str, conn: Connection | None) -> str:
        if conn is None:
            return "disabled" if not self.specs[name].enabled else "not connected"
        if conn.status == "connected":
            tools = ", ".join(sorted(self.tool_names.get(name, {}))) or "no tools"
            return f"connected, tools: {tools}"
        return f"{conn.status}" + (f" ({conn.error})" if conn.error else "")

    def _listing(self) -> str:
        if not self.specs:
            return "No MCP servers configured. " + USAGE
        lines = []
        for name, spec in sorted(self.specs.items()):
            state = self._state(name, self.conns.get(name)) if spec.enabled else "disabled"
            lines.append(f"• {name} — {spec.describe()} — {state}")
        return "\n".join(lines)


def _remove_tool(ctx, name: str) -> None:
    """Drop a registered tool. The plugin API has no public way to unregister (tools are usually
    registered once at setup); use the host's if it grows one, else its registration dict."""
    remove = getattr(ctx, "remove_tool", None)
    if callable(remove):
        remove(name)
        return
    reg = getattr(ctx, "_reg", None)
    tools = getattr(reg, "tools", None)
    if isinstance(tools, dict):
        tools.pop(name, None)


class _CachedTool:
    """A tool as remembered from the server's last listing (name, description, input schema)."""

    def __init__(self, name: str, description: str = "", input_schema: dict | None = None):
        self.name, self.description, self.input_schema = name, description, input_schema or {}


def bridge_for(ctx) -> Bridge | None:
    return _BRIDGES.get(id(ctx))


async def setup(ctx) -> None:
    cfg = ctx.config
    bridge = Bridge(
        ctx,
        connect_timeout=float(await cfg.get("global", "connect_timeout", 15.0)),
        call_timeout=float(await cfg.get("global", "call_timeout", 30.0)),
        retry_after=float(await cfg.get("global", "retry_after", 60.0)),
    )
    await bridge.load()
    _BRIDGES[id(ctx)] = bridge

    @ctx.command("mcp", help="Manage external MCP servers (admins).", level=Level.ADMIN, usage=USAGE)
    async def mcp_command(inv: Invocation, args: str) -> Result:
        return await bridge.command(inv, args)

    for tool, (description, parameters) in MANAGEMENT_TOOLS.items():
        ctx.tool(tool, description=description, parameters=parameters, level=Level.ADMIN)(_management(bridge, tool))

    # Tools from the cached listings are offered at once; the connections start in the background
    # (a slow or hanging server must not delay the bot's start). Servers never listed are awaited,
    # bounded, so that their tools too are there for the first message.
    missing = await bridge.register_cached()
    bridge.started = asyncio.create_task(bridge.start_all(), name="mcp-bridge-start")
    if missing:
        with contextlib.suppress(TimeoutError, Exception):
            async with asyncio.timeout(bridge.connect_timeout + 1):
                await asyncio.shield(bridge.started)


def _management(bridge: Bridge, tool: str):
    async def handler(inv: Invocation, args: dict[str, Any]) -> str:
        return await bridge.tool_call(tool, inv, args)

    return handler


async def teardown(ctx) -> None:
    bridge = _BRIDGES.pop(id(ctx), None)
    if bridge is not None:
        await bridge.aclose()


async def delete_user_data(ctx, user_id: str) -> int:
    """The bridge keeps no per-user data."""
    return 0


async def export_user_data(ctx, user_id: str) -> dict:
    return {}
