# Everything a fresh machine needs: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test lint format demo bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[local,dev]'
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check toolforge tests benchmarks programs
	$(BIN)/ruff format --check toolforge tests benchmarks programs
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format toolforge tests benchmarks programs
	$(BIN)/ruff check --fix toolforge tests benchmarks programs

demo: $(STAMP)
	$(BIN)/python programs/foundation_demo.py

bench: $(STAMP)
	$(BIN)/python benchmarks/sandbox_overhead.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
