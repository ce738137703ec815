"""Concurrency of a plan, observed without timing: a worker is held with
SIGSTOP and the coordinator's admin counters show what else went on.

- Pipeline: with the worker of stage 1 stopped, several requests all pass
  stage 0 on the other worker and wait together at stage 1, so one stage
  serves new requests while another holds older ones (no request-at-a-time
  lock across the plan). Once the worker continues, every answer is torch's.
- Tensor: with the worker of shard 0 stopped, the call to shard 1 of the
  same request is sent all the same (the shards of a stage go out together,
  not one after another).

Replicas are 1, so no attempt timeout moves the held calls elsewhere.
"""
import os
import signal
import sys
import tempfile
import shutil
import threading
import unittest

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import admin  # noqa: E402
import export_models  # noqa: E402
import kserve  # noqa: E402
import ledger  # noqa: E402

export_models.torch.set_num_threads(1)

REQUESTS = 3
WAIT = 10.0


class Held:
    """SIGSTOP a worker daemon for the `with` block; SIGCONT on the way out."""

    def __init__(self, worker):
        self.worker = worker

    def __enter__(self):
        os.kill(self.worker.proc.pid, signal.SIGSTOP)
        return self

    def __exit__(self, *exc):
        os.kill(self.worker.proc.pid, signal.SIGCONT)
        return False


class Concurrency(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix='tessera_concurrency_')
        cls.mlp = export_models.export('mlp', cls.tmp)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def serve(self, keys, held_shard, other_shard, n, check):
        """Two workers, the MLP planned with `keys` and replicas=1. SIGSTOPs
        the worker of held_shard (stage, shard), which must differ from the
        one of other_shard, sends n requests, runs check(held index, other
        index, other's calls before) during the hold, then checks every
        answer against torch once the worker continues."""
        keys = dict(keys, replicas=1)
        with kserve.Worker() as a, kserve.Worker() as b:
            with kserve.Cluster([('mlp', self.mlp, keys)], local_workers=0,
                                workers=[a.address, b.address]) as cluster:
                self.cluster = cluster
                status = admin.cluster_status(cluster.address)
                by_address = {a.address: a, b.address: b}
                workers = {w.index: by_address[w.address] for w in status.workers}
                held, held_index = self.holder(workers, *held_shard)
                _, other_index = self.holder(workers, *other_shard)
                self.assertNotEqual(held_index, other_index)
                other_before, _ = self.counters(cluster, other_index)
                with Held(held):
                    threads, results = self.send_all(cluster, n)
                    check(held_index, other_index, other_before)
                self.check_answers(threads, results)

    def holder(self, workers, stage, shard):
        """The worker daemon and admin index of the one replica of a shard."""
        status = admin.cluster_status(self.cluster.address)
        placement = admin.shards_of(status, 'mlp')[stage][shard]
        self.assertEqual(len(placement.workers), 1, placement)
        return workers[placement.workers[0]], placement.workers[0]

    def send_all(self, cluster, n):
        """Starts n requests on their own threads; returns (threads, results)
        where results[i] becomes (inputs, outputs or the exception)."""
        results = [None] * n

        def one(i):
            inputs = export_models.make_inputs('mlp', batch=2, seed=100 + i)
            with kserve.Client(cluster.address) as c:
                try:
                    results[i] = (inputs, c.infer('mlp', inputs, timeout=60))
                except Exception as e:  # reported by check_answers
                    results[i] = (inputs, e)
        threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        return threads, results

    def check_answers(self, threads, results):
        for t in threads:
            t.join(60)
            self.assertFalse(t.is_alive(), 'a request never finished')
        for inputs, got in results:
            self.assertNotIsInstance(got, Exception, repr(got))
            want = export_models.reference('mlp', inputs)
            for name, w in want.items():
                np.testing.assert_allclose(got[name], w, rtol=1e-5, atol=1e-6)

    def counters(self, cluster, index):
        w = [w for w in admin.cluster_status(cluster.address).workers if w.index == index]
        return w[0].calls, w[0].outstanding

    def test_pipeline_stages_overlap(self):
        def check(held_index, other_index, other_before):
            # Every request passed stage 0 and waits at stage 1 at once.
            self.assertTrue(ledger.wait_for(
                lambda: self.counters(self.cluster, held_index)[1] == REQUESTS, WAIT),
                'stage 1 never held %d requests at once: %r' % (
                    REQUESTS, self.counters(self.cluster, held_index)))
            calls, outstanding = self.counters(self.cluster, other_index)
            self.assertEqual(calls - other_before, REQUESTS)
            self.assertEqual(outstanding, 0)
        self.serve({'strategy': 'pipeline', 'stages': 2}, (1, 0), (0, 0), REQUESTS, check)

    def test_tensor_shards_go_out_together(self):
        def check(held_index, other_index, other_before):
            self.assertTrue(ledger.wait_for(
                lambda: self.counters(self.cluster, held_index)[1] == 1, WAIT))
            # Shard 1's call went out while shard 0's is still held.
            self.assertTrue(ledger.wait_for(
                lambda: self.counters(self.cluster, other_index)[0] > other_before, WAIT),
                'shard 1 was not called while shard 0 was held')
        self.serve({'strategy': 'tensor', 'shards': 2}, (0, 0), (0, 1), 1, check)

if __name__ == '__main__':
    unittest.main()
