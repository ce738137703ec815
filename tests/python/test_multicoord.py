"""Two coordinators over one worker pool (issue 15 item 4; README
"Membership", "Several coordinators").

Real processes on loopback: coordinators A and B, each serving the MLP
exported by torch (strategy=tensor, shards=2, replicas=2: its layers cut in
two shards each, every shard on two of the three workers), started with no worker; three tessera-worker
processes started with `--join A,B`, so each registers with both. Every
answer is compared with torch's for the same input (ledger.py). Clients
list both coordinators and fail over: a request that gets UNAVAILABLE
from one is sent once to the next (FailoverLoad below, as `tessera
--server A,B` does).

  a. both coordinators answer correctly, and show the same placement of
     every shard (ClusterStatus: shard id -> worker addresses), reached on
     their own from the placement rules; unloading the model from A
     unloads no shard from the workers: B still answers.
  c. kill -9 A under load from failover clients: zero failed requests.
  d. A restarted on its address: the workers register with it again
     (ClusterStatus shows all three UP), it serves correct answers, the
     placement agrees with B's, and no shard a worker held was sent again.
  e. kill -9 a worker under load: both coordinators re-place its shards
     onto the same workers, with zero failed requests.
  s. with a cluster secret (--cluster-secret-file on every daemon), a
     worker joins both coordinators through the list, and both serve.
  t. the same over mutual TLS (test_security's certificates): both
     coordinators list both workers and answer as torch does.
  f. a stalled coordinator (SIGSTOP) delays no other's registration: a
     worker that joins it and another registers with the other before its
     call to the stalled one has even timed out.
  g. SIGTERM a worker under load: it deregisters from both coordinators
     at once, both move its shards onto the same workers, it exits 0 as
     soon as both answered (its log says so), zero failed requests.
  u. a bad --join list stops the worker at start (exit 2, naming why).
"""
import collections
import os
import re
import signal
import subprocess
import sys
import threading
import time
import unittest

import grpc
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import export_models  # noqa: E402
import kserve  # noqa: E402
import ledger  # noqa: E402
import test_faults  # noqa: E402
import test_security as sec  # noqa: E402
from test_faults import WAIT  # noqa: E402

REPLACE_AFTER_MS = 1000
ARGS = ['--replace-after-ms', str(REPLACE_AFTER_MS)]
TENSOR2 = {'strategy': 'tensor', 'shards': 2, 'replicas': 2}
UNAVAILABLE = grpc.StatusCode.UNAVAILABLE
STABLE_S = 2.0  # four prober rounds (0.5 s each) with no change: settled
# A coordinator's log line for a shard it uploaded (cluster/membership.c).
LOADED = re.compile(r'shard ([0-9a-f]{12}) \([^)]*\) loaded on worker (\S+)')


def setUpModule():
    sec.setUpModule()  # the certificates of test t


def tearDownModule():
    sec.tearDownModule()


def placement(status, model='mlp'):
    """{(stage, shard, shard id): frozenset of worker addresses} of `model`,
    live replicas only."""
    addr = {w.index: w.address for w in status.workers}
    return {(s.stage, s.shard, s.shard_id):
            frozenset(addr[w] for w, st in zip(s.workers, s.replica_states) if st == 'UP')
            for s in status.shards if s.model == model}


def settled(status, workers, replicas=2, model='mlp'):
    """Every worker in `workers` UP, and every shard of `model` on
    `replicas` UP workers: the placement, or None while still moving."""
    up = {w.address for w in status.workers if w.up}
    if not {w.address for w in workers} <= up:
        return None
    p = placement(status, model)
    if not p or any(len(ws) != replicas for ws in p.values()):
        return None
    return p


def send_failover(clients, first, led, client_id, seq, model, rows, inputs, want,
                  deadline):
    """One request: sent to clients[first], and on UNAVAILABLE once to each
    next client in turn. Records its one outcome in `led`; returns
    (outcome, index of the client that answered, or `first`)."""
    request = clients[0].build_request(model, inputs)
    led.sending()
    t = time.monotonic()
    error = None
    for k in range(len(clients)):
        i = (first + k) % len(clients)
        try:
            resp = clients[i].infer_request(request, timeout=deadline)
        except grpc.RpcError as e:
            error = e
            if e.code() == UNAVAILABLE:
                continue
            break
        why = ledger.check_answer(clients[i].decode_response(resp), want)
        outcome = ledger.WRONG if why else ledger.OK
        led.add(ledger.Entry(client_id, seq, rows, t, time.monotonic(), outcome, why))
        return outcome, i
    code = error.code()
    outcome = code.name if code is not None else 'NO_STATUS'
    led.add(ledger.Entry(client_id, seq, rows, t, time.monotonic(), outcome,
                         error.details()))
    return outcome, first


class FailoverLoad(ledger.Load):
    """ledger.Load over several coordinators: each client starts on its own
    (client k on address k mod n) and stays on the one that last answered."""

    def __init__(self, addresses, **kw):
        super().__init__(addresses[0], **kw)
        self.addresses = list(addresses)

    def _client(self, k):
        rng = np.random.RandomState(self.seed * 7919 + k)
        clients = [ledger.client(a, timeout=self.deadline) for a in self.addresses]
        current = k % len(clients)
        try:
            for seq in range(self.max_requests):
                if self._stop.is_set():
                    return
                rows, inputs, want = self.pool.pick(rng, self.batches)
                outcome, current = send_failover(clients, current, self.ledger, k, seq,
                                                 self.served, rows, inputs, want,
                                                 self.deadline)
                if outcome != ledger.OK:
                    self._stop.wait(self.error_pause)
        finally:
            for c in clients:
                c.close()


class MultiCoordTest(test_faults.FaultTest):
    """FaultTest's helpers (workers, coordinators, asserts), not its tests."""
    locals().update({name: None for name in dir(test_faults.FaultTest)
                     if name.startswith('test_')})

    def coordinator(self, listen='127.0.0.1:0', extra_args=()):
        return super().coordinator([], keys=TENSOR2, listen=listen, wait_ready=False,
                                   extra_args=ARGS + list(extra_args))

    def pool_of_two(self):
        """Coordinators A and B, and three workers that --join A,B; returns
        (A, B, workers) once both placed the model on all three alike."""
        a, b = self.coordinator(), self.coordinator()
        ws = self.workers(3, join='%s,%s' % (a.address, b.address))
        for c in (a, b):
            self.assertTrue(self.wait_model_ready(c), 'model not ready on %s:\n%s' % (
                c.address, c.log()[-3000:]))
        agreed = self.wait_agreed(a, b, ws)
        self.assertTrue(agreed, 'placements differ:\nA %s\nB %s' % (
            placement(self.status(a)), placement(self.status(b))))
        return a, b, ws

    def wait_agreed(self, a, b, workers, timeout=WAIT):
        """Until both coordinators show the same settled placement on
        `workers`, unchanged for STABLE_S (a rebalance onto a worker that
        just came UP runs in the prober round after); returns it (None on
        timeout)."""
        seen = {'placement': None, 'since': 0.0}

        def agreed():
            pa = settled(self.status(a), workers)
            if not pa or pa != settled(self.status(b), workers):
                seen['placement'] = None
                return None
            if pa != seen['placement']:
                seen['placement'], seen['since'] = pa, time.monotonic()
            return pa if time.monotonic() - seen['since'] >= STABLE_S else None
        return ledger.wait_for(agreed, timeout, interval=0.2)

    def failover_load(self, coords, title):
        return FailoverLoad([c.address for c in coords], model='mlp', clients=4,
                            batches=test_faults.BATCHES, deadline=test_faults.DEADLINE,
                            pool=self.pool, title=title)

    def assert_answers(self, coord, n=6):
        """n requests straight to `coord`, every answer torch's."""
        led = ledger.Ledger('direct to ' + coord.address)
        rng = np.random.RandomState(7)
        with ledger.client(coord.address) as c:
            for seq in range(n):
                rows, inputs, want = self.pool.pick(rng)
                ledger.send(c, led, 0, seq, 'mlp', rows, inputs, want, test_faults.DEADLINE)
        self.assertEqual(led.count(ledger.OK), n, led.report())

    # ---- a, b ----------------------------------------------------------------

    def test_a_both_serve_one_placement(self):
        a, b, ws = self.pool_of_two()
        self.assert_answers(a)
        self.assert_answers(b)
        p = placement(self.status(a))
        self.assertGreaterEqual(len({k[1] for k in p}), 2, p)  # a tensor split
        self.assertEqual(p, placement(self.status(b)))
        # Each worker holds what the placement puts on it (and may hold
        # more: what was placed while only two workers had joined, before
        # rebalancing onto the third), and no coordinator sent a shard to a
        # worker twice. (Both may send it once when they place it at the
        # same moment, before either upload began: README, "Several
        # coordinators"; restarting one sends nothing held: test c.)
        for w in ws:
            held = {s.shard_id for s in ledger.worker_status(w.address).shards}
            want = {sid for (_, _, sid), on in p.items() if w.address in on}
            self.assertLessEqual(want, held, w.address)
        uploads = 0
        for c in (a, b):
            sent = collections.Counter(LOADED.findall(c.log()))
            uploads += len(sent)
            self.assertEqual({k: n for k, n in sent.items() if n > 1}, {}, c.address)
        self.assertGreater(uploads, 0, 'no upload logged')
        # Unloading from A sends no UnloadShard: B still answers from the
        # same workers, which still hold every shard.
        with kserve.Client(a.address) as c:
            c.unload('mlp')
        self.assertTrue(ledger.wait_for(lambda: not placement(self.status(a)), WAIT))
        for w in ws:
            held = {s.shard_id for s in ledger.worker_status(w.address).shards}
            self.assertTrue({sid for (_, _, sid), on in p.items() if w.address in on} <= held)
        self.assert_answers(b)

    # ---- c, d ----------------------------------------------------------------

    def test_c_kill_coordinator_then_restart(self):
        a, b, ws = self.pool_of_two()
        before = placement(self.status(b))
        held = {w.address: {s.shard_id for s in ledger.worker_status(w.address).shards}
                for w in ws}
        address = a.address
        load = self.failover_load((a, b), 'kill -9 coordinator A, clients list A,B')
        with load:
            time.sleep(1.5)
            load.ledger.event('kill -9 coordinator A ' + address, a.kill)
            time.sleep(3.0)
        led = load.ledger
        self.show(led)
        self.assert_all_correct(led)
        # The CLI with A dead: `tessera infer` and `bench --server A,B` fail
        # over to B.
        servers = '%s,%s' % (address, b.address)
        rows, inputs, want = self.pool.pick(np.random.RandomState(3), (3,))
        (name, value), (out_name, _) = list(inputs.items())[0], list(want.items())[0]
        x, y = os.path.join(self.tmp, 'x.npy'), os.path.join(self.tmp, 'y.npy')
        np.save(x, value)
        p = kserve.run_tessera('infer', '--server', servers, '--model', 'mlp',
                               '--input', '%s=%s' % (name, x),
                               '--output', '%s=%s' % (out_name, y))
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn('server %s unavailable' % address, p.stderr)
        self.assertIsNone(ledger.check_answer({out_name: np.load(y)}, want))
        p = kserve.run_tessera('bench', '--server', servers, '--model', 'mlp',
                               '--input', '%s=%s' % (name, x), '--concurrency', '4',
                               '--requests', '200')
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertIn('ok: 200\nerrors: 0\n', p.stdout)

        # d. restarted on its address: the workers come back to it on their own.
        again = self.coordinator(listen=address)
        self.assertTrue(ledger.wait_for(
            lambda: settled(self.status(again), ws), WAIT),
            'workers did not register again with the restarted coordinator:\n%s\n%s' % (
                self.status(again), again.log()[-3000:]))
        self.assertTrue(self.wait_model_ready(again))
        self.assertEqual(self.wait_agreed(again, b, ws), before)
        self.assert_answers(again)
        # `tessera load --server A,B` reloads the model on each, and says so
        # per server; the placement stays.
        p = kserve.run_tessera('load', '--server', '%s,%s' % (again.address, b.address),
                               '--model', 'mlp')
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stdout, 'loaded mlp on %s\nloaded mlp on %s\n' % (
            again.address, b.address))
        self.assertEqual(self.wait_agreed(again, b, ws), before)
        # Nothing a worker held was sent to it again, by the restart or
        # the reload.
        log = again.log()
        self.assertIn('already on worker', log)
        for w in ws:
            for sid in held[w.address]:
                self.assertNotRegex(log, r'shard %s \(.*\) loaded on worker %s' % (
                    sid[:12], w.address), log[-3000:])
        load = self.failover_load((again, b), 'both coordinators back')
        led = load.run(2.0)
        self.show(led)
        self.assert_all_correct(led)

    # ---- e -------------------------------------------------------------------

    def test_e_kill_worker_both_replace_alike(self):
        a, b, ws = self.pool_of_two()
        p = placement(self.status(a))
        victim = [w for w in ws if any(w.address in on for on in p.values())][0]
        survivors = [w for w in ws if w is not victim]
        load = self.failover_load((a, b), 'kill -9 a worker under two coordinators')
        with load:
            time.sleep(1.5)
            load.ledger.event('kill -9 worker ' + victim.address, victim.kill)

            def moved():
                pa = placement(self.status(a))
                pb = placement(self.status(b))
                gone = all(victim.address not in on and len(on) == 2
                           for on in list(pa.values()) + list(pb.values()))
                return gone and pa == pb and pa
            after = ledger.wait_for(moved, WAIT, interval=0.2)
            load.ledger.event('both re-placed alike' if after else 'NOT re-placed alike')
            time.sleep(1.0)
        led = load.ledger
        self.show(led)
        self.assertTrue(after, 'not re-placed onto the same workers:\nA %s\nB %s\n%s' % (
            placement(self.status(a)), placement(self.status(b)), a.log()[-2000:]))
        for on in after.values():
            self.assertEqual(on, frozenset(w.address for w in survivors))
        self.assert_all_correct(led)

    # ---- s -------------------------------------------------------------------

    def test_s_cluster_secret_with_the_list(self):
        secret = os.path.join(self.tmp, 'secret')
        with open(secret, 'w') as f:
            f.write('multicoord-test-secret-0123456789abcdef\n')
        os.chmod(secret, 0o600)
        flag = ['--cluster-secret-file', secret]
        a = self.coordinator(extra_args=flag)
        b = self.coordinator(extra_args=flag)
        join = ['--join', '%s,%s' % (a.address, b.address)] + flag
        ws = [self.enterContext(kserve.Worker(extra_args=join, start_timeout=30.0))
              for _ in range(2)]
        for c in (a, b):
            self.assertTrue(self.wait_model_ready(c), c.log()[-3000:])
            self.assert_answers(c)
        for w in ws:
            for c in (a, b):
                self.assertIn('registered with coordinator %s' % c.address, w.log())

    # ---- t -------------------------------------------------------------------

    def test_t_tls_with_the_list(self):
        cs = [self.enterContext(sec.TlsCluster(
            models=[('mlp', self.mlp, TENSOR2)], local_workers=0, wait_ready=False,
            extra_args=sec.tls_args('coordinator') + ARGS, start_timeout=60))
            for _ in range(2)]
        join = ['--join', ','.join(c.address for c in cs)]
        ws = [self.enterContext(kserve.Worker(extra_args=sec.tls_args('worker%d' % i) + join,
                                              start_timeout=30.0))
              for i in range(2)]
        rng = np.random.RandomState(11)
        for c in cs:
            self.assertTrue(ledger.wait_for(lambda: c.client.model_ready('mlp'), WAIT),
                            c.log()[-3000:])
            self.assertEqual({w.address for w in c.client.cluster_status().workers},
                             {w.address for w in ws})
            _, inputs, want = self.pool.pick(rng)
            self.assertIsNone(ledger.check_answer(c.client.infer('mlp', inputs), want))

    # ---- f -------------------------------------------------------------------

    def test_f_stalled_coordinator_delays_no_other(self):
        a, b = self.coordinator(), self.coordinator()
        a.proc.send_signal(signal.SIGSTOP)
        self.addCleanup(lambda: a.proc.poll() is None and a.proc.send_signal(signal.SIGCONT))
        w = self.worker(join='%s,%s' % (a.address, b.address))
        self.assertTrue(self.wait_up(b, w.address), w.log()[-3000:])
        log = w.log()
        self.assertIn('registered with coordinator %s' % b.address, log)
        # Its RegisterWorker to A is still out (5 s deadline), not failed.
        self.assertNotIn('cannot register with coordinator %s' % a.address, log)
        self.assertNotIn('registered with coordinator %s' % a.address, log)
        a.proc.send_signal(signal.SIGCONT)
        self.assertTrue(self.wait_up(a, w.address), w.log()[-3000:])

    # ---- g -------------------------------------------------------------------

    def test_g_sigterm_worker_leaves_both(self):
        a, b, ws = self.pool_of_two()
        p = placement(self.status(a))
        victim = [w for w in ws if any(w.address in on for on in p.values())][0]
        survivors = frozenset(w.address for w in ws if w is not victim)
        exits = []

        def terminate():
            victim.proc.send_signal(signal.SIGTERM)
            try:
                exits.append(victim.proc.wait(12.0))
            except subprocess.TimeoutExpired:
                exits.append(None)
            exits.append((placement(self.status(a)), placement(self.status(b))))

        led = self.failover_load((a, b), 'SIGTERM a worker under two coordinators').run(
            5.0, events=[(1.5, 'SIGTERM worker ' + victim.address, terminate)])
        self.show(led)
        self.assertEqual(exits[0], 0, victim.log()[-3000:])
        self.assertIn('deregistered: every coordinator moved', victim.log())
        pa, pb = exits[1]
        self.assertEqual(pa, pb)
        for on in pa.values():
            self.assertEqual(on, survivors, pa)
        self.assert_all_correct(led)

    # ---- u -------------------------------------------------------------------

    def test_u_bad_join_list_refused(self):
        many = ','.join('127.0.0.1:%d' % (1000 + i) for i in range(17))
        for join, why in (('127.0.0.1:1,,127.0.0.1:2', 'has an empty item'),
                          ('127.0.0.1:1,127.0.0.1:1', "names '127.0.0.1:1' twice"),
                          (many, 'has more than 16 items'),
                          ('127.0.0.1:1,unix:/tmp/x', "address 'unix:/tmp/x' is not "
                                                      "HOST:PORT")):
            with self.subTest(join=join):
                p = kserve.run_command([kserve.binary('tessera-worker'), '--listen',
                                        '127.0.0.1:0', '--join', join], timeout=30)
                self.assertEqual(p.returncode, 2, p.stderr)
                self.assertIn('tessera-worker: --join ', p.stderr)
                self.assertIn(why, p.stderr)
                self.assertNotIn('listening on', p.stdout)
        # Repeated --join add up, and the sum is checked the same way.
        p = kserve.run_command([kserve.binary('tessera-worker'), '--listen', '127.0.0.1:0',
                                '--join', '127.0.0.1:1', '--join', '127.0.0.1:1'], timeout=30)
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertIn("names '127.0.0.1:1' twice", p.stderr)


if __name__ == '__main__':
    unittest.main(verbosity=2)
