"""`clara bench startup`: how long `clara chat` takes to answer its first message from a cold
start (interpreter, imports, migrations check, model load, store open) and its idle RSS after it.

The chat runs as a child process with a pipe on stdin; the first line ("!help") is written at once
and the clock stops when the reply arrives. RSS is read while the chat waits for the next line.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time

import psutil

from clara.bench.stats import pct


def run(runs: int = 5) -> dict[str, dict[str, float]]:
    ready, rss, rss_after_recall = [], [], []
    with tempfile.TemporaryDirectory(prefix="clara-startup-") as tmp:
        env = {**os.environ, "CLARA_DATA_DIR": tmp}
        env.pop("DATABASE_URL", None)
        for i in range(runs):
            t = time.perf_counter()
            proc = subprocess.Popen(
                [sys.executable, "-m", "clara.cli", "chat", "--user", "bench"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
                env=env,
            )
            try:
                proc.stdin.write("!help\n")
                proc.stdin.flush()
                proc.stdout.readline()
                ready.append(time.perf_counter() - t)
                time.sleep(1.0)
                rss.append(psutil.Process(proc.pid).memory_info().rss / 2**20)
                proc.stdin.write(f"I told Clara about my {i}th bicycle\n")
                proc.stdin.flush()
                proc.stdout.readline()
                time.sleep(1.0)
                rss_after_recall.append(psutil.Process(proc.pid).memory_info().rss / 2**20)
            finally:
                proc.stdin.close()
                proc.wait(timeout=60)
    return {
        "clara chat": {
            "runs": runs,
            "ready_p50_s": pct(ready, 50),
            "ready_max_s": max(ready),
            "idle_rss_mb_p50": pct(rss, 50),
            "rss_after_message_mb_p50": pct(rss_after_recall, 50),
        }
    }
