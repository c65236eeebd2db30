#!/usr/bin/env bash
# Data-mover benchmarks (not a test): prints the side-by-side tables of BENCHMARKS.md's
# "Data mover" section: plain rsync, the mover on stunnel, the mover on its built-in
# tunnel; loopback, and an emulated WAN between two network namespaces (needs root, ip and
# tc). Trees live on tmpfs (/dev/shm) so disk writeback does not mask the mover. Needs
# rsync, stunnel and python3; takes 20-40 minutes and ~3 GiB of tmpfs.
#   scripts/bench-mover.sh [--quick] [--runs N] [--wan-runs N] [--sections loopback,incremental,delta,files,wan]
# --quick: the side-by-side set in about 5 minutes on an idle host (fewer delta and WAN
# configurations, one WAN repetition), ending with the targets table of issue 15.
# The dev profile is enough: the built-in tunnel's per-byte work is in ring and OpenSSL,
# which the dev profile builds optimised (profile.dev.package."*" opt-level 2).
set -euo pipefail
cd "$(dirname "$0")/.."
# ferrosync-mover is what mover Jobs run (the mover image installs it as ferrosync): the
# mover alone, half the size of the full binary, so each of a run's eleven start-ups
# (two movers, three TLS clients, six session gates) costs less.
cargo build --quiet --bin ferrosync-mover
exec python3 scripts/bench_mover.py --bin "${CARGO_TARGET_DIR:-target}/debug/ferrosync-mover" "$@"
