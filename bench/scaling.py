#!/usr/bin/python3
"""Scaling curve: throughput under many concurrent clients as workers are
added, against ONNX Runtime given as many threads (issue 11, item 7).

For each model (default: the 168 MB MLP and the ResNet-style CNN of
tests/python/export_models.py) and each N of --workers (default 1,2,4,8):

  onnxruntime       one InferenceSession (Python onnxruntime, CPU provider),
                    intra_op_num_threads N, inter_op 1, called by
                    --concurrency threads at once (each loops session.run on
                    one batch-1 input for --seconds);
  tessera           coordinator + N local workers of 1 kernel thread each
                    (--worker-threads 1), the model with strategy=data,
                    replicas=N (every worker holds the whole model), loaded by
                    `tessera bench --concurrency C` over gRPC on loopback;
  tessera-batched   the same with dynamic batching (max_batch=C,
                    batch_delay_us=--batch-delay-us).

Every engine's answer to one input is first compared with the torch
module's (export_models.reference); a difference over 1e-3 stops the run.
The report gives requests/s, p50 and p99 (ms) per configuration and the
ratio Tessera/ORT of throughputs (> 1: Tessera serves more), writes
OUT/scaling.csv, and, where matplotlib is importable, plots OUT/scaling.png
(throughput against workers/threads, one panel per model).

--pin on (the default) runs each engine's serving side on N cores: ONNX
Runtime's whole process (its session and the 32 calling threads: without
it, concurrent session.run calls use every core whatever
intra_op_num_threads says), and Tessera's coordinator with its workers
(they inherit the affinity), while `tessera bench` runs on the other
cores. --pin off leaves every process on every core.

The load generator shares the machine with what it loads, so run it on a
machine with more cores than the largest N (the curve in README came from
a 16-core machine through bench/bundle.sh; see bench/README.md):

    /usr/bin/python3 bench/scaling.py --build DIR [--workers 1,2,4,8]
        [--models mlp_168mb,resnet] [--concurrency 32] [--seconds 10]
        [--out DIR]
"""
import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(SOURCE, 'tests', 'python'))
import kserve  # noqa: E402

TOLERANCE = 1e-3


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--build', default=os.path.join(SOURCE, 'build'))
    p.add_argument('--workers', default='1,2,4,8')
    p.add_argument('--models', default='mlp_168mb,resnet')
    p.add_argument('--concurrency', type=int, default=32)
    p.add_argument('--seconds', type=float, default=10.0)
    p.add_argument('--batch-delay-us', type=int, default=1000)
    p.add_argument('--engines', default='onnxruntime,tessera,tessera-batched')
    p.add_argument('--out', default='.')
    p.add_argument('--pin', choices=('on', 'off'), default='on',
                   help='on (default): each engine\'s serving side runs on N '
                   'cores (see the file comment)')
    return p.parse_args(argv[1:])


def percentile_ms(latencies, q):
    return 1000.0 * float(np.percentile(latencies, q)) if latencies else float('nan')


def max_abs_diff(got, want):
    return max(float(np.max(np.abs(np.asarray(got[k], np.float64) - want[k])))
               for k in want)


# ---- CPU placement --------------------------------------------------------------

class Pinned:
    """`with Pinned(cores):` the calling thread, and the threads and
    processes it starts meanwhile, run on `cores` (None: unchanged); the
    old affinity is restored on exit."""

    def __init__(self, cores):
        self.cores = cores

    def __enter__(self):
        self.old = os.sched_getaffinity(0)
        if self.cores is not None:
            os.sched_setaffinity(0, self.cores)

    def __exit__(self, *exc):
        os.sched_setaffinity(0, self.old)


def split_cores(n, pin):
    """(serving cores, load-generator cores) for N: the first N CPUs this
    process may use serve, the rest load (None, None without pinning)."""
    cpus = sorted(os.sched_getaffinity(0))
    if not pin:
        return None, None
    if n >= len(cpus):
        raise SystemExit('scaling.py: %d cores asked to serve, %d available; '
                         'leave some to the load generator or pass --pin off'
                         % (n, len(cpus)))
    return set(cpus[:n]), set(cpus[n:])


# ---- ONNX Runtime in-process, C threads at once -------------------------------

def run_onnxruntime(ort, path, inputs, want, threads, concurrency, seconds):
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    sess = ort.InferenceSession(path, so, providers=['CPUExecutionProvider'])
    names = [o.name for o in sess.get_outputs()]
    got = dict(zip(names, sess.run(None, inputs)))
    diff = max_abs_diff(got, want)
    if diff > TOLERANCE:
        raise SystemExit('scaling.py: onnxruntime differs from torch by %g' % diff)
    for _ in range(5):
        sess.run(None, inputs)
    latencies = [[] for _ in range(concurrency)]
    start = threading.Barrier(concurrency + 1)
    stop = [0.0]

    def client(mine):
        start.wait()
        while True:
            t0 = time.perf_counter()
            if t0 >= stop[0]:
                return
            sess.run(None, inputs)
            mine.append(time.perf_counter() - t0)

    pool = [threading.Thread(target=client, args=(latencies[i],)) for i in range(concurrency)]
    for t in pool:
        t.start()
    t0 = time.perf_counter()
    stop[0] = t0 + seconds
    start.wait()
    for t in pool:
        t.join()
    elapsed = time.perf_counter() - t0
    flat = [x for lane in latencies for x in lane]
    return len(flat) / elapsed, percentile_ms(flat, 50), percentile_ms(flat, 99), diff


# ---- Tessera: coordinator + N workers, tessera bench ----------------------------

def tessera_bench(tessera, address, model, npy, concurrency, requests, cores=None):
    cmd = [tessera, 'bench', '--server', address, '--model', model, '--format', 'json',
           '--concurrency', str(concurrency), '--requests', str(requests)]
    for name, f in npy.items():
        cmd += ['--input', '%s=%s' % (name, f)]
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       universal_newlines=True, timeout=900,
                       preexec_fn=(lambda: os.sched_setaffinity(0, cores)) if cores else None)
    if p.returncode != 0:
        raise RuntimeError('%s failed (%d):\n%s%s' % (' '.join(cmd), p.returncode,
                                                      p.stdout, p.stderr))
    doc = json.loads(p.stdout)
    return doc['throughput_rps'], doc['latency_ms']['p50'], doc['latency_ms']['p99']


def run_tessera(tessera, model, path, inputs, npy, want, workers, concurrency, seconds,
                batch_delay_us, serve=None, load=None):
    opts = {'strategy': 'data', 'replicas': workers}
    if batch_delay_us is not None:
        opts.update({'max_batch': concurrency, 'batch_delay_us': batch_delay_us})
    cluster = kserve.Cluster([(model, path, opts)], local_workers=workers,
                             extra_args=['--worker-threads', '1'], start_timeout=600)
    # the coordinator and its workers inherit `serve`; the load generator
    # runs on `load` (tessera_bench)
    with Pinned(serve), cluster:
        diff = max_abs_diff(cluster.client.infer(model, inputs), want)
        if diff > TOLERANCE:
            raise SystemExit('scaling.py: tessera differs from torch by %g' % diff)
        warm, _, _ = tessera_bench(tessera, cluster.address, model, npy, concurrency,
                                   concurrency * 8, load)
        requests = max(concurrency * 8, int(warm * seconds))
        rate, p50, p99 = tessera_bench(tessera, cluster.address, model, npy, concurrency,
                                       requests, load)
    return rate, p50, p99, diff


# ---- report ------------------------------------------------------------------

def plot(rows, models, counts, out):
    try:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
    except ImportError:
        print('scaling.py: matplotlib is not importable; no PNG (the CSV has the numbers)',
              file=sys.stderr)
        return None
    fig, axes = plt.subplots(1, len(models), figsize=(6 * len(models), 4.5), squeeze=False)
    for ax, m in zip(axes[0], models):
        for engine in sorted({r['engine'] for r in rows}):
            pts = [(r['n'], r['req_s']) for r in rows if r['model'] == m and r['engine'] == engine]
            if pts:
                xs, ys = zip(*sorted(pts))
                ax.plot(xs, ys, marker='o', label=engine)
        ax.set_xscale('log', base=2)
        ax.set_xticks(counts)
        ax.set_xticklabels([str(c) for c in counts])
        ax.set_xlabel('workers (Tessera, 1 thread each) / threads (ONNX Runtime)')
        ax.set_ylabel('requests/s (batch 1)')
        ax.set_title(m)
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.tight_layout()
    png = os.path.join(out, 'scaling.png')
    fig.savefig(png, dpi=110)
    return png


def main(argv):
    args = parse_args(argv)
    kserve.BUILD = os.path.abspath(args.build)
    import export_models
    counts = [int(n) for n in args.workers.split(',') if n]
    models = [m for m in args.models.split(',') if m]
    engines = [e for e in args.engines.split(',') if e]
    ort = None
    if 'onnxruntime' in engines:
        try:
            import onnxruntime as ort
        except ImportError:
            raise SystemExit('scaling.py: the Python onnxruntime package is needed '
                             '(not in Debian bookworm; pip install onnxruntime), '
                             'or leave it out of --engines')
    tessera = kserve.binary('tessera')
    os.makedirs(args.out, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix='tessera_scaling_')
    print('cpus %d; onnxruntime %s; concurrency %d; %.0f s per run' % (
        os.cpu_count(), ort.__version__ if ort else '-', args.concurrency, args.seconds),
        flush=True)
    rows = []
    for m in models:
        path = export_models.export(m, tmp)
        inputs = export_models.make_inputs(m, 1, seed=1)
        want = export_models.reference(m, inputs)
        npy = {}
        for name, a in inputs.items():
            npy[name] = os.path.join(tmp, '%s_%s.npy' % (m, name))
            np.save(npy[name], a)
        for n in counts:
            for e in engines:
                serve, load = split_cores(n, args.pin == 'on')
                if e == 'onnxruntime':
                    with Pinned(serve):
                        r = run_onnxruntime(ort, path, inputs, want, n, args.concurrency,
                                            args.seconds)
                else:
                    delay = args.batch_delay_us if e == 'tessera-batched' else None
                    r = run_tessera(tessera, m, path, inputs, npy, want, n,
                                    args.concurrency, args.seconds, delay, serve, load)
                row = {'model': m, 'engine': e, 'n': n, 'req_s': r[0], 'p50_ms': r[1],
                       'p99_ms': r[2], 'max_abs_diff': r[3]}
                rows.append(row)
                print('%-10s %-16s n=%d  %9.1f req/s  p50 %8.2f ms  p99 %8.2f ms  '
                      '(max |diff| vs torch %.1e)' % (m, e, n, r[0], r[1], r[2], r[3]),
                      flush=True)
    with open(os.path.join(args.out, 'scaling.csv'), 'w', newline='') as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    print('\nthroughput ratio Tessera / ONNX Runtime (> 1: Tessera serves more)')
    print('%-10s %-16s %s' % ('model', 'engine', '  '.join('n=%-5d' % n for n in counts)))
    for m in models:
        base = {r['n']: r['req_s'] for r in rows if r['model'] == m and r['engine'] == 'onnxruntime'}
        for e in engines:
            if e == 'onnxruntime' or not base:
                continue
            cells = []
            for n in counts:
                got = [r['req_s'] for r in rows if r['model'] == m and r['engine'] == e
                       and r['n'] == n]
                cells.append('%-7.2f' % (got[0] / base[n]) if got and base.get(n) else '-      ')
            print('%-10s %-16s %s' % (m, e, ' '.join(cells)))
    png = plot(rows, models, counts, args.out)
    print('\nwrote %s%s' % (os.path.join(args.out, 'scaling.csv'),
                            ' and ' + png if png else ''))
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv))
