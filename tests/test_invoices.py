"""The invoices plugin: Decimal ledger arithmetic, overdue on a past date rebuilt from history,
LLM tool calls through the real OpenAI client against the stub, memory sync (recall, privacy,
supersede with history), forgetme/export fan-out, bad input that writes nothing, CSV round
trip, per-user isolation, the daily job and the migration's downgrade."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import text

from clara.chat import ChatEngine, IncomingMessage
from clara.llm import OpenAICompatProvider
from clara.plugin_api import Invocation, Level, PluginError
from clara.plugin_host import PluginHost
from clara.settings import Settings
from plugins.invoices import ledger as L
from storage.clock import ManualClock
from tests.conftest import assert_private
from tests.llm_stub import LLMStub, Reply, json_reply, tool_call

NOW = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)


@pytest.fixture
def clock() -> ManualClock:
    """The store's clock for this module: pinned at NOW, moving with real elapsed time."""
    return ManualClock(NOW, ticking=True)


TABLES = (
    "invoices_clients",
    "invoices_invoices",
    "invoices_payments",
    "invoices_tasks",
    "invoices_events",
    "invoices_daily_summaries",
)


def inv(user: str = "alice", now: datetime = NOW, *, dm: bool = False) -> Invocation:
    return Invocation(
        user_id=user,
        display_name=user.title(),
        channel_id="c1",
        guild_id=None if dm else "g1",
        is_dm=dm,
        level=Level.MEMBER,
        now=now,
        user_scope=f"user:{user}",
        conversation_scope=f"user:{user}" if dm else "channel:c1",
    )


@pytest.fixture
async def host(store):
    h = PluginHost(store, packages="plugins")
    res = await h.load("invoices")
    assert res.ok, res.error
    yield h
    await h.aclose()


async def run(h: PluginHost, cmd: str, args: str, user: str = "alice", now: datetime = NOW, *, ok: bool = True):
    res = await h.run_command(inv(user, now), cmd, args)
    assert res is not None, f"!{cmd} is not registered"
    if ok:
        assert not res.error, f"!{cmd} {args} failed: {res.text}"
    return res


async def row_counts(store, owner: str | None = None) -> dict[str, int]:
    out = {}
    async with store.engines.reader.connect() as conn:
        for t in TABLES:
            where = " WHERE owner_id = :o" if owner else ""
            out[t] = (await conn.execute(text(f"SELECT count(*) FROM {t}{where}"), {"o": owner})).scalar_one()
        out["facts"] = (await conn.execute(text("SELECT count(*) FROM facts"))).scalar_one()
    return out


# ------------------------------------------------------------------------------ pure ledger
@pytest.mark.parametrize(
    "given, amount, currency",
    [
        ("$320", "320.00", "USD"),
        ("320.50 EUR", "320.50", "EUR"),
        ("EUR 320.5", "320.50", "EUR"),
        ("1.234,56 €", "1234.56", "EUR"),
        ("1,234.56", "1234.56", "USD"),
        ("£12", "12.00", "GBP"),
        ("320 dollars", "320.00", "USD"),
        (100.1, "100.10", "USD"),  # a JSON number from a tool call, read via repr, not binary
    ],
)
def test_parse_money_formats(given, amount, currency):
    got, cur = L.parse_money(given, "USD")
    assert isinstance(got, Decimal) and got == Decimal(amount) and str(got) == amount and cur == currency


@pytest.mark.parametrize(
    "given, message",
    [
        ("-320", "positive"),
        ("$-5", "positive"),
        ("(320)", "positive"),
        ("0", "more than zero"),
        ("$0.00", "more than zero"),
        ("NaN", "couldn't read"),
        ("inf", "couldn't read"),
        ("twelve", "couldn't read"),
        ("", "required"),
        ("12.345", "more than 2 decimal places"),
        ("1,2,3", "couldn't read"),
        ("320 xyz", "unknown currency"),
        ("$320 EUR", "two currencies"),
        ("9999999999999", "too large"),
    ],
)
def test_parse_money_rejects_bad_amounts(given, message):
    with pytest.raises(PluginError, match=message):
        L.parse_money(given, "USD")


def test_partial_payments_add_up_exactly_in_decimal():
    a, _ = L.parse_money("100.10", "USD")
    b, _ = L.parse_money("200.20", "USD")
    assert 100.10 + 200.20 != 300.30  # the float trap this ledger must not fall into
    assert a + b == Decimal("300.30")
    invoice = L.InvoiceFacts("2026-014", Decimal("320.00"), "USD", date(2026, 9, 1), date(2026, 10, 1))
    paid = replace(invoice, payments=(L.Payment(a, date(2026, 10, 5)), L.Payment(b, date(2026, 10, 20))))
    assert L.open_balance(paid) == Decimal("19.70")
    assert L.invoice_status(paid, date(2026, 10, 1)) == "unpaid"  # the due date itself is not overdue
    assert L.invoice_status(paid, date(2026, 10, 10)) == "overdue"
    assert L.open_balance(paid, date(2026, 10, 10)) == Decimal("219.90")
    assert L.balance(Decimal("300.30"), [a, b]) == Decimal("0.00")
    with pytest.raises(PluginError, match="overpaid by 0.01"):
        L.balance(Decimal("300.29"), [a, b])
    with pytest.raises(PluginError, match="more than the open balance"):
        L.check_payment(paid, Decimal("19.71"), "USD", date(2026, 11, 1), date(2026, 11, 20))
    assert L.check_payment(paid, Decimal("19.70"), "USD", date(2026, 11, 1), date(2026, 11, 20)) == 0


def test_status_history_rating_and_ledger_lines():
    base = dict(amount=Decimal("100.00"), currency="USD", issued=date(2026, 9, 1), due=date(2026, 10, 1))
    on_time = L.InvoiceFacts("A", payments=(L.Payment(Decimal("100.00"), date(2026, 9, 30)),), **base)
    late = L.InvoiceFacts("B", payments=(L.Payment(Decimal("40.00"), date(2026, 10, 15)),), **base)
    void = L.InvoiceFacts("C", voided_on=date(2026, 11, 2), **base)
    assert [L.invoice_status(i, date(2026, 8, 31)) for i in (on_time, late, void)] == [None, None, None]
    assert [L.invoice_status(i, date(2026, 10, 31)) for i in (on_time, late, void)] == ["paid", "overdue", "overdue"]
    assert [L.invoice_status(i, date(2026, 11, 2)) for i in (on_time, late, void)] == ["paid", "overdue", "void"]
    assert L.invoice_status(late, date(2026, 10, 1)) == "unpaid"  # its payment came on 10-15
    early = replace(late, due=date(2026, 12, 1))
    assert L.invoice_status(early, date(2026, 10, 31)) == "partially_paid"
    assert L.days_overdue(late, date(2026, 10, 31)) == 30
    rating = L.payment_rating([on_time, late, void], date(2026, 11, 20))
    assert (rating.on_time, rating.counted, rating.share) == (1, 2, Decimal("0.50"))
    assert L.client_status(None, [late], date(2026, 11, 20)) == "overdue"
    assert L.client_status("blacklist", [on_time], date(2026, 11, 20)) == "blacklist"
    lines = L.ledger_entries([late, void])
    assert [(e.kind, e.ref, e.balance) for e in lines] == [
        ("invoice", "B", Decimal("100.00")),
        ("invoice", "C", Decimal("200.00")),
        ("payment", "B", Decimal("160.00")),
        ("void", "C", Decimal("60.00")),
    ]


def test_dates_relative_to_now_and_impossible_dates():
    assert L.parse_date("2026-10-01", NOW) == date(2026, 10, 1)
    assert L.parse_date("yesterday", NOW) == date(2026, 11, 19)
    assert L.parse_date("in 30 days", NOW) == date(2026, 12, 20)
    for bad in ("2026-02-30", "2026-13-01", "30/02/2026", "someday-ish"):
        with pytest.raises(PluginError):
            L.parse_date(bad, NOW)


# ------------------------------------------------------------------ overdue on a past date
async def test_overdue_on_a_past_date_is_rebuilt_from_history(host, store):
    # Everything is recorded on 2026-11-20 (payments back-dated), except Eve's void, made on 11-02.
    setup = [
        ("Claudia Alz", "A-1", "$320", "2026-09-01", "2026-10-01"),  # never paid
        ("Bob Ray", "B-1", "$500", "2026-09-10", "2026-10-10"),  # paid in full on 11-05
        ("Carla Diaz", "C-1", "$200", "2026-09-15", "2026-10-15"),  # paid late but before 10-31
        ("Dan Fox", "D-1", "$150", "2026-10-20", "2026-11-10"),  # not yet due on 10-31
        ("Eve Gold", "E-1", "$300", "2026-09-01", "2026-10-05"),  # voided on 11-02
        ("Fay Hill", "F-1", "$100.10", "2026-09-01", "2026-10-01"),  # 40 paid 10-15, rest 11-10
        ("Gus Ivy", "G-1", "$80", "2026-09-01", "2026-10-31"),  # due exactly on 10-31
    ]
    for name, number, amount, issued, due in setup:
        await run(host, "client", f"add {name}")
        await run(host, "invoice", f'add {number} "{name}" {amount} due {due} issued {issued}')
    await run(host, "invoice", "pay B-1 $500 on 2026-11-05 by transfer")
    await run(host, "invoice", "pay C-1 on 2026-10-20")  # no amount: the whole balance
    await run(host, "invoice", "pay F-1 $40 on 2026-10-15")
    await run(host, "invoice", "pay F-1 60.10 on 2026-11-10")
    await run(host, "invoice", "pay G-1 $80 on 2026-11-03")
    await run(host, "invoice", "void E-1", now=datetime(2026, 11, 2, 12, tzinfo=UTC))

    past = await run(host, "overdue", "on 2026-10-31")
    assert past.private
    lines = {ln.split(" owes ")[0].lstrip("• "): ln for ln in past.text.splitlines()[1:]}
    assert set(lines) == {"Claudia Alz", "Bob Ray", "Eve Gold", "Fay Hill"}
    assert "$60.10" in lines["Fay Hill"] and "30 days overdue" in lines["Claudia Alz"]
    assert "$500.00" in lines["Bob Ray"] and "$300.00" in lines["Eve Gold"]
    assert "$1,180.10 in total" in past.text

    today = await run(host, "overdue", "")
    names_today = {ln.split(" owes ")[0].lstrip("• ") for ln in today.text.splitlines()[1:]}
    assert names_today == {"Claudia Alz", "Dan Fox"}

    # The day after: Gus (due 10-31) is overdue on 11-01; the LLM tool gives the same history.
    tools = {t.spec.name: t for t in host.tools(inv())}
    nov1 = await tools["get_overdue_clients"].handler({"as_of": "2026-11-01"})
    assert "Gus Ivy" in nov1 and "Carla Diaz" not in nov1
    oct31 = await tools["get_overdue_clients"].handler({"as_of": "2026-10-31"})
    assert "Gus Ivy" not in oct31 and "Fay Hill" in oct31 and "Dan Fox" not in oct31
    assert "future" in await tools["get_overdue_clients"].handler({"as_of": "2027-01-01"})


# -------------------------------------------------------------- tool calls via the LLM stub
class Peer:
    """Plays the model: chat requests (those offering tools) take the queued replies; memory
    extraction gets no facts; anything else a short answer."""

    def __init__(self):
        self.chat: list[Reply] = []

    def __call__(self, body):
        if body.get("tools") and self.chat:
            return self.chat.pop(0)
        if body.get("response_format"):
            return json_reply({"facts": []})
        return Reply(text="Done.")


async def test_log_payment_tool_call_through_the_chat_engine(store, host, tmp_path):
    peer = Peer()
    with LLMStub(responder=peer) as stub:
        llm = OpenAICompatProvider(base_url=stub.base_url, api_key="k", model="m", timeout=10, max_retries=0)
        engine = ChatEngine(store, llm, settings=Settings(CLARA_DATA_DIR=tmp_path), plugins=host)

        def msg(body: str, user: str = "alice") -> IncomingMessage:
            return IncomingMessage(
                user_id=user, display_name=user.title(), channel_id=f"dm-{user}", text=body, is_dm=True, timestamp=NOW
            )

        try:
            r = await engine.handle(msg("!client add Claudia Alz email=claudia@example.com"))
            assert not r.error, r.text
            r = await engine.handle(msg('!invoice add 2026-014 "Claudia Alz" $320 due 2026-10-01 issued 2026-09-01'))
            assert not r.error, r.text
            peer.chat += [
                tool_call(
                    "log_payment",
                    {"invoice": "2026-014", "amount": "100.10", "date": "2026-11-02", "method": "transfer"},
                ),
                Reply(text="Logged $100.10 from Claudia."),
                tool_call("log_payment", {"invoice": "2026-014", "amount": 200.2, "date": "yesterday"}),
                Reply(text="Logged $200.20."),
            ]
            r = await engine.handle(msg("Claudia paid $100.10 by transfer on Nov 2"))
            assert r.text == "Logged $100.10 from Claudia."
            r = await engine.handle(msg("and another 200.20 yesterday"))
            assert r.text == "Logged $200.20."
            results = [
                m["content"]
                for req in stub.requests
                if req.get("tools")
                for m in req["messages"]
                if m["role"] == "tool"
            ]
            assert any("Recorded $100.10 on 2026-11-02" in c for c in results)
            assert any("open balance now $19.70" in c for c in results)
            offered = {t["function"]["name"] for req in stub.requests if req.get("tools") for t in req["tools"]}
            assert {"log_payment", "get_overdue_clients", "find_client", "sync_client"} <= offered

            ledger = await engine.handle(msg("!ledger Claudia Alz"))
            assert "2026-11-19  payment on 2026-014" in ledger.text and "balance $19.70" in ledger.text
            assert "Owed on 2026-11-20: $19.70" in ledger.text

            # Bob's model can't log a payment on Alice's invoice: it doesn't exist for him.
            peer.chat += [tool_call("log_payment", {"invoice": "2026-014", "amount": "5"}), Reply(text="Hmm.")]
            await engine.handle(msg("log 5 on 2026-014", user="bob"))
            chat = [req for req in stub.requests if req.get("tools")]  # extraction requests interleave
            last = [m["content"] for m in chat[-1]["messages"] if m["role"] == "tool"]
            assert last and last[-1].startswith("error:") and "no invoice number" in last[-1]
            await engine.drain()
        finally:
            await engine.aclose()
            await llm.aclose()
    assert (await run(host, "invoice", "show 2026-014")).text.count("paid $") == 2


# ------------------------------------------------------------------------------- memory sync
async def test_memory_sync_recall_privacy_and_history(store, host, tmp_path):
    await run(host, "client", "add Claudia Alz email=claudia@example.com")
    await run(host, "invoice", 'add 2026-014 "Claudia Alz" $320 due 2026-10-01 issued 2026-09-01')
    await run(host, "client", "add Claudia Alz", user="bob")  # Bob's own client of the same name
    await run(host, "invoice", 'add 2026-014 "Claudia Alz" $75 due 2026-12-01', user="bob")

    hits = await store.recall("what does Claudia owe", ["user:alice"], k=3)
    assert hits[0].fact.content.startswith("Claudia Alz owes $320.00 (invoice 2026-014")

    # "What does Claudia owe?" in ordinary chat (memory-only mode) is answered from Alice's scope.
    engine = ChatEngine(store, settings=Settings(CLARA_DATA_DIR=tmp_path), plugins=host)
    try:

        def ask(user):
            return IncomingMessage(
                user_id=user,
                display_name=user.title(),
                channel_id=f"dm-{user}",
                text="what does Claudia owe?",
                is_dm=True,
                timestamp=NOW,
            )

        reply = await engine.handle(ask("alice"))
        assert "Claudia Alz owes $320.00" in reply.text and "overdue since 2026-10-02" in reply.text
        assert "$75.00" not in reply.text
        bob_reply = await engine.handle(ask("bob"))
        assert "$75.00" in bob_reply.text and "$320.00" not in bob_reply.text
        await engine.drain()
    finally:
        await engine.aclose()
    await assert_private(store, "what does Claudia owe", "bob", "user:alice")
    slug = "invoices/client/claudia-alz"
    first = await store.find_slug("user:alice", slug)
    async with store.engines.reader.connect() as conn:  # the fact is linked to the client as a person
        linked = (
            await conn.execute(
                text(
                    "SELECT e.name, e.type FROM fact_entities fe JOIN entities e ON e.id = fe.entity_id "
                    "WHERE fe.fact_id = :f"
                ),
                {"f": first.id},
            )
        ).all()
    assert [tuple(r) for r in linked] == [("Claudia Alz", "person")]

    await run(host, "invoice", "pay 2026-014 $320 on 2026-11-18 by card")
    now_fact = await store.find_slug("user:alice", slug)
    assert now_fact.id != first.id and now_fact.supersedes_id == first.id
    assert now_fact.content.startswith("Claudia Alz has paid everything and owes nothing")
    assert "last payment $320.00 on 2026-11-18" in now_fact.content
    old = await store.get(first.id)
    assert old.status == "superseded" and "owes $320.00" in old.content  # history kept
    # Still one active fact per client; an unchanged re-sync (daily job) writes nothing new.
    assert len(await store.list_facts(["user:alice"], kinds=("note",))) == 1
    before = await store.count_facts(statuses=("active", "superseded"))
    await run(host, "client", "show Claudia")
    assert await store.count_facts(statuses=("active", "superseded")) == before


# ---------------------------------------------------------------- forgetme / export fan-out
async def test_delete_and_export_user_data_fan_out(store, host):
    for user in ("alice", "bob"):
        await run(host, "client", "add Claudia Alz", user=user)
        await run(host, "invoice", 'add 2026-014 "Claudia Alz" $320 due 2026-10-01 issued 2026-09-01', user=user)
        await run(host, "invoice", "pay 2026-014 $20 on 2026-11-02", user=user)  # supersedes the fact
    assert await host.run_job("invoices", "daily", now=NOW)

    exported = (await host.export_user_data("alice"))["invoices"]
    json.dumps(exported)  # JSON-ready
    assert [c["name"] for c in exported["clients"]] == ["Claudia Alz"]
    assert {c["owner_id"] for t in exported.values() for c in t} == {"alice"}
    assert exported["payments"][0]["amount"] == "20.00" and exported["invoices"][0]["amount"] == "320.00"
    assert {e["kind"] for e in exported["events"]} >= {"created", "overdue", "payment"}
    assert exported["tasks"] and exported["daily_summaries"]

    bob_before = await row_counts(store, "bob")
    plugin_facts = await store.list_facts(["user:alice"], statuses=("active", "superseded"))
    assert len(plugin_facts) >= 3  # client fact, its superseded version, the summary
    result = await host.delete_user_data("alice")
    assert result["invoices"] >= sum(bob_before[t] for t in TABLES)
    assert all(v == 0 for k, v in (await row_counts(store, "alice")).items() if k != "facts")
    assert await store.list_facts(["user:alice"], statuses=("active", "superseded", "deleted")) == []
    assert await store.recall("what does Claudia owe", ["user:alice"], k=5) == []
    after = await row_counts(store, "bob")
    assert {t: after[t] for t in TABLES} == {t: bob_before[t] for t in TABLES}
    assert (await store.find_slug("user:bob", "invoices/client/claudia-alz")) is not None
    assert (await host.export_user_data("alice"))["invoices"]["clients"] == []


# ------------------------------------------------------------------------------- bad input
BAD = [
    ("invoice", 'add 2026-099 "Claudia Alz" $-5', "positive"),
    ("invoice", 'add 2026-099 "Claudia Alz" 12.345', "decimal places"),
    ("invoice", 'add 2026-099 "Claudia Alz" lots', "amount"),
    ("invoice", 'add 2026-099 "Nobody Here" $5', "no client called"),
    ("invoice", 'add 2026-014 "Claudia Alz" $5', "already used"),
    ("invoice", 'add 2026-099 "Claudia Alz" $5 due 2026-02-30', "not a real date"),
    ("invoice", 'add 2026-099 "Claudia Alz" $5 due 2026-09-01 issued 2026-10-01', "before the issue date"),
    ("invoice", 'add bad*number "Claudia Alz" $5', "not a valid invoice number"),
    ("invoice", "pay 2026-014 $400", "more than the open balance"),
    ("invoice", "pay 2026-014 €10", "is in USD"),
    ("invoice", "pay 2026-014 $10 on 2027-01-01", "future"),
    ("invoice", "pay 2026-999 $10", "no invoice number"),
    ("invoice", "void 2026-777", "no invoice number"),
    ("invoice", 'add 2026-099 "Claudia Alz $5', "Usage"),
    ("invoice", "frobnicate", "Usage"),
    ("client", "add Claudia Alz", "already a client"),
    ("client", "add Zed email=not-an-email", "email"),
    ("client", "add Zed status=vip", "status must be"),
    ("client", "", "Usage"),
    ("overdue", "on 2026-02-30", "not a real date"),
    ("invoices-import", "number,client,amount\n2026-500,Claudia Alz,$1\n2026-501,Ghost,$2\n", "line 3"),
]


@pytest.mark.parametrize("cmd, args, message", BAD, ids=[f"{c} {a}"[:40] for c, a, _ in BAD])
async def test_bad_input_is_refused_clearly_and_writes_nothing(store, host, cmd, args, message):
    await run(host, "client", "add Claudia Alz")
    await run(host, "invoice", 'add 2026-014 "Claudia Alz" $320 due 2026-10-01 issued 2026-09-01')
    await run(host, "invoice", "pay 2026-014 $100 on 2026-11-02")
    before = await row_counts(store)
    res = await run(host, cmd, args, ok=False)
    assert res.error and message in res.text, res.text
    assert res.private
    assert await row_counts(store) == before


async def test_void_then_pay_and_tool_argument_errors(store, host):
    await run(host, "client", "add Claudia Alz")
    await run(host, "invoice", 'add 2026-014 "Claudia Alz" $320 due 2026-12-01 issued 2026-11-01')
    await run(host, "invoice", "void 2026-014")
    before = await row_counts(store)
    assert "void" in (await run(host, "invoice", "pay 2026-014 $10", ok=False)).text
    assert "already voided" in (await run(host, "invoice", "void 2026-014", ok=False)).text
    tools = {t.spec.name: t for t in host.tools(inv())}
    assert (await tools["log_payment"].handler({"invoice": "2026-014", "amount": -3})).startswith("error:")
    assert "invalid arguments" in await tools["log_payment"].handler({"amount": "3"})
    assert await row_counts(store) == before


async def test_concurrent_payments_never_overpay_and_numbers_stay_unique(store, host):
    import asyncio

    await run(host, "client", "add Claudia Alz")
    await run(host, "invoice", 'add 2026-014 "Claudia Alz" $320 due 2026-12-01 issued 2026-11-01')
    results = await asyncio.gather(*(host.run_command(inv(), "invoice", "pay 2026-014 $100") for _ in range(5)))
    assert sorted(r.error for r in results) == [False, False, False, True, True]
    assert "open $20.00" in (await run(host, "invoice", "show 2026-014")).text
    adds = await asyncio.gather(
        *(host.run_command(inv(), "invoice", f'add 2026-020 "Claudia Alz" ${n}') for n in range(1, 5))
    )
    assert [r.error for r in adds].count(False) == 1
    assert all("already used" in r.text for r in adds if r.error)


# --------------------------------------------------------------------------------- CSV
async def test_csv_export_import_round_trip(store, host):
    await run(host, "client", 'add "Claudia Alz" email=claudia@example.com phone="+1 555 0100" notes="pays late"')
    await run(host, "client", "add Bob Ray status=blacklist")
    await run(host, "invoice", 'add 2026-014 "Claudia Alz" $320 due 2026-10-01 issued 2026-09-01 note "Logo, v2"')
    await run(host, "invoice", 'add 2026-015 "Bob Ray" "1.234,56 €" due 2026-11-30 issued 2026-11-01')
    await run(host, "invoice", 'add 2026-016 "Bob Ray" $99.99 due 2026-10-30 issued 2026-10-01')
    await run(host, "invoice", "pay 2026-014 $100.10 on 2026-10-15 by transfer")
    await run(host, "invoice", "pay 2026-014 $200.20 on 2026-11-02 by cash")
    await run(host, "invoice", "pay 2026-015 €234.56 on 2026-11-10")
    await run(host, "invoice", "void 2026-016 on 2026-11-05")
    exported = await run(host, "invoices-export", "")
    files = dict(exported.files)
    assert set(files) == {"clients.csv", "invoices.csv", "payments.csv"} and exported.private
    assert b'2026-014,Claudia Alz,320.00,USD,2026-09-01,2026-10-01,,"Logo, v2",overdue,19.70' in files["invoices.csv"]
    blob = "\n".join(files[n].decode() for n in ("clients.csv", "invoices.csv", "payments.csv"))

    res = await run(host, "invoices-import", blob, user="carol")
    assert "2 new client(s)" in res.text and "3 invoice(s)" in res.text and "3 payment(s)" in res.text
    again = dict((await run(host, "invoices-export", "", user="carol")).files)
    assert again == files
    alice_ledger = (await run(host, "ledger", "Claudia Alz")).text
    assert (await run(host, "ledger", "Claudia Alz", user="carol")).text == alice_ledger
    assert (await run(host, "overdue", "on 2026-10-31", user="carol")).text == (
        await run(host, "overdue", "on 2026-10-31")
    ).text

    # Re-importing the same invoices is refused as a whole, with every bad line named.
    before = await row_counts(store)
    dup = await run(host, "invoices-import", blob, user="carol", ok=False)
    assert "nothing was imported" in dup.text and "invoice number 2026-014 is already used" in dup.text
    assert await row_counts(store) == before
    bad = "name,email\nDora,dora@example.com\nEve,not-an-email\n\nnumber,client,amount,due\nX-1,Dora,$5,2026-02-30\n"
    res = await run(host, "invoices-import", bad, user="dave", ok=False)
    assert "line 3:" in res.text and "line 6:" in res.text and "2 bad row(s)" in res.text
    assert await row_counts(store) == before


# ------------------------------------------------------------------------------- isolation
async def test_one_user_never_sees_another_users_clients(store, host):
    await run(host, "client", "add Claudia Alz email=claudia@example.com")
    await run(host, "invoice", 'add 2026-014 "Claudia Alz" $320 due 2026-10-01 issued 2026-09-01')
    assert "no clients yet" in (await run(host, "client", "list", user="bob")).text
    assert "no client called" in (await run(host, "client", "show Claudia", user="bob", ok=False)).text
    assert "no invoice number" in (await run(host, "invoice", "show 2026-014", user="bob", ok=False)).text
    assert "no invoice number" in (await run(host, "invoice", "pay 2026-014 $1", user="bob", ok=False)).text
    assert "No client is overdue" in (await run(host, "overdue", "", user="bob")).text
    bob_tools = {t.spec.name: t for t in host.tools(inv("bob"))}
    assert "no client called" in await bob_tools["find_client"].handler({"name": "Claudia"})
    # Bob may keep his own Claudia and his own invoice 2026-014; neither touches Alice's.
    await bob_tools["sync_client"].handler({"name": "Claudia Alz", "phone": "555"})
    await run(host, "invoice", 'add 2026-014 "Claudia Alz" $10 due 2026-12-01', user="bob")
    assert "Owes: $10.00" in await bob_tools["find_client"].handler({"name": "claudia"})
    alice = (await run(host, "client", "show Claudia Alz")).text
    assert "Owes: $320.00" in alice and "555" not in alice and "claudia@example.com" in alice
    assert "claudia@example.com" not in (await run(host, "invoices-export", "", user="bob")).files[0][1].decode()
    await assert_private(store, "Claudia owes", "bob", "user:alice")
    await assert_private(store, "Claudia owes", "alice", "user:bob")


# ------------------------------------------------------------------------------ daily job
async def test_daily_job_marks_overdue_writes_summary_and_is_idempotent(store, host):
    await run(host, "client", "add Claudia Alz", now=datetime(2026, 9, 1, tzinfo=UTC))
    await run(host, "invoice", 'add 2026-014 "Claudia Alz" $320 due 2026-10-01', now=datetime(2026, 9, 1, tzinfo=UTC))
    async with store.engines.reader.connect() as conn:
        assert (await conn.execute(text("SELECT status FROM invoices_invoices"))).scalar_one() == "unpaid"
    day = datetime(2026, 10, 3, 6, 0, tzinfo=UTC)
    assert await host.run_job("invoices", "daily", now=day)
    first = await row_counts(store)
    assert await host.run_job("invoices", "daily", now=day)
    assert await row_counts(store) == first  # same day again: nothing new
    async with store.engines.reader.connect() as conn:
        assert (await conn.execute(text("SELECT status FROM invoices_invoices"))).scalar_one() == "overdue"
        ev = (await conn.execute(text("SELECT kind, effective_on FROM invoices_events WHERE kind='overdue'"))).all()
        assert len(ev) == 1 and str(ev[0][1]).startswith("2026-10-02")
        task = (await conn.execute(text("SELECT title, done FROM invoices_tasks"))).one()
        summary = (await conn.execute(text("SELECT outstanding, overdue_clients FROM invoices_daily_summaries"))).one()
    assert "Follow up with Claudia Alz" in task[0] and not task[1]
    assert Decimal(str(summary[0])) == Decimal("320.00") and summary[1] == 1
    fact = await store.find_slug("user:alice", "invoices/summary")
    assert fact.kind == "summary" and "$320.00 outstanding" in fact.content and "Claudia Alz $320.00" in fact.content
    # Paying closes the follow-up task; the next day's summary supersedes the last one.
    await run(host, "invoice", "pay 2026-014", now=datetime(2026, 10, 4, tzinfo=UTC))
    assert await host.run_job("invoices", "daily", now=datetime(2026, 10, 5, 6, tzinfo=UTC))
    new = await store.find_slug("user:alice", "invoices/summary")
    assert new.supersedes_id == fact.id and "nothing is outstanding" in new.content
    async with store.engines.reader.connect() as conn:
        assert (await conn.execute(text("SELECT done FROM invoices_tasks"))).scalar_one()


# ------------------------------------------------------------------------------ migration
# A reload re-declares the ORM classes on the shared PluginBase (SQLAlchemy notes the replacement).
@pytest.mark.filterwarnings("ignore:This declarative base already contains a class")
async def test_migration_downgrades_and_upgrades_again(store, host):
    from storage import migrate

    versions = Path(__file__).resolve().parent.parent / "plugins" / "invoices" / "migrations" / "versions"
    url = store.engines.writer.url.render_as_string(hide_password=False)
    await store.engines.writer.dispose()  # no open connection while the schema changes
    migrate.downgrade_branch(url, versions, "alembic_version_invoices")
    async with store.engines.reader.connect() as conn:
        names = {r[0] for r in (await conn.execute(text(_TABLES_SQL[store.dialect]))).all()}
    assert not names & set(TABLES)
    assert (await host.reload("invoices")).ok  # upgrades again
    await run(host, "client", "add Claudia Alz")
    assert (await row_counts(store))["invoices_clients"] == 1


_TABLES_SQL = {
    "sqlite": "SELECT name FROM sqlite_master WHERE type = 'table'",
    "postgresql": "SELECT tablename FROM pg_tables WHERE schemaname = 'public'",
}


# ------------------------------------------------------------------------------- as users type it
async def test_invoice_add_as_users_type_it_through_the_chat_engine(store, host, tmp_path):
    """`!invoice add Claudia 320 due 2026-09-15` (no number, no issue date, a past due date) is
    recorded: the next free number, issued = min(today, due − terms), overdue at once; a far due
    date keeps today as the issue date; bad amounts and dates are one clear error, nothing written."""
    engine = ChatEngine(store, None, settings=Settings(CLARA_DATA_DIR=tmp_path), plugins=host)

    def msg(body: str) -> IncomingMessage:
        return IncomingMessage(
            user_id="alice", display_name="Alice", channel_id="dm-alice", text=body, is_dm=True, timestamp=NOW
        )

    try:
        assert not (await engine.handle(msg("!client add Claudia"))).error
        r = await engine.handle(msg("!invoice add Claudia 320 due 2026-09-15"))
        assert not r.error, r.text
        assert "Invoice 2026-001 — Claudia: $320.00, issued 2026-08-16, due 2026-09-15 — overdue by 66 days" in r.text
        assert "inferred from your 30-day terms" in r.text
        r = await engine.handle(msg("!invoice add Claudia $80 due 2027-03-01"))
        assert not r.error and "Invoice 2026-002" in r.text and "issued 2026-11-20, due 2027-03-01" in r.text, r.text
        assert "inferred" not in r.text
        r = await engine.handle(msg("!invoice add Claudia 15.50"))
        assert "Invoice 2026-003" in r.text and "issued 2026-11-20, due 2026-12-20" in r.text, r.text
        r = await engine.handle(msg('!invoice add 2026-014 "Claudia" $5 due 2026-09-01 issued 2026-08-01'))
        assert not r.error and "Invoice 2026-014" in r.text
        before = await row_counts(store)
        for bad, message in [
            ("!invoice add Claudia lots due 2026-09-15", "amount is missing"),
            ("!invoice add Claudia -5 due 2026-09-15", "positive"),
            ("!invoice add Claudia 320 due 2026-02-30", "not a real date"),
            ("!invoice add Claudia 320 due someday soonish", "couldn't understand the date"),
            ("!invoice add Claudia 320 due 2026-09-15 issued 2026-10-01", "before the issue date"),
            ("!invoice add Claudia", "needs a client and an amount"),
            ("!invoice add Nobody 320", "no client called"),
        ]:
            r = await engine.handle(msg(bad))
            assert r.error and message in r.text, (bad, r.text)
            assert "Traceback" not in r.text
        assert await row_counts(store) == before
        listed = (await engine.handle(msg("!invoice list Claudia"))).text
        assert listed.count("Invoice 2026-0") == 4
        # Bob has no such client and sees none of Alice's invoices.
        bob = IncomingMessage(
            user_id="bob", display_name="Bob", channel_id="dm-bob", text="!invoice list", is_dm=True, timestamp=NOW
        )
        assert (await engine.handle(bob)).text == "No invoices yet."
    finally:
        await engine.aclose()


# ------------------------------------------------------------------------------- tasks
async def test_tasks_are_first_class_records_through_the_chat_engine(store, host, tmp_path):
    """Bella's tasks: `!task add` with due date, priority and a linked client/invoice, `!task
    list` (priority, then due), `!task done`; each task is a memory fact recalled in chat, bad
    input writes nothing, and another user neither lists nor recalls them."""
    engine = ChatEngine(store, None, settings=Settings(CLARA_DATA_DIR=tmp_path), plugins=host)

    def msg(body: str, user: str = "alice") -> IncomingMessage:
        return IncomingMessage(
            user_id=user, display_name=user.title(), channel_id=f"dm-{user}", text=body, is_dm=True, timestamp=NOW
        )

    try:
        assert not (await engine.handle(msg("!client add Claudia Alz"))).error
        assert not (await engine.handle(msg('!invoice add 2026-014 "Claudia Alz" $320 due 2026-10-01'))).error
        r = await engine.handle(
            msg("!task add Call Claudia about the overdue invoice due 2026-11-25 priority high invoice 2026-014")
        )
        assert not r.error, r.text
        assert (
            "[high] Call Claudia about the overdue invoice — due 2026-11-25 · Claudia Alz · invoice 2026-014" in r.text
        )
        call_id = int(r.text.split("#", 1)[1].split(" ", 1)[0])
        r = await engine.handle(msg("!task add Renew the insurance priority low"))
        assert not r.error and "[low] Renew the insurance" in r.text, r.text
        r = await engine.handle(msg("!task add Send the quote to Claudia client claudia due yesterday"))
        assert "— due 2026-11-19 (overdue) · Claudia Alz" in r.text, r.text
        listed = (await engine.handle(msg("!task list"))).text.splitlines()
        assert [ln.split("] ", 1)[1].split(" —")[0].split(" ·")[0] for ln in listed] == [
            "Call Claudia about the overdue invoice",
            "Send the quote to Claudia",
            "Renew the insurance",
        ], listed
        done = await engine.handle(msg(f"!task done #{call_id}"))
        assert not done.error and "done 2026-11-20" in done.text, done.text
        assert len((await engine.handle(msg("!task list"))).text.splitlines()) == 2
        assert len((await engine.handle(msg("!task list all"))).text.splitlines()) == 3
        assert "Renew" not in (await engine.handle(msg("!task list client Claudia"))).text
        before = await row_counts(store)
        for bad, says in [
            (f"!task done {call_id}", "already done"),
            ("!task done 999", "no task #999"),
            ("!task done soon", "not a task number"),
            ("!task add Pay rent priority whenever", "priority must be"),
            ("!task add Pay rent due 2026-02-30", "not a real date"),
            ("!task add Chase client Nobody", "no client called"),
            ("!task add Chase invoice 2026-999", "no invoice number"),
            ("!task add due tomorrow", "needs a title"),
            ("!task list everything", "Usage"),
        ]:
            r = await engine.handle(msg(bad))
            assert r.error and says in r.text and "Traceback" not in r.text, (bad, r.text)
        assert await row_counts(store) == before
        # Each task is a fact in Alice's private memory (recalled in chat), never Bob's.
        await engine.drain()
        hits = (await engine.handle(msg("!recall quote for Claudia"))).text
        assert "Open task (normal priority, due 2026-11-19, for Claudia Alz): Send the quote to Claudia" in hits, hits
        hits = (await engine.handle(msg("!recall call Claudia overdue invoice"))).text
        assert "Task done on 2026-11-20 (high priority" in hits, hits
        assert (await engine.handle(msg("!task list", user="bob"))).text == "No open tasks."
        assert "Claudia" not in (await engine.handle(msg("!recall quote for Claudia", user="bob"))).text
        await assert_private(store, "task quote Claudia", "bob", "user:alice")
        assert f"{call_id}" in (await engine.handle(msg(f"!task done {call_id}", user="bob"))).text  # "no task #…"
    finally:
        await engine.aclose()


async def test_daily_summary_names_tasks_completed_and_outstanding_items(store, host, tmp_path):
    """The daily session summary (Bella's tasks_completed / outstanding_items / financial
    summary) is stored as the owner's summary fact and recalled through chat, never by others."""
    engine = ChatEngine(store, None, settings=Settings(CLARA_DATA_DIR=tmp_path), plugins=host)

    def msg(body: str, user: str = "alice") -> IncomingMessage:
        return IncomingMessage(
            user_id=user, display_name=user.title(), channel_id=f"dm-{user}", text=body, is_dm=True, timestamp=NOW
        )

    try:
        assert not (await engine.handle(msg("!client add Claudia Alz"))).error
        assert not (await engine.handle(msg('!invoice add 2026-014 "Claudia Alz" $320 due 2026-12-01'))).error
        r = await engine.handle(msg("!task add Send the November statements priority high"))
        tid = r.text.split("#", 1)[1].split(" ", 1)[0]
        await engine.handle(msg("!task add Call the accountant due 2026-11-23"))
        assert not (await engine.handle(msg(f"!task done {tid}"))).error
        assert await host.run_job("invoices", "daily", now=datetime(2026, 11, 21, 6, tzinfo=UTC))
        fact = await store.find_slug("user:alice", "invoices/summary")
        assert "$320.00 outstanding" in fact.content
        assert "Tasks completed on 2026-11-20: Send the November statements." in fact.content, fact.content
        assert "Outstanding items: Call the accountant (due 2026-11-23)." in fact.content
        await engine.drain()
        hits = (await engine.handle(msg("!recall tasks completed outstanding items"))).text
        assert "Tasks completed on 2026-11-20" in hits, hits
        assert "statements" not in (await engine.handle(msg("!recall tasks completed outstanding", user="bob"))).text
        await assert_private(store, "tasks completed outstanding items", "bob", "user:alice")
    finally:
        await engine.aclose()
