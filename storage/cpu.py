"""Background CPU work (embedding for the index, fact extraction) on low-priority threads.

The event loop, the write thread and query embedding keep the normal priority; the threads of
`run_background` lower their own scheduling priority (Linux: `setpriority` on the thread id,
nice +10) when they start, and any thread they create (e.g. onnxruntime's intra-op pool, built
lazily by the first bulk embedding) inherits it. On a 2-core machine an acknowledgement that
becomes runnable then preempts background embedding within the scheduler's wake-up latency instead
of queueing behind it; when nothing else runs, background work still gets every core.
"""

from __future__ import annotations

import asyncio
import functools
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")

BACKGROUND_NICE = 10
_pool: ThreadPoolExecutor | None = None
_lock = threading.Lock()


def _lower_priority() -> None:
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), BACKGROUND_NICE)
    except (AttributeError, OSError):  # not Linux, or not permitted: run at normal priority
        pass


def background_pool() -> ThreadPoolExecutor:
    """The process-wide pool of low-priority worker threads (2 workers, created on first use)."""
    global _pool
    with _lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="clara-bg", initializer=_lower_priority)
        return _pool


async def run_background(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run the blocking `fn(*args, **kwargs)` on a low-priority thread and return its result
    (exceptions propagate). For CPU work that no user is waiting on right now."""
    return await asyncio.get_running_loop().run_in_executor(background_pool(), functools.partial(fn, *args, **kwargs))
