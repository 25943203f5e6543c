#!/usr/bin/env bash
# Smoke test of `sam local start-api` (what `make sam-local` runs): builds, starts the API in Lambda
# containers on any Docker-compatible engine (DOCKER_HOST is honoured), then checks health, an
# authenticated create and list through the tasks function, the chat function, the MCP function's
# metadata, and a 401
# (scripts/sam_local_check.py; bodies are checked, as SAM answers 200 with an error body when a
# function fails to start). Stops SAM and its containers on the way out.
#
#   DATABASE_URL=postgresql://postgres@127.0.0.1:5432/todo scripts/sam_local_smoke.sh
#
# Same environment as scripts/sam_local.sh (SAM_LOCAL_HOST, SAM_LOCAL_DATABASE_URL,
# SAM_LOCAL_SKIP_PULL, SAM_LOCAL_ARCH), plus SAM_LOCAL_PORT (default: a free port) and
# SMOKE_WAIT_SECONDS (default 900: the first build downloads the layer's wheels and the first start
# pulls the Lambda image). The --env-vars file is always generated (the development secret).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh

port=${SAM_LOCAL_PORT:-$(.venv/bin/python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
log=.local/logs/sam-local-smoke.log
mkdir -p .local/logs
echo "==> starting sam local start-api on port $port (log: $log)" >&2

# Containers that exist before: the clean-up only removes ones SAM started for this build.
containers_before=$(docker ps -aq --no-trunc 2>/dev/null | sort || true)

# Its own session and process group: the clean-up below ends SAM (it removes its containers on
# SIGTERM) and nothing else.
SAM_LOCAL_PORT=$port SAM_LOCAL_ENV_FILE=generate setsid scripts/sam_local.sh >"$log" 2>&1 </dev/null &
sam_pid=$!

cleanup() {
  status=$?
  if kill -0 "$sam_pid" 2>/dev/null; then
    echo "==> stopping sam local (pid $sam_pid)" >&2
    kill -TERM "$sam_pid" 2>/dev/null || true
    for _ in $(seq 60); do kill -0 "$sam_pid" 2>/dev/null || break; sleep 0.5; done
    kill -KILL "$sam_pid" 2>/dev/null || true
  fi
  # SAM occasionally exits leaving a warm container behind: remove the new containers that mount
  # this build (never anyone else's).
  for id in $(comm -13 <(echo "$containers_before") <(docker ps -aq --no-trunc 2>/dev/null | sort)); do
    if docker inspect -f '{{range .Mounts}}{{.Source}} {{end}}' "$id" 2>/dev/null |
      grep -q "$PWD/.aws-sam/local/"; then
      echo "==> removing leftover container ${id:0:12}" >&2
      docker rm -f "$id" >/dev/null 2>&1 || true
    fi
  done
  if [ "$status" -ne 0 ]; then
    echo "==> the last 60 lines of $log" >&2
    tail -n 60 "$log" >&2
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Progress while the build and the first start run (both can take minutes).
(
  while kill -0 "$sam_pid" 2>/dev/null; do
    sleep 15
    line=$(grep -E '^(==>|    \.\.\. |Build Succeeded|Mounting|Building image|Running|All containers)' "$log" | tail -n 1 || true)
    line=${line#"    ... "}
    echo "    ... ${line:-starting}" >&2
  done
) &
progress_pid=$!

status=0
.venv/bin/python -m scripts.sam_local_check "http://127.0.0.1:$port" \
  --wait "${SMOKE_WAIT_SECONDS:-900}" --pid "$sam_pid" || status=$?
kill "$progress_pid" 2>/dev/null || true
exit "$status"
