/*
 * error.h - Tessera's one error convention.
 *
 * Every fallible function returns int: 0 on success, a negative TS_E* code on
 * failure. Where the caller must show a user *why*, the function also takes a
 * ts_err* and fills in a message naming the tensor, dim, field, node or file
 * at fault. The mapping from TS_E* to a gRPC status lives in one place,
 * ts_err_grpc_status() in error.c, used at the RPC edge.
 *
 * TS_ASSERT is for invariants (bugs) only. Bytes from the network or a file
 * are validated and rejected, never asserted on.
 */
#ifndef TS_ERROR_H
#define TS_ERROR_H

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

/* X(name, value, grpc status code, description) */
#define TS_ERROR_LIST(X)                                                    \
  X(TS_OK, 0, 0, "ok")                                                      \
  X(TS_EINVAL, -1, 3, "invalid argument")      /* INVALID_ARGUMENT */       \
  X(TS_ENOMEM, -2, 8, "out of memory")         /* RESOURCE_EXHAUSTED */     \
  X(TS_ENOTFOUND, -3, 5, "not found")          /* NOT_FOUND */              \
  X(TS_EUNSUPPORTED, -4, 12, "unsupported")    /* UNIMPLEMENTED */          \
  X(TS_EUNAVAILABLE, -5, 14, "unavailable")    /* UNAVAILABLE */            \
  X(TS_ETIMEDOUT, -6, 4, "deadline exceeded")  /* DEADLINE_EXCEEDED */      \
  X(TS_EIO, -7, 13, "i/o error")               /* INTERNAL */               \
  X(TS_EEXHAUSTED, -8, 8, "resource exhausted") /* RESOURCE_EXHAUSTED */    \
  X(TS_EINTERNAL, -9, 13, "internal error")    /* INTERNAL */               \
  X(TS_ECANCELLED, -10, 1, "cancelled")        /* CANCELLED */              \
  X(TS_EPERM, -11, 7, "permission denied")     /* PERMISSION_DENIED */      \
  X(TS_EUNAUTH, -12, 16, "unauthenticated")    /* UNAUTHENTICATED */        \
  X(TS_EEXISTS, -13, 6, "already exists")      /* ALREADY_EXISTS */         \
  X(TS_EPRECONDITION, -14, 9, "failed precondition") /* FAILED_PRECONDITION */

enum {
#define TS_X(name, value, grpc, desc) name = value,
  TS_ERROR_LIST(TS_X)
#undef TS_X
};

#define TS_ERR_MSG_MAX 512

/* A failure with its reason. Plain value type: lives on the stack or inside
 * a request; nothing to free. code == TS_OK means "no error". */
typedef struct ts_err {
  int code;
  char msg[TS_ERR_MSG_MAX];
} ts_err;

/* Sets *err (if err is non-NULL) to code and the printf-formatted message. */
void ts_err_setf(ts_err *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* ts_err_setf that also yields code, so callers can write
 * `return ts_err_set(err, TS_EINVAL, ...)`. A macro, not a function, so that
 * the compiler sees the code returned: after `if (ts_f(..., &out, err))
 * return ...;` it knows `out` was set (release builds warn otherwise). */
#define ts_err_set(err, code, ...)                                          \
  __extension__({                                                           \
    int ts_err_code_ = (code);                                              \
    ts_err_setf((err), ts_err_code_, __VA_ARGS__);                          \
    ts_err_code_;                                                           \
  })

/* Prefixes err->msg with "context: " (printf-formatted). */
void ts_err_prefixf(ts_err *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* ts_err_prefixf that yields err->code (TS_EINTERNAL without err). */
#define ts_err_prefix(err, ...)                                             \
  __extension__({                                                           \
    ts_err *ts_err_p_ = (err);                                              \
    ts_err_prefixf(ts_err_p_, __VA_ARGS__);                                 \
    ts_err_p_ ? ts_err_p_->code : TS_EINTERNAL;                             \
  })

void ts_err_clear(ts_err *err);

/* Short description of a TS_E* code ("invalid argument"). */
const char *ts_strerror(int code);

/* The gRPC status code (grpc_status_code value) for a TS_E* code. */
int ts_err_grpc_status(int code);

/* Invariant check that survives NDEBUG: prints where and aborts. Never use it
 * on data that came from outside the process. */
#define TS_ASSERT(cond)                                                     \
  do {                                                                      \
    if (!(cond)) {                                                          \
      fprintf(stderr, "%s:%d: assertion failed: %s\n", __FILE__, __LINE__,  \
              #cond);                                                       \
      abort();                                                              \
    }                                                                       \
  } while (0)

#endif
