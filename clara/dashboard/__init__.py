"""Clara's web dashboard: see and correct what Clara remembers (issue #9).

In the bot process (same event loop as discord.py)::

    from clara.dashboard import DashboardState, start
    server = await start(DashboardState(store, engine=engine, plugins=plugins, bot=bot, llm=llm))
    ...
    await server.stop()

Alone (`clara dashboard`): ``clara.dashboard.serve(host, port, settings)`` (blocking).
Settings: CLARA_DASHBOARD_TOKEN (admin login), DISCORD_MONITOR_PORT (8001), CLARA_DASHBOARD_HOST
(127.0.0.1), CLARA_DASHBOARD_SECURE_COOKIE (behind HTTPS), CLARA_DASHBOARD_TRUSTED_PROXIES (reverse
proxies whose X-Forwarded-For is believed; none by default).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from clara.dashboard.app import create_app
from clara.dashboard.config import DashboardSettings
from clara.dashboard.service import DashboardService, DashboardState
from clara.http_serve import LoopServer, start_in_loop

__all__ = ["DashboardServer", "DashboardService", "DashboardSettings", "DashboardState", "create_app", "serve", "start"]

log = logging.getLogger(__name__)


DashboardServer = LoopServer  # a running dashboard (clara.http_serve.LoopServer)


async def start(state: DashboardState, *, host: str | None = None, port: int | None = None) -> DashboardServer:
    """Start serving on the running loop and return once the socket is bound (or raise)."""
    settings = state.settings or DashboardSettings()
    state.settings = settings
    app = create_app(state)
    handle = await start_in_loop(
        app, host or settings.host, settings.port if port is None else port, name="clara-dashboard"
    )
    log.info("dashboard listening on http://%s:%s/", host or settings.host, handle.port)
    return handle


def serve(host: str | None = None, port: int | None = None, settings=None) -> None:
    """`clara dashboard`: open the store (and plugins, without their scheduler, and the LLM for
    health checks) from `settings` (clara.settings.Settings; env by default) and serve until
    SIGINT/SIGTERM. It can run beside the bot on the same data dir (each process has its own local
    vector index folder following the change feed); the bot also serves a dashboard itself."""
    asyncio.run(_serve(host, port, settings))


async def _serve(host, port, settings) -> None:
    import signal

    from clara.app import open_store
    from clara.plugin_host import PluginHost

    store = await open_store(settings)
    llm = None
    try:
        from clara.llm import LLMSettings, make_llm

        llm = make_llm(LLMSettings())
    except Exception as exc:
        log.warning("dashboard: no LLM (%s)", exc)
    plugins = PluginHost(store, scheduler=False, llm=llm)
    for result in await plugins.load_all():
        if not result.ok:
            log.error("plugin %s not loaded: %s", result.name, result.error)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stopping.set)
    server = await start(DashboardState(store, plugins=plugins, llm=llm), host=host, port=port)
    try:
        waiter = asyncio.create_task(stopping.wait())
        await asyncio.wait({server.task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
    finally:
        await server.stop()
        await plugins.aclose()
        if llm is not None:
            await llm.aclose()
        await store.aclose()
