/*
 * npy.h - NumPy .npy files <-> ts_tensor.
 *
 * Reads format versions 1.0, 2.0 and 3.0 (the header is a Python dict literal
 * with exactly the keys 'descr', 'fortran_order' and 'shape'); writes 1.0
 * (a header of rank <= TS_MAX_RANK always fits its 16-bit length), with the
 * data aligned to 64 bytes as NumPy does. Only little-endian,
 * C-order arrays of the fixed-size numeric dtypes in one table (npy.c) are
 * supported:
 *   <f2 <f4 <f8 |i1 <i2 <i4 <i8 |u1 <u2 <u4 <u8 |b1
 *
 * Errors: TS_EINVAL for a malformed file (bad magic, broken header, a shape
 * that overflows, data shorter or longer than the shape says); TS_EUNSUPPORTED
 * for a well-formed file Tessera cannot represent (Fortran order, big-endian,
 * object, string, structured or complex dtypes, rank above TS_MAX_RANK,
 * unknown format versions); TS_ENOTFOUND / TS_EIO for a file that cannot be
 * opened / read / written. Every message starts with the file's name.
 */
#ifndef TS_NPY_H
#define TS_NPY_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "tensor.h"

/* Reads the .npy file at path into *out, which owns its data afterwards
 * (release with ts_tensor_free). The data size is checked against the file
 * size before anything is allocated, so a lying header cannot make it
 * allocate more than the file holds. On failure *out is zeroed. */
int ts_npy_read(const char *path, ts_tensor *out, ts_err *err);

/* Writes t to path as a .npy file (created or truncated). t's dtype must be
 * one of the table's; t->data must hold t->nbytes bytes. */
int ts_npy_write(const char *path, const ts_tensor *t, ts_err *err);

/* Parses an in-memory .npy image of len bytes. `name` is used in error
 * messages (e.g. the file or field it came from). *out owns a copy of the
 * data. On failure *out is zeroed. */
int ts_npy_decode(const void *buf, size_t len, const char *name,
                  ts_tensor *out, ts_err *err);

/* Serializes t into a malloc'd .npy image: *out (caller frees) of *out_len
 * bytes. */
int ts_npy_encode(const ts_tensor *t, uint8_t **out, size_t *out_len,
                  ts_err *err);


#endif
