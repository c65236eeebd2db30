#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what is missing, builds, then runs
# every tier (unit, plugin, data plane, control plane, end to end) with one cargo profile
# (dev). `.ci/run` calls exactly this. Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)

bash scripts/install-deps.sh

# CI runs on a fresh clone: keep cargo's build products between runs outside it (by
# path, so one profile's artifacts are simply reused), like the Go binaries in ~/.cache.
if [ "${CI:-}" = true ]; then
  export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/ferrosync/cargo-target}
  export FERROSYNC_PLUGINS_TARGET_DIR=${FERROSYNC_PLUGINS_TARGET_DIR:-$HOME/.cache/ferrosync/plugins-target}
fi

# The style the project keeps by habit, kept by CI too: formatting, and clippy over every
# target (tests, benches) with warnings as errors.
cargo fmt --check
cargo clippy --quiet --all-targets -- -D warnings
echo "cargo fmt --check and cargo clippy --all-targets -D warnings: clean"

# The policy plugins, from source: sample and hostile components for the plugin tier. Fails
# when a rebuilt sample plugin's digest differs from the pin committed in its bundle.
bash scripts/build-plugins.sh

# The controller and mover images (OCI, from Debian packages, no Docker), from the
# binaries the tests use; cached by content, so a warm run builds nothing. The end-to-end
# tests and the demo pull them from a registry on loopback.
images_start=$(date +%s)
# The same targets as the demo builds: with an example in the build, cargo enables the
# dev-dependencies' features for the binaries too, so a build of the binaries alone would
# link different ones and the demo would build its images again.
cargo build --quiet --bin ferrosync --bin ferrosync-mover --bin kubectl-ferrosync --example cluster
bash scripts/build-images.sh >/dev/null
echo "images built or found cached in $(( $(date +%s) - images_start ))s"

# The README's first command, as written (its own state directory, so a demo
# a developer has running is left alone); then stopped.
mkdir -p target
demo_state=$PWD/target/ferrosync-demo-check
trap 'FERROSYNC_STATE_DIR=$demo_state bash scripts/cluster.sh down >/dev/null 2>&1 || true' EXIT
FERROSYNC_STATE_DIR=$demo_state bash scripts/demo.sh >"$PWD/target/demo-check.log" 2>&1 \
  || { cat "$PWD/target/demo-check.log"; echo "scripts/demo.sh failed" >&2; exit 1; }
FERROSYNC_STATE_DIR=$demo_state bash scripts/cluster.sh down >/dev/null 2>&1
echo "scripts/demo.sh works ($(grep -o 'running ([0-9]*s)' "$PWD/target/demo-check.log"))"

log=$(mktemp)
trap 'rm -f "$log"; FERROSYNC_STATE_DIR=$demo_state bash scripts/cluster.sh down >/dev/null 2>&1 || true' EXIT
# Every end-to-end binary's apiserver appends its audit events here; the least-privilege
# check then compares what the controller's ServiceAccount used with deploy/base/rbac.yaml.
export FERROSYNC_AUDIT_LOG=$PWD/target/e2e-audit.log
rm -f "$FERROSYNC_AUDIT_LOG" "$FERROSYNC_AUDIT_LOG.restarts" "${FERROSYNC_AUDIT_LOG%.log}"-*.log
set +e
cargo test --no-fail-fast "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
if [ $# -eq 0 ]; then
  cargo test --test rbac_audit -- --ignored 2>&1 | tee -a "$log"
  [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
fi
set -e

echo "test suite finished in $(( $(date +%s) - start ))s (cargo test exit status $status)"
# One closing line over every test binary, in the plain form CI reads last.
awk '/^test result:/ {
  for (i = 1; i <= NF; i++) {
    if ($(i) ~ /^passed;?$/) p += $(i-1); if ($(i) ~ /^failed;?$/) f += $(i-1); if ($(i) ~ /^ignored;?$/) s += $(i-1)
  }
} END { printf "total: %d passed, %d failed, %d skipped\n", p, f, s }' "$log"
exit "$status"
