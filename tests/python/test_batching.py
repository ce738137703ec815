"""Dynamic batching never mixes rows: concurrent requests joined into one
batch each get exactly the rows of their own input back.

One coordinator (one local worker) serves the MLP as `mlp_batched` with
max_batch=32,batch_delay_us=2000. 32 client threads, released together,
send requests with fresh random inputs (no two requests share an input);
every answer is compared with torch's output for that request's own input
(rtol 1e-5, atol 1e-6) and recorded in a ledger (ledger.py), whose report
is printed. The worker's call count shows that batches did form.

`mlp_idle` batches with a 1 s window: a request that comes after a quiet
spell (nothing queued or running for a window) is sent at once, so it is
answered long before its window would end.
"""
import os
import sys
import threading
import time
import unittest

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import export_models  # noqa: E402
import kserve  # noqa: E402
import ledger  # noqa: E402

export_models.torch.set_num_threads(1)

MAX_BATCH = 32
CLIENTS = 32
DEADLINE = 30.0
BATCHED = {'strategy': 'data', 'replicas': 1, 'max_batch': MAX_BATCH,
           'batch_delay_us': 2000}
LONG_WINDOW_US = 1000000
IDLE = dict(BATCHED, batch_delay_us=LONG_WINDOW_US)


class Batching(kserve.ClusterTestCase):
    @classmethod
    def cluster_options(cls, tmp):
        path = export_models.export('mlp', tmp)
        return {'models': [('mlp_batched', path, BATCHED), ('mlp_idle', path, IDLE)],
                'local_workers': 1,
                'extra_args': ['--worker-threads', '1']}

    def worker_calls(self):
        return sum(w.calls for w in ledger.cluster_status(self.cluster.address).workers)

    def fire(self, title, per_client, rows, bad_every=0, seed=0):
        """CLIENTS threads, released together, each sending per_client
        requests of a random row count from `rows` (half of them with typed
        contents); every bad_every-th request of a client has 31 features
        instead of 32. Returns (ledger, worker calls made, bad requests)."""
        led = ledger.Ledger(title)
        barrier = threading.Barrier(CLIENTS)
        bad = []

        def client(k):
            rng = np.random.RandomState(seed * 1000 + k)
            plan = []
            for i in range(per_client):
                n = int(rng.choice(rows))
                inputs = {'embedding': rng.standard_normal((n, 32)).astype(np.float32)}
                if bad_every and i % bad_every == bad_every - 1:
                    inputs = {'embedding': rng.standard_normal((n, 31)).astype(np.float32)}
                    bad.append((k, i))
                    want = None
                else:
                    want = export_models.reference('mlp', inputs)
                plan.append((n, inputs, want, i % 2 == 1))
            with ledger.client(self.cluster.address, DEADLINE) as c:
                try:
                    barrier.wait(timeout=DEADLINE)
                except threading.BrokenBarrierError:
                    pass
                for i, (n, inputs, want, typed) in enumerate(plan):
                    ledger.send(c, led, k, i, 'mlp_batched', n, inputs, want, DEADLINE,
                                typed=typed)

        before = self.worker_calls()
        threads = [threading.Thread(target=client, args=(k,), daemon=True)
                   for k in range(CLIENTS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(DEADLINE * per_client)
        calls = self.worker_calls() - before
        print('\n%s\nworker calls: %d for %d requests' % (led.report(), calls, led.sent()),
              flush=True)
        return led, calls, bad

    def assert_correct(self, led, expected):
        self.assertEqual(led.pending(), 0, led.report())
        self.assertEqual(led.sent(), expected, led.report())
        self.assertEqual(led.count(ledger.WRONG), 0, 'rows mixed up:\n' + led.report())
        self.assertEqual(dict(led.failures()), {}, led.report())

    def test_small_requests_keep_their_rows(self):
        """32 clients, 1..4 rows each: every answer is torch's for its own
        rows, and batches formed (fewer worker calls than requests)."""
        led, calls, _ = self.fire('32 clients, 1..4 rows, max_batch 32', 24, (1, 2, 3, 4))
        self.assert_correct(led, CLIENTS * 24)
        self.assertLess(calls, led.sent(), 'no batch formed: %d worker calls for %d requests'
                        % (calls, led.sent()))

    def test_batches_overflowing_max_batch(self):
        """Row counts whose sums overflow max_batch (5..32 rows): still every
        request gets exactly its own rows."""
        led, calls, _ = self.fire('32 clients, 5..32 rows, max_batch 32', 12,
                                  (5, 9, 13, 17, 24, 31, 32), seed=1)
        self.assert_correct(led, CLIENTS * 12)

    def test_requests_larger_than_max_batch(self):
        """Requests of 33, 50 and 100 rows (served unbatched), alone and
        among small ones: all correct."""
        with ledger.client(self.cluster.address, DEADLINE) as c:
            for n in (33, 100):
                inputs = export_models.make_inputs('mlp', n, seed=n)
                got = c.infer('mlp_batched', inputs)
                self.assertIsNone(ledger.check_answer(
                    got, export_models.reference('mlp', inputs)), '%d rows alone' % n)
        led, calls, _ = self.fire('32 clients, 1..4 rows and 33..100 rows', 12,
                                  (1, 2, 3, 4, 33, 50, 100), seed=2)
        self.assert_correct(led, CLIENTS * 12)

    def test_quiet_model_does_not_wait_for_the_window(self):
        """Requests more than a window apart to a model with a 1 s window:
        each is answered correctly in far less than the window (a
        timer-only batcher would hold each for 1 s)."""
        window = LONG_WINDOW_US / 1e6
        with ledger.client(self.cluster.address, DEADLINE) as c:
            for k in range(3):
                time.sleep(window * 1.2)
                inputs = export_models.make_inputs('mlp', 1 + k, seed=100 + k)
                t0 = time.monotonic()
                got = c.infer('mlp_idle', inputs)
                took = time.monotonic() - t0
                self.assertIsNone(ledger.check_answer(
                    got, export_models.reference('mlp', inputs)), 'request %d' % k)
                self.assertLess(took, window / 2,
                                'request %d waited %.2f s for a batch window of %.1f s'
                                % (k, took, window))

    def test_bad_request_does_not_spoil_a_batch(self):
        """Some requests with the wrong feature count among good ones: those
        get INVALID_ARGUMENT, every other answer is correct."""
        led, calls, bad = self.fire('32 clients, every 4th request has 31 features', 12,
                                    (1, 2, 3, 4), bad_every=4, seed=3)
        self.assertEqual(led.pending(), 0, led.report())
        self.assertEqual(led.count(ledger.WRONG), 0, 'rows mixed up:\n' + led.report())
        self.assertEqual(dict(led.failures()), {'INVALID_ARGUMENT': len(bad)}, led.report())
        self.assertEqual(led.count(ledger.OK), CLIENTS * 12 - len(bad), led.report())
        bad_entries = {(e.client, e.seq) for e in led.entries if e.outcome != ledger.OK}
        self.assertEqual(bad_entries, set(bad), 'not the bad requests that failed')


if __name__ == '__main__':
    unittest.main(verbosity=2)
