# modelmon: `make test` sets everything up from scratch and runs the test suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: test deps venv bench clean

test: deps venv
	$(BIN)/pytest

deps:
	scripts/install-deps.sh

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

bench: venv
	$(BIN)/python benchmarks/bench_observe.py

clean:
	rm -rf $(VENV) .pytest_cache
