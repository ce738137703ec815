/*
 * test_exec.c - the executor (exec.c): input validation with exact codes and
 * messages, output selection, buffer planning (a warm session allocates
 * nothing; liveness lets buffers share memory; data-dependent shapes
 * re-plan), and concurrent runs on separate sessions.
 */
#include <check.h>
#include <pthread.h>

#include "check_main.h"
#include "kernel_check.h"

#define D(...) (int64_t[]){__VA_ARGS__}

/* x[N,4] -> Gemm(W[4,3], b[3]) = h -> Softmax -> y; also exposes h. */
static ts_tensor W, B;

static ts_model *load_mlp(void) {
  kc_rng r = kc_rng_seed(200);
  if (!W.data) {
    kc_tensor_rand(&W, TS_DTYPE_FLOAT, 2, D(4, 3), &r, -1, 1);
    kc_tensor_rand(&B, TS_DTYPE_FLOAT, 1, D(3), &r, -1, 1);
  }
  Onnx__ModelProto *m = kc_mlp_model(&W, &B);
  ts_model *model;
  ts_err err;
  int rc = kc_model_load(m, &model, &err);
  kc_model_free(m);
  ck_assert_msg(rc == 0, "%s", err.msg);
  return model;
}

/* float64 reference of h = x W + b in the MLP above. */
static void mlp_hidden(const ts_tensor *x, double *h) {
  for (int64_t i = 0; i < x->dims[0]; i++)
    for (int j = 0; j < 3; j++) {
      h[i * 3 + j] = kc_get(&B, j);
      for (int k = 0; k < 4; k++)
        h[i * 3 + j] += kc_get(x, i * 4 + k) * kc_get(&W, k * 3 + j);
    }
}

/* float64 reference of y = softmax(h) over rows of `cols`, in place. */
static void softmax_rows(double *v, int64_t rows, int64_t cols) {
  for (int64_t i = 0; i < rows; i++) {
    double mx = -INFINITY, sum = 0, *r = v + i * cols;
    for (int64_t j = 0; j < cols; j++) mx = fmax(mx, r[j]);
    for (int64_t j = 0; j < cols; j++) sum += exp(r[j] - mx);
    for (int64_t j = 0; j < cols; j++) r[j] = exp(r[j] - mx) / sum;
  }
}

/* float64 reference of the MLP's output y. */
static void mlp_ref(const ts_tensor *x, double *y) {
  mlp_hidden(x, y);
  softmax_rows(y, x->dims[0], 3);
}

static const char *const X_NAME[] = {"x"};

/* Fixture: the MLP and a session, fresh for every test. */
static ts_model *M;
static ts_session *S;

static void setup(void) {
  ts_err err;
  M = load_mlp();
  ck_assert_int_eq(ts_session_create(&S, &err), 0);
}

static void teardown(void) {
  ts_session_free(S);
  ts_model_free(M);
}

static int run1(ts_model *m, ts_session *s, const ts_tensor *x,
                ts_tensor *out, ts_err *err) {
  ts_err_clear(err);
  return ts_exec_run(m, s, X_NAME, x, 1, NULL, out, 0, err);
}

#define ASSERT_MSG_HAS(err, s) \
  ck_assert_msg(strstr((err).msg, (s)) != NULL, "message '%s' lacks '%s'", \
                (err).msg, (s))

START_TEST(runs_and_matches_reference) {
  ts_err err;
  kc_rng r = kc_rng_seed(1);
  for (int n = 0; n <= 9; n += 3) {
    ts_tensor x, y;
    kc_tensor_rand(&x, TS_DTYPE_FLOAT, 2, D(n, 4), &r, -2, 2);
    ck_assert_msg(run1(M, S, &x, &y, &err) == 0, "%s", err.msg);
    ck_assert(!y.owned);
    double ref[27];
    mlp_ref(&x, ref);
    kc_assert_close(&y, ref, D(n, 3), 2, 1e-5, 1e-6, "mlp");
    ts_tensor_free(&x);
  }
}
END_TEST

START_TEST(input_validation) {
  ts_err err;
  kc_rng r = kc_rng_seed(2);
  ts_tensor x, y, bad;
  kc_tensor_rand(&x, TS_DTYPE_FLOAT, 2, D(2, 4), &r, -1, 1);
  /* wrong dtype */
  kc_tensor_rand(&bad, TS_DTYPE_INT64, 2, D(2, 4), &r, -1, 1);
  ck_assert_int_eq(run1(M, S, &bad, &y, &err), TS_EINVAL);
  ASSERT_MSG_HAS(err, "input 'x' has data type int64; the model expects float");
  ts_tensor_free(&bad);
  /* wrong rank */
  kc_tensor_rand(&bad, TS_DTYPE_FLOAT, 3, D(2, 4, 1), &r, -1, 1);
  ck_assert_int_eq(run1(M, S, &bad, &y, &err), TS_EINVAL);
  ASSERT_MSG_HAS(err, "input 'x' has rank 3; the model expects rank 2");
  ts_tensor_free(&bad);
  /* wrong static dim */
  kc_tensor_rand(&bad, TS_DTYPE_FLOAT, 2, D(2, 5), &r, -1, 1);
  ck_assert_int_eq(run1(M, S, &bad, &y, &err), TS_EINVAL);
  ASSERT_MSG_HAS(err, "input 'x': dim 1 is 5; the model expects 4");
  ts_tensor_free(&bad);
  /* byte length that does not match the shape */
  bad = x;
  bad.nbytes -= 4;
  ck_assert_int_eq(run1(M, S, &bad, &y, &err), TS_EINVAL);
  ASSERT_MSG_HAS(err, "input 'x' holds 28 bytes; shape [2,4] of float needs 32");
  /* negative dim, no data */
  bad = x;
  bad.dims[0] = -2;
  ck_assert_int_eq(run1(M, S, &bad, &y, &err), TS_EINVAL);
  ASSERT_MSG_HAS(err, "dim 0 is negative");
  bad = x;
  bad.data = NULL;
  ck_assert_int_eq(run1(M, S, &bad, &y, &err), TS_EINVAL);
  ASSERT_MSG_HAS(err, "input 'x' has no data");
  /* unknown, duplicate and missing inputs */
  const char *unk[] = {"z"};
  ck_assert_int_eq(ts_exec_run(M, S, unk, &x, 1, NULL, &y, 0, &err), TS_EINVAL);
  ASSERT_MSG_HAS(err, "unknown input 'z'");
  const char *twice[] = {"x", "x"};
  ts_tensor xs[2] = {x, x};
  ck_assert_int_eq(ts_exec_run(M, S, twice, xs, 2, NULL, &y, 0, &err),
                   TS_EINVAL);
  ASSERT_MSG_HAS(err, "input 'x' is given twice");
  ck_assert_int_eq(ts_exec_run(M, S, NULL, NULL, 0, NULL, &y, 0, &err),
                   TS_EINVAL);
  ASSERT_MSG_HAS(err, "input 'x' is missing");
  /* unknown output */
  const char *outs[] = {"y", "nope"};
  ts_tensor ys[2];
  ck_assert_int_eq(ts_exec_run(M, S, X_NAME, &x, 1, outs, ys, 2, &err),
                   TS_EINVAL);
  ASSERT_MSG_HAS(err, "'nope'");
  /* the session still works after all that */
  ck_assert_int_eq(run1(M, S, &x, &y, &err), 0);
  ts_tensor_free(&x);
}
END_TEST

START_TEST(output_selection) {
  ts_err err;
  kc_rng r = kc_rng_seed(3);
  ts_tensor x;
  kc_tensor_rand(&x, TS_DTYPE_FLOAT, 2, D(5, 4), &r, -1, 1);
  /* an intermediate, the output, a constant and the input itself */
  const char *outs[] = {"h", "y", "W", "x"};
  ts_tensor o[4];
  ck_assert_msg(ts_exec_run(M, S, X_NAME, &x, 1, outs, o, 4, &err) == 0, "%s",
                err.msg);
  double h[15];
  mlp_hidden(&x, h);
  kc_assert_close(&o[0], h, D(5, 3), 2, 1e-5, 1e-6, "h");
  double yref[15];
  mlp_ref(&x, yref);
  kc_assert_close(&o[1], yref, D(5, 3), 2, 1e-5, 1e-6, "y");
  double *w = kc_to_f64(&W), *xr = kc_to_f64(&x);
  kc_assert_close(&o[2], w, D(4, 3), 2, 0, 0, "W");
  kc_assert_close(&o[3], xr, D(5, 4), 2, 0, 0, "x");
  ck_assert_ptr_ne(o[3].data, x.data); /* copied into the arena */
  /* only h: Softmax is not needed and not run; same result */
  const char *only_h[] = {"h"};
  ck_assert_int_eq(ts_exec_run(M, S, X_NAME, &x, 1, only_h, o, 1, &err), 0);
  kc_assert_close(&o[0], h, D(5, 3), 2, 1e-5, 1e-6, "h alone");
  free(w);
  free(xr);
  ts_tensor_free(&x);
}
END_TEST

START_TEST(unneeded_nodes_are_skipped) {
  /* y1 = Identity(x); y2 = Reshape(x, s): with a bad s, only asking for y2
   * fails. */
  Onnx__ModelProto *mp = kc_model_new(14);
  kc_model_input(mp, "x", TS_DTYPE_FLOAT, 1, D(6));
  kc_model_input(mp, "s", TS_DTYPE_INT64, 1, D(2));
  kc_model_node(mp, "Identity", "", "id", "x", "y1");
  kc_model_node(mp, "Reshape", "", "rs", "x,s", "y2");
  kc_model_output(mp, "y1", TS_DTYPE_FLOAT, -1, NULL);
  kc_model_output(mp, "y2", TS_DTYPE_FLOAT, -1, NULL);
  ts_model *m;
  ts_err err;
  ck_assert_int_eq(kc_model_load(mp, &m, &err), 0);
  kc_model_free(mp);
  ts_session *s;
  ck_assert_int_eq(ts_session_create(&s, &err), 0);
  ts_tensor in[2], out[2];
  kc_tensor_from(&in[0], TS_DTYPE_FLOAT, 1, D(6), (double[]){1, 2, 3, 4, 5, 6});
  kc_tensor_from(&in[1], TS_DTYPE_INT64, 1, D(2), (double[]){4, 4});
  const char *names[] = {"x", "s"}, *o1[] = {"y1"}, *o2[] = {"y2"};
  ck_assert_int_eq(ts_exec_run(m, s, names, in, 2, o1, out, 1, &err), 0);
  kc_assert_close(&out[0], (double[]){1, 2, 3, 4, 5, 6}, D(6), 1, 0, 0, "y1");
  ck_assert_int_eq(ts_exec_run(m, s, names, in, 2, o2, out, 1, &err),
                   TS_EINVAL);
  ASSERT_MSG_HAS(err, "node 'rs' (Reshape)");
  ck_assert_int_eq(ts_exec_run(m, s, names, in, 2, NULL, out, 0, &err),
                   TS_EINVAL);
  /* data-dependent shapes: same input shapes, different target -> re-plan */
  const double targets[3][2] = {{2, 3}, {3, 2}, {2, 3}};
  for (int t = 0; t < 3; t++) {
    ((int64_t *)in[1].data)[0] = (int64_t)targets[t][0];
    ((int64_t *)in[1].data)[1] = (int64_t)targets[t][1];
    ck_assert_msg(ts_exec_run(m, s, names, in, 2, NULL, out, 0, &err) == 0,
                  "%s", err.msg);
    int64_t want[2] = {(int64_t)targets[t][0], (int64_t)targets[t][1]};
    kc_assert_close(&out[1], (double[]){1, 2, 3, 4, 5, 6}, want, 2, 0, 0,
                    "re-planned reshape");
    kc_assert_close(&out[0], (double[]){1, 2, 3, 4, 5, 6}, D(6), 1, 0, 0,
                    "y1 again");
  }
  ts_tensor_free(&in[0]);
  ts_tensor_free(&in[1]);
  ts_session_free(s);
  ts_model_free(m);
}
END_TEST

START_TEST(warm_session_allocates_nothing) {
  ts_err err;
  kc_rng r = kc_rng_seed(4);
  ts_tensor x4, x9, y;
  kc_tensor_rand(&x4, TS_DTYPE_FLOAT, 2, D(4, 4), &r, -1, 1);
  kc_tensor_rand(&x9, TS_DTYPE_FLOAT, 2, D(9, 4), &r, -1, 1);
  ck_assert_int_eq(run1(M, S, &x4, &y, &err), 0);
  size_t after_first = ts_session_alloc_count(S);
  ck_assert_uint_gt(after_first, 0);
  void *first_data = y.data;
  ck_assert_int_eq(run1(M, S, &x4, &y, &err), 0);
  ck_assert_uint_eq(ts_session_alloc_count(S), after_first);
  ck_assert_ptr_eq(y.data, first_data);
  double ref[36];
  mlp_ref(&x4, ref);
  kc_assert_close(&y, ref, D(4, 3), 2, 1e-5, 1e-6, "warm run");
  /* a new shape plans once more; then both shapes are warm */
  ck_assert_int_eq(run1(M, S, &x9, &y, &err), 0);
  size_t after_two = ts_session_alloc_count(S);
  for (int i = 0; i < 3; i++) {
    ck_assert_int_eq(run1(M, S, &x4, &y, &err), 0);
    ck_assert_int_eq(run1(M, S, &x9, &y, &err), 0);
  }
  ck_assert_uint_eq(ts_session_alloc_count(S), after_two);
  mlp_ref(&x9, ref);
  kc_assert_close(&y, ref, D(9, 3), 2, 1e-5, 1e-6, "warm run, shape 2");
  /* a second model on the same session keeps its own plan */
  ts_model *m2 = load_mlp();
  ck_assert_int_eq(run1(m2, S, &x4, &y, &err), 0);
  size_t after_m2 = ts_session_alloc_count(S);
  ck_assert_int_eq(run1(M, S, &x4, &y, &err), 0);
  ck_assert_int_eq(run1(m2, S, &x4, &y, &err), 0);
  ck_assert_uint_eq(ts_session_alloc_count(S), after_m2);
  ts_model_free(m2);
  ts_tensor_free(&x4);
  ts_tensor_free(&x9);
}
END_TEST

START_TEST(liveness_reuses_buffers) {
  /* a chain of 8 Softmax nodes over [64,64] floats (16 KiB each): at most
   * three buffers are live at once (input, output, requested output). */
  Onnx__ModelProto *mp = kc_model_new(13);
  kc_model_input(mp, "v0", TS_DTYPE_FLOAT, 2, D(64, 64));
  for (int i = 0; i < 8; i++) {
    char in[8], out[8];
    snprintf(in, sizeof in, "v%d", i);
    snprintf(out, sizeof out, "v%d", i + 1);
    kc_model_node(mp, "Softmax", "", out, in, out);
  }
  kc_model_output(mp, "v8", TS_DTYPE_FLOAT, -1, NULL);
  ts_model *m;
  ts_err err;
  ck_assert_int_eq(kc_model_load(mp, &m, &err), 0);
  kc_model_free(mp);
  ts_session *s;
  ck_assert_int_eq(ts_session_create(&s, &err), 0);
  kc_rng r = kc_rng_seed(5);
  ts_tensor x, y;
  kc_tensor_rand(&x, TS_DTYPE_FLOAT, 2, D(64, 64), &r, -1, 1);
  const char *names[] = {"v0"};
  ck_assert_int_eq(ts_exec_run(m, s, names, &x, 1, NULL, &y, 0, &err), 0);
  size_t arena = ts_session_arena_bytes(s);
  ck_assert_msg(arena >= 2 * 16384 && arena <= 3 * 16384 + 256,
                "arena %zu bytes for 8 x 16 KiB values", arena);
  /* reference: softmax applied 8 times */
  double *ref = kc_to_f64(&x);
  for (int it = 0; it < 8; it++) softmax_rows(ref, 64, 64);
  kc_assert_close(&y, ref, D(64, 64), 2, 1e-5, 1e-7, "softmax chain");
  ck_assert_int_eq(ts_exec_run(m, s, names, &x, 1, NULL, &y, 0, &err), 0);
  kc_assert_close(&y, ref, D(64, 64), 2, 1e-5, 1e-7, "softmax chain, warm");
  free(ref);
  ts_tensor_free(&x);
  ts_session_free(s);
  ts_model_free(m);
}
END_TEST

START_TEST(constant_only_model) {
  Onnx__ModelProto *mp = kc_model_new(13);
  Onnx__NodeProto *c = kc_model_node(mp, "Constant", "", "c", "", "k");
  kc_attr_floats(c, "value_floats", 2, (float[]){1.5f, -2});
  kc_model_node(mp, "Softmax", "", "sm", "k", "y");
  kc_model_output(mp, "y", TS_DTYPE_FLOAT, -1, NULL);
  ts_model *m;
  ts_err err;
  ck_assert_int_eq(kc_model_load(mp, &m, &err), 0);
  kc_model_free(mp);
  ck_assert_int_eq(m->graph.n_nodes, 0); /* everything folded */
  ts_session *s;
  ck_assert_int_eq(ts_session_create(&s, &err), 0);
  ts_tensor y;
  ck_assert_int_eq(ts_exec_run(m, s, NULL, NULL, 0, NULL, &y, 0, &err), 0);
  double e = exp(3.5);
  kc_assert_close(&y, (double[]){e / (1 + e), 1 / (1 + e)}, D(2), 1, 1e-6, 0,
                  "folded softmax");
  ts_session_free(s);
  ts_model_free(m);
}
END_TEST

/* ---- activation budget --------------------------------------------------- */

/* The MLP's values are h and y, [N,3] floats each, 64-byte aligned in the
 * arena: at the Softmax step both are live. */
static size_t mlp_activation_bytes(int64_t n) {
  size_t one = ((size_t)n * 12 + 63) / 64 * 64;
  return 2 * one;
}

START_TEST(budget_refuses_then_serves) {
  ts_err err;
  kc_rng r = kc_rng_seed(30);
  ts_tensor big, small, y;
  kc_tensor_rand(&big, TS_DTYPE_FLOAT, 2, D(1000, 4), &r, -1, 1);
  kc_tensor_rand(&small, TS_DTYPE_FLOAT, 2, D(100, 4), &r, -1, 1);
  ck_assert_uint_eq(ts_session_activation_limit(S), 0);
  ck_assert_uint_eq(mlp_activation_bytes(1000), 24064);

  /* planning run: refused at the step that would exceed the limit */
  ts_session_set_activation_limit(S, 16384);
  ck_assert_int_eq(run1(M, S, &big, &y, &err), TS_EEXHAUSTED);
  ASSERT_MSG_HAS(err, "activation memory exhausted");
  ASSERT_MSG_HAS(err, "node 'sm' (Softmax)");
  ASSERT_MSG_HAS(err, "output 'y' [1000,3] of float");
  ASSERT_MSG_HAS(err, "needs 24064 bytes");
  ASSERT_MSG_HAS(err, "the limit is 16384 bytes");
  ck_assert_int_eq(ts_session_arena_bytes(S), 0); /* nothing was placed */

  /* the same session still serves what fits */
  double ref[3000];
  ck_assert_msg(run1(M, S, &small, &y, &err) == 0, "%s", err.msg);
  mlp_ref(&small, ref);
  kc_assert_close(&y, ref, D(100, 3), 2, 1e-5, 1e-6, "within the limit");

  /* exactly at the limit runs */
  ts_session_set_activation_limit(S, mlp_activation_bytes(1000));
  ck_assert_msg(run1(M, S, &big, &y, &err) == 0, "%s", err.msg);
  mlp_ref(&big, ref);
  kc_assert_close(&y, ref, D(1000, 3), 2, 1e-5, 1e-6, "at the limit");

  /* a cached plan is checked before it runs: lower the limit */
  ts_session_set_activation_limit(S, 16384);
  ck_assert_int_eq(run1(M, S, &big, &y, &err), TS_EEXHAUSTED);
  ASSERT_MSG_HAS(err, "activation arena");
  ASSERT_MSG_HAS(err, "needs 24064 bytes");
  ASSERT_MSG_HAS(err, "the limit is 16384 bytes");
  ck_assert_msg(run1(M, S, &small, &y, &err) == 0, "%s", err.msg);
  mlp_ref(&small, ref);
  kc_assert_close(&y, ref, D(100, 3), 2, 1e-5, 1e-6, "cached, within");
  ts_tensor_free(&big);
  ts_tensor_free(&small);
}
END_TEST

/* Runs a one-node model of `op` whose inputs are all fed at run time (so
 * the output size depends on their values), under `limit`. */
static int run_dynamic(const char *op, const ts_tensor *const *in, int n_in,
                       size_t limit, ts_tensor *out, ts_err *err) {
  Onnx__ModelProto *mp = kc_op_model(op, "", 13, in, n_in, 0, 1, NULL);
  int rc = kc_model_run_limited(mp, in, n_in, 0, out, 1, limit, err);
  kc_model_free(mp);
  return rc;
}

#define MIB ((size_t)1 << 20)

START_TEST(data_dependent_sizes_are_checked) {
  ts_err err;
  ts_tensor a, b, c, y;
  /* Range(0, 1e9, 1) of int64: 8 GB asked, refused before allocation */
  kc_tensor_from(&a, TS_DTYPE_INT64, 0, NULL, (double[]){0});
  kc_tensor_from(&b, TS_DTYPE_INT64, 0, NULL, (double[]){1e9});
  kc_tensor_from(&c, TS_DTYPE_INT64, 0, NULL, (double[]){1});
  const ts_tensor *range_in[] = {&a, &b, &c};
  ck_assert_int_eq(run_dynamic("Range", range_in, 3, MIB, &y, &err),
                   TS_EEXHAUSTED);
  ASSERT_MSG_HAS(err, "(Range)");
  ASSERT_MSG_HAS(err, "[1000000000] of int64 is 8000000000 bytes");
  ASSERT_MSG_HAS(err, "the limit is 1048576 bytes");
  /* ... a limit near int64's end is a bad length, not a wrap */
  *(int64_t *)b.data = INT64_MAX;
  ck_assert_int_eq(run_dynamic("Range", range_in, 3, MIB, &y, &err),
                   TS_EINVAL);
  ASSERT_MSG_HAS(err, "(Range)");
  /* ... and a small one runs */
  *(int64_t *)b.data = 10;
  *(int64_t *)c.data = 3;
  ck_assert_msg(run_dynamic("Range", range_in, 3, MIB, &y, &err) == 0, "%s",
                err.msg);
  kc_assert_close(&y, (double[]){0, 3, 6, 9}, D(4), 1, 0, 0, "range");
  ts_tensor_free(&y);
  for (int i = 0; i < 3; i++) ts_tensor_free((ts_tensor *)range_in[i]);

  /* Tile [2,3] by [1e6, 1e6]: 24 TB */
  kc_tensor_from(&a, TS_DTYPE_FLOAT, 2, D(2, 3), (double[]){1, 2, 3, 4, 5, 6});
  kc_tensor_from(&b, TS_DTYPE_INT64, 1, D(2), (double[]){1e6, 1e6});
  const ts_tensor *tile_in[] = {&a, &b};
  ck_assert_int_eq(run_dynamic("Tile", tile_in, 2, MIB, &y, &err),
                   TS_EEXHAUSTED);
  ASSERT_MSG_HAS(err, "(Tile)");
  ASSERT_MSG_HAS(err, "[2000000,3000000] of float is 24000000000000 bytes");
  /* repeats whose product overflows: an error, not a wrap */
  ((int64_t *)b.data)[0] = (int64_t)1 << 62;
  ((int64_t *)b.data)[1] = (int64_t)1 << 62;
  ck_assert_int_eq(run_dynamic("Tile", tile_in, 2, 0, &y, &err), TS_EINVAL);
  ASSERT_MSG_HAS(err, "overflows");
  ((int64_t *)b.data)[0] = 2;
  ((int64_t *)b.data)[1] = 1;
  ck_assert_msg(run_dynamic("Tile", tile_in, 2, MIB, &y, &err) == 0, "%s",
                err.msg);
  kc_assert_close(&y, (double[]){1, 2, 3, 4, 5, 6, 1, 2, 3, 4, 5, 6},
                  D(4, 3), 2, 0, 0, "tile");
  ts_tensor_free(&y);
  ts_tensor_free(&b);

  /* Expand [2,3] to [1e5, 2, 3]: 2.4 MB > 1 MiB */
  kc_tensor_from(&b, TS_DTYPE_INT64, 1, D(3), (double[]){1e5, 2, 3});
  const ts_tensor *expand_in[] = {&a, &b};
  ck_assert_int_eq(run_dynamic("Expand", expand_in, 2, MIB, &y, &err),
                   TS_EEXHAUSTED);
  ASSERT_MSG_HAS(err, "(Expand)");
  ASSERT_MSG_HAS(err, "2400000 bytes");
  /* a shape whose size overflows size_t */
  ((int64_t *)b.data)[0] = (int64_t)1 << 62;
  ck_assert_int_eq(run_dynamic("Expand", expand_in, 2, 0, &y, &err),
                   TS_EINVAL);
  ASSERT_MSG_HAS(err, "overflows");
  ((int64_t *)b.data)[0] = 2;
  ((int64_t *)b.data)[1] = 1;
  ck_assert_msg(run_dynamic("Expand", expand_in, 2, MIB, &y, &err) == 0, "%s",
                err.msg);
  kc_assert_close(&y, (double[]){1, 2, 3, 4, 5, 6, 1, 2, 3, 4, 5, 6},
                  D(2, 2, 3), 3, 0, 0, "expand");
  ts_tensor_free(&y);
  ts_tensor_free(&a);
  ts_tensor_free(&b);

  /* ConstantOfShape [1e5, 1e5]: 40 GB of float zeros */
  kc_tensor_from(&a, TS_DTYPE_INT64, 1, D(2), (double[]){1e5, 1e5});
  const ts_tensor *cos_in[] = {&a};
  ck_assert_int_eq(run_dynamic("ConstantOfShape", cos_in, 1, MIB, &y, &err),
                   TS_EEXHAUSTED);
  ASSERT_MSG_HAS(err, "(ConstantOfShape)");
  ASSERT_MSG_HAS(err, "40000000000 bytes");
  ((int64_t *)a.data)[0] = (int64_t)1 << 62;
  ((int64_t *)a.data)[1] = 4;
  ck_assert_int_eq(run_dynamic("ConstantOfShape", cos_in, 1, 0, &y, &err),
                   TS_EINVAL);
  ASSERT_MSG_HAS(err, "overflows");
  ((int64_t *)a.data)[0] = 2;
  ((int64_t *)a.data)[1] = 2;
  ck_assert_msg(run_dynamic("ConstantOfShape", cos_in, 1, MIB, &y, &err) == 0,
                "%s", err.msg);
  kc_assert_close(&y, (double[]){0, 0, 0, 0}, D(2, 2), 2, 0, 0, "zeros");
  ts_tensor_free(&y);
  ts_tensor_free(&a);
}
END_TEST

START_TEST(budget_checked_before_running) {
  /* y = Tile(Gather(x, i), [1e6, 1e6]): shapes follow from the inputs'
   * shapes alone, so a run over the limit is refused before any node runs.
   * An out-of-range index shows it: Gather would fail when run. */
  ts_tensor x, i, reps, y;
  kc_tensor_from(&x, TS_DTYPE_FLOAT, 2, D(2, 3), (double[]){1, 2, 3, 4, 5, 6});
  kc_tensor_from(&i, TS_DTYPE_INT64, 1, D(1), (double[]){5});
  kc_tensor_from(&reps, TS_DTYPE_INT64, 1, D(2), (double[]){1e6, 1e6});
  Onnx__ModelProto *mp = kc_model_new(13);
  kc_model_input(mp, "x0", TS_DTYPE_FLOAT, 2, D(2, 3));
  kc_model_input(mp, "x1", TS_DTYPE_INT64, 1, D(1));
  kc_model_init(mp, "reps", &reps);
  kc_model_node(mp, "Gather", "", "pick", "x0,x1", "g");
  kc_model_node(mp, "Tile", "", "big", "g,reps", "y0");
  kc_model_output(mp, "y0", TS_DTYPE_FLOAT, -1, NULL);
  const ts_tensor *in[] = {&x, &i};
  ts_err err;
  ck_assert_int_eq(kc_model_run_limited(mp, in, 2, 0, &y, 1, MIB, &err),
                   TS_EEXHAUSTED);
  ASSERT_MSG_HAS(err, "node 'big' (Tile)");
  ASSERT_MSG_HAS(err, "[1000000,3000000] of float is 12000000000000 bytes");
  ck_assert_int_eq(kc_model_run_limited(mp, in, 2, 0, &y, 1, 0, &err),
                   TS_EINVAL);
  ASSERT_MSG_HAS(err, "node 'pick' (Gather)");
  kc_model_free(mp);
  ts_tensor_free(&x);
  ts_tensor_free(&i);
  ts_tensor_free(&reps);
}
END_TEST

START_TEST(resize_sizes_are_checked) {
  /* Resize to sizes given at run time: a huge target is refused by the
   * budget; a size whose aspect-ratio scaling leaves int64 is an error. */
  ts_err err;
  ts_tensor x, sizes, y;
  kc_tensor_from(&x, TS_DTYPE_FLOAT, 4, D(1, 1, 8, 1),
                 (double[]){1, 2, 3, 4, 5, 6, 7, 8});
  kc_tensor_from(&sizes, TS_DTYPE_INT64, 1, D(4), (double[]){1, 1, 1e5, 1e5});
  const ts_tensor *in[] = {&x, NULL, NULL, &sizes};
  Onnx__NodeProto *node;
  Onnx__ModelProto *mp = kc_op_model("Resize", "", 13, in, 4, 0, 1, NULL);
  ck_assert_int_eq(kc_model_run_limited(mp, in, 4, 0, &y, 1, MIB, &err),
                   TS_EEXHAUSTED);
  ASSERT_MSG_HAS(err, "(Resize)");
  ASSERT_MSG_HAS(err, "[1,1,100000,100000] of float is 40000000000 bytes");
  kc_model_free(mp);
  mp = kc_op_model("Resize", "", 13, in, 4, 0, 1, &node);
  kc_attr_string(node, "keep_aspect_ratio_policy", "not_smaller");
  int64_t *sz = sizes.data;
  sz[2] = 1;
  sz[3] = (int64_t)4e18; /* scale 4e18; axis 2 (8 long) would be 3.2e19 */
  ck_assert_int_eq(kc_model_run_limited(mp, in, 4, 0, &y, 1, 0, &err),
                   TS_EINVAL);
  ASSERT_MSG_HAS(err, "too large");
  sz[2] = 16; /* scale 2 on axis 2, and on every axis: [2,2,16,2] */
  sz[3] = 1;
  ck_assert_msg(kc_model_run_limited(mp, in, 4, 0, &y, 1, MIB, &err) == 0,
                "%s", err.msg);
  /* nearest (half_pixel, round_prefer_floor) at scale 2: y[.,.,i,.] is
   * x[0,0,i/2,0] */
  double ref[128];
  for (int k = 0; k < 128; k++) ref[k] = 1 + (k / 2 % 16) / 2;
  kc_assert_close(&y, ref, D(2, 2, 16, 2), 4, 0, 0, "resize not_smaller");
  kc_model_free(mp);
  ts_tensor_free(&y);
  ts_tensor_free(&x);
  ts_tensor_free(&sizes);
}
END_TEST

START_TEST(kernel_scratch_counts) {
  /* Conv 3x3 on [1,1,16,16]: the output is 784 bytes (832 in the arena),
   * its im2col scratch 9 x 196 floats = 7056 bytes. */
  ts_err err;
  kc_rng r = kc_rng_seed(31);
  ts_tensor x, w, y;
  kc_tensor_rand(&x, TS_DTYPE_FLOAT, 4, D(1, 1, 16, 16), &r, -1, 1);
  kc_tensor_rand(&w, TS_DTYPE_FLOAT, 4, D(1, 1, 3, 3), &r, -1, 1);
  const ts_tensor *in[] = {&x, &w};
  Onnx__ModelProto *mp = kc_op_model("Conv", "", 13, in, 2, 2u, 1, NULL);
  ck_assert_int_eq(kc_model_run_limited(mp, in, 2, 2u, &y, 1, 2048, &err),
                   TS_EEXHAUSTED);
  ASSERT_MSG_HAS(err, "(Conv)");
  ASSERT_MSG_HAS(err, "kernel scratch");
  ASSERT_MSG_HAS(err, "the limit is 2048 bytes");
  ck_assert_msg(kc_model_run_limited(mp, in, 2, 2u, &y, 1, 8192, &err) == 0,
                "%s", err.msg);
  double ref[14 * 14];
  for (int i = 0; i < 14; i++)
    for (int j = 0; j < 14; j++) {
      double acc = 0;
      for (int u = 0; u < 3; u++)
        for (int v = 0; v < 3; v++)
          acc += kc_get(&x, (i + u) * 16 + j + v) * kc_get(&w, u * 3 + v);
      ref[i * 14 + j] = acc;
    }
  kc_assert_close(&y, ref, D(1, 1, 14, 14), 4, 1e-5, 1e-6, "conv");
  ts_tensor_free(&y);
  kc_model_free(mp);
  ts_tensor_free(&x);
  ts_tensor_free(&w);
}
END_TEST

/* ---- concurrency --------------------------------------------------------- */

typedef struct worker_arg {
  ts_model *model;
  int id;
  int failures;
  double max_err;
} worker_arg;

static void *worker(void *p) {
  worker_arg *a = p;
  ts_session *s;
  ts_err err;
  if (ts_session_create(&s, &err)) {
    a->failures++;
    return NULL;
  }
  for (int it = 0; it < 60; it++) {
    kc_rng r = kc_rng_seed((uint64_t)it); /* same inputs in every thread */
    int64_t n = 1 + it % 7;
    ts_tensor x, y;
    if (ts_tensor_alloc(&x, TS_DTYPE_FLOAT, D(n, 4), 2, &err)) {
      a->failures++;
      break;
    }
    for (int64_t i = 0; i < n * 4; i++)
      ((float *)x.data)[i] = (float)kc_uniform(&r, -3, 3);
    if (ts_exec_run(a->model, s, X_NAME, &x, 1, NULL, &y, 0, &err) != 0) {
      a->failures++;
    } else {
      double ref[7 * 3];
      mlp_ref(&x, ref);
      for (int64_t i = 0; i < n * 3; i++) {
        double e = fabs(((float *)y.data)[i] - ref[i]);
        if (e > a->max_err) a->max_err = e;
      }
    }
    ts_tensor_free(&x);
  }
  ts_session_free(s);
  return NULL;
}

START_TEST(concurrent_sessions) {
  ts_model *m = load_mlp();
  pthread_t th[4];
  worker_arg args[4];
  for (int i = 0; i < 4; i++) {
    args[i] = (worker_arg){.model = m, .id = i};
    ck_assert_int_eq(pthread_create(&th[i], NULL, worker, &args[i]), 0);
  }
  for (int i = 0; i < 4; i++) pthread_join(th[i], NULL);
  for (int i = 0; i < 4; i++) {
    ck_assert_int_eq(args[i].failures, 0);
    ck_assert_msg(args[i].max_err < 1e-6, "thread %d max error %g", i,
                  args[i].max_err);
  }
  /* identical results across threads: same sessions-independent output */
  ts_session *s1, *s2;
  ts_err err;
  ck_assert_int_eq(ts_session_create(&s1, &err), 0);
  ck_assert_int_eq(ts_session_create(&s2, &err), 0);
  kc_rng r = kc_rng_seed(6);
  ts_tensor x, y1, y2;
  kc_tensor_rand(&x, TS_DTYPE_FLOAT, 2, D(6, 4), &r, -1, 1);
  ck_assert_int_eq(run1(m, s1, &x, &y1, &err), 0);
  ck_assert_int_eq(run1(m, s2, &x, &y2, &err), 0);
  ck_assert_int_eq(memcmp(y1.data, y2.data, y1.nbytes), 0);
  ts_tensor_free(&x);
  ts_session_free(s1);
  ts_session_free(s2);
  ts_model_free(m);
}
END_TEST

static Suite *suite(void) {
  Suite *s = suite_create("exec");
  TCase *tc = ts_check_tcase(s, "exec", 120, setup, teardown);
  tcase_add_test(tc, runs_and_matches_reference);
  tcase_add_test(tc, input_validation);
  tcase_add_test(tc, output_selection);
  tcase_add_test(tc, unneeded_nodes_are_skipped);
  tcase_add_test(tc, warm_session_allocates_nothing);
  tcase_add_test(tc, liveness_reuses_buffers);
  tcase_add_test(tc, constant_only_model);
  tcase_add_test(tc, budget_refuses_then_serves);
  tcase_add_test(tc, data_dependent_sizes_are_checked);
  tcase_add_test(tc, budget_checked_before_running);
  tcase_add_test(tc, resize_sizes_are_checked);
  tcase_add_test(tc, kernel_scratch_counts);
  tcase_add_test(tc, concurrent_sessions);
  return s;
}

/* The shared weights W and B outlive every test (setup fills them once). */
static void free_weights(void) {
  ts_tensor_free(&W);
  ts_tensor_free(&B);
}

const ts_check_suite ts_check_this_suite = {.make = suite,
                                            .after = free_weights};
