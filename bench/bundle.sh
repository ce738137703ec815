#!/usr/bin/env bash
# Packs Tessera's three binaries with the Debian runtime libraries they link
# into one .tar.xz that runs on another x86-64 Linux (e.g. the 16-core
# machine of bench/scaling.py), without installing Debian packages there.
#
#   bench/bundle.sh BUILD_DIR OUT.tar.xz
#
# The archive holds coordinator/, worker/, client/ (the layout kserve.binary
# expects of a build directory) and lib/ with every library ldd names except
# glibc's own (libc, libm, libpthread, libdl, librt, ld-linux), which the
# target's newer glibc provides. Run the binaries with
# LD_LIBRARY_PATH=DIR/lib.
set -euo pipefail
build=${1:?usage: bench/bundle.sh BUILD_DIR OUT.tar.xz}
out=${2:?usage: bench/bundle.sh BUILD_DIR OUT.tar.xz}
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
bins=(coordinator/tessera-coordinator worker/tessera-worker client/tessera)
mkdir -p "$stage/lib"
for b in "${bins[@]}"; do
  mkdir -p "$stage/$(dirname "$b")"
  cp "$build/$b" "$stage/$b"
  strip "$stage/$b"
done
for b in "${bins[@]}"; do ldd "$build/$b"; done |
  awk '$2 == "=>" && $3 ~ /^\// {print $3}' | sort -u |
  grep -Ev '/(libc|libm|libpthread|libdl|librt|ld-linux-x86-64)\.so' |
  while read -r lib; do cp -L "$lib" "$stage/lib/"; done
tar -C "$stage" -cJf "$out" .
echo "$out: $(du -h "$out" | cut -f1) ($(ls "$stage/lib" | wc -l) libraries)"
