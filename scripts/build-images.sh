#!/usr/bin/env bash
# Builds the controller and mover images as OCI image layouts, without Docker: mmdebstrap
# makes the root filesystem from Debian's packages (resolved now, not pinned, with the
# security suite), the binary cargo built is added, and umoci packs the result as a
# two-layer OCI image with its config (user, entrypoint, environment).
#
#   scripts/build-images.sh [--controller BIN] [--mover BIN]
#
# BIN defaults to the dev-profile binaries in $CARGO_TARGET_DIR (or ./target): `ferrosync`
# for the controller, `ferrosync-mover` (the mover alone: no controller, kube client or
# wasmtime) for the mover, which the image installs as /usr/local/bin/ferrosync, the path
# mover Jobs run.
#
# Every image records the Debian packages it got, with their versions, in
# /usr/share/ferrosync/packages.txt and in its config's label io.ferrosync.debian-packages.
#
# Two layers, each cached by content under ~/.cache/ferrosync/images: the root filesystem
# (key: this script, the package list, the Debian suite and mirrors, and the ISO week, so
# the packages pick up Debian's updates within a week) and the binary (key: its digest and
# the image config). A rerun with the same inputs builds nothing; a new binary costs a few
# seconds. Prints one line per image: "<name> <layout dir>:<tag>".
set -euo pipefail
shopt -s inherit_errexit
here=$(cd "$(dirname "$0")/.." && pwd)
cache=${FERROSYNC_CACHE:-$HOME/.cache/ferrosync}/images
target=${CARGO_TARGET_DIR:-$here/target}
controller_bin=$target/debug/ferrosync
mover_bin=$target/debug/ferrosync-mover
while [ $# -gt 0 ]; do
  case $1 in
    --controller) controller_bin=$2; shift 2 ;;
    --mover) mover_bin=$2; shift 2 ;;
    *) echo "usage: $0 [--controller BIN] [--mover BIN]" >&2; exit 2 ;;
  esac
done

# The binaries link the host's glibc and libssl, so the image takes the host's Debian
# release (a newer one would do too; an older one would not run them).
# shellcheck disable=SC1091
suite=${FERROSYNC_DEBIAN_SUITE:-$(. /etc/os-release && echo "$VERSION_CODENAME")}
mirror=${FERROSYNC_DEBIAN_MIRROR:-http://deb.debian.org/debian}
security=${FERROSYNC_DEBIAN_SECURITY:-http://deb.debian.org/debian-security}
sources=("deb $mirror $suite main" "deb $mirror $suite-updates main" "deb $security $suite-security main")

# Documentation, manuals and translations are of no use in a container.
dpkg_opts=(
  --dpkgopt='path-exclude=/usr/share/man/*'
  --dpkgopt='path-exclude=/usr/share/locale/*'
  --dpkgopt='path-exclude=/usr/share/doc/*'
  --dpkgopt='path-include=/usr/share/doc/*/copyright'
  --dpkgopt='path-exclude=/usr/share/info/*'
)

# The root filesystem of Debian packages for image `name`: the essential set (sh for rsync's
# connect program, setpriv from util-linux for the node's sandbox, dpkg for the record)
# plus `packages`, as a tar. Cached apart from the binary, which changes with every commit
# while the packages change weekly at most. Prints the directory holding rootfs.tar and
# packages.txt.
base() { # name packages
  local name=$1 packages=$2 key
  key=$( {
    sha256sum "$0" | cut -d' ' -f1
    printf '%s\n' "$name" "$packages" "$suite" "${sources[@]}"
    date -u +%G-W%V
  } | sha256sum | cut -c1-16)
  local dir=$cache/base-$name-$key
  if [ ! -f "$dir/done" ]; then
    mkdir -p "$cache"
    local tmp start=$SECONDS
    tmp=$(mktemp -d "$cache/.base-$name.XXXXXX")
    echo "building the $name image's root filesystem ($suite, packages: $packages)" >&2
    # Downloaded .debs are kept between builds, so a rebuild fetches only what changed.
    mkdir -p "$cache/debs"
    mmdebstrap --quiet --variant=essential --include="$packages" "${dpkg_opts[@]}" \
      --skip=essential/unlink \
      --setup-hook='mkdir -p "$1/var/cache/apt/archives"' \
      --setup-hook="sync-in '$cache/debs' /var/cache/apt/archives/" \
      --customize-hook="sync-out /var/cache/apt/archives '$cache/debs'" \
      --customize-hook='mkdir -p "$1/data" "$1/keys" "$1/usr/share/ferrosync" && chmod 1777 "$1/tmp"' \
      --customize-hook="dpkg-query --admindir=\"\$1/var/lib/dpkg\" -W -f '\${Package} \${Version}\n' | tee \"\$1/usr/share/ferrosync/packages.txt\" > '$tmp/packages.txt'" \
      --customize-hook='rm -rf "$1/var/cache/"* "$1/var/log/"*' \
      "$suite" "$tmp/rootfs.tar" "${sources[@]}"
    [ -s "$tmp/rootfs.tar" ] || { echo "build-images: mmdebstrap made no root filesystem" >&2; exit 1; }
    echo "$((SECONDS - start))" > "$tmp/seconds"
    touch "$tmp/done"
    rm -rf "$dir"
    mv "$tmp" "$dir"
    find "$cache" -maxdepth 1 -name "base-$name-*" ! -name "base-$name-$key" -exec rm -rf {} +
  fi
  echo "$dir"
}

build() { # name binary packages user entrypoint(comma-separated) cmd(comma-separated) env...
  local name=$1 binary=$2 packages=$3 user=$4 entrypoint=$5 cmd=$6
  shift 6
  local env=("$@")
  [ -x "$binary" ] || { echo "build-images: $binary not found (cargo build --bins first)" >&2; exit 1; }
  local start=$SECONDS base_dir key lock
  # Builds of one image are serialised: two clusters of a test or the demo start at once
  # and each asks for the images. Without the lock both would build the same key and
  # replace each other's directory while the other pushes from it. The lock is released
  # when this script exits.
  mkdir -p "$cache"
  exec {lock}>"$cache/.lock-$name"
  flock "$lock"
  base_dir=$(base "$name" "$packages")
  [ -f "$base_dir/done" ] || exit 1
  key=$( {
    sha256sum "$0" "$binary" | cut -d' ' -f1
    printf '%s\n' "$base_dir" "$user" "$entrypoint" "$cmd" "${env[@]}"
  } | sha256sum | cut -c1-16)
  local dir=$cache/$name-$key
  if [ -f "$dir/done" ]; then
    echo "$name $dir/oci:$name"
    return
  fi
  local tmp
  tmp=$(mktemp -d "$cache/.build-$name.XXXXXX")
  # shellcheck disable=SC2064
  trap "rm -rf '$tmp'" EXIT
  # The binary's layer: debug info stays in the build, the image gets the code.
  mkdir -p "$tmp/layer/usr/local/bin"
  objcopy --strip-debug "$binary" "$tmp/layer/usr/local/bin/ferrosync"
  chmod 0755 "$tmp/layer/usr/local/bin/ferrosync"
  # Every library the binary links must be in the root filesystem.
  local lib
  tar -tf "$base_dir/rootfs.tar" > "$tmp/files.txt"
  for lib in $(objdump -p "$binary" | awk '/NEEDED/ {print $2}'); do
    grep -q "/$lib\$" "$tmp/files.txt" \
      || { echo "build-images: $name image lacks $lib, which $binary links" >&2; exit 1; }
  done
  tar --owner=0 --group=0 --numeric-owner -C "$tmp/layer" -cf "$tmp/binary.tar" usr

  local oci=$tmp/oci
  umoci init --layout "$oci"
  umoci new --image "$oci:$name"
  umoci raw add-layer --image "$oci:$name" "$base_dir/rootfs.tar"
  umoci raw add-layer --image "$oci:$name" "$tmp/binary.tar"
  local args=(--config.user "$user" --config.workingdir /)
  local IFS=,
  for e in $entrypoint; do args+=(--config.entrypoint "$e"); done
  for c in $cmd; do args+=(--config.cmd "$c"); done
  unset IFS
  for e in "${env[@]}"; do args+=(--config.env "$e"); done
  local recorded
  recorded=$(awk '{printf "%s%s=%s", (NR > 1 ? " " : ""), $1, $2}' "$base_dir/packages.txt")
  umoci config --image "$oci:$name" "${args[@]}" \
    --config.label "io.ferrosync.debian-packages=$recorded" \
    --config.label "io.ferrosync.debian-suite=$suite" \
    --manifest.annotation "org.opencontainers.image.title=ferrosync-$name" \
    --manifest.annotation "org.opencontainers.image.created=$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
    --manifest.annotation "io.ferrosync.binary-sha256=$(sha256sum "$binary" | cut -d' ' -f1)"
  umoci gc --layout "$oci"

  local unpacked compressed
  unpacked=$(( $(stat -c %s "$base_dir/rootfs.tar") + $(stat -c %s "$tmp/binary.tar") ))
  compressed=$(du -sb "$oci/blobs" | cut -f1)
  rm -rf "$tmp/layer" "$tmp/binary.tar" "$tmp/files.txt"
  printf 'built in %d s (root filesystem: %s s); unpacked %d MB, compressed %d MB; %d Debian packages\n' \
    $((SECONDS - start)) "$(cat "$base_dir/seconds")" $((unpacked / 1000000)) $((compressed / 1000000)) \
    "$(wc -l < "$base_dir/packages.txt")" | tee "$tmp/summary.txt" | sed "s/^/$name image: /" >&2
  touch "$tmp/done"
  rm -rf "$dir"
  mv "$tmp" "$dir"
  trap - EXIT
  # Older builds of this image are of no further use once nothing pushes from them: a
  # test binary of another build may still be reading one, so only those an hour old go.
  find "$cache" -maxdepth 1 -name "$name-*" ! -name "$name-$key" -mmin +60 -exec rm -rf {} +
  echo "$name $dir/oci:$name"
}

# The controller: TLS to the apiserver and OpenBao (ca-certificates), OpenSSL for the
# mover code it links. Unprivileged, as deploy/ runs it.
build controller "$controller_bin" "ca-certificates,libssl3" 65532:65532 \
  /usr/local/bin/ferrosync controller
# The mover: rsync, stunnel4 for TLS_TUNNEL=stunnel, libssl3 for the built-in tunnel.
# Unprivileged by default; a privileged mover Pod sets runAsUser: 0.
build mover "$mover_bin" "rsync,stunnel4,libssl3" 65534:65534 \
  /usr/local/bin/ferrosync,mover destination \
  DATA_DIR=/data KEY_DIR=/keys TMP_DIR=/tmp
