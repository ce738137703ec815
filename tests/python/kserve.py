"""A KServe v2 gRPC client written from the protocol alone, and a Cluster
context manager that runs a tessera-coordinator for a test.

The message classes come from compiling proto/inference.proto and
proto/health.proto with `protoc --python_out` at import time into a
temporary directory; methods are called by path through
grpc.Channel.unary_unary, so nothing here depends on Tessera's own code.

Environment: TESSERA_SOURCE (the source tree; default: two levels above this
file) and TESSERA_BUILD (the meson build dir; default SOURCE/build).
"""
import atexit
import collections
import importlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

import grpc
import numpy as np

SOURCE = os.environ.get('TESSERA_SOURCE') or os.path.dirname(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.environ.get('TESSERA_BUILD') or os.path.join(SOURCE, 'build')


def compile_protos(*protos):
    """The message modules of proto/NAME.proto for each NAME.proto given, in
    order: compiled with `protoc --python_out` into a temporary directory
    (removed at exit) and imported from there. A module imported before is
    returned again, as import does."""
    out = tempfile.mkdtemp(prefix='tessera_pb2_')
    atexit.register(shutil.rmtree, out, True)
    subprocess.run(['protoc', '--proto_path=' + os.path.join(SOURCE, 'proto'),
                    '--python_out=' + out] + list(protos), check=True)
    sys.path.insert(0, out)
    try:
        return tuple(importlib.import_module(os.path.splitext(p)[0] + '_pb2')
                     for p in protos)
    finally:
        sys.path.remove(out)


pb, health_pb = compile_protos('inference.proto', 'health.proto')

KSERVE = '/inference.GRPCInferenceService/'
HEALTH_CHECK = '/grpc.health.v1.Health/Check'

# KServe datatype -> (numpy dtype, InferTensorContents field)
DATATYPES = collections.OrderedDict([
    ('BOOL', (np.bool_, 'bool_contents')),
    ('UINT8', (np.uint8, 'uint_contents')),
    ('UINT16', (np.uint16, 'uint_contents')),
    ('UINT32', (np.uint32, 'uint_contents')),
    ('UINT64', (np.uint64, 'uint64_contents')),
    ('INT8', (np.int8, 'int_contents')),
    ('INT16', (np.int16, 'int_contents')),
    ('INT32', (np.int32, 'int_contents')),
    ('INT64', (np.int64, 'int64_contents')),
    ('FP16', (np.float16, None)),  # raw only
    ('FP32', (np.float32, 'fp32_contents')),
    ('FP64', (np.float64, 'fp64_contents')),
])


def datatype_of(array):
    """The KServe datatype name of a numpy array."""
    for name, (dtype, _) in DATATYPES.items():
        if array.dtype == np.dtype(dtype):
            return name
    raise ValueError('no KServe datatype for numpy dtype %s' % array.dtype)


def binary(name):
    """Path of a built program: tessera-coordinator, tessera-worker, tessera."""
    folder = {'tessera-coordinator': 'coordinator', 'tessera-worker': 'worker',
              'tessera': 'client'}[name]
    return os.path.join(BUILD, folder, name)


def run_command(cmd, timeout=60):
    """Runs cmd to its end with stdin closed; returns the CompletedProcess
    (text output)."""
    return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          stdin=subprocess.DEVNULL, universal_newlines=True,
                          timeout=timeout)


def run_tessera(*args, timeout=60):
    """Runs the `tessera` CLI; returns the CompletedProcess (text output)."""
    return run_command([binary('tessera')] + list(args), timeout=timeout)


def refused_at_start(test, cmd, label, prefix='tessera-coordinator:'):
    """Runs a daemon's command line that must be refused before it listens:
    asserts (on the unittest.TestCase test) a non-zero exit, no 'listening
    on' and a stderr line starting with prefix. Returns (the last such line,
    a message for further assertions naming label)."""
    p = run_command(cmd)
    what = '%s: exit %d\n%s' % (label, p.returncode, p.stderr[-2000:])
    test.assertNotEqual(p.returncode, 0, what)
    test.assertNotIn('listening on', p.stdout, what)
    last = [l for l in p.stderr.splitlines() if l.startswith(prefix)]
    test.assertTrue(last, what)
    return last[-1], what


class CliMixin:
    """For unittest.TestCase: self.tessera(*args, expect=status)."""

    def tessera(self, *args, expect=0):
        p = run_tessera(*args)
        self.assertEqual(p.returncode, expect, 'tessera %s\nstdout:\n%s\nstderr:\n%s' % (
            ' '.join(args), p.stdout, p.stderr))
        return p


def tls_credentials(cert_dir, name):
    """Channel credentials for mutual TLS with scripts/certs.sh's files in
    cert_dir: trust its ca.crt, present certificate `name` (.crt/.key)."""
    def pem(n):
        with open(os.path.join(cert_dir, n), 'rb') as f:
            return f.read()
    return grpc.ssl_channel_credentials(root_certificates=pem('ca.crt'),
                                        private_key=pem(name + '.key'),
                                        certificate_chain=pem(name + '.crt'))


def sign_leaf(ca_dir, name, san, out_dir):
    """A new leaf certificate out_dir/name.{crt,key} for subjectAltName `san`
    (plus DNS:localhost and IP:127.0.0.1), signed by ca_dir's ca.crt/ca.key
    the way scripts/certs.sh signs; returns name."""
    path = os.path.join(out_dir, name)
    subprocess.run(['openssl', 'req', '-newkey', 'rsa:2048', '-nodes', '-subj', '/CN=' + name,
                    '-keyout', path + '.key', '-out', path + '.csr'],
                   check=True, stderr=subprocess.DEVNULL)
    with open(path + '.ext', 'w') as f:
        f.write('subjectAltName=%s,DNS:localhost,IP:127.0.0.1\n'
                'extendedKeyUsage=serverAuth,clientAuth\n' % san)
    subprocess.run(['openssl', 'x509', '-req', '-in', path + '.csr', '-CA',
                    os.path.join(ca_dir, 'ca.crt'), '-CAkey', os.path.join(ca_dir, 'ca.key'),
                    '-CAcreateserial', '-days', '1', '-extfile', path + '.ext',
                    '-out', path + '.crt'], check=True, stderr=subprocess.DEVNULL)
    return name


def free_port():
    """A loopback port nothing listens on now (bound, then released): for a
    daemon's HTTP port, which prints no address of its own."""
    import socket
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
    s.close()
    return port


def open_channel(address, creds=None, options=()):
    """A channel to address: TLS with creds (grpc.ChannelCredentials, e.g.
    tls_credentials), plaintext without."""
    if creds is None:
        return grpc.insecure_channel(address, options=list(options))
    return grpc.secure_channel(address, creds, options=list(options))


class Client:
    """Synchronous KServe v2 client; every method raises grpc.RpcError on a
    non-OK status (e.code(), e.details()). creds: as open_channel;
    metadata: (key, value) pairs sent with every call."""

    def __init__(self, address, timeout=30.0, creds=None, metadata=None):
        self.address = address
        self.timeout = timeout
        self.metadata = metadata
        self.channel = open_channel(address, creds, options=[
            ('grpc.max_receive_message_length', -1),
            ('grpc.max_send_message_length', -1)])

    def close(self):
        self.channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def call(self, path, request, response_class, timeout=None):
        method = self.channel.unary_unary(
            path, request_serializer=type(request).SerializeToString,
            response_deserializer=response_class.FromString)
        return method(request, timeout=timeout or self.timeout,
                      metadata=self.metadata)

    def kserve(self, method, request, timeout=None):
        response_class = getattr(pb, method + 'Response')
        return self.call(KSERVE + method, request, response_class, timeout)

    # -- health and metadata --
    def server_live(self):
        return self.kserve('ServerLive', pb.ServerLiveRequest()).live

    def server_ready(self):
        return self.kserve('ServerReady', pb.ServerReadyRequest()).ready

    def model_ready(self, name):
        return self.kserve('ModelReady', pb.ModelReadyRequest(name=name)).ready

    def server_metadata(self):
        return self.kserve('ServerMetadata', pb.ServerMetadataRequest())

    def model_metadata(self, name):
        return self.kserve('ModelMetadata', pb.ModelMetadataRequest(name=name))

    def repository_index(self):
        return self.kserve('RepositoryIndex', pb.RepositoryIndexRequest()).models

    def load(self, name):
        return self.kserve('RepositoryModelLoad',
                           pb.RepositoryModelLoadRequest(model_name=name))

    def unload(self, name):
        return self.kserve('RepositoryModelUnload',
                           pb.RepositoryModelUnloadRequest(model_name=name))

    def health(self, service=''):
        """grpc.health.v1 Check: the status name ('SERVING', ...)."""
        r = self.call(HEALTH_CHECK, health_pb.HealthCheckRequest(service=service),
                      health_pb.HealthCheckResponse)
        return health_pb.HealthCheckResponse.ServingStatus.Name(r.status)

    # -- inference --
    @staticmethod
    def build_request(model, inputs, typed=False, outputs=None, datatypes=None,
                      shapes=None, raw=None):
        """A ModelInferRequest for {name: ndarray}.

        typed: send InferTensorContents instead of raw_input_contents.
        outputs: names of the requested outputs (None: all).
        datatypes / shapes / raw: {input name: override} of the datatype
        string, the shape list or the raw bytes, for bad-input tests; the
        tensor's own values are used for everything not overridden.
        """
        datatypes, shapes, raw = datatypes or {}, shapes or {}, raw or {}
        req = pb.ModelInferRequest(model_name=model)
        for name, value in inputs.items():
            a = np.ascontiguousarray(value)
            a = a.astype(a.dtype.newbyteorder('<'), copy=False)
            t = req.inputs.add(name=name, datatype=datatypes.get(name, datatype_of(a)))
            t.shape.extend(shapes.get(name, a.shape))
            if typed:
                field = DATATYPES[datatype_of(a)][1]
                if field is None:
                    raise ValueError('%s has no typed contents field' % datatype_of(a))
                getattr(t.contents, field).extend(a.ravel().tolist())
            else:
                req.raw_input_contents.append(raw.get(name, a.tobytes()))
        for name in outputs or ():
            req.outputs.add(name=name)
        return req

    def infer_request(self, request, timeout=None):
        """Sends a prepared ModelInferRequest; returns the ModelInferResponse."""
        return self.kserve('ModelInfer', request, timeout)

    @staticmethod
    def decode_response(resp):
        """{output name: ndarray} from raw_output_contents or typed contents."""
        if resp.raw_output_contents and len(resp.raw_output_contents) != len(resp.outputs):
            raise ValueError('%d raw_output_contents for %d outputs' % (
                len(resp.raw_output_contents), len(resp.outputs)))
        out = collections.OrderedDict()
        for i, o in enumerate(resp.outputs):
            dtype, field = DATATYPES[o.datatype]
            shape = tuple(o.shape)
            if resp.raw_output_contents:
                a = np.frombuffer(resp.raw_output_contents[i], dtype=np.dtype(dtype).newbyteorder('<'))
            else:
                a = np.array(getattr(o.contents, field), dtype=dtype)
            if a.size != int(np.prod(shape, dtype=np.int64)):
                raise ValueError('output %s: %d values for shape %s' % (o.name, a.size, shape))
            out[o.name] = a.reshape(shape).astype(dtype)
        return out

    def infer(self, model, inputs, typed=False, outputs=None, timeout=None, **overrides):
        """Runs ModelInfer: {output name: ndarray}. See build_request."""
        req = self.build_request(model, inputs, typed, outputs, **overrides)
        return self.decode_response(self.infer_request(req, timeout))


class Daemon:
    """A Tessera daemon for a `with` block: started with `command`, ready once
    it prints "listening on HOST:PORT" on stdout (self.address).

    On exit it sends SIGTERM and fails (AssertionError) unless the daemon
    exits with status 0 within 10 s; it is killed if it does not exit.
    stdout and stderr go to files (log() reads them), so the daemon never
    blocks on a full pipe.
    """

    name = 'daemon'

    def __init__(self, command, start_timeout=120.0):
        self._command = list(command)
        self.start_timeout = start_timeout
        self.proc = None
        self.address = None
        self.killed = False

    def command(self):
        return self._command

    def log(self):
        """Everything the daemon printed so far (stdout, then stderr)."""
        text = ''
        for f in (self._out, self._err):
            with open(f.name, errors='replace') as r:
                text += r.read()
        return text

    def __enter__(self):
        self._out = tempfile.NamedTemporaryFile(prefix=self.name + '_out_', mode='w+')
        self._err = tempfile.NamedTemporaryFile(prefix=self.name + '_err_', mode='w+')
        self.proc = subprocess.Popen(self.command(), stdout=self._out, stderr=self._err,
                                     stdin=subprocess.DEVNULL)
        try:
            self._wait_listening()
            self.started()
        except BaseException:
            self._stop(check=False)
            raise
        return self

    def started(self):
        """Hook: runs once the daemon listens."""

    def kill(self):
        """SIGKILL, for fault tests; exit then skips the exit-status check."""
        self.killed = True
        self.proc.kill()
        self.proc.wait()

    def _wait_listening(self):
        deadline = time.monotonic() + self.start_timeout
        pattern = re.compile(r'^listening on (\S+):(\d+)\s*$', re.M)
        while True:
            with open(self._out.name, errors='replace') as r:
                m = pattern.search(r.read())
            if m:
                self.address = '%s:%s' % (m.group(1), m.group(2))
                return
            if self.proc.poll() is not None:
                raise AssertionError('%s exited with %d before listening:\n%s'
                                     % (self.name, self.proc.returncode, self.log()[-4000:]))
            if time.monotonic() > deadline:
                raise AssertionError('%s printed no "listening on" line in %.0f s:\n%s'
                                     % (self.name, self.start_timeout, self.log()[-4000:]))
            time.sleep(0.05)

    def _stop(self, check):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            if check:
                raise AssertionError('%s did not exit within 10 s of SIGTERM:\n%s'
                                     % (self.name, self.log()[-4000:]))
            return
        finally:
            log = self.log()
            self._out.close()
            self._err.close()
        if check and not self.killed and rc != 0:
            raise AssertionError('%s exited with status %d after SIGTERM:\n%s'
                                 % (self.name, rc, log[-4000:]))

    def __exit__(self, exc_type, exc, tb):
        self._stop(check=True)
        return False


class Worker(Daemon):
    """`tessera-worker --listen 127.0.0.1:0 [--threads N]`."""

    name = 'worker'

    def __init__(self, threads=1, extra_args=(), **kw):
        super().__init__([binary('tessera-worker'), '--listen', '127.0.0.1:0',
                          '--threads', str(threads)] + list(extra_args), **kw)


class Cluster(Daemon):
    """`tessera-coordinator --listen 127.0.0.1:0` with models and workers.

    models: model specs, each "NAME=FILE[,k=v...]" or (name, path, {k: v}).
    local_workers: --local-workers N (0: none); workers: --worker ADDRs.
    wait_ready: once listening, wait for ServerReady (else ServerLive).
    self.client is a Client connected to it.
    """

    name = 'coordinator'

    def __init__(self, models=(), local_workers=2, workers=(), extra_args=(),
                 wait_ready=True, **kw):
        super().__init__([], **kw)
        self.models = [self._spec(m) for m in models]
        self.local_workers = local_workers
        self.workers = list(workers)
        self.extra_args = list(extra_args)
        self.wait_ready = wait_ready
        self.client = None

    @staticmethod
    def _spec(m):
        if isinstance(m, str):
            return m
        name, path, opts = (tuple(m) + ({},))[:3]
        return '%s=%s%s' % (name, path, ''.join(',%s=%s' % kv for kv in sorted(opts.items())))

    def command(self):
        cmd = [binary('tessera-coordinator'), '--listen', '127.0.0.1:0']
        if self.local_workers:
            cmd += ['--local-workers', str(self.local_workers)]
        for w in self.workers:
            cmd += ['--worker', w]
        for m in self.models:
            cmd += ['--model', m]
        return cmd + self.extra_args

    def new_client(self):
        """The Client of self.client (a subclass may give credentials)."""
        return Client(self.address)

    def started(self):
        self.client = self.new_client()
        deadline = time.monotonic() + self.start_timeout
        last = None
        while time.monotonic() < deadline:
            try:
                if self.wait_ready and self.client.server_ready():
                    return
                if not self.wait_ready and self.client.server_live():
                    return
            except grpc.RpcError as e:
                last = e
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError('coordinator at %s not %s (last error %r):\n%s' % (
            self.address, 'ready' if self.wait_ready else 'live', last, self.log()[-4000:]))

    def _stop(self, check):
        if self.client:
            self.client.close()
        super()._stop(check)


class ClusterTestCase(unittest.TestCase):
    """Serves one coordinator for a whole test class: setUpClass makes a
    temporary directory self.tmp, asks cluster_options(tmp) for the Cluster's
    keyword arguments (the subclass writes its model files there) and starts
    it; self.cluster and self.client are then set. tearDownClass stops it
    (failing if it does not exit cleanly) and removes the directory.
    cluster_class is the Cluster (sub)class it starts."""

    cluster_class = Cluster

    @classmethod
    def cluster_options(cls, tmp):
        """{'models': [...], 'local_workers': N, 'extra_args': [...], ...}"""
        raise NotImplementedError

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix='tessera_%s_' % cls.__name__)
        try:
            cls.cluster = cls.cluster_class(**cls.cluster_options(cls.tmp))
            cls.cluster.__enter__()
        except BaseException:
            shutil.rmtree(cls.tmp, ignore_errors=True)
            raise
        cls.client = cls.cluster.client

    @classmethod
    def tearDownClass(cls):
        try:
            cls.cluster.__exit__(None, None, None)
        finally:
            shutil.rmtree(cls.tmp, ignore_errors=True)
