/*
 * array.c - growable arrays (array.h).
 */
#include "array.h"

#include <stdint.h>
#include <stdlib.h>

#include "error.h"

int ts_array_reserve(void *items, size_t *cap, size_t need, size_t elem_size,
                     size_t first) {
  void **p = items;
  if (need <= *cap) return TS_OK;
  size_t n = *cap ? *cap : first ? first : 1;
  while (n < need) {
    if (n > SIZE_MAX / 2) return TS_ENOMEM;
    n *= 2;
  }
  if (elem_size && n > SIZE_MAX / elem_size) return TS_ENOMEM;
  void *grown = realloc(*p, n * elem_size);
  if (!grown) return TS_ENOMEM;
  *p = grown;
  *cap = n;
  return TS_OK;
}
