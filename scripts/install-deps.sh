#!/usr/bin/env bash
# Installs everything Tessera needs on a fresh Debian bookworm machine:
# the build toolchain and libraries, plus the reference frameworks the tests
# compare against (PyTorch, ONNX, scikit-learn, grpcio for the Python client).
# Idempotent: packages already present are skipped by apt.
set -euo pipefail

packages=(
  # build
  build-essential pkg-config meson ninja-build
  protobuf-c-compiler libprotobuf-c-dev libgrpc-dev
  libopenblas-dev libuv1-dev check libsystemd-dev libinih-dev
  libonnx-dev grpc-proto
  libmicrohttpd-dev libjansson-dev
  # fuzz targets (tests/fuzz/, scripts/fuzz.sh): libFuzzer ships in clang's runtime
  clang libclang-rt-dev
  # tests: independent references and a KServe client written in Python
  python3 python3-numpy python3-torch python3-onnx python3-sklearn
  python3-grpcio python3-protobuf protobuf-compiler
  prometheus  # promtool: test_metrics checks the exposition with it
  # deploy: offline images and the compose test (deploy/, test_compose.py)
  docker.io docker-compose debootstrap
  systemd  # systemd-analyze: test_systemd verifies and scores the units
  openssl  # scripts/certs.sh makes the cluster CA and role certificates
  jq  # test_cli reads the CLI's --format json output with it
  python3-matplotlib  # bench/soak.py plots memory and latency over time
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
