# Every target is idempotent: run it on a fresh machine or on one that has everything.
VENV   ?= .venv
PY     := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: help setup tools lint test test-unit test-integration demo crds bench clean
help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[dev]'
	touch $@

setup: $(VENV)/.installed  ## virtual environment with the package and dev tools

tools: setup  ## kube-apiserver, etcd, helm (built once from Go modules, cached), prometheus
	$(PY) -m stargate_operator.localcp.binaries control-plane helm
	hack/install-prometheus.sh

crds: setup  ## regenerate the CRD YAML from the models
	$(PY) hack/gen-crds.py

lint: setup  ## ruff, mypy (strict) and the import layers (lint-imports) of the package
	$(VENV)/bin/ruff check operator/src tests hack
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports --no-cache

test: tools lint  ## everything: lint, unit, integration (real API server, Helm, Prometheus)
	$(VENV)/bin/pytest $(PYTEST_ARGS)

test-unit: setup  ## unit tests only (no control plane, no binaries from `make tools`)
	$(VENV)/bin/pytest tests/unit $(PYTEST_ARGS)

test-integration: tools  ## integration tests only (real API server, Helm, Prometheus)
	$(VENV)/bin/pytest tests/integration $(PYTEST_ARGS)

demo: setup  ## the main job (builds kube-apiserver and etcd on first use): control plane, operator, site, live summary
	$(VENV)/bin/stargate-operator demo

bench: tools  ## benchmarks (see README, Performance)
	$(PY) hack/bench.py --nodes 1000

clean:  ## remove the virtual environment (the binary cache under ~/.cache stays)
	rm -rf $(VENV)
