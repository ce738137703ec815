/*
 * npy.c - NumPy .npy reader and writer (see npy.h).
 *
 * Layout of a .npy file:
 *   "\x93NUMPY" major minor  header-length  header  data
 * header-length is a little-endian uint16 for version 1.0 and a uint32 for
 * 2.0 and 3.0 (3.0 only allows UTF-8 in the header, which changes nothing
 * for the keys we accept). The header is a Python dict literal such as
 *   {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }
 * padded with spaces and a newline. NumPy evaluates it with a restricted
 * literal_eval; we accept the same grammar for the three keys, exactly once
 * each, in any order, and nothing else.
 *
 * Invariants: nothing read from a file is trusted before it is checked; the
 * data size implied by the header is checked against the bytes actually
 * present before any allocation of that size; the host is little-endian, so
 * '<' data is used as is.
 */
#include "npy.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
               "npy.c assumes a little-endian host");

/* X(ts dtype suffix, NumPy type string as NumPy writes it). One-byte types
 * carry '|' (byte order not applicable), the others '<'. */
#define NPY_DTYPE_LIST(X) \
  X(FLOAT16, "<f2")       \
  X(FLOAT, "<f4")         \
  X(DOUBLE, "<f8")        \
  X(INT8, "|i1")          \
  X(INT16, "<i2")         \
  X(INT32, "<i4")         \
  X(INT64, "<i8")         \
  X(UINT8, "|u1")         \
  X(UINT16, "<u2")        \
  X(UINT32, "<u4")        \
  X(UINT64, "<u8")        \
  X(BOOL, "|b1")

static const struct npy_dtype {
  ts_dtype dtype;
  const char *descr;
} npy_dtypes[] = {
#define NPY_X(name, descr) {TS_DTYPE_##name, descr},
    NPY_DTYPE_LIST(NPY_X)
#undef NPY_X
};
#define N_NPY_DTYPES (sizeof npy_dtypes / sizeof npy_dtypes[0])

static const uint8_t npy_magic[6] = {0x93, 'N', 'U', 'M', 'P', 'Y'};
#define NPY_PRELUDE_MIN 10       /* magic, version, 2-byte length */
#define NPY_HEADER_MAX (1 << 20) /* NumPy itself refuses above 10000 */
#define NPY_ALIGN 64

/* The NumPy type string ("<f4", "|u1") for a dtype, or NULL if .npy files
 * of that dtype are not supported. */
static const char *npy_descr(ts_dtype dtype) {
  for (size_t i = 0; i < N_NPY_DTYPES; i++)
    if (npy_dtypes[i].dtype == dtype) return npy_dtypes[i].descr;
  return NULL;
}

/* Formats "<name>: <message>" into err and returns code. */
static void failf(ts_err *err, const char *name, int code, const char *fmt,
                  ...) __attribute__((format(printf, 4, 5)));
static void failf(ts_err *err, const char *name, int code, const char *fmt,
                  ...) {
  char msg[TS_ERR_MSG_MAX];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  ts_err_setf(err, code, "%s: %s", name ? name : "npy", msg);
}

/* failf yielding code (a macro for the reason given at ts_err_set). */
#define fail(err, name, code, ...)                                          \
  __extension__({                                                           \
    int fail_code_ = (code);                                                \
    failf((err), (name), fail_code_, __VA_ARGS__);                          \
    fail_code_;                                                             \
  })

/* ---- header parsing ------------------------------------------------- */

/* What a header says, once checked. */
typedef struct npy_header {
  ts_dtype dtype;
  int rank;
  int64_t dims[TS_MAX_RANK];
  size_t nbytes;
} npy_header;

/* Reads the prelude in p[0..n): magic, version and header length. Sets
 * *header_off (where the header starts) and *header_len. */
static int parse_prelude(const uint8_t *p, size_t n, const char *name,
                         size_t *header_off, size_t *header_len, ts_err *err) {
  if (n < sizeof npy_magic || memcmp(p, npy_magic, sizeof npy_magic) != 0)
    return fail(err, name, TS_EINVAL, "not a .npy file (bad magic string)");
  if (n < 8)
    return fail(err, name, TS_EINVAL, "truncated before the format version");
  unsigned major = p[6], minor = p[7];
  size_t len_size;
  if (major == 1 && minor == 0)
    len_size = 2;
  else if ((major == 2 || major == 3) && minor == 0)
    len_size = 4;
  else
    return fail(err, name, TS_EUNSUPPORTED,
                "format version %u.%u is not supported (1.0, 2.0, 3.0 are)",
                major, minor);
  if (n < 8 + len_size)
    return fail(err, name, TS_EINVAL, "truncated before the header length");
  uint32_t len = (uint32_t)p[8] | (uint32_t)p[9] << 8;
  if (len_size == 4) len |= (uint32_t)p[10] << 16 | (uint32_t)p[11] << 24;
  if (len > NPY_HEADER_MAX)
    return fail(err, name, TS_EINVAL,
                "header length %u is above the limit of %d bytes", len,
                NPY_HEADER_MAX);
  *header_off = 8 + len_size;
  *header_len = len;
  return TS_OK;
}

/* A cursor over the header text; `name` is for messages. */
typedef struct cursor {
  const char *p, *end;
  const char *name;
} cursor;

static void skip_space(cursor *c) {
  while (c->p < c->end &&
         (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r'))
    c->p++;
}

/* Skips blanks and consumes ch if it comes next. */
static bool accept(cursor *c, char ch) {
  skip_space(c);
  if (c->p < c->end && *c->p == ch) {
    c->p++;
    return true;
  }
  return false;
}

/* Consumes a Python word (True, False) if it comes next, whole. */
static bool accept_word(cursor *c, const char *word) {
  skip_space(c);
  size_t n = strlen(word);
  if ((size_t)(c->end - c->p) < n || memcmp(c->p, word, n) != 0) return false;
  if ((size_t)(c->end - c->p) > n) {
    char next = c->p[n];
    if (next == '_' || (next >= 'a' && next <= 'z') ||
        (next >= 'A' && next <= 'Z') || (next >= '0' && next <= '9'))
      return false;
  }
  c->p += n;
  return true;
}

/* A quoted string without escapes (all that NumPy writes for these keys),
 * copied NUL-terminated into buf. `what` names it in messages. */
static int parse_string(cursor *c, char *buf, size_t cap, const char *what,
                        ts_err *err) {
  skip_space(c);
  if (c->p >= c->end || (*c->p != '\'' && *c->p != '"'))
    return fail(err, c->name, TS_EINVAL, "header: expected a quoted %s",
                what);
  char quote = *c->p++;
  const char *start = c->p;
  while (c->p < c->end && *c->p != quote) {
    if (*c->p == '\\' || *c->p == '\n' || *c->p == '\0')
      return fail(err, c->name, TS_EINVAL,
                  "header: unexpected character in the %s", what);
    c->p++;
  }
  if (c->p >= c->end)
    return fail(err, c->name, TS_EINVAL, "header: unterminated %s", what);
  size_t n = (size_t)(c->p - start);
  c->p++;
  if (n >= cap)
    return fail(err, c->name, TS_EINVAL, "header: %s '%.*s...' is too long",
                what, (int)(cap - 1), start);
  memcpy(buf, start, n);
  buf[n] = '\0';
  return TS_OK;
}

static int parse_descr(cursor *c, npy_header *h, ts_err *err) {
  skip_space(c);
  if (c->p < c->end && *c->p == '[')
    return fail(err, c->name, TS_EUNSUPPORTED,
                "structured dtypes ('descr' is a list) are not supported");
  char descr[32];
  int rc = parse_string(c, descr, sizeof descr, "'descr' value", err);
  if (rc) return rc;
  char order = strchr("<>|=!", descr[0]) && descr[0] ? descr[0] : 0;
  const char *type = order ? descr + 1 : descr;
  if (type[0] == 'O')
    return fail(err, c->name, TS_EUNSUPPORTED,
                "object arrays (descr '%s') are not supported", descr);
  for (size_t i = 0; i < N_NPY_DTYPES; i++) {
    if (strcmp(npy_dtypes[i].descr + 1, type) != 0) continue;
    if ((order == '>' || order == '!') && ts_dtype_size(npy_dtypes[i].dtype) > 1)
      return fail(err, c->name, TS_EUNSUPPORTED,
                  "big-endian data (descr '%s') is not supported; "
                  "convert with arr.astype(arr.dtype.newbyteorder('<'))",
                  descr);
    h->dtype = npy_dtypes[i].dtype;
    return TS_OK;
  }
  return fail(err, c->name, TS_EUNSUPPORTED,
              "dtype '%s' is not supported (numeric and bool types only)",
              descr);
}

static int parse_fortran_order(cursor *c, npy_header *h, ts_err *err) {
  (void)h;
  if (accept_word(c, "False")) return TS_OK;
  if (accept_word(c, "True"))
    return fail(err, c->name, TS_EUNSUPPORTED,
                "Fortran-order arrays are not supported; save a C-order "
                "array (np.ascontiguousarray)");
  return fail(err, c->name, TS_EINVAL,
              "header: 'fortran_order' must be True or False");
}

/* One non-negative Python int (an 'L' suffix from Python 2 is allowed). */
static int parse_dim(cursor *c, int index, int64_t *out, ts_err *err) {
  skip_space(c);
  if (c->p < c->end && *c->p == '-')
    return fail(err, c->name, TS_EINVAL, "header: shape dim %d is negative",
                index);
  if (c->p >= c->end || *c->p < '0' || *c->p > '9')
    return fail(err, c->name, TS_EINVAL,
                "header: shape dim %d is not an integer", index);
  int64_t v = 0;
  while (c->p < c->end && *c->p >= '0' && *c->p <= '9') {
    int digit = *c->p++ - '0';
    if (v > (INT64_MAX - digit) / 10)
      return fail(err, c->name, TS_EINVAL,
                  "header: shape dim %d overflows int64", index);
    v = v * 10 + digit;
  }
  if (c->p < c->end && (*c->p == 'L' || *c->p == 'l')) c->p++;
  *out = v;
  return TS_OK;
}

static int parse_shape(cursor *c, npy_header *h, ts_err *err) {
  if (!accept(c, '('))
    return fail(err, c->name, TS_EINVAL, "header: 'shape' must be a tuple");
  int rank = 0;
  bool trailing_comma = false;
  while (!accept(c, ')')) {
    if (rank == TS_MAX_RANK)
      return fail(err, c->name, TS_EUNSUPPORTED,
                  "shape has more than %d dims", TS_MAX_RANK);
    int rc = parse_dim(c, rank, &h->dims[rank], err);
    if (rc) return rc;
    rank++;
    trailing_comma = accept(c, ',');
    if (!trailing_comma) {
      if (accept(c, ')')) break;
      return fail(err, c->name, TS_EINVAL,
                  "header: expected ',' or ')' after shape dim %d", rank - 1);
    }
  }
  if (rank == 1 && !trailing_comma)
    return fail(err, c->name, TS_EINVAL,
                "header: 'shape' (n) is not a tuple; write (n,)");
  h->rank = rank;
  return TS_OK;
}

/* The header dict's keys: each must appear exactly once. */
static const struct npy_key {
  const char *name;
  int (*parse)(cursor *c, npy_header *h, ts_err *err);
} npy_keys[] = {
    {"descr", parse_descr},
    {"fortran_order", parse_fortran_order},
    {"shape", parse_shape},
};
#define N_NPY_KEYS (sizeof npy_keys / sizeof npy_keys[0])

/* Parses the header text s[0..n) into *h, including the data size. */
static int parse_header(const char *s, size_t n, const char *name,
                        npy_header *h, ts_err *err) {
  cursor c = {s, s + n, name};
  bool seen[N_NPY_KEYS] = {false};
  memset(h, 0, sizeof *h);
  if (!accept(&c, '{'))
    return fail(err, name, TS_EINVAL, "header: expected a '{'");
  while (!accept(&c, '}')) {
    char key[32];
    int rc = parse_string(&c, key, sizeof key, "key", err);
    if (rc) return rc;
    size_t k = 0;
    while (k < N_NPY_KEYS && strcmp(npy_keys[k].name, key) != 0) k++;
    if (k == N_NPY_KEYS)
      return fail(err, name, TS_EINVAL, "header: unexpected key '%s'", key);
    if (seen[k])
      return fail(err, name, TS_EINVAL, "header: duplicate key '%s'", key);
    seen[k] = true;
    if (!accept(&c, ':'))
      return fail(err, name, TS_EINVAL, "header: expected ':' after '%s'",
                  key);
    rc = npy_keys[k].parse(&c, h, err);
    if (rc) return rc;
    if (!accept(&c, ',')) {
      if (accept(&c, '}')) break;
      return fail(err, name, TS_EINVAL,
                  "header: expected ',' or '}' after the '%s' value", key);
    }
  }
  skip_space(&c);
  if (c.p != c.end)
    return fail(err, name, TS_EINVAL,
                "header: unexpected characters after the dict");
  for (size_t k = 0; k < N_NPY_KEYS; k++)
    if (!seen[k])
      return fail(err, name, TS_EINVAL, "header: missing key '%s'",
                  npy_keys[k].name);
  int64_t nbytes = ts_shape_nbytes(h->dtype, h->dims, h->rank);
  if (nbytes < 0) {
    char shape[256];
    return fail(err, name, TS_EINVAL, "shape %s of %s overflows",
                ts_shape_str(h->dims, h->rank, shape, sizeof shape),
                ts_dtype_name(h->dtype));
  }
  h->nbytes = (size_t)nbytes;
  return TS_OK;
}

/* The data must be exactly as long as the shape says. */
static int check_data_size(const npy_header *h, uint64_t avail,
                           const char *name, ts_err *err) {
  if (avail == h->nbytes) return TS_OK;
  char shape[256];
  ts_shape_str(h->dims, h->rank, shape, sizeof shape);
  if (avail < h->nbytes)
    return fail(err, name, TS_EINVAL,
                "data is truncated: %llu bytes where shape %s of %s needs %zu",
                (unsigned long long)avail, shape, ts_dtype_name(h->dtype),
                h->nbytes);
  return fail(err, name, TS_EINVAL,
              "%llu unexpected bytes after the data of shape %s of %s",
              (unsigned long long)(avail - h->nbytes), shape,
              ts_dtype_name(h->dtype));
}

/* Allocates *out for the header's dtype and shape (owned, zeroed). */
static int alloc_for(const npy_header *h, const char *name, ts_tensor *out,
                     ts_err *err) {
  int rc = ts_tensor_alloc(out, h->dtype, h->dims, h->rank, err);
  if (rc) {
    ts_err_prefix(err, "%s", name);
    memset(out, 0, sizeof *out);
  }
  return rc;
}

int ts_npy_decode(const void *buf, size_t len, const char *name,
                  ts_tensor *out, ts_err *err) {
  const uint8_t *p = buf;
  size_t off, hlen;
  npy_header h;
  memset(out, 0, sizeof *out);
  int rc = parse_prelude(p, len, name, &off, &hlen, err);
  if (rc) return rc;
  if (hlen > len - off)
    return fail(err, name, TS_EINVAL,
                "header is truncated: %zu bytes of %zu", len - off, hlen);
  rc = parse_header((const char *)p + off, hlen, name, &h, err);
  if (!rc) rc = check_data_size(&h, len - off - hlen, name, err);
  if (!rc) rc = alloc_for(&h, name, out, err);
  if (rc) return rc;
  if (h.nbytes) memcpy(out->data, p + off + hlen, h.nbytes);
  return TS_OK;
}

/* ---- files ---------------------------------------------------------- */

static int io_fail(ts_err *err, const char *path, const char *what) {
  int e = errno;
  return fail(err, path, e == ENOENT ? TS_ENOTFOUND : TS_EIO, "cannot %s: %s",
              what, e ? strerror(e) : "unexpected end of file");
}

/* Reads exactly n bytes at the current position. */
static int read_exact(FILE *f, void *buf, size_t n, const char *path,
                      ts_err *err) {
  errno = 0;
  if (n && fread(buf, 1, n, f) != n) return io_fail(err, path, "read");
  return TS_OK;
}

int ts_npy_read(const char *path, ts_tensor *out, ts_err *err) {
  memset(out, 0, sizeof *out);
  FILE *f = fopen(path, "rb");
  if (!f) return io_fail(err, path, "open");
  char *header = NULL;
  struct stat st;
  int rc;
  if (fstat(fileno(f), &st) != 0) {
    rc = io_fail(err, path, "stat");
    goto done;
  }
  if (!S_ISREG(st.st_mode)) {
    rc = fail(err, path, TS_EINVAL, "not a regular file");
    goto done;
  }
  uint64_t size = (uint64_t)st.st_size;
  uint8_t prelude[12];
  size_t np = size < sizeof prelude ? (size_t)size : sizeof prelude;
  size_t off, hlen;
  npy_header h;
  rc = read_exact(f, prelude, np, path, err);
  if (!rc) rc = parse_prelude(prelude, np, path, &off, &hlen, err);
  if (rc) goto done;
  if (hlen > size - off) {
    rc = fail(err, path, TS_EINVAL, "header is truncated: %llu bytes of %zu",
              (unsigned long long)(size - off), hlen);
    goto done;
  }
  header = malloc(hlen ? hlen : 1);
  if (!header) {
    rc = fail(err, path, TS_ENOMEM, "cannot allocate the header");
    goto done;
  }
  if (fseek(f, (long)off, SEEK_SET) != 0) {
    rc = io_fail(err, path, "seek");
    goto done;
  }
  rc = read_exact(f, header, hlen, path, err);
  if (!rc) rc = parse_header(header, hlen, path, &h, err);
  if (!rc) rc = check_data_size(&h, size - off - hlen, path, err);
  if (!rc) rc = alloc_for(&h, path, out, err);
  if (!rc) rc = read_exact(f, out->data, h.nbytes, path, err);
  if (rc) ts_tensor_free(out);
done:
  free(header);
  fclose(f);
  return rc;
}

/* ---- writing -------------------------------------------------------- */

/* Builds the prelude and header for t into buf (NPY_HEADER_BUF bytes),
 * padded so the data starts on a 64-byte boundary. */
#define NPY_HEADER_BUF 512
static int build_header(const ts_tensor *t, const char *name, char *buf,
                        size_t *len, ts_err *err) {
  const char *descr = npy_descr(t->dtype);
  if (!descr)
    return fail(err, name, TS_EUNSUPPORTED,
                "%s tensors cannot be stored in .npy files",
                ts_dtype_name(t->dtype));
  if (t->rank < 0 || t->rank > TS_MAX_RANK)
    return fail(err, name, TS_EINVAL, "rank %d is out of range", t->rank);
  int64_t nbytes = ts_shape_nbytes(t->dtype, t->dims, t->rank);
  if (nbytes < 0 || (uint64_t)nbytes != t->nbytes || (nbytes && !t->data))
    return fail(err, name, TS_EINVAL,
                "tensor's nbytes (%zu) or data do not match its shape",
                t->nbytes);
  char dict[NPY_HEADER_BUF];
  int n = snprintf(dict, sizeof dict,
                   "{'descr': '%s', 'fortran_order': False, 'shape': (", descr);
  for (int i = 0; i < t->rank; i++)
    n += snprintf(dict + n, sizeof dict - (size_t)n, "%s%lld", i ? ", " : "",
                  (long long)t->dims[i]);
  n += snprintf(dict + n, sizeof dict - (size_t)n, "%s), }",
                t->rank == 1 ? "," : "");
  /* 10 prelude bytes + dict + padding + '\n' is a multiple of 64. */
  size_t total = ((size_t)NPY_PRELUDE_MIN + (size_t)n + 1 + NPY_ALIGN - 1) /
                 NPY_ALIGN * NPY_ALIGN;
  TS_ASSERT(total <= NPY_HEADER_BUF);
  size_t hlen = total - NPY_PRELUDE_MIN;
  memcpy(buf, npy_magic, sizeof npy_magic);
  buf[6] = 1;
  buf[7] = 0;
  buf[8] = (char)(hlen & 0xff);
  buf[9] = (char)(hlen >> 8);
  memcpy(buf + NPY_PRELUDE_MIN, dict, (size_t)n);
  memset(buf + NPY_PRELUDE_MIN + n, ' ', hlen - (size_t)n - 1);
  buf[total - 1] = '\n';
  *len = total;
  return TS_OK;
}

int ts_npy_encode(const ts_tensor *t, uint8_t **out, size_t *out_len,
                  ts_err *err) {
  char header[NPY_HEADER_BUF];
  size_t hlen;
  *out = NULL;
  *out_len = 0;
  int rc = build_header(t, "npy", header, &hlen, err);
  if (rc) return rc;
  if (t->nbytes > SIZE_MAX - hlen)
    return fail(err, "npy", TS_ENOMEM, "tensor of %zu bytes is too large",
                t->nbytes);
  uint8_t *buf = malloc(hlen + t->nbytes);
  if (!buf)
    return fail(err, "npy", TS_ENOMEM, "cannot allocate %zu bytes",
                hlen + t->nbytes);
  memcpy(buf, header, hlen);
  if (t->nbytes) memcpy(buf + hlen, t->data, t->nbytes);
  *out = buf;
  *out_len = hlen + t->nbytes;
  return TS_OK;
}

int ts_npy_write(const char *path, const ts_tensor *t, ts_err *err) {
  char header[NPY_HEADER_BUF];
  size_t hlen;
  int rc = build_header(t, path, header, &hlen, err);
  if (rc) return rc;
  FILE *f = fopen(path, "wb");
  if (!f) return io_fail(err, path, "create");
  errno = 0;
  bool ok = fwrite(header, 1, hlen, f) == hlen &&
            (!t->nbytes || fwrite(t->data, 1, t->nbytes, f) == t->nbytes) &&
            fflush(f) == 0;
  if (!ok) rc = io_fail(err, path, "write");
  if (fclose(f) != 0 && !rc) rc = io_fail(err, path, "close");
  if (rc) unlink(path);
  return rc;
}
