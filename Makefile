# market_pipeline developer entry points. `make` alone only prints this help.
#
# Needs only Python >= 3.11 (with the venv module) and GNU make; everything else is
# installed into .venv by `make install`, which every other target depends on.

PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed
BYTECODE_STAMP := $(VENV)/.compiled

# Dagster keeps run history, event logs and schedule state in DAGSTER_HOME. If it is unset,
# every CLI/webserver process uses a throwaway temp instance and runs silently vanish, so it
# is pinned here to the project's instance directory (which holds dagster.yaml) and exported
# to every recipe. Override only on the command line: `make test DAGSTER_HOME=/tmp/x`.
export DAGSTER_HOME := $(CURDIR)/dagster_home
# Where the lake and the DuckDB warehouse live. An environment variable takes precedence over
# `.env` in the pipeline settings, so this exported default also wins over a PIPELINE_DATA_DIR
# in .env: to move the data, set it in the environment or on the make command line.
export PIPELINE_DATA_DIR ?= $(CURDIR)/data

# `make ui` binds the UI where the settings say (ui.host, ui.port: PIPELINE_UI__HOST and
# PIPELINE_UI__PORT, .env, config.yaml; default 127.0.0.1:3000). WEBSERVER_HOST and
# WEBSERVER_PORT on the command line still work: they set those variables for the run.
ifdef WEBSERVER_HOST
export PIPELINE_UI__HOST := $(WEBSERVER_HOST)
endif
ifdef WEBSERVER_PORT
export PIPELINE_UI__PORT := $(WEBSERVER_PORT)
endif

.DEFAULT_GOAL := help

.PHONY: help
help: ## List the targets
	@echo "market_pipeline - make targets (DAGSTER_HOME=$(DAGSTER_HOME))"
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | \
		awk 'BEGIN {FS = ":.*## "}; {printf "  %-22s %s\n", $$1, $$2}'

.PHONY: install
install: $(STAMP) $(BYTECODE_STAMP) ## Create .venv and install the project with dev and bench extras

# Re-runs only when pyproject.toml changes (or the stamp is missing). The venv is created
# only if it does not exist yet, so an existing .venv is upgraded in place, never replaced.
# pip byte-compiles what it installs on one core (62 of the install's 122 s here, 2 cores), so
# it installs without, and the bytecode target compiles the same files on every core (35 s).
$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "market_pipeline needs Python >= 3.11, $(PYTHON) is " + sys.version.split()[0])'
	@if [ ! -x "$(VENV)/bin/python" ]; then \
		echo "creating $(VENV) with $(PYTHON)"; \
		$(PYTHON) -m venv "$(VENV)" || { \
			echo "error: '$(PYTHON) -m venv' failed (on Debian/Ubuntu: apt-get install python3-venv)" >&2; \
			rm -rf "$(VENV)"; exit 1; }; \
	fi
	$(VENV)/bin/python -m pip install --upgrade pip
	$(VENV)/bin/python -m pip install --no-compile -e '.[dev,bench]'
	@touch "$@"

# Later processes start from bytecode, also where they may not write it (a service user's venv
# owned by root). A target of its own so that `make test` runs it beside the lint and the kernels,
# there in one process (COMPILE_JOBS=1): on every core it slowed the kernels' one-core compile
# (set-up 194 s on a fresh clone, 2 cores, pytest starting 119 s after the install).
COMPILE_JOBS ?= 0
.PHONY: bytecode
bytecode: $(BYTECODE_STAMP)
$(BYTECODE_STAMP): $(STAMP)
	$(VENV)/bin/python -m compileall -q -j $(COMPILE_JOBS) $(VENV)/lib
	@touch "$@"

.PHONY: demo
demo: install ## Run the end-to-end demo on synthetic data
	$(VENV)/bin/market-pipeline demo

.PHONY: lint
lint: $(STAMP) ## Layer contracts (import-linter), ruff lint and ruff format check
	$(VENV)/bin/lint-imports
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# One pytest worker per core plus one (pytest-xdist's public options): the suite waits on the
# subprocesses, servers and daemons it starts, and with one worker per core the 2-core box was busy
# 119% of 200% (a whole run under /usr/bin/time); the extra worker fills those waits. --dist loadfile
# hands each worker whole test files (module fixtures are built once), --no-loadscope-reorder in
# collection order, which conftest.py makes the files with the most expensive tests first (by their
# markers: browser, webserver, daemon, graph, slow). A session fixture is built once per run across
# the workers under a file lock (support/research_lake.py). PYTEST_WORKERS=0 runs the suite in one process.
# Two extra workers measured slower on 2 cores (fresh-clone pytest 1130 s against 1086 s).
PYTEST_WORKERS ?= $(shell echo $$(( $$(nproc 2>/dev/null || echo 1) + 1 )))
PYTEST_PARALLEL := $(if $(filter 0,$(PYTEST_WORKERS)),,-n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder)
# Every process of the suite (pytest workers, each `market-pipeline` and Dagster process a test
# starts) imports the project's modules. With PYTHONDONTWRITEBYTECODE set, as some CI images and
# sandboxes do, none of them writes the bytecode it compiles, so each compiles every module again:
# ~12% of a test file's CPU (test_health.py: 38.3 -> 33.6 CPU s). The suite writes the git-ignored
# __pycache__ directories once and every later process reads them.
PYTEST := env -u PYTHONDONTWRITEBYTECODE $(VENV)/bin/python -m pytest

# numba compiles a kernel on its first call in a process that finds no machine code for it in the
# on-disk cache (market_pipeline/kernel_cache.py): about 55 CPU-s for the whole graph's kernels.
# Every process that starts before one of them has written the cache compiles them all again: on a
# fresh clone the suite's first graph runs, daemons' runs and workers did so side by side (pytest
# 1038 s with an empty cache, 868 s with a filled one, 2 cores). `make kernels` fills the cache
# once, with one tiny synthetic day through the whole graph in a throwaway directory (no setting
# of the environment, .env or the project's data dir reaches it); `make test` runs it beside lint.
# A vendor snapshot and a book row a minute (the tests' cadence): the same 39 kernels as at the
# default 100 ms, without writing 864,000 snapshots and book rows that nothing reads (82 s instead
# of 114 s, one core, empty cache). Only full 100 ms batches add one signature, book_shape's
# kernel over C-contiguous levels: about 1.3 s to compile on first use (measured alone).
.PHONY: kernels
kernels: $(STAMP) ## Compile the numba kernels into their on-disk cache: one tiny demo day in a temporary directory
	@tmp=$$(mktemp -d "$${TMPDIR:-/tmp}/market_pipeline_kernels.XXXXXX") && cd "$$tmp" && \
	printf 'telemetry:\n  enabled: false\n' > dagster.yaml && \
	env $$(env | sed -n 's/^\(PIPELINE_[^=]*\)=.*/-u \1/p') -u PYTHONDONTWRITEBYTECODE DAGSTER_HOME="$$tmp" \
		PIPELINE_DATA_DIR="$$tmp/data" PIPELINE_SYNTHETIC__SCALE=0.002 PIPELINE_WORKERS=1 \
		PIPELINE_SYNTHETIC__SNAPSHOT_INTERVAL_MS=60000 PIPELINE_BOOK__SAMPLE_INTERVAL_MS=60000 \
		"$(CURDIR)/$(VENV)/bin/market-pipeline" demo --days 1 --no-progress > kernels.log 2>&1; \
	status=$$?; [ $$status -eq 0 ] || { cat kernels.log; echo "make kernels: the demo day failed" >&2; }; \
	cd / && rm -rf "$$tmp"; exit $$status

.PHONY: test
test: $(STAMP) ## Lint, fill the kernel cache and byte-compile side by side, then run the whole test suite (testpaths: pyproject.toml)
	@$(MAKE) --no-print-directory -j2 kernels lint bytecode COMPILE_JOBS=1
	$(PYTEST) -q --durations=30 $(PYTEST_PARALLEL) $(PYTEST_ARGS)

.PHONY: test-quick
test-quick: install ## The fast subset: every test not marked slow (nor graph, daemon, webserver, browser)
	$(PYTEST) -q -m "not slow" $(PYTEST_PARALLEL) $(PYTEST_ARGS)

# One code server serves both dagster-daemon and the webserver (cli/ui.py says why: no code server
# restarted by the daemon every minute, no heartbeat warnings); Ctrl-C stops all three.
.PHONY: ui
ui: install ## Run one code server, dagster-daemon and the webserver (PIPELINE_UI__HOST:PORT, default 127.0.0.1:3000)
	@mkdir -p "$(DAGSTER_HOME)"
	@echo "DAGSTER_HOME=$(DAGSTER_HOME)"
	$(VENV)/bin/market-pipeline ui

# The benchmark's generated day (~700 MB, cached) stays apart from the project's data: it goes
# to data/bench unless PIPELINE_DATA_DIR is given in the environment or on the command line.
BENCH_DATA_DIR := $(if $(filter environment command,$(origin PIPELINE_DATA_DIR)),$(PIPELINE_DATA_DIR),$(CURDIR)/data/bench)
BENCH_STAMP := $(VENV)/.bench-installed
BENCH_ARGS ?=

# The vendor's rebuilder it compares against (lakeapi, the `bench` extra); installed once, and
# again only when pyproject.toml changes.
$(BENCH_STAMP): pyproject.toml | $(STAMP)
	$(VENV)/bin/python -m pip install -e '.[bench]'
	@touch "$@"

.PHONY: bench
bench: install $(BENCH_STAMP) ## Benchmark the whole graph and the book rebuild on a realistic day (e.g. BENCH_ARGS="--scale 0.05", "--ranges", "--vendors")
	@mkdir -p "$(BENCH_DATA_DIR)/dagster_home"
	DAGSTER_HOME="$(BENCH_DATA_DIR)/dagster_home" PIPELINE_DATA_DIR="$(BENCH_DATA_DIR)" \
		$(VENV)/bin/python -m market_pipeline.bench $(BENCH_ARGS)

.PHONY: definitions-validate
definitions-validate: install ## Load the Dagster definitions and report errors
	$(VENV)/bin/dagster definitions validate -w workspace.yaml

.PHONY: clean
clean: ## Delete ./data and the local Dagster instance state (keeps dagster_home/dagster.yaml)
	rm -rf data
	@if [ -d dagster_home ]; then \
		find dagster_home -mindepth 1 -maxdepth 1 ! -name dagster.yaml -exec rm -rf {} +; \
	fi
