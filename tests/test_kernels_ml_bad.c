/*
 * test_kernels_ml_bad.c - every bad-attribute and bad-input class of the
 * ai.onnx.ml kernels (kernels/ml.c), each expecting its exact code and a
 * message naming the attribute or input. The harness is ml_check.h; the
 * kernels' references are test_kernels_ml.c's.
 */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check_main.h"
#include "ml_check.h"


static const float F10[10] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};

/* A node's attributes in one line, space-separated name=value:
 *   f<k>        floats 1..k          [a,b,c]  ints
 *   'text'      a string             S<k>     k strings
 *   <integer>   an int                                                   */
static attr_list *parse_attrs(const char *spec) {
  attr_list *al = attrs_new();
  char buf[512], *save = NULL;
  snprintf(buf, sizeof buf, "%s", spec);
  for (char *tok = strtok_r(buf, " ", &save); tok;
       tok = strtok_r(NULL, " ", &save)) {
    char *v = strchr(tok, '=');
    ck_assert_msg(v != NULL, "bad attribute spec '%s'", tok);
    *v++ = 0;
    if (v[0] == 'f') {
      add_floats(al, tok, F10, strtoul(v + 1, NULL, 10));
    } else if (v[0] == 'S') {
      add_strings(al, tok, atoi(v + 1));
    } else if (v[0] == '\'') {
      v[strlen(v) - 1] = 0;
      add_string(al, tok, v + 1);
    } else if (v[0] == '[') {
      int64_t ints[16];
      size_t n = 0;
      for (char *q = v + 1; *q && *q != ']' && n < 16; n++) {
        ints[n] = strtoll(q, &q, 10);
        if (*q == ',') q++;
      }
      add_ints(al, tok, ints, n);
    } else {
      add_int(al, tok, strtoll(v, NULL, 10));
    }
  }
  return al;
}

/* One model to load: op, attributes, the feature count of the declared
 * input X [3, features], and the expected code (0: loads) and a piece of
 * the message (it must also name the op). */
typedef struct attr_case {
  const char *op;
  const char *attrs;
  int features;
  int code;
  const char *needle;
} attr_case;

#define SVR2 "kernel_type='RBF' n_supports=2 support_vectors=f4 "
#define SVC3 "kernel_type='POLY' kernel_params=f3 classlabels_ints=[0,1,2] "
#define SVC3V SVC3 "vectors_per_class=[1,2,1] support_vectors=f8 "

static const attr_case attr_cases[] = {
    /* LinearRegressor */
    {"LinearRegressor", "coefficients=f7 targets=2", 4, TS_EINVAL,
     "coefficients"},
    {"LinearRegressor", "coefficients=f8 intercepts=f3 targets=2", 4, TS_EINVAL,
     "intercepts"},
    {"LinearRegressor", "coefficients=f4 targets=0", 4, TS_EINVAL, "targets"},
    {"LinearRegressor", "targets=1", 4, TS_EINVAL, "coefficients"},
    {"LinearRegressor", "coefficients=[0,1,2,3]", 4, TS_EINVAL, "coefficients"},
    {"LinearRegressor", "coefficients=f4 targets='1'", 4, TS_EINVAL, "targets"},
    {"LinearRegressor", "coefficients=f4 post_transform='TANH'", 4,
     TS_EUNSUPPORTED, "post_transform"},
    {"LinearRegressor", "coefficients=f4 post_transform=1", 4, TS_EINVAL,
     "post_transform"},
    {"LinearRegressor", "coefficients=f4 bias=1", 4, TS_EUNSUPPORTED, "bias"},
    /* LinearClassifier */
    {"LinearClassifier",
     "coefficients=f8 intercepts=f2 classlabels_ints=[0,1,2]", 4, TS_EINVAL,
     "classlabels_ints"},
    {"LinearClassifier", "coefficients=f9 intercepts=f2", 4, TS_EINVAL,
     "coefficients"},
    {"LinearClassifier", "coefficients=f8", 4, TS_EINVAL, "intercepts"},
    {"LinearClassifier", "coefficients=f4 intercepts=f1 classlabels_ints=[0]",
     4, TS_EINVAL, "classlabels_ints"},
    {"LinearClassifier", "coefficients=f8 classlabels_strings=S2", 4,
     TS_EUNSUPPORTED, "classlabels_strings"},
    {"LinearClassifier",
     "coefficients=f4 intercepts=f1 classlabels_ints=[0,1] "
     "post_transform='SOFTMAX'",
     4, TS_EUNSUPPORTED, "post_transform"},
    {"LinearClassifier",
     "coefficients=f8 classlabels_ints=[0,1] multi_class=f1", 4, TS_EINVAL,
     "multi_class"},
    /* SVMRegressor: 2 support vectors of 2 features */
    {"SVMRegressor", SVR2 "kernel_params=f3 coefficients=f2 rho=f1", 2, 0, ""},
    {"SVMRegressor", "n_supports=3 support_vectors=f10 coefficients=f3 rho=f1",
     2, TS_EINVAL, "support_vectors"},
    {"SVMRegressor", SVR2 "coefficients=f3 rho=f1", 2, TS_EINVAL,
     "coefficients"},
    {"SVMRegressor", SVR2 "coefficients=f2 rho=f2", 2, TS_EINVAL, "rho"},
    {"SVMRegressor", SVR2 "kernel_params=f2 coefficients=f2 rho=f1", 2,
     TS_EINVAL, "kernel_params"},
    {"SVMRegressor", "n_supports=-1 coefficients=f2 rho=f1", 2, TS_EINVAL,
     "n_supports"},
    {"SVMRegressor", "n_supports=0 support_vectors=f4 coefficients=f2 rho=f1",
     2, TS_EINVAL, "support_vectors"},
    {"SVMRegressor",
     "kernel_type='CUBIC' n_supports=2 support_vectors=f4 coefficients=f2 "
     "rho=f1",
     2, TS_EUNSUPPORTED, "kernel_type"},
    {"SVMRegressor", SVR2 "coefficients=f2 rho=f1 post_transform='LOGISTIC'", 2,
     TS_EUNSUPPORTED, "post_transform"},
    {"SVMRegressor", SVR2 "coefficients=f2 rho=f1", 4, TS_EINVAL, "'X'"},
    /* SVMClassifier: 3 classes with 1, 2, 1 vectors of 2 features */
    {"SVMClassifier", SVC3V "coefficients=f8 rho=f3 prob_a=f3 prob_b=f3", 2, 0,
     ""},
    {"SVMClassifier",
     SVC3 "vectors_per_class=[1,2] support_vectors=f8 coefficients=f8 rho=f3",
     2, TS_EINVAL, "vectors_per_class"},
    {"SVMClassifier",
     SVC3 "vectors_per_class=[1,2,1] support_vectors=f7 coefficients=f8 "
          "rho=f3",
     2, TS_EINVAL, "support_vectors"},
    {"SVMClassifier", SVC3V "coefficients=f6 rho=f3", 2, TS_EINVAL,
     "coefficients"},
    {"SVMClassifier", SVC3V "coefficients=f8 rho=f2", 2, TS_EINVAL, "rho"},
    {"SVMClassifier", SVC3V "coefficients=f8 rho=f3 prob_a=f3", 2, TS_EINVAL,
     "prob_b"},
    {"SVMClassifier", SVC3V "coefficients=f8 rho=f3 prob_a=f2 prob_b=f2", 2,
     TS_EINVAL, "prob_a"},
    {"SVMClassifier",
     "vectors_per_class=[1,2,1] support_vectors=f8 coefficients=f8 rho=f3", 2,
     TS_EINVAL, "classlabels_ints"},
    {"SVMClassifier", "classlabels_ints=[0] coefficients=f2 rho=f1", 2,
     TS_EINVAL, "classlabels_ints"},
    {"SVMClassifier",
     "classlabels_strings=S3 vectors_per_class=[1,2,1] support_vectors=f8 "
     "coefficients=f8 rho=f3",
     2, TS_EUNSUPPORTED, "classlabels_strings"},
    {"SVMClassifier",
     SVC3 "vectors_per_class=[1,-1,2] support_vectors=f8 coefficients=f8 "
          "rho=f3",
     2, TS_EINVAL, "vectors_per_class"},
    /* Two classes without probabilities: only NONE has a meaning. */
    {"SVMClassifier",
     "classlabels_ints=[0,1] vectors_per_class=[1,1] support_vectors=f4 "
     "coefficients=f2 rho=f1 post_transform='LOGISTIC'",
     2, TS_EUNSUPPORTED, "post_transform"},
    /* Linear mode: weights [classes, features], one rho, no probabilities */
    {"SVMClassifier", SVC3 "coefficients=f6 rho=f1", 2, 0, ""},
    {"SVMClassifier", SVC3 "coefficients=f7 rho=f1", 2, TS_EINVAL,
     "coefficients"},
    {"SVMClassifier", SVC3 "coefficients=f6 rho=f3", 2, TS_EINVAL, "rho"},
    {"SVMClassifier", SVC3 "coefficients=f6 rho=f1 prob_a=f3 prob_b=f3", 2,
     TS_EUNSUPPORTED, "prob_a"},
    {"SVMClassifier", SVC3 "support_vectors=f4 coefficients=f6 rho=f1", 2,
     TS_EINVAL, "support_vectors"},
    /* Normalizer and Scaler */
    {"Normalizer", "norm='L3'", 4, TS_EUNSUPPORTED, "norm"},
    {"Normalizer", "norm=2", 4, TS_EINVAL, "norm"},
    {"Scaler", "offset=f3 scale=f2", 4, TS_EINVAL, "offset"},
    {"Scaler", "scale=f3", 4, TS_EINVAL, "scale"},
};

/* Input checks that only a run can make (symbolic feature dim), and input
 * types the ops do not take. */
START_TEST(test_bad_inputs) {
  ts_session *s;
  ts_err err;
  ck_assert_int_eq(ts_session_create(&s, &err), 0);
  attr_list *al = attrs_new();
  add_floats(al, "coefficients", F10, 4);
  ts_model *m =
      must_load("LinearRegressor", al, input_2d(TS_DTYPE_FLOAT, -1, -1), 1);
  double x[12] = {0};
  int64_t dims[2] = {3, 4};
  ts_tensor out[2];
  ck_assert_int_eq(run_model(m, s, TS_DTYPE_FLOAT, x, 2, dims, out, &err), 0);
  dims[1] = 3;
  ck_assert_int_eq(run_model(m, s, TS_DTYPE_FLOAT, x, 2, dims, out, &err),
                   TS_EINVAL);
  ck_assert_msg(strstr(err.msg, "'X'") && strstr(err.msg, "LinearRegressor"),
                "message: %s", err.msg);
  ts_model_free(m);

  al = attrs_new();
  add_floats(al, "scale", F10, 3);
  m = must_load("Scaler", al, input_2d(TS_DTYPE_FLOAT, -1, -1), 1);
  ck_assert_int_eq(run_model(m, s, TS_DTYPE_FLOAT, x, 2, dims, out, &err), 0);
  dims[1] = 4;
  ck_assert_int_eq(run_model(m, s, TS_DTYPE_FLOAT, x, 2, dims, out, &err),
                   TS_EINVAL);
  ck_assert_msg(strstr(err.msg, "scale"), "message: %s", err.msg);
  ts_model_free(m);

  al = attrs_new();
  add_string(al, "norm", "L1");
  input_spec rank3 = {TS_DTYPE_FLOAT, 3, {2, 2, 2}};
  expect_load_error("Normalizer", al, rank3, 1, TS_EINVAL, "rank 3");
  al = attrs_new();
  expect_load_error("Normalizer", al, input_2d(TS_DTYPE_UINT8, 2, 2), 1,
                    TS_EINVAL, "uint8");
  ts_session_free(s);
}
END_TEST

START_TEST(test_bad_attributes) {
  for (size_t i = 0; i < sizeof attr_cases / sizeof attr_cases[0]; i++) {
    const attr_case *c = &attr_cases[i];
    attr_list *al = parse_attrs(c->attrs);
    int outputs = strstr(c->op, "Classifier") ? 2 : 1;
    /* A static batch: load-time inference reports shape errors only when
     * no symbolic dim reaches the node. */
    input_spec in = input_2d(TS_DTYPE_FLOAT, 3, c->features);
    if (c->code == 0)
      ts_model_free(must_load(c->op, al, in, outputs));
    else
      expect_load_error(c->op, al, in, outputs, c->code, c->needle);
  }
}
END_TEST

TS_CHECK_ONE_CASE_SUITE("kernels_ml_bad", "bad", 120, NULL, NULL,
                        test_bad_attributes, test_bad_inputs);
