"""The suite runs under the `pytest` entry point as well as `python -m pytest` (which alone puts the
working directory on sys.path): the test modules' `from tests.conftest import ...` must resolve."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_pytest_entry_point_collects_modules_that_import_tests():
    entry = Path(sys.executable).with_name("pytest")
    if not entry.exists():
        pytest.skip(f"no pytest entry point next to {sys.executable}")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    files = ["tests/test_store.py", "tests/test_memory.py"]  # both `from tests.conftest import ...`
    proc = subprocess.run(
        [str(entry), "--collect-only", "-q", "-p", "no:cacheprovider", *files],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "error" not in out.lower() and " tests collected" in out, out
    for f in files:
        assert f"{f}::" in out, out
