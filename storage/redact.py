"""Finding an erased user's words in text written by Clara (or another machine), and cutting them out.

When a user is purged their own rows are deleted, but copies of their words survive in text that
machines wrote from them: a bot reply in someone else's conversation that quoted their fact, the
session summary built from that reply, an agent's fact, a fact's context (the previous turn), a
plugin's proactive message. `Quotes` is built from everything the user said or owned (messages,
facts and their history, plugin data) and finds those copies in two ways:

- **quotes**: a stretch of consecutive words that also occurs in order in the user's texts (every
  3-word window of it does; a 2-word stretch as a pair; one word alone only if it is code-like),
  weighing at least `QUOTE_WEIGHT`: content words weigh 1, stopwords and 1-2 letter words 0, and
  code-like words (letters and digits, or a long number — a PIN, an account or passport number,
  `xk4471`) `QUOTE_WEIGHT` on their own. A stretch that also occurs in the reader's own words
  (`allowed`: their turns, their facts the reply used) is not a quote of the erased user.
- **provenance**: when a text is known to have been written from the user's facts (the reply
  recorded their ids), every sentence holding a word of those facts that `allowed` does not
  explain is cut too — paraphrases such as "her code? it's 4412" or "Alice loves zydeco".

Either becomes `REMOVED`; the rest of the text is kept. Pure functions, no I/O.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass

from storage.text import STOPWORDS

REMOVED = "[removed]"
QUOTE_WEIGHT = 4
_TOKEN = re.compile(r"[^\W_]+", re.UNICODE)
_SENTENCE = re.compile(r"[^.!?\n]+[.!?]*|[.!?]+")
_GAP = re.compile(r"[\s\W_]*", re.UNICODE)  # what may separate two cuts that merge into one


def _tokens(text: str) -> list[tuple[str, int, int]]:
    """(normalised word, start, end) for every word of `text` (NFKC, case-folded)."""
    return [(unicodedata.normalize("NFKC", m.group()).casefold(), m.start(), m.end()) for m in _TOKEN.finditer(text)]


def words(text: str) -> list[str]:
    return [t for t, _, _ in _tokens(text)]


def code_like(word: str) -> bool:
    """A word that identifies something by itself: 4+ characters mixing letters and digits, or a
    number of 5+ digits, or a 4-digit number that is not a year (PINs)."""
    if len(word) < 4 or not any(c.isdigit() for c in word):
        return False
    if word.isdigit():
        return len(word) >= 5 or not 1900 <= int(word) <= 2100
    return True


def weight(word: str) -> int:
    if code_like(word):
        return QUOTE_WEIGHT
    if len(word) <= 2 or word in STOPWORDS:
        return 0
    return 1


class _Shingles:
    """The words, pairs and triples of consecutive words of some texts."""

    def __init__(self, texts: Iterable[str] = ()):
        self.one: set[str] = set()
        self.two: set[tuple[str, str]] = set()
        self.three: set[tuple[str, str, str]] = set()
        for text in texts:
            self.add(words(text))

    def add(self, seq: list[str]) -> None:
        self.one.update(seq)
        self.two.update(zip(seq, seq[1:], strict=False))
        self.three.update(zip(seq, seq[1:], seq[2:], strict=False))

    def holds(self, seq: list[str]) -> bool:
        """Every window of `seq` occurs here (all of it, for one or two words)."""
        if len(seq) == 1:
            return seq[0] in self.one
        if len(seq) == 2:
            return (seq[0], seq[1]) in self.two
        return all(w in self.three for w in zip(seq, seq[1:], seq[2:], strict=False))


@dataclass(slots=True)
class Cut:
    start: int
    end: int


class Quotes:
    """What one erased user wrote, ready to be found in other texts. Build once per purge from
    their texts (any number; each a str); then `redact(text, ...)` per candidate text."""

    def __init__(self, texts: Iterable[str]):
        self._src = _Shingles(t for t in texts if t)
        self.codes = {w for w in self._src.one if code_like(w)}

    def __bool__(self) -> bool:
        return bool(self._src.one)

    def may_quote(self, text: str) -> bool:
        """Cheap pre-check: does `text` share a code-like word or three consecutive words with the
        user's texts (a necessary condition for a quote)?"""
        seq = words(text)
        return any(w in self.codes for w in seq) or any(
            w in self._src.three for w in zip(seq, seq[1:], seq[2:], strict=False)
        )

    def quote_cuts(self, text: str, allowed: _Shingles | None = None) -> list[Cut]:
        """The quotes of the user's texts in `text` (see the module doc), as character ranges."""
        toks = _tokens(text)
        seq = [t for t, _, _ in toks]
        src, n, i, cuts = self._src, len(toks), 0, []
        while i < n:
            if i + 2 < n and (seq[i], seq[i + 1], seq[i + 2]) in src.three:
                j = i + 2
                while j + 1 < n and (seq[j - 1], seq[j], seq[j + 1]) in src.three:
                    j += 1
            elif i + 1 < n and (seq[i], seq[i + 1]) in src.two:
                j = i + 1
            elif seq[i] in self.codes:
                j = i
            else:
                i += 1
                continue
            stretch = seq[i : j + 1]
            if sum(weight(w) for w in stretch) >= QUOTE_WEIGHT and not (allowed is not None and allowed.holds(stretch)):
                cuts.append(Cut(toks[i][1], toks[j][2]))
                i = j + 1
            else:
                i += 1
        return cuts

    @staticmethod
    def sentence_cuts(text: str, telltale: set[str]) -> list[Cut]:
        """Every sentence (or line) of `text` holding one of the `telltale` words."""
        if not telltale:
            return []
        cuts = []
        for m in _SENTENCE.finditer(text):
            if any(w in telltale for w in words(m.group())):
                lead = len(m.group()) - len(m.group().lstrip())
                cuts.append(Cut(m.start() + lead, m.end()))
        return cuts

    def redact(self, text: str | None, *, allowed: Iterable[str] = (), used: Iterable[str] = ()) -> str | None:
        """`text` with the user's words cut out, or None when nothing in it is theirs.

        `allowed`: texts whose words the reader supplied (their own turns, their facts the reply
        used): a stretch found there too is not the erased user's. `used`: the erased user's facts
        that `text` is known to have been written from (provenance); any sentence holding one of
        their words that `allowed` does not explain is cut as well."""
        if not text:
            return None
        allowed = list(allowed)
        own = _Shingles(allowed)
        cuts = self.quote_cuts(text, own)
        used = list(used)
        if used:
            telltale = {w for t in used for w in words(t) if weight(w) > 0} - own.one
            cuts += self.sentence_cuts(text, telltale)
        if not cuts:
            return None
        return _apply(text, cuts)


def _apply(text: str, cuts: list[Cut]) -> str:
    """Replace the (merged) cuts with REMOVED; cuts separated only by spaces/punctuation merge."""
    cuts = sorted(cuts, key=lambda c: (c.start, c.end))
    merged: list[Cut] = []
    for c in cuts:
        if merged and (c.start <= merged[-1].end or _GAP.fullmatch(text, merged[-1].end, c.start)):
            merged[-1].end = max(merged[-1].end, c.end)
        else:
            merged.append(Cut(c.start, c.end))
    out, pos = [], 0
    for c in merged:
        out += [text[pos : c.start], REMOVED]
        pos = c.end
    out.append(text[pos:])
    return "".join(out)


def plugin_strings(data: object) -> list[str]:
    """The free-text strings of a plugin's `export_user_data` result (nested dicts/lists): the
    user's words kept by plugins (reminder texts, invoice notes, client names). Timestamps,
    dates and bare numbers are skipped."""
    out: list[str] = []

    def walk(v: object) -> None:
        if isinstance(v, dict):
            for x in v.values():
                walk(x)
        elif isinstance(v, list | tuple):
            for x in v:
                walk(x)
        elif isinstance(v, str) and not _ISO.match(v) and any(w.isalpha() and len(w) >= 3 for w in words(v)):
            out.append(v)

    walk(data)
    return out


_ISO = re.compile(r"^\d{4}-\d{2}-\d{2}([T ][\d:.]+([+-]\d{2}:?\d{2}|Z)?)?$")
