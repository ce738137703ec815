#!/usr/bin/env bash
# Builds the fuzz targets (tests/fuzz/) with clang, ASan and UBSan into
# build-fuzz and runs each for SECONDS (default 30), one after the other on
# one core, from the seed corpora made at build time plus what earlier runs
# found (build-fuzz/tests/fuzz/corpus/NAME.run/):
#   scripts/fuzz.sh [SECONDS] [TARGET...]     e.g. scripts/fuzz.sh 3600 onnx npy
# Exits nonzero on the first finding; the input is in
# build-fuzz/tests/fuzz/corpus/NAME.findings/. Each target's last line
# gives libFuzzer's figures (execs, cov, ft, exec/s).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-30}
shift || true
BUILD_DIR=${BUILD_DIR:-build-fuzz}
export CC=clang
BUILD_DIR=$BUILD_DIR scripts/build.sh -Dfuzz=true -Dtests=false \
  -Db_sanitize=address,undefined -Db_lundef=false -Dbuildtype=debugoptimized
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(model_infer load_shard run_shard onnx npy config)
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
for t in "${targets[@]}"; do
  echo "== fuzz_$t (${seconds}s)"
  FUZZ_SECONDS=$seconds tests/fuzz/run.sh "$BUILD_DIR/tests/fuzz/fuzz_$t" "$t" \
    "$BUILD_DIR/tests/fuzz/corpus" tests/fuzz
done
echo "== fuzz: no finding in ${#targets[@]} targets"
