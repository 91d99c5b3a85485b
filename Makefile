# tfserving-operator: `make help` lists every target.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON_BOOTSTRAP ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# The TF Serving API protos. 2.20.0, the pinned release's own, cannot be
# imported: two of its modules (model_service_pb2, prediction_service_pb2) are
# protoc-3-era code that protobuf's upb runtime refuses ("attribute
# 'has_options' ... is not writable"), and TensorFlow 2.20 needs that runtime
# (protobuf >= 5.28). 2.21.0 regenerated them; its messages are the same on the
# wire (tests/contract/test_wire_compat.py). It declares tensorflow>=2.21, which
# pip would then install over the pinned 2.20: hence --no-deps.
SERVING_API := tensorflow-serving-api==2.21.0
SETUP_STAMP := $(VENV)/.setup-$(shell { cat pyproject.toml; echo '$(SERVING_API)'; } | sha256sum | cut -c1-12)
export KUBECONFIG_SIM := $(CURDIR)/.sim/kubeconfig
PYTEST_ARGS ?=

.PHONY: help
help: ## List every target
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(SETUP_STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON_BOOTSTRAP) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	$(PY) -m pip install --quiet --no-deps '$(SERVING_API)'
	@rm -f $(VENV)/.setup-* && touch $@

.PHONY: setup
setup: $(SETUP_STAMP) ## Create the virtualenv with every dependency (idempotent)

.PHONY: sim-build
sim-build: setup ## Build the pinned control plane from source into ~/.cache (once per machine)
	$(PY) -m localdev.sim build

.PHONY: sim-up
sim-up: setup ## Start the local cluster (admin kubeconfig: .sim/kubeconfig, kubectl+helm: .sim/bin)
	$(PY) -m localdev.sim up

.PHONY: sim-down
sim-down: ## Stop the local cluster and every process it started
	@if [ -x $(PY) ]; then $(PY) -m localdev.sim down; fi

.PHONY: sim-status
sim-status: setup ## Show which local-cluster components are running
	$(PY) -m localdev.sim status

.PHONY: run
run: sim-up ## Run the operator in the foreground against the local cluster
	$(PY) -m localdev.sim install-crds
	KUBECONFIG=$(KUBECONFIG_SIM) $(VENV)/bin/tfserving-operator

.PHONY: lint
lint: setup ## ruff (lint + format check), mypy --strict on the operator and the tests, import contracts
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	PYTHONPATH=$(CURDIR)/operator/src$${PYTHONPATH:+:$$PYTHONPATH} $(VENV)/bin/lint-imports

.PHONY: fmt
fmt: setup ## Format and auto-fix with ruff
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

.PHONY: test
test: setup sim-build lint ## Every test: lint, unit, wire, training, and the local-cluster suites
	$(PY) -m pytest --durations=25 $(PYTEST_ARGS)

.PHONY: test-unit
test-unit: setup ## Only the tests that need no cluster
	$(PY) -m pytest -m "not cluster" $(PYTEST_ARGS)

.PHONY: mutation
mutation: setup ## Mutation score per operator module (mutmut, unit tests; ~30-60 min on 2 cores): .mutation/report.md
	$(PY) -m localdev.mutation $(MUTATION_MODULES)

.PHONY: chaos
chaos: setup sim-build ## Long fault tests (operator kills, API server/etcd restarts, replicas, broken servers); writes docs/reliability.md
	TFSO_RELIABILITY_REPORT=$(CURDIR)/docs/reliability.md $(PY) -m pytest -m chaos tests/reliability --durations=15 $(PYTEST_ARGS)

.PHONY: soak
SOAK_MINUTES ?= 10
soak: setup sim-build ## Random creates/rollouts/refusals/deletes/operator kills/API server restarts for SOAK_MINUTES, invariants after every step; writes docs/soak.md
	SOAK_MINUTES=$(SOAK_MINUTES) SOAK_REPORT=$(CURDIR)/docs/soak.md $(PY) -m pytest -m soak -s tests/reliability/test_soak.py

.PHONY: demo
demo: setup sim-build ## The whole mission on the local cluster: train, serve, roll v1->v2, refuse broken v3
	$(PY) -m localdev.demo

.PHONY: demo-s3
demo-s3: setup sim-build ## MNIST served from the local S3 bucket through the model puller; a missing v3 refused
	$(PY) -m localdev.demo_s3

.PHONY: demo-canary
demo-canary: setup sim-build ## Canary rollouts judged by TF Serving's own metrics: a v2 that rejects clients' inputs refused, a good v3 promoted step by step
	$(PY) -m localdev.demo_canary

.PHONY: bench
bench: setup sim-build ## Benchmarks: print figures (reconcile throughput, idle writes, memory, gate latency)
	$(PY) -m benchmarks

.PHONY: docs
docs: setup ## Regenerate docs/reference.md from the CRD
	PYTHONPATH=$(CURDIR)/operator/src:$(CURDIR) $(PY) -m docs.generate_reference

# helm: the pinned build (`make sim-build`), else the one on PATH. Not .sim/bin's
# link: that is whatever set the last `make sim-up` used.
HELM ?= $(shell $(PY) -c "from localdev.sim import toolchain as t; p = t.tool_path(t.tool('helm')); print(p if p.is_file() else 'helm')" 2>/dev/null || echo helm)
CHART := charts/tfserving-operator
INSTALL_NAMESPACE := tfserving-operator-system

.PHONY: manifests
manifests: ## Regenerate spec.serverArgs (release.py) and the embedded Kubernetes types (localdev/kube_schemas.py), copy crds/ into the chart, render manifests/install.yaml
	PYTHONPATH=operator/src $(PY) -m tfserving_operator.release --write-crd crds/servedmodels.serving.tfoperator.dev.yaml
	PYTHONPATH=$(CURDIR)/operator/src:$(CURDIR) $(PY) -m localdev.kube_schemas --write-crd crds/servedmodels.serving.tfoperator.dev.yaml
	cp crds/*.yaml $(CHART)/crds/
	@{ \
	  echo "# Generated by \`make manifests\` from $(CHART) (helm template, default values)."; \
	  echo "# Do not edit: change the chart, then run \`make manifests\`. Install with:"; \
	  echo "#   kubectl apply --server-side -f manifests/install.yaml"; \
	  echo "---"; \
	  echo "apiVersion: v1"; \
	  echo "kind: Namespace"; \
	  echo "metadata:"; \
	  echo "  name: $(INSTALL_NAMESPACE)"; \
	  echo "  labels:"; \
	  echo "    pod-security.kubernetes.io/enforce: restricted"; \
	  $(HELM) template tfserving-operator $(CHART) --namespace $(INSTALL_NAMESPACE) \
	    --include-crds; \
	} > manifests/install.yaml.tmp
	mv manifests/install.yaml.tmp manifests/install.yaml

.PHONY: image
image: setup ## Build the operator image with podman, pulling nothing (Debian-built base); writes dist/tfserving-operator-<version>.oci.tar
	PYTHONPATH=$(CURDIR) $(PY) -m localdev.image.build

.PHONY: image-wheels
image-wheels: setup ## Only the wheels the image installs (dist/image/), e.g. before `docker build -f operator/Dockerfile .`
	PYTHONPATH=$(CURDIR) $(PY) -c 'from localdev.image import build; build.wheels()'

.PHONY: image-lock
image-lock: setup ## Re-pin operator/requirements-image.txt to the versions installed in the venv
	PYTHONPATH=$(CURDIR) $(PY) -m localdev.image.lock

.PHONY: clean
clean: sim-down ## Stop the cluster and remove local state (.sim, caches; keeps the built binaries)
	rm -rf .sim .pytest_cache .mypy_cache .ruff_cache
