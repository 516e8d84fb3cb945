"""MCP bridge: external MCP servers' tools for Clara's LLM.

Admins manage servers with `!mcp add <name> stdio [KEY=VALUE ...] <command...>`,
`!mcp add <name> http <url> [bearer=<token>]`, `!mcp remove|enable|disable|restart <name>` and
`!mcp list` (all level ADMIN; the host checks `Invocation.level`, and the handler checks again).
The configuration lives in the plugin's settings (ctx.config, target "global", key "servers").
Nothing is ever installed: a stdio server is a command that must already exist on the machine.

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
    "!mcp add <name> stdio [KEY=VALUE ...] <command...> | !mcp add <name> http <url> [bearer=<token>] | "
    "!mcp remove|enable|disable|restart <name> | !mcp list"
)
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
            self._register(name, conn)
        return conn

    def _register(self, server: str, conn: Connection) -> None:
        self._unregister(server)
        taken = {n for names in self.tool_names.values() for n in names}
        names: dict[str, str] = {}
        for tool in conn.tools:
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
            conn = self.conns.get(server)
            spec = self.specs.get(server)
            if conn is None or spec is None or not spec.enabled:
                return f"error: MCP server {server!r} is not enabled"
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
                await self.disconnect(name)
                del self.specs[name]
                await self.save()
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

    # Connect in the background: a slow or hanging server must not delay the bot's start.
    bridge.started = asyncio.create_task(bridge.start_all(), name="mcp-bridge-start")


async def teardown(ctx) -> None:
    bridge = _BRIDGES.pop(id(ctx), None)
    if bridge is not None:
        await bridge.aclose()


async def delete_user_data(ctx, user_id: str) -> int:
    """The bridge keeps no per-user data."""
    return 0


async def export_user_data(ctx, user_id: str) -> dict:
    return {}
