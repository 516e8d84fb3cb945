"""In-process observability for the dashboard: a ring buffer of recent log errors and one of
recall timings (every `store.recall` made in this process once the store is instrumented —
chat, tools, dashboard)."""

from __future__ import annotations

import functools
import logging
import time
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime


@dataclass(slots=True)
class LogRecordView:
    at: datetime
    level: str
    logger: str
    message: str


class ErrorBuffer(logging.Handler):
    """A logging handler keeping the last `size` records at WARNING or above."""

    def __init__(self, size: int = 200, level: int = logging.WARNING):
        super().__init__(level)
        self.records: deque[LogRecordView] = deque(maxlen=size)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            msg = record.getMessage()
            if record.exc_info and record.exc_info[1] is not None:
                msg += f" ({type(record.exc_info[1]).__name__}: {record.exc_info[1]})"
            self.records.append(
                LogRecordView(datetime.fromtimestamp(record.created, UTC), record.levelname, record.name, msg[:2000])
            )
        except Exception:  # a log handler must never raise
            self.handleError(record)

    def recent(self, n: int = 50) -> list[LogRecordView]:
        return list(reversed(self.records))[:n]

    def install(self, logger: logging.Logger | None = None) -> ErrorBuffer:
        target = logger or logging.getLogger()
        if self not in target.handlers:
            target.addHandler(self)
        return self

    def uninstall(self, logger: logging.Logger | None = None) -> None:
        (logger or logging.getLogger()).removeHandler(self)


@dataclass(slots=True)
class Timing:
    at: datetime
    ms: float
    hits: int


class RecallTimings:
    """The last `size` recall latencies (milliseconds)."""

    def __init__(self, size: int = 500):
        self.samples: deque[Timing] = deque(maxlen=size)

    def add(self, ms: float, hits: int, at: datetime) -> None:
        self.samples.append(Timing(at, ms, hits))

    def percentile(self, p: float) -> float | None:
        values = sorted(s.ms for s in self.samples)
        if not values:
            return None
        return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def instrument_store(store, timings: RecallTimings) -> None:
    """Time every `store.recall` of this store instance (idempotent; wraps the bound method on
    the instance only, the class is untouched)."""
    current = store.recall
    if getattr(current, "_dashboard_timings", None) is timings:
        return
    original = getattr(current, "_dashboard_original", current)

    @functools.wraps(original)
    async def timed_recall(*args, **kwargs):
        t0 = time.perf_counter()
        hits = await original(*args, **kwargs)
        timings.add((time.perf_counter() - t0) * 1000.0, len(hits), store.clock())
        return hits

    timed_recall._dashboard_timings = timings  # type: ignore[attr-defined]
    timed_recall._dashboard_original = original  # type: ignore[attr-defined]
    store.recall = timed_recall
