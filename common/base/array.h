/*
 * array.h - growable arrays: one rule for making room, shared by every
 * buffer that grows as it fills (the CLI's text, the engine's slim model
 * copy and file reads, the metrics page, HTTP bodies, test maps).
 *
 * An array is three things its owner keeps: a malloc'd pointer (NULL when
 * empty), a capacity in elements, and how many are used (the owner's own
 * business). Capacity grows by doubling, so n appends cost O(n) copies.
 */
#ifndef TS_ARRAY_H
#define TS_ARRAY_H

#include <stddef.h>

/* Makes room for at least `need` elements of elem_size (> 0) bytes in the
 * array whose pointer is at `items` (the address of any T *) and whose
 * capacity is *cap: if *cap < need, reallocates it to *cap doubled until
 * it holds need (from `first` elements, or 1, when *cap is 0) and sets
 * *cap; else does nothing. Returns 0, or
 * TS_ENOMEM when realloc fails or the size overflows; then the array and
 * *cap are unchanged, and still the caller's to free. */
int ts_array_reserve(void *items, size_t *cap, size_t need, size_t elem_size,
                     size_t first);

#endif
