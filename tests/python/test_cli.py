"""The `tessera` CLI against a scripted KServe v2 server written here in
Python (grpcio generic handlers), so that every datatype, both content forms,
malformed answers, slow answers and non-Tessera servers can be exercised;
the real coordinator only ever answers well-formed FP32.

The fake server's models, chosen by model_name:
  echo_raw    each input comes back as an output of the same name, raw
  echo_typed  the same, as typed InferTensorContents
  short_raw   raw output one byte short of its shape
  no_outputs  answers with no outputs at all
  slow        sleeps 2 s, then echoes
It records the last ModelInferRequest it got, for the tests to inspect.
"""
import concurrent.futures
import csv
import io
import json
import os
import pty
import sys
import tempfile
import shutil
import subprocess
import threading
import time
import unittest

import grpc
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kserve  # noqa: E402

pb, health_pb = kserve.pb, kserve.health_pb


class FakeServer:
    def __init__(self):
        self.last_request = None
        self.lock = threading.Lock()
        handlers = {
            'ModelInfer': self.model_infer,
            'ServerMetadata': lambda req, ctx: pb.ServerMetadataResponse(
                name='fake', version='9.9', extensions=['model_repository']),
            'ServerLive': lambda req, ctx: pb.ServerLiveResponse(live=True),
            'ServerReady': lambda req, ctx: pb.ServerReadyResponse(ready=False),
            'RepositoryIndex': lambda req, ctx: pb.RepositoryIndexResponse(models=[
                pb.RepositoryIndexResponse.ModelIndex(name='echo_raw', version='1',
                                                      state='READY'),
                pb.RepositoryIndexResponse.ModelIndex(name='gone', state='UNAVAILABLE',
                                                      reason='unloaded')]),
            'ModelMetadata': self.model_metadata,
        }
        rpcs = {name: grpc.unary_unary_rpc_method_handler(
                    fn, request_deserializer=getattr(pb, name + 'Request').FromString,
                    response_serializer=getattr(pb, name + 'Response').SerializeToString)
                for name, fn in handlers.items()}
        health = {'Check': grpc.unary_unary_rpc_method_handler(
            lambda req, ctx: health_pb.HealthCheckResponse(
                status=health_pb.HealthCheckResponse.NOT_SERVING),
            request_deserializer=health_pb.HealthCheckRequest.FromString,
            response_serializer=health_pb.HealthCheckResponse.SerializeToString)}
        self.server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=8))
        self.server.add_generic_rpc_handlers([
            grpc.method_handlers_generic_handler('inference.GRPCInferenceService', rpcs),
            grpc.method_handlers_generic_handler('grpc.health.v1.Health', health)])
        self.port = self.server.add_insecure_port('127.0.0.1:0')
        self.address = '127.0.0.1:%d' % self.port
        self.server.start()

    def stop(self):
        self.server.stop(0)

    def model_metadata(self, req, ctx):
        if req.name != 'echo_raw':
            ctx.abort(grpc.StatusCode.NOT_FOUND, "model '%s' is not loaded" % req.name)
        T = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(
            name=req.name, versions=['1'], platform='fake',
            inputs=[T(name='x', datatype='FP32', shape=[-1, 4])],
            outputs=[T(name='x', datatype='FP32', shape=[-1, 4])])

    def model_infer(self, req, ctx):
        with self.lock:
            self.last_request = req
        if req.model_name == 'slow':
            time.sleep(2)
        inputs = kserve.Client.decode_response(pb.ModelInferResponse(
            outputs=[pb.ModelInferResponse.InferOutputTensor(
                name=i.name, datatype=i.datatype, shape=i.shape, contents=i.contents)
                for i in req.inputs],
            raw_output_contents=req.raw_input_contents))
        wanted = [o.name for o in req.outputs] or list(inputs)
        resp = pb.ModelInferResponse(model_name=req.model_name, id=req.id)
        if req.model_name == 'no_outputs':
            return resp
        for name in wanted:
            a = inputs[name]
            o = resp.outputs.add(name=name, datatype=kserve.datatype_of(a), shape=a.shape)
            if req.model_name == 'echo_typed':
                getattr(o.contents, kserve.DATATYPES[o.datatype][1]).extend(a.ravel().tolist())
            else:
                data = a.astype(a.dtype.newbyteorder('<')).tobytes()
                resp.raw_output_contents.append(data[:-1] if req.model_name == 'short_raw'
                                                else data)
        return resp


def sample(datatype, shape):
    dtype = np.dtype(kserve.DATATYPES[datatype][0])
    n = int(np.prod(shape))
    i = np.arange(n)
    if dtype.kind == 'b':
        a = i % 3 == 0
    elif dtype.kind == 'u':
        a = (i * 7 + 3) % 101
    elif dtype.kind == 'i':
        a = (i * 7 + 3) % 101 - 50
    else:
        a = ((i * 7 + 3) % 101 - 50) * 0.25
    return a.astype(dtype).reshape(shape)


class Cli(kserve.CliMixin, unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.fake = FakeServer()
        cls.tmp = tempfile.mkdtemp(prefix='tessera_cli_')

    @classmethod
    def tearDownClass(cls):
        cls.fake.stop()
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def save(self, name, array):
        path = os.path.join(self.tmp, name + '.npy')
        np.save(path, array)
        return path

    def infer(self, model, arrays, *extra, expect=0):
        args = ['infer', '--server', self.fake.address, '--model', model]
        for name, a in arrays.items():
            args += ['--input', '%s=%s' % (name, self.save('in_' + name, a))]
        return self.tessera(*(args + list(extra)), expect=expect)

    def test_version_on_all_binaries(self):
        for name in ('tessera', 'tessera-coordinator', 'tessera-worker'):
            out = subprocess.run([kserve.binary(name), '--version'],
                                 stdout=subprocess.PIPE, check=True,
                                 universal_newlines=True, timeout=30).stdout
            self.assertRegex(out, r'^%s \d+\.\d+\.\d+\n$' % name)

    def test_server_without_port_uses_8001(self):
        # Nothing needs to answer: the error names the address tried.
        p = kserve.run_tessera('health', '--server', '127.0.0.1',
                               '--timeout-ms', '300')
        self.assertNotEqual(p.returncode, 0, 'something serves on 127.0.0.1:8001')
        self.assertIn('127.0.0.1:8001', p.stderr)
        self.assertNotIn(':443', p.stderr)

    def test_every_datatype_round_trips(self):
        for datatype in kserve.DATATYPES:
            for typed in (False, True):
                if typed and kserve.DATATYPES[datatype][1] is None:
                    continue
                with self.subTest(datatype=datatype, typed=typed):
                    a = sample(datatype, (3, 1, 4))
                    out = os.path.join(self.tmp, 'out.npy')
                    model = 'echo_typed' if typed else 'echo_raw'
                    self.infer(model, {'x': a}, '--output', 'x=' + out,
                               *(['--typed'] if typed else []))
                    # What went over the wire.
                    req = self.fake.last_request
                    self.assertEqual(req.model_name, model)
                    self.assertEqual([(i.name, i.datatype, list(i.shape)) for i in req.inputs],
                                     [('x', datatype, [3, 1, 4])])
                    self.assertEqual(len(req.raw_input_contents), 0 if typed else 1)
                    if typed:
                        field = kserve.DATATYPES[datatype][1]
                        self.assertEqual([f.name for f, _ in req.inputs[0].contents.ListFields()],
                                         [field])
                    self.assertEqual([o.name for o in req.outputs], ['x'])
                    # What came back.
                    got = np.load(out)
                    self.assertEqual(got.dtype, a.dtype)
                    self.assertEqual(got.shape, a.shape)
                    self.assertTrue(np.array_equal(got, a), (got, a))

    def test_fp16_typed_refused(self):
        p = self.infer('echo_raw', {'x': sample('FP16', (2,))}, '--typed', expect=1)
        self.assertTrue(p.stderr.startswith('tessera: UNIMPLEMENTED: '), p.stderr)
        self.assertIn("'x'", p.stderr)

    def test_print_small(self):
        p = self.infer('echo_raw', {'m': np.array([[1.5, -2.0], [0.25, 3.0]], np.float32),
                                    'flag': np.array([True, False, True]),
                                    'scalar': np.array(7, np.int64)})
        self.assertEqual(p.stdout,
                         'm FP32 [2,2]\n[[1.5, -2],\n [0.25, 3]]\n'
                         'flag BOOL [3]\n[True, False, True]\n'
                         'scalar INT64 []\n7\n')

    def test_print_summarized(self):
        a = np.arange(2000, dtype=np.int32).reshape(2, 1000)
        p = self.infer('echo_raw', {'big': a})
        self.assertEqual(p.stdout, 'big INT32 [2,1000]\n'
                                   '[[0, 1, 2, ..., 997, 998, 999],\n'
                                   ' [1000, 1001, 1002, ..., 1997, 1998, 1999]]\n')
        # At the threshold (1000 elements) nothing is left out.
        p = self.infer('echo_raw', {'edge': np.arange(1000, dtype=np.uint16)})
        self.assertNotIn('...', p.stdout)
        self.assertEqual(len(p.stdout.split('\n')[1].split(',')), 1000)

    def test_requested_outputs(self):
        a, b = sample('FP32', (2, 2)), sample('INT8', (4,))
        p = self.infer('echo_raw', {'a': a, 'b': b}, '--output', 'b')
        self.assertEqual([o.name for o in self.fake.last_request.outputs], ['b'])
        self.assertTrue(p.stdout.startswith('b INT8 [4]\n'), p.stdout)
        self.assertNotIn('a FP32', p.stdout)
        p = self.infer('no_outputs', {'a': a}, '--output', 'a', expect=1)
        self.assertEqual(p.stderr, "tessera: INTERNAL: the server did not return "
                                   "requested output 'a'\n")

    def test_malformed_answer(self):
        p = self.infer('short_raw', {'y': sample('FP64', (3,))}, expect=1)
        self.assertTrue(p.stderr.startswith('tessera: INTERNAL: '), p.stderr)
        self.assertIn("output 'y'", p.stderr)
        self.assertIn('23 raw bytes', p.stderr)

    def test_deadline(self):
        p = self.infer('slow', {'x': sample('FP32', (1,))}, '--timeout-ms', '300', expect=1)
        self.assertTrue(p.stderr.startswith('tessera: DEADLINE_EXCEEDED: '), p.stderr)

    def test_bad_npy_input(self):
        path = os.path.join(self.tmp, 'fortran.npy')
        np.save(path, np.asfortranarray(np.ones((2, 3), np.float32)))
        p = self.tessera('infer', '--server', self.fake.address, '--model', 'echo_raw',
                         '--input', 'x=' + path, expect=1)
        self.assertTrue(p.stderr.startswith('tessera: UNIMPLEMENTED: '), p.stderr)
        self.assertIn(path, p.stderr)
        path = os.path.join(self.tmp, 'garbage.npy')
        with open(path, 'wb') as f:
            f.write(b'not a numpy file')
        p = self.tessera('infer', '--server', self.fake.address, '--model', 'echo_raw',
                         '--input', 'x=' + path, expect=1)
        self.assertTrue(p.stderr.startswith('tessera: INVALID_ARGUMENT: '), p.stderr)
        self.assertIn('magic', p.stderr)

    def test_health_not_serving(self):
        p = self.tessera('health', '--server', self.fake.address, expect=1)
        self.assertEqual(p.stdout, 'health: NOT_SERVING\nlive: true\nready: false\n')
        self.assertEqual(p.stderr, 'tessera: UNAVAILABLE: health status is NOT_SERVING\n')

    def test_status_without_admin_api(self):
        p = self.tessera('status', '--server', self.fake.address)
        self.assertIn('server: fake\nversion: 9.9\n', p.stdout)
        self.assertRegex(p.stdout, r'gone\s+-\s+UNAVAILABLE\s+unloaded')
        self.assertRegex(p.stdout, r'x\s+FP32\s+\[-1,4\]')
        self.assertIn('== cluster ==\nadmin_api: false\n', p.stdout)

    def test_metadata(self):
        p = self.tessera('metadata', '--server', self.fake.address)
        self.assertEqual(p.stdout, 'server: fake\nversion: 9.9\nextensions: model_repository\n')
        p = self.tessera('metadata', '--server', self.fake.address, '--model', 'nope',
                         expect=1)
        self.assertEqual(p.stderr, "tessera: NOT_FOUND: model 'nope' is not loaded\n")

    def test_load_unimplemented(self):
        p = self.tessera('load', '--server', self.fake.address, '--model', 'm', expect=1)
        self.assertTrue(p.stderr.startswith('tessera: UNIMPLEMENTED: '), p.stderr)

    def test_bench(self):
        path = self.save('bench', sample('FP32', (2, 3)))
        p = self.tessera('bench', '--server', self.fake.address, '--model', 'echo_raw',
                         '--input', 'x=' + path, '--concurrency', '3', '--requests', '30')
        self.assertIn('ok: 30\nerrors: 0\n', p.stdout)
        self.assertRegex(p.stdout, r'latency_ms: mean [0-9.]+  p50 [0-9.]+  p90 [0-9.]+  '
                                   r'p99 [0-9.]+  max [0-9.]+')
        p = self.tessera('bench', '--server', self.fake.address, '--model', 'slow',
                         '--input', 'x=' + path, '--concurrency', '2', '--requests', '4',
                         '--timeout-ms', '200', expect=1)
        self.assertIn('ok: 0\nerrors: 4\n', p.stdout)
        self.assertTrue(p.stderr.startswith('tessera: DEADLINE_EXCEEDED: 4 of 4 requests '
                                            'failed'), p.stderr)

    def test_server_list_fails_over(self):
        """--server A,B: a call that gets UNAVAILABLE from A goes to B (said
        on stderr); all down is UNAVAILABLE naming the last one tried."""
        dead = '127.0.0.1:1'  # nothing listens on port 1
        a = sample('FP32', (2, 3))
        args = ['infer', '--server', '%s,%s' % (dead, self.fake.address), '--model',
                'echo_raw', '--input', 'x=' + self.save('fo', a), '--format', 'json']
        p = self.tessera(*args)
        got = json.loads(p.stdout)['outputs'][0]
        self.assertEqual(got['data'], a.ravel().tolist())
        self.assertIn('tessera: server %s unavailable (' % dead, p.stderr)
        self.assertIn('trying %s' % self.fake.address, p.stderr)
        p = self.tessera('bench', '--server', '%s,%s' % (dead, self.fake.address),
                         '--model', 'echo_raw', '--input', 'x=' + self.save('fo', a),
                         '--concurrency', '3', '--requests', '30')
        self.assertIn('ok: 30\nerrors: 0\n', p.stdout)
        p = self.tessera('health', '--server', '%s,127.0.0.1:2' % dead, expect=1)
        self.assertTrue(p.stderr.startswith(
            'tessera: server 127.0.0.1:1 unavailable ('), p.stderr)
        self.assertIn('tessera: UNAVAILABLE: all 2 servers unavailable (the last '
                      'tried: 127.0.0.1:2): ', p.stderr)
        p = self.tessera('bench', '--server', '%s,127.0.0.1:2' % dead, '--model',
                         'echo_raw', '--input', 'x=' + self.save('fo', a),
                         '--requests', '4', expect=1)
        self.assertIn('ok: 0\nerrors: 4\n', p.stdout)
        self.assertTrue(p.stderr.startswith('tessera: UNAVAILABLE: 4 of 4 requests '
                                            'failed'), p.stderr)
        # Anything but UNAVAILABLE is the answer: not failed over.
        p = self.tessera('metadata', '--server', '%s,%s' % (self.fake.address, dead),
                         '--model', 'nope', expect=1)
        self.assertTrue(p.stderr.startswith("tessera: NOT_FOUND: model 'nope' is not "
                                            "loaded"), p.stderr)
        self.assertNotIn('unavailable', p.stderr)

    def test_load_goes_to_every_server(self):
        dead = '127.0.0.1:1'
        p = self.tessera('load', '--server', '%s,%s' % (dead, self.fake.address),
                         '--model', 'm', expect=1)
        self.assertRegex(p.stderr, r'(?m)^tessera: %s: UNAVAILABLE: ' % dead)
        self.assertRegex(p.stderr, r'(?m)^tessera: %s: UNIMPLEMENTED: ' % self.fake.address)
        self.assertIn('tessera: UNAVAILABLE: model m: 2 of 2 servers failed\n', p.stderr)
        self.assertEqual(p.stdout, '')

    def test_server_list_usage(self):
        for bad, why in (('a:1,,b:2', 'has an empty item'),
                         ('a:1,a:1', "names 'a:1' twice"),
                         (','.join('h%d:1' % i for i in range(17)), 'more than 16 items')):
            with self.subTest(server=bad):
                p = self.tessera('health', '--server', bad, expect=2)
                self.assertIn('tessera health: --server: ', p.stderr)
                self.assertIn(why, p.stderr)
    def bench_json(self, *extra):
        path = self.save('bench_load', sample('FP32', (2, 4)))
        p = self.tessera('bench', '--server', self.fake.address, '--model', 'echo_raw',
                         '--input', 'x=' + path, '--format', 'json', *extra)
        self.assertEqual(p.stderr, '', 'no progress line when stderr is no terminal')
        doc = json.loads(p.stdout)
        self.assertEqual((doc['ok'], doc['errors']), (doc['requests'], 0), doc)
        return doc

    def test_bench_open_loop(self):
        # Request k is due at k / 50 s: the 25 due in the first 0.5 s are the
        # warmup, the 100 due in the next 2 s are counted, sent or dropped.
        doc = self.bench_json('--rate', '50', '--duration', '2', '--warmup', '0.5',
                              '--concurrency', '4')
        self.assertEqual((doc['mode'], doc['rate_rps'], doc['warmup_s'], doc['concurrency']),
                         ('open', 50, 0.5, 4))
        self.assertEqual(doc['warmup_requests'], 25)
        self.assertEqual(doc['requests'] + doc['dropped'], 100)
        self.assertGreater(doc['requests'], 0)
        lat = doc['latency_ms']
        self.assertTrue(0 < lat['p50'] <= lat['p90'] <= lat['p99'] <= lat['max'], lat)
        # --requests bounds an open loop as well.
        doc = self.bench_json('--rate', '200', '--requests', '10')
        self.assertEqual((doc['requests'] + doc['dropped'], doc['warmup_requests']), (10, 0))

    def test_bench_duration(self):
        # Closed loop for a time: no count given, none dropped; the first
        # call starts in the warmup.
        doc = self.bench_json('--duration', '1', '--warmup', '0.3', '--concurrency', '2')
        self.assertEqual((doc['mode'], doc['dropped']), ('closed', 0))
        self.assertNotIn('rate_rps', doc)
        self.assertGreater(doc['requests'], 0)
        self.assertGreaterEqual(doc['warmup_requests'], 1)
        # --requests ends it before --duration does.
        doc = self.bench_json('--duration', '60', '--requests', '7', '--concurrency', '3')
        self.assertEqual((doc['requests'], doc['warmup_requests']), (7, 0))

    def test_bench_progress_on_a_terminal(self):
        path = self.save('bench_tty', sample('FP32', (2, 4)))
        master, slave = pty.openpty()
        proc = subprocess.Popen([kserve.binary('tessera'), 'bench', '--server', self.fake.address,
                                 '--model', 'echo_raw', '--input', 'x=' + path,
                                 '--rate', '20', '--duration', '1.5', '--format', 'json'],
                                stdout=subprocess.PIPE, stderr=slave, universal_newlines=True)
        os.close(slave)
        tty = b''
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the terminal's other end is closed
                break
            if not chunk:
                break
            tty += chunk
        os.close(master)
        out, _ = proc.communicate(timeout=60)
        self.assertEqual(proc.returncode, 0, tty)
        self.assertEqual(json.loads(out)['requests'] + json.loads(out)['dropped'], 30)
        text = tty.decode()
        # Once a second from 1 s on: elapsed, requests, req/s, p50; erased at
        # the end.
        self.assertRegex(text, r'^\r\x1b\[K +\d+\.\d s  \d+ requests  [0-9.]+ req/s  p50 '
                               r'([0-9.]+ ms|-)')
        self.assertTrue(text.endswith('\r\x1b[K'), repr(text))

    def test_eval_batches(self):
        # echo_raw answers x itself: the argmax of each row is its class.
        x = np.array([[0, 3, 1, 2], [5, 1, 0, 0], [1, 1, 4, 0], [0, 0, 0, 9], [2, 7, 1, 0]],
                     np.float32)
        labels = np.array([1, 0, 2, 2, 1], np.int64)  # row 3 is wrong
        p = self.tessera('eval', '--server', self.fake.address, '--model', 'echo_raw',
                         '--input', self.save('eval_x', x), '--labels',
                         self.save('eval_y', labels), '--batch', '2', '--format', 'json')
        doc = json.loads(p.stdout)
        self.assertEqual((doc['output'], doc['correct'], doc['accuracy'], doc['batch']),
                         ('x', 4, 0.8, 2))
        # Three requests of 2, 2 and 1 rows; the last sent row 4.
        req = self.fake.last_request
        self.assertEqual([(i.name, list(i.shape)) for i in req.inputs], [('x', [1, 4])])
        self.assertEqual(np.frombuffer(req.raw_input_contents[0], np.float32).tolist(),
                         x[4].tolist())
        # Float labels: a regression over all four values of each row.
        target = x + np.array([0.5, -1, 0, 2], np.float32)
        p = self.tessera('eval', '--server', self.fake.address, '--model', 'echo_raw',
                         '--input', self.save('eval_x', x), '--labels',
                         self.save('eval_t', target.astype(np.float64)), '--format', 'json')
        doc = json.loads(p.stdout)
        self.assertEqual(doc['task'], 'regression')
        self.assertAlmostEqual(doc['rmse'], np.sqrt(np.mean((x - target.astype(np.float64)) ** 2)),
                               places=12)
        self.assertEqual(doc['max_abs_error'], 2.0)

    def jq(self, text, program):
        p = subprocess.run(['jq', '-c', program], input=text, stdout=subprocess.PIPE,
                           universal_newlines=True, check=True, timeout=30)
        return json.loads(p.stdout)

    def test_format_json(self):
        a = sample('FP32', (2, 3))
        b = sample('INT64', (4,))
        flag = sample('BOOL', (3,))
        p = self.infer('echo_raw', {'a': a, 'b': b, 'f': flag}, '--format', 'json')
        doc = json.loads(p.stdout)
        self.assertEqual(doc['model_name'], 'echo_raw')
        got = {o['name']: o for o in doc['outputs']}
        for name, want in (('a', a), ('b', b), ('f', flag)):
            self.assertEqual(got[name]['datatype'], kserve.datatype_of(want))
            self.assertEqual(got[name]['shape'], list(want.shape))
            self.assertEqual(got[name]['data'], want.ravel().tolist())
        self.assertEqual(self.jq(p.stdout, '[.outputs[] | .name]'), ['a', 'b', 'f'])
        p = self.tessera('models', '--server', self.fake.address, '--format', 'json')
        self.assertEqual(self.jq(p.stdout, '[.models[] | [.name, .state, .reason]]'),
                         [['echo_raw', 'READY', ''], ['gone', 'UNAVAILABLE', 'unloaded']])
        p = self.tessera('metadata', '--server', self.fake.address, '--model', 'echo_raw',
                         '--format', 'json')
        self.assertEqual(json.loads(p.stdout)['inputs'],
                         [{'name': 'x', 'datatype': 'FP32', 'shape': [-1, 4]}])
        p = self.tessera('status', '--server', self.fake.address, '--format', 'json')
        doc = json.loads(p.stdout)
        self.assertEqual(doc['server'], {'server': 'fake', 'version': '9.9',
                                         'extensions': ['model_repository']})
        self.assertEqual(doc['cluster'], {'admin_api': False})
        self.assertEqual(self.jq(p.stdout, '.metadata[0].outputs[0].shape'), [-1, 4])
        path = self.save('bench_json', sample('FP32', (2, 3)))
        p = self.tessera('bench', '--server', self.fake.address, '--model', 'echo_raw',
                         '--input', 'x=' + path, '--requests', '12', '--format', 'json')
        doc = json.loads(p.stdout)
        self.assertEqual((doc['ok'], doc['errors'], doc['requests']), (12, 0, 12))
        lat = doc['latency_ms']
        self.assertTrue(0 < lat['p50'] <= lat['p90'] <= lat['p99'] <= lat['max'], lat)

    def test_format_csv(self):
        p = self.tessera('models', '--server', self.fake.address, '--format', 'csv')
        rows = list(csv.reader(io.StringIO(p.stdout, newline='')))
        self.assertEqual(rows, [['name', 'version', 'state', 'reason'],
                                ['echo_raw', '1', 'READY', ''],
                                ['gone', '', 'UNAVAILABLE', 'unloaded']])
        raw = subprocess.run([kserve.binary('tessera'), 'models', '--server', self.fake.address,
                              '--format', 'csv'], stdout=subprocess.PIPE, check=True,
                             timeout=30).stdout
        self.assertTrue(raw.startswith(b'name,version,state,reason\r\necho_raw,'), raw)
        a = sample('FP64', (2, 2))
        p = self.infer('echo_raw', {'x': a}, '--format', 'csv')
        rows = list(csv.DictReader(io.StringIO(p.stdout, newline='')))
        self.assertEqual(len(rows), 1)
        self.assertEqual((rows[0]['name'], rows[0]['datatype'], rows[0]['shape']),
                         ('x', 'FP64', '2 2'))
        self.assertEqual([float(v) for v in rows[0]['data'].split()], a.ravel().tolist())

    def test_generated_inputs(self):
        # No --input: inputs follow ModelMetadata (x FP32 [-1,4]), --batch rows.
        p = self.tessera('infer', '--server', self.fake.address, '--model', 'echo_raw',
                         '--batch', '3', '--seed', '7', '--format', 'json')
        req = self.fake.last_request
        self.assertEqual([(i.name, i.datatype, list(i.shape)) for i in req.inputs],
                         [('x', 'FP32', [3, 4])])
        sent = np.frombuffer(req.raw_input_contents[0], np.float32)
        self.assertTrue(np.all((sent >= -1) & (sent < 1)), sent)
        self.assertGreater(len(set(sent.tolist())), 1)
        self.assertEqual(json.loads(p.stdout)['outputs'][0]['data'], sent.tolist())
        again = self.tessera('infer', '--server', self.fake.address, '--model', 'echo_raw',
                             '--batch', '3', '--seed', '7', '--format', 'json')
        self.assertEqual(again.stdout, p.stdout)

    def test_usage(self):
        for args in (['infer', '--server', 'x', '--model', 'm', '--input', '=x.npy'],
                     ['models', '--server', 'x', '--typed'],             # not its option
                     ['bench', '--server', 'x', '--model', 'm', '--input', 'a=b',
                      '--requests', '0'],
                     ['bench', '--server', 'x', '--model', 'm', '--rate', '0'],
                     ['bench', '--server', 'x', '--model', 'm', '--duration', '-1'],
                     ['bench', '--server', 'x', '--model', 'm', '--warmup', 'soon'],
                     ['bench', '--server', 'x', '--model', 'm', '--rate', 'inf'],
                     ['infer', '--server', 'x', '--model', 'm', '--rate', '5'],
                     ['health'],                                         # no --server
                     ['models', '--server', 'x', '--format', 'xml'],
                     ['nosuchcommand'],
                     []):
            with self.subTest(args=args):
                p = self.tessera(*args, expect=2)
                self.assertTrue(p.stderr, 'a usage error says why')
        for cmd in ('infer', 'models', 'load', 'unload', 'health', 'metadata', 'status',
                    'bench', 'eval'):
            p = self.tessera(cmd, '--help')
            self.assertTrue(p.stdout.startswith('usage: tessera %s ' % cmd), p.stdout)
        self.assertIn('commands:', self.tessera('--help').stdout)


if __name__ == '__main__':
    unittest.main()
