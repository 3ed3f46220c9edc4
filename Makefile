# obsv: `make run` serves locally (dry run), `make test` runs the whole suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CONFIG ?= config/local.toml

.PHONY: install run test send-test bench image lint typecheck clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/obsv serve --config $(CONFIG)

send-test: $(STAMP)
	$(BIN)/obsv send-test --config $(CONFIG)

lint: $(STAMP)
	$(BIN)/ruff check obsv tests bench run.py

typecheck: $(STAMP)
	$(BIN)/mypy obsv

test: $(STAMP) lint typecheck
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python -m bench

image:
	docker build -t obsv .

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
