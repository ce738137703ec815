/*
 * batch_norm.c - BatchNormalization, inference only (list in list_cnn.h;
 * invariants in cnn_int.h). With constant parameters prepare folds them into
 * one scale and shift per channel; the loader usually folds the op into the
 * Conv before it (graph.c), so this kernel runs where it could not.
 */
#include <math.h>
#include <stdlib.h>

#include "cnn_int.h"

/* ------------------------------------------------------------------------ */
/* BatchNormalization (inference)                                           */
/* ------------------------------------------------------------------------ */

/* Parameters; scale/shift (channels floats each, in the same block) are set
 * when prepare found scale, B, mean and var constant, NULL otherwise. */
typedef struct bn_params {
  float epsilon;
  int64_t channels;
  float *scale, *shift;
} bn_params;

static const char *const bn_roles[] = {"X", "scale", "B", "input_mean",
                                       "input_var"};

/* Checks the four per-channel inputs against `channels` (negative: not
 * known, any length). */
static int bn_check_params(const ts_node *n, const ts_tensor *const *p,
                           int64_t channels, ts_err *err) {
  for (int i = 1; i < 5; i++) {
    int rc = ts_cnn_check_float(n, p[i], i, bn_roles[i], err);
    if (rc < 0) return rc;
    if (p[i]->rank != 1 ||
        (channels >= 0 && p[i]->dims[0] >= 0 && p[i]->dims[0] != channels))
      return ts_kernel_fail(
          n, err, TS_EINVAL,
          "input %s ('%s') must have shape [%lld] (the channels of X)",
          bn_roles[i], ts_cnn_input_name(n, i), (long long)channels);
  }
  return 0;
}

/* y = x * scale + shift per channel, folded from the inference formula
 * y = (x - mean) / sqrt(var + eps) * gamma + beta, in double. */
static void bn_fold(const ts_tensor *const *p, float eps, int64_t channels,
                    float *scale, float *shift) {
  const float *gamma = p[1]->data, *beta = p[2]->data, *mean = p[3]->data,
              *var = p[4]->data;
  for (int64_t c = 0; c < channels; c++) {
    const double s = (double)gamma[c] / sqrt((double)var[c] + (double)eps);
    scale[c] = (float)s;
    shift[c] = (float)((double)beta[c] - (double)mean[c] * s);
  }
}

static int bn_prepare(ts_node *n, const ts_graph *g, ts_err *err) {
  static const ts_attr_spec known[] = {{"epsilon", ATTR_FLOAT},
                                       {"momentum", ATTR_FLOAT},
                                       {"training_mode", ATTR_INT},
                                       {"spatial", ATTR_INT},
                                       {"is_test", ATTR_INT},
                                       {"consumed_inputs", ATTR_INTS},
                                       {NULL}};
  int rc = ts_kernel_check_attrs(n, known, err);
  if (rc < 0) return rc;
  if (ts_attr_int(n, "training_mode", 0) != 0)
    return ts_kernel_fail(
        n, err, TS_EUNSUPPORTED,
        "attribute 'training_mode' = 1 is not supported (inference "
        "only)");
  if (ts_attr_int(n, "spatial", 1) != 1)
    return ts_kernel_fail(
        n, err, TS_EUNSUPPORTED,
        "attribute 'spatial' = %lld is not supported (only 1)",
        (long long)ts_attr_int(n, "spatial", 1));
  for (int i = 1; i < n->n_outputs; i++)
    if (ts_cnn_output_wanted(n, i))
      return ts_kernel_fail(n, err, TS_EUNSUPPORTED,
                            "output %d is produced in training mode only; not "
                            "supported",
                            i);
  bn_params p = {.epsilon = ts_attr_float(n, "epsilon", 1e-5f), .channels = -1};
  const ts_tensor *cst[5] = {NULL};
  bool constant = true;
  for (int i = 1; i < 5 && i < n->n_inputs; i++) {
    const int v = n->inputs[i];
    cst[i] = v >= 0 && v < g->n_values ? g->values[v].constant : NULL;
    if (!cst[i]) constant = false;
  }
  if (!constant || n->n_inputs < 5)
    return ts_cnn_params_store(n, &p, sizeof p, err);
  p.channels = cst[1]->rank == 1 ? cst[1]->dims[0] : -1;
  if ((rc = bn_check_params(n, cst, p.channels, err)) < 0) return rc;
  const size_t size = sizeof p + 2 * (size_t)p.channels * sizeof(float);
  bn_params *q = malloc(size);
  if (!q)
    return ts_kernel_fail(n, err, TS_ENOMEM, "out of memory for parameters");
  *q = p;
  q->scale = (float *)(q + 1);
  q->shift = q->scale + p.channels;
  bn_fold(cst, p.epsilon, p.channels, q->scale, q->shift);
  n->params = q;
  return 0;
}

static int bn_check(const ts_node *n, const ts_tensor *const *in, ts_err *err) {
  const ts_tensor *x = in[0];
  int rc;
  if ((rc = ts_cnn_check_float(n, x, 0, "X", err)) < 0 ||
      (rc = ts_cnn_check_rank(n, x, 0, "X", 2, TS_MAX_RANK, err)) < 0)
    return rc;
  return bn_check_params(n, in, x->dims[1], err);
}

static int bn_infer(const ts_node *n, const ts_tensor *const *in,
                    ts_tensor *out, ts_err *err) {
  int rc = bn_check(n, in, err);
  if (rc < 0) return rc;
  return ts_cnn_set_shape(n, &out[0], TS_DTYPE_FLOAT, in[0]->dims, in[0]->rank,
                          err);
}

static int bn_run(const ts_node *n, const ts_tensor *const *in, ts_tensor *out,
                  ts_kctx *ctx, ts_err *err) {
  const bn_params *p = n->params;
  int rc = bn_check(n, in, err);
  if (rc < 0) return rc;
  const int64_t channels = in[0]->dims[1];
  const float *scale = p->scale, *shift = p->shift;
  if (channels == 0) return 0;
  if (!scale) {
    float *buf = ts_kctx_scratch(ctx, 2 * (size_t)channels * sizeof(float));
    if (!buf)
      return ts_kernel_fail(n, err, TS_ENOMEM,
                            "out of memory for %lld channels",
                            (long long)channels);
    bn_fold(in, p->epsilon, channels, buf, buf + channels);
    scale = buf;
    shift = buf + channels;
  }
  int64_t planes, plane;
  ts_cnn_planes_of(in[0], &planes, &plane);
  const float *x = in[0]->data;
  float *y = out[0].data;
  for (int64_t q = 0; q < planes; q++) {
    const float s = scale[q % channels], t = shift[q % channels];
    for (int64_t i = 0; i < plane; i++)
      y[q * plane + i] = x[q * plane + i] * s + t;
  }
  return 0;
}

CNN_OP(batch_normalization, "BatchNormalization", 5, 5, 1, 5, bn_prepare,
       ts_cnn_params_release, bn_infer, bn_run);
