#!/usr/bin/env bash
# Data-mover benchmarks (not a test): prints the side-by-side tables of BENCHMARKS.md's
# "Data mover" section: plain rsync, the mover on stunnel, the mover on its built-in
# tunnel; loopback, and an emulated WAN between two network namespaces (needs root, ip and
# tc). Trees live on tmpfs (/dev/shm) so disk writeback does not mask the mover. Needs
# rsync, stunnel and python3; takes 20-30 minutes and ~3 GiB of tmpfs.
#   scripts/bench-mover.sh [--runs N] [--wan-runs N] [--sections loopback,delta,incremental,files,wan]
set -euo pipefail
cd "$(dirname "$0")/.."
# The built-in tunnel relays the data, so the mover crate is optimised (its dependencies
# keep the dev profile: OpenSSL itself is the system's optimised libssl).
cargo build --quiet --bin ferrosync --config 'profile.dev.package.ferrosync.opt-level=3' \
  --config 'profile.dev.package.ferrosync.debug-assertions=false'
exec python3 scripts/bench_mover.py --bin "${CARGO_TARGET_DIR:-target}/debug/ferrosync" "$@"
