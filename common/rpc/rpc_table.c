/*
 * rpc_table.c - the generic dispatcher behind every method table. See
 * rpc_table.h.
 */
#include "rpc_table.h"

/* The one unary function every typed entry is served through. */
static void dispatch(ts_rpc_call *call, const uint8_t *data, size_t len,
                     void *user) {
  const ts_rpc_binding *b = user;
  ProtobufCMessage *request =
      ts_rpc_call_unpack(call, b->handler->request, data, len);
  if (!request) return; /* answered INVALID_ARGUMENT */
  b->handler->handle(call, request, b->user);
  protobuf_c_message_free_unpacked(request, NULL);
}

int ts_rpc_table_methods(const ts_rpc_handler *table, int n, void *user,
                         ts_rpc_binding *bindings, ts_rpc_method *out) {
  for (int i = 0; i < n; i++) {
    TS_ASSERT((table[i].handle && table[i].request) != !!table[i].raw);
    bindings[i] = (ts_rpc_binding){.handler = &table[i], .user = user};
    out[i] = (ts_rpc_method){
        .path = table[i].path,
        .kind = TS_RPC_UNARY,
        .unary = table[i].raw ? table[i].raw : dispatch,
        .user = table[i].raw ? user : &bindings[i],
        .roles = table[i].roles,
        .max_request = table[i].max_request,
    };
  }
  return n;
}
