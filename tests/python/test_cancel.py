"""Client cancellation and deadlines reach the workers.

One worker with --threads 1 serves a slow MLP (8 Linear 1024x1024 + ReLU,
exported by torch), so while one big request runs, later ones wait in the
worker's queue. A coordinator (no local workers) serves it as `slow`
(unbatched), as `slow_batched` (max_batch, a long batching window) and as
`slow_batched_short` (a short one).

Checked against the worker's own Status (proto/worker.proto) and torch:
- requests the client cancels (grpc future.cancel()) while their shard calls
  wait in the worker's queue: the client sees CANCELLED, the calls leave the
  queue at once (runs_cancelled), and they never run (runs_total grows by
  the one request that was not cancelled);
- requests with a short deadline: DEADLINE_EXCEEDED, likewise never run;
- a request cancelled while its kernel runs: the run finishes and its result
  is discarded (runs_discarded);
- a request cancelled while it waits in the coordinator's batching window:
  it leaves the batch; the others of the window get their own rows, correct;
- a batch whose every request was cancelled while its call waits in the
  worker's queue: the call is cancelled and dropped there;
- REST (--http-listen) clients that hang up while their calls wait in the
  worker's queue: the calls are cancelled likewise;
- afterwards the coordinator still answers correctly (torch, float64).
"""
import json
import os
import socket
import sys
import tempfile
import shutil
import time
import unittest

import grpc
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import export_models  # noqa: E402
import kserve  # noqa: E402
import ledger  # noqa: E402

torch = export_models.torch
torch.set_num_threads(1)

WIDTH, LAYERS = 1024, 8
BIG_ROWS = 4096           # about 70 GFLOP: a second or more on one thread
WINDOW_US = 1500000       # slow_batched's batching window
SHORT_WINDOW_US = 20000   # slow_batched_short's
QUEUED = 4


def slow_mlp():
    torch.manual_seed(7)
    layers = []
    for _ in range(LAYERS):
        layers += [torch.nn.Linear(WIDTH, WIDTH), torch.nn.ReLU()]
    return torch.nn.Sequential(*layers).eval()


def reference(model, x):
    """The torch model in float64 on x."""
    with torch.no_grad():
        return model.double()(torch.from_numpy(x.astype(np.float64))).numpy()


class Cancel(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix='tessera_cancel_')
        cls.model = slow_mlp()
        path = os.path.join(cls.tmp, 'slow.onnx')
        with torch.no_grad():
            torch.onnx.export(cls.model, (torch.zeros(2, WIDTH),), path,
                              input_names=['x'], output_names=['y'],
                              dynamic_axes={'x': {0: 'batch'}, 'y': {0: 'batch'}},
                              opset_version=13)
        cls.rest_port = kserve.free_port()  # KServe v2 REST (test_f)
        cls.worker = kserve.Worker(threads=1)
        cls.worker.__enter__()
        try:
            cls.cluster = kserve.Cluster(
                models=[('slow', path, {'strategy': 'data', 'replicas': 1}),
                        ('slow_batched', path, {'strategy': 'data', 'replicas': 1,
                                                'max_batch': 64,
                                                'batch_delay_us': WINDOW_US}),
                        ('slow_batched_short', path, {'strategy': 'data', 'replicas': 1,
                                                      'max_batch': 64,
                                                      'batch_delay_us': SHORT_WINDOW_US})],
                local_workers=0, workers=[cls.worker.address],
                extra_args=['--http-listen', '127.0.0.1:%d' % cls.rest_port])
            cls.cluster.__enter__()
        except BaseException:
            cls.worker.__exit__(None, None, None)
            raise
        cls.client = cls.cluster.client
        cls.infer = cls.client.channel.unary_unary(
            kserve.KSERVE + 'ModelInfer',
            request_serializer=kserve.pb.ModelInferRequest.SerializeToString,
            response_deserializer=kserve.pb.ModelInferResponse.FromString)
        cls.rng = np.random.RandomState(11)

    @classmethod
    def tearDownClass(cls):
        try:
            cls.cluster.__exit__(None, None, None)
        finally:
            cls.worker.__exit__(None, None, None)
            shutil.rmtree(cls.tmp, ignore_errors=True)

    # -- helpers --
    def status(self):
        return ledger.worker_status(self.worker.address)

    def wait_status(self, what, cond, timeout=20.0):
        end = time.monotonic() + timeout
        while True:
            s = self.status()
            if cond(s):
                return s
            if time.monotonic() > end:
                self.fail('worker never showed %s; last Status:\n%s' % (what, s))
            time.sleep(0.02)

    def send(self, model, x, timeout=60.0):
        """Starts ModelInfer of x on `model`; returns (future, x)."""
        req = kserve.Client.build_request(model, {'x': x})
        return self.infer.future(req, timeout=timeout), x

    def big(self):
        return self.rng.standard_normal((BIG_ROWS, WIDTH)).astype(np.float32)

    def small(self, rows=1):
        return self.rng.standard_normal((rows, WIDTH)).astype(np.float32)

    def assert_correct(self, future, x):
        y = kserve.Client.decode_response(future.result())['y']
        np.testing.assert_allclose(y, reference(self.model, x), rtol=1e-4, atol=1e-4)

    def assert_idle(self):
        self.wait_status('an empty queue and no run', lambda s: s.queue_depth == 0 and s.in_flight == 0)

    def assert_runs_since(self, before, runs):
        """Once the worker is idle, exactly `runs` runs happened since the
        status `before`; returns the status now."""
        self.assert_idle()
        after = self.status()
        self.assertEqual(after.runs_total - before.runs_total, runs, after)
        return after

    def start_blocker(self):
        """A big request whose run occupies the worker's only thread."""
        self.assert_idle()
        blocker = self.send('slow', self.big())
        self.wait_status('the big run in flight', lambda s: s.in_flight == 1)
        return blocker

    # -- tests --
    def test_a_cancel_queued(self):
        before = self.status()
        blocker = self.start_blocker()
        queued = [self.send('slow', self.small()) for _ in range(QUEUED)]
        self.wait_status('%d runs queued' % QUEUED, lambda s: s.queue_depth == QUEUED)
        for f, _ in queued:
            self.assertTrue(f.cancel())
        for f, _ in queued:
            self.assertTrue(f.cancelled())
            with self.assertRaises(grpc.FutureCancelledError):
                f.result()
        # They leave the worker's queue while the big run still executes.
        s = self.wait_status('the cancelled runs dropped',
                             lambda s: s.runs_cancelled - before.runs_cancelled == QUEUED)
        self.assertFalse(blocker[0].done(), 'the big run ended too early for this test')
        self.assertEqual(s.queue_depth, 0)
        self.assert_correct(*blocker)
        after = self.assert_runs_since(before, 1)
        self.assertEqual(after.runs_discarded, before.runs_discarded)

    def test_b_deadline_queued(self):
        before = self.status()
        blocker = self.start_blocker()
        short = [self.send('slow', self.small(), timeout=0.3) for _ in range(3)]
        for f, _ in short:
            with self.assertRaises(grpc.RpcError) as cm:
                f.result()
            self.assertEqual(cm.exception.code(), grpc.StatusCode.DEADLINE_EXCEEDED)
        self.wait_status('the expired runs dropped',
                         lambda s: s.runs_cancelled - before.runs_cancelled == 3)
        self.assertFalse(blocker[0].done(), 'the big run ended too early for this test')
        self.assert_correct(*blocker)
        self.assert_runs_since(before, 1)

    def test_c_cancel_running(self):
        before = self.status()
        f, _ = self.start_blocker()
        self.assertTrue(f.cancel())
        s = self.wait_status('the cancelled run discarded',
                             lambda s: s.runs_discarded - before.runs_discarded == 1)
        self.assertEqual(s.runs_total - before.runs_total, 1)
        self.assertEqual(s.runs_cancelled, before.runs_cancelled)

    def test_d_cancel_in_batching_window(self):
        self.assert_idle()
        before = self.status()
        # A lone request to a quiet model goes at once (batcher.c, rule 2);
        # right after it the model is not quiet for a window, so the next
        # requests wait in the window together.
        self.assert_correct(*self.send('slow_batched', self.small(1)))
        rows = [1, 2, 3]
        sent = [self.send('slow_batched', self.small(n)) for n in rows]
        time.sleep(0.1)   # all three are in the window (WINDOW_US is 1.5 s)
        self.assertTrue(sent[1][0].cancel())
        self.assert_correct(*sent[0])
        self.assert_correct(*sent[2])
        # The opener, then one batch of the two others ran; the cancelled
        # one never left the coordinator.
        after = self.assert_runs_since(before, 2)
        self.assertEqual(after.runs_cancelled, before.runs_cancelled)

    def test_e_cancel_whole_batch(self):
        before = self.status()
        blocker = self.start_blocker()
        # A lone request to a quiet model goes at once (batcher.c, rule 2)
        # and queues behind the blocker; with it in flight the model is
        # busy, so the next two share a window: one batch.
        opener = self.send('slow_batched_short', self.small(1))
        self.wait_status('the opener queued', lambda s: s.queue_depth == 1)
        sent = [self.send('slow_batched_short', self.small(2)) for _ in range(2)]
        # The window closes; the batch's call waits in the worker queue.
        self.wait_status('the batch queued', lambda s: s.queue_depth >= 2)
        for f, _ in sent:
            self.assertTrue(f.cancel())
        # Every request of the batch is gone: its call is cancelled and the
        # worker drops it from its queue (a load that split the two across
        # windows makes two such batches; neither runs either way).
        self.wait_status('the batch dropped',
                         lambda s: s.runs_cancelled - before.runs_cancelled >= 1)
        self.assert_correct(*blocker)
        self.assert_correct(*opener)
        self.assert_runs_since(before, 2)

    def test_f_rest_hangup_queued(self):
        """REST clients that hang up while their shard calls wait in the
        worker's queue: the calls leave the queue and never run."""
        before = self.status()
        blocker = self.start_blocker()
        body = json.dumps({'inputs': [{'name': 'x', 'datatype': 'FP32', 'shape': [1, WIDTH],
                                       'data': self.small().ravel().tolist()}]}).encode()
        head = ('POST /v2/models/slow/infer HTTP/1.1\r\nHost: 127.0.0.1\r\n'
                'Content-Type: application/json\r\nContent-Length: %d\r\n\r\n' % len(body))
        clients = []
        for _ in range(QUEUED):
            c = socket.create_connection(('127.0.0.1', self.rest_port), timeout=30)
            c.sendall(head.encode() + body)
            clients.append(c)
        self.wait_status('%d runs queued' % QUEUED, lambda s: s.queue_depth == QUEUED)
        for c in clients:
            c.close()
        s = self.wait_status('the abandoned runs dropped',
                             lambda s: s.runs_cancelled - before.runs_cancelled == QUEUED)
        self.assertFalse(blocker[0].done(), 'the big run ended too early for this test')
        self.assertEqual(s.queue_depth, 0)
        self.assert_correct(*blocker)
        self.assert_runs_since(before, 1)

    def test_z_still_serving(self):
        for model in ('slow', 'slow_batched', 'slow_batched_short'):
            for rows in (1, 5):
                x = self.small(rows)
                y = self.client.infer(model, {'x': x})['y']
                np.testing.assert_allclose(y, reference(self.model, x), rtol=1e-4, atol=1e-4)


if __name__ == '__main__':
    unittest.main(verbosity=2)
