#!/usr/bin/env bash
# Local clusters outside the tests: the same harness (tests/support), run by
# `cargo run --example cluster`. One cluster, or two independent ones (`east` and `west`,
# each with its own etcd, apiserver, controllers and simulators, and address ranges that
# never overlap) for the disaster-recovery demo.
#
#   scripts/cluster.sh up [--controllers|--simulators] [--service-account NS/NAME]...  one cluster (context east)
#   scripts/cluster.sh up --pair [--simulators] [--service-account NS/NAME]...        east and west, one kubeconfig
#   scripts/cluster.sh env                                                             print `export KUBECONFIG=...`
#   scripts/cluster.sh lose SITE                                                       stop SITE's control plane (data kept)
#   scripts/cluster.sh restore SITE                                                    start it again
#   scripts/cluster.sh down                                                            stop everything (and demo controllers)
#
# State lives in $FERROSYNC_STATE_DIR (default target/ferrosync-cluster); with --pair each
# site has its own directory below it (east/, west/) and the shared kubeconfig is at the top.
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

running() { [ -f "$1/cluster.pid" ] && kill -0 "$(cat "$1/cluster.pid")" 2>/dev/null; }

start_one() { # start_one DIR ARGS...: the example in the background; returns at once.
  local dir=$1
  shift
  mkdir -p "$dir"
  rm -f "$dir/ready" "$dir/stopped"
  # setsid: the cluster outlives this shell, and a Ctrl-C here does not reach it.
  # CARGO_MANIFEST_DIR: the harness finds the repository at run time (see bins::repo_root).
  CARGO_MANIFEST_DIR="$PWD" setsid "${CARGO_TARGET_DIR:-target}/debug/examples/cluster" --state-dir "$dir" "$@" >"$dir/cluster.log" 2>&1 </dev/null &
  echo $! >"$dir/cluster.pid"
}

wait_ready() { # wait_ready DIR
  local dir=$1
  for _ in $(seq 1200); do
    [ -f "$dir/ready" ] && { grep "ready in" "$dir/cluster.log" >&2 || true; return 0; }
    if ! kill -0 "$(cat "$dir/cluster.pid")" 2>/dev/null; then
      echo "the cluster in $dir failed to start:" >&2; cat "$dir/cluster.log" >&2; return 1
    fi
    sleep 0.1
  done
  echo "the cluster in $dir did not become ready; see $dir/cluster.log" >&2
  return 1
}

case "${1:-}" in
  up)
    shift
    pair=false
    args=()
    for a in "$@"; do
      if [ "$a" = --pair ]; then pair=true; else args+=("$a"); fi
    done
    for d in "$state" "$state/east" "$state/west"; do
      if running "$d"; then echo "already running; scripts/cluster.sh down first" >&2; exit 1; fi
    done
    mkdir -p "$state"
    rm -f "$state/ready"
    cargo build --quiet --example cluster
    started=$(date +%s.%N)
    if $pair; then
      # Both at once: the pair's start time is the slower of the two.
      start_one "$state/east" --site east "${args[@]}"
      start_one "$state/west" --site west "${args[@]}"
      wait_ready "$state/east"
      wait_ready "$state/west"
      PATH=$(sed -n 's/^export PATH=\(.*\):\$PATH$/\1/p' "$state/east/env"):$PATH \
        KUBECONFIG="$state/east/kubeconfig:$state/west/kubeconfig" \
        kubectl config view --flatten >"$state/kubeconfig"
      printf 'export KUBECONFIG=%s\n%s\n' "$state/kubeconfig" "$(grep '^export PATH' "$state/east/env")" >"$state/env"
      printf 'east west\n' >"$state/ready"
      awk -v a="$started" -v b="$(date +%s.%N)" 'BEGIN { printf "two clusters (east, west) up in %.1fs\n", b - a }' >&2
    else
      start_one "$state" "${args[@]}"
      wait_ready "$state"
    fi
    echo "up; run: source $state/env" >&2
    ;;
  env)
    cat "$state/env"
    ;;
  lose|restore)
    site=${2:?"$1 needs a site: east or west"}
    dir=$state/$site
    running "$dir" || { echo "$site is not running" >&2; exit 1; }
    if [ "$1" = lose ]; then
      kill -USR1 "$(cat "$dir/cluster.pid")"
      for _ in $(seq 300); do [ -f "$dir/stopped" ] && break; sleep 0.1; done
      [ -f "$dir/stopped" ] || { echo "$site's control plane did not stop" >&2; exit 1; }
      echo "$site's control plane is stopped (etcd, kube-apiserver, controllers); its data is kept" >&2
    else
      kill -USR2 "$(cat "$dir/cluster.pid")"
      for _ in $(seq 900); do [ -f "$dir/stopped" ] || break; sleep 0.1; done
      [ -f "$dir/stopped" ] && { echo "$site's control plane did not come back; see $dir/cluster.log" >&2; exit 1; }
      echo "$site's control plane is back" >&2
    fi
    ;;
  down)
    for d in "$state" "$state/east" "$state/west"; do
      stop_pid "$d/controller.pid"
      stop_pid "$d/cluster.pid"
      rm -f "$d/ready" "$d/stopped"
    done
    echo "clusters down" >&2
    ;;
  *)
    sed -n '2,15p' "$0" >&2; exit 2
    ;;
esac
