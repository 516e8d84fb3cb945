"""`clara bench current`: does recall return what is true NOW? (issue "Recall what is true now")

Scenarios (deterministic from `--set` and `--seed`)
---------------------------------------------------
One scenario = one attribute of one person that changes over time (home city, employer, job,
school, manager, partner, pet, car, child's school, phone, email, favourite food/music/sport,
diet, timezone, gym, preferred appointment time, hobby, language being learned). The OLD state is
told in one session; weeks later the NEW state is told in another ("I moved to Porto"), or the
state simply ends (CESSATION, for some types: "I quit my job at Acme", "we broke up" — then the
cessation statement is the expected current answer, and the old value must not be presented as
current). Unrelated turns (small talk, other facts) surround them, sometimes in sessions of
their own. The person is the user ("I live in Lisbon") or, in a third of the scenarios, someone
the user talks about ("my sister Anna lives in Lisbon" … "Anna moved to Berlin"). Then three
questions, asked through the `!recall` path (`engine.memory.recall(query, where, k=10)`):

    current     "where do I live?"             the new state should come first
    history     "where did I live before?"     the old state should be in the top 5
    paraphrase  "what city am I based in?"     shares no content word with the new statement

Languages: 60% English, 20% Spanish, ~7% Portuguese (Brazilian), ~7% French, ~6% German
(Portuguese, French and German cover 12 of the 20 attribute types). Places: half the scenarios
in a DM, 30% in a channel of the user's own, 20% in a channel shared with three other
scenario users. Every scenario also has a PRIVACY TWIN: another user who, in a DM, states the
same kind of thing in the same words with another value; nothing of any other user's private
conversations may ever be returned.

The phrasings live in `data/current/<lang>.txt`, in two DISJOINT sets — `dev` (to tune on) and
`holdout` (different templates and value pools; checks generalisation) — plus per-language
stop words (for the paraphrase check). File syntax:

    === dev | holdout | common       a block
    --- <section>                    a list, one item per line ('#' starts a comment line)
    sections: names ("Marta (f)"), kin ("my brother|my sister"), smalltalk, facts (unrelated
    first-person facts), prefix / suffix (chat fillers), stopwords (common block, words
    separated by spaces), and per attribute <attr>.values, .old, .new, .stop (cessation,
    optional), .q, .hist, .para.
    Templates:   {first person|third person}   [masculine|feminine] (the subject's gender)
                 <masculine|feminine> (the gender of the value person: partner, boss, child)
                 {v} the value of this state; {old} the old value; @ the third person's name;
                 @@ "my sister Anna"; {myrel} "my sister"; {deN} "of Anna" (de Anna, da Ana,
                 d'Anna, von Anna); {kid} the child (child_school); a leading "1> " or "3> "
                 restricts a template to the first or third person.
    Values:      "Lisbon"; "enfermero|enfermera" (by the subject's gender); "Marco (m)" (a
                 person); phone patterns with '#' for digits; emails with {first}.

Harness
-------
One store and one `ChatEngine` (memory-only mode, as `clara chat` without an LLM) for all
scenarios; each scenario has its own users. All sessions are laid on one simulated timeline:
for every simulated day the day's sessions are played through `ChatEngine.handle` with the
`ManualClock` set to each message's time, then the clock moves to the evening, idle sessions
are swept closed (SESSION_IDLE_MINUTES) and the memory worker is drained — so each session is
closed, summarised and its facts written before the same user's next session, days or weeks
later. Questions are asked on their own day after the last session.

Items are identified by provenance only: a recalled fact "is" the new state if its
`source_message_ids` contain the message id of the new-state turn (`Reply.message_id`) — the
raw-turn observation, any fact extracted from it, a summary of its session — and the old state
likewise. A fact is "presented as current" unless its status is superseded/deleted or its
`valid_to` has passed. Nothing here depends on how the core decides what is current.

Metrics (per language, overall, and per attribute / form / person / place in --json):
    current@1        the top hit of the current question is the new state (presented as current)
    current@5        a new-state item in its top 5
    stale>current    an old-state item presented as current ranks above the first new-state
                     item (or is returned while no new-state item is)
    history@5        an old-state item in the top 5 for the history question
    paraphrase@5     a new-state item in the top 5 for the paraphrase question
    none@k           the current question returned nothing
    query p50/p95    latency of the recalls (all three questions)
    privacy          hits from another user's private conversation or scope (must be 0)
    new extracted    diagnostics: a typed fact was extracted from the new-state turn;
    old closed       an old-state fact was superseded / given a valid_to.
"""

from __future__ import annotations

import os
import random
import re
import secrets
import tempfile
import time
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from pathlib import Path

from clara.bench.stats import pct, rss_mb

DATA = Path(__file__).parent / "data" / "current"
SETS = ("dev", "holdout")
LANG_SHARE = {"en": 0.60, "es": 0.20, "pt": 0.07, "fr": 0.07, "de": 0.06}
SCENARIOS = 400  # per set
CESSATION_SHARE = 0.35  # of the scenarios whose attribute can cease
THIRD_PERSON_SHARE = 0.3
PLACES = (("dm", 0.5), ("personal", 0.3), ("shared", 0.2))
SHARED_CHANNEL_USERS = 4
K = 10  # what `!recall` asks for (clara.commands.PAGE)
T0 = datetime(2026, 1, 5, tzinfo=UTC)
ATTR_SLOTS = ("values", "old", "new", "stop", "q", "hist", "para")
METRICS = (
    "current@1",
    "current@5",
    "stale>current",
    "history@5",
    "paraphrase@5",
    "none@k",
)
DIAGNOSTICS = ("new_extracted", "old_closed")
TABLE_ROWS = (*LANG_SHARE, "all", "cessation", "third person")
BREAKDOWNS = ("by_attribute", "by_form", "by_person", "by_place", "by_new_template", "scenarios")  # --json only


# --------------------------------------------------------------------------- phrasebooks
@dataclass(slots=True)
class Book:
    """The phrasings of one language in one set."""

    lang: str
    set: str
    sections: dict[str, list[str]]
    stopwords: frozenset[str]

    def attrs(self) -> list[str]:
        return sorted({k.split(".", 1)[0] for k in self.sections if "." in k})

    def get(self, key: str) -> list[str]:
        return self.sections.get(key, [])


def _parse(path: Path) -> dict[str, dict[str, list[str]]]:
    blocks: dict[str, dict[str, list[str]]] = {}
    block: dict[str, list[str]] | None = None
    sect: list[str] | None = None
    for n, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("=== "):
            block, sect = blocks.setdefault(line[4:].strip(), {}), None
        elif line.startswith("--- "):
            if block is None:
                raise ValueError(f"{path.name}:{n}: section outside a block")
            sect = block.setdefault(line[4:].strip(), [])
        elif sect is None:
            raise ValueError(f"{path.name}:{n}: text outside a section")
        else:
            sect.append(line)
    return blocks


@lru_cache(maxsize=16)
def load_book(lang: str, set_name: str) -> Book:
    if set_name not in SETS:
        raise ValueError(f"unknown set {set_name!r} (choose {' or '.join(SETS)})")
    blocks = _parse(DATA / f"{lang}.txt")
    common = blocks.get("common", {})
    stop = frozenset(_fold(w) for line in common.get("stopwords", []) for w in line.split())
    return Book(lang, set_name, blocks[set_name], stop)


def languages() -> list[str]:
    return [lang for lang in LANG_SHARE if (DATA / f"{lang}.txt").exists()]


def validate() -> list[str]:
    """Problems with the phrasebooks (empty when they are fit to use): both sets cover the same
    attributes per language; every attribute has at least 3 values and 3 templates per slot and
    person; cessation is offered for the same attributes everywhere; dev and holdout share no
    template and no value."""
    problems = []
    stops: dict[str, set[str]] = {}
    for lang in languages():
        books = {s: load_book(lang, s) for s in SETS}
        if books["dev"].attrs() != books["holdout"].attrs():
            problems.append(f"{lang}: dev and holdout cover different attributes")
        for set_name, book in books.items():
            for attr in book.attrs():
                if len(book.get(f"{attr}.values")) < 3:
                    problems.append(f"{lang}/{set_name}: {attr}.values has fewer than 3 values")
                for slot in ("old", "new", "stop", "q", "hist", "para"):
                    items = book.get(f"{attr}.{slot}")
                    if slot == "stop" and not items:
                        continue
                    for person in (1, 3):
                        if sum(usable(t, person) for t in items) < 3:
                            problems.append(f"{lang}/{set_name}: {attr}.{slot} has < 3 templates for person {person}")
                stops.setdefault(attr, set()).add(f"{lang}/{set_name}:{bool(book.get(f'{attr}.stop'))}")

        def phrasings(book: Book) -> set[str]:
            return {x for k, v in book.sections.items() if k not in ("names", "kin", "prefix", "suffix") for x in v}

        shared = phrasings(books["dev"]) & phrasings(books["holdout"])
        if shared:
            problems.append(f"{lang}: dev and holdout share {len(shared)} phrasings/values: {sorted(shared)[:4]}")
    for attr, flags in stops.items():
        if len({f.split(":")[1] for f in flags}) > 1:
            problems.append(f"{attr}: cessation offered in some languages/sets only: {sorted(flags)}")
    return problems


# --------------------------------------------------------------------------- rendering
@dataclass(slots=True)
class Ctx:
    """Who a template speaks about, and the values it may name."""

    lang: str
    person: int  # 1: the user; 3: someone the user talks about
    gender: str  # of the subject ('m' | 'f')
    name: str | None = None  # the third person
    intro: str | None = None  # "my sister Anna"
    myrel: str | None = None  # "my sister"
    myrel_cases: tuple[str, str] = ("", "")  # German accusative and dative: "meinen Bruder", "meinem Bruder"
    v: str | None = None
    old: str | None = None
    obj_gender: str = "f"  # of the value person (partner, boss) or of the child
    kid: str | None = None


def _split_top(s: str, sep: str = "|") -> list[str]:
    parts, depth, cur = [], 0, []
    for ch in s:  # gender markup [m|f] and <m|f> nests inside {first|third}
        if ch in "{[<":
            depth += 1
        elif ch in "}]>":
            depth -= 1
        if ch == sep and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return parts


def _braces(tpl: str, person: int) -> str:
    """Resolve {first|third} alternations; simple {placeholders} become \\x00name\\x00 markers."""
    out, i = [], 0
    while i < len(tpl):
        if tpl[i] != "{":
            out.append(tpl[i])
            i += 1
            continue
        depth, j = 1, i + 1
        while depth:
            if j >= len(tpl):
                raise ValueError(f"unbalanced braces in {tpl!r}")
            depth += {"{": 1, "}": -1}.get(tpl[j], 0)
            j += 1
        inner = tpl[i + 1 : j - 1]
        parts = _split_top(inner)
        if len(parts) == 2:
            out.append(_braces(parts[0] if person == 1 else parts[1], person))
        elif len(parts) == 1 and re.fullmatch(r"\w+", inner):
            out.append(f"\x00{inner}\x00")
        else:
            raise ValueError(f"bad brace group {{{inner}}} in {tpl!r}")
        i = j
    return "".join(out)


_GENDER_SUBJ = re.compile(r"\[([^\[\]|]*)\|([^\[\]|]*)\]")
_GENDER_OBJ = re.compile(r"<([^<>|]*)\|([^<>|]*)>")
_MARKER = re.compile(r"\x00(\w+)\x00")


def _of(lang: str, name: str, gender: str) -> str:
    """ "of <name>" in the language's possessive construction."""
    if lang == "fr":
        return f"d'{name}" if _fold(name[0]) in "aeiouyh" else f"de {name}"
    if lang == "pt":
        return f"{'do' if gender == 'm' else 'da'} {name}"
    if lang == "de":
        return f"von {name}"
    if lang == "es":
        return f"de {name}"
    return f"of {name}"


def _rules(*pairs: tuple[str, str]) -> tuple[tuple[re.Pattern, str], ...]:
    return tuple((re.compile(p), r) for p, r in pairs)


# Preposition + article where a value with an article lands after a preposition ("va a el
# colegio" -> "va al colegio"; "mora em a Bahia" -> "mora na Bahia"; "de Orange" -> "d'Orange").
_CONTRACTIONS = {
    "es": _rules((r"\ba el\b", "al"), (r"\bde el\b", "del")),
    "pt": _rules(
        *[(rf"\bem {a}\b", f"n{a}") for a in ("o", "a", "os", "as")],
        *[(rf"\bde {a}\b", f"d{a}") for a in ("o", "a", "os", "as")],
        *[(rf"\bpor {a}\b", f"pel{a}") for a in ("o", "a", "os", "as")],
        (r"\ba o\b", "ao"),
        (r"\ba a\b", "à"),
        (r"\bpra o\b", "pro"),
        (r"\bpra a\b", "pra"),
    ),
    "fr": _rules(
        (r"\bà le\b", "au"),
        (r"\bà les\b", "aux"),
        (r"\bde le\b", "du"),
        (r"\bde les\b", "des"),
        (r"\bde ([AEIOUYÉÈaeiouyéè])", r"d'\1"),
        (r"\bque ([AEIOUYÉÈ])", r"qu'\1"),
    ),
    "de": (),
}


def render(tpl: str, ctx: Ctx) -> str:
    """One template with `ctx` filled in (see the module docstring for the syntax)."""
    if tpl[:3] in ("1> ", "3> "):
        tpl = tpl[3:]
    text = _braces(tpl, ctx.person)
    text = _GENDER_SUBJ.sub(lambda m: m.group(1) if ctx.gender == "m" else m.group(2), text)
    text = _GENDER_OBJ.sub(lambda m: m.group(1) if ctx.obj_gender == "m" else m.group(2), text)
    if "@" in text:
        if ctx.person != 3 or not ctx.name:
            raise ValueError(f"a third-person template used for the first person: {tpl!r}")
        text = text.replace("@@", ctx.intro or ctx.name).replace("@", ctx.name)

    def value(m: re.Match) -> str:
        key = m.group(1)
        got = {
            "v": ctx.v,
            "old": ctx.old,
            "kid": ctx.kid,
            "myrel": ctx.myrel,
            "myrelA": ctx.myrel_cases[0] or ctx.myrel,
            "myrelD": ctx.myrel_cases[1] or ctx.myrel,
            "deN": _of(ctx.lang, ctx.name, ctx.gender) if ctx.name else None,
        }.get(key)
        if got is None:
            raise ValueError(f"template {tpl!r} needs {{{key}}}, which this scenario has not")
        return got

    text = _MARKER.sub(value, text)
    for pattern, repl in _CONTRACTIONS.get(ctx.lang, ()):
        text = pattern.sub(repl, text)
    return re.sub(r"\s{2,}", " ", text).strip()


def usable(tpl: str, person: int) -> bool:
    if tpl.startswith("1> "):
        return person == 1
    if tpl.startswith("3> "):
        return person == 3
    return True


def _fold(word: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFKD", word.casefold()) if not unicodedata.combining(c))


def content_words(text: str, stop: frozenset[str]) -> set[str]:
    """Accent-folded words of `text` that carry content (3+ letters, not a stop word, not a number)."""
    folded = (_fold(x) for x in re.findall(r"[^\W_]+", text))
    return {w for w in folded if len(w) > 2 and w not in stop and not w.isdigit()}


def _related(a: str, b: str) -> bool:
    """Same word, or one a prefix of the other, or a common 5-letter stem (a crude stemmer that
    errs on the side of "shared")."""
    short, long_ = sorted((a, b), key=len)
    return long_.startswith(short) or (len(short) >= 5 and short[:5] == long_[:5])


def shared_words(a: str, b: str, stop: frozenset[str]) -> set[str]:
    wa, wb = content_words(a, stop), content_words(b, stop)
    return {x for x in wa if any(_related(x, y) for y in wb)}


def _typo(text: str, rng: random.Random, protect: list[str]) -> str:
    keep = {_fold(w) for p in protect if p for w in re.findall(r"[^\W_]+", p)}
    spots = [m for m in re.finditer(r"[^\W\d_]{5,}", text) if _fold(m.group(0)) not in keep]
    if not spots:
        return text
    m = rng.choice(spots)
    w = m.group(0)
    i = rng.randrange(1, len(w) - 2)
    w = w[:i] + w[i + 1] + w[i] + w[i + 2 :]
    return text[: m.start()] + w + text[m.end() :]


def style(
    text: str, rng: random.Random, book: Book, protect: list[str], *, chatty: bool = True, lead: bool = True
) -> str:
    """Chat surface: a lead-in ("btw"; statements only), a trailing "lol", lower case, dropped
    punctuation, the odd typo (questions: only lower case and a dropped question mark)."""
    if chatty and lead and rng.random() < 0.22 and book.get("prefix"):
        head = text if text.startswith(("I ", "I'")) else text[0].lower() + text[1:]
        text = f"{rng.choice(book.get('prefix'))} {head}"
    if chatty and rng.random() < 0.12 and book.get("suffix"):
        tail = rng.choice(book.get("suffix"))
        text = text.rstrip(".!") + ("" if tail[0] in "!?.,…" else " ") + tail
    r = rng.random()
    if r < 0.10:
        text = text.lower()
    elif r < 0.40 and not text.startswith(("I ", "I'")):
        text = text[0].lower() + text[1:]
    if rng.random() < (0.3 if chatty else 0.2):
        text = text.rstrip("." if chatty else "?").rstrip()
    if chatty and rng.random() < 0.03:
        text = _typo(text, rng, protect)
    return text


# --------------------------------------------------------------------------- scenarios
@dataclass(slots=True)
class Turn:
    text: str
    role: str  # "old" | "new" | "filler" | "twin"
    at: float  # seconds after the session start


@dataclass(slots=True)
class SessionPlan:
    day: int  # days after T0
    minute: int  # minute of that day
    turns: list[Turn]
    twin: bool = False  # played by the privacy twin


@dataclass(slots=True)
class Scenario:
    id: str
    set: str
    lang: str
    attr: str
    form: str  # "change" | "cessation"
    person: int
    place: str  # "dm" | "personal" | "shared"
    user_id: str
    display_name: str
    channel_id: str
    is_dm: bool
    twin_id: str
    twin_name: str
    subject: str | None  # the third person
    old_value: str
    new_value: str | None  # None for a cessation
    sessions: list[SessionPlan]
    question: str
    history_question: str
    paraphrase_question: str
    question_day: int
    paraphrase_overlap: list[str] = field(default_factory=list)  # must stay empty
    templates: dict[str, str] = field(default_factory=dict)  # slot -> the template used

    @property
    def old_text(self) -> str:
        return next(t.text for s in self.sessions for t in s.turns if t.role == "old")

    @property
    def new_text(self) -> str:
        return next(t.text for s in self.sessions for t in s.turns if t.role == "new")


def _person_value(raw: str) -> tuple[str, str]:
    m = re.fullmatch(r"(.+?)\s*\(([mf])\)", raw)
    return (m.group(1), m.group(2)) if m else (raw, "f")


def _ascii(name: str) -> str:
    return re.sub(r"[^a-z]", "", _fold(name))


def _value(raw: str, gender: str, rng: random.Random, first: str) -> tuple[str, str]:
    """(value text, its person gender) from a value-pool line."""
    text, vgender = _person_value(raw)
    if "|" in text:
        m, f = text.split("|", 1)
        text = m if gender == "m" else f
    if "#" in text:
        text = re.sub("#", lambda _m: str(rng.randrange(10)), text)
    if "{first}" in text:
        text = text.replace("{first}", _ascii(first))
    return text, vgender


def _choose(rng: random.Random, items: list[str], person: int, what: str) -> str:
    ok = [t for t in items if usable(t, person)]
    if not ok:
        raise ValueError(f"no {what} template for person {person}")
    return rng.choice(ok)


def _lang_counts(total: int) -> dict[str, int]:
    langs = languages()
    counts = {lang: int(round(total * LANG_SHARE[lang])) for lang in langs}
    counts[langs[0]] += total - sum(counts.values())
    return counts


def generate(set_name: str = "dev", seed: int = 1, total: int = SCENARIOS) -> list[Scenario]:
    """The scenarios of one set, deterministic from (set, seed), languages interleaved in
    proportion (so the first N of them are a fair sample for `--limit`)."""
    rng = random.Random(f"clara-bench-current:{set_name}:{seed}")
    by_lang: dict[str, list[Scenario]] = {}
    for lang, n in _lang_counts(total).items():
        book = load_book(lang, set_name)
        attrs = book.attrs()
        order: list[str] = []
        while len(order) < n:
            cycle = attrs[:]
            rng.shuffle(cycle)
            order += cycle
        shared: dict[int, set[str]] = defaultdict(set)
        n_shared = 0
        out = []
        for i, attr in enumerate(order[:n]):
            place = rng.choices([p for p, _ in PLACES], [w for _, w in PLACES])[0]
            channel_no = None
            if place == "shared":
                channel_no, n_shared = n_shared // SHARED_CHANNEL_USERS, n_shared + 1
            sid = f"{set_name}-{lang}-{i:03d}"
            out.append(_scenario(rng, book, sid, attr, place, channel_no, shared))
        by_lang[lang] = out
    keyed = [((i + 0.5) / len(v), lang, sc) for lang, v in by_lang.items() for i, sc in enumerate(v)]
    keyed.sort(key=lambda x: (x[0], list(LANG_SHARE).index(x[1])))
    return [sc for _, _, sc in keyed]


def _scenario(
    rng: random.Random, book: Book, sid: str, attr: str, place: str, channel_no: int | None, shared
) -> Scenario:
    names = [_person_value(x) for x in book.get("names")]
    kin = [x.split("|") for x in book.get("kin")]
    person = 3 if rng.random() < THIRD_PERSON_SHARE else 1
    stop_tpls = book.get(f"{attr}.stop")
    form = "cessation" if stop_tpls and rng.random() < CESSATION_SHARE else "change"
    taken = shared[channel_no] if channel_no is not None else set()
    user_name, user_gender = rng.choice(names)
    twin_name, _ = rng.choice([n for n in names if n[0] != user_name])
    subject, gender, intro, myrel, cases = None, user_gender, None, None, ("", "")
    if person == 3:
        subject, gender = rng.choice([n for n in names if n[0] not in (user_name, twin_name) and n[0] not in taken])
        taken.add(subject)
        rel = rng.choice(kin)  # "m|f", or "m|f|acc m|acc f|dat m|dat f" (German)
        g = 0 if gender == "m" else 1
        myrel = rel[g]
        if len(rel) == 6:
            cases = (rel[2 + g], rel[4 + g])
        intro = f"{myrel} {subject}"
    first = subject or user_name
    kid, kid_gender = rng.choice([n for n in names if n[0] not in (user_name, twin_name, subject)])
    pool = book.get(f"{attr}.values")
    if len(pool) < 3:
        raise ValueError(f"{book.lang}/{book.set}: {attr}.values needs at least 3 values")
    avoid = {user_name, twin_name, subject, kid}
    usable_pool = [v for v in pool if _person_value(v)[0] not in avoid]
    picked = rng.sample(usable_pool, min(4, len(usable_pool)))
    raw_old, raw_new, raw_twin = picked[:3]
    old_v, old_g = _value(raw_old, gender, rng, first)
    new_v, new_g = _value(raw_new, gender, rng, first)
    twin_v, twin_g = _value(raw_twin, gender, rng, first)
    twin_old = _value(picked[3], gender, rng, first)[0] if len(picked) > 3 else old_v
    if attr == "child_school":
        old_g = new_g = twin_g = kid_gender

    def ctx(v: str | None, g: str, old: str | None = None) -> Ctx:
        return Ctx(book.lang, person, gender, subject, intro, myrel, cases, v, old, g, kid)

    def say(tpl: str, c: Ctx) -> str:
        return style(render(tpl, c), rng, book, [c.v, c.old, c.name, c.kid, c.myrel])

    old_tpl = _choose(rng, book.get(f"{attr}.old"), person, f"{attr}.old")
    old_text = say(old_tpl, ctx(old_v, old_g))
    if form == "cessation":
        new_tpl = _choose(rng, stop_tpls, person, f"{attr}.stop")
        new_ctx = ctx(None, old_g, old_v)
        twin_ctx = ctx(None, twin_g, twin_old)
    else:
        new_tpl = _choose(rng, book.get(f"{attr}.new"), person, f"{attr}.new")
        new_ctx = ctx(new_v, new_g, old_v)
        twin_ctx = ctx(twin_v, twin_g, twin_old)
    new_text = say(new_tpl, new_ctx)
    twin_text = say(new_tpl, twin_ctx)

    def question(slot: str) -> str:
        text = render(_choose(rng, book.get(f"{attr}.{slot}"), person, f"{attr}.{slot}"), ctx(None, new_g))
        return style(text, rng, book, [], chatty=False)

    q, hist = question("q"), question("hist")
    # The paraphrase question: one that shares no content word with the new statement.
    paras = [t for t in book.get(f"{attr}.para") if usable(t, person)]
    rng.shuffle(paras)
    scored = [(len(shared_words(render(t, ctx(None, new_g)), new_text, book.stopwords)), t) for t in paras]
    best = min(scored, key=lambda x: x[0])[1]
    para = style(render(best, ctx(None, new_g)), rng, book, [], chatty=False)
    overlap = sorted(shared_words(para, new_text, book.stopwords))

    fillers = [(t, False) for t in book.get("smalltalk")] + [(t, True) for t in book.get("facts")]
    rng.shuffle(fillers)
    pending = iter(fillers * 3)

    def session(day: int, *roles_texts: tuple[str, str], twin: bool = False) -> SessionPlan:
        turns, at = [], 0.0
        for role, text in roles_texts:
            turns.append(Turn(text, role, at))
            at += rng.randint(20, 150)
        return SessionPlan(day, rng.randrange(8 * 60, 20 * 60 + 30), turns, twin)

    def fill(n: int) -> list[tuple[str, str]]:
        out = []
        for _ in range(n):
            text, is_fact = next(pending)
            out.append(("filler", style(text, rng, book, [], lead=is_fact)))
        return out

    # The old state; maybe a session of other things; the new state (and, the same day, the
    # privacy twin's statement in its own DM); maybe a later session of other things.
    day = rng.randrange(0, 60)
    # Whoever the attribute belongs to besides the user is introduced in a turn of its own ("my
    # sister Anna called me last night"): facts about who Anna is are not the old state.
    introduce = []
    if attr == "child_school" or person == 3:
        key = "child_school.intro" if attr == "child_school" else "intro"
        introduce = [("filler", say(_choose(rng, book.get(key), person, key), ctx(None, kid_gender)))]
    sessions = [session(day, *fill(rng.choice((0, 1))), *introduce, ("old", old_text), *fill(rng.choice((0, 0, 1))))]
    if rng.random() < 0.6:
        day += rng.randint(2, 20)
        sessions.append(session(day, *fill(rng.randint(1, 2))))
    day += rng.randint(5, 60)
    sessions.append(session(day, *fill(rng.choice((0, 1))), ("new", new_text), *fill(rng.choice((0, 0, 1)))))
    sessions.append(session(day, ("twin", twin_text), twin=True))
    if rng.random() < 0.25:
        day += rng.randint(1, 10)
        sessions.append(session(day, *fill(1)))
    user_id = sid
    channel = {"dm": f"dm-{user_id}", "personal": f"notes-{user_id}"}.get(place) or f"{sid[:-4]}-team-{channel_no}"
    return Scenario(
        id=sid,
        set=book.set,
        lang=book.lang,
        attr=attr,
        form=form,
        person=person,
        place=place,
        user_id=user_id,
        display_name=user_name,
        channel_id=channel,
        is_dm=place == "dm",
        twin_id=f"{user_id}-twin",
        twin_name=twin_name,
        subject=subject,
        old_value=old_v,
        new_value=None if form == "cessation" else new_v,
        sessions=sessions,
        question=q,
        history_question=hist,
        paraphrase_question=para,
        question_day=day + rng.randint(1, 14),
        paraphrase_overlap=overlap,
        templates={"old": old_tpl, "new": new_tpl, "paraphrase": best},
    )


# --------------------------------------------------------------------------- harness
@dataclass(slots=True)
class Outcome:
    """What one scenario's three questions got back."""

    scenario: Scenario
    current1: bool = False
    current5: bool = False
    stale: bool = False
    history5: bool = False
    paraphrase5: bool = False
    none: bool = False
    privacy: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    new_extracted: bool = False
    old_extracted: bool = False
    old_closed: bool = False
    new_facts: list[str] = field(default_factory=list)  # typed facts extracted from the new-state turn
    returned: int = 0  # hits for the current question
    readable: int = 0  # active facts the asker can read (the pool recall ranks)
    top: dict[str, list[dict]] = field(default_factory=dict)


def presented_as_current(fact, now: datetime) -> bool:
    """Not superseded or deleted, and no end of validity that has passed."""
    return fact.status == "active" and (fact.valid_to is None or fact.valid_to > now)


def _classify(fact, new_ids: set[int], old_ids: set[int]) -> str:
    ids = set(fact.source_message_ids or [])
    is_new, is_old = bool(ids & new_ids), bool(ids & old_ids)
    return "both" if is_new and is_old else "new" if is_new else "old" if is_old else "other"


def score(outcome: Outcome, hits: dict[str, list], new_ids: set[int], old_ids: set[int], now: datetime) -> None:
    """Fill `outcome` from the hits of the three questions (lists of RecallHit)."""
    cur = [(h, _classify(h.fact, new_ids, old_ids)) for h in hits["current"]]
    outcome.none = not cur
    outcome.current1 = bool(cur) and cur[0][1] in ("new", "both") and presented_as_current(cur[0][0].fact, now)
    outcome.current5 = any(c in ("new", "both") for _, c in cur[:5])
    first_new = next((i for i, (_, c) in enumerate(cur) if c in ("new", "both")), len(cur))
    outcome.stale = any(c == "old" and presented_as_current(h.fact, now) for h, c in cur[:first_new])
    outcome.history5 = any(_classify(h.fact, new_ids, old_ids) in ("old", "both") for h in hits["history"][:5])
    outcome.paraphrase5 = any(_classify(h.fact, new_ids, old_ids) in ("new", "both") for h in hits["paraphrase"][:5])
    for q, hs in hits.items():
        outcome.top[q] = [
            {
                "id": h.fact.id,
                "class": _classify(h.fact, new_ids, old_ids),
                "kind": h.fact.kind,
                "status": h.fact.status,
                "current": presented_as_current(h.fact, now),
                "content": h.fact.content[:120],
            }
            for h in hs[:3]
        ]


def _rates(outcomes: list[Outcome]) -> dict:
    n = len(outcomes)
    counts = {
        "current@1": sum(o.current1 for o in outcomes),
        "current@5": sum(o.current5 for o in outcomes),
        "stale>current": sum(o.stale for o in outcomes),
        "history@5": sum(o.history5 for o in outcomes),
        "paraphrase@5": sum(o.paraphrase5 for o in outcomes),
        "none@k": sum(o.none for o in outcomes),
        "new_extracted": sum(o.new_extracted for o in outcomes),
        "old_extracted": sum(o.old_extracted for o in outcomes),
        "old_closed": sum(o.old_closed for o in outcomes),
    }
    lat = [ms for o in outcomes for ms in o.latencies_ms]
    row: dict = {"n": n}
    row.update({m: (c / n if n else float("nan")) for m, c in counts.items()})
    row["query_p50_ms"] = pct(lat, 50)
    row["query_p95_ms"] = pct(lat, 95)
    row["privacy_violations"] = sum(o.privacy for o in outcomes)
    # To read the @5 rates: how many hits a question gets, out of how many readable facts.
    row["returned_mean"] = sum(o.returned for o in outcomes) / n if n else float("nan")
    row["readable_facts_mean"] = sum(o.readable for o in outcomes) / n if n else float("nan")
    row["counts"] = counts
    return row


def _group(outcomes: list[Outcome], key: Callable[[Scenario], str]) -> dict[str, dict]:
    groups: dict[str, list[Outcome]] = defaultdict(list)
    for o in outcomes:
        groups[key(o.scenario)].append(o)
    return {k: _rates(v) for k, v in sorted(groups.items())}


async def run(
    set_name: str = "dev",
    *,
    seed: int = 1,
    limit: int | None = None,
    langs: list[str] | None = None,
    database_url: str | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> dict:
    """Play the scenarios and score the recalls. Returns {row: metrics} with one row per language
    and "all" (plus "by_attribute", "by_form", "by_person", "by_place", "run" and "scenarios")."""
    from clara.chat import ChatEngine
    from clara.settings import Settings
    from storage import FactStore, StoreConfig
    from storage.clock import ManualClock

    scenarios = generate(set_name, seed)
    if langs:
        unknown = set(langs) - set(languages())
        if unknown:
            raise ValueError(f"unknown language(s) {', '.join(sorted(unknown))} (have {', '.join(languages())})")
        scenarios = [s for s in scenarios if s.lang in langs]
    if limit is not None:
        scenarios = scenarios[: max(0, limit)]
    if not scenarios:
        raise ValueError("no scenarios selected")
    # A database that outlives the run (PostgreSQL) gets fresh user and channel names each run.
    prefix = f"r{secrets.token_hex(3)}-" if database_url else ""
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="clara-bench-current-") as tmp:
        clock = ManualClock(T0, ticking=True)
        store = await FactStore.open(
            StoreConfig(database_url=database_url, data_dir=Path(tmp), clock=clock, embed_threads=os.cpu_count() or 1)
        )
        engine = ChatEngine(store, settings=Settings(CLARA_DATA_DIR=tmp))
        try:
            outcomes, turns = await _play(engine, clock, scenarios, prefix, progress)
            facts = await store.count_facts(None)
        finally:
            await engine.aclose()
            await store.aclose()
    res: dict = {}
    for lang in languages():
        mine = [o for o in outcomes if o.scenario.lang == lang]
        if mine:
            res[lang] = _rates(mine)
    res["all"] = _rates(outcomes)
    res["cessation"] = _rates([o for o in outcomes if o.scenario.form == "cessation"])
    res["third person"] = _rates([o for o in outcomes if o.scenario.person == 3])
    res["by_attribute"] = _group(outcomes, lambda s: s.attr)
    res["by_form"] = _group(outcomes, lambda s: s.form)
    res["by_person"] = _group(outcomes, lambda s: f"person{s.person}")
    res["by_place"] = _group(outcomes, lambda s: s.place)
    # Which phrasings the core handles: per template of the new (or cessation) statement.
    res["by_new_template"] = _group(outcomes, lambda s: f"{s.lang}/{s.attr}/{s.form}: {s.templates.get('new')}")
    res["run"] = {
        "set": set_name,
        "seed": seed,
        "scenarios": len(scenarios),
        "languages": dict(Counter(s.lang for s in scenarios)),
        "attributes": len({s.attr for s in scenarios}),
        "turns": turns,
        "facts": facts,
        "paraphrase_overlaps": sum(bool(s.paraphrase_overlap) for s in scenarios),
        "database": "postgresql" if database_url else "sqlite",
        "seconds": time.perf_counter() - started,
        "rss_mb": rss_mb(),
    }
    res["scenarios"] = {o.scenario.id: _detail(o) for o in outcomes}
    return res


def _detail(o: Outcome) -> dict:
    s = o.scenario
    return {
        "lang": s.lang,
        "attr": s.attr,
        "form": s.form,
        "person": s.person,
        "place": s.place,
        "old": s.old_text,
        "new": s.new_text,
        "question": s.question,
        "history_question": s.history_question,
        "paraphrase_question": s.paraphrase_question,
        "current@1": o.current1,
        "stale>current": o.stale,
        "history@5": o.history5,
        "paraphrase@5": o.paraphrase5,
        "templates": s.templates,
        "new_extracted": o.new_extracted,
        "new_facts": o.new_facts,
        "old_extracted": o.old_extracted,
        "old_closed": o.old_closed,
        "privacy_violations": o.privacy,
        "top": o.top,
    }


async def _play(engine, clock, scenarios: list[Scenario], prefix: str, progress):
    """Play every session on one timeline, day by day; ask each scenario's questions on its day."""
    from clara.chat import IncomingMessage

    uid = {s.id: prefix + s.user_id for s in scenarios}
    tid = {s.id: prefix + s.twin_id for s in scenarios}
    chan = {s.id: prefix + s.channel_id for s in scenarios}
    days: dict[int, list[tuple[int, Scenario, SessionPlan]]] = defaultdict(list)
    asks: dict[int, list[Scenario]] = defaultdict(list)
    for s in scenarios:
        for plan in s.sessions:
            days[plan.day].append((plan.minute, s, plan))
        asks[s.question_day].append(s)
    n_sessions = sum(len(s.sessions) for s in scenarios)
    ids: dict[str, dict[str, set[int]]] = defaultdict(lambda: defaultdict(set))
    private_owner: dict[int, str] = {}  # message id -> user, for turns said in private
    outcomes: dict[str, Outcome] = {}
    done = asked = turns = 0
    for day in sorted(set(days) | set(asks)):
        base = T0 + timedelta(days=day)
        for minute, s, plan in sorted(days.get(day, []), key=lambda x: (x[0], x[1].id)):
            start = base + timedelta(minutes=minute)
            twin = plan.twin
            for turn in plan.turns:
                at = start + timedelta(seconds=turn.at)
                clock.set(at)
                msg = IncomingMessage(
                    user_id=tid[s.id] if twin else uid[s.id],
                    display_name=s.twin_name if twin else s.display_name,
                    channel_id=f"dm-{tid[s.id]}" if twin else chan[s.id],
                    text=turn.text,
                    is_dm=twin or s.is_dm,
                    timestamp=at,
                )
                reply = await engine.handle(msg)
                if reply.error or reply.message_id is None:
                    raise RuntimeError(f"scenario {s.id}: {turn.text!r} was not taken: {reply.text}")
                turns += 1
                ids[s.id][turn.role].add(reply.message_id)
                if twin or s.place != "shared":
                    private_owner[reply.message_id] = msg.user_id
            done += 1
            if progress:
                progress("sessions", done, n_sessions)
        # The evening: every session of the day goes idle and closes; its memory work lands.
        clock.set(base + timedelta(hours=23, minutes=30))
        await engine.memory.sweep()
        await engine.drain(timeout=900)
        for i, s in enumerate(sorted(asks.get(day, []), key=lambda x: x.id)):
            clock.set(base + timedelta(hours=23, minutes=40, seconds=i))
            now = clock()
            outcomes[s.id] = await _ask(engine, s, uid[s.id], chan[s.id], ids[s.id], private_owner, now)
            asked += 1
            if progress:
                progress("questions", asked, len(scenarios))
    return [outcomes[s.id] for s in scenarios], turns


async def recall(engine, query: str, where) -> list:
    """What `!recall <query>` does (clara.commands.Commands.cmd_recall)."""
    return await engine.memory.recall(query, where, k=K)


async def recall_history(engine, query: str, where) -> list:
    """The history question. Today through the same path as `!recall`; the one place to wire an
    explicit history mode if the core offers one."""
    return await recall(engine, query, where)


async def _ask(engine, s: Scenario, user_id: str, channel_id: str, ids, private_owner, now: datetime) -> Outcome:
    from clara.chat import IncomingMessage

    msg = IncomingMessage(
        user_id=user_id, display_name=s.display_name, channel_id=channel_id, text="?", is_dm=s.is_dm, timestamp=now
    )
    where = await engine.memory.where(msg)
    out = Outcome(s)
    hits = {}
    for name, q in (("current", s.question), ("history", s.history_question), ("paraphrase", s.paraphrase_question)):
        t = time.perf_counter()
        hits[name] = await (recall_history if name == "history" else recall)(engine, q, where)
        out.latencies_ms.append((time.perf_counter() - t) * 1000)
    new_ids, old_ids = ids["new"], ids["old"]
    score(out, hits, new_ids, old_ids, now)
    out.returned = len(hits["current"])
    out.readable = await engine.store.count_facts(where.readable)
    for hs in hits.values():
        out.privacy += sum(_violates(h.fact, user_id, where, private_owner) for h in hs)
    # Diagnostics from the store, by provenance: was anything typed extracted from the new-state
    # turn, and was an old-state fact closed?
    mine = await engine.store.list_facts(
        where.readable, statuses=("active", "superseded"), created_by=user_id, limit=1000
    )
    typed = [f for f in mine if f.kind not in ("observation", "summary")]
    out.new_facts = [f"{f.kind}: {f.content}"[:160] for f in typed if set(f.source_message_ids) & new_ids]
    out.new_extracted = bool(out.new_facts)
    out.old_extracted = any(set(f.source_message_ids) & old_ids for f in typed)
    out.old_closed = any(set(f.source_message_ids) & old_ids and not presented_as_current(f, now) for f in mine)
    return out


def _violates(fact, user_id: str, where, private_owner: dict[int, str]) -> bool:
    """A hit another user's privacy forbids: outside the asker's readable scopes, in another
    user's private scope, or made from a turn someone else said in private."""
    if fact.scope_id not in where.readable:
        return True
    if fact.scope_id.startswith("user:") and fact.scope_id != where.user:
        return True
    return any(private_owner.get(mid, user_id) != user_id for mid in fact.source_message_ids or [])
