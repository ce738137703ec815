#!/usr/bin/python3
"""Dynamic batching benchmark: the same model served with and without
batching, under the same closed-loop load, in one run.

One coordinator (with --local-workers) serves the model twice: as NAME (no
batching) and as NAME_batched (max_batch, batch_delay_us). Both are first
checked against the torch module on 64 random batch-1 inputs each. Then,
for ROUNDS rounds alternating unbatched / batched (so that other load on
the machine hits both alike), CLIENTS closed-loop clients send batch-1
requests for about SECONDS each, after a warm-up. Prints requests/s, p50
and p99 latency and the CPU time per request of the coordinator, its
workers and the load generator of every run, the median of each
configuration, and the ratio of the medians (the goal: batched >= 2x
unbatched).

CPUs (--isolate, default on with 2+ CPUs and --client tessera): the load
generator runs alone on the last CPU and the daemons on the others, as a
load generator on its own machine would, so that what is measured is the
server's throughput and not the two fighting over cores; --isolate off
lets them share every CPU (then, on 2 cores, the client's ~15 us per
request is a third of the batched path's CPU and the ratio drops).

Load generators (--client):
  tessera  `tessera bench --concurrency CLIENTS` (C, one process): cheaper
           per request than the coordinator (see the CPU line), so the
           daemons, not the client, are what is measured. It runs a number of requests, not a time: the count
           is set from the warm-up's rate to last about SECONDS; the real
           duration is printed. It checks the status of every answer.
  python   CLIENTS threads spread over PROCESSES processes (ledger.client),
           for exactly SECONDS, each answer compared with torch's. The
           Python client costs far more CPU per request than the daemons,
           so on a small machine it measures mostly itself.

    /usr/bin/python3 bench/batching.py [--build DIR] [--seconds 5] [--rounds 3] ...

Everything stays on 127.0.0.1. See bench/README.md.
"""
import multiprocessing
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import benchargs  # bench/, beside this script

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.dirname(HERE)
TESTS = os.path.join(SOURCE, 'tests', 'python')


def parse_args(argv):
    p = benchargs.parser(__doc__)
    p.add_argument('--build', default=os.environ.get('TESSERA_BUILD') or
                   os.path.join(SOURCE, 'build'),
                   help='meson build dir with the daemons and the tessera CLI '
                   '($TESSERA_BUILD or SOURCE/build)')
    p.add_argument('--model', default='mlp', help='a model of tests/python/export_models.py')
    p.add_argument('--client', choices=('tessera', 'python'), default='tessera',
                   help='load generator')
    p.add_argument('--seconds', type=float, default=5.0, help='measured time of each run')
    p.add_argument('--warmup', type=float, default=1.0,
                   help='unmeasured load before each run, s')
    p.add_argument('--rounds', type=int, default=3,
                   help='runs of each configuration, alternating')
    p.add_argument('--clients', type=int, default=32, help='concurrent closed-loop clients')
    p.add_argument('--processes', type=int, default=4,
                   help='--client python: processes the clients are spread over')
    p.add_argument('--isolate', choices=('on', 'off'), default='on',
                   help='on (with 2+ CPUs): the load generator runs on the last CPU '
                   'and the daemons on the others, as a load generator on its own '
                   'machine would; off: all share every CPU')
    p.add_argument('--workers', type=int, default=1,
                   help='local workers of the coordinator')
    p.add_argument('--worker-threads', type=int, default=1, help='kernel threads per worker')
    p.add_argument('--max-batch', type=int, default=32, help='max_batch')
    p.add_argument('--delay-us', type=int, default=2000, help='batch_delay_us')
    p.add_argument('--deadline', type=float, default=10.0,
                   help='client deadline of each request, s')
    return p.parse_args(argv)


# ---- python load generator ------------------------------------------------------

def client_process(address, served, threads, pool, go, t_end, deadline, queue):
    """`threads` closed-loop clients: they connect, report 'ready' on
    `queue`, wait for the event `go`, then send until time.time() passes
    t_end.value; puts {'lat': latencies of correct answers, 'sent', 'ok',
    'wrong', 'codes'}."""
    import threading

    import grpc
    import numpy as np
    sys.path.insert(0, TESTS)
    import ledger

    connected = threading.Barrier(threads + 1)
    mu = threading.Lock()
    totals = {'lat': [], 'sent': 0, 'ok': 0, 'wrong': 0, 'codes': {}}

    def run(k):
        rng = np.random.RandomState(os.getpid() * 131 + k)
        lat, sent, ok, wrong, codes = [], 0, 0, 0, {}
        with ledger.client(address, deadline) as c:
            grpc.channel_ready_future(c.channel).result(timeout=deadline)
            connected.wait()
            go.wait()
            while time.time() < t_end.value:
                inputs, want = pool[rng.randint(len(pool))]
                request = c.build_request(served, inputs)
                sent += 1
                t0 = time.monotonic()
                try:
                    resp = c.infer_request(request, timeout=deadline)
                except grpc.RpcError as e:
                    codes[e.code().name] = codes.get(e.code().name, 0) + 1
                    continue
                dt = time.monotonic() - t0
                if ledger.check_answer(c.decode_response(resp), want) is None:
                    ok += 1
                    lat.append(dt)
                else:
                    wrong += 1
        with mu:
            totals['lat'] += lat
            totals['sent'] += sent
            totals['ok'] += ok
            totals['wrong'] += wrong
            for code, n in codes.items():
                totals['codes'][code] = totals['codes'].get(code, 0) + n

    ts = [threading.Thread(target=run, args=(k,)) for k in range(threads)]
    for t in ts:
        t.start()
    connected.wait()
    queue.put('ready')
    cpu0 = time.process_time()  # this process's CPU, all threads
    for t in ts:
        t.join()
    totals['cpu'] = time.process_time() - cpu0
    queue.put(totals)


def python_run(ctx, address, served, args, pool, seconds, meter=None):
    import numpy as np
    queue = ctx.Queue()
    go = ctx.Event()
    t_end = ctx.Value('d', 0.0)
    per = [args.clients // args.processes + (1 if i < args.clients % args.processes else 0)
           for i in range(args.processes)]
    procs = [ctx.Process(target=client_process, args=(address, served, n, pool, go, t_end,
                                                      args.deadline, queue))
             for n in per if n > 0]
    for p in procs:
        p.start()
    for _ in procs:  # every client process started and connected
        if queue.get(timeout=120) != 'ready':
            raise RuntimeError('a client process did not start')
    if meter:
        meter.start()
    t_end.value = time.time() + seconds
    go.set()
    parts = [queue.get(timeout=seconds + args.deadline + 60) for _ in procs]
    for p in procs:
        p.join()
    lat = np.array(sum((p['lat'] for p in parts), []))
    codes = {}
    for p in parts:
        for c, n in p['codes'].items():
            codes[c] = codes.get(c, 0) + n
    ok = sum(p['ok'] for p in parts)
    sent = sum(p['sent'] for p in parts)
    cpu = meter.stop(sent) if meter else None
    if cpu:  # the clients' own measure: reaping would count their start-up too
        cpu['client'] = sum(p['cpu'] for p in parts) / max(sent, 1) * 1e6
    return {'sent': sent, 'ok': ok, 'cpu': cpu,
            'wrong': sum(p['wrong'] for p in parts), 'codes': codes,
            'seconds': seconds, 'rps': ok / seconds,
            'p50': float(np.percentile(lat, 50)) * 1e3 if len(lat) else float('nan'),
            'p99': float(np.percentile(lat, 99)) * 1e3 if len(lat) else float('nan')}


# ---- CPU per request ------------------------------------------------------------

CLOCK_TICK = os.sysconf('SC_CLK_TCK')


def cpu_seconds(pid):
    """User + system CPU of a process so far (0 once it is gone)."""
    try:
        with open('/proc/%d/stat' % pid) as f:
            fields = f.read().rsplit(')', 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICK
    except (OSError, IndexError, ValueError):
        return 0.0


def worker_pids(pid):
    """The coordinator's children: its --local-workers."""
    kids = []
    try:
        for task in os.listdir('/proc/%d/task' % pid):
            with open('/proc/%d/task/%s/children' % (pid, task)) as f:
                kids += [int(k) for k in f.read().split()]
    except OSError:
        pass
    return kids


class CpuMeter:
    """CPU seconds the coordinator, its workers and this process's waited-for
    children (the load generator) spend between start() and stop()."""

    def __init__(self, coordinator_pid):
        self.pid = coordinator_pid
        self.workers = worker_pids(coordinator_pid)

    def sample(self):
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        return (cpu_seconds(self.pid), sum(cpu_seconds(w) for w in self.workers),
                kids.ru_utime + kids.ru_stime)

    def start(self):
        self.before = self.sample()

    def stop(self, requests):
        after = self.sample()
        n = max(requests, 1)
        return {k: (a - b) / n * 1e6 for k, a, b in
                zip(('coordinator', 'workers', 'client'), after, self.before)}


# ---- tessera bench load generator --------------------------------------------------

def tessera_run(tessera, address, served, args, npy, requests, meter=None):
    if meter:
        meter.start()
    client_cpus = args.client_cpus
    p = subprocess.run([tessera, 'bench', '--server', address, '--model', served,
                        '--input', npy, '--concurrency', str(args.clients),
                        '--requests', str(requests), '--format', 'json',
                        '--timeout-ms', str(int(args.deadline * 1000))],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       universal_newlines=True, timeout=600,
                       preexec_fn=(lambda: os.sched_setaffinity(0, client_cpus))
                       if client_cpus else None)
    try:
        doc = json.loads(p.stdout)
    except ValueError:
        doc = {}
    nan = float('nan')
    ok = doc.get('ok', 0)
    errors = requests - ok
    lat = doc.get('latency_ms') or {}
    r = {'sent': requests, 'ok': ok, 'wrong': 0,
         'codes': {'errors': errors} if errors else {},
         'seconds': doc.get('duration_s', nan), 'rps': doc.get('throughput_rps', nan),
         'p50': lat.get('p50', nan), 'p99': lat.get('p99', nan)}
    if meter:
        r['cpu'] = meter.stop(requests)
    if p.returncode or errors:
        r['error'] = (p.stderr.strip() or p.stdout.strip())[-500:]
    return r


# ---- main -------------------------------------------------------------------------

def check(address, served, pool, deadline):
    """Every pool input answered as torch answers it; returns the failures."""
    sys.path.insert(0, TESTS)
    import ledger
    bad = []
    with ledger.client(address, deadline) as c:
        for inputs, want in pool:
            why = ledger.check_answer(c.infer(served, inputs), want)
            if why:
                bad.append(why)
    return bad


def cpu_text(cpu):
    return 'CPU us/request: coordinator %.1f, workers %.1f, client %.1f' % (
        cpu['coordinator'], cpu['workers'], cpu['client'])


def show(label, keys, r):
    extra = ''.join(', %s %d' % kv for kv in sorted(r['codes'].items()))
    print('  %-10s %-32s %9.0f req/s  p50 %7.2f ms  p99 %7.2f ms  (%.1f s, ok %d, '
          'wrong %d%s)%s%s' % (label, keys, r['rps'], r['p50'], r['p99'], r['seconds'],
                               r['ok'], r['wrong'], extra,
                               '\n    ' + cpu_text(r['cpu']) if r.get('cpu') else '',
                               '\n    ' + r['error'] if r.get('error') else ''), flush=True)


def main(argv):
    args = parse_args(argv)
    os.environ['TESSERA_BUILD'] = os.path.abspath(args.build)
    os.environ.setdefault('TESSERA_SOURCE', SOURCE)
    sys.path.insert(0, TESTS)
    import numpy as np
    import export_models
    import kserve
    export_models.torch.set_num_threads(1)
    tessera = kserve.binary('tessera')
    if args.client == 'tessera' and not os.access(tessera, os.X_OK):
        print('batching.py: %s not built; build it or use --client python' % tessera,
              file=sys.stderr)
        return 2

    # Isolation: the daemons (started from here) inherit this process's
    # CPUs; `tessera bench` gets the last CPU to itself.
    cpus = sorted(os.sched_getaffinity(0))
    args.client_cpus = None
    if args.isolate == 'on' and args.client == 'tessera' and len(cpus) >= 2:
        args.client_cpus = {cpus[-1]}
        os.sched_setaffinity(0, set(cpus[:-1]))
    ctx = multiprocessing.get_context('spawn')
    pool = []
    for k in range(64):
        inputs = export_models.make_inputs(args.model, 1, seed=k)
        pool.append((inputs, export_models.reference(args.model, inputs)))

    with tempfile.TemporaryDirectory(prefix='tessera_bench_') as tmp:
        path = export_models.export(args.model, tmp)
        npy = []
        for name, value in pool[0][0].items():
            f = os.path.join(tmp, name + '.npy')
            np.save(f, value)
            npy.append('%s=%s' % (name, f))
        if len(npy) != 1 and args.client == 'tessera':
            print('batching.py: --client tessera takes one input here', file=sys.stderr)
            return 2
        configs = [('unbatched', args.model, 'no batching', {}),
                   ('batched', args.model + '_batched',
                    'max_batch=%d,batch_delay_us=%d' % (args.max_batch, args.delay_us),
                    {'max_batch': args.max_batch, 'batch_delay_us': args.delay_us})]
        cluster = kserve.Cluster(models=[(served, path, keys) for _, served, _, keys in configs],
                                 local_workers=args.workers,
                                 extra_args=['--worker-threads', str(args.worker_threads)])
        print('tessera batching benchmark: model %s, %d concurrent clients (%s), batch-1 '
              'requests, %d round(s) of ~%.0f s each, %d worker(s) x %d thread(s), %d CPUs'
              % (args.model, args.clients, args.client if args.client == 'tessera'
                 else 'python, %d processes' % args.processes, args.rounds, args.seconds,
                 args.workers, args.worker_threads, os.cpu_count()), flush=True)
        print('CPUs: %s' % ('daemons on %s, load generator alone on %s' % (
            sorted(os.sched_getaffinity(0)), sorted(args.client_cpus))
            if args.client_cpus else 'daemons and load generator share all'), flush=True)
        runs = {label: [] for label, _, _, _ in configs}
        failed = False
        with cluster:
            for label, served, keys, _ in configs:
                bad = check(cluster.address, served, pool, args.deadline)
                print('  %-10s %-32s %d/%d answers equal torch\'s%s' % (
                    label, keys, len(pool) - len(bad), len(pool),
                    ': ' + bad[0] if bad else ''))
                failed |= bool(bad)
            for rnd in range(args.rounds):
                print('round %d' % (rnd + 1), flush=True)
                for label, served, keys, _ in configs:
                    if args.client == 'python':
                        if args.warmup > 0:
                            python_run(ctx, cluster.address, served, args, pool, args.warmup)
                        r = python_run(ctx, cluster.address, served, args, pool, args.seconds,
                                       CpuMeter(cluster.proc.pid))
                    else:
                        warm = tessera_run(tessera, cluster.address, served, args, npy[0],
                                           max(args.clients * 20, 1000))
                        rate = warm['rps'] if warm['rps'] == warm['rps'] else 1000.0
                        if args.warmup > 0 and warm['seconds'] < args.warmup:
                            n = int(rate * (args.warmup - warm['seconds']))
                            if n > args.clients:
                                w2 = tessera_run(tessera, cluster.address, served, args,
                                                 npy[0], n)
                                if w2['rps'] == w2['rps']:
                                    rate = w2['rps']
                        r = tessera_run(tessera, cluster.address, served, args, npy[0],
                                        max(int(rate * args.seconds), args.clients),
                                        CpuMeter(cluster.proc.pid))
                    runs[label].append(r)
                    failed |= bool(r['wrong'] or r['codes'] or r.get('error'))
                    show(label, keys, r)
    med = {label: statistics.median(r['rps'] for r in rs) for label, rs in runs.items()}
    print('median over %d round(s):' % args.rounds)
    for label, served, keys, _ in configs:
        cpu = [r['cpu'] for r in runs[label] if r.get('cpu')]
        print('  %-10s %-32s %9.0f req/s  p50 %7.2f ms  p99 %7.2f ms%s' % (
            label, keys, med[label], statistics.median(r['p50'] for r in runs[label]),
            statistics.median(r['p99'] for r in runs[label]),
            '\n    median ' + cpu_text({k: statistics.median(c[k] for c in cpu)
                                        for k in cpu[0]}) if cpu else ''))
    u, b = med['unbatched'], med['batched']
    ratio = b / u if u else float('inf')
    print('ratio batched/unbatched: %.2fx (goal >= 2x: %s)' % (
        ratio, 'met' if ratio >= 2 else 'NOT met'))
    if failed:
        print('some requests failed or were answered wrongly (see above)')
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
