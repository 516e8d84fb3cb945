"""The terminal transport for `clara chat`: a REPL on a TTY, line-by-line when piped.

Input is read as bytes and decoded here: a line that is not valid UTF-8, or longer than any
message Clara stores, gets a one-line refusal naming the problem, and the next line is read as
usual (it never reaches the store, the embedder or the model)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from typing import BinaryIO

from rich.console import Console
from rich.markup import escape

from clara.chat import MAX_MESSAGE_CHARS, ChatEngine, IncomingMessage
from clara.forget import save_files

log = logging.getLogger(__name__)
# The longest line read whole: a message of MAX_MESSAGE_CHARS characters of up to 4 UTF-8 bytes each
# (the engine refuses anything over MAX_MESSAGE_CHARS characters with its own message).
MAX_LINE_BYTES = 4 * MAX_MESSAGE_CHARS + 2


async def run_chat(
    *,
    user: str,
    channel: str,
    dm: bool,
    console: Console,
    extra_scopes: list[str],
    stdin: BinaryIO | None = None,
    store=None,
    tick_seconds: float | None = None,
) -> None:
    """The terminal chat. `stdin` (a binary stream; default: the process's stdin, a REPL when it is
    a TTY) and `store` (default: the configured one, closed at the end) are injectable for tests.
    Plugins' interval jobs (reminders) run every `tick_seconds` (default
    ``CLARA_TERMINAL_TICK_SECONDS``, 20 s), so a reminder set here is delivered here while the
    session is open; their proactive messages to this user or channel are printed."""
    from clara.app import open_store
    from clara.llm import LLMSettings, make_llm

    interactive = stdin is None and sys.stdin.isatty()
    if interactive and hasattr(sys.stdin, "reconfigure"):
        sys.stdin.reconfigure(errors="surrogateescape")  # undecodable bytes reach _decode_problem
    own_store = store is None
    if store is None:
        store = await open_store()
    # spaCy NER (~0.8 s, GIL-heavy) loads on a worker thread while someone types: at once at a TTY
    # prompt, after the first reply when input is piped (it would slow that reply down). A line
    # that needs it before then waits for the load (extract_entities).
    from clara.extract.ner import preload

    nlp_loading: asyncio.Future | None = None

    def preload_nlp() -> None:
        nonlocal nlp_loading
        if nlp_loading is None:
            nlp_loading = asyncio.ensure_future(asyncio.to_thread(preload))

    if interactive:
        preload_nlp()
    llm_settings = LLMSettings()
    llm = make_llm(llm_settings)
    from clara.plugin_host import PluginHost

    mine = {f"user:{user}", f"channel:{channel}"}

    async def sender(target: str, text: str) -> None:
        """Proactive messages (reminders) for this session are printed; others can't be delivered here."""
        if target not in mine:
            raise LookupError(f"{target} is not this terminal session")
        console.print(f"[magenta]clara (proactive)>[/magenta] {escape(text)}")

    plugins = PluginHost(store, sender=sender)
    for result in await plugins.load_all():
        if not result.ok:
            console.print(f"[yellow]plugin {escape(result.name)} not loaded: {escape(result.error or '')}[/yellow]")
    engine = ChatEngine(
        store, llm, extra_scopes=extra_scopes, auto_tier=llm_settings.auto_tier_selection, plugins=plugins
    )
    level = terminal_level(user, engine.settings)
    ticker = asyncio.create_task(_tick(plugins, _tick_seconds(tick_seconds)), name="terminal-jobs")
    try:
        if interactive:
            console.print(
                f"[bold]Clara[/bold] — memory on {store.dialect}; you are [cyan]{escape(user)}[/cyan] in "
                f"[cyan]{'a DM' if dm else '#' + escape(channel)}[/cyan]. !help for commands, Ctrl-D to quit."
            )
        while True:
            got = await asyncio.to_thread(_read_line, interactive, stdin)
            if got is None:
                break
            line, problem = got
            if problem:
                console.print(f"[red]clara>[/red] {escape(problem)}")
                continue
            if not line.strip():
                continue
            msg = IncomingMessage(
                user_id=user, display_name=user, channel_id=channel, text=line.rstrip("\r\n"), is_dm=dm, level=level
            )
            reply = await engine.handle(msg)
            style = "red" if reply.error else "green"
            console.print(f"[{style}]clara>[/{style}] {escape(reply.text)}")
            for path in save_files(store.config.data_dir, reply.files):
                console.print(f"[green]clara>[/green] (file saved to {escape(str(path))})")
            preload_nlp()
            if not interactive:
                # Scripted input arrives faster than anyone types: let each line's memory write land
                # before the next line, embedded and indexed.
                await engine.drain(timeout=60)
        # Give background memory writes a moment; anything left stays queued for the next start.
        try:
            await engine.drain(timeout=20)
        except TimeoutError:
            pass
    finally:
        if nlp_loading is not None and not nlp_loading.done():
            with contextlib.suppress(BaseException):
                await nlp_loading
        ticker.cancel()
        with contextlib.suppress(BaseException):
            await ticker
        await plugins.aclose()
        await engine.aclose()
        if llm is not None:
            await llm.aclose()
        if own_store:
            await store.aclose()


def _tick_seconds(value: float | None) -> float:
    if value is not None:
        return max(0.05, float(value))
    raw = os.environ.get("CLARA_TERMINAL_TICK_SECONDS", "").strip()
    try:
        return max(0.05, float(raw)) if raw else 20.0
    except ValueError:
        log.warning("CLARA_TERMINAL_TICK_SECONDS=%r is not a number; using 20", raw)
        return 20.0


async def _tick(plugins, every: float) -> None:
    """Run the loaded plugins' interval jobs (e.g. reminders' minute tick) every `every` seconds while
    the terminal session is open (cron jobs stay with the bot's persisted scheduler)."""
    while True:
        await asyncio.sleep(every)
        try:
            await plugins.run_interval_jobs()
        except Exception:
            log.exception("the terminal's plugin jobs failed")


def terminal_level(user: str, settings) -> int:
    """The privilege level of `user` at the terminal: only the operator (``CLARA_OPERATOR``, default
    the default user ``you``) is bot owner; users listed in ``CLARA_ADMIN_USERS`` are admins; anyone
    else who types ``--user NAME`` is a plain member (fail-closed)."""
    from clara.plugin_api import Level

    if user == settings.operator.strip():
        return int(Level.BOT_OWNER)
    if user in {a.strip() for a in settings.admin_users.split(",") if a.strip()}:
        return int(Level.ADMIN)
    return int(Level.MEMBER)


def _read_line(interactive: bool, stdin: BinaryIO | None = None) -> tuple[str, str | None] | None:
    """The next line as (text, None), or ("", why it was refused); None at end of input."""
    try:
        if stdin is not None:
            return read_line(stdin)
        if interactive:
            line = input("you> ")
            raw = line.encode("utf-8", "surrogateescape")  # the bytes typed, undecodable ones included
            return _decode(raw, len(raw))
        return read_line(sys.stdin.buffer)
    except EOFError:
        return None
    except (UnicodeError, ValueError) as exc:  # e.g. a surrogate no terminal decoding produces
        return "", f"I couldn't read that line ({exc}). Nothing was stored."


def read_line(stream: BinaryIO, limit: int = MAX_LINE_BYTES) -> tuple[str, str | None] | None:
    """Read one line of bytes from `stream` (at most `limit` kept in memory): (text, None) if it is
    valid UTF-8 and short enough, else ("", a one-line refusal). None at end of input."""
    raw = stream.readline(limit + 1)
    if not raw:
        return None
    size = len(raw)
    if size > limit and not raw.endswith(b"\n"):
        while True:  # skip the rest of this line, in bounded pieces
            more = stream.readline(1 << 16)
            size += len(more)
            if not more or more.endswith(b"\n"):
                break
        return "", (
            f"That line is {size:,} bytes — longer than the {MAX_MESSAGE_CHARS:,} characters I store in one "
            "message. Nothing was stored; please split it up."
        )
    return _decode(raw, size)


def _decode(raw: bytes, size: int) -> tuple[str, str | None]:
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError as exc:
        return "", (
            f"That line is not valid UTF-8 text (byte 0x{raw[exc.start]:02X} at position {exc.start + 1:,} of "
            f"{size:,}). Nothing was stored."
        )
