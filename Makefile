# pyro — developer entry points. `make demo` and `make test` work on a fresh Debian 12 machine.
# Debian's CPython when there is one: its static, optimised build starts pyro ~20% faster
# than a shared-library build (bench/run.py, docs/performance.md).
PYTHON ?= $(shell test -x /usr/bin/python3 && echo /usr/bin/python3 || echo python3)
VENV   := .venv
BIN    := $(VENV)/bin
PYRO   := $(BIN)/pyro
STAMP  := $(VENV)/.installed

.PHONY: setup host-deps test check lint typecheck schemas bench demo environments dist-check soak clean

setup: host-deps $(STAMP)

host-deps:
	@bash scripts/host-deps.sh

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,ray]'
	$(BIN)/python -m compileall -q pyro >/dev/null
	touch $@

# Everything the real-guest tests boot: the default environment (pull, else build).
environments: setup
	$(PYRO) env pull debian:12

# The build tests reuse the kernel `environments` just built (a cache hit, not a second build).
test: setup environments
	PYRO_TEST_BUILD_CACHE="$$($(BIN)/python -c 'from pyro.paths import cache_dir; print(cache_dir())')" \
		$(BIN)/pytest

lint: setup
	$(BIN)/ruff check pyro tests
	$(BIN)/ruff format --check pyro tests

typecheck: setup
	$(BIN)/mypy

check: lint typecheck test

schemas: setup
	$(BIN)/python -m pyro.spec.schema --write

# Bytecode compiled first, as pip does for an installed pyro (an editable checkout under
# PYTHONDONTWRITEBYTECODE would otherwise compile every module on every run).
bench: setup environments
	$(BIN)/python -m compileall -q pyro >/dev/null
	$(BIN)/python bench/run.py --output bench/results.json

# Build sdist + wheel, check them, smoke-test the wheel in a fresh venv outside the checkout.
dist-check: setup
	$(BIN)/python scripts/dist_check.py

# Fault injection + fuzzing on real guests (~5-8 min, root for the tmpfs disk-full case):
# writes soak/results.json and prints a table; exit 1 on any leak, traceback, unrepaired cache,
# or cluster case that lost a run or left a VM.
soak: setup environments
	$(BIN)/python soak/run.py --output soak/results.json

demo: setup environments
	$(PYRO) apply examples/hello.yaml

clean:
	rm -rf $(VENV) build dist *.egg-info .mypy_cache .ruff_cache .pytest_cache
