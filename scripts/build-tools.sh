#!/usr/bin/env bash
# Builds the release tools the tests use from their Go modules, pinned, and caches them by
# version under ~/.cache/ferrosync/bin, so only the first run on a machine pays for the build:
#   helm      (helm.sh/helm/v3/cmd/helm)                     chart lint, template, install
#   promtool  (github.com/prometheus/prometheus/cmd/promtool) alert rule checks and unit tests
#   registry  (github.com/distribution/distribution/v3/cmd/registry) the OCI registry the
#             node simulator pulls the built images from (htpasswd auth, TLS, on loopback)
# Prints one line per tool: "<name> <path>". With tool names as arguments, builds only those.
set -euo pipefail
HELM_VERSION=v3.22.0
PROMETHEUS_VERSION=v0.316.0   # the Go module version of Prometheus 3.x
DISTRIBUTION_VERSION=v3.1.2
cache=${FERROSYNC_CACHE:-$HOME/.cache/ferrosync}
export CGO_ENABLED=0 GOFLAGS=-mod=mod

build() { # name package version
  local name=$1 pkg=$2 version=$3
  local dir="$cache/bin/$name-$version"
  if [ ! -x "$dir/$name" ]; then
    mkdir -p "$dir"
    echo "building $name $version into $dir (once per machine)" >&2
    local start=$SECONDS
    # Outside any module, so the repository's go.mod files are not consulted.
    (cd "${TMPDIR:-/tmp}" && GOBIN="$dir/.tmp" go install -trimpath -ldflags "-s -w" "$pkg@$version")
    mv "$dir/.tmp/$name" "$dir/$name" && rmdir "$dir/.tmp"
    echo "built $name $version in $((SECONDS - start)) s" >&2
  fi
  echo "$name $dir/$name"
}

want=("$@")
[ ${#want[@]} -gt 0 ] || want=(helm promtool registry)
for tool in "${want[@]}"; do
  case $tool in
    helm) build helm helm.sh/helm/v3/cmd/helm "$HELM_VERSION" ;;
    promtool) build promtool github.com/prometheus/prometheus/cmd/promtool "$PROMETHEUS_VERSION" ;;
    registry) build registry github.com/distribution/distribution/v3/cmd/registry "$DISTRIBUTION_VERSION" ;;
    *) echo "unknown tool $tool" >&2; exit 2 ;;
  esac
done
