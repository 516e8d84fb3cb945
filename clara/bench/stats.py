"""Small statistics helpers shared by the benchmarks."""

from __future__ import annotations

import numpy as np


def pct(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) of `values`, linear interpolation; NaN if empty."""
    return float(np.percentile(np.asarray(values, dtype=float), q)) if values else float("nan")


def recall_at(ranked: list[str], evidence: list[str], k: int) -> float:
    """|evidence ∩ top-k of ranked| / |evidence| (0 if there is no evidence)."""
    ev = set(evidence)
    if not ev:
        return 0.0
    return len(ev & set(ranked[:k])) / len(ev)


def rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20
