# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
# Both create (or reuse) .venv and install irkit with what it needs.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.irkit-installed

.PHONY: demo test lint typecheck clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "irkit needs Python >= 3.11")'
	@date +%s > $(VENV).install-start 2>/dev/null || true
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)
	@echo "make: installing into $(VENV) took $$(( $$(date +%s) - $$(cat $(VENV).install-start) )) s"; rm -f $(VENV).install-start

# The first run also says how long the install took; every run says how long the demo itself took.
demo: $(STAMP)
	@start=$$(date +%s); $(VENV)/bin/irkit demo; rc=$$?; \
	echo "make demo: the demo took $$(( $$(date +%s) - start )) s"; exit $$rc

lint: $(STAMP)
	$(VENV)/bin/ruff check lib tests bench

typecheck: $(STAMP)
	$(VENV)/bin/mypy

# The wheel check (mostly pip resolving and downloading, then one demo) runs in the background beside
# mypy and pytest; its output is held back and printed after pytest's, so the two never interleave.
# make test fails if any of them fails; a failing mypy (or Ctrl-C) stops the wheel check at once.
# pytest runs on every core (-n auto); a worker that runs out of tests takes half of another's queue
# (worksteal: tests take 0.1 s to 70 s). tests/conftest.py keeps the tests that share one demo on one worker.
test: SHELL := /bin/bash
test: $(STAMP)
	bash .ci/system-packages.sh
	$(VENV)/bin/ruff check lib tests bench
	@log=$$(mktemp /tmp/irkit-wheel-check.XXXXXX); \
	PY=$(PY) setsid bash .ci/wheel-check.sh >"$$log" 2>&1 & wheel=$$!; \
	trap 'kill -TERM -- -$$wheel 2>/dev/null; rm -f "$$log"' EXIT; trap 'exit 130' INT; trap 'exit 143' TERM; \
	echo "PY=$(PY) bash .ci/wheel-check.sh (in the background: its output follows pytest's)"; \
	echo "$(VENV)/bin/mypy"; $(VENV)/bin/mypy || exit; \
	echo "$(PY) -m pytest -q -n auto --dist worksteal --durations=10"; \
	$(PY) -m pytest -q -n auto --dist worksteal --durations=10; tests=$$?; \
	wait $$wheel; wheel_rc=$$?; trap 'rm -f "$$log"' EXIT; cat "$$log"; \
	if [ $$wheel_rc -ne 0 ]; then echo "make test: .ci/wheel-check.sh failed (exit $$wheel_rc)" >&2; exit $$wheel_rc; fi; \
	exit $$tests

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
