/*
 * test_worker.c - the real tessera-worker binary on loopback.
 *
 * Starts $TESSERA_BUILD/worker/tessera-worker on 127.0.0.1:0, reads the port
 * from its "listening on HOST:PORT" line and talks to it through
 * common/rpc.h exactly as the coordinator does. Models are built here in C
 * (protobuf-c, onnx.pb-c.h): a Gemm Y = X W + B whose answers are checked
 * against a float64 reference computed here, never against the worker's own
 * earlier output.
 *
 * Check runs in CK_NOFORK mode: gRPC does not survive fork(), and the
 * daemons are shared by the tests of one case, which run in order.
 */
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

#include "check_main.h"
#include "hash.h"
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
static int read_line(int fd, char *buf, size_t size, int timeout_ms) {
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
static pid_t spawn(const char *bin, const char *const *argv, int out_fd) {
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
static void worker_start(worker_proc *w, const char *const *args) {
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
static int worker_wait(worker_proc *w, int timeout_ms) {
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
static int worker_stop(worker_proc *w, int timeout_ms) {
  kill(w->pid, SIGTERM);
  return worker_wait(w, timeout_ms);
}

/* ---- models -------------------------------------------------------------- */

/* Deterministic values in [-0.5, 0.5). */
static void fill(float *x, size_t n, uint32_t seed) {
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

static void value_info_init(value_info *v, const char *name, int64_t dim0,
                            int64_t dim1) {
  onnx__value_info_proto__init(&v->vi);
  onnx__type_proto__init(&v->type);
  onnx__type_proto__tensor__init(&v->tensor);
  onnx__tensor_shape_proto__init(&v->shape);
  int64_t d[2] = {dim0, dim1};
  for (int i = 0; i < 2; i++) {
    onnx__tensor_shape_proto__dimension__init(&v->dims[i]);
    if (d[i] < 0) {
      v->dims[i].value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM;
      v->dims[i].dim_param = "batch";
    } else {
      v->dims[i].value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE;
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

static void float_initializer(Onnx__TensorProto *t, const char *name,
                              int64_t *dims, size_t rank, const float *data,
                              size_t n) {
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
static uint8_t *gemm_model(int64_t K, int64_t N, const float *W,
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
static void gemm_make_layers(gemm *g, int64_t K, int64_t N, uint32_t seed,
                             int layers, float scale) {
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

static void gemm_make(gemm *g, int64_t K, int64_t N, uint32_t seed) {
  gemm_make_layers(g, K, N, seed, 1, 1.0f);
}

static void gemm_free(gemm *g) {
  free(g->W);
  free(g->B);
  free(g->bytes);
  memset(g, 0, sizeof *g);
}

/* ---- calls --------------------------------------------------------------- */

/* Finishes a stream whose answer is not needed. */
static int stream_finish(ts_rpc_stream *st, ts_err *err) {
  uint8_t *out = NULL;
  size_t len = 0;
  int rc = ts_rpc_stream_finish(st, &out, &len, err);
  free(out);
  return rc;
}

/* Streams one shard in `chunk`-byte chunks with the given header. Returns
 * the TS_E* code; on success *resp (may be NULL) gets the response. */
static int load_shard(ts_rpc_channel *ch, const char *id, uint64_t total,
                      const uint8_t *bytes, size_t len, size_t chunk,
                      const char *label,
                      Tessera__Worker__V1__LoadShardResponse **resp,
                      ts_err *err) {
  ts_rpc_stream *st = NULL;
  int rc = ts_rpc_stream_open(ch, SVC "LoadShard", ts_now_ms() + CALL_MS,
                              &st, err);
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
    *resp = tessera__worker__v1__load_shard_response__unpack(NULL, out_len,
                                                            out);
    ck_assert_ptr_nonnull(*resp);
  }
  free(out);
  return rc;
}

static void load_ok(worker_proc *w, const gemm *g, size_t chunk,
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
static uint8_t *pack_msg(const ProtobufCMessage *m, size_t *len) {
  *len = protobuf_c_message_get_packed_size(m);
  uint8_t *buf = malloc(*len ? *len : 1);
  ck_assert_ptr_nonnull(buf);
  protobuf_c_message_pack(m, buf);
  return buf;
}

/* Unary call; on success *resp is unpacked with `d` (when non-NULL). */
static int call_unary(ts_rpc_channel *ch, const char *method,
                      const ProtobufCMessage *req,
                      const ProtobufCMessageDescriptor *d,
                      ProtobufCMessage **resp, int64_t deadline, ts_err *err) {
  size_t len;
  uint8_t *buf = pack_msg(req, &len);
  uint8_t *out = NULL;
  size_t out_len = 0;
  int rc = ts_rpc_call_sync(ch, method, buf, len, deadline, &out, &out_len,
                            err);
  free(buf);
  if (rc == 0 && resp) {
    *resp = protobuf_c_message_unpack(d, NULL, out_len, out);
    ck_assert_ptr_nonnull(*resp);
  }
  free(out);
  return rc;
}

static bool has_shard(worker_proc *w, const char *id) {
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
static Tessera__Worker__V1__StatusResponse *status(worker_proc *w) {
  Tessera__Worker__V1__StatusRequest req =
      TESSERA__WORKER__V1__STATUS_REQUEST__INIT;
  ProtobufCMessage *resp = NULL;
  ts_err err = {0};
  int rc = call_unary(w->ch, SVC "Status", &req.base,
                      &tessera__worker__v1__status_response__descriptor,
                      &resp, ts_now_ms() + CALL_MS, &err);
  ck_assert_msg(rc == 0, "Status: %s", err.msg);
  return (Tessera__Worker__V1__StatusResponse *)resp;
}

static uint64_t memory_used(worker_proc *w) {
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

static void run_req_init(run_req *r, const char *id, const float *x,
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

static int run_shard(worker_proc *w, const run_req *r,
                     Tessera__Worker__V1__RunShardResponse **resp,
                     int64_t deadline, ts_err *err) {
  return call_unary(w->ch, SVC "RunShard", &r->req.base,
                    &tessera__worker__v1__run_shard_response__descriptor,
                    (ProtobufCMessage **)resp, deadline, err);
}

/* Runs X[rows, K] through g on the worker and checks Y against float64. */
static void run_and_check(worker_proc *w, const gemm *g, int64_t rows,
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
static void expect_run_fails(worker_proc *w, const run_req *r, int code,
                             const char *what) {
  ts_err err = {0};
  Tessera__Worker__V1__RunShardResponse *resp = NULL;
  int rc = run_shard(w, r, &resp, ts_now_ms() + CALL_MS, &err);
  ck_assert_msg(rc == code, "RunShard: want %d (%s), got %d: %s", code,
                ts_strerror(code), rc, err.msg);
  ck_assert_msg(strstr(err.msg, what) != NULL, "'%s' not in '%s'", what,
                err.msg);
}

/* ---- the shared worker and its tests ----------------------------------- */

static worker_proc main_worker; /* --threads 2 --memory-limit 512M */
static gemm small;              /* 256 x 128: 128 kB, two 64 KiB chunks+ */

static void main_worker_setup(void) {
  static const char *const args[] = {"--threads", "2", "--memory-limit",
                                     "512M", NULL};
  worker_start(&main_worker, args);
  gemm_make(&small, 256, 128, 7);
}

static void main_worker_teardown(void) {
  gemm_free(&small);
  if (main_worker.pid) worker_stop(&main_worker, 30000);
}

/* grpc.health.v1 Check for the whole server: 1 SERVING, 2 NOT_SERVING. */
static int health(worker_proc *w) {
  uint8_t *out = NULL;
  size_t len = 0;
  ts_err err = {0};
  int rc = ts_rpc_call_sync(w->ch, "/grpc.health.v1.Health/Check",
                            (const uint8_t *)"", 0, ts_now_ms() + CALL_MS,
                            &out, &len, &err);
  ck_assert_msg(rc == 0, "Health/Check: %s", err.msg);
  /* HealthCheckResponse{status: S} is the two bytes 08 S. */
  ck_assert_uint_eq(len, 2);
  ck_assert_int_eq(out[0], 0x08);
  int status = out[1];
  free(out);
  return status;
}

START_TEST(test_health_serving) {
  ck_assert_int_eq(health(&main_worker), 1);
}
END_TEST

START_TEST(test_load_and_run_small) {
  ck_assert(!has_shard(&main_worker, small.id));
  uint64_t before = memory_used(&main_worker);
  load_ok(&main_worker, &small, 64 * 1024, "gemm/s0/k0");
  ck_assert(has_shard(&main_worker, small.id));
  ck_assert_uint_eq(memory_used(&main_worker), before + small.len);
  run_and_check(&main_worker, &small, 4, 11);
  run_and_check(&main_worker, &small, 1, 12);
  run_and_check(&main_worker, &small, 33, 13);
}
END_TEST

START_TEST(test_second_load_is_cheap_success) {
  uint64_t before = memory_used(&main_worker);
  load_ok(&main_worker, &small, 64 * 1024, "gemm/s0/k0");
  ck_assert_uint_eq(memory_used(&main_worker), before);
}
END_TEST

static bool id_well_formed(const char *id) {
  if (strlen(id) != TS_SHA256_HEX_LEN) return false;
  for (const char *p = id; *p; p++)
    if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f'))) return false;
  return true;
}

/* Expects a LoadShard to fail with `code`, naming `what`, and to leave no
 * trace: the shard absent (unless held before) and memory unchanged. */
static void expect_load_fails(const char *id, uint64_t total,
                              const uint8_t *bytes, size_t len, size_t chunk,
                              int code, const char *what) {
  uint64_t before = memory_used(&main_worker);
  ts_err err = {0};
  int rc = load_shard(main_worker.ch, id, total, bytes, len, chunk, "bad",
                      NULL, &err);
  ck_assert_msg(rc == code, "LoadShard: want %d (%s), got %d: %s", code,
                ts_strerror(code), rc, err.msg);
  ck_assert_msg(strstr(err.msg, what) != NULL, "'%s' not in '%s'", what,
                err.msg);
  ck_assert_uint_eq(memory_used(&main_worker), before);
  if (id_well_formed(id)) ck_assert(!has_shard(&main_worker, id));
}

START_TEST(test_load_wrong_hash) {
  gemm other;
  gemm_make(&other, 64, 32, 99);
  /* The bytes of `other` announced under the id of different bytes. */
  char wrong[TS_SHA256_HEX_LEN + 1];
  ts_sha256_hex("not these bytes", 15, wrong);
  expect_load_fails(wrong, other.len, other.bytes, other.len, 64 * 1024,
                    TS_EINVAL, "SHA-256");
  gemm_free(&other);
}
END_TEST

/* Sends chunks of g's bytes at the given {offset, length} spans, each with
 * the full header; returns the stream's TS_E* code. */
static int load_spans(const gemm *g, const uint64_t (*spans)[2], int n,
                      ts_err *err) {
  ts_rpc_stream *st = NULL;
  int rc = ts_rpc_stream_open(main_worker.ch, SVC "LoadShard",
                              ts_now_ms() + CALL_MS, &st, err);
  if (rc) return rc;
  uint8_t *buf = malloc(MiB + 256);
  ck_assert_ptr_nonnull(buf);
  for (int i = 0; i < n; i++) {
    Tessera__Worker__V1__LoadShardChunk c =
        TESSERA__WORKER__V1__LOAD_SHARD_CHUNK__INIT;
    c.shard_id = (char *)g->id;
    c.total_bytes = g->len;
    c.offset = spans[i][0];
    c.data.data = g->bytes + spans[i][0];
    c.data.len = spans[i][1];
    size_t len = tessera__worker__v1__load_shard_chunk__pack(&c, buf);
    if (ts_rpc_stream_send(st, buf, len, err) != 0) break;
  }
  free(buf);
  return stream_finish(st, err);
}

/* Expects the spans to be refused with INVALID_ARGUMENT naming `what`. */
static void expect_spans_fail(const gemm *g, const uint64_t (*spans)[2],
                              int n, const char *what) {
  uint64_t before = memory_used(&main_worker);
  ts_err err = {0};
  int rc = load_spans(g, spans, n, &err);
  ck_assert_msg(rc == TS_EINVAL, "got %d: %s", rc, err.msg);
  ck_assert_msg(strstr(err.msg, what) != NULL, "'%s' not in '%s'", what,
                err.msg);
  ck_assert_uint_eq(memory_used(&main_worker), before);
  ck_assert(!has_shard(&main_worker, g->id));
}

START_TEST(test_load_bad_streams) {
  gemm g;
  gemm_make(&g, 128, 256, 5); /* 128 kB */
  /* Out of order: the second 4 KiB first. */
  static const uint64_t swapped[][2] = {{4096, 4096}, {0, 4096}};
  expect_spans_fail(&g, swapped, 2, "expected offset 0");
  /* A gap. */
  static const uint64_t gap[][2] = {{0, 4096}, {8192, 4096}};
  expect_spans_fail(&g, gap, 2, "gap");
  /* Overlapping: the second chunk starts inside the first. */
  static const uint64_t overlap[][2] = {{0, 4096}, {2048, 4096}};
  expect_spans_fail(&g, overlap, 2, "overlaps");
  /* The same chunk twice. */
  static const uint64_t twice[][2] = {{0, 4096}, {0, 4096}};
  expect_spans_fail(&g, twice, 2, "overlaps");
  /* Announced smaller than what is sent: bytes past the end. */
  expect_load_fails(g.id, g.len - 100, g.bytes, g.len, 64 * 1024, TS_EINVAL,
                    "past");
  /* Stream ends before total_bytes arrived. */
  expect_load_fails(g.id, g.len, g.bytes, g.len - 1000, 64 * 1024, TS_EINVAL,
                    "ended after");
  /* No size announced. */
  expect_load_fails(g.id, 0, g.bytes, 1000, 1000, TS_EINVAL, "total_bytes");
  /* A chunk over the 1 MiB limit. */
  uint8_t *big = calloc(1, 2 * MiB);
  ck_assert_ptr_nonnull(big);
  char big_id[TS_SHA256_HEX_LEN + 1];
  ts_sha256_hex(big, 2 * MiB, big_id);
  expect_load_fails(big_id, 2 * MiB, big, 2 * MiB, 2 * MiB, TS_EINVAL,
                    "chunk limit");
  free(big);
  /* Malformed ids. */
  expect_load_fails("abc", g.len, g.bytes, g.len, 64 * 1024, TS_EINVAL,
                    "shard_id");
  char upper[TS_SHA256_HEX_LEN + 1];
  memcpy(upper, g.id, sizeof upper);
  for (char *p = upper; *p; p++)
    if (*p >= 'a' && *p <= 'f') *p = (char)(*p - 'a' + 'A');
  if (strcmp(upper, g.id) != 0)
    expect_load_fails(upper, g.len, g.bytes, g.len, 64 * 1024, TS_EINVAL,
                      "shard_id");
  /* A stream with no chunk at all. */
  {
    ts_err err = {0};
    ts_rpc_stream *st = NULL;
    ck_assert_int_eq(ts_rpc_stream_open(main_worker.ch, SVC "LoadShard",
                                        ts_now_ms() + CALL_MS, &st, &err),
                     0);
    ck_assert_int_eq(stream_finish(st, &err), TS_EINVAL);
    ck_assert_ptr_nonnull(strstr(err.msg, "no chunk"));
  }
  /* Garbage that is not a LoadShardChunk. */
  {
    ts_err err = {0};
    ts_rpc_stream *st = NULL;
    ck_assert_int_eq(ts_rpc_stream_open(main_worker.ch, SVC "LoadShard",
                                        ts_now_ms() + CALL_MS, &st, &err),
                     0);
    const uint8_t junk[] = {0xff, 0xff, 0xff, 0xff, 0x0f};
    ts_rpc_stream_send(st, junk, sizeof junk, &err);
    ck_assert_int_eq(stream_finish(st, &err), TS_EINVAL);
    ck_assert_ptr_nonnull(strstr(err.msg, "malformed"));
  }
  gemm_free(&g);
  /* The worker is fine after all that. */
  run_and_check(&main_worker, &small, 2, 21);
}
END_TEST

START_TEST(test_load_not_a_model) {
  /* Bytes whose SHA-256 is right but that are no ModelProto: the loader's
   * own error comes through. */
  uint8_t junk[5000];
  for (size_t i = 0; i < sizeof junk; i++) junk[i] = (uint8_t)(i * 131 + 7);
  char id[TS_SHA256_HEX_LEN + 1];
  ts_sha256_hex(junk, sizeof junk, id);
  uint64_t before = memory_used(&main_worker);
  ts_err err = {0};
  int rc = load_shard(main_worker.ch, id, sizeof junk, junk, sizeof junk,
                      1024, "junk", NULL, &err);
  ck_assert_msg(rc == TS_EINVAL || rc == TS_EUNSUPPORTED,
                "got %d: %s", rc, err.msg);
  ck_assert_msg(strstr(err.msg, "junk") != NULL, "no label in '%s'",
                err.msg);
  ck_assert_uint_eq(memory_used(&main_worker), before);
  ck_assert(!has_shard(&main_worker, id));
}
END_TEST

START_TEST(test_memory_limit) {
  /* 1 GiB announced against a 512 MiB limit: refused on the first chunk,
   * before the worker allocates anything. */
  char id[TS_SHA256_HEX_LEN + 1];
  ts_sha256_hex("huge", 4, id);
  uint8_t data[1024] = {0};
  expect_load_fails(id, 1ull << 30, data, sizeof data, sizeof data,
                    TS_EEXHAUSTED, "1073741824 bytes");
  ts_err err = {0};
  int rc = load_shard(main_worker.ch, id, 1ull << 30, data, sizeof data,
                      sizeof data, "huge/s0", NULL, &err);
  ck_assert_int_eq(rc, TS_EEXHAUSTED);
  ck_assert_msg(strstr(err.msg, "huge/s0") && strstr(err.msg, "536870912"),
                "message does not name the shard and the limit: %s", err.msg);
  /* The worker keeps serving. */
  ck_assert(has_shard(&main_worker, small.id));
  run_and_check(&main_worker, &small, 3, 31);
}
END_TEST

START_TEST(test_run_errors) {
  float x[4 * 256];
  fill(x, 4 * 256, 3);
  run_req r;
  char unknown[TS_SHA256_HEX_LEN + 1];
  ts_sha256_hex("nobody loaded this", 18, unknown);
  run_req_init(&r, unknown, x, 4, 256);
  expect_run_fails(&main_worker, &r, TS_ENOTFOUND, unknown);

  run_req_init(&r, "xyz", x, 4, 256);
  expect_run_fails(&main_worker, &r, TS_EINVAL, "shard_id");

  /* Bad tensors, each class. */
  run_req_init(&r, small.id, x, 4, 256);
  r.x.dtype = 99;
  expect_run_fails(&main_worker, &r, TS_EINVAL, "'X'");
  run_req_init(&r, small.id, x, 4, 256);
  r.x.data.len -= 4;
  expect_run_fails(&main_worker, &r, TS_EINVAL, "'X'");
  run_req_init(&r, small.id, x, 4, 256);
  r.dims[0] = -4;
  expect_run_fails(&main_worker, &r, TS_EINVAL, "'X'");
  run_req_init(&r, small.id, x, 4, 256);
  r.dims[0] = INT64_MAX / 2;
  expect_run_fails(&main_worker, &r, TS_EINVAL, "'X'");
  {
    int64_t dims9[9] = {1, 1, 1, 1, 1, 1, 1, 4, 256};
    run_req_init(&r, small.id, x, 4, 256);
    r.x.n_shape = 9;
    r.x.shape = dims9;
    expect_run_fails(&main_worker, &r, TS_EINVAL, "'X'");
  }
  /* Well-formed tensors the shard cannot take: the executor says which. */
  run_req_init(&r, small.id, x, 8, 128); /* K is 256 */
  expect_run_fails(&main_worker, &r, TS_EINVAL, "X");
  run_req_init(&r, small.id, x, 4, 256);
  r.x.dtype = 6; /* int32 where the model wants float */
  expect_run_fails(&main_worker, &r, TS_EINVAL, "X");
  run_req_init(&r, small.id, x, 4, 256);
  r.x.name = "Z";
  expect_run_fails(&main_worker, &r, TS_EINVAL, "Z");
  /* Unknown output name. */
  run_req_init(&r, small.id, x, 4, 256);
  char *outs[] = {"nope"};
  r.req.n_outputs = 1;
  r.req.outputs = outs;
  expect_run_fails(&main_worker, &r, TS_EINVAL, "nope");
  /* Naming the output explicitly works. */
  char *y[] = {"Y"};
  r.req.outputs = y;
  Tessera__Worker__V1__RunShardResponse *resp = NULL;
  ts_err err = {0};
  ck_assert_int_eq(run_shard(&main_worker, &r, &resp, ts_now_ms() + CALL_MS,
                             &err), 0);
  ck_assert_uint_eq(resp->n_outputs, 1);
  tessera__worker__v1__run_shard_response__free_unpacked(resp, NULL);

  /* Bytes that are no RunShardRequest. */
  const uint8_t junk[] = {0x0a, 0xff, 0xff, 0xff};
  uint8_t *out = NULL;
  size_t len = 0;
  ck_assert_int_eq(ts_rpc_call_sync(main_worker.ch, SVC "RunShard", junk,
                                    sizeof junk, ts_now_ms() + CALL_MS, &out,
                                    &len, &err),
                   TS_EINVAL);
  free(out);
}
END_TEST

START_TEST(test_unknown_method) {
  uint8_t *out = NULL;
  size_t len = 0;
  ts_err err = {0};
  int rc = ts_rpc_call_sync(main_worker.ch, SVC "Explode",
                            (const uint8_t *)"", 0, ts_now_ms() + CALL_MS,
                            &out, &len, &err);
  ck_assert_int_eq(rc, TS_EUNSUPPORTED); /* UNIMPLEMENTED */
  free(out);
}
END_TEST

START_TEST(test_has_shard_bad_id) {
  char *ids[] = {small.id, "NOT-HEX"};
  Tessera__Worker__V1__HasShardRequest req =
      TESSERA__WORKER__V1__HAS_SHARD_REQUEST__INIT;
  req.n_shard_ids = 2;
  req.shard_ids = ids;
  ts_err err = {0};
  int rc = call_unary(main_worker.ch, SVC "HasShard", &req.base, NULL, NULL,
                      ts_now_ms() + CALL_MS, &err);
  ck_assert_int_eq(rc, TS_EINVAL);
  ck_assert_ptr_nonnull(strstr(err.msg, "shard_ids[1] 'NOT-HEX'"));

  Tessera__Worker__V1__UnloadShardRequest unload =
      TESSERA__WORKER__V1__UNLOAD_SHARD_REQUEST__INIT;
  unload.shard_id = "xyz";
  rc = call_unary(main_worker.ch, SVC "UnloadShard", &unload.base, NULL, NULL,
                  ts_now_ms() + CALL_MS, &err);
  ck_assert_int_eq(rc, TS_EINVAL);
  ck_assert_msg(strstr(err.msg, "shard_id 'xyz' is not a lowercase hex"),
                "%s", err.msg);
}
END_TEST

START_TEST(test_big_model) {
  /* One 50M-float initializer: a 200 MB shard in 1 MiB chunks. */
  gemm big;
  gemm_make(&big, 10000, 5000, 42);
  ck_assert_uint_gt(big.len, 200000000);
  ck_assert(!has_shard(&main_worker, big.id));
  uint64_t before = memory_used(&main_worker);
  int64_t t0 = ts_now_ms();
  load_ok(&main_worker, &big, MiB, "big/s0/k0");
  printf("200 MB shard loaded in %lld ms\n", (long long)(ts_now_ms() - t0));
  ck_assert(has_shard(&main_worker, big.id));
  ck_assert_uint_eq(memory_used(&main_worker), before + big.len);
  run_and_check(&main_worker, &big, 2, 43);

  /* With 200 MB held, 400 MB more no longer fits under 512 MiB. */
  char id[TS_SHA256_HEX_LEN + 1];
  ts_sha256_hex("another", 7, id);
  uint8_t data[16] = {0};
  expect_load_fails(id, 400ull * 1000 * 1000, data, sizeof data, sizeof data,
                    TS_EEXHAUSTED, "in use");

  /* Unload returns the memory. */
  Tessera__Worker__V1__UnloadShardRequest req =
      TESSERA__WORKER__V1__UNLOAD_SHARD_REQUEST__INIT;
  req.shard_id = big.id;
  ProtobufCMessage *resp = NULL;
  ts_err err = {0};
  ck_assert_int_eq(
      call_unary(main_worker.ch, SVC "UnloadShard", &req.base,
                 &tessera__worker__v1__unload_shard_response__descriptor,
                 &resp, ts_now_ms() + CALL_MS, &err),
      0);
  ck_assert(((Tessera__Worker__V1__UnloadShardResponse *)resp)->was_loaded);
  protobuf_c_message_free_unpacked(resp, NULL);
  ck_assert_uint_eq(memory_used(&main_worker), before);
  ck_assert(!has_shard(&main_worker, big.id));
  /* A second unload finds nothing; a run is NOT_FOUND. */
  ck_assert_int_eq(
      call_unary(main_worker.ch, SVC "UnloadShard", &req.base,
                 &tessera__worker__v1__unload_shard_response__descriptor,
                 &resp, ts_now_ms() + CALL_MS, &err),
      0);
  ck_assert(!((Tessera__Worker__V1__UnloadShardResponse *)resp)->was_loaded);
  protobuf_c_message_free_unpacked(resp, NULL);
  float x[10000];
  fill(x, 10000, 1);
  run_req r;
  run_req_init(&r, big.id, x, 1, 10000);
  expect_run_fails(&main_worker, &r, TS_ENOTFOUND, big.id);
  gemm_free(&big);
}
END_TEST

START_TEST(test_status) {
  Tessera__Worker__V1__StatusResponse *s = status(&main_worker);
  ck_assert_uint_eq(s->threads, 2);
  ck_assert_uint_eq(s->memory_limit, 512ull * MiB);
  ck_assert_str_eq(s->listen, main_worker.addr);
  ck_assert(s->blas_core && s->blas_core[0]);
  /* Nothing queued; a pool thread may still be leaving the last run it
   * answered, so in_flight is at most that one. */
  ck_assert_uint_eq(s->queue_depth, 0);
  ck_assert_uint_le(s->in_flight, 1);
  /* Only the small shard is held now, and memory is exactly its bytes. */
  ck_assert_uint_eq(s->n_shards, 1);
  ck_assert_str_eq(s->shards[0]->shard_id, small.id);
  ck_assert_str_eq(s->shards[0]->label, "gemm/s0/k0");
  ck_assert_uint_eq(s->shards[0]->bytes, small.len);
  ck_assert_uint_eq(s->memory_used, small.len);
  /* Runs that succeeded so far on it: 3 + 1 + 1 + 1 (see the tests above)
   * plus the executor-rejected ones, which ran and failed; at least 6. */
  ck_assert_uint_ge(s->shards[0]->runs, 6);
  ck_assert_uint_ge(s->runs_total, s->shards[0]->runs);
  printf("worker status: %llu runs, OpenBLAS core %s\n",
         (unsigned long long)s->runs_total, s->blas_core);
  tessera__worker__v1__status_response__free_unpacked(s, NULL);
}
END_TEST

/* ---- scheduling: one kernel thread ------------------------------------- */

typedef struct async_tally {
  atomic_int done;
  atomic_int ok;
  atomic_int exhausted;
  atomic_int cancelled;
  atomic_int other;
  atomic_int last_code;
} async_tally;

static void tally_done(void *user, const ts_rpc_result *res) {
  async_tally *t = user;
  if (res->code == 0)
    atomic_fetch_add(&t->ok, 1);
  else if (res->code == TS_EEXHAUSTED)
    atomic_fetch_add(&t->exhausted, 1);
  else if (res->code == TS_ECANCELLED)
    atomic_fetch_add(&t->cancelled, 1);
  else {
    atomic_fetch_add(&t->other, 1);
    atomic_store(&t->last_code, res->code);
  }
  atomic_fetch_add(&t->done, 1);
}

static void wait_done(async_tally *t, int n, int timeout_ms) {
  int64_t end = ts_now_ms() + timeout_ms;
  while (atomic_load(&t->done) < n && ts_now_ms() < end) usleep(5000);
  ck_assert_int_eq(atomic_load(&t->done), n);
}

static uint64_t runs_total(worker_proc *w) {
  Tessera__Worker__V1__StatusResponse *s = status(w);
  uint64_t n = s->runs_total;
  tessera__worker__v1__status_response__free_unpacked(s, NULL);
  return n;
}

/* Starts a run of X[rows, g->K] asynchronously; returns its handle. */
static ts_rpc_outcall *run_async(ts_rpc_client *c, worker_proc *w,
                                 const gemm *g, const float *x, int64_t rows,
                                 int64_t deadline, async_tally *t) {
  run_req r;
  run_req_init(&r, g->id, x, rows, g->K);
  size_t len;
  uint8_t *buf = pack_msg(&r.req.base, &len);
  ts_rpc_outcall *h = NULL;
  ck_assert_int_eq(ts_rpc_call_async(c, w->ch, SVC "RunShard", buf, len,
                                     deadline, tally_done, t, &h),
                   0);
  free(buf);
  return h;
}

/* Waits until the worker reports a run executing. */
static void wait_in_flight(worker_proc *w) {
  int64_t end = ts_now_ms() + 30000;
  for (;;) {
    Tessera__Worker__V1__StatusResponse *s = status(w);
    uint32_t n = s->in_flight;
    tessera__worker__v1__status_response__free_unpacked(s, NULL);
    if (n > 0) return;
    ck_assert_msg(ts_now_ms() < end, "the slow run never started");
    usleep(2000);
  }
}

START_TEST(test_queue_deadline_cancel) {
  worker_proc w;
  static const char *const args[] = {"--threads", "1", NULL};
  worker_start(&w, args);
  /* 64 Gemm layers of 1024 x 1024 sharing one 4 MB weight: a run of 1024
   * rows is 137 GFLOP, over a second on one thread, with small messages
   * (long enough for what happens behind it, short enough that a loaded
   * machine still finishes it inside the worker's 10 s leave). */
  gemm g;
  gemm_make_layers(&g, 1024, 1024, 8, 64, 0.05f);
  load_ok(&w, &g, MiB, "slow/s0");
  int64_t slow_rows = 1024;
  float *xs = malloc((size_t)(slow_rows * g.K) * sizeof(float));
  ck_assert_ptr_nonnull(xs);
  fill(xs, (size_t)(slow_rows * g.K), 9);
  float *x1 = xs; /* one row for the small runs */

  ts_rpc_client *c = NULL;
  ts_err err = {0};
  ck_assert_int_eq(ts_rpc_client_create(&c, &err), 0);
  uint64_t runs0 = runs_total(&w);

  async_tally slow = {0};
  run_async(c, &w, &g, xs, slow_rows, ts_now_ms() + CALL_MS, &slow);
  wait_in_flight(&w);

  /* Queued behind the slow run with a 200 ms deadline: answered
   * DEADLINE_EXCEEDED, and never run. */
  run_req r;
  run_req_init(&r, g.id, x1, 1, g.K);
  Tessera__Worker__V1__RunShardResponse *resp = NULL;
  int rc = run_shard(&w, &r, &resp, ts_now_ms() + 200, &err);
  ck_assert_msg(rc == TS_ETIMEDOUT, "got %d: %s", rc, err.msg);

  /* Queued, then cancelled by the client: never run. */
  async_tally cancelled = {0};
  ts_rpc_outcall *h = run_async(c, &w, &g, x1, 1, ts_now_ms() + CALL_MS,
                                &cancelled);
  usleep(50000);
  ts_rpc_outcall_cancel(h);
  wait_done(&cancelled, 1, 10000);
  ck_assert_int_eq(atomic_load(&cancelled.cancelled), 1);
  /* Both leave the queue while the slow run is still going, and are
   * counted as dropped. The client sees its own cancel at once; the
   * worker learns of it from the transport a moment later. */
  Tessera__Worker__V1__StatusResponse *st = status(&w);
  for (int64_t until = ts_now_ms() + 5000;
       (st->queue_depth != 0 || st->runs_cancelled != 2) &&
       ts_now_ms() < until;) {
    tessera__worker__v1__status_response__free_unpacked(st, NULL);
    usleep(2000);
    st = status(&w);
  }
  ck_assert_int_eq(atomic_load(&slow.done), 0);
  ck_assert_uint_eq(st->queue_depth, 0);
  ck_assert_uint_eq(st->runs_cancelled, 2);
  tessera__worker__v1__status_response__free_unpacked(st, NULL);

  /* Flood: 300 runs against a queue of 256; the excess is refused with
   * RESOURCE_EXHAUSTED and every call gets exactly one answer. */
  async_tally flood = {0};
  enum { FLOOD = 300 };
  for (int i = 0; i < FLOOD; i++)
    run_async(c, &w, &g, x1, 1, ts_now_ms() + CALL_MS, &flood);
  wait_done(&flood, FLOOD, CALL_MS);
  wait_done(&slow, 1, CALL_MS);
  ck_assert_int_eq(atomic_load(&slow.ok), 1);
  printf("flood: %d ok, %d RESOURCE_EXHAUSTED, %d other (last %d)\n",
         atomic_load(&flood.ok), atomic_load(&flood.exhausted),
         atomic_load(&flood.other), atomic_load(&flood.last_code));
  ck_assert_int_eq(atomic_load(&flood.other), 0);
  ck_assert_int_ge(atomic_load(&flood.exhausted), 1);
  ck_assert_int_ge(atomic_load(&flood.ok), 1);
  ck_assert_int_le(atomic_load(&flood.ok), 256);

  /* What ran: the slow run and the accepted flood, nothing else. */
  ck_assert_uint_eq(runs_total(&w),
                    runs0 + 1 + (uint64_t)atomic_load(&flood.ok));

  /* SIGTERM while a run executes: health turns NOT_SERVING, runs that
   * still arrive (the coordinator moves shards away meanwhile) are served,
   * a second SIGTERM changes nothing, the run in flight still completes,
   * then, once runs stop arriving, the worker exits 0. */
  async_tally last = {0};
  run_async(c, &w, &g, xs, slow_rows / 2, ts_now_ms() + CALL_MS, &last);
  wait_in_flight(&w);
  kill(w.pid, SIGTERM);
  int64_t end = ts_now_ms() + 10000;
  while (health(&w) != 2) {
    ck_assert_msg(ts_now_ms() < end, "health never turned NOT_SERVING");
    usleep(5000);
  }
  rc = run_shard(&w, &r, &resp, ts_now_ms() + CALL_MS, &err);
  ck_assert_msg(rc == TS_OK, "run during the leave: %d %s", rc, err.msg);
  tessera__worker__v1__run_shard_response__free_unpacked(resp, NULL);
  kill(w.pid, SIGTERM);
  ck_assert_int_eq(worker_wait(&w, 60000), 0);
  wait_done(&last, 1, 10000);
  ck_assert_msg(atomic_load(&last.ok) == 1,
                "the in-flight run was not finished before exit");
  ts_rpc_client_free(c);
  free(xs);
  gemm_free(&g);
}
END_TEST

START_TEST(test_command_line) {
  /* Bad options exit 2 at once, without serving. */
  static const char *const cases[][4] = {
      {"--join", NULL}, /* missing its argument */
      {"--threads", "0", NULL},
      {"--threads", "many", NULL},
      {"--memory-limit", "12Q", NULL},
      {"--memory-limit", "-5", NULL},
      {"--bogus", NULL},
  };
  const char *build = getenv("TESSERA_BUILD");
  char bin[4096];
  snprintf(bin, sizeof bin, "%s/worker/tessera-worker", build);
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    const char *argv[8] = {bin, "--listen", "127.0.0.1:0"};
    int argc = 3;
    for (int k = 0; cases[i][k]; k++) argv[argc++] = cases[i][k];
    argv[argc] = NULL;
    pid_t pid = spawn(bin, argv, -1);
    ck_assert_int_gt(pid, 0);
    int st = 0;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 2,
                  "%s %s: status %d", cases[i][0],
                  cases[i][1] ? cases[i][1] : "", st);
  }
  /* Sizes with suffixes are accepted and reported. */
  worker_proc w;
  static const char *const args[] = {"--memory-limit", "3G", "--threads", "3",
                                     NULL};
  worker_start(&w, args);
  Tessera__Worker__V1__StatusResponse *s = status(&w);
  ck_assert_uint_eq(s->memory_limit, 3ull << 30);
  ck_assert_uint_eq(s->threads, 3);
  tessera__worker__v1__status_response__free_unpacked(s, NULL);
  ck_assert_int_eq(worker_stop(&w, 30000), 0);
}
END_TEST

START_TEST(test_systemd_notify) {
#if TS_HAVE_SYSTEMD
  /* Play systemd: READY=1 once serving, STOPPING=1 on SIGTERM. */
  char path[108];
  snprintf(path, sizeof path, "/tmp/tessera-notify-%d", (int)getpid());
  unlink(path);
  int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  ck_assert_int_ge(fd, 0);
  struct sockaddr_un addr = {.sun_family = AF_UNIX};
  snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path);
  ck_assert_int_eq(bind(fd, (struct sockaddr *)&addr, sizeof addr), 0);
  setenv("NOTIFY_SOCKET", path, 1);
  worker_proc w;
  worker_start(&w, NULL);
  unsetenv("NOTIFY_SOCKET");
  const char *want[] = {"READY=1", "STOPPING=1"};
  for (int i = 0; i < 2; i++) {
    if (i == 1) kill(w.pid, SIGTERM);
    struct pollfd p = {.fd = fd, .events = POLLIN};
    ck_assert_msg(poll(&p, 1, 20000) == 1, "no %s", want[i]);
    char msg[256];
    ssize_t n = recv(fd, msg, sizeof msg - 1, 0);
    ck_assert_int_gt(n, 0);
    msg[n] = '\0';
    ck_assert_msg(strstr(msg, want[i]) != NULL, "got '%s', want %s", msg,
                  want[i]);
  }
  ck_assert_int_eq(worker_wait(&w, 30000), 0);
  close(fd);
  unlink(path);
#else
  printf("built without libsystemd: sd_notify not tested\n");
#endif
}
END_TEST

START_TEST(test_sigterm_exit_zero) {
  ck_assert_int_eq(worker_stop(&main_worker, 30000), 0);
  main_worker.pid = 0;
}
END_TEST

static Suite *suite(void) {
  Suite *s = suite_create("worker");
  TCase *tc = ts_check_tcase(s, "daemon", 280);
  tcase_add_unchecked_fixture(tc, main_worker_setup, main_worker_teardown);
  tcase_add_test(tc, test_health_serving);
  tcase_add_test(tc, test_load_and_run_small);
  tcase_add_test(tc, test_second_load_is_cheap_success);
  tcase_add_test(tc, test_load_wrong_hash);
  tcase_add_test(tc, test_load_bad_streams);
  tcase_add_test(tc, test_load_not_a_model);
  tcase_add_test(tc, test_memory_limit);
  tcase_add_test(tc, test_run_errors);
  tcase_add_test(tc, test_unknown_method);
  tcase_add_test(tc, test_has_shard_bad_id);
  tcase_add_test(tc, test_big_model);
  tcase_add_test(tc, test_status);
  tcase_add_test(tc, test_sigterm_exit_zero);
  TCase *sched = ts_check_tcase(s, "scheduling", 280);
  tcase_add_test(sched, test_queue_deadline_cancel);
  tcase_add_test(sched, test_command_line);
  tcase_add_test(sched, test_systemd_notify);
  return s;
}

static int rpc_init(int argc, char **argv) {
  (void)argc, (void)argv;
  signal(SIGPIPE, SIG_IGN);
  ts_rpc_init();
  return -1;
}

/* No fork: the unchecked fixture's worker serves every test of its case. */
const ts_check_suite ts_check_this_suite = {.make = suite,
                                            .before = rpc_init,
                                            .after = ts_rpc_shutdown,
                                            .no_fork = true};
