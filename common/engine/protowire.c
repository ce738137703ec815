/*
 * protowire.c - the protobuf wire cursor (protowire.h).
 */
#include "protowire.h"

#include <stddef.h>

bool ts_wire_varint(ts_wire_cursor *c, uint64_t *v) {
  uint64_t x = 0;
  for (int shift = 0; shift < 64 && c->p < c->end; shift += 7) {
    uint8_t b = *c->p++;
    x |= (uint64_t)(b & 0x7f) << shift;
    if (!(b & 0x80)) {
      *v = x;
      return true;
    }
  }
  return false;
}

size_t ts_wire_put_varint(uint8_t *out, uint64_t v) {
  size_t n = 0;
  do {
    out[n] = (uint8_t)(v & 0x7f);
    v >>= 7;
    if (v) out[n] |= 0x80;
    n++;
  } while (v);
  return n;
}

bool ts_wire_next(ts_wire_cursor *c, ts_wire_field *f) {
  uint64_t tag, n;
  f->start = c->p;
  if (!ts_wire_varint(c, &tag)) return false;
  f->number = tag >> 3;
  f->type = (int)(tag & 7);
  switch (f->type) {
  case TS_WT_VARINT:
    f->value = c->p;
    if (!ts_wire_varint(c, &n)) return false;
    break;
  case TS_WT_I64:
  case TS_WT_I32: {
    size_t w = f->type == TS_WT_I64 ? 8 : 4;
    if ((size_t)(c->end - c->p) < w) return false;
    f->value = c->p;
    c->p += w;
    break;
  }
  case TS_WT_LEN:
    if (!ts_wire_varint(c, &n) || n > (uint64_t)(c->end - c->p)) return false;
    f->value = c->p;
    c->p += n;
    break;
  default:
    return false; /* groups: not in ONNX */
  }
  f->end = c->p;
  return true;
}
