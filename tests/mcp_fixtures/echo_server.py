"""A tiny stdio MCP server for the bridge tests: echo, env inspection, a crash and a hang.

`--hang-at-start` never answers the handshake; `--exit-at-start` exits at once."""

from __future__ import annotations

import asyncio
import os
import sys
import time

from mcp.server.mcpserver import MCPServer

if "--exit-at-start" in sys.argv:
    sys.exit(3)
if "--hang-at-start" in sys.argv:
    time.sleep(3600)

mcp = MCPServer("echo", log_level="WARNING")


@mcp.tool()
def echo(text: str) -> str:
    """Return the text unchanged."""
    return text


@mcp.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@mcp.tool()
def env_keys() -> str:
    """The names of this process's environment variables, comma-separated."""
    return ",".join(sorted(os.environ))


@mcp.tool()
def getenv(name: str) -> str:
    """One environment variable's value, or <unset>."""
    return os.environ.get(name, "<unset>")


@mcp.tool()
def crash() -> str:
    """Exit the process abruptly."""
    os._exit(7)


@mcp.tool()
async def hang() -> str:
    """Never return."""
    await asyncio.sleep(3600)
    return "unreachable"


@mcp.tool(name="weird.tool name")
def weird() -> str:
    """A tool whose name needs sanitising."""
    return "weird ok"


if __name__ == "__main__":
    mcp.run()
