/*
 * tensors.c - tensors on the wire: --input .npy files into a
 * ModelInferRequest, and a ModelInferResponse's outputs back into tensors.
 *
 * Tensors: inputs come from .npy files and travel as raw_input_contents, or
 * as typed InferTensorContents with --typed. Outputs are decoded from
 * whichever form the server used, checked against their datatype and shape,
 * then printed (format.c) or written to .npy files (cmd_infer.c). Without
 * --input, inputs are generated from the model's metadata (seedable random
 * data of the right datatype and shape, as perf_analyzer makes).
 */
#include <math.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "client.h"
#include "npy.h"

static int load_inputs(const string_list *specs, const char *only_input,
                       tensor_set *s, ts_err *err);

int cli_load_inputs(const string_list *specs, tensor_set *s, ts_err *err) {
  return load_inputs(specs, NULL, s, err);
}

/* Typed contents (InferTensorContents): X(dtype, contents field, C type of
 * the tensor's elements). FP16 and BYTES have no numeric field. */
#define TYPED_LIST(X)               \
  X(FLOAT, fp32_contents, float)    \
  X(DOUBLE, fp64_contents, double)  \
  X(INT8, int_contents, int8_t)     \
  X(INT16, int_contents, int16_t)   \
  X(INT32, int_contents, int32_t)   \
  X(INT64, int64_contents, int64_t) \
  X(UINT8, uint_contents, uint8_t)  \
  X(UINT16, uint_contents, uint16_t) \
  X(UINT32, uint_contents, uint32_t) \
  X(UINT64, uint64_contents, uint64_t) \
  X(BOOL, bool_contents, uint8_t)

/* put: copies t's elements into c's field (malloc'd; typed_free frees).
 * count: how many values c's field holds. get: copies them into t, whose
 * element count the caller has checked against count. */
#define TS_X(dtype, field, ctype)                                           \
  static int typed_put_##dtype(const ts_tensor *t,                          \
                               Inference__InferTensorContents *c) {         \
    size_t n = (size_t)ts_tensor_numel(t);                                  \
    c->field = malloc((n ? n : 1) * sizeof *c->field);                      \
    if (!c->field) return TS_ENOMEM;                                        \
    for (size_t i = 0; i < n; i++)                                          \
      c->field[i] = ((const ctype *)t->data)[i];                            \
    c->n_##field = n;                                                       \
    return TS_OK;                                                           \
  }                                                                         \
  static size_t typed_count_##dtype(const Inference__InferTensorContents *c) { \
    return c->n_##field;                                                    \
  }                                                                         \
  static void typed_get_##dtype(const Inference__InferTensorContents *c,    \
                                ts_tensor *t) {                             \
    for (size_t i = 0; i < c->n_##field; i++)                               \
      ((ctype *)t->data)[i] = (ctype)c->field[i];                           \
  }
TYPED_LIST(TS_X)
#undef TS_X

static const struct typed_codec {
  ts_dtype dtype;
  const char *field;
  int (*put)(const ts_tensor *t, Inference__InferTensorContents *c);
  size_t (*count)(const Inference__InferTensorContents *c);
  void (*get)(const Inference__InferTensorContents *c, ts_tensor *t);
} typed_codecs[] = {
#define TS_X(dtype, field, ctype) \
  {TS_DTYPE_##dtype, #field, typed_put_##dtype, typed_count_##dtype, typed_get_##dtype},
    TYPED_LIST(TS_X)
#undef TS_X
};

static const struct typed_codec *typed_codec_find(ts_dtype dtype) {
  for (size_t i = 0; i < sizeof typed_codecs / sizeof typed_codecs[0]; i++)
    if (typed_codecs[i].dtype == dtype) return &typed_codecs[i];
  return NULL;
}

/* Frees what typed_put_* allocated. */
static void typed_free(Inference__InferTensorContents *c) {
  free(c->bool_contents);
  free(c->int_contents);
  free(c->int64_contents);
  free(c->uint_contents);
  free(c->uint64_contents);
  free(c->fp32_contents);
  free(c->fp64_contents);
}

void cli_tensor_set_free(tensor_set *s) {
  for (int i = 0; i < s->n; i++) {
    free(s->names[i]);
    ts_tensor_free(&s->tensors[i]);
  }
  free(s->names);
  free(s->tensors);
  memset(s, 0, sizeof *s);
}

/* Splits "NAME=FILE" (or "NAME" when file_optional): *name is malloc'd
 * (caller frees), *file points into spec or is NULL. */
static int split_spec(const char *spec, bool file_optional, char **name,
                      const char **file, ts_err *err) {
  const char *eq = strchr(spec, '=');
  *name = NULL;
  *file = eq ? eq + 1 : NULL;
  size_t n = eq ? (size_t)(eq - spec) : strlen(spec);
  if (n == 0 || (eq && !eq[1]) || (!eq && !file_optional))
    return ts_err_set(err, TS_EINVAL, "'%s' is not of the form NAME=FILE%s",
                      spec, file_optional ? " or NAME" : "");
  *name = strndup(spec, n);
  if (!*name) return ts_err_set(err, TS_ENOMEM, "out of memory");
  return TS_OK;
}

/* Loads every --input NAME=FILE.npy into *s (cli_tensor_set_free releases);
 * a bare FILE.npy is input `only_input` (NULL: refused). */
static int load_inputs(const string_list *specs, const char *only_input,
                       tensor_set *s, ts_err *err) {
  memset(s, 0, sizeof *s);
  s->names = calloc((size_t)specs->n + 1, sizeof *s->names);
  s->tensors = calloc((size_t)specs->n + 1, sizeof *s->tensors);
  if (!s->names || !s->tensors) {
    cli_tensor_set_free(s);
    return ts_err_set(err, TS_ENOMEM, "out of memory");
  }
  for (int i = 0; i < specs->n; i++) {
    const char *file = specs->items[i];
    int rc = TS_OK;
    if (only_input && !strchr(file, '=')) {
      if (!(s->names[i] = strdup(only_input)))
        rc = ts_err_set(err, TS_ENOMEM, "out of memory");
    } else {
      rc = split_spec(specs->items[i], false, &s->names[i], &file, err);
    }
    if (!rc) rc = ts_npy_read(file, &s->tensors[i], err);
    s->n = i + 1;
    if (rc) {
      if (rc == TS_EINVAL || rc == TS_EUNSUPPORTED)
        ts_err_prefix(err, "input '%s'", s->names[i] ? s->names[i] : "?");
      cli_tensor_set_free(s);
      return rc;
    }
  }
  return TS_OK;
}

/* The inputs as raw_input_contents (or typed contents when `typed`), and
 * one requested output per --output spec. */
int cli_encode_infer_request(const options *opt, const tensor_set *in,
                             uint8_t **out, size_t *out_len, ts_err *err) {
  size_t n = (size_t)in->n, m = (size_t)opt->outputs.n;
  Inference__ModelInferRequest req = INFERENCE__MODEL_INFER_REQUEST__INIT;
  Inference__ModelInferRequest__InferInputTensor *inputs =
      calloc(n + 1, sizeof *inputs);
  Inference__ModelInferRequest__InferInputTensor **input_ptrs =
      calloc(n + 1, sizeof *input_ptrs);
  Inference__InferTensorContents *contents = calloc(n + 1, sizeof *contents);
  ProtobufCBinaryData *raw = calloc(n + 1, sizeof *raw);
  Inference__ModelInferRequest__InferRequestedOutputTensor *outputs =
      calloc(m + 1, sizeof *outputs);
  Inference__ModelInferRequest__InferRequestedOutputTensor **output_ptrs =
      calloc(m + 1, sizeof *output_ptrs);
  char **output_names = calloc(m + 1, sizeof *output_names);
  int rc = TS_OK;
  *out = NULL;
  if (!inputs || !input_ptrs || !contents || !raw || !outputs ||
      !output_ptrs || !output_names) {
    rc = ts_err_set(err, TS_ENOMEM, "out of memory");
    goto done;
  }
  for (size_t i = 0; i < n; i++) {
    const ts_tensor *t = &in->tensors[i];
    Inference__ModelInferRequest__InferInputTensor *x = &inputs[i];
    inference__model_infer_request__infer_input_tensor__init(x);
    inference__infer_tensor_contents__init(&contents[i]);
    x->name = in->names[i];
    x->datatype = (char *)ts_dtype_kserve_name(t->dtype);
    x->n_shape = (size_t)t->rank;
    x->shape = (int64_t *)t->dims;
    input_ptrs[i] = x;
    if (!opt->typed) {
      raw[i].len = t->nbytes;
      raw[i].data = t->data;
      continue;
    }
    const struct typed_codec *codec = typed_codec_find(t->dtype);
    if (!codec) {
      rc = ts_err_set(err, TS_EUNSUPPORTED,
                      "input '%s': %s has no typed contents field in KServe "
                      "v2; send it without --typed",
                      x->name, x->datatype);
      goto done;
    }
    if (codec->put(t, &contents[i])) {
      rc = ts_err_set(err, TS_ENOMEM, "input '%s': out of memory", x->name);
      goto done;
    }
    x->contents = &contents[i];
  }
  for (size_t j = 0; j < m; j++) {
    const char *file;
    rc = split_spec(opt->outputs.items[j], true, &output_names[j], &file, err);
    if (rc) goto done;
    inference__model_infer_request__infer_requested_output_tensor__init(
        &outputs[j]);
    outputs[j].name = output_names[j];
    output_ptrs[j] = &outputs[j];
  }
  req.model_name = (char *)opt->model;
  req.n_inputs = n;
  req.inputs = input_ptrs;
  req.n_outputs = m;
  req.outputs = output_ptrs;
  if (!opt->typed) {
    req.n_raw_input_contents = n;
    req.raw_input_contents = raw;
  }
  *out_len = inference__model_infer_request__get_packed_size(&req);
  *out = malloc(*out_len ? *out_len : 1);
  if (!*out) {
    rc = ts_err_set(err, TS_ENOMEM, "cannot allocate %zu bytes", *out_len);
    goto done;
  }
  inference__model_infer_request__pack(&req, *out);
done:
  for (size_t i = 0; contents && i < n; i++) typed_free(&contents[i]);
  for (size_t j = 0; output_names && j < m; j++) free(output_names[j]);
  free(inputs);
  free(input_ptrs);
  free(contents);
  free(raw);
  free(outputs);
  free(output_ptrs);
  free(output_names);
  return rc;
}

/* Output i of resp as a tensor: a view of resp's raw bytes, or an owned
 * copy of its typed contents. Checks that raw_output_contents is empty or
 * one per output, and the output's datatype, shape and sizes. */
int cli_decode_output(const Inference__ModelInferResponse *resp, size_t i,
                      ts_tensor *t, ts_err *err) {
  const Inference__ModelInferResponse__InferOutputTensor *o = resp->outputs[i];
  ts_dtype dtype = ts_dtype_from_kserve(o->datatype);
  char shape[256];
  memset(t, 0, sizeof *t);
  if (resp->n_raw_output_contents &&
      resp->n_raw_output_contents != resp->n_outputs)
    return ts_err_set(err, TS_EIO,
                      "response has %zu raw_output_contents for %zu outputs",
                      resp->n_raw_output_contents, resp->n_outputs);
  if (!ts_dtype_is_numeric(dtype))
    return ts_err_set(err, TS_EUNSUPPORTED,
                      "output '%s': datatype '%s' is not supported", o->name,
                      o->datatype);
  if (o->n_shape > TS_MAX_RANK)
    return ts_err_set(err, TS_EIO, "output '%s': rank %zu is above %d",
                      o->name, o->n_shape, TS_MAX_RANK);
  int rank = (int)o->n_shape;
  ts_shape_str(o->shape, rank, shape, sizeof shape);
  int64_t nbytes = ts_shape_nbytes(dtype, o->shape, rank);
  if (nbytes < 0)
    return ts_err_set(err, TS_EIO, "output '%s': shape %s is invalid",
                      o->name, shape);
  if (resp->n_raw_output_contents) {
    const ProtobufCBinaryData *raw = &resp->raw_output_contents[i];
    if ((int64_t)raw->len != nbytes)
      return ts_err_set(err, TS_EIO,
                        "output '%s': %zu raw bytes where %s %s needs %lld",
                        o->name, raw->len, o->datatype, shape,
                        (long long)nbytes);
    return ts_tensor_view(t, dtype, o->shape, rank, raw->data, err);
  }
  const struct typed_codec *codec = typed_codec_find(dtype);
  if (!o->contents || !codec)
    return ts_err_set(err, TS_EIO, "output '%s' has no contents", o->name);
  int64_t numel = ts_shape_numel(o->shape, rank);
  if ((int64_t)codec->count(o->contents) != numel)
    return ts_err_set(err, TS_EIO,
                      "output '%s': %zu values in %s where shape %s needs %lld",
                      o->name, codec->count(o->contents), codec->field, shape,
                      (long long)numel);
  int rc = ts_tensor_alloc(t, dtype, o->shape, rank, err);
  if (rc) return rc;
  codec->get(o->contents, t);
  return TS_OK;
}

/* ---- elements --------------------------------------------------------- */

/* X(dtype, C type) of the types whose elements are plain C numbers. */
#define ELEMENT_LIST(X) \
  X(FLOAT, float)       \
  X(DOUBLE, double)     \
  X(INT8, int8_t)       \
  X(INT16, int16_t)     \
  X(INT32, int32_t)     \
  X(INT64, int64_t)     \
  X(UINT8, uint8_t)     \
  X(UINT16, uint16_t)   \
  X(UINT32, uint32_t)   \
  X(UINT64, uint64_t)   \
  X(BOOL, uint8_t)

/* IEEE 754 binary16 to double. */
static double half_to_double(uint16_t h) {
  int exp = (h >> 10) & 0x1f, frac = h & 0x3ff;
  double v;
  if (exp == 0x1f)
    v = frac ? NAN : INFINITY;
  else if (exp)
    v = ldexp(1.0 + frac / 1024.0, exp - 15);
  else
    v = ldexp(frac / 1024.0, -14);
  return (h >> 15) ? -v : v;
}

/* A double of magnitude below 2 to binary16, truncating the fraction
 * (enough for generated data in [-1, 1)). */
static uint16_t half_from_small(double v) {
  uint16_t sign = v < 0 ? 0x8000 : 0;
  double a = fabs(v);
  if (a < ldexp(1.0, -14)) return (uint16_t)(sign | (uint16_t)(a * 1024 * 16384));
  int e;
  double m = frexp(a, &e); /* a = m * 2^e, m in [0.5, 1) */
  return (uint16_t)(sign | (uint16_t)((e - 1 + 15) << 10) |
                    (uint16_t)((m * 2 - 1) * 1024));
}

double cli_tensor_double(const ts_tensor *t, int64_t i) {
  switch (t->dtype) {
#define TS_X(dtype, ctype) \
  case TS_DTYPE_##dtype: return (double)((const ctype *)t->data)[i];
    ELEMENT_LIST(TS_X)
#undef TS_X
    case TS_DTYPE_FLOAT16: return half_to_double(((const uint16_t *)t->data)[i]);
    default: return NAN;
  }
}

int64_t cli_tensor_int64(const ts_tensor *t, int64_t i) {
  /* Only 64-bit integers lose digits on the way through a double. */
  if (t->dtype == TS_DTYPE_INT64) return ((const int64_t *)t->data)[i];
  if (t->dtype == TS_DTYPE_UINT64) return (int64_t)((const uint64_t *)t->data)[i];
  double d = cli_tensor_double(t, i);
  return isnan(d) ? 0 : (int64_t)d;
}

bool cli_dtype_is_float(ts_dtype dtype) {
  return dtype == TS_DTYPE_FLOAT || dtype == TS_DTYPE_DOUBLE ||
         dtype == TS_DTYPE_FLOAT16;
}

/* ---- generated inputs ---------------------------------------------------- */

/* splitmix64: a small, seedable generator; the same seed, the same data. */
static uint64_t next_random(uint64_t *state) {
  uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

#define GENERATED_INT_RANGE 16 /* integers in [0, 16): valid token ids, indices */

static void fill_random(ts_tensor *t, uint64_t *state) {
  int64_t n = ts_tensor_numel(t);
  for (int64_t i = 0; i < n; i++) {
    uint64_t r = next_random(state);
    double u = (double)(r >> 11) * 0x1.0p-53 * 2 - 1; /* [-1, 1) */
    long long k = (long long)(r % GENERATED_INT_RANGE);
    switch (t->dtype) {
      case TS_DTYPE_FLOAT: ((float *)t->data)[i] = (float)u; break;
      case TS_DTYPE_DOUBLE: ((double *)t->data)[i] = u; break;
      case TS_DTYPE_FLOAT16: ((uint16_t *)t->data)[i] = half_from_small(u); break;
      case TS_DTYPE_BOOL: ((uint8_t *)t->data)[i] = (uint8_t)(r & 1); break;
#define TS_X(dtype, ctype) \
  case TS_DTYPE_##dtype: ((ctype *)t->data)[i] = (ctype)k; break;
      TS_X(INT8, int8_t) TS_X(INT16, int16_t) TS_X(INT32, int32_t)
      TS_X(INT64, int64_t) TS_X(UINT8, uint8_t) TS_X(UINT16, uint16_t)
      TS_X(UINT32, uint32_t) TS_X(UINT64, uint64_t)
#undef TS_X
      default: break;
    }
  }
}

int cli_generate_inputs(const Inference__ModelMetadataResponse *md,
                        long batch, uint64_t seed, tensor_set *s,
                        ts_err *err) {
  uint64_t state = seed;
  memset(s, 0, sizeof *s);
  s->names = calloc(md->n_inputs + 1, sizeof *s->names);
  s->tensors = calloc(md->n_inputs + 1, sizeof *s->tensors);
  if (!s->names || !s->tensors) {
    cli_tensor_set_free(s);
    return ts_err_set(err, TS_ENOMEM, "out of memory");
  }
  for (size_t i = 0; i < md->n_inputs; i++) {
    const Inference__ModelMetadataResponse__TensorMetadata *m = md->inputs[i];
    ts_dtype dtype = ts_dtype_from_kserve(m->datatype);
    int64_t dims[TS_MAX_RANK];
    int rc = TS_OK;
    s->n = (int)i + 1;
    if (!ts_dtype_is_numeric(dtype))
      rc = ts_err_set(err, TS_EUNSUPPORTED,
                      "input '%s': cannot generate %s data; give --input",
                      m->name, m->datatype);
    else if (m->n_shape > TS_MAX_RANK)
      rc = ts_err_set(err, TS_EUNSUPPORTED, "input '%s': rank %zu is above %d",
                      m->name, m->n_shape, TS_MAX_RANK);
    for (size_t d = 0; !rc && d < m->n_shape; d++)
      dims[d] = m->shape[d] >= 0 ? m->shape[d] : d == 0 ? batch : 1;
    if (!rc && !(s->names[i] = strdup(m->name)))
      rc = ts_err_set(err, TS_ENOMEM, "out of memory");
    if (!rc) rc = ts_tensor_alloc(&s->tensors[i], dtype, dims, (int)m->n_shape, err);
    if (rc) {
      cli_tensor_set_free(s);
      return rc;
    }
    fill_random(&s->tensors[i], &state);
  }
  return TS_OK;
}

int cli_prepare_inputs(cli *c, tensor_set *s, ts_err *err) {
  const options *opt = c->opt;
  bool bare = false;
  for (int i = 0; i < opt->inputs.n; i++) bare = bare || !strchr(opt->inputs.items[i], '=');
  if (opt->inputs.n && !bare) return cli_load_inputs(&opt->inputs, s, err);
  Inference__ModelMetadataResponse *md;
  int rc = cli_fetch_model_metadata(c, opt->model, &md, err);
  if (rc) return rc;
  if (!opt->inputs.n)
    rc = cli_generate_inputs(md, opt->batch ? opt->batch : 1, (uint64_t)opt->seed, s,
                             err);
  else if (md->n_inputs != 1)
    rc = ts_err_set(err, TS_EINVAL,
                    "model '%s' has %zu inputs: name each, --input NAME=FILE.npy",
                    opt->model, md->n_inputs);
  else
    rc = load_inputs(&opt->inputs, md->inputs[0]->name, s, err);
  protobuf_c_message_free_unpacked(&md->base, NULL);
  return rc;
}

int cli_prepare_infer_request(cli *c, uint8_t **out, size_t *out_len,
                              ts_err *err) {
  tensor_set in;
  int rc = cli_prepare_inputs(c, &in, err);
  if (rc) return rc;
  rc = cli_encode_infer_request(c->opt, &in, out, out_len, err);
  cli_tensor_set_free(&in);
  return rc;
}
