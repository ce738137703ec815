/*
 * rpc_message.h - protobuf-c messages at the RPC edge, the one way every
 * service in Tessera does it: unpack a request or answer INVALID_ARGUMENT;
 * answer by packing once into a malloc'd buffer that the rpc layer takes
 * over (no further copy on our side). (Blocking work leaves the pollers
 * through ts_rpc_call_offload, rpc.h.)
 */
#ifndef TS_RPC_MESSAGE_H
#define TS_RPC_MESSAGE_H

#include <protobuf-c/protobuf-c.h>
#include <stdalign.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

#include "rpc.h"

/* A bump arena for one request's memory: its unpacked message (pass
 * &arena->allocator to unpack; never free_unpacked) and any small arrays
 * the handler needs. Nothing is freed piece by piece; release frees it all
 * at once. The first TS_RPC_ARENA_INLINE bytes live in the struct itself,
 * so a small request costs no allocation beyond its owner's; larger ones
 * spill into malloc'd blocks. Not thread-safe (one request, one owner). */
#define TS_RPC_ARENA_INLINE 3072
typedef struct ts_rpc_arena {
  ProtobufCAllocator allocator;
  size_t used;  /* bytes of `first` handed out */
  void *blocks; /* malloc'd overflow blocks, linked through their first word */
  alignas(max_align_t) unsigned char first[TS_RPC_ARENA_INLINE];
} ts_rpc_arena;

void ts_rpc_arena_init(ts_rpc_arena *a);
/* size bytes, zeroed, aligned for any type; NULL when out of memory. */
void *ts_rpc_arena_calloc(ts_rpc_arena *a, size_t size);
/* Frees the overflow blocks; init again before reuse. */
void ts_rpc_arena_release(ts_rpc_arena *a);

static inline void ts_rpc_call_reply_message(ts_rpc_call *call,
                                             const ProtobufCMessage *msg) {
  size_t len = protobuf_c_message_get_packed_size(msg);
  uint8_t *buf = malloc(len ? len : 1);
  if (!buf) {
    ts_rpc_call_fail(call, TS_ENOMEM, "out of memory");
    return;
  }
  protobuf_c_message_pack(msg, buf);
  ts_rpc_call_reply_owned(call, buf, len);
}

/* Unpacks a request through `allocator` (NULL: malloc), or answers
 * INVALID_ARGUMENT naming the message type and returns NULL. */
static inline ProtobufCMessage *ts_rpc_call_unpack_with(
    ts_rpc_call *call, const ProtobufCMessageDescriptor *d,
    ProtobufCAllocator *allocator, const uint8_t *data, size_t len) {
  ProtobufCMessage *m = protobuf_c_message_unpack(d, allocator, len, data);
  if (!m) {
    char msg[160];
    snprintf(msg, sizeof msg, "malformed %s (%zu bytes)", d->name, len);
    ts_rpc_call_fail(call, TS_EINVAL, msg);
  }
  return m;
}

/* The same with malloc: free the result with
 * protobuf_c_message_free_unpacked. */
static inline ProtobufCMessage *ts_rpc_call_unpack(
    ts_rpc_call *call, const ProtobufCMessageDescriptor *d,
    const uint8_t *data, size_t len) {
  return ts_rpc_call_unpack_with(call, d, NULL, data, len);
}

#endif
