/*
 * ml_check.h - the harness of the ai.onnx.ml kernel suites
 * (test_kernels_ml.c, test_kernels_ml_bad.c): a seeded `rng`, attribute
 * lists collected on a bare NodeProto, one-node models of an ml op loaded
 * and run on 2-D inputs of any dtype. Header-only (static inline) like
 * kernel_check.h, on which it builds.
 */
#ifndef TS_ML_CHECK_H
#define TS_ML_CHECK_H

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "exec.h"
#include "graph.h"
#include "kernel_check.h"
#include "onnx.pb-c.h"
#include "ops.h"

static kc_rng rng;

static inline void rng_seed(uint64_t s) { rng = kc_rng_seed(s); }

/* Uniform in [lo, hi). */
static inline double uni(double lo, double hi) {
  return kc_uniform(&rng, lo, hi);
}

/* Uniform integer in [0, n). */
static inline int rnd(int n) { return (int)kc_randint(&rng, 0, n - 1); }

/* A node's attributes are collected on a bare NodeProto (kernel_check.h's
 * kc_attr_* copy the values); load_op turns it into the model's one node
 * and frees it with the model. */
typedef Onnx__NodeProto attr_list;

static inline attr_list *attrs_new(void) {
  attr_list *n = malloc(sizeof *n);
  ck_assert_ptr_nonnull(n);
  onnx__node_proto__init(n);
  return n;
}

static inline void add_floats(attr_list *l, const char *name, const float *v,
                              size_t n) {
  kc_attr_floats(l, name, n, v);
}

static inline void add_ints(attr_list *l, const char *name, const int64_t *v,
                            size_t n) {
  kc_attr_ints(l, name, n, v);
}

static inline void add_int(attr_list *l, const char *name, int64_t v) {
  kc_attr_int(l, name, v);
}

static inline void add_string(attr_list *l, const char *name, const char *v) {
  kc_attr_string(l, name, v);
}

static inline void add_strings(attr_list *l, const char *name, int n) {
  static const char *const strs[] = {"a", "b", "c", "d"};
  kc_attr_strings(l, name, (size_t)n, strs);
}

/* The graph input: dtype and dims (-1: symbolic) of X. */
typedef struct input_spec {
  ts_dtype dtype;
  int rank;
  int64_t dims[3];
} input_spec;

static inline input_spec input_2d(ts_dtype t, int64_t n, int64_t f) {
  input_spec s = {t, 2, {n, f, 0}};
  return s;
}

/* Builds and loads a model whose one node is the ai.onnx.ml op `op` with the
 * attributes in al (consumed), reading X and writing n_outputs outputs
 * ("Y", "Z"). Returns ts_model_load's code. */
static inline int load_op(const char *op, attr_list *al, input_spec in,
                          int n_outputs, ts_model **m, ts_err *err) {
  Onnx__ModelProto *mp = kc_model_new(13);
  kc_model_opset(mp, "ai.onnx.ml", 1);
  kc_model_input(mp, "X", in.dtype, in.rank, in.dims);
  kc_model_output(mp, "Y", TS_DTYPE_UNDEFINED, -1, NULL);
  if (n_outputs > 1) kc_model_output(mp, "Z", TS_DTYPE_UNDEFINED, -1, NULL);
  Onnx__NodeProto *node = kc_model_node(mp, op, "ai.onnx.ml", "n0", "X",
                                        n_outputs > 1 ? "Y,Z" : "Y");
  node->n_attribute = al->n_attribute;
  node->attribute = al->attribute;
  al->n_attribute = 0;
  al->attribute = NULL;
  free(al);
  ts_err_clear(err);
  int rc = kc_model_load(mp, m, err);
  kc_model_free(mp);
  return rc;
}

/* Loads, which must succeed. */
static inline ts_model *must_load(const char *op, attr_list *al, input_spec in,
                                  int n_outputs) {
  ts_model *m = NULL;
  ts_err err;
  int rc = load_op(op, al, in, n_outputs, &m, &err);
  ck_assert_msg(rc == 0, "%s: load failed (%d): %s", op, rc, err.msg);
  return m;
}

/* Loading must fail with `code` and a message containing `needle`. */
static inline void expect_load_error(const char *op, attr_list *al,
                                     input_spec in, int n_outputs, int code,
                                     const char *needle) {
  ts_model *m = NULL;
  ts_err err;
  int rc = load_op(op, al, in, n_outputs, &m, &err);
  if (rc == 0) ts_model_free(m);
  ck_assert_msg(rc == code, "%s: load returned %d, want %d (%s)", op, rc, code,
                rc ? err.msg : "loaded");
  ck_assert_msg(strstr(err.msg, needle) != NULL,
                "%s: message '%s' does not name '%s'", op, err.msg, needle);
  ck_assert_msg(strstr(err.msg, op) != NULL,
                "%s: message '%s' does not name the op", op, err.msg);
}

/* Input values as dtype t (integers for the integer types). */
static inline void *make_input(ts_dtype t, const double *v, size_t count) {
  size_t es = ts_dtype_size(t);
  uint8_t *buf = malloc(count * es + 1);
  ck_assert_ptr_nonnull(buf);
  for (size_t i = 0; i < count; i++) {
    switch (t) {
      case TS_DTYPE_FLOAT:
        ((float *)buf)[i] = (float)v[i];
        break;
      case TS_DTYPE_DOUBLE:
        ((double *)buf)[i] = v[i];
        break;
      case TS_DTYPE_INT32:
        ((int32_t *)buf)[i] = (int32_t)v[i];
        break;
      case TS_DTYPE_INT64:
        ((int64_t *)buf)[i] = (int64_t)v[i];
        break;
      default:
        ck_abort_msg("bad dtype");
    }
  }
  return buf;
}

/* Random input values: floats in [-1, 1) (rounded to float), or integers in
 * [-3, 3] for the integer dtypes. */
static inline void random_input(ts_dtype t, double *v, size_t count) {
  for (size_t i = 0; i < count; i++)
    v[i] = t == TS_DTYPE_INT32 || t == TS_DTYPE_INT64
               ? (double)(rnd(7) - 3)
               : (double)(float)uni(-1, 1);
}

/* Runs m on X (dtype t, rank 1 or 2 of the given dims) into out (room for
 * all graph outputs). Returns ts_exec_run's code. */
static inline int run_model(const ts_model *m, ts_session *s, ts_dtype t,
                            const double *x, int rank, const int64_t *dims,
                            ts_tensor *out, ts_err *err) {
  int64_t count = ts_shape_numel(dims, rank);
  void *data = make_input(t, x, (size_t)count);
  ts_tensor in;
  ts_err e;
  ck_assert_int_eq(ts_tensor_view(&in, t, dims, rank, data, &e), 0);
  const char *names[] = {"X"};
  ts_err_clear(err);
  int rc = ts_exec_run(m, s, names, &in, 1, NULL, out, 0, err);
  free(data);
  return rc;
}

static inline void must_run(const ts_model *m, ts_session *s, ts_dtype t,
                            const double *x, int64_t n, int64_t f,
                            ts_tensor *out) {
  ts_err err;
  int64_t dims[2] = {n, f};
  int rc = run_model(m, s, t, x, 2, dims, out, &err);
  ck_assert_msg(rc == 0, "run failed (%d): %s", rc, err.msg);
}

#endif
