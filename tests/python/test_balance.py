"""The load balancer: two tessera-worker daemons started here, a coordinator
with --worker A --worker B serving the MLP with strategy=data,replicas=2.

Power of two choices (the default) must send measurably fewer calls to a
worker that is slow: one worker is slowed without touching its code by
duty-cycling its process with SIGSTOP/SIGCONT (stopped 70 ms of every
100 ms) while 8 client threads drive load; the per-worker `calls` of the
admin ClusterStatus must then give the slowed worker well under half (< 40%),
and every request must still get torch's answer. With --round-robin and no
slowed worker the split is near 50/50.

Batches are small (4 rows), below the dispatcher's split threshold, so each
request is exactly one shard call on one of the two replicas.
"""
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import unittest

import grpc
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import admin  # noqa: E402
import export_models  # noqa: E402
import kserve  # noqa: E402

export_models.torch.set_num_threads(1)

MODEL = 'mlp'
BATCH = 4
CLIENT_THREADS = 8
LOAD_SECONDS = 3.0
STOPPED_S, PERIOD_S = 0.070, 0.100
RTOL, ATOL = 1e-5, 1e-5

_tmp = None
_path = None
_cases = []  # (inputs, torch outputs)


def setUpModule():
    global _tmp, _path
    _tmp = tempfile.mkdtemp(prefix='tessera_balance_')
    _path = export_models.export(MODEL, _tmp)
    for seed in range(16):
        inputs = export_models.make_inputs(MODEL, BATCH, seed=seed)
        _cases.append((inputs, export_models.reference(MODEL, inputs)))


def tearDownModule():
    if _tmp:
        shutil.rmtree(_tmp, ignore_errors=True)


class DutyCycle:
    """Stops a process for `stopped` seconds of every `period` in a thread;
    always leaves it running on exit."""

    def __init__(self, pid, stopped=STOPPED_S, period=PERIOD_S):
        self.pid, self.stopped, self.period = pid, stopped, period
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        try:
            while not self.done.is_set():
                os.kill(self.pid, signal.SIGSTOP)
                self.done.wait(self.stopped)
                os.kill(self.pid, signal.SIGCONT)
                self.done.wait(self.period - self.stopped)
        finally:
            os.kill(self.pid, signal.SIGCONT)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.done.set()
        self.thread.join()
        os.kill(self.pid, signal.SIGCONT)
        return False


def drive_load(address, seconds=LOAD_SECONDS, threads=CLIENT_THREADS):
    """Runs `threads` clients in a loop for `seconds`: (ok, wrong, errors),
    wrong and errors being lists of descriptions."""
    stop = time.monotonic() + seconds
    lock = threading.Lock()
    ok, wrong, errors = [0], [], []

    def client_loop(k):
        with kserve.Client(address) as c:
            i = k
            while time.monotonic() < stop:
                inputs, want = _cases[i % len(_cases)]
                i += 1
                try:
                    got = c.infer(MODEL, inputs)
                except grpc.RpcError as e:
                    with lock:
                        errors.append('%s: %s' % (e.code(), e.details()))
                    continue
                good = list(got) == list(want) and all(
                    got[n].shape == want[n].shape and
                    np.allclose(got[n], want[n], rtol=RTOL, atol=ATOL) for n in want)
                with lock:
                    if good:
                        ok[0] += 1
                    else:
                        wrong.append('case %d' % (i % len(_cases)))

    pool = [threading.Thread(target=client_loop, args=(k,)) for k in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return ok[0], wrong, errors


class Balance(unittest.TestCase):

    def run_case(self, slow, extra_args):
        """Starts workers A and B and the coordinator; slows B when `slow`;
        returns (calls on A, calls on B, ok, wrong, errors, coordinator log)."""
        with kserve.Worker(threads=1) as a, kserve.Worker(threads=1) as b:
            with kserve.Cluster([(MODEL, _path, {'strategy': 'data', 'replicas': 2})],
                                local_workers=0, workers=[a.address, b.address],
                                extra_args=list(extra_args)) as c:
                with admin.AdminClient(c.address) as adm:
                    status = adm.cluster_status()
                    self.assertEqual(sorted(w.address for w in status.workers),
                                     sorted([a.address, b.address]))
                    placed = admin.shards_of(status, MODEL)
                    self.assertEqual(len(placed), 1)
                    self.assertEqual(sorted(placed[0][0].workers), [0, 1])
                    before = admin.calls_by_worker(status)
                    if slow:
                        with DutyCycle(b.proc.pid):
                            ok, wrong, errors = drive_load(c.address)
                    else:
                        ok, wrong, errors = drive_load(c.address)
                    after = admin.calls_by_worker(adm.cluster_status())
                log = c.log()
        calls_a = after[a.address] - before[a.address]
        calls_b = after[b.address] - before[b.address]
        return calls_a, calls_b, ok, wrong, errors, log

    def check_answers(self, ok, wrong, errors, log):
        self.assertEqual(errors, [], 'failed requests (first 5): %s\ncoordinator:\n%s' % (
            errors[:5], log[-3000:]))
        self.assertEqual(wrong, [], 'wrong answers (first 5): %s' % wrong[:5])
        self.assertGreaterEqual(ok, 100, 'too little load to judge the balance')

    def test_slow_worker_gets_fewer_calls(self):
        calls_a, calls_b, ok, wrong, errors, log = self.run_case(True, [])
        self.check_answers(ok, wrong, errors, log)
        total = calls_a + calls_b
        self.assertEqual(total, ok, 'one shard call per request')
        share = calls_b / total
        self.assertLess(share, 0.40, 'slowed worker got %d of %d calls (%.0f%%); fast worker %d'
                        % (calls_b, total, 100 * share, calls_a))

    def test_round_robin_splits_evenly(self):
        calls_a, calls_b, ok, wrong, errors, log = self.run_case(False, ['--round-robin'])
        self.check_answers(ok, wrong, errors, log)
        total = calls_a + calls_b
        self.assertEqual(total, ok, 'one shard call per request')
        share = calls_a / total
        self.assertTrue(0.45 <= share <= 0.55, 'round robin: %d and %d calls (%.1f%% on A)'
                        % (calls_a, calls_b, 100 * share))


if __name__ == '__main__':
    unittest.main()
