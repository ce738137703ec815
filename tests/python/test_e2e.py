"""End-to-end: a real coordinator with local workers serves exported PyTorch
models over KServe v2, and its answers match the torch modules themselves.

One coordinator serves every model of this module (setUpClass); each test
talks to it through kserve.Client or the `tessera` CLI.
"""
import os
import re
import signal
import sys
import unittest

import grpc
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import export_models  # noqa: E402
import kserve  # noqa: E402

# The reference runs are tiny; leave the cores to the daemons under test.
export_models.torch.set_num_threads(1)

MODELS = ['linear', 'logistic', 'logistic_binary', 'mlp']
# Served name -> (exported model, coordinator model keys). The MLP is also
# served split by columns/rows and by layers: answers must not change.
SERVED = {m: (m, {}) for m in MODELS}
SERVED['mlp_tensor'] = ('mlp', {'strategy': 'tensor', 'shards': 2})
SERVED['mlp_pipeline'] = ('mlp', {'strategy': 'pipeline', 'stages': 2})
BATCHES = [1, 2, 7, 16, 64]
RTOL, ATOL = 1e-5, 1e-6


def assert_close(test, got, want, what):
    test.assertEqual(got.dtype, want.dtype, what)
    test.assertEqual(got.shape, want.shape, what)
    if not np.allclose(got, want, rtol=RTOL, atol=ATOL):
        err = np.abs(got.astype(np.float64) - want) / (np.abs(want) + ATOL)
        test.fail('%s: max relative error %.3g at %s' % (
            what, err.max(), np.unravel_index(err.argmax(), err.shape)))


class EndToEnd(kserve.CliMixin, kserve.ClusterTestCase):
    @classmethod
    def cluster_options(cls, tmp):
        paths = {m: export_models.export(m, tmp) for m in MODELS}
        return {'models': [(name, paths[m], keys) for name, (m, keys) in SERVED.items()],
                'local_workers': 2}

    # ---- inference against torch ------------------------------------------

    def test_matches_torch(self):
        for served, (model, _) in SERVED.items():
            for batch in BATCHES:
                for typed in (False, True):
                    with self.subTest(model=served, batch=batch, typed=typed):
                        inputs = export_models.make_inputs(model, batch, seed=batch)
                        want = export_models.reference(model, inputs)
                        got = self.client.infer(served, inputs, typed=typed)
                        self.assertEqual(list(got), list(want))
                        for name in want:
                            assert_close(self, got[name], want[name],
                                         '%s/%s batch %d' % (served, name, batch))

    def test_requested_outputs(self):
        inputs = export_models.make_inputs('logistic', 5, seed=3)
        want = export_models.reference('logistic', inputs)
        for requested in (['probabilities'], ['logits'], ['probabilities', 'logits']):
            with self.subTest(requested=requested):
                got = self.client.infer('logistic', inputs, outputs=requested)
                self.assertEqual(sorted(got), sorted(requested))
                for name in requested:
                    assert_close(self, got[name], want[name], name)
        # No request: every output, in the model's order.
        self.assertEqual(list(self.client.infer('logistic', inputs)),
                         ['logits', 'probabilities'])

    def test_probabilities_sum_to_one(self):
        # A property of the model, independent of the reference run.
        inputs = export_models.make_inputs('logistic', 16, seed=9)
        p = self.client.infer('logistic', inputs, outputs=['probabilities'])['probabilities']
        np.testing.assert_allclose(p.sum(axis=1), np.ones(16), rtol=1e-5)

    # ---- health and metadata ----------------------------------------------

    def test_live_ready(self):
        self.assertTrue(self.client.server_live())
        self.assertTrue(self.client.server_ready())
        for model in MODELS:
            self.assertTrue(self.client.model_ready(model), model)

    def test_model_ready_unknown(self):
        try:
            ready = self.client.model_ready('no_such_model')
        except grpc.RpcError as e:
            self.assertEqual(e.code(), grpc.StatusCode.NOT_FOUND)
            self.assertIn('no_such_model', e.details())
        else:
            self.assertFalse(ready)

    def test_health_check(self):
        self.assertEqual(self.client.health(), 'SERVING')

    def test_server_metadata(self):
        md = self.client.server_metadata()
        self.assertTrue(md.name)
        self.assertTrue(md.version)

    def test_model_metadata(self):
        for model in MODELS:
            spec = export_models.MODELS[model]
            md = self.client.model_metadata(model)
            self.assertEqual(md.name, model)
            self.assertEqual([(t.name, t.datatype, list(t.shape)) for t in md.inputs],
                             [(i.name, 'FP32', [-1 if isinstance(d, str) else d
                                                for d in i.shape])
                              for i in spec.inputs])
            want_outputs = export_models.reference(
                model, export_models.make_inputs(model, 1))
            self.assertEqual([(t.name, t.datatype, list(t.shape)) for t in md.outputs],
                             [(n, 'FP32', [-1] + list(a.shape[1:]))
                              for n, a in want_outputs.items()])

    def test_model_metadata_unknown(self):
        with self.assertRaises(grpc.RpcError) as cm:
            self.client.model_metadata('no_such_model')
        self.assertEqual(cm.exception.code(), grpc.StatusCode.NOT_FOUND)
        self.assertIn('no_such_model', cm.exception.details())

    def test_repository_index(self):
        index = {m.name: m.state for m in self.client.repository_index()}
        for model in MODELS:
            self.assertEqual(index.get(model), 'READY', model)

    # ---- the tessera CLI ----------------------------------------------------

    def test_cli_infer_npy(self):
        for model in MODELS:
            for typed in ([], ['--typed']):
                with self.subTest(model=model, typed=typed):
                    inputs = export_models.make_inputs(model, 7, seed=11)
                    want = export_models.reference(model, inputs)
                    args = ['infer', '--server', self.cluster.address, '--model', model]
                    for name, a in inputs.items():
                        path = os.path.join(self.tmp, 'in_%s.npy' % name)
                        np.save(path, a)
                        args += ['--input', '%s=%s' % (name, path)]
                    for name in want:
                        args += ['--output', '%s=%s' % (name, os.path.join(self.tmp, 'out_%s.npy' % name))]
                    self.tessera(*(args + typed))
                    for name in want:
                        got = np.load(os.path.join(self.tmp, 'out_%s.npy' % name))
                        assert_close(self, got, want[name], 'cli %s/%s' % (model, name))

    def test_cli_infer_prints(self):
        inputs = export_models.make_inputs('logistic', 2, seed=5)
        path = os.path.join(self.tmp, 'print_in.npy')
        np.save(path, inputs['features'])
        p = self.tessera('infer', '--server', self.cluster.address, '--model', 'logistic',
                         '--input', 'features=' + path, '--output', 'probabilities')
        self.assertIn('probabilities FP32 [2,3]', p.stdout)
        self.assertNotIn('logits', p.stdout)
        want = export_models.reference('logistic', inputs)['probabilities']
        # The printed values parse back to the tensor (7 significant digits).
        body = p.stdout.split('\n', 1)[1]
        values = np.array([float(v) for v in
                           body.replace('[', ' ').replace(']', ' ').replace(',', ' ').split()])
        np.testing.assert_allclose(values, want.ravel(), rtol=2 * RTOL, atol=ATOL)

    def test_cli_models(self):
        p = self.tessera('models', '--server', self.cluster.address)
        lines = p.stdout.splitlines()
        self.assertEqual(lines[0].split(), ['NAME', 'VERSION', 'STATE', 'REASON'])
        for model in MODELS:
            self.assertTrue(any(l.split()[:1] == [model] and 'READY' in l.split()
                                for l in lines[1:]), p.stdout)

    def test_cli_health(self):
        p = self.tessera('health', '--server', self.cluster.address)
        self.assertIn('health: SERVING', p.stdout)
        self.assertIn('live: true', p.stdout)
        self.assertIn('ready: true', p.stdout)

    def test_cli_metadata_and_status(self):
        p = self.tessera('metadata', '--server', self.cluster.address, '--model', 'mlp')
        self.assertIn('model: mlp', p.stdout)
        self.assertRegex(p.stdout, r'embedding\s+FP32\s+\[-1,32\]')
        self.assertRegex(p.stdout, r'log_probs\s+FP32\s+\[-1,10\]')
        p = self.tessera('status', '--server', self.cluster.address)
        for model in SERVED:
            self.assertIn('model: ' + model, p.stdout)
        # The admin section: both local workers up, every model's shards placed.
        cluster = p.stdout.split('== cluster ==', 1)[1]
        self.assertEqual(len(re.findall(r'^\d+\s+127\.0\.0\.1:\d+\s+up\s', cluster, re.M)), 2,
                         cluster)
        for model in SERVED:
            self.assertRegex(cluster, r'(?m)^%s\s+READY\s' % model)
            self.assertRegex(cluster, r'(?m)^%s\s+0\s+0\s' % model)

    def test_cli_errors(self):
        path = os.path.join(self.tmp, 'err_in.npy')
        np.save(path, np.zeros((2, 5), np.float32))  # mlp wants [batch, 32]
        p = self.tessera('infer', '--server', self.cluster.address, '--model', 'mlp',
                         '--input', 'embedding=' + path, expect=1)
        self.assertTrue(p.stderr.startswith('tessera: INVALID_ARGUMENT: '), p.stderr)
        self.assertIn('embedding', p.stderr)
        p = self.tessera('infer', '--server', self.cluster.address, '--model', 'nope',
                         '--input', 'embedding=' + path, expect=1)
        self.assertTrue(p.stderr.startswith('tessera: NOT_FOUND: '), p.stderr)
        p = self.tessera('infer', '--server', self.cluster.address, '--model', 'mlp',
                         '--input', 'embedding=' + path + '.missing', expect=1)
        self.assertTrue(p.stderr.startswith('tessera: NOT_FOUND: '), p.stderr)
        self.assertIn('.missing', p.stderr)
        self.tessera('infer', '--server', self.cluster.address, expect=2)
        self.tessera('infer', '--help')

    def test_cli_bench(self):
        inputs = export_models.make_inputs('mlp', 4, seed=2)
        path = os.path.join(self.tmp, 'bench_in.npy')
        np.save(path, inputs['embedding'])
        p = self.tessera('bench', '--server', self.cluster.address, '--model', 'mlp',
                         '--input', 'embedding=' + path, '--concurrency', '4',
                         '--requests', '40')
        self.assertIn('ok: 40\nerrors: 0\n', p.stdout)
        self.assertRegex(p.stdout, r'p50 [0-9.]+  p90 [0-9.]+  p99 [0-9.]+')


class Networks(kserve.ClusterTestCase):
    """The CNNs and the transformer (dynamic batch and sequence) end to end."""

    NETWORKS = ['lenet', 'resnet', 'transformer']

    @classmethod
    def cluster_options(cls, tmp):
        return {'models': [(m, export_models.export(m, tmp)) for m in cls.NETWORKS],
                'local_workers': 2}

    def test_matches_torch(self):
        for model in self.NETWORKS:
            for batch, sequence in ((1, 5), (3, 9)):
                with self.subTest(model=model, batch=batch, sequence=sequence):
                    inputs = export_models.make_inputs(model, batch, seed=batch,
                                                       sequence=sequence)
                    want = export_models.reference(model, inputs)
                    got = self.client.infer(model, inputs)
                    for name in want:
                        assert_close(self, got[name], want[name], '%s/%s' % (model, name))

    def test_metadata(self):
        md = self.client.model_metadata('transformer')
        self.assertEqual([(t.name, t.datatype, list(t.shape)) for t in md.inputs],
                         [('tokens', 'INT64', [-1, -1])])
        self.assertEqual([(t.name, t.datatype, list(t.shape)) for t in md.outputs],
                         [('hidden', 'FP32', [-1, -1, 16])])


class Repository(kserve.ClusterTestCase):
    """--model-repository DIR: DIR/NAME/model.onnx (+ config.ini), loaded and
    unloaded at run time through the KServe repository extension."""

    @classmethod
    def cluster_options(cls, tmp):
        repo = os.path.join(tmp, 'repository')
        for name, model, config in [('lin', 'linear', ''),
                                    ('mlp2', 'mlp', 'strategy=tensor\nshards=2\n')]:
            os.makedirs(os.path.join(repo, name))
            os.rename(export_models.export(model, tmp), os.path.join(repo, name, 'model.onnx'))
            if config:
                with open(os.path.join(repo, name, 'config.ini'), 'w') as f:
                    f.write(config)
        return {'extra_args': ['--model-repository', repo], 'local_workers': 1}

    def check_model(self, served, model):
        inputs = export_models.make_inputs(model, 7, seed=4)
        want = export_models.reference(model, inputs)
        got = self.client.infer(served, inputs)
        for name in want:
            assert_close(self, got[name], want[name], served + '/' + name)

    def tessera(self, *args):
        return kserve.run_tessera(*(args + ('--server', self.cluster.address)))

    def test_load_unload(self):
        states = {m.name: m.state for m in self.client.repository_index()}
        self.assertEqual(states, {'lin': 'READY', 'mlp2': 'READY'})
        self.check_model('lin', 'linear')
        self.check_model('mlp2', 'mlp')

        p = self.tessera('unload', '--model', 'lin')
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stdout, 'unloaded lin\n')
        with self.assertRaises(grpc.RpcError) as cm:
            self.check_model('lin', 'linear')
        self.assertEqual(cm.exception.code(), grpc.StatusCode.NOT_FOUND)
        self.assertIn('lin', cm.exception.details())
        states = {m.name: m.state for m in self.client.repository_index()}
        self.assertNotEqual(states.get('lin'), 'READY')
        self.check_model('mlp2', 'mlp')  # the other model is untouched

        p = self.tessera('load', '--model', 'lin')
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stdout, 'loaded lin\n')
        self.assertTrue(self.client.model_ready('lin'))
        self.check_model('lin', 'linear')

        p = self.tessera('load', '--model', 'not_in_repository')
        self.assertEqual(p.returncode, 1)
        self.assertTrue(p.stderr.startswith('tessera: NOT_FOUND: '), p.stderr)
        self.assertIn('not_in_repository', p.stderr)


class HealthOfClosedPort(unittest.TestCase):
    def test_cli_health_unreachable(self):
        p = kserve.run_tessera('health', '--server', '127.0.0.1:1', '--timeout-ms', '2000')
        self.assertEqual(p.returncode, 1)
        self.assertTrue(p.stderr.startswith('tessera: UNAVAILABLE: '), p.stderr)



class LocalWorkerCrash(unittest.TestCase):
    def test_crashed_local_worker_fails_exit_status(self):
        """A local worker that died (here kill -9) is reported at stop: the
        coordinator logs it and exits 1, so systemd and CI see the crash."""
        cluster = kserve.Cluster(local_workers=2, wait_ready=False)
        with cluster:
            pids = [int(p) for p in re.findall(r'local worker \d+: pid (\d+)', cluster.log())]
            self.assertEqual(len(pids), 2, cluster.log())
            os.kill(pids[0], signal.SIGKILL)
            cluster.killed = True  # exit checked below, not by the fixture
            cluster.proc.send_signal(signal.SIGTERM)
            self.assertEqual(cluster.proc.wait(20), 1, cluster.log())
            self.assertIn('local worker pid %d ended by signal 9' % pids[0], cluster.log())


class StopAtOnce(unittest.TestCase):
    def test_sigterm_right_after_listening(self):
        """SIGTERM the moment "listening on" is printed (as systemd may, right
        after READY=1): the coordinator's handlers are in place already, so it
        drains and exits 0 (the fixture's exit checks the status), never 143."""
        for _ in range(3):
            with kserve.Cluster(local_workers=1, wait_ready=False):
                pass


if __name__ == '__main__':
    unittest.main()
