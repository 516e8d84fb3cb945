"""ASGI apps served inside the host's event loop (the bot serves its dashboard and the memory MCP
server this way; `clara dashboard` and `clara mcp serve --http` use the same path).

    server = await start_in_loop(app, "127.0.0.1", 8765, name="clara-mcp", lifespan="on")
    ...
    await server.stop()

The listening socket is bound here, before uvicorn starts, so a taken port or an unknown host is
one `OSError` with a plain message (uvicorn itself would log and `sys.exit`). uvicorn does not
install signal handlers: the host process owns SIGINT/SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket

log = logging.getLogger(__name__)


def parse_listen(text: str, *, default_host: str = "127.0.0.1") -> tuple[str, int]:
    """`[host:]port` → (host, port). Accepts `8765`, `0.0.0.0:8765`, `localhost:8765` and
    `[::1]:8765`; port 0 picks a free one. Raises ValueError naming what is wrong."""
    value = (text or "").strip()
    if not value:
        raise ValueError("expected [host:]port, got an empty value")
    host, sep, port_text = value.rpartition(":")
    if not sep:
        host, port_text = default_host, value
    elif host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"expected [host:]port (IPv6 hosts in brackets: [::1]:8765), got {value[:80]!r}")
    if not host or any(c.isspace() for c in host) or "/" in host:
        raise ValueError(f"expected [host:]port, got {value[:80]!r}")
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"the port must be a number from 0 to 65535, got {port_text[:20]!r}")
    return host, int(port_text)


def bind_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to host:port (SO_REUSEADDR, not yet listening). Raises OSError with
    one plain sentence when the address is taken, not allowed or the host unknown."""
    where = f"{host}:{port}"
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError as exc:
        raise OSError(f"cannot listen on {where}: unknown host ({exc.strerror or exc})") from None
    family, kind, proto, _, addr = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(addr)
    except OSError as exc:
        sock.close()
        raise OSError(f"cannot listen on {where}: {exc.strerror or exc}") from None
    return sock


class LoopServer:
    """A running ASGI app: uvicorn's `Server.serve()` in a task on the current loop."""

    def __init__(self, server, task: asyncio.Task, host: str):
        self.server = server
        self.task = task
        self.host = host

    @property
    def port(self) -> int | None:
        for s in getattr(self.server, "servers", []) or []:
            for sock in s.sockets:
                return sock.getsockname()[1]
        return None

    async def stop(self, timeout: float = 5.0) -> None:
        """Stop accepting, finish open requests (up to `timeout` seconds, then cancel), run the
        app's lifespan shutdown."""
        self.server.should_exit = True
        try:
            await asyncio.wait_for(asyncio.shield(self.task), timeout)
        except (TimeoutError, asyncio.CancelledError):
            self.server.force_exit = True
            self.task.cancel()
            with contextlib.suppress(BaseException):
                await self.task
        except BaseException:  # it failed while running: already logged by uvicorn
            pass


def _uvicorn_server(app, host: str, port: int, lifespan: str):
    import uvicorn

    class _Server(uvicorn.Server):
        # The host process owns SIGINT/SIGTERM: uvicorn must not take them over.
        @contextlib.contextmanager
        def capture_signals(self):
            yield

    # proxy_headers=False: uvicorn would otherwise trust X-Forwarded-For from 127.0.0.1 by default,
    # letting anything on this host pick its client address; apps that want it honour it themselves.
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        lifespan=lifespan,
        access_log=False,
        proxy_headers=False,
        timeout_graceful_shutdown=3,
    )
    return _Server(config)


async def _run(server, sock: socket.socket, where: str) -> None:
    try:
        await server.serve(sockets=[sock])
    except SystemExit:  # uvicorn exits when its lifespan start-up fails: for its host, an error
        raise OSError(f"the server on {where} failed to start (see the log)") from None
    finally:
        sock.close()


async def start_in_loop(app, host: str, port: int, *, name: str, lifespan: str = "off") -> LoopServer:
    """Serve `app` on host:port from the running loop; returns once it accepts connections.
    `lifespan="on"` runs the app's lifespan (start-up before the first request, shutdown on
    stop). Raises OSError (one plain sentence) when the address cannot be used or the app's
    start-up fails."""
    sock = bind_socket(host, port)
    where = f"{host}:{sock.getsockname()[1]}"
    server = _uvicorn_server(app, host, port, lifespan)
    task = asyncio.create_task(_run(server, sock, where), name=name)
    while not server.started:
        if task.done():
            task.result()  # re-raise the start-up error
            raise OSError(f"the server on {where} stopped during start-up")
        await asyncio.sleep(0.02)
    return LoopServer(server, task, host)
