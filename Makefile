# Marquee — `make run` starts the system, `make test` runs the suite. Both set themselves up.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
RUNTIME_STAMP := $(VENV)/.installed-runtime
MODEL_DIR ?= var/models
HOST ?= 127.0.0.1
PORT ?= 8080

.PHONY: install lock secrets run run-micro run-hosts train test lint bench loadtest clean system-deps

# Two installs from the lock files (exact versions, sha256-checked): the runtime alone for
# `make run` / `make train`, everything (tests, lint, bench, load tool, honcho) for the rest.
$(VENV)/bin/python:
	@command -v $(PYTHON) >/dev/null || { echo "Python 3.11+ is needed"; exit 1; }
	$(PYTHON) -m venv $(VENV) || { \
	  echo "venv failed; installing python3-venv"; apt-get install -y -q --no-install-recommends python3-venv && $(PYTHON) -m venv $(VENV); }
	$(PY) -m pip install -q --upgrade pip

$(RUNTIME_STAMP): requirements.lock pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install -q -r requirements.lock
	$(PY) -m pip install -q --no-deps -e .
	@touch $@

$(STAMP): requirements-dev.lock pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install -q -r requirements-dev.lock
	$(PY) -m pip install -q --no-deps -e .
	@touch $@ $(RUNTIME_STAMP)

install: $(STAMP)

# Re-pin after changing the dependencies in pyproject.toml (uv resolves for every platform and
# Python >= 3.11; the dev lock is held to the runtime lock's versions).
lock: $(STAMP)
	$(VENV)/bin/uv pip compile pyproject.toml --universal --python-version 3.11 \
	  --generate-hashes --no-header -q -o requirements.lock
	$(VENV)/bin/uv pip compile pyproject.toml --all-extras --universal --python-version 3.11 \
	  --generate-hashes --no-header -q -c requirements.lock -o requirements-dev.lock

# What the suite and the bench run besides Python, from Debian when missing and root (nothing
# else, no recommended extras): Redis, Chromium (browser tests), wrk (bench), promtool (Debian's
# prometheus package: the alert rules), PostgreSQL's server (tests start their own instances),
# iproute2 and iptables (the hosts lab).
system-deps:
	@missing=""; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v wrk >/dev/null || missing="$$missing wrk"; \
	command -v promtool >/dev/null || missing="$$missing prometheus"; \
	ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || missing="$$missing postgresql"; \
	command -v tc >/dev/null || missing="$$missing iproute2"; \
	command -v iptables >/dev/null || missing="$$missing iptables"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	  else echo "please install:$$missing"; exit 1; fi; \
	fi

$(MODEL_DIR)/current: | $(RUNTIME_STAMP)
	$(PY) -m recommender train --model-dir $(MODEL_DIR)

# The page across hosts: services in network namespaces, shaped links, a partition (root only).
run-hosts: $(STAMP) system-deps $(MODEL_DIR)/current
	MARQUEE_MODEL_DIR=$(MODEL_DIR) $(PY) -m tests.hosts

train: $(RUNTIME_STAMP)
	$(PY) -m recommender train --model-dir $(MODEL_DIR)

# Development secrets (var/secrets.json, 0600), made once; production sets MARQUEE_SECRET_KEY,
# MARQUEE_SERVICE_TOKEN and MARQUEE_ADMIN_TOKEN instead.
secrets: var/secrets.json

var/secrets.json: | $(RUNTIME_STAMP)
	$(PY) -m services.platform.settings secrets

run: $(RUNTIME_STAMP) $(MODEL_DIR)/current var/secrets.json
	@echo "Marquee (monolith) at http://$(HOST):$(PORT)/  — e.g. http://$(HOST):$(PORT)/movies/1"
	MARQUEE_DEVELOPMENT=true MARQUEE_ACCESS_LOG_SAMPLE=1 MARQUEE_HOST=$(HOST) MARQUEE_WEB_PORT=$(PORT) \
	  MARQUEE_MODEL_DIR=$(MODEL_DIR) $(PY) -m web_server

run-micro: $(STAMP) $(MODEL_DIR)/current var/secrets.json
	@echo "Marquee (microservices) at http://$(HOST):$(PORT)/"
	PATH="$(abspath $(VENV))/bin:$$PATH" $(VENV)/bin/honcho -f Procfile -e deploy/microservices.env start

test: $(STAMP) system-deps
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

bench: $(STAMP) $(MODEL_DIR)/current
	$(PY) -m bench

loadtest: $(STAMP)
	$(PY) -m loadtest --base-url http://$(HOST):$(PORT) --duration 30 --rate 200 \
	  --out var/loadtest.json --html var/loadtest.html

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache
