#!/usr/bin/env bash
# The demo: a real replication on a local control plane, from a fresh clone.
#
# It starts etcd, kube-apiserver, kube-controller-manager and kube-scheduler (built from
# Go modules), the simulated node, storage, load balancer and routing (tests/support/sim),
# and ferrosync itself from deploy/ (kubectl apply --server-side -k), whose two replicas run
# on the simulated node with their ServiceAccount's projected token. It applies
# the spec's examples (the Snapshot destination my-dest and the Clone source my-source),
# writes sample data into the source volume, shows the replication with kubectl, restores
# the destination's latest VolumeSnapshot and proves it equals the source. Everything stays
# up for you to poke at; `scripts/cluster.sh down` stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
state=${FERROSYNC_STATE_DIR:-$PWD/target/ferrosync-cluster}
export FERROSYNC_STATE_DIR=$state
start=$(date +%s)

bash scripts/install-deps.sh
cargo build --quiet --bin ferrosync --example cluster

bash scripts/cluster.sh down >/dev/null 2>&1 || true
bash scripts/cluster.sh up --in-cluster
# shellcheck disable=SC1091
source "$state/env"

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }
say() { printf '\n\033[1m# %s\033[0m\n' "$*"; }
controller_logs() { kubectl -n ferrosync-system logs -l app.kubernetes.io/name=ferrosync-controller --tail=40 --prefix 2>&1 || true; }
# wait_for DESCRIPTION SECONDS COMMAND...: polls until COMMAND prints something non-empty.
wait_for() {
  local what=$1 deadline=$(( $(date +%s) + $2 )) out
  shift 2
  while :; do
    out=$("$@" 2>/dev/null || true)
    [ -n "$out" ] && { printf '%s' "$out"; return 0; }
    [ "$(date +%s)" -lt "$deadline" ] || { echo "timed out waiting for $what" >&2; controller_logs >&2; return 1; }
    sleep 0.5
  done
}

say "ferrosync as users install it: deploy/ (here its test-cluster overlay: two replicas, image names the simulated node knows), server-side applied"
step kubectl apply --server-side -k deploy/overlays/test-cluster
step kubectl -n ferrosync-system rollout status deployment/ferrosync-controller --timeout=120s
leader=$(wait_for "a leader" 90 kubectl -n ferrosync-system get lease ferrosync-controller -o 'jsonpath={.spec.holderIdentity}')
echo "the controller runs in the cluster as system:serviceaccount:ferrosync-system:ferrosync (its projected token); leader: $leader"

say "Storage named as in the spec: StorageClass my-sc and VolumeSnapshotClass my-vsc (the simulated CSI driver)"
kubectl apply -f - <<'EOF'
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {name: my-sc}
provisioner: sim.csi.ferrosync.test
reclaimPolicy: Delete
---
apiVersion: snapshot.storage.k8s.io/v1
kind: VolumeSnapshotClass
metadata: {name: my-vsc}
driver: sim.csi.ferrosync.test
deletionPolicy: Delete
EOF
step kubectl create namespace myns
step kubectl create namespace source
# Privileged movers keep file owners, so the comparison below covers them too.
step kubectl annotate namespace myns source volsync.backube/privileged-movers=true

say "The destination, exactly as the spec writes it"
step kubectl apply -f tests/fixtures/spec-examples/destination-my-dest.yaml
address=$(wait_for "the destination's address" 60 kubectl -n myns get replicationdestination my-dest -o 'jsonpath={.status.rsyncTLS.address}')
key_secret=$(kubectl -n myns get replicationdestination my-dest -o 'jsonpath={.status.rsyncTLS.keySecret}')
step kubectl -n myns get replicationdestination my-dest -o 'jsonpath={.status.rsyncTLS}'; echo

say "Copy the destination's key to the source, as the spec says a user does (the key is never printed)"
psk=$(kubectl -n myns get secret "$key_secret" -o 'go-template={{index .data "psk.txt"}}')
kubectl apply -f - <<EOF
apiVersion: v1
kind: Secret
metadata: {name: volsync-rsync-dest-src-database-destination, namespace: source}
type: Opaque
data: {psk.txt: $psk}
EOF
unset psk

say "The source volume mysql-pv-claim, with some data in it"
kubectl apply -f - <<'EOF'
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: mysql-pv-claim, namespace: source}
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: my-sc
  resources: {requests: {storage: 1Gi}}
EOF
pv=$(wait_for "mysql-pv-claim to bind" 60 kubectl -n source get pvc mysql-pv-claim -o 'jsonpath={.spec.volumeName}')
src_dir=$(kubectl get pv "$pv" -o 'jsonpath={.spec.csi.volumeHandle}')
mkdir -p "$src_dir/db/tables" "$src_dir/conf" "$src_dir/empty"
for i in $(seq 1 200); do echo "row $i of the demo table" >"$src_dir/db/tables/t$i.csv"; done
head -c 20000000 /dev/urandom >"$src_dir/db/ibdata1"
printf '[mysqld]\nport=3306\n' >"$src_dir/conf/my.cnf"
ln -s ../conf/my.cnf "$src_dir/db/my.cnf"
chown -R 999:999 "$src_dir/db"
echo "wrote $(find "$src_dir" | wc -l) entries ($(du -sh "$src_dir" | cut -f1)) into the volume of $pv"

say "The source, as the spec writes it, with the destination's address instead of my.host.com"
sed "s/my\.host\.com/$address/" tests/fixtures/spec-examples/source-my-source.yaml | kubectl apply -f -

say "The replication, as kubectl get shows it"
deadline=$(( $(date +%s) + 120 ))
while :; do
  kubectl get replicationsources,replicationdestinations -A
  image=$(kubectl -n myns get replicationdestination my-dest -o 'jsonpath={.status.latestImage.name}')
  synced=$(kubectl -n source get replicationsource my-source -o 'jsonpath={.status.lastSyncTime}')
  [ -n "$image" ] && [ -n "$synced" ] && break
  [ "$(date +%s)" -lt "$deadline" ] || { echo "the replication did not finish" >&2; controller_logs >&2; exit 1; }
  sleep 3
  echo
done
step kubectl -n source get replicationsource my-source -o 'jsonpath={.status.latestMoverStatus.logs}'; echo
step kubectl -n myns get volumesnapshot

say "Prove it: restore the destination's latestImage ($image) and compare it with the source"
kubectl apply -f - <<EOF
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: restored, namespace: myns}
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: my-sc
  resources: {requests: {storage: 10Gi}}
  dataSource: {apiGroup: snapshot.storage.k8s.io, kind: VolumeSnapshot, name: $image}
EOF
restored_pv=$(wait_for "the restore to bind" 60 kubectl -n myns get pvc restored -o 'jsonpath={.spec.volumeName}')
restored_dir=$(kubectl get pv "$restored_pv" -o 'jsonpath={.spec.csi.volumeHandle}')
listing() { (cd "$1" && find . -mindepth 1 -printf '%p %y %m %U:%G %s %T@ %l\n' | sort); }
if diff -r --no-dereference "$src_dir" "$restored_dir" >/dev/null && diff <(listing "$src_dir") <(listing "$restored_dir") >/dev/null; then
  echo "the restored snapshot equals the source: $(listing "$src_dir" | wc -l) entries, same contents, modes, owners, mtimes and symlinks"
else
  echo "the restored snapshot differs from the source:" >&2
  diff <(listing "$src_dir") <(listing "$restored_dir") >&2 || true
  exit 1
fi

cat <<MSG

ferrosync demo is running ($(( $(date +%s) - start ))s).
  kubeconfig:  $state/kubeconfig   (admin)
  controller:  deployment/ferrosync-controller in ferrosync-system, two replicas; the Lease
               ferrosync-controller names the leader

Try:
  source $state/env
  kubectl get replicationsources,replicationdestinations -A
  kubectl -n myns describe replicationdestination my-dest
  kubectl -n source patch replicationsource my-source --type merge -p '{"spec":{"trigger":{"manual":"now"}}}'   # sync again
  kubectl -n ferrosync-system logs -l app.kubernetes.io/name=ferrosync-controller --prefix --tail=20
  kubectl -n ferrosync-system delete pod <the leader>   # the other replica takes over
  kubectl -n myns patch replicationdestination my-dest --type merge -p '{"spec":{"rsyncTLS":{"copyMethod":"Clone"}}}'   # rejected by the schema

Stop it with: scripts/cluster.sh down
MSG
