# `make study` and `make test` set everything up from nothing (a .venv from requirements.txt) and run.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PRESET ?= quick
OUT ?= runs/$(PRESET)
# The study reads CIFAR-10 from $CIFAR10_DIR, by default the copy beside the checkout; the tests find that
# copy themselves and fail (not skip) when CIFAR10_DIR is set to a wrong path, so it is not exported to them.
DEFAULT_CIFAR10_DIR := $(abspath ../shared/datasets/cifar-10-batches-py)

.PHONY: setup chromium test test-all study report bench clean

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -r requirements.txt
	touch $@

setup: $(VENV)/.installed

# The report's render test opens report.html in headless Chromium: Debian's package, installed when absent.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
chromium:
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || { \
	  echo "installing Debian's chromium (the report's render test needs it)"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium >/dev/null; }

test: setup chromium
	$(PY) -m pytest

test-all: setup chromium
	$(PY) -m pytest -m ""

study: setup
	CIFAR10_DIR=$${CIFAR10_DIR:-$(DEFAULT_CIFAR10_DIR)} $(PY) -m shared run --preset $(PRESET) --out $(OUT)

report: setup
	$(PY) -m shared report $(OUT)

bench: setup
	$(PY) benchmarks/train_throughput.py

clean:
	rm -rf $(VENV) .pytest_cache
