"""Reduced-precision shards (model key precision=fp32|fp16|bf16|int8).

An MLP of export_models.py (mlp_1mb: 256-512-256-16, 1 MB of float32
weights), tensor-split over 2 local workers, is served four times by one
coordinator: as float32 and with precision=fp16, bf16 and int8 (ClusterStatus
and `tessera status --format json` name each model's precision). Each answer
is checked against torch's float32 answer at batch 1, 5 and 17: max
|y - torch| / max |torch| is at most 1e-2 for int8 and bf16 (8 bits of
mantissa) and 1e-3 for fp16; float32 stays within the sharding suite's
1e-5. ClusterStatus shows the shards' bytes: the fp16 and bf16 shards hold
1/2 and the int8 ones 1/4 of the float32 shards' bytes, within 4 % (int8's
per-column scales and the float biases are the rest). A bad precision value
is refused at load naming the key and the value: on the command line the
coordinator exits non-zero; from a repository's config.ini,
RepositoryModelLoad answers INVALID_ARGUMENT.
"""
import json
import os
import shutil
import sys
import tempfile
import unittest

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import admin  # noqa: E402
import export_models  # noqa: E402
import kserve  # noqa: E402

export_models.torch.set_num_threads(1)

MODEL = 'mlp_1mb'
BATCHES = [1, 5, 17]
# max |y - torch| / max |torch| per precision.
TOLERANCE = {'fp32': 1e-5, 'fp16': 1e-3, 'bf16': 1e-2, 'int8': 1e-2}
# Shard bytes against the float32 shards'.
RATIO = {'fp16': 0.5, 'bf16': 0.5, 'int8': 0.25}
RATIO_SLACK = 0.04

_tmp = None
_path = None


def setUpModule():
    global _tmp, _path
    _tmp = tempfile.mkdtemp(prefix='tessera_precision_')
    _path = export_models.export(MODEL, _tmp)


def tearDownModule():
    shutil.rmtree(_tmp, True)


def shard_bytes(status, name):
    return sum(s.bytes for shards in admin.shards_of(status, name).values()
               for s in shards)


class Precision(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        models = [('m_%s' % p, _path, {'strategy': 'tensor', 'shards': 2,
                                       'precision': p})
                  for p in TOLERANCE]
        cls.cluster = kserve.Cluster(models, local_workers=2)
        cls.cluster.__enter__()

    @classmethod
    def tearDownClass(cls):
        cls.cluster.__exit__(None, None, None)

    def test_answers_match_torch(self):
        for batch in BATCHES:
            inputs = export_models.make_inputs(MODEL, batch, seed=7 + batch)
            want = export_models.reference(MODEL, inputs)['scores'].astype(np.float64)
            for p, tol in TOLERANCE.items():
                with self.subTest(precision=p, batch=batch):
                    got = self.cluster.client.infer('m_%s' % p, inputs)['scores']
                    self.assertEqual(got.shape, want.shape)
                    self.assertEqual(got.dtype, np.float32)
                    err = np.max(np.abs(got - want)) / np.max(np.abs(want))
                    self.assertLessEqual(err, tol, '%s batch %d: relative error %.3g'
                                         % (p, batch, err))

    def test_status_shows_precision(self):
        p = kserve.run_tessera('status', '--server', self.cluster.address, '--format', 'json')
        self.assertEqual(p.returncode, 0, p.stderr)
        models = {m['model']: m for m in json.loads(p.stdout)['cluster']['models']}
        for precision in TOLERANCE:
            self.assertEqual(models['m_%s' % precision]['precision'], precision)

    def test_shard_bytes_shrink(self):
        status = admin.cluster_status(self.cluster.address)
        for p in TOLERANCE:
            self.assertEqual(admin.model_state(status, 'm_%s' % p).precision, p)
        full = shard_bytes(status, 'm_fp32')
        self.assertGreater(full, 4 * 266000)  # float32 weights, and the graph
        for p, ratio in RATIO.items():
            with self.subTest(precision=p):
                model = admin.model_state(status, 'm_%s' % p)
                self.assertEqual(model.strategy, 'tensor')
                got = shard_bytes(status, 'm_%s' % p) / full
                self.assertLessEqual(abs(got - ratio), ratio * RATIO_SLACK,
                                     '%s: shards hold %.4f of float32' % (p, got))
                self.assertEqual(len(admin.shards_of(status, 'm_%s' % p)[0]), 2)


BAD = ['fp64', 'INT8', '', 'int4', 'fp16,']


class BadPrecision(unittest.TestCase):

    def test_command_line(self):
        for value in BAD[:4]:
            with self.subTest(value=value):
                c = kserve.Cluster(['m=%s,strategy=tensor,precision=%s' % (_path, value)],
                                   local_workers=1)
                last, what = kserve.refused_at_start(self, c.command(), repr(value))
                self.assertIn("model key 'precision'", last, what)
                self.assertIn('fp32|fp16|bf16|int8', last, what)

    def test_repository_load(self):
        repo = tempfile.mkdtemp(prefix='tessera_precision_repo_')
        self.addCleanup(shutil.rmtree, repo, True)
        os.makedirs(os.path.join(repo, 'pm'))
        shutil.copy(_path, os.path.join(repo, 'pm', 'model.onnx'))
        ini = os.path.join(repo, 'pm', 'config.ini')
        with open(ini, 'w') as f:
            f.write('strategy = tensor\nprecision = int8\n')
        with kserve.Cluster([], local_workers=2,
                            extra_args=['--model-repository', repo]) as c:
            c.client.load('pm')
            self.assertEqual(admin.model_state(admin.cluster_status(c.address), 'pm').strategy,
                             'tensor')
            with open(ini, 'w') as f:
                f.write('strategy = tensor\nprecision = fp64\n')
            with self.assertRaises(kserve.grpc.RpcError) as cm:
                c.client.load('pm')
            self.assertEqual(cm.exception.code(), kserve.grpc.StatusCode.INVALID_ARGUMENT)
            for w in ("model key 'precision'", "'fp64'", 'config.ini'):
                self.assertIn(w, cm.exception.details())


if __name__ == '__main__':
    unittest.main()
