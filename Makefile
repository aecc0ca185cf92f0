# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
# Both create (or reuse) .venv and install irkit with what it needs.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.irkit-installed

.PHONY: demo test lint typecheck clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "irkit needs Python >= 3.11")'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/irkit demo

lint: $(STAMP)
	$(VENV)/bin/ruff check lib tests bench

typecheck: $(STAMP)
	$(VENV)/bin/mypy

test: $(STAMP)
	bash .ci/system-packages.sh
	$(VENV)/bin/ruff check lib tests bench
	$(VENV)/bin/mypy
	PY=$(PY) bash .ci/wheel-check.sh
	$(PY) -m pytest -q --durations=10

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
