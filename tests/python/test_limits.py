"""Limits against a real coordinator and worker (issue 12): input built to
crash or exhaust a daemon is refused with its exact gRPC status, and the
daemon still serves a good request afterwards. docs/LIMITS.md lists the
limits these tests hold the daemons to.
"""
import hashlib
import os
import shutil
import sys
import tempfile
import unittest

import grpc
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import admin  # noqa: E402
import export_models  # noqa: E402
import kserve  # noqa: E402

export_models.torch.set_num_threads(1)

MODEL = 'mlp'
WORKER = '/tessera.worker.v1.Worker/'
SECRET = 'limits-test-cluster-secret-0123456789'


wpb, = kserve.compile_protos('worker.proto')


def onnx_pb():
    """onnx.proto's messages, compiled from the system's onnx.proto (the
    one the daemons are built from)."""
    out = tempfile.mkdtemp(prefix='tessera_onnx_pb2_')
    import atexit
    import importlib
    import subprocess
    atexit.register(shutil.rmtree, out, True)
    subprocess.run(['protoc', '--proto_path=/usr/include/onnx',
                    '--python_out=' + out, 'onnx.proto'], check=True)
    sys.path.insert(0, out)
    try:
        return importlib.import_module('onnx_pb2')
    finally:
        sys.path.remove(out)


def external_data_model(path, location):
    """The exported model at `path` with its first initializer's bytes moved
    out to `location` (data_location = EXTERNAL), as the ONNX CVEs on
    external data did with '../' locations."""
    opb = onnx_pb()
    m = opb.ModelProto()
    with open(path, 'rb') as f:
        m.ParseFromString(f.read())
    t = m.graph.initializer[0]
    t.ClearField('raw_data')
    t.ClearField('float_data')
    t.data_location = opb.TensorProto.EXTERNAL
    e = t.external_data.add()
    e.key, e.value = 'location', location
    return m.SerializeToString()


def _wrap(number, payload):
    """payload as length-delimited field `number` (protobuf wire format)."""
    def varint(v):
        out = bytearray()
        while True:
            b = v & 0x7f
            v >>= 7
            out.append(b | (0x80 if v else 0))
            if not v:
                return bytes(out)
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def deep_model(levels):
    """ModelProto bytes with graphs nested `levels` deep in attribute
    subgraphs (Graph.node -> Node.attribute -> Attribute.g -> Graph ...).
    3000 levels, 63 KB, overflowed protobuf-c's stack before the limit."""
    b = b''
    for _ in range(levels):
        b = _wrap(1, _wrap(5, _wrap(6, b)))
    return _wrap(7, b)


class Limits(kserve.ClusterTestCase):
    @classmethod
    def cluster_options(cls, tmp):
        cls.repo = os.path.join(tmp, 'repo')
        os.makedirs(os.path.join(cls.repo, MODEL))
        shutil.copy(export_models.export(MODEL, tmp),
                    os.path.join(cls.repo, MODEL, 'model.onnx'))
        # RegisterWorker needs the cluster secret (docs/SECURITY.md): the
        # registration tests send it, so that the address checks are reached.
        cls.secret = os.path.join(tmp, 'secret')
        with open(os.open(cls.secret, os.O_WRONLY | os.O_CREAT, 0o600), 'w') as f:
            f.write(SECRET + '\n')
        return {'models': [], 'local_workers': 1,
                'extra_args': ['--model-repository', cls.repo,
                               '--cluster-secret-file', cls.secret]}

    def admin(self):
        return admin.AdminClient(self.cluster.address,
                                 metadata=[('tessera-cluster-secret', SECRET)])

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.client.load(MODEL)

    def assert_serving(self):
        inputs = export_models.make_inputs(MODEL, 3, seed=3)
        got = self.client.infer(MODEL, inputs)['log_probs']
        want = export_models.reference(MODEL, inputs)['log_probs']
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)

    def expect_code(self, code, call, *words):
        with self.assertRaises(grpc.RpcError) as cm:
            call()
        e = cm.exception
        self.assertEqual(e.code(), code, e.details())
        for w in words:
            self.assertIn(w, e.details())
        return e

    def test_deep_model_repository_load(self):
        # written after start: a startup load of it would stop the daemon
        os.makedirs(os.path.join(self.repo, 'deep'))
        with open(os.path.join(self.repo, 'deep', 'model.onnx'), 'wb') as f:
            f.write(deep_model(3000))
        self.expect_code(grpc.StatusCode.INVALID_ARGUMENT,
                         lambda: self.client.load('deep'), 'limit of 100')
        self.assert_serving()


    def put_model(self, name, data):
        os.makedirs(os.path.join(self.repo, name), exist_ok=True)
        with open(os.path.join(self.repo, name, 'model.onnx'), 'wb') as f:
            f.write(data)

    def test_names_confined_to_repository(self):
        # a model beside the repository that '..' would have loaded
        with open(os.path.join(self.repo, MODEL, 'model.onnx'), 'rb') as f:
            good = f.read()
        with open(os.path.join(os.path.dirname(self.repo), 'model.onnx'), 'wb') as f:
            f.write(good)
        for name in ['..', '.', '../' + MODEL, '/etc', '/' + self.repo,
                     MODEL + '/..', 'a\nFORGED LOG LINE', 'm\x01', '.hidden']:
            e = self.expect_code(grpc.StatusCode.INVALID_ARGUMENT,
                                 lambda: self.client.load(name),
                                 'is not a valid repository entry')
            self.assertNotIn('\n', e.details())
        self.expect_code(grpc.StatusCode.INVALID_ARGUMENT,
                         lambda: self.client.load(''), 'empty')
        self.assert_serving()

    def test_symlinks_out_of_repository(self):
        outside = tempfile.mkdtemp(prefix='tessera_outside_')
        self.addCleanup(shutil.rmtree, outside, True)
        shutil.copy(os.path.join(self.repo, MODEL, 'model.onnx'), outside)
        os.symlink(outside, os.path.join(self.repo, 'dirlink'))
        os.makedirs(os.path.join(self.repo, 'filelink'))
        os.symlink(os.path.join(outside, 'model.onnx'),
                   os.path.join(self.repo, 'filelink', 'model.onnx'))
        for name in ['dirlink', 'filelink']:
            self.expect_code(grpc.StatusCode.NOT_FOUND,
                             lambda: self.client.load(name),
                             'resolves outside the model repository')
        # a link inside the repository is served
        os.symlink(MODEL, os.path.join(self.repo, 'alias'))
        self.client.load('alias')
        inputs = export_models.make_inputs(MODEL, 2, seed=5)
        np.testing.assert_allclose(
            self.client.infer('alias', inputs)['log_probs'],
            export_models.reference(MODEL, inputs)['log_probs'], rtol=1e-5, atol=1e-6)
        self.assert_serving()

    def test_external_data_refused(self):
        src = os.path.join(self.repo, MODEL, 'model.onnx')
        for i, location in enumerate(['../../../../etc/passwd', '/etc/passwd',
                                      'weights.bin']):
            name = 'external%d' % i
            self.put_model(name, external_data_model(src, location))
            self.expect_code(grpc.StatusCode.UNIMPLEMENTED,
                             lambda: self.client.load(name),
                             'external data is not supported')
        self.assert_serving()

    def test_worker_addresses_validated(self):
        with self.admin() as a:
            for address in ['unix:/tmp/tessera.sock', 'unix:///tmp/x:1',
                            'dns:///127.0.0.1:1', '127.0.0.1', '127.0.0.1:0',
                            '127.0.0.1:65536', 'h:1\nFORGED LOG LINE',
                            'a b:1', '']:
                e = self.expect_code(grpc.StatusCode.INVALID_ARGUMENT,
                                     lambda: a.register_worker(address),
                                     'is not HOST:PORT')
                self.assertNotIn('\n', e.details())
            self.assertNotIn('FORGED', self.cluster.log().replace(
                '\\x0aFORGED', ''))
        self.assert_serving()

    def test_bogus_registrations_hold_no_slot(self):
        with self.admin() as a:
            before = len(a.cluster_status().workers)
            # 300 addresses nothing listens on (more than the 256 slots)
            for port in range(1, 301):
                self.expect_code(grpc.StatusCode.UNAVAILABLE,
                                 lambda: a.register_worker('127.0.0.1:%d' % port),
                                 'not registered')
            self.assertEqual(len(a.cluster_status().workers), before)
            # a real worker still joins and serves
            with kserve.Worker() as w:
                r = a.register_worker(w.address)
                self.assertFalse(r.known)
                self.assertEqual(r.index, before)
                st = a.cluster_status()
                self.assertEqual(len(st.workers), before + 1)
                self.assertTrue(st.workers[before].up)
                self.assert_serving()


class WorkerLimits(unittest.TestCase):
    """A worker on its own, called directly."""

    def load_shard(self, address, data, timeout=30):
        sid = hashlib.sha256(data).hexdigest()
        chunk = wpb.LoadShardChunk(shard_id=sid, total_bytes=len(data), offset=0,
                                   data=data, label='limits')
        with grpc.insecure_channel(address) as ch:
            call = ch.stream_unary(WORKER + 'LoadShard',
                                   request_serializer=wpb.LoadShardChunk.SerializeToString,
                                   response_deserializer=wpb.LoadShardResponse.FromString)
            return call(iter([chunk]), timeout=timeout)

    def status(self, address):
        with grpc.insecure_channel(address) as ch:
            call = ch.unary_unary(WORKER + 'Status',
                                  request_serializer=wpb.StatusRequest.SerializeToString,
                                  response_deserializer=wpb.StatusResponse.FromString)
            return call(wpb.StatusRequest(), timeout=10)

    def test_external_data_load_shard(self):
        with kserve.Worker() as w:
            tmp = tempfile.mkdtemp(prefix='tessera_limits_')
            self.addCleanup(shutil.rmtree, tmp, True)
            data = external_data_model(export_models.export(MODEL, tmp),
                                       '../../../../etc/passwd')
            with self.assertRaises(grpc.RpcError) as cm:
                self.load_shard(w.address, data)
            self.assertEqual(cm.exception.code(), grpc.StatusCode.UNIMPLEMENTED,
                             cm.exception.details())
            self.assertIn('external data is not supported', cm.exception.details())
            self.status(w.address)

    def test_deep_shard_load_shard(self):
        with kserve.Worker() as w:
            with self.assertRaises(grpc.RpcError) as cm:
                self.load_shard(w.address, deep_model(3000))
            self.assertEqual(cm.exception.code(), grpc.StatusCode.INVALID_ARGUMENT,
                             cm.exception.details())
            self.assertIn('limit of 100', cm.exception.details())
            # still serving: a real model loads
            tmp = tempfile.mkdtemp(prefix='tessera_limits_')
            self.addCleanup(shutil.rmtree, tmp, True)
            with open(export_models.export(MODEL, tmp), 'rb') as f:
                good = f.read()
            r = self.load_shard(w.address, good)
            self.assertEqual(r.shard_id, hashlib.sha256(good).hexdigest())
            self.status(w.address)


if __name__ == '__main__':
    unittest.main()
