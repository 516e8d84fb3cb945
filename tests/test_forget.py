"""Forgotten means forgotten. A user's words go in through every path (DM, a shared channel where
another user's bot reply quotes them, `!remember`, a text attachment, an agent's MCP fact copying
them, an invoice note, a reminder delivered to the channel, an `!export` file on disk); after
`!forgetme` — or the purge the CLI and the dashboard run — no copy of them survives: not in the
raw bytes of any file under the data dir (SQLite database and WAL, vector index, exports) after a
checkpoint, not in the text of any row of any table (PostgreSQL), while the other user's own words,
their conversation (minus the quote) and their recall are intact. Plus the pieces: quote
detection (verbatim, code-like words, provenance for paraphrases), the reply provenance the chat
records, the store-level redaction of summaries, agents' facts, contexts and aliases, the SQLite file's
stale bytes and the vector index's deleted points."""

from __future__ import annotations

import secrets
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from mcp import Client
from sqlalchemy import select, text

from clara.chat import ChatEngine, IncomingMessage
from clara.dashboard import DashboardSettings, DashboardState
from clara.dashboard.service import DashboardService
from clara.forget import save_files, user_files
from clara.llm import OpenAICompatProvider
from clara.mcp_server import MemoryService, stdio_server
from clara.messages import Attachment
from clara.plugin_host import PluginHost
from clara.settings import Settings
from storage.clock import ManualClock
from storage.models import FactRow, MessageRow
from storage.redact import REMOVED, Quotes, code_like
from storage.vectors import EdgeIndex, VectorPoint
from tests.conftest import assert_private, two_users
from tests.llm_stub import LLMStub, Reply

pytestmark = pytest.mark.timeout(300)


def marker() -> str:
    """A random token no stemmer or tokenizer changes (lower-case hex letters and digits)."""
    return "zq" + secrets.token_hex(6) + "7"


def absent(blob: str | bytes, m: str) -> bool:
    """`m` is nowhere in `blob` — nor its tail (FTS5 stores a term after a shared prefix)."""
    needles = (m, m[-9:])
    if isinstance(blob, bytes):
        return not any(n.encode() in blob for n in needles)
    return not any(n in blob for n in needles)


T0 = datetime(2026, 5, 4, 10, 0, tzinfo=UTC)


@pytest.fixture
def clock() -> ManualClock:
    """The store's (and so the host's and the engine's) clock: frozen at T0, moved by the test."""
    return ManualClock(T0)


class Sent(list):
    async def __call__(self, target: str, text: str) -> None:
        self.append((target, text))


def checkpoint(db: Path) -> None:
    con = sqlite3.connect(db)
    try:
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        con.close()


async def everything(store) -> bytes | str:
    """SQLite: the raw bytes of every file under the data dir after a WAL checkpoint.
    PostgreSQL: the text of every row of every table of the schema."""
    if store.dialect == "sqlite":
        checkpoint(Path(store.engines.writer.url.database))
        root = Path(store.config.data_dir)
        return b"\n".join(p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file())
    out = []
    async with store.engines.reader.connect() as conn:
        tables = (
            await conn.execute(text("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"))
        ).scalars()
        for t in list(tables):
            out += [str(v) for v in (await conn.execute(text(f'SELECT t::text FROM "{t}" t'))).scalars()]
    return "\n".join(out)


# ---------------------------------------------------------------------------------- the floor
@pytest.fixture
async def world(store):
    data_dir = Path(store.config.data_dir)
    t0 = T0
    sent = Sent()
    host = PluginHost(store, packages="plugins", sender=sent)
    for name in ("invoices", "reminders"):
        res = await host.load(name)
        assert res.ok, res.error
    engine = ChatEngine(store, settings=Settings(CLARA_DATA_DIR=data_dir, session_idle_minutes=30), plugins=host)
    service = MemoryService(store, {"coder": ["channel:c1"]})
    yield engine, host, service, t0, data_dir
    await service.aclose()
    await engine.aclose()
    await host.aclose()


def msg(text, user="alice", channel="c1", dm=False, at=None, **kw) -> IncomingMessage:
    return IncomingMessage(
        user_id=user,
        display_name=user.title(),
        channel_id=channel,
        text=text,
        is_dm=dm,
        guild_id=None if dm else "g1",
        timestamp=at or T0,
        **kw,
    )


async def populate(world) -> tuple[dict[str, str], dict[str, str]]:
    """Alice's words through every path, Bob's own words around them. Returns (alice's markers,
    bob's markers) by path."""
    engine, host, service, t0, data_dir = world
    a = {k: marker() for k in ("dm", "channel", "remember", "attachment", "mcp", "invoice", "reminder")}
    b = {k: marker() for k in ("said", "remember")}
    at = iter(t0 + timedelta(seconds=i) for i in range(1000))

    async def say(text, **kw):
        reply = await engine.handle(msg(text, at=next(at), **kw))
        assert not reply.error, reply.text
        return reply

    await say(f"my passport number is {a['dm']}", dm=True, channel="dm-alice")
    await say(f"the vault code for the office is {a['channel']}")
    await say(f"!remember my gym locker combination is {a['remember']}")
    await say("", attachments=[Attachment("todo.txt", f"shopping list: oat milk and {a['attachment']}")])
    await say(f"my bike lock code is {a['mcp']}")
    await say(f'!client add Zed Corp "notes=met at the fair {a["invoice"]}"')
    due = (t0 + timedelta(days=30)).date().isoformat()
    await say(f'!invoice add 2026-001 "Zed Corp" $120 due {due} note {a["invoice"]} consulting')
    await say(f"!remind me in 1 hour to call {a['reminder']}")
    await engine.drain()
    # An agent copies what Alice said in the shared channel into a fact of its own.
    async with Client(stdio_server(service, "coder")) as coder:
        res = await coder.call_tool(
            "memory_store_fact",
            {"content": f"Alice told the team: my bike lock code is {a['mcp']}", "scope": "channel:c1"},
        )
        assert not res.is_error, res.content
    # Bob asks; Clara's reply in Bob's conversation quotes Alice (the reproduced bug).
    reply = await say("what is the vault code for the office?", user="bob")
    assert a["channel"] in reply.text
    await say(f"I keep bees on my allotment, hive number {b['said']}", user="bob")
    await say(f"!remember my bee suit is size {b['remember']}", user="bob")
    # The reminder fires into the shared channel (a plugin's proactive message about Alice).
    host.clock.t = t0 + timedelta(minutes=61)
    assert await host.run_job("reminders", "tick", now=t0 + timedelta(minutes=61))
    sent = host.sender
    assert any(a["reminder"] in t for _, t in sent)
    exported = await engine.handle(msg("!export", at=next(at)))
    assert save_files(data_dir, exported.files) == user_files(data_dir, "alice")
    await engine.drain()
    await engine.memory.sweep(t0 + timedelta(hours=3))  # sessions close: summaries, channel summary
    await engine.drain()
    assert a["channel"] in (await engine.store.find_slug("channel:c1", "channel-summary")).content
    return a, b


async def check_forgotten(world, a: dict[str, str], b: dict[str, str]) -> None:
    engine, host, service, t0, data_dir = world
    store = engine.store
    await engine.drain()
    blob = await everything(store)
    left = {k: m for k, m in a.items() if not absent(blob, m)}
    assert not left, f"copies of Alice's words survived: {left}"
    assert user_files(data_dir, "alice") == []
    for m in b.values():  # Bob's own words are all still there
        assert not absent(blob, m)
    # Bob's conversation: his question and Clara's reply are kept, minus Alice's words.
    async with store.engines.reader.connect() as conn:
        rows = (await conn.execute(select(MessageRow.role, MessageRow.content).order_by(MessageRow.id))).all()
    contents = [r.content for r in rows]
    assert "what is the vault code for the office?" in contents
    quoted = [r.content for r in rows if r.role == "assistant" and REMOVED in r.content]
    assert quoted and all("Here is what I remember" in c for c in quoted)
    # Bob's recall still works and never returns anything of Alice's.
    out = (await engine.handle(msg("!recall bees allotment hive", user="bob", at=t0 + timedelta(hours=4)))).text
    assert b["said"] in out
    readable = await store.readable_scopes("bob")
    for q in ("vault code office", "passport number", "bike lock code", "gym locker", "shopping list", "Zed Corp"):
        for hit in await store.recall(q, readable, k=50, include_superseded=True):
            assert all(m not in hit.fact.content + (hit.fact.context or "") for m in a.values()), hit.fact
    await assert_private(store, "passport gym locker", "bob", "user:alice")
    left_in_plugins = await host.export_user_data("alice")
    assert all(rows == [] for rows in left_in_plugins["invoices"].values())
    assert all(not rows for t, rows in left_in_plugins["reminders"].items() if t != "settings")


async def test_forgetme_leaves_no_copy_anywhere(world):
    engine = world[0]
    a, b = await populate(world)
    before = await everything(engine.store)
    assert all(not absent(before, m) for m in a.values()), "every path must really store its marker"
    code = (await engine.handle(msg("!forgetme"))).text.split("`!forgetme ")[1][:6]
    done = await engine.handle(msg(f"!forgetme {code}"))
    assert not done.error and "cut your words out of" in done.text, done.text
    await check_forgotten(world, a, b)


async def test_dashboard_and_cli_purge_leave_no_copy_anywhere(world):
    engine = world[0]
    a, b = await populate(world)
    state = DashboardState(engine.store, settings=DashboardSettings(token="t" * 20, port=0), engine=engine)
    try:
        result = await DashboardService(state).purge_user("alice")  # what the CLI's forget_user does too
    finally:
        state.errors.uninstall()
    assert result["report"].facts and result["report"].redacted and result["plugins"]["invoices"]
    await check_forgotten(world, a, b)


# ------------------------------------------------------------------- quote detection (pure)
def test_quotes_verbatim_codes_and_paraphrases():
    q = Quotes(["Alice: my locker code is 4471x and I work at Acme Robotics", "I adore zydeco accordion music"])
    listing = "Here is what I remember:\n1. Alice: my locker code is 4471x  — a minute ago [#3]\nAnything else?"
    assert q.redact(listing) == "Here is what I remember:\n1. [removed]  — a minute ago [#3]\nAnything else?"
    assert q.redact("Her code? It is 4471x.") == "Her code? It [removed]."  # a code-like word alone
    assert q.redact("She works at Acme Robotics, I think.") is None  # three content words are not a quote
    assert q.redact("I work at Acme Robotics too", allowed=["I work at Acme Robotics"]) is None  # the reader's own
    assert q.redact("Alice said she works at Acme Robotics too") is None
    # A paraphrase is only caught with provenance, sentence by sentence, minus the reader's words.
    para = "Sure! Alice adores zydeco accordion. Ask her about it."
    assert q.redact(para) is None
    assert q.redact(para, allowed=["what music does alice like?"], used=["I adore zydeco accordion music"]) == (
        "Sure! [removed] Ask her about it."
    )
    assert q.redact("Zydeco is a genre.", allowed=["tell me about zydeco"], used=["I adore zydeco music"]) is None
    assert [w for w in ("4471", "2026", "xk44", "12345", "abc", "a1") if code_like(w)] == ["4471", "xk44", "12345"]


# -------------------------------------------------------------- provenance of replies (chat)
async def test_reply_provenance_lets_purge_cut_paraphrases(store, tmp_path):
    """With an LLM, Clara's reply to Bob paraphrases Alice's fact: no verbatim quote, but the reply
    recorded the facts it was written from, so the purge cuts the sentence that carries them."""
    async with LLMStub() as stub:
        stub.responder = lambda body: Reply(text="") if body.get("response_format") else None
        llm = OpenAICompatProvider(base_url=stub.base_url, api_key="k", model="m")
        engine = ChatEngine(store, llm, settings=Settings(CLARA_DATA_DIR=tmp_path))
        try:
            await engine.handle(msg("I adore zydeco accordion music"))
            await engine.drain()
            stub.script(["Good question! Alice adores zydeco accordion, as far as I know. Anything else?"])
            await engine.handle(msg("what music does alice like?", user="bob"))
            async with store.engines.reader.connect() as conn:
                row = (
                    await conn.execute(
                        select(MessageRow.id, MessageRow.provenance).where(MessageRow.role == "assistant")
                    )
                ).all()[-1]
                theirs = (await conn.execute(select(FactRow.id).where(FactRow.created_by == "alice"))).scalars().all()
            assert set(theirs) & set(row.provenance["facts"])  # the reply says what it used
            report = await store.purge_user("alice")
            assert report.redacted >= 1
            reply = (await store.sessions.message(row.id)).content
            assert reply == "Good question! [removed] Anything else?"
            assert (await store.sessions.message(row.id - 1)).content == "what music does alice like?"
            async with store.engines.reader.connect() as conn:
                prov = (await conn.execute(select(MessageRow.provenance).where(MessageRow.id == row.id))).scalar()
            assert not set(theirs) & set((prov or {}).get("facts", []))
        finally:
            await engine.aclose()
            await llm.aclose()


# ------------------------------------------------------------------ store-level redaction
async def test_purge_cuts_machine_copies_and_keeps_others_words(store):
    await two_users(store)
    await store.ensure_scope("channel:c1", "channel", members=["alice", "bob"])
    secret = marker()
    mine = await store.add(f"alice: my sister Anna lives at 12 Rua {secret}", "channel:c1", actor="alice")
    # An agent's copy, a channel summary (no author), Bob's observation whose context is the bot's reply.
    agent = await store.add(f"Heard in #c1: Anna lives at 12 Rua {secret}", "channel:c1", created_by="agent:coder")
    summary = await store.add(
        f"Channel summary: Alice said Anna lives at 12 Rua {secret}.", "channel:c1", kind="summary"
    )
    await store.supersede(summary, f"Channel summary: Anna lives at 12 Rua {secret}; Bob keeps bees.")
    bobs = await store.add(
        "bob: cool, thanks", "channel:c1", actor="bob", context=f"Clara: Anna lives at 12 Rua {secret}"
    )
    bob_own = await store.add(f"bob: I also know 12 Rua {secret} is a nice street", "channel:c1", actor="bob")
    await store.add("Bob's invoice client Zed owes $120.", "user:bob", created_by="bob", source_ref="plugin:invoices")
    await store.graph.add_alias("channel:c1", "Anna", "alice's sister", "person")
    await store.graph.add_alias("channel:c1", "Anna", "the neighbour", "person")
    await store.graph.relate("channel:c1", ("Anna", "person"), "lives_in", ("Rua", "place"), fact_id=mine)
    await store.add("bob: Anna waved at me", "channel:c1", actor="bob", entities=["Anna"])
    await store.drain()

    report = await store.purge_user("alice")
    assert report.facts == 1 and report.redacted >= 4
    got = {f.id: f for f in await store.get_many([agent, bobs, bob_own], scopes=["channel:c1"])}
    assert secret not in got[agent].content and REMOVED in got[agent].content
    assert got[bobs].content == "bob: cool, thanks" and secret not in got[bobs].context
    assert secret in got[bob_own].content  # Bob's own words are his
    summaries = await store.list_facts(["channel:c1"], statuses=("active", "superseded"), kinds=["summary"])
    for f in summaries:
        assert secret not in f.content
        for h in await store.history(f.id):
            assert secret not in (h.old_content or "") + (h.new_content or "")
    assert "Bob keeps bees" in " ".join(f.content for f in summaries)
    assert (await store.list_facts(["user:bob"]))[0].content == "Bob's invoice client Zed owes $120."
    anna = await store.graph.resolve(["channel:c1"], "Anna")
    assert anna and anna[0].aliases == ["the neighbour"]  # kept (Bob named Anna), minus "alice s sister"
    assert await store.graph.relations(["channel:c1"], [anna[0].id]) == []  # drawn from Alice's fact
    assert await store.graph.resolve(["channel:c1"], "Rua") == []  # only Alice's fact named it
    # Their vectors are gone and the redacted facts are re-embedded from the redacted text.
    await store.drain()
    hits = await store.recall(f"12 Rua {secret}", ["channel:c1"], k=20, include_superseded=True)
    assert mine not in [h.fact.id for h in hits]
    assert all(secret not in h.fact.content for h in hits if h.fact.id != bob_own)


async def test_plugin_message_about_the_user_is_removed_from_a_shared_channel(store):
    await two_users(store)
    await store.ensure_scope("channel:c1", "channel", members=["alice", "bob"])
    gone = await store.add_message(
        "channel:c1", "Clara", "⏰ Reminder for Alice: call Anna", role="assistant", about=["alice"]
    )
    kept = await store.add_message("channel:c1", "Clara", "Good morning everyone", role="assistant")
    both = await store.add_message(
        "channel:c1", "Clara", "Alice and Bob: standup now", role="assistant", about=["alice", "bob"]
    )
    report = await store.purge_user("alice")
    assert report.messages == 1
    assert await store.sessions.message(gone) is None
    assert (await store.sessions.message(kept)).content == "Good morning everyone"
    assert (await store.sessions.message(both)) is not None  # about Bob too: kept (its provenance now Bob only)
    async with store.engines.reader.connect() as conn:
        prov = (await conn.execute(select(MessageRow.provenance).where(MessageRow.id == both))).scalar()
    assert prov == {"users": ["bob"]}


# ------------------------------------------------------------------------- physical erasure
async def test_sqlite_file_holds_no_deleted_text(store):
    """Neither free pages nor stale cells (deleted rows, copies left by page rebalancing during
    ordinary churn) keep a purged user's text in the database file."""
    if store.dialect != "sqlite":
        pytest.skip("SQLite file layout")
    await two_users(store)
    marks = [marker() for _ in range(120)]
    filler = "and some filler words to fill pages " * 8
    ids = (await store.add_many([{"content": f"alice wrote {m} {filler}"} for m in marks], "user:alice")).ids
    await store.add_many([{"content": f"bob wrote something else {i} " * 8} for i in range(120)], "user:bob")
    # Ordinary churn while Alice is still here (FAST secure-delete leaves freed pages as they were).
    for fid in ids[::3]:
        new = marker()
        marks.append(new)
        await store.supersede(fid, f"alice rewrote {new} and more filler words " * 4, actor="alice")
    await store.drain()
    await store.purge_user("alice")
    blob = await everything(store)
    assert [m for m in marks if not absent(blob, m)] == []


async def test_vector_index_compaction_drops_deleted_points(tmp_path):
    idx = EdgeIndex(tmp_path / "v", 8)
    rng = np.random.default_rng(7)
    vecs = rng.standard_normal((40, 8)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    try:
        await idx.upsert(
            [VectorPoint(i + 1, vecs[i], "user:zgone" if i < 4 else "user:kept", "active") for i in range(40)]
        )
        await idx.flush()

        def files() -> bytes:
            return b"".join(p.read_bytes() for p in (tmp_path / "v").rglob("*") if p.is_file())

        assert vecs[0].tobytes() in files() and b"zgone" in files()
        await idx.delete([1, 2, 3, 4])
        await idx.flush()
        assert vecs[0].tobytes() in files() and b"zgone" in files()  # Qdrant only marks them deleted
        await idx.compact()
        assert vecs[0].tobytes() not in files() and b"zgone" not in files()
        assert await idx.count() == 36
        assert (await idx.search(vecs[10], ["user:kept"], 1))[0][0] == 11
    finally:
        await idx.close()
    idx = EdgeIndex(tmp_path / "v", 8)  # reopens the compacted index
    try:
        assert await idx.count() == 36
    finally:
        await idx.close()
