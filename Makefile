# Two entry points (see README): `make quick` runs every landed chapter's benchmark at quick scale on the
# embedded default model; `make test` runs ruff and the test suite. Both create .venv on first use.
# TORCH_SPEC picks the torch build: the default is the CPU wheel; on a GPU machine use
#   make quick TORCH_SPEC=torch DEVICE=cuda
PY ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
DEVICE ?= cpu
BIN := $(VENV)/bin

.PHONY: install quick test lint clean

$(BIN)/python:
	$(PY) -m venv $(VENV)

install: $(BIN)/python
	$(BIN)/python -m pip install -q $(TORCH_SPEC)
	$(BIN)/python -m pip install -q -e ".[test]"

quick: install
	$(BIN)/minillm bench --all --quick --device $(DEVICE) --out results/quick

lint: install
	$(BIN)/ruff check .

test: install lint
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) results .pytest_cache .ruff_cache
