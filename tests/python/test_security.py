"""Security (docs/SECURITY.md, issue 12): mutual TLS, roles in certificates,
bearer tokens and the loopback rule, with real daemons over real sockets.

Certificates come from scripts/certs.sh at module start: the cluster's CA
(coordinator, worker0, worker1, admin, client) and a second, unrelated CA
whose certificates carry the same SPIFFE IDs. Every refused call expects its
exact gRPC code and message; every refusal has an accepted counterpart
(same call, right credentials) so that a test cannot pass by everything
failing.

  MutualTls  a coordinator and two workers on mTLS serving the MLP split
             over both (strategy tensor): answers match torch for client
             and admin certificates; no certificate, another CA's, or
             plaintext fail the handshake (UNAVAILABLE); a client, worker or
             admin certificate calling a worker directly, a client calling
             the admin and repository methods, a worker calling ModelInfer:
             PERMISSION_DENIED naming the role needed.
  RogueWorker  a coordinator waiting for workers; RegisterWorker from a
             client or admin certificate is refused and the fake worker it
             names is never called; from a worker certificate naming a
             server with another CA's certificate, nothing reaches it either
             (the coordinator verifies); naming a server with a valid
             certificate, shards arrive (the control: the fake records).
             The same with real workers that --join: a client certificate
             is refused and sent nothing, a worker certificate serves.
  Tokens     --auth-token-file: none / malformed / unknown / prefix of a
             token: UNAUTHENTICATED; infer token on admin and repository
             calls: PERMISSION_DENIED (and unload nothing), the admin token
             unloads and loads; tokens never stand in for a worker
             certificate; the CLI's --token and TESSERA_TOKEN; SIGHUP adds
             and revokes tokens, a broken file keeps the old ones, and
             requests under a kept token never fail across reloads.
  Identities certificates of the cluster's CA with a look-alike SPIFFE ID
             (in a DNS or email SAN, another or a prefix trust domain, an
             unknown role): no role; --trust-domain moves the domain.
  StartUp    plaintext off loopback refused (exit 2, the message says how)
             unless --insecure, for both daemons; what counts as loopback; TLS
             options that go together; bad token files (exit 1, file:line).
"""
import concurrent.futures
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest

import grpc
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import admin  # noqa: E402
import export_models  # noqa: E402
import kserve  # noqa: E402

export_models.torch.set_num_threads(1)

RTOL, ATOL = 1e-5, 1e-6
WAIT = 15.0            # for a daemon to act on a registration or a signal
QUIET = 2.0            # how long a refused caller's target is watched
TOKENS = {'infer': 'infer-9f2c41d7e5a8b3', 'admin': 'admin-4be17a90c2d65f'}
WORKER = '/tessera.worker.v1.Worker/'

UNAVAILABLE = grpc.StatusCode.UNAVAILABLE
DENIED = grpc.StatusCode.PERMISSION_DENIED
UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED


def _compile_worker_proto():
    out = tempfile.mkdtemp(prefix='tessera_worker_pb2_')
    subprocess.run(['protoc', '--proto_path=' + os.path.join(kserve.SOURCE, 'proto'),
                    '--python_out=' + out, 'worker.proto'], check=True)
    sys.path.insert(0, out)
    import worker_pb2
    sys.path.remove(out)
    shutil.rmtree(out, True)
    return worker_pb2


wpb = _compile_worker_proto()

CERTS = OTHER = None  # directories, made by setUpModule


def setUpModule():
    global CERTS, OTHER
    top = tempfile.mkdtemp(prefix='tessera_certs_')
    CERTS, OTHER = os.path.join(top, 'cluster'), os.path.join(top, 'other')
    script = os.path.join(kserve.SOURCE, 'scripts', 'certs.sh')
    subprocess.run(['sh', script, CERTS, '2'], check=True)
    subprocess.run(['sh', script, OTHER, '1'], check=True)


def tearDownModule():
    shutil.rmtree(os.path.dirname(CERTS), ignore_errors=True)


def pem(directory, name):
    with open(os.path.join(directory, name), 'rb') as f:
        return f.read()


def tls_args(name, directory=None):
    """--tls-cert/--tls-key/--tls-ca of certificate `name` (certs.sh)."""
    d = directory or CERTS
    return ['--tls-cert', os.path.join(d, name + '.crt'),
            '--tls-key', os.path.join(d, name + '.key'),
            '--tls-ca', os.path.join(d, 'ca.crt')]


class TlsClient(admin.AdminClient):
    """kserve.Client / admin.AdminClient over TLS: trusting `ca_dir`'s CA,
    presenting certificate `cert` of `cert_dir` (None: none), sending
    `authorization` metadata (token: "Bearer TOKEN"). plaintext=True opens
    an insecure channel instead. Its own subchannel pool, so that no two
    clients share a connection (and a handshake)."""

    def __init__(self, address, cert=None, cert_dir=None, ca_dir=None, token=None,
                 authorization=None, plaintext=False, timeout=10.0):
        self.address = address
        self.timeout = timeout
        self.authorization = authorization or (token and 'Bearer ' + token)
        options = [('grpc.use_local_subchannel_pool', 1)]
        if plaintext:
            self.channel = grpc.insecure_channel(address, options=options)
            return
        d = cert_dir or CERTS
        creds = grpc.ssl_channel_credentials(
            root_certificates=pem(ca_dir or CERTS, 'ca.crt'),
            private_key=pem(d, cert + '.key') if cert else None,
            certificate_chain=pem(d, cert + '.crt') if cert else None)
        self.channel = grpc.secure_channel(address, creds, options=options)

    def call(self, path, request, response_class, timeout=None):
        method = self.channel.unary_unary(
            path, request_serializer=type(request).SerializeToString,
            response_deserializer=response_class.FromString)
        md = [('authorization', self.authorization)] if self.authorization else None
        return method(request, timeout=timeout or self.timeout, metadata=md)

    def load_shard(self, chunks):
        """Worker LoadShard, a client stream of LoadShardChunk."""
        method = self.channel.stream_unary(
            WORKER + 'LoadShard', request_serializer=wpb.LoadShardChunk.SerializeToString,
            response_deserializer=wpb.LoadShardResponse.FromString)
        return method(iter(chunks), timeout=self.timeout)

    def worker(self, method, request):
        """A unary worker method by name: Status, HasShard, RunShard, UnloadShard."""
        return self.call(WORKER + method, request, getattr(wpb, method + 'Response'))


class TlsCluster(kserve.Cluster):
    """kserve.Cluster whose readiness probe and self.client are a TlsClient
    with certificate `client_cert` (None: none) and bearer `token`."""

    def __init__(self, client_cert='admin', token=None, **kw):
        super().__init__(**kw)
        self.client_cert, self.token = client_cert, token

    def new_client(self):
        return TlsClient(self.address, self.client_cert, token=self.token)


def mlp_inputs(batch, seed):
    inputs = export_models.make_inputs('mlp', batch, seed=seed)
    return inputs, export_models.reference('mlp', inputs)


class InferLoop:
    """Infers `inputs` on model mlp through `client` over and over in a thread
    until stop(). `answers` gets one entry a call: True when the answer matches
    `want` (within RTOL/ATOL), else False, or 'CODE: details' for a failed call.
    Tests that reload credentials under load use it (test_rotate.py too)."""

    def __init__(self, client, inputs, want):
        self.client, self.inputs, self.want = client, inputs, want
        self.answers, self._stop = [], threading.Event()
        self._thread = threading.Thread(target=self._run)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            try:
                got = self.client.infer('mlp', self.inputs)['log_probs']
                self.answers.append(np.allclose(got, self.want['log_probs'],
                                                rtol=RTOL, atol=ATOL))
            except grpc.RpcError as e:
                self.answers.append('%s: %s' % (e.code(), e.details()))

    def stop(self):
        """Stops the loop and waits for it (again: a no-op); returns the
        answers that were not True."""
        self._stop.set()
        self._thread.join()
        return [a for a in self.answers if a is not True]


class SecurityCase(unittest.TestCase):
    def assertCode(self, code, pattern, fn, *args):
        """fn(*args) raises grpc.RpcError with `code` and details matching
        the regular expression `pattern`."""
        with self.assertRaises(grpc.RpcError) as cm:
            fn(*args)
        e = cm.exception
        self.assertEqual(e.code(), code, 'details: %s' % e.details())
        self.assertRegex(e.details() or '', pattern)
        return e

    def assertDenied(self, role, fn, *args):
        self.assertCode(DENIED, r'^this call needs a certificate of role %s '
                        r'\(spiffe://tessera/ROLE\)$' % re.escape(role), fn, *args)

    def assertMatchesTorch(self, client, model='mlp', seed=0):
        inputs, want = mlp_inputs(5, seed)
        got = client.infer(model, inputs)
        self.assertEqual(list(got), list(want))
        for name in want:
            np.testing.assert_allclose(got[name], want[name], rtol=RTOL, atol=ATOL,
                                       err_msg='%s/%s' % (model, name))


# Handshake failures, in grpc's words as the client sees them: the server
# refused the client (it closes the connection), or the client refused the
# server's certificate.
REFUSED_BY_SERVER = (r'^failed to connect to all addresses; last error: \w+: '
                     r'ipv4:127\.0\.0\.1:\d+: (Socket closed|Connection reset by peer)')
SERVER_UNVERIFIED = (r'^failed to connect to all addresses; last error: \w+: '
                     r'ipv4:127\.0\.0\.1:\d+: Ssl handshake failed: .*certificate verify failed')


class MutualTls(SecurityCase):
    """A coordinator and two workers, all on mutual TLS."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix='tessera_security_')
        cls.stack = []
        try:
            path = export_models.export('mlp', cls.tmp)
            cls.workers = []
            for i in range(2):
                w = kserve.Worker(extra_args=tls_args('worker%d' % i), start_timeout=30)
                cls.stack.append(w.__enter__())
                cls.workers.append(w)
            cls.cluster = TlsCluster(
                models=[('mlp', path, {'strategy': 'tensor', 'shards': 2})],
                local_workers=0, workers=[w.address for w in cls.workers],
                extra_args=tls_args('coordinator'), start_timeout=60)
            cls.stack.append(cls.cluster.__enter__())
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        try:
            while cls.stack:
                cls.stack.pop().__exit__(None, None, None)
        finally:
            shutil.rmtree(cls.tmp, ignore_errors=True)

    def client(self, *args, **kw):
        return self.enterContext(TlsClient(self.cluster.address, *args, **kw))

    def on_worker(self, i, *args, **kw):
        return self.enterContext(TlsClient(self.workers[i].address, *args, **kw))

    def held_shards(self, i):
        """Shard ids worker i holds, asked with the coordinator's certificate."""
        return [s.shard_id for s in self.on_worker(i, 'coordinator').worker(
            'Status', wpb.StatusRequest()).shards]

    # ---- the model end to end --------------------------------------------

    def test_client_and_admin_certificates_infer(self):
        for cert in ('client', 'admin'):
            with self.subTest(cert=cert):
                c = self.client(cert)
                self.assertTrue(c.server_ready())
                self.assertMatchesTorch(c, seed=len(cert))
        # Both workers hold shards: the answer crossed both TLS links.
        for i in range(2):
            self.assertTrue(self.held_shards(i))

    def test_cli_with_certificate(self):
        inputs, want = mlp_inputs(3, seed=7)
        src, dst = os.path.join(self.tmp, 'in.npy'), os.path.join(self.tmp, 'out.npy')
        np.save(src, inputs['embedding'])
        base = ['infer', '--server', self.cluster.address, '--model', 'mlp',
                '--input', 'embedding=' + src, '--output', 'log_probs=' + dst]
        ca = os.path.join(CERTS, 'ca.crt')
        p = kserve.run_tessera(*base, '--ca', ca, '--cert', os.path.join(CERTS, 'client.crt'),
                               '--key', os.path.join(CERTS, 'client.key'))
        self.assertEqual(p.returncode, 0, p.stderr)
        np.testing.assert_allclose(np.load(dst), want['log_probs'], rtol=RTOL, atol=ATOL)
        p = kserve.run_tessera(*base, '--ca', ca)
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertTrue(p.stderr.startswith('tessera: UNAVAILABLE: '), p.stderr)

    # ---- the handshake ---------------------------------------------------

    def test_no_certificate_fails_handshake(self):
        self.assertCode(UNAVAILABLE, REFUSED_BY_SERVER, self.client().server_live)
        self.assertCode(UNAVAILABLE, REFUSED_BY_SERVER, self.client().health)
        self.assertCode(UNAVAILABLE, REFUSED_BY_SERVER, self.on_worker(0).worker,
                        'Status', wpb.StatusRequest())
        # Up all along: the same calls with a certificate.
        self.assertTrue(self.client('client').server_live())
        self.assertEqual(self.on_worker(0, 'coordinator').worker(
            'Status', wpb.StatusRequest()).threads, 1)

    def test_other_ca_certificate_fails_handshake(self):
        # Same SPIFFE IDs, signed by another CA.
        for cert in ('admin', 'client', 'coordinator'):
            with self.subTest(cert=cert):
                c = self.client(cert, cert_dir=OTHER)
                self.assertCode(UNAVAILABLE, REFUSED_BY_SERVER, c.server_live)
        c = self.on_worker(1, 'coordinator', cert_dir=OTHER)
        self.assertCode(UNAVAILABLE, REFUSED_BY_SERVER, c.worker, 'Status', wpb.StatusRequest())
        # The client side checks too: a server outside the CA it trusts.
        c = self.client('admin', cert_dir=OTHER, ca_dir=OTHER)
        self.assertCode(UNAVAILABLE, SERVER_UNVERIFIED, c.server_live)
        self.assertTrue(self.client('admin').server_live())

    def test_plaintext_client_refused(self):
        self.assertCode(UNAVAILABLE, REFUSED_BY_SERVER, self.client(plaintext=True).server_live)
        self.assertCode(UNAVAILABLE, REFUSED_BY_SERVER, self.on_worker(0, plaintext=True).worker,
                        'Status', wpb.StatusRequest())

    def test_health_needs_no_role(self):
        for cert in ('client', 'worker0', 'coordinator', 'admin'):
            with self.subTest(cert=cert):
                self.assertEqual(self.client(cert).health(), 'SERVING')
                self.assertEqual(self.on_worker(0, cert).health(), 'SERVING')

    # ---- roles -------------------------------------------------------------

    def test_client_certificate_cannot_administer(self):
        c = self.client('client')
        self.assertDenied('admin', c.cluster_status)
        self.assertDenied('admin', c.repository_index)
        self.assertDenied('admin', c.load, 'mlp')
        self.assertDenied('admin', c.unload, 'mlp')
        self.assertDenied('worker', c.register_worker, '127.0.0.1:1')
        self.assertDenied('worker', c.call, admin.SERVICE + 'DeregisterWorker',
                          admin.pb.DeregisterWorkerRequest(address=self.workers[0].address),
                          admin.pb.DeregisterWorkerResponse)
        # Nothing changed: the model still loaded, both workers still in.
        a = self.client('admin')
        status = a.cluster_status()
        self.assertEqual(sorted(w.address for w in status.workers),
                         sorted(w.address for w in self.workers))
        self.assertEqual(admin.model_state(status, 'mlp').state, 'READY')
        self.assertMatchesTorch(c, seed=3)

    def test_admin_certificate_administers(self):
        a = self.client('admin')
        status = a.cluster_status()
        self.assertEqual(len(status.workers), 2)
        self.assertEqual(len(admin.shards_of(status, 'mlp')[0]), 2)
        # Admin is not a worker.
        self.assertDenied('worker', a.register_worker, '127.0.0.1:1')

    def test_worker_certificate_cannot_infer(self):
        c = self.client('worker0')
        inputs, _ = mlp_inputs(1, seed=1)
        self.assertDenied('admin or client', c.infer, 'mlp', inputs)
        self.assertDenied('admin or client', c.server_live)
        self.assertDenied('admin or client', c.model_metadata, 'mlp')
        self.assertDenied('admin', c.cluster_status)
        self.assertDenied('admin', self.client('coordinator').cluster_status)

    def test_only_the_coordinator_calls_workers(self):
        shard = self.held_shards(0)[0]
        calls = [
            ('Status', lambda c: c.worker('Status', wpb.StatusRequest())),
            ('HasShard', lambda c: c.worker('HasShard', wpb.HasShardRequest(shard_ids=[shard]))),
            ('RunShard', lambda c: c.worker('RunShard', wpb.RunShardRequest(shard_id=shard))),
            ('UnloadShard', lambda c: c.worker('UnloadShard',
                                               wpb.UnloadShardRequest(shard_id=shard))),
            ('LoadShard', lambda c: c.load_shard([wpb.LoadShardChunk(
                shard_id='0' * 64, total_bytes=4, offset=0, data=b'abcd')])),
        ]
        for cert in ('client', 'admin', 'worker1'):
            for name, call in calls:
                with self.subTest(cert=cert, method=name):
                    self.assertDenied('coordinator', call, self.on_worker(0, cert))
        # The refused UnloadShard unloaded nothing, and the model answers.
        self.assertIn(shard, self.held_shards(0))
        self.assertTrue(self.on_worker(0, 'coordinator').worker(
            'HasShard', wpb.HasShardRequest(shard_ids=[shard])).present[0])
        self.assertMatchesTorch(self.client('client'), seed=4)


class FakeWorker:
    """A gRPC server on 127.0.0.1 with certificate `cert` of `cert_dir`
    that answers enough of the worker protocol to be sent shards (health
    SERVING, Status, HasShard "not held") to any caller (it asks for no
    client certificate, so only the caller's own verification of this
    server can keep a call from arriving) and records every call: self.calls
    lists the method paths, self.shard_bytes counts LoadShard data bytes
    (each LoadShard then fails, so the coordinator keeps trying)."""

    def __init__(self, cert, cert_dir):
        self.calls = []
        self.shard_bytes = 0
        self.server = grpc.server(concurrent.futures.ThreadPoolExecutor(4))
        self.server.add_generic_rpc_handlers([self])
        creds = grpc.ssl_server_credentials(
            [(pem(cert_dir, cert + '.key'), pem(cert_dir, cert + '.crt'))])
        self.address = '127.0.0.1:%d' % self.server.add_secure_port('127.0.0.1:0', creds)
        self.server.start()

    def stop(self):
        self.server.stop(0)

    def _unary(self, fn, request_class):
        return grpc.unary_unary_rpc_method_handler(
            fn, request_deserializer=request_class.FromString,
            response_serializer=lambda m: m.SerializeToString())

    def _load_shard(self, chunks, context):
        for chunk in chunks:
            self.shard_bytes += len(chunk.data)
        context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, 'fake worker keeps nothing')

    def service(self, details):
        self.calls.append(details.method)
        SERVING = kserve.health_pb.HealthCheckResponse.SERVING
        handlers = {
            kserve.HEALTH_CHECK: self._unary(
                lambda r, c: kserve.health_pb.HealthCheckResponse(status=SERVING),
                kserve.health_pb.HealthCheckRequest),
            WORKER + 'Status': self._unary(
                lambda r, c: wpb.StatusResponse(threads=1, listen=self.address),
                wpb.StatusRequest),
            WORKER + 'HasShard': self._unary(
                lambda r, c: wpb.HasShardResponse(present=[False] * len(r.shard_ids)),
                wpb.HasShardRequest),
            WORKER + 'LoadShard': grpc.stream_unary_rpc_method_handler(
                self._load_shard, request_deserializer=wpb.LoadShardChunk.FromString,
                response_serializer=lambda m: m.SerializeToString()),
        }
        return handlers.get(details.method)


class RogueWorker(SecurityCase):
    """Issue 12's rogue worker: RegisterWorker to a coordinator whose model
    waits for workers would be sent its shards at once."""

    def test_rogue_registration(self):
        tmp = tempfile.mkdtemp(prefix='tessera_rogue_')
        self.addCleanup(shutil.rmtree, tmp, True)
        path = export_models.export('mlp', tmp)
        cluster = self.enterContext(TlsCluster(
            models=[('mlp', path)], local_workers=0, wait_ready=False,
            extra_args=tls_args('coordinator'), start_timeout=60))
        fakes = {}
        for name, cert, d in (('client', 'client', CERTS), ('admin', 'admin', CERTS),
                              ('other_ca', 'worker0', OTHER), ('good', 'worker1', CERTS)):
            fakes[name] = FakeWorker(cert, d)
            self.addCleanup(fakes[name].stop)

        def register(cert, fake):
            with TlsClient(cluster.address, cert) as c:
                return c.register_worker(fakes[fake].address)

        self.assertDenied('worker', register, 'client', 'client')
        self.assertDenied('worker', register, 'admin', 'admin')
        # A worker certificate passes the role check, but the address it names
        # serves a certificate of another CA: the coordinator's handshake
        # fails, so it is not registered (a slot is taken only once the worker
        # answers its Status, docs/LIMITS.md).
        self.assertCode(UNAVAILABLE, r'certificate verify failed.*; not registered',
                        register, 'worker0', 'other_ca')
        # The control: a server with a certificate of the cluster's CA is
        # sent the shard within WAIT seconds of its registration.
        register('worker1', 'good')
        deadline = time.monotonic() + WAIT
        while fakes['good'].shard_bytes == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertGreater(fakes['good'].shard_bytes, 0, fakes['good'].calls)
        self.assertIn(WORKER + 'LoadShard', fakes['good'].calls)
        time.sleep(QUIET)
        for name in ('client', 'admin', 'other_ca'):
            self.assertEqual(fakes[name].calls, [], name)
            self.assertEqual(fakes[name].shard_bytes, 0, name)
        with TlsClient(cluster.address, 'admin') as a:
            listed = {w.address for w in a.cluster_status().workers}
        self.assertNotIn(fakes['client'].address, listed)
        self.assertNotIn(fakes['admin'].address, listed)
        self.assertNotIn(fakes['other_ca'].address, listed)
        self.assertIn(fakes['good'].address, listed)


    def test_join(self):
        """Real workers that --join: one whose certificate is a client's is
        refused and sent nothing; one with a worker certificate is sent the
        shards and the model answers as torch does."""
        tmp = tempfile.mkdtemp(prefix='tessera_join_')
        self.addCleanup(shutil.rmtree, tmp, True)
        cluster = self.enterContext(TlsCluster(
            models=[('mlp', export_models.export('mlp', tmp))], local_workers=0,
            wait_ready=False, extra_args=tls_args('coordinator'), start_timeout=60))

        def join(cert):
            return self.enterContext(kserve.Worker(
                extra_args=tls_args(cert) + ['--join', cluster.address], start_timeout=30))

        rogue = join('client')
        deadline = time.monotonic() + WAIT
        refused = (r'cannot register with coordinator %s \(retrying every \d+ ms\): .*'
                   r'this call needs a certificate of role worker' % re.escape(cluster.address))
        while not re.search(refused, rogue.log()):
            self.assertLess(time.monotonic(), deadline, rogue.log())
            time.sleep(0.05)
        good = join('worker0')
        deadline = time.monotonic() + WAIT
        while not cluster.client.model_ready('mlp'):
            self.assertLess(time.monotonic(), deadline, cluster.log()[-3000:])
            time.sleep(0.05)
        self.assertMatchesTorch(cluster.client, seed=9)
        listed = {w.address for w in cluster.client.cluster_status().workers}
        self.assertEqual(listed, {good.address})

        def held(w):
            with TlsClient(w.address, 'coordinator') as c:
                return c.worker('Status', wpb.StatusRequest()).shards

        self.assertTrue(held(good))
        self.assertEqual(list(held(rogue)), [])


class Tokens(SecurityCase, kserve.ClusterTestCase):
    """A TLS coordinator with --auth-token-file and one local worker."""

    cluster_class = TlsCluster

    @classmethod
    def cluster_options(cls, tmp):
        cls.token_file = os.path.join(tmp, 'tokens')
        cls.write_tokens(['# comment', '', TOKENS['infer'] + ' infer',
                          TOKENS['admin'] + ' admin', 'rotated-old-71c3 infer'])
        path = export_models.export('mlp', tmp)
        repo = os.path.join(tmp, 'repository')
        os.makedirs(os.path.join(repo, 'repo_mlp'))
        shutil.copy(path, os.path.join(repo, 'repo_mlp', 'model.onnx'))
        return {'client_cert': None, 'token': TOKENS['admin'], 'local_workers': 1,
                'models': [('mlp', path)], 'start_timeout': 60,
                'extra_args': tls_args('coordinator') + ['--auth-token-file', cls.token_file,
                                                         '--model-repository', repo]}

    @classmethod
    def write_tokens(cls, lines):
        with open(cls.token_file + '.new', 'w') as f:
            f.write('\n'.join(lines) + '\n')
        os.replace(cls.token_file + '.new', cls.token_file)

    def caller(self, token=None, cert=None, **kw):
        return self.enterContext(TlsClient(self.cluster.address, cert, token=token, **kw))

    def test_no_or_bad_token_unauthenticated(self):
        need = r'^a bearer token is required \(authorization: Bearer TOKEN\)$'
        unknown = r'^unknown bearer token$'
        inputs, _ = mlp_inputs(1, seed=2)
        for what, c, pattern in (
                ('none', self.caller(), need),
                ('client certificate, no token', self.caller(cert='client'), need),
                ('not Bearer', self.caller(authorization='Basic ' + TOKENS['admin']), need),
                ('Bearer and nothing', self.caller(authorization='Bearer '), need),
                ('unknown', self.caller('not-a-token'), unknown),
                ('prefix', self.caller(TOKENS['admin'][:-1]), unknown),
                ('longer', self.caller(TOKENS['admin'] + 'x'), unknown),
                ('case', self.caller(TOKENS['admin'].upper()), unknown)):
            with self.subTest(what=what):
                self.assertCode(UNAUTHENTICATED, pattern, c.server_live)
                self.assertCode(UNAUTHENTICATED, pattern, c.infer, 'mlp', inputs)
                self.assertCode(UNAUTHENTICATED, pattern, c.cluster_status)
                self.assertCode(UNAUTHENTICATED, pattern, c.repository_index)

    def test_certificate_optional_but_verified(self):
        # Clients may come without a certificate; one they present must
        # still verify, token or not.
        for cert in ('admin', 'worker0'):
            with self.subTest(cert=cert):
                c = self.caller(TOKENS['admin'], cert=cert, cert_dir=OTHER)
                self.assertCode(UNAVAILABLE, REFUSED_BY_SERVER, c.server_live)
                self.assertCode(UNAVAILABLE, REFUSED_BY_SERVER, c.register_worker, '127.0.0.1:1')
        self.assertTrue(self.caller(TOKENS['infer'], cert='client').server_live())
        self.assertTrue(self.caller(TOKENS['infer']).server_live())

    def test_infer_token(self):
        c = self.caller(TOKENS['infer'])
        self.assertMatchesTorch(c, seed=5)
        self.assertEqual(c.model_metadata('mlp').name, 'mlp')
        admin_only = r'^this call needs a token of role admin$'
        self.assertCode(DENIED, admin_only, c.cluster_status)
        self.assertCode(DENIED, admin_only, c.repository_index)
        self.assertCode(DENIED, admin_only, c.load, 'mlp')
        self.assertCode(DENIED, admin_only, c.unload, 'mlp')
        self.assertTrue(self.caller(TOKENS['admin']).model_ready('mlp'))

    def test_admin_token(self):
        c = self.caller(TOKENS['admin'])
        self.assertMatchesTorch(c, seed=6)
        status = c.cluster_status()
        self.assertEqual(admin.model_state(status, 'mlp').state, 'READY')
        self.assertTrue(status.workers)

    def test_repository(self):
        user, root = self.caller(TOKENS['infer']), self.caller(TOKENS['admin'])
        admin_only = r'^this call needs a token of role admin$'
        self.assertCode(DENIED, admin_only, user.unload, 'repo_mlp')
        self.assertCode(DENIED, admin_only, user.load, 'repo_mlp')
        self.assertTrue(user.model_ready('repo_mlp'))  # the refused unload did nothing
        self.assertEqual({m.name: m.state for m in root.repository_index()}.get('repo_mlp'),
                         'READY')
        root.unload('repo_mlp')
        self.assertCode(grpc.StatusCode.NOT_FOUND, 'repo_mlp', user.infer, 'repo_mlp',
                        mlp_inputs(1, seed=1)[0])
        root.load('repo_mlp')
        self.assertMatchesTorch(user, 'repo_mlp', seed=11)

    def test_token_is_not_a_worker_certificate(self):
        for c in (self.caller(TOKENS['admin']), self.caller(TOKENS['admin'], cert='client')):
            self.assertDenied('worker', c.register_worker, '127.0.0.1:1')
        # A worker certificate is: RegisterWorker goes by certificate alone.
        # The call passes the role check and reaches the registration, which
        # refuses the closed address (never answers its Status).
        self.assertCode(UNAVAILABLE, r'^worker 127\.0\.0\.1:1: .*; not registered: ',
                        self.caller(cert='worker0').register_worker, '127.0.0.1:1')

    def test_cli_token(self):
        ca = os.path.join(CERTS, 'ca.crt')
        base = ['status', '--server', self.cluster.address, '--ca', ca]
        p = kserve.run_tessera(*base)
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertTrue(p.stderr.startswith('tessera: UNAUTHENTICATED: '), p.stderr)
        p = kserve.run_tessera(*base, '--token', TOKENS['infer'])
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertTrue(p.stderr.startswith('tessera: PERMISSION_DENIED: '), p.stderr)
        env = dict(os.environ, TESSERA_TOKEN=TOKENS['admin'])
        p = subprocess.run([kserve.binary('tessera')] + base, env=env, timeout=60,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           universal_newlines=True)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn('model: mlp', p.stdout)

    def test_sighup_reload(self):
        def reloads():
            return len(re.findall(r'auth: \d+ token\(s\) from ', self.cluster.log()))

        def sighup(lines, expect_log):
            before = len(re.findall(expect_log, self.cluster.log()))
            self.write_tokens(lines)
            self.cluster.proc.send_signal(signal.SIGHUP)
            deadline = time.monotonic() + WAIT
            while len(re.findall(expect_log, self.cluster.log())) == before:
                self.assertLess(time.monotonic(), deadline, 'no reload logged:\n' +
                                self.cluster.log()[-2000:])
                time.sleep(0.05)

        old, new = self.caller('rotated-old-71c3'), self.caller('rotated-new-0d9e')
        keep = [TOKENS['infer'] + ' infer', TOKENS['admin'] + ' admin']
        self.assertTrue(old.server_live())
        self.assertCode(UNAUTHENTICATED, '^unknown bearer token$', new.server_live)
        # Requests of a kept token go on through every reload, unharmed.
        loop = InferLoop(self.caller(TOKENS['infer']), *mlp_inputs(4, seed=10))
        self.addCleanup(loop.stop)
        try:
            sighup(keep + ['rotated-new-0d9e admin'], r'auth: 3 token\(s\) from ')
            self.assertTrue(new.cluster_status().workers)
            self.assertCode(UNAUTHENTICATED, '^unknown bearer token$', old.server_live)
            self.assertMatchesTorch(self.caller(TOKENS['infer']), seed=8)
            # A broken file: logged, and the tokens in force stay.
            n = reloads()
            sighup(keep + ['rotated-new-0d9e superuser'],
                   r'SIGHUP: --auth-token-file .*:3: expected .* \(the old tokens stay in force\)')
            self.assertEqual(reloads(), n)
            self.assertTrue(new.cluster_status().workers)
            self.assertCode(UNAUTHENTICATED, '^unknown bearer token$', old.server_live)
            wrong = loop.stop()
            self.assertTrue(loop.answers)
            self.assertEqual(wrong, [])
        finally:
            self.write_tokens(keep + ['rotated-old-71c3 infer'])


def sign(name, san):
    """Certificate `name` (in CERTS) for subjectAltName `san`, signed by the
    cluster's CA."""
    return kserve.sign_leaf(CERTS, name, san, CERTS)


class Identities(SecurityCase):
    """Certificates of the cluster's CA whose SPIFFE ID is wrong in some
    way: only a URI SAN spiffe://TRUST_DOMAIN/ROLE[/NAME] gives ROLE."""

    def coordinator(self, client_cert, *args):
        c = TlsCluster(client_cert=client_cert, local_workers=0, wait_ready=False,
                       start_timeout=60,
                       extra_args=tls_args('coordinator') + list(args))
        return self.enterContext(c)

    def test_only_a_spiffe_uri_in_the_domain_is_a_role(self):
        c = self.coordinator('admin')
        for san in ('DNS:spiffe://tessera/admin', 'email:spiffe://tessera/admin',
                    'URI:spiffe://elsewhere/admin', 'URI:spiffe://tessera.evil/admin',
                    'URI:spiffe://tessera/administrator', 'URI:spiffe://tessera/',
                    'URI:https://tessera/admin', 'URI:spiffe://tesser/admin'):
            with self.subTest(san=san):
                cert = sign('odd', san)
                with TlsClient(c.address, cert) as a:
                    self.assertDenied('admin', a.cluster_status)
                    self.assertEqual(a.health(), 'SERVING')
        with TlsClient(c.address, sign('named', 'URI:spiffe://tessera/admin/alice')) as a:
            self.assertEqual(len(a.cluster_status().workers), 0)

    def test_trust_domain(self):
        mine = sign('elsewhere', 'URI:spiffe://elsewhere/admin')
        c = self.coordinator(mine, '--trust-domain', 'elsewhere')
        with TlsClient(c.address, 'admin') as a:
            self.assertCode(DENIED, r'^this call needs a certificate of role admin '
                            r'\(spiffe://elsewhere/ROLE\)$', a.cluster_status)
        with TlsClient(c.address, mine) as a:
            self.assertEqual(len(a.cluster_status().workers), 0)


class StartUp(SecurityCase):
    """The loopback rule and the options' consistency, at start-up."""

    def refused(self, daemon, *args, status=2):
        p = subprocess.run([kserve.binary(daemon)] + list(args), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, universal_newlines=True, timeout=30)
        self.assertEqual(p.returncode, status, p.stdout + p.stderr)
        self.assertNotIn('listening on', p.stdout)
        return p.stderr

    def starts(self, daemon, listen, *args):
        d = kserve.Daemon([kserve.binary(daemon), '--listen', listen] + list(args),
                          start_timeout=30)
        with d:
            self.assertTrue(d.address.startswith(listen.rsplit(':', 1)[0]), d.address)
            with TlsClient(d.address, plaintext=True) as c:
                self.assertEqual(c.health(), 'SERVING')
            return d.log()

    def test_plaintext_off_loopback_refused(self):
        for daemon in ('tessera-coordinator', 'tessera-worker'):
            for listen in ('0.0.0.0:0', '[::]:0', '[::2]:0', ':0', '10.1.2.3:0',
                           '127.0.0.1.nip.io:0', '127.example:0',
                           'localhost.example.com:0', '0177.0.0.1:0'):
                with self.subTest(daemon=daemon, listen=listen):
                    err = self.refused(daemon, '--listen', listen)
                    self.assertIn(
                        '%s: refusing to serve plaintext on non-loopback address %s: '
                        'give --tls-cert FILE --tls-key FILE --tls-ca FILE (scripts/certs.sh '
                        'DIR makes a cluster CA and certificates), or pass --insecure to '
                        'allow plaintext explicitly\n' % (daemon, listen), err)

    def test_metrics_off_loopback_refused(self):
        """/metrics is plaintext HTTP whatever the gRPC port does: the same
        rule holds for it, also when the gRPC port has TLS."""
        for daemon, role in (('tessera-coordinator', 'coordinator'),
                             ('tessera-worker', 'worker1')):
            for listen in ('0.0.0.0:0', '10.1.2.3:9101'):
                with self.subTest(daemon=daemon, listen=listen):
                    err = self.refused(daemon, '--listen', '127.0.0.1:0',
                                       '--metrics-listen', listen, *tls_args(role))
                    self.assertIn(
                        '%s: refusing to serve --metrics-listen %s in plaintext HTTP on a '
                        'non-loopback address: listen on 127.0.0.1 (and scrape through a '
                        'local agent), or pass --insecure to allow it\n' % (daemon, listen),
                        err)

    def test_insecure_allows_plaintext(self):
        for daemon in ('tessera-coordinator', 'tessera-worker'):
            with self.subTest(daemon=daemon):
                self.starts(daemon, '0.0.0.0:0', '--insecure')

    def test_loopback_plaintext_allowed(self):
        for daemon in ('tessera-coordinator', 'tessera-worker'):
            for listen in ('127.0.0.1:0', '127.0.0.2:0', 'localhost:0'):
                with self.subTest(daemon=daemon, listen=listen):
                    self.starts(daemon, listen)

    def test_options_go_together(self):
        cert = tls_args('coordinator')
        for daemon in ('tessera-coordinator', 'tessera-worker'):
            with self.subTest(daemon=daemon):
                err = self.refused(daemon, '--listen', '127.0.0.1:0', *cert[:4])
                self.assertIn('--tls-cert, --tls-key and --tls-ca go together', err)
        tokens = os.path.join(CERTS, 'ca.crt')  # any file: refused before it is read
        err = self.refused('tessera-coordinator', '--listen', '127.0.0.1:0',
                           '--auth-token-file', tokens)
        self.assertIn('--auth-token-file needs TLS', err)


    def test_token_file_errors(self):
        tmp = self.enterContext(tempfile.TemporaryDirectory(prefix='tessera_tokens_'))
        files = {'role': 'tok superuser\n', 'extra': 'tok infer more\n', 'empty': '# none\n',
                 'long': 'x' * 600 + ' admin\n'}
        for name, text in files.items():
            with open(os.path.join(tmp, name), 'w') as f:
                f.write(text)
        want = {'role': r":1: expected 'TOKEN ROLE' with ROLE infer or admin",
                'extra': r":1: expected 'TOKEN ROLE'", 'long': r":1: expected 'TOKEN ROLE'",
                'empty': r': no token$', 'missing': r"': No such file or directory$"}
        for name, pattern in want.items():
            with self.subTest(file=name):
                path = os.path.join(tmp, name)
                err = self.refused('tessera-coordinator', '--listen', '127.0.0.1:0',
                                   *tls_args('coordinator'), '--auth-token-file', path,
                                   status=1)
                self.assertRegex(err, r'(?m)^tessera-coordinator: --auth-token-file \'?'
                                 + re.escape(path) + pattern)  # quoted when unreadable
        err = self.refused('tessera-worker', '--listen', '127.0.0.1:0', *tls_args('worker0'),
                           '--auth-token-file', os.path.join(tmp, 'role'))
        self.assertIn('tessera-worker: --auth-token-file is for the coordinator', err)


if __name__ == '__main__':
    unittest.main()
