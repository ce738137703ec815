#!/usr/bin/python3
"""Reduced-precision shards of the 168 MB MLP: speed, bytes and accuracy.

The MLP of tests/python/export_models.py (mlp_168mb: 2048-5120-2048-5120-
2048-16, 168 MB of float32 weights) is served by four coordinators at once,
each tensor-split over 2 workers of --threads kernel threads of its own
(strategy=tensor,shards=2,replicas=1) with precision=fp32, fp16, bf16 and
int8, and run by ONNX Runtime (onnxruntime-node, bench/ort_bench.js via
peers.py) in float32 with 1 and 2 intra-op threads. For each:

  shard bytes  the bytes of the shards the coordinator sends the workers
               (ClusterStatus), and their ratio to fp32's;
  worker MB    the two workers' resident memory once loaded (VmRSS, before
               any inference) above what they held idle (VmHWM at start);
  batch 1, N   p50 latency of single-stream requests (`tessera bench
               --concurrency 1 --format json`; ORT in-process);
  accuracy     on --rows random rows: max |y - torch| and max |y - torch| /
               max |torch| against torch's float32 answer, and top-1
               agreement (argmax of the 16 scores) with torch.

Rounds (--rounds) time every engine in turn, so that other load falls on
all alike; the table gives the median over the rounds.

    /usr/bin/python3 bench/precision.py [--build DIR] [--threads 1]
        [--batch 16] [--rows 256] [--seconds 2] [--rounds 3]

Everything stays on 127.0.0.1. See bench/README.md.
"""
import argparse
import os
import shutil
import statistics
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import peers  # noqa: E402  (ONNX Runtime in node; sets up tests/python)
import scaling  # noqa: E402  (tessera bench --format json)
import admin  # noqa: E402
import kserve  # noqa: E402
import test_memory  # noqa: E402  (VmRSS, VmHWM)

MODEL = 'mlp_168mb'
PRECISIONS = ['fp32', 'fp16', 'bf16', 'int8']


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--build', default=os.environ.get('TESSERA_BUILD',
                                                     os.path.join(peers.SOURCE, 'build')))
    p.add_argument('--threads', type=int, default=1, help='kernel threads per worker')
    p.add_argument('--batch', type=int, default=16)
    p.add_argument('--rows', type=int, default=256, help='rows for the accuracy figures')
    p.add_argument('--seconds', type=float, default=2.0)
    p.add_argument('--rounds', type=int, default=3)
    return p.parse_args(argv)


def bench_p50(tessera, address, npy, seconds):
    """p50 seconds of about `seconds` of `tessera bench --concurrency 1
    --format json`, after 5 requests that also set the count."""
    _, p50_ms, _ = scaling.tessera_bench(tessera, address, MODEL, npy, 1, 5)
    requests = max(10, int(seconds * 1000.0 / max(p50_ms, 1e-3)))
    _, p50_ms, _ = scaling.tessera_bench(tessera, address, MODEL, npy, 1, requests)
    return p50_ms / 1000.0


def accuracy(got, want):
    """(max abs error, max abs error / max |want|, top-1 agreement)."""
    got, want = got.astype(np.float64), want.astype(np.float64)
    err = float(np.abs(got - want).max())
    top1 = float(np.mean(np.argmax(got, axis=1) == np.argmax(want, axis=1)))
    return err, err / float(np.abs(want).max()), top1


def main(argv):
    args = parse_args(argv)
    kserve.BUILD = os.path.abspath(args.build)
    import export_models
    export_models.torch.set_num_threads(1)
    peers.ensure_onnxruntime()
    tessera = kserve.binary('tessera')
    tmp = tempfile.mkdtemp(prefix='tessera_precision_')
    try:
        path = export_models.export(MODEL, tmp)
        cases, npy = {}, {}
        for b in (1, args.batch):
            inputs = export_models.make_inputs(MODEL, b, seed=b)
            cases[MODEL, b] = {'path': path, 'inputs': inputs}
            npy[b] = {}
            for name, array in inputs.items():
                npy[b][name] = os.path.join(tmp, 'b%d_%s.npy' % (b, name))
                np.save(npy[b][name], array)
        rows = export_models.make_inputs(MODEL, args.rows, seed=99)
        want = export_models.reference(MODEL, rows)['scores']

        workers = {p: [kserve.Worker(threads=args.threads) for _ in range(2)]
                   for p in PRECISIONS}
        clusters, idle, info = {}, {}, {}
        try:
            for p in PRECISIONS:
                for w in workers[p]:
                    w.__enter__()
                idle[p] = sum(test_memory.proc_status(w.proc.pid)['VmHWM'] for w in workers[p])
                clusters[p] = kserve.Cluster(
                    [(MODEL, path, {'strategy': 'tensor', 'shards': 2, 'replicas': 1,
                                    'precision': p})],
                    local_workers=0, workers=[w.address for w in workers[p]])
                clusters[p].__enter__()
            for p, c in clusters.items():
                rss = sum(test_memory.proc_status(w.proc.pid)['VmRSS'] for w in workers[p])
                status = admin.cluster_status(c.address)
                shards = [s for st in admin.shards_of(status, MODEL).values() for s in st]
                got = np.concatenate([c.client.infer(MODEL, {'features': rows['features'][i:i + 64]})
                                      ['scores'] for i in range(0, args.rows, 64)])
                info[p] = {'bytes': sum(s.bytes for s in shards), 'acc': accuracy(got, want),
                           'rss': rss - idle[p]}
            times = {}
            for r in range(args.rounds):
                print('round %d/%d' % (r + 1, args.rounds), file=sys.stderr)
                for t in (1, 2):
                    ort = peers.run_onnxruntime(cases, t, args.seconds, tmp, r * 2 + t)
                    for b in (1, args.batch):
                        latencies, outputs = ort[MODEL, b]
                        times.setdefault(('ort%d' % t, b), []).append(statistics.median(latencies))
                        if b == args.batch and t == 2 and r == 0:
                            ref_b = export_models.reference(MODEL, cases[MODEL, b]['inputs'])
                            info['ort'] = {'acc': accuracy(outputs['scores'], ref_b['scores'])}
                for p, c in clusters.items():
                    for b in (1, args.batch):
                        times.setdefault((p, b), []).append(
                            bench_p50(tessera, c.address, npy[b], args.seconds))
        finally:
            for c in clusters.values():
                c.__exit__(None, None, None)
            for ws in workers.values():
                for w in ws:
                    if w.proc:
                        w.__exit__(None, None, None)

        med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
        b, full = args.batch, info['fp32']['bytes']
        print()
        print('%s, tensor split over 2 workers x %d kernel thread(s); ONNX Runtime float32 '
              'in-process; p50 ms, median of %d rounds; accuracy on %d rows vs torch float32'
              % (MODEL, args.threads, args.rounds, args.rows))
        print()
        print('| engine | shard bytes | vs fp32 | worker MB | batch 1 ms | batch %d ms '
              '| b1 / ORT 2 thr | b%d / ORT 2 thr | max abs err | max rel err | top-1 agree |'
              % (b, b))
        print('|---|---|---|---|---|---|---|---|---|---|---|')
        for p in PRECISIONS:
            err, rel, top1 = info[p]['acc']
            print('| tessera %s | %d | %.3f | %.1f | %.2f | %.2f | %.2f | %.2f | %.2e | %.2e '
                  '| %.4f |'
                  % (p, info[p]['bytes'], info[p]['bytes'] / full, info[p]['rss'] / 1e6,
                     med[p, 1], med[p, b], med[p, 1] / med['ort2', 1],
                     med[p, b] / med['ort2', b], err, rel, top1))
        for t in (1, 2):
            print('| onnxruntime %d thr | | | | %.2f | %.2f | %.2f | %.2f | | | |'
                  % (t, med['ort%d' % t, 1], med['ort%d' % t, b],
                     med['ort%d' % t, 1] / med['ort2', 1], med['ort%d' % t, b] / med['ort2', b]))
        err, rel, top1 = info['ort']['acc']
        print()
        print('onnxruntime float32 at batch %d vs torch: max abs err %.2e, max rel err %.2e'
              % (b, err, rel))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
