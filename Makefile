# The README's two commands: `make demo` and `make test`. Everything they need is installed here.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: deps chromium demo run test unit lint bench docs api-docs screenshots clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

## deps: Python packages (pinned in pyproject.toml) and the Kafka broker jars (Maven Central)
deps: $(STAMP)
	bash scripts/kafka/kafka.sh fetch

## chromium: Debian's browser, for the console's browser tests (tests/browser), installed when missing
chromium:
	@command -v chromium >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium; }

## demo: local Kafka + scim2-server + the service, sample Keycloak events, downstream before / after
demo: deps
	$(BIN)/python -m scripts.demo

## run: a local broker, a scim2-server downstream and the service with tenant `acme`, up until Ctrl-C;
## prints the URLs and commands to try (no .env needed: it brings settings of its own)
run: deps
	$(BIN)/python -m scripts.run

## test: lint, unit tests, integration tests on a real broker and a real scim2-server, then coverage of
## service/ with its floor ([tool.coverage] in pyproject.toml). COVERAGE_PROCESS_START makes coverage's
## .pth (installed with coverage in the venv) measure every Python process: the service processes the
## tests start too; each writes its own .coverage.* file next to this Makefile, combined at the end.
test: deps lint chromium
	rm -f .coverage .coverage.*
	COVERAGE_PROCESS_START=$(CURDIR)/pyproject.toml COVERAGE_FILE=$(CURDIR)/.coverage $(BIN)/python -m pytest
	$(BIN)/coverage combine --quiet
	$(BIN)/coverage report

## unit: the fast loop, no broker / scim2-server / Keycloak (-m "not integration"), no wheel builds
## (-m "not slow"), each Hypothesis property capped at 100 examples (HYPOTHESIS_PROFILE=dev)
unit: $(STAMP)
	HYPOTHESIS_PROFILE=dev $(BIN)/python -m pytest -m "not integration and not slow"

## lint: ruff, ruff format --check, and mypy --strict (what it checks: [tool.mypy] in pyproject.toml)
lint: $(STAMP)
	$(BIN)/ruff check service tests scripts devkit
	$(BIN)/ruff format --check service tests scripts devkit
	$(BIN)/mypy

## api-docs: regenerate docs/openapi.json and the routes table of docs/reference/api.md from the code
api-docs: $(STAMP)
	$(BIN)/python -m service.api.openapi --write

## bench: events (throughput, latency, memory against a naive baseline), memberships (a burst of 6,600
## joins and leaves over 2,000 users and 20 groups), backfill (10,000 users), the user state's restore
## (100,000 users seeded into the changelog: from scratch, from a checkpoint, memory; --users 1000000) and a
## rolling restart of 3 replicas under load (lag peak, drain, changes re-applied; round robin against sticky)
bench: deps
	$(BIN)/python -m scripts.bench
	$(BIN)/python -m scripts.bench_groups
	$(BIN)/python -m scripts.bench_backfill
	$(BIN)/python -m scripts.bench_state
	$(BIN)/python -m scripts.bench_rolling

## docs: regenerate docs/reference (settings, metrics, CLI) from the code; a test fails while they differ
docs: $(STAMP)
	$(BIN)/python -m scripts.docs

## screenshots: copy the console screenshots the browser tests wrote (tests/browser: build/screenshots, or
## $OUTBOUND_SCIM_SCREENSHOTS) into docs/images/; run on purpose when the docs' copies should change
SCREENSHOTS ?= $(or $(OUTBOUND_SCIM_SCREENSHOTS),build/screenshots)
screenshots:
	@ls $(SCREENSHOTS)/console-*.png >/dev/null 2>&1 || { echo "no screenshots in $(SCREENSHOTS): run $(BIN)/python -m pytest tests/browser first"; exit 1; }
	mkdir -p docs/images
	cp $(SCREENSHOTS)/console-*.png docs/images/

clean:
	rm -rf $(VENV) scripts/kafka/.cache .pytest_cache .mypy_cache
