#!/usr/bin/python3
"""Tessera against its peers, ONNX Runtime and PyTorch, on the same machine,
the same models, the same inputs and the same thread count, in one run.

For each model of tests/python/export_models.py given (default: the MLP,
the LeNet-style CNN, the ResNet-style CNN and the transformer encoder):

  tessera        coordinator + 1 worker (--local-workers 1), strategy=data,
                 replicas=1, end to end over gRPC on loopback
  tessera-split  coordinator + 2 workers, strategy=tensor,shards=2,
                 replicas=1, end to end over gRPC on loopback
  onnxruntime    onnxruntime-node (CPU execution provider) in-process, in
                 node (bench/ort_bench.js), on the same .onnx file
  pytorch        the torch module itself in-process (torch.no_grad)

are timed single-stream (one request at a time, closed loop):

  batch 1   p50 latency of a call;
  batch N   (--batch, default 32) throughput in rows/s.

Threads: every engine gets --threads kernel threads (default 1): Tessera's
workers run --worker-threads T (OpenBLAS single-threaded inside it), ONNX
Runtime intraOpNumThreads T and interOpNumThreads 1, torch
set_num_threads(T). The 2-way split has two workers of T threads each.
Tessera is timed with the C client (`tessera bench --concurrency 1`), so its
numbers include the gRPC round trip and the coordinator; the peers run
in-process and pay no such cost.

Rounds (--rounds, default 3) measure every (model, batch, engine) in turn
for about --seconds each, so that other load on the machine falls on all
alike; the report gives the median over the rounds and the time ratios
Tessera/ORT and Tessera/PyTorch (> 1: Tessera takes longer). Every engine's
batch-N answer is compared with torch's; the max abs difference is printed.

ONNX Runtime comes from npm: onnxruntime-node is installed into
bench/node_modules (gitignored) when missing, with --ignore-scripts (its
install script fetches GPU libraries; the CPU library ships in the package).

    /usr/bin/python3 bench/peers.py [--build DIR] [--models mlp,lenet,...]
        [--threads 1] [--batch 32] [--seconds 1] [--rounds 3]

Everything stays on 127.0.0.1. See bench/README.md.
"""
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

import benchargs  # bench/, beside this script

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(SOURCE, 'tests', 'python'))
import kserve  # noqa: E402  (BUILD: $TESSERA_BUILD or SOURCE/build)

DEFAULT_MODELS = 'mlp,lenet,resnet,transformer'
ENGINES = ['tessera', 'tessera-split', 'onnxruntime', 'pytorch']
ORT_PACKAGE = 'onnxruntime-node'
SEQUENCE = 16  # the transformer's tokens per row


def parse_args(argv):
    p = benchargs.parser(__doc__)
    p.add_argument('--build', default=kserve.BUILD,
                   help='meson build dir with the daemons and the tessera CLI')
    p.add_argument('--models', default=DEFAULT_MODELS,
                   help='comma-separated models of tests/python/export_models.py')
    p.add_argument('--threads', type=int, default=1, help='kernel threads of every engine')
    p.add_argument('--batch', type=int, default=32, help='rows of the throughput runs')
    p.add_argument('--seconds', type=float, default=1.0,
                   help='measured time of each (model, batch, engine) per round')
    p.add_argument('--rounds', type=int, default=3, help='rounds')
    return p.parse_args(argv)


# ---- ONNX Runtime in node ----------------------------------------------------

def ensure_onnxruntime():
    """Installs onnxruntime-node into bench/node_modules when missing."""
    for tool in ('node', 'npm'):
        if not shutil.which(tool):
            raise SystemExit('peers.py: `%s` is not on PATH; ONNX Runtime runs in node '
                             '(apt-get install nodejs npm)' % tool)
    if os.path.exists(os.path.join(HERE, 'node_modules', ORT_PACKAGE, 'package.json')):
        return
    print('installing %s into %s (npm --ignore-scripts)' % (
        ORT_PACKAGE, os.path.join(HERE, 'node_modules')), file=sys.stderr)
    subprocess.run(['npm', 'install', '--no-save', '--no-package-lock', '--ignore-scripts',
                    '--no-audit', '--no-fund', '--prefix', HERE, ORT_PACKAGE], check=True)


def run_onnxruntime(cases, threads, seconds, tmp, round_index):
    """Times every case in one node process: {(model, batch): (latencies, outputs)}."""
    runs = []
    for (model, batch), case in cases.items():
        inputs = []
        for name, array in case['inputs'].items():
            f = os.path.join(tmp, '%s_b%d_%s.bin' % (model, batch, name))
            if not os.path.exists(f):
                np.ascontiguousarray(array).astype(array.dtype.newbyteorder('<')).tofile(f)
            inputs.append({'name': name, 'dtype': str(array.dtype), 'shape': list(array.shape),
                           'file': f})
        runs.append({'key': '%s/%d' % (model, batch), 'model': case['path'], 'inputs': inputs,
                     'out_prefix': os.path.join(tmp, 'ort_%s_b%d_r%d' % (model, batch,
                                                                           round_index))})
    job = os.path.join(tmp, 'ort_job_%d.json' % round_index)
    with open(job, 'w') as f:
        json.dump({'threads': threads, 'seconds': seconds, 'warmup': 5, 'runs': runs}, f)
    p = subprocess.run(['node', os.path.join(HERE, 'ort_bench.js'), job],
                       stdout=subprocess.PIPE, universal_newlines=True, check=True)
    report = json.loads(p.stdout)
    out = {}
    for key in cases:
        r = report['%s/%d' % key]
        outputs = {}
        for name, o in r['outputs'].items():
            dtype = {'float32': np.float32, 'int64': np.int64}[o['dtype']]
            outputs[name] = np.fromfile(o['file'], dtype=dtype).reshape(o['shape'])
        out[key] = (r['latencies_s'], outputs)
    return out


# ---- PyTorch in-process ------------------------------------------------------

def run_pytorch(torch, module, args, seconds):
    """Latencies (s) of module(*args) for about `seconds`, after a warm-up."""
    with torch.no_grad():
        for _ in range(5):
            module(*args)
        latencies = []
        end = time.perf_counter() + seconds
        while len(latencies) < 5 or time.perf_counter() < end:
            t0 = time.perf_counter()
            module(*args)
            latencies.append(time.perf_counter() - t0)
    return latencies


# ---- Tessera over gRPC -------------------------------------------------------

def tessera_bench(tessera, address, model, npy_inputs, requests):
    """`tessera bench --concurrency 1`: (req/s, mean ms, p50 ms)."""
    cmd = [tessera, 'bench', '--server', address, '--model', model,
           '--concurrency', '1', '--requests', str(requests), '--format', 'json']
    for name, path in npy_inputs.items():
        cmd += ['--input', '%s=%s' % (name, path)]
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       universal_newlines=True, timeout=600)
    try:
        doc = json.loads(p.stdout) if p.returncode == 0 else None
    except ValueError:
        doc = None
    if not doc or doc['errors']:
        raise RuntimeError('%s failed (%d):\n%s%s' % (' '.join(cmd), p.returncode,
                                                      p.stdout, p.stderr))
    lat = doc['latency_ms']
    return doc['throughput_rps'], lat['mean'], lat['p50']


def run_tessera(tessera, address, model, npy_inputs, seconds):
    """(p50 s, req/s) of about `seconds` of single-stream requests, after a
    warm-up of 10 that also sets the count."""
    _, mean_ms, _ = tessera_bench(tessera, address, model, npy_inputs, 10)
    requests = max(10, int(seconds * 1000.0 / max(mean_ms, 1e-3)))
    rate, _, p50_ms = tessera_bench(tessera, address, model, npy_inputs, requests)
    return p50_ms / 1000.0, rate


# ---- report ------------------------------------------------------------------

def max_abs_diff(got, want):
    return max(float(np.abs(got[n].astype(np.float64) - want[n].astype(np.float64)).max())
               for n in want)


def report(models, batch, threads, rounds, results, diffs):
    print()
    print('single stream, %d kernel thread(s) per engine (the 2-way split: 2 workers x %d); '
          'median of %d rounds' % (threads, threads, rounds))
    print('%-12s %-14s %12s %14s %12s %12s' % ('model', 'engine', 'b1 p50 ms',
                                              'b%d rows/s' % batch, 'b%d ms/call' % batch,
                                              'max|d| torch'))
    for m in models:
        for e in ENGINES:
            lat1 = statistics.median(results[m, e, 'p50'])
            rows = statistics.median(results[m, e, 'rows'])
            diff = 'reference' if e == 'pytorch' else '%.2e' % diffs[m, e]
            print('%-12s %-14s %12.3f %14.0f %12.3f %12s' % (
                m, e, lat1 * 1e3, rows, batch / rows * 1e3, diff))
    print()
    print('time ratios (> 1: Tessera takes longer)')
    print('%-12s %-14s %12s %12s %12s %12s' % ('model', 'tessera as', 'b1 / ORT',
                                              'b%d / ORT' % batch, 'b1 / torch',
                                              'b%d / torch' % batch))
    for m in models:
        for e in ('tessera', 'tessera-split'):
            def ratio(peer):
                lat = (statistics.median(results[m, e, 'p50']) /
                       statistics.median(results[m, peer, 'p50']))
                thr = (statistics.median(results[m, peer, 'rows']) /
                       statistics.median(results[m, e, 'rows']))
                return lat, thr
            ol, ot = ratio('onnxruntime')
            pl, pt = ratio('pytorch')
            print('%-12s %-14s %12.2f %12.2f %12.2f %12.2f' % (m, e, ol, ot, pl, pt))


def main(argv):
    args = parse_args(argv)
    kserve.BUILD = os.path.abspath(args.build)
    import export_models
    torch = export_models.torch
    torch.set_num_threads(args.threads)

    models = [m for m in args.models.split(',') if m]
    unknown = [m for m in models if m not in export_models.MODELS]
    if unknown:
        print('peers.py: unknown model(s): %s' % ', '.join(unknown), file=sys.stderr)
        return 2
    ensure_onnxruntime()
    tessera = kserve.binary('tessera')
    tmp = tempfile.mkdtemp(prefix='tessera_peers_')
    try:
        cases = {}
        for m in models:
            path = export_models.export(m, tmp)
            for b in (1, args.batch):
                inputs = export_models.make_inputs(m, b, seed=b, sequence=SEQUENCE)
                npy = {}
                for name, array in inputs.items():
                    npy[name] = os.path.join(tmp, '%s_b%d_%s.npy' % (m, b, name))
                    np.save(npy[name], array)
                cases[m, b] = {'path': path, 'inputs': inputs, 'npy': npy,
                               'want': export_models.reference(m, inputs)}
        worker_threads = ['--worker-threads', str(args.threads)]
        single = kserve.Cluster([(m, cases[m, 1]['path'], {'strategy': 'data', 'replicas': 1})
                                 for m in models], local_workers=1, extra_args=worker_threads)
        split = kserve.Cluster([(m, cases[m, 1]['path'],
                                 {'strategy': 'tensor', 'shards': 2, 'replicas': 1})
                                for m in models], local_workers=2, extra_args=worker_threads)
        with single, split:
            clusters = {'tessera': single, 'tessera-split': split}
            diffs = {}
            for m in models:
                case = cases[m, args.batch]
                for e, c in clusters.items():
                    diffs[m, e] = max_abs_diff(c.client.infer(m, case['inputs']), case['want'])
            results = {}

            def add(model, engine, what, value):
                results.setdefault((model, engine, what), []).append(value)

            for r in range(args.rounds):
                print('round %d/%d' % (r + 1, args.rounds), file=sys.stderr)
                ort = run_onnxruntime(cases, args.threads, args.seconds, tmp, r)
                for m in models:
                    for b in (1, args.batch):
                        case = cases[m, b]
                        latencies, outputs = ort[m, b]
                        if b == args.batch:
                            diffs[m, 'onnxruntime'] = max_abs_diff(outputs, case['want'])
                        targs = [torch.from_numpy(a) for a in case['inputs'].values()]
                        lat_torch = run_pytorch(torch, export_models.module(m), targs,
                                                args.seconds)
                        for engine, lat in (('onnxruntime', latencies), ('pytorch', lat_torch)):
                            if b == 1:
                                add(m, engine, 'p50', statistics.median(lat))
                            else:
                                add(m, engine, 'rows', b * len(lat) / sum(lat))
                        for e, c in clusters.items():
                            p50, rate = run_tessera(tessera, c.address, m, case['npy'],
                                                    args.seconds)
                            if b == 1:
                                add(m, e, 'p50', p50)
                            else:
                                add(m, e, 'rows', b * rate)
        report(models, args.batch, args.threads, args.rounds, results, diffs)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
