/*
 * rest.h - the KServe v2 / Open Inference Protocol over HTTP/REST on the
 * coordinator (--http-listen), with Triton's binary tensor data extension.
 *
 *   GET  /v2                                       server metadata
 *   GET  /v2/health/live, /v2/health/ready         200, or 503 not ready
 *   GET  /v2/models/NAME[/versions/V]              model metadata
 *   GET  /v2/models/NAME[/versions/V]/ready        200, or 503 not ready
 *   POST /v2/models/NAME[/versions/V]/infer        inference
 *   POST /v2/repository/index                      the models and states
 *   POST /v2/repository/models/NAME/load, /unload  (re)load, unload
 *
 * Inference runs the request path of infer.h, so every bad input answers
 * as on gRPC, mapped to HTTP (400 bad input, 404 unknown model or
 * version, 503 unavailable, 504 deadline, 429 queue full, 413 body over
 * the cap, 405 wrong method, 401/403 tokens) with a body
 * {"error": "MESSAGE"} naming the tensor and field.
 *
 * Tensors: JSON "data" as a flat or nested array (row-major), or binary
 * (parameters.binary_data_size; the JSON header's length in the request
 * header Inference-Header-Content-Length, the inputs' bytes after it in
 * order). Outputs come back as JSON "data", or as binary after the JSON
 * (parameters.binary_data per output, or binary_data_output for all;
 * Inference-Header-Content-Length in the response).
 *
 * Threads: libmicrohttpd's thread per connection (http.h); an inference
 * blocks its connection's thread on a condition variable until the answer
 * callback (any thread) has written the response, looking every 100 ms
 * whether the client hung up: then the request is cancelled (infer.h), as
 * a gRPC client's cancel is. max_deadline_ms bounds every request.
 * Security, as on the gRPC port: plaintext only where the loopback rule
 * allows it; with --tls-cert/--tls-key, HTTPS with the same certificate
 * (read once at start: SIGHUP does not rotate it here) and bearer tokens
 * (--auth-token-file, which main.c then requires, since this port checks
 * no client certificates): health is open, metadata and inference need a
 * token of any role, the repository an admin token.
 */
#ifndef TS_FRONTEND_REST_H
#define TS_FRONTEND_REST_H

#include <stddef.h>

#include "frontend.h"
#include "http.h"
#include "rpc_auth.h"

/* The default cap on a request's body (--http-max-body). */
#define TS_REST_MAX_BODY_DEFAULT ((size_t)64 << 20)

typedef struct ts_rest_opts {
  const char *listen;   /* HOST:PORT */
  size_t max_body;      /* bytes; beyond: 413 */
  ts_rpc_auth *auth;    /* bearer tokens; NULL: none needed */
  const char *tls_cert, *tls_key; /* PEM files: HTTPS; NULL: plaintext */
} ts_rest_opts;

/* Serves the REST API of fe (which must outlive the server) until
 * ts_http_stop(*out). *bound_port gets the port. */
int ts_rest_start(ts_frontend *fe, const ts_rest_opts *opts,
                  ts_http_server **out, int *bound_port, ts_err *err);

#endif
