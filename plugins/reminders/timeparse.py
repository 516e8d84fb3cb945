"""Pure time logic: timezones, natural-language times (dateparser), recurrences as 5-field cron
expressions evaluated in the user's timezone (APScheduler's CronTrigger), durations.

Recurring reminders are stored as cron in *local wall time* plus the IANA zone, and the next
occurrence is always recomputed from the zone's rules — so "every Monday 9:00" stays at 9:00 local
across DST changes (07:00 UTC in CEST, 08:00 UTC in CET for Europe/Berlin)."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from clara.plugin_api import PluginError

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_DAY_WORDS = {
    **{d: d for d in DAYS},
    "monday": "mon",
    "tuesday": "tue",
    "tues": "tue",
    "wednesday": "wed",
    "thursday": "thu",
    "thurs": "thu",
    "friday": "fri",
    "saturday": "sat",
    "sunday": "sun",
}
_DAYS_RE = "|".join(sorted(_DAY_WORDS, key=len, reverse=True))
_TIME_RE = r"(?:(?P<noon>noon|midday|midnight)|(?P<h>\d{1,2})(?:[:.h](?P<m>\d{2}))?\s*(?P<ampm>am|pm|a\.m\.|p\.m\.)?)"
_EVERY = re.compile(
    rf"^every\s+(?P<what>day|weekday|weekend|(?:(?:{_DAYS_RE})s?(?:\s*(?:,|and|&)\s*)?)+)"
    rf"(?:\s+(?:at\s+)?{_TIME_RE}(?=\s|$))?\s*(?P<rest>.*)$",
    re.I | re.S,
)
_EVERY_N = re.compile(r"^every\s+(?:(?P<n>\d+)\s+)?(?P<unit>minutes?|mins?|hours?|hrs?)\b\s*(?P<rest>.*)$", re.I | re.S)
_CRON = re.compile(r"^cron\s+(?P<expr>(?:\S+\s+){4}\S+)\s*(?P<rest>.*)$", re.I | re.S)
_DURATION = re.compile(r"^\s*(\d+)\s*(m|min|mins|minutes?|h|hrs?|hours?|d|days?)\s*$", re.I)
_SPLIT_WORDS = {"in", "at", "on", "tomorrow", "tonight", "next", "this", "today"}
MAX_TEXT = 1000
MAX_DURATION = timedelta(days=3650)  # snoozes and "in N …" offsets: ten years at most


def aware(value: datetime | None) -> datetime | None:
    """UTC-aware (SQLite hands back naive datetimes; they are stored in UTC)."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def utc(value: datetime) -> datetime:
    return aware(value).astimezone(UTC)


def zone(name: str) -> ZoneInfo:
    name = (name or "").strip()
    try:
        if not name or ".." in name or name.startswith("/"):
            raise ValueError(name)
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
        raise PluginError(
            f"unknown timezone {name!r} — use an IANA name like Europe/Berlin or America/New_York"
        ) from exc


def parse_duration(text: str) -> timedelta:
    m = _DURATION.match(text or "")
    if not m:
        raise PluginError(f"can't read the duration {text!r} — try 10m, 2h or 1d")
    digits, unit = m.group(1), m.group(2).lower()[0]
    n = int(digits) if len(digits) <= 9 else MAX_DURATION.days * 24 * 60 + 1
    if n <= 0:
        raise PluginError("the duration must be positive")
    if n > {"m": 24 * 60, "h": 24, "d": 1}[unit] * MAX_DURATION.days:
        raise PluginError(f"the duration {text.strip()[:30]!r} is too long (at most {MAX_DURATION.days:,} days)")
    return {"m": timedelta(minutes=n), "h": timedelta(hours=n), "d": timedelta(days=n)}[unit]


def _dateparse(expr: str, now: datetime, tz: str) -> datetime | None:
    import dateparser

    expr = expr.strip()
    if not expr or not re.search(r"[a-z0-9]", expr, re.I):
        return None
    try:
        iso = datetime.fromisoformat(expr)
    except ValueError:
        iso = None
    if iso is not None:
        return utc(iso if iso.tzinfo else iso.replace(tzinfo=ZoneInfo(tz)))
    base = utc(now).astimezone(ZoneInfo(tz)).replace(tzinfo=None)
    settings = {
        "TIMEZONE": tz,
        "RETURN_AS_TIMEZONE_AWARE": True,
        "PREFER_DATES_FROM": "future",
        "RELATIVE_BASE": base,
    }
    try:
        found = dateparser.parse(expr, languages=["en"], settings=settings)
    except Exception:  # dateparser raises assorted errors on odd input
        return None
    return None if found is None else found.astimezone(UTC)


def parse_when(expr: str, now: datetime, tz: str) -> datetime:
    """A single point in time (UTC) from natural language or ISO 8601; naive means the user's zone."""
    zone(tz)
    when = _dateparse(expr, now, tz)
    if when is None:
        raise PluginError(f"I can't tell when {expr!r} is — try 'in 2 hours', 'tomorrow 9:00' or '2026-12-01 09:00'")
    if when <= utc(now):
        raise PluginError(f"{expr!r} is in the past")
    return when


def _clock(m: re.Match) -> tuple[int, int]:
    if m.group("noon"):
        return (0, 0) if m.group("noon").lower() == "midnight" else (12, 0)
    if m.group("h") is None:
        return 9, 0
    h, mi = int(m.group("h")), int(m.group("m") or 0)
    ampm = (m.group("ampm") or "").lower().replace(".", "")
    if ampm:
        if not 1 <= h <= 12:
            raise PluginError(f"{h}{ampm} is not a time")
        h = h % 12 + (12 if ampm == "pm" else 0)
    if not (0 <= h <= 23 and 0 <= mi <= 59):
        raise PluginError(f"{h}:{mi:02d} is not a time")
    return h, mi


def _cron_dow(field: str) -> str:
    """Standard cron weekday numbers (0/7 = Sunday) as names (APScheduler counts from Monday)."""
    names = ("sun", "mon", "tue", "wed", "thu", "fri", "sat", "sun")
    return re.sub(
        r"\d+", lambda m: names[int(m.group())] if len(m.group()) == 1 and int(m.group()) <= 7 else m.group(), field
    )


def parse_recurrence(text: str) -> tuple[str, str] | None:
    """`every Monday 9:00 standup` → ("0 9 * * mon", "standup"); None if `text` isn't one."""
    text = text.strip()
    m = _CRON.match(text)
    if m:
        fields = m.group("expr").split()
        fields[4] = _cron_dow(fields[4])
        expr = " ".join(fields)
        trigger(expr, "UTC")  # validates
        return expr, m.group("rest").strip()
    m = _EVERY_N.match(text)
    if m:
        digits = m.group("n") or "1"
        n = int(digits) if len(digits) <= 4 else 10_000  # no interval that long divides an hour or a day
        unit = m.group("unit").lower()[0]
        if unit == "m":
            if n < 5 or 60 % n:
                raise PluginError("minute intervals must divide an hour and be at least 5 (5, 10, 15, 20, 30)")
            return f"*/{n} * * * *", m.group("rest").strip()
        if 24 % n:
            raise PluginError("hour intervals must divide a day (1, 2, 3, 4, 6, 8, 12)")
        return f"0 */{n} * * *", m.group("rest").strip()
    m = _EVERY.match(text)
    if not m:
        if text.lower().startswith("every "):
            raise PluginError(
                "I can't read that recurrence — try 'every day 8:00', 'every Monday 9:00', "
                "'every weekday at 7am', 'every 2 hours' or 'cron 0 9 * * 1'"
            )
        return None
    what = m.group("what").lower()
    if what == "day":
        dow = "*"
    elif what == "weekday":
        dow = "mon-fri"
    elif what == "weekend":
        dow = "sat,sun"
    else:
        found = [
            _DAY_WORDS[w.rstrip("s") if w.rstrip("s") in _DAY_WORDS else w] for w in re.findall(_DAYS_RE + "s?", what)
        ]
        dow = ",".join(sorted(set(found), key=DAYS.index))
    h, mi = _clock(m)
    return f"{mi} {h} * * {dow}", m.group("rest").strip()


def trigger(cron: str, tz: str):
    from apscheduler.triggers.cron import CronTrigger

    fields = cron.split()
    if len(fields) != 5:
        raise PluginError(f"a cron expression has 5 fields, not {len(fields)}")
    minute, hour, day, month, dow = fields
    try:
        return CronTrigger(minute=minute, hour=hour, day=day, month=month, day_of_week=dow, timezone=zone(tz))
    except ValueError as exc:
        raise PluginError(f"bad cron expression {cron!r}: {exc}") from exc


def next_fire(cron: str, tz: str, after: datetime) -> datetime | None:
    """The first occurrence strictly after `after`, in UTC (wall time in `tz`)."""
    nxt = trigger(cron, tz).get_next_fire_time(None, utc(after) + timedelta(seconds=1))
    return None if nxt is None else nxt.astimezone(UTC)


def split_when(text: str, now: datetime, tz: str) -> tuple[datetime, str]:
    """`in 2 hours to call Anna` / `tomorrow 9am call Anna` / `call Anna at 5pm` → (UTC time, text).
    Raises PluginError for an unreadable or past time."""
    text = text.strip()
    for m in re.finditer(r"\s+to\s+", text, re.I):
        left = text[: m.start()]
        when = _dateparse(left, now, tz)
        if when is not None:
            return _future(when, now, left), text[m.end() :].strip()
    words = text.split()
    for n in range(min(len(words), 7), 0, -1):
        left = " ".join(words[:n])
        when = _dateparse(left, now, tz)
        if when is not None:
            return _future(when, now, left), " ".join(words[n:])
    for i in range(1, len(words)):
        if words[i].lower() in _SPLIT_WORDS:
            right = " ".join(words[i:])
            when = _dateparse(right, now, tz)
            if when is not None:
                return _future(when, now, right), " ".join(words[:i])
    for m in re.finditer(r"\b(\d{4})-(\d{1,2})-(\d{1,2})\b", text):  # say which date cannot exist
        try:
            date(int(m[1]), int(m[2]), int(m[3]))
        except ValueError as exc:
            raise PluginError(f"{m[0]} is not a real date ({exc})") from None
    raise PluginError(
        "I can't tell when that is — try '!remind me in 2 hours to call Anna', '!remind me tomorrow 9:00 to …' "
        "or '!remind #channel every Monday 9:00 standup'"
    )


def _future(when: datetime, now: datetime, expr: str) -> datetime:
    if when <= utc(now):
        raise PluginError(f"{expr!r} is in the past")
    return when


def clean_text(text: str) -> str:
    text = re.sub(r"^(?:to|that|about)(?:\s+|$)", "", (text or "").strip(), flags=re.I).strip()
    if not text:
        raise PluginError("what should I remind you of? The reminder text is empty")
    if len(text) > MAX_TEXT:
        raise PluginError(f"the reminder text is too long (max {MAX_TEXT} characters)")
    return text


def local(value: datetime, tz: str) -> str:
    return utc(value).astimezone(ZoneInfo(tz)).strftime("%a %Y-%m-%d %H:%M %Z")


def describe_cron(cron: str) -> str:
    minute, hour, day, month, dow = cron.split()
    if minute.isdigit() and hour.isdigit() and day == "*" and month == "*":
        at = f"{int(hour):02d}:{int(minute):02d}"
        days = {"*": "every day", "mon-fri": "every weekday", "sat,sun": "every weekend day"}.get(dow, f"every {dow}")
        return f"{days} at {at}"
    return f"cron {cron}"
