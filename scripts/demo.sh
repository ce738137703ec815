#!/usr/bin/env bash
# The main job, end to end, on a local default: installs what it needs,
# builds, starts a coordinator with two local workers serving the bundled
# example model repository (examples/models), runs inferences through the
# `tessera` client, prints the shard map, and shuts the cluster down.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
BUILD_DIR=build scripts/build.sh >/dev/null
echo "== built into ./build"

out=$(mktemp)
build/coordinator/tessera-coordinator --listen 127.0.0.1:0 --local-workers 2 \
  --model-repository examples/models >"$out" &
coordinator=$!
trap 'kill -TERM $coordinator 2>/dev/null; wait $coordinator 2>/dev/null; rm -f "$out"' EXIT
for _ in $(seq 100); do
  grep -q '^listening on ' "$out" && break
  kill -0 $coordinator 2>/dev/null || { echo "coordinator failed to start" >&2; exit 1; }
  sleep 0.1
done
server=$(sed -n 's/^listening on //p' "$out")
echo "== coordinator serving on $server"

tessera=build/client/tessera
$tessera health --server "$server"
$tessera models --server "$server"
echo "== infer: mlp (data parallel, 2 replicas)"
$tessera infer --server "$server" --model mlp \
  --input embedding=examples/models/mlp/input.npy
echo "== infer: mlp_tensor (2 tensor-parallel shards)"
$tessera infer --server "$server" --model mlp_tensor \
  --input embedding=examples/models/mlp/input.npy
echo "== infer: mlp_ensemble (mean of both)"
$tessera infer --server "$server" --model mlp_ensemble \
  --input embedding=examples/models/mlp/input.npy
echo "== cluster status"
$tessera status --server "$server"
