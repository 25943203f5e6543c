#!/usr/bin/env bash
# The whole test suite: lint, format check, then pytest against real PostgreSQL
# (TEST_DATABASE_URL when set, otherwise an embedded server the session starts itself).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
scripts/bootstrap_tools.sh
echo "==> ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
echo "==> pytest"
exec .venv/bin/python -m pytest "$@"
