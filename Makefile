# Everyday commands. `make help` lists them.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
N ?= 10000
BATCH ?= 5000
FAILURE_RATE ?= 0.05
BACKEND ?= postgres

.DEFAULT_GOAL := help
.PHONY: help demo test test-fast lint fmt api worker beat migrate bench fuzz clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

$(BIN)/python:
	@$(PYTHON) -m venv $(VENV) 2>/dev/null || { \
	  echo "python3-venv is missing; installing it"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv; \
	  $(PYTHON) -m venv $(VENV); }
	@$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e .
	@touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $(VENV)/.installed $@

demo: $(VENV)/.installed ## Run the end-to-end demo on the embedded default (no server needed)
	$(BIN)/g2p-bridge demo

test: $(VENV)/.installed-dev ## Run the whole test suite (starts PostgreSQL/Redis if needed)
	./scripts/ensure-services.sh
	$(BIN)/python -m pytest -q

test-fast: $(VENV)/.installed-dev ## The suite without the multi-process tests
	$(BIN)/python -m pytest -q -m "not slow"

lint: $(VENV)/.installed-dev ## ruff and mypy
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests
	$(BIN)/mypy

fmt: $(VENV)/.installed-dev ## Format the code
	$(BIN)/ruff format src tests
	$(BIN)/ruff check --fix src tests

api: $(VENV)/.installed ## Serve the bridge API (embedded default: runs the pipeline too)
	$(BIN)/g2p-bridge api

worker: $(VENV)/.installed ## Run a Celery worker (needs G2P_BRIDGE_BROKER_URL)
	$(BIN)/g2p-bridge worker

beat: $(VENV)/.installed ## Run the beat producers (needs G2P_BRIDGE_BROKER_URL)
	$(BIN)/g2p-bridge beat

migrate: $(VENV)/.installed ## Upgrade the database schema
	$(BIN)/g2p-bridge migrate

bench: $(VENV)/.installed-dev ## End-to-end benchmark: make bench N=10000 BATCH=5000 BACKEND=postgres
	./scripts/ensure-services.sh
	$(BIN)/python -m bench.run --n $(N) --batch $(BATCH) --failure-rate $(FAILURE_RATE) --backend $(BACKEND)

fuzz: $(VENV)/.installed-dev ## Long fuzz runs: the API (schemathesis) and the MT940 parser (hypothesis)
	./scripts/ensure-services.sh
	G2P_FUZZ_EXAMPLES=300 $(BIN)/python -m pytest -q tests/bridge/test_fuzz_api.py
	G2P_FUZZ_SCALE=100 $(BIN)/python -m pytest -q tests/core/test_mt940.py -k "random or mutation or hypothesis"

clean: ## Remove the virtualenv, caches and demo files
	rm -rf $(VENV) .g2p-demo .pytest_cache .mypy_cache .ruff_cache .hypothesis
