/*
 * worker_check.h - the harness of the worker daemon suites
 * (test_worker.c, test_worker_scheduling.c): the real tessera-worker binary
 * on loopback.
 *
 * worker_start runs $TESSERA_BUILD/worker/tessera-worker on 127.0.0.1:0,
 * reads the port from its "listening on HOST:PORT" line and talks to it
 * through common/rpc.h exactly as the coordinator does. Models are built
 * here in C (protobuf-c, onnx.pb-c.h): a Gemm Y = X W + B whose answers are
 * checked against a float64 reference computed here, never against the
 * worker's own earlier output.
 *
 * Check runs in CK_NOFORK mode (worker_check_suite's hooks): gRPC does not
 * survive fork(), and the daemons are shared by the tests of one case, which
 * run in order. Header-only like kernel_check.h.
 */
#ifndef TS_WORKER_CHECK_H
#define TS_WORKER_CHECK_H

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "hash.h"
#include "health.pb-c.h"
#include "onnx.pb-c.h"
#include "rpc.h"
#include "ts_config.h"
#include "worker.pb-c.h"

#define SVC "/tessera.worker.v1.Worker/"
#define MiB (1024 * 1024)
#define CALL_MS 120000 /* generous: the machine is shared */

/* ---- the worker process ------------------------------------------------ */

typedef struct worker_proc {
  pid_t pid;
  int port;
  int out_fd; /* its stdout */
  char addr[64];
  ts_rpc_channel *ch;
} worker_proc;

/* Reads one line from fd within timeout_ms; 0 on success. */
static inline int read_line(int fd, char *buf, size_t size, int timeout_ms) {
  size_t n = 0;
  int64_t end = ts_now_ms() + timeout_ms;
  while (n + 1 < size) {
    struct pollfd p = {.fd = fd, .events = POLLIN};
    int64_t left = end - ts_now_ms();
    if (left <= 0 || poll(&p, 1, (int)left) <= 0) return -1;
    ssize_t r = read(fd, buf + n, 1);
    if (r <= 0) return -1;
    if (buf[n] == '\n') break;
    n++;
  }
  buf[n] = '\0';
  return 0;
}

/* fork + exec of bin with stdout on out_fd (-1: inherited). The child dies
 * with this process (PR_SET_PDEATHSIG), so a crashed test leaves no daemon
 * behind. Between fork and exec the child only calls async-signal-safe
 * functions (gRPC state must not be touched after fork). */
static inline pid_t spawn(const char *bin, const char *const *argv,
                          int out_fd) {
  pid_t parent = getpid();
  pid_t pid = fork();
  if (pid != 0) return pid;
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (getppid() != parent) _exit(127);
  if (out_fd >= 0) {
    dup2(out_fd, STDOUT_FILENO);
    close(out_fd);
  }
  execv(bin, (char *const *)argv);
  _exit(127);
}

/* Spawns the worker with `args` (NULL-terminated, after --listen) and waits
 * for its "listening on" line. */
static inline void worker_start(worker_proc *w, const char *const *args) {
  memset(w, 0, sizeof *w);
  const char *build = getenv("TESSERA_BUILD");
  ck_assert_msg(build != NULL, "TESSERA_BUILD is not set");
  static char bin[4096];
  snprintf(bin, sizeof bin, "%s/worker/tessera-worker", build);
  const char *argv[32] = {bin, "--listen", "127.0.0.1:0"};
  int argc = 3;
  for (; args && *args && argc < 31; args++) argv[argc++] = *args;
  argv[argc] = NULL;

  int pipefd[2];
  ck_assert_int_eq(pipe2(pipefd, O_CLOEXEC), 0);
  w->pid = spawn(bin, argv, pipefd[1]);
  close(pipefd[1]);
  ck_assert_msg(w->pid > 0, "cannot start %s", bin);
  w->out_fd = pipefd[0];

  char line[256];
  ck_assert_msg(read_line(w->out_fd, line, sizeof line, 60000) == 0,
                "worker printed no 'listening on' line");
  ck_assert_msg(sscanf(line, "listening on 127.0.0.1:%d", &w->port) == 1,
                "unexpected first line: '%s'", line);
  ck_assert_int_gt(w->port, 0);
  snprintf(w->addr, sizeof w->addr, "127.0.0.1:%d", w->port);
  ts_err err = {0};
  ck_assert_int_eq(ts_rpc_channel_open(w->addr, NULL, &w->ch, &err), 0);
}

/* Waits for the worker to exit; its exit status, or -1 on a signal or a
 * timeout (then it is killed). */
static inline int worker_wait(worker_proc *w, int timeout_ms) {
  if (w->ch) ts_rpc_channel_close(w->ch);
  w->ch = NULL;
  int64_t end = ts_now_ms() + timeout_ms;
  int status = 0;
  for (;;) {
    pid_t r = waitpid(w->pid, &status, WNOHANG);
    if (r == w->pid) break;
    if (ts_now_ms() > end) {
      kill(w->pid, SIGKILL);
      waitpid(w->pid, &status, 0);
      close(w->out_fd);
      return -1;
    }
    usleep(20000);
  }
  close(w->out_fd);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* Sends SIGTERM and returns the exit status as worker_wait does. */
static inline int worker_stop(worker_proc *w, int timeout_ms) {
  kill(w->pid, SIGTERM);
  return worker_wait(w, timeout_ms);
}

/* ---- models -------------------------------------------------------------- */

/* Deterministic values in [-0.5, 0.5). */
static inline void fill(float *x, size_t n, uint32_t seed) {
  uint32_t s = seed * 2654435761u + 1;
  for (size_t i = 0; i < n; i++) {
    s = s * 1664525u + 1013904223u;
    x[i] = (float)(s >> 8) / 16777216.0f - 0.5f;
  }
}

/* A ValueInfoProto for a float tensor [dim0, dim1]; dim0 < 0 is "batch". */
typedef struct value_info {
  Onnx__ValueInfoProto vi;
  Onnx__TypeProto type;
  Onnx__TypeProto__Tensor tensor;
  Onnx__TensorShapeProto shape;
  Onnx__TensorShapeProto__Dimension dims[2];
  Onnx__TensorShapeProto__Dimension *dim_ptrs[2];
} value_info;

static inline void value_info_init(value_info *v, const char *name,
                                   int64_t dim0, int64_t dim1) {
  onnx__value_info_proto__init(&v->vi);
  onnx__type_proto__init(&v->type);
  onnx__type_proto__tensor__init(&v->tensor);
  onnx__tensor_shape_proto__init(&v->shape);
  int64_t d[2] = {dim0, dim1};
  for (int i = 0; i < 2; i++) {
    onnx__tensor_shape_proto__dimension__init(&v->dims[i]);
    if (d[i] < 0) {
      v->dims[i].value_case =
          ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM;
      v->dims[i].dim_param = "batch";
    } else {
      v->dims[i].value_case =
          ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE;
      v->dims[i].dim_value = d[i];
    }
    v->dim_ptrs[i] = &v->dims[i];
  }
  v->shape.n_dim = 2;
  v->shape.dim = v->dim_ptrs;
  v->tensor.has_elem_type = 1;
  v->tensor.elem_type = ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT;
  v->tensor.shape = &v->shape;
  v->type.value_case = ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE;
  v->type.tensor_type = &v->tensor;
  v->vi.name = (char *)name;
  v->vi.type = &v->type;
}

static inline void float_initializer(Onnx__TensorProto *t, const char *name,
                                     int64_t *dims, size_t rank,
                                     const float *data, size_t n) {
  onnx__tensor_proto__init(t);
  t->name = (char *)name;
  t->n_dims = rank;
  t->dims = dims;
  t->has_data_type = 1;
  t->data_type = ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT;
  t->has_raw_data = 1;
  t->raw_data.data = (uint8_t *)data;
  t->raw_data.len = n * sizeof(float);
}

/* Serialized ModelProto of Y[batch,N] = Gemm(X[batch,K], W[K,N], B[N]),
 * or, with layers > 1 (and K == N), that Gemm applied `layers` times with
 * the same weights. Caller frees. */
static inline uint8_t *gemm_model(int64_t K, int64_t N, const float *W,
                                  const float *B, int layers, size_t *len) {
  int64_t wdims[2] = {K, N}, bdims[1] = {N};
  Onnx__TensorProto w, b;
  float_initializer(&w, "W", wdims, 2, W, (size_t)(K * N));
  float_initializer(&b, "B", bdims, 1, B, (size_t)N);
  Onnx__TensorProto *inits[] = {&w, &b};

  enum { MAX_LAYERS = 64 };
  ck_assert(layers >= 1 && layers <= MAX_LAYERS && (layers == 1 || K == N));
  Onnx__NodeProto node[MAX_LAYERS], *nodes[MAX_LAYERS];
  char names[MAX_LAYERS + 1][16], *ins[MAX_LAYERS][3], *outs[MAX_LAYERS][1];
  for (int i = 0; i <= layers; i++)
    snprintf(names[i], sizeof names[i], "h%d", i);
  strcpy(names[0], "X");
  strcpy(names[layers], "Y");
  for (int i = 0; i < layers; i++) {
    onnx__node_proto__init(&node[i]);
    ins[i][0] = names[i];
    ins[i][1] = "W";
    ins[i][2] = "B";
    outs[i][0] = names[i + 1];
    node[i].n_input = 3;
    node[i].input = ins[i];
    node[i].n_output = 1;
    node[i].output = outs[i];
    node[i].name = "gemm";
    node[i].op_type = "Gemm";
    nodes[i] = &node[i];
  }

  value_info x, y;
  value_info_init(&x, "X", -1, K);
  value_info_init(&y, "Y", -1, N);
  Onnx__ValueInfoProto *inputs[] = {&x.vi}, *outputs[] = {&y.vi};

  Onnx__GraphProto g;
  onnx__graph_proto__init(&g);
  g.name = "gemm";
  g.n_node = (size_t)layers;
  g.node = nodes;
  g.n_initializer = 2;
  g.initializer = inits;
  g.n_input = 1;
  g.input = inputs;
  g.n_output = 1;
  g.output = outputs;

  Onnx__OperatorSetIdProto opset;
  onnx__operator_set_id_proto__init(&opset);
  opset.domain = "";
  opset.has_version = 1;
  opset.version = 13;
  Onnx__OperatorSetIdProto *opsets[] = {&opset};

  Onnx__ModelProto m;
  onnx__model_proto__init(&m);
  m.has_ir_version = 1;
  m.ir_version = 8;
  m.producer_name = "test_worker";
  m.n_opset_import = 1;
  m.opset_import = opsets;
  m.graph = &g;

  *len = onnx__model_proto__get_packed_size(&m);
  uint8_t *buf = malloc(*len);
  ck_assert_ptr_nonnull(buf);
  ck_assert_uint_eq(onnx__model_proto__pack(&m, buf), *len);
  return buf;
}

/* A Gemm model with its weights kept for references. */
typedef struct gemm {
  int64_t K, N;
  float *W, *B;
  uint8_t *bytes;
  size_t len;
  char id[TS_SHA256_HEX_LEN + 1];
} gemm;

/* Weights scaled by `scale`; `layers` as for gemm_model. */
static inline void gemm_make_layers(gemm *g, int64_t K, int64_t N,
                                    uint32_t seed, int layers, float scale) {
  g->K = K;
  g->N = N;
  g->W = malloc((size_t)(K * N) * sizeof(float));
  g->B = malloc((size_t)N * sizeof(float));
  ck_assert(g->W && g->B);
  fill(g->W, (size_t)(K * N), seed);
  fill(g->B, (size_t)N, seed + 1);
  for (int64_t i = 0; scale != 1.0f && i < K * N; i++) g->W[i] *= scale;
  g->bytes = gemm_model(K, N, g->W, g->B, layers, &g->len);
  ts_sha256_hex(g->bytes, g->len, g->id);
}

static inline void gemm_make(gemm *g, int64_t K, int64_t N, uint32_t seed) {
  gemm_make_layers(g, K, N, seed, 1, 1.0f);
}

static inline void gemm_free(gemm *g) {
  free(g->W);
  free(g->B);
  free(g->bytes);
  memset(g, 0, sizeof *g);
}

/* ---- calls --------------------------------------------------------------- */

/* Finishes a stream whose answer is not needed. */
static inline int stream_finish(ts_rpc_stream *st, ts_err *err) {
  uint8_t *out = NULL;
  size_t len = 0;
  int rc = ts_rpc_stream_finish(st, &out, &len, err);
  free(out);
  return rc;
}

/* Streams one shard in `chunk`-byte chunks with the given header. Returns
 * the TS_E* code; on success *resp (may be NULL) gets the response. */
static inline int load_shard(ts_rpc_channel *ch, const char *id, uint64_t total,
                             const uint8_t *bytes, size_t len, size_t chunk,
                             const char *label,
                             Tessera__Worker__V1__LoadShardResponse **resp,
                             ts_err *err) {
  ts_rpc_stream *st = NULL;
  int rc =
      ts_rpc_stream_open(ch, SVC "LoadShard", ts_now_ms() + CALL_MS, &st, err);
  if (rc) return rc;
  size_t off = 0;
  uint8_t *buf = malloc(chunk + 256);
  ck_assert_ptr_nonnull(buf);
  do {
    Tessera__Worker__V1__LoadShardChunk c =
        TESSERA__WORKER__V1__LOAD_SHARD_CHUNK__INIT;
    if (off == 0) {
      c.shard_id = (char *)id;
      c.total_bytes = total;
      c.label = (char *)label;
    }
    size_t n = len - off < chunk ? len - off : chunk;
    c.offset = off;
    c.data.data = (uint8_t *)bytes + off;
    c.data.len = n;
    size_t packed = tessera__worker__v1__load_shard_chunk__pack(&c, buf);
    /* Once the worker rejected the stream, sends fail; finish tells why. */
    if (ts_rpc_stream_send(st, buf, packed, err) != 0) break;
    off += n;
  } while (off < len);
  free(buf);
  uint8_t *out = NULL;
  size_t out_len = 0;
  rc = ts_rpc_stream_finish(st, &out, &out_len, err);
  if (rc == 0 && resp) {
    *resp =
        tessera__worker__v1__load_shard_response__unpack(NULL, out_len, out);
    ck_assert_ptr_nonnull(*resp);
  }
  free(out);
  return rc;
}

static inline void load_ok(worker_proc *w, const gemm *g, size_t chunk,
                           const char *label) {
  ts_err err = {0};
  Tessera__Worker__V1__LoadShardResponse *resp = NULL;
  int rc = load_shard(w->ch, g->id, g->len, g->bytes, g->len, chunk, label,
                      &resp, &err);
  ck_assert_msg(rc == 0, "LoadShard failed (%d): %s", rc, err.msg);
  ck_assert_str_eq(resp->shard_id, g->id);
  ck_assert_uint_eq(resp->weight_bytes,
                    (uint64_t)(g->K * g->N + g->N) * sizeof(float));
  ck_assert_uint_eq(resp->n_inputs, 1);
  ck_assert_str_eq(resp->inputs[0]->name, "X");
  ck_assert_int_eq(resp->inputs[0]->dtype, 1);
  ck_assert_uint_eq(resp->n_outputs, 1);
  ck_assert_str_eq(resp->outputs[0]->name, "Y");
  tessera__worker__v1__load_shard_response__free_unpacked(resp, NULL);
}

/* A serialized unary request; caller frees. */
static inline uint8_t *pack_msg(const ProtobufCMessage *m, size_t *len) {
  *len = protobuf_c_message_get_packed_size(m);
  uint8_t *buf = malloc(*len ? *len : 1);
  ck_assert_ptr_nonnull(buf);
  protobuf_c_message_pack(m, buf);
  return buf;
}

/* Unary call; on success *resp is unpacked with `d` (when non-NULL). */
static inline int call_unary(ts_rpc_channel *ch, const char *method,
                             const ProtobufCMessage *req,
                             const ProtobufCMessageDescriptor *d,
                             ProtobufCMessage **resp, int64_t deadline,
                             ts_err *err) {
  size_t len;
  uint8_t *buf = pack_msg(req, &len);
  uint8_t *out = NULL;
  size_t out_len = 0;
  int rc =
      ts_rpc_call_sync(ch, method, buf, len, deadline, &out, &out_len, err);
  free(buf);
  if (rc == 0 && resp) {
    *resp = protobuf_c_message_unpack(d, NULL, out_len, out);
    ck_assert_ptr_nonnull(*resp);
  }
  free(out);
  return rc;
}

static inline bool has_shard(worker_proc *w, const char *id) {
  char *ids[] = {(char *)id};
  Tessera__Worker__V1__HasShardRequest req =
      TESSERA__WORKER__V1__HAS_SHARD_REQUEST__INIT;
  req.n_shard_ids = 1;
  req.shard_ids = ids;
  ProtobufCMessage *resp = NULL;
  ts_err err = {0};
  int rc = call_unary(w->ch, SVC "HasShard", &req.base,
                      &tessera__worker__v1__has_shard_response__descriptor,
                      &resp, ts_now_ms() + CALL_MS, &err);
  ck_assert_msg(rc == 0, "HasShard: %s", err.msg);
  Tessera__Worker__V1__HasShardResponse *r =
      (Tessera__Worker__V1__HasShardResponse *)resp;
  ck_assert_uint_eq(r->n_present, 1);
  bool present = r->present[0];
  protobuf_c_message_free_unpacked(resp, NULL);
  return present;
}

/* Caller frees with tessera__worker__v1__status_response__free_unpacked. */
static inline Tessera__Worker__V1__StatusResponse *status(worker_proc *w) {
  Tessera__Worker__V1__StatusRequest req =
      TESSERA__WORKER__V1__STATUS_REQUEST__INIT;
  ProtobufCMessage *resp = NULL;
  ts_err err = {0};
  int rc = call_unary(w->ch, SVC "Status", &req.base,
                      &tessera__worker__v1__status_response__descriptor, &resp,
                      ts_now_ms() + CALL_MS, &err);
  ck_assert_msg(rc == 0, "Status: %s", err.msg);
  return (Tessera__Worker__V1__StatusResponse *)resp;
}

static inline uint64_t memory_used(worker_proc *w) {
  Tessera__Worker__V1__StatusResponse *s = status(w);
  uint64_t used = s->memory_used;
  tessera__worker__v1__status_response__free_unpacked(s, NULL);
  return used;
}

/* A RunShardRequest with one float input "X" of [rows, cols]. */
typedef struct run_req {
  Tessera__Worker__V1__RunShardRequest req;
  Tessera__Worker__V1__Tensor x;
  Tessera__Worker__V1__Tensor *xs[1];
  int64_t dims[2];
} run_req;

static inline void run_req_init(run_req *r, const char *id, const float *x,
                                int64_t rows, int64_t cols) {
  tessera__worker__v1__run_shard_request__init(&r->req);
  tessera__worker__v1__tensor__init(&r->x);
  r->dims[0] = rows;
  r->dims[1] = cols;
  r->x.name = "X";
  r->x.dtype = 1;
  r->x.n_shape = 2;
  r->x.shape = r->dims;
  r->x.data.data = (uint8_t *)x;
  r->x.data.len = (size_t)(rows * cols) * sizeof(float);
  r->xs[0] = &r->x;
  r->req.shard_id = (char *)id;
  r->req.n_inputs = 1;
  r->req.inputs = r->xs;
  r->req.request_id = "test";
}

static inline int run_shard(worker_proc *w, const run_req *r,
                            Tessera__Worker__V1__RunShardResponse **resp,
                            int64_t deadline, ts_err *err) {
  return call_unary(w->ch, SVC "RunShard", &r->req.base,
                    &tessera__worker__v1__run_shard_response__descriptor,
                    (ProtobufCMessage **)resp, deadline, err);
}

/* Runs X[rows, K] through g on the worker and checks Y against float64. */
static inline void run_and_check(worker_proc *w, const gemm *g, int64_t rows,
                                 uint32_t seed) {
  size_t nx = (size_t)(rows * g->K);
  float *x = malloc(nx * sizeof(float));
  ck_assert_ptr_nonnull(x);
  fill(x, nx, seed);
  run_req r;
  run_req_init(&r, g->id, x, rows, g->K);
  Tessera__Worker__V1__RunShardResponse *resp = NULL;
  ts_err err = {0};
  int rc = run_shard(w, &r, &resp, ts_now_ms() + CALL_MS, &err);
  ck_assert_msg(rc == 0, "RunShard failed (%d): %s", rc, err.msg);
  ck_assert_uint_eq(resp->n_outputs, 1);
  Tessera__Worker__V1__Tensor *y = resp->outputs[0];
  ck_assert_str_eq(y->name, "Y");
  ck_assert_int_eq(y->dtype, 1);
  ck_assert_uint_eq(y->n_shape, 2);
  ck_assert_int_eq(y->shape[0], rows);
  ck_assert_int_eq(y->shape[1], g->N);
  ck_assert_uint_eq(y->data.len, (size_t)(rows * g->N) * sizeof(float));
  const float *yv = (const float *)y->data.data;
  double *acc = calloc((size_t)g->N, sizeof(double));
  double *mag = calloc((size_t)g->N, sizeof(double));
  ck_assert(acc && mag);
  for (int64_t i = 0; i < rows; i++) {
    for (int64_t n = 0; n < g->N; n++) {
      acc[n] = g->B[n];
      mag[n] = fabs(g->B[n]);
    }
    for (int64_t k = 0; k < g->K; k++) {
      double xv = x[i * g->K + k];
      const float *wrow = g->W + k * g->N;
      for (int64_t n = 0; n < g->N; n++) {
        acc[n] += xv * wrow[n];
        mag[n] += fabs(xv * wrow[n]);
      }
    }
    for (int64_t n = 0; n < g->N; n++) {
      double got = yv[i * g->N + n];
      /* float32 accumulation: error bounded by a few ulps of sum |x w|. */
      ck_assert_msg(fabs(got - acc[n]) <= 1e-5 * mag[n] + 1e-6,
                    "Y[%lld][%lld] = %.7g, float64 reference %.7g",
                    (long long)i, (long long)n, got, acc[n]);
    }
  }
  free(acc);
  free(mag);
  free(x);
  tessera__worker__v1__run_shard_response__free_unpacked(resp, NULL);
}

/* Expects a RunShard of `r` to fail with `code` and a message holding
 * `what`. */
static inline void expect_run_fails(worker_proc *w, const run_req *r, int code,
                                    const char *what) {
  ts_err err = {0};
  Tessera__Worker__V1__RunShardResponse *resp = NULL;
  int rc = run_shard(w, r, &resp, ts_now_ms() + CALL_MS, &err);
  ck_assert_msg(rc == code, "RunShard: want %d (%s), got %d: %s", code,
                ts_strerror(code), rc, err.msg);
  ck_assert_msg(strstr(err.msg, what) != NULL, "'%s' not in '%s'", what,
                err.msg);
}

/* The worker's health, as grpc.health.v1 names it. */
#define SERVING GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING
#define NOT_SERVING \
  GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING

/* grpc.health.v1 Check for the whole server: SERVING or NOT_SERVING. */
static inline int health(worker_proc *w) {
  uint8_t *out = NULL;
  size_t len = 0;
  ts_err err = {0};
  int rc = ts_rpc_call_sync(w->ch, "/grpc.health.v1.Health/Check",
                            (const uint8_t *)"", 0, ts_now_ms() + CALL_MS, &out,
                            &len, &err);
  ck_assert_msg(rc == 0, "Health/Check: %s", err.msg);
  /* HealthCheckResponse{status: S} is the two bytes 08 S. */
  ck_assert_uint_eq(len, 2);
  ck_assert_int_eq(out[0], 0x08);
  int status = out[1];
  free(out);
  return status;
}

/* The runner's hooks for a worker suite: gRPC initialised once for the
 * process, SIGPIPE ignored (a worker that exits mid-call must not kill the
 * test), and no fork. */
static inline int worker_check_init(int argc, char **argv) {
  (void)argc, (void)argv;
  signal(SIGPIPE, SIG_IGN);
  ts_rpc_init();
  return -1;
}
#define WORKER_CHECK_SUITE(make_fn)                                           \
  {                                                                           \
    .make = (make_fn), .before = worker_check_init, .after = ts_rpc_shutdown, \
    .no_fork = true                                                           \
  }

#endif
