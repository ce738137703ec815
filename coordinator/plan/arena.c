/*
 * arena.c - small utilities of the partitioner: growable arrays, the
 * per-shard arena (every block freed at once when the shard is packed)
 * and malloc'd string lists.
 */
#include "plan_int.h"

#include <stdarg.h>
#include <stdio.h>

/* Grows *arr (elements of esz bytes) to hold at least `need`. */
int plan_grow(void *arrp, int *cap, int need, size_t esz) {
  void **arr = arrp;
  if (need <= *cap) return TS_OK;
  int ncap = *cap ? *cap * 2 : 8;
  while (ncap < need) ncap *= 2;
  void *p = realloc(*arr, (size_t)ncap * esz);
  if (!p) return TS_ENOMEM;
  *arr = p;
  *cap = ncap;
  return TS_OK;
}

void *plan_arena_alloc(arena *a, size_t size) {
  if (plan_grow(&a->blocks, &a->cap, a->n + 1, sizeof *a->blocks)) return NULL;
  void *p = calloc(1, size ? size : 1);
  if (p) a->blocks[a->n++] = p;
  return p;
}

char *plan_arena_printf(arena *a, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  if (n < 0) return NULL;
  char *s = plan_arena_alloc(a, (size_t)n + 1);
  if (!s) return NULL;
  va_start(ap, fmt);
  vsnprintf(s, (size_t)n + 1, fmt, ap);
  va_end(ap);
  return s;
}

void plan_arena_free(arena *a) {
  for (int i = 0; i < a->n; i++) free(a->blocks[i]);
  free(a->blocks);
  memset(a, 0, sizeof *a);
}

char *plan_strdup(const char *s) {
  size_t n = strlen(s) + 1;
  char *d = malloc(n);
  if (d) memcpy(d, s, n);
  return d;
}

/* Appends a copy of s to a malloc'd string list. */
int plan_names_push(char ***list, int *n, int *cap, const char *s) {
  if (plan_grow(list, cap, *n + 1, sizeof **list)) return TS_ENOMEM;
  char *d = plan_strdup(s);
  if (!d) return TS_ENOMEM;
  (*list)[(*n)++] = d;
  return TS_OK;
}

void plan_names_free(char **list, int n) {
  for (int i = 0; i < n; i++) free(list[i]);
  free(list);
}
