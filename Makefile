# Two entry points (see README): `make quick` runs every landed chapter's benchmark at quick scale on the
# embedded default model; `make test` runs ruff and the test suite. Both create .venv on first use.
# TORCH_SPEC picks the torch build. The default, torch==2.13.0 from PyPI, is the CUDA build on Linux
# (a multi-GB download) and the CPU build on macOS. For the CPU wheel on a Linux machine without a GPU:
#   make test TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu"
# DEVICE is where `make quick` runs the benchmarks; on a GPU machine:
#   make quick DEVICE=cuda
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
