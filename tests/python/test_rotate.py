"""Rotation without downtime (docs/SECURITY.md, issue 12 item 5): SIGHUP
re-reads certificates, keys and the CA on both daemons, with real daemons
on mutual TLS and a client inferring throughout.

  Rotate  a coordinator and a worker (certificates of scripts/certs.sh's CA
          A), a client inferring in a loop over one connection. Steps, each
          a SIGHUP to both daemons: new leaves from the same CA A (a new
          connection to either daemon then presents the new serial, read
          with Python's ssl, and inference through a fresh connection
          works); a broken certificate file (logged, the last good serial
          stays); the CA bundle A+B; leaves from a new CA B; the bundle B
          only (a client certificate of A is then refused at the handshake,
          one of B serves). The looping client sees no failed request.
"""
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import unittest

import grpc
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import export_models  # noqa: E402
import kserve  # noqa: E402
import test_security as sec  # noqa: E402

WAIT = 15.0


def openssl_serial(path):
    out = subprocess.run(['openssl', 'x509', '-noout', '-serial', '-in', path],
                         check=True, capture_output=True, text=True).stdout
    return int(out.strip().split('=', 1)[1], 16)


def presented_serial(address, ca, cert, key):
    """The serial of the certificate a daemon presents to a new TLS
    connection (Python's ssl, verifying it against `ca`)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.load_verify_locations(ca)
    ctx.load_cert_chain(cert, key)
    ctx.set_alpn_protocols(['h2'])
    host, port = address.rsplit(':', 1)
    with socket.create_connection((host, int(port)), timeout=10) as s:
        with ctx.wrap_socket(s, server_hostname='localhost') as t:
            return int(t.getpeercert()['serialNumber'], 16)


def sign(ca_dir, name, spiffe, out_dir):
    """A new leaf `name` for SPIFFE path `spiffe`, signed by ca_dir's CA."""
    return kserve.sign_leaf(ca_dir, name, 'URI:spiffe://tessera/' + spiffe, out_dir)


class Rotate(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix='tessera_rotate_')
        self.addCleanup(shutil.rmtree, self.tmp, True)
        script = os.path.join(kserve.SOURCE, 'scripts', 'certs.sh')
        self.a, self.b = os.path.join(self.tmp, 'a'), os.path.join(self.tmp, 'b')
        subprocess.run(['sh', script, self.a, '1'], check=True)
        subprocess.run(['sh', script, self.b, '1'], check=True)
        sec.CERTS = self.a  # TlsCluster's readiness probe: A's admin
        self.live = os.path.join(self.tmp, 'live')
        os.makedirs(self.live)
        self.install(self.a, ['coordinator', 'worker0'], [self.a])
        # The client trusts both CAs all along and presents A's admin
        # certificate: its one connection must outlive every step.
        self.roots = os.path.join(self.tmp, 'roots.crt')
        self.bundle(self.roots, [self.a, self.b])

    def install(self, directory, names, cas):
        for n in names:
            for ext in ('.crt', '.key'):
                shutil.copy(os.path.join(directory, n + ext), self.live + '/' + n + ext + '.new')
                os.replace(self.live + '/' + n + ext + '.new', self.live + '/' + n + ext)
        if cas:
            self.bundle(os.path.join(self.live, 'ca.crt'), cas)

    def bundle(self, path, dirs):
        with open(path + '.new', 'wb') as f:
            for d in dirs:
                f.write(sec.pem(d, 'ca.crt'))
        os.replace(path + '.new', path)

    def live_args(self, name):
        return sec.tls_args(name, self.live)

    def sighup(self, daemons, pattern):
        counts = [d.log().count(pattern) for d in daemons]
        for d in daemons:
            d.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + WAIT
        for d, n in zip(daemons, counts):
            while d.log().count(pattern) == n:
                self.assertLess(time.monotonic(), deadline, 'no "%s" in:\n%s'
                                % (pattern, d.log()[-2000:]))
                time.sleep(0.05)

    def serial(self, daemon, ca_dir, cert='admin'):
        return presented_serial(daemon.address, os.path.join(ca_dir, 'ca.crt'),
                                os.path.join(ca_dir, cert + '.crt'),
                                os.path.join(ca_dir, cert + '.key'))

    def fresh_infer(self, cert_dir, ca_file):
        c = sec.TlsClient(self.cluster.address, 'admin', cert_dir=cert_dir,
                          ca_dir=os.path.dirname(ca_file))
        try:
            got = c.infer('mlp', self.inputs)['log_probs']
            np.testing.assert_allclose(got, self.want['log_probs'], rtol=sec.RTOL, atol=sec.ATOL)
        finally:
            c.close()

    def test_rotation_under_load(self):
        path = export_models.export('mlp', self.tmp)
        worker = self.enterContext(kserve.Worker(extra_args=self.live_args('worker0'),
                                                 start_timeout=30))
        self.cluster = self.enterContext(sec.TlsCluster(
            models=[('mlp', path)], local_workers=0, workers=[worker.address],
            extra_args=self.live_args('coordinator'), start_timeout=60))
        both = [self.cluster, worker]
        self.inputs, self.want = sec.mlp_inputs(4, seed=3)
        roots_dir = os.path.join(self.tmp, 'rootsdir')
        os.makedirs(roots_dir)
        shutil.copy(self.roots, os.path.join(roots_dir, 'ca.crt'))
        loader = self.enterContext(sec.TlsClient(self.cluster.address, 'admin', cert_dir=self.a,
                                                 ca_dir=roots_dir))
        loop = sec.InferLoop(loader, self.inputs, self.want)
        self.addCleanup(loop.stop)
        reloaded = 'credentials reloaded: '
        live = lambda n: os.path.join(self.live, n + '.crt')  # noqa: E731
        first = self.serial(self.cluster, self.a)
        self.assertEqual(first, openssl_serial(live('coordinator')))

        # 1. New leaves from the same CA.
        fresh = os.path.join(self.tmp, 'fresh')
        os.makedirs(fresh)
        sign(self.a, 'coordinator', 'coordinator', fresh)
        sign(self.a, 'worker0', 'worker/worker0', fresh)
        self.install(fresh, ['coordinator', 'worker0'], None)
        self.sighup(both, reloaded)
        leaf = openssl_serial(live('coordinator'))
        self.assertNotEqual(leaf, first)
        self.assertEqual(self.serial(self.cluster, self.a), leaf)
        self.assertEqual(self.serial(worker, self.a, 'coordinator'),
                         openssl_serial(live('worker0')))
        self.fresh_infer(self.a, os.path.join(self.a, 'ca.crt'))

        # 2. A broken certificate: logged, the last good one stays.
        with open(live('coordinator'), 'w') as f:
            f.write('not a certificate\n')
        self.sighup([self.cluster], 'credentials not reloaded, the old ones stay in force')
        self.assertEqual(self.serial(self.cluster, self.a), leaf)
        self.install(fresh, ['coordinator'], None)

        # 3. The CA bundle A+B, then leaves from B, then B only.
        self.install(self.a, [], [self.a, self.b])
        self.sighup(both, reloaded)
        self.install(self.b, ['coordinator', 'worker0'], None)
        self.sighup(both, reloaded)
        self.assertEqual(self.serial(self.cluster, self.b),
                         openssl_serial(os.path.join(self.b, 'coordinator.crt')))
        self.install(self.b, [], [self.b])
        self.sighup(both, reloaded)
        self.fresh_infer(self.b, os.path.join(self.b, 'ca.crt'))
        refused = sec.TlsClient(self.cluster.address, 'admin', cert_dir=self.a, ca_dir=roots_dir)
        try:
            with self.assertRaises(grpc.RpcError) as cm:
                refused.infer('mlp', self.inputs)
            self.assertEqual(cm.exception.code(), grpc.StatusCode.UNAVAILABLE)
            self.assertRegex(cm.exception.details(), sec.REFUSED_BY_SERVER)
        finally:
            refused.close()
        self.assertEqual(self.serial(worker, self.b, 'coordinator'),
                         openssl_serial(os.path.join(self.b, 'worker0.crt')))

        wrong = loop.stop()
        self.assertGreater(len(loop.answers), 10)
        self.assertEqual(wrong, [])


if __name__ == '__main__':
    unittest.main()
