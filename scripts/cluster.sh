#!/usr/bin/env bash
# The local control plane (etcd + kube-apiserver, optionally kube-controller-manager and
# kube-scheduler), outside the tests: the same harness, run by `cargo run --example cluster`.
#
#   scripts/cluster.sh up [--controllers] [--service-account NS/NAME]...   start it, in the background
#   scripts/cluster.sh env                                                  print `export KUBECONFIG=...`
#   scripts/cluster.sh down                                                 stop it (and a demo controller)
#
# State lives in $FERROSYNC_STATE_DIR (default target/ferrosync-cluster).
set -euo pipefail
cd "$(dirname "$0")/.."
state=${FERROSYNC_STATE_DIR:-$PWD/target/ferrosync-cluster}

stop_pid() { # stop_pid FILE: SIGTERM the process in FILE and wait (bounded) for it to go.
  local file=$1 pid
  [ -f "$file" ] || return 0
  pid=$(cat "$file")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid"
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
  fi
  rm -f "$file"
}

case "${1:-}" in
  up)
    shift
    if [ -f "$state/cluster.pid" ] && kill -0 "$(cat "$state/cluster.pid")" 2>/dev/null; then
      echo "already running; scripts/cluster.sh down first" >&2; exit 1
    fi
    mkdir -p "$state"
    rm -f "$state/ready"
    cargo build --quiet --example cluster
    # setsid: the control plane outlives this shell, and a Ctrl-C here does not reach it.
    setsid "${CARGO_TARGET_DIR:-target}/debug/examples/cluster" --state-dir "$state" "$@" >"$state/cluster.log" 2>&1 </dev/null &
    echo $! >"$state/cluster.pid"
    for _ in $(seq 1200); do
      [ -f "$state/ready" ] && break
      if ! kill -0 "$(cat "$state/cluster.pid")" 2>/dev/null; then
        echo "the control plane failed to start:" >&2; cat "$state/cluster.log" >&2; exit 1
      fi
      sleep 0.1
    done
    [ -f "$state/ready" ] || { echo "the control plane did not become ready; see $state/cluster.log" >&2; exit 1; }
    grep "ready in" "$state/cluster.log" >&2 || true
    echo "control plane up; run: source $state/env" >&2
    ;;
  env)
    cat "$state/env"
    ;;
  down)
    stop_pid "$state/controller.pid"
    stop_pid "$state/cluster.pid"
    rm -f "$state/ready"
    echo "control plane down" >&2
    ;;
  *)
    sed -n '2,9p' "$0" >&2; exit 2
    ;;
esac
