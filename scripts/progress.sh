# Sourced by the bootstrap scripts: run a slow step with a progress line every 10 s.
#   with_progress "installing requirements" LOGFILE command args...
# The step's own output goes to LOGFILE; on failure its last 40 lines are shown.
with_progress() {
  local label=$1 log=$2 started=$SECONDS pid status=0
  shift 2
  mkdir -p "$(dirname "$log")"
  echo "==> $label (log: $log)" >&2
  "$@" >"$log" 2>&1 &
  pid=$!
  # Ctrl-C or a kill of this script also ends the step.
  trap 'kill "$pid" 2>/dev/null; exit 130' INT TERM HUP
  while kill -0 "$pid" 2>/dev/null; do
    for _ in 1 2 3 4 5 6 7 8 9 10; do
      sleep 1
      kill -0 "$pid" 2>/dev/null || break
    done
    if kill -0 "$pid" 2>/dev/null; then
      last=$(tail -n 1 "$log" 2>/dev/null | tr -d '\r' | cut -c1-72 || true)
      echo "    ... $((SECONDS - started)) s${last:+: $last}" >&2
    fi
  done
  wait "$pid" || status=$?
  trap - INT TERM HUP
  if [ "$status" -ne 0 ]; then
    echo "error: $label failed (exit $status); the end of $log:" >&2
    tail -n 40 "$log" >&2
    return "$status"
  fi
  echo "    done in $((SECONDS - started)) s" >&2
}
