/*
 * fuzz_check.h - what every fuzz target checks besides the sanitizers: a
 * refusal carries a negative TS_E* code of the one error table and a
 * message saying why. A violation aborts, which libFuzzer reports as a
 * crash with the input that caused it.
 */
#ifndef TS_FUZZ_CHECK_H
#define TS_FUZZ_CHECK_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"

static inline void fuzz_check_refusal(int rc, const ts_err *err,
                                      const char *what) {
  if (rc == TS_OK) return;
  if (rc > 0 || err->code != rc || !err->msg[0] ||
      strlen(err->msg) >= sizeof err->msg) {
    fprintf(stderr, "%s: refusal %d without its code or message ('%s')\n",
            what, rc, err->msg);
    abort();
  }
}

#endif
