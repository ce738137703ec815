/*
 * kernel_time.c - the CPU time of one model run in-process, without gRPC:
 * loads an ONNX file with ts_model_load_file, feeds every graph input with
 * deterministic values (symbolic dims: the first is the batch, the others
 * 16, the transformer's sequence) and calls ts_exec_run in a loop for a
 * given CPU time.
 *
 * It prints the process CPU time per run (CLOCK_PROCESS_CPUTIME_ID: on a
 * shared machine wall time moves by 2x between runs, CPU time by a few
 * percent) and a checksum of the first output, so that two builds can be
 * compared run for run. Not part of meson test; built with the tree as
 * build/bench/kernel_time (see bench/README.md):
 *
 *   OPENBLAS_NUM_THREADS=1 ./kernel_time MODEL.onnx BATCH [SECONDS]
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "blas.h"
#include "exec.h"
#include "graph.h"

#define MAX_INPUTS 8
#define SEQUENCE 16 /* the size of a symbolic dim other than the first */

static double cpu_seconds(void) {
  struct timespec t;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* Allocates t for graph input v and fills it: floats in [-1, 1), integers
 * in [0, 100) (token ids). */
static int make_input(const ts_value *v, int64_t batch, ts_tensor *t,
                      ts_err *err) {
  int64_t dims[TS_MAX_RANK];
  for (int k = 0; k < v->rank; k++)
    dims[k] = v->dims[k] >= 0 ? v->dims[k] : k == 0 ? batch : SEQUENCE;
  int rc = ts_tensor_alloc(t, v->dtype, dims, v->rank, err);
  if (rc) return rc;
  const int64_t n = ts_tensor_numel(t);
  for (int64_t j = 0; j < n; j++) {
    const uint64_t h = (uint64_t)j * 2654435761u;
    if (v->dtype == TS_DTYPE_FLOAT)
      ((float *)t->data)[j] = (float)(h % 1000) / 500.0f - 1.0f;
    else if (v->dtype == TS_DTYPE_INT64)
      ((int64_t *)t->data)[j] = (int64_t)(h % 100);
    else
      return ts_err_set(err, TS_EUNSUPPORTED, "input '%s' is %s", v->name,
                        ts_dtype_name(v->dtype));
  }
  return TS_OK;
}

int main(int argc, char **argv) {
  ts_blas_select_kernels(argc, argv); /* may re-exec with faster kernels */
  if (argc < 3) {
    fprintf(stderr, "usage: %s MODEL.onnx BATCH [SECONDS]\n", argv[0]);
    return 2;
  }
  const int64_t batch = atoll(argv[2]);
  const double seconds = argc > 3 ? atof(argv[3]) : 2.0;
  ts_model *m;
  ts_session *s = NULL;
  ts_err err;
  ts_tensor in[MAX_INPUTS], out;
  const char *names[MAX_INPUTS];
  int n_in = 0, rc = ts_model_load_file(argv[1], &m, &err);
  if (rc) {
    fprintf(stderr, "%s\n", err.msg);
    return 1;
  }
  const ts_graph *g = &m->graph;
  if (g->n_inputs > MAX_INPUTS) {
    fprintf(stderr, "%s: more than %d inputs\n", argv[1], MAX_INPUTS);
    ts_model_free(m);
    return 1;
  }
  for (; n_in < g->n_inputs && !rc; n_in++) {
    names[n_in] = g->values[g->inputs[n_in]].name;
    rc = make_input(&g->values[g->inputs[n_in]], batch, &in[n_in], &err);
  }
  const char *out_name = g->values[g->outputs[0]].name;
  if (!rc) rc = ts_session_create(&s, &err);
  /* The first run plans the session's arena; it is not timed. */
  if (!rc) rc = ts_exec_run(m, s, names, in, n_in, &out_name, &out, 1, &err);
  int runs = 0;
  const double start = cpu_seconds();
  double used = 0;
  while (!rc && used < seconds) {
    rc = ts_exec_run(m, s, names, in, n_in, &out_name, &out, 1, &err);
    runs++;
    used = cpu_seconds() - start;
  }
  if (rc) {
    fprintf(stderr, "%s\n", err.msg);
  } else {
    double sum = 0;
    for (int64_t j = 0; j < ts_tensor_numel(&out); j++)
      sum += out.dtype == TS_DTYPE_FLOAT ? ((const float *)out.data)[j] : 0;
    printf("%s batch %lld: %.4f ms CPU per run (%d runs), checksum %.6g\n",
           argv[1], (long long)batch, used / runs * 1e3, runs, sum);
  }
  ts_session_free(s);
  for (int i = 0; i < n_in; i++) ts_tensor_free(&in[i]);
  ts_model_free(m);
  return rc ? 1 : 0;
}
