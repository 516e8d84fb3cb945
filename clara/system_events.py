"""System records (seed 003's `system` memory type): what Clara itself did, kept as facts of kind
`system` in the scope `agent:clara` — session opened/closed, model tier switches, plugins loaded,
unloaded, failed or disabled, MCP bridge servers started/stopped/failed, and whatever plugins
record through `PluginContext.record_system`.

A record is a fact like any other (SQL, history, export) but of a record kind: never recalled into
a conversation and never listed unless asked for by kind — `clara memory list --kind system`
(scope `agent:clara` by default). The scope belongs to Clara (owner `clara`, owner-only read and
write), so no user can read it through chat or MCP. Writing a record never fails the caller: an
error is logged and dropped.
"""

from __future__ import annotations

import json
import logging
import weakref
from typing import Any

log = logging.getLogger(__name__)

SYSTEM_SCOPE = "agent:clara"
SYSTEM_OWNER = "clara"
MAX_DETAIL_CHARS = 4000
_READY: weakref.WeakSet = weakref.WeakSet()  # stores whose agent:clara scope exists


async def record_system(store: Any, event: str, text: str, **detail: Any) -> int | None:
    """Store one system record and return its fact id (None if it could not be written).

    `store` is a `storage.FactStore`; `event` a short dotted name (`session.open`,
    `plugin.load_failed`, `mcp.server_start`, `tier.switch`, `plugin:<name>.<what>`); `text` one
    human-readable line (≤ 300 characters are kept); `detail` JSON-able fields kept in the fact's
    context as `{"event": ..., **detail}`."""
    try:
        await ensure_system_scope(store)
        context = json.dumps({"event": event, **detail}, ensure_ascii=False, default=str)[:MAX_DETAIL_CHARS]
        return await store.add(
            f"{event}: {text}"[:300],
            SYSTEM_SCOPE,
            kind="system",
            importance=0.1,
            context=context,
            source_ref=f"system:{event}"[:200],
        )
    except Exception:
        log.exception("recording the system event %s failed", event)
        return None


async def ensure_system_scope(store: Any) -> None:
    """Create `agent:clara` (owner-only) once per store."""
    if store in _READY:
        return
    await store.ensure_scope(SYSTEM_SCOPE, "agent", name="Clara (system records)", owner=SYSTEM_OWNER,
                             read_policy="owner", write_policy="owner")  # fmt: skip
    _READY.add(store)
