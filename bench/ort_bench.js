// ONNX Runtime (onnxruntime-node, CPU execution provider) side of
// bench/peers.py: times session.run in-process on the inputs peers.py wrote.
//
//   node bench/ort_bench.js JOB.json
//
// JOB.json: {"threads": T, "seconds": S, "warmup": W, "runs": [
//   {"key": "...", "model": "FILE.onnx", "out_prefix": "DIR/x",
//    "inputs": [{"name": "...", "dtype": "float32"|"int64",
//                "shape": [...], "file": "raw little-endian bytes"}]}, ...]}
// For each run: a session with intraOpNumThreads T and interOpNumThreads 1
// (sequential execution), W untimed runs, then timed runs for S seconds (at
// least 5). Writes each output's bytes to OUT_PREFIX.NAME.bin and prints one
// JSON object on stdout: {key: {"latencies_s": [...], "outputs":
// {name: {"dtype", "shape", "file"}}}}.
'use strict';

const fs = require('fs');
const path = require('path');
const ort = require(path.join(__dirname, 'node_modules', 'onnxruntime-node'));

const TYPED = {
  float32: Float32Array,
  int64: BigInt64Array,
};

function loadTensor(input) {
  const bytes = fs.readFileSync(input.file);
  const Typed = TYPED[input.dtype];
  if (!Typed) throw new Error(`input ${input.name}: dtype ${input.dtype} not handled`);
  // A fresh, aligned buffer: readFileSync's may sit at any offset of a pool.
  const aligned = new ArrayBuffer(bytes.length);
  new Uint8Array(aligned).set(bytes);
  return new ort.Tensor(input.dtype, new Typed(aligned), input.shape);
}

async function timeRun(job, run) {
  const session = await ort.InferenceSession.create(run.model, {
    executionProviders: ['cpu'],
    intraOpNumThreads: job.threads,
    interOpNumThreads: 1,
    executionMode: 'sequential',
    graphOptimizationLevel: 'all',
  });
  const feeds = {};
  for (const input of run.inputs) feeds[input.name] = loadTensor(input);

  let result = null;
  for (let i = 0; i < job.warmup; i++) result = await session.run(feeds);
  const latencies = [];
  const end = process.hrtime.bigint() + BigInt(Math.round(job.seconds * 1e9));
  while (latencies.length < 5 || process.hrtime.bigint() < end) {
    const t0 = process.hrtime.bigint();
    result = await session.run(feeds);
    latencies.push(Number(process.hrtime.bigint() - t0) / 1e9);
  }

  const outputs = {};
  for (const name of session.outputNames) {
    const t = result[name];
    const file = `${run.out_prefix}.${name}.bin`;
    fs.writeFileSync(file, Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength));
    outputs[name] = {dtype: t.type, shape: t.dims, file};
  }
  await session.release();
  return {latencies_s: latencies, outputs};
}

async function main() {
  if (process.argv.length !== 3) {
    process.stderr.write('usage: node ort_bench.js JOB.json\n');
    process.exit(2);
  }
  const job = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
  const report = {};
  for (const run of job.runs) report[run.key] = await timeRun(job, run);
  process.stdout.write(JSON.stringify(report) + '\n');
}

main().catch((e) => {
  process.stderr.write(`ort_bench.js: ${e.stack || e}\n`);
  process.exit(1);
});
