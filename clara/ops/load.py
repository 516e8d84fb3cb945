"""`clara bench load`: N simulated users × M messages, concurrently, through the real discord.py
bot against the in-repo fake Discord (tests/fake_discord.py) and the scripted LLM peer
(tests/llm_stub.py). Needs a source checkout (the fakes live in tests/).

Each user talks to Clara in a DM, one message at a time (waiting for the reply, as people do);
all users at once. Every message carries a unique tag (`K<u>x<i>`); the stub model echoes it in
the reply and, when asked to extract facts, returns one fact per new tag (NOOP when the tag is
already among the EXISTING facts, as a real model would). Afterwards it checks:

- lost messages: user turns stored in SQL vs sent;
- undelivered replies: messages without a reply carrying their tag;
- duplicate / missing facts: active facts per tag (exactly one expected);
- turn overhead: end-to-end time (post → final reply seen at the fake) minus the time spent inside
  LLM calls for that message (the stub's time), p50/p95.
"""

from __future__ import annotations

import asyncio
import re
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

from clara.bench.stats import pct

REPO = Path(__file__).resolve().parent.parent.parent
TAG = re.compile(r"K\d+x\d+")
FIRST_USER = 5000
APOLOGY = "couldn't reach my language model"


def _fakes():
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    try:
        from tests.fake_discord import FakeDiscord
        from tests.llm_stub import LLMStub, Reply, json_reply, last_user_text
    except ImportError as exc:  # an installed wheel has no tests/
        raise RuntimeError(f"clara bench load needs a source checkout with tests/ ({exc})") from None
    return FakeDiscord, LLMStub, Reply, json_reply, last_user_text


class Model:
    """The stub model's behaviour. `faults` (a list) is consumed first for chat requests: each
    item is a Reply (e.g. error(500), delayed(…)) — used by the fault tests."""

    def __init__(self, reply_cls, json_reply, last_user_text, delay: float = 0.0):
        self.Reply, self.json_reply, self.last_user_text = reply_cls, json_reply, last_user_text
        self.delay = delay
        self.faults: list = []
        self.extract_faults: list = []

    def __call__(self, body):
        if body.get("tools"):
            if self.faults:
                return self.faults.pop(0)
            text = self.last_user_text(body)
            return self.Reply(text=f"Got it: {' '.join(TAG.findall(text)) or text[-80:]}", delay=self.delay)
        if body.get("response_format"):
            if self.extract_faults:
                return self.extract_faults.pop(0)
            prompt = body["messages"][-1]["content"]
            existing_part, _, new_part = prompt.partition("Messages from ")
            speaker = re.search(r"User's name[^:]*: (.+)", prompt)
            who = speaker.group(1).strip() if speaker else "someone"
            known = {}
            for line in existing_part.splitlines():
                m = re.match(r"(\d+): .*?(K\d+x\d+)", line)
                if m:
                    known[m.group(2)] = int(m.group(1))
            facts = []
            for tag in dict.fromkeys(TAG.findall(new_part)):
                fact = {
                    "action": "ADD",
                    "target_id": None,
                    "content": f"{who}'s locker tag is {tag}",
                    "kind": "biographical",
                    "subject": who,
                    "importance": 5,
                    "entities": [],
                    "relation": None,
                    "event_date": None,
                }
                if tag in known:
                    fact.update(action="NOOP", target_id=known[tag])
                facts.append(fact)
            return self.json_reply({"facts": facts})
        return self.Reply(text="A short summary.")


def _timed(llm, log: list):
    """Record (tags in the last user message, seconds) for every chat/completion call."""
    real_complete, real_stream = llm.complete, llm.stream

    def tags_of(messages) -> tuple[str, ...]:
        for m in reversed(messages):
            role = getattr(m, "role", None) or (m.get("role") if isinstance(m, dict) else None)
            if role == "user":
                content = getattr(m, "content", None) if not isinstance(m, dict) else m.get("content")
                return tuple(TAG.findall(str(content)))
        return ()

    async def complete(messages, **kw):
        t0 = time.perf_counter()
        try:
            return await real_complete(messages, **kw)
        finally:
            if kw.get("tools") or not kw.get("json_mode"):
                log.append((tags_of(messages), time.perf_counter() - t0))

    async def stream(messages, **kw):
        t0 = time.perf_counter()
        try:
            async for ev in real_stream(messages, **kw):
                yield ev
        finally:
            log.append((tags_of(messages), time.perf_counter() - t0))

    llm.complete, llm.stream = complete, stream
    return llm


async def run_load(
    users: int = 50,
    messages: int = 20,
    *,
    database_url: str | None = None,
    data_dir: Path | None = None,
    llm_delay: float = 0.0,
    reply_timeout: float = 60.0,
    provider_timeout: float = 10.0,
    llm_timeout: float = 15.0,
    embedder=None,
    progress=None,
    model_hook=None,
) -> dict:
    """Run the load and return the figures (see the module docstring). `model_hook(model)` may
    queue faults on the stub model before the run; a reply that is the pipeline's apology ("couldn't
    reach my language model") counts as delivered (and is counted in `apologies`)."""
    FakeDiscord, LLMStub, Reply, json_reply, last_user_text = _fakes()
    from clara.chat import ChatEngine
    from clara.discord_adapter.bot import ClaraBot
    from clara.discord_adapter.settings import DiscordSettings
    from clara.llm import OpenAICompatProvider
    from clara.settings import Settings
    from storage import FactStore, StoreConfig

    tmp = tempfile.TemporaryDirectory(prefix="clara-load-")
    data_dir = Path(data_dir or tmp.name)
    model = Model(Reply, json_reply, last_user_text, delay=llm_delay)
    if model_hook:
        model_hook(model)
    stub = LLMStub(responder=model).start()
    llm_log: list = []
    llm = _timed(
        OpenAICompatProvider(
            base_url=stub.base_url, api_key="k", model="load-model", timeout=provider_timeout, max_retries=1
        ),
        llm_log,
    )
    store = await FactStore.open(StoreConfig(database_url=database_url, data_dir=data_dir), embedder=embedder)
    engine = ChatEngine(store, llm, settings=Settings(CLARA_DATA_DIR=data_dir), llm_timeout=llm_timeout)
    fake = FakeDiscord(token="load-token", app_owner_id=1)
    await fake.start()
    guild = fake.add_guild("Load", owner_id=1)
    uids = [FIRST_USER + u for u in range(users)]
    for uid in uids:
        fake.add_member(guild, uid, f"user{uid}")
    patch = fake.patch_discord()
    bot = ClaraBot(engine, DiscordSettings(discord_edit_interval=0.2))
    e2e: dict[str, float] = {}
    undelivered: list[str] = []
    apologies: list[str] = []
    done = 0
    started = time.perf_counter()
    try:
        async with fake.running(bot):

            async def person(u: int, uid: int) -> None:
                nonlocal done
                dm = fake.dm_channel(uid)
                for i in range(messages):
                    tag = f"K{u}x{i}"
                    t0 = time.perf_counter()
                    posted = await fake.post_message(dm, uid, f"Please remember my locker tag is {tag} for now")
                    try:
                        got = await fake.wait_for_message(
                            dm,
                            lambda m, tag=tag: tag in m["content"] or APOLOGY in m["content"],
                            after=posted,
                            timeout=reply_timeout,
                        )
                        if APOLOGY in got["content"]:
                            apologies.append(tag)
                        else:
                            e2e[tag] = time.perf_counter() - t0
                    except TimeoutError:
                        undelivered.append(tag)
                    done += 1
                    if progress:
                        progress("turns", done, users * messages)

            await asyncio.gather(*(person(u, uid) for u, uid in enumerate(uids)))
            wall = time.perf_counter() - started
            t0 = time.perf_counter()
            await engine.drain(timeout=600)
            drain_s = time.perf_counter() - t0
    finally:
        patch.restore()
        await fake.close()
        await engine.aclose()
        await llm.aclose()
        stub.stop()
    try:
        stored_turns = 0
        facts_by_tag: Counter = Counter()  # extracted facts ("<name>'s locker tag is K…")
        turns_by_tag: Counter = Counter()  # the stored turn itself (an observation, slug msg:<id>)
        for uid in uids:
            scope = f"user:{uid}"
            stored_turns += sum(
                1 for m in await store.recent_messages(scope, limit=messages * 4 + 10) if m["role"] == "user"
            )
            for f in await store.list_facts([scope], limit=messages * 10 + 50):
                bucket = turns_by_tag if (f.slug or "").startswith("msg:") else facts_by_tag
                for tag in TAG.findall(f.content):
                    bucket[tag] += 1
        llm_time: dict[str, float] = defaultdict(float)
        for tags, secs in llm_log:
            for t in tags:
                llm_time[t] += secs
        overhead = [max(0.0, e2e[t] - llm_time.get(t, 0.0)) * 1000 for t in e2e]
        tags = [f"K{u}x{i}" for u in range(users) for i in range(messages)]
        return {
            "users": users,
            "messages_per_user": messages,
            "turns": users * messages,
            "lost_messages": users * messages - stored_turns,
            "undelivered_replies": len(undelivered),
            "duplicate_facts": sum(max(0, facts_by_tag[t] - 1) + max(0, turns_by_tag[t] - 1) for t in tags),
            "missing_facts": sum(1 for t in tags if facts_by_tag[t] == 0),
            "missing_turn_facts": sum(1 for t in tags if turns_by_tag[t] == 0),
            "apologies": len(apologies),
            "memory_jobs_left": await store.jobs.count(("pending", "running", "failed")),
            "turn_e2e_p50_ms": pct([v * 1000 for v in e2e.values()], 50),
            "turn_e2e_p95_ms": pct([v * 1000 for v in e2e.values()], 95),
            "turn_overhead_p50_ms": pct(overhead, 50),
            "turn_overhead_p95_ms": pct(overhead, 95),
            "llm_call_p50_ms": pct([s * 1000 for _, s in llm_log], 50),
            "turns_per_s": users * messages / wall if wall else float("nan"),
            "wall_s": wall,
            "drain_s": drain_s,
            "backend": store.dialect,
        }
    finally:
        await store.aclose()
        tmp.cleanup()
