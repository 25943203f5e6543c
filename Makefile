.PHONY: dev test token migrate lint format bench build lock

dev:  ## run both functions at http://127.0.0.1:8000 on an embedded PostgreSQL
	scripts/dev.sh

test:  ## the whole test suite (lint + pytest against real PostgreSQL)
	scripts/test.sh

token:  ## mint a development token: make token USER=alice
	@scripts/bootstrap.sh >&2
	@.venv/bin/python -m scripts.dev_token "$(or $(USER_ID),$(USER))"

migrate:  ## apply migrations to $$DATABASE_URL (use the direct, non-pooler URL)
	scripts/bootstrap.sh
	.venv/bin/alembic upgrade head

lint:
	.venv/bin/ruff check . && .venv/bin/ruff format --check .

format:
	.venv/bin/ruff check --fix . && .venv/bin/ruff format .

bench:  ## benchmark table: cold start, warm latency, SQL round trips, sizes (not part of tests)
	scripts/bootstrap.sh
	PYTHONPATH=.:layers/shared/python .venv/bin/python -m benchmarks.bench $(ARGS)

lock:  ## refresh every lock file from the requirements files (ARGS=--upgrade for newer versions)
	scripts/bootstrap.sh
	.venv/bin/python scripts/lock.py $(ARGS)
