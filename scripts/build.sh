#!/usr/bin/env bash
# Configures (once) and builds Tessera into BUILD_DIR (default: build).
# Extra arguments go to `meson setup` on first configuration, e.g.
#   scripts/build.sh -Db_sanitize=address,undefined   (with BUILD_DIR=build-asan)
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=${BUILD_DIR:-build}
if [ ! -f "$build_dir/build.ninja" ]; then
  meson setup "$build_dir" "$@" >/dev/null
else
  # Pick up meson.build changes made since the last configuration.
  meson setup --reconfigure "$build_dir" >/dev/null
fi
ninja -C "$build_dir"
