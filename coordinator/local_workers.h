/*
 * local_workers.h - the embedded default: N real tessera-worker processes on
 * loopback, started and stopped by the coordinator (--local-workers N).
 *
 * Must run before ts_rpc_init(): gRPC does not survive fork (GRPC_CORE.md
 * 6.7), so children are forked and exec'd first. Each child gets
 * PR_SET_PDEATHSIG so it never outlives the coordinator.
 */
#ifndef TS_LOCAL_WORKERS_H
#define TS_LOCAL_WORKERS_H

#include <sys/types.h>

#include "error.h"

#define TS_ADDR_MAX 256

typedef struct ts_local_workers {
  int n;
  pid_t *pids;
  int *stdout_fds;                 /* kept open so a late write never fails */
  char (*addresses)[TS_ADDR_MAX];  /* "127.0.0.1:PORT" */
} ts_local_workers;

/* Starts n workers with `threads` kernel threads each, an optional memory
 * limit (0 = none) and activation limit (--activation-limit; < 0: the
 * worker's default, 0: none), waiting up to 30 s for each to print its
 * port. `binary` NULL means: next to this executable, then ../worker/.
 * extra_args (NULL-terminated, at most TS_LOCAL_EXTRA_ARGS; NULL: none) go
 * to every child's command line: the coordinator's TLS options and
 * gRPC limits. */
#define TS_LOCAL_EXTRA_ARGS 16
int ts_local_workers_start(ts_local_workers *lw, int n, int threads,
                           unsigned long long memory_limit,
                           long long activation_limit, const char *binary,
                           const char *const *extra_args, ts_err *err);
/* SIGTERM, wait up to grace_ms, then SIGKILL; frees lw's arrays. Returns
 * how many workers did not exit with status 0 (crashed earlier, failed
 * their own shutdown, or had to be killed); each is logged as an error. */
int ts_local_workers_stop(ts_local_workers *lw, int grace_ms);

#endif
