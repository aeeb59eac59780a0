# The README's commands. `make test` and `make demo` each do their whole set-up on a fresh Debian
# machine as root: Debian packages, a virtual environment with the project, the control plane built
# from the Go module proxy once (cached under ~/.cache/uwm-upgrade) or reused.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export PATH := $(abspath $(BIN)):/usr/local/go/bin:$(PATH)

.PHONY: setup system-packages venv assets lint test test-fast test-slow demo testbed-up testbed-down clean chart-sync

setup: system-packages venv

system-packages:
	@scripts/install-system-packages.sh

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "[setup] installing the project and its dev tools into $(VENV)"
	@$(BIN)/python -m pip install -q --disable-pip-version-check -U pip
	@$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[dev]'
	@touch $@

assets: venv
	@$(BIN)/uwm-upgrade testbed build

lint: venv
	$(BIN)/ruff check operator simulators tests
	$(BIN)/mypy
	$(BIN)/lint-imports

test: setup assets lint
	$(BIN)/python -m pytest -q

test-fast: venv
	$(BIN)/python -m pytest -q -m "not testbed and not integration and not e2e"

test-slow: setup assets
	$(BIN)/python -m pytest -q -m "testbed or integration or e2e"

demo: setup assets
	$(BIN)/uwm-upgrade demo

chart-sync:
	cp crds/*.yaml charts/uwm-upgrade-operator/crds/

testbed-up: setup assets
	@$(BIN)/uwm-upgrade testbed up

testbed-down: venv
	@$(BIN)/uwm-upgrade testbed down

clean: testbed-down
	rm -rf .testbed
