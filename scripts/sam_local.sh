#!/usr/bin/env bash
# `make sam-local`: the functions in Lambda containers (SAM -> the Lambda runtime interface emulator
# -> our handlers), offline, against a local PostgreSQL:
#   1. builds for this machine's architecture into .aws-sam/local (sam build --cached),
#   2. applies the migrations to DATABASE_URL,
#   3. runs `sam local start-api --warm-containers EAGER --env-vars <file>` on SAM_LOCAL_PORT.
# Needs a Docker-compatible engine (DOCKER_HOST is honoured) and a PostgreSQL the containers can
# reach over TCP (the embedded one of `make dev` only has a Unix socket), e.g.
#   docker run -d -p 5432:5432 -e POSTGRES_HOST_AUTH_METHOD=trust postgres:16
#
# Environment:
#   DATABASE_URL            this machine's view of the database (migrations); default
#                           postgresql://postgres@127.0.0.1:5432/todo (the database is created)
#   SAM_LOCAL_DATABASE_URL  the containers' view; default DATABASE_URL with 127.0.0.1/localhost
#                           replaced by SAM_LOCAL_HOST
#   SAM_LOCAL_HOST          how a container reaches this machine; default $LAMBDA_HOST_IP, else
#                           host.docker.internal on macOS, else the engine's bridge gateway
#   SAM_LOCAL_ENV_FILE      --env-vars file; default env.local.json if it exists, else (or when
#                           "generate") one written to .local/sam-local-env.json from
#                           env.local.example.json with SAM_LOCAL_DATABASE_URL and the development
#                           BETTER_AUTH_SECRET, the one `make token` signs with
#   SAM_LOCAL_PORT          default 3000
#   SAM_LOCAL_ARCH          default this machine's (x86_64 or arm64)
#   SAM_LOCAL_SKIP_PULL=1   do not pull the Lambda image (an engine with no registry access)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
scripts/bootstrap_tools.sh

case "${SAM_LOCAL_ARCH:-$(uname -m)}" in
  x86_64 | amd64) arch=x86_64 ;;
  arm64 | aarch64) arch=arm64 ;;
  *) echo "error: unsupported architecture ${SAM_LOCAL_ARCH:-$(uname -m)}" >&2; exit 2 ;;
esac
port=${SAM_LOCAL_PORT:-3000}
build_dir=.aws-sam/local

if ! docker_info=$(docker info --format '{{.ServerVersion}}' 2>&1); then
  echo "error: no Docker-compatible engine answers (DOCKER_HOST=${DOCKER_HOST:-unset}):" >&2
  echo "$docker_info" | tail -n 3 >&2
  exit 1
fi

host=${SAM_LOCAL_HOST:-${LAMBDA_HOST_IP:-}}
if [ -z "$host" ]; then
  if [ "$(uname -s)" = Darwin ]; then
    host=host.docker.internal
  else
    host=$(docker network inspect bridge --format '{{(index .IPAM.Config 0).Gateway}}' 2>/dev/null || true)
    host=${host:-172.17.0.1}
  fi
fi

database_url=${DATABASE_URL:-postgresql://postgres@127.0.0.1:5432/todo}
export DATABASE_URL=$database_url
container_database_url=${SAM_LOCAL_DATABASE_URL:-$(
  .venv/bin/python -m scripts.sam_local_env container-url "$database_url" "$host"
)}

echo "==> database: creating it if missing, then migrations ($database_url)" >&2
.venv/bin/python -m scripts.sam_local_env create-database "$database_url"
.venv/bin/alembic upgrade head

env_file=${SAM_LOCAL_ENV_FILE:-}
if [ -z "$env_file" ] && [ -f env.local.json ]; then env_file=env.local.json; fi
if [ -z "$env_file" ] || [ "$env_file" = generate ]; then
  env_file=.local/sam-local-env.json
  .venv/bin/python -m scripts.sam_local_env env-file "$container_database_url" > "$env_file"
fi
echo "==> --env-vars $env_file (containers use $container_database_url)" >&2

echo "==> sam build for $arch into $build_dir (cached after the first time)" >&2
scripts/sam_build.sh "$arch" --build-dir "$build_dir" --cached --cache-dir .aws-sam/local-cache

sam=.local/sam/bin/sam
[ -x "$sam" ] || sam=sam
pull=()
if [ "${SAM_LOCAL_SKIP_PULL:-}" = 1 ]; then pull=(--skip-pull-image); fi
# The secret ARNs are required parameters; locally they are placeholders, never read: the
# --env-vars file sets the secrets themselves and empties every *_SECRET_ID.
placeholder=arn:aws:secretsmanager:us-east-1:000000000000:secret:local-unused
echo "==> sam local start-api on http://127.0.0.1:$port (Ctrl-C stops it and its containers)" >&2
export SAM_CLI_TELEMETRY=0
exec "$sam" local start-api \
  --template "$build_dir/template.yaml" \
  --port "$port" \
  --warm-containers EAGER \
  --env-vars "$env_file" \
  "${pull[@]}" \
  --parameter-overrides "Architecture=$arch" "DatabaseUrlSecretArn=$placeholder" \
  "BetterAuthSecretArn=$placeholder" "CohereApiKeySecretArn=$placeholder"
