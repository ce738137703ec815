"""Per-worker memory of a tensor split: a 168 MB model cut 4 ways leaves each
of 4 workers with about 42 MB of weights, and with a resident set that
stays well below the whole model.

The model is export_models' mlp_168mb (two Megatron pairs 2048-5120-2048 and
a small head, 42.0 M float32 parameters). It is served with
strategy=tensor,shards=4,replicas=1 by a coordinator over 4 tessera-worker
processes started here (kserve.Worker), so each worker's PID is known and
its /proc/PID/status can be read. replicas=1 because the default (2) puts
every shard on two workers, and the point is what one worker of a 4-way
split holds.

Checked:
  - answers equal torch's (rtol 1e-5) at batch 1 and 8;
  - each worker's shard bytes (admin ClusterStatus: the shards placed on
    it) are within 3% of a quarter of the model;
  - each worker's peak resident set (VmHWM), minus the VmHWM the same
    worker had idle before anything was loaded, is at most its shard bytes
    + 30 MB (issue 11's bound): a shard is loaded in place, its weights
    left where they arrived (ts_model_load_adopt), so it is never held
    twice; what remains is gRPC's transport buffers and the kernels'
    working memory (measured: shard bytes + 13-19 MB; it was + 48-61 MB
    while the parsed copy and the received bytes coexisted);
  - each worker's resident set once the model is loaded (VmRSS, before any
    inference), minus the idle baseline, is at most its shard bytes + 24 MB:
    no copy of a shard (upload buffer, chunk copies) stays behind once it is
    loaded (measured: shard bytes + 6-13 MB).
  - precision=int8 over 2 workers (strategy=tensor,shards=2): each worker
    holds an eighth of the float32 bytes (within 4 %: scales, float
    biases), answers within 1e-2 of torch relative to the largest score,
    and the same two bounds hold over those int8 bytes, so the worker
    keeps the weights as int8 (widened to float32 they would be 4x the
    bytes and break the bound by ~60 MB).
A table of the numbers is printed, and the coordinator's peak and resident
set beside the model's size (not bounded here: it still holds the model
and, while it cuts them, the shards). In a sanitizer build (b_sanitize) the
answers and shares are checked and the resident-set bounds are reported as
skipped.
"""
import json
import os
import shutil
import sys
import tempfile
import time
import unittest

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import admin  # noqa: E402
import export_models  # noqa: E402
import kserve  # noqa: E402

export_models.torch.set_num_threads(1)

MODEL = 'mlp_168mb'
WAYS = 4
RTOL, ATOL = 1e-5, 1e-5
MB = 1e6
PEAK_SLACK = 30 * MB     # above the worker's shard bytes and the idle baseline
STEADY_SLACK = 24 * MB   # above the worker's shard bytes and the idle baseline
SHARE_TOLERANCE = 0.03   # each worker's bytes vs. model / WAYS


def sanitizer():
    """The build's b_sanitize ('none' for a plain build). Under ASan the
    allocator keeps freed memory in quarantine and adds shadow memory, so
    resident-set bounds do not apply there."""
    info = os.path.join(kserve.BUILD, 'meson-info', 'intro-buildoptions.json')
    with open(info) as f:
        for option in json.load(f):
            if option['name'] == 'b_sanitize':
                return option['value']
    return 'none'


def proc_status(pid):
    """{'VmHWM': bytes, 'VmRSS': bytes} of a live process."""
    out = {}
    with open('/proc/%d/status' % pid) as f:
        for line in f:
            key, _, value = line.partition(':')
            if key in ('VmHWM', 'VmRSS'):
                number, unit = value.split()
                assert unit == 'kB', line
                out[key] = int(number) * 1024
    return out


class TensorSplitMemory(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix='tessera_memory_')
        cls.addClassCleanup(shutil.rmtree, cls.tmp, True)
        cls.path = export_models.export(MODEL, cls.tmp)
        module = export_models.module(MODEL)
        cls.model_bytes = sum(t.numel() * t.element_size()
                              for t in module.state_dict().values())
        cls.cases = []
        for batch in (1, 8):
            inputs = export_models.make_inputs(MODEL, batch, seed=40 + batch)
            cls.cases.append((inputs, export_models.reference(MODEL, inputs)))

    def test_quarter_of_the_weights_per_worker(self):
        workers = [kserve.Worker(threads=1) for _ in range(WAYS)]
        for w in workers:
            self.enterContext(w)
        idle = [proc_status(w.proc.pid)['VmHWM'] for w in workers]

        started = time.monotonic()
        cluster = self.enterContext(kserve.Cluster(
            [('big', self.path, {'strategy': 'tensor', 'shards': WAYS, 'replicas': 1})],
            local_workers=0, workers=[w.address for w in workers]))
        load_s = time.monotonic() - started
        # Before any inference, so OpenBLAS's working buffers (not part of
        # the idle baseline) are not counted as shard copies.
        loaded = [proc_status(w.proc.pid)['VmRSS'] for w in workers]

        for inputs, want in self.cases:
            got = cluster.client.infer('big', inputs)
            for name in want:
                batch = len(want[name])
                self.assertEqual(got[name].shape, want[name].shape)
                np.testing.assert_allclose(got[name], want[name], rtol=RTOL, atol=ATOL,
                                           err_msg='batch %d %s' % (batch, name))

        status = admin.cluster_status(cluster.address)
        model = admin.model_state(status, 'big')
        self.assertEqual(model.strategy, 'tensor')
        self.assertEqual(model.replicas, 1)
        self.assertGreaterEqual(model.weight_bytes, self.model_bytes)
        self.assertLessEqual(model.weight_bytes, self.model_bytes * 1.001)
        self.assertEqual(sorted(w.address for w in status.workers),
                         sorted(w.address for w in workers))
        address = {w.index: w.address for w in status.workers}
        held = {w.address: 0 for w in status.workers}
        for p in status.shards:
            if p.model == 'big':
                for i in p.workers:
                    held[address[i]] += p.bytes
        for w in status.workers:
            self.assertEqual(w.memory_planned, held[w.address], w.address)

        rows = []
        for w, base, rss in zip(workers, idle, loaded):
            now = proc_status(w.proc.pid)
            rows.append((w, base, held[w.address], now['VmHWM'], rss, now['VmRSS']))
        coordinator = proc_status(cluster.proc.pid)
        self.print_table(rows, load_s)
        print('coordinator: peak %.1f MB, resident %.1f MB, model %.1f MB' % (
            coordinator['VmHWM'] / MB, coordinator['VmRSS'] / MB, self.model_bytes / MB),
            file=sys.stderr)

        quarter = self.model_bytes / WAYS
        for w, _, weights, _, _, _ in rows:
            self.assertAlmostEqual(weights / quarter, 1.0, delta=SHARE_TOLERANCE,
                                   msg='%s holds %d bytes of shards, a quarter of the '
                                   'model is %d' % (w.address, weights, quarter))
        if sanitizer() != 'none':
            self.skipTest('resident-set bounds: the build uses b_sanitize=%s' % sanitizer())
        for w, base, weights, peak, rss, _ in rows:
            with self.subTest(worker=w.address):
                self.assertLessEqual(peak - base, weights + PEAK_SLACK,
                                     'peak RSS %.1f MB over an idle baseline of %.1f MB '
                                     'holding %.1f MB of shards' % (
                                         (peak - base) / MB, base / MB, weights / MB))
                self.assertLessEqual(rss - base, weights + STEADY_SLACK,
                                     'RSS %.1f MB over an idle baseline of %.1f MB holding '
                                     '%.1f MB of shards' % ((rss - base) / MB, base / MB,
                                                            weights / MB))

    def test_int8_shards_stay_int8(self):
        workers = [kserve.Worker(threads=1) for _ in range(2)]
        for w in workers:
            self.enterContext(w)
        idle = [proc_status(w.proc.pid)['VmHWM'] for w in workers]
        cluster = self.enterContext(kserve.Cluster(
            [('q', self.path, {'strategy': 'tensor', 'shards': 2, 'replicas': 1,
                               'precision': 'int8'})],
            local_workers=0, workers=[w.address for w in workers]))
        loaded = [proc_status(w.proc.pid)['VmRSS'] for w in workers]
        for inputs, want in self.cases:
            got = cluster.client.infer('q', inputs)['scores'].astype(np.float64)
            err = np.abs(got - want['scores']).max() / np.abs(want['scores']).max()
            self.assertLessEqual(err, 1e-2, 'int8 relative error %.3g' % err)
        status = admin.cluster_status(cluster.address)
        address = {w.index: w.address for w in status.workers}
        held = {w.address: 0 for w in status.workers}
        for p in status.shards:
            for i in p.workers:
                held[address[i]] += p.bytes
        eighth = self.model_bytes / 8
        for w, base, rss in zip(workers, idle, loaded):
            weights, peak = held[w.address], proc_status(w.proc.pid)['VmHWM']
            print('int8 worker %s: shards %.1f MB, peak-idle %.1f MB, loaded-idle %.1f MB'
                  % (w.address, weights / MB, (peak - base) / MB, (rss - base) / MB),
                  file=sys.stderr)
            self.assertAlmostEqual(weights / eighth, 1.0, delta=0.04,
                                   msg='%s holds %d bytes of int8 shards' % (w.address, weights))
            if sanitizer() != 'none':
                continue
            with self.subTest(worker=w.address):
                self.assertLessEqual(peak - base, weights + PEAK_SLACK)
                self.assertLessEqual(rss - base, weights + STEADY_SLACK)

    def print_table(self, rows, load_s):
        out = ['', 'model %s: %.1f MB of float32 weights, strategy=tensor,shards=%d,'
               'replicas=1, loaded in %.1f s' % (MODEL, self.model_bytes / MB, WAYS, load_s),
               '%-22s %8s %9s %7s %8s %10s %10s %10s' % (
                   'worker', 'idle MB', 'shards MB', 'share', 'peak MB', 'loaded MB',
                   'served MB', 'peak-idle')]
        for w, base, weights, peak, rss, served in rows:
            out.append('%-22s %8.1f %9.1f %7.3f %8.1f %10.1f %10.1f %9.2fx' % (
                w.address, base / MB, weights / MB, weights / self.model_bytes,
                peak / MB, rss / MB, served / MB, (peak - base) / self.model_bytes))
        out.append('idle: VmHWM before loading; peak: VmHWM at the end; loaded / served: '
                   'VmRSS once loaded / after the inferences; peak-idle: as a fraction of '
                   'the model')
        print('\n'.join(out), file=sys.stderr)


if __name__ == '__main__':
    unittest.main()
