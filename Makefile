# trajstream developer entry points. Everything runs from a fresh clone: the venv lives in
# .venv, Kafka jars in broker/lib (both git-ignored).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: venv test demo lint bench quality kafka-jars kafka-up kafka-down clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
	  { echo "trajstream: Python >= 3.11 is required (found $$($(PYTHON) --version))"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,sumo]'
	@touch $@

lint: venv
	$(VENV)/bin/ruff check trajstream/*.py stream model simulator tests bench broker
	$(VENV)/bin/mypy -p trajstream

test: venv kafka-jars
	$(PY) -m pytest -q

# The benchmarks behind the README's figures, each printing what it measured; the Kafka
# ones start their own throwaway broker. Takes several minutes. (bench_model_size.py, which
# retrains the LSTM at several sizes, runs on its own.)
BENCHES := codec risk model kinematics simulator processor map
bench: venv kafka-jars
	@for name in $(BENCHES); do script=bench/bench_$$name.py; \
	  echo "== $$script"; $(PY) $$script || exit 1; echo; \
	done

# Warning quality on traffic the processor was not tuned on (held-out scenario library,
# recorded NGSIM roads, SUMO when installed), beside the CV-TTC baseline: one table.
quality: venv
	$(PY) bench/bench_quality.py

# Simulator + processor in one process, no broker; alerts print live, metrics on :9100.
# Options via TRAJSTREAM_* variables, e.g. `TRAJSTREAM_SPEED=5 make demo`.
demo: venv
	$(VENV)/bin/trajstream demo

# A single-node KRaft broker from the Maven jars (broker/broker.py; needs java and mvn).
KAFKA_STAMP := broker/lib/.resolved
KAFKA_PORT ?= 9092
KAFKA_CONTROLLER_PORT ?= 9093

kafka-jars: $(KAFKA_STAMP)

$(KAFKA_STAMP): broker/pom.xml
	@$(PYTHON) broker/broker.py jars >/dev/null

kafka-up: kafka-jars
	@$(PYTHON) broker/broker.py start --port $(KAFKA_PORT) \
	  --controller-port $(KAFKA_CONTROLLER_PORT) --dir .kafka

kafka-down:
	@$(PYTHON) broker/broker.py stop --dir .kafka

clean:
	rm -rf $(VENV) broker/lib .kafka .run
