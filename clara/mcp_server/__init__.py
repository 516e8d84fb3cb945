"""Clara's memory as an MCP server (`clara mcp serve`): the Engram tool set over stdio or
streamable HTTP, every call acting as one agent under the store's scope policies.

Entry points: `main_stdio(agent, scopes=...)`; over HTTP `http_config(...)` /
`http_config_from_settings(settings)` (validated HttpConfig), then `start_http(config, store)` in a
running loop (what `clara bot` does with CLARA_MCP_HTTP) or `serve_http(config)` (`clara mcp serve
--http`); `http_app(tokens, grants=...)` is the ASGI app itself. `python -m clara.mcp_server --help`.
"""

from clara.mcp_server.server import (
    HttpConfig,
    build_server,
    http_app,
    http_config,
    http_config_from_settings,
    main_stdio,
    run_stdio,
    serve_http,
    start_http,
    stdio_server,
)
from clara.mcp_server.service import MemoryService, principal_of

__all__ = [
    "HttpConfig",
    "MemoryService",
    "build_server",
    "http_app",
    "http_config",
    "http_config_from_settings",
    "main_stdio",
    "principal_of",
    "run_stdio",
    "serve_http",
    "start_http",
    "stdio_server",
]
