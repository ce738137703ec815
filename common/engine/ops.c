/*
 * ops.c - the operator table, attribute access, TensorProto decoding and
 * numpy broadcasting (see ops.h).
 *
 * The table is built from the one op table (TS_OP_TABLE, op_list.h): each
 * line's kernel view X(domain, op_type, symbol) declares `extern const ts_op
 * ts_op_<symbol>` and adds one row. The lists are the single source of truth;
 * nothing here names an op. Lookup is a linear scan: it runs once per node at
 * load time, never on the request path.
 *
 * Invariants:
 *  - "" and "ai.onnx" are the same (default) domain everywhere;
 *  - string attributes are NUL-terminated by the loader (graph.c) right after
 *    parsing, so ts_attr_string can hand out the proto's bytes directly;
 *  - every function that reads a TensorProto validates sizes before copying:
 *    the bytes come from a file or the network.
 */
#include "ops.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "engine_int.h"
#include "list_cnn.h"
#include "list_core.h"
#include "list_elementwise.h"
#include "list_ml.h"
#include "list_quant.h"
#include "list_transformer.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "Tessera assumes a little-endian host (ONNX and KServe bytes are LE)"
#endif

#define DECLARE_OP(domain, op_type, symbol) extern const ts_op ts_op_##symbol;
TS_OP_TABLE(TS_OP_KERNEL, DECLARE_OP)
#undef DECLARE_OP

typedef struct op_entry {
  const char *domain;
  const char *op_type;
  const ts_op *op;
} op_entry;

#define OP_ROW(domain, op_type, symbol) {domain, op_type, &ts_op_##symbol},
static const op_entry op_table[] = {
    TS_OP_TABLE(TS_OP_KERNEL, OP_ROW){NULL, NULL, NULL},
};
#undef OP_ROW

/* Maps "ai.onnx" (and NULL) to "", the canonical default domain. */
static const char *canonical_domain(const char *domain) {
  if (!domain || strcmp(domain, "ai.onnx") == 0) return "";
  return domain;
}

const ts_op *ts_op_find(const char *domain, const char *op_type) {
  if (!op_type) return NULL;
  const char *d = canonical_domain(domain);
  for (const op_entry *e = op_table; e->op; e++)
    if (strcmp(e->op_type, op_type) == 0 &&
        strcmp(canonical_domain(e->domain), d) == 0)
      return e->op;
  return NULL;
}

/* op_list.h (test hook). */
int ts_ops_selfcheck(ts_err *err) {
  int n = 0;
  for (const op_entry *e = op_table; e->op; e++, n++) {
    const ts_op *op = e->op;
    const char *d = canonical_domain(e->domain);
    if (!op->name || strcmp(op->name, e->op_type) != 0 ||
        strcmp(canonical_domain(op->domain), d) != 0)
      return ts_err_set(err, TS_EINTERNAL,
                        "op table row %s (domain '%s') points at op %s "
                        "(domain '%s')",
                        e->op_type, d, op->name ? op->name : "(null)",
                        op->domain ? op->domain : "(null)");
    if (!op->infer || !op->run)
      return ts_err_set(err, TS_EINTERNAL, "op %s lacks infer or run",
                        e->op_type);
    if (op->min_inputs < 0 || op->min_inputs > op->max_inputs ||
        op->min_outputs < 0 || op->min_outputs > op->max_outputs ||
        op->max_outputs < 1)
      return ts_err_set(err, TS_EINTERNAL, "op %s has bad arities",
                        e->op_type);
    for (const op_entry *f = op_table; f != e; f++)
      if (strcmp(f->op_type, e->op_type) == 0 &&
          strcmp(canonical_domain(f->domain), d) == 0)
        return ts_err_set(err, TS_EINTERNAL,
                          "op %s (domain '%s') is listed twice", e->op_type, d);
  }
  return n;
}

/* op_list.h (test hook). */
const ts_op *ts_op_at(int i) {
  int n = (int)(sizeof op_table / sizeof op_table[0]) - 1;
  return i >= 0 && i < n ? op_table[i].op : NULL;
}

/* ---- attributes ---------------------------------------------------------- */

const Onnx__AttributeProto *ts_attr_find(const ts_node *n, const char *name) {
  if (!n || !n->proto || !name) return NULL;
  for (size_t i = 0; i < n->proto->n_attribute; i++) {
    const Onnx__AttributeProto *a = n->proto->attribute[i];
    if (a && a->name && strcmp(a->name, name) == 0) return a;
  }
  return NULL;
}

/* True when attribute a holds a value of `type`. Old exporters (IR < 2) leave
 * `type` unset; then the presence of the field decides. */
static bool attr_is(const Onnx__AttributeProto *a,
                    Onnx__AttributeProto__AttributeType type) {
  if (a->has_type && a->type != ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__UNDEFINED)
    return a->type == type;
  switch (type) {
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT: return a->has_i;
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT: return a->has_f;
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRING: return a->has_s;
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS: return a->n_ints > 0;
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOATS: return a->n_floats > 0;
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__TENSOR: return a->t != NULL;
    default: return false;
  }
}

int64_t ts_attr_int(const ts_node *n, const char *name, int64_t dflt) {
  const Onnx__AttributeProto *a = ts_attr_find(n, name);
  if (!a || !attr_is(a, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT))
    return dflt;
  return a->i;
}

float ts_attr_float(const ts_node *n, const char *name, float dflt) {
  const Onnx__AttributeProto *a = ts_attr_find(n, name);
  if (!a || !attr_is(a, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT))
    return dflt;
  return a->f;
}

const char *ts_attr_string(const ts_node *n, const char *name,
                           const char *dflt) {
  const Onnx__AttributeProto *a = ts_attr_find(n, name);
  if (!a || !attr_is(a, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRING))
    return dflt;
  /* The loader NUL-terminated s.data (one byte past s.len). */
  return a->s.data ? (const char *)a->s.data : "";
}

/* Shared body of ts_attr_ints / ts_attr_floats: finds `name`, checks its type
 * and reports absence and type mismatches in err. */
static int attr_array(const ts_node *n, const char *name,
                      Onnx__AttributeProto__AttributeType type,
                      const char *type_name, const Onnx__AttributeProto **out,
                      ts_err *err) {
  char desc[160];
  *out = ts_attr_find(n, name);
  if (!*out)
    return ts_err_set(err, TS_ENOTFOUND, "%s: attribute '%s' is missing",
                      ts_node_desc(n, desc, sizeof desc), name);
  if (!attr_is(*out, type))
    return ts_err_set(err, TS_EINVAL, "%s: attribute '%s' must be %s",
                      ts_node_desc(n, desc, sizeof desc), name, type_name);
  return TS_OK;
}

int ts_attr_ints(const ts_node *n, const char *name, const int64_t **vals,
                 size_t *count, ts_err *err) {
  const Onnx__AttributeProto *a;
  *vals = NULL;
  *count = 0;
  int rc = attr_array(n, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS,
                      "a list of ints", &a, err);
  if (rc) return rc;
  *vals = a->ints;
  *count = a->n_ints;
  return TS_OK;
}

int ts_attr_floats(const ts_node *n, const char *name, const float **vals,
                   size_t *count, ts_err *err) {
  const Onnx__AttributeProto *a;
  *vals = NULL;
  *count = 0;
  int rc = attr_array(n, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOATS,
                      "a list of floats", &a, err);
  if (rc) return rc;
  *vals = a->floats;
  *count = a->n_floats;
  return TS_OK;
}

int ts_node_check_attrs(const ts_node *n, const char *const *known,
                        ts_err *err) {
  if (!n->proto) return TS_OK;
  for (size_t i = 0; i < n->proto->n_attribute; i++) {
    const Onnx__AttributeProto *a = n->proto->attribute[i];
    const char *name = a && a->name ? a->name : "";
    bool ok = false;
    for (const char *const *k = known; k && *k && !ok; k++)
      ok = strcmp(*k, name) == 0;
    if (!ok) {
      char desc[160];
      return ts_err_set(err, TS_EUNSUPPORTED,
                        "%s: attribute '%s' is not supported by op %s",
                        ts_node_desc(n, desc, sizeof desc), name,
                        n->op_type ? n->op_type : "?");
    }
    if (a->ref_attr_name && a->ref_attr_name[0]) {
      char desc[160];
      return ts_err_set(err, TS_EUNSUPPORTED,
                        "%s: attribute '%s' refers to a function attribute",
                        ts_node_desc(n, desc, sizeof desc), name);
    }
  }
  return TS_OK;
}

const char *ts_node_desc(const ts_node *n, char *buf, size_t size) {
  if (!n) {
    snprintf(buf, size, "node ?");
    return buf;
  }
  const char *op = n->op_type ? n->op_type : "?";
  if (n->name && n->name[0]) {
    snprintf(buf, size, "node '%s' (%s)", n->name, op);
  } else if (n->proto && n->proto->n_output > 0 && n->proto->output[0]) {
    snprintf(buf, size, "node producing '%s' (%s)", n->proto->output[0], op);
  } else {
    snprintf(buf, size, "node (%s)", op);
  }
  return buf;
}

/* ---- TensorProto --------------------------------------------------------- */

/* Which typed field of TensorProto carries each data type, and how one of its
 * elements is narrowed to the tensor's element. */
typedef enum {
  FIELD_NONE,
  FIELD_FLOAT,
  FIELD_INT32,
  FIELD_INT64,
  FIELD_DOUBLE,
  FIELD_UINT64,
} typed_field;

static typed_field field_of(ts_dtype t) {
  switch (t) {
    case TS_DTYPE_FLOAT: return FIELD_FLOAT;
    case TS_DTYPE_UINT8:
    case TS_DTYPE_INT8:
    case TS_DTYPE_UINT16:
    case TS_DTYPE_INT16:
    case TS_DTYPE_INT32:
    case TS_DTYPE_BOOL:
    case TS_DTYPE_FLOAT16: return FIELD_INT32;
    case TS_DTYPE_INT64: return FIELD_INT64;
    case TS_DTYPE_DOUBLE: return FIELD_DOUBLE;
    case TS_DTYPE_UINT32:
    case TS_DTYPE_UINT64: return FIELD_UINT64;
    default: return FIELD_NONE;
  }
}

/* Copies n int32_data elements into dst, narrowing to `esize` bytes
 * (little-endian truncation, as ONNX stores small types widened). */
static void narrow_int32(void *dst, const int32_t *src, size_t n, size_t esize) {
  uint8_t *d = dst;
  for (size_t i = 0; i < n; i++) {
    uint32_t v = (uint32_t)src[i];
    if (esize == 4) {
      memcpy(d + i * 4, &v, 4);
    } else if (esize == 2) {
      uint16_t w = (uint16_t)v;
      memcpy(d + i * 2, &w, 2);
    } else {
      d[i] = (uint8_t)v;
    }
  }
}

/* Shared body of ts_tensor_from_onnx and ts_tensor_borrow_onnx: validates
 * tp, then copies its data into an owned tensor or, with borrow and
 * raw_data (the layout the tensor needs as is), points at tp's bytes. */
static int tensor_from_onnx(const Onnx__TensorProto *tp, ts_tensor *out,
                            bool borrow, ts_err *err) {
  memset(out, 0, sizeof *out);
  const char *name = tp && tp->name ? tp->name : "";
  if (!tp) return ts_err_set(err, TS_EINVAL, "tensor is missing");
  if ((tp->has_data_location &&
       tp->data_location == ONNX__TENSOR_PROTO__DATA_LOCATION__EXTERNAL) ||
      tp->n_external_data > 0)
    return ts_err_set(err, TS_EUNSUPPORTED,
                      "tensor '%s': external data is not supported (embed "
                      "the weights in the model file)",
                      name);
  if (tp->segment)
    return ts_err_set(err, TS_EUNSUPPORTED,
                      "tensor '%s': segmented tensors are not supported", name);
  ts_dtype dtype = tp->has_data_type ? (ts_dtype)tp->data_type
                                     : TS_DTYPE_UNDEFINED;
  if (!ts_dtype_is_numeric(dtype))
    return ts_err_set(err, TS_EUNSUPPORTED,
                      "tensor '%s': data type %d (%s) is not supported", name,
                      (int)dtype, ts_dtype_name(dtype));
  if (tp->n_dims > TS_MAX_RANK)
    return ts_err_set(err, TS_EUNSUPPORTED,
                      "tensor '%s': rank %zu is above the maximum of %d", name,
                      tp->n_dims, TS_MAX_RANK);
  for (size_t i = 0; i < tp->n_dims; i++)
    if (tp->dims[i] < 0)
      return ts_err_set(err, TS_EINVAL, "tensor '%s': dim %zu is negative (%lld)",
                        name, i, (long long)tp->dims[i]);
  int rank = (int)tp->n_dims;
  int64_t numel = ts_shape_numel(tp->dims, rank);
  int64_t nbytes = ts_shape_nbytes(dtype, tp->dims, rank);
  if (numel < 0 || nbytes < 0)
    return ts_err_set(err, TS_EINVAL, "tensor '%s': shape overflows", name);

  typed_field field = field_of(dtype);
  size_t typed_count[] = {
      [FIELD_NONE] = 0,
      [FIELD_FLOAT] = tp->n_float_data,
      [FIELD_INT32] = tp->n_int32_data,
      [FIELD_INT64] = tp->n_int64_data,
      [FIELD_DOUBLE] = tp->n_double_data,
      [FIELD_UINT64] = tp->n_uint64_data,
  };
  /* A typed field that does not belong to this data type means the producer
   * and this reader disagree on the layout: reject rather than guess. */
  for (int f = FIELD_FLOAT; f <= FIELD_UINT64; f++)
    if (f != (int)field && typed_count[f] > 0)
      return ts_err_set(err, TS_EINVAL,
                        "tensor '%s': holds data in a field that does not "
                        "match its data type %s",
                        name, ts_dtype_name(dtype));
  bool has_raw = tp->has_raw_data;
  if (has_raw && typed_count[field] > 0)
    return ts_err_set(err, TS_EINVAL,
                      "tensor '%s': has both raw_data and typed data", name);
  if (has_raw && tp->raw_data.len != (size_t)nbytes)
    return ts_err_set(err, TS_EINVAL,
                      "tensor '%s': raw_data holds %zu bytes but shape and "
                      "type need %lld",
                      name, tp->raw_data.len, (long long)nbytes);
  if (!has_raw && typed_count[field] != (size_t)numel)
    return ts_err_set(err, TS_EINVAL,
                      "tensor '%s': holds %zu elements but its shape needs "
                      "%lld",
                      name, typed_count[field], (long long)numel);

  if (borrow && has_raw &&
      ((uintptr_t)tp->raw_data.data % ts_dtype_size(dtype)) == 0) {
    int rc = ts_tensor_view(out, dtype, tp->dims, rank, tp->raw_data.data, err);
    return rc ? ts_err_prefix(err, "tensor '%s'", name) : TS_OK;
  }
  int rc = ts_tensor_alloc(out, dtype, tp->dims, rank, err);
  if (rc) return ts_err_prefix(err, "tensor '%s'", name);
  size_t esize = ts_dtype_size(dtype);
  size_t n = (size_t)numel;
  if (has_raw) {
    if (nbytes) memcpy(out->data, tp->raw_data.data, (size_t)nbytes);
    return TS_OK;
  }
  if (n == 0) return TS_OK; /* typed arrays are NULL when empty */
  switch (field) {
    case FIELD_FLOAT: memcpy(out->data, tp->float_data, n * 4); break;
    case FIELD_INT64: memcpy(out->data, tp->int64_data, n * 8); break;
    case FIELD_DOUBLE: memcpy(out->data, tp->double_data, n * 8); break;
    case FIELD_INT32: narrow_int32(out->data, tp->int32_data, n, esize); break;
    case FIELD_UINT64:
      if (esize == 8) {
        memcpy(out->data, tp->uint64_data, n * 8);
      } else {
        uint32_t *d = out->data;
        for (size_t i = 0; i < n; i++) d[i] = (uint32_t)tp->uint64_data[i];
      }
      break;
    case FIELD_NONE: break;
  }
  return TS_OK;
}

int ts_tensor_from_onnx(const Onnx__TensorProto *tp, ts_tensor *out,
                        ts_err *err) {
  return tensor_from_onnx(tp, out, false, err);
}

/* engine_int.h */
int ts_tensor_borrow_onnx(const Onnx__TensorProto *tp, ts_tensor *out,
                          ts_err *err) {
  return tensor_from_onnx(tp, out, true, err);
}

/* ---- broadcasting -------------------------------------------------------- */

int ts_broadcast_shape(const ts_tensor *a, const ts_tensor *b, int64_t *dims,
                       int *rank, ts_err *err) {
  int r = a->rank > b->rank ? a->rank : b->rank;
  if (r > TS_MAX_RANK)
    return ts_err_set(err, TS_EINVAL, "broadcast rank %d is above %d", r,
                      TS_MAX_RANK);
  int64_t tmp[TS_MAX_RANK];
  for (int i = 0; i < r; i++) {
    int ia = i - (r - a->rank), ib = i - (r - b->rank);
    int64_t da = ia >= 0 ? a->dims[ia] : 1;
    int64_t db = ib >= 0 ? b->dims[ib] : 1;
    if (da == db || db == 1) {
      tmp[i] = da;
    } else if (da == 1) {
      tmp[i] = db;
    } else {
      char sa[128], sb[128];
      return ts_err_set(err, TS_EINVAL,
                        "shapes %s and %s do not broadcast: dim %d of the "
                        "result would need %lld == %lld",
                        ts_shape_str(a->dims, a->rank, sa, sizeof sa),
                        ts_shape_str(b->dims, b->rank, sb, sizeof sb), i,
                        (long long)da, (long long)db);
    }
  }
  memcpy(dims, tmp, (size_t)r * sizeof tmp[0]);
  *rank = r;
  return TS_OK;
}
