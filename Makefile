# Two commands on a fresh machine (only Python 3.11 and the OS needed):
#   make demo   set up .venv and run the bundled PCA job (train, derive, evaluate, predict)
#   make test   set up .venv and run the test suite
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test bench clean

$(BIN)/beam-ml: setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

demo: $(BIN)/beam-ml
	$(BIN)/python pipelines/demo.py

test: $(BIN)/beam-ml
	$(BIN)/python -m pytest -q tests

bench: $(BIN)/beam-ml
	$(BIN)/python benchmarks/bench_pca.py

clean:
	rm -rf $(VENV) build *.egg-info demo_output
