#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what is missing, builds, then runs
# every tier. `.ci/run` calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)

bash scripts/install-deps.sh

cargo build --all-targets
cargo test --no-fail-fast 2>&1

echo "test suite finished in $(( $(date +%s) - start ))s"
