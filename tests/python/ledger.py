"""A closed-loop load generator with a ledger, for chaos and batching tests.

K client threads each send ModelInfer requests, one at a time, with random
inputs (drawn from a pool whose expected outputs come from the torch module
itself, export_models.reference) and a client deadline, until told to stop.
Every request sent gets exactly one entry in the ledger:

  OK       the answer equals torch's for that request's own input
           (rtol 1e-5, atol 1e-6; same output names, dtypes and shapes)
  WRONG    any other answer (or one that cannot be decoded): always a failure
  <CODE>   the explicit gRPC status the request ended with (UNAVAILABLE,
           RESOURCE_EXHAUSTED, DEADLINE_EXCEEDED, ...)

Events (callables: kill a worker, SIGSTOP it, restart the coordinator...) are
marked in the ledger with the time they ran; the report gives sent, ok,
failures by code, wrong, and p50/p99 latency of each phase (before the first
event, between events, after the last), and for every event the time to
recover: until the first run of RUN (20) consecutive successes, and until
the first RUN consecutive requests whose p99 latency is under 2x the p99
before the first event.

    import ledger
    load = ledger.Load(address, 'mlp', clients=4, batches=(1, 3, 16))
    led = load.run(6.0, events=[(2.0, 'kill -9 worker 1', worker.kill)])
    print(led.report())
    assert led.count('WRONG') == 0 and not led.failures()

ledger.burst(address, model, n) sends n requests at once (one thread each)
into a ledger of its own. The module also compiles proto/admin.proto and
proto/worker.proto (like kserve.py compiles inference.proto) for
cluster_status(coordinator) and worker_status(worker).
"""
import collections
import os
import sys
import threading
import time

import grpc
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import export_models  # noqa: E402
import kserve  # noqa: E402

RTOL, ATOL = 1e-5, 1e-6
OK, WRONG = 'OK', 'WRONG'
RUN = 20               # consecutive successes that count as recovered
LATENCY_FACTOR = 2.0   # p99 back under this many times the p99 before


# ---- admin and worker protocols ---------------------------------------------

admin_pb, worker_pb = kserve.compile_protos('admin.proto', 'worker.proto')


def _unary(address, path, request, response_class, timeout=5.0, creds=None):
    with kserve.open_channel(address, creds) as ch:
        stub = ch.unary_unary(path, request_serializer=type(request).SerializeToString,
                              response_deserializer=response_class.FromString)
        return stub(request, timeout=timeout)


def cluster_status(address, timeout=5.0, creds=None):
    """tessera.admin.v1.Admin/ClusterStatus of a coordinator (creds: as
    kserve.open_channel; over TLS the certificate must be an admin's)."""
    return _unary(address, '/tessera.admin.v1.Admin/ClusterStatus',
                  admin_pb.ClusterStatusRequest(), admin_pb.ClusterStatusResponse,
                  timeout, creds)


def worker_status(address, timeout=5.0):
    """tessera.worker.v1.Worker/Status of a worker (the shards it holds)."""
    return _unary(address, '/tessera.worker.v1.Worker/Status',
                  worker_pb.StatusRequest(), worker_pb.StatusResponse, timeout)


def worker_state(status, address):
    """The WorkerState of `address` in a ClusterStatusResponse, or None."""
    for w in status.workers:
        if w.address == address:
            return w
    return None


def placed_on(status, model, address):
    """Shard ids of `model` that the coordinator places on `address`."""
    w = worker_state(status, address)
    if w is None:
        return set()
    return {s.shard_id for s in status.shards
            if s.model == model and w.index in s.workers}


def wait_for(predicate, timeout, interval=0.1):
    """Polls predicate() until it returns a true value (returned) or timeout
    seconds pass (returns the last value). Exceptions count as false."""
    deadline = time.monotonic() + timeout
    value = None
    while True:
        try:
            value = predicate()
        except (grpc.RpcError, OSError):
            value = None
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


# ---- the ledger --------------------------------------------------------------

Entry = collections.namedtuple('Entry', 'client seq rows t_send t_done outcome detail')


def _pct(values, q):
    return float(np.percentile(values, q)) if len(values) else None


def _ms(v):
    return '-' if v is None else '%.1f ms' % (v * 1e3)


class Ledger:
    """Outcomes of every request sent, and the events between them. Times are
    time.monotonic() seconds; thread-safe."""

    def __init__(self, title=''):
        self.title = title
        self._mu = threading.Lock()
        self.entries = []
        self.events = []       # (t_start, t_end, label)
        self._sending = 0      # requests sent whose outcome is not in yet
        self.t0 = time.monotonic()

    # -- recording --
    def sending(self):
        with self._mu:
            self._sending += 1

    def add(self, entry):
        with self._mu:
            self._sending -= 1
            self.entries.append(entry)

    def event(self, label, fn=None):
        """Runs fn() (if any) and records the event with its start and end."""
        t = time.monotonic()
        try:
            if fn is not None:
                fn()
        finally:
            with self._mu:
                self.events.append((t, time.monotonic(), label))

    # -- queries --
    def pending(self):
        """Requests sent with no outcome yet (0 once the load stopped)."""
        with self._mu:
            return self._sending

    def sent(self):
        with self._mu:
            return len(self.entries) + self._sending

    def count(self, outcome, entries=None):
        return sum(1 for e in (self.entries if entries is None else entries)
                   if e.outcome == outcome)

    def failures(self, entries=None):
        """Counter of non-OK outcomes: WRONG and status code names."""
        return collections.Counter(e.outcome for e in (
            self.entries if entries is None else entries) if e.outcome != OK)

    def codes(self, entries=None):
        """Counter of explicit status codes (WRONG left out)."""
        c = self.failures(entries)
        c.pop(WRONG, None)
        return c

    def wrong(self):
        return [e for e in self.entries if e.outcome == WRONG]

    def phases(self):
        """[(label, entries)] split by send time at each event's start."""
        bounds = [t for t, _, _ in self.events]
        labels = ['before ' + self.events[0][2] if self.events else 'all']
        labels += ['after ' + label for _, _, label in self.events]
        out = [(label, []) for label in labels]
        for e in sorted(self.entries, key=lambda e: e.t_send):
            k = sum(1 for b in bounds if e.t_send >= b)
            out[k][1].append(e)
        return out

    @staticmethod
    def latencies(entries, outcome=OK):
        return [e.t_done - e.t_send for e in entries if e.outcome == outcome]

    def before_p99(self):
        before = self.phases()[0][1]
        return _pct(self.latencies(before), 99)

    def recovery(self, index, run=RUN, factor=LATENCY_FACTOR):
        """For event `index`: (seconds from its start to the send of the first
        run of `run` consecutive successes, seconds to the first `run`
        consecutive requests all OK with p99 latency under factor x the p99
        before the first event); None where that never happened."""
        te = self.events[index][0]
        after = sorted((e for e in self.entries if e.t_send >= te), key=lambda e: e.t_send)
        ok_at = lat_at = None
        limit = self.before_p99()
        streak = 0
        for i, e in enumerate(after):
            streak = streak + 1 if e.outcome == OK else 0
            if ok_at is None and streak >= run:
                ok_at = after[i - run + 1].t_send - te
            if lat_at is None and limit is not None and streak >= run:
                window = [w.t_done - w.t_send for w in after[i - run + 1:i + 1]]
                if _pct(window, 99) < factor * limit:
                    lat_at = after[i - run + 1].t_send - te
            if ok_at is not None and (lat_at is not None or limit is None):
                break
        return ok_at, lat_at

    def summary(self):
        """A dict of the whole run: sent, ok, wrong, failed (by code)."""
        return {'sent': self.sent(), 'ok': self.count(OK), 'wrong': self.count(WRONG),
                'failed': dict(self.codes())}

    def report(self):
        """The human-readable report (printed by the tests)."""
        lines = ['== ledger%s ==' % (': ' + self.title if self.title else '')]
        s = self.summary()
        lines.append('sent %d  ok %d  wrong %d  failed %s%s' % (
            s['sent'], s['ok'], s['wrong'],
            ', '.join('%s %d' % kv for kv in sorted(s['failed'].items())) or 'none',
            '  (%d with no outcome yet)' % self.pending() if self.pending() else ''))
        for t0, t1, label in self.events:
            lines.append('event at +%.2f s (%.2f s): %s' % (t0 - self.t0, t1 - t0, label))
        for label, entries in self.phases():
            lat = self.latencies(entries)
            bad = [e.t_done - e.t_send for e in entries if e.outcome != OK]
            codes = self.failures(entries)
            lines.append('  %-40s sent %5d ok %5d  p50 %9s  p99 %9s  max %9s%s' % (
                label[:40], len(entries), len(lat), _ms(_pct(lat, 50)), _ms(_pct(lat, 99)),
                _ms(max(lat) if lat else None),
                ('  failed %s (slowest %s)' % (', '.join(
                    '%s %d' % kv for kv in sorted(codes.items())), _ms(max(bad))))
                if codes else ''))
        for i, (_, _, label) in enumerate(self.events):
            ok_at, lat_at = self.recovery(i)
            lines.append('  recovery from %-28s %d ok in a row at %s; p99 < %.0fx before at %s' % (
                label[:28] + ':', RUN, '+%.3f s' % ok_at if ok_at is not None else 'never',
                LATENCY_FACTOR, '+%.3f s' % lat_at if lat_at is not None else 'never'))
        for e in self.wrong()[:5]:
            lines.append('  WRONG: client %d seq %d rows %d: %s' % (e.client, e.seq, e.rows, e.detail))
        shown = collections.Counter()
        for e in self.entries:
            if e.outcome not in (OK, WRONG) and shown[e.outcome] < 2:
                shown[e.outcome] += 1
                lines.append('  %s at +%.2f s: %s' % (e.outcome, e.t_send - self.t0, e.detail))
        return '\n'.join(lines)


# ---- requests ------------------------------------------------------------------

class Pool:
    """Random inputs of `model` for each batch size, with torch's answers."""

    def __init__(self, model, batches, size=32, seed=0):
        export_models.torch.set_num_threads(1)
        self.model = model
        self.items = {}
        for b in batches:
            self.items[b] = []
            for k in range(size):
                inputs = export_models.make_inputs(model, b, seed=seed * 100003 + b * 1009 + k)
                self.items[b].append((inputs, export_models.reference(model, inputs)))

    def pick(self, rng, batches=None):
        b = rng.choice(list(batches or self.items))
        inputs, want = self.items[b][rng.randint(len(self.items[b]))]
        return b, inputs, want


def check_answer(got, want):
    """None when `got` equals `want` ({name: ndarray}), else why not."""
    if list(got) != list(want):
        return 'outputs %s, expected %s' % (list(got), list(want))
    for name, w in want.items():
        g = got[name]
        if g.dtype != w.dtype or g.shape != w.shape:
            return '%s: %s%s, expected %s%s' % (name, g.dtype, g.shape, w.dtype, w.shape)
        if not np.allclose(g, w, rtol=RTOL, atol=ATOL):
            err = np.abs(g.astype(np.float64) - w) / (np.abs(w) + ATOL)
            return '%s: max relative error %.3g at %s' % (
                name, err.max(), np.unravel_index(err.argmax(), err.shape))
    return None


def client(address, timeout=30.0, creds=None):
    """A kserve.Client whose channel retries a lost connection quickly (the
    default reconnect backoff grows to minutes, which would hide how soon a
    restarted daemon serves again). gRPC also takes the minimum reconnect
    backoff as the time one connection attempt may take: 1 s, as 100 ms
    fails handshakes with a loaded (or sanitized) daemon, and the
    channel's first requests with them."""
    c = kserve.Client(address, timeout, creds)
    c.channel.close()
    c.channel = kserve.open_channel(address, creds, options=[
        ('grpc.max_receive_message_length', -1),
        ('grpc.max_send_message_length', -1),
        ('grpc.initial_reconnect_backoff_ms', 100),
        ('grpc.min_reconnect_backoff_ms', 1000),
        ('grpc.max_reconnect_backoff_ms', 500)])
    return c


def send(client, led, client_id, seq, model, rows, inputs, want, deadline, typed=False,
         **overrides):
    """Sends one request, records its one outcome in `led` and returns it.
    typed and overrides (shapes=, datatypes=, raw=): as kserve.Client
    build_request."""
    request = client.build_request(model, inputs, typed, **overrides)
    led.sending()
    t = time.monotonic()
    try:
        try:
            resp = client.infer_request(request, timeout=deadline)
            done = time.monotonic()
        except grpc.RpcError as e:
            done = time.monotonic()
            code = e.code()
            outcome = code.name if code is not None else 'NO_STATUS'
            led.add(Entry(client_id, seq, rows, t, done, outcome, e.details()))
            return outcome
        why = check_answer(client.decode_response(resp), want)
        outcome = WRONG if why else OK
        led.add(Entry(client_id, seq, rows, t, done, outcome, why))
        return outcome
    except Exception as e:  # an undecodable answer is a wrong answer
        led.add(Entry(client_id, seq, rows, t, time.monotonic(), WRONG,
                      '%s: %s' % (type(e).__name__, e)))
        return WRONG


class Load:
    """K closed-loop clients sending to `model` at `address` until stop().

    batches: batch sizes, one picked at random per request. deadline: the
    client deadline of each request (s). max_requests: per client, a bound
    on top of the time bound. error_pause: a client waits this long (s)
    after a failed request before its next one, as a real client would,
    so that fast failures do not starve the daemons of CPU. creds: as
    kserve.open_channel (TLS). Use run() for a timed run with events, or
    start() / stop() (also as a context manager) to drive it yourself."""

    def __init__(self, address, model='mlp', clients=4, batches=(1,), deadline=10.0,
                 seed=0, pool=None, title='', max_requests=100000, served=None,
                 error_pause=0.02, creds=None):
        self.address = address
        self.creds = creds
        self.model = model
        self.served = served or model
        self.clients = clients
        self.batches = tuple(batches)
        self.deadline = deadline
        self.seed = seed
        self.max_requests = max_requests
        self.error_pause = error_pause
        self.pool = pool or Pool(model, self.batches, seed=seed)
        self.ledger = Ledger(title)
        self._stop = threading.Event()
        self._threads = []

    def _client(self, k):
        rng = np.random.RandomState(self.seed * 7919 + k)
        with client(self.address, timeout=self.deadline, creds=self.creds) as c:
            for seq in range(self.max_requests):
                if self._stop.is_set():
                    return
                rows, inputs, want = self.pool.pick(rng, self.batches)
                if send(c, self.ledger, k, seq, self.served, rows, inputs, want,
                        self.deadline) != OK:
                    self._stop.wait(self.error_pause)

    def start(self):
        self.ledger.t0 = time.monotonic()
        for k in range(self.clients):
            t = threading.Thread(target=self._client, args=(k,), daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self):
        """Stops sending and waits for every request's outcome (at most the
        deadline plus a margin); returns the ledger."""
        self._stop.set()
        limit = time.monotonic() + self.deadline + 5.0
        for t in self._threads:
            t.join(max(0.0, limit - time.monotonic()))
        return self.ledger

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False

    def run(self, duration, events=()):
        """Runs for `duration` s; events [(at_s, label, fn)] run in order on
        this thread at their times (a slow fn delays later events).
        Returns the ledger once every request has its outcome."""
        self.start()
        try:
            for at, label, fn in sorted(events, key=lambda e: e[0]):
                delay = self.ledger.t0 + at - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                self.ledger.event(label, fn)
            delay = self.ledger.t0 + duration - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        finally:
            self.stop()
        return self.ledger


def burst(address, model, n, rows=1, deadline=10.0, seed=0, served=None, title=''):
    """n requests sent at once, one thread each (released together by a
    barrier); returns their ledger once all are answered."""
    pool = Pool(model, (rows,), size=n, seed=seed)
    led = Ledger(title)
    barrier = threading.Barrier(n)

    def one(k):
        inputs, want = pool.items[rows][k]
        with client(address, timeout=deadline) as c:
            # Connect before the barrier: the burst is the requests.
            try:
                grpc.channel_ready_future(c.channel).result(timeout=deadline)
            except grpc.FutureTimeoutError:
                pass
            try:
                barrier.wait(timeout=deadline)
            except threading.BrokenBarrierError:
                pass
            send(c, led, k, 0, served or model, rows, inputs, want, deadline)

    threads = [threading.Thread(target=one, args=(k,), daemon=True) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(deadline + 10.0)
    return led
