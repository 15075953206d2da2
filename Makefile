# Two commands for a newcomer: `make demo` and `make test`. Each creates .venv and installs what it needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint test-oldest-otel check-install bench drift soak clean chromium

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.demo-installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet -e '.[demo]'
	touch $@

$(VENV)/.dev-installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@ $(VENV)/.demo-installed

demo: $(VENV)/.demo-installed
	$(BIN)/tokentrail demo

test: $(VENV)/.dev-installed chromium
	$(BIN)/python -m pytest -q

# The dashboard's browser tests (tests/processor/api/test_dashboard_browser.py) drive Debian's Chromium through Playwright's Python API, pointed at
# /usr/bin/chromium: Playwright's own browser download is never used. Installed here when missing (CI runs as root).
chromium:
	command -v chromium >/dev/null || (apt-get update && apt-get install -y --no-install-recommends chromium)

# ruff, then mypy on the import names users see (build/typecheck/tokentrail links instrumentation/ and processor/).
lint: $(VENV)/.dev-installed
	$(BIN)/ruff check .
	mkdir -p build/typecheck/tokentrail
	ln -sfn ../../../instrumentation build/typecheck/tokentrail/instrumentation
	ln -sfn ../../../processor build/typecheck/tokentrail/processor
	$(BIN)/mypy

# README's install lines, run as written in fresh venvs (needs PyPI): `pip install .`, the wheel, the extras.
check-install: $(BIN)/python
	$(BIN)/python -m tests.helpers.readme_install

# The drift suite: every instrumentation we accept, as it ships today, against the fake provider. The Python ones
# (tests/processor/normalize/test_dialects.py) at the newest versions pyproject.toml admits; the Vercel AI SDK (Node
# 22 from npm) at the newest release of each pinned major, captured into build/drift and checked like its golden
# fixtures. Needs the PyPI and npm registries. `make test` checks the stored fixtures.
DRIFT_DIR := build/drift
drift: $(VENV)/.dev-installed
	$(BIN)/pip install --quiet --upgrade -e '.[dev]'
	rm -rf $(DRIFT_DIR)
	$(BIN)/python -m tests.drift.vercel.capture --latest --out $(DRIFT_DIR)
	TOKENTRAIL_DRIFT_DIR=$(DRIFT_DIR) $(BIN)/python -m pytest -q -p no:cacheprovider \
		tests/processor/normalize/test_vercel_drift.py tests/processor/normalize/test_dialects.py

# The fault and abuse suite at length (more kills, rounds and clients than the bounded run `make test` includes).
soak: $(VENV)/.dev-installed
	TOKENTRAIL_SOAK=1 $(BIN)/python -m pytest -q -p no:cacheprovider tests/fault

bench: $(VENV)/.dev-installed
	$(BIN)/python -m benchmarks $(BENCH)

clean:
	rm -rf $(VENV) .venv-oldest-otel .pytest_cache build *.egg-info

# The instrumentation's tests against the oldest OpenTelemetry SDK that pyproject.toml admits, in a venv of their own
# (.venv holds the newest). Tests of other instrumentations, not installed there, skip.
OLDEST_VENV := .venv-oldest-otel
OLDEST_OTEL := opentelemetry-api==1.30.0 opentelemetry-sdk==1.30.0 opentelemetry-proto==1.30.0 \
	opentelemetry-exporter-otlp-proto-grpc==1.30.0 opentelemetry-exporter-otlp-proto-http==1.30.0 \
	opentelemetry-instrumentation==0.51b0 opentelemetry-distro==0.51b0
OLDEST_TEST_DEPS := pytest pytest-asyncio hypothesis httpx brotli zstandard 'backports.zstd; python_version < "3.14"' \
	msgspec cryptography

test-oldest-otel:
	test -x $(OLDEST_VENV)/bin/python || $(PYTHON) -m venv $(OLDEST_VENV)
	$(OLDEST_VENV)/bin/pip install --quiet --upgrade pip
	$(OLDEST_VENV)/bin/pip install --quiet -e '.[demo]' $(OLDEST_TEST_DEPS) $(OLDEST_OTEL)
	$(OLDEST_VENV)/bin/pip list 2>/dev/null | grep -E '^opentelemetry-(api|sdk|instrumentation) '
	$(OLDEST_VENV)/bin/python -m pytest -q tests/instrumentation
