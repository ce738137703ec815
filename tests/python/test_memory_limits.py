"""Memory bombs (issue 12, item 6) against real daemons: load-time constant
folding held to the fold limit and the memory limit on a worker's LoadShard
and a coordinator's repository load, and LoadShard upload reservations
capped in bytes and in number, with a deadline for a stalled upload. Each
refusal is checked with its exact gRPC status and message, and the daemon
then still serves a good model correctly. docs/LIMITS.md lists the limits.
"""
import hashlib
import os
import shutil
import sys
import tempfile
import threading
import unittest

import grpc
import numpy as np
from onnx import TensorProto, helper

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import export_models  # noqa: E402
import kserve  # noqa: E402
import test_limits  # noqa: E402  (its expect_code; its tests do not run here)

export_models.torch.set_num_threads(1)

MODEL = 'mlp'
WORKER = '/tessera.worker.v1.Worker/'
GIB = 1 << 30
MIB = 1 << 20

wpb, = kserve.compile_protos('worker.proto')


def fold_model(elems, op='ConstantOfShape', value=2.5):
    """y = x + OP(...) with x float[elems]: the OP node's inputs are all
    constants (Constant nodes), so the loader folds its float[elems] output
    (4 x elems bytes) at load time, whatever the size of the model (a few
    hundred bytes)."""
    nodes = [helper.make_node('Constant', [], ['shape'], name='dims',
                              value=helper.make_tensor('d', TensorProto.INT64,
                                                       [1], [elems]))]
    if op == 'ConstantOfShape':
        nodes.append(helper.make_node(
            'ConstantOfShape', ['shape'], ['big'], name='bomb',
            value=helper.make_tensor('v', TensorProto.FLOAT, [1], [value])))
    elif op == 'Expand':
        nodes.append(helper.make_node(
            'Constant', [], ['one'], name='one',
            value=helper.make_tensor('o', TensorProto.FLOAT, [1], [value])))
        nodes.append(helper.make_node('Expand', ['one', 'shape'], ['big'],
                                      name='bomb'))
    nodes.append(helper.make_node('Add', ['x', 'big'], ['y'], name='use'))
    graph = helper.make_graph(
        nodes, 'fold',
        [helper.make_tensor_value_info('x', TensorProto.FLOAT, [elems])],
        [helper.make_tensor_value_info('y', TensorProto.FLOAT, [elems])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', 13)])
    model.ir_version = 8
    return model.SerializeToString()


# What fold_model(n) folds: the Constant's int64[1] (8 bytes) and float[n].
def folded_bytes(elems):
    return 8 + 4 * elems


def chunk(data, total=None, offset=0, sid=None):
    return wpb.LoadShardChunk(
        shard_id=sid or hashlib.sha256(data).hexdigest(),
        total_bytes=len(data) if total is None else total, offset=offset,
        data=data, label='memory-limits')


class WorkerCase(unittest.TestCase):
    """Calls a worker directly, as the coordinator would (a standalone
    worker on loopback without a cluster secret is open)."""

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix='tessera_memory_limits_')
        self.addCleanup(shutil.rmtree, self.tmp, True)

    def stub(self, address, method, req, resp):
        ch = grpc.insecure_channel(address)
        self.addCleanup(ch.close)
        kind = ch.stream_unary if method == 'LoadShard' else ch.unary_unary
        return kind(WORKER + method, request_serializer=req.SerializeToString,
                    response_deserializer=resp.FromString)

    def load_shard(self, address, chunks, timeout=60):
        call = self.stub(address, 'LoadShard', wpb.LoadShardChunk,
                         wpb.LoadShardResponse)
        return call(iter(chunks), timeout=timeout)

    def status(self, address):
        call = self.stub(address, 'Status', wpb.StatusRequest,
                         wpb.StatusResponse)
        return call(wpb.StatusRequest(), timeout=10)

    expect_code = test_limits.Limits.expect_code

    def assert_serves(self, address):
        """A folded model loads, Status counts what it folded, and it runs:
        y = x + 2.5 against numpy."""
        n = 1000
        data = fold_model(n)
        r = self.load_shard(address, [chunk(data)])
        st = self.status(address)
        info = [s for s in st.shards if s.shard_id == r.shard_id]
        self.assertEqual(len(info), 1)
        self.assertEqual(info[0].bytes, len(data) + folded_bytes(n))
        x = np.random.default_rng(7).standard_normal(n).astype(np.float32)
        run = self.stub(address, 'RunShard', wpb.RunShardRequest,
                        wpb.RunShardResponse)
        out = run(wpb.RunShardRequest(
            shard_id=r.shard_id,
            inputs=[wpb.Tensor(name='x', dtype=TensorProto.FLOAT, shape=[n],
                               data=x.tobytes())]), timeout=30)
        self.assertEqual(list(out.outputs[0].shape), [n])
        y = np.frombuffer(out.outputs[0].data, dtype=np.float32)
        np.testing.assert_array_equal(y, (x.astype(np.float64) + 2.5)
                                      .astype(np.float32))
        # and a real exported model loads beside it
        with open(export_models.export(MODEL, self.tmp), 'rb') as f:
            good = f.read()
        r = self.load_shard(address, [chunk(good)])
        self.assertEqual(r.shard_id, hashlib.sha256(good).hexdigest())


class FoldLimits(WorkerCase):
    def test_bomb_refused_by_default(self):
        with kserve.Worker() as w:
            for op in ['ConstantOfShape', 'Expand']:
                data = fold_model(GIB // 4, op)  # 1 GiB of float
                self.assertLess(len(data), 400)
                self.expect_code(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    lambda: self.load_shard(w.address, [chunk(data)]),
                    "fold limit: max(64 MiB, 4 x the shard's %d bytes)" % len(data),
                    "node 'bomb' (%s) needs 1073741824 bytes for its outputs" % op,
                    'fold limit 67108864 bytes')
            st = self.status(w.address)
            self.assertEqual(st.memory_used, 0)
            self.assertEqual(len(st.shards), 0)
            self.assert_serves(w.address)

    def test_folding_within_memory_limit(self):
        with kserve.Worker(extra_args=['--memory-limit', '8M']) as w:
            # 16 MiB is under the default fold limit, over the memory limit
            data = fold_model(4 * MIB)
            self.expect_code(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                lambda: self.load_shard(w.address, [chunk(data)]),
                'fold limit: what the memory limit of 8388608 bytes leaves '
                'beside %d bytes in use' % len(data),
                "node 'bomb' (ConstantOfShape) needs 16777216 bytes")
            self.assertEqual(self.status(w.address).memory_used, 0)
            # 4 MiB fits: counted as the shard's bytes
            data = fold_model(MIB)
            self.load_shard(w.address, [chunk(data)])
            st = self.status(w.address)
            self.assertEqual(st.memory_used, len(data) + folded_bytes(MIB))
            self.assertEqual([s.bytes for s in st.shards],
                             [len(data) + folded_bytes(MIB)])
            self.assert_serves(w.address)

    def test_fold_limit_flag(self):
        with kserve.Worker(extra_args=['--fold-limit', '1M']) as w:
            data = fold_model(MIB)
            self.expect_code(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                lambda: self.load_shard(w.address, [chunk(data)]),
                'fold limit: --fold-limit', 'fold limit 1048576 bytes',
                "node 'bomb' (ConstantOfShape) needs 4194304 bytes")
            self.assert_serves(w.address)


class UploadLimits(WorkerCase):
    def test_terabyte_announcement_refused(self):
        with kserve.Worker() as w:
            data = fold_model(10)
            e = self.expect_code(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                lambda: self.load_shard(w.address, [chunk(data, total=1 << 40)]),
                'announces 1099511627776 bytes', '--upload-limit')
            self.assertIn('upload limit of', e.details())
            self.assertEqual(self.status(w.address).memory_used, 0)
            self.assert_serves(w.address)

    def test_upload_limit_counts_uploads_in_flight(self):
        with kserve.Worker(extra_args=['--upload-limit', '1M']) as w:
            held = self.hold_uploads(w.address, [600 * 1024])
            data = fold_model(10)
            self.expect_code(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                lambda: self.load_shard(w.address,
                                        [chunk(data, total=600 * 1024)]),
                'announces 614400 bytes', 'but 614400 bytes (614.4 kB) of '
                'uploads in flight', 'upload limit of 1048576 bytes')
            self.release(held, grpc.StatusCode.INVALID_ARGUMENT)
            self.assertEqual(self.status(w.address).memory_used, 0)
            self.assert_serves(w.address)

    def hold_uploads(self, address, sizes):
        """Starts one upload per size: its first chunk announces the size
        and carries 1 byte, then the stream waits. Returns once the worker
        has reserved them all (Status memory_used)."""
        held = []
        for i, size in enumerate(sizes):
            gate = threading.Event()

            def chunks(size=size, gate=gate, i=i):
                yield chunk(b'\0', total=size, sid='%064x' % (i + 1))
                gate.wait(120)
            call = self.stub(address, 'LoadShard', wpb.LoadShardChunk,
                             wpb.LoadShardResponse)
            held.append((gate, call.future(chunks(), timeout=120)))
        self.wait_memory_used(address, sum(sizes))
        return held

    def wait_memory_used(self, address, want):
        """Waits (30 s at most) for Status memory_used to be `want`."""
        for _ in range(600):
            if self.status(address).memory_used == want:
                break
            threading.Event().wait(0.05)
        self.assertEqual(self.status(address).memory_used, want)

    def release(self, held, code):
        """Lets the held uploads end (short of their bytes: `code`)."""
        for gate, fut in held:
            gate.set()
            e = fut.exception(timeout=60)
            self.assertIsNotNone(e)
            self.assertEqual(e.code(), code, e.details())

    def test_max_uploads(self):
        with kserve.Worker(extra_args=['--max-uploads', '2']) as w:
            held = self.hold_uploads(w.address, [1000, 1000])
            data = fold_model(10)
            self.expect_code(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                lambda: self.load_shard(w.address, [chunk(data)]),
                '2 uploads are in progress, the most this worker takes at '
                'once (--max-uploads)')
            self.release(held, grpc.StatusCode.INVALID_ARGUMENT)
            self.assertEqual(self.status(w.address).memory_used, 0)
            self.assert_serves(w.address)

    def test_stalled_upload_released(self):
        # one upload at a time: the stalled one would block every other
        with kserve.Worker(extra_args=['--max-uploads', '1',
                                       '--upload-timeout-ms', '1000']) as w:
            gate = threading.Event()
            self.addCleanup(gate.set)

            def stalled():
                yield chunk(b'\0', total=1 << 20, sid='%064x' % 7)
                gate.wait(120)
            call = self.stub(w.address, 'LoadShard', wpb.LoadShardChunk,
                             wpb.LoadShardResponse)
            fut = call.future(stalled(), timeout=120)
            e = fut.exception(timeout=90)
            self.assertIsNotNone(e)
            self.assertEqual(e.code(), grpc.StatusCode.DEADLINE_EXCEEDED,
                             e.details())
            self.assertIn('upload stalled: no chunk for', e.details())
            self.assertIn('over the upload timeout of 1000 ms '
                          '(--upload-timeout-ms); its reservation of 1048576 '
                          'bytes is released', e.details())
            gate.set()
            # the reservation and the upload's place are free again
            self.wait_memory_used(w.address, 0)
            self.assert_serves(w.address)


class CoordinatorFoldLimit(kserve.ClusterTestCase):
    """A repository load of a bomb: the coordinator's own load of the model
    is held to the fold limit."""

    expect_code = test_limits.Limits.expect_code
    assert_serving = test_limits.Limits.assert_serving  # MODEL against torch
    put_model = test_limits.Limits.put_model  # REPO/NAME/model.onnx

    # test_limits' cluster: a repository holding MODEL, one local worker
    cluster_options = classmethod(test_limits.Limits.cluster_options.__func__)

    def test_bomb_repository_load(self):
        # written after start: a startup load of it would stop the daemon
        for name, op in [('bomb', 'ConstantOfShape'), ('expand', 'Expand')]:
            self.put_model(name, fold_model(GIB // 4, op))
            self.expect_code(grpc.StatusCode.RESOURCE_EXHAUSTED,
                             lambda: self.client.load(name),
                             "node 'bomb' (%s) needs 1073741824 bytes for "
                             "its outputs" % op, 'fold limit 67108864 bytes')
        self.client.load(MODEL)
        self.assert_serving()


def reduced_fold_model(elems):
    """y = x + ReduceSum(ConstantOfShape([elems])) with x float[3]: the load
    folds 4 x elems bytes of zeros (and their sum, 0), the model and its
    requests stay small."""
    nodes = [
        helper.make_node('Constant', [], ['shape'], name='dims',
                         value=helper.make_tensor('d', TensorProto.INT64, [1],
                                                  [elems])),
        helper.make_node('ConstantOfShape', ['shape'], ['big'], name='bomb',
                         value=helper.make_tensor('v', TensorProto.FLOAT, [1],
                                                  [0.0])),
        helper.make_node('ReduceSum', ['big'], ['zero'], name='sum'),
        helper.make_node('Add', ['x', 'zero'], ['y'], name='use')]
    graph = helper.make_graph(
        nodes, 'reduced',
        [helper.make_tensor_value_info('x', TensorProto.FLOAT, [3])],
        [helper.make_tensor_value_info('y', TensorProto.FLOAT, [3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', 13)])
    model.ir_version = 8
    return model.SerializeToString()


class CoordinatorFoldLimitFlag(kserve.ClusterTestCase):
    """--fold-limit on the coordinator: its own loads and, passed on, its
    local workers' shard loads are held to it instead of the default."""

    @classmethod
    def cluster_options(cls, tmp):
        cls.repo = os.path.join(tmp, 'repo')
        os.makedirs(cls.repo)
        return {'models': [], 'local_workers': 1,
                'extra_args': ['--model-repository', cls.repo,
                               '--fold-limit', '96M']}

    expect_code = test_limits.Limits.expect_code
    put_model = test_limits.Limits.put_model  # REPO/NAME/model.onnx

    def test_fold_limit_flag(self):
        # 128 MiB: over 96M
        self.put_model('big', reduced_fold_model(32 * MIB))
        self.expect_code(grpc.StatusCode.RESOURCE_EXHAUSTED,
                         lambda: self.client.load('big'),
                         'fold limit 100663296 bytes',
                         "node 'bomb' (ConstantOfShape) needs 134217728 bytes")
        # 80 MiB: over the default 64 MiB, within 96M here and on the worker
        self.put_model('fits', reduced_fold_model(20 * MIB))
        self.client.load('fits')
        x = np.array([1.5, -2.0, 3.25], dtype=np.float32)
        got = self.client.infer('fits', {'x': x})['y']
        np.testing.assert_array_equal(got, x)


if __name__ == '__main__':
    unittest.main()
