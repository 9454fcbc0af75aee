#!/usr/bin/env bash
# `make run`: the lab, the portal on http://127.0.0.1:$PORT (gunicorn, as production serves it) and the task
# cluster; one Ctrl-C stops all of it within 15 s.
#
# The portal's processes run in process groups of their own (setsid): the terminal's Ctrl-C reaches only this
# script, which sends each group's leader ONE SIGTERM (a second signal while django-q2's handler runs deadlocks it;
# the leaders stop their own workers), waits STOP_GRACE seconds and SIGKILLs what is left of each group. `python -m lab down` does the same for the lab's processes (and the
# demo's VM agent), at the same time. PIDs are kept in $LAB_RUN_DIR/run-dev.pids: a run that was killed outright
# is cleaned up by the next start.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
PORT="${PORT:-8000}"
STOP_GRACE="${STOP_GRACE:-8}"
export DEBUG="${DEBUG:-true}"
# The demo app (seed_demo, simulate_load); the lab's env file turns it on for other manage.py commands too.
export DEMO_ENABLED="${DEMO_ENABLED:-true}"
export PORTAL_URL="${PORTAL_URL:-http://127.0.0.1:${PORT}}"
# One lab per run directory (default var/lab); settings.py reads its lab.env.
export LAB_RUN_DIR="${LAB_RUN_DIR:-$PWD/var/lab}"
export LAB_ENV_FILE="${LAB_ENV_FILE:-$LAB_RUN_DIR/lab.env}"
PIDS_FILE="$LAB_RUN_DIR/run-dev.pids"

pids=()
names=()

# The process groups (given as leader PIDs) that still have a live, non-zombie process.
alive_groups() {
  [ "$#" -gt 0 ] || return 0
  ps -e -o pgid=,stat= | awk -v want=" $* " '$2 !~ /^Z/ && index(want, " " $1 " ") { print $1 }' | sort -u
}

# Stop process groups: one SIGTERM to each leader, SIGKILL to each group after STOP_GRACE seconds.
# Prints "pid:stopped" or "pid:killed" per group.
stop_groups() {
  local pid deadline left
  for pid in "$@"; do kill -TERM "$pid" 2>/dev/null || true; done
  deadline=$((SECONDS + STOP_GRACE))
  left=$(alive_groups "$@")
  while [ -n "$left" ] && [ "$SECONDS" -lt "$deadline" ]; do
    sleep 0.2
    # shellcheck disable=SC2086
    left=$(alive_groups $left)
  done
  for pid in $left; do kill -KILL -- "-$pid" 2>/dev/null || true; done
  for pid in "$@"; do
    case " ${left//$'\n'/ } " in *" $pid "*) echo "$pid:killed" ;; *) echo "$pid:stopped" ;; esac
  done
}

# A process's start time (clock ticks since boot): with its PID it names one process, never a reused PID.
start_time() {
  sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | awk '{ print $20 }'
}

# A previous run killed outright (kill -9) may have left its portal processes: the same PID and start time.
if [ -s "$PIDS_FILE" ]; then
  old=()
  while read -r pid started _name; do
    if [ -n "$pid" ] && [ "$(start_time "$pid")" = "$started" ]; then old+=("$pid"); fi
  done <"$PIDS_FILE"
  if [ "${#old[@]}" -gt 0 ]; then
    echo "Stopping what a previous make run left: ${old[*]}"
    stop_groups "${old[@]}" >/dev/null
  fi
  rm -f "$PIDS_FILE"
fi

start() {
  local name=$1
  shift
  # Not a process-group leader here, so setsid makes the new session in place: $! is the program's own PID.
  setsid "$@" </dev/null &
  pids+=($!)
  names+=("$name")
  mkdir -p "$LAB_RUN_DIR"
  echo "$! $(start_time $!) $name" >>"$PIDS_FILE"
}

stopping=""
cleanup() {
  local status=$?
  [ -z "$stopping" ] || return 0
  stopping=1
  set +e
  # One Ctrl-C is enough: further ones must not interrupt the stop (ignored by the commands below too).
  # A closed output (`make run | tee log`, whose tee the Ctrl-C ended too) must not end the stop either.
  trap '' INT TERM HUP PIPE
  echo
  echo "Stopping (at most ${STOP_GRACE} s)..."
  local lab_out
  lab_out=$(mktemp)
  # The lab stops at the same time as the portal: a task waiting on a stand-in then fails fast.
  $PY -m lab down --run-dir "$LAB_RUN_DIR" >"$lab_out" 2>&1 &
  local lab_pid=$!
  local report=() line i extra
  if [ "${#pids[@]}" -gt 0 ]; then
    while read -r line; do
      extra=""
      if [ "${line#*:}" = killed ]; then extra=", killed"; fi
      for i in "${!pids[@]}"; do
        if [ "${line%%:*}" = "${pids[$i]}" ]; then report+=("${names[$i]} (${pids[$i]}${extra})"); fi
      done
    done < <(stop_groups "${pids[@]}")
  fi
  wait "$lab_pid" 2>/dev/null || true
  rm -f "$PIDS_FILE"
  local joined="no portal process"
  if [ "${#report[@]}" -gt 0 ]; then printf -v joined '%s, ' "${report[@]}"; joined=${joined%, }; fi
  echo "Stopped: ${joined}; $(tr -d '\n' <"$lab_out")"
  rm -f "$lab_out"
  exit "$status"
}
trap cleanup INT TERM HUP EXIT

$PY -m lab up --run-dir "$LAB_RUN_DIR"
$PY manage.py migrate --noinput
$PY manage.py createcachetable
$PY manage.py ensure_admin
if $PY manage.py help seed_demo >/dev/null 2>&1; then
  $PY manage.py seed_demo --run-dir "$LAB_RUN_DIR" ${DEMO_NETWORK:+--network "$DEMO_NETWORK"}
fi

start "task cluster" $PY manage.py qcluster
# Static files come from Django while DEBUG is on (vmautoscale/urls.py); production has nginx for them.
start "web server (gunicorn)" .venv/bin/gunicorn --bind "127.0.0.1:${PORT}" --workers "${WEB_WORKERS:-2}" --timeout 60 \
  --graceful-timeout 5 --no-control-socket --access-logfile - --error-logfile - vmautoscale.wsgi:application
echo
echo "Portal:   http://127.0.0.1:${PORT}/admin/   API docs: http://127.0.0.1:${PORT}/api/docs/"
echo "Lab:      $PY -m lab status --run-dir $LAB_RUN_DIR      (Ctrl-C stops everything)"
wait -n "${pids[@]}" || true
