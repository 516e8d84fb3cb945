"""The terminal transport for `clara chat`: a REPL on a TTY, line-by-line when piped."""

from __future__ import annotations

import asyncio
import sys

from rich.console import Console
from rich.markup import escape

from clara.chat import ChatEngine, IncomingMessage
from clara.forget import save_files


async def run_chat(*, user: str, channel: str, dm: bool, console: Console, extra_scopes: list[str]) -> None:
    from clara.app import open_store
    from clara.llm import LLMSettings, make_llm

    interactive = sys.stdin.isatty()
    store = await open_store()
    llm_settings = LLMSettings()
    llm = make_llm(llm_settings)
    # The person at the terminal is the local operator: admin commands (!context) are allowed.
    from clara.plugin_host import PluginHost

    plugins = PluginHost(store)
    for result in await plugins.load_all():
        if not result.ok:
            console.print(f"[yellow]plugin {escape(result.name)} not loaded: {escape(result.error or '')}[/yellow]")
    engine = ChatEngine(
        store, llm, extra_scopes=extra_scopes, auto_tier=llm_settings.auto_tier_selection, plugins=plugins
    )
    try:
        if interactive:
            console.print(
                f"[bold]Clara[/bold] — memory on {store.dialect}; you are [cyan]{escape(user)}[/cyan] in "
                f"[cyan]{'a DM' if dm else '#' + escape(channel)}[/cyan]. !help for commands, Ctrl-D to quit."
            )
        while True:
            line = await asyncio.to_thread(_read_line, interactive)
            if line is None:
                break
            if not line.strip():
                continue
            msg = IncomingMessage(
                user_id=user, display_name=user, channel_id=channel, text=line.rstrip("\n"), is_dm=dm, level=4
            )
            reply = await engine.handle(msg)
            style = "red" if reply.error else "green"
            console.print(f"[{style}]clara>[/{style}] {escape(reply.text)}")
            for path in save_files(store.config.data_dir, reply.files):
                console.print(f"[green]clara>[/green] (file saved to {escape(str(path))})")
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
        await plugins.aclose()
        await engine.aclose()
        if llm is not None:
            await llm.aclose()
        await store.aclose()


def _read_line(interactive: bool) -> str | None:
    try:
        if interactive:
            return input("you> ")
        line = sys.stdin.readline()
        return line if line else None
    except EOFError:
        return None
    except UnicodeDecodeError:
        return "\x00"  # handled by the engine as binary input
