#!/usr/bin/python3
"""Trains small scikit-learn models and writes them as ai.onnx.ml graphs.

Usage: /usr/bin/python3 tests/python/sklearn_models.py OUTDIR

For every model it writes into OUTDIR:
  <name>.onnx         the model, built with onnx.helper from the fitted
                      coefficients (skl2onnx is not used);
  <name>.input.npy    float32 [16, F] test samples (not seen in training);
  <name>.<ref>.npy    scikit-learn's own answers on those samples: label.npy
                      (int64, from predict), scores.npy / output.npy
                      (float32, from predict, decision_function or
                      predict_proba, arranged as the ONNX op lays them out).
and one manifest.json that lists each model, its input name, and for each
output the reference file it must match and the tolerance:
  |got - ref| <= atol + rtol * |ref|   (labels: exact).

No ONNX runtime is involved: the references come from scikit-learn only, so
a test comparing an executor's outputs with them checks the executor and
this script's translation of each model together.

Test samples are drawn so that no decision a label depends on is within
1e-3 of a tie, because float32 and float64 may legitimately disagree there.
"""

import json
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper
from sklearn.datasets import make_classification, make_regression
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge
from sklearn.preprocessing import Normalizer, StandardScaler
from sklearn.svm import SVC, SVR, LinearSVC, OneClassSVM

N_TEST = 16
MARGIN = 1e-3
ML = "ai.onnx.ml"


N_TRAIN = 240
N_POOL = 160  # candidates for the N_TEST test samples


def classification(n_classes, seed, labels=None, n_features=5):
    """(X_train, y_train, X_pool): one draw, split, so that the test
    candidates come from the training distribution. `labels` renames the
    classes 0..n_classes-1."""
    X, y = make_classification(
        n_samples=N_TRAIN + N_POOL, n_features=n_features,
        n_informative=n_features - 1, n_redundant=0, n_classes=n_classes,
        n_clusters_per_class=1, class_sep=1.2, random_state=seed)
    X = X.astype(np.float32).astype(np.float64)
    if labels is not None:
        y = np.asarray(labels)[y]
    return X[:N_TRAIN], y[:N_TRAIN], X[N_TRAIN:]


def regression(seed, n_targets=1, n_features=5):
    X, y = make_regression(n_samples=N_TRAIN + N_POOL,
                           n_features=n_features, n_targets=n_targets,
                           noise=0.5, random_state=seed)
    X = X.astype(np.float32).astype(np.float64)
    return X[:N_TRAIN], y[:N_TRAIN], X[N_TRAIN:]


def fit_classifier(est, margin_fn, n_classes, seed, labels=None):
    """(est, X_test): est fitted to classification(n_classes, seed, labels),
    and the test rows of its pool picked by margin_fn of its decision
    function (pick_test)."""
    X, y, pool = classification(n_classes, seed, labels)
    est.fit(X, y)
    return est, pick_test(pool, lambda A: margin_fn(est.decision_function(A)))


def pick_test(X, margin_fn):
    """The first N_TEST rows of X whose margin is >= MARGIN."""
    keep = np.nonzero(margin_fn(X) >= MARGIN)[0][:N_TEST]
    if len(keep) < N_TEST:
        raise RuntimeError("not enough well-separated test samples")
    return X[keep].astype(np.float32)


def top2_gap(scores):
    s = np.sort(np.atleast_2d(scores), axis=1)
    return s[:, -1] - s[:, -2]


def no_margin(X):
    return np.full(len(X), np.inf)


def abs_margin(decision):
    d = np.abs(np.asarray(decision))
    return d.reshape(len(d), -1).min(axis=1)


def graph(name, nodes, n_features, outputs):
    """A model with input X float [N, n_features] and the given outputs
    (list of (name, elem_type, shape))."""
    x = helper.make_tensor_value_info("X", TensorProto.FLOAT,
                                      ["N", n_features])
    outs = [helper.make_tensor_value_info(o, t, s) for o, t, s in outputs]
    g = helper.make_graph(nodes, name, [x], outs)
    m = helper.make_model(g, producer_name="tessera-sklearn-models",
                          opset_imports=[helper.make_opsetid("", 13),
                                         helper.make_opsetid(ML, 1)])
    onnx.checker.check_model(m)
    return m


def f32(a):
    return [float(v) for v in np.asarray(a, dtype=np.float64).ravel()]


def i64(a):
    return [int(v) for v in np.asarray(a).ravel()]


def classifier(name, nodes, Xt, labels, scores, tolerance):
    """(model, test input, references) of a classifier whose outputs are
    label int64 [N] (exact) and scores float [N, C] (within tolerance)."""
    outputs = [("label", TensorProto.INT64, ["N"]),
               ("scores", TensorProto.FLOAT, ["N", scores.shape[1]])]
    m = graph(name, nodes, Xt.shape[1], outputs)
    return m, Xt, {"label": ("label", labels, None),
                   "scores": ("scores", scores, tolerance)}


def regressor(name, nodes, Xt, output, tolerance):
    """(model, test input, references) of a model whose one output is
    float [N, T]."""
    output = np.asarray(output).reshape(len(Xt), -1)
    m = graph(name, nodes, Xt.shape[1],
              [("output", TensorProto.FLOAT, ["N", output.shape[1]])])
    return m, Xt, {"output": ("output", output, tolerance)}


# ---- node builders from fitted estimators -----------------------------------

def linear_classifier(coef, intercept, labels, post, out=("label", "scores"),
                      inp="X"):
    return helper.make_node(
        "LinearClassifier", [inp], list(out), domain=ML,
        coefficients=f32(coef), intercepts=f32(intercept),
        classlabels_ints=i64(labels), post_transform=post, multi_class=0)


def svm_kernel_attrs(est):
    """kernel_type and kernel_params of a fitted libsvm estimator."""
    return dict(kernel_type=est.kernel.upper(),
                kernel_params=[float(est._gamma), float(est.coef0),
                               float(est.degree)])


def svm_classifier(est, inp="X", with_proba=False):
    """SVMClassifier in libsvm's layout: sklearn's _dual_coef_ and
    _intercept_ are libsvm's sv_coef and -rho, before sklearn flips their
    sign for two classes."""
    attrs = svm_kernel_attrs(est)
    attrs.update(
        vectors_per_class=i64(est.n_support_),
        support_vectors=f32(est.support_vectors_),
        coefficients=f32(est._dual_coef_),
        rho=f32(est._intercept_),
        classlabels_ints=i64(est.classes_),
        post_transform="NONE")
    if with_proba:
        attrs.update(prob_a=f32(est._probA), prob_b=f32(est._probB))
    return helper.make_node("SVMClassifier", [inp], ["label", "scores"],
                            domain=ML, **attrs)


def svm_regressor(est, one_class=False):
    attrs = svm_kernel_attrs(est)
    attrs.update(n_supports=int(est.support_vectors_.shape[0]),
                 support_vectors=f32(est.support_vectors_),
                 coefficients=f32(est._dual_coef_),
                 rho=f32(est._intercept_), one_class=int(one_class),
                 post_transform="NONE")
    return helper.make_node("SVMRegressor", ["X"], ["output"], domain=ML,
                            **attrs)


# ---- the models -----------------------------------------------------------

def tol(rtol, atol):
    return {"rtol": rtol, "atol": atol}


def model_linear_regression():
    X, y, pool = regression(seed=1)
    est = LinearRegression().fit(X, y)
    Xt = pick_test(pool, no_margin)
    node = helper.make_node("LinearRegressor", ["X"], ["output"], domain=ML,
                            coefficients=f32(est.coef_),
                            intercepts=f32([est.intercept_]), targets=1)
    return regressor("linear_regression", [node], Xt, est.predict(Xt),
                     tol(1e-4, 1e-3))


def model_ridge_two_targets():
    X, y, pool = regression(seed=2, n_targets=2)
    est = Ridge(alpha=0.5).fit(X, y)
    Xt = pick_test(pool, no_margin)
    node = helper.make_node("LinearRegressor", ["X"], ["output"], domain=ML,
                            coefficients=f32(est.coef_),
                            intercepts=f32(est.intercept_), targets=2)
    return regressor("ridge_two_targets", [node], Xt, est.predict(Xt),
                     tol(1e-4, 1e-3))


def model_logreg_binary():
    """Two classes as skl2onnx writes them: rows [-w, w], LOGISTIC, so the
    scores are [1 - p, p] = predict_proba."""
    est, Xt = fit_classifier(LogisticRegression(), abs_margin,
                             2, seed=3, labels=[3, 7])
    w, b = est.coef_, est.intercept_
    node = linear_classifier(np.vstack([-w, w]), [-b[0], b[0]], est.classes_,
                             "LOGISTIC")
    return classifier("logreg_binary", [node], Xt, est.predict(Xt),
                      est.predict_proba(Xt), tol(1e-4, 1e-5))


def model_logreg_multinomial():
    est, Xt = fit_classifier(LogisticRegression(max_iter=500), top2_gap,
                             3, seed=4)
    node = linear_classifier(est.coef_, est.intercept_, est.classes_,
                             "SOFTMAX")
    return classifier("logreg_multinomial", [node], Xt, est.predict(Xt),
                      est.predict_proba(Xt), tol(1e-4, 1e-5))


def model_logreg_ovr():
    """One-vs-rest: LOGISTIC scores normalised to sum 1 by a Normalizer."""
    est, Xt = fit_classifier(
        LogisticRegression(multi_class="ovr", max_iter=500), top2_gap,
        4, seed=5, labels=[1, 2, 4, 8])
    nodes = [linear_classifier(est.coef_, est.intercept_, est.classes_,
                               "LOGISTIC", out=("label", "raw_probs")),
             helper.make_node("Normalizer", ["raw_probs"], ["scores"],
                              domain=ML, norm="L1")]
    return classifier("logreg_ovr", nodes, Xt, est.predict(Xt),
                      est.predict_proba(Xt), tol(1e-4, 1e-5))


def model_linear_svc_binary():
    """One coefficient row and two labels: scores [1 - d, d]."""
    est, Xt = fit_classifier(LinearSVC(max_iter=20000), abs_margin,
                             2, seed=6)
    node = linear_classifier(est.coef_, est.intercept_, est.classes_, "NONE")
    d = est.decision_function(Xt)
    return classifier("linear_svc_binary", [node], Xt, est.predict(Xt),
                      np.c_[1 - d, d], tol(1e-4, 1e-4))


def model_linear_svc_multi():
    est, Xt = fit_classifier(LinearSVC(max_iter=20000), top2_gap,
                             4, seed=7, labels=[-3, 0, 5, 11])
    node = linear_classifier(est.coef_, est.intercept_, est.classes_, "NONE")
    return classifier("linear_svc_multi", [node], Xt, est.predict(Xt),
                      est.decision_function(Xt), tol(1e-4, 1e-4))


def model_linear_svc_svm_op():
    """LinearSVC without intercept as an SVMClassifier with no support
    vectors: coefficients are the [classes, features] weights, rho = [0]."""
    est, Xt = fit_classifier(
        LinearSVC(fit_intercept=False, max_iter=20000), top2_gap,
        3, seed=8, labels=[4, 5, 6])
    node = helper.make_node("SVMClassifier", ["X"], ["label", "scores"],
                            domain=ML, kernel_type="LINEAR",
                            coefficients=f32(est.coef_), rho=[0.0],
                            classlabels_ints=i64(est.classes_),
                            post_transform="NONE")
    return classifier("linear_svc_svm_op", [node], Xt, est.predict(Xt),
                      est.decision_function(Xt), tol(1e-4, 1e-4))


SVM_KERNELS = {
    "linear": {},
    "poly": {"degree": 3, "coef0": 1.0},
    "rbf": {},
    "sigmoid": {"coef0": 0.0, "gamma": 0.05},
}


def make_svr(kernel):
    def build():
        X, y, pool = regression(seed=20)
        y = y / np.std(y)
        est = SVR(kernel=kernel, C=2.0, epsilon=0.05,
                  **SVM_KERNELS[kernel]).fit(X, y)
        Xt = pick_test(pool, no_margin)
        return regressor("svr_" + kernel, [svm_regressor(est)], Xt,
                         est.predict(Xt), tol(1e-4, 1e-4))
    return build


def make_svc(kernel, n_classes):
    def build():
        est, Xt = fit_classifier(
            SVC(kernel=kernel, C=1.0, decision_function_shape="ovo",
                **SVM_KERNELS[kernel]), abs_margin,
            n_classes, seed=30 + n_classes, labels=[2, 5, 9][:n_classes])
        node = svm_classifier(est)
        d = est.decision_function(Xt)
        # Two classes: libsvm's decision value is -d; the op scores
        # [-(-d), -d]. More: one decision value per class pair.
        scores = np.c_[d, -d] if n_classes == 2 else d
        name = "svc_%s_%s" % (kernel, "binary" if n_classes == 2 else "multi")
        return classifier(name, [node], Xt, est.predict(Xt),
                          scores, tol(1e-4, 2e-4))
    return build


def make_svc_proba(kernel, n_classes):
    """Platt scaling and pairwise coupling: scores = predict_proba. libsvm
    couples in float64 and the op in float32, both running the same
    iteration to the same stopping rule."""
    def build():
        est, Xt = fit_classifier(
            SVC(kernel=kernel, probability=True, random_state=0,
                decision_function_shape="ovo", **SVM_KERNELS[kernel]),
            abs_margin, n_classes, seed=40 + n_classes,
            labels=[1, 3, 6][:n_classes])
        node = svm_classifier(est, with_proba=True)
        name = "svc_%s_proba_%s" % (kernel, "binary" if n_classes == 2
                                    else "multi")
        return classifier(name, [node], Xt, est.predict(Xt),
                          est.predict_proba(Xt), tol(1e-4, 1e-4))
    return build


def model_scaled_svc():
    """StandardScaler + Normalizer(l2) in front of an RBF SVC: Scaler and
    Normalizer nodes feeding SVMClassifier."""
    X, y, Xc = classification(3, seed=50)
    X = X * np.array([1.0, 10.0, 0.1, 3.0, 1.0]) + np.array([5, -2, 0, 1, 0])
    sc = StandardScaler().fit(X)
    nm = Normalizer(norm="l2")
    Z = nm.transform(sc.transform(X))
    est = SVC(kernel="rbf", decision_function_shape="ovo").fit(Z, y)
    Xc = Xc * np.array([1.0, 10.0, 0.1, 3.0, 1.0]) + np.array([5, -2, 0, 1, 0])

    def pipeline(A):
        return nm.transform(sc.transform(A))

    Xt = pick_test(Xc, lambda A: abs_margin(est.decision_function(
        pipeline(A))))
    nodes = [helper.make_node("Scaler", ["X"], ["scaled"], domain=ML,
                              offset=f32(sc.mean_), scale=f32(1 / sc.scale_)),
             helper.make_node("Normalizer", ["scaled"], ["normed"],
                              domain=ML, norm="L2"),
             svm_classifier(est, inp="normed")]
    Zt = pipeline(Xt.astype(np.float64))
    return classifier("scaled_svc", nodes, Xt, est.predict(Zt),
                      est.decision_function(Zt), tol(1e-4, 1e-4))


def model_one_class_svm():
    X, _, pool = classification(2, seed=60)
    est = OneClassSVM(kernel="rbf", nu=0.2, gamma=0.1).fit(X)
    Xc = pool * 1.5
    Xt = pick_test(Xc, lambda A: abs_margin(est.decision_function(A)))
    return regressor("one_class_svm", [svm_regressor(est, one_class=True)],
                     Xt, est.predict(Xt), tol(0, 0))


MODELS = [
    ("linear_regression", model_linear_regression),
    ("ridge_two_targets", model_ridge_two_targets),
    ("logreg_binary", model_logreg_binary),
    ("logreg_multinomial", model_logreg_multinomial),
    ("logreg_ovr", model_logreg_ovr),
    ("linear_svc_binary", model_linear_svc_binary),
    ("linear_svc_multi", model_linear_svc_multi),
    ("linear_svc_svm_op", model_linear_svc_svm_op),
] + [("svr_" + k, make_svr(k)) for k in SVM_KERNELS] + [
    ("svc_%s_multi" % k, make_svc(k, 3)) for k in SVM_KERNELS] + [
    ("svc_rbf_binary", make_svc("rbf", 2)),
    ("svc_poly_binary", make_svc("poly", 2)),
    ("svc_rbf_proba_multi", make_svc_proba("rbf", 3)),
    ("svc_linear_proba_binary", make_svc_proba("linear", 2)),
    ("scaled_svc", model_scaled_svc),
    ("one_class_svm", model_one_class_svm),
]


def write(outdir):
    os.makedirs(outdir, exist_ok=True)
    manifest = {"tolerance": "|got - ref| <= atol + rtol * |ref|; labels "
                             "exact",
                "models": []}
    for name, build in MODELS:
        model, Xt, refs = build()
        onnx.save(model, os.path.join(outdir, name + ".onnx"))
        np.save(os.path.join(outdir, name + ".input.npy"),
                np.ascontiguousarray(Xt, dtype=np.float32))
        entry = {"name": name, "file": name + ".onnx", "input": "X",
                 "input_file": name + ".input.npy", "outputs": []}
        for ref_name, (out_name, value, tolerance) in refs.items():
            is_label = tolerance is None
            arr = np.ascontiguousarray(
                value, dtype=np.int64 if is_label else np.float32)
            fname = "%s.%s.npy" % (name, ref_name)
            np.save(os.path.join(outdir, fname), arr)
            o = {"name": out_name, "reference": fname,
                 "dtype": "int64" if is_label else "float32",
                 "shape": list(arr.shape)}
            if is_label:
                o["exact"] = True
            else:
                o.update(tolerance)
            entry["outputs"].append(o)
        manifest["models"].append(entry)
    with open(os.path.join(outdir, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    return manifest


def main(argv):
    if len(argv) != 2:
        sys.stderr.write("usage: %s OUTDIR\n" % argv[0])
        return 2
    manifest = write(argv[1])
    print("wrote %d models to %s" % (len(manifest["models"]), argv[1]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
