"""Bad input against a real coordinator: every class of malformed request gets
its exact gRPC status and a message naming the tensor or field at fault, and
the server keeps answering good requests afterwards. Broken model files and
clusters without a live worker are refused cleanly too.

The model is the MLP from export_models: input 'embedding' FP32 [-1, 32],
output 'log_probs' FP32 [-1, 10].
"""
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import unittest

import grpc
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import admin  # noqa: E402
import export_models  # noqa: E402
import kserve  # noqa: E402

# The reference runs are tiny; leave the cores to the daemons under test.
export_models.torch.set_num_threads(1)

MODEL = 'mlp'
INPUT = 'embedding'
INVALID = grpc.StatusCode.INVALID_ARGUMENT


def good_inputs(batch=2):
    return export_models.make_inputs(MODEL, batch, seed=batch)


class BadRequests(kserve.ClusterTestCase):
    @classmethod
    def cluster_options(cls, tmp):
        return {'models': [(MODEL, export_models.export(MODEL, tmp))], 'local_workers': 1}

    def assert_serving(self):
        inputs = good_inputs(3)
        got = self.client.infer(MODEL, inputs)['log_probs']
        want = export_models.reference(MODEL, inputs)['log_probs']
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)

    def expect(self, request, code, *words):
        """Sends request; expects `code` and each word in the details; then a
        good request must still work."""
        with self.assertRaises(grpc.RpcError) as cm:
            self.client.infer_request(request)
        e = cm.exception
        self.assertEqual(e.code(), code, e.details())
        for w in words:
            self.assertIn(w, e.details())
        self.assert_serving()
        return e.details()

    def request(self, inputs=None, **kw):
        return self.client.build_request(MODEL, good_inputs() if inputs is None else inputs, **kw)

    # ---- one class each ----------------------------------------------------

    def test_wrong_datatype(self):
        # Consistent FP64 tensor (bytes match), but the model wants FP32.
        inputs = {INPUT: good_inputs()[INPUT].astype(np.float64)}
        self.expect(self.request(inputs), INVALID, INPUT)
        # A name that is no KServe datatype at all.
        self.expect(self.request(datatypes={INPUT: 'FLOAT32'}), INVALID, INPUT)

    def test_wrong_rank(self):
        a = good_inputs()[INPUT]
        self.expect(self.request({INPUT: a.reshape(2, 32, 1)}), INVALID, INPUT)
        self.expect(self.request({INPUT: a.reshape(64)}), INVALID, INPUT)

    def test_wrong_dim(self):
        a = good_inputs()[INPUT][:, :31].copy()
        self.expect(self.request({INPUT: a}), INVALID, INPUT)

    def test_raw_length_mismatch(self):
        a = good_inputs()[INPUT]
        self.expect(self.request(raw={INPUT: a.tobytes()[:-4]}), INVALID, INPUT)
        self.expect(self.request(raw={INPUT: a.tobytes() + b'\0\0\0\0'}), INVALID, INPUT)
        self.expect(self.request(raw={INPUT: a.tobytes()[:-1]}), INVALID, INPUT)

    def test_raw_and_typed_for_one_input(self):
        req = self.request()
        req.inputs[0].contents.fp32_contents.extend(good_inputs()[INPUT].ravel().tolist())
        self.expect(req, INVALID, INPUT)

    def test_typed_count_mismatch(self):
        req = self.request(typed=True)
        del req.inputs[0].contents.fp32_contents[-1]
        self.expect(req, INVALID, INPUT)
        req = self.request(typed=True)
        req.inputs[0].contents.fp32_contents.append(1.0)
        self.expect(req, INVALID, INPUT)

    def test_typed_wrong_field(self):
        # FP32 declared, values sent in int_contents.
        req = self.request(typed=True)
        values = req.inputs[0].contents.fp32_contents[:]
        req.inputs[0].contents.ClearField('fp32_contents')
        req.inputs[0].contents.int_contents.extend(int(v) for v in values)
        self.expect(req, INVALID, INPUT)

    def test_unknown_input(self):
        a = good_inputs()[INPUT]
        self.expect(self.request({'bogus_input': a}), INVALID, 'bogus_input')
        self.expect(self.request({INPUT: a, 'bogus_input': a}), INVALID, 'bogus_input')

    def test_missing_input(self):
        self.expect(self.request({}), INVALID, INPUT)

    def test_duplicate_input(self):
        req = self.request()
        dup = req.inputs.add()
        dup.CopyFrom(req.inputs[0])
        req.raw_input_contents.append(req.raw_input_contents[0])
        self.expect(req, INVALID, INPUT)

    def test_element_count_overflow(self):
        self.expect(self.request(shapes={INPUT: [2 ** 62, 8]}), INVALID, INPUT)
        # Element count above int64: 2^62 * 32 and 2^58 * 32 = 2^63.
        self.expect(self.request(shapes={INPUT: [2 ** 62, 32]}), INVALID, INPUT)
        self.expect(self.request(shapes={INPUT: [2 ** 58, 32]}), INVALID, INPUT)
        # Element count fits (2^62) but the byte count (2^64) does not.
        self.expect(self.request(shapes={INPUT: [2 ** 57, 32]}), INVALID, INPUT)
        req = self.request(typed=True, shapes={INPUT: [2 ** 62, 32]})
        self.expect(req, INVALID, INPUT)

    def test_negative_dims(self):
        self.expect(self.request(shapes={INPUT: [-1, 32]}), INVALID, INPUT)
        self.expect(self.request(shapes={INPUT: [-2, -32]}), INVALID, INPUT)

    def test_unknown_requested_output(self):
        self.expect(self.request(outputs=['nope_output']), INVALID, 'nope_output')
        self.expect(self.request(outputs=['log_probs', 'nope_output']), INVALID, 'nope_output')

    def test_unknown_model(self):
        req = self.request()
        req.model_name = 'no_such_model'
        self.expect(req, grpc.StatusCode.NOT_FOUND, 'no_such_model')

    def test_raw_count_mismatch(self):
        req = self.request()
        req.raw_input_contents.append(b'\0' * 8)
        self.expect(req, INVALID, 'raw_input_contents')

    def test_garbage_bytes(self):
        # Not a ModelInferRequest at all: the server must reject, not crash.
        method = self.client.channel.unary_unary(kserve.KSERVE + 'ModelInfer')
        with self.assertRaises(grpc.RpcError) as cm:
            method(b'\xff\xff\xff\xff\x0f garbage', timeout=30)
        self.assertEqual(cm.exception.code(), INVALID)
        self.assert_serving()

    def test_unknown_method(self):
        method = self.client.channel.unary_unary(kserve.KSERVE + 'NoSuchMethod')
        with self.assertRaises(grpc.RpcError) as cm:
            method(b'', timeout=30)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.UNIMPLEMENTED)
        self.assert_serving()


def closed_port():
    """A loopback port nothing listens on (bound, then released)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
    s.close()
    return port


class NoLiveWorker(unittest.TestCase):
    def test_worker_died(self):
        """The only worker is killed after the model was placed on it."""
        tmp = tempfile.mkdtemp(prefix='tessera_dead_')
        try:
            path = export_models.export(MODEL, tmp)
            with kserve.Worker() as worker:
                cluster = kserve.Cluster(models=[(MODEL, path)], local_workers=0,
                                         workers=[worker.address])
                with cluster:
                    cluster.client.infer(MODEL, good_inputs())
                    worker.kill()
                    with self.assertRaises(grpc.RpcError) as cm:
                        cluster.client.infer(MODEL, good_inputs(), timeout=60)
                    self.assertEqual(cm.exception.code(), grpc.StatusCode.UNAVAILABLE,
                                     cm.exception.details())
                    self.assertTrue(cluster.client.server_live())
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def test_unavailable(self):
        """The only worker was never up: the coordinator still serves, and
        inference answers UNAVAILABLE."""
        tmp = tempfile.mkdtemp(prefix='tessera_nolive_')
        try:
            path = export_models.export(MODEL, tmp)
            cluster = kserve.Cluster(models=[(MODEL, path)], local_workers=0,
                                     workers=['127.0.0.1:%d' % closed_port()],
                                     wait_ready=False)
            with cluster:
                with self.assertRaises(grpc.RpcError) as cm:
                    cluster.client.infer(MODEL, good_inputs(), timeout=60)
                self.assertEqual(cm.exception.code(), grpc.StatusCode.UNAVAILABLE,
                                 cm.exception.details())
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


class BadModelFiles(unittest.TestCase):
    """The coordinator refuses a broken --model file: it exits non-zero with a
    message naming the file, instead of serving."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix='tessera_badmodel_')
        cls.good = export_models.export(MODEL, cls.tmp)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def expect_refused(self, path):
        cmd = [kserve.binary('tessera-coordinator'), '--listen', '127.0.0.1:0',
               '--local-workers', '1', '--model', '%s=%s' % (MODEL, path)]
        try:
            p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               universal_newlines=True, timeout=60)
        except subprocess.TimeoutExpired as e:
            self.fail('coordinator still running 60 s after being given %s:\n%s'
                      % (path, e.stdout))
        self.assertNotEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertGreater(p.returncode, 0, 'killed by signal %d' % -p.returncode)
        self.assertNotIn('listening on', p.stdout)
        self.assertIn(path, p.stderr)

    def test_corrupt_file(self):
        path = os.path.join(self.tmp, 'corrupt.onnx')
        with open(path, 'wb') as f:
            f.write(np.random.RandomState(7).bytes(4096))
        self.expect_refused(path)

    def test_truncated_file(self):
        with open(self.good, 'rb') as f:
            data = f.read()
        path = os.path.join(self.tmp, 'truncated.onnx')
        with open(path, 'wb') as f:
            f.write(data[:len(data) // 2])
        self.expect_refused(path)

    def test_missing_file(self):
        self.expect_refused(os.path.join(self.tmp, 'missing.onnx'))

    def test_empty_file(self):
        path = os.path.join(self.tmp, 'empty.onnx')
        open(path, 'wb').close()
        self.expect_refused(path)


class ActivationLimit(kserve.ClusterTestCase):
    """A torch-exported model whose output size comes from an input's value
    (torch.arange(count[0]) * scale: Gather -> Cast -> Range -> Cast -> Mul).
    Asked for a huge output, each worker refuses the run before allocating
    it (its --activation-limit, here 64 MiB through the coordinator's
    --worker-activation-limit); both replicas refuse, so the client gets
    RESOURCE_EXHAUSTED naming the shard, the node, the bytes and the limit.
    The workers stay up and keep answering correctly."""

    MODEL = 'ramp'
    LIMIT = 64 << 20

    @staticmethod
    def export_ramp(outdir):
        torch = export_models.torch

        class Ramp(torch.nn.Module):
            def forward(self, count, scale):
                return torch.arange(count[0], dtype=torch.int64).to(torch.float32) * scale

        path = os.path.join(outdir, 'ramp.onnx')
        torch.onnx.export(Ramp(), (torch.tensor([5]), torch.tensor([2.0])), path,
                          input_names=['count', 'scale'], output_names=['ramp'],
                          dynamic_axes={'ramp': {0: 'n'}}, opset_version=13)
        return path

    @classmethod
    def cluster_options(cls, tmp):
        return {'models': [(cls.MODEL, cls.export_ramp(tmp), {'replicas': 2})],
                'local_workers': 2,
                'extra_args': ['--worker-activation-limit', '64M', '--worker-threads', '1']}

    def ramp(self, count, scale=0.5):
        return self.client.infer(self.MODEL, {'count': np.array([count], dtype=np.int64),
                                              'scale': np.array([scale], dtype=np.float32)})['ramp']

    def assert_ramp(self, count, scale=0.5):
        got = self.ramp(count, scale)
        want = np.arange(count, dtype=np.float64) * np.float64(np.float32(scale))
        self.assertEqual(got.shape, (count,))
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=0)

    def test_huge_output_refused_then_served(self):
        self.assert_ramp(1000)
        # 1e9 int64 values: 8 GB, far beyond 64 MiB. Several times, and with
        # sizes just over the limit, so nothing is leaked or left behind.
        for count in (10**9, 10**9, (self.LIMIT // 8) + 1, 10**15):
            with self.assertRaises(grpc.RpcError) as cm:
                self.ramp(count)
            e = cm.exception
            self.assertEqual(e.code(), grpc.StatusCode.RESOURCE_EXHAUSTED, e.details())
            for word in ('activation memory exhausted', '(Range)', "'%s" % self.MODEL,
                         'is %d bytes' % (count * 8), 'the limit is %d bytes' % self.LIMIT):
                self.assertIn(word, e.details())
            self.assert_ramp(1000 + count % 7, scale=-1.25)
        # Within the limit: 4M float32 outputs (16 MiB) beside 32 MiB of int64.
        self.assert_ramp(4 << 20, scale=3.0)
        # Neither worker was taken out of rotation by the refusals.
        status = admin.cluster_status(self.cluster.address)
        self.assertEqual([w.state for w in status.workers], ['UP', 'UP'], status)

    def test_default_limit_refuses_absurd_sizes(self):
        """A worker started without --activation-limit derives one from its
        memory: 1e15 values (8 PB) are refused, not attempted."""
        with kserve.Worker() as worker:
            cluster = kserve.Cluster(models=[(self.MODEL, self.export_ramp(self.tmp))],
                                     local_workers=0, workers=[worker.address])
            with cluster:
                with self.assertRaises(grpc.RpcError) as cm:
                    cluster.client.infer(self.MODEL, {'count': np.array([10**15], dtype=np.int64),
                                                      'scale': np.array([1], dtype=np.float32)})
                e = cm.exception
                self.assertEqual(e.code(), grpc.StatusCode.RESOURCE_EXHAUSTED, e.details())
                self.assertIn('activation memory exhausted', e.details())
                got = cluster.client.infer(self.MODEL, {'count': np.array([7], dtype=np.int64),
                                                        'scale': np.array([2], dtype=np.float32)})
                np.testing.assert_array_equal(got['ramp'], np.arange(7) * 2.0)

    def test_bad_limit_values_are_refused(self):
        """A limit that is no size stops either daemon at once (status 2),
        naming the option and the value."""
        for cmd, option in (
                ([kserve.binary('tessera-worker'), '--listen', '127.0.0.1:0'],
                 '--activation-limit'),
                ([kserve.binary('tessera-coordinator'), '--listen', '127.0.0.1:0',
                  '--local-workers', '1'], '--worker-activation-limit')):
            for value in ('12Q', '-5', 'lots', ''):
                p = subprocess.run(cmd + [option, value], stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, universal_newlines=True,
                                   timeout=60)
                self.assertEqual(p.returncode, 2, (cmd, value, p.stdout, p.stderr))
                self.assertIn(option, p.stderr)
                self.assertNotIn('listening on', p.stdout)


if __name__ == '__main__':
    unittest.main()
