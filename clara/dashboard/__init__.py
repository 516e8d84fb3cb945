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

__all__ = ["DashboardServer", "DashboardService", "DashboardSettings", "DashboardState", "create_app", "serve", "start"]

log = logging.getLogger(__name__)


class DashboardServer:
    """A running dashboard: uvicorn's `Server.serve()` in a task on the current loop."""

    def __init__(self, server, task: asyncio.Task):
        self.server = server
        self.task = task

    @property
    def port(self) -> int | None:
        for s in getattr(self.server, "servers", []) or []:
            for sock in s.sockets:
                return sock.getsockname()[1]
        return None

    async def stop(self, timeout: float = 5.0) -> None:
        self.server.should_exit = True
        try:
            await asyncio.wait_for(asyncio.shield(self.task), timeout)
        except (TimeoutError, asyncio.CancelledError):
            self.server.force_exit = True
            self.task.cancel()
            with contextlib.suppress(BaseException):
                await self.task


def _uvicorn_server(app, host: str, port: int):
    import uvicorn

    class _Server(uvicorn.Server):
        # The host process (the bot) owns SIGINT/SIGTERM: uvicorn must not take them over.
        @contextlib.contextmanager
        def capture_signals(self):
            yield

    # proxy_headers=False: uvicorn would otherwise trust X-Forwarded-For from 127.0.0.1 by default, letting
    # anything on this host pick its client address (the login throttle's key); the app honours it only
    # from CLARA_DASHBOARD_TRUSTED_PROXIES.
    config = uvicorn.Config(
        app, host=host, port=port, log_level="warning", lifespan="off", access_log=False, proxy_headers=False
    )
    return _Server(config)


async def _run_uvicorn(server, where: str) -> None:
    try:
        await server.serve()
    except SystemExit:  # uvicorn exits (status 3) when it cannot bind: for its host, an error, not an exit
        raise OSError(f"cannot listen on {where} (address in use or not allowed)") from None


async def start(state: DashboardState, *, host: str | None = None, port: int | None = None) -> DashboardServer:
    """Start serving on the running loop and return once the socket is bound (or raise)."""
    settings = state.settings or DashboardSettings()
    state.settings = settings
    app = create_app(state)
    server = _uvicorn_server(app, host or settings.host, settings.port if port is None else port)
    where = f"{host or settings.host}:{settings.port if port is None else port}"
    task = asyncio.create_task(_run_uvicorn(server, where), name="clara-dashboard")
    while not server.started:
        if task.done():
            task.result()  # re-raise the bind error
            raise RuntimeError("dashboard server stopped during start-up")
        await asyncio.sleep(0.02)
    handle = DashboardServer(server, task)
    log.info("dashboard listening on http://%s:%s/", host or settings.host, handle.port)
    return handle


def serve(host: str | None = None, port: int | None = None, settings=None) -> None:
    """`clara dashboard`: open the store (and plugins, without their scheduler, and the LLM for
    health checks) from `settings` (clara.settings.Settings; env by default) and serve until
    SIGINT/SIGTERM. Note: the embedded vector index allows one process per data dir — with the bot
    running, use the dashboard it serves (or QDRANT_URL)."""
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
