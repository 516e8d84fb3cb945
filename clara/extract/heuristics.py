"""Offline fact extraction: typed candidate facts with an explicit subject, and an importance score.

Used when no LLM is configured (or the LLM's output is unusable). Pure functions over one user
turn; no I/O apart from the lazy spaCy load in `clara.extract.ner`. CPU-bound: callers on an
event loop run `candidate_facts` via `asyncio.to_thread`.

Per sentence of the user's message:

1. drop what states nothing: greetings/acknowledgements ("ok", "thanks!", "lol"), questions
   ("where do I live?"; "I moved to Porto, any tips?" keeps the statement before the question),
   requests to the bot ("tell me a joke"), opinions about the conversation ("I think you're
   wrong"), and sentences that neither speak about the speaker (first person) nor mention a
   named person/place/organisation/project/pet (error reports and "remember that …" are kept);
2. rewrite the first person into the explicit subject ("I moved to Porto" → "alice moved to
   Porto"; "my sister Anna" → "alice's sister Anna"; "we" → "alice and others"), conjugating
   the verb after "I" ("I live" → "alice lives"); nothing else is changed;
3. classify the kind by patterns, first match wins: error > decision > plan > preference >
   biographical > event (a date that resolves) > observation. A dated happening in the future
   is a plan ("I have a meeting with Bob on Monday"); "remember that …" makes an otherwise
   untyped sentence a `note`;
4. resolve the first date expression to an absolute date relative to `now` (own rules for
   weekdays, "next week", seasons…, then `dateparser`); periods resolve to their first day
   ("last spring" → 1 March, "next month" → the 1st); None when unsure;
5. relation triples for residence/work/identity/ownership statements (("alice", "lives_in",
   "Porto")), with a `slug` for single-valued attributes so a later statement supersedes the
   earlier one ("<speaker_id>/lives_in"; for another subject its lower-cased name:
   "anna/lives_in"). Past or future tense ("lived in", "will move to") and negation give no
   current-state relation; a later clause can carry it ("I'm from Brazil but I live in Lisbon");
6. a named relation of the speaker ("my sister Anna") also yields its own small fact,
   "Anna is alice's sister", with relation ("alice", "sister", "Anna").
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta

from .ner import DATE_RE, KIN, PETS, WEEKDAYS, EntityMention, extract_entities, relationship_mentions

log = logging.getLogger(__name__)

FACT_KINDS = (
    "observation",
    "preference",
    "decision",
    "plan",
    "event",
    "biographical",
    "error",
    "insight",
    "summary",
    "note",
)
NAMED_TYPES = frozenset({"person", "place", "organisation", "project", "pet"})


@dataclass(slots=True)
class Candidate:
    """One offline candidate fact. `entities` spans index the text given to `candidate_facts`."""

    content: str
    kind: str
    subject: str
    importance: float
    entities: list[EntityMention] = field(default_factory=list)
    valid_from: datetime | None = None
    event_date: date | None = None
    slug: str | None = None
    relation: tuple[str, str, str] | None = None


# --------------------------------------------------------------------------- sentence splitting
_ABBREV = re.compile(
    r"(?:\b(?:mr|mrs|ms|dr|prof|st|sr|jr|vs|etc|approx|e\.g|i\.e|no|fig|inc|ltd|co)|\b[A-Z])\.$", re.IGNORECASE
)
_BOUNDARY = re.compile(r"(?<=[.!?…])[\"')\]]*\s+|\n+")


def split_sentences(text: str) -> list[tuple[int, int]]:
    """(start, end) offsets of the sentences of `text`, whitespace-trimmed, in order. Splits at
    . ! ? … followed by space, and at line breaks; not after common abbreviations ("Dr.")."""
    spans: list[tuple[int, int]] = []
    start = 0
    for m in _BOUNDARY.finditer(text):
        if "\n" not in m.group(0) and _ABBREV.search(text[max(0, m.start() - 6) : m.start()]):
            continue
        spans.append((start, m.start()))
        start = m.end()
    spans.append((start, len(text)))
    out = []
    for s, e in spans:
        while s < e and text[s].isspace():
            s += 1
        while e > s and text[e - 1].isspace():
            e -= 1
        if e > s:
            out.append((s, e))
    return out


# --------------------------------------------------------------------------- vocabulary / patterns
CHITCHAT_WORDS = frozenset(
    """ok okay k kk thanks thank you thx ty tysm lol lmao rofl haha hahaha hehe heh yes yeah yep yup
    no nope nah sure cool nice great awesome good fine bye goodbye cya hi hello hey yo sup morning
    night evening afternoon gm gn brb hmm hm wow oh ah np welcome alright right indeed true exactly
    agreed perfect sounds sweet lovely wonderful amazing omg xd please sorry oops ugh meh same me too
    got it i see understand know agree totally definitely absolutely of course much very so a lot
    have day the all for that's thats is this interesting fun funny really ha ok. yay wait what""".split()
)
_LEADIN_RE = re.compile(
    r"^(?:(?:so|well|oh|ok|okay|also|actually|anyway|anyways|btw|by the way|fyi|just so you know|jsyk|hey|hi|"
    r"hello|lol|haha|and|but|um|uh|hmm|yeah|yes|no|right|guess what|news|update|quick update|heads up)"
    r"\b[\s,!:.\-]*)+",
    re.IGNORECASE,
)
_REMEMBER_RE = re.compile(
    r"^(?:please\s+|pls\s+)?(?:remember|note|keep in mind|don't forget|do not forget|never forget|make a note|"
    r"take note|for the record)(?:\s+(?:that|this|of))?\b\s*[:,\-]?\s*",
    re.IGNORECASE,
)
_REMIND_RE = re.compile(r"^(?:please\s+|pls\s+|can you\s+|could you\s+)?remind me (?:to|that|about)\s+", re.IGNORECASE)
_COMMAND_RE = re.compile(
    r"^(?:please\s+|pls\s+|plz\s+)?(?:tell|show|give|write|explain|help|list|summari[sz]e|translate|find|search|"
    r"look up|recommend|suggest|make|create|generate|draw|calculate|compute|check|describe|define|compare|play|"
    r"sing|let's|lets|let me|can you|could you|would you|will you|pls|please|imagine|pretend)\b",
    re.IGNORECASE,
)
_BOT_OPINION_RE = re.compile(
    r"(?:i|we)\s+(?:\w+ly\s+)?(?:think|guess|feel|believe|mean|suppose|hope|agree|disagree)\s+"
    r"(?:that\s+)?(?:you|you're|your|that|that's|it|it's|so|this|not)\b",
    re.IGNORECASE,
)
_UNPUNCTUATED_Q_RE = re.compile(
    r"(?:what|where|when|who|why|how|which|do|does|did|can|could|would|will|should)\b", re.IGNORECASE
)
_QUESTION_OPENERS = frozenset(
    """what where when who whom whose why how which do does did is are am was were can could would will
    should shall may might have has had any anything isn't aren't don't doesn't didn't won't wouldn't can't
    couldn't shouldn't right really wanna guess""".split()
)
_FIRST_PERSON_RE = re.compile(
    r"\b(?:i|i'm|i've|i'd|i'll|me|my|mine|myself|we|we're|we've|we'll|we'd|our|ours|ourselves)\b|\bus\b",
    re.IGNORECASE,
)
_ADVERBS = frozenset(
    """really also just still actually usually always never often sometimes totally absolutely
    definitely finally mostly only even already currently now recently basically honestly seriously
    personally generally normally rarely seldom kinda sorta probably certainly truly simply literally
    then too""".split()
)
_MODALS = frozenset(
    """can can't cannot could couldn't will won't would wouldn't shall should shouldn't may might must
    mustn't ought used gotta gonna wanna was wasn't were weren't did didn't had hadn't 'd""".split()
)
_PRESENT_ED = frozenset(
    {
        "need",
        "feed",
        "bleed",
        "breed",
        "speed",
        "exceed",
        "succeed",
        "proceed",
        "heed",
        "seed",
        "weed",
        "embed",
        "shred",
        "shed",
        "wed",
        "bed",
        "red",
    }
)
_IRREGULAR_PAST = frozenset(
    """went was were had got met bought made took saw left began came found gave told thought felt kept
    lost paid sold sent spent won wrote ate drove flew forgot knew ran said sat slept spoke stood
    taught understood woke wore broke chose fell heard held led meant rode rose sang swam threw brought
    built caught fought grew drew became did lay lit stole struck stuck swore tore shook sought bit hid
    dug fed fled hung sank sprang stank slid spun""".split()
)
_SAME_FORM = frozenset(
    {
        "read",
        "put",
        "cut",
        "hit",
        "let",
        "set",
        "quit",
        "hurt",
        "cost",
        "shut",
        "spread",
        "bet",
        "cast",
        "split",
        "burst",
        "fit",
    }
)
_PAST_CUES_RE = re.compile(r"\b(?:yesterday|ago|last|earlier|previously|before|once|back then)\b", re.IGNORECASE)

ERROR_RE = re.compile(
    r"\b(?:got an? (?:\w+ )?error|error\b|exception|traceback|stack ?trace|segfault|segmentation fault|"
    r"crash(?:ed|es|ing)?|fails? with|failed with|throws|threw|\w+(?:error|exception)\b|bug\b|"
    r"doesn't work|does not work|isn't working|is not working|not working anymore|won't (?:start|compile|build|run|"
    r"load|boot)|can't (?:install|compile|build|connect|log ?in)|status (?:code )?[45]\d\d|http [45]\d\d)",
    re.IGNORECASE,
)
DECISION_RE = re.compile(
    r"\b(?:decided|decide to|made (?:a|the|my|our) decision|going with|go with|went with|chose|chosen|choose to|"
    r"picked|settled on|opted|will use|'ll use|switch(?:ed|ing)? to|sticking with|stick with|committed to|"
    r"made up (?:my|our) minds?)\b",
    re.IGNORECASE,
)
PLAN_RE = re.compile(
    r"(?:\b(?:going to|gonna|planning|plan to|plan on|intend to|intending to|want to|wanna|would like to|"
    r"hoping to|hope to|about to|will|shall|aim to|aiming to|need to|have to|has to|got to|gotta|must|"
    r"tomorrow|tonight|this weekend|later today|"
    r"soon|next (?:week|month|year|weekend|time|monday|tuesday|wednesday|thursday|friday|saturday|sunday|"
    r"spring|summer|autumn|fall|winter))\b|'ll\b|'d like to\b)",
    re.IGNORECASE,
)
PREFERENCE_RE = re.compile(
    r"(?:\b(?:i|we|you|he|she|they|also|really|totally|absolutely|just|do|does|don't|doesn't|never|always|still|"
    r"kinda|actually|genuinely|secretly)\s+(?:like|love|hate|prefer|enjoy|dislike|adore|detest)\b"
    r"|\b(?:likes|loves|hates|prefers|enjoys|dislikes|adores|detests)\b"
    r"|\b(?:favourite|favorite|fave|allergic|allergy|allergies|intolerant|intolerance|vegetarian|vegan|"
    r"can't stand|cannot stand|fan of|obsessed with|not a fan|don't eat|do not eat|never eat|can't eat|"
    r"rather have|would rather)\b)",
    re.IGNORECASE,
)
BIOGRAPHICAL_RE = re.compile(
    r"\b(?:live in|lives in|living in|lived in|moved|relocated|based in|born|grew up|raised in|"
    r"work(?:s|ing|ed)? (?:at|for|as)|job (?:at|as)|employed|my name is|call me|years old|"
    r"(?:i'm|i am|she's|he's|she is|he is) an? (?!bit\b|little\b|lot\b|fan\b|kind\b|sort\b)\w+|"
    r"studied|study at|studying|graduated|married|divorced|engaged|pregnant|retired|birthday|broke up|split up|"
    r"(?:have|has|got|adopted|own|owns) (?:a|an|two|three|four|\d+) (?:\w+ )?(?:kids?|children|sons?|daughters?|"
    r"dogs?|cats?|brothers?|sisters?|puppy|kitten|pets?|horse|rabbit|parrot|hamster)|"
    r"(?:is|was|'s) (?:my|our) (?:best |ex[- ]?|step[- ]?)?(?:"
    + "|".join(sorted(KIN, key=len, reverse=True))
    + r"))\b",
    re.IGNORECASE,
)
EMPHASIS_RE = re.compile(
    r"\b(?:important|importantly|remember|never forget|don't forget|do not forget|must not forget|critical|"
    r"crucial|urgent|essential|vital|seriously|keep in mind|for the record)\b|!!",
    re.IGNORECASE,
)
HEALTH_RE = re.compile(
    r"\b(?:allergic|allerg(?:y|ies)|anaphyla\w*|epipen|intoleran\w*|diabet\w*|asthma\w*|pregnan\w*|medication|"
    r"surgery|diagnosed|hospital\w*|emergency|seizures?|epilep\w*|blood type|celiac|coeliac)\b",
    re.IGNORECASE,
)

KIND_BASE = {
    "biographical": 0.7,
    "decision": 0.7,
    "plan": 0.6,
    "event": 0.6,
    "preference": 0.6,
    "insight": 0.6,
    "note": 0.6,
    "error": 0.5,
    "summary": 0.5,
    "observation": 0.3,
}
SINGLE_VALUED_KIN = frozenset(
    {
        "wife",
        "husband",
        "partner",
        "spouse",
        "girlfriend",
        "boyfriend",
        "fiance",
        "fiancee",
        "mother",
        "father",
        "boss",
        "manager",
    }
)
_KIN_CANON = {
    "mom": "mother",
    "mum": "mother",
    "mommy": "mother",
    "mummy": "mother",
    "mama": "mother",
    "dad": "father",
    "daddy": "father",
    "papa": "father",
    "fiancé": "fiance",
    "fiancée": "fiancee",
    "co-worker": "coworker",
    "neighbor": "neighbour",
    "grandma": "grandmother",
    "granny": "grandmother",
    "grandpa": "grandfather",
    "pup": "puppy",
    "kitty": "kitten",
    "bunny": "rabbit",
}


# --------------------------------------------------------------------------- helpers
def _snake(s: str) -> str:
    return re.sub(r"[^0-9a-z]+", "_", s.lower()).strip("_")


def _slug_key(name: str) -> str:
    return re.sub(r"[^0-9a-z]+", "-", name.casefold()).strip("-")


def relation_name(phrase: str) -> str:
    """Canonical snake_case relation for a relationship phrase: "mum" → "mother",
    "best friend" → "best_friend"."""
    words = phrase.lower().split()
    if words:
        words[-1] = _KIN_CANON.get(words[-1], words[-1])
    return _snake(" ".join(words))


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+|[:;][-]?[()dp]", text.lower().replace("’", "'"))


def is_chitchat(text: str) -> bool:
    """Greetings, acknowledgements, laughter and the like ("ok", "thanks!", "lol", "got it")."""
    words = _words(text)
    return not words or all(w in CHITCHAT_WORDS for w in words)


def _is_question_start(text: str) -> bool:
    m = re.match(r"[a-z']+", text.lower())
    return bool(m) and m.group(0) in _QUESTION_OPENERS


def _statement_part(body: str) -> str | None:
    """For a sentence ending in "?", the statement before a trailing question clause
    ("I moved to Porto, any tips?" → "I moved to Porto"), else None."""
    if _is_question_start(body):
        return None
    parts = re.split(r",\s*|\s+-\s+|;\s*", body.rstrip("?!. "))
    keep: list[str] = []
    for p in parts[:-1]:
        if _is_question_start(p):
            break
        keep.append(p)
    return ", ".join(keep) if keep else None


def _is_past_verb(low: str, sentence: str) -> bool:
    if low in _IRREGULAR_PAST:
        return True
    if low in _SAME_FORM:
        return bool(_PAST_CUES_RE.search(sentence))
    return low.endswith("ed") and low not in _PRESENT_ED


def _third_person(v: str) -> str:
    low = v.lower()
    irregular = {
        "be": "is",
        "am": "is",
        "have": "has",
        "do": "does",
        "go": "goes",
        "don't": "doesn't",
        "haven't": "hasn't",
        "'m": "is",
        "'ve": "has",
    }
    if low in irregular:
        return irregular[low]
    if re.search(r"(?:s|sh|ch|x|z|o)$", low):
        return v + "es"
    if re.search(r"[^aeiou]y$", low):
        return v[:-1] + "ies"
    return v + "s"


_TOKEN_RE = re.compile(r"[^\W_]+(?:'[^\W_]+)*|[^\w\s]")
_PAST_PARTICIPLES = frozenset(
    {
        "been",
        "gone",
        "done",
        "seen",
        "had",
        "got",
        "known",
        "taken",
        "given",
        "eaten",
        "written",
        "forgotten",
        "moved",
        "lived",
        "worked",
        "finished",
        "started",
    }
)


def rewrite_first_person(sentence: str, speaker: str) -> str:
    """Replace the first person with the explicit subject: I/me → speaker, my/mine → speaker's,
    we/us → "speaker and others", our → speaker's; "I live" → "speaker lives", "I'm" → "speaker
    is", "I've" → "speaker has". Everything else is kept as written."""
    s = sentence.replace("’", "'")
    toks = [(m.group(0), m.start(), m.end()) for m in _TOKEN_RE.finditer(s)]
    repl: dict[int, str] = {}  # token index → replacement
    poss = f"{speaker}'s"
    group = f"{speaker} and others"
    n = len(toks)
    for i, (w, _, _) in enumerate(toks):
        low = w.lower()
        if low in ("i", "i'm", "i've", "i'd", "i'll") or (i == 0 and low in ("im", "ive") and n > 1):
            if (
                low == "i"
                and w != "I"
                and i > 0
                and toks[i - 1][0] not in ".!?,;:"
                and toks[i - 1][0].lower() not in ("and", "but", "so", "then", "because", "when", "if", "that")
            ):
                continue  # a lowercase "i" mid-phrase that is not the pronoun (e.g. a list item)
            compound = (
                i >= 2
                and toks[i - 1][0].lower() == "and"
                and (toks[i - 2][0][:1].isupper() or toks[i - 2][0].lower() in KIN or toks[i - 2][0].lower() in PETS)
            )
            if low in ("i'm", "im"):
                repl[i] = f"{speaker} {'are' if compound else 'is'}"
            elif low in ("i've", "ive"):
                repl[i] = f"{speaker} {'have' if compound else 'has'}"
            elif low == "i'd":
                nxt = toks[i + 1][0].lower() if i + 1 < n else ""
                repl[i] = f"{speaker} {'had' if nxt in _PAST_PARTICIPLES else 'would'}"
            elif low == "i'll":
                repl[i] = f"{speaker} will"
            else:
                repl[i] = speaker
                if compound:
                    continue
                j = i + 1
                while j < n and (
                    toks[j][0].lower() in _ADVERBS or (toks[j][0].lower().endswith("ly") and len(toks[j][0]) > 4)
                ):
                    j += 1
                if j < n:
                    v = toks[j][0]
                    vl = v.lower()
                    if vl in ("am", "'m"):
                        repl[j] = "is"
                    elif vl in _MODALS or vl.endswith("ing") or not v.isalpha() and vl not in ("don't", "haven't"):
                        pass
                    elif vl in ("don't", "haven't", "have", "do"):
                        repl[j] = _third_person(v)
                    elif v.isalpha() and v.islower() and not _is_past_verb(vl, s) and vl not in _MODALS:
                        repl[j] = _third_person(v)
        elif low == "me":
            repl[i] = speaker
        elif low == "myself":
            repl[i] = "themself"
        elif low in ("my", "mine"):
            repl[i] = poss
        elif low in ("we", "we're", "we've", "we'll", "we'd"):
            tail = {"we": "", "we're": " are", "we've": " have", "we'll": " will", "we'd": " would"}[low]
            repl[i] = group + tail
        elif low == "us" and w != "US":
            repl[i] = group
        elif low in ("our", "ours"):
            repl[i] = poss
        elif low == "ourselves":
            repl[i] = "themselves"
    if not repl:
        return s
    out: list[str] = []
    pos = 0
    for i, (_w, a, b) in enumerate(toks):
        if i in repl:
            out.append(s[pos:a])
            out.append(repl[i])
            pos = b
    out.append(s[pos:])
    return "".join(out)


# --------------------------------------------------------------------------- dates
_SEASON_MONTH = {"spring": 3, "summer": 6, "autumn": 9, "fall": 9, "winter": 12}
_DP_SETTINGS_BASE = {"PREFER_DAY_OF_MONTH": "first", "RETURN_AS_TIMEZONE_AWARE": False}


def _add_months(d: date, months: int) -> date:
    y, m = divmod(d.month - 1 + months, 12)
    return date(d.year + y, m + 1, 1)


def _season(name: str, which: str, today: date, prefer: str, year: int | None) -> date:
    m = _SEASON_MONTH[name]
    if year is not None:
        return date(year, m, 1)
    starts = [date(y, m, 1) for y in range(today.year - 2, today.year + 2)]
    cur = max(s for s in starts if s <= today)
    in_season = today < _add_months(cur, 3)
    nxt = min(s for s in starts if s > today)
    if which == "last" or which == "past":
        return date(cur.year - 1, m, 1) if in_season else cur
    if which in ("next", "coming"):
        return nxt
    if in_season:
        return cur
    return nxt if prefer == "future" else cur


def resolve_date(expr: str, now: datetime, prefer: str = "future") -> date | None:
    """Absolute date for a date expression relative to `now` (best effort; None if unsure).
    `prefer` ("future"/"past") settles bare weekdays/months ("on Friday"). Periods resolve to
    their first day: "next week" → that Monday, "last spring" → 1 March, "in 2019" → 1 Jan."""
    e = " ".join(expr.lower().replace("’", "'").split())
    e = re.sub(r"^(?:on|at|by|since|until|during|back in|in)\s+", "", e)
    today = now.date()
    rel = {
        "today": 0,
        "tonight": 0,
        "tomorrow": 1,
        "yesterday": -1,
        "the day after tomorrow": 2,
        "the day before yesterday": -2,
    }
    base = re.sub(r"\s+(?:morning|afternoon|evening|night)$", "", e)
    if base in rel:
        return today + timedelta(days=rel[base])
    if base in ("this", "this morning", "this afternoon", "this evening"):
        return today
    m = re.fullmatch(r"(?:(this|next|last|coming|past)\s+)?(" + "|".join(WEEKDAYS) + r")", base)
    if m:
        which, wd = m.group(1), WEEKDAYS.index(m.group(2))
        ahead = (wd - today.weekday()) % 7 or 7
        back = (today.weekday() - wd) % 7 or 7
        if which == "this":
            return today - timedelta(days=today.weekday()) + timedelta(days=wd)
        if which in ("next", "coming") or (which is None and prefer == "future"):
            return today + timedelta(days=ahead)
        return today - timedelta(days=back)
    m = re.fullmatch(r"(?:(this|next|last|coming|past|the)\s+)?weekend", base)
    if m:
        which = m.group(1)
        this_sat = today + timedelta(days=(5 - today.weekday()) % 7) if today.weekday() <= 5 else today - timedelta(1)
        if which in ("next", "coming") and today.weekday() >= 5:
            return this_sat + timedelta(days=7)
        if which in ("last", "past") or (which in (None, "the") and prefer == "past" and today.weekday() < 5):
            return this_sat - timedelta(days=7)
        return this_sat
    m = re.fullmatch(r"(this|next|last|coming|past)\s+(week|month|year)", base)
    if m:
        step = {"this": 0, "next": 1, "coming": 1, "last": -1, "past": -1}[m.group(1)]
        if m.group(2) == "week":
            return today - timedelta(days=today.weekday()) + timedelta(weeks=step)
        if m.group(2) == "month":
            return _add_months(today.replace(day=1), step)
        return date(today.year + step, 1, 1)
    m = re.fullmatch(
        r"(?:(this|next|last|coming|past|the)\s+)?(spring|summer|autumn|fall|winter)"
        r"(?:\s+(?:of\s+)?((?:19|20)\d{2}))?",
        base,
    )
    if m:
        return _season(m.group(2), m.group(1) or "", today, prefer, int(m.group(3)) if m.group(3) else None)
    m = re.fullmatch(r"((?:19|20)\d{2})", base)
    if m:
        return date(int(m.group(1)), 1, 1)
    m = re.fullmatch(r"the (\d{1,2})(?:st|nd|rd|th)", base)
    if m:
        day = int(m.group(1))
        cand = [_add_months(today.replace(day=1), k) for k in (-1, 0, 1)]
        opts = []
        for first in cand:
            try:
                opts.append(first.replace(day=day))
            except ValueError:
                continue
        if not opts:
            return None
        if prefer == "future":
            fut = [d for d in opts if d >= today]
            return fut[0] if fut else None
        past = [d for d in opts if d <= today]
        return past[-1] if past else None
    m = re.fullmatch(r"(christmas(?: day)?|christmas eve|new year'?s eve|new year'?s(?: day)?)", base)
    if m:
        md = {"christmas eve": (12, 24), "new year's eve": (12, 31), "new years eve": (12, 31)}.get(
            base, (1, 1) if base.startswith("new year") else (12, 25)
        )
        this_year = date(today.year, *md)
        if prefer == "future":
            return this_year if this_year >= today else date(today.year + 1, *md)
        return this_year if this_year <= today else date(today.year - 1, *md)
    if not DATE_RE.search(e):
        return None
    cleaned = re.sub(r"\b(?:early|late|mid-?|the)\s*", "", e).strip()
    try:
        import dateparser

        got = dateparser.parse(
            cleaned,
            languages=["en"],
            settings={**_DP_SETTINGS_BASE, "RELATIVE_BASE": now.replace(tzinfo=None), "PREFER_DATES_FROM": prefer},
        )
    except Exception:  # dateparser has many edge cases; a date is optional
        return None
    return got.date() if got else None


def _prefer(sentence: str) -> str:
    low = sentence.lower()
    if PLAN_RE.search(low):
        return "future"
    if _PAST_CUES_RE.search(low):
        return "past"
    for w in re.findall(r"[a-z']+", low):
        if w in _IRREGULAR_PAST or (w.endswith("ed") and len(w) > 4 and w not in _PRESENT_ED):
            return "past"
    return "future"


# --------------------------------------------------------------------------- importance
def importance(text: str, kind: str, entities: list[EntityMention]) -> float:
    """Importance in [0, 1] of a fact, for ranking and forgetting. Offline analogue of the
    "poignancy" score that Generative Agents asks the LLM for (Park et al., 2023, "Generative
    Agents: Interactive Simulacra of Human Behavior", UIST '23: rate 1–10 how mundane vs.
    poignant a memory is); the LLM path here uses the same 1–10 scale divided by 10.

        base(kind)                 biographical .7, decision .7, plan .6, event .6, preference .6,
                                   insight .6, note .6, error .5, summary .5, observation .3
      + 0.05 × named entities      person/place/organisation/project/pet/thing, at most 3 (+.15)
      + 0.05                       if a date is mentioned
      + 0.20                       explicit emphasis ("important", "remember", "never forget", "!!")
      + 0.20                       health/safety ("allergic", "diabetic", "medication", "surgery")
                                   (emphasis + health together at most +.30)
      − 0.15                       fewer than 4 words
      − 0.30                       ≥ 75% chit-chat words ("lol", "ok", "thanks")
      clamped to [0, 1], rounded to 2 decimals.

    Rationale: who/where/what the user *is* and what they decided or will do is what a
    companion must not forget; stated emphasis and health facts are costly to forget; short
    acknowledgements carry no information."""
    score = KIND_BASE.get(kind, 0.3)
    named = {e.name.casefold() for e in entities if e.type != "date"}
    score += 0.05 * min(3, len(named))
    if any(e.type == "date" for e in entities) or DATE_RE.search(text):
        score += 0.05
    bonus = (0.2 if EMPHASIS_RE.search(text) else 0.0) + (0.2 if HEALTH_RE.search(text) else 0.0)
    score += min(0.3, bonus)
    words = _words(text)
    if len(words) < 4:
        score -= 0.15
    if words and sum(w in CHITCHAT_WORDS for w in words) / len(words) >= 0.75:
        score -= 0.3
    return round(max(0.0, min(1.0, score)), 2)


# --------------------------------------------------------------------------- classification
def classify_kind(sentence: str, *, has_date: bool = False, entities: list[EntityMention] | None = None) -> str:
    """Fact kind by patterns, first match wins: error > decision > plan > preference >
    biographical > event (has_date: a date that resolved) > observation."""
    low = sentence.lower().replace("’", "'")
    if ERROR_RE.search(low):
        return "error"
    m = DECISION_RE.search(low)
    if m and not (m.group(0).endswith("with") and _person_right_after(sentence, m.end(), entities or [])):
        return "decision"
    if PLAN_RE.search(low) and not re.search(r"\b(?:will|'ll)\s+(?:never|always)\s+(?:forget|remember)\b", low):
        return "plan"
    if PREFERENCE_RE.search(low):
        return "preference"
    if BIOGRAPHICAL_RE.search(low):
        return "biographical"
    if has_date:
        return "event"
    return "observation"


def _person_right_after(sentence: str, pos: int, entities: list[EntityMention]) -> bool:
    stripped = sentence[pos:].lstrip()  # "going with Anna": company, not a choice
    return any(e.type == "person" and e.name and stripped.startswith(e.name) for e in entities)


# --------------------------------------------------------------------------- subject & relations
_SUBJ_I_RE = re.compile(r"(?:i'm|im|i've|ive|i'd|i'll|i|we're|we've|we'd|we'll|we)\b", re.IGNORECASE)
_KIN_ALT = "|".join(sorted(KIN | PETS, key=len, reverse=True))
_SUBJ_MY_RE = re.compile(
    r"(?:my|our)\s+(?:(?:best|ex|step|twin|little|big|older|younger|old|new|late)[\s-]+)*(" + _KIN_ALT + r")\b"
    r"(?:\s*,)?\s*",
    re.IGNORECASE,
)
_STATE_PREFIX = (
    r"(?:(?:am|is|are|'m|'re|have|has|'ve|been|just|now|recently|finally|also|currently|still|already|"
    r"officially|happily|actually|really|permanently|since)\s+)*"
)
_RES_RE = re.compile(
    _STATE_PREFIX + r"(live|lives|living|moved|relocated|based|residing|reside|resides|settled)"
    r"\s+(?:back\s+|here\s+|over\s+|out\s+)?(?:from\s+.+?\s+)?(?:in|to|into)\s+",
    re.IGNORECASE,
)
_LIVED_RE = re.compile(_STATE_PREFIX + r"(?:lived|grew up|was raised|were raised)\s+in\s+", re.IGNORECASE)
_BORN_RE = re.compile(r"(?:was|were)\s+born\s+in\s+", re.IGNORECASE)
_WORK_RE = re.compile(_STATE_PREFIX + r"(?:work|works|working|employed)\s+(?:at|for|by)\s+", re.IGNORECASE)
_JOINED_RE = re.compile(
    r"(?:(?:just|recently|finally|have|has|'ve)\s+)*(?:joined|started at|started working at|"
    r"got a job at|got a job with|got hired at|got hired by|was hired by|were hired by)\s+",
    re.IGNORECASE,
)
_WORKED_RE = re.compile(_STATE_PREFIX + r"(?:worked|used to work)\s+(?:at|for)\s+", re.IGNORECASE)
_WORKS_AS_RE = re.compile(_STATE_PREFIX + r"(?:work|works|working)\s+as\s+(?:an?\s+)?", re.IGNORECASE)
_IS_A_RE = re.compile(
    r"(?:am|is|are|'m|'s)\s+(?:an?)\s+"
    r"(?!bit\b|little\b|lot\b|fan\b|big fan\b|huge fan\b|kind\b|sort\b|couple\b|few\b)",
    re.IGNORECASE,
)
_HAS_NAMED_RE = re.compile(
    r"(?:(?:just|recently|also|finally)\s+)*"
    r"(?:have|has|'ve got|have got|has got|got|adopted|own|owns)\s+"
    r"(?:a|an|one|another|new)?\s*(?:(?:new|little|big|cute|old|young|\w+)\s+)?("
    + _KIN_ALT
    + r")\s*,?\s+(?:called|named)\s+",
    re.IGNORECASE,
)
_OWNS_RE = re.compile(
    r"(?:(?:just|finally|recently|also)\s+)*(?:own|owns|bought|purchased)\s+(?:a|an|the|my|our|his|"
    r"her|their)?\s*(?:new\s+|used\s+|second-hand\s+)?",
    re.IGNORECASE,
)
_WORKS_ON_RE = re.compile(_STATE_PREFIX + r"(?:work|works|working|worked)\s+on\s+", re.IGNORECASE)
_NAME_RE = re.compile(
    r"(?:my name is|my name's|call me|people call me|everyone calls me|i'm called|i am called)\s+", re.IGNORECASE
)
_FAV_RE = re.compile(r"my (?:favourite|favorite|fave|fav)\s+([a-z]+(?:\s[a-z]+)?)\s+(?:is|are|was|=)\s+", re.IGNORECASE)
_BDAY_RE = re.compile(r"my birthday is\s+(?:on\s+)?", re.IGNORECASE)
_AGE_RE = re.compile(
    r"(?:i'm|i am|im)\s+(\d{1,3})(?:\s+years?\s+old|\s*yo\b|\s*y/o\b)|my age is\s+(\d{1,3})", re.IGNORECASE
)
_NEG_RE = re.compile(r"\b(?:not|n't|never|no longer|nowhere|anymore|any more)\b", re.IGNORECASE)
_PHRASE_STOP = frozenset(
    """and but because so with for on in at to from since until after before when while who which that
    where last next this yesterday today tomorrow now then by of, though although""".split()
)


@dataclass(slots=True)
class _Subject:
    name: str  # as it appears in content/relations
    key: str  # slug prefix
    end: int  # offset in the body where the predicate starts


def _subject(body: str, speaker: str, speaker_id: str, ents: list[EntityMention], offset: int) -> _Subject | None:
    """The grammatical subject at the start of `body` (offset = body's position in the text)."""
    m = _SUBJ_I_RE.match(body)
    if m:
        w = m.group(0)
        return _Subject(speaker, speaker_id, w.index("'") if "'" in w else m.end())
    m = _SUBJ_MY_RE.match(body)
    if m:
        phrase = m.group(1).lower()
        after = offset + m.end()
        named = next(
            (
                e
                for e in ents
                if e.type in ("person", "pet")
                and e.label != "REL_UNNAMED"
                and abs(e.span[0] - after) <= 8
                and e.span[0] >= offset + m.start(1)
            ),
            None,
        )
        if named is not None:
            end = named.span[1] - offset
            rest = body[end:]
            end += len(rest) - len(rest.lstrip(" ,"))
            return _Subject(named.name, _slug_key(named.name), end)
        if body[m.end(1) : m.end(1) + 2] == "'s":
            return None  # "my sister's car …": not the sister as subject
        return _Subject(f"{speaker}'s {phrase}", f"{speaker_id}/{relation_name(phrase)}", m.end(1))
    for e in ents:
        if e.span[0] == offset and e.type in NAMED_TYPES and e.label != "REL_UNNAMED":
            return _Subject(e.name, _slug_key(e.name), e.span[1] - offset)
    return None


def _object_at(body: str, pos: int, ents: list[EntityMention], offset: int, max_words: int = 4) -> str | None:
    """The object starting at `pos` in `body`: an entity mention starting there, else a short
    phrase up to a clause break."""
    for e in ents:
        if e.type != "date" and offset + pos <= e.span[0] <= offset + pos + 4:
            return e.name
    words = []
    for w in re.findall(r"[^\s]+", body[pos:]):
        core = w.strip(".,!?;:\"'()")
        if not core or core.lower() in _PHRASE_STOP or DATE_RE.fullmatch(core):
            break
        words.append(core)
        if w[-1:] in ".,!?;:" or len(words) >= max_words:
            break
    phrase = " ".join(words)
    return phrase or None


def _relation(
    body: str, subj: _Subject | None, kind: str, speaker: str, speaker_id: str, ents: list[EntityMention], offset: int
) -> tuple[tuple[str, str, str], str | None] | None:
    """((subject, relation, object), slug or None) for a state statement, else None."""
    low = body.lower()
    # speaker attributes stated with "my …"
    m = _NAME_RE.match(body)
    if m:
        obj = _object_at(body, m.end(), ents, offset, 3)
        return ((speaker, "name", obj), f"{speaker_id}/name") if obj else None
    m = _FAV_RE.match(body)
    if m:
        thing = _snake(m.group(1))
        obj = _object_at(body, m.end(), ents, offset, 6)
        if obj and not _NEG_RE.search(low[: m.end()]):
            return (speaker, f"favourite_{thing}", obj), f"{speaker_id}/favourite_{thing}"
        return None
    m = _BDAY_RE.match(body)
    if m:
        obj = body[m.end() :].strip(" .!")
        return ((speaker, "birthday", obj), f"{speaker_id}/birthday") if obj else None
    m = _AGE_RE.match(body)
    if m:
        return (speaker, "age", m.group(1) or m.group(2)), f"{speaker_id}/age"
    if subj is None or kind in ("plan", "decision", "error"):
        return None
    pred = body[subj.end :].lstrip()
    pred_pos = len(body) - len(pred)
    neg = bool(_NEG_RE.search(pred[:40]))

    def obj_after(mm: re.Match, n: int = 4) -> str | None:
        return _object_at(body, pred_pos + mm.end(), ents, offset, n)

    for rx, rel, keyed in (
        (_BORN_RE, "born_in", True),
        (_RES_RE, "lives_in", True),
        (_LIVED_RE, "lived_in", False),
        (_WORK_RE, "works_at", True),
        (_JOINED_RE, "works_at", True),
        (_WORKED_RE, "worked_at", False),
        (_WORKS_AS_RE, "works_as", True),
    ):
        mm = rx.match(pred)
        if mm:
            if neg:
                return None
            obj = obj_after(mm)
            if not obj:
                return None
            return (subj.name, rel, obj), (f"{subj.key}/{rel}" if keyed else None)
    mm = _HAS_NAMED_RE.match(pred)
    if mm and not neg:
        obj = obj_after(mm, 3)
        if obj:
            return (subj.name, relation_name(mm.group(1)), obj), None
    mm = _WORKS_ON_RE.match(pred)
    if mm and not neg:
        at = offset + pred_pos + mm.end()
        proj = next((e for e in ents if e.type == "project" and at <= e.span[0] <= at + 4), None)
        if proj is not None:
            return (subj.name, "works_on", proj.name), None
    mm = _OWNS_RE.match(pred)
    if mm and not neg:
        obj = obj_after(mm, 3)
        if obj:
            return (subj.name, "owns", obj), None
    mm = _IS_A_RE.match(pred)
    if mm and not neg:
        obj = obj_after(mm, 3)
        if obj and obj.lower() not in KIN:
            return (subj.name, "is_a", obj), None
    return None


_CLAUSE_SPLIT_RE = re.compile(r",?\s+(?:but|and|so|because|although|though|while)\s+|;\s*|,\s+", re.IGNORECASE)


def _clause_relation(
    body: str, speaker: str, speaker_id: str, kind: str, ents: list[EntityMention], offset: int
) -> tuple[tuple[str, str, str], str | None] | None:
    """A state relation stated in a later clause: "I'm from Brazil but I live in Lisbon now"."""
    for m in _CLAUSE_SPLIT_RE.finditer(body):
        clause = body[m.end() :]
        sub = _subject(clause, speaker, speaker_id, ents, offset + m.end())
        if sub is None:
            continue
        got = _relation(clause, sub, kind, speaker, speaker_id, ents, offset + m.end())
        if got is not None:
            return got
    return None


# --------------------------------------------------------------------------- main entry
def candidate_facts(text: str, *, speaker: str, speaker_id: str, now: datetime) -> list[Candidate]:
    """Typed candidate facts from one user turn, each with an explicit subject (see the module
    docstring for the steps). Questions, greetings and chit-chat give none. Never pass the
    bot's own replies here."""
    if not text or not text.strip():
        return []
    text = text.replace("’", "'")
    mentions = extract_entities(text, speaker=speaker)
    sentences = split_sentences(text)
    rels = relationship_mentions(text)
    out: list[Candidate] = []
    seen: set[str] = set()

    def emit(c: Candidate) -> None:
        key = c.content.casefold()
        if key not in seen:
            seen.add(key)
            out.append(c)

    used_rels: set[tuple[str, str]] = set()
    for s, e in sentences:
        raw = text[s:e]
        body = raw
        lead = _LEADIN_RE.match(body)
        if lead and lead.end() < len(body):
            body = body[lead.end() :]
        remember = _REMEMBER_RE.match(body)
        if remember and remember.end() < len(body):
            body = body[remember.end() :]
        offset = s + (len(raw) - len(body))
        if is_chitchat(body):
            continue
        ents = [m for m in mentions if s <= m.span[0] and m.span[1] <= e]
        remind = _REMIND_RE.match(body)
        if body.rstrip().endswith("?"):
            part = _statement_part(body)
            if part is None:
                continue
            body = part
        elif _COMMAND_RE.match(body) and not remind:
            continue
        elif not remind and not _FIRST_PERSON_RE.match(body) and _UNPUNCTUATED_Q_RE.match(body):
            continue  # an unpunctuated question
        if _BOT_OPINION_RE.match(body):
            continue  # "I think you're wrong": about the conversation, not a fact
        named = [m for m in ents if m.type in NAMED_TYPES and m.label != "REL_UNNAMED"]
        first_person = bool(_FIRST_PERSON_RE.search(body.replace("US", "")))
        reported_error = bool(ERROR_RE.search(body))
        if not first_person and not named and not remember and not reported_error:
            continue
        body = body.strip().rstrip(".!;: ")
        if not body:
            continue

        date_ents = [m for m in ents if m.type == "date"]
        prefer = _prefer(body)
        event_date = None
        for d in date_ents:
            event_date = resolve_date(d.name, now, prefer)
            if event_date:
                break
        if remind:
            rest = body[remind.end() :].strip()
            content = (
                f"{speaker} asked to be reminded to {rewrite_first_person(rest, speaker)}"
                if remind.group(0).lower().rstrip().endswith("to")
                else f"{speaker} asked to be reminded about {rewrite_first_person(rest, speaker)}"
            )
            kind = "plan"
        else:
            content = rewrite_first_person(body, speaker)
            kind = classify_kind(body, has_date=event_date is not None, entities=ents)
            if kind == "event" and event_date is not None and event_date > now.date():
                kind = "plan"  # an upcoming dated happening is part of the user's plans
            if remember and kind == "observation":
                kind = "note"
        subj = _subject(body, speaker, speaker_id, ents, offset)
        got = None if remind else _relation(body, subj, kind, speaker, speaker_id, ents, offset)
        if got is None and not remind:
            got = _clause_relation(body, speaker, speaker_id, kind, ents, offset)
        relation, slug = got if got else (None, None)
        if relation is not None and kind == "observation":
            kind = "biographical"
        if relation is not None and relation[1] in ("name", "age", "birthday") or relation and relation[0] == speaker:
            subject = speaker
        elif relation is not None:
            subject = relation[0]
        elif subj is not None and not subj.name.startswith(f"{speaker}'s "):
            subject = subj.name
        elif first_person or remember or not named:
            subject = speaker
        else:
            subject = next((m.name for m in named if m.type == "person"), named[0].name)
        valid_from = None
        if relation is not None and slug is not None:
            valid_from = now
            if event_date is not None and event_date <= now.date() and kind == "biographical":
                valid_from = datetime.combine(event_date, time(0), tzinfo=now.tzinfo)
        emit(
            Candidate(
                content=content,
                kind=kind,
                subject=subject,
                importance=importance(raw, kind, ents),
                entities=ents,
                valid_from=valid_from,
                event_date=event_date,
                slug=slug,
                relation=relation,
            )
        )

        # named relations of the speaker stated in this sentence: "my sister Anna …"
        for phrase, name in rels:
            key = (phrase, name.casefold())
            if key in used_rels or name.casefold() not in raw.casefold():
                continue
            if phrase.split()[-1] not in raw.lower():
                continue
            used_rels.add(key)
            rname = relation_name(phrase)
            if relation == (speaker, rname, name):
                continue
            content = f"{name} is {speaker}'s {phrase}"
            same = next((c for c in out if c.content.casefold() == content.casefold()), None)
            if same is not None:  # the sentence was just "Anna is my sister"
                if same.relation is None:
                    same.relation, same.subject = (speaker, rname, name), speaker
                    same.slug = f"{speaker_id}/{rname}" if rname in SINGLE_VALUED_KIN else None
                    same.valid_from = same.valid_from or now
                continue
            etype = "pet" if phrase.split()[-1] in PETS else "person"
            rel_ents = [m for m in ents if m.name.casefold() == name.casefold()] or [
                EntityMention(name, etype, (s, s), "REL")
            ]
            emit(
                Candidate(
                    content=content,
                    kind="biographical",
                    subject=speaker,
                    importance=importance(f"{name} is my {phrase}", "biographical", rel_ents),
                    entities=rel_ents,
                    valid_from=now,
                    slug=f"{speaker_id}/{rname}" if rname in SINGLE_VALUED_KIN else None,
                    relation=(speaker, rname, name),
                )
            )
    return out
