#!/usr/bin/env bash
# The demo: starts the local control plane and the ferrosync controller (as its own
# ServiceAccount, bound by deploy/'s RBAC), applies the spec's example objects, and shows
# them with kubectl. Leaves everything running for you to poke at;
# `scripts/cluster.sh down` stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
state=${FERROSYNC_STATE_DIR:-$PWD/target/ferrosync-cluster}
export FERROSYNC_STATE_DIR=$state
start=$(date +%s)

bash scripts/install-deps.sh
cargo build --quiet --bin ferrosync --example cluster

bash scripts/cluster.sh down >/dev/null 2>&1 || true
bash scripts/cluster.sh up --service-account ferrosync-system/ferrosync
# shellcheck disable=SC1091
source "$state/env"

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }

# The controller's namespace, ServiceAccount and RBAC from deploy/ (the CRDs are already
# installed; the Deployment is for real clusters: here the controller runs locally).
step kubectl apply --server-side -f deploy/namespace.yaml -f deploy/serviceaccount.yaml -f deploy/rbac.yaml

port=${FERROSYNC_DEMO_PORT:-18080}
KUBECONFIG="$state/ferrosync-system.ferrosync.kubeconfig" \
FERROSYNC_SERVER__LISTEN="127.0.0.1:$port" \
  setsid target/debug/ferrosync controller >"$state/controller.log" 2>&1 </dev/null &
echo $! >"$state/controller.pid"
for _ in $(seq 300); do
  [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/readyz" || true)" = 200 ] && break
  kill -0 "$(cat "$state/controller.pid")" 2>/dev/null || { cat "$state/controller.log" >&2; exit 1; }
  sleep 0.1
done
step curl -s "http://127.0.0.1:$port/readyz"; echo

# The spec's examples, as written: they name namespaces myns, dest and source.
step kubectl create namespace myns
step kubectl create namespace dest
step kubectl create namespace source
step kubectl apply -f tests/fixtures/spec-examples/destination-my-dest.yaml \
  -f tests/fixtures/spec-examples/destination-database-destination.yaml \
  -f tests/fixtures/spec-examples/source-my-source.yaml
step kubectl apply -n source -f tests/fixtures/spec-examples/secret-tls-key-secret.yaml
step kubectl get replicationsources,replicationdestinations -A

cat <<MSG

ferrosync demo is running ($(( $(date +%s) - start ))s).
  kubeconfig:  $state/kubeconfig   (admin; the controller uses $state/ferrosync-system.ferrosync.kubeconfig)
  controller:  http://127.0.0.1:$port/metrics, log in $state/controller.log

Try:
  source $state/env
  kubectl get replicationdestinations -A -o wide
  kubectl explain replicationdestination.spec.rsyncTLS
  kubectl -n myns patch replicationdestination my-dest --type merge -p '{"spec":{"rsyncTLS":{"copyMethod":"Clone"}}}'   # rejected
  kubectl auth can-i --list --as system:serviceaccount:ferrosync-system:ferrosync

Stop it with: scripts/cluster.sh down
MSG
