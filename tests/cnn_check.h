/*
 * cnn_check.h - the harness test_kernels_cnn.c and test_kernels_pad_resize.c
 * share, on top of kernel_check.h: one-node models whose first input may
 * have symbolic dims, run and expected to pass or to fail with a code and a
 * message, and exact or magnitude-bounded comparisons. Header-only (static
 * inline) like kernel_check.h; each suite gets its own `rng`, seeded by the
 * test that uses it.
 */
#ifndef TS_CNN_CHECK_H
#define TS_CNN_CHECK_H

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "kernel_check.h"

static kc_rng rng;

static inline int64_t rnd(int64_t lo, int64_t hi) {
  return kc_randint(&rng, lo, hi);
}

/* An owned float tensor, uniform in [-1, 1). */
static inline void rand_float(ts_tensor *t, int rank, const int64_t *dims) {
  kc_tensor_rand(t, TS_DTYPE_FLOAT, rank, dims, &rng, -1, 1);
}

/* A non-owning view of data, for inputs held in local arrays. */
static inline ts_tensor view(ts_dtype dtype, int rank, const int64_t *dims,
                             const void *data) {
  ts_tensor t;
  ck_assert_int_eq(ts_tensor_view(&t, dtype, dims, rank, (void *)data, NULL),
                   0);
  return t;
}

/* kc_op_model (inputs x0.., outputs y0..) with bit d of sym_mask declaring
 * dim d of the graph input x0 symbolic. */
static inline Onnx__ModelProto *op_model(const char *op, int64_t opset,
                                         const ts_tensor *const *in, int n_in,
                                         unsigned const_mask, unsigned sym_mask,
                                         int n_out, Onnx__NodeProto **node) {
  Onnx__ModelProto *m =
      kc_op_model(op, "", opset, in, n_in, const_mask, n_out, node);
  for (size_t i = 0; i < m->graph->n_input && sym_mask; i++) {
    Onnx__ValueInfoProto *v = m->graph->input[i];
    if (strcmp(v->name, "x0") != 0) continue;
    Onnx__TensorShapeProto *sh = v->type->tensor_type->shape;
    for (size_t d = 0; d < sh->n_dim; d++)
      if (sym_mask >> d & 1) {
        char name[32];
        snprintf(name, sizeof name, "S%zu", d);
        sh->dim[d]->value_case =
            ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM;
        sh->dim[d]->dim_param = kc_strdup(name);
      }
  }
  return m;
}

/* Runs m expecting success; out[] are owned. Frees m. */
static inline void run_ok(Onnx__ModelProto *m, const ts_tensor *const *in,
                          int n_in, unsigned const_mask, ts_tensor *out,
                          int n_out, const char *what) {
  ts_err err;
  int rc = kc_model_run(m, in, n_in, const_mask, out, n_out, &err);
  kc_model_free(m);
  ck_assert_msg(rc == 0, "%s: %d %s", what, rc, err.msg);
}

/* Runs m expecting failure with `code` and a message containing `needle`.
 * Frees m. */
static inline void expect_fail(Onnx__ModelProto *m, const ts_tensor *const *in,
                               int n_in, unsigned const_mask, int n_out,
                               int code, const char *needle) {
  ts_tensor out[5];
  ts_err err;
  ts_err_clear(&err);
  int rc = kc_model_run(m, in, n_in, const_mask, out, n_out, &err);
  const char *op = m->graph->node[0]->op_type;
  kc_model_free(m);
  for (int i = 0; i < n_out && rc == 0; i++) ts_tensor_free(&out[i]);
  ck_assert_msg(rc == code, "%s: expected %d (%s), got %d: %s", op, code,
                needle, rc, err.msg);
  ck_assert_msg(strstr(err.msg, needle), "%s: message '%s' lacks '%s'", op,
                err.msg, needle);
}

/* Expects that load-time inference made y0's batch dim symbolic and the
 * other dims exactly `dims`. */
static inline void expect_inferred(const Onnx__ModelProto *m,
                                   const int64_t *dims, int rank,
                                   const char *what) {
  ts_model *model;
  ts_err err;
  ck_assert_msg(kc_model_load(m, &model, &err) == 0, "%s: %s", what, err.msg);
  const int vi = ts_graph_find_value(&model->graph, "y0");
  ck_assert_int_ge(vi, 0);
  const ts_value *v = &model->graph.values[vi];
  ck_assert_msg(v->rank == rank, "%s: inferred rank %d", what, v->rank);
  ck_assert_msg(v->dims[0] == -1, "%s: batch dim inferred as %lld", what,
                (long long)v->dims[0]);
  for (int d = 1; d < rank; d++)
    ck_assert_msg(v->dims[d] == dims[d],
                  "%s: inferred dim %d is %lld, want %lld", what, d,
                  (long long)v->dims[d], (long long)dims[d]);
  ts_model_free(model);
}

/* Sums of products in float accumulate rounding in proportion to the sum of
 * the terms' magnitudes, not to the result (which may cancel), so these
 * references carry mag[i] = sum |term| and the bound is rtol * mag + 1e-6. */
static inline void expect_close_mag(const ts_tensor *got, const double *want,
                                    const double *mag, const int64_t *dims,
                                    int rank, double rtol, const char *what) {
  kc_assert_shape(got, dims, rank, what);
  const int64_t n = ts_shape_numel(dims, rank);
  const float *g = got->data;
  for (int64_t i = 0; i < n; i++)
    if (!(fabs((double)g[i] - want[i]) <= rtol * mag[i] + 1e-6))
      ck_abort_msg("%s: element %lld: got %.9g, want %.9g (sum |terms| %g)",
                   what, (long long)i, (double)g[i], want[i], mag[i]);
}

/* Expects got to hold exactly the bytes of want (shape dims). */
static inline void expect_bytes(const ts_tensor *got, ts_dtype dtype,
                                const void *want, const int64_t *dims, int rank,
                                const char *what) {
  kc_assert_shape(got, dims, rank, what);
  ck_assert_msg(got->dtype == dtype, "%s: dtype %d", what, (int)got->dtype);
  ck_assert_msg(got->nbytes == 0 || memcmp(got->data, want, got->nbytes) == 0,
                "%s: wrong values", what);
}

static inline double *alloc_f64(int64_t n) {
  double *v = malloc((size_t)(n > 0 ? n : 1) * sizeof *v);
  ck_assert_ptr_nonnull(v);
  return v;
}

#endif
