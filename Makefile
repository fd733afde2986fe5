# ProteinMTP — set-up, demo, tests. Every target creates/refreshes .venv/ first (idempotent).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_MINUTES ?= 12

.PHONY: venv test test-fast lint demo bench bench-quick clean-venv

$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.txt
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $@

venv: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .

# everything, the slow tests (marked `slow`: end-to-end CLI chain, DDP, overfit) included: what CI runs
test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

# the quick loop while editing: deselects the tests marked `slow`
test-fast: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -m "not slow"

demo: $(STAMP)
	DEMO_MINUTES=$(DEMO_MINUTES) bash scripts/demo.sh

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

bench-quick: $(STAMP)
	$(BIN)/python benchmarks/run_all.py --quick

clean-venv:
	rm -rf $(VENV)
