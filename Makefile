# The single entry point: every target creates .venv when missing and installs the project into it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test test-faults lint typecheck demo bench bench-quick bench-profile bench-quality clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

# The whole fault suite (kill -9 rounds, scaling, poison input, broker outage, security), with
# its figures printed at the end; docs/reliability.md.
test-faults: $(STAMP)
	$(BIN)/python -m pytest -q -m faults tests/faults

lint: $(STAMP)
	$(BIN)/ruff check stream_monitor tests benchmarks
	$(BIN)/ruff format --check stream_monitor tests benchmarks
	$(BIN)/mypy stream_monitor

demo: $(STAMP)
	$(BIN)/stream-monitor demo

# The suite on one embedded broker; writes benchmarks/results/latest.{json,md} (docs/benchmarks.md).
bench: $(STAMP)
	$(BIN)/python benchmarks/suite.py

bench-quick: $(STAMP)
	$(BIN)/python benchmarks/suite.py --quick

# Where `run` spends its time under load (py-spy samples the service process).
bench-profile: $(STAMP)
	$(BIN)/python benchmarks/profile_service.py

# Detection delay, false positives and misses on drift streams; updates docs/detection-quality.md.
bench-quality: $(STAMP)
	$(BIN)/python benchmarks/detection_quality.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
