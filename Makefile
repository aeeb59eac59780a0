# The README's commands. `make test` and `make demo` each do their whole set-up on a fresh Debian
# machine as root: Debian packages, a virtual environment with the project (the operator, the
# simulators and the dev tools `uwm-dev`, each its own distribution, installed editable), the control
# plane built from the Go module proxy once (cached under ~/.cache/uwm-upgrade) or reused.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export PATH := $(abspath $(BIN)):/usr/local/go/bin:$(PATH)

.PHONY: setup system-packages venv assets tools lint test test-fast test-slow campaign demo testbed-up testbed-down clean chart-sync

setup: system-packages venv

system-packages:
	@scripts/install-system-packages.sh

venv: $(VENV)/.installed

PROJECTS := operator/pyproject.toml simulators/pyproject.toml devtools/pyproject.toml

$(VENV)/.installed: pyproject.toml $(PROJECTS)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "[setup] installing the operator, the simulators and the dev tools into $(VENV)"
	@$(BIN)/python -m pip install -q --disable-pip-version-check -U pip
	@# The operator first: in a .venv of the days of one distribution for all, this replaces that one, whose
	@# uninstall would otherwise delete the `uwm-sim` command installed in the same run.
	@$(BIN)/python -m pip install -q --disable-pip-version-check -e ./operator
	@$(BIN)/python -m pip install -q --disable-pip-version-check -e ./simulators -e './devtools[dev]'
	@touch $@

assets: venv
	@$(BIN)/uwm-dev testbed build

# The Go tools the tests judge the project with (kstatus, kubeconform), built once into the cache.
tools: venv
	@$(BIN)/uwm-dev tools build

lint: venv
	$(BIN)/ruff check operator simulators devtools tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

# The slow layers wait more than they compute (servers settle, installs run): they run side by side in
# TEST_WORKERS processes (pytest-xdist), sharing one test bed, each test with its own namespace, databases,
# fleet and ports.
TEST_WORKERS ?= 3

test: setup assets tools lint
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadgroup

test-fast: venv
	$(BIN)/python -m pytest -q -m "not testbed and not integration and not e2e"

test-slow: setup assets tools
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadgroup -m "testbed or integration or e2e"

# The seeded failure campaign (the referee): RUNS runs from SEED, each on the real processes, disrupted,
# audited from the simulators' journal; a handful of them also run in `make test`.
RUNS ?= 50
SEED ?= 1

campaign: setup assets
	$(BIN)/uwm-dev campaign --runs $(RUNS) --seed $(SEED)

demo: setup assets
	$(BIN)/uwm-dev demo

chart-sync:
	cp crds/*.yaml charts/uwm-upgrade-operator/crds/

testbed-up: setup assets
	@$(BIN)/uwm-dev testbed up

testbed-down: venv
	@$(BIN)/uwm-dev testbed down

clean: testbed-down
	rm -rf .testbed
