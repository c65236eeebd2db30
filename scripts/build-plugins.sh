#!/usr/bin/env bash
# Builds every policy plugin in plugins/ from source for wasm32-wasip2, reproducibly.
#
#   scripts/build-plugins.sh            build, then fail if a sample plugin's digest differs
#                                       from the pin in its bundle (policies/<name>/policy.toml)
#   scripts/build-plugins.sh --update   build, then copy the sample plugins into their bundles
#                                       and rewrite the pins, the bundles' own and the
#                                       operator's in deploy/ (lines marked with the
#                                       component's path, `# policies/<bundle>/<plugin>.wasm`)
#
# Each plugin is its own `cargo build -p`: the helper crate has one feature per WIT world,
# and building them together would unify those features into every plugin.
# Installs nothing, except the wasm32-wasip2 target when it is missing. The plugins written
# in C are built by scripts/build-c-plugins.sh (called below), their pins checked here.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
update=false
[ "${1:-}" = "--update" ] && update=true

rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2

# Reproducibility: no absolute paths of this checkout or of the cargo home in the output.
cargo_home=${CARGO_HOME:-$HOME/.cargo}
# A 64 KiB stack (instead of 1 MiB) keeps the pages a decision touches few and close
# together, so the host can reset them cheaply between decisions.
export RUSTFLAGS="--remap-path-prefix=$root/plugins=/plugins --remap-path-prefix=$cargo_home=/cargo -C debuginfo=0 -C link-arg=-zstack-size=65536"
export CARGO_TARGET_DIR="${FERROSYNC_PLUGINS_TARGET_DIR:-$root/plugins/target}"
export SOURCE_DATE_EPOCH=0

packages=(copy-method-by-driver service-type-by-topology psk-from-vault
          template-copy-method template-service-type template-psk
          hostile-copy-method hostile-service-type hostile-psk)
for pkg in "${packages[@]}"; do
  cargo build --quiet --locked --release --target wasm32-wasip2 \
    --manifest-path "$root/plugins/Cargo.toml" -p "$pkg"
done
out="$CARGO_TARGET_DIR/wasm32-wasip2/release"
bash "$root/scripts/build-c-plugins.sh"

# bundle:plugin of each shipped bundle.
status=0
for pair in aws-ebs:copy-method-by-driver multi-cluster:service-type-by-topology vault:psk-from-vault \
            aws-ebs-c:copy-method-by-driver-c; do
  bundle=${pair%%:*}; plugin=${pair#*:}
  dir="$root/policies/$bundle"
  built="$out/${plugin//-/_}.wasm"
  digest=$(sha256sum "$built" | cut -d' ' -f1)
  if $update; then
    cp "$built" "$dir/$plugin.wasm"
    sed -i "s/^sha256 = \".*\"/sha256 = \"$digest\"/" "$dir/policy.toml"
    echo "updated policies/$bundle: $plugin.wasm sha256 $digest ($(stat -c %s "$built") bytes)"
  fi
  # The operator's pins of this component in deploy/ (a `sha256 = "..."` line marked
  # `# policies/<bundle>/<plugin>.wasm`) follow the bundle's.
  marker="# policies/$bundle/$plugin.wasm"
  while IFS= read -r file; do
    rel=${file#"$root"/}
    if $update; then
      sed -i "s|^sha256 = \"[0-9a-f]*\"\( *\)$marker\$|sha256 = \"$digest\"\1$marker|" "$file"
      echo "updated $rel: operator pin of $plugin $digest"
    elif ! grep -q "^sha256 = \"$digest\" *$marker\$" "$file"; then
      echo "$rel: the operator pin of policies/$bundle/$plugin.wasm is not $digest." >&2
      echo "  Run scripts/build-plugins.sh --update if the source change is intended." >&2
      status=1
    fi
  done < <(grep -rlF -- "$marker" "$root/deploy" || true)
  if $update; then
    continue
  fi
  pinned=$(sed -n 's/^sha256 = "\(.*\)"/\1/p' "$dir/policy.toml")
  committed=$(sha256sum "$dir/$plugin.wasm" | cut -d' ' -f1)
  if [ "$digest" != "$pinned" ] || [ "$committed" != "$pinned" ]; then
    echo "policies/$bundle: $plugin rebuilt from source has sha256 $digest," >&2
    echo "  the pin in policy.toml is $pinned and the committed .wasm has $committed." >&2
    echo "  Run scripts/build-plugins.sh --update if the source change is intended." >&2
    status=1
  else
    echo "policies/$bundle: $plugin reproduces its pin $digest"
  fi
done
exit $status
