#!/usr/bin/env bash
# `sam build` without Docker for one Lambda architecture, the functions and the layer alike:
#   scripts/sam_build.sh [arm64|x86_64] [more sam build options, e.g. --build-dir DIR]
# The architecture (default arm64, as deployed) goes both to the template's Architecture parameter
# (the tasks function, built by SAM) and to LAMBDA_ARCHITECTURE (read by the layer's and the chat
# function's Makefiles): SAM does not tell a makefile build which architecture it targets.
# Needs python3.12 on PATH (CI: setup-python) or pyenv's 3.12.1 (or the venv's), and the SAM CLI,
# 1.170.0 or newer for arm64: older releases only accept manylinux2014 wheels for arm64, and some
# of cohere's dependencies no longer ship those.
set -euo pipefail
cd "$(dirname "$0")/.."

architecture="${1:-arm64}"
[ $# -gt 0 ] && shift
case "$architecture" in
  arm64 | x86_64) ;;
  *) echo "usage: $0 [arm64|x86_64] [sam build options]" >&2; exit 2 ;;
esac

if ! python3.12 --version >/dev/null 2>&1; then
  if PYENV_VERSION=3.12.1 python3.12 --version >/dev/null 2>&1; then
    export PYENV_VERSION=3.12.1
  elif [ -x .venv/bin/python3.12 ]; then
    export PATH="$PWD/.venv/bin:$PATH"
  else
    echo "error: python3.12 not found (pyenv install 3.12.1, or put a Python 3.12 on PATH)" >&2
    exit 1
  fi
fi

# The SAM CLI: $SAM if set, else .local/sam (its own venv: it pins boto3), else .venv's, else PATH.
sam="${SAM:-}"
for candidate in .local/sam/bin/sam .venv/bin/sam; do
  if [ -z "$sam" ] && [ -x "$candidate" ]; then sam="$candidate"; fi
done
sam="${sam:-sam}"
if ! command -v "$sam" >/dev/null 2>&1; then
  echo "error: SAM CLI not found: .venv/bin/python -m venv .local/sam && .local/sam/bin/pip install aws-sam-cli==1.170.0" >&2
  exit 1
fi
export SAM_CLI_TELEMETRY=0 LAMBDA_ARCHITECTURE="$architecture"
exec "$sam" build --template-file template.yaml --parameter-overrides "Architecture=$architecture" "$@"
