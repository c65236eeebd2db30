# What the two demos share: scripts/demo.sh (two clusters, disaster recovery) and
# scripts/demo-in-cluster.sh (one cluster, the spec's examples). Sourced, not run.
#
# Both install ferrosync the same way, as users install it: an overlay over
# deploy/overlays/test-cluster with the images of the cluster's own registry and its login
# as the pull secret, applied server-side; then they wait for two replicas and a leader.
#
# The sourcing script is in the repository's root, under `set -euo pipefail`, sources this
# first (the demo's clock starts here) and sets demo_sites: the kubeconfig contexts (east,
# or east and west) whose controller logs a timed-out wait prints. It gets `state`
# (FERROSYNC_STATE_DIR, where scripts/cluster.sh keeps the clusters), `start` (date +%s,
# which `say` and the closing lines count from), and from demo_build and cluster_up
# `target_dir` and `cluster_up_time`.
# shellcheck shell=bash disable=SC2034,SC2154

state=${FERROSYNC_STATE_DIR:-$PWD/target/ferrosync-cluster}
export FERROSYNC_STATE_DIR=$state
start=$(date +%s)

# demo_build: what the demo needs on this machine, and the binaries. The same targets as
# scripts/test.sh builds: with an example in the build, cargo enables the dev-dependencies'
# features for the binaries too, so other targets would link other features and the
# images would be built again. Sets target_dir.
demo_build() {
  bash scripts/install-deps.sh
  cargo build --quiet --bin ferrosync --bin ferrosync-mover --bin kubectl-ferrosync --example cluster
  target_dir=$(cd "${CARGO_TARGET_DIR:-target}" && pwd)
}

# cluster_up ARGS...: `scripts/cluster.sh up ARGS` after stopping whatever ran before, its
# output shown; sets cluster_up_time to the time it printed ("up in 12.3s") and sources
# the clusters' env (KUBECONFIG, PATH with kubectl).
cluster_up() {
  bash scripts/cluster.sh down >/dev/null 2>&1 || true
  mkdir -p "$(dirname "$state")" # target/ may not exist when CARGO_TARGET_DIR is elsewhere
  bash scripts/cluster.sh up "$@" 2>&1 | tee "$state.up.log"
  cluster_up_time=$(grep -o 'up in [0-9.]*s' "$state.up.log" | head -n1 || true)
  rm -f "$state.up.log"
  # shellcheck disable=SC1091
  source "$state/env"
  if [ -n "$(routing_errors)" ]; then
    routing_errors >&2
    echo "another cluster on this machine (a test's, most likely) serves that address, so ferrosync's pods could not reach their apiserver; run the demo when it has stopped" >&2
    exit 1
  fi
}
# routing_errors: the simulated kube-proxy's failures to serve a cluster's `kubernetes`
# Service. Its ClusterIP is a fixed loopback address per site (tests/support/sim/addresses.rs),
# which a cluster started by another process, in the same network namespace, may hold.
# Only running clusters' logs (scripts/cluster.sh down removes cluster.pid, not the logs).
routing_errors() {
  local dir
  for dir in "$state" "$state/east" "$state/west"; do
    [ -f "$dir/cluster.pid" ] && grep -h 'for default/kubernetes: ' "$dir/cluster.log"
  done 2>/dev/null || true
}

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }
say() { printf '\n\033[1m# %s\033[0m  [%ss]\n' "$*" "$(( $(date +%s) - start ))"; }
controller_logs() { # controller_logs SITE: the tail of its controller pods' logs
  kubectl --context "$1" -n ferrosync-system logs -l app.kubernetes.io/name=ferrosync-controller --tail=40 --prefix 2>&1 || true
}
# wait_for DESCRIPTION SECONDS COMMAND...: polls until COMMAND prints something non-empty.
wait_for() {
  local what=$1 deadline=$(( $(date +%s) + $2 )) out site
  shift 2
  while :; do
    out=$("$@" 2>/dev/null || true)
    [ -n "$out" ] && { printf '%s' "$out"; return 0; }
    [ "$(date +%s)" -lt "$deadline" ] || {
      echo "timed out waiting for $what" >&2
      for site in "${demo_sites[@]}"; do controller_logs "$site" >&2; done
      routing_errors >&2
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
# same_or_exit EXPECTED ACTUAL WHAT THAN: says "WHAT equals THAN" with the entries compared,
# or shows how they differ and ends the demo.
same_or_exit() {
  if same_tree "$1" "$2"; then
    echo "$3 equals $4: $(listing "$2" | wc -l) entries, same contents, modes, owners, mtimes and symlinks"
  else
    echo "$3 differs from $4:" >&2
    diff <(listing "$1") <(listing "$2") >&2 || true
    exit 1
  fi
}

# write_sample_data DIR WHERE: an application's data into DIR (a database's 200 small
# tables and 20 MB file, owned by uid 999, and a symlink to its config), then a line
# saying how much went into WHERE.
write_sample_data() {
  local dir=$1 n
  mkdir -p "$dir/db/tables" "$dir/conf"
  for n in $(seq 1 200); do echo "row $n of the demo table" >"$dir/db/tables/t$n.csv"; done
  head -c 20000000 /dev/urandom >"$dir/db/ibdata1"
  printf '[mysqld]\nport=3306\n' >"$dir/conf/my.cnf"
  ln -s ../conf/my.cnf "$dir/db/my.cnf"
  chown -R 999:999 "$dir/db"
  echo "wrote $(find "$dir" | wc -l) entries ($(du -sh "$dir" | cut -f1)) into $2"
}

# install_overlay DIR: the cluster's own overlay over deploy/overlays/test-cluster (two
# replicas, short leader-election and polling timings, each pod on its own address), as a
# platform team writes one: the controller and mover images from the registry DIR's
# registry.env names, and its login as the pull secret of the controller and (copied by
# the controller) of the movers. Written to DIR/install; prints that directory.
install_overlay() {
  local dir=$1/install
  # shellcheck disable=SC1090,SC1091
  (
    source "$1/registry.env"
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
# install_ferrosync SITE DIR: writes the overlay (install_overlay DIR) and applies it to
# context SITE server-side, showing the command.
install_ferrosync() {
  local site=$1 overlay
  overlay=$(install_overlay "$2")
  printf '\n\033[1m$ %s\033[0m\n' "kubectl --context $site apply --server-side -k ${overlay#"$PWD"/}"
  echo "$(kubectl --context "$site" apply --server-side -k "$overlay" | wc -l) objects applied"
}
# wait_controller SITE: the rollout done and one replica holding the Lease.
wait_controller() {
  local site=$1 leader
  kubectl --context "$site" -n ferrosync-system rollout status deployment/ferrosync-controller --timeout=180s >/dev/null
  leader=$(wait_for "a leader in $site" 90 kubectl --context "$site" -n ferrosync-system get lease ferrosync-controller -o 'jsonpath={.spec.holderIdentity}')
  echo "$site: $(kubectl --context "$site" -n ferrosync-system get deployment ferrosync-controller -o 'jsonpath={.status.readyReplicas}') controller replicas ready, image $(kubectl --context "$site" -n ferrosync-system get deployment ferrosync-controller -o 'jsonpath={.spec.template.spec.containers[0].image}'); leader ${leader%-*}"
}
