"""Clara's memory as an MCP server (`clara mcp serve`): the Engram tool set over stdio or
streamable HTTP, every call acting as one agent under the store's scope policies.

Entry points for the CLI: `main_stdio(agent, scopes=...)` and `http_app(tokens, grants=...)`
(an ASGI app for uvicorn). `python -m clara.mcp_server --help` runs either.
"""

from clara.mcp_server.server import build_server, http_app, main_stdio, run_stdio, stdio_server
from clara.mcp_server.service import MemoryService, principal_of

__all__ = ["MemoryService", "build_server", "http_app", "main_stdio", "principal_of", "run_stdio", "stdio_server"]
