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

# requirements-dev.txt (edited by hand) is installed from its lock, every file hash-checked
# (pip itself included); lock_select.py first checks that the lock still answers it. The
# lock is the whole resolution, so --no-deps (pip 23's hash mode trips on dependencies
# named with extras); `pip check` then confirms nothing is missing.
$(STAMP): requirements-dev.txt.lock requirements-dev.txt layers/shared/requirements.txt
	@test -x $(PY) || "$$(scripts/find-python312.sh)" -m venv $(VENV)
	@$(PY) scripts/lock_select.py requirements-dev.txt.lock requirements-dev.txt --check
	$(PY) -m pip install --quiet --disable-pip-version-check --require-hashes --no-deps -r requirements-dev.txt.lock 2>&1 | grep -v '^WARNING: Location' ; test $${PIPESTATUS[0]} -eq 0
	@$(PY) -m pip check --disable-pip-version-check
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
		apt-get -o DPkg::Lock::Timeout=600 update -qq && DEBIAN_FRONTEND=noninteractive \
			apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends chromium; \
	else \
		echo "$(CHROMIUM) is missing and this is not root: run 'sudo apt-get install chromium' (needed by tests/e2e/test_docs_browser.py)" >&2; \
		exit 1; \
	fi
	@test -x $(CHROMIUM) || { echo "apt-get did not install $(CHROMIUM)" >&2; exit 1; }

# ---------------------------------------------------------------- AWS SAM
# aws-sam-cli pins boto3, click and pydantic: it gets its own venv under .tools/sam,
# installed hash-checked from requirements-sam.txt.lock (see "supply chain" below).
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

$(SAM_STAMP): requirements-sam.txt.lock requirements-sam.txt
	@test -x $(SAM_VENV)/bin/python || "$$(scripts/find-python312.sh)" -m venv $(SAM_VENV)
	@$(SAM_VENV)/bin/python scripts/lock_select.py requirements-sam.txt.lock requirements-sam.txt --check
	$(SAM_VENV)/bin/python -m pip install --quiet --disable-pip-version-check --require-hashes --no-deps -r requirements-sam.txt.lock 2>&1 | grep -v '^WARNING: Location' ; test $${PIPESTATUS[0]} -eq 0
	@$(SAM_VENV)/bin/python -m pip check --disable-pip-version-check
	@touch $(SAM_STAMP)

sam-tools: $(SAM_STAMP) ## aws-sam-cli in its own venv (.tools/sam)

build: $(SAM_STAMP) ## sam build for ARCH (arm64, the default, or x86_64): cached and parallel (samconfig.toml)
	$(SAM_ENV) $(SAM) build --parameter-overrides Architecture=$(ARCH) --build-dir $(BUILD_DIR) --cache-dir $(CACHE_DIR) $(SAM_BUILD_ARGS)

validate: $(STAMP) $(SAM_STAMP) ## cfn-lint on every template, then sam validate --lint
	$(VENV)/bin/cfn-lint template.yaml infra/*.yaml
	$(SAM_ENV) $(SAM) validate --lint

openapi: $(STAMP) ## regenerate openapi.json (the merged OpenAPI document the docs function serves)
	$(PY) scripts/openapi.py

# ---------------------------------------------------------------- supply chain
# Every pip install of the project is hash-checked (--require-hashes) against a lock that
# `make lock` compiles with uv (`uv pip compile --generate-hashes`: each pinned version with
# the sha256 of every file it has on the index, all platforms) from the requirement files,
# which stay the ones edited by hand:
#   layers/shared/requirements.txt  -> layers/shared/requirements.txt.lock   the SharedLayer:
#       Lambda's manylinux2014, CPython 3.12, wheels only; resolved for arm64, and x86_64
#       must resolve to the very same pins (one lock serves both architectures)
#   requirements-dev.txt            -> requirements-dev.txt.lock   .venv, compiled with the
#       layer's lock as constraints: tests run the versions the layer ships
#   functions/docs/requirements.txt -> requirements-docs.txt.lock  the docs function (--no-deps)
#   requirements-sam.txt            -> requirements-sam.txt.lock   .tools/sam
#   requirements-uv.txt             -> requirements-uv.txt.lock    .tools/uv (`make lock`)
#   requirements-audit.txt          -> requirements-audit.txt.lock .tools/audit (`make audit`)
# Compiled again, a lock keeps its pins and moves only what its requirement file changed;
# `make lock UPGRADE=1` moves every pin to the newest version the requirement files allow.
UV_VENV := .tools/uv
UV_STAMP := $(UV_VENV)/.installed
AUDIT_VENV := .tools/audit
AUDIT_STAMP := $(AUDIT_VENV)/.installed
LAYER_LOCK := layers/shared/requirements.txt.lock
LOCKS := $(LAYER_LOCK) requirements-dev.txt.lock requirements-docs.txt.lock requirements-sam.txt.lock \
	requirements-uv.txt.lock requirements-audit.txt.lock
UV_COMPILE = UV_CUSTOM_COMPILE_COMMAND="make lock" $(UV_VENV)/bin/uv pip compile --quiet --generate-hashes \
	--python-version 3.12 $(if $(UPGRADE),--upgrade)
LAYER_TARGET = --only-binary :all: --python-platform $(1)-manylinux2014

.PHONY: lock audit

$(UV_STAMP): requirements-uv.txt.lock requirements-uv.txt
	@test -x $(UV_VENV)/bin/python || "$$(scripts/find-python312.sh)" -m venv $(UV_VENV)
	@$(UV_VENV)/bin/python scripts/lock_select.py requirements-uv.txt.lock requirements-uv.txt --check
	$(UV_VENV)/bin/python -m pip install --quiet --disable-pip-version-check --require-hashes --no-deps -r requirements-uv.txt.lock 2>&1 | grep -v '^WARNING: Location' ; test $${PIPESTATUS[0]} -eq 0
	@$(UV_VENV)/bin/python -m pip check --disable-pip-version-check
	@touch $(UV_STAMP)

$(AUDIT_STAMP): requirements-audit.txt.lock requirements-audit.txt
	@test -x $(AUDIT_VENV)/bin/python || "$$(scripts/find-python312.sh)" -m venv $(AUDIT_VENV)
	@$(AUDIT_VENV)/bin/python scripts/lock_select.py requirements-audit.txt.lock requirements-audit.txt --check
	$(AUDIT_VENV)/bin/python -m pip install --quiet --disable-pip-version-check --require-hashes --no-deps -r requirements-audit.txt.lock 2>&1 | grep -v '^WARNING: Location' ; test $${PIPESTATUS[0]} -eq 0
	@$(AUDIT_VENV)/bin/python -m pip check --disable-pip-version-check
	@touch $(AUDIT_STAMP)

lock: $(UV_STAMP) ## compile every lock (pins and sha256s) from the requirement files; UPGRADE=1: newest allowed versions
	$(UV_COMPILE) $(call LAYER_TARGET,aarch64) layers/shared/requirements.txt -o $(LAYER_LOCK)
	@set -euo pipefail; other="$$(mktemp)"; trap 'rm -f "$$other"' EXIT; \
	$(UV_COMPILE) $(call LAYER_TARGET,x86_64) --no-header --no-annotate layers/shared/requirements.txt \
		-c $(LAYER_LOCK) -o "$$other"; \
	pins() { grep -E '^[A-Za-z0-9]' "$$1" | cut -d' ' -f1 | sort; }; \
	if ! diff <(pins $(LAYER_LOCK)) <(pins "$$other") >&2; then \
		echo "the layer resolves differently for x86_64 (> lines) than for arm64 (<): one lock cannot serve both" >&2; exit 1; \
	fi; \
	echo "$(LAYER_LOCK): x86_64 resolves to the same $$(pins "$$other" | wc -l) pins as arm64"
	$(UV_COMPILE) --universal --no-deps functions/docs/requirements.txt -o requirements-docs.txt.lock
	$(UV_COMPILE) --universal requirements-dev.txt -c $(LAYER_LOCK) -o requirements-dev.txt.lock
	$(UV_COMPILE) --universal requirements-sam.txt -o requirements-sam.txt.lock
	$(UV_COMPILE) --universal requirements-uv.txt -o requirements-uv.txt.lock
	$(UV_COMPILE) --universal requirements-audit.txt -o requirements-audit.txt.lock
	@for lock in $(LOCKS); do \
		printf '%-38s %3d packages, %4d sha256\n' "$$lock" "$$(grep -cE '^[A-Za-z0-9]' "$$lock")" "$$(grep -c -- '--hash=sha256:' "$$lock")"; \
	done

# scripts/audit.py exits 1 on a known vulnerability and 2 when no service could audit every
# package, saying "pip-audit: vulnerability service unreachable; audit not run" (make then
# fails either way): an audit that did not run never passes for a clean one.
audit: $(AUDIT_STAMP) ## pip-audit of every lock (fails on a known vulnerability, or when its service is unreachable)
	@$(AUDIT_VENV)/bin/python scripts/audit.py $(LOCKS)
