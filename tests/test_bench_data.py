"""The embedder benchmark's paraphrase sets (clara/bench/data): shape, and that each fact and its
question share no content word, so only meaning can match them."""

from __future__ import annotations

from clara.bench.embedders import LANGS, content_stems, load_paraphrase


def test_paraphrase_sets_are_complete():
    pairs, distractors = load_paraphrase()
    assert len(pairs) >= 40 and len({p["id"] for p in pairs}) == len(pairs)
    assert all("en" in p and "es" in p for p in pairs)
    for lang in ("pt", "fr", "de"):
        assert sum(lang in p for p in pairs) >= 20
    assert len(distractors["en"]) >= 200 and len(distractors["es"]) == len(distractors["en"])
    assert all(len(distractors[lang]) >= 100 for lang in LANGS)
    for lang in LANGS:
        facts = {p[lang]["fact"] for p in pairs if lang in p}
        assert not facts & set(distractors[lang]) and len(set(distractors[lang])) == len(distractors[lang])


def test_facts_and_questions_share_no_content_word():
    pairs, _ = load_paraphrase()
    shared = {
        (p["id"], lang): content_stems(p[lang]["fact"]) & content_stems(p[lang]["question"])
        for p in pairs
        for lang in LANGS
        if lang in p
    }
    assert {k: v for k, v in shared.items() if v} == {}
