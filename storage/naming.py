"""Table-name prefix (`CLARA_TABLE_PREFIX`): lets several Clara stores, or Clara and another
application, share one SQLite file or one PostgreSQL database.

The prefix is read ONCE, when this module is first imported: from the environment variable
`CLARA_TABLE_PREFIX`, else from a `CLARA_TABLE_PREFIX=` line of `./.env` (where the settings read
it too), else empty. Everything the schema names goes through `t()`: ORM tables, their indexes and
constraints, the SQLite FTS5 table/view/triggers, the PostgreSQL full-text index, raw SQL in
recall, the Alembic version table (core and plugins: `<prefix>alembic_version[_<plugin>]`),
every past Alembic revision (so a fresh and a migrated prefixed database are identical) and the
local vector index folder / Qdrant collection. One process = one prefix.

A prefix is 1-24 characters of lowercase ASCII letters, digits and `_`, starting with a letter
(so every derived name stays a plain, unquoted SQL identifier). An invalid one is not used: `ERROR`
holds the one-line reason and `check_configured()` (called by `FactStore.open` and the settings)
raises it as `ValueError`, so nothing is ever created under a wrong name.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

ENV = "CLARA_TABLE_PREFIX"
_VALID = re.compile(r"[a-z][a-z0-9_]{0,23}")


def _from_dotenv(path: Path = Path(".env")) -> str | None:
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    for line in lines:
        key, sep, value = line.strip().removeprefix("export ").partition("=")
        if sep and key.strip() == ENV:
            return value.split(" #", 1)[0].strip().strip("'\"")
    return None


def check_prefix(value: str) -> str:
    """`value` if it is a valid prefix ("" = none); ValueError with a one-line reason otherwise."""
    if value and not _VALID.fullmatch(value):
        raise ValueError(
            f"{ENV}={value!r} is not a valid table prefix: use 1-24 lowercase letters, digits or '_', "
            "starting with a letter (e.g. clara_)"
        )
    return value


def _read() -> tuple[str, str | None]:
    raw = os.environ.get(ENV)
    if raw is None:
        raw = _from_dotenv() or ""
    try:
        return check_prefix(raw.strip()), None
    except ValueError as exc:
        return "", str(exc)


PREFIX, ERROR = _read()


def check_configured(value: str | None = None) -> str:
    """The process's prefix; ValueError if `CLARA_TABLE_PREFIX` was invalid at start, or if
    `value` (a prefix from settings) is not the one the process started with."""
    if ERROR:
        raise ValueError(ERROR)
    if value is not None and check_prefix(value.strip()) != PREFIX:
        raise ValueError(
            f"{ENV}={value!r} differs from the prefix this process started with ({PREFIX!r}): "
            "the prefix is read once, set it in the environment or .env before starting"
        )
    return PREFIX


def t(name: str) -> str:
    """The prefixed name of schema object `name` (a table, view, trigger, function, index or
    constraint). Index and unique-constraint names keep their kind first: `ix_facts_x` becomes
    `ix_<prefix>facts_x`, which is also what SQLAlchemy names an `index=True` column of the
    prefixed table (`ix_<table>_<column>`), so models and migrations agree."""
    if not PREFIX:
        return name
    for kind in ("ix_", "uq_"):
        if name.startswith(kind):
            return f"{kind}{PREFIX}{name[len(kind) :]}"
    return f"{PREFIX}{name}"


def prefix() -> str:
    """The process's table prefix ("" when unset)."""
    return PREFIX
