"""Wiring: open the store described by the settings."""

from __future__ import annotations

import logging

from clara.settings import Settings, get_settings
from storage import FactStore


async def open_store(settings: Settings | None = None, *, start_indexer: bool = True) -> FactStore:
    """Open the fact store configured by `settings` (env / `.env` by default)."""
    settings = settings or get_settings()
    logging.basicConfig(level=settings.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    return await FactStore.open(settings.store_config(), start_indexer=start_indexer)
