# Cell: `make up` stands up the local cell with the Borg extensions and a demo course;
# `make test` runs the whole test suite against a fresh local cell of its own.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
CELL := $(VENV)/bin/cell
PYTEST := $(VENV)/bin/pytest
STAMP := $(VENV)/.installed
DEMO_STUDENTS := alice bob carol

.PHONY: help install binaries up down status test test-unit lint demo-grade bench bench-scheduler \
        bench-admission bench-grading bench-sim fuzz conformance clean

help:
	@echo "make up          install, build the upstream binaries (cached), stand up the local cell + demo course"
	@echo "make test        install, then lint and run every test (unit, integration on a fresh local cell)"
	@echo "make down        stop the local cell and remove its state"
	@echo "make bench       every benchmark (see docs/benchmarks.md)"
	@echo "make fuzz        generated bodies against the extender and webhook of a local cell (docs/reliability.md)"
	@echo "make conformance upstream's e2e scheduling/workload/quota specs, with the extender and without (docs/conformance.md)"

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "Cell needs Python 3.11, found " + sys.version.split()[0]'
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP) binaries

# Kubernetes, etcd and KWOK built from the Go module proxy once, cached under ~/.cache/cell.
binaries: $(STAMP)
	$(CELL) build

up: install
	$(CELL) up
	$(CELL) students add $(DEMO_STUDENTS)
	$(CELL) experience apply exp1-orchestration
	@echo "kubeconfig: $$($(CELL) kubeconfig)"

down: $(STAMP)
	$(CELL) down

status: $(STAMP)
	$(CELL) status

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy

test-unit: $(STAMP)
	$(PYTEST) -m "not cluster and not realnode"

test: install lint
	$(PYTEST)

demo-grade: $(STAMP)
	$(VENV)/bin/python tests/reference/apply.py exp1-orchestration --student alice
	$(CELL) grade exp1-orchestration

# Bounded: FUZZ_EXAMPLES (default 2000) bodies per endpoint; reuses CELL_TEST_STATE_DIR's cell if set.
test-security: install
	$(PYTEST) tests/security -o addopts="-ra --strict-markers"

fuzz: install
	$(PYTEST) -m fuzz tests/fuzz -s

# Upstream's e2e.test (built once, about 6 minutes) on the local cell, with and without the extender;
# reuses CELL_TEST_STATE_DIR's cell if set. CONFORMANCE_ARGS: e.g. --timeout 2h, --only with.
conformance: install
	$(VENV)/bin/python -m tests.conformance.run $(CONFORMANCE_ARGS)

bench: bench-scheduler bench-admission bench-grading bench-sim

bench-scheduler: install
	$(VENV)/bin/python tests/bench/bench_scheduler.py

bench-admission: install
	$(VENV)/bin/python tests/bench/bench_admission.py

bench-grading: install
	$(VENV)/bin/python tests/bench/bench_grading.py

bench-sim: $(STAMP)
	$(VENV)/bin/python tests/bench/bench_sim.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
