/*
 * protowire.h - a cursor over protobuf wire bytes and a varint writer, shared by
 * walks over ModelProto bytes that must not (or cannot yet) unpack them:
 * inplace.c (the slim copy of a model) and nesting.c (the depth check run
 * before protobuf-c, which has no recursion limit, unpacks anything).
 * Internal to common/engine/.
 *
 * Wire format: each field is a varint tag (number << 3 | wire type) then a
 * varint (type 0), 8 bytes (1), a varint length and that many bytes (2), or
 * 4 bytes (5). Groups (3, 4) are not used by ONNX and are refused.
 */
#ifndef TS_PROTOWIRE_H
#define TS_PROTOWIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum { TS_WT_VARINT = 0, TS_WT_I64 = 1, TS_WT_LEN = 2, TS_WT_I32 = 5 };

typedef struct ts_wire_cursor {
  const uint8_t *p, *end;
} ts_wire_cursor;

/* One field: its number, wire type, and where its value starts and ends
 * (for TS_WT_LEN, the bytes after the length). */
typedef struct ts_wire_field {
  uint64_t number;
  int type;
  const uint8_t *start;       /* the tag */
  const uint8_t *value, *end; /* the value (payload for TS_WT_LEN) */
} ts_wire_field;

/* Reads one varint; false when it is truncated or longer than 10 bytes. */
bool ts_wire_varint(ts_wire_cursor *c, uint64_t *v);

/* The longest varint: 64 bits in 7-bit groups. */
#define TS_WIRE_VARINT_MAX 10

/* Writes v as a varint into out (room for TS_WIRE_VARINT_MAX bytes) and
 * returns how many bytes it took, 1 to TS_WIRE_VARINT_MAX. */
size_t ts_wire_put_varint(uint8_t *out, uint64_t v);

/* Reads the next field and moves past it; false when the bytes are
 * truncated, a length runs past the end, or the wire type is a group or
 * unknown. Only reads the bytes. */
bool ts_wire_next(ts_wire_cursor *c, ts_wire_field *f);

#endif
