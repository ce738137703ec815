/*
 * test_log.c - the line formats of log.h: the timestamped form, the
 * journald form ("<N>" syslog priority, no timestamp, no pid) for every
 * level, the cut of an over-long line, JOURNAL_STREAM detection against
 * stderr's device and inode, and rate limiting of repeated lines.
 */
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check_main.h"
#include "log.h"

static size_t format(char *buf, size_t cap, ts_log_level level, int journal,
                     const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static size_t format(char *buf, size_t cap, ts_log_level level, int journal,
                     const char *fmt, ...) {
  /* 2026-11-21T07:40:01.123Z */
  struct timespec when = {.tv_sec = 1795246801, .tv_nsec = 123456789};
  va_list ap;
  va_start(ap, fmt);
  size_t n = ts_log_format(buf, cap, level, journal, &when, "worker", 812,
                           fmt, ap);
  va_end(ap);
  return n;
}

START_TEST(test_plain_line) {
  char buf[256];
  size_t n = format(buf, sizeof buf, TS_LOG_INFO, 0, "loaded %d", 3);
  ck_assert_str_eq(buf, "2026-11-21T07:40:01.123Z INFO  worker[812]: loaded 3\n");
  ck_assert_uint_eq(n, strlen(buf));
}
END_TEST

START_TEST(test_journal_priorities) {
  static const struct {
    ts_log_level level;
    const char *want;
  } cases[] = {
      {TS_LOG_DEBUG, "<7>DEBUG worker: x\n"},
      {TS_LOG_INFO, "<6>INFO  worker: x\n"},
      {TS_LOG_WARN, "<4>WARN  worker: x\n"},
      {TS_LOG_ERROR, "<3>ERROR worker: x\n"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char buf[128];
    format(buf, sizeof buf, cases[i].level, 1, "%s", "x");
    ck_assert_str_eq(buf, cases[i].want);
  }
  ck_assert_int_eq(ts_log_priority(TS_LOG_WARN), 4); /* SD_WARNING */
  ck_assert_int_eq(ts_log_priority(TS_LOG_ERROR), 3); /* SD_ERR */
}
END_TEST

START_TEST(test_long_line_keeps_newline) {
  char buf[32];
  size_t n = format(buf, sizeof buf, TS_LOG_WARN, 1, "%s",
                    "a message much longer than the buffer it goes into");
  ck_assert_uint_eq(n, sizeof buf - 1);
  ck_assert_uint_eq(strlen(buf), n);
  ck_assert_int_eq(buf[n - 1], '\n');
  ck_assert(strncmp(buf, "<4>WARN  worker: a message", 26) == 0);
}
END_TEST

/* Runs fn with stderr sent to a temporary file; returns what it wrote. */
static char *capture_stderr(void (*fn)(void)) {
  char path[] = "/tmp/test_log_XXXXXX";
  int fd = mkstemp(path);
  ck_assert_int_ge(fd, 0);
  unlink(path);
  int saved = dup(STDERR_FILENO);
  dup2(fd, STDERR_FILENO);
  fn();
  dup2(saved, STDERR_FILENO);
  close(saved);
  off_t size = lseek(fd, 0, SEEK_END);
  char *text = calloc(1, (size_t)size + 1);
  ck_assert_int_eq(pread(fd, text, (size_t)size, 0), size);
  close(fd);
  return text;
}

static void log_under_journal(void) {
  struct stat st;
  ck_assert_int_eq(fstat(STDERR_FILENO, &st), 0);
  char v[64];
  snprintf(v, sizeof v, "%ju:%ju", (uintmax_t)st.st_dev,
           (uintmax_t)st.st_ino);
  setenv("JOURNAL_STREAM", v, 1);
  ts_log_init_from_env();
  ts_log_warn("under the journal");
  /* Inherited from a parent whose stderr was the journal: not ours. */
  setenv("JOURNAL_STREAM", "1:2", 1);
  ts_log_init_from_env();
  ts_log_warn("not the journal");
  unsetenv("JOURNAL_STREAM");
  ts_log_init_from_env();
}

START_TEST(test_journal_stream_detected) {
  ts_log_set_component("worker");
  char *text = capture_stderr(log_under_journal);
  ck_assert_msg(strncmp(text, "<4>WARN  worker: under the journal\n", 35) == 0,
                "got: %s", text);
  const char *second = strchr(text, '\n') + 1;
  ck_assert_msg(second[0] == '2' && strstr(second, "WARN  worker[") &&
                    strstr(second, "]: not the journal\n"),
                "got: %s", second);
  free(text);
}
END_TEST

static int printed[4];
static void log_repeats(void) {
  ts_log_set_journal(1);
  printed[0] = ts_log_warn_limited("model %s waits for workers", "mlp");
  printed[1] = ts_log_warn_limited("model %s waits for workers", "mlp");
  printed[2] = ts_log_warn_limited("model %s waits for workers", "cnn");
  printed[3] = ts_log_warn_limited("model %s waits for workers", "mlp");
  ts_log_set_journal(0);
}

START_TEST(test_repeats_limited) {
  ts_log_set_component("coordinator");
  char *text = capture_stderr(log_repeats);
  ck_assert_int_eq(printed[0], 1);
  ck_assert_int_eq(printed[1], 0);
  ck_assert_int_eq(printed[2], 1);
  ck_assert_int_eq(printed[3], 0);
  ck_assert_str_eq(text,
                   "<4>WARN  coordinator: model mlp waits for workers\n"
                   "<4>WARN  coordinator: model cnn waits for workers\n");
  free(text);
}
END_TEST

static Suite *log_suite(void) {
  Suite *s = suite_create("log");
  TCase *tc = ts_check_tcase(s, "format", 0, NULL, NULL);
  tcase_add_test(tc, test_plain_line);
  tcase_add_test(tc, test_journal_priorities);
  tcase_add_test(tc, test_long_line_keeps_newline);
  tcase_add_test(tc, test_journal_stream_detected);
  tcase_add_test(tc, test_repeats_limited);
  return s;
}

const ts_check_suite ts_check_this_suite = {.make = log_suite,
                                            .no_fork = true};
