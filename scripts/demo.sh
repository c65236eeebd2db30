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
state=${FERROSYNC_STATE_DIR:-$PWD/target/ferrosync-cluster}
export FERROSYNC_STATE_DIR=$state
start=$(date +%s)

bash scripts/install-deps.sh
cargo build --quiet --bin ferrosync --bin ferrosync-mover --bin kubectl-ferrosync --example cluster
target_dir=$(cd "${CARGO_TARGET_DIR:-target}" && pwd)

bash scripts/cluster.sh down >/dev/null 2>&1 || true
mkdir -p "$(dirname "$state")" # target/ may not exist when CARGO_TARGET_DIR is elsewhere
bash scripts/cluster.sh up --pair --in-cluster --registry 2>&1 | tee "$state.up.log"
pair_up=$(grep -o 'up in [0-9.]*s' "$state.up.log" | head -n1 || true)
rm -f "$state.up.log"
# shellcheck disable=SC1091
source "$state/env"
# `kubectl ferrosync` is the kubectl-ferrosync binary on PATH, as a plugin is installed.
export PATH=$target_dir/debug:$PATH NO_COLOR=${NO_COLOR:-}

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }
say() { printf '\n\033[1m# %s\033[0m  [%ss]\n' "$*" "$(( $(date +%s) - start ))"; }
controller_logs() { # controller_logs SITE: the tail of its controller pods' logs
  kubectl --context "$1" -n ferrosync-system logs -l app.kubernetes.io/name=ferrosync-controller --tail=40 --prefix 2>&1 || true
}
# wait_for DESCRIPTION SECONDS COMMAND...: polls until COMMAND prints something non-empty.
wait_for() {
  local what=$1 deadline=$(( $(date +%s) + $2 )) out
  shift 2
  while :; do
    out=$("$@" 2>/dev/null || true)
    [ -n "$out" ] && { printf '%s' "$out"; return 0; }
    [ "$(date +%s)" -lt "$deadline" ] || {
      echo "timed out waiting for $what" >&2
      for site in east west; do controller_logs "$site" >&2; done
      return 1
    }
    sleep 0.5
  done
}
# The directory holding a PVC's data on this machine (the simulated CSI driver's volume).
volume_dir() { # volume_dir CONTEXT NAMESPACE PVC
  local pv
  pv=$(wait_for "PVC $3 in $1 to bind" 120 kubectl --context "$1" -n "$2" get pvc "$3" -o 'jsonpath={.spec.volumeName}')
  kubectl --context "$1" get pv "$pv" -o 'jsonpath={.spec.csi.volumeHandle}'
}
# Sizes of files and links only: a directory's size depends on the filesystem holding it.
listing() { (cd "$1" && { find . -mindepth 1 ! -type d -printf '%p %y %m %U:%G %s %T@ %l\n'; find . -mindepth 1 -type d -printf '%p %y %m %U:%G %T@\n'; } | sort); }
same_tree() { diff -r --no-dereference "$1" "$2" >/dev/null && diff <(listing "$1") <(listing "$2") >/dev/null; }

# install_overlay SITE: a site's own overlay over deploy/overlays/test-cluster (two
# replicas, short leader-election and polling timings, each pod on its own address), as a
# platform team writes one: the controller and mover images from the site's registry, and
# its login as the pull secret of the controller and (copied by the controller) of the movers.
install_overlay() {
  local site=$1 dir=$state/$1/install
  # shellcheck disable=SC1090,SC1091
  (
    source "$state/$site/registry.env"
    mkdir -p "$dir"
    printf '{"auths":{"%s":{"username":"%s","password":"%s"}}}' \
      "$DEMO_REGISTRY" "$DEMO_REGISTRY_USERNAME" "$DEMO_REGISTRY_PASSWORD" >"$dir/dockerconfig.json"
    chmod 600 "$dir/dockerconfig.json"
    cat >"$dir/kustomization.yaml" <<EOF
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
- $(realpath --relative-to="$dir" deploy/overlays/test-cluster)
images:
- name: ferrosync.test/controller
  newName: ${DEMO_CONTROLLER_IMAGE%:*}
  newTag: ${DEMO_CONTROLLER_IMAGE##*:}
secretGenerator:
- name: ferrosync-registry
  namespace: ferrosync-system
  type: kubernetes.io/dockerconfigjson
  files: [.dockerconfigjson=dockerconfig.json]
  options: {disableNameSuffixHash: true}
patches:
- patch: |-
    apiVersion: apps/v1
    kind: Deployment
    metadata: {name: ferrosync-controller, namespace: ferrosync-system}
    spec:
      template:
        spec:
          imagePullSecrets: [{name: ferrosync-registry}]
          containers:
          - name: controller
            env:
            - {name: FERROSYNC_MOVER__IMAGE, value: "$DEMO_MOVER_IMAGE"}
            - {name: FERROSYNC_MOVER__IMAGE_PULL_SECRETS, value: '["ferrosync-registry"]'}
            - {name: FERROSYNC_MOVER__PROGRESS_INTERVAL, value: 1s}
EOF
  )
  echo "$dir"
}
# wait_controller SITE: the rollout done and one replica holding the Lease.
wait_controller() {
  local site=$1 leader
  kubectl --context "$site" -n ferrosync-system rollout status deployment/ferrosync-controller --timeout=180s >/dev/null
  leader=$(wait_for "a leader in $site" 90 kubectl --context "$site" -n ferrosync-system get lease ferrosync-controller -o 'jsonpath={.spec.holderIdentity}')
  echo "$site: $(kubectl --context "$site" -n ferrosync-system get deployment ferrosync-controller -o 'jsonpath={.status.readyReplicas}') controller replicas ready, image $(kubectl --context "$site" -n ferrosync-system get deployment ferrosync-controller -o 'jsonpath={.spec.template.spec.containers[0].image}'); leader ${leader%-*}"
}
for site in east west; do
  say "$site: ferrosync from deploy/ (server-side apply), its images from $site's registry; the application namespace"
  overlay=$(install_overlay "$site")
  printf '\n\033[1m$ %s\033[0m\n' "kubectl --context $site apply --server-side -k ${overlay#"$PWD"/}"
  echo "$(kubectl --context "$site" apply --server-side -k "$overlay" | wc -l) objects applied"
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
mkdir -p "$east_dir/db/tables" "$east_dir/conf"
for n in $(seq 1 200); do echo "row $n of the demo table" >"$east_dir/db/tables/t$n.csv"; done
head -c 20000000 /dev/urandom >"$east_dir/db/ibdata1"
printf '[mysqld]\nport=3306\n' >"$east_dir/conf/my.cnf"
ln -s ../conf/my.cnf "$east_dir/db/my.cnf"
chown -R 999:999 "$east_dir/db"
echo "wrote $(find "$east_dir" | wc -l) entries ($(du -sh "$east_dir" | cut -f1)) into east's volume"

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
if same_tree "$as_synced" "$west_dir"; then
  echo "the promoted volume equals east's last synced data: $(listing "$west_dir" | wc -l) entries, same contents, modes, owners, mtimes and symlinks"
else
  echo "the promoted volume differs from east's last synced data:" >&2
  diff <(listing "$as_synced") <(listing "$west_dir") >&2 || true
  exit 1
fi

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
if same_tree "$west_dir" "$east_dir"; then
  echo "east's volume equals west's: $(listing "$east_dir" | wc -l) entries, same contents, modes, owners, mtimes and symlinks"
else
  echo "east's volume differs from west's:" >&2
  diff <(listing "$west_dir") <(listing "$east_dir") >&2 || true
  exit 1
fi
data_bytes=$(du -sb "$west_dir" | cut -f1)
sent=$(sed -n 's/^reverse sync done: \([0-9]*\) bytes.*/\1/p' "$failback_out" | head -n1)
echo "the reverse sync sent ${sent:-?} bytes for ${data_bytes} bytes of data in the volume"
step kubectl ferrosync status "${sites[@]}"

cat <<MSG

ferrosync two-cluster demo is running ($(( $(date +%s) - start ))s).
  timings:      the pair ${pair_up:-started}; failover ${failover_s}s from the command to a bound PVC; reverse sync ${sent:-?} bytes for ${data_bytes} bytes
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
