/*
 * call.c - a command's calls to the servers: one blocking unary call per
 * request, with the --timeout-ms deadline, failing over between the
 * --server list on UNAVAILABLE (client.h).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "client.h"

int64_t cli_deadline(const cli *c) {
  return ts_now_ms() + c->opt->timeout_ms;
}

/* One call on server i. On success *resp is the reply, unpacked with
 * resp_desc; on failure err->msg holds the server's status details. */
static int call_one(cli *c, int i, const char *method, const uint8_t *req,
                    size_t len, const ProtobufCMessageDescriptor *resp_desc,
                    ProtobufCMessage **resp, ts_err *err) {
  uint8_t *bytes = NULL;
  size_t n = 0;
  *resp = NULL;
  int rc = ts_rpc_call_sync(c->channels[i], method, req, len, cli_deadline(c),
                            &bytes, &n, err);
  if (rc) return rc;
  *resp = protobuf_c_message_unpack(resp_desc, NULL, n, bytes);
  free(bytes);
  if (!*resp)
    return ts_err_set(err, TS_EIO, "%s: cannot decode the server's %s",
                      method, resp_desc->name);
  return TS_OK;
}

/* call_one on `server`, or, when server < 0, failing over (client.h). */
static int call(cli *c, int server, const char *method, const uint8_t *req,
                size_t len, const ProtobufCMessageDescriptor *resp_desc,
                ProtobufCMessage **resp, ts_err *err) {
  if (server >= 0)
    return call_one(c, server, method, req, len, resp_desc, resp, err);
  int first = atomic_load(&c->current), rc = TS_OK, i = first;
  for (int k = 0; k < c->n_servers; k++) {
    i = (first + k) % c->n_servers;
    rc = call_one(c, i, method, req, len, resp_desc, resp, err);
    if (rc != TS_EUNAVAILABLE) {
      if (i != first) atomic_store(&c->current, i);
      return rc;
    }
    if (k + 1 < c->n_servers)
      fprintf(stderr, "tessera: server %s unavailable (%s); trying %s\n",
              c->servers[i], err->msg,
              c->servers[(first + k + 1) % c->n_servers]);
  }
  if (c->n_servers > 1)
    ts_err_prefix(err, "all %d servers unavailable (the last tried: %s)",
                  c->n_servers, c->servers[i]);
  return rc;
}

int cli_call_bytes(cli *c, const char *method, const uint8_t *req, size_t len,
                   const ProtobufCMessageDescriptor *resp_desc,
                   ProtobufCMessage **resp, ts_err *err) {
  return call(c, -1, method, req, len, resp_desc, resp, err);
}

/* Packs `req` and calls (call()'s `server`). */
static int call_message(cli *c, int server, const char *method,
                        const ProtobufCMessage *req,
                        const ProtobufCMessageDescriptor *resp_desc,
                        ProtobufCMessage **resp, ts_err *err) {
  size_t len = protobuf_c_message_get_packed_size(req);
  uint8_t *buf = malloc(len ? len : 1);
  if (!buf) return ts_err_set(err, TS_ENOMEM, "cannot allocate the request");
  protobuf_c_message_pack(req, buf);
  int rc = call(c, server, method, buf, len, resp_desc, resp, err);
  free(buf);
  return rc;
}

int cli_call(cli *c, const char *method, const ProtobufCMessage *req,
             const ProtobufCMessageDescriptor *resp_desc,
             ProtobufCMessage **resp, ts_err *err) {
  return call_message(c, -1, method, req, resp_desc, resp, err);
}

int cli_call_on(cli *c, int server, const char *method,
                const ProtobufCMessage *req,
                const ProtobufCMessageDescriptor *resp_desc,
                ProtobufCMessage **resp, ts_err *err) {
  return call_message(c, server, method, req, resp_desc, resp, err);
}
