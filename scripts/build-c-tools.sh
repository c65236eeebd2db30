#!/usr/bin/env bash
# Installs the pinned tools that build the C sample plugin (plugins/c-copy-method), each
# from its crate and cached by version in ~/.cache/ferrosync/tools, and prints the
# directory holding them: wit-bindgen (its C generator only) and wasm-tools (its component
# commands only). Quiet and quick when both are there. The C compiler and wasi-libc are
# Debian packages (scripts/install-deps.sh).
set -euo pipefail
WIT_BINDGEN_VERSION=0.63.0
WASM_TOOLS_VERSION=1.263.0
tools=${FERROSYNC_TOOLS_DIR:-$HOME/.cache/ferrosync/tools}
bin=$tools/c-plugin-bin
mkdir -p "$bin"
install() { # crate version features binary
  local root=$tools/$1-$2
  if [ ! -x "$root/bin/$4" ]; then
    echo "building $1 $2 (once; cached in $root)" >&2
    (cd /tmp && cargo install "$1" --version "$2" --locked --quiet --no-default-features \
      --features "$3" --root "$root") >&2
  fi
  ln -sf "$root/bin/$4" "$bin/$4"
}
install wit-bindgen-cli "$WIT_BINDGEN_VERSION" c wit-bindgen
install wasm-tools "$WASM_TOOLS_VERSION" component wasm-tools
echo "$bin"
