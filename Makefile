# Viva Learning Sync: `make dev` runs the local stack, `make test` runs every test.
# Both install what they need first (venv + pip, npm ci) and are safe to run again.

SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
PIP_STAMP := $(VENV)/.installed
NPM_STAMP := node_modules/.installed
# checkov lives in its own venv (its pins conflict with the app's); a newer pycep beside it parses
# the Bicep syntax checkov's pinned parser cannot (extension, lambdas) for tests/infra.
INFRA_VENV := .venv-infra
INFRA_STAMP := $(INFRA_VENV)/.installed
CHECKOV_VERSION := 3.3.30
PYCEP_NEW_VERSION := 0.7.1
PYTEST_ARGS ?=

.PHONY: help install infra-tools infra-check dev scenarios faults bench test unit e2e lint format schema clean

help:
	@echo "make dev    - local stack (Azurite, Graph and LMS emulators, identity endpoint, function host) ready for webhooks"
	@echo "              SOURCES_FILE=path runs the sources of that document (e.g. local/samples/sources.all-kinds.json)"
	@echo "make test   - lint-free install, Azurite, and the whole pytest suite"
	@echo "make lint   - ruff + mypy"
	@echo "make schema - regenerate docs/event-schema.json from the models"
	@echo "make infra-check - checkov (offline) over infra/"
	@echo "make scenarios - the ten vlsync scenarios against a running make dev"
	@echo "make faults - FAULTS_SIZE (2000) events per fault (Graph, token, Azurite, host) through a stack of its own; exit 1 on any loss"
	@echo "make bench  - the benchmarks of issue 11 into docs/benchmarks.md (BENCH_SIZE=full|small, BENCH_OUT=FILE)"

install: $(PIP_STAMP) $(NPM_STAMP)

$(PIP_STAMP): requirements.txt requirements-cli.txt requirements-dev.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	@touch $@

$(NPM_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

infra-tools: $(INFRA_STAMP)

$(INFRA_STAMP):
	@test -x $(INFRA_VENV)/bin/python || $(PYTHON) -m venv $(INFRA_VENV)
	@echo '*' > $(INFRA_VENV)/.gitignore
	$(INFRA_VENV)/bin/pip install --quiet --disable-pip-version-check checkov==$(CHECKOV_VERSION) lark==1.3.1
	$(INFRA_VENV)/bin/pip install --quiet --disable-pip-version-check --no-deps --upgrade \
		--target $(INFRA_VENV)/pycep-$(PYCEP_NEW_VERSION) pycep-parser==$(PYCEP_NEW_VERSION)
	@touch $@

infra-check: infra-tools
	BC_SKIP_MAPPING=TRUE $(INFRA_VENV)/bin/checkov -d infra --framework bicep --skip-download --compact

# SOURCES_FILE=path: run these sources (a SOURCES document, docs/sources.md) instead of the demo source.
dev: install
	$(PY) -m local.stack $(if $(SOURCES_FILE),--sources-file "$(SOURCES_FILE)")

scenarios: install
	@test -f .dev/stack.env || { echo "start the stack first: make dev"; exit 1; }
	set -a; . .dev/stack.env; set +a; PATH="$(CURDIR)/$(VENV)/bin:$$PATH" scripts/scenarios.sh

# FAULTS_ARGS: e.g. --faults outage-30s,host-kill --long-outage-seconds 120 --stacks 2 (see --help).
faults: install
	$(PY) -m local.faults $(FAULTS_ARGS)

# The benchmarks (local/bench): BENCH_SIZE=full (100,000 items, minutes) or small (well under 3 minutes).
# msgraph-sdk (a baseline) comes from requirements-bench.txt, installed here only, never for the app.
BENCH_SIZE ?= full
BENCH_OUT ?= docs/benchmarks.md
BENCH_STAMP := $(VENV)/.bench-installed

$(BENCH_STAMP): requirements-bench.txt $(PIP_STAMP)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-bench.txt
	@touch $@

bench: install $(BENCH_STAMP)
	$(PY) -m local.bench --size $(BENCH_SIZE) --out $(BENCH_OUT)

test: install infra-tools
	$(PY) -m pytest $(PYTEST_ARGS)

unit: install infra-tools
	$(PY) -m pytest -m "not e2e" $(PYTEST_ARGS)

e2e: install
	$(PY) -m pytest -m e2e $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy .

format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

schema: install
	$(PY) -m shared.schema_export docs/event-schema.json

clean:
	rm -rf .dev .pytest_cache .mypy_cache .ruff_cache

