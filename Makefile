# Every target creates and uses .venv itself; CI calls these targets unchanged.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.installed-bench
LINKS  := $(VENV)/.linked
# The folders install as one namespace, `tierflow` (pyproject's package-dir).
# A strict editable install links each module into build/, where both imports
# and mypy find it; a module added later needs relinking, hence the sources
# as prerequisites (mypy finds a package-dir package only through such a link tree).
SOURCES := $(shell find hot warm cold tiering api -name '*.py' 2>/dev/null)
INSTALL := $(BIN)/python -m pip install --quiet -e . --config-settings editable_mode=strict --no-build-isolation

.PHONY: demo test lint bench bench-quick stress clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip 'setuptools>=77' wheel
	$(BIN)/python -m pip install --quiet -e '.[dev]' --config-settings editable_mode=strict
	touch $(STAMP)

$(LINKS): $(STAMP) $(SOURCES)
	$(INSTALL) --no-deps 2>/dev/null || $(INSTALL) --no-deps
	touch $(LINKS)

$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]' --config-settings editable_mode=strict
	touch $(BENCH_STAMP)

demo: $(LINKS)
	$(BIN)/tierflow demo

# Three pytest workers (pytest-xdist) on the two cores the suite is sized for: a test often
# waits (fsync, a subprocess, a server), and a third worker fills those waits. Measured on
# a fresh clone, 2 cores: 378.8 s with 2 workers (154 % CPU), 311.0 s with 3 (177 %),
# 310.9 s with 4. worksteal keeps every worker busy to the end when a few tests are long.
# Every test isolates itself (own tmp dir, own moto server per worker).
# Bytecode is written even where the environment says not to (PYTHONDONTWRITEBYTECODE):
# without it each worker re-rewrites every test module's asserts and each fresh interpreter
# recompiles tierflow, about a tenth of the suite's CPU.
test: $(LINKS)
	env -u PYTHONDONTWRITEBYTECODE $(BIN)/python -m pytest -n 3 --dist worksteal

lint: $(LINKS)
	$(BIN)/ruff format --check hot warm cold tiering api tests
	$(BIN)/ruff check hot warm cold tiering api tests
	$(BIN)/mypy

# Figures also go to bench-results/ (git-ignored): bench-<UTC time>.json and latest.json.
bench: $(BENCH_STAMP) $(LINKS)
	$(BIN)/python -m tests.bench

# Smoke run for CI: every phase on both sides at tiny sizes, every workflow checked
# complete; asserts nothing about speed.
bench-quick: $(BENCH_STAMP) $(LINKS)
	$(BIN)/python -m tests.bench --quick

# The timing-sensitive tests 20 times while another process keeps one core busy.
stress: $(LINKS)
	$(BIN)/python -m tests.stress 20

clean:
	rm -rf $(VENV) build tierflow-data .pytest_cache .mypy_cache .ruff_cache
