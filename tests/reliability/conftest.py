"""Bounds for the reliability suite: CI sizes by default, long runs through the environment
(`CLARA_FUZZ_EXAMPLES=10000`, `CLARA_LOAD_USERS=50 CLARA_LOAD_MESSAGES=20`; or `clara bench load`)."""

from __future__ import annotations

import os

FUZZ_EXAMPLES = int(os.environ.get("CLARA_FUZZ_EXAMPLES", "200"))
LOAD_USERS = int(os.environ.get("CLARA_LOAD_USERS", "20"))
LOAD_MESSAGES = int(os.environ.get("CLARA_LOAD_MESSAGES", "5"))
