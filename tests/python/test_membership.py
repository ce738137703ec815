"""Membership chaos tests: shards of a dead or leaving worker are re-placed
on survivors and newcomers while the model keeps serving.

Real tessera-worker processes and a coordinator on loopback (the helpers of
test_faults.py), the MLP exported by torch, closed-loop clients whose every
answer is compared with torch's, every request accounted for in a ledger
(ledger.py: sent, ok, failed by code, p50/p99 before and after each event,
time to recover). The coordinator runs with --replace-after-ms 1000 so the
re-placement grace is short; the shard map is read from Admin/ClusterStatus.

  a. replicas=2 on 3 workers, kill -9 a holder under load: zero failures,
     and after the grace every shard has 2 live replicas again; kill -9 a
     second holder: still zero failures.
  b. replicas=1 on 2 workers, kill -9 the holder: only UNAVAILABLE during
     the gap, then correct answers from the survivor (time to recover
     reported).
  c. SIGTERM a worker under load (with --join: DeregisterWorker; without:
     health NOT_SERVING seen by the prober): zero failures, exit 0, and its
     shards already on other workers when it exits. With --join the
     coordinator's answer lets it exit as soon as its runs are done (within
     1 s of the signal); without, it waits until runs stop arriving for
     1 s (so at least 1 s, at most 10 s).
  d. replicas=2 on 2 workers, kill -9 one: its replicas have nowhere to go
     (shown DOWN in the shard map); a newcomer joins and receives them.
  f. a worker that holds no shard exits at once on SIGTERM (within 1 s),
     with or without --join.
  g. an ensemble (weighted mean of two torch MLPs) whose member loses a
     holder (kill -9): every answer correct through the re-placement; then
     the member's other original holder is killed too, and the ensemble
     still answers correctly, which it can only do from the member's new
     placement (it was rebuilt on it).
  h. link figures: after some requests, `tessera status --format json`
     (and the table and csv columns) shows each worker's smoothed health-check round trip (rtt_us > 0) and
     its RunShard throughput (throughput_bytes_per_s > 0), and
     Admin/ClusterStatus carries the same fields.
  e. the prober checks all workers at once: with one worker stalled
     (SIGSTOP, its health check times out every round), a holder killed
     with -9 is marked DOWN and its replica re-placed within 2 s, as fast
     as a holder killed while no worker is stalled.
"""
import json
import os
import signal
import random
import subprocess
import sys
import threading
import time
import unittest

import grpc
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kserve  # noqa: E402
import ledger  # noqa: E402
import test_ensemble  # noqa: E402
import test_faults  # noqa: E402
from test_faults import DATA2, WAIT  # noqa: E402

REPLACE_AFTER_MS = 1000
QUIET_S = 1.0   # tessera-worker's QUIET_MS: no run for this long, routing stopped
ARGS = ['--replace-after-ms', str(REPLACE_AFTER_MS)]


def shard_rows(status, model='mlp'):
    """[(label, [(worker address, state)])] of every shard of `model`."""
    addr = {w.index: w.address for w in status.workers}
    return [(s.label, [(addr[w], st) for w, st in zip(s.workers, s.replica_states)])
            for s in status.shards if s.model == model]


def fully_replicated(status, replicas, model='mlp'):
    """Every shard of `model` on `replicas` distinct UP workers."""
    rows = shard_rows(status, model)
    return bool(rows) and all(
        len({a for a, st in row if st == 'UP'}) == replicas for _, row in rows)


class MembershipTest(test_faults.FaultTest):
    """FaultTest's helpers (workers, coordinator, load, asserts), not its
    tests: those run in test_faults.py."""
    locals().update({name: None for name in dir(test_faults.FaultTest)
                     if name.startswith('test_')})

    def coordinator(self, workers=(), keys=DATA2, **kw):
        kw['extra_args'] = ARGS + list(kw.get('extra_args', ()))
        return super().coordinator(workers, keys=keys, **kw)

    def wait_replicated(self, coord, replicas, gone=None, timeout=WAIT):
        """Until every shard has `replicas` UP replicas, none on `gone`."""
        def check():
            st = self.status(coord)
            return fully_replicated(st, replicas) and not (
                gone and ledger.placed_on(st, 'mlp', gone.address))
        return ledger.wait_for(check, timeout)

    def terminate(self, worker, out):
        """SIGTERM; records (exit status, seconds to exit, shard map at exit)."""
        t = time.monotonic()
        worker.proc.send_signal(signal.SIGTERM)
        try:
            rc = worker.proc.wait(12.0)
        except subprocess.TimeoutExpired:
            rc = None
        out.append((rc, time.monotonic() - t, self.status(self.coord)))

    # ---- a -------------------------------------------------------------------

    def test_a_kill_replica_then_another(self):
        ws = self.workers(3)
        coord = self.coordinator(ws)
        first = self.replica_holders(coord, ws)[0]
        load = self.load(coord.address, 'kill -9 two replica holders in turn')
        with load:
            time.sleep(1.5)
            load.ledger.event('kill -9 worker ' + first.address, first.kill)
            healed = self.wait_replicated(coord, 2, gone=first)
            load.ledger.event('every shard on 2 live workers again' if healed
                              else 'NOT re-replicated')
            healed_status = self.status(coord)
            shown = kserve.run_tessera('status', '--server', coord.address)
            time.sleep(1.0)
            second = [w for w in self.replica_holders(coord, ws) if w is not first][0]
            load.ledger.event('kill -9 worker ' + second.address, second.kill)
            time.sleep(2.5)
        led = load.ledger
        self.show(led)
        self.assertTrue(healed, 'shards not back on 2 live workers within %.0f s:\n%s\n%s' % (
            WAIT, shard_rows(self.status(coord)), coord.log()[-3000:]))
        self.assertEqual(ledger.placed_on(healed_status, 'mlp', first.address), set(),
                         'the dead worker still holds a replica: %s' % shard_rows(healed_status))
        self.assertGreater(sum(m.moves for m in healed_status.models), 0)
        # `tessera status`: the dead worker DOWN, the shard's replicas UP, one move.
        self.assertEqual(shown.returncode, 0, shown.stderr)
        dead = ledger.worker_state(healed_status, first.address)
        self.assertRegex(shown.stdout, r'\n%d +%s +DOWN ' % (dead.index, first.address))
        self.assertRegex(shown.stdout, r'mlp/s0/k0 .* \d+\(UP\),\d+\(UP\) +1\b')
        self.assert_all_correct(led)

    # ---- b -------------------------------------------------------------------

    def test_b_single_replica_holder_killed(self):
        ws = self.workers(2)
        coord = self.coordinator(ws, keys={'strategy': 'data', 'replicas': 1})
        (victim,) = self.replica_holders(coord, ws)
        (survivor,) = [w for w in ws if w is not victim]
        load = self.load(coord.address, 'replicas=1: the holder killed')
        with load:
            time.sleep(1.5)
            load.ledger.event('kill -9 the only holder ' + victim.address, victim.kill)
            moved = ledger.wait_for(
                lambda: ledger.placed_on(self.status(coord), 'mlp', survivor.address), WAIT)
            time.sleep(2.0)
        led = load.ledger
        self.show(led)
        self.assertTrue(moved, 'shard not re-placed on %s:\n%s' % (
            survivor.address, coord.log()[-3000:]))
        self.assert_only(led, {'UNAVAILABLE'})
        ok_at, _ = led.recovery(0)
        print('time to recover: %s s' % ('%.3f' % ok_at if ok_at is not None else 'never'))
        self.assertIsNotNone(ok_at, 'never served again:\n' + led.report())
        self.assertLess(ok_at, REPLACE_AFTER_MS / 1000.0 + WAIT / 2, led.report())
        self.assertEqual(led.failures(led.phases()[1][1][-ledger.RUN:]), {},
                         'still failing at the end:\n' + led.report())

    # ---- c -------------------------------------------------------------------

    def sigterm_under_load(self, join):
        if join:
            self.coord = self.coordinator([], wait_ready=False)
            ws = self.workers(3, join=self.coord.address)
            self.assertTrue(self.wait_model_ready(self.coord))
            self.assertTrue(ledger.wait_for(
                lambda: sum(w.up for w in self.status(self.coord).workers) == 3, WAIT))
        else:
            ws = self.workers(3)
            self.coord = self.coordinator(ws)
        coord = self.coord
        victim = self.replica_holders(coord, ws)[0]
        exits = []
        led = self.load(coord.address, 'SIGTERM a replica holder (%s)' % (
            'DeregisterWorker' if join else 'health NOT_SERVING')).run(
            6.0, events=[(1.5, 'SIGTERM worker ' + victim.address,
                          lambda: self.terminate(victim, exits))])
        self.show(led)
        rc, seconds, at_exit = exits[0]
        print('worker exited %s after %.2f s; shard map then: %s' % (
            rc, seconds, shard_rows(at_exit)))
        self.assertEqual(rc, 0, victim.log()[-3000:])
        if join:
            # Confirmed by DeregisterWorker: no quiet wait after the moves.
            self.assertIn('routes nothing here', victim.log())
            self.assertLess(seconds, QUIET_S, victim.log()[-3000:])
        else:
            # Nobody confirms that routing stopped: the quiet wait is kept.
            self.assertGreaterEqual(seconds, QUIET_S, victim.log()[-3000:])
            self.assertLess(seconds, 10.5)
        self.assertEqual(ledger.placed_on(at_exit, 'mlp', victim.address), set(),
                         'shards still on the leaving worker when it exited: %s\n%s' % (
                             shard_rows(at_exit), coord.log()[-3000:]))
        self.assertTrue(fully_replicated(at_exit, 2), shard_rows(at_exit))
        self.assertEqual(ledger.worker_state(at_exit, victim.address).state, 'LEFT')
        self.assert_all_correct(led)

    def test_c_sigterm_worker_joined(self):
        self.sigterm_under_load(join=True)

    def test_c_sigterm_worker_listed(self):
        self.sigterm_under_load(join=False)

    # ---- d -------------------------------------------------------------------

    def test_d_newcomer_receives_shards(self):
        ws = self.workers(2)
        coord = self.coordinator(ws)
        victim = ws[0]
        newcomer = []

        def pending():
            rows = shard_rows(self.status(coord))
            return rows and all(('DOWN' in [st for _, st in row]) for _, row in rows)

        load = self.load(coord.address, 'a death with no room, then a newcomer')
        with load:
            time.sleep(1.5)
            load.ledger.event('kill -9 worker ' + victim.address, victim.kill)
            time.sleep(REPLACE_AFTER_MS / 1000.0 + 1.0)
            waiting = pending()
            load.ledger.event('tessera-worker --join (newcomer)',
                              lambda: newcomer.append(self.worker(join=coord.address)))
            healed = self.wait_replicated(coord, 2, gone=victim)
            load.ledger.event('every shard on 2 live workers again' if healed
                              else 'NOT re-replicated')
            time.sleep(1.0)
        led = load.ledger
        self.show(led)
        self.assertTrue(waiting, 'replicas of the dead worker not shown DOWN while no '
                        'worker had room: %s' % shard_rows(self.status(coord)))
        self.assertTrue(healed, 'newcomer got no shards within %.0f s: %s\n%s' % (
            WAIT, shard_rows(self.status(coord)), coord.log()[-3000:]))
        placed = ledger.placed_on(self.status(coord), 'mlp', newcomer[0].address)
        held = {s.shard_id for s in ledger.worker_status(newcomer[0].address).shards}
        self.assertTrue(placed and placed <= held, (placed, held))
        self.assert_all_correct(led)

    # ---- f -------------------------------------------------------------------

    def shardless_worker_exits(self, join):
        if join:
            coord = self.coordinator([], wait_ready=False)
            ws = self.workers(2, join=coord.address)
            self.assertTrue(self.wait_model_ready(coord))
            # Rebalancing may move a replica onto a newcomer where a fresh
            # placement would put it (README "Membership"), leaving the old
            # holder a copy it keeps (shards are never unloaded): a
            # newcomer with no room for the shard stays shardless.
            ws.append(self.enterContext(kserve.Worker(
                extra_args=['--join', coord.address, '--memory-limit', '1K'],
                start_timeout=30.0)))
            self.assertTrue(self.wait_up(coord, ws[2].address))
        else:
            ws = self.workers(3)
            coord = self.coordinator(ws)
        (idle,) = [w for w in ws if w not in self.replica_holders(coord, ws)]
        held = ledger.worker_status(idle.address).shards
        self.assertEqual(len(held), 0, held)
        exits = []
        self.coord = coord
        self.terminate(idle, exits)
        rc, seconds, at_exit = exits[0]
        print('a worker with no shard (%s) exited %s after %.3f s' % (
            '--join' if join else 'listed', rc, seconds))
        self.assertEqual(rc, 0, idle.log()[-3000:])
        self.assertLess(seconds, QUIET_S, idle.log()[-3000:])
        self.assertTrue(fully_replicated(at_exit, 2), shard_rows(at_exit))

    def test_f_shardless_worker_listed(self):
        self.shardless_worker_exits(join=False)

    def test_f_shardless_worker_joined(self):
        self.shardless_worker_exits(join=True)

    # ---- e -------------------------------------------------------------------

    def seconds_to_replace(self, coord, victim, timeout=WAIT):
        """kill -9 `victim`; seconds until ClusterStatus shows it DOWN with
        no replica placed on it (None if not within timeout)."""
        t = time.monotonic()
        victim.kill()

        def replaced():
            st = self.status(coord)
            return (ledger.worker_state(st, victim.address).state == 'DOWN' and
                    not ledger.placed_on(st, 'mlp', victim.address))
        if not ledger.wait_for(replaced, timeout, interval=0.02):
            return None
        return time.monotonic() - t

    def test_e_stalled_worker_delays_no_detection(self):
        bound = 2.0
        ws = self.workers(5)
        coord = self.coordinator(ws, extra_args=['--replace-after-ms', '0'])
        first = self.replica_holders(coord, ws)[0]
        baseline = self.seconds_to_replace(coord, first)
        stalled = [w for w in ws if w is not first and
                   not ledger.placed_on(self.status(coord), 'mlp', w.address)][0]
        stalled.stop()
        self.assertTrue(ledger.wait_for(
            lambda: ledger.worker_state(self.status(coord), stalled.address).state == 'DOWN',
            WAIT), 'the stalled worker was never marked DOWN')
        second = [w for w in self.replica_holders(coord, ws)
                  if w is not first and w is not stalled][0]
        with_stall = self.seconds_to_replace(coord, second)
        print('kill -9 to DOWN and re-placed: %s s alone, %s s beside a stalled '
              'worker' % (baseline, with_stall))
        self.assertIsNotNone(baseline, coord.log()[-3000:])
        self.assertIsNotNone(with_stall, coord.log()[-3000:])
        self.assertLess(baseline, bound)
        self.assertLess(with_stall, bound, coord.log()[-3000:])
        self.assertTrue(fully_replicated(self.status(coord), 2),
                        shard_rows(self.status(coord)))

    # ---- g -------------------------------------------------------------------

    def test_g_ensemble_member_replaced(self):
        torch = test_ensemble.torch
        members = {}
        for name, seed in (('m1', 11), ('m2', 22)):
            module = test_ensemble.member_module(seed)
            path = test_ensemble.export_member(
                module, os.path.join(self.tmp, 'ens_%s.onnx' % name))
            members[name] = (module, path)
        rng = np.random.RandomState(7)
        cases = []
        for rows in (1, 7, 35):
            x = rng.standard_normal((rows, 32)).astype(np.float32)
            with torch.no_grad():
                outs = [members[m][0](torch.from_numpy(x)).numpy().astype(np.float64)
                        for m in ('m1', 'm2')]
            cases.append((x, (2.0 * outs[0] + outs[1]) / 3.0))
        ws = self.workers(4)
        # m2 on 3 of the 4 workers: each model is spread on its own (its
        # bytes, then rendezvous weights), so m2 may share m1's holders;
        # with 3 replicas one survives the two kills below.
        coord = self.coordinator(ws, models=[
            ('m1', members['m1'][1], DATA2),
            ('m2', members['m2'][1], {'strategy': 'data', 'replicas': 3}),
            'avg=ensemble:m1+m2,fuse=weighted_mean,weights=2+1'])
        st = self.status(coord)
        m1 = [w for w in ws if ledger.placed_on(st, 'm1', w.address)]
        m2 = {w.address for w in ws if ledger.placed_on(st, 'm2', w.address)}
        self.assertEqual(len(m1), 2, shard_rows(st, 'm1'))
        self.assertTrue(m2 - {w.address for w in m1},
                        'm2 only on m1\'s holders: %s %s' % (
                            shard_rows(st, 'm1'), shard_rows(st, 'm2')))
        first, second = m1

        outcomes = []   # (seconds since start, 'ok' | 'wrong' | status code)
        stop = threading.Event()
        t0 = time.monotonic()

        def client(seed):
            pick = random.Random(seed)
            with kserve.Client(coord.address, timeout=10.0) as c:
                while not stop.is_set():
                    x, want = pick.choice(cases)
                    try:
                        got = c.infer('avg', {test_ensemble.INPUT: x})[test_ensemble.OUTPUT]
                        ok = got.shape == want.shape and np.allclose(
                            got, want, rtol=1e-5, atol=1e-5)
                        outcome = 'ok' if ok else 'wrong'
                    except grpc.RpcError as e:
                        outcome = e.code().name
                    outcomes.append((time.monotonic() - t0, outcome))

        threads = [threading.Thread(target=client, args=(k,)) for k in range(2)]
        for t in threads:
            t.start()
        try:
            time.sleep(1.0)
            kill1 = time.monotonic() - t0
            first.kill()
            moved = ledger.wait_for(lambda: not ledger.placed_on(
                self.status(coord), 'm1', first.address) and fully_replicated(
                    self.status(coord), 2, 'm1'), WAIT)
            time.sleep(0.5)
            kill2 = time.monotonic() - t0
            second.kill()
            time.sleep(1.0)
            healed = ledger.wait_for(lambda: fully_replicated(
                self.status(coord), 2, 'm1'), WAIT)
            time.sleep(0.5)
        finally:
            stop.set()
            for t in threads:
                t.join()
        end = self.status(coord)
        phases = [('before', 0, kill1), ('after the first kill', kill1, kill2),
                  ('after the second kill', kill2, 1e9)]
        for label, a, b in phases:
            got = [o for t, o in outcomes if a <= t < b]
            print('ensemble %s: %d answers, %s' % (
                label, len(got), {o: got.count(o) for o in set(got)}))
            self.assertGreaterEqual(len(got), 10, label)
        self.assertTrue(moved, 'm1 not re-placed off %s: %s\n%s' % (
            first.address, shard_rows(self.status(coord), 'm1'), coord.log()[-3000:]))
        self.assertTrue(healed, shard_rows(end, 'm1'))
        bad = [(round(t, 3), o) for t, o in outcomes if o != 'ok']
        self.assertEqual(bad, [], coord.log()[-3000:])
        self.assertGreaterEqual([m.moves for m in end.models if m.name == 'm1'][0], 2)

    # ---- h -------------------------------------------------------------------

    def test_h_link_stats_in_status(self):
        ws = self.workers(2)
        coord = self.coordinator(ws)
        load = self.load(coord.address, 'requests to measure the links')
        with load:
            time.sleep(1.5)
        self.assert_all_correct(load.ledger, min_after=1)
        shown = kserve.run_tessera('status', '--server', coord.address,
                                   '--format', 'json')
        self.assertEqual(shown.returncode, 0, shown.stderr)
        rows = json.loads(shown.stdout)['cluster']['workers']
        self.assertEqual(sorted(r['address'] for r in rows),
                         sorted(w.address for w in ws))
        for r in rows:
            self.assertGreater(r['rtt_us'], 0, r)
            self.assertGreater(r['throughput_bytes_per_s'], 0, r)
        for fmt, columns in (('table', ('RTT US', 'THROUGHPUT BYTES PER S')),
                             ('csv', ('rtt_us', 'throughput_bytes_per_s'))):
            shown = kserve.run_tessera('status', '--server', coord.address,
                                       '--format', fmt)
            self.assertEqual(shown.returncode, 0, shown.stderr)
            for col in columns:
                self.assertIn(col, shown.stdout, fmt)
        st = self.status(coord)
        self.assertTrue(all(w.rtt_us > 0 and w.throughput_bytes_per_s > 0
                            for w in st.workers), st.workers)


if __name__ == '__main__':
    unittest.main(verbosity=2)
