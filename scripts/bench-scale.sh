#!/usr/bin/env bash
# The control-plane scale benchmark (issue 7): converge N source/destination pairs on the
# local control plane with a trivial mover, and print a table row per N.
#   scripts/bench-scale.sh            # N = 100
#   scripts/bench-scale.sh 100 1000   # several sizes, each on a fresh control plane
# Not part of the test suite: it measures, it does not assert timings.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh >/dev/null
[ $# -gt 0 ] || set -- 100
for n in "$@"; do
  FERROSYNC_SCALE_N=$n cargo test --quiet --test scale -- --ignored --nocapture converge_pairs 2>&1 \
    | grep -E '^\|' | { if [ "$n" = "$1" ]; then cat; else tail -n 1; fi; }
done
