/*
 * test_kernels_ml_sklearn.c - scikit-learn's own models on the ai.onnx.ml
 * kernels (kernels/ml.c): tests/python/sklearn_models.py trains them and
 * writes each as an ONNX graph with scikit-learn's predictions (.npy);
 * every model in its manifest runs here through ts_model_load_file and
 * ts_exec_run and must match those within the manifest's tolerance. The
 * kernels' own references are test_kernels_ml.c's.
 */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check_main.h"
#include "exec.h"
#include "graph.h"
#include "npy.h"

#define PYTHON "/usr/bin/python3"

static char *read_text(const char *path) {
  FILE *f = fopen(path, "rb");
  ck_assert_msg(f != NULL, "cannot open %s", path);
  fseek(f, 0, SEEK_END);
  long len = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *buf = malloc((size_t)len + 1);
  ck_assert_ptr_nonnull(buf);
  ck_assert_int_eq(fread(buf, 1, (size_t)len, f), (size_t)len);
  buf[len] = 0;
  fclose(f);
  return buf;
}

/* Copies the JSON string value after `key` (e.g. "\"file\": \"") at or after
 * p into out; returns the position after it, or NULL when absent before
 * `end`. */
static const char *json_string(const char *p, const char *end, const char *key,
                               char *out, size_t size) {
  const char *k = strstr(p, key);
  if (!k || (end && k >= end)) return NULL;
  k += strlen(key);
  const char *q = strchr(k, '"');
  ck_assert_ptr_nonnull(q);
  ck_assert_uint_lt((size_t)(q - k), size);
  memcpy(out, k, (size_t)(q - k));
  out[q - k] = 0;
  return q + 1;
}

static double json_number(const char *p, const char *end, const char *key) {
  const char *k = strstr(p, key);
  ck_assert_msg(k && (!end || k < end), "manifest lacks %s", key);
  return strtod(k + strlen(key), NULL);
}

/* Runs one manifest model (the text from `p` to `end` describes it) and
 * compares each output with its reference. Returns how many outputs it
 * compared. */
static int check_sklearn_model(const char *dir, const char *p, const char *end,
                               ts_session *s) {
  char name[128], file[256], input_file[256], path[512];
  ts_err err;
  ck_assert_ptr_nonnull(json_string(p, end, "\"name\": \"", name, sizeof name));
  ck_assert_ptr_nonnull(json_string(p, end, "\"file\": \"", file, sizeof file));
  ck_assert_ptr_nonnull(
      json_string(p, end, "\"input_file\": \"", input_file, sizeof input_file));
  snprintf(path, sizeof path, "%s/%s", dir, file);
  ts_model *m = NULL;
  int rc = ts_model_load_file(path, &m, &err);
  ck_assert_msg(rc == 0, "%s: load failed: %s", name, err.msg);
  ts_tensor x;
  snprintf(path, sizeof path, "%s/%s", dir, input_file);
  ck_assert_msg(ts_npy_read(path, &x, &err) == 0, "%s", err.msg);

  const ts_graph *g = &m->graph;
  ts_tensor outs[4];
  ck_assert_int_le(g->n_outputs, 4);
  const char *in_names[] = {"X"};
  rc = ts_exec_run(m, s, in_names, &x, 1, NULL, outs, 0, &err);
  ck_assert_msg(rc == 0, "%s: run failed: %s", name, err.msg);

  int compared = 0;
  const char *o = strstr(p, "\"outputs\"");
  ck_assert_msg(o && o < end, "%s: no outputs in manifest", name);
  char out_name[64], ref_file[256];
  while ((o = json_string(o, end, "\"name\": \"", out_name, sizeof out_name))) {
    ck_assert_ptr_nonnull(o = json_string(o, end, "\"reference\": \"", ref_file,
                                          sizeof ref_file));
    const char *next = strstr(o, "\"name\": \"");
    if (!next || next > end) next = end;
    const char *exact = strstr(o, "\"exact\"");
    bool is_exact = exact && exact < next;
    double rtol = is_exact ? 0 : json_number(o, next, "\"rtol\": ");
    double atol = is_exact ? 0 : json_number(o, next, "\"atol\": ");

    int k = -1;
    for (int i = 0; i < g->n_outputs; i++)
      if (strcmp(g->values[g->outputs[i]].name, out_name) == 0) k = i;
    ck_assert_msg(k >= 0, "%s: the model has no output '%s'", name, out_name);
    ts_tensor ref;
    snprintf(path, sizeof path, "%s/%s", dir, ref_file);
    ck_assert_msg(ts_npy_read(path, &ref, &err) == 0, "%s", err.msg);
    ck_assert_msg(
        ref.dtype == outs[k].dtype && ts_tensor_same_shape(&ref, &outs[k]),
        "%s: output '%s' has dtype %s rank %d, reference %s rank %d", name,
        out_name, ts_dtype_name(outs[k].dtype), outs[k].rank,
        ts_dtype_name(ref.dtype), ref.rank);
    int64_t count = ts_tensor_numel(&ref);
    int64_t cols = ref.rank > 1 ? ref.dims[1] : 1;
    for (int64_t i = 0; i < count; i++) {
      if (ref.dtype == TS_DTYPE_INT64) {
        int64_t got = ((int64_t *)outs[k].data)[i];
        int64_t want = ((int64_t *)ref.data)[i];
        ck_assert_msg(got == want,
                      "%s: %s[%lld] = %lld, scikit-learn says %lld", name,
                      out_name, (long long)i, (long long)got, (long long)want);
      } else {
        double got = ((float *)outs[k].data)[i];
        double want = ((float *)ref.data)[i];
        ck_assert_msg(fabs(got - want) <= atol + rtol * fabs(want),
                      "%s: %s[%lld][%lld] = %.8g, scikit-learn says %.8g", name,
                      out_name, (long long)(i / cols), (long long)(i % cols),
                      got, want);
      }
    }
    ts_tensor_free(&ref);
    compared++;
    o = next;
  }
  ts_tensor_free(&x);
  ts_model_free(m);
  return compared;
}

START_TEST(test_sklearn_models) {
  const char *src = getenv("TESSERA_SOURCE");
  ck_assert_msg(src != NULL, "TESSERA_SOURCE is not set");
  char dir[] = "/tmp/ts_ml_XXXXXX";
  ck_assert_ptr_nonnull(mkdtemp(dir));
  char cmd[1024];
  snprintf(cmd, sizeof cmd,
           PYTHON " %s/tests/python/sklearn_models.py %s > %s/log.txt 2>&1",
           src, dir, dir);
  int rc = system(cmd);
  if (rc != 0) {
    snprintf(cmd, sizeof cmd, "cat %s/log.txt >&2", dir);
    (void)!system(cmd);
  }
  ck_assert_msg(rc == 0, "sklearn_models.py failed (%d)", rc);

  char path[600];
  snprintf(path, sizeof path, "%s/manifest.json", dir);
  char *manifest = read_text(path);
  ts_session *s;
  ts_err err;
  ck_assert_int_eq(ts_session_create(&s, &err), 0);
  int models = 0, outputs = 0;
  const char *p = strstr(manifest, "\"models\"");
  ck_assert_ptr_nonnull(p);
  /* Each model object starts at its "name" key, before "file". */
  const char *key = "{\n   \"name\": \"";
  p = strstr(p, key);
  while (p) {
    const char *next = strstr(p + 1, key);
    outputs += check_sklearn_model(dir, p, next ? next : p + strlen(p), s);
    models++;
    p = next;
  }
  ck_assert_int_ge(models, 20);
  ck_assert_int_ge(outputs, 2 * models - 8);
  ts_session_free(s);
  free(manifest);
  ts_check_rmtree(dir);
}
END_TEST

static void cases(Suite *s) {
  TS_CHECK_CASE(s, "sklearn", 120, NULL, NULL, test_sklearn_models);
}

const ts_check_suite ts_check_this_suite = {.name = "kernels_ml_sklearn",
                                            .cases = cases};
