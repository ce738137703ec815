/*
 * rpc_message.h - answering a call with a protobuf-c message, the one way
 * every service in Tessera does it: pack once into a malloc'd buffer that
 * the rpc layer takes over (no further copy on our side).
 */
#ifndef TS_RPC_MESSAGE_H
#define TS_RPC_MESSAGE_H

#include <protobuf-c/protobuf-c.h>
#include <stdlib.h>

#include "rpc.h"

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

#endif
