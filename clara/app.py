"""Wiring: open the store described by the settings."""

from __future__ import annotations

import os

from clara.settings import Settings, get_settings
from storage import FactStore
from storage.clock import Clock, system_clock


async def open_store(
    settings: Settings | None = None,
    *,
    start_indexer: bool = True,
    bulk: bool = False,
    clock: Clock = system_clock,
) -> FactStore:
    """Open the fact store configured by `settings` (env / `.env` by default). `bulk` lets the
    embedder use every core (imports, reindexing) instead of EMBED_THREADS. `clock` is the one
    clock of the process (storage.clock): everything holding the store reads `store.clock`."""
    settings = settings or get_settings()
    from clara.ops.logs import setup_logging

    setup_logging(settings)  # CLARA_LOG_FORMAT=json, CLARA_LOG_LEVELS, secrets redacted
    config = settings.store_config()
    config.clock = clock
    if bulk:
        config.embed_threads = max(config.embed_threads, os.cpu_count() or 1)
    return await FactStore.open(config, start_indexer=start_indexer)
