.DEFAULT_GOAL := help
.PHONY: help dev test token migrate lint format openapi sam-local bench build lock smoke

# Settings passed on the command line or from the environment: make dev PORT=8001
PORT ?= 8000

help:  ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  make %-10s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

dev:  ## run every function at http://127.0.0.1:8000 (or PORT=...) on an embedded PostgreSQL
	PORT=$(PORT) exec scripts/dev.sh

test:  ## the whole test suite (lint + pytest against real PostgreSQL)
	scripts/test.sh

token:  ## mint a development token: make token USER=alice
	@scripts/bootstrap.sh >&2
	@.venv/bin/python -m scripts.dev_token "$(or $(USER_ID),$(USER))"

smoke:  ## check a running API: make smoke API_URL=https://... [TOKEN=...] (no TOKEN: public checks)
	@python3 scripts/smoke.py "$(API_URL)"

migrate:  ## apply migrations to DATABASE_URL (use the direct, non-pooler URL)
	scripts/bootstrap.sh
	.venv/bin/alembic upgrade head

lint:  ## ruff check and format check (installs .venv first when needed)
	@scripts/bootstrap.sh
	.venv/bin/ruff check . && .venv/bin/ruff format --check .

format:  ## fix what ruff can and format the code
	@scripts/bootstrap.sh
	.venv/bin/ruff check --fix . && .venv/bin/ruff format .

openapi:  ## write openapi.json (the whole API) from the functions' apps
	@scripts/bootstrap.sh
	.venv/bin/python -m scripts.openapi

sam-local:  ## the functions in Lambda containers: sam local start-api against the local database (Docker)
	scripts/sam_local.sh

bench:  ## benchmark tables: cold start, warm latency, round trips, sizes, reads at scale (not tests)
	scripts/bootstrap.sh
	PYTHONPATH=.:layers/shared/python .venv/bin/python -m benchmarks.bench $(ARGS)
	PYTHONPATH=.:layers/shared/python .venv/bin/python -m benchmarks.scale

lock:  ## refresh every lock file from the requirements files (ARGS=--upgrade for newer versions)
	scripts/bootstrap.sh
	.venv/bin/python scripts/lock.py $(ARGS)
