/*
 * load.c - the loader's entry points (graph.h): ts_model_load,
 * ts_model_load_adopt, ts_model_load_file and ts_model_free, and the box a
 * model lives in. They check the nesting of the bytes (nesting.c), unpack
 * them with protobuf-c, and hand the proto to ts_model_build (graph.c), whose
 * passes make the IR.
 *
 * A ts_model is allocated inside a private box that also carries a serial
 * number unique within the process; the executor keys its plan cache on it
 * (a freed model's address may be reused, its serial is not). The box also
 * holds the buffer a model adopted: loaded with ts_model_load_adopt (as files
 * and the worker's shards are), the large raw_data fields of the bytes are
 * moved into place inside that buffer (inplace.c) and the initializers point
 * at them, so a load never holds the weights twice. The buffer is released
 * with the model, after the proto, whose pointers into it are cut first.
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "array.h"
#include "engine_int.h"
#include "graph.h"

#define MODEL_MAGIC 0x74736d6f64656c31ull /* "tsmodel1" */

/* The buffer a model adopted (ts_model_load_adopt), or none. */
typedef struct adoption {
  uint8_t *bytes;
  size_t len;
  ts_bytes_release release;
  void *ctx;
} adoption;

typedef struct model_box {
  ts_model pub;
  uint64_t magic;
  uint64_t serial;
  adoption adoption; /* large initializers may point into it */
} model_box;

static atomic_uint_fast64_t next_serial = 1;

uint64_t ts_model_serial(const ts_model *m) {
  const model_box *b = (const model_box *)m;
  return b->magic == MODEL_MAGIC ? b->serial : 0;
}

/* Frees an unpacked proto whose initializers may point into an adopted
 * buffer (protobuf-c would free() them), then releases the buffer. */
static void free_proto(Onnx__ModelProto *p, const adoption *a) {
  if (a->bytes && p && p->graph)
    for (size_t i = 0; i < p->graph->n_initializer; i++) {
      ProtobufCBinaryData *raw = &p->graph->initializer[i]->raw_data;
      if (raw->data >= a->bytes && raw->data < a->bytes + a->len) {
        raw->data = NULL;
        raw->len = 0;
      }
    }
  if (p) onnx__model_proto__free_unpacked(p, NULL);
  if (a->release) a->release(a->bytes, a->len, a->ctx);
}

/* Builds a model around an unpacked proto and the buffer it may point into,
 * which the model owns from here on, also on failure. */
static int load_proto(Onnx__ModelProto *p, const adoption *a,
                      size_t fold_limit, ts_model **out, ts_err *err) {
  model_box *box = calloc(1, sizeof *box);
  if (!box) {
    free_proto(p, a);
    return ts_err_set(err, TS_ENOMEM, "out of memory loading a model");
  }
  box->magic = MODEL_MAGIC;
  box->serial = atomic_fetch_add(&next_serial, 1);
  box->adoption = *a;
  box->pub.proto = p;
  int rc = ts_model_build(&box->pub, fold_limit, err);
  if (rc) {
    ts_model_free(&box->pub);
    return rc;
  }
  *out = &box->pub;
  return TS_OK;
}

size_t ts_fold_limit_default(size_t model_bytes) {
  size_t scaled = model_bytes > SIZE_MAX / TS_FOLD_LIMIT_FACTOR
                      ? SIZE_MAX
                      : model_bytes * TS_FOLD_LIMIT_FACTOR;
  return scaled > TS_FOLD_LIMIT_MIN ? scaled : TS_FOLD_LIMIT_MIN;
}

/* The fold limit of a load of len bytes with opts (NULL: the default). */
static size_t fold_limit(const ts_load_opts *opts, size_t len) {
  return opts ? opts->fold_limit : ts_fold_limit_default(len);
}

/* ts_model_load with an explicit fold limit. */
static int load_copy(const uint8_t *bytes, size_t len, size_t limit,
                     ts_model **out, ts_err *err) {
  *out = NULL;
  if (!bytes && len)
    return ts_err_set(err, TS_EINVAL, "model bytes are missing");
  int rc = ts_model_check_nesting(bytes, len, TS_MODEL_MAX_NESTING, err);
  if (rc) return rc;
  Onnx__ModelProto *p = onnx__model_proto__unpack(NULL, len, bytes);
  if (!p)
    return ts_err_set(err, TS_EINVAL,
                      "not a valid ONNX model (corrupt or truncated protobuf)");
  return load_proto(p, &(adoption){0}, limit, out, err);
}

int ts_model_load(const uint8_t *bytes, size_t len, ts_model **out,
                  ts_err *err) {
  return load_copy(bytes, len, ts_fold_limit_default(len), out, err);
}

/* Moves the slim encoding's payloads into place in `bytes` and points the
 * initializers at them; false, with nothing moved, when the unpacked slim
 * proto does not have the empty raw_data each record expects. */
static bool place_payloads(Onnx__ModelProto *p, uint8_t *bytes,
                           const ts_inplace *s) {
  const Onnx__GraphProto *g = p->graph;
  for (size_t i = 0; i < s->n; i++) {
    const ts_inplace_payload *r = &s->payloads[i];
    if (!g || r->initializer >= g->n_initializer ||
        !g->initializer[r->initializer]->has_raw_data ||
        g->initializer[r->initializer]->raw_data.len != 0)
      return false;
  }
  for (size_t i = 0; i < s->n; i++) {
    const ts_inplace_payload *r = &s->payloads[i];
    memmove(bytes + r->dst, bytes + r->src, r->len);
    Onnx__TensorProto *tp = g->initializer[r->initializer];
    free(tp->raw_data.data); /* what protobuf-c made of the empty field */
    tp->raw_data.data = bytes + r->dst;
    tp->raw_data.len = r->len;
  }
  return true;
}

int ts_model_load_adopt(uint8_t *bytes, size_t len, ts_bytes_release release,
                        void *ctx, ts_model **out, ts_err *err) {
  return ts_model_load_adopt_opts(bytes, len, release, ctx, NULL, out, err);
}

int ts_model_load_adopt_opts(uint8_t *bytes, size_t len,
                             ts_bytes_release release, void *ctx,
                             const ts_load_opts *opts, ts_model **out,
                             ts_err *err) {
  *out = NULL;
  adoption a = {bytes, len, release, ctx};
  ts_inplace s;
  Onnx__ModelProto *p = NULL;
  int rc = ts_model_check_nesting(bytes, len, TS_MODEL_MAX_NESTING, err);
  if (rc) {
    if (release) release(bytes, len, ctx);
    return rc;
  }
  if (bytes && ts_inplace_slim(bytes, len, &s) == TS_OK) {
    p = onnx__model_proto__unpack(NULL, s.slim_len, s.slim);
    if (p && !place_payloads(p, bytes, &s)) {
      onnx__model_proto__free_unpacked(p, NULL);
      p = NULL;
    }
    ts_inplace_free(&s);
  }
  if (p) return load_proto(p, &a, fold_limit(opts, len), out, err);
  /* nothing to place, or not understood: the plain path */
  rc = load_copy(bytes, len, fold_limit(opts, len), out, err);
  if (release) release(bytes, len, ctx);
  return rc;
}

static void release_malloced(void *bytes, size_t len, void *ctx) {
  (void)len;
  (void)ctx;
  free(bytes);
}

int ts_model_load_file(const char *path, ts_model **out, ts_err *err) {
  return ts_model_load_file_opts(path, NULL, out, err);
}

int ts_model_load_file_opts(const char *path, const ts_load_opts *opts,
                            ts_model **out, ts_err *err) {
  *out = NULL;
  FILE *f = fopen(path, "rb");
  if (!f)
    return ts_err_set(err, errno == ENOENT ? TS_ENOTFOUND : TS_EIO,
                      "cannot open model file '%s': %s", path, strerror(errno));
  uint8_t *buf = NULL;
  size_t len = 0, cap = 0;
  int rc = TS_OK;
  for (;;) {
    if (ts_array_reserve(&buf, &cap, len + 1, 1, 1 << 20)) {
      rc = ts_err_set(err, TS_ENOMEM, "model file '%s' is too large", path);
      break;
    }
    size_t got = fread(buf + len, 1, cap - len, f);
    len += got;
    if (got == 0) {
      if (ferror(f))
        rc = ts_err_set(err, TS_EIO, "cannot read model file '%s'", path);
      break;
    }
  }
  fclose(f);
  if (rc) {
    free(buf);
    return rc;
  }
  rc = ts_model_load_adopt_opts(buf, len, release_malloced, NULL, opts, out,
                                err);
  if (rc) ts_err_prefix(err, "%s", path);
  return rc;
}

void ts_model_free(ts_model *m) {
  if (!m) return;
  ts_graph_free(&m->graph);
  model_box *box = (model_box *)m;
  free_proto(m->proto, &box->adoption);
  box->magic = 0;
  free(box);
}
