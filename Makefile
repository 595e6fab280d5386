# Marquee — `make run` starts the system, `make test` runs the suite. Both set themselves up.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
MODEL_DIR ?= var/models
HOST ?= 127.0.0.1
PORT ?= 8080

.PHONY: install run run-micro run-hosts train test lint bench loadtest clean system-deps

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "Python 3.11+ is needed"; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) || { \
	  echo "venv failed; installing python3-venv"; apt-get install -y -q python3-venv && $(PYTHON) -m venv $(VENV); }
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	@touch $@

install: $(STAMP)

# Redis for the tests (and Chromium for the browser tests), from Debian when missing and root.
system-deps:
	@missing=""; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v wrk >/dev/null || missing="$$missing wrk"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	  else echo "please install:$$missing"; exit 1; fi; \
	fi
	@# PostgreSQL's server (tests start their own instances), iproute2 and iptables (the hosts lab).
	@missing=""; \
	ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || missing="$$missing postgresql"; \
	command -v tc >/dev/null || missing="$$missing iproute2"; \
	command -v iptables >/dev/null || missing="$$missing iptables"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	  else echo "please install:$$missing"; exit 1; fi; \
	fi

$(MODEL_DIR)/current:
	$(PY) -m recommender train --model-dir $(MODEL_DIR)

# The page across hosts: services in network namespaces, shaped links, a partition (root only).
run-hosts: $(STAMP) system-deps $(MODEL_DIR)/current
	MARQUEE_MODEL_DIR=$(MODEL_DIR) $(PY) -m tests.hosts

train: $(STAMP)
	$(PY) -m recommender train --model-dir $(MODEL_DIR)

run: $(STAMP) $(MODEL_DIR)/current
	@echo "Marquee (monolith) at http://$(HOST):$(PORT)/  — e.g. http://$(HOST):$(PORT)/movies/1"
	MARQUEE_HOST=$(HOST) MARQUEE_WEB_PORT=$(PORT) MARQUEE_MODEL_DIR=$(MODEL_DIR) $(PY) -m web_server

run-micro: $(STAMP) $(MODEL_DIR)/current
	@echo "Marquee (microservices) at http://$(HOST):$(PORT)/"
	PATH="$(abspath $(VENV))/bin:$$PATH" $(VENV)/bin/honcho -f Procfile -e deploy/microservices.env start

test: $(STAMP) system-deps
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

bench: $(STAMP) $(MODEL_DIR)/current
	$(PY) -m bench

loadtest: $(STAMP)
	$(PY) -m loadtest --base-url http://$(HOST):$(PORT) --duration 30 --rate 200 \
	  --out var/loadtest.json --html var/loadtest.html

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache
