/*
 * inplace.c - loading a model without a second copy of its weights.
 *
 * protobuf-c copies every bytes field it unpacks, so unpacking a model's
 * bytes holds the weights twice: once in the received buffer, once in the
 * parsed message. For a model that is mostly weights that doubles the peak
 * memory of every load. ts_inplace_slim() walks the protobuf wire format of
 * a ModelProto and writes a *slim* copy of it in which the raw_data of each
 * large initializer (ModelProto.graph = 7, GraphProto.initializer = 5,
 * TensorProto.raw_data = 9) is empty; it records where each payload lies in
 * the original bytes and where, aligned, it can be moved to. The loader
 * unpacks the slim copy (small), moves the payloads into place inside the
 * original buffer, which the model then owns, and points the initializers'
 * raw_data at them.
 *
 * The walk only decides what can be left out; it never judges validity:
 * anything it does not expect (a second graph field, groups, a truncated
 * varint, a second raw_data) makes it give up, and the loader falls back to
 * unpacking the original bytes, whose errors it reports as before.
 *
 * The wire cursor is protowire.h's. The slim copy writes the lengths of the
 * messages it re-encodes as 5-byte varints (legal, non-minimal), so it is
 * written in one pass.
 */
#include "array.h"
#include "engine_int.h"
#include "protowire.h"

#include <stdlib.h>
#include <string.h>

/* Payloads smaller than this stay in the slim copy: not worth a record. */
#define MIN_PAYLOAD 4096
#define ALIGN 64

enum { WT_LEN = TS_WT_LEN };
enum { MODEL_GRAPH = 7, GRAPH_INITIALIZER = 5, TENSOR_RAW_DATA = 9 };

typedef ts_wire_cursor cursor;
typedef ts_wire_field field;

typedef struct writer {
  ts_inplace *out;
  size_t cap;
  bool failed;
} writer;

static void put(writer *w, const void *data, size_t n) {
  if (w->failed) return;
  ts_inplace *o = w->out;
  if (ts_array_reserve(&o->slim, &w->cap, o->slim_len + n, 1, 4096)) {
    w->failed = true;
    return;
  }
  memcpy(o->slim + o->slim_len, data, n);
  o->slim_len += n;
}

static void put_tag(writer *w, uint64_t number, int type) {
  uint8_t b[TS_WIRE_VARINT_MAX];
  put(w, b, ts_wire_put_varint(b, number << 3 | (uint64_t)type));
}

/* Opens a length-delimited field whose length is patched by close_len. */
static size_t open_len(writer *w, uint64_t number) {
  put_tag(w, number, WT_LEN);
  static const uint8_t reserve[5] = {0x80, 0x80, 0x80, 0x80, 0x00};
  put(w, reserve, sizeof reserve);
  return w->out->slim_len;
}

static void close_len(writer *w, size_t at) {
  if (w->failed) return;
  size_t n = w->out->slim_len - at;
  if (n > 0xffffffffu) {
    w->failed = true;
    return;
  }
  uint8_t *b = w->out->slim + at - 5;
  for (int i = 0; i < 5; i++)
    b[i] = (uint8_t)(((n >> (7 * i)) & 0x7f) | (i < 4 ? 0x80 : 0));
}

static bool add_payload(ts_inplace *o, const uint8_t *base, size_t ordinal,
                        const uint8_t *data, size_t len) {
  if (ts_array_reserve(&o->payloads, &o->cap, o->n + 1, sizeof *o->payloads,
                       16))
    return false;
  o->payloads[o->n++] = (ts_inplace_payload){
      .initializer = ordinal,
      .src = (size_t)(data - base),
      .len = len,
  };
  return true;
}

/* Where the next payload may move to: at an address aligned to ALIGN (or
 * at least 8), after the previous one, and never past its own start
 * (payloads only move toward the buffer's start, in order, so none
 * overwrites one not yet moved). SIZE_MAX: it cannot. */
static size_t destination(const ts_inplace *o, const uint8_t *base,
                          size_t src) {
  size_t prev = 0;
  if (o->n) prev = o->payloads[o->n - 1].dst + o->payloads[o->n - 1].len;
  uintptr_t at = (uintptr_t)base + prev;
  const size_t aligns[] = {ALIGN, 8};
  for (int i = 0; i < 2; i++) {
    size_t a = prev + (size_t)((aligns[i] - at % aligns[i]) % aligns[i]);
    if (a <= src) return a;
  }
  return SIZE_MAX;
}

/* A TensorProto of the graph's initializers: copied without a large
 * raw_data, whose place is recorded. */
static bool slim_tensor(writer *w, const uint8_t *base, size_t ordinal,
                        const field *tf) {
  cursor c = {tf->value, tf->end};
  field f;
  const uint8_t *raw = NULL;
  size_t raw_len = 0;
  for (cursor s = c; s.p < s.end;) {
    if (!ts_wire_next(&s, &f)) return false;
    if (f.number == TENSOR_RAW_DATA && f.type == WT_LEN) {
      if (raw) return false; /* twice: let protobuf-c merge it */
      raw = f.value;
      raw_len = (size_t)(f.end - f.value);
    }
  }
  size_t dst = raw && raw_len >= MIN_PAYLOAD
                   ? destination(w->out, base, (size_t)(raw - base))
                   : SIZE_MAX;
  if (dst == SIZE_MAX) { /* kept as it is */
    put(w, tf->start, (size_t)(tf->end - tf->start));
    return true;
  }
  size_t at = open_len(w, GRAPH_INITIALIZER);
  while (c.p < c.end) {
    ts_wire_next(&c, &f);
    if (f.number == TENSOR_RAW_DATA && f.type == WT_LEN) {
      put_tag(w, TENSOR_RAW_DATA, WT_LEN);
      put(w, "", 1); /* present and empty */
    } else {
      put(w, f.start, (size_t)(f.end - f.start));
    }
  }
  close_len(w, at);
  if (!add_payload(w->out, base, ordinal, raw, raw_len)) return false;
  w->out->payloads[w->out->n - 1].dst = dst;
  return true;
}

static bool slim_graph(writer *w, const uint8_t *base, const field *gf) {
  cursor c = {gf->value, gf->end};
  field f;
  size_t ordinal = 0;
  size_t at = open_len(w, MODEL_GRAPH);
  while (c.p < c.end) {
    if (!ts_wire_next(&c, &f)) return false;
    if (f.number == GRAPH_INITIALIZER && f.type == WT_LEN) {
      if (!slim_tensor(w, base, ordinal++, &f)) return false;
    } else {
      put(w, f.start, (size_t)(f.end - f.start));
    }
  }
  close_len(w, at);
  return true;
}

int ts_inplace_slim(const uint8_t *bytes, size_t len, ts_inplace *out) {
  memset(out, 0, sizeof *out);
  writer w = {.out = out};
  cursor c = {bytes, bytes + len};
  field f;
  bool graph_seen = false, ok = true;
  while (ok && c.p < c.end) {
    if (!ts_wire_next(&c, &f)) {
      ok = false;
    } else if (f.number == MODEL_GRAPH && f.type == WT_LEN) {
      ok = !graph_seen && slim_graph(&w, bytes, &f);
      graph_seen = true;
    } else {
      put(&w, f.start, (size_t)(f.end - f.start));
    }
  }
  if (!ok || w.failed || out->n == 0) {
    ts_inplace_free(out);
    return TS_EUNSUPPORTED; /* nothing to gain, or not understood */
  }
  return TS_OK;
}

void ts_inplace_free(ts_inplace *s) {
  free(s->slim);
  free(s->payloads);
  memset(s, 0, sizeof *s);
}
