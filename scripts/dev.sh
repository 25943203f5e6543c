#!/usr/bin/env bash
# Runs every function locally at http://127.0.0.1:${PORT:-8000} on an embedded PostgreSQL (data kept
# in .local/pgdata and reused), after applying migrations. Ctrl-C (or any other way out) stops the
# server and the database.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
# zoneinfo reads the pinned tzdata package only, as in Lambda (template.yaml).
export PYTHONTZPATH=""
exec .venv/bin/python -m scripts.dev_server "$@"
