# Two commands matter to a newcomer: `make dev` (local API) and `make test` (whole suite).
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 3000
PYTEST_ARGS ?=

.PHONY: dev test venv lint format migrate create-admin sync unit integration handlers e2e clean

$(STAMP): requirements-dev.txt layers/shared/requirements.txt
	@test -x $(PY) || "$$(scripts/find-python312.sh)" -m venv $(VENV)
	@$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip 2>&1 | grep -v '^WARNING: Location' || true
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt 2>&1 | grep -v '^WARNING: Location' ; test $${PIPESTATUS[0]} -eq 0
	@# The domain package is imported from shared/ (no copy, no sys.path hacks).
	@echo "$(CURDIR)/shared" > "$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/reservations-shared.pth"
	@touch $(STAMP)

venv: $(STAMP)

dev: $(STAMP) ## serve the API through the real handlers at http://$(HOST):$(PORT)
	$(PY) -m reservations dev --host $(HOST) --port $(PORT)

test: $(STAMP) ## the whole suite: unit, integration, handlers, e2e
	$(PY) -m pytest $(PYTEST_ARGS)

unit: $(STAMP)
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

integration: $(STAMP)
	$(PY) -m pytest tests/integration $(PYTEST_ARGS)

handlers: $(STAMP)
	$(PY) -m pytest tests/handlers $(PYTEST_ARGS)

e2e: $(STAMP)
	$(PY) -m pytest tests/e2e $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/cfn-lint template.yaml

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

migrate: $(STAMP)
	$(PY) -m reservations migrate

create-admin: $(STAMP)
	@test -n "$(EMAIL)" -a -n "$(PASSWORD)" || { echo "usage: make create-admin EMAIL=... PASSWORD=... [NAME=...]"; exit 2; }
	$(PY) -m reservations create-admin --email "$(EMAIL)" --password "$(PASSWORD)" --name "$(or $(NAME),Administrator)"

clean:
	rm -rf $(VENV) .local .pytest_cache .mypy_cache .ruff_cache .aws-sam

sync: $(STAMP) ## one cache/DB sync pass, as the EventBridge schedule runs it
	$(PY) -m reservations sync
