"""A plugin that fails in setup: the host must isolate it."""

from clara.plugin_api import Manifest

MANIFEST = Manifest("broken", "0.1", "Always fails", "None.")


async def setup(ctx) -> None:
    raise RuntimeError("cannot start: missing dependency")


async def delete_user_data(ctx, user_id: str) -> int:
    return 0


async def export_user_data(ctx, user_id: str) -> dict:
    return {}
