#!/usr/bin/env bash
# Builds Tessera's container images offline, from Debian packages only:
#
#   tessera-base:<hash>  a debootstrap'ed bookworm (minbase) with exactly the
#                        shared libraries the daemons link, found with ldd and
#                        dpkg -S. <hash> is the hash of that package list, so
#                        the base is rebuilt only when the list changes.
#   tessera:latest       the base plus a non-root user "tessera", the three
#                        binaries of a meson build and a HEALTHCHECK that runs
#                        `tessera health` (deploy/Dockerfile).
#
# usage: deploy/build-images.sh [--build-dir DIR] [--tag IMAGE]
#   --build-dir DIR  meson build dir with the binaries (default: $TESSERA_BUILD,
#                    else SOURCE/build; set up as a release build and built
#                    with ninja when its binaries are missing)
#   --tag IMAGE      name of the Tessera image (default: tessera:latest)
#   --systemd        build instead an image that boots systemd, with the
#                    binaries and deploy/*.service installed (for
#                    tests/python/test_systemd.py; default tag
#                    tessera-systemd:latest)
# Environment: DOCKER (default /usr/bin/docker where it exists: Debian's CLI
# matches Debian's dockerd), DEBIAN_MIRROR (default: the first bookworm URI
# in apt's sources). Needs root (debootstrap) and a running dockerd.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source_dir=$(dirname "$here")
build_dir=${TESSERA_BUILD:-$source_dir/build}
tag=tessera:latest
systemd=0
while [ $# -gt 0 ]; do
  case $1 in
    --build-dir) build_dir=$2; shift 2 ;;
    --tag) tag=$2; shift 2 ;;
    --systemd) systemd=1; shift ;;
    -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
    *) echo "build-images.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
if [ -z "${DOCKER:-}" ]; then
  if [ -x /usr/bin/docker ]; then DOCKER=/usr/bin/docker; else DOCKER=docker; fi
fi
log() { echo "build-images.sh: $*" >&2; }

binaries=(coordinator/tessera-coordinator worker/tessera-worker client/tessera)
have_all=1
for b in "${binaries[@]}"; do [ -x "$build_dir/$b" ] || have_all=0; done
if [ $have_all = 0 ]; then
  [ -f "$build_dir/build.ninja" ] ||
    meson setup --buildtype=release "$build_dir" "$source_dir" >&2
  ninja -C "$build_dir" -j"${NINJA_JOBS:-2}" >&2
fi

# The names dpkg may record for a library ldd printed: bookworm's packages
# list their files under /lib or /usr/lib (merged /usr), so the path as
# printed and resolved, each with and without the /usr prefix.
lib_names() {
  local p
  for p in "$1" "$(realpath "$1")"; do
    printf '%s\n' "${p#/usr}" "/usr${p#/usr}"
  done
}

# The Debian packages that own every shared library the binaries load, all
# asked in one dpkg -S (one scan of its file lists); a library no package
# owns is fatal.
runtime_packages() {
  local libs candidates owners lib
  libs=$(for b in "${binaries[@]}"; do ldd "$build_dir/$b"; done |
           awk '/=>/ && $3 ~ /^\// {print $3}' | sort -u)
  candidates=$(for lib in $libs; do lib_names "$lib"; done | sort -u)
  owners=$(dpkg -S $candidates 2>/dev/null || true)
  for lib in $libs; do
    sed 's/^[^ ]* //' <<<"$owners" |
      grep -qxF $(lib_names "$lib" | sed 's/^/-e /') && continue
    # Not in the batch answer (seen once, not reproduced): ask for this
    # library alone, with dpkg's own message if it still has no owner.
    local one
    one=$(dpkg -S $(lib_names "$lib") 2>&1 | grep -v '^dpkg-query: no path found' || true)
    grep -q '^[^ ]*: /' <<<"$one" ||
      { log "no Debian package owns $lib: $one"; return 1; }
    owners+=$'\n'"$one"
  done
  grep '^[^ ]*: /' <<<"$owners" | sed 's/:.*//' | sort -u
}

# Builds (or finds cached) the image NAME:<hash> of a bookworm minbase root
# with PACKAGES; prints its tag. The recipe version is hashed too: changing
# how the root is made rebuilds it.
base_image() {
  local name=$1 packages=$2 hash tag mirror rootfs start
  hash=$(printf 'bookworm minbase v1\n%s\n' "$packages" | sha256sum | cut -c1-12)
  tag=$name:$hash
  if "$DOCKER" image inspect "$tag" >/dev/null 2>&1; then
    log "base image $tag is cached"
    echo "$tag"; return
  fi
  mirror=${DEBIAN_MIRROR:-$( (grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources |
            awk '{print $2}'; grep -hs '^deb ' /etc/apt/sources.list |
            awk '{print $2}') | grep -m1 'debian/\?$' || true)}
  mirror=${mirror:-http://deb.debian.org/debian}
  rootfs=$(mktemp -d /tmp/tessera-rootfs.XXXXXX)
  log "debootstrap bookworm from $mirror with: $(echo $packages)"
  start=$(date +%s)
  if ! debootstrap --variant=minbase --include="$(echo $packages | tr ' ' ,)" \
         bookworm "$rootfs" "$mirror" >&2; then
    rm -rf "$rootfs"; return 1
  fi
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  tar -C "$rootfs" -c . | "$DOCKER" import \
    -c 'ENV PATH=/usr/local/bin:/usr/bin:/bin' - "$tag" >/dev/null
  rm -rf "$rootfs"
  log "base image $tag built in $(( $(date +%s) - start )) s"
  echo "$tag"
}

packages=$(runtime_packages)
if [ "$systemd" = 1 ]; then
  # A root that boots systemd as PID 1, for the units' test: the same
  # libraries plus systemd and dbus, the binaries and the units installed
  # where the units expect them.
  base=$(base_image tessera-systemd-base "$(printf '%s\n' $packages systemd systemd-sysv dbus | sort -u)")
  context=$(mktemp -d /tmp/tessera-image.XXXXXX)
  trap 'rm -rf "$context"' EXIT
  mkdir "$context/bin"
  for b in "${binaries[@]}"; do install -m 0755 -s "$build_dir/$b" "$context/bin/"; done
  cp "$here"/*.service "$context/"
  cat > "$context/Dockerfile" <<'DOCKERFILE'
ARG BASE
FROM ${BASE}
COPY bin/ /usr/local/bin/
COPY *.service /etc/systemd/system/
DOCKERFILE
  [ "$tag" != tessera:latest ] || tag=tessera-systemd:latest
  DOCKER_BUILDKIT=0 "$DOCKER" build -q --build-arg BASE="$base" -t "$tag" \
    "$context" >/dev/null
  log "image $tag built on $base"
  echo "$tag"
  exit 0
fi
base=$(base_image tessera-base "$packages")

context=$(mktemp -d /tmp/tessera-image.XXXXXX)
trap 'rm -rf "$context"' EXIT
mkdir "$context/bin"
for b in "${binaries[@]}"; do
  install -m 0755 -s "$build_dir/$b" "$context/bin/"
done
cp "$here/Dockerfile" "$context/"
DOCKER_BUILDKIT=0 "$DOCKER" build -q --build-arg BASE="$base" -t "$tag" \
  "$context" >/dev/null
log "image $tag built on $base"
echo "$tag"
