from storage.text import without_names


def test_without_names_drops_mentioned_names_only():
    assert without_names("What did Caroline research?", ["caroline"]) == "What did research?"
    assert without_names("When did Melanie's kids visit?", ["melanie"]) == "When did kids visit?"
    assert without_names("Did Jon Smith move?", ["jon smith"]) == "Did move?"
    assert without_names("What did Caroline research?", []) == "What did Caroline research?"


def test_without_names_keeps_the_query_when_nothing_would_be_left():
    assert without_names("Caroline?", ["caroline"]) == "Caroline?"
