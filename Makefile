# modelmon: `make test` sets everything up from scratch and runs the test suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: test demo deps venv bench clean

test: deps venv
	$(BIN)/pytest

demo: deps venv
	$(BIN)/python -m demo.stack

deps:
	scripts/install-deps.sh

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,demo]'
	touch $@

BENCH_VENV := benchmarks/.venv

# make bench BENCH_ARGS=--quick for a shorter run; docs/benchmarks.md is rewritten either way.
bench: venv $(BENCH_VENV)/.installed
	$(BIN)/python benchmarks/bench_observe.py
	$(BENCH_VENV)/bin/python benchmarks/run_all.py $(BENCH_ARGS)

$(BENCH_VENV)/.installed: benchmarks/requirements.txt benchmarks/setup.sh pyproject.toml
	PYTHON=$(PYTHON) benchmarks/setup.sh
	touch $@

clean:
	rm -rf $(VENV) .pytest_cache
