/*
 * ml_svm.c - SVMRegressor and SVMClassifier (ai.onnx.ml; list in
 * list_ml.h, semantics and invariants in ml_int.h).
 */
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "list_ml.h"
#include "ml_int.h"

/* ---- SVMRegressor and SVMClassifier -------------------------------------- */

typedef struct svm_params {
  svm_kernel kernel;
  float gamma, coef0, degree;
  int int_degree;    /* degree when it is an integer in [0, 8] (multiplied
                        out, several times faster than powf); else -1 */
  bool linear_mode;  /* no support vectors: coef is a weight matrix */
  int64_t n_vectors; /* support vectors (0 in linear mode) */
  int64_t features;
  const float *vectors; /* [n_vectors, features] */
  float *vector_norms;  /* RBF: squared norm of each support vector */
  const float *coef;    /* SVC: [classes - 1, n_vectors]; regressor:
                           [n_vectors]; linear: [classes, features] */
  const float *rho;     /* SVC: one per class pair; else rho[0] */
  /* classifier only */
  int64_t classes;
  const int64_t *labels;    /* [classes] */
  const int64_t *per_class; /* vectors_per_class: [classes] */
  int64_t *first_vector;    /* [classes]: index of each class's first vector */
  const float *prob_a, *prob_b; /* one per class pair, or NULL */
  bool weights_all_positive; /* every coefficient >= 0 (linear binary rule) */
  int64_t score_cols;
  post_transform post;
  bool one_class; /* regressor: output sign(score) as +-1 */
} svm_params;

/* Parses kernel_type and kernel_params ([gamma, coef0, degree]). */
static int parse_svm_kernel(ts_node *n, svm_params *p, ts_err *err) {
  int kernel;
  const float *kp;
  size_t n_kp;
  int rc =
      ts_ml_get_enum(n, "kernel_type", kernel_names, KERNEL_COUNT,
                     (1u << KERNEL_COUNT) - 1, KERNEL_LINEAR, &kernel, err);
  if (!rc) rc = ts_ml_get_floats(n, "kernel_params", false, &kp, &n_kp, err);
  if (rc) return rc;
  if (kp && n_kp != 3)
    return ts_kernel_fail(
        n, err, TS_EINVAL,
        "attribute 'kernel_params' holds %zu values; it must be "
        "[gamma, coef0, degree]",
        n_kp);
  p->kernel = (svm_kernel)kernel;
  if (kp) {
    p->gamma = kp[0];
    p->coef0 = kp[1];
    p->degree = kp[2];
  }
  bool small_int =
      p->degree >= 0 && p->degree <= 8 && p->degree == (float)(int)p->degree;
  p->int_degree = small_int ? (int)p->degree : -1;
  return TS_OK;
}

/* Support vectors: n_sv values for `vectors` vectors of equal length. */
static int parse_support_vectors(ts_node *n, svm_params *p, int64_t vectors,
                                 ts_err *err) {
  size_t n_sv;
  int rc =
      ts_ml_get_floats(n, "support_vectors", false, &p->vectors, &n_sv, err);
  if (rc) return rc;
  if (vectors == 0) {
    if (n_sv != 0)
      return ts_kernel_fail(
          n, err, TS_EINVAL,
          "attribute 'support_vectors' holds %zu values but the "
          "model declares no support vectors",
          n_sv);
    return TS_OK;
  }
  if (n_sv == 0 || n_sv % (size_t)vectors != 0)
    return ts_kernel_fail(n, err, TS_EINVAL,
                          "attribute 'support_vectors' holds %zu values, not a "
                          "positive multiple of the %lld support vectors",
                          n_sv, (long long)vectors);
  p->n_vectors = vectors;
  p->features = (int64_t)(n_sv / (size_t)vectors);
  return TS_OK;
}

/* Moves p into one malloc block with room for the RBF norms and the per-class
 * first-vector table, fills them, and stores it in n->params. */
static int svm_params_store(ts_node *n, const svm_params *p, ts_err *err) {
  size_t norms = p->kernel == KERNEL_RBF ? (size_t)p->n_vectors : 0;
  size_t firsts = p->per_class ? (size_t)p->classes : 0;
  void *tail = NULL;
  int rc = ts_ml_params_store(n, p, sizeof *p,
                              norms * sizeof(float) + firsts * sizeof(int64_t),
                              &tail, err);
  if (rc) return rc;
  svm_params *dst = n->params;
  dst->first_vector = firsts ? tail : NULL;
  dst->vector_norms = norms ? (float *)((int64_t *)tail + firsts) : NULL;
  for (size_t c = 0, first = 0; c < firsts; c++) {
    dst->first_vector[c] = (int64_t)first;
    first += (size_t)p->per_class[c];
  }
  for (size_t v = 0; v < norms; v++) {
    const float *s = p->vectors + v * (size_t)p->features;
    float sum = 0;
    for (int64_t k = 0; k < p->features; k++) sum += s[k] * s[k];
    dst->vector_norms[v] = sum;
  }
  return TS_OK;
}

/* Rows of the kernel matrix processed at once: bounds scratch to ~256 KiB
 * of kernel values whatever the batch size. */
static int64_t svm_block_rows(const svm_params *p) {
  int64_t b = (64 * 1024) / (p->n_vectors > 0 ? p->n_vectors : 1);
  return b < 1 ? 1 : b;
}

/* k[rows, n_vectors] = kernel(x_i, sv_j) for `rows` samples. RBF expands
 * |x - s|^2 = |x|^2 + |s|^2 - 2 x.s so that every kernel is one sgemm. */
static void svm_kernel_rows(const svm_params *p, const float *x, int64_t rows,
                            float *k) {
  int64_t v = p->n_vectors, f = p->features;
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)rows, (int)v,
              (int)f, 1.0f, x, (int)f, p->vectors, (int)f, 0.0f, k, (int)v);
  if (p->kernel == KERNEL_LINEAR) return;
  for (int64_t i = 0; i < rows; i++) {
    float *ki = k + i * v;
    const float *xi = x + i * f;
    switch (p->kernel) {
      case KERNEL_POLY:
        for (int64_t j = 0; j < v; j++) {
          float b = p->gamma * ki[j] + p->coef0, y = 1;
          if (p->int_degree < 0) {
            y = powf(b, p->degree);
          } else {
            for (int d = 0; d < p->int_degree; d++) y *= b;
          }
          ki[j] = y;
        }
        break;
      case KERNEL_SIGMOID:
        for (int64_t j = 0; j < v; j++)
          ki[j] = tanhf(p->gamma * ki[j] + p->coef0);
        break;
      case KERNEL_RBF: {
        float xx = 0;
        for (int64_t c = 0; c < f; c++) xx += xi[c] * xi[c];
        for (int64_t j = 0; j < v; j++) {
          float d = xx + p->vector_norms[j] - 2.0f * ki[j];
          ki[j] = expf(-p->gamma * (d > 0 ? d : 0));
        }
        break;
      }
      default:
        break;
    }
  }
}

static const char *const svm_regressor_attrs[] = {
    "kernel_type", "kernel_params", "support_vectors", "coefficients",
    "rho",         "n_supports",    "one_class",       "post_transform",
    NULL};

/* SVMRegressor: y = sum_j coef_j K(x, sv_j) + rho[0]; with n_supports == 0
 * the coefficients are one weight vector (y = w.x + rho[0]). onnxruntime
 * ignores post_transform here, so anything but NONE is rejected. */
static int svm_regressor_prepare(ts_node *n, const ts_graph *g, ts_err *err) {
  (void)g;
  int rc = ts_node_check_attrs(n, svm_regressor_attrs, err);
  if (rc) return rc;
  svm_params p = {0};
  int64_t n_supports, one_class;
  size_t n_coef, n_rho;
  if ((rc = parse_svm_kernel(n, &p, err)) ||
      (rc = ts_ml_get_int(n, "n_supports", 0, &n_supports, err)) ||
      (rc = ts_ml_get_int(n, "one_class", 0, &one_class, err)) ||
      (rc = ts_ml_get_floats(n, "coefficients", true, &p.coef, &n_coef, err)) ||
      (rc = ts_ml_get_floats(n, "rho", true, &p.rho, &n_rho, err)) ||
      (rc = ts_ml_get_post(n, POST_BIT(POST_NONE), &p.post, err)))
    return rc;
  if (n_supports < 0)
    return ts_kernel_fail(n, err, TS_EINVAL,
                          "attribute 'n_supports' = %lld is negative",
                          (long long)n_supports);
  if ((rc = parse_support_vectors(n, &p, n_supports, err))) return rc;
  if (n_rho != 1)
    return ts_kernel_fail(n, err, TS_EINVAL,
                          "attribute 'rho' holds %zu values; a regressor has 1",
                          n_rho);
  if (n_supports > 0 && n_coef != (size_t)n_supports)
    return ts_kernel_fail(n, err, TS_EINVAL,
                          "attribute 'coefficients' holds %zu values but "
                          "'n_supports' is %lld",
                          n_coef, (long long)n_supports);
  if (n_supports == 0) {
    if (n_coef == 0)
      return ts_kernel_fail(n, err, TS_EINVAL,
                            "attribute 'coefficients' is empty");
    p.linear_mode = true;
    p.kernel = KERNEL_LINEAR;
    p.features = (int64_t)n_coef;
  }
  p.one_class = one_class != 0;
  return svm_params_store(n, &p, err);
}

static int svm_regressor_infer(const ts_node *n, const ts_tensor *const *in,
                               ts_tensor *out, ts_err *err) {
  const svm_params *p = n->params;
  return ts_ml_infer_regressor(n, in[0], p->features, 1, out, err);
}

static int svm_regressor_run(const ts_node *n, const ts_tensor *const *in,
                             ts_tensor *out, ts_kctx *ctx, ts_err *err) {
  const svm_params *p = n->params;
  const float *x;
  int64_t rows;
  int rc = ts_ml_input_floats(n, in[0], ctx, &x, &rows, err);
  if (rc) return rc;
  float *y = out[0].data;
  if (p->linear_mode) {
    ts_ml_gemm_xwt(x, p->coef, rows, 1, p->features, NULL, p->rho[0], y);
  } else {
    int64_t block = svm_block_rows(p);
    if (block > rows) block = rows;
    float *k = ts_ml_scratch_or_fail(
        n, ctx, (size_t)(block * p->n_vectors) * sizeof *k, err);
    if (!k) return err->code;
    for (int64_t r0 = 0; r0 < rows; r0 += block) {
      int64_t b = rows - r0 < block ? rows - r0 : block;
      svm_kernel_rows(p, x + r0 * p->features, b, k);
      for (int64_t i = 0; i < b; i++) y[r0 + i] = p->rho[0];
      cblas_sgemv(CblasRowMajor, CblasNoTrans, (int)b, (int)p->n_vectors, 1.0f,
                  k, (int)p->n_vectors, p->coef, 1, 1.0f, y + r0, 1);
    }
  }
  if (p->one_class)
    for (int64_t i = 0; i < rows; i++) y[i] = y[i] > 0 ? 1.0f : -1.0f;
  return TS_OK;
}

static const char *const svm_classifier_attrs[] = {
    "kernel_type",  "kernel_params", "vectors_per_class", "support_vectors",
    "coefficients", "rho",           "classlabels_ints",  "classlabels_strings",
    "prob_a",       "prob_b",        "post_transform",    NULL};

/* Checks the SVC-mode sizes: coefficients [classes - 1, vectors], one rho
 * (and prob_a, prob_b when given) per class pair. */
static int check_svc_sizes(ts_node *n, const svm_params *p, size_t n_coef,
                           size_t n_rho, size_t n_prob, ts_err *err) {
  size_t pairs = (size_t)(p->classes * (p->classes - 1) / 2);
  if (n_coef != (size_t)((p->classes - 1) * p->n_vectors))
    return ts_kernel_fail(
        n, err, TS_EINVAL,
        "attribute 'coefficients' holds %zu values but (classes "
        "- 1) x support vectors = %lld x %lld",
        n_coef, (long long)(p->classes - 1), (long long)p->n_vectors);
  if (n_rho != pairs)
    return ts_kernel_fail(
        n, err, TS_EINVAL,
        "attribute 'rho' holds %zu values but %lld classes make "
        "%zu pairs",
        n_rho, (long long)p->classes, pairs);
  if (p->prob_a && n_prob != pairs)
    return ts_kernel_fail(
        n, err, TS_EINVAL,
        "attributes 'prob_a' and 'prob_b' hold %zu values but "
        "%lld classes make %zu pairs",
        n_prob, (long long)p->classes, pairs);
  return TS_OK;
}

/* SVMClassifier. With vectors_per_class (SVC mode): one-vs-one over the
 * support vectors, libsvm's layout. Without (linear mode): coefficients are
 * a [classes, features] weight matrix and rho[0] is added to every score. */
static int svm_classifier_prepare(ts_node *n, const ts_graph *g, ts_err *err) {
  (void)g;
  int rc = ts_node_check_attrs(n, svm_classifier_attrs, err);
  if (rc) return rc;
  svm_params p = {0};
  size_t n_labels, n_per_class, n_coef, n_rho, n_pa, n_pb;
  if ((rc = parse_svm_kernel(n, &p, err)) ||
      (rc = ts_ml_get_labels(n, &p.labels, &n_labels, err)) ||
      (rc = ts_ml_get_ints(n, "vectors_per_class", false, &p.per_class,
                           &n_per_class, err)) ||
      (rc = ts_ml_get_floats(n, "coefficients", true, &p.coef, &n_coef, err)) ||
      (rc = ts_ml_get_floats(n, "rho", true, &p.rho, &n_rho, err)) ||
      (rc = ts_ml_get_floats(n, "prob_a", false, &p.prob_a, &n_pa, err)) ||
      (rc = ts_ml_get_floats(n, "prob_b", false, &p.prob_b, &n_pb, err)))
    return rc;
  if (!p.labels)
    return ts_kernel_fail(n, err, TS_EINVAL,
                          "attribute 'classlabels_ints' is required");
  if (n_labels < 2)
    return ts_kernel_fail(n, err, TS_EINVAL,
                          "attribute 'classlabels_ints' holds %zu labels; a "
                          "classifier needs at least 2",
                          n_labels);
  if (n_labels > 65535)
    return ts_kernel_fail(
        n, err, TS_EUNSUPPORTED,
        "attribute 'classlabels_ints' holds %zu labels; at most "
        "65535 are supported",
        n_labels);
  p.classes = (int64_t)n_labels;
  if ((p.prob_a == NULL) != (p.prob_b == NULL) || n_pa != n_pb)
    return ts_kernel_fail(n, err, TS_EINVAL,
                          "attributes 'prob_a' (%zu values) and 'prob_b' (%zu "
                          "values) must be given together, of equal length",
                          n_pa, n_pb);

  int64_t vectors = 0;
  if (p.per_class && n_per_class != n_labels)
    return ts_kernel_fail(n, err, TS_EINVAL,
                          "attribute 'vectors_per_class' holds %zu counts but "
                          "there are %zu classes",
                          n_per_class, n_labels);
  for (size_t c = 0; c < n_per_class; c++) {
    if (p.per_class[c] < 0 || p.per_class[c] > INT32_MAX - vectors)
      return ts_kernel_fail(
          n, err, TS_EINVAL,
          "attribute 'vectors_per_class' has a bad count %lld "
          "for class %zu",
          (long long)p.per_class[c], c);
    vectors += p.per_class[c];
  }
  if ((rc = parse_support_vectors(n, &p, vectors, err))) return rc;

  unsigned allowed = ALL_POST;
  if (vectors > 0) {
    if ((rc = check_svc_sizes(n, &p, n_coef, n_rho, n_pa, err))) return rc;
    /* Binary SVC without probabilities scores [-d, d]; onnxruntime does not
     * apply a transform to it, so only NONE has one meaning. */
    if (p.classes == 2 && !p.prob_a) allowed = POST_BIT(POST_NONE);
    p.score_cols = p.prob_a
                       ? p.classes
                       : (p.classes > 2 ? p.classes * (p.classes - 1) / 2 : 2);
  } else {
    p.per_class = NULL;
    p.linear_mode = true;
    p.kernel = KERNEL_LINEAR;
    if (n_coef == 0 || n_coef % n_labels != 0)
      return ts_kernel_fail(n, err, TS_EINVAL,
                            "attribute 'coefficients' holds %zu values, not a "
                            "positive multiple of the %zu classes (linear SVM "
                            "without support vectors)",
                            n_coef, n_labels);
    if (n_rho != 1)
      return ts_kernel_fail(n, err, TS_EINVAL,
                            "attribute 'rho' holds %zu values; a linear SVM "
                            "without support vectors has 1",
                            n_rho);
    if (p.prob_a)
      return ts_kernel_fail(
          n, err, TS_EUNSUPPORTED,
          "attributes 'prob_a'/'prob_b' are not supported for a "
          "linear SVM without support vectors");
    p.features = (int64_t)(n_coef / n_labels);
    p.score_cols = p.classes;
  }
  if ((rc = ts_ml_get_post(n, allowed, &p.post, err))) return rc;
  p.weights_all_positive = true;
  for (size_t i = 0; i < n_coef; i++)
    if (!(p.coef[i] >= 0)) p.weights_all_positive = false;
  return svm_params_store(n, &p, err);
}

static int svm_classifier_infer(const ts_node *n, const ts_tensor *const *in,
                                ts_tensor *out, ts_err *err) {
  const svm_params *p = n->params;
  return ts_ml_infer_classifier(n, in[0], p->features, p->score_cols, out, err);
}

/* Pairwise coupling of r (classes x classes, r[i][j] = P(i | i or j)) into
 * class probabilities p, by Wu, Lin and Weng's method 2 as libsvm's
 * multiclass_probability does it, in float as onnxruntime does. q and qp are
 * work buffers of classes^2 and classes floats. */
static void couple_pairwise(int64_t k, const float *r, float *p, float *q,
                            float *qp) {
  for (int64_t i = 0; i < k; i++) {
    p[i] = 1.0f / (float)k;
    q[i * k + i] = 0;
    for (int64_t j = 0; j < i; j++) {
      q[i * k + i] += r[j * k + i] * r[j * k + i];
      q[i * k + j] = q[j * k + i];
    }
    for (int64_t j = i + 1; j < k; j++) {
      q[i * k + i] += r[j * k + i] * r[j * k + i];
      q[i * k + j] = -r[j * k + i] * r[i * k + j];
    }
  }
  float eps = 0.005f / (float)k;
  int64_t max_iter = k > 100 ? k : 100;
  for (int64_t iter = 0; iter < max_iter; iter++) {
    float pqp = 0;
    for (int64_t i = 0; i < k; i++) {
      qp[i] = 0;
      for (int64_t j = 0; j < k; j++) qp[i] += q[i * k + j] * p[j];
      pqp += p[i] * qp[i];
    }
    float max_error = 0;
    for (int64_t i = 0; i < k; i++) {
      float e = fabsf(qp[i] - pqp);
      if (e > max_error) max_error = e;
    }
    if (max_error < eps) break;
    for (int64_t t = 0; t < k; t++) {
      float diff = (-qp[t] + pqp) / q[t * k + t];
      p[t] += diff;
      pqp = (pqp + diff * (diff * q[t * k + t] + 2 * qp[t])) / (1 + diff) /
            (1 + diff);
      for (int64_t j = 0; j < k; j++) {
        qp[j] = (qp[j] + diff * q[t * k + j]) / (1 + diff);
        p[j] /= (1 + diff);
      }
    }
  }
}

/* Platt's sigmoid as libsvm evaluates it: 1 / (1 + e^(d*A + B)). */
static float platt(float decision, float a, float b) {
  float f = decision * a + b;
  return f >= 0 ? expf(-f) / (1.0f + expf(-f)) : 1.0f / (1.0f + expf(f));
}

/* Per-row work buffers of the SVC path. */
typedef struct svc_work {
  float *pairs;      /* [pairs] decision values */
  int64_t *votes;    /* [classes] */
  float *r, *q, *qp; /* coupling: [classes^2], [classes^2], [classes] */
} svc_work;

/* Decision values, votes and label of one sample from its kernel row ki;
 * writes its scores row z (may be NULL). */
static int64_t svc_one(const svm_params *p, const float *ki, svc_work *w,
                       float *z) {
  int64_t c = p->classes, v = p->n_vectors;
  memset(w->votes, 0, (size_t)c * sizeof *w->votes);
  int64_t pair = 0;
  for (int64_t i = 0; i < c; i++) {
    for (int64_t j = i + 1; j < c; j++, pair++) {
      /* libsvm layout: class i's vectors use coefficient row j - 1, class
       * j's vectors row i. */
      const float *ci = p->coef + (j - 1) * v + p->first_vector[i];
      const float *cj = p->coef + i * v + p->first_vector[j];
      const float *ki_i = ki + p->first_vector[i];
      const float *ki_j = ki + p->first_vector[j];
      double sum = 0;
      for (int64_t m = 0; m < p->per_class[i]; m++)
        sum += (double)(ci[m] * ki_i[m]);
      for (int64_t m = 0; m < p->per_class[j]; m++)
        sum += (double)(cj[m] * ki_j[m]);
      sum += p->rho[pair];
      w->pairs[pair] = (float)sum;
      w->votes[sum > 0 ? i : j]++;
    }
  }
  int64_t best = 0;
  for (int64_t i = 1; i < c; i++)
    if (w->votes[i] > w->votes[best]) best = i;
  if (!z) return p->labels[best];

  if (p->prob_a) {
    pair = 0;
    for (int64_t i = 0; i < c; i++) {
      for (int64_t j = i + 1; j < c; j++, pair++) {
        float s = platt(w->pairs[pair], p->prob_a[pair], p->prob_b[pair]);
        s = s < 1e-7f ? 1e-7f : (s > 1 - 1e-7f ? 1 - 1e-7f : s);
        w->r[i * c + j] = s;
        w->r[j * c + i] = 1 - s;
      }
    }
    couple_pairwise(c, w->r, z, w->q, w->qp);
  } else if (c == 2) {
    z[0] = -w->pairs[0];
    z[1] = w->pairs[0];
  } else {
    memcpy(z, w->pairs, (size_t)(c * (c - 1) / 2) * sizeof *z);
  }
  return p->labels[best];
}

static int svc_run(const ts_node *n, const svm_params *p, const float *x,
                   int64_t rows, int64_t *y, float *z, ts_kctx *ctx,
                   ts_err *err) {
  int64_t c = p->classes;
  int64_t block = svm_block_rows(p);
  if (block > rows) block = rows;
  svc_work w = {0};
  float *k = ts_ml_scratch_or_fail(
      n, ctx, (size_t)(block * p->n_vectors) * sizeof *k, err);
  if (k)
    w.pairs =
        ts_ml_scratch_or_fail(n, ctx, (size_t)(c * c) * sizeof(float), err);
  if (w.pairs)
    w.votes = ts_ml_scratch_or_fail(n, ctx, (size_t)c * sizeof(int64_t), err);
  if (w.votes && p->prob_a) {
    w.r = ts_ml_scratch_or_fail(n, ctx, (size_t)(2 * c * c + c) * sizeof(float),
                                err);
    if (w.r) {
      w.q = w.r + c * c;
      w.qp = w.q + c * c;
    }
  }
  if (!w.votes || (p->prob_a && !w.r)) return err->code;
  for (int64_t r0 = 0; r0 < rows; r0 += block) {
    int64_t b = rows - r0 < block ? rows - r0 : block;
    svm_kernel_rows(p, x + r0 * p->features, b, k);
    for (int64_t i = 0; i < b; i++) {
      float *zi = z ? z + (r0 + i) * p->score_cols : NULL;
      int64_t label = svc_one(p, k + i * p->n_vectors, &w, zi);
      if (y) y[r0 + i] = label;
    }
  }
  if (z) ts_ml_apply_post(p->post, z, rows, p->score_cols);
  return TS_OK;
}

/* onnxruntime's label rule for a two-class linear SVM without probabilities:
 * the second label when the top score passes 0.5 (all weights >= 0) or 0
 * (mixed weights), else the label of the top score. */
static int64_t linear_svm_binary_label(const svm_params *p, const float *s) {
  int64_t best = ts_ml_argmax_first(s, 2);
  float top = s[best];
  if (p->weights_all_positive ? top >= 0.5f : top > 0) return p->labels[1];
  return p->labels[best];
}

static int svm_classifier_run(const ts_node *n, const ts_tensor *const *in,
                              ts_tensor *out, ts_kctx *ctx, ts_err *err) {
  const svm_params *p = n->params;
  const float *x;
  int64_t rows;
  int rc = ts_ml_input_floats(n, in[0], ctx, &x, &rows, err);
  if (rc) return rc;
  int64_t *y = out[0].data;
  float *z = n->n_outputs > 1 ? out[1].data : NULL;
  if (rows == 0) return TS_OK;
  if (!p->linear_mode) return svc_run(n, p, x, rows, y, z, ctx, err);

  float *s = z;
  if (!s) {
    s = ts_ml_scratch_or_fail(n, ctx, (size_t)(rows * p->classes) * sizeof *s,
                              err);
    if (!s) return err->code;
  }
  ts_ml_gemm_xwt(x, p->coef, rows, p->classes, p->features, NULL, p->rho[0], s);
  for (int64_t i = 0; y && i < rows; i++) {
    const float *si = s + i * p->classes;
    y[i] = p->classes == 2 ? linear_svm_binary_label(p, si)
                           : p->labels[ts_ml_argmax_first(si, p->classes)];
  }
  if (z) ts_ml_apply_post(p->post, z, rows, p->classes);
  return TS_OK;
}

/* ---- the op table's rows ------------------------------------------------- */

ML_OP(ml_svm_regressor, "SVMRegressor", 1, svm_regressor_prepare,
      svm_regressor_infer, svm_regressor_run);
ML_OP(ml_svm_classifier, "SVMClassifier", 2, svm_classifier_prepare,
      svm_classifier_infer, svm_classifier_run);
