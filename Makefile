# modelmon: `make test` sets everything up from scratch and runs the test suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: test demo deps venv bench clean

# Everything on Elasticsearch 9.x with the Python client 9, then the Elasticsearch tests of
# setup, the shipper and the elk/ assets again on 8.19 with client 8 (which 8.x servers need).
ES8_CLIENT := $(VENV)/elasticsearch8
ES8_TESTS := tests/test_setup.py tests/test_shipper.py tests/test_elk_assets.py

test: deps venv $(ES8_CLIENT)/.installed
	$(BIN)/pytest
	MODELMON_TEST_ES=8 PYTHONPATH=$(ES8_CLIENT) $(BIN)/pytest $(ES8_TESTS)

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

# The Python client 8, put first on PYTHONPATH for the 8.19 run (the venv has client 9).
$(ES8_CLIENT)/.installed: $(VENV)/.installed
	rm -rf $(ES8_CLIENT)
	$(BIN)/pip install -q --no-deps --target $(ES8_CLIENT) 'elasticsearch>=8.13,<9' 'elastic-transport>=8.15.1,<9'
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
