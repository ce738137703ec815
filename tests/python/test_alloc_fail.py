"""Allocation-failure walk (-Dalloc_fail=true builds only; suite 'allocfail').

One coordinator (--model-repository with the torch MLP served four ways:
data, tensor, pipeline, batched; no local workers) over one tessera-worker.
For each path below the walk first counts the allocations Tessera's own code
makes during one call (the one-shot control file of common/base/alloc_fail.h
with N = 0), then, for N over 1..count, makes the N-th allocation of that one
call fail, and then (SQLite's persistent mode) every allocation from the
N-th on until the call is answered. It walks every N when count <=
ALLOC_FAIL_MAX_STEPS (default 500; ALLOC_FAIL_PERSISTENT_MAX_STEPS,
default 100, for the persistent mode), else a deterministic stride that
always includes 1 and count, and prints what it walked:

  load      the coordinator's RepositoryModelLoad (data and tensor plans)
  shard     the worker's LoadShard (called directly, a new shard each time)
  infer     ModelInfer, allocations of the coordinator's ModelInfer call
  run       ModelInfer, allocations of the worker's RunShard call

Each injected call must answer OK (with the right answer, for inference) or
RESOURCE_EXHAUSTED / INTERNAL with a message; then both daemons must still
be alive and a following call without injection must succeed, its answer
equal to torch's. At the end every request slot the servers lost was
re-posted, and both daemons get SIGTERM and must exit 0 with no sanitizer
report (LeakSanitizer's among them) on stderr.

StartUp walks TESSERA_ALLOC_FAIL=N over each daemon's whole life.

Environment: TESSERA_BUILD (a build with -Dalloc_fail=true; scripts/test.sh
adds -Db_sanitize=address,undefined).
"""
import hashlib
import json
import math
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

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import export_models  # noqa: E402
import kserve  # noqa: E402

export_models.torch.set_num_threads(1)

WORKER = '/tessera.worker.v1.Worker/'
wpb, = kserve.compile_protos('worker.proto')

MODEL = 'mlp'  # the torch MLP (32-64-64-10), served four ways:
SERVED = {'mlp': '',
          'mlp_tensor': 'strategy = tensor\nshards = 2\n',
          'mlp_pipeline': 'strategy = pipeline\nstages = 2\n',
          'mlp_batched': 'max_batch = 8\nbatch_delay_us = 1000\n'}
MAX_STEPS = int(os.environ.get('ALLOC_FAIL_MAX_STEPS', '500'))
# the persistent mode ("from N on") walks a coarser stride
PERSISTENT_MAX_STEPS = int(os.environ.get('ALLOC_FAIL_PERSISTENT_MAX_STEPS', '100'))
FAILED = (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.INTERNAL)
SANITIZER_REPORTS = ('ERROR: LeakSanitizer', 'ERROR: AddressSanitizer',
                     'runtime error:')
REPORT = re.compile(r'^alloc_fail: (\w+) made (\d+) allocations, failed (\w+\+?)$', re.M)

# The daemons find the control directory here (they inherit os.environ).
CONTROL = tempfile.mkdtemp(prefix='tessera_alloc_fail_')
os.environ['TESSERA_ALLOC_FAIL_CONTROL'] = CONTROL
if 'detect_leaks' not in os.environ.get('ASAN_OPTIONS', ''):
    os.environ['ASAN_OPTIONS'] = (os.environ.get('ASAN_OPTIONS', '') + ':detect_leaks=1').lstrip(':')


def build_option(name):
    """A meson option of TESSERA_BUILD, from its introspection file."""
    path = os.path.join(kserve.BUILD, 'meson-info', 'intro-buildoptions.json')
    with open(path) as f:
        return next(o['value'] for o in json.load(f) if o['name'] == name)


def steps(count, most):
    """The N walked for `count` allocations: all, or a stride of `most`."""
    if count <= most:
        return list(range(1, count + 1))
    stride = math.ceil(count / most)
    return sorted(set(range(1, count + 1, stride)) | {count})


class Stopped:
    """Mixin for kserve daemons: on exit, SIGTERM and keep the whole log
    (self.final_log) for the sanitizer check; the exit status is then
    checked as kserve.Daemon does."""

    def __exit__(self, exc_type, exc, tb):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except Exception:
            pass
        self.final_log = self.log()
        return super().__exit__(exc_type, exc, tb)


class Worker(Stopped, kserve.Worker):
    pass


class Cluster(Stopped, kserve.Cluster):
    pass


class AllocFailWalk(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix='tessera_alloc_fail_test_')
        repo = os.path.join(cls.tmp, 'repository')
        with open(export_models.export(MODEL, cls.tmp), 'rb') as f:
            cls.model_bytes = f.read()
        cls.shard_serial = 0
        # each served copy unique, so that no two models share a shard
        for name, config in SERVED.items():
            os.makedirs(os.path.join(repo, name))
            with open(os.path.join(repo, name, 'model.onnx'), 'wb') as f:
                f.write(cls.next_shard())
            with open(os.path.join(repo, name, 'config.ini'), 'w') as f:
                f.write(config)
        cls.inputs = export_models.make_inputs(MODEL, 5, seed=3)
        cls.want = export_models.reference(MODEL, cls.inputs)
        cls.summary = []
        cls.worker = Worker(start_timeout=300)
        cls.worker.__enter__()
        try:
            cls.cluster = Cluster(local_workers=0, workers=[cls.worker.address],
                                  extra_args=['--model-repository', repo],
                                  start_timeout=300)
            cls.cluster.__enter__()
        except BaseException:
            cls.worker.__exit__(None, None, None)
            raise
        cls.client = cls.cluster.client
        print('\nbuild: alloc_fail=%s b_sanitize=%s; at most %d steps a path'
              % (build_option('alloc_fail'), build_option('b_sanitize'), MAX_STEPS),
              file=sys.stderr)

    @classmethod
    def tearDownClass(cls):
        try:
            for line in cls.summary:
                print(line, file=sys.stderr)
            errors = []
            for d in (cls.cluster, cls.worker):
                try:
                    d.__exit__(None, None, None)
                except AssertionError as e:
                    errors.append(str(e))
                for report in SANITIZER_REPORTS:
                    if report in d.final_log:
                        i = d.final_log.index(report)
                        errors.append('%s: %s\n%s' % (d.name, report,
                                                      d.final_log[max(0, i - 200):i + 3000]))
            if errors:
                raise AssertionError('\n'.join(errors))
        finally:
            shutil.rmtree(cls.tmp, ignore_errors=True)
            shutil.rmtree(CONTROL, ignore_errors=True)

    # ---- the control file and its report ----------------------------------

    def inject(self, daemon, method, n, persist=False):
        """Arms the daemon's next `method` call: its n-th allocation fails
        (0: count only), with `persist` every one after it too. Returns a
        token for report()."""
        path = os.path.join(CONTROL, str(daemon.proc.pid))
        with open(path + '.tmp', 'w') as f:
            f.write('%s %d%s\n' % (method, n, '+' if persist else ''))
        os.rename(path + '.tmp', path)
        return len(REPORT.findall(daemon.log()))

    def report(self, daemon, method, token):
        """(allocations, failed "N" / "N+" or None) of the armed call, once its
        report line is out; fails if the call was never armed."""
        path = os.path.join(CONTROL, str(daemon.proc.pid))
        deadline = time.monotonic() + 60
        while True:
            found = REPORT.findall(daemon.log())
            if len(found) > token:
                break
            if time.monotonic() > deadline:
                taken = not os.path.exists(path)
                if not taken:
                    os.unlink(path)
                self.fail('%s: no alloc_fail report for %s (control file %s)\n%s' % (
                    daemon.name, method, 'taken' if taken else 'never taken',
                    daemon.log()[-3000:]))
            time.sleep(0.02)
        self.assertEqual(len(found), token + 1, found[token:])
        name, count, failed = found[token]
        self.assertEqual(name, method)
        return int(count), None if failed == 'none' else failed

    # ---- calls ---------------------------------------------------------------

    @staticmethod
    def last_failure(daemon):
        """The daemon's last "alloc_fail: allocation #N ..." line and its
        backtrace, for a failing test's message."""
        log = daemon.log()
        i = log.rfind('alloc_fail: allocation #')
        return '' if i < 0 else log[i:i + 3000]

    def assert_outcome(self, what, daemon, call):
        """Runs call(): its result, or None after a RESOURCE_EXHAUSTED or
        INTERNAL with a message; any other code fails the test."""
        try:
            return call()
        except grpc.RpcError as e:
            where = '%s: %s %s\n%s' % (what, e.code(), e.details(),
                                       self.last_failure(daemon))
            self.assertIn(e.code(), FAILED, where)
            self.assertTrue(e.details(), where)
            # one line per kind of message: shard ids and ports vary
            self.messages.add('%s: %s' % (e.code().name, re.sub(
                r'\b[0-9a-f]{8}\.\.|:\d{4,5}\b|tessera_alloc_fail_test_\w+', '*',
                e.details())))
            return None

    def check_infer(self, what, served=MODEL, typed=False):
        got = self.client.infer(served, self.inputs, typed=typed)
        self.assertEqual(list(got), list(self.want), what)
        for name, want in self.want.items():
            np.testing.assert_allclose(got[name], want, rtol=1e-5, atol=1e-6,
                                       err_msg='%s: %s' % (what, name))

    def assert_serving(self, what, served=MODEL):
        """Both daemons alive; a good inference is answered as torch does."""
        for d in (self.cluster, self.worker):
            self.assertIsNone(d.proc.poll(), '%s: %s died:\n%s' % (
                what, d.name, d.log()[-4000:]))
        if not self.model_ready(served):
            self.client.load(served)
        self.check_infer(what, served)

    def model_ready(self, served):
        try:
            return self.client.model_ready(served)
        except grpc.RpcError as e:
            self.assertEqual(e.code(), grpc.StatusCode.NOT_FOUND, e.details())
            return False

    @classmethod
    def next_shard(cls):
        """The MLP's bytes made unique: a repeated ModelProto.doc_string
        (field 6; the last one wins) naming a serial number."""
        cls.shard_serial += 1
        doc = ('alloc_fail %d' % cls.shard_serial).encode()
        return cls.model_bytes + bytes([6 << 3 | 2, len(doc)]) + doc

    def worker_call(self, method, request, response_class, stream=False, timeout=60):
        with grpc.insecure_channel(self.worker.address) as ch:
            if stream:
                call = ch.stream_unary(WORKER + method,
                                       request_serializer=type(request[0]).SerializeToString,
                                       response_deserializer=response_class.FromString)
                return call(iter(request), timeout=timeout)
            call = ch.unary_unary(WORKER + method,
                                  request_serializer=type(request).SerializeToString,
                                  response_deserializer=response_class.FromString)
            return call(request, timeout=timeout)

    def load_shard(self, data):
        sid = hashlib.sha256(data).hexdigest()
        chunk = wpb.LoadShardChunk(shard_id=sid, total_bytes=len(data), offset=0,
                                   data=data, label='alloc_fail')
        r = self.worker_call('LoadShard', [chunk], wpb.LoadShardResponse, stream=True)
        self.assertEqual(r.shard_id, sid)
        return r

    def unload_shard(self, data):
        self.worker_call('UnloadShard',
                         wpb.UnloadShardRequest(shard_id=hashlib.sha256(data).hexdigest()),
                         wpb.UnloadShardResponse)

    # ---- the walk ------------------------------------------------------------

    def walk(self, title, daemon, method, call, after=None, served=MODEL):
        """Counts `method`'s allocations in one call(), then fails each N of
        steps(count) in turn: first that allocation alone, then (SQLite's
        persistent mode) every allocation from N on until the call is
        answered. call() makes the request; after(result) runs once each
        injected call finished (its result None when it failed)."""
        token = self.inject(daemon, method, 0)
        result = call()
        count, failed = self.report(daemon, method, token)
        self.assertIsNone(failed)
        self.assertGreater(count, 0, '%s made no allocation' % method)
        if after:
            after(result)
        self.messages = set()
        for persist in (False, True):
            walked = steps(count, PERSISTENT_MAX_STEPS if persist else MAX_STEPS)
            ok_at, n_failed = [], 0
            start = time.monotonic()
            for n in walked:
                what = '%s, allocation %d%s of %d' % (title, n, '+' * persist, count)
                token = self.inject(daemon, method, n, persist)
                result = self.assert_outcome(what, daemon, call)
                _, failed = self.report(daemon, method, token)
                if result is None:
                    # a failed answer means an allocation did fail
                    self.assertEqual(failed, '%d%s' % (n, '+' * persist), what)
                    n_failed += 1
                else:
                    ok_at.append(n)
                self.assert_serving(what, served)
                if after:
                    after(result)
            self.summary.append(
                '%s: %d allocations (%s), walked %d N (%s, %s) in %.0f s: '
                '%d RESOURCE_EXHAUSTED/INTERNAL, OK at N = %s' % (
                    title, count, method, len(walked),
                    'all' if len(walked) == count else
                    'stride %d' % (walked[1] - walked[0]),
                    'from N on' if persist else 'one-shot',
                    time.monotonic() - start, n_failed, ok_at))
        self.summary += ['  ' + m for m in sorted(self.messages)]

    def unload_everything(self, served):
        """The model off the coordinator and its shards off the worker, so
        that the next load plans and uploads again."""
        self.client.unload(served)
        st = self.worker_call('Status', wpb.StatusRequest(), wpb.StatusResponse)
        for shard in st.shards:
            if shard.label.startswith(served + '/'):
                self.worker_call('UnloadShard',
                                 wpb.UnloadShardRequest(shard_id=shard.shard_id),
                                 wpb.UnloadShardResponse)

    def test_a_model_load(self):
        """RepositoryModelLoad, from unloaded (its shards off the worker too)
        each time: planning and the shard uploads; a data and a tensor
        plan."""
        for served in ('mlp', 'mlp_tensor'):
            with self.subTest(served=served):
                self.unload_everything(served)
                self.walk('coordinator RepositoryModelLoad of %s' % served, self.cluster,
                          'RepositoryModelLoad', lambda: self.client.load(served),
                          lambda result: self.unload_everything(served), served)
                self.client.load(served)

    def test_b_load_shard(self):
        """The worker's LoadShard, of a shard the worker does not hold."""
        held = []

        def load():
            data = self.next_shard()
            held.append(data)
            return self.load_shard(data)

        def after(result):
            for data in held:
                self.unload_shard(data)
            del held[:]
        self.walk('worker LoadShard', self.worker, 'LoadShard', load, after)

    def infer(self, served, typed=False):
        """One ModelInfer; an OK answer must be torch's."""
        got = self.client.infer(served, self.inputs, typed=typed)
        for name, want in self.want.items():
            np.testing.assert_allclose(got[name], want, rtol=1e-5, atol=1e-6,
                                       err_msg='%s: %s' % (served, name))
        return got

    def test_c_infer_coordinator(self):
        """ModelInfer: allocations of the coordinator's call, for each way
        the MLP is served, raw and (the plain one) typed inputs."""
        for served, typed in [(m, False) for m in SERVED] + [(MODEL, True)]:
            with self.subTest(served=served, typed=typed):
                self.assert_serving('before the walk', served)
                self.walk('coordinator ModelInfer of %s%s' % (served, ' (typed)' * typed),
                          self.cluster, 'ModelInfer', lambda: self.infer(served, typed),
                          served=served)

    def test_d_infer_worker(self):
        """ModelInfer: allocations of the worker's (first) RunShard call."""
        for served in SERVED:
            with self.subTest(served=served):
                self.assert_serving('before the walk', served)
                self.walk('worker RunShard of %s (through ModelInfer)' % served,
                          self.worker, 'RunShard', lambda: self.infer(served),
                          served=served)

    def test_e_request_slots(self):
        """The first allocation of every walked call is the server's request
        for the next call of its method (common/rpc/rpc_server.c): each
        one lost was re-posted, so no method ran out of slots."""
        for d in (self.cluster, self.worker):
            # the last word on each method: how many of its slots are lost
            left = {}
            for m in re.finditer(r'rpc: (?:no memory to accept calls of (\S+) \((\d+) request '
                                 r'slots lost\)|re-posted a lost request slot of (\S+) '
                                 r'\((\d+) still lost\))', d.log()):
                if m.group(1):
                    left[m.group(1)] = int(m.group(2))
                else:
                    left[m.group(3)] = int(m.group(4))
            self.assertTrue(left, '%s lost no request slot' % d.name)
            self.assertEqual(left, {path: 0 for path in left}, d.name)


class StartUp(unittest.TestCase):
    """TESSERA_ALLOC_FAIL=N (the N-th allocation of the process) over a
    daemon's whole life: start-up, one served call, SIGTERM. Each run either
    refuses to start (status 1 and the reason) or serves and exits 0; never
    a sanitizer report. TESSERA_ALLOC_COUNT=1 gives the count to walk."""

    MAX_STEPS = int(os.environ.get('ALLOC_FAIL_STARTUP_MAX_STEPS', '100'))

    def run_daemon(self, argv, probe, env):
        """(exit status, stdout + stderr, whether probe(address) answered):
        probe's call may itself be the one that fails (then once more)."""
        out = tempfile.NamedTemporaryFile(prefix='daemon_out_', mode='w+')
        err = tempfile.NamedTemporaryFile(prefix='daemon_err_', mode='w+')
        self.addCleanup(out.close)
        self.addCleanup(err.close)
        proc = subprocess.Popen(argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                env=dict(os.environ, **env))
        served = False
        deadline = time.monotonic() + 120
        try:
            while proc.poll() is None and time.monotonic() < deadline:
                with open(out.name) as f:
                    m = re.search(r'^listening on (\S+:\d+)$', f.read(), re.M)
                if m:
                    try:
                        probe(m.group(1))
                    except grpc.RpcError as e:
                        # the failed allocation was this call's own
                        self.assertIn(e.code(), FAILED, e.details())
                        self.assertTrue(e.details())
                        probe(m.group(1))
                    served = True
                    proc.send_signal(signal.SIGTERM)
                    break
                time.sleep(0.05)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        try:
            rc = proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            self.fail('%s did not exit (env %s)' % (argv[0], env))
        with open(out.name) as f, open(err.name) as g:
            return rc, f.read() + g.read(), served

    def walk(self, title, argv, probe, refusal):
        """Walks N over argv's allocations; `refusal` matches the reason a
        run that did not start gives."""
        rc, log, served = self.run_daemon(argv, probe, {'TESSERA_ALLOC_COUNT': '1'})
        self.assertEqual((rc, served), (0, True), log[-3000:])
        count = int(re.search(r'^alloc_fail: (\d+) allocations$', log, re.M).group(1))
        walked = steps(count, self.MAX_STEPS)
        refused = short = 0
        for n in walked:
            rc, log, served = self.run_daemon(argv, probe, {'TESSERA_ALLOC_FAIL': str(n)})
            what = '%s, TESSERA_ALLOC_FAIL=%d of %d: status %d\n%s' % (
                title, n, count, rc, log[-3000:])
            if 'alloc_fail: allocation #%d ' % n not in log:
                # this run made fewer allocations than the counted one (the
                # probes' timing varies): only near the end, and it served
                self.assertGreater(n, count * 0.9, what)
                self.assertEqual((rc, served), (0, True), what)
                short += 1
            for report in SANITIZER_REPORTS:
                self.assertNotIn(report, log, what)
            if served:
                self.assertEqual(rc, 0, what)
            else:
                refused += 1
                self.assertEqual(rc, 1, what)
                self.assertRegex(log, refusal, what)
        print('\n%s: %d allocations, walked %d N (%s): %d refused to start, %d served '
              '(%d of them made fewer than N allocations)' % (
                  title, count, len(walked), 'all' if len(walked) == count else
                  'stride %d' % (walked[1] - walked[0]), refused, len(walked) - refused,
                  short), file=sys.stderr)

    @staticmethod
    def worker_status(address):
        with grpc.insecure_channel(address) as ch:
            ch.unary_unary(WORKER + 'Status',
                           request_serializer=wpb.StatusRequest.SerializeToString,
                           response_deserializer=wpb.StatusResponse.FromString)(
                               wpb.StatusRequest(), timeout=30)

    WORKER_ARGV = [kserve.binary('tessera-worker'), '--listen', '127.0.0.1:0',
                   '--threads', '1']
    WORKER_REFUSAL = r'ERROR +worker\[\d+\]: cannot start: \S'

    def test_worker(self):
        self.walk('worker start-up', self.WORKER_ARGV, self.worker_status,
                  self.WORKER_REFUSAL)
        # TESSERA_ALLOC_FAIL_PERSIST: from the first allocation on, all fail
        rc, log, served = self.run_daemon(self.WORKER_ARGV, self.worker_status,
                                          {'TESSERA_ALLOC_FAIL': '1',
                                           'TESSERA_ALLOC_FAIL_PERSIST': '1'})
        self.assertEqual((rc, served), (1, False), log[-3000:])
        self.assertRegex(log, self.WORKER_REFUSAL)
        self.assertEqual(len(re.findall(r'^alloc_fail: allocation #', log, re.M)), 1,
                         'one report per arming')

    def test_coordinator(self):
        """A coordinator with the MLP (--model) over a worker (not injected):
        its start-up loads the model; ServerReady must then answer."""
        tmp = tempfile.mkdtemp(prefix='tessera_alloc_fail_start_')
        self.addCleanup(shutil.rmtree, tmp, True)
        model = export_models.export(MODEL, tmp)

        def ready(address):
            """ServerReady, polled: the coordinator may still be probing
            its worker when it starts listening."""
            deadline = time.monotonic() + 30
            with kserve.Client(address) as c:
                while not c.server_ready():
                    self.assertLess(time.monotonic(), deadline, 'never ready')
                    time.sleep(0.1)
        with Worker() as w:
            argv = [kserve.binary('tessera-coordinator'), '--listen', '127.0.0.1:0',
                    '--worker', w.address, '--model', 'mlp=' + model]
            self.walk('coordinator start-up', argv, ready, r'(?m)^tessera-coordinator: \S')


if __name__ == '__main__':
    unittest.main()
