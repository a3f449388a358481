# Two commands do all the set-up: `make run` (pipeline on the built-in dataset) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup run test test-fast lint bench clean

setup: $(STAMP)

# torch first, pinned: 2.13.0 is a CPU build already on disk here; an unpinned torch would pull
# a multi-GB CUDA build.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/mmpipe run $(ARGS)

test: $(STAMP)
	$(BIN)/ruff check mmcore tasks flows tests benchmarks
	$(BIN)/lint-imports
	$(BIN)/pytest -q -p no:cacheprovider $(ARGS)

# Everything but the slow end-to-end tests (real servers, browser, fault injection); CI runs all.
test-fast: $(STAMP)
	$(BIN)/pytest -q -p no:cacheprovider -m "not slow" $(ARGS)

bench: $(STAMP)
	$(BIN)/python benchmarks/pipeline_overhead.py

clean:
	rm -rf runs .pytest_cache
