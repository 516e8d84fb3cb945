"""`python -m clara.mcp_server --agent NAME [--scope S ...]` (stdio) or
`python -m clara.mcp_server --http [--host H] [--port P] [--grant AGENT=SCOPE ...]` with
CLARA_MCP_TOKENS="token1=agent1,token2=agent2" (tokens are never taken from the command line) and
CLARA_MCP_GRANTS="agent1=channel:42,…" added to the --grant options. `clara mcp serve` is the same
with one-line errors for every bad setting."""

from __future__ import annotations

import argparse
import os
import sys

from clara.mcp_server.server import http_config_from_settings, main_stdio, serve_http


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="clara mcp serve", description="Serve Clara's memory over MCP.")
    p.add_argument("--agent", default=os.environ.get("CLARA_MCP_AGENT"), help="stdio: the agent identity")
    p.add_argument("--scope", action="append", default=[], help="stdio: a shared scope the agent joins")
    p.add_argument("--http", action="store_true", help="serve streamable HTTP at /mcp instead of stdio")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--grant", action="append", default=[], help="http: AGENT=SCOPE (repeatable)")
    args = p.parse_args(argv)
    try:
        _serve(args)
    except ValueError as exc:  # a bad agent name, scope or grant: one line, exit 2
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def _serve(args) -> None:
    if not 0 < args.port < 65536:
        raise ValueError(f"--port must be from 1 to 65535, got {args.port}")
    if args.http:
        import asyncio

        from clara.settings import Settings

        settings = Settings()
        config = http_config_from_settings(settings, listen=(args.host, args.port), grants=args.grant)
        try:
            asyncio.run(serve_http(config, settings))
        except KeyboardInterrupt:
            pass
        except OSError as exc:  # the address is taken or not allowed, the store unreachable
            raise ValueError(str(exc)) from None
        return
    if not args.agent:
        print("error: --agent NAME (or CLARA_MCP_AGENT) is required for stdio", file=sys.stderr)
        raise SystemExit(2)
    main_stdio(args.agent, scopes=args.scope)


if __name__ == "__main__":
    main()
