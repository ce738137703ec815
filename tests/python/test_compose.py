#!/usr/bin/python3
"""The compose cluster (deploy/docker-compose.yml) as a user runs it.

deploy/build-images.sh builds the images (the base is cached by its package
list), `docker-compose up -d` starts one coordinator and three workers that
join it, with a model repository holding a torch-exported MLP served data
parallel with replicas 2, over mutual TLS with certificates made by
scripts/certs.sh as deploy/README.md tells a user to. The test then checks,
in order:

  a. every container turns healthy (the image's HEALTHCHECK, `tessera
     health` over TLS) and the coordinator's port answers on 127.0.0.1
     only, to TLS with the client certificate and not to plaintext;
  b. answers equal torch's;
  c. `docker kill` of a worker holding a replica, under load: zero failed
     requests; its replica is re-placed on the spare worker (moves >= 1);
  d. `docker-compose start` of that worker: it joins again and is UP in
     `tessera status`; the load still sees no failure;
  e. `docker-compose down` leaves no container and no network of the project.

It needs root and Docker (docker.io, docker-compose, debootstrap). It FAILS,
never skips, when they are missing: a suite that cannot run the cluster has
not tested it. Where no dockerd runs it starts one and stops it at the end.
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest

import grpc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import export_models as em  # noqa: E402
import kserve  # noqa: E402
import ledger  # noqa: E402

DOCKER = '/usr/bin/docker' if os.path.exists('/usr/bin/docker') else 'docker'
COMPOSE_FILE = os.path.join(kserve.SOURCE, 'deploy', 'docker-compose.yml')
IMAGE = 'tessera:compose-test'
MODEL = 'mlp'
HEALTH_TIMEOUT = 120      # s, containers healthy after `up -d`
REPLACE_TIMEOUT = 30      # s, the killed worker's replica re-placed
REJOIN_TIMEOUT = 30       # s, the restarted worker UP again


def log(msg):
    print('[%s] %s' % (time.strftime('%H:%M:%S'), msg), flush=True)


def run(*args, env=None, timeout=300, check=True):
    p = subprocess.run(list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       universal_newlines=True, env=env, timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError('%s: exit %d\nstdout:\n%s\nstderr:\n%s' % (
            ' '.join(args), p.returncode, p.stdout, p.stderr))
    return p


def docker_answers():
    try:
        return run(DOCKER, 'info', timeout=20, check=False).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


class Dockerd:
    """The running dockerd, or one started here (and stopped by close())."""

    def __init__(self):
        self.proc = None
        if docker_answers():
            return
        dockerd = shutil.which('dockerd') or '/usr/sbin/dockerd'
        self.log = open(os.path.join(tempfile.gettempdir(),
                                     'tessera-compose-dockerd.log'), 'w')
        log('starting %s' % dockerd)
        self.proc = subprocess.Popen([dockerd], stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        if not ledger.wait_for(lambda: self.proc.poll() is None and docker_answers(),
                               60, 0.5):
            self.close()
            raise AssertionError('dockerd did not start; see %s' % self.log.name)

    def close(self):
        if self.proc is None:
            return
        log('stopping the dockerd started here (pid %d)' % self.proc.pid)
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None
        self.log.close()


class ComposeTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        t0 = time.monotonic()
        # Fail, never skip: these are the test's requirements, not options.
        assert os.geteuid() == 0, 'the compose test runs as root (dockerd, debootstrap)'
        for tool in (DOCKER, 'docker-compose', 'debootstrap'):
            assert shutil.which(tool), (
                '%s is missing: scripts/install-deps.sh installs it' % tool)
        cls.dockerd = Dockerd()
        cls.project = 'tesseratest%d' % os.getpid()
        cls.repo = tempfile.mkdtemp(prefix='tessera-compose-models-')
        cls.certs = tempfile.mkdtemp(prefix='tessera-compose-certs-')
        os.chmod(cls.repo, 0o755)
        os.chmod(cls.certs, 0o755)
        # deploy/README.md's command: worker1..3, keys owned by the image's user.
        run('sh', os.path.join(kserve.SOURCE, 'scripts', 'certs.sh'), cls.certs, '3',
            env=dict(os.environ, WORKER_FIRST='1', KEY_OWNER='10001'))
        cls.client_creds = kserve.tls_credentials(cls.certs, 'client')
        cls.admin_creds = kserve.tls_credentials(cls.certs, 'admin')
        cls.admin_cli = ('--ca', os.path.join(cls.certs, 'ca.crt'),
                         '--cert', os.path.join(cls.certs, 'admin.crt'),
                         '--key', os.path.join(cls.certs, 'admin.key'))
        model_dir = os.path.join(cls.repo, MODEL)
        os.makedirs(model_dir)
        path = em.export(MODEL, model_dir)
        os.rename(path, os.path.join(model_dir, 'model.onnx'))
        with open(os.path.join(model_dir, 'config.ini'), 'w') as f:
            f.write('strategy = data\nreplicas = 2\n')
        for root, dirs, files in os.walk(cls.repo):
            for d in dirs:
                os.chmod(os.path.join(root, d), 0o755)
            for n in files:
                os.chmod(os.path.join(root, n), 0o644)
        t = time.monotonic()
        run(os.path.join(kserve.SOURCE, 'deploy', 'build-images.sh'),
            '--build-dir', kserve.BUILD, '--tag', IMAGE, timeout=600)
        log('images built in %.1f s' % (time.monotonic() - t))
        cls.port = free_port()
        cls.address = '127.0.0.1:%d' % cls.port
        cls.env = dict(os.environ, TESSERA_IMAGE=IMAGE, TESSERA_MODELS=cls.repo,
                       TESSERA_CERTS=cls.certs, TESSERA_PORT=str(cls.port),
                       COMPOSE_PROJECT_NAME=cls.project)
        cls.up = False
        cls.t_setup = time.monotonic() - t0

    @classmethod
    def tearDownClass(cls):
        try:
            if cls.up:
                cls.compose('down', '-v', '--remove-orphans', '-t', '30', check=False)
        finally:
            shutil.rmtree(cls.repo, True)
            shutil.rmtree(cls.certs, True)
            cls.dockerd.close()

    @classmethod
    def compose(cls, *args, check=True, timeout=300):
        return run('docker-compose', '-f', COMPOSE_FILE, *args, env=cls.env,
                   check=check, timeout=timeout)

    def container(self, service):
        cid = self.compose('ps', '-q', service).stdout.strip()
        self.assertTrue(cid, 'no container for %s' % service)
        return cid

    def inspect(self, cid):
        return json.loads(run(DOCKER, 'inspect', cid).stdout)[0]

    def project_objects(self):
        label = 'label=com.docker.compose.project=' + self.project
        containers = run(DOCKER, 'ps', '-aq', '--filter', label).stdout.split()
        networks = run(DOCKER, 'network', 'ls', '-q', '--filter', label).stdout.split()
        return containers + networks

    def status(self):
        return ledger.cluster_status(self.address, creds=self.admin_creds)

    def client(self):
        return kserve.Client(self.address, creds=self.client_creds)

    def worker_up(self, address):
        w = ledger.worker_state(self.status(), address)
        return w is not None and w.up and w.state == 'UP'

    def test_cluster(self):
        t0 = time.monotonic()
        services = ['coordinator', 'worker1', 'worker2', 'worker3']
        self.compose('up', '-d')
        type(self).up = True

        # a. healthy, published on loopback only
        def healthy():
            states = {s: self.inspect(self.container(s))['State'].get('Health', {})
                      .get('Status') for s in services}
            return all(v == 'healthy' for v in states.values()) and states
        states = ledger.wait_for(healthy, HEALTH_TIMEOUT, 1.0)
        self.assertTrue(states, 'not healthy within %d s:\n%s' % (
            HEALTH_TIMEOUT, self.compose('logs', '--no-color', check=False).stdout))
        t_healthy = time.monotonic() - t0
        log('all four containers healthy %.1f s after up -d' % t_healthy)
        bindings = self.inspect(self.container('coordinator'))[
            'HostConfig']['PortBindings']['8001/tcp']
        self.assertEqual([(b['HostIp'], b['HostPort']) for b in bindings],
                         [('127.0.0.1', str(self.port))])
        for s in services:
            self.assertEqual(self.inspect(self.container(s))['Config']['User'], 'tessera')
        def ready():
            with self.client() as c:
                return c.model_ready(MODEL)
        self.assertTrue(ledger.wait_for(ready, 60, 0.5))
        with kserve.Client(self.address, timeout=5.0) as plain:
            with self.assertRaises(grpc.RpcError) as e:
                plain.server_live()
        self.assertEqual(e.exception.code(), grpc.StatusCode.UNAVAILABLE)

        # b. answers equal torch's
        inputs = em.make_inputs(MODEL, batch=7, seed=3)
        want = em.reference(MODEL, inputs)
        with self.client() as c:
            got = c.infer(MODEL, inputs)
        self.assertIsNone(ledger.check_answer(got, want))

        status = self.status()
        addresses = {w.index: w.address for w in status.workers}
        self.assertEqual(sorted(addresses.values()),
                         ['worker1:7070', 'worker2:7070', 'worker3:7070'])
        shards = [s for s in status.shards if s.model == MODEL]
        self.assertTrue(shards)
        holders = sorted({addresses[i] for s in shards for i in s.workers})
        self.assertEqual(len(holders), 2, 'replicas 2: %s' % holders)
        victim = holders[0]
        service = victim.split(':')[0]
        moves_before = self.moves(status)

        # c. + d. kill a replica holder under load, then start it again
        load = ledger.Load(self.address, MODEL, clients=3, batches=(1, 4), deadline=10.0,
                           title='docker kill ' + service,
                           creds=self.client_creds).start()
        try:
            time.sleep(2.0)
            load.ledger.event('docker kill ' + service,
                              lambda: run(DOCKER, 'kill', self.container(service)))
            moved = ledger.wait_for(lambda: self.moves(self.status()) > moves_before,
                                    REPLACE_TIMEOUT, 0.5)
            self.assertTrue(moved, 'the replica on %s was not re-placed' % victim)
            log('%s killed; replica re-placed: %s' % (service, self.placement()))
            load.ledger.event('docker-compose start ' + service,
                              lambda: self.compose('start', service))
            self.assertTrue(ledger.wait_for(lambda: self.worker_up(victim),
                                            REJOIN_TIMEOUT, 0.5),
                            '%s did not come back:\n%s' % (
                                victim, kserve.run_tessera('status', '--server', self.address,
                                                           *self.admin_cli).stdout))
            time.sleep(2.0)
        finally:
            led = load.stop()
        print(led.report(), flush=True)
        self.assertGreater(led.count(ledger.OK), 50)
        self.assertEqual(led.count(ledger.WRONG), 0)
        self.assertFalse(led.failures(), led.report())
        cli = kserve.run_tessera('status', '--server', self.address, *self.admin_cli)
        self.assertEqual(cli.returncode, 0, cli.stderr)
        print(cli.stdout, flush=True)
        self.assertRegex(cli.stdout, r'worker[123]:7070')
        self.assertTrue(all(w.up for w in self.status().workers))

        # e. down leaves nothing
        self.compose('down', '-v', '--remove-orphans', '-t', '30')
        type(self).up = False
        self.assertEqual(self.project_objects(), [])
        log('setup (export + images) %.1f s, cluster test %.1f s' % (
            self.t_setup, time.monotonic() - t0))

    def moves(self, status):
        m = [m for m in status.models if m.name == MODEL]
        return m[0].moves if m else 0

    def placement(self):
        status = self.status()
        addresses = {w.index: w.address for w in status.workers}
        return {s.shard_id: [addresses[i] for i in s.workers]
                for s in status.shards if s.model == MODEL}


if __name__ == '__main__':
    unittest.main(verbosity=2)
