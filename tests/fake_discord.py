"""An in-process fake Discord (REST + gateway websocket) for testing bots built on discord.py 2.7.

The REAL discord.py client (``discord.Client`` / ``commands.Bot``) logs in, receives gateway
events, replies, edits, shows typing, uploads files and answers application-command
interactions against it. Payloads follow discord.py's ``discord/types`` TypedDicts (2.7.1), so
the library's parsers see complete objects.

Typical use::

    async with FakeDiscord() as fake:
        guild = fake.add_guild("Home", owner_id=1)
        chan = fake.add_channel(guild, "general")
        fake.add_member(guild, 2, "alice")
        with fake.patch_discord():                    # points discord.py at the fake
            bot = commands.Bot(command_prefix="!", intents=discord.Intents.all())
            async with fake.running(bot):             # start, wait for on_ready, close after
                msg = await fake.post_message(chan, 2, "!ping")
                reply = await fake.wait_for_message(chan, after=msg)

Everything runs on 127.0.0.1 on a free port; every wait is bounded. Only this module's own
state is touched, apart from the three discord.py attributes ``patch_discord`` swaps (and
restores): ``discord.http.Route.BASE``, ``discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY``
and the ``guild_ready_timeout`` default of ``discord.state.ConnectionState``.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import logging
import mimetypes
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import yarl
from aiohttp import WSMsgType, web

log = logging.getLogger("tests.fake_discord")

DISCORD_EPOCH = 1420070400000

# Gateway opcodes
OP_DISPATCH, OP_HEARTBEAT, OP_IDENTIFY, OP_PRESENCE, OP_VOICE = 0, 1, 2, 3, 4
OP_RESUME, OP_RECONNECT, OP_REQUEST_MEMBERS, OP_INVALID_SESSION, OP_HELLO, OP_HEARTBEAT_ACK = 6, 7, 8, 9, 10, 11

# Gateway intents (bits)
INTENT_GUILDS = 1 << 0
INTENT_GUILD_MEMBERS = 1 << 1
INTENT_GUILD_MESSAGES = 1 << 9
INTENT_GUILD_MESSAGE_TYPING = 1 << 11
INTENT_DIRECT_MESSAGES = 1 << 12
INTENT_DIRECT_MESSAGE_TYPING = 1 << 14
INTENT_MESSAGE_CONTENT = 1 << 15

# Permission bits used here (discord.Permissions has them all)
P_ADMINISTRATOR = 1 << 3
P_ADD_REACTIONS = 1 << 6
P_VIEW_CHANNEL = 1 << 10
P_SEND_MESSAGES = 1 << 11
P_MANAGE_MESSAGES = 1 << 13
P_EMBED_LINKS = 1 << 14
P_ATTACH_FILES = 1 << 15
P_READ_MESSAGE_HISTORY = 1 << 16
P_MENTION_EVERYONE = 1 << 17
P_USE_APPLICATION_COMMANDS = 1 << 31
P_SEND_MESSAGES_IN_THREADS = 1 << 38
P_ALL = (1 << 53) - 1  # superset of every defined bit (discord.Permissions.all() is a subset)

DEFAULT_EVERYONE_PERMISSIONS = (
    P_VIEW_CHANNEL
    | P_SEND_MESSAGES
    | P_READ_MESSAGE_HISTORY
    | P_ADD_REACTIONS
    | P_EMBED_LINKS
    | P_ATTACH_FILES
    | P_USE_APPLICATION_COMMANDS
    | P_SEND_MESSAGES_IN_THREADS
    | (1 << 0)
    | (1 << 26)
    | (1 << 20)
    | (1 << 21)  # create invite, change nickname, connect, speak
)
DEFAULT_BOT_PERMISSIONS = DEFAULT_EVERYONE_PERMISSIONS | P_MANAGE_MESSAGES

# Message flags / types
FLAG_EPHEMERAL = 1 << 6
FLAG_LOADING = 1 << 7
MT_DEFAULT, MT_REPLY, MT_CHAT_INPUT = 0, 19, 20

# Application command option types
OPT_SUB, OPT_GROUP, OPT_STRING, OPT_INT, OPT_BOOL = 1, 2, 3, 4, 5
OPT_USER, OPT_CHANNEL, OPT_ROLE, OPT_MENTIONABLE, OPT_NUMBER, OPT_ATTACHMENT = 6, 7, 8, 9, 10, 11

_MENTION_USER = re.compile(r"<@!?(\d+)>")
_MENTION_ROLE = re.compile(r"<@&(\d+)>")
MAX_CONTENT = 2000


def _now_iso() -> str:
    return datetime.now(UTC).isoformat()


def _permissions_value(p: Any) -> int:
    if p is None:
        return 0
    if isinstance(p, int):
        return p
    value = getattr(p, "value", None)  # discord.Permissions
    if isinstance(value, int):
        return value
    return int(p)


# --------------------------------------------------------------------------------------------
# World model
# --------------------------------------------------------------------------------------------


@dataclass
class FakeUser:
    id: int
    name: str
    bot: bool = False
    global_name: str | None = None

    def payload(self) -> dict:
        return {
            "id": str(self.id),
            "username": self.name,
            "discriminator": "0",
            "global_name": self.global_name,
            "avatar": None,
            "bot": self.bot,
            "system": False,
            "public_flags": 0,
            "flags": 0,
            "banner": None,
            "accent_color": None,
            "avatar_decoration_data": None,
            "primary_guild": None,
            "collectibles": None,
        }


@dataclass
class FakeRole:
    id: int
    guild_id: int
    name: str
    permissions: int = 0
    position: int = 0
    color: int = 0
    hoist: bool = False
    mentionable: bool = False
    managed: bool = False
    bot_id: int | None = None

    def payload(self) -> dict:
        data = {
            "id": str(self.id),
            "name": self.name,
            "color": self.color,
            "colors": {"primary_color": self.color, "secondary_color": None, "tertiary_color": None},
            "hoist": self.hoist,
            "icon": None,
            "unicode_emoji": None,
            "position": self.position,
            "permissions": str(self.permissions),
            "managed": self.managed,
            "mentionable": self.mentionable,
            "flags": 0,
        }
        if self.bot_id is not None:
            data["tags"] = {"bot_id": str(self.bot_id)}
        return data


@dataclass
class FakeChannel:
    id: int
    name: str
    type: int = 0  # 0 guild text, 1 DM
    guild_id: int | None = None
    recipient_id: int | None = None  # DM only
    topic: str | None = None
    position: int = 0
    nsfw: bool = False
    parent_id: int | None = None
    # [{"id": role-or-user id, "type": 0 role | 1 member, "allow": int, "deny": int}]
    overwrites: list = field(default_factory=list)
    last_message_id: int | None = None

    @property
    def is_dm(self) -> bool:
        return self.type == 1


@dataclass
class FakeMember:
    user_id: int
    guild_id: int
    roles: list = field(default_factory=list)  # role ids (never the @everyone role)
    nick: str | None = None
    joined_at: str = field(default_factory=_now_iso)


@dataclass
class FakeGuild:
    id: int
    name: str
    owner_id: int
    channels: dict = field(default_factory=dict)  # id -> FakeChannel
    roles: dict = field(default_factory=dict)  # id -> FakeRole (incl. @everyone, id == guild id)
    members: dict = field(default_factory=dict)  # user id -> FakeMember
    joined_at: str = field(default_factory=_now_iso)

    @property
    def everyone(self) -> FakeRole:
        return self.roles[self.id]

    def role(self, name_or_id: str | int) -> FakeRole:
        for r in self.roles.values():
            if r.id == name_or_id or r.name == name_or_id:
                return r
        raise KeyError(f"no role {name_or_id!r} in guild {self.name!r}")

    def channel(self, name_or_id: str | int) -> FakeChannel:
        for c in self.channels.values():
            if c.id == name_or_id or c.name == name_or_id:
                return c
        raise KeyError(f"no channel {name_or_id!r} in guild {self.name!r}")


@dataclass
class FakeInteraction:
    """One interaction the fake dispatched; fills in as the bot answers it."""

    fake: FakeDiscord = field(repr=False)
    id: int
    token: str
    type: int  # 2 application command, 3 component
    name: str  # command name, or custom_id for components
    channel_id: int
    user_id: int
    guild_id: int | None
    payload: dict = field(repr=False)  # the INTERACTION_CREATE payload as sent
    responses: list = field(default_factory=list)  # callback bodies: {"type": int, "data": {...}}
    original_id: int | None = None  # message id of the original response
    followup_ids: list = field(default_factory=list)

    @property
    def responded(self) -> bool:
        return bool(self.responses)

    @property
    def response(self) -> dict | None:
        """The first callback body (``{"type": 4|5|6|7|8|9, "data": {...}}``) or None."""
        return self.responses[0] if self.responses else None

    @property
    def response_type(self) -> int | None:
        return self.responses[0]["type"] if self.responses else None

    @property
    def deferred(self) -> bool:
        return self.response_type in (5, 6)

    @property
    def original(self) -> dict | None:
        """Current state of the original response message (after edits), or None."""
        return self.fake.message(self.original_id) if self.original_id else None

    @property
    def followups(self) -> list:
        return [self.fake.message(m) for m in self.followup_ids]

    @property
    def messages(self) -> list:
        """Original response (if any) followed by followups, current state."""
        ids = ([self.original_id] if self.original_id else []) + [m for m in self.followup_ids if m != self.original_id]
        return [self.fake.message(m) for m in ids]

    @property
    def ephemeral(self) -> bool:
        msg = self.original
        if msg is not None:
            return bool(msg.get("flags", 0) & FLAG_EPHEMERAL)
        data = (self.response or {}).get("data") or {}
        return bool(data.get("flags", 0) & FLAG_EPHEMERAL)

    @property
    def done(self) -> bool:
        """Answered with something a user can see (a message, an update, a modal, choices)."""
        if not self.responses:
            return False
        if self.response_type == 5:
            msg = self.original
            return bool(self.followup_ids) or (msg is not None and not msg.get("flags", 0) & FLAG_LOADING)
        return True

    async def wait_response(self, timeout: float = 5.0) -> dict:
        """Wait for the initial callback; return its body."""
        await self.fake.wait_for(lambda: self.responded, timeout, what=f"a response to interaction {self.name!r}")
        return self.responses[0]

    async def wait_done(self, timeout: float = 5.0) -> FakeInteraction:
        """Wait until the interaction is answered visibly (deferred ones: until the original is
        edited or a followup is sent)."""
        await self.fake.wait_for(lambda: self.done, timeout, what=f"interaction {self.name!r} to be answered")
        return self


class _Patch:
    """Result of ``FakeDiscord.patch_discord()``: already applied; a context manager that
    restores on exit (``restore()`` does the same)."""

    def __init__(self, fake: FakeDiscord, ready_timeout: float | None):
        import discord.gateway
        import discord.http
        import discord.state

        self.fake = fake
        self._route = discord.http.Route
        self._ws = discord.gateway.DiscordWebSocket
        self._state_cls = discord.state.ConnectionState
        self._old_base = self._route.BASE
        self._old_gateway = self._ws.DEFAULT_GATEWAY
        self._old_init = self._state_cls.__dict__.get("__init__")
        self._route.BASE = fake.api_url
        self._ws.DEFAULT_GATEWAY = yarl.URL(fake.gateway_url)
        if ready_timeout is not None:
            old_init = self._state_cls.__init__

            def __init__(state_self, *args: Any, **options: Any) -> None:
                options.setdefault("guild_ready_timeout", ready_timeout)
                old_init(state_self, *args, **options)

            __init__._fake_discord_patch = True  # type: ignore[attr-defined]
            self._state_cls.__init__ = __init__  # type: ignore[method-assign]
        self.active = True

    def restore(self) -> None:
        if not self.active:
            return
        self._route.BASE = self._old_base
        self._ws.DEFAULT_GATEWAY = self._old_gateway
        if self._old_init is not None:
            self._state_cls.__init__ = self._old_init  # type: ignore[method-assign]
        self.active = False
        if self.fake._patch is self:
            self.fake._patch = None

    def __enter__(self) -> FakeDiscord:
        return self.fake

    def __exit__(self, *exc: Any) -> None:
        self.restore()


class _Conn:
    """One websocket connection."""

    def __init__(self, ws: web.WebSocketResponse):
        self.ws = ws
        self.lock = asyncio.Lock()
        self.session: _Session | None = None
        self.alive = True

    async def send(self, payload: dict | str) -> bool:
        text = payload if isinstance(payload, str) else json.dumps(payload)
        async with self.lock:
            if not self.alive or self.ws.closed:
                self.alive = False
                return False
            try:
                await self.ws.send_str(text)
                return True
            except (ConnectionError, RuntimeError, OSError):
                self.alive = False
                return False


class _Session:
    """A gateway session (survives reconnects; RESUME replays what was missed)."""

    def __init__(self, session_id: str, intents: int, shard: list):
        self.id = session_id
        self.intents = intents
        self.shard = shard
        self.seq = 0
        self.buffer: list = []  # (seq, text)
        self.conn: _Conn | None = None
        self.lock = asyncio.Lock()

    def has(self, intent: int) -> bool:
        return bool(self.intents & intent)

    async def dispatch(self, event: str, data: Any) -> None:
        async with self.lock:
            self.seq += 1
            text = json.dumps({"op": OP_DISPATCH, "t": event, "s": self.seq, "d": data})
            self.buffer.append((self.seq, text))
            del self.buffer[:-2000]
            if self.conn is not None and not await self.conn.send(text):
                self.conn = None


# --------------------------------------------------------------------------------------------
# The fake
# --------------------------------------------------------------------------------------------


class FakeDiscord:
    """Fake Discord REST API + gateway on 127.0.0.1 (see module docstring)."""

    def __init__(
        self,
        *,
        bot_id: int | None = None,
        bot_name: str = "Clara",
        application_id: int | None = None,
        app_owner_id: int | None = None,
        token: str | None = None,
        heartbeat_interval_ms: int = 41250,
        echo_bot_messages: bool = True,
        enforce_permissions: bool = True,
        host: str = "127.0.0.1",
    ):
        self._sf_last = 0
        self.bot_user = FakeUser(bot_id or self.snowflake(), bot_name, bot=True)
        self.application_id = application_id or self.bot_user.id
        self.token = token  # None: any token is accepted
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.echo_bot_messages = echo_bot_messages
        self.enforce_permissions = enforce_permissions
        self.host = host
        self.port: int = 0

        self.users: dict = {self.bot_user.id: self.bot_user}
        owner = app_owner_id or self.snowflake()
        self.app_owner = self.add_user(owner, "app-owner") if owner not in self.users else self.users[owner]
        self.guilds: dict = {}
        self.channels: dict = {}  # every channel, guild and DM
        self._dm_by_user: dict = {}

        self._messages: dict = {}  # id -> message dict (canonical, REST shape)
        self._channel_log: dict = {}  # channel id -> [message ids] in creation order
        self._deleted: set = set()
        self._edits: dict = {}  # message id -> [content after each edit]
        self._original_content: dict = {}
        self._blobs: dict = {}  # attachment id -> (filename, bytes, content_type)

        self.commands: dict = {}  # guild id or None -> [command dicts as returned]
        self.command_syncs: list = []  # {"guild_id", "method", "body"} per registration request
        self.interactions: dict = {}  # id -> FakeInteraction
        self._interactions_by_token: dict = {}
        self.interaction_responses: list = []  # flat log: {"interaction_id", "kind", "type", "body", "message_id"}

        self.typing_events: list = []  # {"channel_id", "user_id", "timestamp"}
        self.reactions: list = []  # {"channel_id", "message_id", "emoji", "action": "add"|"remove"}
        self.presence_updates: list = []
        self.requests: list = []  # every REST request: {"method", "path", "query", "json", "files"}
        self.unhandled: list = []  # REST requests no route matched (answered 404)
        self.rate_limit_hits: list = []  # {"method", "path", "retry_after"}
        self.gateway_log: list = []  # payloads the bot sent on the gateway (except heartbeats)
        self.identify_count = 0
        self.resume_count = 0

        self._rate_limits: list = []  # [method, regex, retry_after, remaining, is_global]
        self._sessions: dict = {}
        self._conns: set = set()
        self._tasks: set = set()
        self._cond: asyncio.Condition | None = None
        self._runner: web.AppRunner | None = None
        self._patch: _Patch | None = None
        self._routes = self._build_routes()

    # ---------------------------------------------------------------- lifecycle

    async def __aenter__(self) -> FakeDiscord:
        await self.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    async def start(self) -> None:
        self._cond = asyncio.Condition()
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_get("/gateway", self._gateway_handler)
        app.router.add_route("*", "/{tail:.*}", self._rest_handler)
        self._runner = web.AppRunner(app, shutdown_timeout=1.0, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def close(self) -> None:
        if self._patch is not None:
            self._patch.restore()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=2)
        for conn in list(self._conns):
            conn.alive = False
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.ws.close(code=4000, message=b"fake discord closing"), 2)
        if self._runner is not None:
            await asyncio.wait_for(self._runner.cleanup(), 5)
            self._runner = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def api_url(self) -> str:
        return f"{self.base_url}/api/v10"

    @property
    def gateway_url(self) -> str:
        return f"ws://{self.host}:{self.port}/gateway"

    def patch_discord(self, *, ready_timeout: float | None = 0.05) -> _Patch:
        """Point discord.py at this fake (Route.BASE, DEFAULT_GATEWAY) now. ``ready_timeout``
        becomes the default ``guild_ready_timeout`` of clients created while patched (discord.py
        waits that long after the last GUILD_CREATE before on_ready; its default is 2 s);
        None leaves it alone. Use as ``with fake.patch_discord():`` or call ``.restore()``."""
        if self._patch is not None and self._patch.active:
            return self._patch
        self._patch = _Patch(self, ready_timeout)
        return self._patch

    @contextlib.asynccontextmanager
    async def running(
        self, bot: Any, *, token: str | None = None, timeout: float = 10.0, fast_ready: bool = True
    ) -> AsyncIterator[Any]:
        """Start ``bot`` (``bot.start(token)``) as a task, wait until it is ready, yield it, then
        close it and wait for the task. discord.py must already point here (patch_discord)."""
        if fast_ready and getattr(bot, "_connection", None) is not None:
            if bot._connection.guild_ready_timeout == 2.0:
                bot._connection.guild_ready_timeout = 0.05
        task = asyncio.create_task(bot.start(token or self.token or "fake-token"), name="fake-discord-bot")
        try:
            deadline = time.monotonic() + timeout
            while not bot.is_ready():
                if task.done():
                    task.result()  # raises the bot's startup error
                    raise RuntimeError("bot.start() returned before the bot was ready")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"bot not ready after {timeout}s (identifies seen: {self.identify_count})")
                await asyncio.sleep(0.01)
            yield bot
        finally:
            if not bot.is_closed():
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(bot.close(), timeout)
            if not task.done():
                try:
                    await asyncio.wait_for(asyncio.shield(task), timeout)
                except (TimeoutError, Exception):
                    task.cancel()
            if task.done() and not task.cancelled():
                task.exception()  # mark retrieved

    # ---------------------------------------------------------------- ids, lookups

    def snowflake(self) -> int:
        ms = int(time.time() * 1000) - DISCORD_EPOCH
        value = max(ms << 22, self._sf_last + 1)
        self._sf_last = value
        return value

    def _cid(self, channel: Any) -> int:
        if isinstance(channel, FakeChannel):
            return channel.id
        if isinstance(channel, dict):
            return int(channel["id"])
        return int(channel)

    def channel(self, channel: Any) -> FakeChannel:
        cid = self._cid(channel)
        try:
            return self.channels[cid]
        except KeyError:
            raise KeyError(f"unknown channel {cid}") from None

    def guild(self, guild: Any) -> FakeGuild:
        if isinstance(guild, FakeGuild):
            return guild
        for g in self.guilds.values():
            if g.id == guild or g.name == guild or str(g.id) == str(guild):
                return g
        raise KeyError(f"unknown guild {guild!r}")

    def user(self, user_id: int) -> FakeUser:
        return self.users[int(user_id)]

    def member(self, guild: Any, user_id: int) -> FakeMember:
        return self.guild(guild).members[int(user_id)]

    # ---------------------------------------------------------------- world building

    def add_user(
        self, user_id: int, name: str | None = None, *, bot: bool = False, global_name: str | None = None
    ) -> FakeUser:
        user_id = int(user_id)
        u = self.users.get(user_id)
        if u is None:
            u = self.users[user_id] = FakeUser(user_id, name or f"user{user_id}", bot=bot, global_name=global_name)
        else:
            if name:
                u.name = name
            if global_name is not None:
                u.global_name = global_name
        return u

    def add_guild(
        self,
        name: str,
        owner_id: int,
        *,
        guild_id: int | None = None,
        everyone_permissions: Any = DEFAULT_EVERYONE_PERMISSIONS,
        bot_permissions: Any = DEFAULT_BOT_PERMISSIONS,
        owner_name: str | None = None,
    ) -> FakeGuild:
        """A guild with @everyone, the bot as a member (with a managed bot role carrying
        ``bot_permissions``) and the owner as a member."""
        gid = guild_id or self.snowflake()
        g = FakeGuild(gid, name, int(owner_id))
        g.roles[gid] = FakeRole(gid, gid, "@everyone", _permissions_value(everyone_permissions), position=0)
        bot_role = FakeRole(
            self.snowflake(),
            gid,
            self.bot_user.name,
            _permissions_value(bot_permissions),
            position=1,
            managed=True,
            bot_id=self.bot_user.id,
        )
        g.roles[bot_role.id] = bot_role
        g.members[self.bot_user.id] = FakeMember(self.bot_user.id, gid, [bot_role.id])
        self.add_user(owner_id, owner_name)
        g.members.setdefault(int(owner_id), FakeMember(int(owner_id), gid))
        self.guilds[gid] = g
        self._after_change(lambda s: s.dispatch("GUILD_CREATE", self._guild_create_payload(g, s)))
        return g

    def add_channel(
        self,
        guild: Any,
        name: str,
        *,
        topic: str | None = None,
        channel_id: int | None = None,
        overwrites: list | None = None,
    ) -> FakeChannel:
        """A text channel. ``overwrites``: [{"id", "type": 0 role|1 member, "allow", "deny"}]."""
        g = self.guild(guild)
        c = FakeChannel(
            channel_id or self.snowflake(),
            name,
            0,
            g.id,
            topic=topic,
            position=len(g.channels),
            overwrites=[dict(o) for o in overwrites or []],
        )
        g.channels[c.id] = c
        self.channels[c.id] = c
        self._after_change(lambda s: s.dispatch("CHANNEL_CREATE", self._channel_payload(c)))
        return c

    def add_role(
        self,
        guild: Any,
        name: str,
        permissions: Any = 0,
        *,
        role_id: int | None = None,
        color: int = 0,
        hoist: bool = False,
        mentionable: bool = False,
    ) -> FakeRole:
        g = self.guild(guild)
        r = FakeRole(
            role_id or self.snowflake(),
            g.id,
            name,
            _permissions_value(permissions),
            position=len(g.roles),
            color=color,
            hoist=hoist,
            mentionable=mentionable,
        )
        g.roles[r.id] = r
        self._after_change(lambda s: s.dispatch("GUILD_ROLE_CREATE", {"guild_id": str(g.id), "role": r.payload()}))
        return r

    def _role_ids(self, g: FakeGuild, roles: Iterable[Any]) -> list:
        out = []
        for r in roles or []:
            role = g.role(r.id if isinstance(r, FakeRole) else r)
            if role.id != g.id and role.id not in out:
                out.append(role.id)
        return out

    def add_member(
        self, guild: Any, user_id: int, name: str | None = None, roles: Sequence[Any] = (), *, nick: str | None = None
    ) -> FakeMember:
        """Add (or update) a member; ``roles`` are FakeRole objects, role ids or role names."""
        g = self.guild(guild)
        self.add_user(user_id, name)
        m = g.members.get(int(user_id))
        new = m is None
        if new:
            m = g.members[int(user_id)] = FakeMember(int(user_id), g.id)
        m.roles = self._role_ids(g, roles) if roles or new else m.roles
        if nick is not None:
            m.nick = nick
        event = "GUILD_MEMBER_ADD" if new else "GUILD_MEMBER_UPDATE"

        def send(s: _Session) -> Any:
            if not s.has(INTENT_GUILD_MEMBERS):
                return None
            data = self._member_payload(g, m, with_user=True)
            data["guild_id"] = str(g.id)
            return s.dispatch(event, data)

        self._after_change(send)
        return m

    def set_member_roles(self, guild: Any, user_id: int, roles: Sequence[Any]) -> FakeMember:
        g = self.guild(guild)
        m = g.members[int(user_id)]
        m.roles = self._role_ids(g, roles)
        return self.add_member(g, user_id)

    def dm_channel(self, user_id: int) -> FakeChannel:
        """The DM channel between the bot and ``user_id`` (created, with the user, if needed)."""
        user_id = int(user_id)
        self.add_user(user_id)
        cid = self._dm_by_user.get(user_id)
        if cid is None:
            c = FakeChannel(self.snowflake(), "", 1, None, recipient_id=user_id)
            self.channels[c.id] = c
            self._dm_by_user[user_id] = c.id
            return c
        return self.channels[cid]

    # ---------------------------------------------------------------- permissions

    def permissions(self, guild: Any, user_id: int, channel: Any = None) -> int:
        """Effective permission bits of a member (in ``channel`` if given, with overwrites)."""
        g = self.guild(guild)
        user_id = int(user_id)
        if user_id == g.owner_id:
            return P_ALL
        m = g.members.get(user_id)
        if m is None:
            return 0
        perms = g.everyone.permissions
        for rid in m.roles:
            if rid in g.roles:
                perms |= g.roles[rid].permissions
        if perms & P_ADMINISTRATOR:
            return P_ALL
        if channel is not None:
            ch = self.channel(channel)
            ows = {int(o["id"]): o for o in ch.overwrites}
            if g.id in ows:
                perms = (perms & ~int(ows[g.id]["deny"])) | int(ows[g.id]["allow"])
            allow = deny = 0
            for rid in m.roles:
                if rid in ows:
                    allow |= int(ows[rid]["allow"])
                    deny |= int(ows[rid]["deny"])
            perms = (perms & ~deny) | allow
            if user_id in ows:
                perms = (perms & ~int(ows[user_id]["deny"])) | int(ows[user_id]["allow"])
        return perms

    # ---------------------------------------------------------------- payload builders

    def _member_payload(
        self, g: FakeGuild, m: FakeMember, *, with_user: bool = True, channel: Any = None, permissions: bool = False
    ) -> dict:
        data = {
            "roles": [str(r) for r in m.roles],
            "joined_at": m.joined_at,
            "deaf": False,
            "mute": False,
            "flags": 0,
            "nick": m.nick,
            "avatar": None,
            "banner": None,
            "pending": False,
            "premium_since": None,
            "communication_disabled_until": None,
        }
        if with_user:
            data["user"] = self.users[m.user_id].payload()
        if permissions:
            data["permissions"] = str(self.permissions(g, m.user_id, channel))
        return data

    def _channel_payload(self, c: FakeChannel) -> dict:
        if c.is_dm:
            return {
                "id": str(c.id),
                "type": 1,
                "last_message_id": str(c.last_message_id) if c.last_message_id else None,
                "flags": 0,
                "recipients": [self.users[c.recipient_id].payload()],
            }
        return {
            "id": str(c.id),
            "type": c.type,
            "guild_id": str(c.guild_id),
            "name": c.name,
            "position": c.position,
            "permission_overwrites": [
                {
                    "id": str(o["id"]),
                    "type": int(o.get("type", 0)),
                    "allow": str(int(o.get("allow", 0))),
                    "deny": str(int(o.get("deny", 0))),
                }
                for o in c.overwrites
            ],
            "nsfw": c.nsfw,
            "parent_id": str(c.parent_id) if c.parent_id else None,
            "topic": c.topic,
            "last_message_id": str(c.last_message_id) if c.last_message_id else None,
            "rate_limit_per_user": 0,
            "default_auto_archive_duration": 1440,
            "default_thread_rate_limit_per_user": 0,
            "flags": 0,
            "icon_emoji": None,
            "theme_color": None,
        }

    def _guild_payload(self, g: FakeGuild) -> dict:
        return {
            "id": str(g.id),
            "name": g.name,
            "icon": None,
            "icon_hash": None,
            "splash": None,
            "discovery_splash": None,
            "emojis": [],
            "stickers": [],
            "features": [],
            "description": None,
            "incidents_data": None,
            "owner_id": str(g.owner_id),
            "region": "deprecated",
            "afk_channel_id": None,
            "afk_timeout": 300,
            "verification_level": 0,
            "default_message_notifications": 0,
            "explicit_content_filter": 0,
            "roles": [r.payload() for r in g.roles.values()],
            "mfa_level": 0,
            "nsfw_level": 0,
            "nsfw": False,
            "application_id": None,
            "system_channel_id": None,
            "system_channel_flags": 0,
            "rules_channel_id": None,
            "vanity_url_code": None,
            "banner": None,
            "premium_tier": 0,
            "premium_subscription_count": 0,
            "premium_progress_bar_enabled": False,
            "preferred_locale": "en-US",
            "public_updates_channel_id": None,
            "safety_alerts_channel_id": None,
            "max_members": 500000,
            "max_video_channel_users": 25,
            "max_stage_video_channel_users": 50,
            "widget_enabled": False,
            "widget_channel_id": None,
            "stage_instances": [],
            "guild_scheduled_events": [],
        }

    def _guild_create_payload(self, g: FakeGuild, session: _Session | None = None) -> dict:
        data = self._guild_payload(g)
        members = list(g.members.values())
        if session is not None and not session.has(INTENT_GUILD_MEMBERS):
            members = [g.members[self.bot_user.id]]  # as Discord: only the bot without the intent
        data.update(
            {
                "unavailable": False,
                "joined_at": g.joined_at,
                "large": False,
                "lazy": True,
                "member_count": len(g.members),
                "members": [self._member_payload(g, m) for m in members],
                "channels": [self._channel_payload(c) for c in g.channels.values()],
                "threads": [],
                "presences": [],
                "voice_states": [],
                "soundboard_sounds": [],
                "embedded_activities": [],
                "application_command_counts": {},
            }
        )
        return data

    def _user_with_member(self, user_id: int, guild_id: int | None) -> dict:
        u = self.users.get(int(user_id)) or FakeUser(int(user_id), f"user{user_id}")
        data = u.payload()
        if guild_id is not None:
            g = self.guilds.get(guild_id)
            if g is not None and int(user_id) in g.members:
                data["member"] = self._member_payload(g, g.members[int(user_id)], with_user=False)
        return data

    def _gateway_message(self, msg: dict, session: _Session | None = None) -> dict | None:
        """MESSAGE_CREATE/UPDATE payload for ``session`` (None when its intents exclude it)."""
        ch = self.channels.get(int(msg["channel_id"]))
        guild_id = ch.guild_id if ch is not None else None
        data = copy.deepcopy(msg)
        if session is not None:
            need = INTENT_DIRECT_MESSAGES if guild_id is None else INTENT_GUILD_MESSAGES
            if not session.has(need):
                return None
            author_id = int(msg["author"]["id"])
            mentioned = any(int(u["id"]) == self.bot_user.id for u in msg.get("mentions", []))
            if (
                guild_id is not None
                and not session.has(INTENT_MESSAGE_CONTENT)
                and author_id != self.bot_user.id
                and not mentioned
            ):
                data.update(content="", embeds=[], attachments=[], components=[], poll=None)
                data.pop("poll", None)
        if guild_id is not None:
            data["guild_id"] = str(guild_id)
            g = self.guilds[guild_id]
            author_id = int(msg["author"]["id"])
            if author_id in g.members:
                data["member"] = self._member_payload(g, g.members[author_id], with_user=False)
            data["mentions"] = [self._user_with_member(int(u["id"]), guild_id) for u in msg.get("mentions", [])]
        return data

    def _app_info_payload(self) -> dict:
        return {
            "id": str(self.application_id),
            "name": self.bot_user.name,
            "icon": None,
            "description": "",
            "summary": "",
            "type": None,
            "hook": True,
            "bot_public": True,
            "bot_require_code_grant": False,
            "verify_key": "0" * 64,
            "flags": (1 << 19) | (1 << 15),  # message content + members intents "limited" (unverified bot)
            "owner": self.app_owner.payload(),
            "bot": self.bot_user.payload(),
            "redirect_uris": [],
            "interactions_endpoint_url": None,
            "role_connections_verification_url": None,
            "tags": [],
            "approximate_guild_count": len(self.guilds),
            "integration_types_config": {"0": {}, "1": {}},
        }

    # ---------------------------------------------------------------- dispatch plumbing

    def _live_sessions(self) -> list:
        return list(self._sessions.values())

    async def _broadcast(self, fn: Callable[[_Session], Any]) -> None:
        for s in self._live_sessions():
            coro = fn(s)
            if coro is not None:
                await coro

    def _after_change(self, fn: Callable[[_Session], Any]) -> None:
        """From sync helpers: dispatch to connected sessions in the background (see flush())."""
        if not self._sessions:
            return
        self._spawn(self._broadcast(fn))

    def _spawn(self, coro: Any) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def flush(self, timeout: float = 5.0) -> None:
        """Wait until events queued by sync helpers (add_member, ...) were sent."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=timeout)

    async def _notify(self) -> None:
        if self._cond is None:
            return
        async with self._cond:
            self._cond.notify_all()

    def _changed(self) -> None:
        if self._cond is not None:
            self._spawn(self._notify())

    async def wait_for(self, predicate: Callable[[], Any], timeout: float = 5.0, *, what: str = "condition") -> Any:
        """Wait (bounded) until ``predicate()`` is truthy; re-checked on every change the fake sees."""
        assert self._cond is not None, "FakeDiscord not started"
        try:
            async with asyncio.timeout(timeout):
                async with self._cond:
                    while True:
                        value = predicate()
                        if value:
                            return value
                        await self._cond.wait()
        except TimeoutError:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}") from None

    async def wait_until_connected(self, timeout: float = 5.0) -> None:
        """Wait until a bot has identified on the gateway."""
        await self.wait_for(lambda: self._sessions, timeout, what="a gateway IDENTIFY")

    # ---------------------------------------------------------------- gateway

    async def _gateway_handler(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(max_msg_size=0, autoping=True)
        await ws.prepare(request)
        conn = _Conn(ws)
        self._conns.add(conn)
        try:
            await conn.send(
                {
                    "op": OP_HELLO,
                    "d": {"heartbeat_interval": self.heartbeat_interval_ms, "_trace": ["fake-discord"]},
                    "s": None,
                    "t": None,
                }
            )
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                try:
                    payload = json.loads(msg.data)
                except ValueError:
                    await ws.close(code=4002, message=b"decode error")
                    break
                await self._gateway_receive(conn, payload)
        finally:
            conn.alive = False
            self._conns.discard(conn)
            if conn.session is not None and conn.session.conn is conn:
                conn.session.conn = None
            self._changed()
        return ws

    async def _gateway_receive(self, conn: _Conn, payload: dict) -> None:
        op, d = payload.get("op"), payload.get("d")
        if op == OP_HEARTBEAT:
            await conn.send({"op": OP_HEARTBEAT_ACK, "d": None, "s": None, "t": None})
            return
        self.gateway_log.append(payload)
        if op == OP_IDENTIFY:
            if self.token is not None and d.get("token") != self.token:
                await conn.ws.close(code=4004, message=b"Authentication failed.")
                return
            self.identify_count += 1
            session = _Session(uuid.uuid4().hex, int(d.get("intents", 0)), d.get("shard") or [0, 1])
            session.conn = conn
            conn.session = session
            ready = {
                "v": 10,
                "user": {**self.bot_user.payload(), "verified": True, "mfa_enabled": False, "email": None},
                "guilds": [{"id": str(g), "unavailable": True} for g in self.guilds],
                "session_id": session.id,
                "session_type": "normal",
                "resume_gateway_url": self.gateway_url,
                "shard": session.shard,
                "application": {"id": str(self.application_id), "flags": self._app_info_payload()["flags"]},
                "private_channels": [],
                "relationships": [],
                "presences": [],
                "guild_join_requests": [],
                "geo_ordered_rtc_regions": [],
                "auth_session_id_hash": "",
                "user_settings": {},
                "_trace": ["fake-discord"],
            }
            self._sessions[session.id] = session
            await session.dispatch("READY", ready)
            for g in list(self.guilds.values()):
                await session.dispatch("GUILD_CREATE", self._guild_create_payload(g, session))
            self._changed()
        elif op == OP_RESUME:
            session = self._sessions.get(d.get("session_id"))
            if session is None or (self.token is not None and d.get("token") != self.token):
                await conn.send({"op": OP_INVALID_SESSION, "d": False, "s": None, "t": None})
                return
            self.resume_count += 1
            async with session.lock:
                session.conn = conn
                conn.session = session
                since = int(d.get("seq") or 0)
                for seq, text in session.buffer:
                    if seq > since:
                        await conn.send(text)
            await session.dispatch("RESUMED", {"_trace": ["fake-discord"]})
            self._changed()
        elif op == OP_PRESENCE:
            self.presence_updates.append(d)
        elif op == OP_REQUEST_MEMBERS:
            await self._answer_member_request(conn, d)
        # voice state and unknown opcodes are recorded (gateway_log) and ignored

    async def _answer_member_request(self, conn: _Conn, d: dict) -> None:
        session = conn.session
        if session is None:
            return
        g = self.guilds.get(int(d["guild_id"]))
        if g is None:
            return
        ids = d.get("user_ids")
        members, not_found = [], []
        if ids:
            for uid in ids if isinstance(ids, list) else [ids]:
                m = g.members.get(int(uid))
                (members.append(m) if m else not_found.append(str(uid)))
        else:
            query = (d.get("query") or "").lower()
            members = [m for m in g.members.values() if self.users[m.user_id].name.lower().startswith(query)]
            if d.get("limit"):
                members = members[: int(d["limit"])]
        chunk = {
            "guild_id": str(g.id),
            "members": [self._member_payload(g, m) for m in members],
            "chunk_index": 0,
            "chunk_count": 1,
            "not_found": not_found,
        }
        if d.get("nonce") is not None:
            chunk["nonce"] = d["nonce"]
        await session.dispatch("GUILD_MEMBERS_CHUNK", chunk)

    async def request_reconnect(self) -> None:
        """Send op 7 RECONNECT to every connected bot (it reconnects and RESUMEs)."""
        for s in self._live_sessions():
            if s.conn is not None:
                await s.conn.send({"op": OP_RECONNECT, "d": None, "s": None, "t": None})

    async def drop_connections(self, code: int = 4000) -> None:
        """Close every gateway socket from the server side (a resumable close code by default)."""
        for conn in list(self._conns):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.ws.close(code=code), 2)

    # ---------------------------------------------------------------- messages

    def _parse_mentions(self, content: str, guild_id: int | None) -> tuple:
        users, roles = [], []
        for raw in _MENTION_USER.findall(content or ""):
            uid = int(raw)
            if uid in self.users and uid not in users:
                users.append(uid)
        if guild_id is not None:
            g = self.guilds[guild_id]
            for raw in _MENTION_ROLE.findall(content or ""):
                if int(raw) in g.roles and int(raw) not in roles:
                    roles.append(int(raw))
        return users, roles

    def _new_attachment(
        self,
        channel_id: int,
        filename: str,
        data: bytes,
        content_type: str | None = None,
        description: str | None = None,
    ) -> dict:
        aid = self.snowflake()
        ctype = content_type if content_type and content_type != "application/octet-stream" else None
        ctype = ctype or mimetypes.guess_type(filename)[0] or "application/octet-stream"
        self._blobs[aid] = (filename, bytes(data), ctype)
        url = f"{self.base_url}/attachments/{channel_id}/{aid}/{quote(filename)}"
        att = {
            "id": str(aid),
            "filename": filename,
            "size": len(data),
            "url": url,
            "proxy_url": url,
            "content_type": ctype,
            "width": None,
            "height": None,
            "ephemeral": False,
            "flags": 0,
        }
        if description is not None:
            att["description"] = description
        return att

    def _store_message(self, msg: dict) -> dict:
        mid = int(msg["id"])
        cid = int(msg["channel_id"])
        self._messages[mid] = msg
        self._channel_log.setdefault(cid, []).append(mid)
        self._original_content[mid] = msg.get("content", "")
        ch = self.channels.get(cid)
        if ch is not None:
            ch.last_message_id = mid
        self._changed()
        return msg

    def _build_message(
        self,
        ch: FakeChannel,
        author_id: int,
        content: str,
        *,
        attachments: list = (),
        embeds: list = (),
        reference: dict | None = None,
        flags: int = 0,
        tts: bool = False,
        components: list | None = None,
        nonce: Any = None,
        msg_type: int | None = None,
        extra_mentions: Sequence[int] = (),
        mention_everyone: bool = False,
        allowed_mentions: dict | None = None,
        extra: dict | None = None,
    ) -> dict:
        users, roles = self._parse_mentions(content, ch.guild_id)
        if allowed_mentions is not None:
            parse = allowed_mentions.get("parse", [])
            allowed_users = {int(u) for u in allowed_mentions.get("users", [])}
            allowed_roles = {int(r) for r in allowed_mentions.get("roles", [])}
            users = [u for u in users if "users" in parse or u in allowed_users]
            roles = [r for r in roles if "roles" in parse or r in allowed_roles]
        for uid in extra_mentions:
            if uid not in users:
                users.append(uid)
        msg = {
            "id": str(self.snowflake()),
            "channel_id": str(ch.id),
            "author": self.users[author_id].payload(),
            "content": content or "",
            "timestamp": _now_iso(),
            "edited_timestamp": None,
            "tts": tts,
            "mention_everyone": mention_everyone,
            "mentions": [self.users[u].payload() if u in self.users else {"id": str(u)} for u in users],
            "mention_roles": [str(r) for r in roles],
            "attachments": list(attachments),
            "embeds": list(embeds or []),
            "pinned": False,
            "type": msg_type if msg_type is not None else (MT_REPLY if reference else MT_DEFAULT),
            "flags": flags,
            "components": list(components or []),
            "sticker_items": [],
        }
        if ch.guild_id is not None:
            msg["guild_id"] = str(ch.guild_id)
        if nonce is not None:
            msg["nonce"] = nonce
        if reference is not None:
            ref_id = int(reference["message_id"])
            ref_msg = self._messages.get(ref_id)
            msg["message_reference"] = {
                "type": 0,
                "message_id": str(ref_id),
                "channel_id": str(reference.get("channel_id") or ch.id),
            }
            if ch.guild_id is not None:
                msg["message_reference"]["guild_id"] = str(ch.guild_id)
            if ref_msg is None or ref_id in self._deleted:
                msg["referenced_message"] = None
            else:
                resolved = copy.deepcopy(ref_msg)
                resolved.pop("referenced_message", None)
                msg["referenced_message"] = resolved
        if extra:
            msg.update(extra)
        return msg

    async def _dispatch_message(self, event: str, msg: dict) -> None:
        if msg.get("flags", 0) & FLAG_EPHEMERAL:
            return

        def send(s: _Session) -> Any:
            data = self._gateway_message(msg, s)
            return s.dispatch(event, data) if data is not None else None

        await self._broadcast(send)

    async def post_message(
        self,
        channel: Any,
        author_user_id: int,
        content: str = "",
        *,
        mentions_bot: bool = False,
        reply_to: Any = None,
        attachments: Sequence[tuple] = (),
        embeds: Sequence[dict] = (),
        mention_everyone: bool = False,
    ) -> dict:
        """A user posts in ``channel``; MESSAGE_CREATE goes to the bot. Returns the message dict.

        ``mentions_bot``: the bot is in ``mentions`` (and, unless replying or already mentioned,
        ``<@bot_id> `` is prefixed to the content, as a typed mention would be); with ``reply_to``
        it models a reply with ping. ``reply_to``: message dict or id. ``attachments``:
        ``[(filename, bytes)]`` or ``[(filename, bytes, content_type)]``, served by the fake.
        ``<@id>``/``<@&id>`` in content fill ``mentions``/``mention_roles``."""
        ch = self.channel(channel)
        author_user_id = int(author_user_id)
        if ch.is_dm:
            if author_user_id != ch.recipient_id:
                raise ValueError(f"user {author_user_id} is not the recipient of DM channel {ch.id}")
        else:
            if author_user_id not in self.guilds[ch.guild_id].members:
                raise ValueError(f"user {author_user_id} is not a member of guild {ch.guild_id}")
        bot_id = self.bot_user.id
        extra_mentions = []
        if mentions_bot:
            extra_mentions.append(bot_id)
            already = any(int(x) == bot_id for x in _MENTION_USER.findall(content or ""))
            if reply_to is None and not already:
                content = f"<@{bot_id}> {content}".rstrip() if content else f"<@{bot_id}>"
        atts = []
        for spec in attachments:
            filename, data = spec[0], spec[1]
            ctype = spec[2] if len(spec) > 2 else None
            atts.append(self._new_attachment(ch.id, filename, data, ctype))
        reference = None
        if reply_to is not None:
            ref_id = int(reply_to["id"]) if isinstance(reply_to, dict) else int(reply_to)
            if ref_id not in self._messages:
                raise KeyError(f"reply_to: unknown message {ref_id}")
            reference = {"message_id": ref_id, "channel_id": ch.id}
        msg = self._build_message(
            ch,
            author_user_id,
            content,
            attachments=atts,
            embeds=list(embeds),
            reference=reference,
            extra_mentions=extra_mentions,
            mention_everyone=mention_everyone,
        )
        self._store_message(msg)
        await self._dispatch_message("MESSAGE_CREATE", msg)
        return copy.deepcopy(msg)

    async def edit_user_message(self, message: Any, content: str) -> dict:
        """A user edits their message; MESSAGE_UPDATE goes to the bot."""
        msg = self._messages[self._mid(message)]
        self._apply_edit(msg, {"content": content})
        await self._dispatch_message("MESSAGE_UPDATE", msg)
        return copy.deepcopy(msg)

    async def delete_message(self, message: Any) -> None:
        """Delete any message (as a user/moderator would); MESSAGE_DELETE goes to the bot."""
        mid = self._mid(message)
        msg = self._messages[mid]
        await self._delete(msg)

    async def user_typing(self, channel: Any, user_id: int) -> None:
        """A user starts typing (TYPING_START)."""
        ch = self.channel(channel)
        data = {"channel_id": str(ch.id), "user_id": str(user_id), "timestamp": int(time.time())}
        if ch.guild_id is not None:
            g = self.guilds[ch.guild_id]
            data["guild_id"] = str(g.id)
            data["member"] = self._member_payload(g, g.members[int(user_id)])
        need = INTENT_DIRECT_MESSAGE_TYPING if ch.is_dm else INTENT_GUILD_MESSAGE_TYPING
        await self._broadcast(lambda s: s.dispatch("TYPING_START", data) if s.has(need) else None)

    def _mid(self, message: Any) -> int:
        return int(message["id"]) if isinstance(message, dict) else int(message)

    def _apply_edit(self, msg: dict, body: dict, new_attachments: list | None = None) -> None:
        for key in ("content", "embeds", "components", "flags", "poll"):
            if key in body:
                value = body[key]
                if key == "content" and value is None:
                    value = ""
                if key in ("embeds", "components") and value is None:
                    value = []
                if key == "flags":
                    value = (int(value or 0) & ~FLAG_LOADING) | (msg.get("flags", 0) & FLAG_EPHEMERAL)
                msg[key] = value
        if new_attachments is not None:
            msg["attachments"] = new_attachments
        if msg.get("flags", 0) & FLAG_LOADING:
            msg["flags"] &= ~FLAG_LOADING
        if "content" in body:
            ch = self.channels.get(int(msg["channel_id"]))
            users, roles = self._parse_mentions(msg["content"], ch.guild_id if ch else None)
            msg["mentions"] = [self.users[u].payload() for u in users]
            msg["mention_roles"] = [str(r) for r in roles]
        msg["edited_timestamp"] = _now_iso()
        self._edits.setdefault(int(msg["id"]), []).append(msg.get("content", ""))
        self._changed()

    async def _delete(self, msg: dict) -> None:
        mid = int(msg["id"])
        self._deleted.add(mid)
        self._changed()
        if msg.get("flags", 0) & FLAG_EPHEMERAL:
            return
        data = {"id": str(mid), "channel_id": msg["channel_id"]}
        if msg.get("guild_id"):
            data["guild_id"] = msg["guild_id"]
        need = INTENT_GUILD_MESSAGES if msg.get("guild_id") else INTENT_DIRECT_MESSAGES
        await self._broadcast(lambda s: s.dispatch("MESSAGE_DELETE", data) if s.has(need) else None)

    # ---------------------------------------------------------------- inspection

    def message(self, message_id: Any) -> dict | None:
        """Current state of a message (copy), or None."""
        msg = self._messages.get(self._mid(message_id))
        if msg is None:
            return None
        out = copy.deepcopy(msg)
        if int(msg["id"]) in self._deleted:
            out["deleted"] = True  # marker added by the fake, not a Discord field
        return out

    def messages(self, channel: Any, *, include_deleted: bool = False) -> list:
        """Every message in the channel (users' and the bot's), oldest first, current state."""
        cid = self._cid(channel)
        return [self.message(m) for m in self._channel_log.get(cid, []) if include_deleted or m not in self._deleted]

    def sent(self, channel: Any, *, include_deleted: bool = False) -> list:
        """Messages the bot created in the channel (plain sends, replies, interaction responses
        and followups, ephemeral ones too: check ``flags & 64``), oldest first, content as it is
        now (after edits). Deleted ones only with ``include_deleted`` (they carry "deleted": True)."""
        bot = str(self.bot_user.id)
        return [m for m in self.messages(channel, include_deleted=include_deleted) if m["author"]["id"] == bot]

    def edits(self, message_id: Any) -> list:
        """Content after each edit of the message, in order (the original content is not included;
        see content_history)."""
        return list(self._edits.get(self._mid(message_id), []))

    def content_history(self, message_id: Any) -> list:
        """[original content, content after edit 1, ...]."""
        mid = self._mid(message_id)
        return [self._original_content.get(mid, "")] + self.edits(mid)

    def read_attachment(self, attachment: Any) -> bytes:
        """Bytes of an attachment (dict, id or url) held by the fake."""
        if isinstance(attachment, dict):
            attachment = attachment["id"]
        if isinstance(attachment, str) and "/" in attachment:
            attachment = attachment.rstrip("/").split("/")[-2]
        return self._blobs[int(attachment)][1]

    def registered_commands(self, guild: Any = None) -> list:
        """Application commands as last registered (global, or for ``guild``)."""
        gid = None if guild is None else self.guild(guild).id
        return copy.deepcopy(self.commands.get(gid, []))

    async def wait_for_message(
        self,
        channel: Any,
        predicate: Callable[[dict], bool] | None = None,
        timeout: float = 5.0,
        *,
        after: Any = None,
        any_author: bool = False,
    ) -> dict:
        """Wait (bounded) for a message by the bot (any author with ``any_author``) in ``channel``
        newer than ``after`` (message dict or id) whose current state satisfies ``predicate``.
        Re-checked on every change, so it also fires when an edit makes a message match."""
        cid = self._cid(channel)
        after_id = self._mid(after) if after is not None else 0
        bot = str(self.bot_user.id)

        def find() -> dict | None:
            for mid in self._channel_log.get(cid, []):
                if mid <= after_id or mid in self._deleted:
                    continue
                msg = self._messages[mid]
                if not any_author and msg["author"]["id"] != bot:
                    continue
                if predicate is None or predicate(copy.deepcopy(msg)):
                    return copy.deepcopy(msg)
            return None

        try:
            return await self.wait_for(find, timeout, what=f"a message in channel {cid}")
        except TimeoutError:
            seen = [(m["author"]["username"], m["content"][:60]) for m in self.messages(cid)[-5:]]
            raise TimeoutError(
                f"no matching message in channel {cid} after {timeout}s; last messages: {seen}; "
                f"unhandled requests: {self.unhandled[-3:]}"
            ) from None

    async def wait_for_typing(self, channel: Any, timeout: float = 5.0, *, after: float = 0.0) -> dict:
        """Wait for the bot to trigger typing in ``channel`` (at or after the ``after`` timestamp)."""
        cid = self._cid(channel)
        return await self.wait_for(
            lambda: next((t for t in self.typing_events if t["channel_id"] == cid and t["timestamp"] >= after), None),
            timeout,
            what=f"typing in channel {cid}",
        )

    # ---------------------------------------------------------------- rate limits

    def rate_limit_once(
        self, method: str, path: str, *, retry_after: float = 0.05, is_global: bool = False, count: int = 1
    ) -> None:
        """The next ``count`` requests whose method matches and whose API path (after
        ``/api/v10``, e.g. ``/channels/123/messages``) fully matches the regex ``path`` get a 429
        with ``retry_after`` seconds; hits are recorded in ``rate_limit_hits``."""
        self._rate_limits.append([method.upper(), re.compile(path), retry_after, count, is_global])

    def _check_rate_limit(self, method: str, path: str) -> web.Response | None:
        for rule in self._rate_limits:
            m, rx, retry_after, remaining, is_global = rule
            if remaining > 0 and m in (method, "*") and rx.fullmatch(path):
                rule[3] -= 1
                self.rate_limit_hits.append({"method": method, "path": path, "retry_after": retry_after})
                headers = {
                    "Via": "1.1 google",
                    "X-RateLimit-Limit": "5",
                    "X-RateLimit-Remaining": "0",
                    "X-RateLimit-Reset-After": str(retry_after),
                    "X-RateLimit-Scope": "global" if is_global else "user",
                }
                if is_global:
                    headers["X-RateLimit-Global"] = "true"
                body = {"message": "You are being rate limited.", "retry_after": retry_after, "global": is_global}
                return self._json(body, 429, headers)
        return None

    # ---------------------------------------------------------------- REST plumbing

    @staticmethod
    def _json(obj: Any, status: int = 200, headers: dict | None = None) -> web.Response:
        h = {"Content-Type": "application/json"}  # exactly this: discord.py compares the header verbatim
        h.update(headers or {})
        return web.Response(body=json.dumps(obj).encode(), status=status, headers=h)

    def _error(self, status: int, code: int, message: str, errors: dict | None = None) -> web.Response:
        body: dict = {"message": message, "code": code}
        if errors:
            body["errors"] = errors
        return self._json(body, status)

    @staticmethod
    def _no_content() -> web.Response:
        return web.Response(status=204)

    def _build_routes(self) -> list:
        C = r"(?P<channel_id>\d+)"
        M = r"(?P<message_id>\d+)"
        G = r"(?P<guild_id>\d+)"
        A = r"(?P<app_id>\d+)"
        CMDS = rf"/applications/{A}(?:/guilds/{G})?/commands"
        table = [
            ("GET", r"/gateway", self._r_gateway),
            ("GET", r"/gateway/bot", self._r_gateway_bot),
            ("GET", r"/users/@me", self._r_me),
            ("PATCH", r"/users/@me", self._r_me),
            ("POST", r"/users/@me/channels", self._r_create_dm),
            ("GET", r"/users/(?P<user_id>\d+)", self._r_user),
            ("GET", r"/oauth2/applications/@me", self._r_app),
            ("GET", r"/applications/@me", self._r_app),
            ("PATCH", r"/applications/@me", self._r_app),
            ("GET", rf"/channels/{C}", self._r_channel),
            ("GET", rf"/channels/{C}/messages", self._r_history),
            ("POST", rf"/channels/{C}/messages", self._r_create_message),
            ("GET", rf"/channels/{C}/messages/{M}", self._r_get_message),
            ("PATCH", rf"/channels/{C}/messages/{M}", self._r_edit_message),
            ("DELETE", rf"/channels/{C}/messages/{M}", self._r_delete_message),
            ("POST", rf"/channels/{C}/typing", self._r_typing),
            ("PUT", rf"/channels/{C}/messages/{M}/reactions/(?P<emoji>[^/]+)/@me", self._r_reaction),
            ("DELETE", rf"/channels/{C}/messages/{M}/reactions/(?P<emoji>[^/]+)/@me", self._r_reaction),
            ("GET", rf"/guilds/{G}", self._r_guild),
            ("GET", rf"/guilds/{G}/channels", self._r_guild_channels),
            ("GET", rf"/guilds/{G}/roles", self._r_guild_roles),
            ("GET", rf"/guilds/{G}/members", self._r_guild_members),
            ("GET", rf"/guilds/{G}/members/(?P<user_id>\d+)", self._r_guild_member),
            ("GET", CMDS, self._r_commands),
            ("PUT", CMDS, self._r_commands),
            ("POST", CMDS, self._r_commands),
            ("GET", rf"/applications/{A}/guilds/{G}/commands/permissions", self._r_command_permissions),
            ("GET", CMDS + r"/(?P<command_id>\d+)", self._r_command),
            ("PATCH", CMDS + r"/(?P<command_id>\d+)", self._r_command),
            ("DELETE", CMDS + r"/(?P<command_id>\d+)", self._r_command),
            ("POST", r"/interactions/(?P<interaction_id>\d+)/(?P<token>[^/]+)/callback", self._r_callback),
            ("POST", r"/webhooks/(?P<app_id>\d+)/(?P<token>[^/]+)", self._r_followup),
            (
                "GET",
                r"/webhooks/(?P<app_id>\d+)/(?P<token>[^/]+)/messages/(?P<message_id>\d+|@original)",
                self._r_webhook_message,
            ),
            (
                "PATCH",
                r"/webhooks/(?P<app_id>\d+)/(?P<token>[^/]+)/messages/(?P<message_id>\d+|@original)",
                self._r_webhook_message,
            ),
            (
                "DELETE",
                r"/webhooks/(?P<app_id>\d+)/(?P<token>[^/]+)/messages/(?P<message_id>\d+|@original)",
                self._r_webhook_message,
            ),
        ]
        return [(method, re.compile(rx), handler) for method, rx, handler in table]

    async def _read_body(self, request: web.Request) -> tuple:
        """(json payload or None, [(field name, filename, bytes, content type)])"""
        files: list = []
        payload: Any = None
        if request.content_type.startswith("multipart/"):
            reader = await request.multipart()
            async for part in reader:
                if part.name == "payload_json":
                    payload = json.loads(await part.text())
                elif part.filename is not None:
                    data = await part.read(decode=False)
                    files.append((part.name, part.filename, bytes(data), part.headers.get("Content-Type")))
                else:
                    text = await part.text()
                    if payload is None:
                        payload = {}
                    if isinstance(payload, dict):
                        payload[part.name] = text
        elif request.can_read_body:
            raw = await request.read()
            if raw:
                payload = json.loads(raw)
        return payload, files

    async def _rest_handler(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        if path.startswith("/attachments/"):
            return self._r_attachment(path)
        api = re.match(r"^/api/v\d+(/.*)$", path)
        if not api:
            return self._error(404, 0, "404: Not Found")
        sub = api.group(1).rstrip("/") or "/"
        method = request.method
        try:
            body, files = await self._read_body(request)
        except ValueError:
            return self._error(400, 50109, "The request body contains invalid JSON.")
        record = {
            "method": method,
            "path": sub,
            "query": dict(request.query),
            "json": body,
            "files": [(f[1], len(f[2])) for f in files],
        }
        self.requests.append(record)
        if self.token is not None and request.headers.get("Authorization") != f"Bot {self.token}":
            if not sub.startswith(("/interactions/", "/webhooks/")):
                return self._error(401, 0, "401: Unauthorized")
        limited = self._check_rate_limit(method, sub)
        if limited is not None:
            return limited
        for m, rx, handler in self._routes:
            if m != method:
                continue
            match = rx.fullmatch(sub)
            if match:
                try:
                    return await handler(request, body=body, files=files, **match.groupdict())
                except _HTTPError as exc:
                    return exc.response
                except Exception:
                    log.exception("fake discord: %s %s failed", method, sub)
                    return self._error(500, 0, "fake discord internal error")
        self.unhandled.append(record)
        log.warning("fake discord: unhandled %s %s", method, sub)
        return self._error(404, 0, f"404: Not Found (fake discord has no route for {method} {sub})")

    def _r_attachment(self, path: str) -> web.Response:
        parts = path.split("/")
        try:
            filename, data, ctype = self._blobs[int(parts[3])]
        except (IndexError, ValueError, KeyError):
            return web.Response(status=404, text="not found")
        return web.Response(body=data, headers={"Content-Type": ctype})

    # ---------------------------------------------------------------- REST: identity

    async def _r_gateway(self, request: web.Request, **_: Any) -> web.Response:
        return self._json({"url": self.gateway_url})

    async def _r_gateway_bot(self, request: web.Request, **_: Any) -> web.Response:
        return self._json(
            {
                "url": self.gateway_url,
                "shards": 1,
                "session_start_limit": {"total": 1000, "remaining": 999, "reset_after": 0, "max_concurrency": 1},
            }
        )

    async def _r_me(self, request: web.Request, body: Any = None, **_: Any) -> web.Response:
        if request.method == "PATCH" and isinstance(body, dict) and body.get("username"):
            self.bot_user.name = body["username"]
        return self._json(
            {
                **self.bot_user.payload(),
                "verified": True,
                "mfa_enabled": False,
                "email": None,
                "locale": "en-US",
                "premium_type": 0,
            }
        )

    async def _r_user(self, request: web.Request, user_id: str, **_: Any) -> web.Response:
        u = self.users.get(int(user_id))
        if u is None:
            return self._error(404, 10013, "Unknown User")
        return self._json(u.payload())

    async def _r_app(self, request: web.Request, **_: Any) -> web.Response:
        return self._json(self._app_info_payload())

    async def _r_create_dm(self, request: web.Request, body: Any = None, **_: Any) -> web.Response:
        uid = int((body or {}).get("recipient_id", 0))
        if uid not in self.users or uid == self.bot_user.id:
            return self._error(400, 50033, "Invalid Recipient(s)")
        return self._json(self._channel_payload(self.dm_channel(uid)))

    # ---------------------------------------------------------------- REST: channels & messages

    def _channel_or_404(self, channel_id: Any) -> FakeChannel:
        ch = self.channels.get(int(channel_id))
        if ch is None:
            raise _HTTPError(self._error(404, 10003, "Unknown Channel"))
        return ch

    def _message_or_404(self, channel_id: Any, message_id: Any) -> dict:
        msg = self._messages.get(int(message_id))
        if msg is None or int(message_id) in self._deleted or int(msg["channel_id"]) != int(channel_id):
            raise _HTTPError(self._error(404, 10008, "Unknown Message"))
        return msg

    def _require(self, ch: FakeChannel, *bits: int) -> None:
        if not self.enforce_permissions or ch.is_dm:
            return
        perms = self.permissions(ch.guild_id, self.bot_user.id, ch)
        for bit in bits:
            if not perms & bit:
                raise _HTTPError(self._error(403, 50013, "Missing Permissions"))

    async def _r_channel(self, request: web.Request, channel_id: str, **_: Any) -> web.Response:
        return self._json(self._channel_payload(self._channel_or_404(channel_id)))

    def _visible(self, msg: dict) -> bool:
        return int(msg["id"]) not in self._deleted and not msg.get("flags", 0) & FLAG_EPHEMERAL

    async def _r_history(self, request: web.Request, channel_id: str, **_: Any) -> web.Response:
        ch = self._channel_or_404(channel_id)
        self._require(ch, P_VIEW_CHANNEL, P_READ_MESSAGE_HISTORY)
        q = request.query
        limit = max(1, min(100, int(q.get("limit", 50))))
        msgs = [self._messages[m] for m in self._channel_log.get(ch.id, []) if self._visible(self._messages[m])]
        if "around" in q:
            around = int(q["around"])
            older = [m for m in msgs if int(m["id"]) <= around][-((limit + 1) // 2) :]
            newer = [m for m in msgs if int(m["id"]) > around][: limit // 2]
            chosen = older + newer
        elif "after" in q:
            chosen = [m for m in msgs if int(m["id"]) > int(q["after"])][:limit]
        else:
            if "before" in q:
                msgs = [m for m in msgs if int(m["id"]) < int(q["before"])]
            chosen = msgs[-limit:]
        chosen = sorted(chosen, key=lambda m: int(m["id"]), reverse=True)  # Discord: newest first
        return self._json([self._rest_message(m) for m in chosen])

    def _rest_message(self, msg: dict) -> dict:
        data = self._gateway_message(msg)  # guild_id, member, mentions with members
        return data

    async def _r_get_message(self, request: web.Request, channel_id: str, message_id: str, **_: Any) -> web.Response:
        ch = self._channel_or_404(channel_id)
        self._require(ch, P_VIEW_CHANNEL, P_READ_MESSAGE_HISTORY)
        return self._json(self._rest_message(self._message_or_404(channel_id, message_id)))

    def _validate_content(self, body: dict, files: list, *, creating: bool) -> None:
        content = body.get("content")
        if content is not None and len(str(content)) > MAX_CONTENT:
            raise _HTTPError(
                self._error(
                    400,
                    50035,
                    "Invalid Form Body",
                    {
                        "content": {
                            "_errors": [
                                {
                                    "code": "BASE_TYPE_MAX_LENGTH",
                                    "message": f"Must be {MAX_CONTENT} or fewer in length.",
                                }
                            ]
                        }
                    },
                )
            )
        if len(body.get("embeds") or []) > 10:
            raise _HTTPError(
                self._error(
                    400,
                    50035,
                    "Invalid Form Body",
                    {
                        "embeds": {
                            "_errors": [{"code": "BASE_TYPE_MAX_LENGTH", "message": "Must be 10 or fewer in length."}]
                        }
                    },
                )
            )
        if creating and not (
            content
            or body.get("embeds")
            or files
            or body.get("sticker_ids")
            or body.get("components")
            or body.get("poll")
            or body.get("attachments")
        ):
            raise _HTTPError(self._error(400, 50006, "Cannot send an empty message"))

    def _attachments_from(self, channel_id: int, spec: list | None, files: list, existing: Sequence[dict] = ()) -> list:
        """Resolve an ``attachments`` list (new files by index ``files[n]``, existing by id)."""
        by_field = {f[0]: f for f in files}
        old = {str(a["id"]): a for a in existing}
        out = []
        if spec is None:
            spec = [{"id": i} for i in range(len(files))] if files else list(existing)
        used = set()
        for entry in spec:
            key = f"files[{entry.get('id')}]"
            if key in by_field:
                _, filename, data, ctype = by_field[key]
                used.add(key)
                out.append(
                    self._new_attachment(
                        channel_id, entry.get("filename") or filename, data, ctype, entry.get("description")
                    )
                )
            elif str(entry.get("id")) in old:
                out.append(old[str(entry["id"])])
        for key, (_, filename, data, ctype) in by_field.items():  # files not named in the spec
            if key not in used:
                out.append(self._new_attachment(channel_id, filename, data, ctype))
        return out

    async def _r_create_message(
        self, request: web.Request, channel_id: str, body: Any = None, files: list = (), **_: Any
    ) -> web.Response:
        ch = self._channel_or_404(channel_id)
        body = body or {}
        self._require(ch, P_VIEW_CHANNEL, P_SEND_MESSAGES)
        if files:
            self._require(ch, P_ATTACH_FILES)
        self._validate_content(body, files, creating=True)
        reference = body.get("message_reference")
        extra_mentions: list = []
        if reference and reference.get("message_id"):
            ref = self._messages.get(int(reference["message_id"]))
            if ref is None or int(reference["message_id"]) in self._deleted:
                if reference.get("fail_if_not_exists", True):
                    raise _HTTPError(
                        self._error(
                            400,
                            50035,
                            "Invalid Form Body",
                            {
                                "message_reference": {
                                    "_errors": [
                                        {"code": "MESSAGE_REFERENCE_UNKNOWN_MESSAGE", "message": "Unknown message"}
                                    ]
                                }
                            },
                        )
                    )
                reference = None
            else:
                allowed = body.get("allowed_mentions") or {}
                if allowed.get("replied_user", True):
                    extra_mentions.append(int(ref["author"]["id"]))
        else:
            reference = None
        msg = self._build_message(
            ch,
            self.bot_user.id,
            body.get("content") or "",
            attachments=self._attachments_from(ch.id, body.get("attachments"), files),
            embeds=body.get("embeds") or [],
            reference=reference,
            flags=int(body.get("flags") or 0),
            tts=bool(body.get("tts")),
            components=body.get("components"),
            nonce=body.get("nonce"),
            extra_mentions=extra_mentions,
            allowed_mentions=body.get("allowed_mentions"),
            extra={"poll": body["poll"]} if body.get("poll") else None,
        )
        self._store_message(msg)
        if self.echo_bot_messages:
            await self._dispatch_message("MESSAGE_CREATE", msg)
        return self._json(self._rest_message(msg))

    async def _r_edit_message(
        self, request: web.Request, channel_id: str, message_id: str, body: Any = None, files: list = (), **_: Any
    ) -> web.Response:
        self._channel_or_404(channel_id)
        msg = self._message_or_404(channel_id, message_id)
        body = body or {}
        if int(msg["author"]["id"]) != self.bot_user.id and set(body) - {"flags"}:
            return self._error(403, 50005, "Cannot edit a message authored by another user")
        self._validate_content(body, files, creating=False)
        new_atts = None
        if "attachments" in body or files:
            new_atts = self._attachments_from(int(channel_id), body.get("attachments"), files, msg["attachments"])
        self._apply_edit(msg, body, new_atts)
        await self._dispatch_message("MESSAGE_UPDATE", msg)
        return self._json(self._rest_message(msg))

    async def _r_delete_message(self, request: web.Request, channel_id: str, message_id: str, **_: Any) -> web.Response:
        ch = self._channel_or_404(channel_id)
        msg = self._message_or_404(channel_id, message_id)
        if int(msg["author"]["id"]) != self.bot_user.id:
            self._require(ch, P_MANAGE_MESSAGES)
        await self._delete(msg)
        return self._no_content()

    async def _r_typing(self, request: web.Request, channel_id: str, **_: Any) -> web.Response:
        ch = self._channel_or_404(channel_id)
        self.typing_events.append({"channel_id": ch.id, "user_id": self.bot_user.id, "timestamp": time.time()})
        self._changed()
        return self._no_content()

    async def _r_reaction(
        self, request: web.Request, channel_id: str, message_id: str, emoji: str, **_: Any
    ) -> web.Response:
        ch = self._channel_or_404(channel_id)
        msg = self._message_or_404(channel_id, message_id)
        add = request.method == "PUT"
        if add:
            self._require(ch, P_ADD_REACTIONS, P_READ_MESSAGE_HISTORY)
        name = emoji.split(":")[0] if ":" in emoji else emoji
        emoji_id = emoji.split(":")[1] if ":" in emoji else None
        self.reactions.append(
            {"channel_id": ch.id, "message_id": int(message_id), "emoji": emoji, "action": "add" if add else "remove"}
        )
        reactions = msg.setdefault("reactions", [])
        current = next((r for r in reactions if r["emoji"]["name"] == name), None)
        if add and current is None:
            reactions.append(
                {
                    "count": 1,
                    "me": True,
                    "me_burst": False,
                    "burst_colors": [],
                    "count_details": {"burst": 0, "normal": 1},
                    "emoji": {"id": emoji_id, "name": name},
                }
            )
        elif not add and current is not None:
            reactions.remove(current)
        self._changed()
        return self._no_content()

    # ---------------------------------------------------------------- REST: guilds

    def _guild_or_404(self, guild_id: Any) -> FakeGuild:
        g = self.guilds.get(int(guild_id))
        if g is None:
            raise _HTTPError(self._error(404, 10004, "Unknown Guild"))
        return g

    async def _r_guild(self, request: web.Request, guild_id: str, **_: Any) -> web.Response:
        g = self._guild_or_404(guild_id)
        data = self._guild_payload(g)
        if request.query.get("with_counts") in ("true", "1", "True"):
            data.update(approximate_member_count=len(g.members), approximate_presence_count=0)
        return self._json(data)

    async def _r_guild_channels(self, request: web.Request, guild_id: str, **_: Any) -> web.Response:
        g = self._guild_or_404(guild_id)
        return self._json([self._channel_payload(c) for c in g.channels.values()])

    async def _r_guild_roles(self, request: web.Request, guild_id: str, **_: Any) -> web.Response:
        g = self._guild_or_404(guild_id)
        return self._json([r.payload() for r in g.roles.values()])

    async def _r_guild_members(self, request: web.Request, guild_id: str, **_: Any) -> web.Response:
        g = self._guild_or_404(guild_id)
        limit = int(request.query.get("limit", 1))
        after = int(request.query.get("after", 0))
        members = sorted((m for m in g.members.values() if m.user_id > after), key=lambda m: m.user_id)[:limit]
        return self._json([self._member_payload(g, m) for m in members])

    async def _r_guild_member(self, request: web.Request, guild_id: str, user_id: str, **_: Any) -> web.Response:
        g = self._guild_or_404(guild_id)
        m = g.members.get(int(user_id))
        if m is None:
            return self._error(404, 10007, "Unknown Member")
        return self._json(self._member_payload(g, m))

    # ---------------------------------------------------------------- REST: application commands

    def _normalise_command(self, cmd: dict, guild_id: int | None, old: dict | None) -> dict:
        out = copy.deepcopy(cmd)
        out["id"] = old["id"] if old else str(self.snowflake())
        out["application_id"] = str(self.application_id)
        out["version"] = str(self.snowflake())
        out.setdefault("type", 1)
        out.setdefault("description", "")
        out.setdefault("options", [])
        perms = out.get("default_member_permissions")
        out["default_member_permissions"] = None if perms is None else str(perms)  # Discord answers a string
        out.setdefault("nsfw", False)
        if out.get("contexts") is None:
            out["contexts"] = [0] if guild_id else [0, 1, 2]
        if out.get("integration_types") is None:
            out["integration_types"] = [0]
        out.setdefault("dm_permission", 1 in out["contexts"])
        if guild_id is not None:
            out["guild_id"] = str(guild_id)
        return out

    def _check_app(self, app_id: str) -> None:
        if int(app_id) != self.application_id:
            raise _HTTPError(self._error(404, 10002, "Unknown Application"))

    async def _r_commands(
        self, request: web.Request, app_id: str, guild_id: str | None = None, body: Any = None, **_: Any
    ) -> web.Response:
        self._check_app(app_id)
        gid = int(guild_id) if guild_id else None
        if gid is not None:
            self._guild_or_404(gid)
        current = self.commands.get(gid, [])
        if request.method == "GET":
            return self._json(current)
        self.command_syncs.append({"guild_id": gid, "method": request.method, "body": copy.deepcopy(body)})
        by_key = {(c["name"], c.get("type", 1)): c for c in current}
        if request.method == "PUT":
            new = [self._normalise_command(c, gid, by_key.get((c["name"], c.get("type", 1)))) for c in body or []]
            self.commands[gid] = new
            self._changed()
            return self._json(new)
        cmd = self._normalise_command(body, gid, by_key.get((body["name"], body.get("type", 1))))
        self.commands[gid] = [c for c in current if c["id"] != cmd["id"]] + [cmd]
        self._changed()
        return self._json(cmd, 201)

    async def _r_command(
        self,
        request: web.Request,
        app_id: str,
        command_id: str,
        guild_id: str | None = None,
        body: Any = None,
        **_: Any,
    ) -> web.Response:
        self._check_app(app_id)
        gid = int(guild_id) if guild_id else None
        current = self.commands.get(gid, [])
        cmd = next((c for c in current if c["id"] == command_id), None)
        if cmd is None:
            return self._error(404, 10063, "Unknown application command")
        if request.method == "GET":
            return self._json(cmd)
        self.command_syncs.append(
            {"guild_id": gid, "method": request.method, "body": copy.deepcopy(body), "command_id": command_id}
        )
        if request.method == "DELETE":
            self.commands[gid] = [c for c in current if c["id"] != command_id]
            self._changed()
            return self._no_content()
        cmd.update(copy.deepcopy(body or {}))
        self._changed()
        return self._json(cmd)

    async def _r_command_permissions(self, request: web.Request, app_id: str, guild_id: str, **_: Any) -> web.Response:
        return self._json([])

    # ---------------------------------------------------------------- interactions

    def _find_command(self, name: str, guild_id: int | None, cmd_type: int = 1) -> dict | None:
        for scope in ([guild_id] if guild_id is not None else []) + [None]:
            for c in self.commands.get(scope, []):
                if c["name"] == name and c.get("type", 1) == cmd_type:
                    return c
        return None

    def _resolve_option(self, opt_type: int, value: Any, ch: FakeChannel, resolved: dict) -> Any:
        g = self.guilds.get(ch.guild_id) if ch.guild_id else None
        if opt_type == OPT_STRING:
            return str(value)
        if opt_type == OPT_INT:
            return int(value)
        if opt_type == OPT_BOOL:
            return bool(value)
        if opt_type == OPT_NUMBER:
            return float(value)
        if opt_type == OPT_ATTACHMENT:
            filename, data = value[0], value[1]
            att = self._new_attachment(ch.id, filename, data, value[2] if len(value) > 2 else None)
            resolved.setdefault("attachments", {})[att["id"]] = att
            return att["id"]
        ident = (
            value.id
            if isinstance(value, (FakeUser, FakeRole, FakeChannel))
            else (value.user_id if isinstance(value, FakeMember) else int(value))
        )
        if opt_type in (OPT_USER, OPT_MENTIONABLE) and ident in self.users:
            resolved.setdefault("users", {})[str(ident)] = self.users[ident].payload()
            if g is not None and ident in g.members:
                resolved.setdefault("members", {})[str(ident)] = self._member_payload(
                    g, g.members[ident], with_user=False, channel=ch, permissions=True
                )
            return str(ident)
        if opt_type in (OPT_ROLE, OPT_MENTIONABLE) and g is not None and ident in g.roles:
            resolved.setdefault("roles", {})[str(ident)] = g.roles[ident].payload()
            return str(ident)
        if opt_type == OPT_CHANNEL and ident in self.channels:
            c = self.channels[ident]
            data = self._channel_payload(c)
            data["permissions"] = str(self.permissions(c.guild_id, self.bot_user.id, c)) if c.guild_id else str(P_ALL)
            resolved.setdefault("channels", {})[str(ident)] = data
            return str(ident)
        raise ValueError(f"option value {value!r} does not resolve for option type {opt_type}")

    def _build_options(
        self, schema: list, path: list, values: dict, ch: FakeChannel, resolved: dict, where: str
    ) -> list:
        if path:
            sub = next((o for o in schema if o["name"] == path[0] and o["type"] in (OPT_SUB, OPT_GROUP)), None)
            if sub is None:
                names = [o["name"] for o in schema if o["type"] in (OPT_SUB, OPT_GROUP)]
                raise ValueError(f"{where}: no subcommand {path[0]!r} (has {names})")
            return [
                {
                    "name": sub["name"],
                    "type": sub["type"],
                    "options": self._build_options(
                        sub.get("options", []), path[1:], values, ch, resolved, f"{where} {sub['name']}"
                    ),
                }
            ]
        if any(o["type"] in (OPT_SUB, OPT_GROUP) for o in schema):
            raise ValueError(f"{where}: needs a subcommand= (one of {[o['name'] for o in schema]})")
        by_name = {o["name"]: o for o in schema}
        out = []
        for name, value in values.items():
            if name not in by_name:
                raise ValueError(f"{where}: unknown option {name!r} (has {list(by_name)})")
            o = by_name[name]
            out.append({"name": name, "type": o["type"], "value": self._resolve_option(o["type"], value, ch, resolved)})
        missing = [o["name"] for o in schema if o.get("required") and o["name"] not in values]
        if missing:
            raise ValueError(f"{where}: missing required option(s) {missing}")
        return out

    def _interaction_base(self, itype: int, ch: FakeChannel, user_id: int, data: dict, locale: str) -> dict:
        iid = self.snowflake()
        token = f"itok-{uuid.uuid4().hex}"
        payload: dict = {
            "id": str(iid),
            "application_id": str(self.application_id),
            "type": itype,
            "data": data,
            "token": token,
            "version": 1,
            "channel_id": str(ch.id),
            "channel": self._channel_payload(ch),
            "locale": locale,
            "entitlements": [],
            "entitlement_sku_ids": [],
            "attachment_size_limit": 10 * 1024 * 1024,
        }
        if ch.guild_id is not None:
            g = self.guilds[ch.guild_id]
            payload.update(
                {
                    "guild_id": str(g.id),
                    "guild": {"id": str(g.id), "locale": "en-US", "features": []},
                    "guild_locale": "en-US",
                    "member": self._member_payload(g, g.members[user_id], channel=ch, permissions=True),
                    "app_permissions": str(self.permissions(g, self.bot_user.id, ch)),
                    "authorizing_integration_owners": {"0": str(g.id)},
                    "context": 0,
                }
            )
            payload["channel"]["permissions"] = payload["member"]["permissions"]
        else:
            payload.update(
                {
                    "user": self.users[user_id].payload(),
                    "app_permissions": str(P_ALL & ~P_ADMINISTRATOR),
                    "authorizing_integration_owners": {"1": str(user_id)},
                    "context": 1,
                }
            )
        return payload

    async def invoke_slash(
        self,
        channel: Any,
        user_id: int,
        name: str,
        options: dict | None = None,
        *,
        subcommand: str | None = None,
        locale: str = "en-US",
        check_permissions: bool = True,
    ) -> FakeInteraction:
        """A user runs ``/name`` in ``channel``; INTERACTION_CREATE goes to the bot.

        The command must have been registered by the bot (tree.sync); option types come from
        its registration. ``subcommand``: "sub" or "group sub". Values: str/int/bool/float; user,
        channel, role, mentionable: an id (or Fake* object), resolved into ``data.resolved``;
        attachment: ``(filename, bytes[, content_type])``. Like Discord, refuses (PermissionError)
        when the user lacks the command's default_member_permissions or the context is not
        allowed (DM vs guild), unless ``check_permissions=False``."""
        ch = self.channel(channel)
        user_id = int(user_id)
        gid = ch.guild_id
        if ch.is_dm:
            if user_id != ch.recipient_id:
                raise ValueError(f"user {user_id} is not the recipient of DM channel {ch.id}")
        elif user_id not in self.guilds[gid].members:
            raise ValueError(f"user {user_id} is not a member of guild {gid}")
        cmd = self._find_command(name, gid)
        if cmd is None:
            known = sorted({c["name"] for cs in self.commands.values() for c in cs})
            raise LookupError(
                f"slash command {name!r} is not registered for this channel (did the bot sync its "
                f"command tree?); registered: {known}"
            )
        if check_permissions:
            if ch.is_dm and 1 not in (cmd.get("contexts") or [0, 1, 2]):
                raise PermissionError(f"/{name} is not available in DMs")
            needed = cmd.get("default_member_permissions")
            if needed is not None and not ch.is_dm:
                perms = self.permissions(gid, user_id, ch)
                if int(needed) & perms != int(needed):
                    raise PermissionError(f"user {user_id} lacks permissions {needed} for /{name}")
        resolved: dict = {}
        opts = self._build_options(
            cmd.get("options", []),
            subcommand.split() if subcommand else [],
            dict(options or {}),
            ch,
            resolved,
            f"/{name}",
        )
        data: dict = {"id": cmd["id"], "name": name, "type": 1, "options": opts}
        if resolved:
            data["resolved"] = resolved
        if cmd.get("guild_id"):
            data["guild_id"] = cmd["guild_id"]
        payload = self._interaction_base(2, ch, user_id, data, locale)
        return await self._dispatch_interaction(payload, name)

    async def click_component(
        self, message: Any, user_id: int, custom_id: str, *, component_type: int = 2, values: list | None = None
    ) -> FakeInteraction:
        """A user clicks a button (component_type 2) or picks ``values`` in a select (3) on a
        message; INTERACTION_CREATE (type 3) goes to the bot."""
        msg = self._messages[self._mid(message)]
        ch = self.channels[int(msg["channel_id"])]
        data: dict = {"custom_id": custom_id, "component_type": component_type}
        if values is not None:
            data["values"] = list(values)
        payload = self._interaction_base(3, ch, int(user_id), data, "en-US")
        payload["message"] = self._rest_message(msg)
        inter = await self._dispatch_interaction(payload, custom_id, deliver=False)
        inter.original_id = int(msg["id"])
        await self._deliver_interaction(payload)
        return inter

    async def _dispatch_interaction(self, payload: dict, name: str, deliver: bool = True) -> FakeInteraction:
        uid = int((payload.get("member") or {}).get("user", payload.get("user", {})).get("id"))
        inter = FakeInteraction(
            fake=self,
            id=int(payload["id"]),
            token=payload["token"],
            type=payload["type"],
            name=name,
            channel_id=int(payload["channel_id"]),
            user_id=uid,
            guild_id=int(payload["guild_id"]) if payload.get("guild_id") else None,
            payload=copy.deepcopy(payload),
        )
        self.interactions[inter.id] = inter
        self._interactions_by_token[inter.token] = inter
        if deliver:
            await self._deliver_interaction(payload)
        return inter

    async def _deliver_interaction(self, payload: dict) -> None:
        if not self._sessions:
            raise RuntimeError("no bot is connected to the fake gateway")
        await self._broadcast(lambda s: s.dispatch("INTERACTION_CREATE", payload))

    def _interaction_message(
        self, inter: FakeInteraction, data: dict, files: list, *, loading: bool = False, followup: bool = False
    ) -> dict:
        ch = self.channels[inter.channel_id]
        flags = int(data.get("flags") or 0) & (FLAG_EPHEMERAL | (1 << 2) | (1 << 12) | (1 << 15))
        if loading:
            flags |= FLAG_LOADING
        user = self.users[inter.user_id].payload()
        extra = {
            "webhook_id": str(self.application_id),
            "application_id": str(self.application_id),
            "interaction_metadata": {
                "id": str(inter.id),
                "type": inter.type,
                "user": user,
                "authorizing_integration_owners": inter.payload.get("authorizing_integration_owners", {}),
            },
        }
        if inter.type == 2:
            extra["interaction"] = {"id": str(inter.id), "type": 2, "name": inter.name, "user": user}
        self._validate_content(data, files, creating=False)
        return self._build_message(
            ch,
            self.bot_user.id,
            data.get("content") or "",
            attachments=self._attachments_from(ch.id, data.get("attachments"), files),
            embeds=data.get("embeds") or [],
            flags=flags,
            tts=bool(data.get("tts")),
            components=data.get("components"),
            msg_type=MT_DEFAULT if followup or inter.type != 2 else MT_CHAT_INPUT,
            allowed_mentions=data.get("allowed_mentions"),
            extra={**extra, **({"poll": data["poll"]} if data.get("poll") else {})},
        )

    def _log_interaction(
        self, inter: FakeInteraction, kind: str, body: Any, message_id: int | None = None, rtype: int | None = None
    ) -> None:
        self.interaction_responses.append(
            {
                "interaction_id": inter.id,
                "name": inter.name,
                "kind": kind,
                "type": rtype,
                "body": copy.deepcopy(body),
                "message_id": message_id,
            }
        )
        self._changed()

    async def _r_callback(
        self, request: web.Request, interaction_id: str, token: str, body: Any = None, files: list = (), **_: Any
    ) -> web.Response:
        inter = self.interactions.get(int(interaction_id))
        if inter is None or inter.token != token:
            return self._error(404, 10062, "Unknown interaction")
        if inter.responses:
            return self._error(400, 40060, "Interaction has already been acknowledged.")
        body = body or {}
        rtype = int(body.get("type", 0))
        data = body.get("data") or {}
        message: dict | None = None
        if rtype in (4, 5):
            message = self._interaction_message(inter, data, files, loading=(rtype == 5))
            self._store_message(message)
            inter.original_id = int(message["id"])
            if rtype == 4:
                await self._dispatch_message("MESSAGE_CREATE", message)
        elif rtype == 7 and inter.original_id:
            message = self._messages[inter.original_id]
            atts = None
            if "attachments" in data or files:
                atts = self._attachments_from(inter.channel_id, data.get("attachments"), files, message["attachments"])
            self._apply_edit(message, data, atts)
            await self._dispatch_message("MESSAGE_UPDATE", message)
        elif rtype not in (1, 6, 8, 9, 10, 12):
            return self._error(
                400,
                50035,
                "Invalid Form Body",
                {
                    "type": {
                        "_errors": [
                            {
                                "code": "BASE_TYPE_CHOICES",
                                "message": f"Value must be one of the response types, got {rtype}",
                            }
                        ]
                    }
                },
            )
        inter.responses.append(copy.deepcopy(body))
        self._log_interaction(inter, "callback", body, int(message["id"]) if message else None, rtype)
        if request.query.get("with_response") not in ("1", "true", "True"):
            return self._no_content()
        result: dict = {
            "interaction": {
                "id": str(inter.id),
                "type": inter.type,
                "response_message_loading": rtype == 5,
                "response_message_ephemeral": bool(message and message.get("flags", 0) & FLAG_EPHEMERAL),
            }
        }
        if message is not None:
            result["interaction"]["response_message_id"] = message["id"]
            result["resource"] = {"type": rtype, "message": self._rest_message(message)}
        else:
            result["resource"] = {"type": rtype}
        return self._json(result)

    def _inter_by_token(self, app_id: str, token: str) -> FakeInteraction:
        inter = self._interactions_by_token.get(token)
        if inter is None or int(app_id) != self.application_id:
            raise _HTTPError(self._error(404, 10015, "Unknown Webhook"))
        return inter

    async def _r_followup(
        self, request: web.Request, app_id: str, token: str, body: Any = None, files: list = (), **_: Any
    ) -> web.Response:
        inter = self._inter_by_token(app_id, token)
        if not inter.responses:
            return self._error(400, 10015, "Unknown Webhook")  # Discord: respond before following up
        body = body or {}
        original = self._messages.get(inter.original_id) if inter.original_id else None
        if original is not None and original.get("flags", 0) & FLAG_LOADING:
            # the first followup after a deferral replaces the "thinking..." message
            atts = (
                self._attachments_from(inter.channel_id, body.get("attachments"), files)
                if ("attachments" in body or files)
                else None
            )
            self._apply_edit(original, {k: v for k, v in body.items() if k != "flags"}, atts)
            self._edits[int(original["id"])].pop()  # completing a deferral is not an "edit"
            original["edited_timestamp"] = None
            self._original_content[int(original["id"])] = original.get("content", "")
            if original.get("flags", 0) & FLAG_EPHEMERAL == 0:
                await self._dispatch_message("MESSAGE_CREATE", original)
            message = original
            inter.followup_ids.append(int(message["id"]))
        else:
            message = self._interaction_message(inter, body, files, followup=True)
            self._store_message(message)
            inter.followup_ids.append(int(message["id"]))
            await self._dispatch_message("MESSAGE_CREATE", message)
        self._log_interaction(inter, "followup", body, int(message["id"]))
        if request.query.get("wait") in ("1", "true", "True"):
            return self._json(self._rest_message(message))
        return self._no_content()

    async def _r_webhook_message(
        self,
        request: web.Request,
        app_id: str,
        token: str,
        message_id: str,
        body: Any = None,
        files: list = (),
        **_: Any,
    ) -> web.Response:
        inter = self._inter_by_token(app_id, token)
        if message_id == "@original":
            if inter.original_id is None:
                return self._error(404, 10008, "Unknown Message")
            mid = inter.original_id
        else:
            mid = int(message_id)
            if mid != inter.original_id and mid not in inter.followup_ids:
                return self._error(404, 10008, "Unknown Message")
        msg = self._messages.get(mid)
        if msg is None or mid in self._deleted:
            return self._error(404, 10008, "Unknown Message")
        if request.method == "GET":
            return self._json(self._rest_message(msg))
        if request.method == "DELETE":
            await self._delete(msg)
            self._log_interaction(inter, "delete", None, mid)
            return self._no_content()
        body = body or {}
        self._validate_content(body, files, creating=False)
        was_loading = bool(msg.get("flags", 0) & FLAG_LOADING)
        atts = None
        if "attachments" in body or files:
            atts = self._attachments_from(inter.channel_id, body.get("attachments"), files, msg["attachments"])
        self._apply_edit(msg, body, atts)
        if was_loading:
            self._edits[mid].pop()  # completing a deferral is the first content, not an edit
            msg["edited_timestamp"] = None
            self._original_content[mid] = msg.get("content", "")
            await self._dispatch_message("MESSAGE_CREATE", msg)
        else:
            await self._dispatch_message("MESSAGE_UPDATE", msg)
        self._log_interaction(inter, "edit_original" if mid == inter.original_id else "edit_followup", body, mid)
        return self._json(self._rest_message(msg))


class _HTTPError(Exception):
    def __init__(self, response: web.Response):
        super().__init__(response.status)
        self.response = response


__all__ = [
    "FakeDiscord",
    "FakeGuild",
    "FakeChannel",
    "FakeRole",
    "FakeMember",
    "FakeUser",
    "FakeInteraction",
    "DEFAULT_EVERYONE_PERMISSIONS",
    "DEFAULT_BOT_PERMISSIONS",
]
