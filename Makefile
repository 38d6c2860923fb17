# The single entry point: every target creates .venv when missing and installs the project into it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# Tests and benchmarks run on Apache Kafka (jars from Maven Central, needs JDK 17 and Maven);
# BROKER=tansu runs them on the embedded broker instead (no JVM).
BROKER ?= kafka
PYTEST := $(BIN)/python -m pytest --broker=$(BROKER)

BENCH_BROKERS ?= kafka,tansu

.PHONY: install native test test-faults test-tools kafka lint typecheck demo bench bench-quick bench-profile bench-scaling bench-quality clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The core's per-event modules compiled with mypyc (twice the events/s), again whenever a source
# of the core changes; without a C compiler the core runs as Python (docs/benchmarks.md).
NATIVE := stream_monitor/core/native.json
$(NATIVE): $(STAMP) $(wildcard stream_monitor/core/*.py) stream_monitor/errors.py tools/build_native.py
	$(BIN)/python tools/build_native.py

native: $(NATIVE)

install: $(STAMP) $(NATIVE)

# The receivers and tools some tests talk to (kcat, docker-compose, Alertmanager, promtool), from Debian's packages
# when they are missing. pytest by hand skips their tests, saying why; `make test` and
# `make test-faults` set STREAM_MONITOR_REQUIRE_TOOLS=1, so a tool still missing fails them.
test-tools:
	@tools/install-test-tools.sh

# Then the core's tests again from its Python sources: what runs where nothing could compile it.
test: install test-tools
	STREAM_MONITOR_REQUIRE_TOOLS=1 $(PYTEST) -q -m "not slow"
	STREAM_MONITOR_PURE_PYTHON=1 $(PYTEST) -q -m "not slow" tests/core

# The whole fault suite (kill -9 rounds, scaling, poison input, broker outages and broker faults
# on three Kafka nodes, security), with its figures printed at the end; docs/reliability.md.
test-faults: install test-tools
	STREAM_MONITOR_REQUIRE_TOOLS=1 $(PYTEST) -q -m faults tests/faults

# Apache Kafka on loopback for a person: prints its address, Ctrl-C stops it (NODES=3: a cluster).
NODES ?= 1
kafka: install
	$(BIN)/python -m stream_monitor.apache_kafka --nodes $(NODES)

lint: $(STAMP)
	$(BIN)/ruff check stream_monitor tests benchmarks
	$(BIN)/ruff format --check stream_monitor tests benchmarks
	$(BIN)/mypy stream_monitor

demo: install
	$(BIN)/stream-monitor demo

# The suite on Apache Kafka and on the embedded broker, side by side in one run; writes benchmarks/results/latest.{json,md} (docs/benchmarks.md).
bench: install
	$(BIN)/python benchmarks/suite.py --broker $(BENCH_BROKERS)

bench-quick: install
	$(BIN)/python benchmarks/suite.py --quick --broker $(BENCH_BROKERS)

# Where `run` spends its time under load (py-spy samples the service process).
bench-profile: install
	$(BIN)/python benchmarks/profile_service.py

# Per-event cost as monitor keys (1 to 10,000) and features (1 to 100) grow, and 1 vs 2 `run`
# instances in one consumer group, on $(BROKER); about 5 minutes here (docs/benchmarks.md, "Scaling").
bench-scaling: install
	$(BIN)/python benchmarks/scaling.py --broker $(BROKER)

# Mean time between false alarms, delay and misses on drift streams, for the default rules, river's
# defaults and 0.2's calibrated mode; updates docs/detection-quality.md. (Also by hand:
# benchmarks/calibration_check.py, false alarms per key at sd 1e-3..1e6; benchmarks/estimated_error.py.)
bench-quality: install
	$(BIN)/python benchmarks/detection_quality.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
	rm -f stream_monitor/core/*.so $(NATIVE)
