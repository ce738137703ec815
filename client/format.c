/*
 * format.c - every command's output, in the one place that knows the
 * formats: --format table (for people, the default), json (one document per
 * command, written by jansson) and csv (RFC 4180).
 *
 * A command builds its answer as a jansson object in cli_out.root and calls
 * cli_out_print(); it never prints a value itself. The three renderings
 * follow from the document's shape, by these rules:
 *
 *   - a scalar is a string, number, boolean or null; a "cell" is a scalar,
 *     an array of scalars, or an array of objects whose values are scalars
 *     (a shard's replicas: [{"worker":0,"state":"UP"}]);
 *   - a "table" is an array of objects whose values are cells; its columns
 *     are the union of the rows' keys, in the order first seen;
 *   - a "record" is any other object; an array of records is a list.
 *
 * table: a record's scalar and cell fields print as "key: value" lines (an
 * object of scalars on one line, "key: k v  k v"); a table as aligned
 * columns headed by its upper-cased keys, after a "key:" line unless it is
 * the record's only field; the fields of a root with no scalars of its own
 * (`status`) as sections under "== key ==". Empty strings and nulls print
 * as "-", integers whose key is "bytes" or ends in "_bytes" as sizes ("1.5 MB"), arrays
 * of numbers as shapes ("[2,3]"), other arrays as "a, b", arrays of
 * objects as "0(UP),1(UP)".
 *
 * csv: each table of the document (depth first) as a header line and rows,
 * tables separated by an empty line; a record with no tables of its own
 * prints its scalar fields as one row (objects of scalars flattened to
 * "key.sub" columns). A list inside a cell is its values separated by
 * spaces. Lines end in CRLF; a field holding a comma, quote, CR or LF is
 * quoted, with quotes doubled.
 *
 * Tensors (infer's outputs) are the exception to "never prints": a table
 * shows them NumPy style as they come (cli_out_tensor), since a table
 * cannot; in json and csv they are rows {name, datatype, shape, data} with
 * data flat, in row-major order.
 */
#include <ctype.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "array.h"
#include "client.h"

static const char *const format_names[] = {
    [CLI_FORMAT_TABLE] = "table",
    [CLI_FORMAT_JSON] = "json",
    [CLI_FORMAT_CSV] = "csv",
};

int cli_format_parse(const char *name, cli_format *out) {
  for (size_t i = 0; i < sizeof format_names / sizeof format_names[0]; i++)
    if (!strcmp(name, format_names[i])) {
      *out = (cli_format)i;
      return 0;
    }
  return -1;
}

void cli_out_init(cli_out *o, cli_format format) {
  o->format = format;
  o->root = json_object();
}

/* ---- what a value is ------------------------------------------------ */

static bool is_scalar(const json_t *v) {
  return !json_is_object(v) && !json_is_array(v);
}

static bool is_scalar_object(const json_t *v) {
  const char *key;
  json_t *x;
  if (!json_is_object(v)) return false;
  json_object_foreach((json_t *)v, key, x) if (!is_scalar(x)) return false;
  return true;
}

static bool is_cell(const json_t *v) {
  size_t i;
  json_t *x;
  if (is_scalar(v)) return true;
  if (!json_is_array(v)) return false;
  json_array_foreach(v, i, x) if (!is_scalar(x) && !is_scalar_object(x)) return false;
  return true;
}

/* A non-empty array of objects whose values are cells. In a record it is
 * a table, although it would also pass as a cell. */
static bool is_table(const json_t *v) {
  size_t i;
  json_t *row, *x;
  const char *key;
  if (!json_is_array(v) || !json_array_size(v)) return false;
  json_array_foreach(v, i, row) {
    if (!json_is_object(row)) return false;
    json_object_foreach(row, key, x) if (!is_cell(x)) return false;
  }
  return true;
}

/* A growing string; an allocation failure leaves it marked, never crashes. */
typedef struct text {
  char *s;
  size_t n, cap;
  bool failed;
} text;

static void text_add(text *t, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void text_add(text *t, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int need = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  if (need < 0 || t->failed) return;
  if (ts_array_reserve(&t->s, &t->cap, t->n + (size_t)need + 1, 1, 64)) {
    t->failed = true;
    return;
  }
  va_start(ap, fmt);
  vsnprintf(t->s + t->n, t->cap - t->n, fmt, ap);
  va_end(ap);
  t->n += (size_t)need;
}

static const char *text_str(const text *t) {
  return t->failed ? "(out of memory)" : t->s ? t->s : "";
}

static bool ends_with(const char *s, const char *suffix) {
  size_t n = strlen(s), m = strlen(suffix);
  return n >= m && !strcmp(s + n - m, suffix);
}

/* A scalar as text; `table` says which rendering (they differ in what an
 * empty value and a byte count look like). */
static void add_scalar(text *t, const char *key, const json_t *v, bool table) {
  switch (json_typeof(v)) {
    case JSON_STRING:
      text_add(t, "%s", table && !json_string_length(v) ? "-" : json_string_value(v));
      break;
    case JSON_INTEGER:
      if (table && key && (ends_with(key, "_bytes") || !strcmp(key, "bytes"))) {
        char buf[32];
        cli_format_bytes((uint64_t)json_integer_value(v), buf, sizeof buf);
        text_add(t, "%s", buf);
      } else {
        text_add(t, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
      }
      break;
    case JSON_REAL:
      text_add(t, table ? "%.6g" : "%.17g", json_real_value(v));
      break;
    case JSON_TRUE: text_add(t, "true"); break;
    case JSON_FALSE: text_add(t, "false"); break;
    default: text_add(t, "%s", table ? "-" : ""); break;
  }
}

/* A cell as text: see the rules at the top of the file. */
static void add_cell(text *t, const char *key, const json_t *v, bool table) {
  size_t i;
  json_t *x;
  if (is_scalar(v)) {
    add_scalar(t, key, v, table);
    return;
  }
  bool numbers = json_array_size(v) > 0;
  json_array_foreach(v, i, x) numbers = numbers && json_is_number(x);
  if (table && numbers) text_add(t, "[");
  json_array_foreach(v, i, x) {
    if (i) text_add(t, "%s", !table ? " " : numbers || json_is_object(x) ? "," : ", ");
    if (!json_is_object(x)) {
      add_scalar(t, NULL, x, table);
      continue;
    }
    /* An object in a list: its first value, the others in parentheses. */
    const char *k;
    json_t *y;
    int j = 0;
    json_object_foreach(x, k, y) {
      if (j == 1) text_add(t, "(");
      if (j > 1) text_add(t, " ");
      add_scalar(t, k, y, table);
      j++;
    }
    if (j > 1) text_add(t, ")");
  }
  if (table && numbers) text_add(t, "]");
}

/* The columns of a table: the union of its rows' keys, in the order first
 * seen, as a JSON array of strings (the caller decrefs). */
static json_t *table_columns(const json_t *rows) {
  json_t *cols = json_array(), *seen = json_object(), *row, *x;
  size_t i;
  const char *key;
  json_array_foreach(rows, i, row) json_object_foreach(row, key, x) {
    if (json_object_get(seen, key)) continue;
    json_object_set_new(seen, key, json_true());
    json_array_append_new(cols, json_string(key));
  }
  json_decref(seen);
  return cols;
}

/* ---- table ------------------------------------------------------------ */

/* Prints rows in left-aligned columns headed by the upper-cased keys. */
static void print_aligned(const json_t *rows) {
  json_t *cols = table_columns(rows);
  size_t ncols = json_array_size(cols), nrows = json_array_size(rows);
  text *cells = calloc((nrows + 1) * (ncols ? ncols : 1), sizeof *cells);
  size_t *width = calloc(ncols ? ncols : 1, sizeof *width);
  if (!cols || !cells || !width) {
    printf("(out of memory)\n");
    goto done;
  }
  for (size_t c = 0; c < ncols; c++) {
    const char *key = json_string_value(json_array_get(cols, c));
    for (const char *p = key; *p; p++)
      text_add(&cells[c], "%c", *p == '_' ? ' ' : toupper((unsigned char)*p));
  }
  for (size_t r = 0; r < nrows; r++)
    for (size_t c = 0; c < ncols; c++) {
      const char *key = json_string_value(json_array_get(cols, c));
      const json_t *v = json_object_get(json_array_get(rows, r), key);
      text *cell = &cells[(r + 1) * ncols + c];
      if (v)
        add_cell(cell, key, v, true);
      else
        text_add(cell, "-");
    }
  for (size_t i = 0; i < (nrows + 1) * ncols; i++) {
    size_t w = strlen(text_str(&cells[i]));
    if (w > width[i % ncols]) width[i % ncols] = w;
  }
  for (size_t r = 0; r <= nrows; r++)
    for (size_t c = 0; c < ncols; c++) {
      const char *s = text_str(&cells[r * ncols + c]);
      if (c == ncols - 1)
        printf("%s\n", s);
      else
        printf("%-*s  ", (int)width[c], s);
    }
done:
  for (size_t i = 0; cells && i < (nrows + 1) * ncols; i++) free(cells[i].s);
  free(cells);
  free(width);
  json_decref(cols);
}

static void print_record(const json_t *record, bool sections);

/* One field of a record. *gap asks for an empty line before the next
 * block (a table or a nested record). */
static void print_field(const char *key, const json_t *v, bool only,
                        bool sections, bool *gap) {
  if (*gap) printf("\n");
  *gap = false;
  if (sections) printf("== %s ==\n", key);
  if (sections && json_is_object(v)) {
    print_record(v, false);
    *gap = true;
  } else if (is_table(v)) {
    if (!only && !sections) printf("%s:\n", key);
    print_aligned(v);
    *gap = true;
  } else if (is_cell(v) || is_scalar_object(v)) {
    text t = {0};
    if (json_is_object(v)) {
      const char *k;
      json_t *x;
      int j = 0;
      json_object_foreach((json_t *)v, k, x) {
        text_add(&t, j++ ? "  %s " : "%s ", k);
        add_scalar(&t, k, x, true);
      }
    } else {
      add_cell(&t, key, v, true);
    }
    printf("%s: %s\n", key, text_str(&t));
    free(t.s);
  } else if (json_is_object(v)) {
    print_record(v, false);
    *gap = true;
  } else { /* a list of records */
    size_t i;
    json_t *x;
    json_array_foreach(v, i, x) {
      if (i) printf("\n");
      if (json_is_object(x)) print_record(x, false);
    }
    *gap = true;
  }
}

/* A record's fields in order (see the rules at the top of the file);
 * `sections` heads each field with "== key ==". */
static void print_record(const json_t *record, bool sections) {
  const char *key;
  json_t *v;
  bool gap = false;
  size_t n = json_object_size(record);
  json_object_foreach((json_t *)record, key, v) {
    print_field(key, v, n == 1, sections, &gap);
    gap = gap || sections;
  }
}

static void print_table_format(const json_t *root) {
  const char *key;
  json_t *v;
  bool sections = json_object_size(root) > 1;
  json_object_foreach((json_t *)root, key, v) sections =
      sections && (json_is_object(v) || is_table(v) || !is_cell(v));
  print_record(root, sections);
}

/* ---- csv ------------------------------------------------------------- */

/* One field, quoted when it must be (RFC 4180, 2.6 and 2.7). */
static void csv_field(const char *s, bool last) {
  if (strpbrk(s, ",\"\r\n")) {
    putchar('"');
    for (const char *p = s; *p; p++) {
      if (*p == '"') putchar('"');
      putchar(*p);
    }
    putchar('"');
  } else {
    fputs(s, stdout);
  }
  fputs(last ? "\r\n" : ",", stdout);
}

static void csv_table(const json_t *rows) {
  json_t *cols = table_columns(rows), *row;
  size_t ncols = json_array_size(cols), r;
  for (size_t c = 0; c < ncols; c++)
    csv_field(json_string_value(json_array_get(cols, c)), c == ncols - 1);
  json_array_foreach(rows, r, row) for (size_t c = 0; c < ncols; c++) {
    const char *key = json_string_value(json_array_get(cols, c));
    const json_t *v = json_object_get(row, key);
    text t = {0};
    if (v) add_cell(&t, key, v, false);
    csv_field(text_str(&t), c == ncols - 1);
    free(t.s);
  }
  json_decref(cols);
}

/* A record with no tables of its own: its scalar fields as one row, with
 * objects of scalars flattened to "key.sub" columns. */
static void csv_row_of(const json_t *record) {
  json_t *flat = json_object(), *rows = json_array(), *v, *x;
  const char *key, *sub;
  json_object_foreach((json_t *)record, key, v) {
    if (is_cell(v) && !is_table(v)) {
      json_object_set(flat, key, v);
    } else if (is_scalar_object(v)) {
      json_object_foreach(v, sub, x) {
        char name[256];
        snprintf(name, sizeof name, "%s.%s", key, sub);
        json_object_set(flat, name, x);
      }
    }
  }
  json_array_append_new(rows, flat);
  csv_table(rows);
  json_decref(rows);
}

/* Every table under v, depth first; *first is false once one printed. */
static void csv_walk(const json_t *v, bool *first) {
  const char *key;
  size_t i;
  json_t *x;
  if (is_table(v)) {
    if (!*first) fputs("\r\n", stdout);
    *first = false;
    csv_table(v);
    return;
  }
  if (json_is_array(v)) {
    json_array_foreach(v, i, x) csv_walk(x, first);
    return;
  }
  if (!json_is_object(v)) return;
  bool nested = false;
  json_object_foreach((json_t *)v, key, x) nested =
      nested || is_table(x) || (!is_cell(x) && !is_scalar_object(x));
  if (!nested) {
    if (!*first) fputs("\r\n", stdout);
    *first = false;
    csv_row_of(v);
    return;
  }
  json_object_foreach((json_t *)v, key, x) if (!is_cell(x) || is_table(x))
      csv_walk(x, first);
}

/* ---- tensors and the document ----------------------------------------- */

json_t *cli_real_json(double d) {
  if (isnan(d)) return json_string("NaN");
  if (isinf(d)) return json_string(d > 0 ? "Infinity" : "-Infinity");
  return json_real(d);
}

/* Element i of t as JSON: a number (cli_real_json for floats) or a
 * boolean. */
static json_t *element_json(const ts_tensor *t, int64_t i) {
  if (t->dtype == TS_DTYPE_BOOL) return json_boolean(((const uint8_t *)t->data)[i]);
  if (cli_dtype_is_float(t->dtype)) return cli_real_json(cli_tensor_double(t, i));
  if (t->dtype == TS_DTYPE_UINT64 && ((const uint64_t *)t->data)[i] > INT64_MAX)
    return json_real((double)((const uint64_t *)t->data)[i]);
  return json_integer((json_int_t)cli_tensor_int64(t, i));
}

json_t *cli_shape_json(const int64_t *dims, int rank) {
  json_t *shape = json_array();
  for (int d = 0; d < rank; d++) json_array_append_new(shape, json_integer(dims[d]));
  return shape;
}

void cli_out_tensor(cli_out *o, json_t *rows, const char *name,
                    const ts_tensor *t, const char *file) {
  if (o->format == CLI_FORMAT_TABLE) {
    char shape[256];
    if (!file) {
      cli_print_tensor(stdout, name, t);
      return;
    }
    printf("%s %s %s -> %s\n", name, ts_dtype_kserve_name(t->dtype),
           ts_shape_str(t->dims, t->rank, shape, sizeof shape), file);
    return;
  }
  json_t *row = json_object();
  json_object_set_new(row, "name", json_string(name));
  json_object_set_new(row, "datatype", json_string(ts_dtype_kserve_name(t->dtype)));
  json_object_set_new(row, "shape", cli_shape_json(t->dims, t->rank));
  if (file) {
    json_object_set_new(row, "file", json_string(file));
  } else {
    json_t *data = json_array();
    int64_t n = ts_tensor_numel(t);
    for (int64_t i = 0; i < n; i++) json_array_append_new(data, element_json(t, i));
    json_object_set_new(row, "data", data);
  }
  json_array_append_new(rows, row);
}

int cli_out_print(cli_out *o, ts_err *err) {
  int rc = TS_OK;
  if (!o->root) return ts_err_set(err, TS_ENOMEM, "out of memory");
  switch (o->format) {
    case CLI_FORMAT_JSON:
      if (json_dumpf(o->root, stdout, JSON_INDENT(2)) || putchar('\n') == EOF)
        rc = ts_err_set(err, TS_EIO, "cannot write the JSON document");
      break;
    case CLI_FORMAT_CSV: {
      bool first = true;
      csv_walk(o->root, &first);
      break;
    }
    case CLI_FORMAT_TABLE:
      print_table_format(o->root);
      break;
  }
  json_decref(o->root);
  o->root = NULL;
  return rc;
}

void cli_out_free(cli_out *o) {
  json_decref(o->root);
  o->root = NULL;
}
