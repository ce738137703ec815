/* error.c - TS_E* codes, their text and their gRPC status (the one mapping). */
#include "error.h"

#include <string.h>

void ts_err_setf(ts_err *err, int code, const char *fmt, ...) {
  if (err) {
    va_list ap;
    va_start(ap, fmt);
    err->code = code;
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
  }
}

void ts_err_prefixf(ts_err *err, const char *fmt, ...) {
  if (!err) return;
  char prefix[TS_ERR_MSG_MAX];
  char old[TS_ERR_MSG_MAX];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(prefix, sizeof prefix, fmt, ap);
  va_end(ap);
  memcpy(old, err->msg, sizeof old);
  /* Truncation is acceptable: messages are for people. */
  size_t n = strnlen(prefix, sizeof err->msg - 3);
  memcpy(err->msg, prefix, n);
  memcpy(err->msg + n, ": ", 2);
  size_t room = sizeof err->msg - n - 3;
  size_t m = strnlen(old, room);
  memcpy(err->msg + n + 2, old, m);
  err->msg[n + 2 + m] = '\0';
}

void ts_err_clear(ts_err *err) {
  if (err) {
    err->code = TS_OK;
    err->msg[0] = '\0';
  }
}

const char *ts_strerror(int code) {
  switch (code) {
#define TS_X(name, value, grpc, desc) \
  case value:                         \
    return desc;
    TS_ERROR_LIST(TS_X)
#undef TS_X
  }
  return "unknown error";
}

int ts_err_grpc_status(int code) {
  switch (code) {
#define TS_X(name, value, grpc, desc) \
  case value:                         \
    return grpc;
    TS_ERROR_LIST(TS_X)
#undef TS_X
  }
  return 2; /* UNKNOWN */
}
