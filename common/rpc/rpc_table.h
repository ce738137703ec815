/*
 * rpc_table.h - a service's unary methods as one table of
 * {path, request message descriptor, typed handler} (Redis's command-table
 * habit), served through one generic dispatcher: it unpacks the request
 * with the entry's descriptor, calls the typed handler, and frees the
 * request when the handler returns. A request that is not its message
 * (bad bytes) never reaches a handler: it is answered INVALID_ARGUMENT
 * "malformed <message type> (<n> bytes)" from one place
 * (ts_rpc_call_unpack_with, rpc_message.h).
 *
 * An entry whose request must outlive its handler (ModelInfer, RunShard:
 * unpacked into the job's own arena, used after the handler returned)
 * names a raw handler instead, which unpacks with ts_rpc_call_unpack_with
 * itself, so the same check and message apply. Client-streaming methods
 * stay ts_rpc_method entries of their own (the worker's LoadShard must
 * release a half-done upload's memory before a malformed chunk's failure
 * reaches the client, so it unpacks each chunk itself).
 *
 * Each entry names the roles it admits (rpc_auth.h) and the largest
 * request it takes, both checked by the server before the handler runs.
 *
 * Depends on rpc.h, rpc_auth.h, rpc_message.h and protobuf-c only.
 */
#ifndef TS_RPC_TABLE_H
#define TS_RPC_TABLE_H

#include "rpc.h"
#include "rpc_auth.h"
#include "rpc_message.h"

/* A typed unary handler: `request` is the unpacked message of the entry's
 * descriptor (cast it to the generated type), valid until the handler
 * returns; the dispatcher frees it then. The handler answers `call` (now
 * or later: a handler that offloads copies what it needs first). */
typedef void (*ts_rpc_request_fn)(ts_rpc_call *call,
                                  const ProtobufCMessage *request, void *user);

typedef struct ts_rpc_handler {
  const char *path;                           /* "/package.Service/Method" */
  const ProtobufCMessageDescriptor *request;  /* its request message */
  ts_rpc_request_fn handle;                   /* or NULL with raw */
  ts_rpc_unary_fn raw; /* instead of handle: gets the bytes, unpacks itself */
  unsigned roles;      /* TS_ROLE_* bits admitted (rpc_auth.h); 0: anyone */
  size_t max_request;  /* ts_rpc_method.max_request: 0 for the process's
                          max_message (tensors), else a control method's
                          TS_RPC_CONTROL_MAX_REQUEST */
} ts_rpc_handler;

/* Where a table entry meets its service: storage the caller keeps (one per
 * entry) for as long as the server runs. */
typedef struct ts_rpc_binding {
  const ts_rpc_handler *handler;
  void *user;
} ts_rpc_binding;

/* Turns table[0..n) into server methods out[0..n): each unary, calling its
 * entry with `user`. bindings (room for n) must outlive the server.
 * Returns n. */
int ts_rpc_table_methods(const ts_rpc_handler *table, int n, void *user,
                         ts_rpc_binding *bindings, ts_rpc_method *out);

#endif
