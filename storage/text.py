"""Input validation and tokenisation shared by the write and recall paths."""

from __future__ import annotations

import re
import unicodedata

from storage.errors import InvalidInput

MAX_FACT_CHARS = 16_000
MAX_QUERY_CHARS = 4_000
MAX_SCOPE_ID = 200
MAX_NAME_CHARS = 200  # entity names and aliases, speakers, relation names
MAX_INT64 = 2**63 - 1  # the largest value an SQL BIGINT (and SQLite INTEGER) holds
_SCOPE_RE = re.compile(r"^[\w.:@#/+\- ]{1,200}$", re.UNICODE)
_CONTROL = {c for c in map(chr, range(32)) if c not in "\n\t"} | {"\x7f"}
_WORD = re.compile(r"[^\W_]+", re.UNICODE)
_SURROGATE = re.compile("[\ud800-\udfff]")

# Function words dropped from lexical queries (they match everything and cost time).
STOPWORDS = frozenset(
    """a about above after again against all am an and any are as at be because been before being
    below between both but by can could did do does doing down during each few for from further had has
    have having he her here hers herself him himself his how i if in into is it its itself just me
    more most my myself no nor not now of off on once only or other our ours ourselves out over own
    same she should so some such than that the their theirs them themselves then there these they
    this those through to too under until up very was we were what when where which while who whom
    why will with would you your yours yourself yourselves s t d ll m re ve y o don didn doesn isn
    wasn weren hasn haven hadn won wouldn shouldn couldn mustn also get got ever""".split()
) | frozenset(
    # Spanish, Portuguese, French and German function words that are not English content words.
    """el la los las un una unos unas del de en y o que se su sus por para con sin es lo le les
    mi mis tu tus yo nos como mas pero muy ya esta este esto estos estas eso esa ese fue ser tiene
    donde dónde qué cuál cual cuando cuándo quien quién
    um uma uns umas do da dos das no na nos em ao aos pelo pela com sem meu minha seu sua
    ele ela isso isto esse essa onde quem quando qual porque também
    les des du au aux et ou est sont une je tu il elle nous vous ils elles ce cet cette ces mon ma mes
    ta tes sa ses leur leurs qui quoi où quand comment pourquoi avec pour sans dans sur pas ne
    der das dem des ein eine einen einem einer und oder ist sind ich du er sie wir ihr es
    mein meine dein deine sein nicht mit für auf aus bei wo wer wann wie warum was""".split()
)


def shown(value: object, most: int = 60) -> str:
    """`repr(value)` for an error message, shortened visibly ("…") when long: the refusal names
    the value without echoing a megabyte back."""
    r = repr(value)
    return r if len(r) <= most else r[: most - 1] + "…"


def unicode_problem(value: str) -> str | None:
    """Why `value` is not valid Unicode text (a lone UTF-16 surrogate, as left by undecodable
    bytes or a bad JSON escape: no encoder, tokenizer or database accepts it), or None."""
    i = 0
    while (m := _SURROGATE.search(value, i)) is not None:
        j = m.start()
        ch = value[j]
        if ch <= "\udbff" and j + 1 < len(value) and "\udc00" <= value[j + 1] <= "\udfff":
            i = j + 2  # a high+low pair: one character, spelled in UTF-16
            continue
        return f"it is not valid Unicode (lone surrogate U+{ord(ch):04X} at character {j + 1:,})"
    return None


def join_surrogates(value: str) -> str:
    """`value` with UTF-16 surrogate pairs joined into the characters they spell ("\\ud83d\\ude00"
    -> "😀"). Check `unicode_problem` first: a lone surrogate raises UnicodeDecodeError here."""
    if _SURROGATE.search(value) is None:
        return value
    return value.encode("utf-16-le", "surrogatepass").decode("utf-16-le")


def _valid_unicode(value: str, what: str) -> str:
    """`value` with surrogate pairs joined; raises InvalidInput for a lone surrogate (never passed
    on to the embedder or the database)."""
    problem = unicode_problem(value)
    if problem:
        raise InvalidInput(f"{what} is unreadable: {problem}")
    return join_surrogates(value)


def clean_text(value: object, what: str = "text", max_chars: int = MAX_FACT_CHARS) -> str:
    """Return `value` stripped and with control characters removed.

    Raises InvalidInput if it is not a string, contains NUL bytes or lone surrogates (invalid
    Unicode), is empty after cleaning, or is longer than `max_chars` characters (never cut)."""
    if isinstance(value, bytes):
        raise InvalidInput(f"{what} must be text, not bytes")
    if not isinstance(value, str):
        raise InvalidInput(f"{what} must be text, got {type(value).__name__}")
    if "\x00" in value:
        raise InvalidInput(f"{what} contains NUL bytes (binary data is not stored)")
    if len(value) > max_chars:
        raise InvalidInput(f"{what} is too long: {len(value):,} characters (max {max_chars:,})")
    value = _valid_unicode(value, what)
    text = "".join(ch for ch in value if ch not in _CONTROL)
    text = unicodedata.normalize("NFC", text).strip()
    if not text:
        raise InvalidInput(f"{what} is empty")
    return text


def check_name(value: object, what: str = "name", max_chars: int = MAX_NAME_CHARS) -> str:
    """A short label (entity name, alias, relation, speaker): clean_text's checks with a smaller
    limit, named in the error. Raises InvalidInput; never cuts."""
    return clean_text(value, what, max_chars)


def check_int(value: object, what: str, lo: int = -MAX_INT64 - 1, hi: int = MAX_INT64) -> int:
    """An integer (or a string of ASCII digits) within [lo, hi] (default: the 64-bit range SQL
    can store). Raises InvalidInput naming the bounds."""
    if isinstance(value, bool):
        raise InvalidInput(f"{what} must be a whole number, got {shown(value)}")
    if isinstance(value, str):
        s = value.strip()
        digits = s[1:] if s[:1] in "+-" else s
        if not (digits.isascii() and digits.isdigit()) or len(digits) > 30:
            raise InvalidInput(f"{what} must be a whole number from {lo:,} to {hi:,}, got {value[:40]!r}")
        value = int(s)
    if not isinstance(value, int):
        raise InvalidInput(f"{what} must be a whole number, got {type(value).__name__}")
    if not lo <= value <= hi:
        got = f"{value:,}" if abs(value) < 10**30 else f"a {len(str(abs(value)))}-digit number"
        raise InvalidInput(f"{what} must be from {lo:,} to {hi:,}, got {got}")
    return value


def check_scope_id(scope_id: object) -> str:
    """Validate a scope id such as `user:1234` or `channel:general`; raises InvalidInput."""
    if not isinstance(scope_id, str) or not _SCOPE_RE.match(scope_id):
        raise InvalidInput(f"invalid scope id {shown(scope_id)}")
    return scope_id


def check_fact_id(fact_id: object) -> int:
    """Accept an int or a decimal string; raises InvalidInput otherwise."""
    if isinstance(fact_id, bool):
        raise InvalidInput(f"invalid fact id {shown(fact_id)}")
    if isinstance(fact_id, int):
        value = fact_id
    elif isinstance(fact_id, str) and (digits := fact_id.strip().lstrip("#")).isascii() and digits.isdigit():
        if len(digits) > 19:
            raise InvalidInput(f"invalid fact id {fact_id[:40]!r}")
        value = int(digits)
    else:
        raise InvalidInput(f"invalid fact id {fact_id!r:.60}")
    if not 0 < value < 2**62:
        raise InvalidInput(f"invalid fact id {shown(fact_id)}")
    return value


def strip_accents(text: str) -> str:
    """Accented Latin letters without their accents ("dónde" → "donde"); what both full-text
    indexes do to stored text (SQLite remove_diacritics, PostgreSQL migration 0006)."""
    return "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))


def words(text: str) -> list[str]:
    """Lower-cased word tokens (letters and digits)."""
    return [w.lower() for w in _WORD.findall(text)]


def query_terms(text: str, limit: int = 24) -> list[str]:
    """Distinct content words of a query, in order, stopwords and 1-letter words removed."""
    seen: dict[str, None] = {}
    for w in words(text):
        if len(w) > 1 and w not in STOPWORDS and w not in seen:
            seen[w] = None
        if len(seen) >= limit:
            break
    return list(seen)


def without_names(text: str, names: list[str]) -> str:
    """`text` without its whitespace-separated tokens made only of words of `names` (normalised
    entity names; 1-letter words such as a possessive "s" are ignored), or `text` unchanged if that
    would leave no word. "What did Caroline's sister paint?" with "caroline" -> "What did sister paint?"."""
    name_words = {w for n in names for w in n.split()}
    if not name_words:
        return text
    kept = []
    for tok in text.split():
        ws = [w for w in words(tok) if len(w) > 1]
        if not (ws and all(w.casefold() in name_words for w in ws)):
            kept.append(tok)
    out = " ".join(kept)
    return out if words(out) else text


def norm_name(name: str) -> str:
    """Normalised entity name used for matching: case-folded words joined by one space."""
    return " ".join(w.casefold() for w in _WORD.findall(name))


def scope_token(scope_id: str) -> str:
    """The full-text token that stands for a scope in the SQLite FTS index (see migration 0001)."""
    return "x" + scope_id.encode("utf-8").hex() + "0"
