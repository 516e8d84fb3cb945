"""A tiny but complete plugin: a table of its own, a command, a tool, an event hook, a scheduled
job, namespaced settings, facts in the shared store, and the user-data hooks."""

import os

from sqlalchemy import delete, func, insert, select

from clara.plugin_api import Invocation, Level, Manifest, PluginError, Result
from tests.plugin_fixtures.notes.models import notes

MANIFEST = Manifest("notes", "1.0", "Sticky notes", "Keeps the notes you write with !note, per user.")
SEEN: list[str] = []  # messages observed through the "message" event (read by the tests)


async def setup(ctx) -> None:
    if os.environ.get("NOTES_FAIL_SETUP") == "1":
        raise RuntimeError("setup failed on purpose")

    @ctx.command("note", help="keep a note", usage="<text>")
    async def note(inv: Invocation, args: str) -> Result:
        if not args.strip():
            raise PluginError("Usage: !note <text>")
        async with ctx.db() as conn:
            await conn.execute(insert(notes).values(owner_id=inv.user_id, text=args.strip()))
        await ctx.memory.add(f"{inv.display_name} noted: {args.strip()}", inv.user_scope, created_by=inv.user_id)
        count = await ctx.config.get(f"user:{inv.user_id}", "count", 0)
        await ctx.config.set(f"user:{inv.user_id}", "count", count + 1)
        return Result(f"noted ({count + 1})")

    @ctx.command("notes-wipe", help="admins only", level=Level.ADMIN)
    async def wipe(inv: Invocation, args: str) -> str:
        return "wiped"

    @ctx.tool(
        "count_notes",
        description="How many notes a user has",
        parameters={"type": "object", "properties": {"user_id": {"type": "string"}}, "required": ["user_id"]},
    )
    async def count_notes(inv: Invocation, args: dict) -> str:
        async with ctx.read() as conn:
            n = (await conn.execute(select(func.count()).where(notes.c.owner_id == args["user_id"]))).scalar_one()
        return str(n)

    @ctx.on("message")
    async def on_message(inv: Invocation, text: str) -> None:
        SEEN.append(text)

    ctx.schedule("tick", tick, trigger="interval", hours=1)


async def tick(ctx) -> None:
    await ctx.config.set("global", "last_tick", ctx.now().isoformat())


async def delete_user_data(ctx, user_id: str) -> int:
    async with ctx.db() as conn:
        return (await conn.execute(delete(notes).where(notes.c.owner_id == user_id))).rowcount


async def export_user_data(ctx, user_id: str) -> dict:
    async with ctx.read() as conn:
        rows = (await conn.execute(select(notes.c.text).where(notes.c.owner_id == user_id))).scalars().all()
    return {"notes": list(rows)}
