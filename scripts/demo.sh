#!/usr/bin/env bash
# The demo: disaster recovery between two clusters, from a fresh clone.
#
# Two independent clusters, `east` and `west`, come up side by side: each has its own etcd,
# kube-apiserver, kube-controller-manager and kube-scheduler (built from Go modules), its
# own simulated nodes, storage, load balancer and routing (tests/support/sim, with address
# ranges that never overlap) and its own image registry on loopback (htpasswd), holding the
# controller and mover images scripts/build-images.sh built. ferrosync is installed in each
# as users install it: `kubectl apply --server-side -k` of an overlay over deploy/ (two
# replicas under leader election with their projected ServiceAccount token, read-only
# root, non-root), whose images the node pulls from the site's registry with a pull
# secret and runs in their own root filesystems; movers too. Then, with `kubectl ferrosync` only:
#   1. an application's PVC in east, with data, is replicated to west through a
#      LoadBalancer address (`replicate`), and `status` shows both sides;
#   2. east is lost (its control plane stops); `failover` in west promotes the last synced
#      copy, which is compared with what east had synced;
#   3. east comes back; `failback` sends west's changes only (bytes sent next to the
#      volume size) and switches back; east's volume then equals west's.
# Everything stays up for you to explore; `scripts/cluster.sh down` stops both clusters.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/demo-lib.sh
source scripts/demo-lib.sh
demo_sites=(east west)

demo_build
# Built before the clusters start: the first time, Debian's packages are downloaded, which
# can take longer than a cluster's start-up wait.
say "The controller and mover images, from Debian's packages without Docker (cached by content)"
step bash scripts/build-images.sh
cluster_up --pair --in-cluster --registry
# `kubectl ferrosync` is the kubectl-ferrosync binary on PATH, as a plugin is installed.
export PATH=$target_dir/debug:$PATH NO_COLOR=${NO_COLOR:-}

for site in east west; do
  say "$site: ferrosync from deploy/ (server-side apply), its images from $site's registry; the application namespace"
  install_ferrosync "$site" "$state/$site"
  kubectl --context "$site" create namespace shop >/dev/null
  # Privileged movers keep file owners, so the comparisons below cover them too.
  kubectl --context "$site" annotate namespace shop volsync.backube/privileged-movers=true >/dev/null
done
# Both sites' rollouts (image pulls, two replicas each) at once.
for site in east west; do wait_controller "$site"; done

say "east: the application's volume shop/db, with data in it"
kubectl --context east apply -f - <<'EOF2'
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: db, namespace: shop}
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 1Gi}}
EOF2
east_dir=$(volume_dir east shop db)
write_sample_data "$east_dir" "east's volume"

sites=(--source-context east --dest-context west --source-namespace shop)
say "Replicate it to west: a destination there, its key into east (never printed), the source"
step kubectl ferrosync replicate db --pvc db --manual once --rpo 10m "${sites[@]}"
address=$(kubectl --context west -n shop get replicationdestination db -o 'jsonpath={.status.rsyncTLS.address}')
echo "west's destination is reached at $address: a LoadBalancer address of west, from east's pods"

wait_for "the first sync" 120 kubectl --context east -n shop get replicationsource db -o 'jsonpath={.status.lastManualSync}' >/dev/null
echo "the first sync is done: $(kubectl --context east -n shop get replicationsource db -o 'jsonpath={.status.lastSyncDuration}')"

say "A change in east, synced now"
echo "order 1001" >>"$east_dir/db/tables/t1.csv"
step kubectl ferrosync sync db --wait "${sites[@]}"
# Wait until west has published that sync as its latest image.
synced=$(kubectl --context east -n shop get replicationsource db -o 'jsonpath={.status.lastSyncTime}')
wait_for "west to publish the last sync" 60 sh -c "t=\$(kubectl --context west -n shop get replicationdestination db -o 'jsonpath={.status.lastSyncTime}'); [ -n \"\$t\" ] && [ ! \"\$t\" \\< '$synced' ] && echo ok" >/dev/null
as_synced=$state/east-as-synced
rm -rf "$as_synced" && mkdir -p "$as_synced" && cp -a "$east_dir/." "$as_synced/"
step kubectl ferrosync status "${sites[@]}"

say "A write in east that never reaches west, and then east is lost: its control plane stops"
echo "order 1002 (after the last sync)" >>"$east_dir/db/tables/t1.csv"
step bash scripts/cluster.sh lose east
step kubectl --context east --request-timeout=3s get ns 2>&1 | tail -n 1 || true

say "Fail over in west: fence the copy, restore the latest image as shop/db"
failover_started=$(date +%s.%N)
step kubectl ferrosync failover db "${sites[@]}"
west_dir=$(volume_dir west shop db)
failover_s=$(awk -v a="$failover_started" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
echo "west's shop/db is bound and usable ${failover_s}s after the failover command started"
same_or_exit "$as_synced" "$west_dir" "the promoted volume" "east's last synced data"

say "The application runs in west now and changes about 1% of the data"
dd if=/dev/urandom of="$west_dir/db/ibdata1" bs=200000 count=1 seek=10 conv=notrunc status=none
echo "order 2001 (written in west)" >>"$west_dir/db/tables/t1.csv"

say "east comes back: its control plane, and with it its controller"
step bash scripts/cluster.sh restore east
wait_for "east's API" 60 kubectl --context east get ns shop -o name >/dev/null
wait_controller east

say "Fail back: east's volume becomes the destination of a reverse pair and gets only what changed"
failback_out=$state/failback.out
kubectl ferrosync failback db --switch-back "${sites[@]}" | tee "$failback_out"
same_or_exit "$west_dir" "$east_dir" "east's volume" "west's"
data_bytes=$(du -sb "$west_dir" | cut -f1)
sent=$(sed -n 's/^reverse sync done: \([0-9]*\) bytes.*/\1/p' "$failback_out" | head -n1)
echo "the reverse sync sent ${sent:-?} bytes for ${data_bytes} bytes of data in the volume"
step kubectl ferrosync status "${sites[@]}"

cat <<MSG

ferrosync two-cluster demo is running ($(( $(date +%s) - start ))s).
  timings:      the pair ${cluster_up_time:-started}; failover ${failover_s}s from the command to a bound PVC; reverse sync ${sent:-?} bytes for ${data_bytes} bytes
  kubeconfig:   $state/kubeconfig   (contexts east and west, admin)
  controllers:  in each cluster, from $state/east/install and $state/west/install:
                kubectl --context east -n ferrosync-system get deployment,pods,lease
                kubectl --context east -n ferrosync-system logs -l app.kubernetes.io/name=ferrosync-controller

Try:
  source $state/env; export PATH=$target_dir/debug:\$PATH
  kubectl ferrosync status --source-context east --dest-context west --source-namespace shop
  kubectl ferrosync sync db --wait --source-context east --dest-context west --source-namespace shop
  kubectl --context west -n shop get replicationdestinations,volumesnapshots,pvc
  bash scripts/cluster.sh lose east      # and: bash scripts/cluster.sh restore east
  kubectl ferrosync --help

Stop both clusters with: scripts/cluster.sh down
MSG
