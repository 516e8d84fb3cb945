"""Structured logging for every Clara process.

- `CLARA_LOG_FORMAT=json` writes one JSON object per line (`ts`, `level`, `logger`, `msg`, and
  `exc` for tracebacks); anything else is a plain text line.
- `LOG_LEVEL` is the root level; `CLARA_LOG_LEVELS="clara.writer=DEBUG,discord=WARNING"` sets levels
  per logger (module).
- `RedactingFilter` replaces every configured secret (tokens and API keys from the settings and
  the environment) with `[REDACTED]` in the message, its arguments and tracebacks. It sits on
  the handlers, so records from every logger (discord.py, httpx, …) pass through it.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime

REDACTED = "[REDACTED]"
# Environment variables whose values are secrets: *_TOKEN, *_API_KEY, *_SECRET, *_PASSWORD, and
# CLARA_MCP_TOKENS; plus the password inside DATABASE_URL.
SECRET_NAME = re.compile(r"(TOKEN|TOKENS|API_KEY|SECRET|PASSWORD|PASSWD)$", re.IGNORECASE)
MIN_SECRET_CHARS = 4
_URL_PASSWORD = re.compile(r"(?P<pre>[a-z][a-z0-9+.-]*://[^:/@\s]+:)(?P<pw>[^@\s]+)(?P<post>@)", re.IGNORECASE)

_HANDLER_MARK = "_clara_ops_handler"


def secrets_from(env: Mapping[str, str] | None = None, settings: object | None = None) -> set[str]:
    """The secret values to redact: env variables named like secrets, settings fields named like
    secrets, `token=agent` pairs of CLARA_MCP_TOKENS, and passwords inside database URLs."""
    env = os.environ if env is None else env
    found: set[str] = set()
    for name, value in env.items():
        if not value:
            continue
        if SECRET_NAME.search(name):
            if name.upper() == "CLARA_MCP_TOKENS":
                found.update(p.split("=", 1)[0].strip() for p in value.split(","))
            else:
                found.add(value.strip())
        for m in _URL_PASSWORD.finditer(value):
            found.add(m.group("pw"))
    if settings is not None:
        fields = getattr(type(settings), "model_fields", {})
        for name in fields:
            value = getattr(settings, name, None)
            if isinstance(value, str) and value and SECRET_NAME.search(name):
                found.add(value.strip())
            if isinstance(value, str):
                for m in _URL_PASSWORD.finditer(value):
                    found.add(m.group("pw"))
    return {s for s in found if len(s) >= MIN_SECRET_CHARS}


class RedactingFilter(logging.Filter):
    """Replaces secret values (and URL passwords) in log records. Longest secrets first, so a
    secret containing another is removed whole."""

    def __init__(self, secrets: Iterable[str] = ()):
        super().__init__()
        self.set_secrets(secrets)

    def set_secrets(self, secrets: Iterable[str]) -> None:
        values = sorted({s for s in secrets if s and len(s) >= MIN_SECRET_CHARS}, key=len, reverse=True)
        self._pattern = re.compile("|".join(re.escape(s) for s in values)) if values else None

    def redact(self, text: str) -> str:
        if self._pattern is not None:
            text = self._pattern.sub(REDACTED, text)
        return _URL_PASSWORD.sub(lambda m: f"{m.group('pre')}{REDACTED}{m.group('post')}", text)

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: keep the raw parts
            message = f"{record.msg} {record.args}"
        record.msg = self.redact(message)
        record.args = None
        if record.exc_info and record.exc_info[0] is not None:
            record.exc_text = self.redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        elif record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exc"] = record.exc_text
        for key in ("user_id", "channel_id", "message_id", "job_id"):
            if hasattr(record, key):
                out[key] = getattr(record, key)
        return json.dumps(out, ensure_ascii=False, default=str)


def parse_levels(spec: str | None) -> dict[str, int]:
    """`"clara.writer=DEBUG,discord=WARNING"` → {logger: level}. Raises ValueError for a bad item."""
    levels: dict[str, int] = {}
    for item in (spec or "").split(","):
        item = item.strip()
        if not item:
            continue
        name, sep, level = item.partition("=")
        value = logging.getLevelName(level.strip().upper())
        if not sep or not name.strip() or not isinstance(value, int):
            raise ValueError(f"bad CLARA_LOG_LEVELS item {item!r} (expected logger=LEVEL)")
        levels[name.strip()] = value
    return levels


def setup_logging(
    settings: object | None = None,
    *,
    env: Mapping[str, str] | None = None,
    stream=None,
    extra_secrets: Iterable[str] = (),
) -> logging.Handler:
    """Configure the root logger from the environment (idempotent: replaces the handler it
    installed before). Returns the handler (with its RedactingFilter)."""
    env = os.environ if env is None else env
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, _HANDLER_MARK, False):
            root.removeHandler(h)
    handler = logging.StreamHandler(stream or sys.stderr)
    setattr(handler, _HANDLER_MARK, True)
    if env.get("CLARA_LOG_FORMAT", "").lower() == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactingFilter(secrets_from(env, settings) | set(extra_secrets)))
    root.addHandler(handler)
    level = env.get("LOG_LEVEL") or getattr(settings, "log_level", None) or "WARNING"
    root.setLevel(
        logging.getLevelName(str(level).upper())
        if isinstance(logging.getLevelName(str(level).upper()), int)
        else logging.WARNING
    )
    for name, lvl in parse_levels(env.get("CLARA_LOG_LEVELS")).items():
        logging.getLogger(name).setLevel(lvl)
    return handler
