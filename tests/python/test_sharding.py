"""Sharding acceptance: every strategy serves the PyTorch models' own answers.

For the MLP, the LeNet-style CNN, the ResNet-style CNN (BatchNorm, residual
adds) and the 2-layer transformer encoder of export_models.py, and for every
strategy

    strategy=data,replicas=N       strategy=tensor,shards=N
    strategy=pipeline,stages=N     strategy=hybrid,stages=2,shards=2
    strategy=auto

with N in {2, 3, 4} and N local workers, the coordinator's answer equals
torch's (never only Tessera's own unsharded answer) at batch 1 and at a batch
large enough for the dispatcher to cut batch-splittable stages across
replicas. One coordinator per N serves all 20 (model, strategy) pairs.
The admin API's ClusterStatus (admin.py) is checked for the placement
invariants: stage and shard counts per strategy, every shard on `replicas`
distinct live workers, weight bytes equal to the torch module's, and each
worker's planned memory equal to the bytes of the shards placed on it.

Block (2-D) splits (strategy=block, grid=RxC or shards=N) of an MLP with
uneven layers and of the transformer match torch on 2, 3 and 4 workers; the
shard map shows R x C shards per Linear with about 1/(R*C) of its weights;
bad grid values are refused at load (command line and config.ini).

A model larger than any one worker's --worker-memory-limit serves when split
(strategy=auto and strategy=tensor,shards=4), with each of the 4 tensor
shards holding about a quarter of the weights; strategy=data under the same
limit makes the coordinator exit non-zero naming the shard and the limit.
"""
import collections
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

import numpy as np
import onnx
import torch
from onnx import numpy_helper

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import admin  # noqa: E402
import export_models  # noqa: E402
import kserve  # noqa: E402

torch = export_models.torch
nn = torch.nn
# The reference runs are small; leave the cores to the daemons under test.
torch.set_num_threads(1)

MODELS = ['mlp', 'lenet', 'resnet', 'transformer']
STRATEGIES = ['data', 'tensor', 'pipeline', 'hybrid', 'block', 'auto']
# Batch 16 is the smallest batch the dispatcher cuts (2 * TS_SPLIT_MIN_ROWS);
# at batch 35 a batch-splittable stage with N replicas is cut into
# min(N, 35 // 8) = N slices (uneven ones for N = 2, 3, 4).
BATCHES = [1, 16, 35]
SEQUENCE = 7  # the transformer's tokens per row
# float32 against torch. Every model and strategy passes rtol 1e-5 (measured
# worst absolute error ~6e-7 on outputs of order 1); atol covers outputs
# near zero.
RTOL, ATOL = 1e-5, 1e-5

_tmp = None
_paths = {}
_cases = {}     # (model, batch) -> (inputs, torch outputs)
_graph_bytes = {}  # model -> bytes of its ONNX file that are not initializers


def setUpModule():
    global _tmp
    _tmp = tempfile.mkdtemp(prefix='tessera_sharding_')
    for m in MODELS:
        _paths[m] = export_models.export(m, _tmp)
        _graph_bytes[m] = graph_bytes(_paths[m])
        for b in BATCHES:
            inputs = export_models.make_inputs(m, b, seed=100 + b, sequence=SEQUENCE)
            _cases[m, b] = (inputs, export_models.reference(m, inputs))


def tearDownModule():
    if _tmp:
        shutil.rmtree(_tmp, ignore_errors=True)


def torch_weight_bytes(module):
    """Bytes of the module's float parameters and buffers (BatchNorm running
    statistics included, its int64 step counter not) as Tessera holds them:
    a BatchNorm that follows a Conv is folded into the Conv's weights at
    load, so its four vectors are gone and a Conv without bias gains one."""
    total = sum(t.numel() * t.element_size()
                for t in module.state_dict().values() if t.is_floating_point())
    conv = None
    for m in module.modules():
        if isinstance(m, torch.nn.Conv2d):
            conv = m
        elif isinstance(m, torch.nn.BatchNorm2d) and conv is not None:
            total -= 4 * m.num_features * 4
            if conv.bias is None:
                total += m.num_features * 4
            conv = None
    return total


def graph_bytes(path):
    """Bytes of an ONNX file beyond its initializers' data: the graph."""
    model = onnx.load(path)
    weights = sum(numpy_helper.to_array(t).nbytes for t in model.graph.initializer)
    return os.path.getsize(path) - weights


def strategy_keys(strategy, n):
    return {'data': {'strategy': 'data', 'replicas': n},
            'tensor': {'strategy': 'tensor', 'shards': n},
            'pipeline': {'strategy': 'pipeline', 'stages': n},
            'hybrid': {'strategy': 'hybrid', 'stages': 2, 'shards': 2},
            'block': {'strategy': 'block', 'shards': n},
            'auto': {'strategy': 'auto'}}[strategy]


def assert_close(test, got, want, what, rtol=RTOL, atol=ATOL):
    test.assertEqual(got.dtype, want.dtype, what)
    test.assertEqual(got.shape, want.shape, what)
    if not np.allclose(got, want, rtol=rtol, atol=atol):
        bad = np.abs(got.astype(np.float64) - want) - (atol + rtol * np.abs(want))
        i = np.unravel_index(bad.argmax(), bad.shape)
        test.fail('%s: |got - want| exceeds atol %g + rtol %g * |want| at %s: '
                  'got %r, want %r (max abs error %.3g)' % (
                      what, atol, rtol, i, got[i], want[i],
                      np.abs(got.astype(np.float64) - want).max()))


def check_placement(test, status, name, what=''):
    """Invariants every plan satisfies; returns {stage: [ShardPlacement]}."""
    what = what or name
    model = admin.model_state(status, name)
    test.assertIsNotNone(model, '%s is not in ClusterStatus' % what)
    test.assertEqual(model.state, 'READY', what)
    stages = admin.shards_of(status, name)
    test.assertEqual(model.stages, len(stages), what)
    test.assertEqual(sorted(stages), list(range(model.stages)), what)
    test.assertGreaterEqual(model.replicas, 1, what)
    n_workers = len(status.workers)
    for s, shards in stages.items():
        test.assertEqual([p.shard for p in shards], list(range(len(shards))),
                         '%s stage %d' % (what, s))
        for p in shards:
            where = '%s %s' % (what, p.label)
            workers = list(p.workers)
            test.assertEqual(len(workers), model.replicas,
                             '%s: on %s, want %d replicas' % (where, workers, model.replicas))
            test.assertEqual(len(set(workers)), len(workers),
                             '%s: two replicas on one worker: %s' % (where, workers))
            for w in workers:
                test.assertTrue(0 <= w < n_workers, '%s: worker %d' % (where, w))
                test.assertTrue(status.workers[w].up, '%s: worker %d down' % (where, w))
            test.assertGreater(p.bytes, 0, where)
            test.assertEqual(len(p.shard_id), 64, where)
    return stages


def check_memory_booking(test, status):
    """Every worker's memory_planned is the bytes of the shards on it."""
    booked = collections.Counter()
    for p in status.shards:
        for w in p.workers:
            booked[w] += p.bytes
    for w in status.workers:
        test.assertEqual(w.memory_planned, booked[w.index],
                         'worker %d (%s)' % (w.index, w.address))
        if w.memory_limit:
            test.assertLessEqual(w.memory_planned, w.memory_limit,
                                 'worker %d (%s)' % (w.index, w.address))


class MatrixMixin:
    """One coordinator with N local workers serving every (model, strategy)
    as "<model>_<strategy>"."""

    N = None

    @classmethod
    def cluster_options(cls, tmp):
        return {'models': [('%s_%s' % (m, s), _paths[m], strategy_keys(s, cls.N))
                           for m in MODELS for s in STRATEGIES],
                'local_workers': cls.N}

    def status(self):
        return admin.cluster_status(self.cluster.address)

    def test_matches_torch(self):
        for m in MODELS:
            for s in STRATEGIES:
                for b in BATCHES:
                    served = '%s_%s' % (m, s)
                    with self.subTest(model=served, workers=self.N, batch=b):
                        inputs, want = _cases[m, b]
                        got = self.client.infer(served, inputs)
                        self.assertEqual(list(got), list(want))
                        for name in want:
                            assert_close(self, got[name], want[name], '%s N=%d batch %d %s' % (
                                served, self.N, b, name))

    def test_placement(self):
        status = self.status()
        self.assertEqual(len(status.workers), self.N)
        self.assertTrue(all(w.up for w in status.workers))
        check_memory_booking(self, status)
        n = self.N
        for m in MODELS:
            torch_bytes = torch_weight_bytes(export_models.module(m))
            for s in STRATEGIES:
                served = '%s_%s' % (m, s)
                with self.subTest(model=served, workers=n):
                    stages = check_placement(self, status, served)
                    model = admin.model_state(status, served)
                    counts = [len(v) for v in stages.values()]
                    if s == 'data':
                        self.assertEqual(model.strategy, 'data')
                        self.assertEqual(counts, [1])
                        self.assertEqual(model.replicas, n)
                    elif s == 'auto':
                        # No memory limit: the whole model fits one worker.
                        self.assertEqual(model.strategy, 'data')
                        self.assertEqual(counts, [1])
                        # plan.h: "one replica per worker (or opts->replicas
                        # when > 1)"; config.h: replicas default min(2, live).
                        self.assertIn(model.replicas, {min(2, n), n})
                    elif s == 'tensor':
                        self.assertEqual(model.strategy, 'tensor')
                        self.assertTrue(set(counts) <= {1, n}, counts)
                        self.assertIn(n, counts)
                        self.assertEqual(model.replicas, min(2, n))
                    elif s == 'pipeline':
                        self.assertEqual(model.strategy, 'pipeline')
                        self.assertEqual(counts, [1] * n)
                        self.assertEqual(model.replicas, min(2, n))
                    elif s == 'hybrid':
                        self.assertEqual(model.strategy, 'hybrid')
                        self.assertGreaterEqual(len(counts), 2)
                        self.assertTrue(set(counts) <= {1, 2}, counts)
                        self.assertIn(2, counts)
                        self.assertEqual(model.replicas, min(2, n))
                    # The plan's weights are the torch module's, split or not
                    # (shape constants of the export add a few bytes).
                    self.assertGreaterEqual(model.weight_bytes, torch_bytes)
                    self.assertLessEqual(model.weight_bytes, torch_bytes * 1.01 + 1024)
                    # Each shard holds its slice of the weights plus its part
                    # of the graph: no weights are held twice, and the
                    # graph at most once per way of a split (plus a little
                    # per shard for the inputs and outputs it declares).
                    total = sum(p.bytes for v in stages.values() for p in v)
                    self.assertGreaterEqual(total, model.weight_bytes)
                    self.assertLessEqual(total, model.weight_bytes + _graph_bytes[m] * max(counts)
                                         + 2048 * sum(counts))

    def test_large_batch_is_split_across_replicas(self):
        """A data-parallel model gets one call per replica for a 35-row
        batch (the transformer's single stage reads the batch on dim 1 after
        its Transpose to sequence-major, so it is not batch-splittable)."""
        client = admin.AdminClient(self.cluster.address)
        self.addCleanup(client.close)
        for m in MODELS:
            for s, stage_count in (('data', 1), ('pipeline', self.N)):
                served = '%s_%s' % (m, s)
                with self.subTest(model=served, workers=self.N):
                    inputs, want = _cases[m, 35]
                    before = admin.calls_by_worker(client.cluster_status())
                    got = self.client.infer(served, inputs)
                    after = admin.calls_by_worker(client.cluster_status())
                    for name in want:
                        assert_close(self, got[name], want[name], served)
                    delta = {a: after[a] - before.get(a, 0) for a in after}
                    replicas = admin.model_state(client.cluster_status(), served).replicas
                    if m == 'transformer':
                        self.assertEqual(sum(delta.values()), stage_count, delta)
                    else:
                        # Every stage cut into `replicas` slices on distinct
                        # workers.
                        self.assertEqual(sum(delta.values()), stage_count * replicas, delta)
                        if s == 'data':
                            self.assertEqual(sorted(delta.values()),
                                             [1] * self.N, delta)


class MatrixN2(MatrixMixin, kserve.ClusterTestCase):
    N = 2


class MatrixN3(MatrixMixin, kserve.ClusterTestCase):
    N = 3


class MatrixN4(MatrixMixin, kserve.ClusterTestCase):
    N = 4


# ---- a model bigger than any worker ----------------------------------------

BIG_SEED = 77


def big_mlp():
    """An MLP of ~5.3 MB of float32 weights, most of them in one 1024x1024
    layer (Megatron pairing: first layer by columns, second by rows)."""
    torch.manual_seed(BIG_SEED)
    m = nn.Sequential(nn.Linear(256, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.Tanh(),
                      nn.Linear(1024, 10), nn.LogSoftmax(dim=1))
    return m.eval()


class BiggerThanOneWorker(unittest.TestCase):
    """--worker-memory-limit at 60% of the model's weights, 4 local workers."""

    WORKERS = 4

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix='tessera_big_')
        cls.module = big_mlp()
        cls.path = os.path.join(cls.tmp, 'big.onnx')
        with torch.no_grad():
            torch.onnx.export(cls.module, (torch.zeros(2, 256),), cls.path,
                              input_names=['features'], output_names=['log_probs'],
                              dynamic_axes={'features': {0: 'batch'}, 'log_probs': {0: 'batch'}},
                              opset_version=13)
        cls.weight_bytes = torch_weight_bytes(cls.module)
        cls.limit = int(cls.weight_bytes * 0.6)
        cls.cases = []
        for b in BATCHES:
            x = np.random.RandomState(b).standard_normal((b, 256)).astype(np.float32)
            with torch.no_grad():
                cls.cases.append((x, cls.module(torch.from_numpy(x)).numpy()))

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def cluster(self, keys):
        return kserve.Cluster([('big', self.path, keys)], local_workers=self.WORKERS,
                              extra_args=['--worker-memory-limit', str(self.limit)])

    def check_serves(self, cluster, what):
        for x, want in self.cases:
            got = cluster.client.infer('big', {'features': x})['log_probs']
            assert_close(self, got, want, '%s batch %d' % (what, len(x)))
        status = admin.cluster_status(cluster.address)
        for w in status.workers:
            self.assertEqual(w.memory_limit, self.limit, w.address)
        check_memory_booking(self, status)
        stages = check_placement(self, status, 'big', what)
        for shards in stages.values():
            for p in shards:
                self.assertLessEqual(p.bytes, self.limit, p.label)
        return status, stages

    def test_auto_splits_to_fit(self):
        self.assertGreater(self.weight_bytes, self.limit)
        with self.cluster({'strategy': 'auto'}) as c:
            status, stages = self.check_serves(c, 'auto')
            model = admin.model_state(status, 'big')
            self.assertIn(model.strategy, ('tensor', 'hybrid', 'pipeline'))
            self.assertGreater(max(len(v) for v in stages.values()) * len(stages), 1)

    def test_tensor4_quarters(self):
        with self.cluster({'strategy': 'tensor', 'shards': 4}) as c:
            status, stages = self.check_serves(c, 'tensor,shards=4')
            model = admin.model_state(status, 'big')
            self.assertEqual(model.strategy, 'tensor')
            self.assertEqual(model.weight_bytes, self.weight_bytes)
            counts = [len(v) for v in stages.values()]
            self.assertTrue(set(counts) <= {1, 4}, counts)
            # Nearly all the weights are in the first (column, row) pair:
            # each of its 4 shards holds about a quarter of the model.
            heaviest = max(stages.values(), key=lambda v: sum(p.bytes for p in v))
            self.assertEqual(len(heaviest), 4)
            for p in heaviest:
                self.assertAlmostEqual(p.bytes / (self.weight_bytes / 4), 1.0, delta=0.1,
                                       msg='%s holds %d of %d weight bytes' % (
                                           p.label, p.bytes, self.weight_bytes))
            total = sum(p.bytes for v in stages.values() for p in v)
            self.assertGreaterEqual(total, self.weight_bytes)
            self.assertLessEqual(total, self.weight_bytes * 1.01 + 4096 * sum(counts))

    def test_data_cannot_fit(self):
        c = self.cluster({'strategy': 'data'})
        try:
            p = subprocess.run(c.command(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               stdin=subprocess.DEVNULL, universal_newlines=True, timeout=60)
        except subprocess.TimeoutExpired as e:
            self.fail('coordinator with an unplaceable model did not exit in 60 s: %s' % (
                (e.stderr or '')[-2000:]))
        self.assertNotEqual(p.returncode, 0, p.stderr[-2000:])
        self.assertNotIn('listening on', p.stdout)
        last = [l for l in p.stderr.splitlines() if l.startswith('tessera-coordinator:')]
        self.assertTrue(last, p.stderr[-2000:])
        self.assertIn('big', last[-1])
        self.assertIn('memory-limit', last[-1])


# ---- block (2-D) splits ------------------------------------------------------

BLOCK_SEED = 91
BLOCK_LAYERS = [(96, 130), (130, 70), (70, 9)]  # uneven on every grid below


def block_mlp():
    """An MLP whose first two layers are large enough that a block shard's
    bytes are mostly its weight block (the graph adds a few hundred)."""
    torch.manual_seed(BLOCK_SEED)
    (a, b), (c, d), (e, f) = BLOCK_LAYERS
    return nn.Sequential(nn.Linear(a, b), nn.ReLU(), nn.Linear(c, d), nn.Tanh(),
                         nn.Linear(e, f), nn.LogSoftmax(dim=1)).eval()


def near_square(n):
    """The grid of shards=n (README): R x C = n, R the largest divisor of n
    with R <= sqrt(n)."""
    r = max(d for d in range(1, n + 1) if n % d == 0 and d * d <= n)
    return r, n // r


def block_grid(keys):
    if 'grid' in keys:
        r, c = keys['grid'].split('x')
        return int(r), int(c)
    return near_square(keys['shards'])


class BlockMixin:
    """strategy=block on N worker processes: the block MLP and the
    transformer encoder of export_models.py (its MatMuls with constant
    weights split on the grid) under each of GRIDS, served as
    "<model>_<label>", against torch."""

    N = None
    GRIDS = ()

    @classmethod
    def cluster_options(cls, tmp):
        cls.module = block_mlp()
        path = os.path.join(tmp, 'block_mlp.onnx')
        with torch.no_grad():
            torch.onnx.export(cls.module, (torch.zeros(2, BLOCK_LAYERS[0][0]),), path,
                              input_names=['features'], output_names=['log_probs'],
                              dynamic_axes={'features': {0: 'batch'},
                                            'log_probs': {0: 'batch'}},
                              opset_version=13)
        cls.cases = []
        for b in BATCHES:
            x = np.random.RandomState(200 + b).standard_normal(
                (b, BLOCK_LAYERS[0][0])).astype(np.float32)
            with torch.no_grad():
                cls.cases.append((x, cls.module(torch.from_numpy(x)).numpy()))
        models = []
        for label, keys in cls.GRIDS:
            keys = dict(keys, strategy='block')
            models.append(('bmlp_' + label, path, keys))
            models.append(('transformer_' + label, _paths['transformer'], keys))
        return {'models': models, 'local_workers': cls.N}

    def test_matches_torch(self):
        for label, _ in self.GRIDS:
            for x, want in self.cases:
                with self.subTest(model='bmlp_' + label, batch=len(x)):
                    got = self.client.infer('bmlp_' + label, {'features': x})
                    assert_close(self, got['log_probs'], want, 'bmlp_%s N=%d batch %d' % (
                        label, self.N, len(x)))
            for b in BATCHES:
                served = 'transformer_' + label
                with self.subTest(model=served, batch=b):
                    inputs, want = _cases['transformer', b]
                    got = self.client.infer(served, inputs)
                    for name in want:
                        assert_close(self, got[name], want[name], '%s N=%d batch %d' % (
                            served, self.N, b))

    def test_shard_map(self):
        """ClusterStatus: every Linear is a stage of R x C shards, each with
        about 1/(R*C) of the layer's weight bytes; the activations run whole;
        the transformer's MatMuls are R x C stages too."""
        status = admin.cluster_status(self.cluster.address)
        check_memory_booking(self, status)
        for label, keys in self.GRIDS:
            r, c = block_grid(keys)
            served = 'bmlp_' + label
            with self.subTest(model=served):
                stages = check_placement(self, status, served)
                model = admin.model_state(status, served)
                self.assertEqual(model.strategy, 'block')
                # The module's weights, plus 24 bytes of Slice parameters
                # (int64 starts, ends, axes) per shard when R > 1.
                torch_bytes = torch_weight_bytes(self.module)
                self.assertEqual(model.weight_bytes,
                                 torch_bytes + (3 * r * c * 24 if r > 1 else 0))
                counts = [len(v) for v in stages.values()]
                self.assertEqual(counts, [r * c, 1] * 3)
                for layer in (0, 1):
                    k, n = BLOCK_LAYERS[layer]
                    share = k * n * 4 / (r * c)
                    shards = stages[2 * layer]
                    for p in shards:
                        # Shard i*C+j: the weight block K_i x N_j, the bias
                        # of N_j in row 0, Slice parameters when R > 1, and
                        # its graph (under 1 KiB).
                        i, j = divmod(p.shard, c)
                        ki = k * (i + 1) // r - k * i // r
                        nj = n * (j + 1) // c - n * j // c
                        exact = (ki * nj + (nj if i == 0 else 0)) * 4 + (24 if r > 1 else 0)
                        where = '%s %s holds %d bytes; its weights are %d, 1/%d of the ' \
                                'layer is %d' % (served, p.label, p.bytes, exact, r * c, share)
                        self.assertGreaterEqual(p.bytes, exact, where)
                        self.assertLessEqual(p.bytes, exact + 1024, where)
                        self.assertAlmostEqual(p.bytes / share, 1.0, delta=0.2, msg=where)
                    self.assertGreaterEqual(sum(p.bytes for p in shards), (k + 1) * n * 4)
            served = 'transformer_' + label
            with self.subTest(model=served):
                stages = check_placement(self, status, served)
                self.assertEqual(admin.model_state(status, served).strategy, 'block')
                counts = [len(v) for v in stages.values()]
                self.assertTrue(set(counts) <= {1, r * c}, counts)
                self.assertGreaterEqual(counts.count(r * c), 4, counts)

    def test_large_batch_still_split(self):
        """A 35-row batch: each block stage is one call per shard, each whole
        (activation) stage is cut across its 2 replicas."""
        client = admin.AdminClient(self.cluster.address)
        self.addCleanup(client.close)
        x, want = self.cases[-1]
        self.assertEqual(len(x), 35)
        for label, keys in self.GRIDS:
            r, c = block_grid(keys)
            served = 'bmlp_' + label
            with self.subTest(model=served):
                before = admin.calls_by_worker(client.cluster_status())
                got = self.client.infer(served, {'features': x})['log_probs']
                after = admin.calls_by_worker(client.cluster_status())
                assert_close(self, got, want, served)
                replicas = admin.model_state(client.cluster_status(), served).replicas
                self.assertEqual(replicas, min(2, self.N))
                calls = sum(after[a] - before.get(a, 0) for a in after)
                self.assertEqual(calls, 3 * r * c + 3 * replicas)


class BlockN2(BlockMixin, kserve.ClusterTestCase):
    N = 2
    GRIDS = (('2x1', {'grid': '2x1'}), ('1x2', {'grid': '1x2'}))


class BlockN3(BlockMixin, kserve.ClusterTestCase):
    N = 3
    GRIDS = (('3x1', {'grid': '3x1'}), ('s3', {'shards': 3}))


class BlockN4(BlockMixin, kserve.ClusterTestCase):
    N = 4
    GRIDS = (('2x2', {'grid': '2x2'}), ('s4', {'shards': 4}), ('3x2', {'grid': '3x2'}))


BAD_GRIDS = ['0x2', 'abc', '2x', 'x2', '-1x2', '2x0', '9x9', '2x2x2', '+2x2']


class BlockBadOptions(unittest.TestCase):
    """Bad grid values are refused at load, naming the key and the value:
    on the command line the coordinator exits non-zero; from a repository's
    config.ini, RepositoryModelLoad answers INVALID_ARGUMENT."""

    def test_command_line(self):
        path = _paths['mlp']
        cases = [('strategy=block,grid=%s' % g, ['grid', "'%s'" % g]) for g in BAD_GRIDS]
        cases.append(('strategy=tensor,grid=2x2', ['grid', 'strategy=block']))
        for keys, words in cases:
            with self.subTest(keys=keys):
                c = kserve.Cluster(['m=%s,%s' % (path, keys)], local_workers=1)
                last, what = kserve.refused_at_start(self, c.command(), keys)
                for w in words:
                    self.assertIn(w, last, what)

    def test_repository_load(self):
        repo = tempfile.mkdtemp(prefix='tessera_block_repo_')
        self.addCleanup(shutil.rmtree, repo, True)
        os.makedirs(os.path.join(repo, 'bm'))
        shutil.copy(_paths['mlp'], os.path.join(repo, 'bm', 'model.onnx'))
        ini = os.path.join(repo, 'bm', 'config.ini')

        def write(text):
            with open(ini, 'w') as f:
                f.write(text)

        write('strategy = block\ngrid = 2x2\n')
        inputs, want = _cases['mlp', 16]
        with kserve.Cluster([], local_workers=2,
                            extra_args=['--model-repository', repo]) as c:
            def check(grid):
                got = c.client.infer('bm', inputs)
                for name in want:
                    assert_close(self, got[name], want[name], 'bm grid %dx%d' % grid)
                status = admin.cluster_status(c.address)
                self.assertEqual(admin.model_state(status, 'bm').strategy, 'block')
                counts = [len(v) for v in admin.shards_of(status, 'bm').values()]
                self.assertIn(grid[0] * grid[1], counts)
                self.assertTrue(set(counts) <= {1, grid[0] * grid[1]}, counts)

            check((2, 2))
            for g in BAD_GRIDS:
                with self.subTest(grid=g):
                    write('strategy = block\ngrid = %s\n' % g)
                    with self.assertRaises(kserve.grpc.RpcError) as cm:
                        c.client.load('bm')
                    self.assertEqual(cm.exception.code(),
                                     kserve.grpc.StatusCode.INVALID_ARGUMENT)
                    for w in ('grid', "'%s'" % g, 'config.ini'):
                        self.assertIn(w, cm.exception.details())
            check((2, 2))  # a refused load leaves the loaded plan serving
            write('strategy = block\nshards = 3\n')
            c.client.load('bm')
            check((1, 3))


if __name__ == '__main__':
    unittest.main()
