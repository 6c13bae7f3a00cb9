# rtc-mpu: `make test` and `make bench` install what they need (Debian packages, the virtualenv).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test test-unit test-integration demo lint typecheck bench venv system-deps clean dashboard-js compose-test

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

# The whole suite: lint, types, unit and integration tests (real nginx-rtmp on loopback), then the
# containers (compose-test, below).
test: system-deps $(STAMP) dashboard-js lint typecheck
	$(BIN)/pytest
	$(MAKE) compose-test

# Unit tests only: no server (Redis, Janus, nginx-rtmp, browser), so no system-deps; well under a minute.
test-unit: $(STAMP)
	$(BIN)/pytest -m "not integration"

# Integration tests only: real Redis, Janus, nginx-rtmp, Chromium, service processes, real-time mixes.
test-integration: system-deps $(STAMP) dashboard-js
	$(BIN)/pytest -m integration

# docker-compose.yml proved with podman (scripts/compose-test.sh): installs podman, runc and podman-compose if
# missing, makes the base image (kept cached), builds the images, runs the stack, publishes, mixes, scales,
# kills a worker, takes everything down and removes the images it built (MPU_COMPOSE_KEEP_IMAGES=1 keeps
# them). Its ports: apart from `mpu stack`'s defaults and from the ephemeral range the tests' fixtures use.
COMPOSE_TEST_PORTS ?= MPU_REDIS_PORT=16379 MPU_JANUS_PORT=18088 MPU_RTMP_PORT=11935 MPU_HLS_PORT=18081 \
	MPU_API_PORT=18080 MPU_EDGE_PORT=18090 MPU_FLOWER_PORT=15555 MPU_RTP_PORT_RANGE=24000-24999
compose-test: $(STAMP)
	env $(COMPOSE_TEST_PORTS) scripts/compose-test.sh

# A live mix on rtmp://127.0.0.1:1935/live/demo until Ctrl-C (or DURATION=<seconds>).
demo: $(STAMP)
	scripts/install-system-deps.sh stack
	$(BIN)/mpu --log-level INFO demo

# CPU per output second of a 4-user 720p30 mix next to the ffmpeg CLI on the same inputs; how many live
# mixes one worker carries (bench/capacity.py); the CPU of an ingest.
bench: $(STAMP)
	scripts/install-system-deps.sh bench
	$(BIN)/python -m bench.mix_cpu
	$(BIN)/python -m bench.overlay_cost
	mkdir -p bench/results && $(BIN)/python -m bench.capacity --json bench/results/capacity.json
	$(BIN)/python -m bench.ingest_cost

clean:
	rm -rf $(VENV) *.egg-info .mypy_cache .ruff_cache .pytest_cache build/dashboard
