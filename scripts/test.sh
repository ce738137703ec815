#!/usr/bin/env bash
# The whole test suite, on a fresh Debian bookworm machine or an old one:
# installs what it needs, builds, runs every unit and integration suite,
# builds the release configuration a packager makes (-O3, NDEBUG, -Werror)
# and runs the unit suites on it, then builds with ASan+UBSan and runs every
# suite again under the sanitizers (all but the container suite 'deploy'),
# then the allocation-failure walk (-Dalloc_fail=true, suite 'allocfail'),
# then runs each fuzz target (tests/fuzz/) for FUZZ_SECONDS (default 30).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh

echo "== build (debugoptimized) and test"
BUILD_DIR=build scripts/build.sh
meson test -C build --print-errorlogs --num-processes 2

echo "== build (release, as packaged) and the unit suites"
BUILD_DIR=build-release scripts/build.sh -Dbuildtype=release
meson test -C build-release --print-errorlogs --num-processes 2 --suite unit

echo "== build with AddressSanitizer + UndefinedBehaviorSanitizer; every suite"
# Every suite again, the daemons built with the sanitizers and leak detection:
# a daemon that reports an error aborts, and the fixtures fail a test when a
# daemon (or a coordinator's local worker) does not exit with status 0.
BUILD_DIR=build-asan scripts/build.sh -Db_sanitize=address,undefined \
  -Db_lundef=false -Dbuildtype=debug
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
  meson test -C build-asan --print-errorlogs --num-processes 2 \
  --timeout-multiplier 3 --no-suite deploy

echo "== allocation-failure walk (-Dalloc_fail=true, ASan + UBSan)"
# Every allocation of Tessera's own code on the model-load, shard-load and
# inference paths made to fail in turn (tests/README.md#allocation-failures):
# each must answer RESOURCE_EXHAUSTED or INTERNAL, the daemons keep serving
# and exit with no leak; then start-ups of both daemons with one allocation
# failing. About 3 minutes of walking on 2 cores.
BUILD_DIR=build-allocfail scripts/build.sh -Dalloc_fail=true \
  -Db_sanitize=address,undefined -Db_lundef=false -Dbuildtype=debug
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
  meson test -C build-allocfail --print-errorlogs --num-processes 2 \
  --suite allocfail

echo "== fuzz targets (clang, ASan + UBSan), 30 s each on one core"
# Every target of tests/fuzz/ from its seeds for a bounded time: any crash,
# leak, sanitizer report, timeout or out-of-memory fails (scripts/fuzz.sh).
scripts/fuzz.sh "${FUZZ_SECONDS:-30}"
echo "== all suites passed (plain, release and sanitized builds, allocation failures, fuzz targets)"
