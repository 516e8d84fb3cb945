"""The memory MCP server ("Engram" tool names) over stdio or streamable HTTP.

Each connection acts as one agent: over stdio the agent named when the process was started
(`--agent` / CLARA_MCP_AGENT); over HTTP the agent its bearer token maps to (checked twice: an
ASGI guard answers 401 before the MCP layer, and every tool call resolves the token again from the
request headers — no header, no identity, no call).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError, UnexpectedToolError
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from clara.mcp_server.query import MAX_COLUMNS, MAX_FILTERS, MAX_IN, MAX_VALUE_CHARS, OPS
from clara.mcp_server.service import (
    EXPECTED,
    MAX_CAPABILITIES,
    MAX_CAPABILITY_CHARS,
    MAX_ENTITIES,
    MAX_SCOPES,
    MAX_TAG_CHARS,
    MAX_TAGS,
    MemoryService,
    check_agent_name,
    check_grants,
)
from storage.errors import ScopeDenied
from storage.text import MAX_FACT_CHARS, MAX_INT64, MAX_NAME_CHARS, MAX_SCOPE_ID

if TYPE_CHECKING:
    from clara.http_serve import LoopServer

log = logging.getLogger(__name__)
MIN_TOKEN_CHARS = 16
KINDS = (
    "observation, preference, decision, plan, event, biographical, error, insight, summary, note; "
    "records: tool_execution, system"
)

# Every string, list and number a tool takes is bounded in its input schema (maxLength, maxItems,
# minimum/maximum): clients see the limits, and the server refuses what exceeds them with the limit
# named (pydantic validates before a tool runs; the service checks again for in-process callers).
ScopeId = Annotated[str, Field(min_length=1, max_length=MAX_SCOPE_ID)]
Kind = Annotated[str, Field(min_length=1, max_length=40)]
Name = Annotated[str, Field(min_length=1, max_length=MAX_NAME_CHARS)]
Scopes = Annotated[
    list[ScopeId] | None,
    Field(max_length=MAX_SCOPES, description="scope ids to read (default: every scope you may read)"),
]
Kinds = Annotated[list[Kind] | None, Field(max_length=20, description=f"fact kinds ({KINDS})")]
Column = Annotated[str, Field(min_length=1, max_length=40)]


Tag = Annotated[str, Field(min_length=1, max_length=MAX_TAG_CHARS)]


class BulkFact(BaseModel):
    """One item of `memory_store_facts` (bounded here; each item's content is checked by the
    service, so a bad item is reported in `errors` while the others are saved)."""

    model_config = ConfigDict(extra="forbid")
    content: Annotated[str, Field(max_length=MAX_FACT_CHARS)]
    slug: Annotated[str | None, Field(max_length=200)] = None
    kind: Kind = "observation"
    importance: float | None = None
    entities: Annotated[list[Name], Field(max_length=MAX_ENTITIES)] = []
    source: Annotated[str | None, Field(max_length=200)] = None
    tags: Annotated[list[Tag], Field(max_length=MAX_TAGS)] = []


Agent = Annotated[str, Field(min_length=1, max_length=64, description="an agent name, e.g. reviewer")]
# Filter values are checked by the query builder (clara/mcp_server/query.py: 64-bit integers, finite
# numbers, plain text up to MAX_VALUE_CHARS), which names the offending filter; the schema the client
# sees carries the same bounds.
_SCALAR_SCHEMA = {
    "anyOf": [
        {"type": "string", "maxLength": MAX_VALUE_CHARS},
        {"type": "integer", "minimum": -MAX_INT64 - 1, "maximum": MAX_INT64},
        {"type": "number"},
        {"type": "boolean"},
        {"type": "null"},
    ]
}
FILTER_VALUE_SCHEMA = {
    "anyOf": [
        _SCALAR_SCHEMA,
        {
            "type": "object",
            "propertyNames": {"enum": list(OPS)},
            "maxProperties": len(OPS),
            "additionalProperties": {
                "anyOf": [_SCALAR_SCHEMA, {"type": "array", "maxItems": MAX_IN, "items": _SCALAR_SCHEMA}]
            },
        },
    ]
}


class _Holder:
    """Where the tools find the service (set once the store is open, in the server's event loop)."""

    def __init__(self, service: MemoryService | None = None):
        self.service = service

    def get(self) -> MemoryService:
        if self.service is None:
            raise ToolError("the memory store is not open yet")
        return self.service


def bearer_token(headers: Mapping[str, str] | None) -> str | None:
    if not headers:
        return None
    value = headers.get("authorization") or headers.get("Authorization") or ""
    scheme, _, token = value.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def check_tokens(tokens: Mapping[str, str]) -> dict[str, str]:
    if not tokens:
        raise ValueError("the HTTP memory server needs at least one token → agent mapping")
    for token, agent in tokens.items():
        check_agent_name(agent)
        if not isinstance(token, str) or len(token) < MIN_TOKEN_CHARS or any(c.isspace() for c in token):
            raise ValueError(f"tokens must be at least {MIN_TOKEN_CHARS} non-blank characters")
    return dict(tokens)


def agent_for_token(tokens: Mapping[str, str], token: str | None) -> str | None:
    """The agent `token` belongs to (constant-time comparison against every configured token)."""
    if not token:
        return None
    found = None
    for known, agent in tokens.items():
        if hmac.compare_digest(known.encode(), token.encode()):
            found = agent
    return found


def argument_errors(tool: str, exc: ValidationError, most: int = 3) -> str:
    """A schema violation as one line naming each bad argument and its limit, without echoing the
    rejected values (pydantic's own text spans lines and quotes the input)."""
    seen: dict[str, str] = {}
    for e in exc.errors(include_url=False, include_input=False):
        loc = ".".join(str(p) for p in e["loc"] if not (isinstance(p, str) and p.endswith("]")))
        seen.setdefault(loc or "arguments", e["msg"])
    parts = [f"{loc}: {msg}" for loc, msg in list(seen.items())[:most]]
    more = f" (and {len(seen) - most} more)" if len(seen) > most else ""
    return f"{tool}: invalid arguments — " + "; ".join(parts) + more


class _Server(MCPServer):
    async def call_tool(self, name: str, arguments: dict[str, Any], context=None):
        try:
            return await super().call_tool(name, arguments, context)
        except UnexpectedToolError:
            raise
        except ToolError as exc:
            if isinstance(exc.__cause__, ValidationError):
                raise ToolError(argument_errors(name, exc.__cause__)) from exc.__cause__
            raise


def build_server(holder: _Holder, identify: Callable[[Context], str], *, name: str = "clara-memory") -> MCPServer:
    """The MCPServer with the memory tools; `identify(ctx)` names the calling agent (raises
    ToolError when it cannot)."""
    mcp = _Server(
        name,
        instructions=(
            "Clara's shared memory. You act as one agent with a private scope (agent:<name>) and the shared "
            "scopes the operator or their owners granted you. Store atomic facts, recall by meaning, search by "
            "words, link entities, call memory_get_context for a warm start on a topic, create scopes you own "
            "and grant them, and hand conversations to other agents (memory_handoff / memory_pickup)."
        ),
        log_level="WARNING",
    )

    async def call(ctx: Context, method: str, *args, **kwargs) -> dict[str, Any]:
        agent = identify(ctx)
        service = holder.get()
        try:
            return await getattr(service, method)(agent, *args, **kwargs)
        except ScopeDenied as exc:
            raise ToolError(f"scope denied: {exc}") from exc
        except EXPECTED as exc:
            raise ToolError(str(exc)) from exc
        except ToolError:
            raise
        except Exception as exc:
            # A bug, not bad input: one log line with the traceback for the operator, one plain
            # sentence for the agent (no exception text), and the server carries on.
            log.exception("memory tool %s for agent %s failed", method, agent)
            raise ToolError(f"{method} failed inside the memory server; the error is logged there") from exc

    @mcp.tool(structured_output=True)
    async def memory_store_fact(
        ctx: Context,
        content: Annotated[str, Field(min_length=1, max_length=4000, description="one atomic fact")],
        scope: Annotated[
            str | None, Field(max_length=MAX_SCOPE_ID, description="scope id to write (default: your private scope)")
        ] = None,
        kind: Annotated[str, Field(max_length=40, description=f"one of: {KINDS}")] = "observation",
        importance: Annotated[float | None, Field(ge=1, le=10, description="1 (trivia) to 10 (vital)")] = None,
        entities: Annotated[
            list[Name], Field(max_length=MAX_ENTITIES, description="names of entities the fact mentions")
        ] = [],  # noqa: B006
        source: Annotated[str | None, Field(max_length=200, description="source attribution")] = None,
        tags: Annotated[
            list[Annotated[str, Field(min_length=1, max_length=MAX_TAG_CHARS)]], Field(max_length=MAX_TAGS)
        ] = [],  # noqa: B006
        slug: Annotated[
            str | None,
            Field(max_length=100, description="a key (company_tax_regime): the same slug updates, never duplicates"),
        ] = None,
    ) -> dict[str, Any]:
        """Store one atomic fact in a scope you may write; returns its id. It is found lexically at once
        and by meaning once embedded (background). With `slug`, the scope's fact with that slug is
        updated in place instead (`outcome`: added, updated or unchanged)."""
        return await call(
            ctx,
            "store_fact",
            content,
            scope=scope,
            kind=kind,
            importance=importance,
            entities=entities,
            source=source,
            tags=tags,
            slug=slug,
        )

    @mcp.tool(structured_output=True)
    async def memory_store_facts(
        ctx: Context,
        facts: Annotated[
            list[BulkFact],
            Field(
                min_length=1,
                max_length=500,
                description="[{content, slug?, kind?, importance? (1-10), entities?, source?, tags?}]",
            ),
        ],
        scope: Annotated[
            str | None, Field(max_length=MAX_SCOPE_ID, description="scope id to write (default: your private scope)")
        ] = None,
    ) -> dict[str, Any]:
        """Bulk save in one transaction: items with a slug update the scope's fact with that slug
        (never duplicate). Returns {saved, failed, errors: [{index, slug, error}], results}; bad
        items are reported and the rest saved."""
        items = [f.model_dump(exclude_none=True) for f in facts]
        return await call(ctx, "store_facts", items, scope=scope)

    @mcp.tool(structured_output=True)
    async def memory_recall(
        ctx: Context,
        query: Annotated[str, Field(min_length=1, max_length=2000)],
        scopes: Scopes = None,
        k: Annotated[int, Field(ge=1, le=50)] = 10,
        kinds: Kinds = None,
        include_superseded: bool = False,
        history: bool = False,
    ) -> dict[str, Any]:
        """Recall the facts most relevant to `query` (hybrid: meaning, words, entities, importance)
        from the scopes you may read, best first — what is true now first; each fact says whether
        it still holds (`current`, and a `note` when it does not). `history=true` for questions
        about the past ("where did she live before?"): superseded facts included, ranked first."""
        return await call(
            ctx,
            "recall",
            query,
            scopes=scopes,
            k=k,
            kinds=kinds,
            include_superseded=include_superseded,
            history=history,
        )

    @mcp.tool(structured_output=True)
    async def memory_search(
        ctx: Context,
        query: Annotated[str | None, Field(max_length=2000, description="words to match; omit to list")] = None,
        scopes: Scopes = None,
        kinds: Kinds = None,
        created_by: Annotated[str | None, Field(max_length=200, description="principal, e.g. agent:coder")] = None,
        limit: Annotated[int, Field(ge=1, le=100)] = 20,
    ) -> dict[str, Any]:
        """Full-text search (exact words, no embeddings) with filters by kind and author; without a
        query, the newest facts matching the filters."""
        return await call(ctx, "search", query, scopes=scopes, kinds=kinds, created_by=created_by, limit=limit)

    @mcp.tool(structured_output=True)
    async def memory_link_entity(
        ctx: Context,
        entity: Name,
        entity_type: Annotated[
            str | None, Field(max_length=40, description="person, place, organisation, project, pet, date or thing")
        ] = None,
        fact_id: Annotated[
            int | None, Field(ge=1, le=MAX_INT64, description="link the entity to this fact (in its scope)")
        ] = None,
        scope: Annotated[
            str | None,
            Field(max_length=MAX_SCOPE_ID, description="scope of the entity (default: the fact's, else yours)"),
        ] = None,
        alias: Annotated[str | None, Field(max_length=MAX_NAME_CHARS)] = None,
        relation: Annotated[str | None, Field(max_length=100, description="e.g. works_on, lives_in")] = None,
        target: Annotated[str | None, Field(max_length=MAX_NAME_CHARS)] = None,
        target_type: Annotated[str | None, Field(max_length=40)] = None,
    ) -> dict[str, Any]:
        """Create or find an entity in a scope you may write; optionally link it to a fact, add an
        alias, or record `entity -relation-> target` (a new single-valued relation closes the old)."""
        return await call(
            ctx,
            "link_entity",
            entity,
            entity_type=entity_type,
            scope=scope,
            fact_id=fact_id,
            alias=alias,
            relation=relation,
            target=target,
            target_type=target_type,
        )

    @mcp.tool(structured_output=True)
    async def memory_get_context(
        ctx: Context,
        topic: Annotated[str, Field(min_length=1, max_length=2000)],
        scopes: Scopes = None,
        k: Annotated[int, Field(ge=1, le=30)] = 8,
    ) -> dict[str, Any]:
        """Warm-start bundle for a topic: relevant facts, the entities it names (relations, linked
        facts), your latest facts and recent conversation sessions in scopes you may read."""
        return await call(ctx, "get_context", topic, scopes=scopes, k=k)

    @mcp.tool(structured_output=True)
    async def memory_observe(
        ctx: Context,
        content: Annotated[str, Field(min_length=1, max_length=4000)],
        scope: Annotated[str | None, Field(max_length=MAX_SCOPE_ID)] = None,
    ) -> dict[str, Any]:
        """Fire-and-forget: record a low-importance observation; returns at once (the write
        happens in the background; access is checked before accepting)."""
        return await call(ctx, "observe", content, scope=scope)

    @mcp.tool(structured_output=True)
    async def memory_register_agent(
        ctx: Context,
        agent_id: Annotated[
            str | None, Field(max_length=64, description="must be your connection's agent, if given")
        ] = None,
        description: Annotated[str | None, Field(max_length=500)] = None,
        capabilities: Annotated[
            list[Annotated[str, Field(min_length=1, max_length=MAX_CAPABILITY_CHARS)]],
            Field(max_length=MAX_CAPABILITIES),
        ] = [],  # noqa: B006
    ) -> dict[str, Any]:
        """Register (or refresh) this agent: creates its private scope, joins the shared scopes the
        operator granted, and returns the scopes it can read and write."""
        agent = identify(ctx)
        if agent_id is not None and agent_id != agent:
            raise ToolError(f"this connection is agent {agent!r}; it cannot register as {agent_id!r}")
        return await call(ctx, "register_agent", description=description, capabilities=capabilities)

    @mcp.tool(structured_output=True)
    async def memory_create_scope(
        ctx: Context,
        scope: Annotated[
            str, Field(min_length=1, max_length=MAX_SCOPE_ID, description="project:<name> or public:<name>")
        ],
        name: Annotated[str | None, Field(max_length=MAX_NAME_CHARS)] = None,
        public: Annotated[
            bool | None, Field(description="readable by every agent (default: true for public:, false otherwise)")
        ] = None,
    ) -> dict[str, Any]:
        """Create a shared scope that you own: `project:<x>` (members only) or `public:<x>`
        (readable by anyone). You can always write it; grant others access with memory_grant_scope."""
        return await call(ctx, "create_scope", scope, name=name, public=public)

    @mcp.tool(structured_output=True)
    async def memory_grant_scope(
        ctx: Context,
        scope: ScopeId,
        agent: Agent,
        access: Annotated[str, Field(max_length=10, description="read or write (write includes read)")] = "read",
    ) -> dict[str, Any]:
        """Owner only: let another agent read (or read and write) a scope you own."""
        return await call(ctx, "grant_scope", scope, agent, access=access)

    @mcp.tool(structured_output=True)
    async def memory_revoke_scope(ctx: Context, scope: ScopeId, agent: Agent) -> dict[str, Any]:
        """Owner only: remove an agent from a scope you own."""
        return await call(ctx, "revoke_scope", scope, agent)

    @mcp.tool(structured_output=True)
    async def memory_handoff(
        ctx: Context,
        to_agent: Agent,
        summary: Annotated[str, Field(min_length=1, max_length=8000, description="where the conversation stands")],
        session: Annotated[
            str | None, Field(max_length=200, description="the conversation's session (default: continue or start one)")
        ] = None,
        scope: Annotated[
            str | None, Field(max_length=MAX_SCOPE_ID, description="shared scope holding the conversation's facts")
        ] = None,
        fact_ids: Annotated[list[Annotated[int, Field(ge=1, le=MAX_INT64)]], Field(max_length=50)] = [],  # noqa: B006
        parent_id: Annotated[
            int | None,
            Field(
                ge=1,
                le=MAX_INT64,
                description="the handoff this continues (default: the last one you received in this session)",
            ),
        ] = None,
    ) -> dict[str, Any]:
        """Hand the conversation to another agent: summary, session, scope and facts; the context
        chain (every earlier handoff of the session) is kept for the receiver."""
        return await call(
            ctx,
            "handoff",
            to_agent,
            summary,
            session=session,
            scope=scope,
            fact_ids=fact_ids,
            parent_id=parent_id,
        )

    @mcp.tool(structured_output=True)
    async def memory_pickup(
        ctx: Context,
        handoff_id: Annotated[int | None, Field(ge=1, le=MAX_INT64)] = None,
        session: Annotated[str | None, Field(max_length=200)] = None,
    ) -> dict[str, Any]:
        """Take over a conversation handed to you (the oldest pending one by default): the handoff,
        its chain (which agent, which session, each summary) and the facts you may read."""
        return await call(ctx, "pickup", handoff_id=handoff_id, session=session)

    @mcp.tool(structured_output=True)
    async def memory_query_raw(
        ctx: Context,
        table: Annotated[str, Field(max_length=40, description="facts, entities, relations, sessions or scopes")],
        filters: Annotated[
            dict[Column, Any],
            Field(
                max_length=MAX_FILTERS,
                json_schema_extra={"additionalProperties": FILTER_VALUE_SCHEMA},
                description="{column: value} or {column: {op: value}}; ops: " + " ".join(OPS),
            ),
        ] = {},  # noqa: B006
        columns: Annotated[list[Column] | None, Field(max_length=MAX_COLUMNS)] = None,
        order_by: Annotated[str | None, Field(max_length=40)] = None,
        descending: bool = True,
        limit: Annotated[int, Field(ge=1, le=200)] = 50,
        operation: Annotated[str, Field(max_length=20, description="select or count (read-only)")] = "select",
    ) -> dict[str, Any]:
        """Read-only structured query over whitelisted tables and columns, always limited to the
        scopes you may read. No SQL is accepted."""
        return await call(
            ctx,
            "query_raw",
            table,
            filters=filters,
            columns=columns,
            order_by=order_by,
            descending=descending,
            limit=limit,
            operation=operation,
        )

    return mcp


# ---------------------------------------------------------------------- stdio
def stdio_server(service: MemoryService, agent: str) -> MCPServer:
    """An MCPServer acting as `agent` on an already-open service (also used in-process in tests)."""
    check_agent_name(agent)
    return build_server(_Holder(service), lambda ctx: agent)


async def run_stdio(agent: str, *, scopes: Sequence[str] = (), settings=None) -> None:
    from clara.app import open_store

    check_agent_name(agent)
    grants = check_grants({agent: list(scopes)})
    store = await open_store(settings)
    service = MemoryService(store, grants)
    try:
        await service.ensure_agent(agent)
        await stdio_server(service, agent).run_stdio_async()
    finally:
        await service.aclose()
        await store.aclose()


def main_stdio(agent: str, *, scopes: Sequence[str] = (), settings=None) -> None:
    """`clara mcp serve --agent NAME [--scope channel:42 ...]`: serve the memory tools on
    stdin/stdout as agent NAME (store from the settings: CLARA_DATA_DIR / DATABASE_URL), joined to
    the given shared scopes. Logs go to stderr."""
    asyncio.run(run_stdio(agent, scopes=scopes, settings=settings))


# ---------------------------------------------------------------------- HTTP
class _BearerGuard:
    """ASGI wrapper: HTTP requests without a configured bearer token get 401 (fail closed)."""

    def __init__(self, app, tokens: Mapping[str, str]):
        self.app = app
        self.tokens = tokens

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
            if agent_for_token(self.tokens, bearer_token(headers)) is None:
                body = json.dumps({"error": "unauthorized"}).encode()
                await send(
                    {
                        "type": "http.response.start",
                        "status": 401,
                        "headers": [
                            (b"content-type", b"application/json"),
                            (b"www-authenticate", b'Bearer realm="clara-memory"'),
                            (b"content-length", str(len(body)).encode()),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


def http_app(
    tokens: Mapping[str, str],
    *,
    grants: Mapping[str, Sequence[str]] | None = None,
    store=None,
    settings=None,
    path: str = "/mcp",
    host: str = "127.0.0.1",
):
    """The streamable-HTTP memory server as an ASGI app (serve with uvicorn). `tokens` maps bearer
    token → agent name (each ≥ 16 characters); `grants` maps agent name → shared scope ids it
    joins. With `store=None` the store is opened from `settings` in the app's lifespan (and
    closed after); pass an open FactStore to share the bot's (same event loop). `host` is the
    host clients connect to (DNS-rebinding protection allows it and localhost)."""
    from starlette.applications import Starlette
    from starlette.routing import Mount

    tokens = check_tokens(tokens)
    grants = check_grants(grants)
    holder = _Holder()

    def identify(ctx: Context) -> str:
        agent = agent_for_token(tokens, bearer_token(ctx.headers))
        if agent is None:
            raise ToolError("unauthenticated: no valid bearer token on this request")
        return agent

    mcp = build_server(holder, identify)
    inner = mcp.streamable_http_app(streamable_http_path=path, host=host)

    @asynccontextmanager
    async def lifespan(app):
        own = store is None
        if own:
            from clara.app import open_store

            s = await open_store(settings)
        else:
            s = store
        holder.service = MemoryService(s, grants)
        try:
            async with inner.router.lifespan_context(inner):
                yield
        finally:
            await holder.service.aclose()
            holder.service = None
            if own:
                await s.aclose()

    return Starlette(routes=[Mount("/", app=_BearerGuard(inner, tokens))], lifespan=lifespan)


# ---------------------------------------------------------------------- HTTP: configuration and serving
def parse_pairs(text: str, what: str = "KEY=VALUE") -> list[tuple[str, str]]:
    """`"a=b, c=d"` → [("a", "b"), ("c", "d")]. Raises ValueError (without echoing the item, which
    may be a token) when an item has no `=` or an empty side."""
    out = []
    for n, item in enumerate(filter(None, (p.strip() for p in (text or "").split(","))), 1):
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ValueError(f"item {n} of the {what} list is not {what}")
        out.append((key.strip(), value.strip()))
    return out


@dataclass(frozen=True)
class HttpConfig:
    """Where and for whom the HTTP memory server listens: `tokens` maps bearer token → agent,
    `grants` agent → shared scope ids. Build it with `http_config` (which validates)."""

    host: str
    port: int
    tokens: dict[str, str] = field(repr=False)
    grants: dict[str, list[str]] = field(default_factory=dict)

    def __repr__(self) -> str:  # never the tokens
        return f"HttpConfig(host={self.host!r}, port={self.port}, agents={sorted(set(self.tokens.values()))})"


def http_config(
    listen: str | tuple[str, int],
    tokens: str | Mapping[str, str],
    grants: str | Mapping[str, Sequence[str]] | Sequence[str] = "",
) -> HttpConfig:
    """Validate the HTTP server's configuration. `listen` is `[host:]port` (or (host, port));
    `tokens` is `token=agent,…` (CLARA_MCP_TOKENS) or a mapping; `grants` is `agent=scope,…`
    (CLARA_MCP_GRANTS), a list of `agent=scope` items (`--grant`) or a mapping. Raises ValueError
    with one line naming the problem (no tokens, a short token, a bad agent name, scope or port)."""
    from clara.http_serve import parse_listen

    host, port = parse_listen(listen) if isinstance(listen, str) else listen
    if isinstance(tokens, str):
        pairs = parse_pairs(tokens, "token=agent")
        if not pairs:
            raise ValueError("the HTTP memory server needs CLARA_MCP_TOKENS=token=agent,… (no token is set)")
        tokens = dict(pairs)
    if isinstance(grants, str):
        grants = parse_pairs(grants, "agent=scope")
    elif not isinstance(grants, Mapping):
        grants = [p for g in grants for p in parse_pairs(g, "agent=scope")]
    if not isinstance(grants, Mapping):
        merged: dict[str, list[str]] = {}
        for agent, scope in grants:
            merged.setdefault(agent, []).append(scope)
        grants = merged
    return HttpConfig(host, port, check_tokens(tokens), check_grants(grants))


def http_config_from_settings(
    settings, *, listen: str | tuple[str, int] | None = None, grants: Sequence[str] = ()
) -> HttpConfig | None:
    """The HTTP server configuration from clara.settings.Settings (CLARA_MCP_HTTP, CLARA_MCP_TOKENS,
    CLARA_MCP_GRANTS) with `listen` (`--mcp-http`) and extra `grants` taking precedence / adding;
    None when no address is set. Raises ValueError like `http_config`."""
    where = listen or settings.mcp_http
    if not where:
        return None
    pairs = parse_pairs(settings.mcp_grants, "agent=scope") + [p for g in grants for p in parse_pairs(g, "agent=scope")]
    return http_config(where, settings.mcp_tokens.get_secret_value(), [f"{a}={s}" for a, s in pairs])


async def start_http(config: HttpConfig, store) -> LoopServer:
    """Serve the memory MCP server at http://host:port/mcp from the running loop on an open
    FactStore (the caller keeps owning it). Returns once it accepts connections; raises OSError
    (one sentence) when the address cannot be used."""
    from clara.http_serve import start_in_loop

    app = http_app(config.tokens, grants=config.grants, store=store, host=config.host)
    server = await start_in_loop(app, config.host, config.port, name="clara-mcp-http", lifespan="on")
    log.info("memory MCP server listening on http://%s:%s/mcp", config.host, server.port)
    return server


async def serve_http(config: HttpConfig, settings=None) -> None:
    """`clara mcp serve --http`: open the store from `settings`, serve until SIGINT/SIGTERM, then
    close both. Store errors and a taken port propagate (the CLI prints one line)."""
    import signal

    from clara.app import open_store

    store = await open_store(settings)
    server = None
    try:
        server = await start_http(config, store)
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stopping.set)
        waiter = asyncio.create_task(stopping.wait())
        await asyncio.wait({server.task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
    finally:
        if server is not None:
            await server.stop()
        await store.aclose()
