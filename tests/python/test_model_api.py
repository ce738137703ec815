"""Triton's model APIs over gRPC: ModelConfig and ModelStatistics.

ModelConfig is checked against the ONNX file itself, read with the `onnx`
package (inputs that are not initializers, their element types and dims,
-1 for a symbolic dim), under Triton's shape rules: a model that batches
(max_batch > 0) reports max_batch_size and dims without the batch dim, plus
dynamic_batching with its window; one that does not reports
max_batch_size 0 and its full dims. An ensemble lists its members.

ModelStatistics is checked against the traffic this test sends: N good
requests add N successes, one bad request adds one failure, the inference
count adds rows where the model batches, durations grow and never shrink,
and last_inference falls inside the test's own wall-clock window.
Unknown models and versions answer NOT_FOUND with a message naming them.

A --model-repository in Triton's layout NAME/VERSION/model.onnx serves the
newest version under its number; a layout Tessera does not understand
stops the coordinator with the path at fault.
"""
import os
import shutil
import sys
import tempfile
import time
import unittest

import grpc
import numpy as np
import onnx

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import admin  # noqa: E402
import export_models  # noqa: E402
import kserve  # noqa: E402

export_models.torch.set_num_threads(1)
pb = kserve.pb

# ONNX element type name -> Triton DataType name, from the two specs.
TRITON_TYPE = {'FLOAT': 'TYPE_FP32', 'DOUBLE': 'TYPE_FP64', 'FLOAT16': 'TYPE_FP16',
               'INT64': 'TYPE_INT64', 'INT32': 'TYPE_INT32', 'INT16': 'TYPE_INT16',
               'INT8': 'TYPE_INT8', 'UINT8': 'TYPE_UINT8', 'UINT16': 'TYPE_UINT16',
               'UINT32': 'TYPE_UINT32', 'UINT64': 'TYPE_UINT64', 'BOOL': 'TYPE_BOOL',
               'STRING': 'TYPE_STRING'}

PLAIN = {'strategy': 'tensor', 'shards': 2, 'replicas': 1}
MAX_BATCH, WINDOW_US = 8, 1500
BATCHED = {'strategy': 'data', 'replicas': 1, 'max_batch': MAX_BATCH,
           'batch_delay_us': WINDOW_US}
DURATIONS = ('success', 'queue', 'compute_input', 'compute_infer', 'compute_output')


def onnx_tensors(path):
    """([(name, Triton type, dims)] of inputs, same of outputs), from the file."""
    model = onnx.load(path)
    inits = {i.name for i in model.graph.initializer}

    def describe(vi):
        t = vi.type.tensor_type
        dims = [d.dim_value if d.HasField('dim_value') else -1 for d in t.shape.dim]
        return vi.name, TRITON_TYPE[onnx.TensorProto.DataType.Name(t.elem_type)], dims

    return ([describe(i) for i in model.graph.input if i.name not in inits],
            [describe(o) for o in model.graph.output])


class ModelApi(kserve.ClusterTestCase):
    @classmethod
    def cluster_options(cls, tmp):
        cls.path = export_models.export('logistic', tmp)
        return {'models': [('plain', cls.path, PLAIN), ('batched', cls.path, BATCHED),
                           'ens=ensemble:plain+batched'],
                'local_workers': 2}

    def config(self, name, version=''):
        return self.client.kserve('ModelConfig', pb.ModelConfigRequest(
            name=name, version=version)).config

    def stats(self, name='', version=''):
        return self.client.kserve('ModelStatistics', pb.ModelStatisticsRequest(
            name=name, version=version)).model_stats

    def one_stats(self, name):
        got = self.stats(name)
        self.assertEqual([s.name for s in got], [name])
        return got[0]

    def assert_tensors(self, got, expected, batched):
        self.assertEqual([t.name for t in got], [e[0] for e in expected])
        for t, (name, dtype, dims) in zip(got, expected):
            self.assertEqual(pb.DataType.Name(t.data_type), dtype, name)
            if batched:
                self.assertEqual(dims[0], -1, name)  # the batch dim
                dims = dims[1:]
            self.assertEqual(list(t.dims), dims, name)

    # -- ModelConfig --

    def test_config_unbatched_model(self):
        inputs, outputs = onnx_tensors(self.path)
        c = self.config('plain')
        self.assertEqual(c.name, 'plain')
        self.assertEqual(c.platform, 'onnxruntime_onnx')
        self.assertEqual(c.backend, 'tessera')
        self.assertEqual(c.max_batch_size, 0)
        self.assertEqual(c.WhichOneof('scheduling_choice'), None)
        self.assert_tensors(c.input, inputs, batched=False)
        self.assert_tensors(c.output, outputs, batched=False)
        # The plan as the admin service's ClusterStatus places it.
        params = {k: v.string_value for k, v in c.parameters.items()}
        status = admin.cluster_status(self.cluster.address)
        state, stages = admin.model_state(status, 'plain'), admin.shards_of(status, 'plain')
        self.assertEqual(params['strategy'], 'tensor')
        self.assertEqual(params['stages'], str(state.stages))
        self.assertEqual(params['shards'], '+'.join(str(len(s)) for s in stages.values()))
        self.assertIn('2', params['shards'].split('+'))  # shards=2 somewhere
        self.assertEqual(params['replicas'], '1')
        self.assertEqual(int(params['weight_bytes']), state.weight_bytes)
        self.assertTrue(params['plan'].startswith('tensor: '), params['plan'])
        self.assertEqual(c.version_policy.latest.num_versions, 1)
        self.assertEqual(self.config('plain', version='1'), c)

    def test_config_batched_model(self):
        inputs, outputs = onnx_tensors(self.path)
        c = self.config('batched')
        self.assertEqual(c.max_batch_size, MAX_BATCH)
        self.assertEqual(c.WhichOneof('scheduling_choice'), 'dynamic_batching')
        self.assertEqual(c.dynamic_batching.max_queue_delay_microseconds, WINDOW_US)
        self.assert_tensors(c.input, inputs, batched=True)
        self.assert_tensors(c.output, outputs, batched=True)
        self.assertEqual(c.parameters['strategy'].string_value, 'data')

    def test_config_ensemble(self):
        inputs, _ = onnx_tensors(self.path)
        c = self.config('ens')
        self.assertEqual(c.platform, 'ensemble')
        self.assertEqual(c.WhichOneof('scheduling_choice'), 'ensemble_scheduling')
        self.assertEqual([(s.model_name, s.model_version)
                          for s in c.ensemble_scheduling.step],
                         [('plain', -1), ('batched', -1)])
        self.assertEqual(c.max_batch_size, 0)
        self.assert_tensors(c.input, inputs, batched=False)
        self.assertEqual(c.parameters['members'].string_value, 'plain+batched')
        self.assertEqual(c.parameters['fuse'].string_value, 'mean')

    def assert_not_found(self, call, message):
        with self.assertRaises(grpc.RpcError) as cm:
            call()
        self.assertEqual(cm.exception.code(), grpc.StatusCode.NOT_FOUND)
        self.assertEqual(cm.exception.details(), message)

    def test_unknown_model_and_version(self):
        for call in (self.config, self.stats):
            self.assert_not_found(lambda: call('nope'), "model 'nope' is not loaded")
            self.assert_not_found(lambda: call('plain', version='2'),
                                  "model 'plain' has no version '2' (only 1)")

    # -- ModelStatistics --

    def durations(self, s):
        return {k: (getattr(s.inference_stats, k).count, getattr(s.inference_stats, k).ns)
                for k in DURATIONS + ('fail',)}

    def test_statistics_follow_requests(self):
        n, rows = 6, 3
        start_ms = int(time.time() * 1000)
        before = self.one_stats('plain')
        for i in range(n):
            self.client.infer('plain', export_models.make_inputs('logistic', rows, seed=i))
        good = self.one_stats('plain')
        with self.assertRaises(grpc.RpcError) as cm:
            self.client.infer('plain', {'features': np.zeros((2, 9), np.float32)})
        self.assertEqual(cm.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
        bad = self.one_stats('plain')
        end_ms = int(time.time() * 1000)

        b, g, f = self.durations(before), self.durations(good), self.durations(bad)
        for k in DURATIONS:
            self.assertEqual(g[k][0] - b[k][0], n, k)
            self.assertGreater(g[k][1], b[k][1], k)   # every phase takes time
        self.assertEqual(g['fail'], b['fail'])
        self.assertEqual(good.inference_count - before.inference_count, n)  # 1 each
        self.assertEqual(good.execution_count - before.execution_count, n)
        # The bad request failed validation: one more failure, nothing else ran.
        self.assertEqual(f['fail'][0] - g['fail'][0], 1)
        self.assertGreater(f['fail'][1], g['fail'][1])
        for k in DURATIONS:
            self.assertEqual(f[k], g[k], k)
        self.assertEqual(bad.inference_count, good.inference_count)
        self.assertTrue(start_ms <= bad.last_inference <= end_ms,
                        (start_ms, bad.last_inference, end_ms))
        self.assertEqual(bad.version, '1')

    def test_batched_statistics_count_rows(self):
        n, rows = 4, 2
        before = self.one_stats('batched')
        for i in range(n):  # one at a time: each is a batch of its own
            self.client.infer('batched', export_models.make_inputs('logistic', rows, seed=i))
        after = self.one_stats('batched')
        self.assertEqual(after.inference_count - before.inference_count, n * rows)
        self.assertEqual(after.execution_count - before.execution_count, n)
        self.assertEqual(after.inference_stats.success.count
                         - before.inference_stats.success.count, n)
        self.assertEqual(after.inference_stats.queue.count
                         - before.inference_stats.queue.count, n)

    def test_durations_are_monotonic(self):
        seen = []
        for i in range(5):
            self.client.infer('plain', export_models.make_inputs('logistic', 1, seed=i))
            seen.append(self.durations(self.one_stats('plain')))
        for earlier, later in zip(seen, seen[1:]):
            for k in DURATIONS:
                self.assertEqual(later[k][0], earlier[k][0] + 1, k)
                self.assertGreater(later[k][1], earlier[k][1], k)

    def test_every_model_when_name_is_empty(self):
        names = sorted(s.name for s in self.stats())
        self.assertEqual(names, sorted(m.name for m in self.client.repository_index()))
        self.assertEqual(names, ['batched', 'ens', 'plain'])


class TritonRepository(kserve.ClusterTestCase):
    """--model-repository in Triton's layout NAME/VERSION/model.onnx: the
    newest version is served and reported; other versions are NOT_FOUND."""

    @classmethod
    def cluster_options(cls, tmp):
        repo = os.path.join(tmp, 'repository')
        path = export_models.export('logistic', tmp)
        for version in ('1', '3'):
            os.makedirs(os.path.join(repo, 'lr', version))
            with open(path, 'rb') as src, \
                    open(os.path.join(repo, 'lr', version, 'model.onnx'), 'wb') as dst:
                dst.write(src.read())
        with open(os.path.join(repo, 'README.md'), 'w') as f:
            f.write('a repository\n')
        return {'extra_args': ['--model-repository', repo], 'local_workers': 1}

    def test_newest_version_served(self):
        self.assertEqual(list(self.client.model_metadata('lr').versions), ['3'])
        self.assertEqual([(m.name, m.version) for m in self.client.repository_index()],
                         [('lr', '3')])
        inputs = export_models.make_inputs('logistic', 4, seed=1)
        want = export_models.reference('logistic', inputs)
        req = self.client.build_request('lr', inputs)
        req.model_version = '3'
        resp = self.client.infer_request(req)
        self.assertEqual(resp.model_version, '3')
        got = self.client.decode_response(resp)
        for name in want:
            np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-5)
        stats = self.client.kserve('ModelStatistics', pb.ModelStatisticsRequest(
            name='lr', version='3')).model_stats
        self.assertEqual([(s.name, s.version) for s in stats], [('lr', '3')])
        self.assertEqual(stats[0].inference_stats.success.count, 1)

    def test_other_version_not_found(self):
        req = self.client.build_request('lr', export_models.make_inputs('logistic', 1))
        req.model_version = '1'
        with self.assertRaises(grpc.RpcError) as cm:
            self.client.infer_request(req)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.NOT_FOUND)
        self.assertEqual(cm.exception.details(), "model 'lr' has no version '1' (only 3)")


class UnknownLayout(unittest.TestCase):
    """A repository Tessera does not understand stops the coordinator with
    the path at fault, instead of serving zero models."""

    def check_refused(self, files, fault, why):
        tmp = tempfile.mkdtemp(prefix='tessera_layout_')
        try:
            repo = os.path.join(tmp, 'repository')
            for rel in files:
                os.makedirs(os.path.dirname(os.path.join(repo, rel)), exist_ok=True)
                with open(os.path.join(repo, rel), 'w') as f:
                    f.write('x')
            p = kserve.run_command([kserve.binary('tessera-coordinator'), '--listen',
                                    '127.0.0.1:0', '--model-repository', repo])
            self.assertNotEqual(p.returncode, 0, p.stdout)
            self.assertNotIn('listening on', p.stdout)
            self.assertIn(os.path.join(repo, fault), p.stderr)
            self.assertIn(why, p.stderr)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def test_flat_model_files(self):
        self.check_refused(['mlp.onnx'], 'mlp.onnx', 'a model file at the top')

    def test_other_framework(self):
        self.check_refused(['resnet/1/model.savedmodel/saved_model.pb'], 'resnet/1',
                           'a version directory without model.onnx')

    def test_directory_without_model(self):
        self.check_refused(['notes/todo.txt'], 'notes', 'not a model')


if __name__ == '__main__':
    unittest.main(verbosity=2)
