# rtc-mpu: `make test` and `make bench` install what they need (Debian packages, the virtualenv).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test test-unit test-integration demo lint typecheck bench venv system-deps clean dashboard-js

venv: $(STAMP) dashboard-js

# hls.js for the dashboard's player, from npm at build time (not in the repository); the API serves it.
HLS_JS := build/dashboard/node_modules/hls.js/dist/hls.min.js
dashboard-js: $(HLS_JS)

$(HLS_JS):
	npm install --prefix build/dashboard --no-save --no-package-lock --no-audit --no-fund hls.js@1

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

system-deps:
	scripts/install-system-deps.sh test

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

# The whole suite: lint, types, unit and integration tests (real nginx-rtmp on loopback).
test: system-deps $(STAMP) dashboard-js lint typecheck
	$(BIN)/pytest

# Unit tests only: no server (Redis, Janus, nginx-rtmp, browser), so no system-deps; well under a minute.
test-unit: $(STAMP)
	$(BIN)/pytest -m "not integration"

# Integration tests only: real Redis, Janus, nginx-rtmp, Chromium, service processes, real-time mixes.
test-integration: system-deps $(STAMP) dashboard-js
	$(BIN)/pytest -m integration

# A live mix on rtmp://127.0.0.1:1935/live/demo until Ctrl-C (or DURATION=<seconds>).
demo: $(STAMP)
	scripts/install-system-deps.sh stack
	$(BIN)/mpu --log-level INFO demo

# CPU per output second of a 4-user 720p30 mix next to the ffmpeg CLI on the same inputs.
bench: $(STAMP)
	scripts/install-system-deps.sh bench
	$(BIN)/python -m bench.mix_cpu
	$(BIN)/python -m bench.overlay_cost

clean:
	rm -rf $(VENV) *.egg-info .mypy_cache .ruff_cache .pytest_cache build/dashboard
