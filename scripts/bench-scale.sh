#!/usr/bin/env bash
# The control-plane scale benchmark (issues 7 and 10). Each run gets a fresh control plane
# (real etcd, kube-apiserver with a metadata audit log, kube-controller-manager with its
# client rate limit raised, kube-scheduler; simulated node and CSI driver), a trivial mover,
# and the controller as its own ServiceAccount with deploy/'s RBAC.
#   scripts/bench-scale.sh                 # N = 100, then the idle object
#   scripts/bench-scale.sh 100 100 1000    # three convergence runs
#   scripts/bench-scale.sh idle            # only the idle object
# Each N prints: the time until every pair completed its first sync, the controller's
# peak RSS (and its peak before the first create) and CPU seconds, the apiserver's CPU seconds while converging, and the
# controller's own API requests per pair by verb and resource (audit log, by its user).
# "idle" prints the requests of pairs scheduled far ahead over FERROSYNC_SCALE_IDLE_WINDOW
# seconds (default 300), scaled to an hour.
# Knobs: FERROSYNC_SCALE_KCM_QPS (kube-controller-manager --kube-api-qps, default 500,
# burst twice that), FERROSYNC_SCALE_IDLE_PAIRS (default 10), CARGO_PROFILE_DEV_OPT_LEVEL
# (the controller's crate, default 2: an optimised build; dependencies are at 2 anyway).
# Not part of the test suite: it measures, it does not assert timings. The build is
# niced; the runs are not (they are what is measured).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh >/dev/null
[ $# -gt 0 ] || set -- 100 idle
export CARGO_PROFILE_DEV_OPT_LEVEL=${CARGO_PROFILE_DEV_OPT_LEVEL:-2}
# Every run writes its own audit log into its control plane's directory.
unset FERROSYNC_AUDIT_LOG
nice -n 10 cargo test --quiet --test scale --no-run 2>&1 | grep -v '^ *Executable' || true
export FERROSYNC_SCALE_BUILD="$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src || echo +changes), ferrosync crate at opt-level $CARGO_PROFILE_DEV_OPT_LEVEL (dev profile)"
echo "build measured: $FERROSYNC_SCALE_BUILD; kube-controller-manager --kube-api-qps=${FERROSYNC_SCALE_KCM_QPS:-500}; $(nproc) cores"
out=$(mktemp)
trap 'rm -f "$out"' EXIT
for run in "$@"; do
  case "$run" in
    idle) test=idle_object ;;
    *[!0-9]* | "") echo "not a number of pairs nor 'idle': $run" >&2; exit 2 ;;
    *) test=converge_pairs; export FERROSYNC_SCALE_N=$run ;;
  esac
  if cargo test --quiet --test scale -- --ignored --exact --nocapture "$test" >"$out" 2>&1; then
    sed -n '/^=== scale report/,/^=== end/p' "$out"
  else
    echo "run '$run' failed; end of its output:" >&2
    tail -n 60 "$out" >&2
    exit 1
  fi
done
