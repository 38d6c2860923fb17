# The single entry point: every target creates .venv when missing and installs the project into it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test lint typecheck demo bench bench-quick bench-profile bench-quality clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q

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
