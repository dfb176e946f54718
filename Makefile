# e2a developer tasks. `make run` and `make test` are the two commands in README.md.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed
BUILD_STAMP = $(VENV)/.installed-build
# `make test` runs the suite in one process per CPU, at most four (pytest-xdist), each test
# module whole in one of them; TEST_WORKERS=0 runs it in this process alone.
TEST_WORKERS ?= auto
PYTEST_PARALLEL = $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --maxprocesses 4 --dist loadfile)
# What the one-file executable is built from: rebuilt only when one of these changes.
BINARY_SOURCES = packaging/e2a.spec $(shell find e2a_gateway -type f -not -path '*/__pycache__/*')

.PHONY: install run test test-npm-cli pg lint bench bench-smtp bench-fanout bench-rest binary footprint clean

$(STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; sys.exit("e2a needs Python >= 3.11 (found %s)" % sys.version.split()[0]) if sys.version_info < (3, 11) else None'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install e2a with its development tools

run: install  ## run the gateway on ./e2a.db (SMTP 127.0.0.1:2525, HTTP 127.0.0.1:8080)
	E2A_SHARED_DOMAIN=$${E2A_SHARED_DOMAIN:-agents.localhost} $(BIN)/e2a serve

test: install  ## run the whole test suite; with E2A_TEST_POSTGRES_URL set, again on PostgreSQL
	$(BIN)/pytest $(PYTEST_PARALLEL)
	@if [ -n "$${E2A_TEST_POSTGRES_URL:-}" ]; then \
		echo "== again, every gateway under test on PostgreSQL (E2A_TEST_BACKEND=postgres)"; \
		E2A_TEST_BACKEND=postgres $(BIN)/pytest $(PYTEST_PARALLEL) --backend-dependent-only; \
	fi

test-npm-cli: install  ## e2a's npm CLI (@e2a/cli 2.0.0) against a gateway; E2A_TEST_NPM_CLI=... to install other packages
	$(BIN)/pytest -rs tests/test_npm_cli.py

pg: install  ## tests with gateways on a throwaway PostgreSQL 15 (127.0.0.1, temp dir); ARGS=... for pytest
	@set -e; pg_env=$$(packaging/pg-test-cluster.sh start); eval "$$pg_env"; \
	trap 'packaging/pg-test-cluster.sh stop "$$E2A_PG_TEST_DIR"' EXIT; \
	E2A_TEST_BACKEND=postgres $(BIN)/pytest $${ARGS:-tests/test_storage.py}

lint: install  ## ruff and mypy, as CI runs them
	$(BIN)/ruff check e2a_gateway tests bench
	$(BIN)/ruff format --check e2a_gateway tests bench
	$(BIN)/mypy

bench: install  ## run every benchmark in bench/
	@for script in bench/[!_]*.py; do echo "== $$script"; $(BIN)/python $$script || exit 1; done

$(BUILD_STAMP): $(STAMP)
	$(BIN)/pip install --quiet -e '.[build]'
	touch $(BUILD_STAMP)

dist/e2a: $(BUILD_STAMP) $(BINARY_SOURCES)
	$(BIN)/pyinstaller --noconfirm --log-level WARN --distpath dist --workpath build/pyinstaller \
		packaging/e2a.spec
	@echo "dist/e2a: $$(stat -c %s dist/e2a | awk '{printf "%.1f", $$1 / 1e6}') MB for $$(uname -s) $$(uname -m)"

binary: dist/e2a  ## one-file executable dist/e2a for this machine's OS and CPU (docs/deploy.md)

footprint: dist/e2a  ## size, start time and memory of dist/e2a against `python -m e2a_gateway serve`
	$(BIN)/python bench/footprint.py

bench-smtp: install  ## SMTP ingest: e2a against Postfix and aiosmtpd, per connection and persistent (~8 min)
	$(BIN)/python bench/smtp_ingest.py

bench-fanout: install  ## one 100 KB message to 1, 10 and 50 local agents per transaction (~1.5 min)
	$(BIN)/python bench/fanout.py

bench-rest: install  ## REST reads against a bare Quart-Trio app, 1/16/64 connections; needs wrk (~1 min)
	$(BIN)/python bench/rest_read.py

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
