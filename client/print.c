/*
 * print.c - tensors printed NumPy style (summarized above PRINT_THRESHOLD
 * elements), and byte sizes. The rest of what commands print is format.c's.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client.h"

#define PRINT_THRESHOLD 1000 /* summarize above this many elements (NumPy's) */
#define PRINT_EDGE 3         /* elements shown at each end when summarizing */

typedef void (*format_fn)(const void *data, int64_t i, char *buf, size_t size);

/* X(dtype, C type, printf format, type it is printed as) */
#define FORMAT_LIST(X)                         \
  X(FLOAT, float, "%.7g", double)              \
  X(DOUBLE, double, "%.16g", double)           \
  X(INT8, int8_t, "%d", int)                   \
  X(INT16, int16_t, "%d", int)                 \
  X(INT32, int32_t, "%d", int)                 \
  X(INT64, int64_t, "%lld", long long)         \
  X(UINT8, uint8_t, "%u", unsigned)            \
  X(UINT16, uint16_t, "%u", unsigned)          \
  X(UINT32, uint32_t, "%u", unsigned)          \
  X(UINT64, uint64_t, "%llu", unsigned long long)

#define TS_X(dtype, ctype, fmt, as)                                   \
  static void format_##dtype(const void *data, int64_t i, char *buf,  \
                             size_t size) {                           \
    snprintf(buf, size, fmt, (as)((const ctype *)data)[i]);           \
  }
FORMAT_LIST(TS_X)
#undef TS_X

static void format_BOOL(const void *data, int64_t i, char *buf, size_t size) {
  snprintf(buf, size, "%s", ((const uint8_t *)data)[i] ? "True" : "False");
}

static void format_FLOAT16(const void *data, int64_t i, char *buf,
                           size_t size) {
  ts_tensor t = {.dtype = TS_DTYPE_FLOAT16, .data = (void *)data};
  snprintf(buf, size, "%.5g", cli_tensor_double(&t, i));
}

static const struct formatter {
  ts_dtype dtype;
  format_fn format;
} formatters[] = {
#define TS_X(dtype, ctype, fmt, as) {TS_DTYPE_##dtype, format_##dtype},
    FORMAT_LIST(TS_X)
#undef TS_X
    {TS_DTYPE_BOOL, format_BOOL},
    {TS_DTYPE_FLOAT16, format_FLOAT16},
};

static format_fn formatter_find(ts_dtype dtype) {
  for (size_t i = 0; i < sizeof formatters / sizeof formatters[0]; i++)
    if (formatters[i].dtype == dtype) return formatters[i].format;
  return NULL;
}

/* Prints dims[dim..] of t starting at element `offset`, NumPy style:
 * nested brackets, one innermost row per line, and when summarizing only
 * PRINT_EDGE entries at each end of a long dim. */
static void print_dim(FILE *f, const ts_tensor *t, format_fn format, int dim,
                      int64_t offset, bool summarize) {
  int64_t n = t->dims[dim], stride = 1;
  for (int d = dim + 1; d < t->rank; d++) stride *= t->dims[d];
  bool innermost = dim == t->rank - 1;
  fputc('[', f);
  for (int64_t i = 0; i < n; i++) {
    if (i) {
      if (innermost)
        fputs(", ", f);
      else
        fprintf(f, ",\n%*s", dim + 1, "");
    }
    if (summarize && n > 2 * PRINT_EDGE && i == PRINT_EDGE) {
      fputs("...", f);
      i = n - PRINT_EDGE - 1;
      continue;
    }
    if (innermost) {
      char buf[64];
      format(t->data, offset + i, buf, sizeof buf);
      fputs(buf, f);
    } else {
      print_dim(f, t, format, dim + 1, offset + i * stride, summarize);
    }
  }
  fputc(']', f);
}

/* "NAME DATATYPE [dims]" and then the values. */
void cli_print_tensor(FILE *f, const char *name, const ts_tensor *t) {
  char shape[256];
  format_fn format = formatter_find(t->dtype);
  fprintf(f, "%s %s %s\n", name, ts_dtype_kserve_name(t->dtype),
          ts_shape_str(t->dims, t->rank, shape, sizeof shape));
  if (!format) return;
  if (t->rank == 0) {
    char buf[64];
    format(t->data, 0, buf, sizeof buf);
    fputs(buf, f);
  } else {
    print_dim(f, t, format, 0, 0, ts_tensor_numel(t) > PRINT_THRESHOLD);
  }
  fputc('\n', f);
}

/* "1.5 MB" */
void cli_format_bytes(uint64_t bytes, char *buf, size_t size) {
  static const char *const units[] = {"B", "KB", "MB", "GB", "TB"};
  double v = (double)bytes;
  size_t u = 0;
  while (v >= 1024 && u + 1 < sizeof units / sizeof units[0]) {
    v /= 1024;
    u++;
  }
  snprintf(buf, size, u ? "%.1f %s" : "%.0f %s", v, units[u]);
}
