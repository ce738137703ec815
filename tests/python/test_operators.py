"""The operators issue's acceptance test, through the coordinator.

- PyTorch exports (LeNet-style CNN, ResNet-style CNN with BatchNorm and
  residual adds, 2-layer TransformerEncoder with an Embedding front) served
  by a real coordinator with local workers match torch itself within 1e-4
  relative at batch 1, 4 and 16.
- scikit-learn models expressed as ai.onnx.ml graphs (sklearn_models.py)
  served the same way match scikit-learn's own predictions: labels exactly,
  scores and values within the manifest's tolerance, at batch 1, 4 and 16.
- A model with an op Tessera does not support fails to load with a message
  naming the node and the op, and the coordinator exits non-zero.
"""
import json
import os
import subprocess
import sys
import tempfile
import unittest

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import export_models  # noqa: E402
import kserve  # noqa: E402

export_models.torch.set_num_threads(1)

BATCHES = [1, 4, 16]
NETWORKS = ['lenet', 'resnet', 'transformer']
HERE = os.path.dirname(os.path.abspath(__file__))


def close(got, want, rtol, atol):
    return got.shape == want.shape and np.allclose(got, want, rtol=rtol, atol=atol)


class Networks(kserve.ClusterTestCase):

    @classmethod
    def cluster_options(cls, tmp):
        return {'models': [(m, export_models.export(m, tmp)) for m in NETWORKS],
                'local_workers': 2}

    def test_matches_torch_at_batch_1_4_16(self):
        for model in NETWORKS:
            for batch in BATCHES:
                with self.subTest(model=model, batch=batch):
                    inputs = export_models.make_inputs(model, batch, seed=100 + batch,
                                                       sequence=6)
                    want = export_models.reference(model, inputs)
                    got = self.client.infer(model, inputs)
                    for name, w in want.items():
                        self.assertTrue(close(got[name], w, 1e-4, 1e-5),
                                        '%s/%s batch %d: max abs error %g' % (
                                            model, name, batch,
                                            np.abs(got[name] - w).max()))


class ScikitLearn(kserve.ClusterTestCase):

    @classmethod
    def cluster_options(cls, tmp):
        subprocess.run([sys.executable, os.path.join(HERE, 'sklearn_models.py'), tmp],
                       check=True, stdout=subprocess.DEVNULL)
        with open(os.path.join(tmp, 'manifest.json')) as f:
            cls.manifest = json.load(f)['models']
        return {'models': [(m['name'], os.path.join(tmp, m['file']))
                           for m in cls.manifest],
                'local_workers': 2}

    def test_matches_sklearn_at_batch_1_4_16(self):
        self.assertGreaterEqual(len(self.manifest), 10)
        for m in self.manifest:
            x = np.load(os.path.join(self.tmp, m['input_file']))
            refs = {o['name']: np.load(os.path.join(self.tmp, o['reference']))
                    for o in m['outputs']}
            for batch in BATCHES:
                with self.subTest(model=m['name'], batch=batch):
                    got = self.client.infer(m['name'], {m['input']: x[:batch]})
                    for o in m['outputs']:
                        want = refs[o['name']][:batch]
                        g = got[o['name']]
                        if o.get('exact'):
                            self.assertEqual(g.dtype, np.int64, o['name'])
                            np.testing.assert_array_equal(g, want, '%s/%s' % (
                                m['name'], o['name']))
                        else:
                            self.assertTrue(close(g, want, o['rtol'], o['atol']),
                                            '%s/%s batch %d: max abs error %g' % (
                                                m['name'], o['name'], batch,
                                                np.abs(g - want).max()))


class UnsupportedOp(unittest.TestCase):

    def test_load_fails_naming_node_and_op(self):
        import onnx
        from onnx import TensorProto, helper
        node = helper.make_node('GRU', ['x', 'w', 'r'], ['y'], name='the_gru',
                                hidden_size=4)
        graph = helper.make_graph(
            [node], 'g',
            [helper.make_tensor_value_info('x', TensorProto.FLOAT, [1, 1, 3])],
            [helper.make_tensor_value_info('y', TensorProto.FLOAT, None)],
            [helper.make_tensor('w', TensorProto.FLOAT, [1, 12, 3], [0.0] * 36),
             helper.make_tensor('r', TensorProto.FLOAT, [1, 12, 4], [0.0] * 48)])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', 13)])
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, 'gru.onnx')
            onnx.save(model, path)
            proc = subprocess.run(
                [kserve.binary('tessera-coordinator'), '--listen', '127.0.0.1:0',
                 '--local-workers', '1', '--model', 'gru=' + path],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
        self.assertNotEqual(proc.returncode, 0)
        err = proc.stderr.decode()
        self.assertIn('the_gru', err)
        self.assertIn('GRU', err)
        self.assertNotIn('listening on', proc.stdout.decode())


if __name__ == '__main__':
    unittest.main()
