"""Splitting long replies for Discord: limits, boundaries, code fences, no text lost."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from clara.discord_adapter.split import split_message


def _text_of(chunks: list[str]) -> str:
    """The words of the chunks with fence markers removed (fences may be added by the split)."""
    return re.sub(r"```\w*", "", "".join(chunks)).split().__str__()


def test_short_text_is_one_message():
    assert split_message("hello") == ["hello"]
    assert split_message("   \n") == []


def test_prefers_paragraph_then_line_boundaries():
    text = ("a" * 900 + "\n\n") + ("b" * 900 + "\n") + "c" * 900
    parts = split_message(text)
    assert parts[0] == "a" * 900 and parts[1].startswith("b" * 900)
    assert all(len(p) <= 2000 for p in parts)


def test_code_fence_is_closed_and_reopened_with_its_language():
    code = "```python\n" + "\n".join(f"value_{i} = {i}" for i in range(400)) + "\n```\nDone."
    parts = split_message(code)
    assert len(parts) > 1
    for p in parts:
        assert len(p) <= 2000 and p.count("```") % 2 == 0
    assert all(p.startswith("```python\n") for p in parts[1:-1])
    assert parts[-1].rstrip().endswith("Done.")


def test_a_word_longer_than_the_limit_is_hard_cut():
    parts = split_message("x" * 4500)
    assert [len(p) for p in parts] == [1996, 1996, 508]


words = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="`"), min_size=1, max_size=30)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(words, st.just("\n"), st.just("\n\n"), st.just("```py\n"), st.just("\n```\n")), max_size=400))
def test_never_over_limit_and_nothing_lost(pieces):
    text = " ".join(pieces)
    parts = split_message(text, limit=300)
    assert all(len(p) <= 300 for p in parts)
    assert _text_of(parts) == _text_of([text])
