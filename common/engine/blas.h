/*
 * blas.h - getting OpenBLAS's fast kernels and a bounded thread budget.
 *
 * Debian's OpenBLAS 0.3.21 (DYNAMIC_ARCH) does not recognise recent Xeons
 * with AVX-512 and falls back to its generic "Prescott" kernels (~6x slower
 * sgemm). OpenBLAS reads OPENBLAS_CORETYPE only when the library is loaded,
 * so ts_blas_select_kernels() runs first in main(): if the library chose a
 * generic core on a CPU that supports better kernels, and the user did not
 * set OPENBLAS_CORETYPE, it sets it (SKYLAKEX for AVX-512, HASWELL for AVX2)
 * and re-executes the program once. Children inherit the variable.
 */
#ifndef TS_BLAS_H
#define TS_BLAS_H

#include <stddef.h>

/* Call first in main(), before threads or gRPC. May not return (re-exec). */
void ts_blas_select_kernels(int argc, char **argv);
/* The kernel set OpenBLAS uses now ("SkylakeX"). */
const char *ts_blas_core_name(void);
/* Sets OpenBLAS's own thread count (the worker keeps it inside its budget). */
void ts_blas_set_threads(int threads);

/* Test hook (tests/test_blas.c): the OPENBLAS_CORETYPE to force, given the
 * library's chosen core, the CPU's level (0 generic, 1 AVX, 2 AVX2, 3
 * AVX-512), whether the user already set the variable and whether the
 * library is DYNAMIC_ARCH; NULL keeps the library's choice. */
const char *ts_blas_choose_coretype(const char *library_core, int cpu,
                                    int user_set, int dynamic_arch);

#endif
