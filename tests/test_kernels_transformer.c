/*
 * test_kernels_transformer.c - shape, index and reduction kernels
 * (list_transformer.h) run as one-node models through ts_model_load and
 * ts_exec_run, against naive references written here: loops over output
 * (or input) multi-indices, Python's own slice rules for Slice, float64
 * statistics for the reductions and LayerNormalization.
 *
 * Integer operands that steer shapes (axes, starts, split sizes, repeats,
 * shape) are fed both as initializers (known at load: the loader infers or
 * folds) and as graph inputs (known only at run time), so both paths of
 * every op are checked. Shape arithmetic over symbolic dims is checked on
 * the Shape -> Gather -> Unsqueeze -> Concat -> Reshape chain that
 * torch.onnx.export writes for transformer encoders. Random garbage through
 * every op is test_kernels_garbage.c's.
 */
#include <check.h>
#include <math.h>

#include "check_main.h"
#include "kernel_check.h"

static int64_t ravel(const int64_t *idx, const int64_t *dims, int rank) {
  int64_t off = 0;
  for (int k = 0; k < rank; k++) off = off * dims[k] + idx[k];
  return off;
}


static const ts_dtype data_types[] = {TS_DTYPE_FLOAT, TS_DTYPE_INT64,
                                      TS_DTYPE_UINT8, TS_DTYPE_DOUBLE,
                                      TS_DTYPE_INT32, TS_DTYPE_BOOL};

/* An int64 1-D tensor (owned) from `n` values (exactly: not through
 * doubles, which cannot hold INT64_MAX). */
static void ints_tensor(ts_tensor *t, int n, const int64_t *v) {
  kc_tensor_from(t, TS_DTYPE_INT64, 1, (int64_t[]){n}, NULL);
  if (n) memcpy(t->data, v, (size_t)n * sizeof *v);
}

/* Runs a prepared one-node model and frees it; returns the run's code. */
static int run_model(Onnx__ModelProto *m, const ts_tensor *const *in, int n_in,
                     unsigned mask, ts_tensor *out, int n_out, ts_err *err) {
  int rc = kc_model_run(m, in, n_in, mask, out, n_out, err);
  kc_model_free(m);
  return rc;
}


/* ---- Transpose ---------------------------------------------------------- */

START_TEST(test_transpose) {
  kc_rng r = kc_rng_seed(21);
  for (int trial = 0; trial < 40; trial++) {
    int rank = (int)kc_randint(&r, 0, 5);
    int64_t dims[8], perm[8], od[8];
    kc_rand_dims(&r, rank, 1, 5, dims);
    if (trial % 10 == 9 && rank) dims[0] = 0;
    for (int k = 0; k < rank; k++) perm[k] = k;
    for (int k = rank - 1; k > 0; k--) { /* Fisher-Yates */
      int j = (int)kc_randint(&r, 0, k);
      int64_t t = perm[k];
      perm[k] = perm[j];
      perm[j] = t;
    }
    bool dflt = trial % 4 == 0;
    if (dflt)
      for (int k = 0; k < rank; k++) perm[k] = rank - 1 - k;
    for (int k = 0; k < rank; k++) od[k] = dims[perm[k]];
    ts_tensor x, y;
    ts_err err;
    ts_dtype t = data_types[trial % 6];
    kc_tensor_rand(&x, t, rank, dims, &r, -100, 100);
    const ts_tensor *in[1] = {&x};
    Onnx__NodeProto *node;
    Onnx__ModelProto *m = kc_op_model("Transpose", "", 13, in, 1, trial & 1, 1,
                                      &node);
    if (!dflt) kc_attr_ints(node, "perm", (size_t)rank, perm);
    int rc = run_model(m, in, 1, trial & 1, &y, 1, &err);
    ck_assert_msg(rc == 0, "Transpose: %s", err.msg);
    int64_t n = ts_shape_numel(od, rank);
    double *ref = malloc((size_t)(n + 1) * sizeof *ref);
    for (int64_t i = 0; i < n; i++) {
      int64_t oi[8], ii[8];
      kc_unravel(i, od, rank, oi);
      for (int k = 0; k < rank; k++) ii[perm[k]] = oi[k];
      ref[i] = kc_get(&x, ravel(ii, dims, rank));
    }
    ck_assert_int_eq(y.dtype, t);
    kc_assert_close(&y, ref, od, rank, 0, 0, "Transpose");
    free(ref);
    kc_tensors_free((ts_tensor[]){x, y}, 2);
  }
}
END_TEST

/* ---- Shape -------------------------------------------------------------- */

/* Python's clamping of a slice bound for a sequence of length len (step 1). */
static int64_t py_bound(int64_t v, int64_t len) {
  if (v < 0) v += len;
  return v < 0 ? 0 : v > len ? len : v;
}

START_TEST(test_shape) {
  const int64_t dims[4] = {2, 7, 1, 5};
  ts_tensor x;
  kc_tensor_from(&x, TS_DTYPE_FLOAT, 4, dims, NULL);
  const ts_tensor *in[1] = {&x};
  for (int64_t start = -6; start <= 6; start++)
    for (int64_t end = -6; end <= 7; end++) {
      bool use_end = end != 7;
      ts_tensor y;
      ts_err err;
      Onnx__NodeProto *node;
      Onnx__ModelProto *m = kc_op_model("Shape", "", 15, in, 1, 0, 1, &node);
      kc_attr_int(node, "start", start);
      if (use_end) kc_attr_int(node, "end", end);
      ck_assert_int_eq(run_model(m, in, 1, 0, &y, 1, &err), 0);
      int64_t s = py_bound(start, 4), e = use_end ? py_bound(end, 4) : 4;
      double ref[4];
      int64_t n = 0;
      for (int64_t k = s; k < e; k++) ref[n++] = (double)dims[k];
      ck_assert_int_eq(y.dtype, TS_DTYPE_INT64);
      kc_assert_close(&y, ref, &n, 1, 0, 0, "Shape");
      ts_tensor_free(&y);
    }
  ts_tensor_free(&x);
}
END_TEST

/* ---- Gather ------------------------------------------------------------- */

START_TEST(test_gather) {
  kc_rng r = kc_rng_seed(22);
  for (int trial = 0; trial < 40; trial++) {
    int rank = (int)kc_randint(&r, 1, 4), q = (int)kc_randint(&r, 0, 2);
    int64_t dims[8], qd[8], od[8];
    kc_rand_dims(&r, rank, 1, 5, dims);
    kc_rand_dims(&r, q, 1, 4, qd);
    if (trial % 8 == 7) qd[0] = 0, q = q ? q : 1;
    int axis = (int)kc_randint(&r, 0, rank - 1);
    int64_t axis_attr = kc_randint(&r, 0, 1) ? axis - rank : axis;
    ts_tensor x, idx, y;
    ts_err err;
    kc_tensor_rand(&x, data_types[trial % 6], rank, dims, &r, -50, 50);
    ts_dtype it = trial & 1 ? TS_DTYPE_INT32 : TS_DTYPE_INT64;
    kc_tensor_rand(&idx, it, q, qd, &r, (double)-dims[axis],
                   (double)dims[axis]);
    int orank = 0;
    for (int k = 0; k < axis; k++) od[orank++] = dims[k];
    for (int k = 0; k < q; k++) od[orank++] = qd[k];
    for (int k = axis + 1; k < rank; k++) od[orank++] = dims[k];
    const ts_tensor *in[2] = {&x, &idx};
    unsigned mask = (unsigned)kc_randint(&r, 0, 3);
    Onnx__NodeProto *node;
    Onnx__ModelProto *m = kc_op_model("Gather", "", 13, in, 2, mask, 1, &node);
    kc_attr_int(node, "axis", axis_attr);
    int rc = run_model(m, in, 2, mask, &y, 1, &err);
    ck_assert_msg(rc == 0, "Gather: %s", err.msg);
    int64_t n = ts_shape_numel(od, orank);
    double *ref = malloc((size_t)(n + 1) * sizeof *ref);
    for (int64_t i = 0; i < n; i++) {
      int64_t oi[8], ii[8];
      kc_unravel(i, od, orank, oi);
      for (int k = 0; k < axis; k++) ii[k] = oi[k];
      int64_t v = (int64_t)kc_get(&idx, ravel(oi + axis, qd, q));
      ii[axis] = v < 0 ? v + dims[axis] : v;
      for (int k = axis + 1; k < rank; k++) ii[k] = oi[k - 1 + q];
      ref[i] = kc_get(&x, ravel(ii, dims, rank));
    }
    kc_assert_close(&y, ref, od, orank, 0, 0, "Gather");
    free(ref);
    kc_tensors_free((ts_tensor[]){x, idx, y}, 3);
  }
}
END_TEST

START_TEST(test_gather_index_out_of_range) {
  ts_tensor x, idx, y;
  ts_err err;
  kc_tensor_from(&x, TS_DTYPE_FLOAT, 2, (int64_t[]){3, 2}, NULL);
  kc_tensor_from(&idx, TS_DTYPE_INT64, 1, (int64_t[]){2}, (double[]){0, 3});
  const ts_tensor *in[2] = {&x, &idx};
  ck_assert_int_eq(kc_run_op("Gather", "", 13, in, 2, 0, &y, 1, &err),
                   TS_EINVAL);
  ck_assert_msg(strstr(err.msg, "index 3"), "names the index: %s", err.msg);
  kc_set(&idx, 1, -4);
  ck_assert_int_eq(kc_run_op("Gather", "", 13, in, 2, 0, &y, 1, &err),
                   TS_EINVAL);
  kc_tensors_free((ts_tensor[]){x, idx}, 2);
}
END_TEST

/* ---- Unsqueeze, Squeeze ------------------------------------------------- */

/* Runs Unsqueeze or Squeeze with `axes` (NULL: none) in the opset's form. */
static int run_axes_op(const char *op, int64_t opset, const ts_tensor *x,
                       const int64_t *axes, int n_axes, unsigned mask,
                       ts_tensor *y, ts_err *err) {
  ts_tensor a;
  bool as_input = opset >= 13 && axes;
  if (as_input) ints_tensor(&a, n_axes, axes);
  const ts_tensor *in[2] = {x, as_input ? &a : NULL};
  Onnx__NodeProto *node;
  Onnx__ModelProto *m = kc_op_model(op, "", opset, in, as_input ? 2 : 1, mask,
                                    1, &node);
  if (!as_input && axes) kc_attr_ints(node, "axes", (size_t)n_axes, axes);
  int rc = run_model(m, in, as_input ? 2 : 1, mask, y, 1, err);
  if (as_input) ts_tensor_free(&a);
  return rc;
}

START_TEST(test_unsqueeze_squeeze) {
  static const struct {
    int rx;
    int64_t x[4];
    int na;
    int64_t axes[3];
    int ry;
    int64_t y[6];
  } unsq[] = {
      {2, {3, 4}, 1, {0}, 3, {1, 3, 4}},
      {2, {3, 4}, 2, {-1, 1}, 4, {3, 1, 4, 1}},
      {0, {0}, 2, {1, 0}, 2, {1, 1}},
      {3, {2, 1, 5}, 3, {5, -6, 2}, 6, {1, 2, 1, 1, 5, 1}},
  };
  static const struct {
    int rx;
    int64_t x[5];
    int na; /* -1: no axes */
    int64_t axes[3];
    int ry;
    int64_t y[5];
  } sq[] = {
      {3, {1, 3, 1}, -1, {0}, 1, {3}},
      {3, {1, 3, 1}, 1, {-1}, 2, {1, 3}},
      {4, {2, 1, 1, 5}, 2, {2, 1}, 2, {2, 5}},
      {2, {1, 1}, -1, {0}, 0, {0}},
      {3, {1, 0, 1}, 1, {0}, 2, {0, 1}},
  };
  kc_rng r = kc_rng_seed(23);
  for (int opset = 11; opset <= 13; opset += 2)
    for (unsigned mask = 0; mask < 4; mask++) {
      for (size_t c = 0; c < sizeof unsq / sizeof unsq[0]; c++) {
        ts_tensor x, y;
        ts_err err;
        kc_tensor_rand(&x, TS_DTYPE_FLOAT, unsq[c].rx, unsq[c].x, &r, -1, 1);
        int rc = run_axes_op("Unsqueeze", opset, &x, unsq[c].axes, unsq[c].na,
                             mask, &y, &err);
        ck_assert_msg(rc == 0, "Unsqueeze %zu: %s", c, err.msg);
        double *ref = kc_to_f64(&x);
        kc_assert_close(&y, ref, unsq[c].y, unsq[c].ry, 0, 0, "Unsqueeze");
        free(ref);
        kc_tensors_free((ts_tensor[]){x, y}, 2);
      }
      for (size_t c = 0; c < sizeof sq / sizeof sq[0]; c++) {
        ts_tensor x, y;
        ts_err err;
        kc_tensor_rand(&x, TS_DTYPE_INT64, sq[c].rx, sq[c].x, &r, -9, 9);
        int rc = run_axes_op("Squeeze", opset, &x,
                             sq[c].na < 0 ? NULL : sq[c].axes, sq[c].na, mask,
                             &y, &err);
        ck_assert_msg(rc == 0, "Squeeze %zu: %s", c, err.msg);
        double *ref = kc_to_f64(&x);
        kc_assert_close(&y, ref, sq[c].y, sq[c].ry, 0, 0, "Squeeze");
        free(ref);
        kc_tensors_free((ts_tensor[]){x, y}, 2);
      }
    }
}
END_TEST

/* ---- Concat ------------------------------------------------------------- */

START_TEST(test_concat) {
  kc_rng r = kc_rng_seed(24);
  for (int trial = 0; trial < 40; trial++) {
    int rank = (int)kc_randint(&r, 1, 4), n = (int)kc_randint(&r, 1, 4);
    int axis = (int)kc_randint(&r, 0, rank - 1);
    int64_t dims[8], od[8], start[5];
    kc_rand_dims(&r, rank, 1, 4, dims);
    ts_tensor x[4], y;
    const ts_tensor *in[4];
    ts_err err;
    memcpy(od, dims, sizeof od);
    od[axis] = 0;
    for (int j = 0; j < n; j++) {
      int64_t d[8];
      memcpy(d, dims, sizeof d);
      d[axis] = kc_randint(&r, trial % 5 == 4 ? 0 : 1, 4);
      start[j] = od[axis];
      od[axis] += d[axis];
      kc_tensor_rand(&x[j], data_types[trial % 6], rank, d, &r, -50, 50);
      in[j] = &x[j];
    }
    start[n] = od[axis];
    unsigned mask = (unsigned)kc_randint(&r, 0, 15);
    Onnx__NodeProto *node;
    Onnx__ModelProto *m = kc_op_model("Concat", "", 13, in, n, mask, 1, &node);
    kc_attr_int(node, "axis", trial & 1 ? axis - rank : axis);
    int rc = run_model(m, in, n, mask, &y, 1, &err);
    ck_assert_msg(rc == 0, "Concat: %s", err.msg);
    int64_t numel = ts_shape_numel(od, rank);
    double *ref = malloc((size_t)(numel + 1) * sizeof *ref);
    for (int64_t i = 0; i < numel; i++) {
      int64_t oi[8];
      kc_unravel(i, od, rank, oi);
      int j = 0;
      while (oi[axis] >= start[j + 1]) j++;
      oi[axis] -= start[j];
      ref[i] = kc_get(&x[j], ravel(oi, x[j].dims, rank));
    }
    kc_assert_close(&y, ref, od, rank, 0, 0, "Concat");
    free(ref);
    kc_tensors_free(x, n);
    ts_tensor_free(&y);
  }
}
END_TEST

/* ---- Slice -------------------------------------------------------------- */

/* The indices Python's seq[start:stop:step] visits (PySlice_AdjustIndices
 * followed by the plain loop); returns how many. */
static int64_t py_slice(int64_t len, int64_t start, int64_t stop, int64_t step,
                        int64_t *out) {
  int64_t *b[2] = {&start, &stop};
  for (int i = 0; i < 2; i++) {
    int64_t *v = b[i];
    if (*v < 0) {
      *v = *v < -len ? -1 : *v + len; /* no overflow near INT64_MIN */
      if (*v < 0) *v = step < 0 ? -1 : 0;
    } else if (*v >= len) {
      *v = step < 0 ? len - 1 : len;
    }
  }
  int64_t n = 0;
  for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) {
    out[n++] = i;
    if ((step > 0 && i > INT64_MAX - step) ||
        (step < 0 && i < INT64_MIN - step))
      break;
  }
  return n;
}

static int64_t rand_bound(kc_rng *r, int64_t d) {
  switch (kc_randint(r, 0, 9)) {
    case 0: return INT64_MAX;
    case 1: return INT64_MIN;
    case 2: return -d - 3;
    default: return kc_randint(r, -d - 1, d + 1);
  }
}

START_TEST(test_slice) {
  kc_rng r = kc_rng_seed(25);
  for (int trial = 0; trial < 80; trial++) {
    int rank = (int)kc_randint(&r, 1, 4);
    int64_t dims[8], od[8], sel[8][16];
    kc_rand_dims(&r, rank, 1, 6, dims);
    if (trial % 10 == 9) dims[0] = 0;
    int64_t starts[8], ends[8], axes[8], steps[8];
    int n = (int)kc_randint(&r, 1, rank);
    bool use_axes = trial % 3 != 0, use_steps = trial % 4 != 0;
    /* Distinct axes in a random order (default: 0..n-1). */
    int64_t order[8];
    for (int k = 0; k < rank; k++) order[k] = k;
    for (int k = rank - 1; k > 0 && use_axes; k--) {
      int j = (int)kc_randint(&r, 0, k);
      int64_t t = order[k];
      order[k] = order[j];
      order[j] = t;
    }
    for (int k = 0; k < rank; k++) {
      od[k] = dims[k];
      for (int64_t i = 0; i < dims[k]; i++) sel[k][i] = i;
    }
    for (int i = 0; i < n; i++) {
      int a = (int)order[i];
      axes[i] = kc_randint(&r, 0, 1) ? a - rank : a;
      starts[i] = rand_bound(&r, dims[a]);
      ends[i] = rand_bound(&r, dims[a]);
      steps[i] = use_steps ? kc_randint(&r, 1, 3) * (kc_randint(&r, 0, 1)
                                                         ? 1 : -1)
                           : 1;
      od[a] = py_slice(dims[a], starts[i], ends[i], steps[i], sel[a]);
    }
    ts_tensor x, ts, te, ta, tst, y;
    ts_err err;
    kc_tensor_rand(&x, data_types[trial % 6], rank, dims, &r, -50, 50);
    ints_tensor(&ts, n, starts);
    ints_tensor(&te, n, ends);
    ints_tensor(&ta, n, axes);
    ints_tensor(&tst, n, steps);
    const ts_tensor *in[5] = {&x, &ts, &te, use_axes ? &ta : NULL,
                              use_steps ? &tst : NULL};
    unsigned mask = (unsigned)kc_randint(&r, 0, 31);
    int rc = kc_run_op("Slice", "", 13, in, 5, mask, &y, 1, &err);
    ck_assert_msg(rc == 0, "Slice: %s", err.msg);
    int64_t numel = ts_shape_numel(od, rank);
    double *ref = malloc((size_t)(numel + 1) * sizeof *ref);
    for (int64_t i = 0; i < numel; i++) {
      int64_t oi[8];
      kc_unravel(i, od, rank, oi);
      for (int k = 0; k < rank; k++) oi[k] = sel[k][oi[k]];
      ref[i] = kc_get(&x, ravel(oi, dims, rank));
    }
    kc_assert_close(&y, ref, od, rank, 0, 0, "Slice");
    free(ref);
    kc_tensors_free((ts_tensor[]){x, ts, te, ta, tst, y}, 6);
  }
}
END_TEST

START_TEST(test_slice_opset9_attributes) {
  ts_tensor x, y;
  ts_err err;
  double v[12];
  for (int i = 0; i < 12; i++) v[i] = i;
  kc_tensor_from(&x, TS_DTYPE_FLOAT, 2, (int64_t[]){3, 4}, v);
  const ts_tensor *in[1] = {&x};
  Onnx__NodeProto *node;
  Onnx__ModelProto *m = kc_op_model("Slice", "", 9, in, 1, 0, 1, &node);
  kc_attr_ints(node, "starts", 2, (int64_t[]){1, -3});
  kc_attr_ints(node, "ends", 2, (int64_t[]){INT64_MAX, 3});
  kc_attr_ints(node, "axes", 2, (int64_t[]){0, 1});
  ck_assert_int_eq(run_model(m, in, 1, 0, &y, 1, &err), 0);
  kc_assert_close(&y, (double[]){5, 6, 9, 10}, (int64_t[]){2, 2}, 2, 0, 0,
                  "Slice opset 9"); /* x[1:, 1:3] */
  kc_tensors_free((ts_tensor[]){x, y}, 2);
}
END_TEST

/* ---- Split -------------------------------------------------------------- */

START_TEST(test_split) {
  kc_rng r = kc_rng_seed(26);
  for (int trial = 0; trial < 30; trial++) {
    int rank = (int)kc_randint(&r, 1, 3), n = (int)kc_randint(&r, 1, 4);
    int axis = (int)kc_randint(&r, 0, rank - 1);
    int64_t dims[8], sizes[4], start[5] = {0};
    kc_rand_dims(&r, rank, 1, 4, dims);
    int form = trial % 3; /* 0: equal parts, 1: attribute, 2: input */
    int64_t opset = form == 1 ? 11 : 13;
    dims[axis] = 0;
    for (int j = 0; j < n; j++) {
      sizes[j] = form ? kc_randint(&r, 0, 3) : 2;
      dims[axis] += sizes[j];
      start[j + 1] = dims[axis];
    }
    ts_tensor x, s, y[4];
    ts_err err;
    kc_tensor_rand(&x, data_types[trial % 6], rank, dims, &r, -50, 50);
    ints_tensor(&s, n, sizes);
    const ts_tensor *in[2] = {&x, &s};
    int n_in = form == 2 ? 2 : 1;
    unsigned mask = (unsigned)kc_randint(&r, 0, 3);
    Onnx__NodeProto *node;
    Onnx__ModelProto *m = kc_op_model("Split", "", opset, in, n_in, mask, n,
                                      &node);
    kc_attr_int(node, "axis", trial & 1 ? axis - rank : axis);
    if (form == 1) kc_attr_ints(node, "split", (size_t)n, sizes);
    int rc = run_model(m, in, n_in, mask, y, n, &err);
    ck_assert_msg(rc == 0, "Split: %s", err.msg);
    for (int j = 0; j < n; j++) {
      int64_t od[8];
      memcpy(od, dims, sizeof od);
      od[axis] = sizes[j];
      int64_t numel = ts_shape_numel(od, rank);
      double *ref = malloc((size_t)(numel + 1) * sizeof *ref);
      for (int64_t i = 0; i < numel; i++) {
        int64_t oi[8];
        kc_unravel(i, od, rank, oi);
        oi[axis] += start[j];
        ref[i] = kc_get(&x, ravel(oi, dims, rank));
      }
      kc_assert_close(&y[j], ref, od, rank, 0, 0, "Split");
      free(ref);
    }
    kc_tensors_free(y, n);
    kc_tensors_free((ts_tensor[]){x, s}, 2);
  }
}
END_TEST

/* ---- ConstantOfShape, Range, Tile --------------------------------------- */

START_TEST(test_constant_of_shape) {
  static const struct {
    int n;
    int64_t shape[3];
  } cases[] = {{2, {2, 3}}, {0, {0}}, {3, {1, 0, 4}}, {1, {5}}};
  for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++)
    for (int kind = 0; kind < 3; kind++) /* default, int64 7, float -2.5 */
      for (unsigned mask = 0; mask < 2; mask++) {
        ts_tensor s, v, y;
        ts_err err;
        ints_tensor(&s, cases[c].n, cases[c].shape);
        const ts_tensor *in[1] = {&s};
        Onnx__NodeProto *node;
        Onnx__ModelProto *m =
            kc_op_model("ConstantOfShape", "", 13, in, 1, mask, 1, &node);
        double fill = kind == 0 ? 0 : kind == 1 ? 7 : -2.5;
        ts_dtype t = kind == 1 ? TS_DTYPE_INT64 : TS_DTYPE_FLOAT;
        kc_tensor_from(&v, t, 1, (int64_t[]){1}, &fill);
        if (kind) kc_attr_tensor(node, "value", &v);
        int rc = run_model(m, in, 1, mask, &y, 1, &err);
        ck_assert_msg(rc == 0, "ConstantOfShape: %s", err.msg);
        double ref[32];
        for (int i = 0; i < 32; i++) ref[i] = fill;
        ck_assert_int_eq(y.dtype, t);
        kc_assert_close(&y, ref, cases[c].shape, cases[c].n, 0, 0,
                        "ConstantOfShape");
        kc_tensors_free((ts_tensor[]){s, v, y}, 3);
      }
}
END_TEST

START_TEST(test_range) {
  static const double cases[][3] = {
      {0, 10, 1}, {3, 10, 3}, {10, 3, -2}, {1, 1, 1}, {5, 1, 1},
      {-2.5, 2.5, 0.75}, {0.5, -1, -0.5}, {-7, 8, 5},
  };
  const ts_dtype types[] = {TS_DTYPE_FLOAT, TS_DTYPE_DOUBLE, TS_DTYPE_INT32,
                            TS_DTYPE_INT64};
  for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++)
    for (int t = 0; t < 4; t++) {
      double v[3];
      for (int i = 0; i < 3; i++)
        v[i] = t >= 2 ? trunc(cases[c][i]) : cases[c][i];
      if (v[2] == 0) continue;
      ts_tensor s, l, d, y;
      ts_err err;
      kc_tensor_from(&s, types[t], 0, NULL, &v[0]);
      kc_tensor_from(&l, types[t], 0, NULL, &v[1]);
      kc_tensor_from(&d, types[t], 0, NULL, &v[2]);
      const ts_tensor *in[3] = {&s, &l, &d};
      int rc = kc_run_op("Range", "", 11, in, 3, c & 1 ? 7 : 0, &y, 1, &err);
      ck_assert_msg(rc == 0, "Range: %s", err.msg);
      double ref[64];
      int64_t n = 0;
      for (double x = v[0]; v[2] > 0 ? x < v[1] : x > v[1]; x += v[2])
        ref[n++] = x;
      kc_assert_close(&y, ref, &n, 1, 1e-6, 1e-6, "Range");
      kc_tensors_free((ts_tensor[]){s, l, d, y}, 4);
    }
}
END_TEST

START_TEST(test_tile) {
  kc_rng r = kc_rng_seed(27);
  for (int trial = 0; trial < 30; trial++) {
    int rank = (int)kc_randint(&r, 1, 4);
    int64_t dims[8], reps[8], od[8];
    kc_rand_dims(&r, rank, 1, 4, dims);
    kc_rand_dims(&r, rank, trial % 7 == 6 ? 0 : 1, 3, reps);
    for (int k = 0; k < rank; k++) od[k] = dims[k] * reps[k];
    ts_tensor x, rp, y;
    ts_err err;
    kc_tensor_rand(&x, data_types[trial % 6], rank, dims, &r, -50, 50);
    ints_tensor(&rp, rank, reps);
    const ts_tensor *in[2] = {&x, &rp};
    int rc = kc_run_op("Tile", "", 13, in, 2, trial & 3, &y, 1, &err);
    ck_assert_msg(rc == 0, "Tile: %s", err.msg);
    int64_t numel = ts_shape_numel(od, rank);
    double *ref = malloc((size_t)(numel + 1) * sizeof *ref);
    for (int64_t i = 0; i < numel; i++) {
      int64_t oi[8];
      kc_unravel(i, od, rank, oi);
      for (int k = 0; k < rank; k++) oi[k] %= dims[k];
      ref[i] = kc_get(&x, ravel(oi, dims, rank));
    }
    kc_assert_close(&y, ref, od, rank, 0, 0, "Tile");
    free(ref);
    kc_tensors_free((ts_tensor[]){x, rp, y}, 3);
  }
}
END_TEST

/* ---- Reduce* ------------------------------------------------------------ */

enum { R_SUM, R_MEAN, R_MAX, R_MIN, R_PROD };
static const char *const reduce_names[] = {"ReduceSum", "ReduceMean",
                                           "ReduceMax", "ReduceMin",
                                           "ReduceProd"};

START_TEST(test_reduce) {
  kc_rng r = kc_rng_seed(28);
  const ts_dtype types[] = {TS_DTYPE_FLOAT, TS_DTYPE_DOUBLE, TS_DTYPE_INT32,
                            TS_DTYPE_INT64};
  for (int kind = 0; kind < 5; kind++)
    for (int trial = 0; trial < 24; trial++) {
      int rank = (int)kc_randint(&r, 0, 4);
      int64_t dims[8], axes[8], od[8];
      bool red[8] = {false};
      kc_rand_dims(&r, rank, 1, 5, dims);
      int n_axes = 0;
      for (int k = 0; k < rank; k++)
        if (kc_randint(&r, 0, 1)) {
          axes[n_axes++] = kc_randint(&r, 0, 1) ? k - rank : k;
          red[k] = true;
        }
      if (n_axes == 0)
        for (int k = 0; k < rank; k++) red[k] = true; /* default: all */
      bool keep = trial & 1;
      ts_dtype t = types[trial % 4];
      int64_t opset = trial % 3 == 0 ? 11 : 13;
      bool axes_input = kind == R_SUM && opset >= 13;
      int orank = 0;
      for (int k = 0; k < rank; k++)
        if (!red[k] || keep) od[orank++] = red[k] ? 1 : dims[k];
      ts_tensor x, a, y;
      ts_err err;
      kc_tensor_rand(&x, t, rank, dims, &r, kind == R_PROD ? 0.5 : -9,
                     kind == R_PROD ? 1.5 : 9);
      if (kind == R_PROD && (t == TS_DTYPE_INT32 || t == TS_DTYPE_INT64))
        for (int64_t i = 0; i < ts_tensor_numel(&x); i++)
          kc_set(&x, i, (double)kc_randint(&r, -1, 2));
      ints_tensor(&a, n_axes, axes);
      const ts_tensor *in[2] = {&x, &a};
      int n_in = axes_input && n_axes ? 2 : 1;
      unsigned mask = (unsigned)kc_randint(&r, 0, 3);
      Onnx__NodeProto *node;
      Onnx__ModelProto *m = kc_op_model(reduce_names[kind], "", opset, in,
                                        n_in, mask, 1, &node);
      kc_attr_int(node, "keepdims", keep);
      if (!axes_input && n_axes)
        kc_attr_ints(node, "axes", (size_t)n_axes, axes);
      int rc = run_model(m, in, n_in, mask, &y, 1, &err);
      ck_assert_msg(rc == 0, "%s: %s", reduce_names[kind], err.msg);
      /* Fold every input element into its output element. */
      int64_t on = ts_shape_numel(od, orank), count = 0;
      int64_t kd[8]; /* output dims with reduced dims kept as 1 */
      for (int k = 0; k < rank; k++) kd[k] = red[k] ? 1 : dims[k];
      double *ref = malloc((size_t)(on + 1) * sizeof *ref);
      for (int64_t o = 0; o < on; o++)
        ref[o] = kind == R_PROD ? 1 : kind == R_MAX ? -INFINITY
                 : kind == R_MIN ? INFINITY : 0;
      int64_t n = ts_tensor_numel(&x);
      for (int64_t i = 0; i < n; i++) {
        int64_t ii[8];
        kc_unravel(i, dims, rank, ii);
        for (int k = 0; k < rank; k++)
          if (red[k]) ii[k] = 0;
        int64_t o = ravel(ii, kd, rank);
        double v = kc_get(&x, i);
        if (o == 0) count++;
        switch (kind) {
          case R_SUM: case R_MEAN: ref[o] += v; break;
          case R_PROD: ref[o] *= v; break;
          case R_MAX: ref[o] = fmax(ref[o], v); break;
          case R_MIN: ref[o] = fmin(ref[o], v); break;
        }
      }
      bool integral = t == TS_DTYPE_INT32 || t == TS_DTYPE_INT64;
      for (int64_t o = 0; o < on && kind == R_MEAN; o++)
        ref[o] = integral ? trunc(ref[o] / (double)count)
                          : ref[o] / (double)count;
      char what[64];
      snprintf(what, sizeof what, "%s %s", reduce_names[kind],
               ts_dtype_name(t));
      kc_assert_close(&y, ref, od, orank, t == TS_DTYPE_FLOAT ? 1e-5 : 1e-12,
                      1e-6, what);
      free(ref);
      kc_tensors_free((ts_tensor[]){x, a, y}, 3);
    }
}
END_TEST

START_TEST(test_reduce_sum_noop_and_empty) {
  ts_tensor x, y, e, a;
  ts_err err;
  double v[6] = {1, 2, 3, 4, 5, 6};
  kc_tensor_from(&x, TS_DTYPE_FLOAT, 2, (int64_t[]){2, 3}, v);
  const ts_tensor *in[1] = {&x};
  /* noop_with_empty_axes and no axes: the input unchanged. */
  Onnx__NodeProto *node;
  Onnx__ModelProto *m = kc_op_model("ReduceSum", "", 13, in, 1, 0, 1, &node);
  kc_attr_int(node, "noop_with_empty_axes", 1);
  ck_assert_int_eq(run_model(m, in, 1, 0, &y, 1, &err), 0);
  kc_assert_close(&y, v, x.dims, 2, 0, 0, "noop");
  ts_tensor_free(&y);
  /* An empty axes input means all axes without the flag. */
  kc_tensor_from(&a, TS_DTYPE_INT64, 1, (int64_t[]){0}, NULL);
  const ts_tensor *in2[2] = {&x, &a};
  m = kc_op_model("ReduceSum", "", 13, in2, 2, 2, 1, &node);
  kc_attr_int(node, "keepdims", 0);
  ck_assert_int_eq(run_model(m, in2, 2, 2, &y, 1, &err), 0);
  kc_assert_close(&y, (double[]){21}, NULL, 0, 0, 0, "empty axes");
  ts_tensor_free(&y);
  /* Reducing an empty dim: sum 0, mean NaN. */
  kc_tensor_from(&e, TS_DTYPE_FLOAT, 2, (int64_t[]){0, 3}, NULL);
  const ts_tensor *in3[1] = {&e};
  for (int kind = 0; kind < 2; kind++) {
    m = kc_op_model(reduce_names[kind], "", 11, in3, 1, 0, 1, &node);
    kc_attr_ints(node, "axes", 1, (int64_t[]){0});
    ck_assert_int_eq(run_model(m, in3, 1, 0, &y, 1, &err), 0);
    double want = kind ? NAN : 0;
    kc_assert_close(&y, (double[]){want, want, want}, (int64_t[]){1, 3}, 2, 0,
                    0, "empty reduction");
    ts_tensor_free(&y);
  }
  kc_tensors_free((ts_tensor[]){x, e, a}, 3);
}
END_TEST

/* ---- LayerNormalization ------------------------------------------------- */

START_TEST(test_layer_norm) {
  kc_rng r = kc_rng_seed(29);
  for (int trial = 0; trial < 24; trial++) {
    int rank = (int)kc_randint(&r, 1, 4);
    int64_t dims[8];
    kc_rand_dims(&r, rank, 1, 7, dims);
    int axis = (int)kc_randint(&r, 0, rank - 1);
    ts_dtype t = trial & 1 ? TS_DTYPE_DOUBLE : TS_DTYPE_FLOAT;
    bool bias = trial % 3 != 0, stats = trial % 4 == 0;
    float eps = trial % 5 ? 1e-5f : 0.1f;
    int64_t rows = 1, cols = 1;
    for (int k = 0; k < axis; k++) rows *= dims[k];
    for (int k = axis; k < rank; k++) cols *= dims[k];
    ts_tensor x, sc, b, y[3];
    ts_err err;
    kc_tensor_rand(&x, t, rank, dims, &r, -3, 5);
    kc_tensor_rand(&sc, t, rank - axis, dims + axis, &r, 0.5, 2);
    kc_tensor_rand(&b, t, rank - axis, dims + axis, &r, -1, 1);
    const ts_tensor *in[3] = {&x, &sc, bias ? &b : NULL};
    int n_out = stats ? 3 : 1;
    unsigned mask = (unsigned)kc_randint(&r, 0, 1) * 6;
    Onnx__NodeProto *node;
    Onnx__ModelProto *m = kc_op_model("LayerNormalization", "", 17, in, 3,
                                      mask, n_out, &node);
    kc_attr_int(node, "axis", trial & 2 ? axis - rank : axis);
    if (eps != 1e-5f) kc_attr_float(node, "epsilon", eps);
    int rc = run_model(m, in, 3, mask, y, n_out, &err);
    ck_assert_msg(rc == 0, "LayerNormalization: %s", err.msg);
    double *ref = malloc((size_t)(rows * cols) * sizeof *ref);
    double *mean = malloc((size_t)rows * sizeof *mean);
    double *inv = malloc((size_t)rows * sizeof *inv);
    for (int64_t i = 0; i < rows; i++) {
      double s = 0, v = 0;
      for (int64_t j = 0; j < cols; j++) s += kc_get(&x, i * cols + j);
      mean[i] = s / (double)cols;
      for (int64_t j = 0; j < cols; j++) {
        double d = kc_get(&x, i * cols + j) - mean[i];
        v += d * d;
      }
      inv[i] = 1 / sqrt(v / (double)cols + (double)eps);
      for (int64_t j = 0; j < cols; j++)
        ref[i * cols + j] = (kc_get(&x, i * cols + j) - mean[i]) * inv[i] *
                                kc_get(&sc, j) +
                            (bias ? kc_get(&b, j) : 0);
    }
    double tol = t == TS_DTYPE_FLOAT ? 1e-5 : 1e-12;
    kc_assert_close(&y[0], ref, dims, rank, tol, tol, "LayerNormalization");
    if (stats) {
      int64_t sd[8];
      for (int k = 0; k < rank; k++) sd[k] = k < axis ? dims[k] : 1;
      kc_assert_close(&y[1], mean, sd, rank, 1e-6, 1e-6, "Mean");
      kc_assert_close(&y[2], inv, sd, rank, 1e-6, 1e-6, "InvStdDev");
    }
    free(ref);
    free(mean);
    free(inv);
    kc_tensors_free(y, n_out);
    kc_tensors_free((ts_tensor[]){x, sc, b}, 3);
  }
}
END_TEST

/* Rows far from 0 (1e4 + U(-1, 1), 1e7 + integers, a constant row, an
 * outlying first element): the one-pass statistics and the centring keep
 * float precision against the float64 two-pass reference. */
START_TEST(test_layer_norm_offset_rows) {
  kc_rng r = kc_rng_seed(30);
  enum { COLS = 37 };
  double xv[4][COLS];
  for (int j = 0; j < COLS; j++) {
    xv[0][j] = 1e4 + kc_uniform(&r, -1, 1);
    xv[1][j] = 1e7 + (double)kc_randint(&r, -8, 8);
    xv[2][j] = 3.0;
    xv[3][j] = j == 0 ? 1e5 : kc_uniform(&r, -1, 1);
  }
  ts_tensor x, sc, y;
  ts_err err;
  kc_tensor_from(&x, TS_DTYPE_FLOAT, 2, (int64_t[]){4, COLS}, &xv[0][0]);
  kc_tensor_rand(&sc, TS_DTYPE_FLOAT, 1, (int64_t[]){COLS}, &r, 0.5, 2);
  const ts_tensor *in[2] = {&x, &sc};
  Onnx__ModelProto *m =
      kc_op_model("LayerNormalization", "", 17, in, 2, 2, 1, NULL);
  ck_assert_msg(run_model(m, in, 2, 2, &y, 1, &err) == 0, "%s", err.msg);
  double ref[4 * COLS];
  for (int64_t i = 0; i < 4; i++) {
    double s = 0, v = 0;
    for (int64_t j = 0; j < COLS; j++) s += kc_get(&x, i * COLS + j);
    const double mean = s / COLS;
    for (int64_t j = 0; j < COLS; j++) {
      const double d = kc_get(&x, i * COLS + j) - mean;
      v += d * d;
    }
    const double inv = 1 / sqrt(v / COLS + (double)1e-5f);
    for (int64_t j = 0; j < COLS; j++)
      ref[i * COLS + j] =
          (kc_get(&x, i * COLS + j) - mean) * inv * kc_get(&sc, j);
  }
  kc_assert_close(&y, ref, (int64_t[]){4, COLS}, 2, 1e-5, 1e-5,
                  "LayerNormalization offset rows");
  kc_tensors_free((ts_tensor[]){x, sc, y}, 3);
}
END_TEST

/* ---- symbolic shape arithmetic ------------------------------------------ */

/* x [B, S, 8] (B, S symbolic) -> Reshape to [B, S, 2, 4] with the target
 * computed from Shape(x) as torch.onnx.export writes it:
 * Shape -> Gather(0), Gather(1) -> Unsqueeze -> Concat(.., [2, 4]). Then
 * Transpose to [B, 2, S, 4] and Slice off the last S position. */
START_TEST(test_shape_arithmetic_symbolic) {
  Onnx__ModelProto *m = kc_model_new(13);
  ts_tensor i0, i1, tail, ax, st, en, sax;
  kc_tensor_from(&i0, TS_DTYPE_INT64, 0, NULL, (double[]){0});
  kc_tensor_from(&i1, TS_DTYPE_INT64, 0, NULL, (double[]){1});
  ints_tensor(&tail, 2, (int64_t[]){2, 4});
  ints_tensor(&ax, 1, (int64_t[]){0});
  ints_tensor(&st, 1, (int64_t[]){0});
  ints_tensor(&en, 1, (int64_t[]){-1});
  ints_tensor(&sax, 1, (int64_t[]){2});
  kc_model_input(m, "x", TS_DTYPE_FLOAT, 3, (int64_t[]){-1, -1, 8});
  kc_model_init(m, "i0", &i0);
  kc_model_init(m, "i1", &i1);
  kc_model_init(m, "tail", &tail);
  kc_model_init(m, "ax", &ax);
  kc_model_init(m, "st", &st);
  kc_model_init(m, "en", &en);
  kc_model_init(m, "sax", &sax);
  kc_model_output(m, "y", TS_DTYPE_UNDEFINED, -1, NULL);
  kc_model_node(m, "Shape", "", "shape", "x", "s");
  kc_model_node(m, "Gather", "", "g0", "s,i0", "b");
  kc_model_node(m, "Gather", "", "g1", "s,i1", "q");
  kc_model_node(m, "Unsqueeze", "", "u0", "b,ax", "b1");
  kc_model_node(m, "Unsqueeze", "", "u1", "q,ax", "q1");
  Onnx__NodeProto *cat = kc_model_node(m, "Concat", "", "cat", "b1,q1,tail",
                                       "target");
  kc_attr_int(cat, "axis", 0);
  kc_model_node(m, "Reshape", "", "reshape", "x,target", "r");
  Onnx__NodeProto *tr = kc_model_node(m, "Transpose", "", "tr", "r", "t");
  kc_attr_ints(tr, "perm", 4, (int64_t[]){0, 2, 1, 3});
  kc_model_node(m, "Slice", "", "slice", "t,st,en,sax", "y");
  ts_model *model;
  ts_session *s;
  ts_err err;
  int rc = kc_model_load(m, &model, &err);
  ck_assert_msg(rc == 0, "load: %s", err.msg);
  ck_assert_int_eq(ts_session_create(&s, &err), 0);
  kc_rng r = kc_rng_seed(30);
  const int64_t shapes[3][2] = {{2, 3}, {1, 7}, {3, 1}};
  for (int c = 0; c < 3; c++) {
    int64_t B = shapes[c][0], S = shapes[c][1];
    ts_tensor x, y;
    kc_tensor_rand(&x, TS_DTYPE_FLOAT, 3, (int64_t[]){B, S, 8}, &r, -1, 1);
    const char *names[1] = {"x"};
    rc = ts_exec_run(model, s, names, &x, 1, NULL, &y, 0, &err);
    ck_assert_msg(rc == 0, "run: %s", err.msg);
    /* y[b, h, s, d] = x[b, s, h * 4 + d] for s < S - 1. */
    int64_t od[4] = {B, 2, S - 1, 4};
    double ref[256];
    for (int64_t i = 0; i < B * 2 * (S - 1) * 4; i++) {
      int64_t o[4];
      kc_unravel(i, od, 4, o);
      ref[i] = kc_get(&x, (o[0] * S + o[2]) * 8 + o[1] * 4 + o[3]);
    }
    kc_assert_close(&y, ref, od, 4, 0, 0, "symbolic chain");
    ts_tensor_free(&x);
  }
  ts_session_free(s);
  ts_model_free(model);
  kc_model_free(m);
  kc_tensors_free((ts_tensor[]){i0, i1, tail, ax, st, en, sax}, 7);
}
END_TEST

/* ---- bad models ---------------------------------------------------------- */

START_TEST(test_bad_models) {
  ts_tensor x, i, neg, big;
  ts_err err;
  Onnx__NodeProto *n;
  Onnx__ModelProto *m;
  kc_tensor_from(&x, TS_DTYPE_FLOAT, 3, (int64_t[]){2, 3, 4}, NULL);
  ints_tensor(&i, 1, (int64_t[]){0});
  ints_tensor(&neg, 1, (int64_t[]){-1});
  ints_tensor(&big, 1, (int64_t[]){3});
  const ts_tensor *x1[1] = {&x};

  /* Transpose: not a permutation; an unknown attribute. */
  m = kc_op_model("Transpose", "", 13, x1, 1, 0, 1, &n);
  kc_attr_ints(n, "perm", 3, (int64_t[]){0, 0, 1});
  ck_assert_int_eq(kc_load_code(m, &err), TS_EINVAL);
  m = kc_op_model("Transpose", "", 13, x1, 1, 0, 1, &n);
  kc_attr_int(n, "axis", 0);
  ck_assert_int_eq(kc_load_code(m, &err), TS_EUNSUPPORTED);
  ck_assert_msg(strstr(err.msg, "'axis'") && strstr(err.msg, "Transpose"),
                "names op and attribute: %s", err.msg);
  /* Attributes of the wrong type (ts_attr_int would use its default). */
  m = kc_op_model("Gather", "", 13, (const ts_tensor *[]){&x, &i}, 2, 0, 1, &n);
  kc_attr_float(n, "axis", 1);
  ck_assert_int_eq(kc_load_code(m, &err), TS_EINVAL);
  ck_assert_msg(strstr(err.msg, "'axis'"), "names it: %s", err.msg);
  m = kc_op_model("Transpose", "", 13, x1, 1, 0, 1, &n);
  kc_attr_int(n, "perm", 0);
  ck_assert_int_eq(kc_load_code(m, &err), TS_EINVAL);
  /* A bad perm is caught at load even when the rank is not known. */
  Onnx__ModelProto *mr = kc_model_new(13);
  kc_model_input(mr, "x", TS_DTYPE_FLOAT, -1, NULL);
  kc_model_output(mr, "y", TS_DTYPE_UNDEFINED, -1, NULL);
  n = kc_model_node(mr, "Transpose", "", "t", "x", "y");
  kc_attr_ints(n, "perm", 2, (int64_t[]){1, 2});
  ck_assert_int_eq(kc_load_code(mr, &err), TS_EINVAL);
  /* Gather / Concat axis out of range; Concat without axis. */
  m = kc_op_model("Gather", "", 13, (const ts_tensor *[]){&x, &i}, 2, 0, 1, &n);
  kc_attr_int(n, "axis", 3);
  ck_assert_int_eq(kc_load_code(m, &err), TS_EINVAL);
  m = kc_op_model("Concat", "", 13, x1, 1, 0, 1, &n);
  ck_assert_int_eq(kc_load_code(m, &err), TS_EINVAL);
  m = kc_op_model("Concat", "", 13, x1, 1, 0, 1, &n);
  kc_attr_int(n, "axis", -4);
  ck_assert_int_eq(kc_load_code(m, &err), TS_EINVAL);
  /* Concat of mismatched dims. */
  ts_tensor x2;
  kc_tensor_from(&x2, TS_DTYPE_FLOAT, 3, (int64_t[]){2, 5, 4}, NULL);
  m = kc_op_model("Concat", "", 13, (const ts_tensor *[]){&x, &x2}, 2, 0, 1,
                  &n);
  kc_attr_int(n, "axis", 0);
  ck_assert_int_eq(kc_load_code(m, &err), TS_EINVAL);
  /* Squeeze of a dim that is not 1; Unsqueeze with a repeated axis. */
  ck_assert_int_eq(kc_load_code(kc_op_model("Squeeze", "", 13,
                                         (const ts_tensor *[]){&x, &i}, 2, 2,
                                         1, NULL), &err), TS_EINVAL);
  ts_tensor rep;
  ints_tensor(&rep, 2, (int64_t[]){1, -4}); /* -4 + 5 == 1 */
  ck_assert_int_eq(kc_load_code(kc_op_model("Unsqueeze", "", 13,
                                         (const ts_tensor *[]){&x, &rep}, 2, 2,
                                         1, NULL), &err), TS_EINVAL);
  /* Inputs that the node's opset does not have yet (they would be
   * ignored): Unsqueeze 11, Split 11, Slice 9 given input-form operands. */
  ck_assert_int_eq(kc_load_code(kc_op_model("Unsqueeze", "", 11,
                                         (const ts_tensor *[]){&x, &i}, 2, 2,
                                         1, NULL), &err), TS_EINVAL);
  ck_assert_msg(strstr(err.msg, "opset 13"), "says which opset: %s", err.msg);
  ck_assert_int_eq(kc_load_code(kc_op_model("Split", "", 11,
                                         (const ts_tensor *[]){&x, &i}, 2, 2,
                                         1, NULL), &err), TS_EINVAL);
  ck_assert_int_eq(kc_load_code(kc_op_model("Slice", "", 9,
                                         (const ts_tensor *[]){&x, &i, &big},
                                         3, 6, 1, NULL), &err), TS_EINVAL);
  /* Unsqueeze opset 13 with the old attribute. */
  m = kc_op_model("Unsqueeze", "", 13, x1, 1, 0, 1, &n);
  kc_attr_ints(n, "axes", 1, (int64_t[]){0});
  ck_assert_int_eq(kc_load_code(m, &err), TS_EUNSUPPORTED);
  /* Slice: step 0; axis out of range; lengths that differ. */
  ts_tensor zero, two;
  ints_tensor(&zero, 1, (int64_t[]){0});
  ints_tensor(&two, 2, (int64_t[]){0, 1});
  ck_assert_int_eq(
      kc_load_code(kc_op_model("Slice", "", 13,
                            (const ts_tensor *[]){&x, &i, &big, &i, &zero}, 5,
                            30, 1, NULL), &err), TS_EINVAL);
  ck_assert_int_eq(
      kc_load_code(kc_op_model("Slice", "", 13,
                            (const ts_tensor *[]){&x, &i, &big, &big}, 4, 14,
                            1, NULL), &err), TS_EINVAL);
  ck_assert_int_eq(
      kc_load_code(kc_op_model("Slice", "", 13,
                            (const ts_tensor *[]){&x, &i, &two}, 3, 6, 1,
                            NULL), &err), TS_EINVAL);
  /* Split: sizes that do not add up; parts that are not equal. */
  ck_assert_int_eq(kc_load_code(kc_op_model("Split", "", 13,
                                         (const ts_tensor *[]){&x, &two}, 2, 2,
                                         2, NULL), &err), TS_EINVAL);
  m = kc_op_model("Split", "", 13, x1, 1, 0, 2, &n);
  kc_attr_int(n, "axis", 1);
  ck_assert_int_eq(kc_load_code(m, &err), TS_EINVAL);
  /* ConstantOfShape with a negative dim; Tile with a negative repeat. */
  ck_assert_int_eq(kc_load_code(kc_op_model("ConstantOfShape", "", 13,
                                         (const ts_tensor *[]){&neg}, 1, 1, 1,
                                         NULL), &err), TS_EINVAL);
  ts_tensor reps;
  ints_tensor(&reps, 3, (int64_t[]){1, -1, 1});
  ck_assert_int_eq(kc_load_code(kc_op_model("Tile", "", 13,
                                         (const ts_tensor *[]){&x, &reps}, 2,
                                         2, 1, NULL), &err), TS_EINVAL);
  /* Range with delta 0. */
  ts_tensor s0, s1;
  kc_tensor_from(&s0, TS_DTYPE_INT64, 0, NULL, (double[]){0});
  kc_tensor_from(&s1, TS_DTYPE_INT64, 0, NULL, (double[]){5});
  ck_assert_int_eq(kc_load_code(kc_op_model("Range", "", 11,
                                         (const ts_tensor *[]){&s0, &s1, &s0},
                                         3, 7, 1, NULL), &err), TS_EINVAL);
  /* Reduce: axis out of range, repeated; ReduceMean's axes input is not
   * in opset 13; an unknown attribute. */
  m = kc_op_model("ReduceMean", "", 13, x1, 1, 0, 1, &n);
  kc_attr_ints(n, "axes", 1, (int64_t[]){3});
  ck_assert_int_eq(kc_load_code(m, &err), TS_EINVAL);
  m = kc_op_model("ReduceMax", "", 13, x1, 1, 0, 1, &n);
  kc_attr_ints(n, "axes", 2, (int64_t[]){1, -2});
  ck_assert_int_eq(kc_load_code(m, &err), TS_EINVAL);
  ck_assert_int_eq(kc_load_code(kc_op_model("ReduceMean", "", 13,
                                         (const ts_tensor *[]){&x, &i}, 2, 2,
                                         1, NULL), &err), TS_EINVAL);
  m = kc_op_model("ReduceSum", "", 13, x1, 1, 0, 1, &n);
  kc_attr_ints(n, "axes", 1, (int64_t[]){0}); /* an input from opset 13 */
  ck_assert_int_eq(kc_load_code(m, &err), TS_EUNSUPPORTED);
  /* LayerNormalization: stash_type other than float; Scale of the wrong
   * shape. */
  ts_tensor sc, sc_bad;
  kc_tensor_from(&sc, TS_DTYPE_FLOAT, 1, (int64_t[]){4}, NULL);
  kc_tensor_from(&sc_bad, TS_DTYPE_FLOAT, 1, (int64_t[]){3}, NULL);
  m = kc_op_model("LayerNormalization", "", 17,
                  (const ts_tensor *[]){&x, &sc}, 2, 2, 1, &n);
  kc_attr_int(n, "stash_type", 11);
  ck_assert_int_eq(kc_load_code(m, &err), TS_EUNSUPPORTED);
  ck_assert_msg(strstr(err.msg, "stash_type"), "names it: %s", err.msg);
  ck_assert_int_eq(kc_load_code(kc_op_model("LayerNormalization", "", 17,
                                         (const ts_tensor *[]){&x, &sc_bad}, 2,
                                         2, 1, NULL), &err), TS_EINVAL);
  kc_tensors_free((ts_tensor[]){x, i, neg, big, x2, rep, zero, two, reps, s0,
                                s1, sc, sc_bad},
                  13);
}
END_TEST

/* A run-time value that is bad only for this request. */
START_TEST(test_runtime_errors) {
  Onnx__ModelProto *m = kc_model_new(13);
  kc_model_input(m, "x0", TS_DTYPE_FLOAT, 2, (int64_t[]){-1, 4});
  kc_model_input(m, "x1", TS_DTYPE_INT64, 1, (int64_t[]){2});
  kc_model_output(m, "y0", TS_DTYPE_UNDEFINED, -1, NULL);
  kc_model_node(m, "Tile", "", "tile", "x0,x1", "y0");
  ts_tensor x, reps, y;
  ts_err err;
  kc_tensor_from(&x, TS_DTYPE_FLOAT, 2, (int64_t[]){3, 4}, NULL);
  ints_tensor(&reps, 2, (int64_t[]){2, -2});
  const ts_tensor *in[2] = {&x, &reps};
  ck_assert_int_eq(kc_model_run(m, in, 2, 0, &y, 1, &err), TS_EINVAL);
  ck_assert_msg(strstr(err.msg, "tile"), "names the node: %s", err.msg);
  ((int64_t *)reps.data)[1] = 2;
  ck_assert_int_eq(kc_model_run(m, in, 2, 0, &y, 1, &err), 0);
  kc_assert_shape(&y, (int64_t[]){6, 8}, 2, "Tile");
  kc_tensors_free((ts_tensor[]){x, reps, y}, 3);
  kc_model_free(m);
}
END_TEST

static Suite *suite(void) {
  Suite *s = suite_create("kernels_transformer");
  TCase *tc = ts_check_tcase(s, "kernels", 120, NULL, NULL);
  tcase_add_test(tc, test_transpose);
  tcase_add_test(tc, test_shape);
  tcase_add_test(tc, test_gather);
  tcase_add_test(tc, test_gather_index_out_of_range);
  tcase_add_test(tc, test_unsqueeze_squeeze);
  tcase_add_test(tc, test_concat);
  tcase_add_test(tc, test_slice);
  tcase_add_test(tc, test_slice_opset9_attributes);
  tcase_add_test(tc, test_split);
  tcase_add_test(tc, test_constant_of_shape);
  tcase_add_test(tc, test_range);
  tcase_add_test(tc, test_tile);
  tcase_add_test(tc, test_reduce);
  tcase_add_test(tc, test_reduce_sum_noop_and_empty);
  tcase_add_test(tc, test_layer_norm);
  tcase_add_test(tc, test_layer_norm_offset_rows);
  tcase_add_test(tc, test_shape_arithmetic_symbolic);
  tcase_add_test(tc, test_bad_models);
  tcase_add_test(tc, test_runtime_errors);
  return s;
}

const ts_check_suite ts_check_this_suite = {.make = suite};
