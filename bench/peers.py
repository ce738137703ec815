#!/usr/bin/python3
"""Tessera against its peers, ONNX Runtime and PyTorch, on the same machine,
the same models, the same inputs and the same thread counts, in one run,
with the time of each hop of Tessera's request path.

Models (--models), one of every class issue 11 names:

  linear_regression, logreg_multinomial, svc_rbf_multi
                 scikit-learn models of tests/python/sklearn_models.py
                 (ai.onnx.ml graphs written from the fitted coefficients;
                 the reference is scikit-learn's own answer)
  mlp, mlp_168mb, lenet, resnet, transformer
                 torch modules of tests/python/export_models.py (the
                 reference is the module; the transformer at 16 tokens)

Engines, for every --threads T (default 1,2):

  tessera        coordinator + 1 worker of T kernel threads,
                 strategy=data,replicas=1, end to end over gRPC on loopback
  tessera-split  coordinator + 2 workers of T threads each, in the model's
                 best split (SPLIT below: tensor,shards=2 for mlp_168mb,
                 lenet, resnet and transformer; data,replicas=2 for the
                 small MLP and the sklearn models)
  onnxruntime    onnxruntime-node (CPU execution provider) in-process, in
                 node (bench/ort_bench.js), intraOpNumThreads T
  pytorch        the torch module in-process, set_num_threads(T) (n/a for
                 the sklearn models)

Every engine's answer at every batch is checked against the reference
before anything is timed (|got - ref| within the tolerance of
sklearn_models.py, or 1e-3 x max(1, max|ref|) for the torch models; labels
exact); a wrong answer stops the run. Each (model, batch, engine) is then
timed single-stream (one call at a time, closed loop) for about --seconds,
in --rounds rounds, so that other load falls on all engines alike; the
report gives the median over the rounds of each run's p50 per call.

Tessera is timed with the C client (`tessera bench --concurrency 1`). Its
coordinator and workers run with --metrics-listen on loopback; /metrics of
every daemon is read just before and just after each timed run, and the
differences give mean per-request times of each hop:

  client        the client's mean end to end (tessera bench)
  coord         tessera_request_duration_seconds (arrival to answer)
  c<->coord     client - coord: gRPC transport and the client's own work
  queue         tessera_request_queue_seconds
  bind          tessera_request_compute_input_seconds +
                tessera_request_compute_output_seconds
  cluster       tessera_request_compute_seconds (the inference across the
                workers, from the coordinator)
  worker        tessera_worker_run_seconds of the busiest worker, per
                request (kernel time on its pool)
  c<->w+fuse    cluster - worker: RunShard transport, the coordinator's
                dispatch and the fusion of shard outputs

Prints the times (µs), the ratio table Tessera/ORT, the hop table, and
each goal of issue 11 as met or missed; --format json or csv prints the
same numbers as one document instead.

    /usr/bin/python3 bench/peers.py [--build DIR] [--models a,b,...]
        [--threads 1,2] [--batches 1,16] [--seconds 0.5] [--rounds 3]
        [--format text|json|csv]

ONNX Runtime comes from npm: onnxruntime-node is installed into
bench/node_modules (gitignored) when missing, with --ignore-scripts (its
install script fetches GPU libraries; the CPU library ships in the package).
Everything stays on 127.0.0.1. See bench/README.md.
"""
import collections
import csv
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

import numpy as np
import onnx

import benchargs  # bench/, beside this script

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(SOURCE, 'tests', 'python'))
import kserve  # noqa: E402  (BUILD: $TESSERA_BUILD or SOURCE/build)

SKLEARN = ['linear_regression', 'logreg_multinomial', 'svc_rbf_multi']
TORCH = ['mlp', 'mlp_168mb', 'lenet', 'resnet', 'transformer']
DEFAULT_MODELS = ','.join(SKLEARN + TORCH)
LABELS = {'linear_regression': 'linear regression', 'logreg_multinomial': 'logistic regression',
          'svc_rbf_multi': 'scikit-learn SVC (rbf)', 'mlp': 'small MLP',
          'mlp_168mb': '168 MB MLP', 'lenet': 'LeNet-style CNN', 'resnet': 'small ResNet',
          'transformer': 'transformer encoder'}
# Tessera's best 2-worker configuration of each model: the small ones are
# replicated (a tensor split of the 85 k-parameter MLP only adds a hop; the
# sklearn graphs have no op to split), the large ones tensor-split.
REPLICATED = SKLEARN + ['mlp']
SPLIT = dict([(m, {'strategy': 'data', 'replicas': 2}) for m in REPLICATED] +
             [(m, {'strategy': 'tensor', 'shards': 2, 'replicas': 1})
              for m in TORCH if m not in REPLICATED])
TESSERA = ['tessera', 'tessera-split']
ENGINES = TESSERA + ['onnxruntime', 'pytorch']
ORT_PACKAGE = 'onnxruntime-node'
SEQUENCE = 16  # the transformer's tokens per row
TORCH_RTOL = 1e-3  # torch models: |got - ref| <= TORCH_RTOL * max(1, max|ref|)
HOPS = ['client', 'coord', 'c<->coord', 'queue', 'bind', 'cluster', 'worker', 'c<->w+fuse']


def int_list(text):
    return [int(v) for v in text.split(',') if v]


def parse_args(argv):
    p = benchargs.parser(__doc__)
    p.add_argument('--build', default=kserve.BUILD,
                   help='meson build dir with the daemons and the tessera CLI')
    p.add_argument('--models', default=DEFAULT_MODELS, help='comma-separated models')
    p.add_argument('--threads', type=int_list, default='1,2',
                   help='kernel threads per engine (per worker), comma-separated')
    p.add_argument('--batches', type=int_list, default='1,16',
                   help='rows per call, comma-separated (sklearn models: at most 16)')
    p.add_argument('--seconds', type=float, default=0.5,
                   help='measured time of each (model, batch, engine) per round')
    p.add_argument('--rounds', type=int, default=3, help='rounds')
    p.add_argument('--format', choices=['text', 'json', 'csv'], default='text',
                   help='report format')
    return p.parse_args(argv)


# ---- models and their references --------------------------------------------

def sklearn_cases(name, batches, tmp):
    """{batch: case} of a sklearn_models.py model: its first `batch` test rows
    and scikit-learn's answers on them."""
    import sklearn_models
    model, xt, refs = dict(sklearn_models.MODELS)[name]()
    path = os.path.join(tmp, name + '.onnx')
    onnx.save(model, path)
    cases = {}
    for b in batches:
        if b > len(xt):
            raise SystemExit('peers.py: %s has %d test rows; batch %d is too many'
                             % (name, len(xt), b))
        want = collections.OrderedDict()
        for out_name, value, tolerance in refs.values():
            dtype = np.int64 if tolerance is None else np.float32
            want[out_name] = (np.ascontiguousarray(value[:b], dtype=dtype), tolerance)
        cases[b] = {'path': path, 'want': want, 'torch': False,
                    'inputs': collections.OrderedDict(
                        X=np.ascontiguousarray(xt[:b], dtype=np.float32))}
    return cases


def torch_cases(name, batches, tmp):
    import export_models
    path = export_models.export(name, tmp)
    cases = {}
    for b in batches:
        inputs = export_models.make_inputs(name, b, seed=b, sequence=SEQUENCE)
        want = collections.OrderedDict()
        for out_name, ref in export_models.reference(name, inputs).items():
            scale = max(1.0, float(np.abs(ref).max()))
            want[out_name] = (ref, {'rtol': 0.0, 'atol': TORCH_RTOL * scale})
        cases[b] = {'path': path, 'inputs': inputs, 'want': want, 'torch': True}
    return cases


def check(engine, model, batch, got, want):
    """Max abs difference of got from the reference; SystemExit when an
    output is missing, misshapen or out of tolerance."""
    worst = 0.0
    for name, (ref, tol) in want.items():
        if name not in got or tuple(got[name].shape) != tuple(ref.shape):
            raise SystemExit('peers.py: %s %s b%d: output %s is %s, want shape %s' % (
                engine, model, batch, name,
                tuple(got[name].shape) if name in got else 'missing', tuple(ref.shape)))
        g, r = got[name].astype(np.float64), ref.astype(np.float64)
        d = np.abs(g - r)
        bound = 0.0 if tol is None else tol['atol'] + tol['rtol'] * np.abs(r)
        if np.any(d > bound):
            raise SystemExit('peers.py: %s %s b%d: output %s differs from the reference by '
                             '%.3g (allowed %s)' % (engine, model, batch, name, d.max(), tol))
        worst = max(worst, float(d.max()))
    return worst


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


def run_onnxruntime(cases, threads, seconds, tmp, tag):
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
                     'out_prefix': os.path.join(tmp, 'ort_%s_b%d_%s' % (model, batch, tag))})
    job = os.path.join(tmp, 'ort_job_%s.json' % tag)
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


# ---- Tessera over gRPC, and its /metrics ---------------------------------------

def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


METRIC_LINE = re.compile(r'^([A-Za-z_:][A-Za-z0-9_:]*)(\{[^}]*\})?\s+(\S+)\s*$')


def scrape(port):
    """{(name, labels): value} of one daemon's /metrics; labels is '' or
    '{k="v",...}' as the daemon writes it."""
    with urllib.request.urlopen('http://127.0.0.1:%d/metrics' % port, timeout=10) as r:
        text = r.read().decode()
    values = {}
    for line in text.splitlines():
        m = METRIC_LINE.match(line)
        if m and not line.startswith('#'):
            labels = m.group(2) or ''
            values[m.group(1), '' if labels == '{}' else labels] = float(m.group(3))
    return values


class Setup:
    """One Tessera configuration: workers and a coordinator, all with
    --metrics-listen on loopback ports."""

    def __init__(self, models, n_workers, threads):
        # A split model's request runs on all its workers at once, so its
        # worker time is the busiest worker's; a data-parallel one's on one.
        self.combine = {name: sum if opts.get('strategy') == 'data' else max
                        for name, _, opts in models}
        self.worker_ports = [free_port() for _ in range(n_workers)]
        self.workers = [kserve.Worker(threads, ['--metrics-listen', '127.0.0.1:%d' % p])
                        for p in self.worker_ports]
        self.models = models
        self.coord_port = free_port()
        self.cluster = None

    def __enter__(self):
        for w in self.workers:
            w.__enter__()
        self.cluster = kserve.Cluster(self.models, local_workers=0,
                                      workers=[w.address for w in self.workers],
                                      extra_args=['--metrics-listen',
                                                  '127.0.0.1:%d' % self.coord_port])
        self.cluster.__enter__()
        return self

    def __exit__(self, *exc):
        self.cluster.__exit__(*exc)
        for w in reversed(self.workers):
            w.__exit__(*exc)
        return False

    def snapshot(self):
        return scrape(self.coord_port), [scrape(p) for p in self.worker_ports]


def histogram_mean(before, after, name, labels, count):
    """Δsum / count of histogram `name` between two scrapes (s)."""
    key = (name + '_sum', labels)
    return (after.get(key, 0.0) - before.get(key, 0.0)) / count


def hops(model, before, after, client_mean_s, combine):
    """Mean per-request seconds of each hop (HOPS) between two snapshots."""
    (cb, wbs), (ca, was) = before, after
    labels = '{model="%s"}' % model
    count_key = ('tessera_request_duration_seconds_count', labels)
    n = ca.get(count_key, 0.0) - cb.get(count_key, 0.0)
    if n <= 0:
        raise RuntimeError('%s: the coordinator counted no request in the timed run' % model)

    def mean(name):
        return histogram_mean(cb, ca, 'tessera_request_' + name + '_seconds', labels, n)

    worker = combine(histogram_mean(wb, wa, 'tessera_worker_run_seconds', '', n)
                     for wb, wa in zip(wbs, was))
    h = {'client': client_mean_s, 'coord': mean('duration'), 'queue': mean('queue'),
         'bind': mean('compute_input') + mean('compute_output'),
         'cluster': mean('compute'), 'worker': worker}
    h['c<->coord'] = h['client'] - h['coord']
    h['c<->w+fuse'] = h['cluster'] - h['worker']
    return h


def tessera_bench(tessera, address, model, npy_inputs, requests):
    """`tessera bench --concurrency 1`: (mean ms, p50 ms)."""
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
    return doc['latency_ms']['mean'], doc['latency_ms']['p50']


def run_tessera(tessera, setup, model, npy_inputs, seconds):
    """(p50 s, hops) of about `seconds` of single-stream requests, after a
    warm-up of 10 that also sets the count; /metrics is read around the
    timed run only."""
    mean_ms, _ = tessera_bench(tessera, setup.cluster.address, model, npy_inputs, 10)
    requests = max(10, int(seconds * 1000.0 / max(mean_ms, 1e-3)))
    before = setup.snapshot()
    mean_ms, p50_ms = tessera_bench(tessera, setup.cluster.address, model, npy_inputs,
                                    requests)
    after = setup.snapshot()
    return p50_ms / 1000.0, hops(model, before, after, mean_ms / 1000.0, setup.combine[model])


# ---- report ------------------------------------------------------------------

def med(values):
    return statistics.median(values) if values else None


def summarise(results, hop_runs):
    """{(model, batch, threads, engine): median p50 s} and
    {(model, batch, threads, engine): {hop: median s}}."""
    times = {k: med(v) for k, v in results.items()}
    hop_table = {}
    for k, runs in hop_runs.items():
        hop_table[k] = {h: med([r[h] for r in runs]) for h in HOPS}
    return times, hop_table


# Columns of the ratio table: (heading, Tessera engine, its threads, ORT's
# threads); Tessera and ORT use the same number of cores in each.
RATIO_COLUMNS = [('1w x 1thr / ORT 1', 'tessera', 1, 1),
                 ('1w x 2thr / ORT 2', 'tessera', 2, 2),
                 ('2w x 1thr / ORT 2', 'tessera-split', 1, 2)]


def best_tessera(times, m, b, cores):
    """(time, configuration) of Tessera's fastest configuration on `cores`
    cores, or (None, None)."""
    options = [(times.get((m, b, cores, 'tessera')), '1w x %dthr' % cores)]
    if cores % 2 == 0:
        options.append((times.get((m, b, cores // 2, 'tessera-split')),
                        '2w x %dthr' % (cores // 2)))
    options = [o for o in options if o[0] is not None]
    return min(options) if options else (None, None)


def goals(models, batches, threads, times):
    """Issue 11's goals: [(goal, 'met'|'missed'|'not measured', detail)]."""
    out = []
    cores_list = sorted(set(threads))
    misses, checked = [], 0
    small_misses, small_checked = [], 0
    for m in models:
        for b in batches:
            for c in cores_list:
                ort = times.get((m, b, c, 'onnxruntime'))
                t, how = best_tessera(times, m, b, c)
                if ort is None or t is None:
                    continue
                if ort >= 1e-3:
                    checked += 1
                    if t > ort:
                        misses.append('%s b%d %d core(s): %.2fx (%s)' % (m, b, c, t / ort, how))
                elif ort < 100e-6:
                    small_checked += 1
                    if t > ort + 100e-6:
                        small_misses.append('%s b%d %d core(s): ORT + %.0f us (%s)' % (
                            m, b, c, (t - ort) * 1e6, how))
    out.append(('ORT >= 1 ms: Tessera <= 1.0x ORT, same cores',
                'not measured' if not checked else 'missed' if misses else 'met',
                '%d of %d cases over: %s' % (len(misses), checked, '; '.join(misses) or '-')))
    out.append(('ORT < 100 us: Tessera p50 <= ORT + 100 us',
                'not measured' if not small_checked else 'missed' if small_misses else 'met',
                '%d of %d cases over: %s' % (len(small_misses), small_checked,
                                            '; '.join(small_misses) or '-')))
    split = times.get(('mlp_168mb', 1, 1, 'tessera-split'))
    ort2 = times.get(('mlp_168mb', 1, 2, 'onnxruntime'))
    if split is None or ort2 is None:
        out.append(('168 MB MLP b1, 2w x 1thr tensor split <= 0.8x ORT 2 thr',
                    'not measured', 'needs mlp_168mb, batch 1, threads 1 and 2'))
    else:
        r = split / ort2
        out.append(('168 MB MLP b1, 2w x 1thr tensor split <= 0.8x ORT 2 thr',
                    'met' if r <= 0.8 else 'missed',
                    '%.2fx (%.0f us / %.0f us)' % (r, split * 1e6, ort2 * 1e6)))
    out.append(('32 clients, dynamic batching: >= 40 000 req/s', 'not measured',
                'single stream here; bench/batching.py measures it'))
    out.append(('int8 168 MB MLP: 4x smaller, faster, rel err <= 1e-2', 'not measured',
                'peers.py runs fp32 shards'))
    return out


def rows_for(models, batches, threads, times, hop_table, diffs):
    """Flat records, one per (model, batch, threads, engine) measured."""
    rows = []
    for m in models:
        for b in batches:
            for t in threads:
                for e in ENGINES:
                    k = (m, b, t, e)
                    if times.get(k) is None:
                        continue
                    r = {'model': m, 'batch': b, 'threads': t, 'engine': e,
                         'p50_us': round(times[k] * 1e6, 1),
                         'max_abs_diff': diffs.get(k)}
                    ort = times.get((m, b, t, 'onnxruntime'))
                    r['ratio_ort'] = round(times[k] / ort, 3) if ort else None
                    for h in HOPS:
                        v = hop_table.get(k, {}).get(h)
                        r['hop_' + h + '_us'] = None if v is None else round(v * 1e6, 1)
                    rows.append(r)
    return rows


def print_text(models, batches, threads, rounds, times, hop_table, goal_list):
    def us(v):
        return '-' if v is None else '{:,.0f}'.format(v * 1e6).replace(',', ' ')

    print()
    print('median of %d rounds of each run\'s p50 per call, µs; single stream' % rounds)
    cols = [(e, t) for e in ('onnxruntime', 'pytorch', 'tessera', 'tessera-split')
            for t in threads]
    name = {'onnxruntime': 'ORT %d thr', 'pytorch': 'torch %d thr',
            'tessera': 'Tessera 1w x %d thr', 'tessera-split': 'Tessera 2w x %d thr'}
    print('| model (batch) | ' + ' | '.join(name[e] % t for e, t in cols) + ' |')
    print('|---|' + '---:|' * len(cols))
    for m in models:
        for b in batches:
            print('| %s (%d) | ' % (LABELS.get(m, m), b) +
                  ' | '.join(us(times.get((m, b, t, e))) for e, t in cols) + ' |')
    print()
    print('Tessera time / ORT time, same cores (> 1: Tessera takes longer); '
          '2w: the split of SPLIT')
    print('| model (batch) | ' + ' | '.join(c[0] for c in RATIO_COLUMNS) + ' |')
    print('|---|' + '---:|' * len(RATIO_COLUMNS))
    for m in models:
        for b in batches:
            cells = []
            for _, e, t, ot in RATIO_COLUMNS:
                a, o = times.get((m, b, t, e)), times.get((m, b, ot, 'onnxruntime'))
                cells.append('-' if a is None or o is None else '%.2f' % (a / o))
            print('| %s (%d) | %s |' % (LABELS.get(m, m), b, ' | '.join(cells)))
    print()
    print('Tessera per hop, mean µs per request (c<->coord = client - coord; '
          'c<->w+fuse = cluster - worker)')
    print('| model (batch) | config | ' + ' | '.join(HOPS) + ' |')
    print('|---|---|' + '---:|' * len(HOPS))
    for m in models:
        for b in batches:
            for t in threads:
                for e in TESSERA:
                    h = hop_table.get((m, b, t, e))
                    if h:
                        cfg = '%dw x %d thr' % (1 if e == 'tessera' else 2, t)
                        print('| %s (%d) | %s | %s |' % (LABELS.get(m, m), b, cfg,
                                                         ' | '.join(us(h[k]) for k in HOPS)))
    print()
    print('issue 11 goals')
    for g, verdict, detail in goal_list:
        print('  [%s] %s: %s' % (verdict, g, detail))


def main(argv):
    args = parse_args(argv)
    kserve.BUILD = os.path.abspath(args.build)
    models = [m for m in args.models.split(',') if m]
    unknown = [m for m in models if m not in SKLEARN + TORCH]
    if unknown:
        print('peers.py: unknown model(s): %s (known: %s)' % (
            ', '.join(unknown), DEFAULT_MODELS), file=sys.stderr)
        return 2
    import export_models
    torch = export_models.torch
    ensure_onnxruntime()
    tessera = kserve.binary('tessera')
    tmp = tempfile.mkdtemp(prefix='tessera_peers_')
    try:
        cases = {}
        for m in models:
            per_batch = (sklearn_cases if m in SKLEARN else torch_cases)(m, args.batches, tmp)
            for b, case in per_batch.items():
                case['npy'] = {}
                for name, array in case['inputs'].items():
                    case['npy'][name] = os.path.join(tmp, '%s_b%d_%s.npy' % (m, b, name))
                    np.save(case['npy'][name], array)
                cases[m, b] = case
        results, hop_runs, diffs = {}, {}, {}
        for t in args.threads:
            torch.set_num_threads(t)
            single = Setup([(m, cases[m, args.batches[0]]['path'],
                             {'strategy': 'data', 'replicas': 1}) for m in models], 1, t)
            split = Setup([(m, cases[m, args.batches[0]]['path'], SPLIT[m]) for m in models],
                          2, t)
            with single, split:
                setups = {'tessera': single, 'tessera-split': split}
                for (m, b), case in cases.items():
                    for e, s in setups.items():
                        got = s.cluster.client.infer(m, case['inputs'])
                        diffs[m, b, t, e] = check(e, m, b, got, case['want'])
                    if case['torch']:
                        got = export_models.reference(m, case['inputs'])
                        diffs[m, b, t, 'pytorch'] = check('pytorch', m, b, got, case['want'])
                for r in range(args.rounds):
                    print('threads %d: round %d/%d' % (t, r + 1, args.rounds), file=sys.stderr)
                    ort = run_onnxruntime(cases, t, args.seconds, tmp, 't%d_r%d' % (t, r))
                    for (m, b), case in cases.items():
                        latencies, outputs = ort[m, b]
                        diffs[m, b, t, 'onnxruntime'] = check('onnxruntime', m, b, outputs,
                                                              case['want'])
                        results.setdefault((m, b, t, 'onnxruntime'), []).append(
                            statistics.median(latencies))
                        if case['torch']:
                            targs = [torch.from_numpy(a) for a in case['inputs'].values()]
                            lat = run_pytorch(torch, export_models.module(m), targs,
                                              args.seconds)
                            results.setdefault((m, b, t, 'pytorch'), []).append(
                                statistics.median(lat))
                        for e, s in setups.items():
                            p50, h = run_tessera(tessera, s, m, case['npy'], args.seconds)
                            results.setdefault((m, b, t, e), []).append(p50)
                            hop_runs.setdefault((m, b, t, e), []).append(h)
        times, hop_table = summarise(results, hop_runs)
        goal_list = goals(models, args.batches, args.threads, times)
        if args.format == 'text':
            print_text(models, args.batches, args.threads, args.rounds, times, hop_table,
                       goal_list)
        else:
            rows = rows_for(models, args.batches, args.threads, times, hop_table, diffs)
            if args.format == 'json':
                json.dump({'rounds': args.rounds, 'seconds': args.seconds, 'split': SPLIT,
                           'results': rows,
                           'goals': [{'goal': g, 'verdict': v, 'detail': d}
                                     for g, v, d in goal_list]}, sys.stdout, indent=1)
                print()
            else:
                w = csv.DictWriter(sys.stdout, fieldnames=list(rows[0]))
                w.writeheader()
                w.writerows(rows)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
