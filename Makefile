# The README's two commands: `make demo` and `make test`. Everything they need is installed here.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: deps demo test unit lint bench clean api-docs

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

lint: $(STAMP)
	$(BIN)/ruff check service tests scripts
	$(BIN)/ruff format --check service tests scripts

## api-docs: regenerate docs/openapi.json and the routes table of docs/reference/api.md from the code
api-docs: $(STAMP)
	$(BIN)/python -m service.api.openapi --write

## bench: events (throughput, latency, memory against a naive baseline) and backfill (10,000 users)
bench: deps
	$(BIN)/python -m scripts.bench
	$(BIN)/python -m scripts.bench_backfill

clean:
	rm -rf $(VENV) scripts/kafka/.cache .pytest_cache
