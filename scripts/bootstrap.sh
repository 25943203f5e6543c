#!/usr/bin/env bash
# Creates .venv (Python 3.12, as on Lambda) and installs requirements.lock when it changed.
# Everything it prints goes to stderr (`make -s token` prints only the token on stdout).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/progress.sh

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
  echo "==> creating .venv" >&2
  if [ "$python" = "pyenv" ]; then
    PYENV_VERSION=3.12.1 python3.12 -m venv .venv
  else
    "$python" -m venv .venv
  fi
  with_progress "upgrading pip" .local/logs/pip-upgrade.log \
    .venv/bin/python -m pip install --upgrade pip
fi

# requirements.lock pins every package with its hashes (`make lock` writes it): the exact files the
# tests ran against, on any machine. pip installs it the first time (it brings uv), uv syncs it
# afterwards (also removing what the lock no longer has); both refuse a file whose hash differs.
digest=$(sha256sum requirements.lock | cut -d' ' -f1)
if [ "$(cat .venv/.requirements-digest 2>/dev/null)" != "$digest" ]; then
  if [ -x .venv/bin/uv ]; then
    with_progress "syncing .venv with requirements.lock (hashes required)" \
      .local/logs/uv-sync.log \
      .venv/bin/uv pip sync --quiet --python .venv/bin/python --require-hashes requirements.lock
  else
    with_progress "installing requirements.lock into .venv (hashes required; about 2 minutes)" \
      .local/logs/pip-install.log \
      .venv/bin/python -m pip install --disable-pip-version-check --require-hashes \
      --no-deps -r requirements.lock
  fi
  echo "$digest" > .venv/.requirements-digest
fi
