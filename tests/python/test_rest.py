"""The KServe v2 REST API (--http-listen) against a real coordinator and
workers: health, metadata and inference with JSON tensors and with Triton's
binary tensor extension, answers checked against the PyTorch model; every
bad-input class with its exact HTTP status and a message naming the field;
the repository endpoints; the same driven by curl.

The client here is written from the protocol (KServe v2 REST and Triton's
binary_tensor_data extension) with urllib: nothing of Tessera's own code.
The model is the MLP from export_models: input 'embedding' FP32 [-1, 32],
output 'log_probs' FP32 [-1, 10].
"""
import json
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import unittest
import urllib.error
import urllib.request

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import export_models  # noqa: E402
import kserve  # noqa: E402

export_models.torch.set_num_threads(1)  # tiny references: cores to the daemons

MODEL = 'mlp'
INPUT = 'embedding'
OUTPUT = 'log_probs'
BATCHED = 'mlp_batched'
MAX_BODY = 1 << 20
HEADER = 'Inference-Header-Content-Length'


class Rest:
    """A KServe v2 REST client: request(method, path, body) returns (status,
    headers, body bytes) whatever the status."""

    def __init__(self, base, token=None, context=None):
        self.base = base
        self.token = token
        self.context = context  # ssl.SSLContext for https

    def request(self, method, path, body=None, headers=None):
        headers = dict(headers or {})
        if self.token:
            headers['Authorization'] = 'Bearer ' + self.token
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
            headers.setdefault('Content-Type', 'application/json')
        req = urllib.request.Request(self.base + path, data=body, method=method,
                                     headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=60, context=self.context) as r:
                return r.status, r.headers, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.headers, e.read()

    def json(self, method, path, body=None):
        status, _, data = self.request(method, path, body)
        return status, json.loads(data) if data else None

    @staticmethod
    def tensor_json(name, array, nested=False):
        data = array.tolist() if nested else array.ravel().tolist()
        return {'name': name, 'shape': list(array.shape),
                'datatype': kserve.datatype_of(array), 'data': data}

    def infer_json(self, model, inputs, nested=False, outputs=None, id=None):
        body = {'inputs': [self.tensor_json(n, a, nested) for n, a in inputs.items()]}
        if outputs is not None:
            body['outputs'] = [{'name': n} for n in outputs]
        if id is not None:
            body['id'] = id
        return self.json('POST', '/v2/models/%s/infer' % model, body)

    def infer_binary(self, model, inputs, binary_outputs=True):
        """Inputs as binary data, outputs as binary (binary_data_output):
        returns (status, response JSON, {name: array})."""
        head = {'inputs': [{'name': n, 'shape': list(a.shape),
                            'datatype': kserve.datatype_of(a),
                            'parameters': {'binary_data_size': a.nbytes}}
                           for n, a in inputs.items()],
                'parameters': {'binary_data_output': binary_outputs}}
        head_bytes = json.dumps(head).encode()
        body = head_bytes + b''.join(np.ascontiguousarray(a).tobytes()
                                     for a in inputs.values())
        status, headers, data = self.request(
            'POST', '/v2/models/%s/infer' % model, body,
            {HEADER: str(len(head_bytes)), 'Content-Type': 'application/octet-stream'})
        n = int(headers.get(HEADER) or len(data))
        doc = json.loads(data[:n])
        arrays, off = {}, n
        for o in doc.get('outputs', []):
            dtype = kserve.DATATYPES[o['datatype']][0]
            size = o.get('parameters', {}).get('binary_data_size')
            if size is None:
                arrays[o['name']] = np.array(o['data'], dtype=dtype).reshape(o['shape'])
            else:
                arrays[o['name']] = np.frombuffer(data[off:off + size], dtype=dtype).reshape(o['shape'])
                off += size
        if status == 200:
            assert off == len(data), (off, len(data))
        return status, doc, arrays


def reference(inputs):
    return export_models.reference(MODEL, inputs)[OUTPUT]


class RestApi(kserve.ClusterTestCase):
    @classmethod
    def cluster_options(cls, tmp):
        cls.port = kserve.free_port()
        cls.rest = Rest('http://127.0.0.1:%d' % cls.port)
        repo = os.path.join(tmp, 'repo')
        os.makedirs(os.path.join(repo, MODEL))
        export = export_models.export(MODEL, tmp)
        shutil.copy(export, os.path.join(repo, MODEL, 'model.onnx'))
        # Two outputs (logistic) and an INT64 input (transformer).
        for name in ('logistic', 'transformer'):
            os.makedirs(os.path.join(repo, name))
            shutil.copy(export_models.export(name, tmp), os.path.join(repo, name, 'model.onnx'))
        # The same model behind the dynamic batcher: its answers come from
        # the batcher's thread.
        os.makedirs(os.path.join(repo, BATCHED))
        shutil.copy(export, os.path.join(repo, BATCHED, 'model.onnx'))
        with open(os.path.join(repo, BATCHED, 'config.ini'), 'w') as f:
            f.write('max_batch = 8\nbatch_delay_us = 2000\n')
        return {'local_workers': 2,
                'extra_args': ['--model-repository', repo,
                               '--http-listen', '127.0.0.1:%d' % cls.port,
                               '--http-max-body', str(MAX_BODY)]}

    # ---- health and metadata ----------------------------------------------

    def test_health(self):
        self.assertEqual(self.rest.request('GET', '/v2/health/live')[0], 200)
        self.assertEqual(self.rest.request('GET', '/v2/health/ready')[0], 200)
        status, doc = self.rest.json('GET', '/v2/models/%s/ready' % MODEL)
        self.assertEqual((status, doc['ready']), (200, True))
        status, doc = self.rest.json('GET', '/v2/models/%s/versions/1/ready' % MODEL)
        self.assertEqual(status, 200)

    def test_server_metadata(self):
        status, doc = self.rest.json('GET', '/v2')
        self.assertEqual(status, 200)
        self.assertEqual(doc['name'], 'tessera')
        grpc_meta = self.client.server_metadata()
        self.assertEqual(doc['version'], grpc_meta.version)
        self.assertEqual(doc['extensions'], list(grpc_meta.extensions))

    def test_model_metadata_equals_grpc(self):
        status, doc = self.rest.json('GET', '/v2/models/' + MODEL)
        self.assertEqual(status, 200)
        meta = self.client.model_metadata(MODEL)
        self.assertEqual(doc['name'], meta.name)
        self.assertEqual(doc['versions'], list(meta.versions))
        self.assertEqual(doc['platform'], meta.platform)
        for got, want in ((doc['inputs'], meta.inputs), (doc['outputs'], meta.outputs)):
            self.assertEqual([(t['name'], t['datatype'], t['shape']) for t in got],
                             [(t.name, t.datatype, list(t.shape)) for t in want])
        self.assertEqual(doc['inputs'][0]['shape'], [-1, 32])
        status, doc = self.rest.json('GET', '/v2/models/%s/versions/%s' % (MODEL, meta.versions[0]))
        self.assertEqual((status, doc['name']), (200, MODEL))

    # ---- inference ----------------------------------------------------------

    def test_infer_json_flat_and_nested(self):
        inputs = export_models.make_inputs(MODEL, 3, seed=1)
        want = reference(inputs)
        for nested in (False, True):
            status, doc = self.rest.infer_json(MODEL, inputs, nested=nested, id='req-7')
            self.assertEqual(status, 200, doc)
            self.assertEqual(doc['model_name'], MODEL)
            self.assertEqual(doc['id'], 'req-7')
            (out,) = doc['outputs']
            self.assertEqual((out['name'], out['datatype'], out['shape']),
                             (OUTPUT, 'FP32', [3, 10]))
            got = np.array(out['data'], dtype=np.float32).reshape(out['shape'])
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)

    def test_infer_equals_grpc(self):
        inputs = export_models.make_inputs(MODEL, 4, seed=2)
        status, doc = self.rest.infer_json(MODEL, inputs, outputs=[OUTPUT])
        self.assertEqual(status, 200, doc)
        rest = np.array(doc['outputs'][0]['data'], dtype=np.float32).reshape(4, 10)
        grpc_out = self.client.infer(MODEL, inputs)[OUTPUT]
        np.testing.assert_array_equal(rest, grpc_out)

    def test_infer_binary(self):
        inputs = export_models.make_inputs(MODEL, 5, seed=3)
        want = reference(inputs)
        status, doc, arrays = self.rest.infer_binary(MODEL, inputs)
        self.assertEqual(status, 200, doc)
        self.assertEqual(doc['outputs'][0]['parameters']['binary_data_size'], 5 * 10 * 4)
        np.testing.assert_allclose(arrays[OUTPUT], want, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(arrays[OUTPUT], self.client.infer(MODEL, inputs)[OUTPUT])
        # Binary inputs, JSON outputs.
        status, doc, arrays = self.rest.infer_binary(MODEL, inputs, binary_outputs=False)
        self.assertEqual(status, 200, doc)
        self.assertIn('data', doc['outputs'][0])
        np.testing.assert_allclose(arrays[OUTPUT], want, rtol=1e-5, atol=1e-6)

    def test_concurrent_requests(self):
        """Requests in parallel, each on its own connection (a thread each
        in the server), to the unbatched and the batched model."""
        import concurrent.futures
        batches = [export_models.make_inputs(MODEL, 1 + i % 3, seed=20 + i) for i in range(12)]

        def one(i):
            model = (MODEL, BATCHED)[i % 2]
            if i % 4 < 2:
                status, doc = self.rest.infer_json(model, batches[i])
                out = doc['outputs'][0] if status == 200 else doc
                got = np.array(out.get('data', []), dtype=np.float32).reshape(out.get('shape', [0]))
            else:
                status, doc, arrays = self.rest.infer_binary(model, batches[i])
                got = arrays.get(OUTPUT)
            return status, doc, got

        with concurrent.futures.ThreadPoolExecutor(len(batches)) as pool:
            results = list(pool.map(one, range(len(batches))))
        for inputs, (status, doc, got) in zip(batches, results):
            self.assertEqual(status, 200, doc)
            np.testing.assert_allclose(got, reference(inputs), rtol=1e-5, atol=1e-6)

    def test_non_finite_outputs(self):
        """NaN has no JSON form: 501 naming the element; as binary it comes
        back as torch computes it."""
        inputs = {INPUT: np.full((1, 32), np.inf, dtype=np.float32)}
        want = reference(inputs)
        self.assertFalse(np.isfinite(want).all())
        status, doc, _ = self.rest.infer_binary(MODEL, inputs, binary_outputs=False)
        self.assertEqual(status, 501, doc)
        self.assertIn("output '%s': element 0 is NaN or infinite" % OUTPUT, doc['error'])
        status, doc, arrays = self.rest.infer_binary(MODEL, inputs)
        self.assertEqual(status, 200, doc)
        np.testing.assert_array_equal(np.isnan(arrays[OUTPUT]), np.isnan(want))

    def test_outputs_binary_and_json_mixed(self):
        """Two outputs asked for in reverse order, one binary, one JSON."""
        inputs = export_models.make_inputs('logistic', 3, seed=12)
        want = export_models.reference('logistic', inputs)
        body = {'inputs': [Rest.tensor_json('features', inputs['features'])],
                'outputs': [{'name': 'probabilities', 'parameters': {'binary_data': True}},
                            {'name': 'logits'}]}
        status, headers, data = self.rest.request('POST', '/v2/models/logistic/infer', body)
        self.assertEqual(status, 200, data)
        n = int(headers[HEADER])
        doc = json.loads(data[:n])
        probs, logits = doc['outputs']
        self.assertEqual((probs['name'], logits['name']), ('probabilities', 'logits'))
        self.assertNotIn('data', probs)
        got = np.frombuffer(data[n:], dtype=np.float32).reshape(probs['shape'])
        np.testing.assert_allclose(got, want['probabilities'], rtol=1e-5, atol=1e-6)
        got = np.array(logits['data'], dtype=np.float32).reshape(logits['shape'])
        np.testing.assert_allclose(got, want['logits'], rtol=1e-5, atol=1e-6)

    def test_int64_input(self):
        inputs = export_models.make_inputs('transformer', 2, seed=13)
        want = export_models.reference('transformer', inputs)['hidden']
        status, doc = self.rest.infer_json('transformer', inputs, nested=True)
        self.assertEqual(status, 200, doc)
        out = doc['outputs'][0]
        got = np.array(out['data'], dtype=np.float32).reshape(out['shape'])
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
        tokens = inputs['tokens']
        body = {'inputs': [Rest.tensor_json('tokens', tokens)]}
        body['inputs'][0]['data'][1] = 1.5
        self.expect(400, ["input 'tokens': data[1] is not an integer"],
                    path='/v2/models/transformer/infer', body=body)
        body['inputs'][0]['data'][1] = 2 ** 63 - 1
        body['inputs'][0]['datatype'] = 'INT32'
        self.expect(400, ["input 'tokens': data[1] = 9223372036854775807 is out of range "
                          "for INT32"], path='/v2/models/transformer/infer', body=body)

    def test_binary_output_by_name(self):
        inputs = export_models.make_inputs(MODEL, 2, seed=4)
        body = {'inputs': [Rest.tensor_json(INPUT, inputs[INPUT])],
                'outputs': [{'name': OUTPUT, 'parameters': {'binary_data': True}}]}
        status, headers, data = self.rest.request('POST', '/v2/models/%s/infer' % MODEL, body)
        self.assertEqual(status, 200)
        n = int(headers[HEADER])
        doc = json.loads(data[:n])
        self.assertEqual(doc['outputs'][0]['parameters']['binary_data_size'], len(data) - n)
        got = np.frombuffer(data[n:], dtype=np.float32).reshape(2, 10)
        np.testing.assert_allclose(got, reference(inputs), rtol=1e-5, atol=1e-6)

    # ---- bad input: exact status, message naming the field -----------------

    def expect(self, status, words, method='POST', path='/v2/models/%s/infer' % MODEL,
               body=None, headers=None):
        got, _, data = self.rest.request(method, path, body, headers)
        self.assertEqual(got, status, data)
        msg = json.loads(data)['error']
        for w in words:
            self.assertIn(w, msg)
        # The server keeps answering good requests.
        inputs = export_models.make_inputs(MODEL, 1, seed=9)
        ok, doc = self.rest.infer_json(MODEL, inputs)
        self.assertEqual(ok, 200, doc)
        return msg

    def good_body(self, **tensor):
        t = Rest.tensor_json(INPUT, export_models.make_inputs(MODEL, 2, seed=5)[INPUT])
        t.update(tensor)
        return {'inputs': [t]}

    def test_unknown_model_and_version(self):
        self.expect(404, ['no_such_model'], path='/v2/models/no_such_model/infer',
                    body=self.good_body())
        self.expect(404, ['no_such_model'], method='GET', path='/v2/models/no_such_model')
        self.expect(404, ['no_such_model'], method='GET', path='/v2/models/no_such_model/ready')
        self.expect(404, ["no version '99'"], path='/v2/models/%s/versions/99/infer' % MODEL,
                    body=self.good_body())

    def test_bad_json(self):
        self.expect(400, ['not JSON'], body=b'{"inputs": [')
        self.expect(400, ['not a JSON object'], body=b'[1, 2]')
        self.expect(400, ["'inputs'"], body={'outputs': []})

    def test_wrong_datatype(self):
        self.expect(400, [INPUT, 'FP64', 'FP32'], body=self.good_body(datatype='FP64'))
        self.expect(400, [INPUT, "unknown datatype 'FLOAT32'"], body=self.good_body(datatype='FLOAT32'))
        self.expect(400, [INPUT, "'datatype'"], body=self.good_body(datatype=7))

    def test_wrong_shape(self):
        self.expect(400, [INPUT, 'rank 3'], body=self.good_body(shape=[2, 32, 1]))
        self.expect(400, [INPUT, 'dim 1 is 16'], body=self.good_body(shape=[4, 16]))
        self.expect(400, [INPUT, 'shape[1] is not an integer'], body=self.good_body(shape=[2, 'x']))
        self.expect(400, [INPUT, 'dim 0 is -2'], body=self.good_body(shape=[-2, 32],
                                                                    data=[0.0] * 64))

    def test_element_count_overflow(self):
        self.expect(400, [INPUT, 'overflow'], body=self.good_body(shape=[2 ** 62, 32]))
        self.expect(400, [INPUT, "'data' holds 64 elements"],
                    body=self.good_body(shape=[2 ** 57, 32]))
        self.expect(400, [INPUT, "'data' nests deeper than rank 8"],
                    body=self.good_body(data=[[[[[[[[[1.0]]]]]]]]], shape=[1] * 8))
        nested8 = self.good_body(data=[[[[[[[[1.0]]]]]]]], shape=[1] * 8)
        self.expect(400, [INPUT, 'rank 8 but the model expects rank 2'], body=nested8)

    def test_wrong_length(self):
        body = self.good_body()
        body['inputs'][0]['data'] = body['inputs'][0]['data'][:-1]
        self.expect(400, [INPUT, "'data' holds 63 elements", 'needs 64'], body=body)
        body['inputs'][0]['data'] += [1.0, 2.0]
        self.expect(400, [INPUT, "'data' holds 65 elements"], body=body)

    def test_bad_elements(self):
        body = self.good_body()
        body['inputs'][0]['data'][3] = 'x'
        self.expect(400, [INPUT, 'data[3] is not a number'], body=body)
        self.expect(400, [INPUT, "'data' is missing"],
                    body={'inputs': [{'name': INPUT, 'shape': [1, 32], 'datatype': 'FP32'}]})

    def test_missing_unknown_duplicate_input(self):
        self.expect(400, ["missing input '%s'" % INPUT], body={'inputs': []})
        self.expect(400, ["unknown input 'bogus'"], body=self.good_body(name='bogus'))
        body = self.good_body()
        body['inputs'].append(body['inputs'][0])
        self.expect(400, ["input '%s' appears twice" % INPUT], body=body)
        self.expect(400, ["inputs[0]: 'name'"], body=self.good_body(name=None))

    def test_unknown_output(self):
        body = self.good_body()
        body['outputs'] = [{'name': 'nope_output'}]
        self.expect(400, ["unknown output 'nope_output'"], body=body)

    def test_bad_binary(self):
        a = export_models.make_inputs(MODEL, 2, seed=6)[INPUT]
        head = json.dumps({'inputs': [{'name': INPUT, 'shape': [2, 32], 'datatype': 'FP32',
                                       'parameters': {'binary_data_size': a.nbytes}}]}).encode()
        # The data is 4 bytes short of binary_data_size.
        self.expect(400, [INPUT, 'binary_data_size 256 goes past the end'],
                    body=head + a.tobytes()[:-4], headers={HEADER: str(len(head))})
        # binary_data_size disagrees with the shape.
        short = head.replace(b'256', b'252')
        self.expect(400, [INPUT, 'holds 252 bytes', 'needs 256'],
                    body=short + a.tobytes()[:-4], headers={HEADER: str(len(short))})
        # Bytes left over after the inputs.
        self.expect(400, ['4 bytes of binary data beyond'],
                    body=head + a.tobytes() + b'\0' * 4, headers={HEADER: str(len(head))})
        # A header length past the body, or no number.
        self.expect(400, [HEADER], body=head, headers={HEADER: str(len(head) + 1)})
        self.expect(400, [HEADER], body=head, headers={HEADER: 'many'})

    def test_body_too_large(self):
        self.expect(413, ['too large'], body=b' ' * (MAX_BODY + 1))

    def test_wrong_method_and_path(self):
        self.expect(405, ['use POST'], method='GET', path='/v2/models/%s/infer' % MODEL)
        self.expect(405, ['use GET'], method='POST', path='/v2/health/ready', body=b'')
        self.expect(405, ['use POST'], method='GET', path='/v2/repository/index')
        self.expect(404, ['no such endpoint'], method='GET', path='/v2/nope')
        self.expect(404, ['under /v2'], method='GET', path='/metrics')

    # ---- repository -------------------------------------------------------

    def test_repository_unload_load(self):
        status, index = self.rest.json('POST', '/v2/repository/index', {})
        self.assertEqual(status, 200)
        self.assertEqual(sorted((m['name'], m['state']) for m in index),
                         [(n, 'READY') for n in sorted(('logistic', MODEL, BATCHED,
                                                        'transformer'))])
        status, _ = self.rest.json('POST', '/v2/repository/models/%s/unload' % MODEL)
        self.assertEqual(status, 200)
        try:
            inputs = export_models.make_inputs(MODEL, 1, seed=8)
            status, doc = self.rest.infer_json(MODEL, inputs)
            self.assertEqual(status, 404, doc)
            self.assertIn(MODEL, doc['error'])
            status, index = self.rest.json('POST', '/v2/repository/index', {'ready': True})
            self.assertEqual((status, sorted(m['name'] for m in index)),
                             (200, sorted(('logistic', BATCHED, 'transformer'))))
        finally:
            status, doc = self.rest.json('POST', '/v2/repository/models/%s/load' % MODEL)
            self.assertEqual(status, 200, doc)
        status, doc = self.rest.infer_json(MODEL, export_models.make_inputs(MODEL, 1, seed=8))
        self.assertEqual(status, 200, doc)
        status, doc = self.rest.json('POST', '/v2/repository/models/no_such_model/load')
        self.assertEqual(status, 404, doc)
        self.assertIn('no_such_model', doc['error'])
        for name in ('.hidden', '..', 'x' * 200):
            status, doc = self.rest.json('POST', '/v2/repository/models/%s/load' % name)
            self.assertEqual(status, 400, (name, doc))
        self.assertIn('not a valid repository entry', doc['error'])
        # An escaped '/' is still a separator: no such endpoint.
        status, doc = self.rest.json('POST', '/v2/repository/models/..%2F..%2Fetc/load')
        self.assertEqual(status, 404, doc)

    # ---- curl -------------------------------------------------------------

    def curl(self, *args):
        out = subprocess.run(['curl', '-sS', '-w', '\n%{http_code}'] + list(args),
                             check=True, capture_output=True, timeout=60).stdout
        body, _, code = out.rpartition(b'\n')
        return int(code), body

    def test_curl(self):
        base = self.rest.base
        self.assertEqual(self.curl(base + '/v2/health/ready')[0], 200)
        code, body = self.curl(base + '/v2/models/' + MODEL)
        self.assertEqual(code, 200)
        self.assertEqual(json.loads(body)['inputs'][0]['name'], INPUT)
        inputs = export_models.make_inputs(MODEL, 2, seed=10)
        req = json.dumps({'inputs': [Rest.tensor_json(INPUT, inputs[INPUT], nested=True)]})
        code, body = self.curl('-H', 'Content-Type: application/json', '-d', req,
                               base + '/v2/models/%s/infer' % MODEL)
        self.assertEqual(code, 200, body)
        out = json.loads(body)['outputs'][0]
        got = np.array(out['data'], dtype=np.float32).reshape(out['shape'])
        np.testing.assert_allclose(got, reference(inputs), rtol=1e-5, atol=1e-6)
        code, body = self.curl('-d', '{}', base + '/v2/models/nope/infer')
        self.assertEqual(code, 404)
        self.assertIn('nope', json.loads(body)['error'])


TOKENS = {'infer': 'infer-token-5a1d0c', 'admin': 'admin-token-9e27b4'}


class TlsTokenCluster(kserve.Cluster):
    """A coordinator with TLS (scripts/certs.sh) and --auth-token-file; its
    gRPC client trusts the CA and sends the admin token."""

    def __init__(self, certs, **kw):
        super().__init__(**kw)
        self.certs = certs

    def new_client(self):
        with open(os.path.join(self.certs, 'ca.crt'), 'rb') as f:
            creds = kserve.grpc.ssl_channel_credentials(root_certificates=f.read())
        return kserve.Client(self.address, creds=creds,
                             metadata=[('authorization', 'Bearer ' + TOKENS['admin'])])


class HttpsTokens(kserve.ClusterTestCase):
    """--http-listen under --tls-cert/--tls-key and --auth-token-file: HTTPS
    with the coordinator's certificate; no or an unknown token is 401, an
    infer token on the repository 403; health needs none."""

    cluster_class = TlsTokenCluster

    @classmethod
    def cluster_options(cls, tmp):
        certs = os.path.join(tmp, 'certs')
        subprocess.run(['sh', os.path.join(kserve.SOURCE, 'scripts', 'certs.sh'), certs, '1'],
                       check=True, capture_output=True)
        tokens = os.path.join(tmp, 'tokens')
        with open(tokens, 'w') as f:
            f.write('%s infer\n%s admin\n' % (TOKENS['infer'], TOKENS['admin']))
        cls.port = kserve.free_port()
        cls.ca = os.path.join(certs, 'ca.crt')
        tls = ['--tls-cert', os.path.join(certs, 'coordinator.crt'),
               '--tls-key', os.path.join(certs, 'coordinator.key'), '--tls-ca', cls.ca]
        return {'certs': certs, 'local_workers': 1,
                'models': [(MODEL, export_models.export(MODEL, tmp))],
                'extra_args': tls + ['--auth-token-file', tokens,
                                     '--http-listen', '127.0.0.1:%d' % cls.port]}

    def rest(self, token=None):
        return Rest('https://127.0.0.1:%d' % self.port, token,
                    ssl.create_default_context(cafile=self.ca))

    def test_tokens(self):
        inputs = export_models.make_inputs(MODEL, 2, seed=11)
        want = reference(inputs)
        for token in (None, 'not-a-token', TOKENS['infer'][:-1]):
            status, doc = self.rest(token).infer_json(MODEL, inputs)
            self.assertEqual(status, 401, doc)
            self.assertIn('bearer token', doc['error'])
            self.assertEqual(self.rest(token).json('GET', '/v2/models/' + MODEL)[0], 401)
        self.assertEqual(self.rest().request('GET', '/v2/health/ready')[0], 200)
        for token in TOKENS.values():
            status, doc = self.rest(token).infer_json(MODEL, inputs)
            self.assertEqual(status, 200, doc)
            got = np.array(doc['outputs'][0]['data'], dtype=np.float32).reshape(2, 10)
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
        status, doc = self.rest(TOKENS['infer']).json('POST', '/v2/repository/index', {})
        self.assertEqual(status, 403, doc)
        self.assertIn('role admin', doc['error'])
        status, doc = self.rest(TOKENS['infer']).json(
            'POST', '/v2/repository/models/%s/unload' % MODEL)
        self.assertEqual(status, 403, doc)
        self.assertEqual(self.rest(TOKENS['infer']).infer_json(MODEL, inputs)[0], 200)
        status, index = self.rest(TOKENS['admin']).json('POST', '/v2/repository/index', {})
        self.assertEqual((status, [m['name'] for m in index]), (200, [MODEL]))

    def test_curl_https(self):
        out = subprocess.run(['curl', '-sS', '--cacert', self.ca, '-H',
                              'Authorization: Bearer ' + TOKENS['infer'], '-w', '\n%{http_code}',
                              'https://127.0.0.1:%d/v2/models/%s/ready' % (self.port, MODEL)],
                             check=True, capture_output=True, timeout=60).stdout
        self.assertEqual(out.rpartition(b'\n')[2], b'200')
        # Plain HTTP on the HTTPS port gets no answer.
        r = subprocess.run(['curl', '-sS', 'http://127.0.0.1:%d/v2/health/live' % self.port],
                           capture_output=True, timeout=60)
        self.assertNotEqual(r.returncode, 0)


class NotReady(unittest.TestCase):
    def test_no_worker_is_503(self):
        """No worker ever joins: live, not ready; inference is 503."""
        tmp = tempfile.mkdtemp(prefix='tessera_rest_nr_')
        port = kserve.free_port()
        rest = Rest('http://127.0.0.1:%d' % port)
        try:
            path = export_models.export(MODEL, tmp)
            with kserve.Cluster(models=[(MODEL, path)], local_workers=0, wait_ready=False,
                                extra_args=['--http-listen', '127.0.0.1:%d' % port]):
                self.assertEqual(rest.request('GET', '/v2/health/live')[0], 200)
                self.assertEqual(rest.request('GET', '/v2/health/ready')[0], 503)
                status, doc = rest.json('GET', '/v2/models/%s/ready' % MODEL)
                self.assertEqual((status, doc['ready']), (503, False))
                status, doc = rest.infer_json(MODEL, export_models.make_inputs(MODEL, 1))
                self.assertEqual(status, 503, doc)
                self.assertIn('not ready', doc['error'])
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


class Options(unittest.TestCase):
    def test_plaintext_refused_off_loopback(self):
        r = subprocess.run([kserve.binary('tessera-coordinator'), '--listen', '127.0.0.1:0',
                            '--http-listen', '0.0.0.0:0'], capture_output=True, timeout=30)
        self.assertEqual(r.returncode, 2)
        self.assertIn(b'--http-listen', r.stderr)
        r = subprocess.run([kserve.binary('tessera-coordinator'), '--listen', '127.0.0.1:0',
                            '--http-max-body', '0'], capture_output=True, timeout=30)
        self.assertEqual(r.returncode, 2)
        self.assertIn(b'--http-max-body', r.stderr)

    def test_tls_without_tokens_refused(self):
        with tempfile.TemporaryDirectory() as certs:
            subprocess.run(['sh', os.path.join(kserve.SOURCE, 'scripts', 'certs.sh'),
                            certs, '1'], check=True, capture_output=True)
            r = subprocess.run([kserve.binary('tessera-coordinator'), '--listen', '127.0.0.1:0',
                                '--tls-cert', os.path.join(certs, 'coordinator.crt'),
                                '--tls-key', os.path.join(certs, 'coordinator.key'),
                                '--tls-ca', os.path.join(certs, 'ca.crt'),
                                '--http-listen', '127.0.0.1:0'], capture_output=True, timeout=30)
        self.assertEqual(r.returncode, 2)
        self.assertIn(b'--http-listen with TLS needs --auth-token-file', r.stderr)


if __name__ == '__main__':
    unittest.main()
