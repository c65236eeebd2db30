#!/usr/bin/env bash
# Builds the real control-plane binaries from Go modules and caches them by version under
# ~/.cache/ferrosync, so only the first run on a machine pays for the build.
# Prints the directory that holds `k8s` (multicall: kube-apiserver, kube-controller-manager,
# kube-scheduler, kubectl) and `etcd`.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
K8S_VERSION=$(awk '/k8s.io\/kubernetes v/ {print $NF; exit}' "$here/k8s/go.mod")
ETCD_VERSION=$(awk '/go.etcd.io\/etcd\/server\/v3 v/ {print $NF; exit}' "$here/etcd/go.mod")
cache=${FERROSYNC_CACHE:-$HOME/.cache/ferrosync}
bin="$cache/bin/k8s-$K8S_VERSION-etcd-$ETCD_VERSION"
mkdir -p "$bin"
export CGO_ENABLED=0 GOFLAGS=-mod=mod

if [ ! -x "$bin/k8s" ]; then
  minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
  pkg=k8s.io/component-base/version
  ldflags="-s -w -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
  ldflags="$ldflags -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  echo "building kubernetes $K8S_VERSION (multicall) into $bin" >&2
  (cd "$here/k8s" && go build -trimpath -ldflags "$ldflags" -o "$bin/k8s.tmp" .)
  mv "$bin/k8s.tmp" "$bin/k8s"
fi
for tool in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
  ln -sf k8s "$bin/$tool"
done
if [ ! -x "$bin/etcd" ]; then
  echo "building etcd $ETCD_VERSION into $bin" >&2
  (cd "$here/etcd" && go build -trimpath -ldflags "-s -w" -o "$bin/etcd.tmp" .)
  mv "$bin/etcd.tmp" "$bin/etcd"
fi
echo "$bin"
