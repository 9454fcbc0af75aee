#!/usr/bin/env bash
# `make run`: the lab, the portal on http://127.0.0.1:$PORT and the task cluster; Ctrl-C stops all of it.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
PORT="${PORT:-8000}"
export DEBUG="${DEBUG:-true}"
# The demo app (seed_demo, simulate_load); the lab's env file turns it on for other manage.py commands too.
export DEMO_ENABLED="${DEMO_ENABLED:-true}"
export PORTAL_URL="${PORTAL_URL:-http://127.0.0.1:${PORT}}"

pids=()
cleanup() {
  trap - INT TERM EXIT
  echo; echo "Stopping..."
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  $PY -m lab down >/dev/null 2>&1 || true
  echo "Stopped."
}
trap cleanup INT TERM EXIT

$PY -m lab up
$PY manage.py migrate --noinput
$PY manage.py createcachetable
$PY manage.py ensure_admin
if $PY manage.py help seed_demo >/dev/null 2>&1; then $PY manage.py seed_demo; fi

$PY manage.py qcluster & pids+=($!)
$PY manage.py runserver "127.0.0.1:${PORT}" --noreload & pids+=($!)
echo
echo "Portal:   http://127.0.0.1:${PORT}/admin/   API docs: http://127.0.0.1:${PORT}/api/docs/"
echo "Lab:      $PY -m lab status      (Ctrl-C stops everything)"
wait -n "${pids[@]}" || true
