# Two commands: `make demo` and `make test`. Both install what is missing first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
LAB ?= .lab
RUNS ?= runs

.PHONY: system-deps venv demo test lint format bench clean

system-deps:
	@scripts/install-system-deps.sh

$(INSTALLED): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $(INSTALLED)

venv: $(INSTALLED)

# A fresh throwaway lab, then every runbook against it; executed notebooks land in $(RUNS)/.
demo: system-deps venv
	$(BIN)/runbook lab down --dir $(LAB) --purge
	$(BIN)/runbook lab up --dir $(LAB)
	@BIN=$(BIN) scripts/demo.sh $(LAB) $(RUNS)

test: system-deps venv
	$(BIN)/ruff check .
	$(BIN)/pytest

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: venv
	$(BIN)/ruff format .

$(VENV)/.installed-bench: $(INSTALLED)
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	@touch $@

# reladiff, the compare bench's reference, comes with the bench extra
bench: system-deps venv $(VENV)/.installed-bench
	@for b in bench/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	-$(BIN)/runbook lab down --dir $(LAB) --purge
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache
