"""The one clock. Every timestamp Clara stores or compares comes from a `Clock`: a callable that
returns an aware UTC `datetime`. The entry points build one (`system_clock` in production) and
inject it into the store (`StoreConfig.clock`); everything that holds the store — sessions, job
queue, settings, graph, indexer, MemoryManager, plugin host, scheduler, MCP server, dashboard —
reads `store.clock`. Tests inject a `ManualClock` so they pass on any date.

This module is the only place under `clara/`, `storage/` and `plugins/` allowed to read the wall
clock (ruff's banned-api rule enforces it). Monotonic timers for latency and timeouts are fine.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

Clock = Callable[[], datetime]


def system_clock() -> datetime:
    """The wall clock, as an aware UTC datetime (microsecond resolution)."""
    return datetime.now(UTC)


def _aware(t: datetime) -> datetime:
    if not isinstance(t, datetime):
        raise TypeError(f"a clock time must be a datetime, got {type(t).__name__}")
    if t.tzinfo is None:
        raise ValueError("a clock time must be timezone-aware (UTC)")
    return t.astimezone(UTC)


class ManualClock:
    """A clock that only moves when told to (tests, simulations, benchmarks).

    `ManualClock(t)` reads `t` until `set()` or `advance()`. With `ticking=True` it also moves with
    real elapsed time (monotonic) from the last `set`, so code that waits for a lease or a timeout
    still sees time pass, while the date stays pinned. Thread-safe."""

    def __init__(self, start: datetime, *, ticking: bool = False):
        self._lock = threading.Lock()
        self._base = _aware(start)
        self._mono = time.monotonic()
        self.ticking = ticking

    def __call__(self) -> datetime:
        with self._lock:
            if not self.ticking:
                return self._base
            return self._base + timedelta(seconds=time.monotonic() - self._mono)

    def set(self, t: datetime) -> None:
        """Make the clock read `t` now (it may go backwards: a simulation's choice)."""
        with self._lock:
            self._base = _aware(t)
            self._mono = time.monotonic()

    def advance(self, delta: timedelta | float) -> datetime:
        """Move the clock forward by `delta` (a timedelta or seconds); returns the new time."""
        step = delta if isinstance(delta, timedelta) else timedelta(seconds=float(delta))
        with self._lock:
            self._base = self._base + step
            return self._base

    @property
    def t(self) -> datetime:
        return self()

    @t.setter
    def t(self, value: datetime) -> None:
        self.set(value)
