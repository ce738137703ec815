/*
 * http.c - the embedded HTTP server over libmicrohttpd. See http.h.
 *
 * libmicrohttpd calls the access handler several times per request: once
 * with the headers, then once per chunk of body, then once with no data.
 * The body gathers in a per-connection buffer (con_cls) until that last
 * call, which runs the user's handler and queues its answer.
 */
#include "http.h"

#include <microhttpd.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "array.h"

struct ts_http_server {
  struct MHD_Daemon *daemon;
  ts_http_handler_fn handler;
  void *user;
  void (*user_free)(void *);
  size_t max_body;
  char *cert_pem, *key_pem; /* TLS: copies the daemon reads; NULL: none */
};

typedef struct body_buf {
  uint8_t *data;
  size_t len, cap;
  int too_large;
} body_buf;

static enum MHD_Result queue_answer(struct MHD_Connection *conn,
                                    ts_http_response *r) {
  struct MHD_Response *resp = MHD_create_response_from_buffer(
      r->body_len, r->body ? r->body : (char *)"", r->body ? MHD_RESPMEM_MUST_FREE
                                                        : MHD_RESPMEM_PERSISTENT);
  if (!resp) {
    free(r->body);
    return MHD_NO;
  }
  if (r->content_type)
    MHD_add_response_header(resp, "Content-Type", r->content_type);
  if (r->extra_name)
    MHD_add_response_header(resp, r->extra_name, r->extra_value_buf);
  enum MHD_Result rc = MHD_queue_response(conn, (unsigned)r->status, resp);
  MHD_destroy_response(resp);
  return rc;
}

static enum MHD_Result on_access(void *cls, struct MHD_Connection *conn,
                                 const char *url, const char *method,
                                 const char *version, const char *upload,
                                 size_t *upload_size, void **con_cls) {
  (void)version;
  ts_http_server *s = cls;
  body_buf *b = *con_cls;
  if (!b) {
    b = calloc(1, sizeof *b);
    if (!b) return MHD_NO;
    *con_cls = b;
    return MHD_YES;
  }
  if (*upload_size) {
    size_t n = *upload_size;
    *upload_size = 0;
    if (b->too_large || b->len + n > s->max_body) {
      b->too_large = 1;
      return MHD_YES;
    }
    if (ts_array_reserve(&b->data, &b->cap, b->len + n + 1, 1, 4096))
      return MHD_NO;
    memcpy(b->data + b->len, upload, n);
    b->len += n;
    return MHD_YES;
  }
  ts_http_response r = {.status = 500, .content_type = "text/plain"};
  if (b->too_large) {
    static const char msg[] = "{\"error\":\"request body too large\"}";
    r.status = 413;
    r.content_type = "application/json";
    r.body = strdup(msg);
    r.body_len = r.body ? sizeof msg - 1 : 0;
  } else {
    if (b->data) b->data[b->len] = '\0';
    ts_http_request req = {.method = method,
                           .url = url,
                           .body = b->data ? b->data : (const uint8_t *)"",
                           .body_len = b->len,
                           .connection = conn};
    s->handler(s->user, &req, &r);
  }
  return queue_answer(conn, &r);
}

static void on_completed(void *cls, struct MHD_Connection *conn,
                         void **con_cls, enum MHD_RequestTerminationCode toe) {
  (void)cls;
  (void)conn;
  (void)toe;
  body_buf *b = *con_cls;
  if (b) {
    free(b->data);
    free(b);
  }
  *con_cls = NULL;
}

const char *ts_http_header(const ts_http_request *req, const char *name) {
  return MHD_lookup_connection_value(req->connection, MHD_HEADER_KIND, name);
}

int ts_http_peer_gone(const ts_http_request *req) {
  const union MHD_ConnectionInfo *info = MHD_get_connection_info(
      req->connection, MHD_CONNECTION_INFO_CONNECTION_FD);
  if (!info) return 0;
  struct pollfd p = {.fd = info->connect_fd, .events = POLLRDHUP};
  return poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR));
}

static void server_free(ts_http_server *s) {
  free(s->cert_pem);
  free(s->key_pem);
  free(s);
}

static int http_start(const char *host_port, const ts_http_tls *tls,
                      size_t max_body,
                      ts_http_handler_fn handler, void *user,
                      void (*user_free)(void *), ts_http_server **out,
                      int *bound_port, ts_err *err) {
  char host[256];
  const char *colon = strrchr(host_port, ':');
  if (!colon || (size_t)(colon - host_port) >= sizeof host)
    return ts_err_set(err, TS_EINVAL, "'%s': expected HOST:PORT", host_port);
  memcpy(host, host_port, (size_t)(colon - host_port));
  host[colon - host_port] = '\0';
  char *h = host;
  size_t hl = strlen(h);
  if (hl >= 2 && h[0] == '[' && h[hl - 1] == ']') {
    h[hl - 1] = '\0';
    h++;
  }
  struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                           .ai_flags = AI_PASSIVE}, *ai = NULL;
  int gai = getaddrinfo(h[0] ? h : NULL, colon + 1, &hints, &ai);
  if (gai != 0)
    return ts_err_set(err, TS_EINVAL, "'%s': %s", host_port, gai_strerror(gai));
  ts_http_server *s = calloc(1, sizeof *s);
  if (!s) {
    freeaddrinfo(ai);
    return ts_err_set(err, TS_ENOMEM, "out of memory");
  }
  s->handler = handler;
  s->user = user;
  s->user_free = user_free;
  s->max_body = max_body;
  unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD |
                   MHD_USE_THREAD_PER_CONNECTION | MHD_USE_ERROR_LOG;
  if (ai->ai_family == AF_INET6) flags |= MHD_USE_IPv6;
  if (tls) {
    if (MHD_is_feature_supported(MHD_FEATURE_TLS) != MHD_YES) {
      freeaddrinfo(ai);
      server_free(s);
      return ts_err_set(err, TS_EUNSUPPORTED,
                        "this libmicrohttpd has no TLS support");
    }
    s->cert_pem = strdup(tls->cert_pem);
    s->key_pem = strdup(tls->key_pem);
    if (!s->cert_pem || !s->key_pem) {
      freeaddrinfo(ai);
      server_free(s);
      return ts_err_set(err, TS_ENOMEM, "out of memory");
    }
    flags |= MHD_USE_TLS;
  }
  /* Without TLS the HTTPS options end the list (MHD_OPTION_END first). */
  s->daemon = MHD_start_daemon(
      flags, 0, NULL, NULL, on_access, s, MHD_OPTION_SOCK_ADDR, ai->ai_addr,
      MHD_OPTION_NOTIFY_COMPLETED, on_completed, s,
      MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)60,
      tls ? MHD_OPTION_HTTPS_MEM_CERT : MHD_OPTION_END, s->cert_pem,
      MHD_OPTION_HTTPS_MEM_KEY, s->key_pem, MHD_OPTION_END);
  freeaddrinfo(ai);
  if (!s->daemon) {
    server_free(s);
    return ts_err_set(err, TS_EUNAVAILABLE, "cannot serve HTTP%s on '%s'",
                      tls ? "S (bad certificate or key?)" : "", host_port);
  }
  if (bound_port) {
    const union MHD_DaemonInfo *info =
        MHD_get_daemon_info(s->daemon, MHD_DAEMON_INFO_BIND_PORT);
    *bound_port = info ? (int)info->port : 0;
  }
  *out = s;
  return TS_OK;
}

int ts_http_start_tls(const char *host_port, const ts_http_tls *tls,
                      size_t max_body, ts_http_handler_fn handler, void *user,
                      void (*user_free)(void *), ts_http_server **out,
                      int *bound_port, ts_err *err) {
  int rc = http_start(host_port, tls, max_body, handler, user, user_free, out,
                      bound_port, err);
  if (rc && user_free) user_free(user);
  return rc;
}

int ts_http_start(const char *host_port, size_t max_body,
                  ts_http_handler_fn handler, void *user,
                  void (*user_free)(void *), ts_http_server **out,
                  int *bound_port, ts_err *err) {
  return ts_http_start_tls(host_port, NULL, max_body, handler, user,
                           user_free, out, bound_port, err);
}

void ts_http_stop(ts_http_server *s) {
  if (!s) return;
  MHD_stop_daemon(s->daemon);
  if (s->user_free) s->user_free(s->user);
  server_free(s);
}
