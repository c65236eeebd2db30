#!/usr/bin/env bash
# Builds the policy plugins written in C (plugins/*-c/plugin.c) into components, next to
# the Rust plugins' (scripts/build-plugins.sh calls it; it checks their pins too).
#
#   1. c-component (plugins/c-component), a small host tool on wit-bindgen's C generator
#      and wit-component, at the versions the Rust plugins' lock already has; cargo
#      builds it once into the plugins' target dir and finds it fresh after that.
#   2. `c-component bindings`: the world's C header, source and type object.
#   3. Debian's clang-14 for wasm32-wasi, with wasi-libc for malloc and the string
#      functions (scripts/install-deps.sh installs them). The plugin makes no WASI call,
#      so its module imports only the world's functions and needs no WASI adapter.
#   4. `c-component new`: the component.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
target="${FERROSYNC_PLUGINS_TARGET_DIR:-$root/plugins/target}"
out="$target/wasm32-wasip2/release"
mkdir -p "$out"
for tool in clang-14 wasm-ld-14; do
  command -v "$tool" >/dev/null || {
    echo "$tool not found: scripts/install-deps.sh installs clang-14, lld-14 and wasi-libc" >&2
    exit 1
  }
done

# A host build: none of the plugins' wasm flags apply.
env -u RUSTFLAGS CARGO_TARGET_DIR="$target" cargo build --quiet --locked --profile c-tool \
  --manifest-path "$root/plugins/Cargo.toml" -p c-component
tool="$target/c-tool/c-component"

# plugin directory:world of each C plugin.
for pair in copy-method-by-driver-c:copy-method; do
  plugin=${pair%%:*}; world=${pair#*:}
  src="$root/plugins/$plugin"
  work="$target/c-plugins/$plugin"
  rm -rf "$work" && mkdir -p "$work"
  "$tool" bindings "$root/plugins/wit" "$world" "$work"
  # -Os and a 64 KiB stack, like the Rust plugins; no debug info or symbol names, so the
  # component depends on the sources and the compiler only, not on this checkout's path.
  clang-14 --target=wasm32-wasi -mexec-model=reactor -Os -g0 -std=c11 -Wall -Wextra -Werror \
    -I "$work" "$src"/*.c "$work/${world//-/_}.c" "$work/${world//-/_}_component_type.o" \
    -Wl,-z,stack-size=65536 -Wl,--strip-all -o "$work/core.wasm"
  "$tool" new "$work/core.wasm" "$out/${plugin//-/_}.wasm"
done
