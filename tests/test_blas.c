/*
 * test_blas.c - OpenBLAS kernel selection, and sgemm on the kernels chosen.
 *
 * The selection rule is checked as a table of cases on the pure decision
 * function; the real mechanism (environment + re-exec) is checked by running
 * this test binary again as a child in "--print-core" mode, which calls
 * ts_blas_select_kernels() exactly as the daemons do and prints the result.
 * Finally sgemm 1024^3 is spot-checked against a float64 reference, on the
 * kernels chosen and on the generic ones (a child under PRESCOTT). Speed is
 * measured by bench/kernel_speed, not here.
 */
#include <check.h>
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "check_main.h"
#include "blas.h"

enum { GENERIC = 0, AVX = 1, AVX2 = 2, AVX512 = 3 };

static const char *self_path(void) {
  static char path[4096];
  ssize_t n = readlink("/proc/self/exe", path, sizeof path - 1);
  ck_assert_int_gt(n, 0);
  path[n] = '\0';
  return path;
}

/* Runs this binary with `mode` under OPENBLAS_CORETYPE=coretype (unset when
 * NULL) and returns its first output line in buf. */
static void run_child(const char *mode, const char *coretype, char *buf,
                      size_t size) {
  if (coretype)
    setenv("OPENBLAS_CORETYPE", coretype, 1);
  else
    unsetenv("OPENBLAS_CORETYPE");
  char cmd[4200];
  snprintf(cmd, sizeof cmd, "'%s' %s", self_path(), mode);
  FILE *p = popen(cmd, "r");
  ck_assert_ptr_nonnull(p);
  buf[0] = '\0';
  char *line = fgets(buf, (int)size, p);
  ck_assert_ptr_nonnull(line);
  /* Exactly one line: the re-exec'd image must not print twice. */
  char extra[256];
  ck_assert_ptr_null(fgets(extra, sizeof extra, p));
  ck_assert_int_eq(pclose(p), 0);
  buf[strcspn(buf, "\n")] = '\0';
}

static int cpu_has_avx512(void) {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") &&
         __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl") &&
         __builtin_cpu_supports("avx512dq");
}

START_TEST(test_choose_table) {
  static const struct {
    const char *core;
    int cpu, user_set, dynamic;
    const char *want;
  } cases[] = {
      {"Prescott", AVX512, 0, 1, "SKYLAKEX"},
      {"prescott", AVX512, 0, 1, "SKYLAKEX"}, /* case-insensitive */
      {"Prescott", AVX2, 0, 1, "HASWELL"},
      {"Nehalem", AVX2, 0, 1, "HASWELL"},
      {"Core2", AVX512, 0, 1, "SKYLAKEX"},
      {"Haswell", AVX512, 0, 1, "SKYLAKEX"}, /* only ever upwards */
      {"Zen", AVX512, 0, 1, "SKYLAKEX"},
      {"Sandybridge", AVX2, 0, 1, "HASWELL"},
      {"SkylakeX", AVX512, 0, 1, NULL},
      {"Cooperlake", AVX512, 0, 1, NULL},
      {"SapphireRapids", AVX512, 0, 1, NULL},
      {"Haswell", AVX2, 0, 1, NULL},
      {"SkylakeX", AVX2, 0, 1, NULL}, /* never downwards */
      {"Prescott", GENERIC, 0, 1, NULL},
      {"Prescott", AVX, 0, 1, NULL},
      {"Prescott", AVX512, 1, 1, NULL}, /* the user's choice stands */
      {"Prescott", AVX512, 0, 0, NULL}, /* variable would be ignored */
      {"Neoverse-N1", AVX512, 0, 1, NULL}, /* unknown name: trusted */
      {NULL, AVX512, 0, 1, NULL},
      {"Prescott", 7, 0, 1, NULL},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    const char *got = ts_blas_choose_coretype(cases[i].core, cases[i].cpu,
                                              cases[i].user_set,
                                              cases[i].dynamic);
    if (cases[i].want == NULL)
      ck_assert_msg(got == NULL, "case %zu (%s): got %s", i,
                    cases[i].core ? cases[i].core : "NULL", got);
    else
      ck_assert_msg(got && strcmp(got, cases[i].want) == 0,
                    "case %zu (%s): got %s want %s", i, cases[i].core,
                    got ? got : "NULL", cases[i].want);
  }
}
END_TEST

START_TEST(test_child_gets_fast_core) {
  char line[256];
  run_child("--print-core", NULL, line, sizeof line);
  printf("child without OPENBLAS_CORETYPE: %s\n", line);
  ck_assert_msg(strncmp(line, "core=", 5) == 0, "bad child output: %s", line);
  if (cpu_has_avx512()) {
    /* The child's first word is the core it ended with. */
    char core[64];
    ck_assert_int_eq(sscanf(line, "core=%63s", core), 1);
    ck_assert_msg(strcasecmp(core, "Prescott") != 0 &&
                      strcasecmp(core, "Nehalem") != 0 &&
                      strcasecmp(core, "Core2") != 0 &&
                      strcasecmp(core, "Haswell") != 0,
                  "AVX-512 CPU but OpenBLAS uses %s", core);
  }
}
END_TEST

START_TEST(test_user_choice_respected) {
  /* A user's OPENBLAS_CORETYPE is kept, even a slow one, and no re-exec
   * loop happens (run_child checks for a single line and exit 0). */
  char line[256];
  run_child("--print-core", "PRESCOTT", line, sizeof line);
  printf("child with OPENBLAS_CORETYPE=PRESCOTT: %s\n", line);
  ck_assert_msg(strncasecmp(line, "core=Prescott ", 14) == 0, "got %s", line);
  ck_assert_ptr_nonnull(strstr(line, "env=PRESCOTT"));
}
END_TEST

START_TEST(test_core_name) {
  const char *name = ts_blas_core_name();
  ck_assert_ptr_nonnull(name);
  ck_assert_str_eq(name, openblas_get_corename());
}
END_TEST

/* Runs sgemm n^3 on one thread (the worker's per-kernel-thread budget) and
 * checks 64 entries against float64: returns 0, or -1 with the reason in
 * why. Uses no Check macros: the --sgemm child runs it outside any test.
 * Its speed is bench/kernel_speed's to measure. */
static int sgemm_check(int n, char *why, size_t why_size) {
  size_t nn = (size_t)n * (size_t)n;
  float *a = malloc(nn * sizeof *a), *b = malloc(nn * sizeof *b),
        *c = malloc(nn * sizeof *c);
  int result = -1;
  if (!a || !b || !c) {
    snprintf(why, why_size, "out of memory");
    goto out;
  }
  unsigned s = 12345;
  for (size_t i = 0; i < nn; i++) {
    s = s * 1103515245u + 12345u;
    a[i] = (float)((s >> 16) & 0x7fff) / 32768.0f - 0.5f;
    s = s * 1103515245u + 12345u;
    b[i] = (float)((s >> 16) & 0x7fff) / 32768.0f - 0.5f;
  }
  ts_blas_set_threads(1);
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a, n,
              b, n, 0.0f, c, n);
  for (int k = 0; k < 64; k++) {
    int i = (k * 37) % n, j = (k * 101 + 7) % n;
    double ref = 0;
    for (int p = 0; p < n; p++)
      ref += (double)a[(size_t)i * n + p] * (double)b[(size_t)p * n + j];
    if (fabs(c[(size_t)i * n + j] - ref) > 1e-3 * (1 + fabs(ref))) {
      snprintf(why, why_size, "c[%d][%d] = %g, want %g", i, j,
               c[(size_t)i * n + j], ref);
      goto out;
    }
  }
  result = 0;
out:
  free(a);
  free(b);
  free(c);
  return result;
}

START_TEST(test_sgemm_matches_reference) {
  char why[256] = "";
  ck_assert_msg(sgemm_check(1024, why, sizeof why) == 0, "sgemm: %s", why);
  /* And with the generic kernels a misdetected CPU would get. */
  char line[256];
  run_child("--sgemm", "PRESCOTT", line, sizeof line);
  printf("sgemm 1024^3, 1 thread, %s\n", line);
  ck_assert_ptr_nonnull(strstr(line, ": sgemm ok"));
}
END_TEST

static Suite *suite(void) {
  Suite *s = suite_create("blas");
  TCase *tc = ts_check_tcase(s, "select", 0, NULL, NULL);
  tcase_add_test(tc, test_choose_table);
  tcase_add_test(tc, test_child_gets_fast_core);
  tcase_add_test(tc, test_user_choice_respected);
  tcase_add_test(tc, test_core_name);
  TCase *sgemm = ts_check_tcase(s, "sgemm", 120, NULL, NULL);
  tcase_add_test(sgemm, test_sgemm_matches_reference);
  return s;
}

/* As in the daemons: first thing, before anything else runs. The child
 * modes print one line and exit instead of running the suite. */
static int child_modes(int argc, char **argv) {
  ts_blas_select_kernels(argc, argv);
  if (argc > 1 && strcmp(argv[1], "--print-core") == 0) {
    const char *env = getenv("OPENBLAS_CORETYPE");
    printf("core=%s env=%s\n", ts_blas_core_name(), env ? env : "(unset)");
    return 0;
  }
  if (argc > 1 && strcmp(argv[1], "--sgemm") == 0) {
    char why[256] = "";
    if (sgemm_check(1024, why, sizeof why) != 0) {
      printf("sgemm failed: %s\n", why);
      return 1;
    }
    printf("core %s: sgemm ok\n", ts_blas_core_name());
    return 0;
  }
  return -1;
}

const ts_check_suite ts_check_this_suite = {.make = suite,
                                            .before = child_modes};
