# Two commands for a newcomer: `make demo` and `make test`. Each creates .venv and installs what it needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint test-oldest-otel bench clean

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

test: $(VENV)/.dev-installed
	$(BIN)/python -m pytest -q

# ruff, then mypy on the import names users see (build/typecheck/tokentrail links instrumentation/ and processor/).
lint: $(VENV)/.dev-installed
	$(BIN)/ruff check .
	mkdir -p build/typecheck/tokentrail
	ln -sfn ../../../instrumentation build/typecheck/tokentrail/instrumentation
	ln -sfn ../../../processor build/typecheck/tokentrail/processor
	$(BIN)/mypy

bench: $(VENV)/.dev-installed
	$(BIN)/python -m benchmarks $(BENCH)

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info

# The instrumentation's tests against the oldest OpenTelemetry SDK that pyproject.toml admits.
test-oldest-otel:
	@echo "test-oldest-otel: not yet set up" && exit 1
