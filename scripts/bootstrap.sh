#!/usr/bin/env bash
# Creates .venv (Python 3.12, as on Lambda) and installs requirements.lock when it changed.
set -euo pipefail
cd "$(dirname "$0")/.."

find_python() {
  if [ -n "${PYTHON:-}" ]; then echo "$PYTHON"; return; fi
  if PYENV_VERSION=3.12.1 python3.12 --version >/dev/null 2>&1; then echo "pyenv"; return; fi
  for candidate in python3.12 python3.13 python3; do
    if command -v "$candidate" >/dev/null 2>&1 &&
      "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; then
      echo "$candidate"; return
    fi
  done
  echo "error: Python 3.12 or newer is required (pyenv install 3.12.1)" >&2
  exit 1
}

if [ ! -x .venv/bin/python ]; then
  python=$(find_python)
  echo "==> creating .venv"
  if [ "$python" = "pyenv" ]; then
    PYENV_VERSION=3.12.1 python3.12 -m venv .venv
  else
    "$python" -m venv .venv
  fi
  .venv/bin/python -m pip install --quiet --upgrade pip
fi

# requirements.lock pins every package with its hashes (`make lock` writes it): the exact files the
# tests ran against, on any machine. pip installs it the first time (it brings uv), uv syncs it
# afterwards (also removing what the lock no longer has); both refuse a file whose hash differs.
digest=$(sha256sum requirements.lock | cut -d' ' -f1)
if [ "$(cat .venv/.requirements-digest 2>/dev/null)" != "$digest" ]; then
  if [ -x .venv/bin/uv ]; then
    echo "==> syncing .venv with requirements.lock (hashes required)"
    .venv/bin/uv pip sync --quiet --python .venv/bin/python --require-hashes requirements.lock
  else
    echo "==> installing requirements.lock (hashes required; first run takes a minute)"
    .venv/bin/python -m pip install --quiet --disable-pip-version-check --require-hashes \
      --no-deps -r requirements.lock
  fi
  echo "$digest" > .venv/.requirements-digest
fi
