# Every target creates and uses .venv itself; CI calls these targets unchanged.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.installed-bench

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	touch $(BENCH_STAMP)

demo: $(STAMP)
	$(BIN)/tierflow demo

test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff format --check hot warm cold tiering api tests
	$(BIN)/ruff check hot warm cold tiering api tests
	$(BIN)/mypy

bench: $(BENCH_STAMP)
	$(BIN)/python -m tests.bench

clean:
	rm -rf $(VENV) tierflow-data .pytest_cache .mypy_cache .ruff_cache
