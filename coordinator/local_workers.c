/* local_workers.c - see local_workers.h. */
#include "local_workers.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

static int find_worker_binary(char *out, size_t size) {
  char self[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
  if (n <= 0) return -1;
  self[n] = '\0';
  char *dir = dirname(self);
  const char *candidates[] = {"tessera-worker", "../worker/tessera-worker"};
  for (size_t i = 0; i < 2; i++) {
    if ((size_t)snprintf(out, size, "%s/%s", dir, candidates[i]) < size &&
        access(out, X_OK) == 0)
      return 0;
  }
  return -1;
}

static int64_t mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Reads the child's "listening on HOST:PORT" line within timeout_ms. */
static int read_address(int fd, pid_t pid, char *addr, size_t size,
                        ts_err *err) {
  char line[512];
  size_t len = 0;
  int64_t until = mono_ms() + 30000;
  for (;;) {
    int64_t left = until - mono_ms();
    if (left <= 0)
      return ts_err_set(err, TS_ETIMEDOUT,
                        "local worker (pid %d) did not report its port in 30 s",
                        (int)pid);
    struct pollfd p = {.fd = fd, .events = POLLIN};
    int rc = poll(&p, 1, (int)left);
    if (rc < 0 && errno == EINTR) continue;
    if (rc <= 0) continue;
    ssize_t n = read(fd, line + len, sizeof line - 1 - len);
    if (n <= 0)
      return ts_err_set(err, TS_EUNAVAILABLE,
                        "local worker (pid %d) exited before serving; see its "
                        "log above", (int)pid);
    len += (size_t)n;
    line[len] = '\0';
    char *nl = strchr(line, '\n');
    if (!nl) {
      if (len == sizeof line - 1)
        return ts_err_set(err, TS_EIO, "local worker printed an overlong line");
      continue;
    }
    *nl = '\0';
    const char *prefix = "listening on ";
    if (strncmp(line, prefix, strlen(prefix)) != 0)
      return ts_err_set(err, TS_EIO, "local worker printed '%s', expected "
                        "'listening on HOST:PORT'", line);
    if (strlen(line + strlen(prefix)) >= size)
      return ts_err_set(err, TS_EIO, "local worker address is too long");
    memcpy(addr, line + strlen(prefix), strlen(line + strlen(prefix)) + 1);
    return TS_OK;
  }
}

int ts_local_workers_start(ts_local_workers *lw, int n, int threads,
                           unsigned long long memory_limit,
                           long long activation_limit, const char *binary,
                           const char *const *extra_args, ts_err *err) {
  memset(lw, 0, sizeof *lw);
  char path[PATH_MAX];
  if (binary) {
    snprintf(path, sizeof path, "%s", binary);
  } else if (find_worker_binary(path, sizeof path) != 0) {
    return ts_err_set(err, TS_ENOTFOUND,
                      "cannot find tessera-worker next to this program; "
                      "give --worker-binary PATH");
  }
  lw->pids = calloc((size_t)n, sizeof *lw->pids);
  lw->stdout_fds = calloc((size_t)n, sizeof *lw->stdout_fds);
  lw->addresses = calloc((size_t)n, sizeof *lw->addresses);
  if (!lw->pids || !lw->stdout_fds || !lw->addresses) {
    ts_local_workers_stop(lw, 0);
    return ts_err_set(err, TS_ENOMEM, "out of memory");
  }
  char threads_arg[32], limit_arg[32], activation_arg[32];
  snprintf(threads_arg, sizeof threads_arg, "%d", threads);
  snprintf(limit_arg, sizeof limit_arg, "%llu", memory_limit);
  snprintf(activation_arg, sizeof activation_arg, "%lld", activation_limit);
  pid_t parent = getpid();
  for (int i = 0; i < n; i++) {
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0) {
      ts_local_workers_stop(lw, 1000);
      return ts_err_set(err, TS_EIO, "pipe: %s", strerror(errno));
    }
    pid_t pid = fork();
    if (pid < 0) {
      close(fds[0]);
      close(fds[1]);
      ts_local_workers_stop(lw, 1000);
      return ts_err_set(err, TS_EIO, "fork: %s", strerror(errno));
    }
    if (pid == 0) {
      prctl(PR_SET_PDEATHSIG, SIGTERM);
      if (getppid() != parent) _exit(1);
      dup2(fds[1], STDOUT_FILENO);
      char *argv[12 + TS_LOCAL_EXTRA_ARGS];
      int a = 0;
      argv[a++] = path;
      argv[a++] = "--listen";
      argv[a++] = "127.0.0.1:0";
      argv[a++] = "--threads";
      argv[a++] = threads_arg;
      if (memory_limit) {
        argv[a++] = "--memory-limit";
        argv[a++] = limit_arg;
      }
      if (activation_limit >= 0) {
        argv[a++] = "--activation-limit";
        argv[a++] = activation_arg;
      }
      for (int k = 0; extra_args && extra_args[k] && k < TS_LOCAL_EXTRA_ARGS;
           k++)
        argv[a++] = (char *)extra_args[k];
      argv[a] = NULL;
      execv(path, argv);
      fprintf(stderr, "exec %s: %s\n", path, strerror(errno));
      _exit(127);
    }
    close(fds[1]);
    lw->pids[i] = pid;
    lw->stdout_fds[i] = fds[0];
    lw->n = i + 1;
    int rc = read_address(fds[0], pid, lw->addresses[i],
                          sizeof lw->addresses[i], err);
    if (rc) {
      ts_local_workers_stop(lw, 1000);
      return rc;
    }
    ts_log_info("local worker %d: pid %d on %s (%d threads)", i, (int)pid,
                lw->addresses[i], threads);
  }
  return TS_OK;
}

int ts_local_workers_stop(ts_local_workers *lw, int grace_ms) {
  for (int i = 0; i < lw->n; i++)
    if (lw->pids[i] > 0) kill(lw->pids[i], SIGTERM);
  int64_t until = mono_ms() + grace_ms;
  int failed = 0;
  for (int i = 0; i < lw->n; i++) {
    if (lw->pids[i] <= 0) continue;
    int status = 0;
    for (;;) {
      pid_t r = waitpid(lw->pids[i], &status, WNOHANG);
      if (r == lw->pids[i]) break;
      if (r < 0 && errno == ECHILD) {
        status = 0; /* reaped elsewhere: nothing to report */
        break;
      }
      if (mono_ms() >= until) {
        ts_log_warn("local worker pid %d did not stop in time; killing",
                    (int)lw->pids[i]);
        kill(lw->pids[i], SIGKILL);
        waitpid(lw->pids[i], &status, 0);
        break;
      }
      usleep(10000);
    }
    if (WIFSIGNALED(status)) {
      ts_log_error("local worker pid %d ended by signal %d", (int)lw->pids[i],
                   WTERMSIG(status));
      failed++;
    } else if (WEXITSTATUS(status) != 0) {
      ts_log_error("local worker pid %d exited with status %d",
                   (int)lw->pids[i], WEXITSTATUS(status));
      failed++;
    }
    close(lw->stdout_fds[i]);
  }
  free(lw->pids);
  free(lw->stdout_fds);
  free(lw->addresses);
  memset(lw, 0, sizeof *lw);
  return failed;
}
