# Two commands for a fresh machine:  `make run` (local chat) and `make test` (the whole suite).
# Both create .venv from requirements.lock (exact pins, installed with --no-deps) on first use.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed-$(shell cat requirements.lock pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: run test test-faketime lint bench venv

# Test workers (pytest-xdist): most tests wait on subprocesses, sockets and fsync, so two workers
# roughly halve the wall time on a 2-core machine. `make test JOBS=0` runs in one process.
JOBS ?= 2

$(STAMP): requirements.lock pyproject.toml
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check --no-deps -r requirements.lock
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
	$(VENV)/bin/python -m pip check
	@rm -f $(VENV)/.installed-* && touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/clara chat $(ARGS)

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/python -m pytest -n $(JOBS) $(PYTEST_ARGS)

# The time-sensitive tests with the clock 400 days ahead (libfaketime; Debian package `faketime`).
TIME_TESTS := tests/test_clock.py tests/test_reminders.py tests/test_invoices.py tests/test_memory.py \
	tests/test_store.py tests/test_pipeline.py tests/test_chat.py tests/test_restart.py tests/test_golden_prompts.py
test-faketime: $(STAMP)
	faketime -f '+400d' $(VENV)/bin/python -m pytest -n $(JOBS) $(PYTEST_ARGS) $(TIME_TESTS)

lint: $(STAMP)
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

bench: $(STAMP)
	$(VENV)/bin/clara bench locomo ../shared/data/locomo --json bench-results/locomo.json
