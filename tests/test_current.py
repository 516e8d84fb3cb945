"""Recall what is true now: facts that change are superseded bi-temporally (never deleted), the
turns they came from are marked outdated, recall brings the current truth first in any of the
supported languages, the past stays askable and is labelled, questions are not answers, and
another user's private facts never come back. Memory-only mode (offline extraction), each state
told in its own session days apart, as a user would."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from clara.chat import ChatEngine, IncomingMessage
from clara.extract.attributes import question_keys, statements
from clara.settings import Settings
from storage.clock import ManualClock
from tests.conftest import assert_private

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)

# (old statement, new statement, question): the new one must come first; the old one labelled.
CHANGES = [
    ("Hi, I am Alice. I live in Lisbon.", "I moved to Porto last week", "where do I live"),
    (
        "I work as a nurse at Santa Maria hospital",
        "I quit the hospital, now I teach maths at a secondary school",
        "what is my job",
    ),
    (
        "My favourite food is sushi",
        "I don't eat sushi anymore, these days ramen is my favourite food",
        "what's my favourite food?",
    ),
    ("My manager is Tom Becker", "Sara Lindqvist is my new manager since Monday", "who is my manager?"),
    ("I drive an old red Fiat Panda", "I sold the Panda and bought a Tesla Model 3", "what car do I drive?"),
    (
        "My son goes to Greenwood Elementary",
        "My son switched to Riverside Academy this term",
        "which school does my son go to?",
    ),
    ("I prefer morning appointments", "Actually I prefer evening appointments now", "when do I prefer appointments?"),
    ("Vivo en Valparaíso con mi familia", "Me mudé de Valparaíso a Santiago el mes pasado", "¿dónde vivo?"),
    ("Moro em Lisboa há dez anos", "Mudei-me para o Porto em setembro", "onde eu moro?"),
    (
        "Je travaille chez Airbus comme ingénieure",
        "J'ai quitté Airbus, maintenant je travaille chez Renault",
        "où est-ce que je travaille ?",
    ),
    ("Ich wohne in Köln", "Ich bin nach Hamburg gezogen", "wo wohne ich?"),
    ("My sister Anna lives in Lyon", "Anna moved to Berlin for her new job", "where does Anna live?"),
]


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0, ticking=True)


@pytest.fixture
async def engine(store, tmp_path):
    e = ChatEngine(store, settings=Settings(CLARA_DATA_DIR=tmp_path, session_idle_minutes=30))
    yield e
    await e.aclose()


def msg(user: str, text: str) -> IncomingMessage:
    return IncomingMessage(user_id=user, display_name=user.title(), channel_id=f"dm-{user}", text=text, is_dm=True)


async def tell(engine, clock, user: str, *texts: str) -> list[int]:
    """One session: the texts, then the memory worker drains; the clock then moves on 3 weeks."""
    ids = []
    for t in texts:
        r = await engine.handle(msg(user, t))
        assert not r.error, r.text
        ids.append(r.message_id)
    await engine.drain()
    clock.advance(timedelta(days=21))
    return ids


async def ask(engine, user: str, question: str, **kw):
    where = await engine.memory.where(msg(user, question))
    return await engine.memory.recall(question, where, k=5, **kw)


def said(hit, message_id: int) -> bool:
    return message_id in (hit.fact.source_message_ids or [])


async def test_everyday_changes_bring_the_current_truth_first(engine, store, clock):
    for i, (old, new, question) in enumerate(CHANGES):
        user = f"user{i}"
        (old_id, _) = await tell(engine, clock, user, old, "thanks! the weather is lovely today")
        (new_id,) = await tell(engine, clock, user, new)
        hits = await ask(engine, user, question)
        assert hits, question
        assert said(hits[0], new_id) and hits[0].current, (question, [h.fact.content for h in hits])
        for h in hits:  # whatever stale item is shown says so
            if said(h, old_id):
                assert not h.current and h.fact.valid_to is not None, h.fact.content
        # shown once: the raw turn and the fact extracted from it are one item
        assert sum(said(h, new_id) for h in hits) == 1
        text = (await engine.handle(msg(user, f"!recall {question}"))).text
        assert text.splitlines()[1].startswith("1. ") and "no longer true" not in text.splitlines()[1]
    await assert_private(store, "where do I live", "user1", "user:user0")


async def test_supersede_is_bitemporal_and_keeps_history(engine, store, clock):
    (old_id,) = await tell(engine, clock, "alice", "I live in Lisbon")
    said_at = clock()
    (new_id,) = await tell(engine, clock, "alice", "I moved to Porto")
    facts = await store.list_facts(["user:alice"], statuses=("active", "superseded"), limit=50)
    keyed = [f for f in facts if f.attr == "alice/residence"]
    old = next(f for f in keyed if f.status == "superseded")
    new = next(f for f in keyed if f.status == "active")
    assert old.superseded_by_id == new.id and new.supersedes_id == old.id
    assert old.valid_to == new.valid_from and said_at <= new.valid_from < said_at + timedelta(minutes=1)
    assert old.superseded_at is not None and old.superseded_at >= old.valid_to  # system time
    turn = next(f for f in await store.facts_by_slugs(["user:alice"], [f"msg:{old_id}"]))
    assert turn.status == "active" and turn.valid_to == new.valid_from  # outdated, kept
    assert [h.action for h in await store.history(old.id)][-1] == "supersede"
    # The past stays askable, labelled.
    for q in ("where did I live before Porto?", "where did I live before?"):
        hits = await ask(engine, "alice", q)
        stale = [h for h in hits if said(h, old_id)]
        assert stale and all(not h.current for h in stale), q
    hits = await ask(engine, "alice", "where do I live", history=True)
    assert any(said(h, old_id) for h in hits)
    text = (await engine.handle(msg("alice", "!recall --all where did I live"))).text
    assert "Lisbon" in text and "no longer true: until" in text


async def test_cessation_ends_the_old_value_without_a_new_one(engine, store, clock):
    (old_id,) = await tell(engine, clock, "bea", "I drive a blue Volkswagen Golf")
    (end_id,) = await tell(engine, clock, "bea", "I sold my car, I don't have one anymore")
    hits = await ask(engine, "bea", "what car do I have?")
    assert said(hits[0], end_id) and hits[0].current
    assert all(not h.current for h in hits if said(h, old_id))
    (old_id,) = await tell(engine, clock, "cy", "My girlfriend is Maya")
    (end_id,) = await tell(engine, clock, "cy", "Maya and I broke up last month")
    hits = await ask(engine, "cy", "who is my partner?")
    assert said(hits[0], end_id)


async def test_paraphrase_questions_reach_the_fact_by_its_attribute(engine, clock):
    (new_id,) = await tell(engine, clock, "dan", "These days I teach maths at a secondary school")
    for q in ("what do I do for a living?", "what is my occupation", "¿a qué me dedico?"):
        hits = await ask(engine, "dan", q)
        assert hits and said(hits[0], new_id), q
    (tax_id,) = await tell(engine, clock, "eva", "Régimen tributario: ProPyme General")
    for q in ("¿qué régimen de impuestos tengo?", "what is my tax regime"):
        hits = await ask(engine, "eva", q)
        assert hits and said(hits[0], tax_id), q


async def test_questions_are_not_answers(engine, store, clock):
    (q_id,) = await tell(engine, clock, "fay", "where do I live?")
    (fact_id,) = await tell(engine, clock, "fay", "I live in Lyon, in a small flat near the river")
    (q2_id,) = await tell(engine, clock, "fay", "hello! where do I live again?")
    hits = await ask(engine, "fay", "where do I live")
    assert said(hits[0], fact_id)
    assert not any(said(h, q_id) or said(h, q2_id) for h in hits)  # only shown when nothing else
    kinds = {f.kind for f in await store.facts_by_slugs(["user:fay"], [f"msg:{q_id}", f"msg:{q2_id}"])}
    assert kinds == {"question"}  # kept as conversation


async def test_llm_context_puts_current_facts_first_and_labels_the_rest(engine, store, clock):
    await tell(engine, clock, "gus", "I live in Lisbon")
    await tell(engine, clock, "gus", "I moved to Porto")
    m = msg("gus", "where do I live?")
    where = await engine.memory.where(m)
    ctx = await engine.memory.context(m, m.text, where, None)
    lines = [i.text for b in ctx.blocks if b.name == "user_memories" for i in b.items]
    porto = next(n for n, t in enumerate(lines) if "Porto" in t)
    for n, t in enumerate(lines):
        if "Lisbon" in t:
            assert "no longer true" in t and n > porto
    assert not any("Lisbon" in t and "no longer true" not in t for t in lines)


def test_attribute_classifier_languages_and_subjects():
    got = {(s.attribute, s.subject) for s in statements("Me mudé a Santiago")}
    assert got == {("residence", None)}
    assert {(s.attribute, s.subject) for s in statements("Ana vive en Madrid")} == {("residence", "Ana")}
    assert {(s.attribute, s.subject) for s in statements("Tom is my new manager")} == {("manager", None)}
    assert statements("The meeting moved to Tuesday") == []
    assert statements("where do I live?") == []
    assert question_keys("wo wohne ich?").attributes == ("residence",)
    q = question_keys("what was my old job?")
    assert q.attributes == ("work",) and q.history
    assert question_keys("where does my sister live").subject == "kin:sister"


async def test_llm_extraction_can_end_a_fact_with_the_same_keys(engine, store, clock):
    """With an LLM, END (or UPDATE) supersedes the target; its text takes the attribute key, so a
    later offline statement on the same key supersedes it in turn."""
    import json
    import re
    from types import SimpleNamespace

    (old_id,) = await tell(engine, clock, "hal", "I drive a blue Volkswagen Golf")

    class EndsTheCar:
        async def complete(self, messages, **kw):
            prompt = messages[-1].content
            target = re.search(r"^(\d+): hal drives a blue Volkswagen Golf", prompt, re.M | re.I)
            facts = [
                {
                    "action": "END",
                    "target_id": int(target.group(1)) if target else None,
                    "content": "Hal sold his car",
                    "kind": "biographical",
                    "subject": "Hal",
                    "importance": 6,
                    "entities": [],
                    "relation": None,
                    "event_date": None,
                }
            ]
            return SimpleNamespace(text=json.dumps({"facts": facts}))

    engine.memory.writer.llm = EndsTheCar()
    (end_id,) = await tell(engine, clock, "hal", "I sold my car")
    engine.memory.writer.llm = None
    facts = await store.list_facts(["user:hal"], statuses=("active", "superseded"), limit=50)
    ended = next(f for f in facts if f.content == "Hal sold his car")
    assert ended.status == "active" and ended.attr == "hal/car" and ended.supersedes_id is not None
    assert (await store.get(ended.supersedes_id)).status == "superseded"
    hits = await ask(engine, "hal", "what car do I drive?")
    assert said(hits[0], end_id) and all(not h.current for h in hits if said(h, old_id))
    (new_id,) = await tell(engine, clock, "hal", "I bought a used Toyota Yaris")
    assert (await store.get(ended.id)).status == "superseded"
    assert said((await ask(engine, "hal", "what car do I drive?"))[0], new_id)


def channel_msg(user: str, text: str) -> IncomingMessage:
    return IncomingMessage(user_id=user, display_name=user.title(), channel_id="team", text=text, is_dm=False)


async def test_latest_statement_of_the_attribute_first_not_small_talk_or_another_member(engine, store, clock):
    """In a shared channel: the asker's latest statement about the attribute comes first — not
    the small talk said after it, not another member's later statement of their own job — and a
    private DM of someone else never comes back."""

    async def say(user: str, *texts: str) -> list[int]:
        ids = []
        for t in texts:
            r = await engine.handle(channel_msg(user, t))
            assert not r.error, r.text
            ids.append(r.message_id)
        await engine.drain()
        clock.advance(timedelta(days=10))
        return ids

    await say("hal", "trabajo de contable en una gestoría")
    new_id, _ = await say("hal", "dejé la gestoría, ahora trabajo como cocinero en un asador", "ayer fuimos al cine")
    await say("ivy", "trabajo como dentista desde hace años")
    await tell(engine, clock, "jo", "trabajo como piloto de avión")  # private, in a DM
    for question in ("¿de qué trabajo?", "¿dónde trabajo ahora?"):
        where = await engine.memory.where(channel_msg("hal", question))
        hits = await engine.memory.recall(question, where, k=5)
        assert said(hits[0], new_id) and hits[0].current, (question, [h.fact.content for h in hits])
        text = (await engine.handle(channel_msg("hal", f"!recall {question}"))).text
        assert "cocinero" in text.splitlines()[1] and "piloto" not in text, text
    await assert_private(store, "¿de qué trabajo?", "hal", "user:jo")


async def test_possessive_question_names_the_person(engine, store, clock):
    """ "who is Mia's boss?" asks about Mia (not "Mia's"): her keyed manager, the latest first."""
    assert question_keys("who is Mia's boss?").subject == "Mia"
    assert question_keys("what is James' job").subject == "James"
    await tell(engine, clock, "kim", "Mia's manager is Carl Jensen")
    (new_id,) = await tell(engine, clock, "kim", "Mia reports to Priya Shah since the reorg")
    await tell(engine, clock, "lou", "Mia's manager is Zoe Ward")  # another user's private DM
    hits = await ask(engine, "kim", "who is Mia's boss?")
    assert said(hits[0], new_id) and hits[0].current, [h.fact.content for h in hits]
    text = (await engine.handle(msg("kim", "!recall who is Mia's boss?"))).text
    assert "Priya" in text.splitlines()[1] and "Zoe" not in text, text
    await assert_private(store, "who is Mia's boss?", "kim", "user:lou")


async def test_a_state_said_to_end_in_unkeyed_words_ends_the_fact_it_names(engine, store, clock):
    """ "gave up on Italian" (no rule keys it) ends the keyed fact whose value it names — only
    the speaker's own; an "ended" sentence naming no keyed value ends nothing."""
    (old_id,) = await tell(engine, clock, "max", "I have been learning Italian on Duolingo")
    await tell(engine, clock, "nia", "I have been learning Italian on Duolingo")  # another user, a DM
    await tell(engine, clock, "max", "I stopped at the bakery on the way home")
    keyed = [f for f in await store.list_facts(["user:max"]) if f.attr == "max/language_learning"]
    assert len(keyed) == 1 and keyed[0].valid_to is None  # nothing named, nothing ended
    (end_id,) = await tell(engine, clock, "max", "gave up on Italian, no time for it")
    hits = await ask(engine, "max", "what language am I learning?")
    assert said(hits[0], end_id) and hits[0].current, [h.fact.content for h in hits]
    for h in hits:
        if said(h, old_id):
            assert not h.current
    old = await store.get_many([keyed[0].id], scopes=["user:max"])
    assert old[0].status == "superseded"  # kept as history, never deleted
    theirs = [f for f in await store.list_facts(["user:nia"]) if f.attr == "nia/language_learning"]
    assert len(theirs) == 1 and theirs[0].status == "active"
    await assert_private(store, "what language am I learning?", "max", "user:nia")


async def test_small_talk_said_just_after_a_change_does_not_lead(engine, store, clock):
    """The latest thing said leads only from a later conversation: words said minutes after the
    change, in the same session, do not displace it."""
    await tell(engine, clock, "ola", "I live in Lisbon")
    await tell(engine, clock, "pia", "I live in Madrid")  # another user, a DM
    new_id, chat_id = await tell(
        engine, clock, "ola", "I moved to Porto last month", "honestly I live for sunny weekends like this one"
    )
    hits = await ask(engine, "ola", "where do I live")
    assert said(hits[0], new_id) and hits[0].current, [h.fact.content for h in hits]
    text = (await engine.handle(msg("ola", "!recall where do I live"))).text
    assert "Porto" in text.splitlines()[1] and "Madrid" not in text, text
    await assert_private(store, "where do I live", "ola", "user:pia")
