# The README's two commands: `make demo` and `make test`. Everything they need is installed here.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: deps demo test unit lint bench docs api-docs clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

## deps: Python packages (pinned in pyproject.toml) and the Kafka broker jars (Maven Central)
deps: $(STAMP)
	bash scripts/kafka/kafka.sh fetch

## demo: local Kafka + scim2-server + the service, sample Keycloak events, downstream before / after
demo: deps
	$(BIN)/python -m scripts.demo

## test: lint, unit tests, integration tests on a real broker and a real scim2-server
test: deps lint
	$(BIN)/python -m pytest

unit: $(STAMP)
	$(BIN)/python -m pytest tests/domain tests/scim tests/pipeline

## lint: ruff, ruff format --check, and mypy --strict (what it checks: [tool.mypy] in pyproject.toml)
lint: $(STAMP)
	$(BIN)/ruff check service tests scripts
	$(BIN)/ruff format --check service tests scripts
	$(BIN)/mypy

## api-docs: regenerate docs/openapi.json and the routes table of docs/reference/api.md from the code
api-docs: $(STAMP)
	$(BIN)/python -m service.api.openapi --write

## bench: events (throughput, latency, memory against a naive baseline) and backfill (10,000 users)
bench: deps
	$(BIN)/python -m scripts.bench
	$(BIN)/python -m scripts.bench_backfill

## docs: regenerate docs/reference (settings, metrics, CLI) from the code; a test fails while they differ
docs: $(STAMP)
	$(BIN)/python -m scripts.docs

clean:
	rm -rf $(VENV) scripts/kafka/.cache .pytest_cache .mypy_cache
