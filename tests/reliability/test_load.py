"""Load: N users × M messages concurrently through the real discord.py bot and the fake Discord."""

from __future__ import annotations

import pytest

from clara.ops.load import run_load
from tests.reliability.conftest import LOAD_MESSAGES, LOAD_USERS

pytest.importorskip("discord")
pytestmark = pytest.mark.timeout(300)


async def test_concurrent_users_lose_nothing_and_duplicate_nothing(embedder):
    res = await run_load(LOAD_USERS, LOAD_MESSAGES, embedder=embedder)
    print(
        f"\nload {LOAD_USERS}x{LOAD_MESSAGES}: overhead p50 {res['turn_overhead_p50_ms']:.0f} ms, "
        f"p95 {res['turn_overhead_p95_ms']:.0f} ms; {res['turns_per_s']:.1f} turns/s"
    )
    assert res["turns"] == LOAD_USERS * LOAD_MESSAGES
    assert res["lost_messages"] == 0
    assert res["undelivered_replies"] == 0 and res["apologies"] == 0
    assert res["duplicate_facts"] == 0
    assert res["missing_facts"] == 0 and res["missing_turn_facts"] == 0
    assert res["memory_jobs_left"] == 0
    assert res["turn_overhead_p95_ms"] == res["turn_overhead_p95_ms"]  # measured (not NaN)
