#!/usr/bin/env bash
# The one-cluster demo, ferrosync installed in the cluster as users install it (scripts/demo.sh
# is the two-cluster one, and installs each of its sites the same way).
#
# It starts etcd, kube-apiserver, kube-controller-manager and kube-scheduler (built from
# Go modules), the simulated node, storage, load balancer and routing (tests/support/sim)
# and an image registry on loopback (htpasswd) holding the controller and mover images
# scripts/build-images.sh built. ferrosync is installed from deploy/: `kubectl apply
# --server-side -k` of an overlay over deploy/overlays/test-cluster (two replicas under
# leader election with their projected ServiceAccount token, read-only root, non-root),
# whose images the node pulls from the registry with a pull secret and runs in their own
# root filesystems; movers too. Then it applies the spec's examples (the Snapshot
# destination my-dest and the Clone source my-source), writes sample data into the source
# volume, shows the replication with kubectl, restores the destination's latest
# VolumeSnapshot and proves it equals the source. Everything stays up for you to poke at;
# `scripts/cluster.sh down` stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/demo-lib.sh
source scripts/demo-lib.sh
demo_sites=(east)

say "What the demo needs: Debian packages, the control plane's Go binaries and the tools (scripts/install-deps.sh), then cargo build"
demo_build
# Built before the cluster starts, which would otherwise build them while it starts (the
# first time, Debian's packages are downloaded: longer than the cluster's start may take).
say "The controller and mover images, from Debian's packages without Docker (cached by content)"
step bash scripts/build-images.sh
say "The cluster: control plane, simulated node and storage, and its registry; the images pushed to it"
cluster_up --in-cluster --registry

say "ferrosync from deploy/ (server-side apply), its images from the cluster's registry"
install_ferrosync east "$state"
wait_controller east
echo "the controllers run in the cluster as system:serviceaccount:ferrosync-system:ferrosync (their projected token)"
installed=$(( $(date +%s) - start ))

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
src_dir=$(volume_dir east source mysql-pv-claim)
mkdir "$src_dir/empty"
write_sample_data "$src_dir" "source/mysql-pv-claim's volume"

say "The source, as the spec writes it, with the destination's address instead of my.host.com"
sed "s/my\.host\.com/$address/" tests/fixtures/spec-examples/source-my-source.yaml | kubectl apply -f -
source_applied=$(date +%s.%N)

say "The replication, as kubectl get shows it"
deadline=$(( $(date +%s) + 120 ))
while :; do
  kubectl get replicationsources,replicationdestinations -A
  image=$(kubectl -n myns get replicationdestination my-dest -o 'jsonpath={.status.latestImage.name}')
  synced=$(kubectl -n source get replicationsource my-source -o 'jsonpath={.status.lastSyncTime}')
  [ -n "$image" ] && [ -n "$synced" ] && break
  [ "$(date +%s)" -lt "$deadline" ] || { echo "the replication did not finish" >&2; controller_logs east >&2; exit 1; }
  sleep 3
  echo
done
replicated_s=$(awk -v a="$source_applied" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
echo "replicated and published as $image within ${replicated_s}s of applying the source (first sync: $(kubectl -n source get replicationsource my-source -o 'jsonpath={.status.lastSyncDuration}'))"
step kubectl -n source get replicationsource my-source -o 'jsonpath={.status.latestMoverStatus.logs}'; echo
step kubectl -n myns get volumesnapshot
# The destination listens again at once: its next mover Job shows the image movers run.
mover_image=$(wait_for "the destination's next mover Job" 60 kubectl -n myns get jobs -l app.kubernetes.io/component=mover -o 'jsonpath={.items[0].spec.template.spec.containers[0].image}')
echo "the movers run $mover_image, pulled from the cluster's registry with the pull secret the controller copied"

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
restored_dir=$(volume_dir east myns restored)
same_or_exit "$src_dir" "$restored_dir" "the restored snapshot" "the source"

cat <<MSG

ferrosync demo is running ($(( $(date +%s) - start ))s).
  timings:     the cluster ${cluster_up_time:-started}; ferrosync installed and leading ${installed}s into the demo; the spec's examples replicated ${replicated_s}s after the source was applied
  kubeconfig:  $state/kubeconfig   (admin)
  controller:  deployment/ferrosync-controller in ferrosync-system, two replicas, installed from $state/install
               (images from the cluster's registry, $state/registry.env); the Lease
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
