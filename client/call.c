/*
 * call.c - a command's calls to the server: one blocking unary call per
 * request on the cli's channel, with the --timeout-ms deadline.
 */
#include <stdint.h>
#include <stdlib.h>

#include "client.h"

int64_t cli_deadline(const cli *c) {
  return ts_now_ms() + c->opt->timeout_ms;
}

/* Calls `method` with a serialized request. On success *resp is the reply,
 * unpacked with resp_desc (free it with protobuf_c_message_free_unpacked).
 * On failure err->msg holds the server's status details. */
int cli_call_bytes(cli *c, const char *method, const uint8_t *req, size_t len,
                   const ProtobufCMessageDescriptor *resp_desc,
                   ProtobufCMessage **resp, ts_err *err) {
  uint8_t *bytes = NULL;
  size_t n = 0;
  *resp = NULL;
  int rc = ts_rpc_call_sync(c->channel, method, req, len, cli_deadline(c),
                            &bytes, &n, err);
  if (rc) return rc;
  *resp = protobuf_c_message_unpack(resp_desc, NULL, n, bytes);
  free(bytes);
  if (!*resp)
    return ts_err_set(err, TS_EIO, "%s: cannot decode the server's %s",
                      method, resp_desc->name);
  return TS_OK;
}

/* cli_call_bytes for a request message. */
int cli_call(cli *c, const char *method, const ProtobufCMessage *req,
             const ProtobufCMessageDescriptor *resp_desc,
             ProtobufCMessage **resp, ts_err *err) {
  size_t len = protobuf_c_message_get_packed_size(req);
  uint8_t *buf = malloc(len ? len : 1);
  if (!buf) return ts_err_set(err, TS_ENOMEM, "cannot allocate the request");
  protobuf_c_message_pack(req, buf);
  int rc = cli_call_bytes(c, method, buf, len, resp_desc, resp, err);
  free(buf);
  return rc;
}
