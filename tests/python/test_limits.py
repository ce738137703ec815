"""Limits against a real coordinator and worker (issue 12): input built to
crash or exhaust a daemon is refused with its exact gRPC status, and the
daemon still serves a good request afterwards. docs/LIMITS.md lists the
limits these tests hold the daemons to.
"""
import atexit
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

import grpc
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import export_models  # noqa: E402
import kserve  # noqa: E402

export_models.torch.set_num_threads(1)

MODEL = 'mlp'
WORKER = '/tessera.worker.v1.Worker/'


def _compile_worker_proto():
    out = tempfile.mkdtemp(prefix='tessera_worker_pb2_')
    atexit.register(shutil.rmtree, out, True)
    subprocess.run(['protoc', '--proto_path=' + os.path.join(kserve.SOURCE, 'proto'),
                    '--python_out=' + out, 'worker.proto'], check=True)
    sys.path.insert(0, out)
    import worker_pb2
    sys.path.remove(out)
    return worker_pb2


wpb = _compile_worker_proto()


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
        return {'models': [], 'local_workers': 1,
                'extra_args': ['--model-repository', cls.repo]}

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
