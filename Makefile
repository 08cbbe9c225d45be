# Two commands on a fresh machine (only Python 3.11 and the OS needed):
#   make demo   set up .venv and run the bundled PCA job (train, derive, evaluate, predict)
#   make test   set up .venv and run the test suite (tests/engines starts and stops its own
#               local Flink cluster: Java 17 and Maven needed, see deploy/flink/README.md)
# A local Flink cluster on 127.0.0.1 by hand (JobManager, 2 TaskManagers, Beam's job server
# on 127.0.0.1:8099 and Python worker pool on 127.0.0.1:50000):
#   make flink-up     install it if absent (deploy/flink/.local) and start it
#   make flink-down   stop it
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test test-engines flink-install flink-up flink-down bench clean

$(BIN)/beam-ml: setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

demo: $(BIN)/beam-ml
	$(BIN)/python pipelines/demo.py

KAFKA_JARS := tests/streaming/.kafka4/libs

PRISM := tests/streaming/.prism/prism

KINESALITE := tests/streaming/.kinesalite/node_modules/kinesalite/package.json

test: $(BIN)/beam-ml $(KAFKA_JARS) $(PRISM) $(KINESALITE) flink-install
	$(BIN)/python -m pytest -q tests pipelines/test_example_pipeline.py

# A real Kafka 4 broker (KRaft) for tests/streaming: its jars from Maven Central (Java 17 runs them).
$(KAFKA_JARS): tests/streaming/kafka-broker.pom.xml
	$(PYTHON) -m tests.streaming.kafka_broker \
	  || echo "fetching the Kafka jars failed: the tests against a real Kafka broker will fail"

# Kinesalite, a Kinesis server for tests/streaming/test_kinesis.py: npm (Node.js needed).
$(KINESALITE):
	$(PYTHON) -m tests.streaming.kinesis_server \
	  || echo "installing kinesalite failed: the Kinesis tests will fail"

# Beam's Prism runner for tests/streaming/test_prism.py: built by Go from the Go module proxy
# at the apache-beam version of setup.py (~3 min on a cold Go cache).
$(PRISM): $(BIN)/beam-ml
	$(BIN)/python -m tests.streaming.prism \
	  || echo "building Prism failed: the tests on the Prism runner will fail"

# Flink 1.19 (PyPI wheels) and Beam's Flink job server (Maven Central) for tests/engines,
# into deploy/flink/.local; a no-op (~2 s) once installed.
flink-install:
	deploy/flink/install.sh

# Only the engine tests (they start their own cluster; BEAM_ML_FLINK_RUNNING=1 uses flink-up's)
test-engines: $(BIN)/beam-ml
	$(BIN)/python -m pytest -q -m engines tests/engines

flink-up: $(BIN)/beam-ml flink-install
	PROJECT_PYTHON=$(BIN)/python deploy/flink/start.sh

flink-down:
	deploy/flink/stop.sh

bench: $(BIN)/beam-ml
	$(BIN)/python benchmarks/bench_pca.py

clean:
	rm -rf $(VENV) build *.egg-info demo_output
