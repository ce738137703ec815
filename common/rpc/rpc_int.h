/*
 * rpc_int.h - what the files of the rpc library share and nobody else sees
 * (the public contract is rpc.h). Included only by common/rpc/rpc_*.c.
 *
 * Tags. Every batch and request carries a `rpc_tag`: the function that
 * handles its completion and the server whose srv->pending counts it (NULL
 * for client calls and the shutdown tag). The tag is embedded in the struct
 * that owns the batch's buffers, which is recovered with container_of.
 *
 * The engine (rpc_core.c) is the process's one completion queue and its
 * pollers; servers and clients take a reference on it with
 * rpc_engine_acquire() and drop it with rpc_engine_release().
 */
#ifndef TS_RPC_INT_H
#define TS_RPC_INT_H

#include <stddef.h>
#include <stdint.h>

#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/time.h>

#include "rpc.h"

#define container_of(ptr, type, member) \
  ((type *)(void *)((char *)(ptr)-offsetof(type, member)))

typedef struct rpc_tag {
  void (*fn)(struct rpc_tag *t, int ok);
  ts_rpc_server *counted; /* whose srv->pending counts this tag, or NULL */
} rpc_tag;

#define RPC_MAX_POLL_THREADS 64

/* ---- rpc_core.c: clocks ------------------------------------------------ */

/* A ts_now_ms() deadline as gpr time, and back (TS_DEADLINE_NONE <-> inf). */
gpr_timespec rpc_deadline_to_gpr(int64_t deadline);
int64_t rpc_deadline_from_gpr(gpr_timespec d);

/* ---- rpc_core.c: buffers and strings ----------------------------------- */

grpc_slice rpc_buffer_to_slice(grpc_byte_buffer *bb);
grpc_byte_buffer *rpc_buffer_from_owned(uint8_t *data, size_t len);
grpc_byte_buffer *rpc_buffer_from_copy(const uint8_t *data, size_t len);
/* Copies len bytes of s into buf (size bytes), truncated, NUL-terminated. */
void rpc_copy_string(char *buf, size_t size, const char *s, size_t len);

/* ---- rpc_core.c: channel arguments both ends share --------------------- */

#define RPC_N_COMMON_ARGS 8
grpc_channel_args rpc_fill_args(grpc_arg *args, size_t n);
/* An integer channel argument (key static). */
grpc_arg rpc_int_arg(const char *key, int value);

/* ---- rpc_core.c: the engine -------------------------------------------- */

int rpc_engine_acquire(int threads, grpc_completion_queue **cq, ts_err *err);
void rpc_engine_release(void);

/* ---- rpc_server.c ------------------------------------------------------ */

/* Counts one of the server's tags done (the engine's poller, after the
 * tag's handler returned). */
void rpc_server_tag_done(ts_rpc_server *s);
/* Nonzero while the server reports SERVING (ts_rpc_server_set_serving). */
int rpc_server_serving(const ts_rpc_server *s);

/* ---- rpc_health.c ------------------------------------------------------ */

/* The unary handler of TS_RPC_HEALTH_CHECK_PATH; user is the server. */
void rpc_health_check(ts_rpc_call *call, const uint8_t *req, size_t len,
                      void *user);

/* ---- rpc_creds.c ------------------------------------------------------- */

/* The PEM files of one ts_rpc_creds, shared and counted (see rpc_creds.c).
 * rpc_keyset_get gives NULL (and 0) for plaintext: no file named. */
typedef struct rpc_keyset rpc_keyset;
int rpc_keyset_get(const ts_rpc_creds *creds, rpc_keyset **out, ts_err *err);
void rpc_keyset_put(rpc_keyset *ks);
/* Moves each time ts_rpc_creds_reload gives the keyset new bytes. */
unsigned rpc_keyset_generation(rpc_keyset *ks);

/* A TLS server's side of its keyset (the fetcher's state); NULL for a
 * plaintext server. Free after grpc_server_destroy. */
typedef struct rpc_server_tls rpc_server_tls;
int rpc_server_creds(const ts_rpc_creds *creds, grpc_server_credentials **out,
                     rpc_server_tls **tls, ts_err *err);
void rpc_server_tls_free(rpc_server_tls *t);
/* A channel's credentials from the keyset's current bytes (NULL keyset:
 * plaintext) and an optional bearer token; *generation gets the keyset's
 * generation they were made from. */
int rpc_channel_creds(rpc_keyset *ks, const char *token, const char *target,
                      grpc_channel_credentials **out, unsigned *generation,
                      ts_err *err);

/* ---- rpc_auth.c -------------------------------------------------------- */

/* The one access check (see rpc_auth.h): 0 when the call may go on, else
 * TS_EUNAUTH or TS_EPERM with the reason in msg. a NULL admits all. */
int rpc_auth_check(ts_rpc_auth *a, grpc_call *call,
                   const grpc_metadata_array *md, unsigned roles, char *msg,
                   size_t size);

#endif
