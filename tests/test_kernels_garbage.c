/*
 * test_kernels_garbage.c - garbage in, an error out: every op of
 * kernels/elementwise.c and kernels/transformer.c (they share their
 * input-reading helpers) as a one-node model on random garbage. The kernels'
 * references are test_kernels_elementwise.c's and
 * test_kernels_transformer.c's.
 */
#include <check.h>
#include <stdint.h>

#include "check_main.h"
#include "kernel_check.h"
#include "list_elementwise.h"
#include "list_transformer.h"

/* Every op of both kernel files (they share their input-reading helpers),
 * on random garbage: random dtypes, ranks, dims (0 included), integer
 * values (INT64_MIN and INT64_MAX included), random attributes of random
 * types. Loading and running must end in 0, TS_EINVAL or TS_EUNSUPPORTED:
 * never a crash, a hang, another code, or (under the sanitizer build) a
 * leak or an out-of-bounds access. */
#define OP_NAME(domain, op, symbol) op,
static const char *const all_ops[] = {TS_OPS_ELEMENTWISE(OP_NAME)
                                          TS_OPS_TRANSFORMER(OP_NAME)};
#undef OP_NAME

static const char *const attr_pool[] = {
    "axis",   "axes",     "perm",  "start",  "end",     "starts",
    "ends",   "split",    "keepdims", "noop_with_empty_axes", "epsilon",
    "stash_type", "to",   "alpha", "min",    "max",     "value"};

static int64_t garbage_int(kc_rng *r) {
  switch (kc_randint(r, 0, 19)) {
    case 0: return INT64_MAX;
    case 1: return INT64_MIN;
    default: return kc_randint(r, -3, 4);
  }
}

static void garbage_tensor(kc_rng *r, ts_tensor *t) {
  static const ts_dtype types[] = {TS_DTYPE_FLOAT, TS_DTYPE_INT64,
                                   TS_DTYPE_INT64, TS_DTYPE_INT32,
                                   TS_DTYPE_BOOL,  TS_DTYPE_DOUBLE,
                                   TS_DTYPE_UINT8, TS_DTYPE_FLOAT16};
  int64_t dims[4];
  int rank = (int)kc_randint(r, 0, 3);
  kc_rand_dims(r, rank, 0, 3, dims);
  ts_dtype dt = types[kc_randint(r, 0, 7)];
  kc_tensor_from(t, dt, rank, dims, NULL);
  int64_t n = ts_tensor_numel(t);
  for (int64_t i = 0; i < n; i++) {
    if (dt == TS_DTYPE_INT64)
      ((int64_t *)t->data)[i] = garbage_int(r);
    else if (dt != TS_DTYPE_FLOAT16)
      kc_set(t, i, dt == TS_DTYPE_FLOAT || dt == TS_DTYPE_DOUBLE
                       ? kc_uniform(r, -5, 5)
                       : (double)kc_randint(r, -3, 4));
  }
}

static void garbage_attr(kc_rng *r, Onnx__NodeProto *n) {
  const char *name = attr_pool[kc_randint(r, 0, 16)];
  int64_t v[4] = {garbage_int(r), garbage_int(r), garbage_int(r),
                  garbage_int(r)};
  switch (kc_randint(r, 0, 3)) {
    case 0: kc_attr_int(n, name, v[0]); break;
    case 1: kc_attr_ints(n, name, (size_t)kc_randint(r, 0, 4), v); break;
    case 2: kc_attr_float(n, name, (float)kc_uniform(r, -3, 3)); break;
    default: {
      ts_tensor t;
      garbage_tensor(r, &t);
      kc_attr_tensor(n, name, &t);
      ts_tensor_free(&t);
    }
  }
}

START_TEST(test_garbage_models_never_crash) {
  kc_rng r = kc_rng_seed(31);
  int ok = 0, failed = 0;
  for (size_t o = 0; o < sizeof all_ops / sizeof all_ops[0]; o++) {
    const ts_op *op = ts_op_find("", all_ops[o]);
    ck_assert_ptr_nonnull(op);
    for (int trial = 0; trial < 150; trial++) {
      ts_tensor x[5], y[3];
      const ts_tensor *in[5];
      int max_in = op->max_inputs < 5 ? op->max_inputs : 5;
      int n_in = (int)kc_randint(&r, op->min_inputs, max_in);
      int n_out = (int)kc_randint(&r, op->min_outputs,
                                  op->max_outputs < 3 ? op->max_outputs : 3);
      for (int j = 0; j < n_in; j++) {
        garbage_tensor(&r, &x[j]);
        in[j] = j >= op->min_inputs && kc_randint(&r, 0, 3) == 0 ? NULL
                                                                  : &x[j];
      }
      unsigned mask = (unsigned)kc_randint(&r, 0, 31);
      Onnx__NodeProto *node;
      Onnx__ModelProto *m = kc_op_model(all_ops[o], "",
                                        kc_randint(&r, 9, 17), in, n_in, mask,
                                        n_out, &node);
      for (int a = (int)kc_randint(&r, 0, 2); a > 0; a--)
        garbage_attr(&r, node);
      ts_err err;
      int rc = kc_model_run(m, in, n_in, mask, y, n_out, &err);
      kc_model_free(m);
      ck_assert_msg(rc == 0 || rc == TS_EINVAL || rc == TS_EUNSUPPORTED,
                    "%s: code %d: %s", all_ops[o], rc, err.msg);
      if (rc == 0) {
        ok++;
        kc_tensors_free(y, n_out);
      } else {
        failed++;
        ck_assert_msg(err.msg[0], "%s: code %d without a message", all_ops[o],
                      rc);
      }
      kc_tensors_free(x, n_in);
    }
  }
  /* The garbage must not be so bad that nothing ever runs. */
  ck_assert_msg(ok > 100 && failed > 100, "ok %d, failed %d", ok, failed);
}
END_TEST

static Suite *suite(void) {
  Suite *s = suite_create("kernels_garbage");
  TCase *tc = ts_check_tcase(s, "garbage", 120, NULL, NULL);
  tcase_add_test(tc, test_garbage_models_never_crash);
  return s;
}

const ts_check_suite ts_check_this_suite = {.make = suite};
