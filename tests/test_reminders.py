"""The reminders plugin: natural-language and recurring reminders in the user's timezone, delivery
that survives restarts without repeats (a delivery log unique per occurrence), DST-correct weekly
reminders, the create_reminder tool for the LLM and other plugins, and the opt-in proactive loop
(rules and LLM decisions, quiet hours, minimum gap, engagement tracking, opt-out) — all on a
simulated clock (`host.run_job(..., now=t)`)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
from sqlalchemy import text

from clara.plugin_api import Invocation, Level
from clara.plugin_host import PluginHost
from plugins.reminders import proactive as P
from plugins.reminders import timeparse as T
from storage.clock import ManualClock

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)  # a Tuesday
TABLES = ("reminders_reminders", "reminders_deliveries", "reminders_activity", "reminders_proactive", "reminders_notes")


class Sent(list):
    async def __call__(self, target: str, text: str) -> None:
        self.append((target, text))


@pytest.fixture
def clock() -> ManualClock:
    """The one clock of the store, the host and its plugins: frozen at T0, moved by the tests."""
    return ManualClock(T0)


def inv(user: str = "alice", now: datetime = T0, *, dm: bool = False, channel: str = "c1", level=Level.MEMBER):
    return Invocation(
        user_id=user,
        display_name=user.title(),
        channel_id=channel,
        guild_id=None if dm else "g1",
        is_dm=dm,
        level=level,
        now=now,
        user_scope=f"user:{user}",
        conversation_scope=f"user:{user}" if dm else f"channel:{channel}",
    )


async def make_host(store, sent: Sent, llm=None) -> PluginHost:
    h = PluginHost(store, packages="plugins", sender=sent, llm=llm)
    res = await h.load("reminders")
    assert res.ok, res.error
    return h


@pytest.fixture
async def env(store, clock):
    sent = Sent()
    h = await make_host(store, sent)
    yield SimpleNamespace(h=h, clock=clock, sent=sent, store=store)
    await h.aclose()


async def run(h, cmd, args, user="alice", now=T0, ok=True, **kw):
    res = await h.run_command(inv(user, now, **kw), cmd, args)
    assert res is not None
    assert res.error != ok, res.text
    return res


async def counts(store) -> dict[str, int]:
    async with store.engines.reader.connect() as conn:
        return {t: (await conn.execute(text(f"SELECT count(*) FROM {t}"))).scalar_one() for t in TABLES}


async def tick(h, t):
    assert await h.run_job("reminders", "tick", now=t)


# ------------------------------------------------------------------------------ parsing
@pytest.mark.parametrize(
    "given, cron, rest",
    [
        ("every Monday 9:00 standup", "0 9 * * mon", "standup"),
        ("every weekday at 7:30am gym", "30 7 * * mon-fri", "gym"),
        ("every monday and friday at 5pm review", "0 17 * * mon,fri", "review"),
        ("every day water plants", "0 9 * * *", "water plants"),
        ("cron 0 9 * * 1-5 stand up", "0 9 * * mon-fri", "stand up"),
        ("every 15 minutes stretch", "*/15 * * * *", "stretch"),
    ],
)
def test_recurrence_parsing(given, cron, rest):
    assert T.parse_recurrence(given) == (cron, rest)


def test_split_when_in_the_users_timezone():
    now = datetime(2026, 11, 21, 19, 0, tzinfo=UTC)  # 20:00 in Berlin
    assert T.split_when("in 2 hours to call Anna", now, "Europe/Berlin") == (now + timedelta(hours=2), "call Anna")
    when, rest = T.split_when("tomorrow 9am call Anna", now, "Europe/Berlin")
    assert (when, rest) == (datetime(2026, 11, 22, 8, 0, tzinfo=UTC), "call Anna")
    when, rest = T.split_when("dinner with Bob tomorrow at 7pm", now, "America/New_York")
    assert (when, rest) == (datetime(2026, 11, 23, 0, 0, tzinfo=UTC), "dinner with Bob")


# ------------------------------------------------------------------------------ reminders
async def test_reminder_persists_across_restart_and_fires_once(env, store):
    res = await run(env.h, "remind", "me in 2 hours to call Anna")
    assert "#1" in res.text and "call Anna" in res.text
    await env.h.aclose()  # "restart": a new host on the same database
    sent2 = Sent()
    h2 = await make_host(store, sent2)
    try:
        await tick(h2, T0 + timedelta(minutes=119))
        assert sent2 == []
        for m in range(120, 126):
            await tick(h2, T0 + timedelta(minutes=m))
        assert sent2 == [("channel:c1", "⏰ Reminder for Alice: call Anna")]
        await h2.aclose()
        sent3 = Sent()
        h3 = await make_host(store, sent3)  # another restart: nothing is repeated
        for m in range(126, 200, 7):
            await tick(h3, T0 + timedelta(minutes=m))
        assert sent3 == []
        await h3.aclose()
    finally:
        env.h = await make_host(store, env.sent)  # for the fixture's teardown
    async with store.engines.reader.connect() as conn:
        log = (await conn.execute(text("SELECT reminder_id, status FROM reminders_deliveries"))).all()
        hist = (
            await conn.execute(text("SELECT content FROM messages WHERE role = 'assistant' AND content LIKE '%Anna%'"))
        ).all()
    assert [tuple(r) for r in log] == [(1, "sent")]
    assert len(hist) == 1  # written into the channel's conversation history


async def test_missed_reminder_is_delivered_late_with_a_note_and_dm_target(env):
    await run(env.h, "timezone", "Europe/Berlin")
    await run(env.h, "remind", "dm tomorrow 9:00 dentist")  # 08:00 UTC on Dec 2
    await tick(env.h, datetime(2026, 12, 2, 11, 30, tzinfo=UTC))  # the bot was down until 11:30
    assert len(env.sent) == 1
    target, msg = env.sent[0]
    assert target == "user:alice" and msg.startswith("⏰ Reminder: dentist")
    assert "late" in msg and "09:00 CET" in msg
    await tick(env.h, datetime(2026, 12, 2, 11, 31, tzinfo=UTC))
    assert len(env.sent) == 1


async def test_weekly_reminder_keeps_local_time_across_dst(env, store):
    start = datetime(2026, 10, 12, 12, 0, tzinfo=UTC)  # Monday, CEST (UTC+2)
    await run(env.h, "timezone", "Europe/Berlin", now=start)
    env.clock.t = start
    await run(env.h, "remind", "here every Monday 9:00 standup", now=start)
    fired = []
    t = start
    while t < datetime(2026, 11, 3, tzinfo=UTC):
        t += timedelta(hours=1)
        before = len(env.sent)
        await tick(env.h, t)
        fired += [t] * (len(env.sent) - before)
    # DST ends on Sunday 25 October 2026: 09:00 CEST = 07:00 UTC, then 09:00 CET = 08:00 UTC.
    assert fired == [
        datetime(2026, 10, 19, 7, 0, tzinfo=UTC),
        datetime(2026, 10, 26, 8, 0, tzinfo=UTC),
        datetime(2026, 11, 2, 8, 0, tzinfo=UTC),
    ]
    assert all(m.startswith("⏰ Reminder for Alice: standup") for _, m in env.sent)
    async with store.engines.reader.connect() as conn:
        assert (await conn.execute(text("SELECT count(*) FROM reminders_deliveries"))).scalar_one() == 3


async def test_bad_input_gives_clear_errors_and_stores_nothing(env, store):
    cases = {
        "me sometime maybe": "can't tell when",
        "me yesterday to call Anna": "in the past",
        "me in 2 hours to": "empty",
        "me every fortnight on the moon": "recurrence",
        "me cron 99 9 * * 1 x": "cron",
        "#general in 2 hours x": "mention the channel",
    }
    for args, why in cases.items():
        res = await run(env.h, "remind", args, ok=False)
        assert why in res.text, (args, res.text)
    res = await run(env.h, "remind", "<#123> in 2 hours x", ok=False)
    assert "mod rights" in res.text
    res = await run(env.h, "timezone", "Mars/Olympus", ok=False)
    assert "unknown timezone" in res.text
    assert (await run(env.h, "reminders", "cancel 42", ok=False)).text == "you have no reminder #42"
    ctx = env.h.loaded["reminders"].ctx
    assert "past" in await ctx.call_tool("create_reminder", inv(), {"text": "x", "when": "2020-01-01 10:00"})
    assert "invalid arguments" in await ctx.call_tool("create_reminder", inv(), {"when": "in 1 hour"})
    assert "exactly one" in await ctx.call_tool("create_reminder", inv(), {"text": "x"})
    assert "unknown timezone" in await ctx.call_tool(
        "create_reminder", inv(), {"text": "x", "when": "in 1 hour", "timezone": "Nowhere/Land"}
    )
    assert (await counts(store))["reminders_reminders"] == 0
    assert await store.settings.get("plugin:reminders", "user:alice", "timezone") is None


async def test_list_cancel_snooze_and_the_tool_other_plugins_call(env):
    await run(env.h, "remind", "me in 1 hour to stretch")
    ctx = env.h.loaded["reminders"].ctx
    out = await ctx.call_tool(
        "create_reminder",
        inv(),
        {"text": "Invoice 2026-014 is due", "when": "2026-12-05T09:00", "where": "dm", "source": "plugin:invoices"},
    )
    assert out.startswith("Reminder #2") and "your DMs" in out
    listing = (await run(env.h, "reminders", "")).text
    assert "#1" in listing and "#2" in listing and listing.index("#1") < listing.index("#2")
    assert "bob" not in (await run(env.h, "reminders", "", user="bob")).text.lower()  # per user
    assert "no reminder #1" in (await run(env.h, "reminders", "cancel 1", user="bob", ok=False)).text
    await run(env.h, "reminders", "cancel 1")
    await tick(env.h, T0 + timedelta(hours=1, minutes=1))
    assert env.sent == []
    await tick(env.h, datetime(2026, 12, 5, 9, 0, tzinfo=UTC))
    assert env.sent == [("user:alice", "⏰ Reminder: Invoice 2026-014 is due")]
    await run(env.h, "reminders", "snooze 2 30m", now=datetime(2026, 12, 5, 9, 1, tzinfo=UTC))
    env.clock.t = datetime(2026, 12, 5, 9, 1, tzinfo=UTC)
    await run(env.h, "reminders", "snooze 2 30m")
    await tick(env.h, datetime(2026, 12, 5, 9, 31, tzinfo=UTC))
    assert len(env.sent) == 2 and env.sent[1][1].startswith("⏰ Reminder: Invoice 2026-014 is due")
    assert "no reminders" in (await run(env.h, "reminders", "list")).text.lower()


# ------------------------------------------------------------------------------ proactive loop
def test_decision_parser_rejects_malformed_output():
    bad = [
        None,
        "",
        "SPEAK now!",
        "[1, 2]",
        '{"decision": "SHOUT", "reason": "x"}',
        '{"decision": "SPEAK", "reason": "x"}',  # no message
        '{"decision": "SPEAK", "reason": "", "message": "hi"}',
        '{"decision": "THINK", "reason": "x"}',  # no note
        '{"decision": "SPEAK", "reason": "x", "message": "' + "a" * 700 + '"}',
        '{"decision": "WAIT", "reason": "x"',  # truncated
        '{"decision": 3, "reason": "x"}',
    ]
    for raw in bad:
        assert P.parse_decision(raw) is None, raw
    d = P.parse_decision('```json\n{"decision": "speak", "reason": "exam today", "message": "Good luck!"}\n```')
    assert (d.action, d.reason, d.message) == ("SPEAK", "exam today", "Good luck!")
    assert P.parse_decision('{"decision": "WAIT", "reason": "nothing new"}').action == "WAIT"
    assert P.parse_decision('{"decision": "THINK", "reason": "r", "note": "n"}').note == "n"


async def proactive_setup(env, monkeypatch, users=("alice", "bob")):
    monkeypatch.setenv("PROACTIVE_ENABLED", "1")
    for u in users:
        await env.store.ensure_scope(f"user:{u}", "user", owner=u)
        await run(env.h, "timezone", "Europe/Berlin", user=u)
        await run(env.h, "proactive", "on", user=u, dm=True)
        # Two things said earlier (real created_at), both dated Wednesday 2 December.
        exam = datetime(2026, 12, 2, tzinfo=UTC)
        await env.store.add(f"{u} has a driving exam on Wednesday", f"user:{u}", kind="event", valid_from=exam)
        await env.store.add(f"{u} plans to call the landlord Wednesday", f"user:{u}", kind="plan", valid_from=exam)
        await env.h.emit("message", inv(u, T0, dm=True), "hi")


async def simulate(env, start, end, step=timedelta(minutes=15), replies=()):
    """Tick from start to end; users in `replies` answer each proactive message 30 minutes later."""
    log = []
    t = start
    due_replies: list[tuple[datetime, str]] = []
    while t <= end:
        for when, who in [r for r in due_replies if r[0] <= t]:
            await env.h.emit("message", inv(who, when, dm=True), "thanks!")
            due_replies.remove((when, who))
        before = len(env.sent)
        await tick(env.h, t)
        for target, msg in env.sent[before:]:
            who = target.split(":", 1)[1]
            log.append((t, who, msg))
            if who in replies:
                due_replies.append((t + timedelta(minutes=30), who))
        t += step
    return log


async def test_quiet_hours_gap_and_engagement_change_the_next_decision(env, monkeypatch, store):
    await proactive_setup(env, monkeypatch)
    log = await simulate(env, T0, datetime(2026, 12, 3, 9, 0, tzinfo=UTC), replies=("alice",))
    by = {u: [(t, m) for t, w, m in log if w == u] for u in ("alice", "bob")}
    # Nothing on Tuesday (the events are tomorrow: THINK notes), nothing in quiet hours (22:00-08:00
    # Berlin): the first message is at 08:00 local = 07:00 UTC on Wednesday, for both.
    assert by["alice"][0][0] == by["bob"][0][0] == datetime(2026, 12, 2, 7, 0, tzinfo=UTC)
    assert "Today's the day" in by["alice"][0][1]
    # Alice replied: the second reason is raised after the 2-hour minimum gap.
    assert [t for t, _ in by["alice"]] == [
        datetime(2026, 12, 2, 7, 0, tzinfo=UTC),
        datetime(2026, 12, 2, 9, 0, tzinfo=UTC),
    ]
    # Bob ignored it: nothing while it is unanswered; after 8 h it counts as ignored and the gap
    # doubles (4 h) — the second message comes only then, at 15:00 UTC.
    assert [t for t, _ in by["bob"]] == [
        datetime(2026, 12, 2, 7, 0, tzinfo=UTC),
        datetime(2026, 12, 2, 15, 0, tzinfo=UTC),
    ]
    async with store.engines.reader.connect() as conn:
        rows = (await conn.execute(text("SELECT user_id, outcome FROM reminders_proactive ORDER BY id"))).all()
        streak = (
            await conn.execute(text("SELECT ignored_streak FROM reminders_activity WHERE user_id = 'bob'"))
        ).scalar_one()
        notes = (await conn.execute(text("SELECT count(*) FROM reminders_notes WHERE user_id = 'alice'"))).scalar_one()
    assert [tuple(r) for r in rows] == [
        ("alice", "engaged"),
        ("bob", "ignored"),
        ("alice", "engaged"),
        ("bob", "ignored"),
    ]
    assert streak == 2 and notes >= 2  # both of bob's went unanswered; THINK on Tuesday: "Tomorrow: …"
    # Every proactive message is in the DM's conversation history.
    async with store.engines.reader.connect() as conn:
        hist = (
            await conn.execute(text("SELECT count(*) FROM messages WHERE role = 'assistant' AND content LIKE '%day%'"))
        ).scalar_one()
    assert hist >= 2


async def test_opt_out_and_global_switch_stop_everything(env, monkeypatch):
    await proactive_setup(env, monkeypatch)
    await run(env.h, "proactive", "off", user="bob")
    monkeypatch.setenv("PROACTIVE_ENABLED", "0")
    quiet = await simulate(env, T0, datetime(2026, 12, 2, 12, 0, tzinfo=UTC), step=timedelta(hours=1))
    assert quiet == []
    monkeypatch.setenv("PROACTIVE_ENABLED", "1")
    log = await simulate(env, datetime(2026, 12, 2, 12, 0, tzinfo=UTC), datetime(2026, 12, 2, 13, 0, tzinfo=UTC))
    assert {w for _, w, _ in log} == {"alice"}  # bob opted out
    assert "off" in (await run(env.h, "proactive", "status", user="bob")).text


async def test_llm_decisions_with_fallback_on_malformed_output(store, clock, monkeypatch):
    answers = ["this is not json", '{"decision": "SPEAK", "reason": "exam today", "message": "Good luck today!"}']

    class FakeLLM:
        async def complete(self, messages, **kw):
            assert kw.get("json_mode") and "WAIT" in messages[0].content
            return SimpleNamespace(text=answers.pop(0) if answers else '{"decision": "WAIT", "reason": "done"}')

    sent = Sent()
    h = await make_host(store, sent, llm=FakeLLM())
    env = SimpleNamespace(h=h, clock=clock, sent=sent, store=store)
    try:
        await proactive_setup(env, monkeypatch, users=("alice", "bob"))
        await run(h, "proactive", "quiet off", user="bob")
        await run(h, "proactive", "quiet off", user="alice")
        log = await simulate(env, datetime(2026, 12, 2, 7, 0, tzinfo=UTC), datetime(2026, 12, 2, 7, 0, tzinfo=UTC))
    finally:
        await h.aclose()
    # alice got the malformed answer → rules; bob got the model's SPEAK.
    assert [(w, m.split(":")[0]) for _, w, m in log] == [("alice", "Today's the day"), ("bob", "Good luck today!")]
    async with store.engines.reader.connect() as conn:
        reasons = (await conn.execute(text("SELECT reason FROM reminders_proactive ORDER BY id"))).scalars().all()
    assert reasons[0].startswith("rules:") and reasons[1] == "llm: exam today"


async def test_forgetme_and_export(env, monkeypatch, store):
    await proactive_setup(env, monkeypatch, users=("alice", "bob"))
    await run(env.h, "remind", "me in 2 hours to call Anna")
    await run(env.h, "remind", "me in 3 hours to call Ben", user="bob")
    await simulate(env, datetime(2026, 12, 2, 7, 0, tzinfo=UTC), datetime(2026, 12, 2, 7, 0, tzinfo=UTC))
    exported = (await env.h.export_user_data("alice"))["reminders"]
    assert [r["text"] for r in exported["reminders_reminders"]] == ["call Anna"]
    assert exported["settings"]["timezone"] == "Europe/Berlin" and exported["settings"]["proactive"] is True
    assert len(exported["reminders_proactive"]) == 1 and len(exported["reminders_activity"]) == 1
    json.dumps(exported)  # plain JSON
    before = await counts(store)
    erased = (await env.h.delete_user_data("alice"))["reminders"]
    after = await counts(store)
    assert erased == sum(before.values()) - sum(after.values()) + 2  # + 2 settings (timezone, proactive)
    assert (await env.h.export_user_data("alice"))["reminders"] == {t: [] for t in TABLES} | {"settings": {}}
    assert [r["text"] for r in (await env.h.export_user_data("bob"))["reminders"]["reminders_reminders"]] == [
        "call Ben"
    ]


async def test_failed_send_is_retried_and_stale_recurring_occurrences_are_skipped(env, store):
    class Flaky(Sent):
        down = True

        async def __call__(self, target, text):
            if self.down:
                raise ConnectionError("gateway down")
            self.append((target, text))

    env.h.sender = flaky = Flaky()
    await run(env.h, "remind", "me in 1 hour to stretch")
    await run(env.h, "remind", "me every day 8:00 vitamins")  # UTC: 08:00 daily
    await tick(env.h, T0 + timedelta(hours=1))  # transport down: logged as failed, not lost
    flaky.down = False
    await tick(env.h, T0 + timedelta(hours=1, minutes=1))
    await tick(env.h, T0 + timedelta(hours=1, minutes=2))
    assert flaky == [("channel:c1", "⏰ Reminder for Alice: stretch")]  # retried within a minute: not "late"
    # Down for three days: the daily reminder's missed occurrences beyond the 6 h grace are skipped,
    # not replayed; the next one fires on time.
    flaky.clear()
    await tick(env.h, datetime(2026, 12, 4, 20, 0, tzinfo=UTC))
    assert flaky == []
    await tick(env.h, datetime(2026, 12, 5, 8, 0, tzinfo=UTC))
    assert [m.split("\n")[0] for _, m in flaky] == ["⏰ Reminder for Alice: vitamins"]
    async with store.engines.reader.connect() as conn:
        rows = (
            await conn.execute(
                text("SELECT status, count(*) FROM reminders_deliveries GROUP BY status ORDER BY status")
            )
        ).all()
    assert dict(rows) == {"sent": 2, "skipped": 3}


async def test_invoices_set_a_due_date_reminder_through_the_reminders_plugin(store, clock):
    from clara.plugin_api import Invocation, Level
    from clara.plugin_host import PluginHost

    now = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)
    sent: list[tuple[str, str]] = []

    async def sender(target, text):
        sent.append((target, text))

    clock.set(now)
    host = PluginHost(store, sender=sender)
    await host.load("reminders")
    await host.load("invoices")
    await store.ensure_scope("user:bella", "user", owner="bella")
    inv = Invocation(
        user_id="bella",
        display_name="Bella",
        channel_id="c1",
        guild_id=None,
        is_dm=True,
        level=Level.MEMBER,
        now=now,
        user_scope="user:bella",
        conversation_scope="user:bella",
    )
    try:
        await host.run_command(inv, "client", 'add "Claudia Alz"')
        res = await host.run_command(inv, "invoice", 'add 2026-020 "Claudia Alz" $150 due 2026-11-05')
        assert "remind you on the due date" in res.text, res.text
        listing = await host.run_command(inv, "reminders", "")
        assert "2026-020" in listing.text
        await host.run_job("reminders", "tick", now=datetime(2026, 11, 5, 9, 1, tzinfo=UTC))
        assert any("2026-020" in text for _, text in sent)
    finally:
        await host.aclose()
