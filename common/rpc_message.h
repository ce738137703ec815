/*
 * rpc_message.h - protobuf-c messages at the RPC edge, the one way every
 * service in Tessera does it: unpack a request or answer INVALID_ARGUMENT;
 * answer by packing once into a malloc'd buffer that the rpc layer takes
 * over (no further copy on our side); hand blocking work off the pollers.
 */
#ifndef TS_RPC_MESSAGE_H
#define TS_RPC_MESSAGE_H

#include <protobuf-c/protobuf-c.h>
#include <pthread.h>
#include <stdio.h>
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

/* Unpacks a request, or answers INVALID_ARGUMENT naming the message type
 * and returns NULL. Free the result with protobuf_c_message_free_unpacked. */
static inline ProtobufCMessage *ts_rpc_call_unpack(
    ts_rpc_call *call, const ProtobufCMessageDescriptor *d,
    const uint8_t *data, size_t len) {
  ProtobufCMessage *m = protobuf_c_message_unpack(d, NULL, len, data);
  if (!m) {
    char msg[160];
    snprintf(msg, sizeof msg, "malformed %s (%zu bytes)", d->name, len);
    ts_rpc_call_fail(call, TS_EINVAL, msg);
  }
  return m;
}

/* Runs fn(arg) on a detached thread: for handlers whose work blocks on the
 * network (loads, probes), which must never run on a poller thread. If no
 * thread can be started, answers RESOURCE_EXHAUSTED and returns nonzero;
 * the caller then still owns arg. */
static inline int ts_rpc_call_offload(ts_rpc_call *call, void *(*fn)(void *),
                                      void *arg) {
  pthread_t t;
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  int rc = pthread_create(&t, &attr, fn, arg);
  pthread_attr_destroy(&attr);
  if (rc != 0) ts_rpc_call_fail(call, TS_EEXHAUSTED, "cannot start a thread");
  return rc;
}

#endif
