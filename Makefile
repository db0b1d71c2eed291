# ShapeBridge: every target installs what it needs first (venv, pip, apt).
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
APT_STAMP := $(VENV)/.apt-installed
APT_PACKAGES := blender xvfb xauth python3-zmq python3-msgpack python3-numpy
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: all install apt test test-fast demo addon bench lint clean

all: test

install: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "ShapeBridge needs Python 3.11 (bpy 5.0.1 wheels are cp311); set PYTHON=/path/to/python3.11"'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[backend,blender,dev]"
	touch $@

# The Blender application (3.4 on Debian 12) and a virtual display, for the GUI test.
apt: $(APT_STAMP)

$(APT_STAMP): | $(STAMP)
	@if ! command -v blender >/dev/null || ! command -v Xvfb >/dev/null \
	    || ! /usr/bin/python3 -c 'import zmq, msgpack, numpy' 2>/dev/null; then \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $(APT_PACKAGES); \
	fi
	touch $@

test: install apt
	$(PY) -m pytest -q -ra

test-fast: install
	$(PY) -m pytest -q -ra -m "not slow and not gui"

demo: install
	$(VENV)/bin/shapebridge demo --out out

addon: install
	$(PY) -m blender_addon.build --out dist

bench: install
	$(VENV)/bin/shapebridge bench transport --json benchmarks/results/bench_transport.json

lint: install
	$(VENV)/bin/ruff check backend blender_addon tests benchmarks

clean:
	rm -rf $(VENV) dist build out .pytest_cache
