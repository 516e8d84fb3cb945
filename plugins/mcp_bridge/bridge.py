"""Connections to external MCP servers and their tools, as the bridge plugin sees them.

Each server runs in its own owner task (the MCP client's task groups must be entered and left in
one task); calls from any task go through the connected session with a per-call timeout. A server
that fails to start, crashes or hangs only affects its own tools: the call returns an error string
naming the server and what happened, the bot carries on, and the next call after `retry_after`
seconds reconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import re
import shlex
import time
from dataclasses import dataclass, field
from typing import Any

from clara.plugin_api import PluginError

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,23}$")
ENV_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}=")
TOOL_RE = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
ENV_ALLOW = ("PATH", "HOME", "LANG")  # everything else a child sees is configured explicitly
MAX_RESULT_CHARS = 8000


def sanitize_tool_name(server: str, tool: str, taken: set[str]) -> str:
    """`server__tool` reduced to ^[a-zA-Z0-9_-]{1,64}$ and made unique (hash suffix if needed)."""
    base = re.sub(r"[^a-zA-Z0-9_-]", "_", f"{server}__{tool}")
    name = base[:64]
    if name in taken or name != base:
        digest = hashlib.sha1(f"{server}\0{tool}".encode()).hexdigest()[:6]
        name = f"{base[:57]}_{digest}"
    assert TOOL_RE.match(name)
    return name


@dataclass
class ServerSpec:
    name: str
    transport: str  # stdio | http
    command: list[str] = field(default_factory=list)
    url: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    bearer: str | None = None
    enabled: bool = True
    folder: str | None = None  # what `mcp_install` made for it (npm prefix, git clone): removed on uninstall

    def to_json(self) -> dict[str, Any]:
        return {
            "folder": self.folder,
            "transport": self.transport,
            "command": self.command,
            "url": self.url,
            "env": self.env,
            "bearer": self.bearer,
            "enabled": self.enabled,
        }

    @classmethod
    def from_json(cls, name: str, data: dict[str, Any]) -> ServerSpec:
        return cls(
            name,
            data["transport"],
            list(data.get("command") or []),
            data.get("url"),
            dict(data.get("env") or {}),
            data.get("bearer"),
            bool(data.get("enabled", True)),
            data.get("folder"),
        )

    def describe(self) -> str:
        if self.transport == "http":
            return f"http {self.url}" + (" (bearer token set)" if self.bearer else "")
        env = f" env: {', '.join(sorted(self.env))}" if self.env else ""
        return "stdio " + shlex.join(self.command) + env


def parse_add(args: list[str]) -> ServerSpec:
    """`<name> stdio [KEY=VALUE ...] <command...>` or `<name> http <url> [bearer=<token>]`."""
    if len(args) < 3:
        raise PluginError("usage: !mcp add <name> stdio [KEY=VALUE ...] <command...> | !mcp add <name> http <url>")
    name, transport, rest = args[0].lower(), args[1].lower(), args[2:]
    if not NAME_RE.match(name):
        raise PluginError("server names are 1-24 of lowercase letters, digits, '-' and '_'")
    if transport == "stdio":
        env = {}
        while rest and ENV_RE.match(rest[0]):
            key, _, value = rest.pop(0).partition("=")
            env[key] = value
        if not rest:
            raise PluginError("stdio servers need a command")
        return ServerSpec(name, "stdio", command=rest, env=env)
    if transport == "http":
        url, bearer = rest[0], None
        if not re.match(r"^https?://[^\s/]+", url):
            raise PluginError("http servers need an http:// or https:// URL")
        for extra in rest[1:]:
            if extra.startswith("bearer="):
                bearer = extra[len("bearer=") :]
            else:
                raise PluginError(f"unexpected argument {extra!r}")
        return ServerSpec(name, "http", url=url, bearer=bearer)
    raise PluginError("transport must be stdio or http")


def child_env(spec: ServerSpec) -> dict[str, str]:
    """The child's environment: the allow-list from the bot's environment plus configured vars."""
    env = {k: os.environ[k] for k in ENV_ALLOW if k in os.environ}
    env.update(spec.env)
    return env


def render_result(result) -> str:
    parts = []
    for item in result.content or []:
        text = getattr(item, "text", None)
        if text is not None:
            parts.append(text)
        else:
            parts.append(f"[{getattr(item, 'type', 'content')} omitted]")
    if not parts and result.structured_content is not None:
        parts.append(json.dumps(result.structured_content, default=str))
    out = "\n".join(parts) or "(no output)"
    if len(out) > MAX_RESULT_CHARS:
        out = out[:MAX_RESULT_CHARS] + "… (truncated)"
    return f"error: {out}" if result.is_error else out


class Connection:
    """One external server: connect (bounded), list its tools, call them (bounded), close."""

    def __init__(self, spec: ServerSpec, *, connect_timeout: float, call_timeout: float, log):
        self.spec = spec
        self.connect_timeout = connect_timeout
        self.call_timeout = call_timeout
        self.log = log
        self.status = "stopped"  # stopped | connecting | connected | failed
        self.error: str | None = None
        self.tools: list[Any] = []
        self.client = None
        self.failed_at: float | None = None
        self.timeouts = 0
        self._task: asyncio.Task | None = None
        self._stop = asyncio.Event()
        self._ready = asyncio.Event()

    def _target(self, stack: contextlib.AsyncExitStack):
        from mcp import StdioServerParameters

        if self.spec.transport == "stdio":
            cmd = self.spec.command
            return StdioServerParameters(command=cmd[0], args=cmd[1:], env=child_env(self.spec))
        if self.spec.bearer:
            import httpx2
            from mcp.client.streamable_http import streamable_http_client

            client = httpx2.AsyncClient(
                headers={"Authorization": f"Bearer {self.spec.bearer}"},
                timeout=httpx2.Timeout(max(self.call_timeout, self.connect_timeout) + 5),
            )
            stack.push_async_callback(client.aclose)
            return streamable_http_client(self.spec.url, http_client=client)
        return self.spec.url

    async def _run(self) -> None:
        from mcp import Client

        try:
            async with contextlib.AsyncExitStack() as stack:
                # The handshake and tools/list are bounded by `connect_timeout` (in `start`), a
                # child that is slow to start (a busy machine) must not fail them at `call_timeout`;
                # every tool call passes its own `call_timeout`.
                handshake = max(self.call_timeout, self.connect_timeout)
                client = Client(self._target(stack), read_timeout_seconds=handshake, mode="legacy", cache=None)
                await stack.enter_async_context(client)
                listed = await client.list_tools()
                self.tools = list(listed.tools)
                self.client = client
                self.status, self.error = "connected", None
                self._ready.set()
                await self._stop.wait()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # ExceptionGroup from task groups, OSError, MCPError...
            self._fail(f"{type(exc).__name__}: {_first_line(exc)}")
        finally:
            self.client = None
            if self.status == "connected":
                self.status = "stopped"
            self._ready.set()

    def _fail(self, message: str) -> None:
        self.status, self.error, self.failed_at = "failed", message, time.monotonic()
        self.log.warning("MCP server %s failed: %s", self.spec.name, message)

    async def start(self) -> bool:
        """Connect and list tools within `connect_timeout`; False (status failed) otherwise."""
        await self.stop()
        self._stop, self._ready = asyncio.Event(), asyncio.Event()
        self.status, self.error, self.tools = "connecting", None, []
        self._task = asyncio.create_task(self._run(), name=f"mcp-bridge-{self.spec.name}")
        try:
            async with asyncio.timeout(self.connect_timeout):
                await self._ready.wait()
        except TimeoutError:
            await self.stop()
            self._fail(f"no answer within {self.connect_timeout:g} s while connecting")
            return False
        return self.status == "connected"

    async def stop(self) -> None:
        """Close the session (the SDK terminates a stdio child: stdin closed, then SIGTERM, SIGKILL)."""
        task, self._task = self._task, None
        if task is None:
            return
        self._stop.set()
        try:
            async with asyncio.timeout(8):
                await asyncio.shield(task)
        except (TimeoutError, Exception):
            task.cancel()
            with contextlib.suppress(BaseException):
                async with asyncio.timeout(5):
                    await task
        self.client = None
        if self.status in ("connected", "connecting"):
            self.status = "stopped"

    async def call(self, tool: str, args: dict[str, Any], *, retry_after: float) -> str:
        """Call `tool`; never raises: failures come back as "error: ..." strings."""
        name = self.spec.name
        if self.client is None:
            if self.status == "failed" and self.failed_at and time.monotonic() - self.failed_at < retry_after:
                return f"error: MCP server {name!r} is unavailable ({self.error}); try again later"
            if not await self.start():
                return f"error: MCP server {name!r} is unavailable ({self.error})"
        client = self.client
        try:
            async with asyncio.timeout(self.call_timeout + 2):  # the SDK's own read timeout fires first
                result = await client.call_tool(tool, args, read_timeout_seconds=self.call_timeout)
        except TimeoutError:
            self.timeouts += 1
            return f"error: MCP server {name!r} did not answer {tool} within {self.call_timeout:g} s"
        except Exception as exc:
            text = _first_line(exc)
            if "timed out" in text.lower():
                self.timeouts += 1
                return f"error: MCP server {name!r} did not answer {tool} within {self.call_timeout:g} s"
            # The connection is gone (crash) or broken: isolate it; the next call reconnects later.
            self._fail(f"{type(exc).__name__}: {text}")
            with contextlib.suppress(Exception):
                await self.stop()
            self.status = "failed"
            return f"error: MCP server {name!r} failed during {tool}: {text}"
        self.timeouts = 0
        return render_result(result)


def _first_line(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        return _first_line(exc.exceptions[0])
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]
