/*
 * test_npy.c - the .npy reader and writer.
 *
 * Values are never compared with earlier output of npy.c itself: files come
 * from NumPy (/usr/bin/python3) and are checked against a formula both sides
 * compute independently; files written here are read back by NumPy, which
 * checks them against the same formula. Hand-built byte images cover every
 * malformed-header class with its exact error code.
 */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check_main.h"
#include "npy.h"

#define PYTHON "/usr/bin/python3"

/* Element i of every test array: small integers, so that each dtype holds
 * them exactly; floats are k/4. */
static long long int_value(int64_t i) { return (i * 7 + 3) % 101 - 50; }
static long long uint_value(int64_t i) { return (i * 7 + 3) % 101; }
static double float_value(int64_t i) { return (double)int_value(i) * 0.25; }
static int bool_value(int64_t i) { return i % 3 == 0; }

/* The Python side of the same formula. */
static const char *py_formula =
    "import numpy as np, sys, os\n"
    "def values(dt, n):\n"
    "    i = np.arange(n, dtype=np.int64)\n"
    "    k = np.dtype(dt).kind\n"
    "    if k == 'b': return (i % 3 == 0)\n"
    "    if k == 'u': return ((i * 7 + 3) % 101).astype(dt)\n"
    "    if k == 'i': return ((i * 7 + 3) % 101 - 50).astype(dt)\n"
    "    return (((i * 7 + 3) % 101 - 50) * 0.25).astype(dt)\n";

/* IEEE half to float, enough for the values above (normal numbers, 0). */
static double half_to_double(uint16_t h) {
  int sign = h >> 15, exp = (h >> 10) & 0x1f, frac = h & 0x3ff;
  double v = exp ? ldexp(1.0 + frac / 1024.0, exp - 15) : ldexp(frac / 1024.0, -14);
  return sign ? -v : v;
}

/* Element i of t as a double, read by dtype. */
static double element(const ts_tensor *t, int64_t i) {
  switch (t->dtype) {
    case TS_DTYPE_FLOAT: return ((const float *)t->data)[i];
    case TS_DTYPE_DOUBLE: return ((const double *)t->data)[i];
    case TS_DTYPE_FLOAT16: return half_to_double(((const uint16_t *)t->data)[i]);
    case TS_DTYPE_INT8: return ((const int8_t *)t->data)[i];
    case TS_DTYPE_INT16: return ((const int16_t *)t->data)[i];
    case TS_DTYPE_INT32: return ((const int32_t *)t->data)[i];
    case TS_DTYPE_INT64: return (double)((const int64_t *)t->data)[i];
    case TS_DTYPE_UINT8: return ((const uint8_t *)t->data)[i];
    case TS_DTYPE_UINT16: return ((const uint16_t *)t->data)[i];
    case TS_DTYPE_UINT32: return ((const uint32_t *)t->data)[i];
    case TS_DTYPE_UINT64: return (double)((const uint64_t *)t->data)[i];
    case TS_DTYPE_BOOL: return ((const uint8_t *)t->data)[i];
    default: ck_abort_msg("unexpected dtype %d", t->dtype);
  }
  return 0;
}

static double expected(ts_dtype dtype, int64_t i) {
  switch (dtype) {
    case TS_DTYPE_FLOAT: case TS_DTYPE_DOUBLE: case TS_DTYPE_FLOAT16:
      return float_value(i);
    case TS_DTYPE_UINT8: case TS_DTYPE_UINT16: case TS_DTYPE_UINT32:
    case TS_DTYPE_UINT64:
      return (double)uint_value(i);
    case TS_DTYPE_BOOL: return bool_value(i);
    default: return (double)int_value(i);
  }
}

/* Fills t (allocated) with the formula, writing each element by dtype. */
static void fill(ts_tensor *t) {
  int64_t n = ts_tensor_numel(t);
  for (int64_t i = 0; i < n; i++) {
    double v = expected(t->dtype, i);
    switch (t->dtype) {
      case TS_DTYPE_FLOAT: ((float *)t->data)[i] = (float)v; break;
      case TS_DTYPE_DOUBLE: ((double *)t->data)[i] = v; break;
      case TS_DTYPE_FLOAT16: {
        /* k/4 with |k| <= 50: encode by searching the half table. */
        uint16_t h = 0;
        for (uint32_t b = 0; b < 0x10000; b++)
          if (((b >> 10) & 0x1f) != 0x1f && half_to_double((uint16_t)b) == v) {
            h = (uint16_t)b;
            break;
          }
        ((uint16_t *)t->data)[i] = h;
        break;
      }
      case TS_DTYPE_INT8: ((int8_t *)t->data)[i] = (int8_t)v; break;
      case TS_DTYPE_INT16: ((int16_t *)t->data)[i] = (int16_t)v; break;
      case TS_DTYPE_INT32: ((int32_t *)t->data)[i] = (int32_t)v; break;
      case TS_DTYPE_INT64: ((int64_t *)t->data)[i] = (int64_t)v; break;
      case TS_DTYPE_UINT8: ((uint8_t *)t->data)[i] = (uint8_t)v; break;
      case TS_DTYPE_UINT16: ((uint16_t *)t->data)[i] = (uint16_t)v; break;
      case TS_DTYPE_UINT32: ((uint32_t *)t->data)[i] = (uint32_t)v; break;
      case TS_DTYPE_UINT64: ((uint64_t *)t->data)[i] = (uint64_t)v; break;
      case TS_DTYPE_BOOL: ((uint8_t *)t->data)[i] = (uint8_t)v; break;
      default: ck_abort_msg("unexpected dtype %d", t->dtype);
    }
  }
}

static void check_values(const ts_tensor *t) {
  int64_t n = ts_tensor_numel(t);
  for (int64_t i = 0; i < n; i++)
    ck_assert_msg(element(t, i) == expected(t->dtype, i),
                  "%s element %lld: got %g want %g", ts_dtype_name(t->dtype),
                  (long long)i, element(t, i), expected(t->dtype, i));
}

static const struct {
  ts_dtype dtype;
  const char *descr;
} all_dtypes[] = {
    {TS_DTYPE_FLOAT, "<f4"},  {TS_DTYPE_DOUBLE, "<f8"}, {TS_DTYPE_FLOAT16, "<f2"},
    {TS_DTYPE_INT8, "|i1"},   {TS_DTYPE_INT16, "<i2"},  {TS_DTYPE_INT32, "<i4"},
    {TS_DTYPE_INT64, "<i8"},  {TS_DTYPE_UINT8, "|u1"},  {TS_DTYPE_UINT16, "<u2"},
    {TS_DTYPE_UINT32, "<u4"}, {TS_DTYPE_UINT64, "<u8"}, {TS_DTYPE_BOOL, "|b1"},
};
#define N_DTYPES (sizeof all_dtypes / sizeof all_dtypes[0])

static char tmpdir[256];

static void make_tmpdir(void) { ts_check_tmpdir(tmpdir, sizeof tmpdir, "test_npy"); }

static void remove_tmpdir(void) { ts_check_rmtree(tmpdir); }

static void path_in_tmp(char *buf, size_t size, const char *name) {
  snprintf(buf, size, "%s/%s", tmpdir, name);
}

/* Runs py_formula + body as a script with argv[1] = tmpdir; returns its
 * exit status. */
static int run_python(const char *body) {
  char script[512], cmd[1200];
  path_in_tmp(script, sizeof script, "script.py");
  FILE *f = fopen(script, "w");
  ck_assert_ptr_nonnull(f);
  fputs(py_formula, f);
  fputs("d = sys.argv[1]\n", f);
  fputs(body, f);
  ck_assert_int_eq(fclose(f), 0);
  snprintf(cmd, sizeof cmd, PYTHON " '%s' '%s'", script, tmpdir);
  int rc = system(cmd);
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

/* ---- round trips ---------------------------------------------------- */

static const int64_t shapes[][TS_MAX_RANK] = {
    {0}, {5}, {2, 3, 4}, {0, 3}, {1, 2, 1, 2, 1, 2, 1, 3},
};
static const int shape_ranks[] = {0, 1, 3, 2, 8};

START_TEST(test_roundtrip_memory) {
  for (size_t d = 0; d < N_DTYPES; d++)
    for (size_t s = 0; s < sizeof shape_ranks / sizeof shape_ranks[0]; s++) {
      ts_tensor t, back;
      ts_err err;
      ck_assert_int_eq(ts_tensor_alloc(&t, all_dtypes[d].dtype, shapes[s],
                                       shape_ranks[s], &err), 0);
      fill(&t);
      uint8_t *buf;
      size_t len;
      ck_assert_int_eq(ts_npy_encode(&t, &buf, &len, &err), 0);
      ck_assert_int_eq(ts_npy_decode(buf, len, "mem", &back, &err), 0);
      ck_assert_int_eq(back.dtype, t.dtype);
      ck_assert_int_eq(back.rank, t.rank);
      for (int i = 0; i < t.rank; i++) ck_assert_int_eq(back.dims[i], t.dims[i]);
      ck_assert_uint_eq(back.nbytes, t.nbytes);
      ck_assert(back.owned);
      check_values(&back);
      free(buf);
      ts_tensor_free(&back);
      ts_tensor_free(&t);
    }
}
END_TEST

/* The header layout NumPy's format spec prescribes, checked byte by byte. */
START_TEST(test_header_layout) {
  int64_t dims[2] = {2, 3};
  ts_tensor t;
  ts_err err;
  ck_assert_int_eq(ts_tensor_alloc(&t, TS_DTYPE_FLOAT, dims, 2, &err), 0);
  uint8_t *buf;
  size_t len;
  ck_assert_int_eq(ts_npy_encode(&t, &buf, &len, &err), 0);
  ck_assert_mem_eq(buf, "\x93NUMPY\x01\x00", 8);
  size_t hlen = buf[8] | (size_t)buf[9] << 8;
  ck_assert_uint_eq((10 + hlen) % 64, 0);
  ck_assert_uint_eq(len, 10 + hlen + 24);
  const char *want = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";
  ck_assert_mem_eq(buf + 10, want, strlen(want));
  ck_assert_int_eq(buf[10 + hlen - 1], '\n');
  for (size_t i = 10 + strlen(want); i < 10 + hlen - 1; i++)
    ck_assert_int_eq(buf[i], ' ');
  free(buf);

  /* One dim: a Python 1-tuple needs its comma. */
  int64_t one[1] = {7};
  ts_tensor_free(&t);
  ck_assert_int_eq(ts_tensor_alloc(&t, TS_DTYPE_UINT8, one, 1, &err), 0);
  ck_assert_int_eq(ts_npy_encode(&t, &buf, &len, &err), 0);
  const char *want1 = "{'descr': '|u1', 'fortran_order': False, 'shape': (7,), }";
  ck_assert_mem_eq(buf + 10, want1, strlen(want1));
  free(buf);
  ts_tensor_free(&t);
}
END_TEST

START_TEST(test_write_unsupported_dtype) {
  ts_tensor t = {.dtype = TS_DTYPE_STRING, .rank = 0};
  ts_err err;
  uint8_t *buf;
  size_t len;
  ck_assert_int_eq(ts_npy_encode(&t, &buf, &len, &err), TS_EUNSUPPORTED);
  ck_assert_ptr_null(buf);
  /* nbytes that disagree with the shape */
  int64_t dims[1] = {4};
  float data[4] = {0};
  ck_assert_int_eq(ts_tensor_view(&t, TS_DTYPE_FLOAT, dims, 1, data, &err), 0);
  t.nbytes = 8;
  ck_assert_int_eq(ts_npy_encode(&t, &buf, &len, &err), TS_EINVAL);
}
END_TEST

/* ---- interop with NumPy --------------------------------------------- */

START_TEST(test_read_numpy_files) {
  make_tmpdir();
  int rc = run_python(
      "from numpy.lib import format as F\n"
      "for dt in ['<f4','<f8','<f2','|i1','<i2','<i4','<i8','|u1','<u2',"
      "'<u4','<u8','|b1']:\n"
      "    tag = dt[1:]\n"
      "    np.save(os.path.join(d, tag + '.npy'), values(dt, 24).reshape(2, 3, 4))\n"
      "    for v in [(2, 0), (3, 0)]:\n"
      "        with open(os.path.join(d, '%s_v%d.npy' % (tag, v[0])), 'wb') as f:\n"
      "            F.write_array(f, values(dt, 6).reshape(3, 2), version=v)\n"
      "np.save(os.path.join(d, 'scalar.npy'), np.float64(values('<f8', 1)[0]))\n"
      "np.save(os.path.join(d, 'empty.npy'), np.zeros((0, 5), np.float32))\n"
      "np.save(os.path.join(d, 'vec.npy'), values('<i8', 1000))\n");
  ck_assert_int_eq(rc, 0);
  for (size_t d = 0; d < N_DTYPES; d++) {
    const char *suffixes[] = {"", "_v2", "_v3"};
    for (int v = 0; v < 3; v++) {
      char name[64], path[512];
      snprintf(name, sizeof name, "%s%s.npy", all_dtypes[d].descr + 1,
               suffixes[v]);
      path_in_tmp(path, sizeof path, name);
      ts_tensor t;
      ts_err err;
      rc = ts_npy_read(path, &t, &err);
      ck_assert_msg(rc == 0, "%s: %s", name, err.msg);
      ck_assert_int_eq(t.dtype, all_dtypes[d].dtype);
      if (v == 0) {
        ck_assert_int_eq(t.rank, 3);
        ck_assert_int_eq(t.dims[0], 2);
        ck_assert_int_eq(t.dims[1], 3);
        ck_assert_int_eq(t.dims[2], 4);
      } else {
        ck_assert_int_eq(t.rank, 2);
        ck_assert_int_eq(t.dims[0], 3);
        ck_assert_int_eq(t.dims[1], 2);
      }
      check_values(&t);
      ts_tensor_free(&t);
    }
  }
  char path[512];
  ts_tensor t;
  ts_err err;
  path_in_tmp(path, sizeof path, "scalar.npy");
  ck_assert_int_eq(ts_npy_read(path, &t, &err), 0);
  ck_assert_int_eq(t.rank, 0);
  ck_assert_int_eq(t.dtype, TS_DTYPE_DOUBLE);
  check_values(&t);
  ts_tensor_free(&t);
  path_in_tmp(path, sizeof path, "empty.npy");
  ck_assert_int_eq(ts_npy_read(path, &t, &err), 0);
  ck_assert_int_eq(t.rank, 2);
  ck_assert_int_eq(t.dims[0], 0);
  ck_assert_int_eq(t.dims[1], 5);
  ck_assert_uint_eq(t.nbytes, 0);
  ts_tensor_free(&t);
  path_in_tmp(path, sizeof path, "vec.npy");
  ck_assert_int_eq(ts_npy_read(path, &t, &err), 0);
  ck_assert_int_eq(t.rank, 1);
  ck_assert_int_eq(t.dims[0], 1000);
  check_values(&t);
  ts_tensor_free(&t);
  remove_tmpdir();
}
END_TEST

START_TEST(test_numpy_reads_ours) {
  make_tmpdir();
  for (size_t d = 0; d < N_DTYPES; d++) {
    int64_t dims[3] = {4, 1, 6};
    ts_tensor t;
    ts_err err;
    ck_assert_int_eq(ts_tensor_alloc(&t, all_dtypes[d].dtype, dims, 3, &err), 0);
    fill(&t);
    char name[64], path[512];
    snprintf(name, sizeof name, "c_%s.npy", all_dtypes[d].descr + 1);
    path_in_tmp(path, sizeof path, name);
    ck_assert_msg(ts_npy_write(path, &t, &err) == 0, "%s", err.msg);
    ts_tensor_free(&t);
  }
  int64_t none[1] = {0};
  double scalar = float_value(0);
  ts_tensor s;
  ts_err err;
  char path[512];
  ck_assert_int_eq(ts_tensor_view(&s, TS_DTYPE_DOUBLE, none, 0, &scalar, &err), 0);
  path_in_tmp(path, sizeof path, "c_scalar.npy");
  ck_assert_int_eq(ts_npy_write(path, &s, &err), 0);
  int rc = run_python(
      "for dt in ['<f4','<f8','<f2','|i1','<i2','<i4','<i8','|u1','<u2',"
      "'<u4','<u8','|b1']:\n"
      "    a = np.load(os.path.join(d, 'c_' + dt[1:] + '.npy'))\n"
      "    assert a.dtype == np.dtype(dt), (dt, a.dtype)\n"
      "    assert a.shape == (4, 1, 6), (dt, a.shape)\n"
      "    assert a.flags.c_contiguous\n"
      "    assert np.array_equal(a.ravel(), values(dt, 24)), dt\n"
      "a = np.load(os.path.join(d, 'c_scalar.npy'))\n"
      "assert a.shape == () and a == values('<f8', 1)[0], a\n");
  ck_assert_int_eq(rc, 0);
  remove_tmpdir();
}
END_TEST

/* Well-formed NumPy files we refuse: each with TS_EUNSUPPORTED and the file
 * named in the message. */
START_TEST(test_numpy_unsupported) {
  make_tmpdir();
  int rc = run_python(
      "a = values('<f4', 6).reshape(2, 3)\n"
      "np.save(os.path.join(d, 'fortran.npy'), np.asfortranarray(a))\n"
      "np.save(os.path.join(d, 'big.npy'), a.astype('>f4'))\n"
      "np.save(os.path.join(d, 'object.npy'), np.array([1, 'x', None], "
      "dtype=object), allow_pickle=True)\n"
      "np.save(os.path.join(d, 'struct.npy'), np.zeros(3, "
      "dtype=[('a', '<f4'), ('b', '<i4')]))\n"
      "np.save(os.path.join(d, 'unicode.npy'), np.array(['ab', 'c']))\n"
      "np.save(os.path.join(d, 'complex.npy'), np.zeros(3, np.complex64))\n"
      "np.save(os.path.join(d, 'rank9.npy'), np.zeros((1,) * 9, np.float32))\n");
  ck_assert_int_eq(rc, 0);
  const char *names[] = {"fortran.npy", "big.npy",     "object.npy",
                         "struct.npy",  "unicode.npy", "complex.npy",
                         "rank9.npy"};
  const char *words[] = {"Fortran", "big-endian", "object", "structured",
                         "not supported", "not supported", "dims"};
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
    char path[512];
    path_in_tmp(path, sizeof path, names[i]);
    ts_tensor t;
    ts_err err;
    rc = ts_npy_read(path, &t, &err);
    ck_assert_msg(rc == TS_EUNSUPPORTED, "%s: rc %d (%s)", names[i], rc, err.msg);
    ck_assert_msg(strstr(err.msg, path) == err.msg, "%s", err.msg);
    ck_assert_msg(strstr(err.msg, words[i]), "%s", err.msg);
    ck_assert_ptr_null(t.data);
  }
  remove_tmpdir();
}
END_TEST

/* ---- malformed input ------------------------------------------------ */

/* Builds a v1 image with the given header text and data length; the header
 * length field can be overridden (hlen_override >= 0). */
static size_t build_image(uint8_t *buf, size_t cap, const char *header,
                          size_t hlen, size_t data_len, long hlen_override) {
  ck_assert_uint_le(10 + hlen + data_len, cap);
  memcpy(buf, "\x93NUMPY\x01\x00", 8);
  size_t field = hlen_override >= 0 ? (size_t)hlen_override : hlen;
  buf[8] = (uint8_t)(field & 0xff);
  buf[9] = (uint8_t)(field >> 8);
  memcpy(buf + 10, header, hlen);
  memset(buf + 10 + hlen, 0x5a, data_len);
  return 10 + hlen + data_len;
}

/* Decodes an image of header[0..hlen) and data_len bytes of data. */
static void expect_decode_len(const char *header, size_t hlen, size_t data_len,
                              int code, const char *word) {
  uint8_t buf[4096];
  size_t len = build_image(buf, sizeof buf, header, hlen, data_len, -1);
  ts_tensor t;
  ts_err err;
  ts_err_clear(&err);
  int rc = ts_npy_decode(buf, len, "bad.npy", &t, &err);
  ck_assert_msg(rc == code, "header %s: rc %d want %d (%s)", header, rc, code,
                err.msg);
  if (code) {
    ck_assert_msg(strncmp(err.msg, "bad.npy: ", 9) == 0, "%s", err.msg);
    ck_assert_msg(strstr(err.msg, word), "'%s' lacks '%s'", err.msg, word);
    ck_assert_ptr_null(t.data);
  } else {
    ts_tensor_free(&t);
  }
}

static void expect_decode(const char *header, size_t data_len, int code,
                          const char *word) {
  expect_decode_len(header, strlen(header), data_len, code, word);
}

/* Headers of an image whose data holds `data_len` bytes, the code
 * ts_npy_decode gives, and a word of its message. F4(rest): a little-endian
 * float32 C-order header, the dict's keys after 'fortran_order' in `rest`. */
#define F4(rest) "{'descr': '<f4', 'fortran_order': False, " rest
static const struct {
  const char *header;
  size_t data_len;
  int code;
  const char *word;
} headers[] = {
    /* Sanity: the good form and harmless variations parse. */
    {F4("'shape': (2, 3), }\n"), 24, 0, NULL},
    {"{\"shape\":(2,3),\"descr\":\"<f4\",\"fortran_order\":False}", 24, 0, NULL},
    {"{'descr': '<i8', 'fortran_order': False, 'shape': (2L, 1L), }", 16, 0, NULL},
    {F4("'shape': (2, 3), }"), 20, TS_EINVAL, "truncated"},
    {F4("'shape': (2, 3), }"), 28, TS_EINVAL, "unexpected bytes"},
    {"'descr': '<f4', 'fortran_order': False, 'shape': (2,), }", 8, TS_EINVAL, "'{'"},
    {F4("'shape': (2,)"), 8, TS_EINVAL, "header"},
    {"{'descr': '<f4', 'shape': (2,), }", 8, TS_EINVAL, "missing key 'fortran_order'"},
    {F4("'shape': (2,), 'extra': 1}"), 8, TS_EINVAL, "unexpected key 'extra'"},
    {"{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, "
     "'shape': (2,)}", 8, TS_EINVAL, "duplicate key 'descr'"},
    {"{'descr': <f4, 'fortran_order': False, 'shape': (2,)}", 8, TS_EINVAL, "'descr' value"},
    {"{'descr': '<f4", 8, TS_EINVAL, "unterminated"},
    {"{'descr': '<f4', 'fortran_order': 0, 'shape': (2,)}", 8, TS_EINVAL, "fortran_order"},
    {"{'descr': '<f4', 'fortran_order': Falsehood, 'shape': (2,)}", 8, TS_EINVAL, "fortran_order"},
    {F4("'shape': [2]}"), 8, TS_EINVAL, "tuple"},
    {F4("'shape': (2)}"), 8, TS_EINVAL, "tuple"},
    {F4("'shape': (2, -3)}"), 8, TS_EINVAL, "dim 1 is negative"},
    {F4("'shape': (2, x)}"), 8, TS_EINVAL, "dim 1 is not an integer"},
    {F4("'shape': (2 3)}"), 8, TS_EINVAL, "expected ','"},
    {F4("'shape': (99999999999999999999,)}"), 8, TS_EINVAL, "overflows"},
    /* Product overflows int64: 2^62 * 8 elements. */
    {F4("'shape': (4611686018427387904, 8)}"), 8, TS_EINVAL, "overflows"},
    /* A lying header: 2^40 floats promised, 8 bytes present. Must fail on
     * size, not try to allocate 4 TiB. */
    {F4("'shape': (1099511627776,)}"), 8, TS_EINVAL, "truncated"},
    {F4("'shape': (2,)} x"), 8, TS_EINVAL, "after the dict"},
    {"{'descr': '<f4' 'fortran_order': False, 'shape': (2,)}", 8, TS_EINVAL, "expected ',' or '}'"},
    {"{'descr': '<f4', 'fortran_order': True, 'shape': (2, 2)}", 16, TS_EUNSUPPORTED, "Fortran"},
    {"{'descr': '>f4', 'fortran_order': False, 'shape': (2,)}", 8, TS_EUNSUPPORTED, "big-endian"},
    {"{'descr': '|O', 'fortran_order': False, 'shape': (2,)}", 16, TS_EUNSUPPORTED, "object"},
    {"{'descr': '<c8', 'fortran_order': False, 'shape': (2,)}", 16, TS_EUNSUPPORTED, "'<c8'"},
    {"{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (2,)}", 8, TS_EUNSUPPORTED,
     "structured"},
    {F4("'shape': (1,1,1,1,1,1,1,1,1)}"), 4, TS_EUNSUPPORTED, "dims"},
    /* One-byte types have no byte order: '>' and '<' are both fine. */
    {"{'descr': '>u1', 'fortran_order': False, 'shape': (2,)}", 2, 0, NULL},
};
#undef F4

START_TEST(test_malformed_headers) {
  for (size_t i = 0; i < sizeof headers / sizeof headers[0]; i++)
    expect_decode(headers[i].header, headers[i].data_len, headers[i].code,
                  headers[i].word);
  /* A NUL after the dict. */
  static const char nul[] =
      "{'descr': '<f4', 'fortran_order': False, 'shape': (2,)}\0";
  expect_decode_len(nul, sizeof nul - 1, 8, TS_EINVAL, "after the dict");
}
END_TEST

START_TEST(test_malformed_prelude) {
  uint8_t buf[256];
  ts_tensor t;
  ts_err err;
  const char *hdr = "{'descr': '<f4', 'fortran_order': False, 'shape': (1,)}";
  size_t len = build_image(buf, sizeof buf, hdr, strlen(hdr), 4, -1);
  /* Every strict prefix is rejected as malformed, never read past. */
  for (size_t n = 0; n < len; n++) {
    uint8_t *copy = malloc(n ? n : 1);
    memcpy(copy, buf, n);
    ck_assert_int_eq(ts_npy_decode(copy, n, "cut.npy", &t, &err), TS_EINVAL);
    free(copy);
  }
  ck_assert_int_eq(ts_npy_decode(buf, len, "ok.npy", &t, &err), 0);
  ts_tensor_free(&t);
  /* Bad magic. */
  buf[1] = 'X';
  ck_assert_int_eq(ts_npy_decode(buf, len, "m.npy", &t, &err), TS_EINVAL);
  ck_assert_ptr_nonnull(strstr(err.msg, "magic"));
  buf[1] = 'N';
  /* Unknown versions. */
  buf[6] = 4;
  ck_assert_int_eq(ts_npy_decode(buf, len, "v.npy", &t, &err), TS_EUNSUPPORTED);
  ck_assert_ptr_nonnull(strstr(err.msg, "version 4.0"));
  buf[6] = 1;
  buf[7] = 1;
  ck_assert_int_eq(ts_npy_decode(buf, len, "v.npy", &t, &err), TS_EUNSUPPORTED);
  buf[7] = 0;
  /* Header length beyond the buffer. */
  len = build_image(buf, sizeof buf, hdr, strlen(hdr), 4, 200);
  ck_assert_int_eq(ts_npy_decode(buf, len, "h.npy", &t, &err), TS_EINVAL);
  ck_assert_ptr_nonnull(strstr(err.msg, "header is truncated"));
  /* Version 2.0 with an absurd header length. */
  uint8_t v2[16] = {0x93, 'N', 'U', 'M', 'P', 'Y', 2, 0, 0xff, 0xff, 0xff, 0x7f};
  ck_assert_int_eq(ts_npy_decode(v2, sizeof v2, "h2.npy", &t, &err), TS_EINVAL);
  ck_assert_ptr_nonnull(strstr(err.msg, "limit"));
}
END_TEST

START_TEST(test_file_errors) {
  make_tmpdir();
  ts_tensor t;
  ts_err err;
  char path[512];
  path_in_tmp(path, sizeof path, "missing.npy");
  ck_assert_int_eq(ts_npy_read(path, &t, &err), TS_ENOTFOUND);
  ck_assert_ptr_nonnull(strstr(err.msg, path));
  /* A directory is not a .npy file. */
  ck_assert_int_eq(ts_npy_read(tmpdir, &t, &err), TS_EINVAL);
  /* Truncated file: data cut short, then header cut short. */
  int64_t dims[2] = {3, 3};
  ck_assert_int_eq(ts_tensor_alloc(&t, TS_DTYPE_INT32, dims, 2, &err), 0);
  fill(&t);
  path_in_tmp(path, sizeof path, "cut.npy");
  ck_assert_int_eq(ts_npy_write(path, &t, &err), 0);
  ts_tensor_free(&t);
  ck_assert_int_eq(truncate(path, 64 + 35), 0);
  ck_assert_int_eq(ts_npy_read(path, &t, &err), TS_EINVAL);
  ck_assert_ptr_nonnull(strstr(err.msg, "truncated"));
  ck_assert_ptr_null(t.data);
  ck_assert_int_eq(truncate(path, 30), 0);
  ck_assert_int_eq(ts_npy_read(path, &t, &err), TS_EINVAL);
  ck_assert_int_eq(truncate(path, 3), 0);
  ck_assert_int_eq(ts_npy_read(path, &t, &err), TS_EINVAL);
  ck_assert_int_eq(truncate(path, 0), 0);
  ck_assert_int_eq(ts_npy_read(path, &t, &err), TS_EINVAL);
  /* Writing into a missing directory fails cleanly. */
  path_in_tmp(path, sizeof path, "no/such/dir.npy");
  int64_t one[1] = {1};
  float v = 1;
  ck_assert_int_eq(ts_tensor_view(&t, TS_DTYPE_FLOAT, one, 1, &v, &err), 0);
  ck_assert_int_eq(ts_npy_write(path, &t, &err), TS_ENOTFOUND);
  ck_assert_ptr_nonnull(strstr(err.msg, path));
  remove_tmpdir();
}
END_TEST

TS_CHECK_ONE_CASE_SUITE("npy", "core", 120, NULL, NULL, test_roundtrip_memory,
                        test_header_layout, test_write_unsupported_dtype,
                        test_read_numpy_files, test_numpy_reads_ours,
                        test_numpy_unsupported, test_malformed_headers,
                        test_malformed_prelude, test_file_errors);
