/*
 * http.h - a small embedded HTTP/1.1 server: a wrapper over libmicrohttpd
 * (Debian libmicrohttpd-dev), for the daemons' /metrics and the
 * coordinator's KServe v2 REST endpoints.
 *
 * Why libmicrohttpd: it is a packaged, well-kept C library that owns its
 * threads and sockets, so an exporter needs no event loop of ours; the
 * handler runs once per request with the whole body read.
 *
 * Threads: one thread per connection (MHD_USE_THREAD_PER_CONNECTION), so a
 * handler may block (an inference waits for its answer) without stalling
 * other clients. Handlers run concurrently and must be thread-safe.
 * Bodies: a request body over max_body bytes is answered 413 before the
 * handler runs.
 */
#ifndef TS_HTTP_H
#define TS_HTTP_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"

typedef struct ts_http_server ts_http_server;

typedef struct ts_http_request {
  const char *method;  /* "GET", "POST", ... */
  const char *url;     /* path, without the query string */
  const uint8_t *body; /* the whole body (NUL-terminated); owned by the server */
  size_t body_len;
  void *connection;    /* for ts_http_header */
} ts_http_request;

/* What the handler answers. body is malloc'd by the handler and freed by
 * the server (NULL: empty). One extra header may be set (both non-NULL;
 * the strings must outlive the handler's return only until the server
 * copied them, i.e. they may live in `extra_value_buf`). */
typedef struct ts_http_response {
  int status;
  const char *content_type;
  char *body;
  size_t body_len;
  const char *extra_name;
  char extra_value_buf[64];
} ts_http_response;

typedef void (*ts_http_handler_fn)(void *user, const ts_http_request *req,
                                   ts_http_response *resp);

/* Serves HTTP on host_port ("HOST:PORT"; port 0 picks one, written to
 * *bound_port when non-NULL). *out is freed with ts_http_stop, which then
 * calls user_free(user) when user_free is not NULL (also when the start
 * fails). */
int ts_http_start(const char *host_port, size_t max_body,
                  ts_http_handler_fn handler, void *user,
                  void (*user_free)(void *), ts_http_server **out,
                  int *bound_port, ts_err *err);

/* HTTPS: the server's certificate chain and private key, PEM text (copied;
 * the caller keeps its own). Needs a libmicrohttpd built with GnuTLS
 * (Debian's is); clients are not asked for certificates. */
typedef struct ts_http_tls {
  const char *cert_pem;
  const char *key_pem;
} ts_http_tls;

/* ts_http_start over TLS (tls NULL: plaintext, as ts_http_start). */
int ts_http_start_tls(const char *host_port, const ts_http_tls *tls,
                      size_t max_body, ts_http_handler_fn handler, void *user,
                      void (*user_free)(void *), ts_http_server **out,
                      int *bound_port, ts_err *err);

/* Whether the client has hung up (its end of the connection is closed or
 * broken), for a handler that waits: it may stop the work nobody will
 * read. A client that only shut down its sending half reads as gone too. */
int ts_http_peer_gone(const ts_http_request *req);

/* A request header's value (case-insensitive name), or NULL. */
const char *ts_http_header(const ts_http_request *req, const char *name);

/* Stops serving (waits for handlers in progress) and frees the server. */
void ts_http_stop(ts_http_server *s);

#endif
