"""Ensembles: `--model NAME=ensemble:A+B[,fuse=mean|weighted_mean|vote]
[,weights=w1+w2]`, and the same served from a --model-repository whose
ensemble entries exist only as config.ini.

The members are the MLP of export_models.py built from different seeds (same
input and output names and shapes), exported from torch; the expected
answers are numpy's combination of the torch modules' outputs:
  mean           the element-wise mean of the members' outputs;
  weighted_mean  sum_i w_i * out_i / sum_i w_i;
  vote           per row, each member votes for its argmax class (the first
                 one on ties); the answer is the int64 class with the most
                 votes, ties to the smallest class (fuse.h).
Bad configuration (unknown key, bad value, unknown member) makes the
coordinator exit non-zero with a message naming the key, value or member.
"""
import collections
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import admin  # noqa: E402
import export_models  # noqa: E402
import kserve  # noqa: E402

torch = export_models.torch
torch.set_num_threads(1)

MEMBER_SEEDS = {'m1': 11, 'm2': 22, 'm3': 33}
INPUT, OUTPUT = 'embedding', 'log_probs'
BATCHES = [1, 35]
RTOL, ATOL = 1e-5, 1e-5

_tmp = None
_paths = {}     # member -> exported ONNX file
_modules = {}   # member -> torch module
_inputs = {}    # batch -> input array
_outputs = {}   # (member, batch) -> torch output


def member_module(seed):
    torch.manual_seed(seed)
    return export_models.mlp().eval()


def export_member(module, path):
    with torch.no_grad():
        torch.onnx.export(module, (torch.zeros(2, 32),), path,
                          input_names=[INPUT], output_names=[OUTPUT],
                          dynamic_axes={INPUT: {0: 'batch'}, OUTPUT: {0: 'batch'}},
                          opset_version=13)
    return path


def setUpModule():
    global _tmp
    _tmp = tempfile.mkdtemp(prefix='tessera_ensemble_')
    for name, seed in MEMBER_SEEDS.items():
        _modules[name] = member_module(seed)
        _paths[name] = export_member(_modules[name], os.path.join(_tmp, name + '.onnx'))
    for b in BATCHES:
        _inputs[b] = np.random.RandomState(500 + b).standard_normal((b, 32)).astype(np.float32)
        for name, m in _modules.items():
            with torch.no_grad():
                _outputs[name, b] = m(torch.from_numpy(_inputs[b])).numpy()


def tearDownModule():
    if _tmp:
        shutil.rmtree(_tmp, ignore_errors=True)


# ---- numpy's combinations of the torch outputs ------------------------------

def np_mean(outs):
    return np.mean([o.astype(np.float64) for o in outs], axis=0).astype(np.float32)


def np_weighted_mean(outs, weights):
    w = np.asarray(weights, np.float64) / np.sum(weights)
    return np.tensordot(w, np.array([o.astype(np.float64) for o in outs]), axes=1).astype(np.float32)


def np_vote(outs):
    votes = np.array([np.argmax(o, axis=-1) for o in outs])  # [members, batch]
    classes = outs[0].shape[-1]
    answer = np.empty(votes.shape[1], np.int64)
    for row in range(votes.shape[1]):
        counts = np.bincount(votes[:, row], minlength=classes)
        answer[row] = np.argmax(counts)  # the first (smallest) class on ties
    return answer


def expected(fuse, members, batch, weights=None):
    outs = [_outputs[m, batch] for m in members]
    if fuse == 'mean':
        return np_mean(outs)
    if fuse == 'weighted_mean':
        return np_weighted_mean(outs, weights)
    return np_vote(outs)


def assert_close(test, got, want, what):
    test.assertEqual(got.dtype, want.dtype, what)
    test.assertEqual(got.shape, want.shape, what)
    if want.dtype.kind in 'iu':
        np.testing.assert_array_equal(got, want, what)
    elif not np.allclose(got, want, rtol=RTOL, atol=ATOL):
        test.fail('%s: max abs error %.3g' % (what, np.abs(got.astype(np.float64) - want).max()))


# (served name, fuse, members as served, torch members, weights)
Ensemble = collections.namedtuple('Ensemble', 'name fuse members torch_members weights')

CLI_ENSEMBLES = [
    Ensemble('mean2', 'mean', ['m1', 'm2'], ['m1', 'm2'], None),
    Ensemble('mean3', 'mean', ['m1', 'm2', 'm3'], ['m1', 'm2', 'm3'], None),
    Ensemble('wmean2', 'weighted_mean', ['m1', 'm2'], ['m1', 'm2'], [1, 3]),
    Ensemble('wmean3', 'weighted_mean', ['m3', 'm1', 'm2'], ['m3', 'm1', 'm2'], [0.5, 2, 1.5]),
    Ensemble('vote3', 'vote', ['m1', 'm2', 'm3'], ['m1', 'm2', 'm3'], None),
    Ensemble('vote2', 'vote', ['m2', 'm1'], ['m2', 'm1'], None),
    # Members that are themselves split: tensor and pipeline plans.
    Ensemble('split_mean', 'mean', ['m1_tensor', 'm2_pipeline'], ['m1', 'm2'], None),
    Ensemble('split_vote', 'vote', ['m1_tensor', 'm2_pipeline', 'm3'], ['m1', 'm2', 'm3'], None),
]


def ensemble_spec(e):
    spec = '%s=ensemble:%s' % (e.name, '+'.join(e.members))
    if e.name != 'mean2':  # mean2 relies on the default fuse (mean)
        spec += ',fuse=' + e.fuse
    if e.weights:
        spec += ',weights=' + '+'.join('%g' % w for w in e.weights)
    return spec


class EnsembleChecks:
    ENSEMBLES = []

    def test_matches_numpy_of_torch(self):
        for e in self.ENSEMBLES:
            for b in BATCHES:
                with self.subTest(ensemble=e.name, batch=b):
                    got = self.client.infer(e.name, {INPUT: _inputs[b]})
                    self.assertEqual(list(got), [OUTPUT])
                    want = expected(e.fuse, e.torch_members, b, e.weights)
                    assert_close(self, got[OUTPUT], want, '%s batch %d' % (e.name, b))

    def test_vote_is_not_trivial(self):
        # The members must disagree somewhere, or vote/mean checks prove little.
        labels = [np.argmax(_outputs[m, 35], axis=-1) for m in MEMBER_SEEDS]
        self.assertTrue(any((labels[0] != l).any() for l in labels[1:]))

    def test_metadata_and_status(self):
        status = admin.cluster_status(self.cluster.address)
        for e in self.ENSEMBLES:
            with self.subTest(ensemble=e.name):
                md = self.client.model_metadata(e.name)
                self.assertEqual([(t.name, t.datatype, list(t.shape)) for t in md.inputs],
                                 [(INPUT, 'FP32', [-1, 32])])
                if e.fuse == 'vote':
                    want_out = [(OUTPUT, 'INT64', [-1])]
                else:
                    want_out = [(OUTPUT, 'FP32', [-1, 10])]
                self.assertEqual([(t.name, t.datatype, list(t.shape)) for t in md.outputs],
                                 want_out)
                self.assertTrue(self.client.model_ready(e.name))
                st = admin.model_state(status, e.name)
                self.assertIsNotNone(st)
                self.assertEqual(st.state, 'READY')
                self.assertEqual(st.strategy, 'ensemble')
                self.assertEqual(list(st.members), e.members)
                self.assertEqual(st.fuse, e.fuse)


class CommandLine(EnsembleChecks, kserve.ClusterTestCase):
    """Members and ensembles from --model specs."""

    ENSEMBLES = CLI_ENSEMBLES

    @classmethod
    def cluster_options(cls, tmp):
        models = ['%s=%s' % (m, _paths[m]) for m in MEMBER_SEEDS]
        models += ['m1_tensor=%s,strategy=tensor,shards=2' % _paths['m1'],
                   'm2_pipeline=%s,strategy=pipeline,stages=3' % _paths['m2']]
        # Ensembles first on the command line: members load before them anyway.
        return {'models': [ensemble_spec(e) for e in cls.ENSEMBLES] + models,
                'local_workers': 2}


REPO_ENSEMBLES = [
    Ensemble('r_mean', 'mean', ['m1', 'm2'], ['m1', 'm2'], None),
    Ensemble('r_wmean', 'weighted_mean', ['m1', 'm2'], ['m1', 'm2'], [1, 3]),
    Ensemble('r_vote', 'vote', ['m1', 'm2', 'm3'], ['m1', 'm2', 'm3'], None),
    Ensemble('r_split', 'weighted_mean', ['m1_tensor', 'm3'], ['m1', 'm3'], [2, 1]),
]


class Repository(EnsembleChecks, kserve.ClusterTestCase):
    """The same keys from DIR/NAME/config.ini; ensembles have no model.onnx."""

    ENSEMBLES = REPO_ENSEMBLES

    @classmethod
    def cluster_options(cls, tmp):
        repo = os.path.join(tmp, 'repository')
        entries = {m: ('', m) for m in MEMBER_SEEDS}
        entries['m1_tensor'] = ('strategy = tensor\nshards = 2\n', 'm1')
        for name, (ini, member) in entries.items():
            os.makedirs(os.path.join(repo, name))
            shutil.copy(_paths[member], os.path.join(repo, name, 'model.onnx'))
            if ini:
                with open(os.path.join(repo, name, 'config.ini'), 'w') as f:
                    f.write(ini)
        for i, e in enumerate(cls.ENSEMBLES):
            os.makedirs(os.path.join(repo, e.name))
            lines = ['ensemble = ' + '+'.join(e.members)]
            if e.fuse != 'mean' or i % 2:
                lines.append('fuse = ' + e.fuse)
            if e.weights:
                lines.append('weights = ' + '+'.join('%g' % w for w in e.weights))
            # Both forms the parser takes: no section, and a [model] section.
            text = ('[model]\n' if i % 2 else '') + '\n'.join(lines) + '\n'
            with open(os.path.join(repo, e.name, 'config.ini'), 'w') as f:
                f.write(text)
        return {'extra_args': ['--model-repository', repo], 'local_workers': 2}

    def test_repository_index(self):
        states = {m.name: m.state for m in self.client.repository_index()}
        for name in list(MEMBER_SEEDS) + ['m1_tensor'] + [e.name for e in self.ENSEMBLES]:
            self.assertEqual(states.get(name), 'READY', (name, states))


# ---- bad configuration --------------------------------------------------------

class BadConfig(unittest.TestCase):
    """Each case starts a coordinator that must exit non-zero before
    listening, its last "tessera-coordinator:" line naming what is wrong."""

    def run_coordinator(self, args):
        cmd = [kserve.binary('tessera-coordinator'), '--listen', '127.0.0.1:0',
               '--local-workers', '1'] + args
        try:
            return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  stdin=subprocess.DEVNULL, universal_newlines=True,
                                  timeout=60)
        except subprocess.TimeoutExpired as e:
            self.fail('%s did not exit within 60 s: %s' % (' '.join(cmd), e.stderr))

    def check_fails(self, args, *words):
        p = self.run_coordinator(args)
        what = '%s\nexit %d\nstderr:\n%s' % (' '.join(args), p.returncode, p.stderr[-3000:])
        self.assertNotEqual(p.returncode, 0, what)
        self.assertNotIn('listening on', p.stdout, what)
        lines = [l for l in p.stderr.splitlines() if l.startswith('tessera-coordinator:')]
        self.assertTrue(lines, what)
        for w in words:
            self.assertIn(w, lines[-1], what)

    def members(self):
        return ['--model', 'm1=' + _paths['m1'], '--model', 'm2=' + _paths['m2']]

    def test_command_line(self):
        cases = [
            # unknown key
            (['--model', 'm1=%s,colour=red' % _paths['m1']], ['colour']),
            (self.members() + ['--model', 'e=ensemble:m1+m2,colour=red'], ['colour']),
            # bad values
            (['--model', 'm1=%s,strategy=diagonal' % _paths['m1']], ['strategy', 'diagonal']),
            (['--model', 'm1=%s,shards=many' % _paths['m1']], ['shards', 'many']),
            (['--model', 'm1=%s,replicas=0' % _paths['m1']], ['replicas', "'0'"]),
            (self.members() + ['--model', 'e=ensemble:m1+m2,fuse=median'], ['fuse', 'median']),
            (self.members() + ['--model', 'e=ensemble:m1+m2,fuse=weighted_mean,weights=1+x'],
             ['weights', 'x']),
            (self.members() + ['--model', 'e=ensemble:m1+m2,fuse=weighted_mean,weights=1'],
             ['weight']),
            # unknown member
            (self.members() + ['--model', 'e=ensemble:m1+ghost'], ['ghost']),
            (self.members() + ['--model', 'e=ensemble:m1+m2+ghost,fuse=vote'], ['ghost']),
        ]
        for args, words in cases:
            with self.subTest(args=' '.join(args[-1:])):
                self.check_fails(args, *words)

    def test_repository(self):
        cases = [
            ({'m1': 'colour = red\n'}, ['colour', 'config.ini']),
            ({'m1': 'strategy = diagonal\n'}, ['strategy', 'diagonal', 'config.ini']),
            ({'m1': 'stages = -3\n'}, ['stages', '-3']),
            ({'e': 'ensemble = m1+m2\nfuse = median\n'}, ['fuse', 'median']),
            ({'e': 'ensemble = m1+m2\ncolour = red\n'}, ['colour']),
            ({'e': 'ensemble = m1+ghost\n'}, ['ghost']),
            ({'e': 'ensemble = m1+m2\nfuse = weighted_mean\nweights = 1+2+3\n'}, ['weight']),
        ]
        for i, (inis, words) in enumerate(cases):
            with self.subTest(config=inis):
                repo = os.path.join(_tmp, 'bad_repo_%d' % i)
                for name in ('m1', 'm2'):
                    os.makedirs(os.path.join(repo, name))
                    shutil.copy(_paths[name], os.path.join(repo, name, 'model.onnx'))
                for name, text in inis.items():
                    os.makedirs(os.path.join(repo, name), exist_ok=True)
                    with open(os.path.join(repo, name, 'config.ini'), 'w') as f:
                        f.write(text)
                self.check_fails(['--model-repository', repo], *words)


if __name__ == '__main__':
    unittest.main()
