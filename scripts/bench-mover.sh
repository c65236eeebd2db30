#!/usr/bin/env bash
# Data-mover benchmarks (not a test): prints the side-by-side table of BENCHMARKS.md's
# "Data mover" section. Trees live on tmpfs (/dev/shm) so disk writeback does not mask
# the mover. Needs rsync, stunnel and python3; takes a few minutes and ~3 GiB of tmpfs.
#   scripts/bench-mover.sh [--runs N]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --quiet --bin ferrosync
exec python3 scripts/bench_mover.py --bin "${CARGO_TARGET_DIR:-target}/debug/ferrosync" "$@"
