"""`python -m clara.mcp_server --agent NAME [--scope S ...]` (stdio) or
`python -m clara.mcp_server --http [--host H] [--port P] [--grant AGENT=SCOPE ...]` with
CLARA_MCP_TOKENS="token1=agent1,token2=agent2" (tokens are never taken from the command line)."""

from __future__ import annotations

import argparse
import os
import sys

from clara.mcp_server.server import http_app, main_stdio


def parse_pairs(text: str) -> dict[str, str]:
    out = {}
    for item in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"expected KEY=VALUE, got {item!r}")
        out[key.strip()] = value.strip()
    return out


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
        import uvicorn

        tokens = {t: a for t, a in parse_pairs(os.environ.get("CLARA_MCP_TOKENS", "")).items()}
        grants: dict[str, list[str]] = {}
        for g in args.grant:
            agent, _, scope = g.partition("=")
            grants.setdefault(agent, []).append(scope)
        app = http_app(tokens, grants=grants, host=args.host)
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
        return
    if not args.agent:
        print("error: --agent NAME (or CLARA_MCP_AGENT) is required for stdio", file=sys.stderr)
        raise SystemExit(2)
    main_stdio(args.agent, scopes=args.scope)


if __name__ == "__main__":
    main()
