# pywasmd: `make help` lists the targets.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PKG := pywasmd

.PHONY: help install shim demo test unit engines310 integration check fix proto check-proto bench containerd21 clean

help: ## list targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

install: ## install system packages, the venv, the package, and the shim on PATH (compiled front end)
	scripts/install.sh

shim: ## rebuild and reinstall only the shim (the compiled front end and its Python launcher)
	$(PY) -m pywasmd.shim.install --bindir /usr/local/bin

containerd21: ## unpack containerd 2.1 (Debian sid) into .cache/containerd-2.1
	scripts/fetch-containerd21.sh

demo: ## run a Wasm container through a real containerd (starts a private one if none runs)
	scripts/demo.sh

test: unit engines310 integration ## every test: unit, engines on Python 3.10, integration (containerd 1.6 and 2.1)

unit: ## fast tests, no containerd
	$(PY) -m pytest -q tests

engines310: ## the engine conformance suite under Python 3.10, wasmtime and wasmer
	scripts/test-engines310.sh

integration: ## real containerd 1.6.20 and 2.1.9, real runc, real ctr
	$(PY) -m pytest -q -p no:cacheprovider integration

check: check-proto ## ruff, mypy (strict), generated-code drift
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

fix: ## rewrite what ruff can fix
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

proto: ## regenerate pywasmd/api from proto/
	scripts/gen-proto.sh

check-proto: ## fail when pywasmd/api differs from what proto/ generates
	scripts/gen-proto.sh --check

bench: ## pywasm vs runc on the same containerd; writes BENCHMARKS.md
	$(PY) -m integration.bench
