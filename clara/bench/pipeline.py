"""`clara bench chat`: the conversational pipeline's own costs (no LLM: memory-only mode).

Simulated users talk in a few channels and DMs with realistic sentences (biography, relations,
preferences, decisions, plans, questions). Measured: the acknowledgement (scopes + the turn and its
memory job in one transaction), the whole turn as the person sees it (recall + ack + reply), context
assembly for an LLM prompt (recall of user/project memories, entities, carry-over, token
budgets), and the background write path's throughput (extraction, entities, relations, de-dup),
with users talking concurrently.
"""

from __future__ import annotations

import asyncio
import random
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from clara.bench.stats import pct, rss_mb

CITIES = ["Lisbon", "Porto", "Berlin", "Nairobi", "Osaka", "Lima", "Oslo", "Austin", "Hanoi", "Turin"]
NAMES = ["Anna", "Bruno", "Chidi", "Dara", "Elif", "Farah", "Goran", "Hana", "Ivo", "Jun"]
ORGS = ["Acme Robotics", "Blue Harbor Bank", "Northwind", "Globex", "Initech"]
THINGS = ["green tea", "black coffee", "jazz", "hiking", "chess", "sourdough", "cycling", "sci-fi novels"]
TECH = ["PostgreSQL", "SQLite", "Redis", "Kafka", "Rust", "Go"]
TEMPLATES = [
    "I live in {city} now",
    "I moved to {city} last month",
    "My sister {name} works at {org}",
    "I really love {thing}, and I can't stand {thing2}",
    "We decided to use {tech} for the billing service",
    "I'm planning to visit {name} in {city} next week",
    "I have a dentist appointment on Friday at 10",
    "My dog {name} is afraid of thunderstorms",
    "what do you remember about {name}?",
    "Can you remind me what I said about {thing}?",
    "ok thanks!",
    "I work at {org} as a data engineer",
]


def _sentence(rng: random.Random) -> str:
    t1, t2 = rng.sample(THINGS, 2)
    return rng.choice(TEMPLATES).format(
        city=rng.choice(CITIES),
        name=rng.choice(NAMES),
        org=rng.choice(ORGS),
        thing=t1,
        thing2=t2,
        tech=rng.choice(TECH),
    )


async def run(users: int = 20, messages: int = 10, database_url: str | None = None, progress=None) -> dict:
    from clara.chat import ChatEngine, IncomingMessage
    from clara.settings import Settings
    from storage import FactStore, StoreConfig
    from storage.clock import ManualClock

    rng = random.Random(7)
    t0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
    with tempfile.TemporaryDirectory(prefix="clara-bench-chat-") as tmp:
        clock = ManualClock(t0, ticking=True)  # a simulated day: the same results on any date
        store = await FactStore.open(StoreConfig(database_url=database_url, data_dir=Path(tmp), clock=clock))
        engine = ChatEngine(store, settings=Settings(CLARA_DATA_DIR=tmp))
        acks: list[float] = []
        real_ack = engine.memory.acknowledge

        async def timed_ack(*a, **kw):
            t = time.perf_counter()
            try:
                return await real_ack(*a, **kw)
            finally:
                acks.append((time.perf_counter() - t) * 1000)

        engine.memory.acknowledge = timed_ack
        turns: list[float] = []
        total = users * messages
        done = 0

        async def user(u: int) -> None:
            nonlocal done
            for j in range(messages):
                dm = j % 4 == 3
                msg = IncomingMessage(
                    user_id=f"u{u}",
                    display_name=f"User{u}",
                    channel_id=f"dm-{u}" if dm else f"ch{u % 3}",
                    text=_sentence(rng),
                    is_dm=dm,
                    timestamp=t0 + timedelta(seconds=j * 20),
                )
                t = time.perf_counter()
                reply = await engine.handle(msg)
                turns.append((time.perf_counter() - t) * 1000)
                assert not reply.error, reply.text
                done += 1
                if progress:
                    progress("turns", done, total)

        try:
            start = time.perf_counter()
            await asyncio.gather(*(user(u) for u in range(users)))
            replied = time.perf_counter() - start
            await engine.drain(timeout=1800)
            written = time.perf_counter() - start
            contexts, tokens = [], []
            for i in range(50):
                u = i % users
                msg = IncomingMessage(
                    user_id=f"u{u}",
                    display_name=f"User{u}",
                    channel_id=f"ch{u % 3}",
                    text=_sentence(rng),
                    timestamp=t0 + timedelta(minutes=10),
                )
                where = await engine.memory.where(msg)
                t = time.perf_counter()
                ctx = await engine.memory.context(msg, msg.text, where, None)
                contexts.append((time.perf_counter() - t) * 1000)
                tokens.append(ctx.total_tokens)
            facts = await store.count_facts(None)
        finally:
            await engine.aclose()
            await store.aclose()
    return {
        "turn (memory-only)": {"n": total, "p50_ms": pct(turns, 50), "p95_ms": pct(turns, 95)},
        "acknowledgement": {"n": len(acks), "p50_ms": pct(acks, 50), "p95_ms": pct(acks, 95)},
        "context assembly": {
            "n": len(contexts),
            "p50_ms": pct(contexts, 50),
            "p95_ms": pct(contexts, 95),
            "tokens_p50": pct(tokens, 50),
        },
        "throughput": {
            "replies_per_s": total / replied,
            "writes_per_s": total / written,
            "facts": facts,
            "rss_mb": rss_mb(),
        },
    }
