#!/usr/bin/env bash
# Builds Toxiproxy's server from its Go module, pinned, and caches it by version under
# ~/.cache/ferrosync/bin. The HA test puts it between one controller and the apiserver to
# black-hole that controller's traffic. Prints the binary's path.
set -euo pipefail
TOXIPROXY_VERSION=v2.5.0
cache=${FERROSYNC_CACHE:-$HOME/.cache/ferrosync}
bin="$cache/bin/toxiproxy-$TOXIPROXY_VERSION"
if [ ! -x "$bin/toxiproxy-server" ]; then
  mkdir -p "$bin"
  echo "building toxiproxy $TOXIPROXY_VERSION into $bin" >&2
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  # go install of a pinned version uses the module's own go.mod and go.sum.
  CGO_ENABLED=0 GOBIN="$tmp" go install -trimpath -ldflags "-s -w" \
    "github.com/Shopify/toxiproxy/v2/cmd/server@$TOXIPROXY_VERSION"
  mv "$tmp/server" "$bin/toxiproxy-server"
fi
echo "$bin/toxiproxy-server"
