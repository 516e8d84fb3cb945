"""`clara bench startup`: how long `clara chat` takes to answer its first message from a cold
start (interpreter, imports, migration check, model load, store open) and its idle RSS after it.

Every run is a fresh child process (`python -m clara.cli chat`) in memory-only mode (LLM settings
removed from its environment), with a pipe on stdin. The first line ("!help") is written at once;
the clock runs from just before the exec to the first reply line on the child's stdout. CPU
seconds are the child's user+system time at that moment; idle RSS is read after it has sat idle
for `idle_s` seconds waiting for the next line. Two cases:

- ``existing data dir``: one data dir migrated and used by an untimed first run, then reused;
- ``fresh data dir``: a new, empty data dir every run (creates and migrates the schema);
- ``existing, first line a question``: the existing data dir, but the first line is a question
  (recall, query embedding and entity extraction before the reply: nothing loading in the
  background is hidden from this one).

Shapes: `run()` returns ``{case: {runs, ready_p50_s, ready_p95_s, ready_max_s, cpu_p50_s,
cpu_p95_s, idle_rss_mb_p50, idle_rss_mb_p95}}``. Raises RuntimeError (with the child's stderr
tail) if the chat exits without replying.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from clara.bench.stats import pct

# Settings that would leave memory-only mode or point the chat at another store.
QUESTION = b"What do you remember about my bicycle trip to Lisbon with Anna?\n"
_DROP_ENV = ("DATABASE_URL", "LLM_PROVIDER", "QDRANT_URL")


def _env(data_dir: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _DROP_ENV and not k.endswith("_API_KEY")}
    env["CLARA_DATA_DIR"] = data_dir
    return env


def _one(data_dir: str, idle_s: float, cwd: str, first: bytes = b"!help\n") -> tuple[float, float, float]:
    """(seconds to first reply, child CPU seconds then, idle RSS in MiB) of one cold start."""
    with tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-m", "clara.cli", "chat", "--user", "bench"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=err,
            env=_env(data_dir),
            cwd=cwd,
        )
        try:
            proc.stdin.write(first)
            proc.stdin.flush()
            line = proc.stdout.readline()
            ready = time.perf_counter() - t0
            if not line:
                proc.wait(timeout=30)
                err.seek(0)
                tail = err.read().decode("utf-8", "replace").strip().splitlines()[-3:]
                raise RuntimeError(f"clara chat exited ({proc.returncode}) without replying: {' | '.join(tail)}")
            ps = psutil.Process(proc.pid)
            cpu = ps.cpu_times()
            cpu_s = cpu.user + cpu.system
            time.sleep(idle_s)
            rss = ps.memory_info().rss / 2**20
        finally:
            proc.stdin.close()
            proc.stdout.read()
            proc.wait(timeout=90)
    return ready, cpu_s, rss


def _summary(rows: list[tuple[float, float, float]]) -> dict[str, float]:
    ready, cpu, rss = (list(c) for c in zip(*rows, strict=True))
    return {
        "runs": len(rows),
        "ready_p50_s": pct(ready, 50),
        "ready_p95_s": pct(ready, 95),
        "ready_max_s": max(ready),
        "cpu_p50_s": pct(cpu, 50),
        "cpu_p95_s": pct(cpu, 95),
        "idle_rss_mb_p50": pct(rss, 50),
        "idle_rss_mb_p95": pct(rss, 95),
    }


def run(runs: int = 5, idle_s: float = 2.0) -> dict[str, dict[str, float]]:
    """Time `runs` cold starts on an existing data dir and `runs` on fresh ones (see module doc)."""
    with tempfile.TemporaryDirectory(prefix="clara-startup-") as tmp:
        # A neutral working directory: no ./.env of the caller leaks into the child.
        cwd = Path(tmp, "cwd")
        cwd.mkdir()
        existing = Path(tmp, "existing")
        _one(str(existing), 0.0, str(cwd))  # untimed: creates and migrates the data dir
        warm = [_one(str(existing), idle_s, str(cwd)) for _ in range(runs)]
        fresh = [_one(str(Path(tmp, f"fresh{i}")), idle_s, str(cwd)) for i in range(runs)]
        asked = [_one(str(existing), idle_s, str(cwd), QUESTION) for _ in range(runs)]
    return {
        "existing data dir": _summary(warm),
        "fresh data dir": _summary(fresh),
        "existing, first line a question": _summary(asked),
    }
