"""`tessera eval` against a real cluster: accuracy, RMSE and the agreement of
a sharded model with its unsplit self, each checked against what
scikit-learn and PyTorch compute themselves (never against Tessera).

Served:
  logreg      scikit-learn's multinomial LogisticRegression (LinearClassifier,
              outputs `label` int64 [N] and `scores` float [N, 3]), with
              held-out rows and their true classes, so that the accuracy is
              below 1
  linreg      scikit-learn's LinearRegression (LinearRegressor, `output`
              float [N, 1]) on noisy held-out targets
  mlp         the PyTorch MLP of export_models.py (`log_probs` [N, 10])
  mlp_tensor  the same file split by columns and rows (strategy=tensor)
"""
import csv
import io
import json
import os
import sys
import unittest

import numpy as np
import onnx
from onnx import helper
from sklearn.datasets import make_classification, make_regression
from sklearn.linear_model import LinearRegression, LogisticRegression

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import export_models  # noqa: E402
import kserve  # noqa: E402
import sklearn_models  # noqa: E402

export_models.torch.set_num_threads(1)

N_TRAIN = 300


def float32_rows(X):
    """X as the float32 the model sees, back in float64 for scikit-learn."""
    return X.astype(np.float32).astype(np.float64)


def logistic_data():
    """(model, X_test float32, y_test int64, est): held-out rows whose top two
    scores are apart by more than float32 could blur."""
    X, y = make_classification(n_samples=N_TRAIN + 200, n_features=5, n_informative=4,
                               n_redundant=0, n_classes=3, n_clusters_per_class=1,
                               class_sep=0.7, flip_y=0.05, random_state=21)
    X = float32_rows(X)
    est = LogisticRegression(max_iter=500).fit(X[:N_TRAIN], y[:N_TRAIN])
    pool, labels = X[N_TRAIN:], y[N_TRAIN:]
    keep = sklearn_models.top2_gap(est.decision_function(pool)) >= sklearn_models.MARGIN
    Xt, yt = pool[keep], labels[keep].astype(np.int64)
    node = sklearn_models.linear_classifier(est.coef_, est.intercept_, est.classes_,
                                            'SOFTMAX')
    model = sklearn_models.classifier('logreg', [node], Xt, est.predict(Xt),
                                      est.predict_proba(Xt), None)[0]
    return model, Xt.astype(np.float32), yt, est


def linear_data():
    """(model, X_test float32, y_test float64, est)."""
    X, y = make_regression(n_samples=N_TRAIN + 100, n_features=5, noise=5.0,
                           random_state=22)
    X = float32_rows(X)
    est = LinearRegression().fit(X[:N_TRAIN], y[:N_TRAIN])
    Xt, yt = X[N_TRAIN:], y[N_TRAIN:]
    node = helper.make_node('LinearRegressor', ['X'], ['output'], domain=sklearn_models.ML,
                            coefficients=sklearn_models.f32(est.coef_),
                            intercepts=sklearn_models.f32([est.intercept_]), targets=1)
    model = sklearn_models.regressor('linreg', [node], Xt, est.predict(Xt), None)[0]
    return model, Xt.astype(np.float32), yt, est


class Eval(kserve.CliMixin, kserve.ClusterTestCase):
    @classmethod
    def cluster_options(cls, tmp):
        logreg, cls.class_X, cls.class_y, cls.classifier = logistic_data()
        linreg, cls.reg_X, cls.reg_y, cls.regressor = linear_data()
        paths = {}
        for name, model in (('logreg', logreg), ('linreg', linreg)):
            paths[name] = os.path.join(tmp, name + '.onnx')
            onnx.save(model, paths[name])
        mlp = export_models.export('mlp', tmp)
        return {'models': [('logreg', paths['logreg']), ('linreg', paths['linreg']),
                           ('mlp', mlp),
                           ('mlp_tensor', mlp, {'strategy': 'tensor', 'shards': 2})],
                'local_workers': 2}

    def save(self, name, array):
        path = os.path.join(self.tmp, name + '.npy')
        np.save(path, array)
        return path

    def eval(self, *args, expect=0):
        p = self.tessera('eval', '--server', self.cluster.address, *args, expect=expect)
        return json.loads(p.stdout) if expect == 0 and 'json' in args else p

    def test_classifier_accuracy_is_sklearns(self):
        X, y = self.class_X, self.class_y
        want = self.classifier.predict(X.astype(np.float64)) == y
        self.assertTrue(0 < want.mean() < 1, 'the held-out set has some errors')
        inp, labels = self.save('class_X', X), self.save('class_y', y)
        doc = self.eval('--model', 'logreg', '--input', inp, '--labels', labels,
                        '--batch', '16', '--format', 'json')
        self.assertEqual(doc['output'], 'label')  # the label output, by default
        self.assertEqual((doc['task'], doc['rows'], doc['batch']),
                         ('classification', len(X), 16))
        self.assertEqual(doc['correct'], int(want.sum()))
        self.assertEqual(doc['accuracy'], want.sum() / len(X))
        self.assertNotIn('reference', doc)
        # The scores output: its argmax is predict's class for a multinomial
        # model, so the accuracy is the same.
        doc = self.eval('--model', 'logreg', '--input', 'X=' + inp, '--labels', labels,
                        '--output', 'scores', '--format', 'json')
        self.assertEqual((doc['output'], doc['batch']), ('scores', 32))
        self.assertEqual(doc['accuracy'], want.sum() / len(X))

    def test_regression_rmse_is_numpys(self):
        X, y = self.reg_X, self.reg_y
        err = self.regressor.predict(X.astype(np.float64)) - y
        rmse, max_err = np.sqrt(np.mean(err ** 2)), np.abs(err).max()
        inp, labels = self.save('reg_X', X), self.save('reg_y', y)
        doc = self.eval('--model', 'linreg', '--input', inp, '--labels', labels,
                        '--batch', '7', '--format', 'json')
        self.assertEqual((doc['task'], doc['output'], doc['rows']),
                         ('regression', 'output', len(X)))
        self.assertLessEqual(abs(doc['rmse'] - rmse), 1e-5 * rmse, (doc, rmse))
        self.assertLessEqual(abs(doc['max_abs_error'] - max_err), 1e-5 * max_err,
                             (doc, max_err))
        self.assertNotIn('accuracy', doc)
        # Labels as [N, 1], the output's layout, are the same labels.
        doc = self.eval('--model', 'linreg', '--input', inp, '--format', 'json',
                        '--labels', self.save('reg_y2', y.reshape(-1, 1)))
        self.assertLessEqual(abs(doc['rmse'] - rmse), 1e-5 * rmse, (doc, rmse))

    def test_sharded_agrees_with_unsplit(self):
        X = export_models.make_inputs('mlp', 100, seed=5)['embedding']
        log_probs = export_models.reference('mlp', {'embedding': X})['log_probs']
        top = np.sort(log_probs, axis=1)
        self.assertGreater((top[:, -1] - top[:, -2]).min(), 1e-4,
                           'no row near a tie between two classes')
        torch_class = log_probs.argmax(axis=1)
        labels = np.where(np.arange(100) % 3 == 0, (torch_class + 1) % 10, torch_class)
        want = np.mean(torch_class == labels)
        inp, lab = self.save('mlp_X', X), self.save('mlp_y', labels.astype(np.int32))
        doc = self.eval('--model', 'mlp_tensor', '--reference', 'mlp', '--input', inp,
                        '--labels', lab, '--format', 'json')
        self.assertEqual((doc['model'], doc['reference'], doc['output'], doc['rows']),
                         ('mlp_tensor', 'mlp', 'log_probs', 100))
        self.assertEqual(doc['accuracy'], want)
        self.assertEqual((doc['agreeing'], doc['agreement']), (100, 1.0))
        self.assertLess(doc['max_abs_diff'], 1e-4)
        self.assertEqual(doc['max_abs_diff_output'], 'log_probs')
        # Table and CSV carry the same figures.
        p = self.eval('--model', 'mlp_tensor', '--reference', 'mlp', '--input', inp,
                      '--labels', lab)
        self.assertIn('agreement: 1\n', p.stdout)
        self.assertIn('accuracy: %.6g\n' % want, p.stdout)
        p = self.eval('--model', 'mlp_tensor', '--reference', 'mlp', '--input', inp,
                      '--labels', lab, '--format', 'csv')
        rows = list(csv.DictReader(io.StringIO(p.stdout)))
        self.assertEqual((len(rows), rows[0]['agreeing'], rows[0]['max_abs_diff_output']),
                         (1, '100', 'log_probs'))

    def test_bad_files(self):
        X, y = self.class_X, self.class_y
        inp = self.save('bad_X', X)
        cases = [
            (['--labels', self.save('short_y', y[:-1])], 'INVALID_ARGUMENT',
             'not one row per input row'),
            (['--labels', self.save('wide_y', np.stack([y, y], axis=1))], 'INVALID_ARGUMENT',
             'integer labels are classes, one per row'),
            (['--labels', self.save('float_y', np.zeros((len(X), 2)))], 'INVALID_ARGUMENT',
             "output 'output' has 1 values per row where --labels has 2"),
            (['--labels', os.path.join(self.tmp, 'missing.npy')], None, 'missing.npy'),
        ]
        for extra, status, message in cases:
            with self.subTest(extra=extra):
                model = 'linreg' if 'float_y' in extra[1] else 'logreg'
                p = self.eval('--model', model, '--input', inp, *extra, expect=1)
                if status:
                    self.assertTrue(p.stderr.startswith('tessera: %s: ' % status), p.stderr)
                self.assertIn(message, p.stderr)
                self.assertEqual(p.stdout, '')
        labels = self.save('good_y', y)
        p = self.eval('--model', 'nope', '--input', 'X=' + inp, '--labels', labels, expect=1)
        self.assertTrue(p.stderr.startswith('tessera: NOT_FOUND: '), p.stderr)
        p = self.eval('--model', 'logreg', '--reference', 'nope', '--input', inp,
                      '--labels', labels, expect=1)
        self.assertTrue(p.stderr.startswith("tessera: NOT_FOUND: model 'nope': "), p.stderr)
        # A float output of one value per row names no class.
        p = self.eval('--model', 'linreg', '--input', inp, '--labels', labels, expect=1)
        self.assertTrue(p.stderr.startswith('tessera: INVALID_ARGUMENT: '), p.stderr)
        self.assertIn("output 'output' (1 FP32 per row) names no class", p.stderr)

    def test_usage(self):
        for args in (['--model', 'logreg', '--input', 'x.npy'],            # no --labels
                     ['--model', 'logreg', '--labels', 'y.npy'],           # no --input
                     ['--model', 'logreg', '--input', 'x.npy', '--labels', 'y.npy',
                      '--output', 'label', '--output', 'scores'],
                     ['--model', 'logreg', '--input', 'x.npy', '--labels', 'y.npy',
                      '--output', 'label=out.npy'],
                     ['--model', 'logreg', '--input', 'x.npy', '--labels', 'y.npy',
                      '--batch', '0']):
            with self.subTest(args=args):
                p = self.eval(*args, expect=2)
                self.assertTrue(p.stderr.startswith('tessera eval: '), p.stderr)
        self.assertTrue(self.tessera('eval', '--help').stdout.startswith('usage: tessera eval '))


if __name__ == '__main__':
    unittest.main()
