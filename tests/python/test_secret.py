"""The cluster secret (docs/SECURITY.md, issue 12 item 7): without
certificates, a coordinator's --local-workers and worker registration need
a per-cluster secret, so another local process can neither join nor drive
the workers.

  LocalWorkers  a plaintext loopback coordinator with one local worker
                serves the MLP (answers match torch); without the secret,
                the worker's RunShard, LoadShard and Status and the
                coordinator's RegisterWorker are UNAUTHENTICATED (exact
                message), a wrong secret too; the health check stays open.
  SecretFile    a standalone worker with --cluster-secret-file: Status
                without the secret is UNAUTHENTICATED, with it OK; a file
                group or others may read is refused at start (exit 2), and
                so is a secret of the wrong length or characters, from the
                file or from $TESSERA_CLUSTER_SECRET alike.
"""
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import unittest

import grpc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import admin  # noqa: E402
import export_models  # noqa: E402
import kserve  # noqa: E402
import test_security as sec  # noqa: E402

wpb, apb = sec.wpb, admin.pb
UNAUTH = grpc.StatusCode.UNAUTHENTICATED
NONE_SENT = r'^this call needs the cluster secret \(none was sent\)$'
WRONG = r'^this call needs the cluster secret \(a wrong one was sent\)$'
KEY = 'tessera-cluster-secret'


def unary(address, path, request, response_class, secret=None):
    with grpc.insecure_channel(address) as ch:
        method = ch.unary_unary(path, request_serializer=type(request).SerializeToString,
                                response_deserializer=response_class.FromString)
        return method(request, timeout=10, metadata=[(KEY, secret)] if secret else None)


def status(address, secret=None):
    return unary(address, sec.WORKER + 'Status', wpb.StatusRequest(), wpb.StatusResponse,
                 secret)


class LocalWorkers(sec.SecurityCase, kserve.ClusterTestCase):
    @classmethod
    def cluster_options(cls, tmp):
        return {'local_workers': 1, 'models': [('mlp', export_models.export('mlp', tmp))],
                'start_timeout': 60}

    def worker_address(self):
        workers = admin.cluster_status(self.cluster.address).workers
        self.assertEqual(len(workers), 1)
        return workers[0].address

    def test_serves(self):
        self.assertMatchesTorch(self.cluster.client)

    def test_worker_needs_the_secret(self):
        w = self.worker_address()
        self.assertCode(UNAUTH, NONE_SENT, status, w)
        self.assertCode(UNAUTH, WRONG, status, w, 'x' * 64)
        self.assertCode(UNAUTH, NONE_SENT, unary, w, sec.WORKER + 'RunShard',
                        wpb.RunShardRequest(shard_id='0' * 64), wpb.RunShardResponse)
        with grpc.insecure_channel(w) as ch:
            load = ch.stream_unary(sec.WORKER + 'LoadShard',
                                   request_serializer=wpb.LoadShardChunk.SerializeToString,
                                   response_deserializer=wpb.LoadShardResponse.FromString)
            self.assertCode(UNAUTH, NONE_SENT, load, iter([wpb.LoadShardChunk()]), 10)
        with grpc.insecure_channel(w) as ch:  # health stays open
            grpc.channel_ready_future(ch).result(timeout=10)
        self.assertMatchesTorch(self.cluster.client, seed=4)  # still serving

    def test_registration_needs_the_secret(self):
        self.assertCode(UNAUTH, NONE_SENT, unary, self.cluster.address,
                        '/tessera.admin.v1.Admin/RegisterWorker',
                        apb.RegisterWorkerRequest(address='127.0.0.1:1'),
                        apb.RegisterWorkerResponse)
        self.assertEqual(len(admin.cluster_status(self.cluster.address).workers), 1)


class SecretFile(sec.SecurityCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix='tessera_secret_')
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.file = os.path.join(self.tmp, 'secret')
        with open(self.file, 'w') as f:
            f.write('s3cret-0123456789abcdef\n')
        os.chmod(self.file, 0o600)

    def test_standalone_worker(self):
        w = self.enterContext(kserve.Worker(extra_args=['--cluster-secret-file', self.file],
                                            start_timeout=30))
        self.assertCode(UNAUTH, NONE_SENT, status, w.address)
        self.assertEqual(list(status(w.address, 's3cret-0123456789abcdef').shards), [])

    def assertRefused(self, args, message, secret_env=None):
        """tessera-worker with `args` (and $TESSERA_CLUSTER_SECRET set to
        secret_env, if given) exits 2 at start, saying `message`."""
        env = dict(os.environ)
        env.pop('TESSERA_CLUSTER_SECRET', None)
        if secret_env is not None:
            env['TESSERA_CLUSTER_SECRET'] = secret_env
        p = subprocess.run([kserve.binary('tessera-worker'), '--listen', '127.0.0.1:0'] + args,
                           capture_output=True, text=True, timeout=30, env=env)
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertIn(message, p.stderr)

    def test_readable_file_refused(self):
        os.chmod(self.file, 0o644)
        self.assertRefused(['--cluster-secret-file', self.file],
                           "group or others may read it (chmod 600)")
        self.assertEqual(stat.S_IMODE(os.stat(self.file).st_mode), 0o644)

    def test_both_sources_hold_the_same_rule(self):
        # 16 to 128 printable characters without spaces, from the file or
        # from the environment a coordinator gives its local workers.
        rule = 'expected one line of 16 to 128 printable characters'
        for bad in ('short', 'x' * 129, 'a space 0123456789', 'tab\t0123456789abcdef'):
            with open(self.file, 'w') as f:
                f.write(bad + '\n')
            self.assertRefused(['--cluster-secret-file', self.file],
                               "--cluster-secret-file '%s': %s" % (self.file, rule))
            self.assertRefused([], '$TESSERA_CLUSTER_SECRET: ' + rule, secret_env=bad)


if __name__ == '__main__':
    unittest.main()
