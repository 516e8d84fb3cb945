"""Erasing a user for real: the one procedure behind `!forgetme`, `clara memory purge-user` and the
dashboard's purge, so all three remove the same things.

Memory is bi-temporal everywhere else (superseded and forgotten facts keep their history); an
explicit erasure is the exception and really removes the person's words. `forget_user` runs, in
this order (every step is idempotent: running it again after a crash finishes the job):

1. their plugin data is read (`export_user_data`): its strings are their words too, looked for
   in bot messages by the store's purge;
2. the store's purge (`FactStore.purge_user`, one SQL transaction): their facts, messages,
   sessions, entities, relations, settings, jobs and history go; copies of their words in text
   machines wrote elsewhere are cut (bot replies in other people's conversations, summaries,
   agents' facts, fact contexts, aliases); proactive messages only about them are deleted;
3. the plugins' delete hooks (`delete_user_data`), then the `user_forgotten` event;
4. the channel summary of every channel they had a session in is erased and rebuilt without them
   (when a `writer` is given; else only erased);
5. files Clara wrote for them: the `!export` JSON saved under `<data dir>/exports/`;
6. a second store pass (anything re-created meanwhile, e.g. a plugin's re-sync), in-process
   caches (query embeddings, entity analyses), then `FactStore.compact`: the full-text index
   merged, SQLite's free pages zeroed and WAL truncated (PostgreSQL: VACUUM), the vector index
   rewritten without the deleted points.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from storage import FactStore
from storage.errors import InvalidInput
from storage.redact import plugin_strings
from storage.types import PurgeReport

log = logging.getLogger(__name__)
EXPORTS = "exports"


def export_filename(user_id: str) -> str:
    """The name of a user's `!export` file (also where the terminal saves it, under
    `<data dir>/exports/`): `clara-export-<id>.json`, the id reduced to a safe file name."""
    return f"clara-export-{re.sub(r'[^A-Za-z0-9_.-]', '_', user_id)[:120]}.json"


def save_files(data_dir: Path, files: list[tuple[str, bytes]]) -> list[Path]:
    """Write a reply's files under `<data_dir>/exports/` (the terminal transport; names are
    reduced to their last path component). Returns the paths written."""
    out = []
    for name, blob in files:
        path = Path(data_dir) / EXPORTS / (Path(name).name or "file")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(blob)
        out.append(path)
    return out


def user_files(data_dir: Path, user_id: str) -> list[Path]:
    """Files Clara wrote for `user_id` under `data_dir` that exist now."""
    path = Path(data_dir) / EXPORTS / export_filename(user_id)
    return [path] if path.is_file() else []


@dataclass
class ForgetReport:
    """What `forget_user` did: the store's counts, each plugin's answer (rows erased, or
    "error: ..."), the channel summaries rebuilt and the files deleted."""

    store: PurgeReport
    plugins: dict[str, Any] = field(default_factory=dict)
    summaries_rebuilt: int = 0
    files: list[str] = field(default_factory=list)


async def forget_user(store: FactStore, user_id: str, *, plugins=None, writer=None) -> ForgetReport:
    """Erase `user_id` everywhere (see the module doc). `plugins`: the PluginHost, if any (its
    hooks are called even for disabled plugins); `writer`: a MemoryWriter to rebuild channel
    summaries. Returns a ForgetReport. Raises InvalidInput for an empty or bad user id; a failing
    plugin hook is reported, not raised (the rest of the erasure goes on)."""
    user_id = (user_id or "").strip()
    if not user_id:
        raise InvalidInput("no user given")
    channels = {s.scope_id for s in await store.sessions.list_sessions(user_id, limit=100_000)}
    theirs: list[str] = []
    if plugins is not None:
        try:
            theirs = plugin_strings(await plugins.export_user_data(user_id))
        except Exception:  # the hooks are isolated by the host; this is belt and braces
            log.exception("reading plugin data before erasing %s failed", user_id)
    report = ForgetReport(await store.purge_user(user_id, extra_texts=theirs, compact=False))
    if plugins is not None:
        report.plugins = await plugins.delete_user_data(user_id)
    # Channel summaries quote everyone who spoke: rebuild them without this user's words.
    for scope in sorted(channels - {f"user:{user_id}"}):
        old = await store.find_slug(scope, "channel-summary")
        if old is None:
            continue
        await store.erase([old.id])
        if writer is not None and await store.recent_messages(scope, 1):
            try:
                await writer.refresh_channel_summary(scope)
                report.summaries_rebuilt += 1
            except Exception:
                log.exception("rebuilding the channel summary of %s failed (it stays erased)", scope)
    for path in user_files(store.config.data_dir, user_id):
        path.unlink(missing_ok=True)
        report.files.append(str(path))
    again = await store.purge_user(user_id, compact=False)
    for name in ("facts", "messages", "entities", "history", "scopes", "vectors", "redacted"):
        setattr(report.store, name, getattr(report.store, name) + getattr(again, name))
    _forget_cached_texts()
    await store.compact()
    return report


def _forget_cached_texts() -> None:
    from clara.extract import ner

    ner.forget_cached_texts()
