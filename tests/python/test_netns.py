"""Workers behind real network links (issue 13 item 3): the coordinator and
three workers each in a network namespace of its own, over mutual TLS,
joined by a bridge (netns.py), serving the MLP with strategy=data and
replicas=2 (two of the three workers hold it; the third takes a replica
when one is re-placed). Closed-loop clients (ledger.py) send requests with
random inputs, every answer compared with torch's for the same input.
Before any load, setUp waits until every shard has 2 live replicas (a load
started earlier races the placement).

  a. partition a replica holder under load (every packet of its link
     dropped, both ways): zero failed requests; the worker is marked DOWN
     in ClusterStatus; healed, it is UP again.
  b. 5% packet loss on a holder's link, each way (iptables statistic):
     every request answered, and correctly; the rules did drop packets.
  c. one worker behind +20 ms each way (relay.py), the model on all 3
     (replicas=3: placement hashes the shard with the addresses, so which
     2 of 3 would hold it is not known ahead): the scheduler steers around
     it; of the shard calls during the load (ClusterStatus calls), the slow
     one got under a sixth (round-robin would give it a third);
  d. a holder's link flapping (partitioned and healed every 0.5 s for 4 s):
     zero failed requests, no request left without an answer, exactly as
     many requests counted by the coordinator as sent (ModelState.requests:
     none lost or doubled), no shard call left outstanding on any worker,
     then every worker UP and every shard on 2 live replicas again.
  e. cleanup: a harness leaves no namespace or link behind, and one killed
     with -9 has its namespaces, link and processes removed at the next
     harness's start.

Needs root (network namespaces, iptables): run as anyone else it prints why
and exits 77, which meson reports as SKIP, never as a pass.

    sudo TESSERA_BUILD=build /usr/bin/python3 tests/python/test_netns.py -v
    meson test -C build netns --print-errorlogs
"""
import os
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ledger  # noqa: E402
import netns  # noqa: E402
import test_membership  # noqa: E402
from test_faults import ATTEMPT_TIMEOUT_MS, DATA2, WAIT  # noqa: E402

WORKERS = 3
REPLACE_AFTER_MS = 1000
DELAY_MS = 20
LOSS_PCT = 5
FLAP_S, FLAPS = 0.5, 8
SLOW_SHARE = 1 / 6.0   # the slow worker's share of the calls, at most
                       # (round-robin over the 3 replicas would give 1/3)


class NetTest(test_membership.MembershipTest):
    """FaultTest's load and asserts, MembershipTest's wait_replicated; none
    of their tests (those run in their own suites)."""
    locals().update({name: None for name in dir(test_membership.MembershipTest)
                     if name.startswith('test_')})

    def cluster(self, replicas=2, **kw):
        """A NetCluster serving the MLP (`replicas` over 3 workers), once
        every shard has that many live replicas."""
        nc = self.enterContext(netns.NetCluster(
            WORKERS, models=[('mlp', self.mlp, dict(DATA2, replicas=replicas))],
            extra_args=['--attempt-timeout-ms', str(ATTEMPT_TIMEOUT_MS),
                        '--replace-after-ms', str(REPLACE_AFTER_MS)], **kw))
        self.assertTrue(self.wait_replicated(nc, replicas),
                        'shards not on %d live workers: %s\n%s' % (replicas,
            test_membership.shard_rows(self.status(nc)), nc.coordinator.log()[-3000:]))
        return nc

    def status(self, nc):
        return nc.status()

    def load(self, nc, title, **kw):
        return super().load(nc.address, title, creds=nc.creds, **kw)

    def holders(self, nc):
        """Indices of the workers that hold a replica."""
        st = self.status(nc)
        return [i for i, a in enumerate(nc.dialed) if ledger.placed_on(st, 'mlp', a)]

    def state(self, nc, i):
        return ledger.worker_state(self.status(nc), nc.dialed[i]).state

    def wait_state(self, nc, i, state, timeout=WAIT):
        return ledger.wait_for(lambda: self.state(nc, i) == state, timeout)

    def assert_settled(self, nc, led):
        """No lost or doubled request (the coordinator counts each request
        as it starts, on the model's every placement: exactly the clients'
        count) and no shard call left outstanding."""
        model = [m for m in self.status(nc).models if m.name == 'mlp'][0]
        self.assertEqual((model.requests, model.failures), (led.sent(), 0),
                         'coordinator counted %d requests (%d failed), clients sent %d:\n%s' % (
                             model.requests, model.failures, led.sent(), led.report()))
        idle = ledger.wait_for(lambda: all(w.outstanding == 0 for w in self.status(nc).workers),
                               WAIT)
        self.assertTrue(idle, 'shard calls still outstanding: %s' % [
            (w.address, w.outstanding) for w in self.status(nc).workers])

    # ---- a -------------------------------------------------------------------

    def test_a_partition(self):
        nc = self.cluster()
        victim = self.holders(nc)[0]
        net = nc.net
        load = self.load(nc, 'partition a replica holder, then heal')
        with load:
            time.sleep(1.5)
            load.ledger.event('partition worker%d' % victim, lambda: net.partition(victim))
            down = self.wait_state(nc, victim, 'DOWN')
            load.ledger.event('worker%d marked %s' % (victim, 'DOWN' if down else 'NOT DOWN'))
            time.sleep(1.0)
            dropped = net.dropped(victim)
            load.ledger.event('heal worker%d' % victim, lambda: net.heal(victim))
            up = self.wait_state(nc, victim, 'UP')
            load.ledger.event('worker%d %s' % (victim, 'UP again' if up else 'NOT UP'))
            time.sleep(1.5)
        led = load.ledger
        self.show(led)
        self.assertTrue(down, 'partitioned worker%d not marked DOWN within %.0f s: %s' % (
            victim, WAIT, self.state(nc, victim)))
        self.assertGreater(dropped, 0, 'the partition dropped no packet')
        self.assertTrue(up, 'healed worker%d not UP within %.0f s: %s\n%s' % (
            victim, WAIT, self.state(nc, victim), nc.coordinator.log()[-3000:]))
        self.assert_all_correct(led)
        self.assert_settled(nc, led)

    # ---- b -------------------------------------------------------------------

    def test_b_packet_loss(self):
        nc = self.cluster()
        lossy = self.holders(nc)[0]
        led = self.load(nc, '%d%% packet loss on worker%d' % (LOSS_PCT, lossy)).run(
            7.0, events=[(1.0, '%d%% loss each way on worker%d' % (LOSS_PCT, lossy),
                          lambda: nc.net.loss(lossy, LOSS_PCT))])
        self.show(led)
        dropped = nc.net.dropped(lossy)
        print('packets dropped on worker%d: %d' % (lossy, dropped))
        self.assertGreater(dropped, 0, 'the loss rules dropped no packet')
        self.assert_all_correct(led)
        self.assert_settled(nc, led)

    # ---- c -------------------------------------------------------------------

    def test_c_slow_link(self):
        # Every worker holds a replica (placement is a hash of the shard and
        # the addresses, so which 2 of 3 would hold it is not known ahead):
        # worker0 is the slow one, the others fast.
        nc = self.cluster(replicas=WORKERS, delay_ms={0: DELAY_MS})
        holders = self.holders(nc)
        self.assertEqual(sorted(holders), list(range(WORKERS)), holders)
        fast = [i for i in holders if i != 0]

        def calls():
            st = self.status(nc)
            return [ledger.worker_state(st, nc.dialed[i]).calls for i in [0] + fast]

        before = calls()
        # One row: one shard call per request, on one of the three holders.
        led = self.load(nc, 'worker0 behind +%d ms each way' % DELAY_MS,
                        clients=8, batches=(1,)).run(5.0)
        after = calls()
        self.show(led)
        done = [a - b for a, b in zip(after, before)]
        slow_calls, fast_calls = done[0], sum(done[1:])
        share = slow_calls / max(1, slow_calls + fast_calls)
        print('shard calls: slow worker0 %d, fast workers %s %s (slow share %.1f%%)' % (
            slow_calls, fast, done[1:], 100 * share))
        self.assertGreater(slow_calls + fast_calls, 100, led.report())
        self.assertLess(share, SLOW_SHARE, 'the slow worker got %d of %d calls' % (
            slow_calls, slow_calls + fast_calls))
        self.assert_all_correct(led)

    # ---- d -------------------------------------------------------------------

    def test_d_flapping_link(self):
        nc = self.cluster()
        flappy = self.holders(nc)[0]

        def flap():
            for _ in range(FLAPS):
                nc.net.partition(flappy)
                time.sleep(FLAP_S)
                nc.net.heal(flappy)
                time.sleep(FLAP_S)

        load = self.load(nc, 'worker%d link flapping every %.1f s' % (flappy, FLAP_S))
        with load:
            time.sleep(1.5)
            load.ledger.event('flap worker%d %d times' % (flappy, FLAPS), flap)
            load.ledger.event('link steady')
            time.sleep(2.0)
        led = load.ledger
        self.show(led)
        self.assert_all_correct(led)
        self.assert_settled(nc, led)
        healthy = ledger.wait_for(lambda: all(w.state == 'UP' for w in self.status(nc).workers),
                                  WAIT)
        self.assertTrue(healthy, 'workers not all UP after the flapping: %s' % [
            (w.address, w.state) for w in self.status(nc).workers])
        self.assertTrue(self.wait_replicated(nc, 2), test_membership.shard_rows(self.status(nc)))

    # ---- e -------------------------------------------------------------------

    def test_e_cleanup(self):
        """Nothing of a harness outlives it: its own namespaces and link go
        at exit, and those of a harness killed with -9 (with a process still
        running in one) go at the next harness's start."""
        with netns.Net(1) as net:
            tag = net.tag
            self.assertEqual(sorted(n for n in netns.namespaces() if n.startswith(tag)),
                             [tag + 'b', tag + 'c', tag + 'w0'])
        self.assertTrue(ledger.wait_for(lambda: self.leftovers(tag) == [], 10),
                        'left behind: %s' % self.leftovers(tag))
        child = subprocess.Popen([sys.executable, '-c', STALE_CHILD], stdout=subprocess.PIPE,
                                 universal_newlines=True, cwd=os.path.dirname(os.path.abspath(__file__)))
        lines = child.communicate(timeout=60)[0].split()
        self.assertEqual(child.returncode, -9, lines)
        stale, sleeper = lines[0], int(lines[1])
        self.assertIn(stale + 'w0', netns.namespaces())
        removed = netns.clean_stale()
        # (its link tsPh goes with the bridge namespace, or is removed itself)
        self.assertEqual(sorted(r for r in removed if r.startswith(stale) and r[-1] != 'h'),
                         [stale + n for n in ('b', 'c', 'w0')])
        self.assertTrue(ledger.wait_for(lambda: self.leftovers(stale) == [], 10),
                        'left behind: %s' % self.leftovers(stale))
        self.assertTrue(ledger.wait_for(lambda: not os.path.exists('/proc/%d' % sleeper), 10),
                        'the process left in the stale namespace still runs')

    @staticmethod
    def leftovers(tag):
        return [n for n in netns.namespaces() + netns.root_links() if n.startswith(tag)]


# A harness that dies with -9 after starting a process in its worker's
# namespace; prints its tag and that process's pid.
STALE_CHILD = """
import os, signal, subprocess, netns
net = netns.Net(1).up()
p = subprocess.Popen(net.exec(0) + ['sleep', '600'], stdout=subprocess.DEVNULL)
print(net.tag, p.pid, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


if __name__ == '__main__':
    if not netns.is_root():
        print('test_netns: SKIPPED: needs root (network namespaces, veth, iptables); '
              'run it as root', file=sys.stderr)
        sys.exit(77)
    unittest.main()
