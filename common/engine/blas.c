/*
 * blas.c - choosing OpenBLAS's kernel set and keeping its threads in budget.
 *
 * OpenBLAS built with DYNAMIC_ARCH picks a kernel set ("core") once, when the
 * library is loaded, from cpuid; Debian's 0.3.21 does not know some recent
 * CPUs and then falls back to the generic Prescott kernels, several times
 * slower. The only way to change the choice is the OPENBLAS_CORETYPE
 * variable, read at load time, so the fix is to set it and exec the program
 * again, before any thread, socket or gRPC state exists.
 *
 * Invariants:
 *  - at most one re-exec: the variable we set is itself the guard, and a user
 *    who set OPENBLAS_CORETYPE is never overridden;
 *  - we only ever move *up*: the library's own choice is kept unless it is a
 *    lower capability level than what the CPU (and OS, which
 *    __builtin_cpu_supports checks through XCR0) supports;
 *  - a non-DYNAMIC_ARCH library ignores the variable, so it is left alone.
 */
#include "blas.h"

#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "gemm_packed.h"
#include "log.h"

/* Capability levels of x86-64 kernel sets, lowest first. */
enum {
  LEVEL_GENERIC = 0, /* SSE2/SSE3-era kernels: Prescott, Core2, Nehalem... */
  LEVEL_AVX = 1,     /* Sandybridge, Bulldozer, Piledriver, Steamroller */
  LEVEL_AVX2 = 2,    /* AVX2 + FMA kernels */
  LEVEL_AVX512 = 3,  /* AVX-512 F/BW/VL/DQ kernels */
};

/* X(OpenBLAS core name as openblas_get_corename() reports it, level).
 * Names absent from the table (newer cores, other architectures) are
 * trusted: we never override a choice we do not understand. */
#define CORE_LIST(X)                                                     \
  X("Unknown", LEVEL_GENERIC) X("Katmai", LEVEL_GENERIC)                 \
  X("Coppermine", LEVEL_GENERIC) X("Northwood", LEVEL_GENERIC)           \
  X("Prescott", LEVEL_GENERIC) X("Banias", LEVEL_GENERIC)                \
  X("Atom", LEVEL_GENERIC) X("Core2", LEVEL_GENERIC)                     \
  X("Penryn", LEVEL_GENERIC) X("Dunnington", LEVEL_GENERIC)              \
  X("Nehalem", LEVEL_GENERIC) X("Athlon", LEVEL_GENERIC)                 \
  X("Opteron", LEVEL_GENERIC) X("Opteron_SSE3", LEVEL_GENERIC)           \
  X("Barcelona", LEVEL_GENERIC) X("Nano", LEVEL_GENERIC)                 \
  X("Bobcat", LEVEL_GENERIC) X("Sandybridge", LEVEL_AVX)                 \
  X("Bulldozer", LEVEL_AVX) X("Piledriver", LEVEL_AVX)                   \
  X("Steamroller", LEVEL_AVX) X("Haswell", LEVEL_AVX2)                   \
  X("Excavator", LEVEL_AVX2) X("Zen", LEVEL_AVX2) X("Dhyana", LEVEL_AVX2) \
  X("SkylakeX", LEVEL_AVX512) X("Cooperlake", LEVEL_AVX512)              \
  X("SapphireRapids", LEVEL_AVX512)

static const struct {
  const char *name;
  int level;
} cores[] = {
#define CORE_ENTRY(name, level) {name, level},
    CORE_LIST(CORE_ENTRY)
#undef CORE_ENTRY
};

/* The OPENBLAS_CORETYPE value that selects the best kernels of each level. */
static const char *const coretype_for_level[] = {
    [LEVEL_GENERIC] = NULL,
    [LEVEL_AVX] = NULL, /* not worth a re-exec */
    [LEVEL_AVX2] = "HASWELL",
    [LEVEL_AVX512] = "SKYLAKEX",
};

/* Level of a core name; -1 when the name is not in the table. */
static int core_level(const char *name) {
  if (!name) return -1;
  for (size_t i = 0; i < sizeof cores / sizeof cores[0]; i++)
    if (strcasecmp(name, cores[i].name) == 0) return cores[i].level;
  return -1;
}

/* The best level this CPU and OS support. */
static int cpu_level(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
    return LEVEL_AVX512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
    return LEVEL_AVX2;
  if (__builtin_cpu_supports("avx")) return LEVEL_AVX;
#endif
  return LEVEL_GENERIC;
}

/* blas.h (test hook). */
const char *ts_blas_choose_coretype(const char *library_core, int cpu,
                                    int user_set, int dynamic_arch) {
  if (user_set || !dynamic_arch) return NULL;
  int have = core_level(library_core);
  if (have < 0 || cpu < 0 || cpu > LEVEL_AVX512 || have >= cpu) return NULL;
  return coretype_for_level[cpu];
}

void ts_blas_select_kernels(int argc, char **argv) {
  const char *core = openblas_get_corename();
  const char *config = openblas_get_config();
  int user_set = getenv("OPENBLAS_CORETYPE") != NULL;
  int dynamic = config && strstr(config, "DYNAMIC_ARCH") != NULL;
  const char *want = ts_blas_choose_coretype(core, cpu_level(), user_set,
                                             dynamic);
  if (want && argc > 0 && argv && argv[0]) {
    /* The variable doubles as the loop guard: the new image sees it set. */
    if (setenv("OPENBLAS_CORETYPE", want, 1) == 0) {
      fflush(stdout);
      fflush(stderr);
      execv("/proc/self/exe", argv);
      /* Only reached on failure: keep going with the slow kernels. */
      ts_log_warn("OpenBLAS chose generic '%s' kernels; re-exec with "
                  "OPENBLAS_CORETYPE=%s failed, continuing with them",
                  core, want);
      unsetenv("OPENBLAS_CORETYPE");
    }
  }
  const char *forced = getenv("OPENBLAS_CORETYPE");
  /* The packed small-M kernels choose their ISA here too: one line says
   * which code every float product of the process runs. */
  ts_log_info("OpenBLAS core: %s%s%s; packed gemm ISA: %s",
              ts_blas_core_name(), forced ? ", OPENBLAS_CORETYPE=" : "",
              forced ? forced : "", ts_gemm_isa_name(ts_gemm_isa_best()));
}

const char *ts_blas_core_name(void) {
  const char *name = openblas_get_corename();
  return name ? name : "unknown";
}

void ts_blas_set_threads(int threads) {
  openblas_set_num_threads(threads > 0 ? threads : 1);
}
