# tfserving-operator: `make help` lists every target.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON_BOOTSTRAP ?= python3
VENV := .venv
PY := $(VENV)/bin/python
SETUP_STAMP := $(VENV)/.setup-$(shell cat pyproject.toml | sha256sum | cut -c1-12)
export KUBECONFIG_SIM := $(CURDIR)/.sim/kubeconfig
PYTEST_ARGS ?=

.PHONY: help
help: ## List every target
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(SETUP_STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON_BOOTSTRAP) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@rm -f $(VENV)/.setup-* && touch $@

.PHONY: setup
setup: $(SETUP_STAMP) ## Create the virtualenv with every dependency (idempotent)

.PHONY: sim-build
sim-build: setup ## Build the pinned control plane from source into ~/.cache (once per machine)
	$(PY) -m tests.sim build

.PHONY: sim-up
sim-up: setup ## Start the local cluster (admin kubeconfig: .sim/kubeconfig, kubectl+helm: .sim/bin)
	$(PY) -m tests.sim up

.PHONY: sim-down
sim-down: ## Stop the local cluster and every process it started
	@if [ -x $(PY) ]; then $(PY) -m tests.sim down; fi

.PHONY: sim-status
sim-status: setup ## Show which local-cluster components are running
	$(PY) -m tests.sim status

.PHONY: run
run: sim-up ## Run the operator in the foreground against the local cluster
	$(PY) -m tests.sim install-crds
	KUBECONFIG=$(KUBECONFIG_SIM) $(VENV)/bin/tfserving-operator

.PHONY: lint
lint: setup ## ruff (lint + format check) and mypy --strict on the operator
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

.PHONY: fmt
fmt: setup ## Format and auto-fix with ruff
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

.PHONY: test
test: setup sim-build lint ## Every test: lint, unit, wire, training, and the local-cluster suites
	$(PY) -m pytest $(PYTEST_ARGS)

.PHONY: test-unit
test-unit: setup ## Only the tests that need no cluster
	$(PY) -m pytest -m "not cluster" $(PYTEST_ARGS)

.PHONY: demo
demo: setup sim-build ## The whole mission on the local cluster: train, serve, roll v1->v2, refuse broken v3
	$(PY) -m tests.demo

.PHONY: bench
bench: setup sim-build ## Benchmarks: print figures (reconcile throughput, idle writes, memory, gate latency)
	$(PY) -m benchmarks

.PHONY: clean
clean: sim-down ## Stop the cluster and remove local state (.sim, caches; keeps the built binaries)
	rm -rf .sim .pytest_cache .mypy_cache .ruff_cache
