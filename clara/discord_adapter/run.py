"""`clara bot` / `python bot.py`: run Clara on Discord until SIGINT/SIGTERM.

Opens the store and the LLM from the settings, starts discord.py (which reconnects on its own
and handles rate limits), and on a signal closes the gateway, lets the memory worker finish the
job in hand (queued work stays on disk for the next start) and closes the store.
"""

from __future__ import annotations

import asyncio
import logging
import signal

log = logging.getLogger(__name__)


class MissingToken(RuntimeError):
    MESSAGE = "DISCORD_BOT_TOKEN is not set (for the local terminal chat run `make run`)."


async def run_bot(mcp_http=None) -> None:
    """Raises MissingToken when DISCORD_BOT_TOKEN is not set; discord.LoginFailure for a bad one.

    `mcp_http` (clara.mcp_server.server.HttpConfig, from CLARA_MCP_HTTP / `--mcp-http`): also serve
    the memory MCP server over HTTP in this event loop, on the bot's store; it starts before the
    gateway connects, and a taken address raises OSError (one sentence) after closing what was
    opened."""
    from clara.app import open_store
    from clara.discord_adapter.settings import DiscordSettings

    dsettings = DiscordSettings()
    if not dsettings.discord_bot_token:
        raise MissingToken(MissingToken.MESSAGE)
    if dsettings.discord_api_base:
        _point_at(dsettings.discord_api_base, dsettings.discord_gateway_url)
    store = await open_store()
    mcp = None
    if mcp_http is not None:
        from clara.mcp_server.server import start_http

        try:
            mcp = await start_http(mcp_http, store)
        except BaseException:
            await store.aclose()
            raise
    try:
        await _run(dsettings, store, mcp)
    finally:
        if mcp is not None:
            await mcp.stop()
        await store.aclose()


async def _run(dsettings, store, mcp) -> None:
    from clara.chat import ChatEngine
    from clara.discord_adapter.bot import ClaraBot
    from clara.llm import LLMSettings, make_llm

    llm_settings = LLMSettings()
    llm = make_llm(llm_settings)
    from clara.maintenance import core_jobs
    from clara.plugin_host import PluginHost
    from clara.settings import get_settings

    # Decay, rerank, cleanup (and backups with BACKUP_DIR) run on the persisted scheduler.
    plugins = PluginHost(store, scheduler=True, core_jobs=core_jobs(store, get_settings()))
    for result in await plugins.load_all():
        if not result.ok:
            log.error("plugin %s not loaded: %s", result.name, result.error)
    engine = ChatEngine(store, llm, auto_tier=llm_settings.auto_tier_selection, plugins=plugins)
    bot = ClaraBot(engine, dsettings)
    await plugins.start()
    from clara.dashboard import DashboardState, start

    try:
        dash = await start(DashboardState(store, engine=engine, plugins=plugins, bot=bot, llm=llm))
    except OSError as exc:  # e.g. the port is taken: the bot runs on without its dashboard
        log.error("dashboard not started: %s", exc)
        dash = None
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    runner = asyncio.create_task(bot.start(dsettings.discord_bot_token, reconnect=True))
    watched = {runner} | ({mcp.task} if mcp is not None else set())
    try:
        waiter = asyncio.create_task(stopping.wait())
        done, _ = await asyncio.wait(watched | {waiter}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if runner in done:
            runner.result()  # re-raise a login failure
        elif mcp is not None and mcp.task in done:
            log.error("the memory MCP server stopped; stopping the bot")
        log.info("stopping: closing the gateway")
    finally:
        await bot.close()
        if not runner.done():
            runner.cancel()
        if dash is not None:
            await dash.stop()
        await plugins.aclose()
        await engine.aclose()
        if llm is not None:
            await llm.aclose()


def _point_at(api_base: str, gateway: str | None) -> None:
    """Use another Discord endpoint (an API proxy, or the test suite's local fake)."""
    import discord.gateway
    import discord.http
    import yarl

    discord.http.Route.BASE = api_base.rstrip("/")
    if gateway:
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(gateway)
