# Tollgate: `make run` serves the portal, API and proxy on http://127.0.0.1:8000;
# `make test` runs every test. Both set themselves up first (idempotent).
SHELL := /bin/bash
.DEFAULT_GOAL := help

UV_VERSION := 0.13.8
TOOLS := .tools
UV := $(TOOLS)/bin/uv
VENV := .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000
WORKERS ?= 1
PYTEST_ARGS ?=

export UV_PYTHON_DOWNLOADS := never
export UV_PROJECT_ENVIRONMENT := $(VENV)

.PHONY: help setup run test lint bench bench-usage bench-pages clean

help:
	@echo "make run    - set up, migrate, seed a demo tenant and serve on http://$(HOST):$(PORT)"
	@echo "make test   - set up and run the whole test suite"
	@echo "make lint   - ruff, mypy and the import rules between apps (lint-imports)"
	@echo "make bench  - proxy benchmark against the mock upstream (see README)"
	@echo "make bench-usage - usage reports, rollups and CSV export at 1M traces, A/B against raw traces"
	@echo "make bench-pages - the dashboard's pages on bench-usage's data (server time, SQL queries)"

$(UV):
	@python_bin=$$(scripts/find-python) && "$$python_bin" -m venv $(TOOLS) && \
	  $(TOOLS)/bin/pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"

# The virtual environment follows the lock file exactly (uv sync --frozen), its packages
# compiled to bytecode once: a server worker then starts in ~1 s of CPU instead of ~3 s,
# even where PYTHONDONTWRITEBYTECODE keeps Python from caching what it compiles.
$(VENV)/.synced: $(UV) uv.lock pyproject.toml
	@python_bin=$$(scripts/find-python) && $(UV) sync --frozen --quiet --compile-bytecode --python "$$python_bin"
	@touch $@

setup: $(VENV)/.synced

run: setup
	$(PY) manage.py migrate --noinput -v0
	$(PY) manage.py collectstatic --noinput -v0
	$(PY) manage.py seed_demo --url http://$(HOST):$(PORT)
	$(PY) -m config.serve --host $(HOST) --port $(PORT) --workers $(WORKERS)

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy .
	$(VENV)/bin/lint-imports

# Loopback only: a mock upstream, Tollgate with 2 workers on PostgreSQL + Redis, the load
# generator; see bench/README.md. BENCH_ARGS="--runs 1" for a quick look.
BENCH_ARGS ?=
bench: setup
	ulimit -n 65536 2>/dev/null || ulimit -n $$(ulimit -Hn); $(PY) bench/run.py $(BENCH_ARGS)

# A scratch database of a million traces; the reports measured on this checkout and on the
# code before rollups (BENCH_USAGE_ARGS="--traces 100000 --other-traces 10000" for a quick look).
BENCH_USAGE_ARGS ?=
bench-usage: setup
	$(PY) bench/usage.py $(BENCH_USAGE_ARGS)

# The dashboard's pages on bench-usage's data (reused when it is there, else seeded).
BENCH_PAGES_ARGS ?=
bench-pages: setup
	$(PY) bench/pages.py $(BENCH_PAGES_ARGS)

clean:
	rm -rf $(VENV) $(TOOLS) var .pytest_cache .mypy_cache .ruff_cache .import_linter_cache
