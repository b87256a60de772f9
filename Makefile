# snowtrain developer entry points. Every target installs what it needs on a fresh machine.
#   make demo   - run the example FineTuneJob locally (embedded Snowflake emulator) and query it
#   make test   - lint, type check, then the whole test suite: unit, Snowflake emulator, real
#                 local Kubernetes, e2e

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: help venv venv-local demo test test-fast lint typecheck crds crds-check docs images gpu-wheels

help:
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

# torch is installed first and pinned: 2.13.0 is the CPU wheel on this machine's disk; an
# unpinned torch would pull a multi-GB CUDA build. The stamp files make re-runs free.
$(VENV)/.torch:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	touch $@

$(VENV)/.local: $(VENV)/.torch pyproject.toml
	$(PIP) install -q -e '.[local]'
	touch $@

$(VENV)/.dev: $(VENV)/.torch pyproject.toml
	$(PIP) install -q -e '.[dev]'
	touch $@ $(VENV)/.local

venv-local: $(VENV)/.local ## install what local mode needs
venv: $(VENV)/.dev ## install everything (dev)

# The README's first command: the example FineTuneJob, trained locally against the embedded
# Snowflake emulator, served, and asked for one prediction (rerunning skips the training).
demo: $(VENV)/.local ## run the example FineTuneJob locally and query the served model
	$(VENV)/bin/snowtrain run manifests/examples/finetune.yaml --demo

lint: venv ## ruff check and ruff format --check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# Strict mypy ([tool.mypy] in pyproject.toml). `make typecheck` checks TYPECHECK; `make test`
# checks TEST_TYPECHECK, the same two packages: snowtrain.api and snowtrain.operator.
TYPECHECK := operator/snowtrain/api operator/snowtrain/operator
TEST_TYPECHECK := $(TYPECHECK)

typecheck: venv ## strict mypy over snowtrain.api and snowtrain.operator
	$(VENV)/bin/mypy $(TYPECHECK)

crds: venv ## regenerate the CRDs from the API models (manifests/ and the Helm chart)
	$(PY) -m snowtrain.api.crd manifests/crds
	$(PY) charts/snowtrain/hack/sync_crds.py

crds-check: venv
	$(PY) -m snowtrain.api.crd --check manifests/crds
	$(PY) charts/snowtrain/hack/sync_crds.py --check

test-fast: venv ## unit tests only
	$(VENV)/bin/pytest tests/unit -q

test: venv ## lint, type check, the whole suite (builds and starts the local cluster on first use)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy $(TEST_TYPECHECK)
	@# The cluster's build (cached) before the tests, alone: the tests would only slow it down.
	$(if $(SNOWTRAIN_TEST_KUBECONFIG),,$(PY) -m tests.cluster build)
	$(VENV)/bin/pytest tests -q -n 2 --dist loadgroup

docs: venv ## regenerate the README's CR reference from the API models
	$(PY) -m snowtrain.api.reference --update README.md

# The real single-node Kubernetes for tests (tests/cluster; README.md, "Tests").
.PHONY: cluster-build cluster-up cluster-down
cluster-build: venv ## build and cache Kubernetes v1.20.2 from Debian sources (cold: minutes)
	$(PY) -m tests.cluster build

cluster-up: venv ## start the local cluster with manifests/crds applied (idempotent)
	$(PY) -m tests.cluster up --crds manifests/crds

cluster-down: ## stop the local cluster: no process, mount, cgroup or bridge left behind
	$(PY) -m tests.cluster down

images: venv ## build the operator and trainer images without Docker (cached) and import them
	$(PY) -m tests.images operator trainer --import

# Wheels the device machine lacks (Python 3.12 there, no network): see bench/gpu_check.sh.
# The versions this venv runs (pydantic-core must match pydantic exactly).
GPU_WHEELS = $(shell $(PIP) freeze | grep -i -E '^(pydantic|pydantic.core|annotated.types|typing.inspection)==')
gpu-wheels: venv ## download the wheels bench/gpu_check.sh needs on the GPU machine into .whl/
	rm -rf .whl
	$(PYTHON) -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
	  --implementation cp --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
	  --platform any -d .whl $(GPU_WHEELS)
