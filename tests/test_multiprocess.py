"""One memory, many real processes (issue 17): the Discord bot (`clara bot` against the in-repo
fake Discord), the memory MCP server over streamable HTTP driven by the real `mcp` client, and
CLI commands, all on one store.

- `clara bot` with CLARA_MCP_HTTP serves the MCP server itself (one process, one store, one loop).
- Three processes on one SQLite data dir, and on PostgreSQL with a data dir each: a paraphrase
  (no shared word stem, so only the dense path finds it) written in one process is recalled in the
  others; a fact forgotten by the CLI is gone from the MCP server and the bot; another user's
  private fact never reaches an agent; "database is locked" never reaches any output.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import sys
import time
from pathlib import Path

import pytest

discord = pytest.importorskip("discord")

from mcp import Client  # noqa: E402

from tests.fake_discord import FakeDiscord  # noqa: E402

pytestmark = pytest.mark.timeout(180)
ROOT = Path(__file__).resolve().parents[1]
OWNER, ALICE, BOB = 2001, 2002, 2003
TOKEN = "tok-coder-0123456789abcdef"
# Paraphrase pairs: the query shares no word stem with the fact (checked below with the store's
# own lexical path: its recall signals carry no lexical rank, and full-text search finds nothing).
FACT = "My grandmother bakes wonderful sourdough bread every Sunday"
PARAPHRASE = "granny homemade loaves at the weekend"
AGENT_FACT = "The cellist Marco performs with a symphony orchestra"
AGENT_PARAPHRASE = "which musician plays string instruments in concerts"
SECRET = "my bank PIN is 4412"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _client(port: int, token: str = TOKEN) -> Client:
    import httpx2
    from mcp.client.streamable_http import streamable_http_client

    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30)
    return Client(streamable_http_client(f"http://127.0.0.1:{port}/mcp", http_client=http))


async def _tool(client: Client, tool: str, **args) -> dict:
    res = await client.call_tool(tool, args)
    assert not res.is_error, res.content[0].text
    return res.structured_content


async def _wait_port(port: int, proc: asyncio.subprocess.Process, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.returncode is None, f"server exited with {proc.returncode}"
        try:
            _, w = await asyncio.open_connection("127.0.0.1", port)
            w.close()
            return
        except OSError:
            await asyncio.sleep(0.1)
    raise TimeoutError(f"nothing listens on {port}")


async def _until(probe, timeout: float = 30, every: float = 0.2):
    """Call `probe()` until it returns something truthy (bounded); returns that value."""
    deadline = time.monotonic() + timeout
    while True:
        got = await probe()
        if got or time.monotonic() > deadline:
            return got
        await asyncio.sleep(every)


def _env(data_dir: Path, url: str | None, **extra: str) -> dict[str, str]:
    env = {
        **os.environ,
        "CLARA_DATA_DIR": str(data_dir),
        "LLM_PROVIDER": "none",
        "MAINTENANCE_DECAY": "off",
        "MAINTENANCE_RERANK": "off",
        "MAINTENANCE_CLEANUP": "off",
        "COLUMNS": "400",
        **extra,
    }
    for k in ("DATABASE_URL", "CLARA_MCP_HTTP", "CLARA_MCP_TOKENS", "CLARA_MCP_GRANTS"):
        env.pop(k, None)
    if url:
        env["DATABASE_URL"] = url
    env.update(extra)
    return env


class Proc:
    """A long-running `clara` subprocess whose stderr is collected (checked at the end)."""

    def __init__(self, proc: asyncio.subprocess.Process):
        self.proc = proc
        self.err = bytearray()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def start(cls, env: dict[str, str], *args: str) -> Proc:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "clara.cli",
            *args,
            env=env,
            cwd=ROOT,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        return cls(proc)

    async def _read(self) -> None:
        while chunk := await self.proc.stderr.read(65536):
            self.err += chunk

    async def stop(self) -> int:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = await asyncio.wait_for(self.proc.wait(), 30)
        except TimeoutError:
            self.proc.kill()
            code = await self.proc.wait()
        await self._reader
        return code


async def _run_cli(env: dict[str, str], *args: str, timeout: float = 90) -> tuple[int, str]:
    """`python -m clara.cli ARGS` as a process: (exit code, stdout and stderr together)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "clara.cli",
        *args,
        env=env,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    return proc.returncode, out.decode()


async def _cli(env: dict[str, str], *args: str) -> str:
    code, text = await _run_cli(env, *args)
    assert code == 0, text
    return text


class Discord:
    """The fake Discord with one server: #general, alice and bob."""

    def __init__(self, fake: FakeDiscord):
        self.fake = fake
        guild = fake.add_guild("Home", owner_id=OWNER)
        self.general = fake.add_channel(guild, "general")
        fake.add_member(guild, ALICE, "alice")
        fake.add_member(guild, BOB, "bob")
        self.scope = f"channel:{self.general.id}"

    def env(self) -> dict[str, str]:
        return {
            "DISCORD_BOT_TOKEN": "proc-token",
            "DISCORD_API_BASE": self.fake.api_url,
            "DISCORD_GATEWAY_URL": self.fake.gateway_url,
            "DISCORD_MONITOR_PORT": str(_free_port()),
        }

    async def ask(self, user: int, text: str, timeout: float = 30) -> str:
        asked = await self.fake.post_message(self.general, user, text, mentions_bot=True)
        reply = await self.fake.wait_for_message(self.general, after=asked, timeout=timeout)
        return reply["content"]

    async def remember_privately(self, user: int, text: str) -> None:
        """`!remember` (a private memory); waits for the confirmation (in the channel or by DM)."""
        asked = await self.fake.post_message(self.general, user, f"!remember {text}")
        dm = self.fake.dm_channel(user)

        async def answered():
            return [m for c in (self.general, dm) for m in self.fake.sent(c) if int(m["id"]) > int(asked["id"])]

        assert await _until(answered, timeout=30), "no answer to !remember"


async def _no_secret(agent: Client) -> None:
    """The agent, over everything it may read, never sees bob's private fact."""
    for tool, args in (
        ("memory_recall", {"query": "bank PIN number", "k": 50}),
        ("memory_search", {"query": "PIN"}),
        ("memory_search", {}),
    ):
        got = await _tool(agent, tool, **args)
        assert "4412" not in str(got), f"{tool} leaked a private fact: {got}"
    res = await agent.call_tool("memory_recall", {"query": "bank PIN", "scopes": [f"user:{BOB}"]})
    assert res.is_error or "4412" not in str(res.structured_content)


async def _dense_hit(agent: Client, query: str, scope: str, needle: str) -> dict | None:
    facts = (await _tool(agent, "memory_recall", query=query, scopes=[scope], k=10))["facts"]
    return next((f for f in facts if needle in f["content"]), None)


async def _search(agent: Client, words: str, scope: str) -> list[dict]:
    facts = (await _tool(agent, "memory_search", query=words, scopes=[scope]))["facts"]
    return [f for f in facts if words in f["content"]]


def _words(text: str) -> set[str]:
    return {w[:5] for w in re.findall(r"[a-z]+", text.lower()) if len(w) > 2}


def test_paraphrase_pairs_share_no_stem():
    """The lexical path cannot connect them: no word (5-letter prefix) in common."""
    assert not _words(FACT) & _words(PARAPHRASE)
    assert not _words(AGENT_FACT) & _words(AGENT_PARAPHRASE)


# ---------------------------------------------------------------------- one process serves everything
async def test_bot_serves_the_memory_mcp_server_over_http(tmp_path):
    """`clara bot` with CLARA_MCP_HTTP: what alice says in Discord is found by an agent with a
    grant on the channel, what the agent stores reaches alice's chat by meaning, bob's private
    memory never reaches the agent — one process, one store."""
    port = _free_port()
    async with FakeDiscord(token="proc-token", app_owner_id=OWNER) as fake:
        d = Discord(fake)
        env = _env(
            tmp_path,
            None,
            **d.env(),
            CLARA_MCP_HTTP=f"127.0.0.1:{port}",
            CLARA_MCP_TOKENS=f"{TOKEN}=coder",
            CLARA_MCP_GRANTS=f"coder={d.scope}",
        )
        bot = await Proc.start(env, "bot")
        try:
            await _wait_port(port, bot.proc)
            await fake.wait_until_connected(timeout=60)
            await d.remember_privately(BOB, SECRET)
            assert "stored" in await d.ask(ALICE, "The staging database moves to Frankfurt next week")
            async with _client(port) as agent:
                found = await _until(lambda: _search(agent, "Frankfurt", d.scope))
                assert found, "the agent never found alice's words"
                stored = await _tool(agent, "memory_store_fact", content=AGENT_FACT, scope=d.scope)
                assert await _until(lambda: _dense_hit(agent, AGENT_PARAPHRASE, d.scope, "cellist"))
                reply = await d.ask(ALICE, AGENT_PARAPHRASE)
                assert "cellist Marco" in reply, reply
                assert stored["fact_id"]
                await _no_secret(agent)
                # SIGTERM with an agent's session still open: the bot and its MCP server stop cleanly.
                started = time.monotonic()
                code = await bot.stop()
                assert time.monotonic() - started < 15
        finally:
            code = await bot.stop()
        assert code == 0, bot.err.decode()[-2000:]
        assert "database is locked" not in bot.err.decode()
        assert "Traceback" not in bot.err.decode(), bot.err.decode()[-2000:]


# ---------------------------------------------------------------------- three processes, one store
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
async def test_bot_mcp_server_and_cli_share_one_store(backend, tmp_path, request):
    """The bot (fake Discord), `clara mcp serve --http` (real mcp client) and CLI commands as three
    processes: on SQLite one data dir, on PostgreSQL one database with a data dir each."""
    url = request.getfixturevalue("pg_database") if backend == "postgresql" else None
    dirs = [tmp_path / n for n in ("bot", "mcp", "cli")] if url else [tmp_path] * 3
    for p in dirs:
        p.mkdir(exist_ok=True)
    port = _free_port()
    async with FakeDiscord(token="proc-token", app_owner_id=OWNER) as fake:
        d = Discord(fake)
        bot_env = _env(dirs[0], url, **d.env())
        mcp_env = _env(dirs[1], url, CLARA_MCP_TOKENS=f"{TOKEN}=coder", CLARA_MCP_GRANTS=f"coder={d.scope}")
        cli_env = _env(dirs[2], url)
        bot = await Proc.start(bot_env, "bot")
        server = await Proc.start(mcp_env, "mcp", "serve", "--http", "--port", str(port))
        outputs: list[str] = []
        try:
            await _wait_port(port, server.proc)
            await fake.wait_until_connected(timeout=60)
            # Bob's private memory, then alice's words in #general, through the bot.
            await d.remember_privately(BOB, SECRET)
            assert "stored" in await d.ask(ALICE, FACT)
            async with _client(port) as agent:
                # The agent (another process) finds alice's words by meaning only.
                hit = await _until(lambda: _dense_hit(agent, PARAPHRASE, d.scope, "sourdough"), timeout=30)
                assert hit, "the MCP server never recalled the paraphrase"
                lexical = await _tool(agent, "memory_search", query=PARAPHRASE, scopes=[d.scope])
                assert not any("sourdough" in f["content"] for f in lexical["facts"])
                # The CLI (a third process) too, and its signals show the dense path alone found it.
                out = await _cli(cli_env, "memory", "recall", PARAPHRASE, "--channel", str(d.general.id))
                outputs.append(out)
                row = next((line for line in out.splitlines() if "sourdough" in line), None)
                assert row and "dense_rank" in row and "lexical_rank" not in row, out
                outputs.append(await _cli(cli_env, "memory", "stats"))
                # The agent's fact reaches alice's chat in the bot process by meaning.
                stored = await _tool(agent, "memory_store_fact", content=AGENT_FACT, scope=d.scope)
                assert await _until(lambda: _dense_hit(agent, AGENT_PARAPHRASE, d.scope, "cellist"))
                reply = await _until(lambda: _reply_with(d, AGENT_PARAPHRASE, "cellist Marco"), timeout=10, every=0.5)
                assert reply, "the bot never recalled the agent's fact"
                # Forget it with the CLI: gone from the MCP server and from the bot.
                outputs.append(await _cli(cli_env, "memory", "forget", str(stored["fact_id"])))
                assert not await _dense_hit(agent, AGENT_PARAPHRASE, d.scope, "cellist")
                assert "cellist" not in await d.ask(ALICE, "which musician plays string instruments")
                await _no_secret(agent)
            out = await _cli(
                cli_env, "memory", "recall", "bank PIN", "--user", str(ALICE), "--channel", str(d.general.id)
            )
            outputs.append(out)
            assert "4412" not in out
        finally:
            codes = [await bot.stop(), await server.stop()]
        logs = [bot.err.decode(), server.err.decode(), *outputs]
        assert codes == [0, 0], logs
        for text in logs:
            assert "database is locked" not in text
            assert "Traceback" not in text, text[-2000:]


async def _reply_with(d: Discord, question: str, needle: str) -> str | None:
    reply = await d.ask(ALICE, question)
    return reply if needle in reply else None


# ---------------------------------------------------------------------- bad configuration
@pytest.mark.parametrize(
    ("args", "extra", "expected"),
    [
        (["bot"], {"CLARA_MCP_HTTP": "127.0.0.1:99999", "CLARA_MCP_TOKENS": f"{TOKEN}=coder"}, "port"),
        (["bot", "--mcp-http", "localhost:nope"], {"CLARA_MCP_TOKENS": f"{TOKEN}=coder"}, "port"),
        (["bot", "--mcp-http", "{free}"], {}, "CLARA_MCP_TOKENS"),
        (["bot", "--mcp-http", "{free}"], {"CLARA_MCP_TOKENS": "short=coder"}, "at least 16"),
        (
            ["bot", "--mcp-http", "{free}"],
            {"CLARA_MCP_TOKENS": f"{TOKEN}=coder", "CLARA_MCP_GRANTS": "coder=user:9"},
            "cannot grant",
        ),
        (["bot", "--mcp-http", "{taken}"], {"CLARA_MCP_TOKENS": f"{TOKEN}=coder"}, "in use"),
        (["mcp", "serve", "--http", "--port", "{taken}"], {"CLARA_MCP_TOKENS": f"{TOKEN}=coder"}, "in use"),
    ],
)
async def test_bad_mcp_http_configuration_is_one_line(args, extra, expected, tmp_path):
    """A bad address, no or weak tokens, a forbidden grant or a taken port: one error line, exit
    2, no traceback — and the token itself is never echoed."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        values = {"{free}": str(_free_port()), "{taken}": str(taken.getsockname()[1])}
        argv = [values.get(a, a) for a in args]
        env = _env(tmp_path, None, DISCORD_BOT_TOKEN="proc-token", DISCORD_API_BASE="http://127.0.0.1:1/api", **extra)
        code, text = await _run_cli(env, *argv, timeout=60)
    assert code == 2, text
    assert expected in text and "Traceback" not in text, text
    assert text.strip().startswith("error:") and len(text.strip().splitlines()) == 1 and TOKEN not in text
