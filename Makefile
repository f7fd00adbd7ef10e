# Viva Learning Sync: `make dev` runs the local stack, `make test` runs every test.
# Both install what they need first (venv + pip, npm ci) and are safe to run again.

SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
PIP_STAMP := $(VENV)/.installed
NPM_STAMP := node_modules/.installed
PYTEST_ARGS ?=

.PHONY: help install dev test unit e2e lint format bench schema clean

help:
	@echo "make dev    - local stack (Azurite, Graph emulator, identity endpoint, function host) ready for webhooks"
	@echo "make test   - lint-free install, Azurite, and the whole pytest suite"
	@echo "make lint   - ruff + mypy"
	@echo "make schema - regenerate docs/event-schema.json from the models"

install: $(PIP_STAMP) $(NPM_STAMP)

$(PIP_STAMP): requirements.txt requirements-dev.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	@touch $@

$(NPM_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

dev: install
	$(PY) -m local.stack

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

unit: install
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
