"""A plugin whose command always crashes: the host disables it after repeated failures."""

from clara.plugin_api import Manifest

MANIFEST = Manifest("flaky", "0.1", "Crashes", "None.")


async def setup(ctx) -> None:
    await ctx.record_system("ready", "flaky is ready to crash", mood="grumpy")  # a plugin's own system record

    @ctx.command("crash", help="always raises")
    async def crash(inv, args):
        raise ZeroDivisionError("boom")


async def delete_user_data(ctx, user_id: str) -> int:
    raise RuntimeError("cannot delete")


async def export_user_data(ctx, user_id: str) -> dict:
    return {}
