"""The plugin API: everything a plugin may use, and nothing else.

A plugin is a package under `plugins/` whose `__init__.py` defines:

    MANIFEST = Manifest(name="invoices", version="1.0", description="...", data_statement="...")
    async def setup(ctx: PluginContext) -> None: ...          # register commands, tools, hooks, jobs
    async def delete_user_data(ctx: PluginContext, user_id: str) -> int: ...   # rows erased
    async def export_user_data(ctx: PluginContext, user_id: str) -> dict: ...
    async def teardown(ctx: PluginContext) -> None: ...        # optional

and optionally `models.py` (SQLAlchemy tables on `PluginBase`) with a `migrations/` folder of
Alembic revisions (its own version table `alembic_version_<name>`, so each plugin's schema has its
own history). Every table, index and constraint name in models and revisions goes through
`table_name()`, so the plugin follows `CLARA_TABLE_PREFIX` like the core tables do.
Through `PluginContext` a plugin registers commands (prefix and slash, with a privilege level),
LLM tools (JSON schema, validated before the handler runs), event hooks
("message", "session_closed", "user_forgotten"), scheduled jobs (APScheduler, persisted in SQL),
reads/writes its own tables, keeps namespaced settings per guild/channel/user, writes facts to
the shared store (so chat recalls what the plugin knows), and sends proactive messages.
Anything a plugin raises is caught by the host: logged, answered with a short error, and a plugin
that fails in `setup` (or keeps failing) is disabled — the bot keeps running.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import IntEnum
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy.orm import DeclarativeBase

from storage import naming

EVENTS = ("message", "session_closed", "user_forgotten", "attachment")  # attachment: (inv, filename, bytes)


class Level(IntEnum):
    """The privilege ladder (transports compute it from their own user objects, fail-closed)."""

    MEMBER = 0
    MOD = 1
    ADMIN = 2
    GUILD_OWNER = 3
    BOT_OWNER = 4


class PluginBase(DeclarativeBase):
    """Base for plugin tables. Name tables `table_name("<plugin>_<thing>")` (e.g.
    `table_name("invoices_clients")`)."""


def table_name(name: str) -> str:
    """`name` (a plugin table `<plugin>_<thing>`, or an index `ix_...` / constraint `uq_...`) with
    the process's table prefix (`CLARA_TABLE_PREFIX`, read once at start) applied: `invoices_clients`
    stays as it is without a prefix and becomes `acme_invoices_clients` with `acme_`; index names keep
    their kind first (`ix_acme_invoices_clients_owner`). Use it in models and in migrations."""
    return naming.t(name)


def version_table(plugin: str) -> str:
    """The Alembic version table of plugin `plugin`: `<prefix>alembic_version_<plugin>`."""
    return naming.t(f"alembic_version_{plugin}")


@dataclass(frozen=True, slots=True)
class Manifest:
    name: str
    version: str
    description: str
    data_statement: str  # what user data the plugin keeps, in plain words


@dataclass(slots=True)
class Invocation:
    """Who runs a command or triggers a tool, and where."""

    user_id: str
    display_name: str
    channel_id: str
    guild_id: str | None
    is_dm: bool
    level: Level
    now: datetime
    user_scope: str  # the caller's private scope
    conversation_scope: str  # the user scope in a DM, else the channel scope


@dataclass(slots=True)
class Result:
    """A command's answer: text (split by the transport), optional files, error flag."""

    text: str
    files: list[tuple[str, bytes]] = field(default_factory=list)
    error: bool = False
    private: bool = False  # shows private data: ephemeral/DM in servers


class PluginError(Exception):
    """Raise with a user-facing message for expected failures (bad input, unknown client…);
    the host answers with the message as an error and logs nothing alarming."""


CommandHandler = Callable[[Invocation, str], Awaitable["Result | str"]]
ToolHandler = Callable[[Invocation, dict[str, Any]], Awaitable[str]]
EventHandler = Callable[..., Awaitable[None]]


class Config(Protocol):
    """Namespaced settings of one plugin. `target`: "global", "guild:<id>", "channel:<id>",
    "user:<id>". Values are JSON."""

    async def get(self, target: str, key: str, default: Any = None) -> Any: ...
    async def set(self, target: str, key: str, value: Any) -> None: ...
    async def delete(self, target: str, key: str | None = None) -> int: ...


class Memory(Protocol):
    """The shared fact store, as a plugin sees it (facts written here are recalled in chat by
    whoever may read `scope`)."""

    async def add(
        self,
        content: str,
        scope: str,
        *,
        kind: str = "note",
        importance: float = 0.5,
        entities: Sequence[str | tuple[str, str]] = (),
        slug: str | None = None,
        created_by: str | None = None,
    ) -> int: ...
    async def upsert(
        self, slug: str, content: str, scope: str, *, kind: str = "note", importance: float = 0.5
    ) -> tuple[int, str]: ...
    async def supersede(self, fact_id: int, content: str) -> int: ...
    async def forget(self, fact_id: int) -> None: ...
    async def find_slug(self, scope: str, slug: str) -> Any: ...
    async def recall(self, query: str, scopes: Sequence[str], k: int = 5) -> list[Any]: ...
    async def ensure_scope(
        self, scope: str, kind: str, *, name: str | None = None, owner: str | None = None, members: Sequence[str] = ()
    ) -> None: ...


class PluginContext(Protocol):
    manifest: Manifest
    config: Config
    memory: Memory
    log: Any  # logging.Logger named clara.plugins.<name>

    def command(
        self, name: str, *, help: str, level: Level = Level.MEMBER, usage: str = ""
    ) -> Callable[[CommandHandler], CommandHandler]: ...
    def tool(
        self, name: str, *, description: str, parameters: dict[str, Any], level: Level = Level.MEMBER
    ) -> Callable[[ToolHandler], ToolHandler]: ...  # level: offered only to invocations at or above it
    def remove_tool(self, name: str) -> bool: ...  # tools may also be added/removed after setup
    def on(self, event: str) -> Callable[[EventHandler], EventHandler]: ...
    def schedule(
        self, job_id: str, func: Callable[..., Awaitable[None]], *, trigger: str = "cron", **trigger_args: Any
    ) -> None: ...
    # async context manager → AsyncConnection in a write transaction (own tables). On SQLite this is
    # THE writer connection: never call ctx.memory (or anything else that writes) inside it.
    def db(self) -> Any: ...
    def read(self) -> Any: ...  # async context manager → AsyncConnection for reads
    # "channel:<id>" | "user:<id>"; also written into that conversation's history. False if undeliverable.
    # Proactive message; `about`: the users whose data it carries (erasing one of them removes it).
    async def send(self, target: str, text: str, *, about: Sequence[str] = ()) -> bool: ...
    async def call_tool(self, name: str, inv: Invocation, args: dict[str, Any]) -> str: ...  # another plugin's tool
    # Attach a file to the reply of the message `inv` is answering (e.g. from a tool handler).
    def attach(self, inv: Invocation, filename: str, data: bytes) -> None: ...
    # One LLM completion; None when no LLM is configured or the call failed (use a rule-based path then).
    async def complete(
        self, system: str, user: str, *, tier: str = "low", json_mode: bool = False, max_tokens: int = 600
    ) -> str | None: ...
    async def record_system(self, event: str, text: str, **detail: Any) -> int | None: ...  # a `system` record
    def now(self) -> datetime: ...  # the host's clock (injected in tests; use it, not datetime.now)
    @property
    def data_dir(self) -> Path: ...  # the plugin's own folder: <CLARA_DATA_DIR>/plugins/<name> (created)
