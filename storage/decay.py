"""Relevance decay.

    relevance = exp(-t / S),   S = half_life_days / ln 2 * (1 + access_count) * (0.5 + importance)

where `t` is the time in days since the fact was last used (recalled) or, if never, created. This is
the Ebbinghaus forgetting curve R = e^(-t/S) with memory strength S growing each time the memory is
recalled, as used by MemoryBank (Zhong et al., 2023, "MemoryBank: Enhancing Large Language Models
with Long-Term Memory"); importance (0..1) scales strength between 0.5x and 1.5x so that what
matters fades slower. With the defaults an unimportant, never-recalled fact halves in ~60 days and
a fact of importance 0.5 in 30 days; each recall adds another full strength unit.
Recall uses relevance only as a small tie-breaking prior, never as a filter.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import bindparam, select, update

from storage.models import FactRow
from storage.sqlutil import aware

if TYPE_CHECKING:
    from storage.store import FactStore


def relevance(
    now: datetime,
    created_at: datetime,
    last_used: datetime | None,
    access_count: int,
    importance: float,
    half_life_days: float = 30.0,
) -> float:
    """The decayed relevance in [0, 1] of one fact at `now` (see module docstring)."""
    ref = max(aware(created_at), aware(last_used)) if last_used else aware(created_at)
    days = max(0.0, (now - ref).total_seconds() / 86400.0)
    strength = half_life_days / math.log(2) * (1 + max(0, access_count)) * (0.5 + importance)
    return math.exp(-days / strength)


async def decay_relevance(store: FactStore, now: datetime, half_life_days: float = 30.0, batch: int = 2000) -> int:
    updated = 0
    last_id = 0
    while True:
        async with store.engines.reader.connect() as conn:
            rows = (
                await conn.execute(
                    select(
                        FactRow.id,
                        FactRow.created_at,
                        FactRow.last_accessed_at,
                        FactRow.access_count,
                        FactRow.importance,
                    )
                    .where(FactRow.status == "active", FactRow.id > last_id)
                    .order_by(FactRow.id)
                    .limit(batch)
                )
            ).all()
        if not rows:
            return updated
        params = [
            {
                "fid": r.id,
                "rel": relevance(now, r.created_at, r.last_accessed_at, r.access_count, r.importance, half_life_days),
            }
            for r in rows
        ]
        async with store.engines.writer.begin() as conn:
            await conn.execute(
                update(FactRow)
                .where(FactRow.id == bindparam("fid"))
                .values(relevance=bindparam("rel"))
                .execution_options(synchronize_session=False),
                params,
            )
        updated += len(rows)
        last_id = rows[-1].id
