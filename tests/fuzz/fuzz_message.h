/*
 * fuzz_message.h - how the fuzz targets of RPC requests take their bytes:
 * unpacked by protobuf-c into a request arena, as a handler does
 * (ts_rpc_call_unpack_with, rpc_message.h), so that the code under test
 * sees exactly what a handler would.
 */
#ifndef TS_FUZZ_MESSAGE_H
#define TS_FUZZ_MESSAGE_H

#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#include "rpc_message.h"

/* Initialises `arena` and unpacks `data` as a `desc` message into it; NULL
 * for bytes that are no such message. The caller releases the arena
 * (ts_rpc_arena_release) whatever the result, which frees the message. */
static inline void *fuzz_message_unpack(const ProtobufCMessageDescriptor *desc,
                                        ts_rpc_arena *arena,
                                        const uint8_t *data, size_t size) {
  ts_rpc_arena_init(arena);
  return protobuf_c_message_unpack(desc, &arena->allocator, size, data);
}

#endif
