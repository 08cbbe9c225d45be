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

KAFKA_JARS := tests/streaming/.kafka4/libs

PRISM := tests/streaming/.prism/prism

test: $(BIN)/beam-ml $(KAFKA_JARS) $(PRISM)
	$(BIN)/python -m pytest -q tests

# A real Kafka 4 broker (KRaft) for tests/streaming: its jars from Maven Central (Java 17 runs them).
$(KAFKA_JARS): tests/streaming/kafka-broker.pom.xml
	$(PYTHON) -m tests.streaming.kafka_broker \
	  || echo "fetching the Kafka jars failed: the tests against a real Kafka broker will fail"

# Beam's Prism runner for tests/streaming/test_prism.py: built by Go from the Go module proxy
# at the apache-beam version of setup.py (~3 min on a cold Go cache).
$(PRISM): $(BIN)/beam-ml
	$(BIN)/python -m tests.streaming.prism \
	  || echo "building Prism failed: the tests on the Prism runner will fail"

bench: $(BIN)/beam-ml
	$(BIN)/python benchmarks/bench_pca.py

clean:
	rm -rf $(VENV) build *.egg-info demo_output
