#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what is missing, builds, then runs
# every tier (unit, plugin, data plane, control plane, end to end) with one cargo profile
# (dev). `.ci/run` calls exactly this. Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)

bash scripts/install-deps.sh

# The policy plugins, from source: sample and hostile components for the plugin tier. Fails
# when a rebuilt sample plugin's digest differs from the pin committed in its bundle.
bash scripts/build-plugins.sh

# The README's first command, as written (its own state directory and port, so a demo
# a developer has running is left alone); then stopped.
mkdir -p target
demo_state=$PWD/target/ferrosync-demo-check
trap 'FERROSYNC_STATE_DIR=$demo_state bash scripts/cluster.sh down >/dev/null 2>&1 || true' EXIT
FERROSYNC_STATE_DIR=$demo_state FERROSYNC_DEMO_PORT=18081 bash scripts/demo.sh >"$PWD/target/demo-check.log" 2>&1 \
  || { cat "$PWD/target/demo-check.log"; echo "scripts/demo.sh failed" >&2; exit 1; }
FERROSYNC_STATE_DIR=$demo_state bash scripts/cluster.sh down >/dev/null 2>&1
echo "scripts/demo.sh works ($(grep -o 'running ([0-9]*s)' "$PWD/target/demo-check.log"))"

log=$(mktemp)
trap 'rm -f "$log"; FERROSYNC_STATE_DIR=$demo_state bash scripts/cluster.sh down >/dev/null 2>&1 || true' EXIT
# Every end-to-end binary's apiserver appends its audit events here; the least-privilege
# check then compares what the controller's ServiceAccount used with deploy/base/rbac.yaml.
export FERROSYNC_AUDIT_LOG=$PWD/target/e2e-audit.log
rm -f "$FERROSYNC_AUDIT_LOG"
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
