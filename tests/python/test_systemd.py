#!/usr/bin/python3
"""The systemd units (deploy/*.service) under a real systemd.

  a. `systemd-analyze verify` passes on both units (binaries installed where
     ExecStart says) and `systemd-analyze security` scores each at 1.5 or
     lower;
  b. a real systemd boots as PID 1 of a container made from a debootstrap
     root (systemd, dbus and the daemons' libraries; cached as an image
     keyed by its package list), both units start, systemd sees READY=1
     (ActiveState=active only after the notification, Type=notify), and the
     coordinator serves a model on the worker that the unit started;
  c. `systemctl stop` drains both: each exits 0 (Result=success,
     ExecMainStatus=0);
  d. their logs are in the journal with priorities: "serving" at info (6),
     every WARN line at warning (4) and every ERROR line at err (3).

It needs root, Docker and debootstrap, and FAILS, never skips, without
them. Where no dockerd runs it starts one (test_compose.Dockerd).
"""
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kserve  # noqa: E402
import ledger  # noqa: E402
from test_compose import DOCKER, Dockerd, log, run  # noqa: E402

UNITS = ('tessera-coordinator', 'tessera-worker')
DEPLOY = os.path.join(kserve.SOURCE, 'deploy')
MAX_EXPOSURE = 1.5
BOOT_TIMEOUT = 60


def systemd_root_image():
    """The image of a bookworm root with systemd and the daemons' runtime
    libraries (built by deploy/build-images.sh --systemd)."""
    return run(os.path.join(DEPLOY, 'build-images.sh'), '--build-dir', kserve.BUILD,
               '--systemd', '--tag', 'tessera-systemd:test', timeout=600).stdout.strip()


class SystemdTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        assert os.geteuid() == 0, 'the systemd test runs as root'
        for tool in (DOCKER, 'debootstrap', 'systemd-analyze'):
            assert shutil.which(tool), '%s is missing: scripts/install-deps.sh' % tool
        cls.dockerd = Dockerd()
        cls.cid = None

    @classmethod
    def tearDownClass(cls):
        try:
            if cls.cid:
                run(DOCKER, 'rm', '-f', cls.cid, check=False)
        finally:
            cls.dockerd.close()

    def test_a_analyze(self):
        root = tempfile.mkdtemp(prefix='tessera-units-')
        try:
            # verify checks ExecStart's binary: install them under a root.
            bindir = os.path.join(root, 'usr', 'local', 'bin')
            os.makedirs(bindir)
            for b in ('tessera-coordinator', 'tessera-worker'):
                shutil.copy(kserve.binary(b), bindir)
            unitdir = os.path.join(root, 'etc', 'systemd', 'system')
            os.makedirs(unitdir)
            # and the targets they depend on (sysinit.target, ...): without
            # them verify fails "Unit sysinit.target not found".
            shutil.copytree('/usr/lib/systemd/system',
                            os.path.join(root, 'usr', 'lib', 'systemd', 'system'),
                            symlinks=True)
            for u in UNITS:
                shutil.copy(os.path.join(DEPLOY, u + '.service'), unitdir)
            p = run('systemd-analyze', 'verify', '--root=' + root,
                    *[u + '.service' for u in UNITS], check=False)
            self.assertEqual((p.returncode, p.stdout + p.stderr), (0, ''))
            for u in UNITS:
                p = run('systemd-analyze', 'security', '--offline=true',
                        os.path.join(DEPLOY, u + '.service'), check=False)
                m = re.search(r'Overall exposure level for \S+: ([0-9.]+)', p.stdout)
                self.assertTrue(m, p.stdout + p.stderr)
                log('%s: exposure %s' % (u, m.group(1)))
                self.assertLessEqual(float(m.group(1)), MAX_EXPOSURE, p.stdout)
        finally:
            shutil.rmtree(root, True)

    def systemctl(self, *args, check=True):
        return run(DOCKER, 'exec', self.cid, 'systemctl', *args, check=check)

    def show(self, unit, *props):
        out = self.systemctl('show', unit, '-p', ','.join(props)).stdout
        return dict(line.split('=', 1) for line in out.splitlines() if '=' in line)

    def test_b_boot(self):
        image = systemd_root_image()
        t0 = time.monotonic()
        # systemd as PID 1 needs CAP_SYS_ADMIN (mounts), a writable cgroup
        # tree (cgroup v1 here: without it "Failed to attach ... to compat
        # systemd cgroup"), CAP_SYS_PTRACE (without it PrivateUsers= fails
        # "Failed to set up user namespacing", status 217/USER), no seccomp
        # filter and tmpfs /run. Not --privileged: it asks for every
        # capability, and runc fails "unable to apply caps: operation not
        # permitted" where dockerd's bounding set lacks one (CAP_SYS_RESOURCE
        # on the test machines).
        cid = run(DOCKER, 'run', '-d', '--cap-add', 'SYS_ADMIN', '--cap-add', 'SYS_PTRACE',
                  '--security-opt', 'seccomp=unconfined', '--cgroupns=host',
                  '-v', '/sys/fs/cgroup:/sys/fs/cgroup:rw',
                  '--tmpfs', '/run', '--tmpfs', '/run/lock', '--tmpfs', '/tmp',
                  '-v', os.path.join(kserve.SOURCE, 'examples', 'models') + ':/srv/tessera/models:ro',
                  image, '/sbin/init').stdout.strip()
        type(self).cid = cid

        def booted():
            p = run(DOCKER, 'exec', cid, 'systemctl', 'is-system-running', check=False)
            return p.stdout.strip() in ('running', 'degraded') and p.stdout.strip()
        state = ledger.wait_for(booted, BOOT_TIMEOUT, 0.5)
        self.assertTrue(state, 'systemd did not boot:\n%s' % run(
            DOCKER, 'logs', cid, check=False).stdout)
        log('systemd booted (%s) in %.1f s' % (state, time.monotonic() - t0))
        run(DOCKER, 'exec', cid, 'sh', '-c',
            # Plaintext on loopback only (the daemons refuse it elsewhere).
            'printf "TESSERA_TLS=\\nTESSERA_WORKER_LISTEN=127.0.0.1:7070\\n'
            'TESSERA_WORKER_ARGS=--join 127.0.0.1:8001\\n" > /etc/default/tessera-worker && '
            'printf "TESSERA_TLS=\\nTESSERA_COORDINATOR_LISTEN=127.0.0.1:8001\\n'
            'TESSERA_COORDINATOR_ARGS=--model-repository /srv/tessera/models\\n" '
            '> /etc/default/tessera-coordinator')
        t = time.monotonic()
        self.systemctl('start', 'tessera-coordinator', 'tessera-worker')
        log('systemctl start returned after %.1f s (Type=notify: READY=1 seen)'
            % (time.monotonic() - t))
        for u in UNITS:
            s = self.show(u, 'ActiveState', 'SubState', 'Type', 'StatusErrno')
            self.assertEqual((s['ActiveState'], s['SubState'], s['Type']),
                             ('active', 'running', 'notify'), s)

        def serving():
            p = run(DOCKER, 'exec', cid, 'tessera', 'infer', '--server', '127.0.0.1:8001',
                    # mlp itself has replicas = 2: one worker serves mlp_tensor.
                    '--model', 'mlp_tensor', '--input', 'embedding=/srv/tessera/models/mlp/input.npy',
                    check=False)
            return p.returncode == 0 and p.stdout
        out = ledger.wait_for(serving, 30, 0.5)
        self.assertTrue(out, run(DOCKER, 'exec', cid, 'journalctl', '--no-pager',
                                 '-u', 'tessera-*', check=False).stdout)
        print(out, flush=True)

        # c. stop: drain, exit 0
        self.systemctl('stop', 'tessera-worker', 'tessera-coordinator')
        for u in UNITS:
            s = self.show(u, 'ActiveState', 'Result', 'ExecMainStatus', 'ExecMainCode')
            self.assertEqual((s['ActiveState'], s['Result'], s['ExecMainStatus']),
                             ('inactive', 'success', '0'), s)

        # d. the journal, with priorities
        for u in UNITS:
            out = run(DOCKER, 'exec', cid, 'journalctl', '--no-pager', '-u', u,
                      '-o', 'verbose', '--output-fields=PRIORITY,MESSAGE').stdout
            print(out[-3000:], flush=True)
            entries = re.findall(r'PRIORITY=(\d)\n\s*MESSAGE=(.*)', out)
            self.assertTrue(any(p == '6' and 'serving' in m for p, m in entries),
                            'no info "serving" line from %s:\n%s' % (u, out))
            # warnings as warnings (journalctl -p warning), errors as errors
            for p, m in entries:
                for word, prio in (('WARN ', '4'), ('ERROR ', '3')):
                    if m.startswith(word):
                        self.assertEqual(p, prio, '%s at priority %s' % (m, p))
        run(DOCKER, 'rm', '-f', cid)
        type(self).cid = None


if __name__ == '__main__':
    unittest.main(verbosity=2)
