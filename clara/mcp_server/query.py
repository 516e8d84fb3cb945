"""`memory_query_raw`: a read-only, whitelisted, parameterised query over a few tables.

The caller names a table, columns, filters ({column: value} or {column: {op: value}}), an order
column and a limit — never SQL. Tables and columns come from the whitelist below; every query is
built with SQLAlchemy Core (values are bound parameters), runs on the read connection, and is
always restricted to the caller's readable scopes (`scope_id IN (...)`, or `id IN (...)` for
scopes); deleted facts are never returned. Only `select` and `count` exist.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import DateTime, func, select

from storage.errors import InvalidInput
from storage.models import EntityRow, FactRow, RelationRow, ScopeRow, SessionRow
from storage.text import check_int, shown, unicode_problem

MAX_LIMIT = 200
MAX_IN = 100
MAX_FILTERS = 20
MAX_COLUMNS = 30
MAX_VALUE_CHARS = 2000

TABLES: dict[str, tuple[Any, tuple[str, ...]]] = {
    "facts": (
        FactRow,
        (
            "id",
            "scope_id",
            "content",
            "context",
            "kind",
            "slug",
            "importance",
            "relevance",
            "access_count",
            "status",
            "valid_from",
            "valid_to",
            "supersedes_id",
            "superseded_by_id",
            "source_ref",
            "speaker",
            "created_by",
            "created_at",
            "updated_at",
        ),
    ),
    "entities": (EntityRow, ("id", "scope_id", "name", "type", "aliases", "created_at")),
    "relations": (
        RelationRow,
        ("id", "scope_id", "source_id", "relation", "target_id", "fact_id", "valid_from", "valid_to", "created_at"),
    ),
    "sessions": (
        SessionRow,
        (
            "id",
            "scope_id",
            "channel_id",
            "status",
            "started_at",
            "last_activity_at",
            "closed_at",
            "message_count",
            "summary_fact_id",
        ),
    ),
    "scopes": (ScopeRow, ("id", "kind", "name", "read_policy", "write_policy", "created_at")),
}

OPS = {
    "eq": lambda c, v: c == v,
    "ne": lambda c, v: c != v,
    "lt": lambda c, v: c < v,
    "lte": lambda c, v: c <= v,
    "gt": lambda c, v: c > v,
    "gte": lambda c, v: c >= v,
    "in": lambda c, v: c.in_(v),
    "contains": lambda c, v: c.contains(v, autoescape=True),
    "is_null": lambda c, v: c.is_(None) if v else c.is_not(None),
}
_SCALAR = (str, int, float, bool)


def _value(col, op: str, value: Any) -> Any:
    if op == "in":
        if not isinstance(value, list) or not 0 < len(value) <= MAX_IN:
            raise InvalidInput(f"'in' takes a list of 1-{MAX_IN} values")
        return [_value(col, "eq", v) for v in value]
    if op == "is_null":
        if not isinstance(value, bool):
            raise InvalidInput("'is_null' takes true or false")
        return value
    if not isinstance(value, _SCALAR):
        raise InvalidInput(f"filter values must be strings, numbers or booleans, got {type(value).__name__}")
    if op == "contains" and not isinstance(value, str):
        raise InvalidInput("'contains' takes a string")
    if isinstance(value, int) and not isinstance(value, bool):
        check_int(value, f"filter value for {col.key}")  # SQL integers are 64-bit
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidInput(f"filter value for {col.key} must be a finite number")
    if isinstance(value, str):
        if len(value) > MAX_VALUE_CHARS:
            raise InvalidInput(
                f"filter value for {col.key} is too long: {len(value):,} characters (max {MAX_VALUE_CHARS:,})"
            )
        if "\x00" in value or unicode_problem(value):
            raise InvalidInput(f"filter value for {col.key} is not plain text (NUL byte or invalid Unicode)")
    if isinstance(col.type, DateTime) and isinstance(value, str):
        try:
            return datetime.fromisoformat(value)
        except ValueError as exc:
            raise InvalidInput(f"bad ISO date/time {shown(value)}") from exc
    return value


def _json(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


async def run_query(
    store,
    readable: Sequence[str],
    table: str,
    *,
    filters: Mapping[str, Any],
    columns: Sequence[str] | None = None,
    order_by: str | None = None,
    descending: bool = True,
    limit: int = 50,
    operation: str = "select",
) -> dict[str, Any]:
    """Run one whitelisted read. Raises InvalidInput for anything outside the whitelist."""
    if operation not in ("select", "count"):
        raise InvalidInput(f"read-only: operation {shown(operation)} is not allowed (select or count)")
    if table not in TABLES:
        raise InvalidInput(f"unknown table {shown(table)} (allowed: {', '.join(sorted(TABLES))})")
    model, allowed = TABLES[table]
    if not isinstance(filters, Mapping):
        raise InvalidInput("filters must be an object")
    if len(filters) > MAX_FILTERS:
        raise InvalidInput(f"too many filters: {len(filters)} (at most {MAX_FILTERS})")
    if columns is not None and (isinstance(columns, str) or len(columns) > MAX_COLUMNS):
        raise InvalidInput(f"columns must be a list of at most {MAX_COLUMNS} names")
    cols = list(columns) if columns else list(allowed)
    bad = [c for c in [*cols, *filters.keys(), *([order_by] if order_by else [])] if c not in allowed]
    if bad:
        raise InvalidInput(f"unknown column(s) for {table}: {', '.join(repr(b)[:50] for b in bad[:5])}")
    conds = []
    for name, spec in filters.items():
        col = getattr(model, name)
        items = spec.items() if isinstance(spec, Mapping) else [("eq", spec)]
        for op, value in items:
            if op not in OPS:
                raise InvalidInput(f"unknown filter operator {shown(op)} (allowed: {', '.join(OPS)})")
            if value is None and op == "eq":
                conds.append(col.is_(None))
                continue
            conds.append(OPS[op](col, _value(col, op, value)))
    scope_col = model.id if model is ScopeRow else model.scope_id
    conds.append(scope_col.in_(list(readable)))
    if model is FactRow:
        conds.append(FactRow.status != "deleted")
    limit = check_int(limit, "limit", 1, MAX_LIMIT)
    if operation == "count":
        q = select(func.count()).select_from(model).where(*conds)
    else:
        q = select(*[getattr(model, c) for c in cols]).where(*conds)
        order = getattr(model, order_by or "id")
        q = q.order_by(order.desc() if descending else order.asc()).limit(limit)
    if not readable:
        return {"table": table, "count": 0} if operation == "count" else {"table": table, "rows": []}
    async with store.engines.reader.connect() as conn:
        result = await conn.execute(q)
        if operation == "count":
            return {"table": table, "count": result.scalar_one()}
        rows = [{c: _json(v) for c, v in zip(cols, r, strict=True)} for r in result.all()]
    return {"table": table, "rows": rows, "truncated": len(rows) == limit}
