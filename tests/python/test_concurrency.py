"""Concurrency of a plan, observed without timing: a worker is held with
SIGSTOP and the coordinator's admin counters show what else went on.

- Pipeline: with the worker of stage 1 stopped, several requests all pass
  stage 0 on the other worker and wait together at stage 1, so one stage
  serves new requests while another holds older ones (no request-at-a-time
  lock across the plan). Once the worker continues, every answer is torch's.
- Tensor: with the worker of shard 0 stopped, the call to shard 1 of the
  same request is sent all the same (the shards of a stage go out together,
  not one after another).

A held worker misses health checks, so the coordinator marks it down after
about 2 s; a held request that needs it again at a later stage then ends in
an explicit UNAVAILABLE (a replicas=1 model, as the README says), and once
the worker is back up a new request gets torch's answer.

Replicas are 1, so no attempt timeout moves the held calls elsewhere.
"""
import os
import signal
import sys
import tempfile
import shutil
import threading
import unittest

import grpc
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
        pid = self.worker.proc.pid
        os.kill(pid, signal.SIGSTOP)
        # The stop is asynchronous: a thread already on a CPU may still
        # answer a call. Wait until every thread of the process is stopped.
        self.worker_stopped = ledger.wait_for(lambda: all(
            self.thread_state(pid, t) == 'T' for t in os.listdir('/proc/%d/task' % pid)),
            WAIT, interval=0.01)
        if not self.worker_stopped:
            raise AssertionError('worker %d did not stop' % pid)
        return self

    @staticmethod
    def thread_state(pid, tid):
        with open('/proc/%d/task/%s/stat' % (pid, tid)) as f:
            return f.read().rsplit(')', 1)[1].split()[0]

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
            # No re-placement while a worker is held: the placement stays.
            with kserve.Cluster([('mlp', self.mlp, keys)], local_workers=0,
                                workers=[a.address, b.address],
                                extra_args=['--replace-after-ms', '600000']) as cluster:
                self.cluster = cluster
                status = admin.cluster_status(cluster.address)
                by_address = {a.address: a, b.address: b}
                workers = {w.index: by_address[w.address] for w in status.workers}
                held, held_index = self.holder(workers, *held_shard)
                _, other_index = self.holder(workers, *other_shard)
                self.assertNotEqual(held_index, other_index)
                other_before, _ = self.counters(cluster, other_index)
                # Connected beforehand: the requests must reach the
                # coordinator well before its prober marks the held worker
                # down (2 missed health checks, 2 s or more).
                clients = [kserve.Client(cluster.address) for _ in range(n)]
                for c in clients:
                    c.server_live()
                try:
                    with Held(held):
                        threads, results = self.send_all(clients)
                        check(held_index, other_index, other_before)
                    self.check_answers(threads, results)
                finally:
                    for c in clients:
                        c.close()

    def holder(self, workers, stage, shard):
        """The worker daemon and admin index of the one replica of a shard."""
        status = admin.cluster_status(self.cluster.address)
        placement = admin.shards_of(status, 'mlp')[stage][shard]
        self.assertEqual(len(placement.workers), 1, placement)
        return workers[placement.workers[0]], placement.workers[0]

    def send_all(self, clients):
        """Starts one request per (connected) client on its own thread;
        returns (threads, results) where results[i] becomes (inputs,
        outputs or the exception)."""
        results = [None] * len(clients)

        def one(i):
            inputs = export_models.make_inputs('mlp', batch=2, seed=100 + i)
            try:
                results[i] = (inputs, clients[i].infer('mlp', inputs, timeout=60))
            except Exception as e:  # reported by check_answers
                results[i] = (inputs, e)
        threads = [threading.Thread(target=one, args=(i,)) for i in range(len(clients))]
        for t in threads:
            t.start()
        return threads, results

    def check_answers(self, threads, results):
        """Each held request ends with torch's answer, or (when the prober
        marked the held worker down before it continued, and a later stage
        needed it again) an explicit UNAVAILABLE naming a shard; then a new
        request, once the worker is back, gets torch's answer."""
        for t in threads:
            t.join(60)
            self.assertFalse(t.is_alive(), 'a request never finished')
        for inputs, got in results:
            if isinstance(got, grpc.RpcError):
                self.assertEqual(got.code(), grpc.StatusCode.UNAVAILABLE, got.details())
                self.assertIn('no live worker holds shard mlp/', got.details())
                continue
            self.assertNotIsInstance(got, Exception, repr(got))
            self.assert_torch(inputs, got)
        self.assertTrue(ledger.wait_for(
            lambda: all(w.up for w in admin.cluster_status(self.cluster.address).workers),
            WAIT), 'the held worker never came back')
        inputs = export_models.make_inputs('mlp', batch=3, seed=7)
        with kserve.Client(self.cluster.address) as c:
            self.assert_torch(inputs, c.infer('mlp', inputs, timeout=60))

    def assert_torch(self, inputs, got):
        for name, w in export_models.reference('mlp', inputs).items():
            np.testing.assert_allclose(got[name], w, rtol=1e-5, atol=1e-6)

    def counters(self, cluster, index):
        w = [w for w in admin.cluster_status(cluster.address).workers if w.index == index]
        return w[0].calls, w[0].outstanding

    def test_pipeline_stages_overlap(self):
        def check(held_index, other_index, other_before):
            # Every request passed stage 0 and waits at stage 1 at once.
            self.assertTrue(ledger.wait_for(
                lambda: self.counters(self.cluster, held_index)[1] == REQUESTS, WAIT),
                'stage 1 never held %d requests at once: (calls, outstanding) %r\n%s' % (
                    REQUESTS, self.counters(self.cluster, held_index),
                    self.cluster.log()[-3000:]))
            calls, outstanding = self.counters(self.cluster, other_index)
            self.assertEqual(calls - other_before, REQUESTS)
            self.assertEqual(outstanding, 0)
        self.serve({'strategy': 'pipeline', 'stages': 2}, (1, 0), (0, 0), REQUESTS, check)

    def test_tensor_shards_go_out_together(self):
        def check(held_index, other_index, other_before):
            self.assertTrue(ledger.wait_for(
                lambda: self.counters(self.cluster, held_index)[1] == 1, WAIT),
                'shard 0 never held the request: (calls, outstanding) %r\n%s' % (
                    self.counters(self.cluster, held_index), self.cluster.log()[-3000:]))
            # Shard 1's call went out while shard 0's is still held.
            self.assertTrue(ledger.wait_for(
                lambda: self.counters(self.cluster, other_index)[0] > other_before, WAIT),
                'shard 1 was not called while shard 0 was held')
        self.serve({'strategy': 'tensor', 'shards': 2}, (0, 0), (0, 1), 1, check)

if __name__ == '__main__':
    unittest.main()
