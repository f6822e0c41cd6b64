# Newcomer commands: `make demo` and `make test`. Everything else is for developers and CI.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: bench-smoke setup demo test test-fast lint format schemas clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[kit,test,lint]'
	touch $(STAMP)

demo: setup
	$(BIN)/federation demo

test: setup
	$(BIN)/python -m pytest

# No real NATS server: the runtime on the in-memory bus, the model, adapters against local fakes.
test-fast: setup
	$(BIN)/python -m pytest -m "not e2e and not bus"

bench-smoke: setup
	$(BIN)/federation bench --quick --json > .bench-quick.json
	$(BIN)/python -c "import json; d = json.load(open('.bench-quick.json')); print('bench --quick:', sorted(d['scenarios']), d['took_s'], 's')"

lint: setup
	$(BIN)/ruff check federation tests
	$(BIN)/ruff format --check federation tests
	$(BIN)/mypy
	$(BIN)/lint-imports

format: setup
	$(BIN)/ruff format federation tests
	$(BIN)/ruff check --fix federation tests

schemas: setup
	$(BIN)/federation schemas --out bus-schemas

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
