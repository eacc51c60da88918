# Two commands matter to a newcomer: `make dev` (local API) and `make test` (whole suite).
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 3000
PYTEST_ARGS ?=
# Headless Chromium for the browser check of /docs (tests/e2e/test_docs_browser.py): Debian's package.
CHROMIUM := /usr/bin/chromium
# Where `make client` writes the typed Python client of openapi.json (never committed).
CLIENT_DIR ?= build/client
# ReDoc's standalone bundle for /redoc, fetched (pinned npm tarball, sha512 checked) by
# functions/docs/Makefile into a gitignored folder; VERSION is written last.
REDOC_STAMP := functions/docs/redoc/VERSION

.PHONY: dev test venv lint format migrate create-admin sync unit integration handlers e2e infra clean bench client chromium redoc

$(STAMP): requirements-dev.txt layers/shared/requirements.txt
	@test -x $(PY) || "$$(scripts/find-python312.sh)" -m venv $(VENV)
	@$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip 2>&1 | grep -v '^WARNING: Location' || true
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt 2>&1 | grep -v '^WARNING: Location' ; test $${PIPESTATUS[0]} -eq 0
	@# The domain package is imported from shared/ (no copy, no sys.path hacks).
	@echo "$(CURDIR)/shared" > "$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/reservations-shared.pth"
	@touch $(STAMP)

venv: $(STAMP)

dev: $(STAMP) $(REDOC_STAMP) ## serve the API through the real handlers at http://$(HOST):$(PORT)
	$(PY) -m reservations_dev dev --host $(HOST) --port $(PORT)

test: $(STAMP) .tools/sam/.installed $(CHROMIUM) $(REDOC_STAMP) ## the whole suite: unit, integration, handlers, e2e, infra (sam build included)
	$(PY) -m pytest $(PYTEST_ARGS)

unit: $(STAMP)
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

integration: $(STAMP)
	$(PY) -m pytest tests/integration $(PYTEST_ARGS)

handlers: $(STAMP)
	$(PY) -m pytest tests/handlers $(PYTEST_ARGS)

e2e: $(STAMP) $(CHROMIUM) $(REDOC_STAMP)
	$(PY) -m pytest tests/e2e $(PYTEST_ARGS)

infra: $(STAMP) .tools/sam/.installed $(REDOC_STAMP)
	$(PY) -m pytest tests/infra $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/cfn-lint template.yaml infra/*.yaml

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

migrate: $(STAMP)
	$(PY) -m reservations_dev migrate

create-admin: $(STAMP)
	@test -n "$(EMAIL)" -a -n "$(PASSWORD)" || { echo "usage: make create-admin EMAIL=... PASSWORD=... [NAME=...]"; exit 2; }
	$(PY) -m reservations_dev create-admin --email "$(EMAIL)" --password "$(PASSWORD)" --name "$(or $(NAME),Administrator)"

clean:
	rm -rf $(VENV) .local .pytest_cache .mypy_cache .ruff_cache .aws-sam functions/docs/redoc

sync: $(STAMP) ## one cache/DB sync pass, as the EventBridge schedule runs it
	$(PY) -m reservations_dev sync

bench: $(STAMP) ## speed figures (tables printed, bench/results.json written)
	$(PY) -m bench

client: $(STAMP) ## typed Python client of openapi.json: $(CLIENT_DIR)/reservations_client (openapi-python-client)
	rm -rf "$(CLIENT_DIR)/reservations_client"
	$(VENV)/bin/openapi-python-client generate --path openapi.json --config scripts/openapi-client.yaml \
		--meta none --output-path "$(CLIENT_DIR)/reservations_client"

redoc: $(REDOC_STAMP) ## ReDoc's bundle for /redoc into functions/docs/redoc (pinned npm tarball, sha512 checked)

# Fetched again when the pin (functions/docs/Makefile) changes.
$(REDOC_STAMP): functions/docs/Makefile
	$(MAKE) --no-print-directory -f functions/docs/Makefile redoc

chromium: $(CHROMIUM) ## Debian's chromium for the browser check (apt-get, as root)

$(CHROMIUM):
	@if [ "$$(id -u)" = 0 ]; then \
		echo "installing chromium (apt-get) for tests/e2e/test_docs_browser.py"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; \
	else \
		echo "$(CHROMIUM) is missing and this is not root: run 'sudo apt-get install chromium' (needed by tests/e2e/test_docs_browser.py)" >&2; \
		exit 1; \
	fi
	@test -x $(CHROMIUM) || { echo "apt-get did not install $(CHROMIUM)" >&2; exit 1; }

# ---------------------------------------------------------------- AWS SAM
# aws-sam-cli pins boto3, click and pydantic: it gets its own venv under .tools/sam.
# `sam build` needs python3.12 on PATH (the layer is compiled for it); SAM_ENV adds it.
SAM_VENV := .tools/sam
SAM := $(SAM_VENV)/bin/sam
SAM_STAMP := $(SAM_VENV)/.installed
ARCH ?= arm64
BUILD_DIR ?= .aws-sam/build
# One build cache per architecture: the layer's cache key (its folder's content) does not
# include the architecture its wheels were fetched for.
CACHE_DIR ?= .aws-sam/cache-$(ARCH)
SAM_BUILD_ARGS ?=
SAM_ENV = SAM_CLI_TELEMETRY=0 LAYER_ARCHITECTURE=$(ARCH) PATH="$$(dirname "$$(scripts/find-python312.sh)"):$$PATH"

.PHONY: sam-tools build validate openapi

$(SAM_STAMP): requirements-sam.txt
	@test -x $(SAM_VENV)/bin/python || "$$(scripts/find-python312.sh)" -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-sam.txt 2>&1 | grep -v '^WARNING: Location' ; test $${PIPESTATUS[0]} -eq 0
	@touch $(SAM_STAMP)

sam-tools: $(SAM_STAMP) ## aws-sam-cli in its own venv (.tools/sam)

build: $(SAM_STAMP) ## sam build for ARCH (arm64, the default, or x86_64): cached and parallel (samconfig.toml)
	$(SAM_ENV) $(SAM) build --parameter-overrides Architecture=$(ARCH) --build-dir $(BUILD_DIR) --cache-dir $(CACHE_DIR) $(SAM_BUILD_ARGS)

validate: $(STAMP) $(SAM_STAMP) ## cfn-lint on every template, then sam validate --lint
	$(VENV)/bin/cfn-lint template.yaml infra/*.yaml
	$(SAM_ENV) $(SAM) validate --lint

openapi: $(STAMP) ## regenerate openapi.json (the merged OpenAPI document the docs function serves)
	$(PY) scripts/openapi.py
