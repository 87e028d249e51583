# `make study` and `make test` set everything up from nothing (a .venv from requirements.txt) and run.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PRESET ?= quick
OUT ?= runs/$(PRESET)
export CIFAR10_DIR ?= $(abspath ../shared/datasets/cifar-10-batches-py)

.PHONY: setup test test-all study report bench clean

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -r requirements.txt
	touch $@

setup: $(VENV)/.installed

test: setup
	$(PY) -m pytest

test-all: setup
	$(PY) -m pytest -m ""

study: setup
	$(PY) -m shared run --preset $(PRESET) --out $(OUT)

report: setup
	$(PY) -m shared report $(OUT)

bench: setup
	$(PY) benchmarks/train_throughput.py

clean:
	rm -rf $(VENV) .pytest_cache
