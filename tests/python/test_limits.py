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

    def test_control_requests_capped(self):
        # control methods take names and addresses: 64 KiB at most, refused
        # before the request is unpacked
        big = 'm' * 70000
        size = kserve.pb.RepositoryModelLoadRequest(model_name=big).ByteSize()
        self.expect_code(grpc.StatusCode.RESOURCE_EXHAUSTED,
                         lambda: self.client.load(big),
                         'RepositoryModelLoad: a request of %d bytes' % size,
                         "over the method's limit of 65536 bytes")
        self.expect_code(grpc.StatusCode.RESOURCE_EXHAUSTED,
                         lambda: self.client.model_metadata(big),
                         'ModelMetadata: a request of',
                         "over the method's limit of 65536 bytes")
        self.expect_code(grpc.StatusCode.RESOURCE_EXHAUSTED,
                         lambda: self.client.health(big),
                         'Health/Check: a request of',
                         "over the method's limit of 65536 bytes")
        with self.admin() as a:
            self.expect_code(grpc.StatusCode.RESOURCE_EXHAUSTED,
                             lambda: a.register_worker('h' * 70000 + ':1'),
                             'RegisterWorker: a request of',
                             "over the method's limit of 65536 bytes")
        # just under the cap is an ordinary request again
        self.expect_code(grpc.StatusCode.INVALID_ARGUMENT,
                         lambda: self.client.load('m' * 60000),
                         'model_name is empty or too long')
        self.assert_serving()

    def infer_call(self):
        return self.client.channel.unary_unary(
            kserve.KSERVE + 'ModelInfer',
            request_serializer=kserve.pb.ModelInferRequest.SerializeToString,
            response_deserializer=kserve.pb.ModelInferResponse.FromString)

    def test_compressed_request_refused(self):
        # zeros, so that gRPC does compress it (it sends a message that
        # would not shrink as it is)
        req = self.client.build_request(
            MODEL, {'embedding': np.zeros((3, 32), np.float32)})
        self.expect_code(grpc.StatusCode.UNIMPLEMENTED,
                         lambda: self.infer_call()(req, timeout=30,
                                                   compression=grpc.Compression.Gzip),
                         'compressed requests are not accepted')
        # a gzip bomb: 80 MiB of zeros, about 80 KB on the wire, over the
        # 64 MiB message limit once inflated: refused without inflating it
        bomb = self.client.build_request(
            MODEL, {'embedding': np.zeros((1, 32), np.float32)},
            raw={'embedding': bytes(80 << 20)})
        self.expect_code(grpc.StatusCode.UNIMPLEMENTED,
                         lambda: self.infer_call()(bomb, timeout=60,
                                                   compression=grpc.Compression.Gzip),
                         'compressed requests are not accepted')
        self.assert_serving()


def run_daemon(name, *args):
    """Runs a daemon that should refuse its options: (exit status, stderr)."""
    import subprocess
    p = subprocess.run([kserve.binary(name), '--listen', '127.0.0.1:0'] + list(args),
                       stdin=subprocess.DEVNULL, capture_output=True, text=True,
                       timeout=60)
    return p.returncode, p.stderr


class LimitFlags(unittest.TestCase):
    def test_bad_values_exit_2(self):
        for name in ['tessera-worker', 'tessera-coordinator']:
            for value in ['1K', '65535', '2G', '1025M', 'lots']:
                rc, err = run_daemon(name, '--max-message-size', value)
                self.assertEqual(rc, 2, err)
                self.assertIn('--max-message-size', err)
                if value != 'lots':
                    self.assertIn("'%s' is not in 64K..1G" % value, err)
                else:
                    self.assertIn('is not a size', err)
            for value in ['0', '-1', '100001', 'x']:
                rc, err = run_daemon(name, '--max-streams', value)
                self.assertEqual(rc, 2, err)
                self.assertIn('--max-streams', err)
                self.assertIn('is not an integer in [1, 100000]', err)


def tile_model(path):
    """y = Tile(x [n, 32], [1, 64]): an answer 64 times its request."""
    import onnx
    from onnx import TensorProto, helper
    graph = helper.make_graph(
        [helper.make_node('Tile', ['x', 'repeats'], ['y'])], 'tile',
        [helper.make_tensor_value_info('x', TensorProto.FLOAT, ['n', 32])],
        [helper.make_tensor_value_info('y', TensorProto.FLOAT, ['n', 2048])],
        [helper.make_tensor('repeats', TensorProto.INT64, [2], [1, 64])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', 13)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def children(pid):
    """The pids of a process's children (/proc)."""
    out = []
    for tid in os.listdir('/proc/%d/task' % pid):
        with open('/proc/%d/task/%s/children' % (pid, tid)) as f:
            out += [int(c) for c in f.read().split()]
    return out


class MessageLimits(kserve.ClusterTestCase):
    """A coordinator and its local worker with --max-message-size 1M."""

    @classmethod
    def cluster_options(cls, tmp):
        return {'models': [(MODEL, export_models.export(MODEL, tmp)),
                           ('tile', tile_model(os.path.join(tmp, 'tile.onnx')))],
                'local_workers': 1,
                'extra_args': ['--max-message-size', '1M', '--max-streams', '50']}

    def test_answer_over_max_message(self):
        # a worker's answer 64 times its request: over 1M, the worker's
        # send is refused and so is every replica
        x = np.arange(4 * 32, dtype=np.float32).reshape(4, 32)
        np.testing.assert_array_equal(self.client.infer('tile', {'x': x})['y'],
                                      np.tile(x, (1, 64)))
        with self.assertRaises(grpc.RpcError) as cm:
            self.client.infer('tile', {'x': np.ones((200, 32), np.float32)})
        self.assertEqual(cm.exception.code(), grpc.StatusCode.RESOURCE_EXHAUSTED,
                         cm.exception.details())
        self.assertIn('Sent message larger than max', cm.exception.details())
        self.assertIn('1048576', cm.exception.details())
        np.testing.assert_array_equal(self.client.infer('tile', {'x': x})['y'],
                                      np.tile(x, (1, 64)))

    def test_local_workers_get_the_limits(self):
        kids = children(self.cluster.proc.pid)
        self.assertEqual(len(kids), 1)
        with open('/proc/%d/cmdline' % kids[0], 'rb') as f:
            argv = f.read().split(b'\0')
        i = argv.index(b'--max-message-size')
        self.assertEqual(argv[i + 1], b'1048576')
        i = argv.index(b'--max-streams')
        self.assertEqual(argv[i + 1], b'50')

    def test_request_over_max_message(self):
        # gRPC itself refuses a message over the daemon's max (after
        # receiving it: gRPC 1.51 reads the whole message first)
        req = self.client.build_request(
            MODEL, {'embedding': np.zeros((1, 32), np.float32)},
            raw={'embedding': bytes(2 << 20)})
        with self.assertRaises(grpc.RpcError) as cm:
            self.client.infer_request(req)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.RESOURCE_EXHAUSTED,
                         cm.exception.details())
        self.assertIn('1048576', cm.exception.details())
        # under it, through the worker and back (7000 rows: 0.9 MB)
        inputs = export_models.make_inputs(MODEL, 7000, seed=6)
        got = self.client.infer(MODEL, inputs)['log_probs']
        want = export_models.reference(MODEL, inputs)['log_probs']
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


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

    def run_shard(self, address, request, timeout=30):
        with grpc.insecure_channel(address) as ch:
            call = ch.unary_unary(WORKER + 'RunShard',
                                  request_serializer=wpb.RunShardRequest.SerializeToString,
                                  response_deserializer=wpb.RunShardResponse.FromString)
            return call(request, timeout=timeout)

    def mlp_shard(self):
        """The exported mlp's bytes and its ModelProto."""
        tmp = tempfile.mkdtemp(prefix='tessera_limits_')
        self.addCleanup(shutil.rmtree, tmp, True)
        with open(export_models.export(MODEL, tmp), 'rb') as f:
            data = f.read()
        m = onnx_pb().ModelProto()
        m.ParseFromString(data)
        return data, m

    def test_run_shard_returns_only_graph_outputs(self):
        data, m = self.mlp_shard()
        inputs = export_models.make_inputs(MODEL, 4, seed=8)
        x = inputs['embedding']
        with kserve.Worker() as w:
            sid = self.load_shard(w.address, data).shard_id

            def request(*outputs):
                return wpb.RunShardRequest(
                    shard_id=sid, outputs=list(outputs),
                    inputs=[wpb.Tensor(name='embedding', dtype=1, shape=list(x.shape),
                                       data=x.astype('<f4').tobytes())])
            weight = m.graph.initializer[0].name
            hidden = m.graph.node[0].output[0]
            for name in [weight, hidden, 'embedding', 'no_such_tensor']:
                with self.assertRaises(grpc.RpcError) as cm:
                    self.run_shard(w.address, request('log_probs', name))
                self.assertEqual(cm.exception.code(), grpc.StatusCode.INVALID_ARGUMENT,
                                 cm.exception.details())
                self.assertIn("outputs[1]: '%s' is not an output of shard" % name,
                              cm.exception.details())
            # the graph's output, named or by default, is served
            want = export_models.reference(MODEL, inputs)['log_probs']
            for r in [self.run_shard(w.address, request('log_probs')),
                      self.run_shard(w.address, request())]:
                self.assertEqual([o.name for o in r.outputs], ['log_probs'])
                got = np.frombuffer(r.outputs[0].data, '<f4').reshape(r.outputs[0].shape)
                np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)

    def test_compressed_requests_refused(self):
        data, _ = self.mlp_shard()
        with kserve.Worker() as w:
            with grpc.insecure_channel(w.address) as ch:
                # StatusRequest is empty: an unknown field of zeros, so that
                # gRPC compresses it (it sends what would not shrink as it is)
                status = ch.unary_unary(WORKER + 'Status',
                                        request_serializer=lambda b: b,
                                        response_deserializer=wpb.StatusResponse.FromString)
                with self.assertRaises(grpc.RpcError) as cm:
                    status(_wrap(15, bytes(1000)), timeout=10,
                           compression=grpc.Compression.Gzip)
                self.assertEqual(cm.exception.code(), grpc.StatusCode.UNIMPLEMENTED)
                self.assertIn('compressed requests are not accepted',
                              cm.exception.details())
                load = ch.stream_unary(WORKER + 'LoadShard',
                                       request_serializer=wpb.LoadShardChunk.SerializeToString,
                                       response_deserializer=wpb.LoadShardResponse.FromString)
                chunk = wpb.LoadShardChunk(shard_id=hashlib.sha256(data).hexdigest(),
                                           total_bytes=len(data), offset=0, data=data)
                with self.assertRaises(grpc.RpcError) as cm:
                    load(iter([chunk]), timeout=30, compression=grpc.Compression.Gzip)
                self.assertEqual(cm.exception.code(), grpc.StatusCode.UNIMPLEMENTED)
                self.assertIn('LoadShard: compressed requests are not accepted',
                              cm.exception.details())
            # still serving: the same shard uncompressed
            self.assertEqual(self.load_shard(w.address, data).shard_id, chunk.shard_id)
            self.status(w.address)

    def test_status_over_control_limit(self):
        with kserve.Worker() as w:
            # StatusRequest is empty: 70000 bytes of an unknown field
            with grpc.insecure_channel(w.address) as ch:
                status = ch.unary_unary(WORKER + 'Status',
                                        request_serializer=lambda b: b,
                                        response_deserializer=wpb.StatusResponse.FromString)
                junk = _wrap(15, bytes(70000))
                with self.assertRaises(grpc.RpcError) as cm:
                    status(junk, timeout=10)
                self.assertEqual(cm.exception.code(), grpc.StatusCode.RESOURCE_EXHAUSTED)
                self.assertIn("Status: a request of %d bytes is over the method's "
                              "limit of 65536 bytes" % len(junk), cm.exception.details())
            self.status(w.address)

    def test_max_streams_per_connection(self):
        import threading
        data, _ = self.mlp_shard()
        with kserve.Worker(extra_args=['--max-streams', '2']) as w:
            with grpc.insecure_channel(w.address) as ch:
                load = ch.stream_unary(WORKER + 'LoadShard',
                                       request_serializer=wpb.LoadShardChunk.SerializeToString,
                                       response_deserializer=wpb.LoadShardResponse.FromString)
                release = threading.Event()
                sent = [threading.Event(), threading.Event()]

                def held(k):
                    # the first half of the shard, then wait: the stream stays open
                    yield wpb.LoadShardChunk(shard_id=hashlib.sha256(data).hexdigest(),
                                             total_bytes=len(data), offset=0,
                                             data=data[:len(data) // 2])
                    sent[k].set()
                    release.wait(60)
                futures = [load.future(held(k), timeout=60) for k in range(2)]
                for e in sent:
                    self.assertTrue(e.wait(30))
                status = ch.unary_unary(WORKER + 'Status',
                                        request_serializer=wpb.StatusRequest.SerializeToString,
                                        response_deserializer=wpb.StatusResponse.FromString)
                # a third stream on this connection waits for a free one
                with self.assertRaises(grpc.RpcError) as cm:
                    status(wpb.StatusRequest(), timeout=3)
                self.assertEqual(cm.exception.code(), grpc.StatusCode.DEADLINE_EXCEEDED)
                # another connection is served meanwhile (a subchannel pool
                # of its own: grpcio would share this channel's connection)
                with grpc.insecure_channel(
                        w.address,
                        options=[('grpc.use_local_subchannel_pool', 1)]) as other:
                    other.unary_unary(
                        WORKER + 'Status',
                        request_serializer=wpb.StatusRequest.SerializeToString,
                        response_deserializer=wpb.StatusResponse.FromString)(
                            wpb.StatusRequest(), timeout=10)
                for f in futures:
                    f.cancel()
                release.set()
                # and this one again once its streams are gone
                status(wpb.StatusRequest(), timeout=10)

class ControlPool(kserve.ClusterTestCase):
    """The coordinator's control calls (RegisterWorker, DeregisterWorker,
    RepositoryModelLoad) run on 4 threads with 32 more waiting."""

    @classmethod
    def cluster_options(cls, tmp):
        secret = os.path.join(tmp, 'secret')
        with open(os.open(secret, os.O_WRONLY | os.O_CREAT, 0o600), 'w') as f:
            f.write(SECRET + '\n')
        return {'models': [(MODEL, export_models.export(MODEL, tmp))],
                'local_workers': 1,
                'extra_args': ['--cluster-secret-file', secret]}

    def test_control_queue_full(self):
        import socket
        # accepts connections (the kernel does) but never speaks HTTP/2: each
        # registration waits out its 5 s Status probe on a control thread
        silent = socket.socket()
        self.addCleanup(silent.close)
        silent.bind(('127.0.0.1', 0))
        silent.listen(256)
        address = '127.0.0.1:%d' % silent.getsockname()[1]
        with admin.AdminClient(self.cluster.address) as a:
            register = a.channel.unary_unary(
                admin.SERVICE + 'RegisterWorker',
                request_serializer=admin.pb.RegisterWorkerRequest.SerializeToString,
                response_deserializer=admin.pb.RegisterWorkerResponse.FromString)
            futures = [register.future(admin.pb.RegisterWorkerRequest(address=address),
                                       timeout=120,
                                       metadata=[('tessera-cluster-secret', SECRET)])
                       for _ in range(60)]
            # 4 run and 32 wait for at least 5 s each, the rest are refused
            # at once (all 60 arrive long before the first 4 end). Between
            # 24 and 28 are refused: a call counts as waiting until a pool
            # thread takes it, so on a loaded machine fewer than 4 may have
            # been taken when the queue fills. "At once" may take a moment.
            def full(f):
                return f.done() and f.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            deadline = time.monotonic() + 30
            while sum(map(full, futures)) < 24 and time.monotonic() < deadline:
                time.sleep(0.1)
            time.sleep(0.5)
            refused = [f for f in futures if full(f)]
            self.assertGreaterEqual(len(refused), 60 - 36)
            self.assertLessEqual(len(refused), 60 - 32)
            for f in refused:
                self.assertEqual(f.code(), grpc.StatusCode.RESOURCE_EXHAUSTED, f.details())
                self.assertIn('control queue full: 4 control calls run and 32 wait',
                              f.details())
            # everything else goes on: inference, and ClusterStatus (no pool)
            inputs = export_models.make_inputs(MODEL, 3, seed=9)
            np.testing.assert_allclose(self.client.infer(MODEL, inputs)['log_probs'],
                                       export_models.reference(MODEL, inputs)['log_probs'],
                                       rtol=1e-5, atol=1e-6)
            before = len(a.cluster_status().workers)
            # the accepted ones end as refused registrations, never a slot
            waited = [f for f in futures if f not in refused][:8]
            for f in waited:
                self.assertEqual(f.code(), grpc.StatusCode.UNAVAILABLE, f.details())
                self.assertIn('not registered', f.details())
            for f in futures:
                f.cancel()
            self.assertEqual(len(a.cluster_status().workers), before)

class CompressedAnswers(unittest.TestCase):
    """Tessera's channels (the CLI's, the coordinator's to its workers: one
    code path, common/rpc) never inflate an answer either."""

    def test_compressed_answer_refused(self):
        from concurrent import futures

        def metadata(request, context):
            context.set_compression(grpc.Compression.Gzip)  # 100 KB of 'a'
            return kserve.pb.ServerMetadataResponse(name='a' * 100000, version='1')

        handler = grpc.method_handlers_generic_handler(
            'inference.GRPCInferenceService',
            {'ServerMetadata': grpc.unary_unary_rpc_method_handler(
                metadata,
                request_deserializer=kserve.pb.ServerMetadataRequest.FromString,
                response_serializer=kserve.pb.ServerMetadataResponse.SerializeToString)})
        server = grpc.server(futures.ThreadPoolExecutor(2))
        server.add_generic_rpc_handlers([handler])
        port = server.add_insecure_port('127.0.0.1:0')
        server.start()
        self.addCleanup(server.stop, None)
        p = kserve.run_tessera('metadata', '--server', '127.0.0.1:%d' % port)
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertIn('UNIMPLEMENTED: compressed answers are not accepted', p.stderr)


if __name__ == '__main__':
    unittest.main()
