# Every target is idempotent: run it on a fresh machine or on one that has everything.
VENV   ?= .venv
export NO_MKDOCS_2_WARNING := 1
PY     := $(VENV)/bin/python
PYTEST_ARGS ?=
# E2E=0 opts out of the tests on the real node (tests/e2e/test_node.py), on a machine that cannot
# host one (not root, no cgroups); they fail with what is missing otherwise. CI never opts out.
E2E ?= 1

.PHONY: help setup tools node-tools lint test test-unit test-integration test-e2e demo crds docs docs-serve bench clean
help:  ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[dev]'
	touch $@

setup: $(VENV)/.installed  ## virtual environment with the package and dev tools

tools: setup  ## kube-apiserver, etcd, helm (built once from Go modules, cached), prometheus; the node's (E2E=1)
	$(PY) -m stargate_operator.localcp.binaries control-plane helm
	hack/install-prometheus.sh
	@if [ "$(E2E)" != 0 ]; then $(MAKE) --no-print-directory node-tools; fi

node-tools: setup  ## the real node's parts: Debian packages, kubelet, controller manager, scheduler (cached)
	hack/install-node-deps.sh
	$(PY) -m stargate_operator.localcp.binaries node

crds: setup  ## regenerate the CRD YAML from the models, and the chart's kind lists from the registry
	$(PY) hack/gen-crds.py

lint: setup  ## ruff, mypy (strict) and the import layers (lint-imports) of the package
	$(VENV)/bin/ruff check operator/src tests hack
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports --no-cache

test: tools lint  ## everything: lint, the docs site (strict), unit, integration (real API server, Helm, Prometheus), e2e on a real node (E2E=0: without)
	$(VENV)/bin/mkdocs build --strict --quiet --site-dir build/site
	STARGATE_E2E=$(E2E) $(VENV)/bin/pytest $(PYTEST_ARGS)

test-e2e: tools  ## the chart on a real node only (kubelet, containerd, images built here)
	$(VENV)/bin/pytest -m node tests/e2e $(PYTEST_ARGS)

test-unit: setup  ## unit tests only (no control plane, no binaries from `make tools`)
	$(VENV)/bin/pytest tests/unit $(PYTEST_ARGS)

test-integration: tools  ## integration tests only (real API server, Helm, Prometheus)
	$(VENV)/bin/pytest tests/integration $(PYTEST_ARGS)

demo: setup  ## the main job (builds kube-apiserver and etcd on first use): control plane, operator, site, live summary
	$(VENV)/bin/stargate-operator demo

docs: setup  ## regenerate the reference pages, build the docs site under build/site (strict: a broken link or a page missing from the nav fails)
	$(PY) hack/gen-docs.py
	$(VENV)/bin/mkdocs build --strict --site-dir build/site

docs-serve: setup  ## serve the docs on http://127.0.0.1:8000 while editing them
	$(VENV)/bin/mkdocs serve --dev-addr 127.0.0.1:8000

bench: tools  ## hack/bench.py at 1,000 nodes (the other benchmarks: hack/README.md, docs/performance.md)
	$(PY) hack/bench.py --nodes 1000

clean:  ## remove the virtual environment (the binary cache under ~/.cache stays)
	rm -rf $(VENV)
