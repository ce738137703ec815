#!/usr/bin/python3
"""Soak: a million requests over a mix of models, batch sizes, bad inputs,
client cancellations and deadline expiries, with a worker killed (-9) and
restarted every few minutes; reports every outcome, latency per minute and
each daemon's resident memory over time.

The script starts WORKERS tessera-worker processes on loopback and one
tessera-coordinator that knows them by --worker, serving:

  mlp          export_models' MLP, strategy=data, replicas=2
  mlp_batched  the same file, replicas=2, max_batch=16, batch_delay_us=2000
  lenet        export_models' LeNet, strategy=tensor, shards=2, replicas=2
  svc          sklearn_models' svc_rbf_multi (ai.onnx.ml SVMClassifier),
               replicas=2

CLIENTS threads (grpcio) send REQUESTS requests in all, one at a time each,
the model and batch size (1..16) picked at random per request from a pool of
inputs whose expected outputs were computed here beforehand (torch for the
torch models, scikit-learn for svc). Of every request:

  1 in 10   is a bad input: wrong shape, wrong dtype, missing input
            (INVALID_ARGUMENT naming the input) or unknown model (NOT_FOUND
            naming it), each checked for its exact code and message;
  1 in 33   is cancelled by the client (future.cancel()) after 0-5 ms;
  1 in 33   has a tiny deadline (0.2-3 ms): DEADLINE_EXCEEDED;
  the rest  are good requests (deadline --deadline), each answer compared
            with the reference (rtol 1e-5, atol 1e-6; svc: labels exact,
            scores within sklearn_models' tolerance).

Outcomes: "ok" (a correct answer), "expected" (the code a bad input,
cancellation or deadline must give; a cancelled or short-deadline request
that was answered anyway counts as ok when its answer is right) and
"unexplained" (anything else: a wrong answer, a failed good request, a bad
input with another code or message), with a sample of their messages.

Every --kill-every seconds one worker (in turn; worker 0 is never killed,
so one worker's memory spans the whole run) gets SIGKILL and is restarted
on its own port; the coordinator's prober finds it and re-sends its shards.
Every --sample seconds the VmRSS of each daemon (/proc/PID/status), the
rate and the p50/p99 latency of correct answers are written to OUT/soak.csv,
and plotted into OUT/soak.png at the end (matplotlib, when importable).

Memory growth: per daemon, from its first sample after --warmup seconds
(a restarted worker: after --settle seconds from its restart, once it holds
its shards again) to its last sample; the goal is <= 10 MB. Exit status 1
when there is any unexplained outcome, any growth over 10 MB, or a daemon
that does not exit 0 on SIGTERM at the end.

    /usr/bin/python3 bench/soak.py --build BUILD [--requests 1000000]
        [--clients 16] [--kill-every 120] [--out DIR]

Everything stays on 127.0.0.1. See bench/README.md.
"""
import collections
import csv
import os
import random
import shutil
import sys
import tempfile
import threading
import time

import grpc
import numpy as np
import onnx

import benchargs  # bench/, beside this script

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(SOURCE, 'tests', 'python'))
import export_models  # noqa: E402
import kserve  # noqa: E402  (BUILD: $TESSERA_BUILD or SOURCE/build)
import ledger  # noqa: E402
import sklearn_models  # noqa: E402

MB = 1 << 20
GROWTH_GOAL_MB = 10.0
BATCHES = range(1, 17)
BAD_EVERY = 10          # one request in ten is a bad input
CANCEL_EVERY = 33
DEADLINE_EVERY = 33
UNKNOWN_MODEL = 'no_such_model_soak'
SAMPLE_MESSAGES = 5     # unexplained messages kept per kind


def parse_args(argv):
    p = benchargs.parser(__doc__)
    p.add_argument('--build', default=kserve.BUILD,
                   help='meson build dir with the daemons ($TESSERA_BUILD or SOURCE/build)')
    p.add_argument('--requests', type=int, default=1000000, help='requests to send in all')
    p.add_argument('--clients', type=int, default=16, help='client threads')
    p.add_argument('--workers', type=int, default=3, help='tessera-worker processes')
    p.add_argument('--kill-every', type=float, default=120.0,
                   help='seconds between kill -9 + restart of a worker (0: never)')
    p.add_argument('--sample', type=float, default=5.0,
                   help='seconds between memory / rate samples')
    p.add_argument('--warmup', type=float, default=60.0,
                   help='seconds before the memory baseline of the first daemons')
    p.add_argument('--settle', type=float, default=15.0,
                   help='seconds after a restart before that worker\'s memory baseline')
    p.add_argument('--deadline', type=float, default=30.0,
                   help='client deadline of a good request, s')
    p.add_argument('--out', default=os.path.join(tempfile.gettempdir(), 'tessera-soak'),
                   help='folder for soak.csv and soak.png')
    p.add_argument('--seed', type=int, default=0, help='random seed of the mix')
    return p.parse_args(argv)


# ---- models and the request pool ------------------------------------------------

Case = collections.namedtuple('Case', 'kind model rows request expect')
# kind: 'good' (expect: {output: reference}) or 'bad' (expect: (code, word)).


def serialize(model, inputs, **overrides):
    return kserve.Client.build_request(model, inputs, **overrides).SerializeToString()


def bad_cases(model, inputs, rows):
    """The four bad inputs of one good input, with their code and the word
    their message must hold."""
    name, a = next(iter(inputs.items()))
    invalid = grpc.StatusCode.INVALID_ARGUMENT
    narrow = np.ascontiguousarray(a[..., :-1])
    others = {k: v for k, v in inputs.items() if k != name}
    return [
        Case('wrong shape', model, rows, serialize(model, dict(inputs, **{name: narrow})),
             (invalid, name)),
        Case('wrong dtype', model, rows,
             serialize(model, dict(inputs, **{name: a.astype(np.float64)})), (invalid, name)),
        Case('missing input', model, rows, serialize(model, others), (invalid, name)),
        Case('unknown model', UNKNOWN_MODEL, rows, serialize(UNKNOWN_MODEL, inputs),
             (grpc.StatusCode.NOT_FOUND, UNKNOWN_MODEL)),
    ]


def torch_pool(served, model, per_batch, seed):
    good, bad = [], []
    for b in BATCHES:
        for k in range(per_batch):
            inputs = export_models.make_inputs(model, b, seed=seed * 7919 + b * 101 + k)
            want = export_models.reference(model, inputs)
            good.append(Case('good', served, b, serialize(served, inputs), want))
            bad += bad_cases(served, inputs, b)
    return good, bad


def check_sklearn(got, refs):
    """None when `got` matches scikit-learn's answers (labels exactly,
    scores within the model's tolerance), else why not."""
    if sorted(got) != sorted(refs):
        return 'outputs %s, expected %s' % (sorted(got), sorted(refs))
    for name, (want, tolerance) in refs.items():
        g = got[name]
        if g.dtype != want.dtype or g.shape != want.shape:
            return '%s: %s%s, expected %s%s' % (name, g.dtype, g.shape, want.dtype, want.shape)
        if tolerance is None:
            if not np.array_equal(g, want):
                return '%s: %s, expected %s' % (name, g.tolist(), want.tolist())
        elif not np.allclose(g, want, rtol=tolerance['rtol'], atol=tolerance['atol']):
            return '%s: max abs error %.3g' % (name, np.abs(g - want).max())
    return None


def sklearn_model(tmp):
    """(path, good cases, bad cases) of svc_rbf_multi: every batch size is a
    slice of sklearn_models' 16 test samples, whose answers it computed."""
    model, X, refs = sklearn_models.make_svc('rbf', 3)()
    path = os.path.join(tmp, 'svc.onnx')
    onnx.save(model, path)
    X = np.ascontiguousarray(X, dtype=np.float32)
    good, bad = [], []
    for b in BATCHES:
        for start in sorted({0, len(X) - b}):
            rows = slice(start, start + b)
            inputs = {'X': X[rows].copy()}
            want = {out: (np.asarray(v, dtype=np.int64 if tol is None else np.float32)[rows],
                          tol) for out, v, tol in refs.values()}
            good.append(Case('good', 'svc', b, serialize('svc', inputs), want))
            bad += bad_cases('svc', inputs, b)
    return path, good, bad


# ---- the outcome ledger -----------------------------------------------------------

class Tally:
    """Counts of every outcome, latencies of correct answers per sample
    interval and per minute, unexplained messages. Thread-safe."""

    def __init__(self):
        self.mu = threading.Lock()
        self.t0 = time.monotonic()
        self.sent = 0
        self.ok = 0
        self.expected = collections.Counter()     # (kind, code)
        self.unexplained = collections.Counter()  # (kind, outcome)
        self.messages = collections.defaultdict(list)
        self.interval = []
        self.minutes = collections.defaultdict(list)
        self.done_in_interval = 0

    def take(self, limit):
        """Claims the next request to send; False once `limit` were sent."""
        with self.mu:
            if self.sent >= limit:
                return False
            self.sent += 1
            return True

    def good(self, latency):
        with self.mu:
            self.ok += 1
            self.done_in_interval += 1
            self.interval.append(latency)
            self.minutes[int((time.monotonic() - self.t0) // 60)].append(latency)

    def expect(self, kind, code):
        with self.mu:
            self.done_in_interval += 1
            self.expected[(kind, code)] += 1

    def fail(self, kind, outcome, message):
        with self.mu:
            self.done_in_interval += 1
            self.unexplained[(kind, outcome)] += 1
            if len(self.messages[(kind, outcome)]) < SAMPLE_MESSAGES:
                self.messages[(kind, outcome)].append(
                    '+%.1f s: %s' % (time.monotonic() - self.t0, message))

    def drain(self):
        """(answers of any kind, latencies of correct answers) since the
        last drain."""
        with self.mu:
            n, lat = self.done_in_interval, self.interval
            self.done_in_interval, self.interval = 0, []
            return n, lat


def code_name(e):
    code = e.code()
    return code.name if code is not None else 'NO_STATUS'


def send_bad(infer, case, args, tally):
    """A bad input: it must fail with its code and word."""
    try:
        infer(case.request, timeout=args.deadline)
        tally.fail(case.kind, 'OK', '%s: answered' % case.model)
    except grpc.RpcError as e:
        code, word = case.expect
        if e.code() == code and word in (e.details() or ''):
            tally.expect(case.kind, code.name)
        else:
            tally.fail(case.kind, code_name(e), '%s rows %d: %s' % (
                case.model, case.rows, e.details()))


def send_good(infer, case, kind, timeout, rng, check, tally):
    """A good input sent as `kind` ('good', 'cancelled': cancelled after
    0-5 ms, 'deadline': with a tiny timeout); an answer that came all the
    same must be right."""
    t = time.monotonic()
    try:
        if kind == 'cancelled':
            f = infer.future(case.request, timeout=timeout)
            time.sleep(rng.uniform(0, 0.005))
            if f.cancel():
                tally.expect(kind, 'CANCELLED')
                return
            resp = f.result()
        else:
            resp = infer(case.request, timeout=timeout)
    except grpc.RpcError as e:
        if kind == 'deadline' and e.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
            tally.expect(kind, 'DEADLINE_EXCEEDED')
        else:
            tally.fail(kind, code_name(e), '%s rows %d: %s' % (
                case.model, case.rows, e.details()))
            time.sleep(0.02)  # as a real client would
        return
    latency = time.monotonic() - t
    try:
        why = check(kserve.Client.decode_response(resp), case.expect)
    except Exception as e:  # an undecodable answer is a wrong one
        why = '%s: %s' % (type(e).__name__, e)
    if why is None:
        tally.good(latency)
    else:
        tally.fail(kind, 'WRONG', '%s rows %d: %s' % (case.model, case.rows, why))


def client_thread(k, address, args, pools, checks, tally):
    """One closed-loop client: sends until tally.take() says the count is
    reached, each request drawn from the mix."""
    rng = random.Random(args.seed * 104729 + k)
    good, bad = pools
    with ledger.client(address, timeout=args.deadline) as c:
        infer = c.channel.unary_unary(
            kserve.KSERVE + 'ModelInfer',
            response_deserializer=kserve.pb.ModelInferResponse.FromString)
        while tally.take(args.requests):
            r = rng.random()
            if r < 1.0 / BAD_EVERY:
                send_bad(infer, rng.choice(bad), args, tally)
                continue
            r -= 1.0 / BAD_EVERY
            kind, timeout = 'good', args.deadline
            if r < 1.0 / CANCEL_EVERY:
                kind = 'cancelled'
            elif r < 1.0 / CANCEL_EVERY + 1.0 / DEADLINE_EVERY:
                kind, timeout = 'deadline', rng.uniform(0.0002, 0.003)
            case = rng.choice(good)
            send_good(infer, case, kind, timeout, rng, checks[case.model], tally)


# ---- daemons, memory, kills ------------------------------------------------------

def vm_rss(pid):
    """VmRSS of a live process in bytes, None once it is gone."""
    try:
        with open('/proc/%d/status' % pid) as f:
            for line in f:
                if line.startswith('VmRSS:'):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


class Pool:
    """The worker processes, restartable on their own ports. Incarnations:
    [(worker index, pid, start time)] of every process started."""

    def __init__(self):
        self.workers = []
        self.incarnations = []
        self.mu = threading.Lock()

    def start(self, i, listen):
        w = kserve.Worker(extra_args=[])
        w._command[w._command.index('--listen') + 1] = listen
        w.start_timeout = 60.0
        w.__enter__()
        with self.mu:
            if i < len(self.workers):
                self.workers[i] = w
            else:
                self.workers.append(w)
            self.incarnations.append((i, w.proc.pid, time.monotonic()))
        return w

    def restart(self, i):
        old = self.workers[i]
        old.kill()
        old._stop(check=False)
        self.start(i, old.address)

    def pids(self):
        with self.mu:
            return [w.proc.pid for w in self.workers]

    def kill(self):
        for w in self.workers:
            if w.proc.poll() is None:
                w.kill()

    def stop(self):
        """SIGTERM to each; the names of those that did not exit 0."""
        bad = []
        for i, w in enumerate(self.workers):
            try:
                w.__exit__(None, None, None)
            except AssertionError as e:
                bad.append('worker %d: %s' % (i, str(e).splitlines()[0]))
        return bad


def pct(values, q):
    return float(np.percentile(values, q)) * 1e3 if len(values) else float('nan')


def main(argv):
    args = parse_args(argv)
    kserve.BUILD = os.path.abspath(args.build)
    os.makedirs(args.out, exist_ok=True)
    export_models.torch.set_num_threads(1)
    tmp = tempfile.mkdtemp(prefix='tessera_soak_')
    try:
        return soak(args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def soak(args, tmp):
    """The run: model files in tmp; returns the exit status."""
    print('soak: building the request pool ...', flush=True)
    mlp_path = export_models.export('mlp', tmp)
    lenet_path = export_models.export('lenet', tmp)
    svc_path, svc_good, svc_bad = sklearn_model(tmp)
    good, bad = list(svc_good), list(svc_bad)
    checks = {'svc': check_sklearn}
    for served, model in (('mlp', 'mlp'), ('mlp_batched', 'mlp'), ('lenet', 'lenet')):
        g, b = torch_pool(served, model, 3, seed=len(checks))
        good += g
        bad += b
        checks[served] = ledger.check_answer
    models = [('mlp', mlp_path, {'strategy': 'data', 'replicas': 2}),
              ('mlp_batched', mlp_path, {'strategy': 'data', 'replicas': 2,
                                         'max_batch': 16, 'batch_delay_us': 2000}),
              ('lenet', lenet_path, {'strategy': 'tensor', 'shards': 2, 'replicas': 2}),
              ('svc', svc_path, {'strategy': 'data', 'replicas': 2})]

    workers = Pool()
    coord = kserve.Cluster(models=models, local_workers=0, start_timeout=120.0)
    try:
        for i in range(args.workers):
            workers.start(i, '127.0.0.1:0')
        coord.workers = [w.address for w in workers.workers]
        coord.__enter__()
        return serve(args, coord, workers, good, bad, checks)
    except BaseException:  # interrupted or failed: leave no daemon behind
        workers.kill()
        if coord.proc and coord.proc.poll() is None:
            coord.kill()
        raise


def serve(args, coord, workers, good, bad, checks):
    """The load, the sampler and the killer against the running daemons;
    stops the daemons and returns the exit status."""
    print('soak: coordinator %s (pid %d), workers %s; %d good and %d bad inputs in the pool'
          % (coord.address, coord.proc.pid, ', '.join(w.address for w in workers.workers),
             len(good), len(bad)), flush=True)

    tally = Tally()
    done = threading.Event()
    threads = [threading.Thread(target=client_thread, daemon=True,
                                args=(k, coord.address, args, (good, bad), checks, tally))
               for k in range(args.clients)]
    samples = []   # (t, coordinator rss, [worker rss], [worker pid], req/s, p50, p99)
    kills = []     # (t, worker index, seconds to restart)
    for t in threads:
        t.start()

    def sampler():
        last = time.monotonic()
        while not done.wait(args.sample):
            now = time.monotonic()
            n, lat = tally.drain()
            pids = workers.pids()
            samples.append((now - tally.t0, vm_rss(coord.proc.pid), [vm_rss(p) for p in pids],
                            pids, n / (now - last), pct(lat, 50), pct(lat, 99)))
            last = now
            print('  +%5.0f s  sent %8d  ok %8d  %6.0f req/s  p50 %6.2f ms  p99 %7.2f ms  '
                  'rss MB coordinator %s workers %s' % (
                      samples[-1][0], tally.sent, tally.ok, samples[-1][4], samples[-1][5],
                      samples[-1][6], mb(samples[-1][1]) or '-',
                      ' '.join(mb(r) or '-' for r in samples[-1][2])), flush=True)

    def killer():
        victim = 0
        while args.kill_every > 0 and args.workers > 1 and not done.wait(args.kill_every):
            victim = victim % (args.workers - 1) + 1
            t = time.monotonic()
            workers.restart(victim)
            kills.append((t - tally.t0, victim, time.monotonic() - t))
            print('  +%5.0f s  kill -9 worker %d, restarted on %s in %.2f s' % (
                kills[-1][0], victim, workers.workers[victim].address, kills[-1][2]), flush=True)

    side = [threading.Thread(target=sampler, daemon=True),
            threading.Thread(target=killer, daemon=True)]
    for t in side:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - tally.t0
    done.set()
    for t in side:
        t.join()
    stop_errors = []
    try:
        coord.__exit__(None, None, None)
    except AssertionError as e:
        stop_errors.append('coordinator: %s' % str(e).splitlines()[0])
    stop_errors += workers.stop()

    failed = report(args, tally, elapsed, samples, kills, workers, stop_errors)
    return 1 if failed else 0


# ---- the report ---------------------------------------------------------------------

def growth(samples, workers, args, t0):
    """[(daemon, pid, from s, to s, baseline MB, last MB, growth MB)] of the
    coordinator and every worker incarnation with a sample after its
    baseline time: --warmup for the daemons of the start, --settle after
    its restart for a restarted worker. Times are seconds from t0."""
    def row(name, pid, series):
        return (name, pid, series[0][0], series[-1][0], series[0][1] / MB,
                series[-1][1] / MB, (series[-1][1] - series[0][1]) / MB)

    rows = []
    coord = [(s[0], s[1]) for s in samples if s[0] >= args.warmup and s[1]]
    if coord:
        rows.append(row('coordinator', None, coord))
    seen = set()
    for i, pid, started in workers.incarnations:
        begin = args.warmup if i not in seen else started - t0 + args.settle
        seen.add(i)
        series = [(s[0], s[2][i]) for s in samples
                  if s[0] >= begin and s[3][i] == pid and s[2][i]]
        if series:
            rows.append(row('worker %d' % i, pid, series))
    return rows


def report(args, tally, elapsed, samples, kills, workers, stop_errors):
    expected = sum(tally.expected.values())
    unexplained = sum(tally.unexplained.values())
    print('\n== soak: %d requests, %d clients, %d workers, kill -9 every %.0f s, %.0f s ==' % (
        tally.sent, args.clients, args.workers, args.kill_every, elapsed))
    print('sent %d  ok %d  expected %d  unexplained %d  (%.0f req/s)' % (
        tally.sent, tally.ok, expected, unexplained, tally.sent / elapsed))
    for (kind, code), n in sorted(tally.expected.items()):
        print('  expected     %-14s %-18s %8d' % (kind, code, n))
    for (kind, code), n in sorted(tally.unexplained.items()):
        print('  UNEXPLAINED  %-14s %-18s %8d' % (kind, code, n))
        for m in tally.messages[(kind, code)]:
            print('      %s' % m)
    print('kills: %d (%s)' % (len(kills), ', '.join(
        'worker %d at +%.0f s' % (i, t) for t, i, _ in kills) or 'none'))
    print('per minute (correct answers):')
    for m in sorted(tally.minutes):
        lat = tally.minutes[m]
        print('  minute %3d  %8d ok  p50 %6.2f ms  p99 %7.2f ms' % (
            m, len(lat), pct(lat, 50), pct(lat, 99)))

    rows = growth(samples, workers, args, tally.t0)
    print('memory growth (VmRSS, goal <= %.0f MB):' % GROWTH_GOAL_MB)
    over = 0
    for name, pid, t_from, t_to, base, last, grew in rows:
        flag = '  OVER' if grew > GROWTH_GOAL_MB else ''
        over += bool(flag)
        print('  %-12s %-8s +%5.0f s -> +%5.0f s  %7.1f -> %7.1f MB  %+6.1f MB%s' % (
            name, 'pid %d' % pid if pid else '', t_from, t_to, base, last, grew, flag))
    if not rows:
        print('  no sample after the warm-up (%.0f s): run longer' % args.warmup)
    for e in stop_errors:
        print('  SHUTDOWN: %s' % e)

    write_csv(args, samples)
    plot(args, samples, kills)
    return unexplained or over or stop_errors


def mb(rss):
    """'12.34' (MB), or '' for a process that was not there."""
    return '' if rss is None else '%.2f' % (rss / MB)


def write_csv(args, samples):
    path = os.path.join(args.out, 'soak.csv')
    with open(path, 'w', newline='') as f:
        w = csv.writer(f)
        w.writerow(['t_s', 'rss_coordinator_mb'] +
                   ['rss_worker%d_mb' % i for i in range(args.workers)] +
                   ['req_s', 'p50_ms', 'p99_ms'])
        for t, c, ws, _, rate, p50, p99 in samples:
            w.writerow(['%.1f' % t, mb(c)] + [mb(r) for r in ws] +
                       ['%.1f' % rate, '%.3f' % p50, '%.3f' % p99])
    print('wrote %s' % path)


def plot(args, samples, kills):
    try:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
    except ImportError as e:
        print('no plot: matplotlib is not importable (%s)' % e)
        return
    t = [s[0] for s in samples]
    fig, (mem, lat) = plt.subplots(2, 1, figsize=(10, 7), sharex=True)
    def series(rss):
        return [float('nan') if r is None else r / MB for r in rss]

    mem.plot(t, series(s[1] for s in samples), label='coordinator')
    for i in range(args.workers):
        mem.plot(t, series(s[2][i] for s in samples), label='worker %d' % i)
    for at, i, _ in kills:
        mem.axvline(at, color='grey', lw=0.5, ls=':')
    mem.set_ylabel('VmRSS (MB)')
    mem.legend(loc='upper left', fontsize='small')
    mem.set_title('tessera soak: memory, latency and rate (dotted: kill -9 of a worker)')
    lat.plot(t, [s[5] for s in samples], label='p50')
    lat.plot(t, [s[6] for s in samples], label='p99')
    lat.set_yscale('log')
    lat.set_ylabel('latency (ms)')
    lat.set_xlabel('time (s)')
    rate = lat.twinx()
    rate.plot(t, [s[4] for s in samples], color='black', lw=0.7, label='req/s')
    rate.set_ylabel('answers/s')
    lat.legend(loc='upper left', fontsize='small')
    path = os.path.join(args.out, 'soak.png')
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    print('wrote %s' % path)


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
