/*
 * cmd_eval.c - `tessera eval`: how well a served model answers a labelled
 * data set, and how closely it agrees with a second model on it.
 *
 * The rows of the --input files (the indices of their leading dim, the same
 * count in every input and in --labels) go to the model in batches of
 * --batch rows (32 by default), and each answer is compared with the same
 * rows of --labels:
 *
 *   integer or boolean labels, one per row: a classification. A row's
 *     predicted class is the judged output's value when that output is an
 *     integer with one value per row (scikit-learn's `label`), else the
 *     index of the largest of its values along the last axis (scores,
 *     logits, probabilities [N, C]; the first on a tie). Gives the accuracy.
 *   float labels: a regression. The judged output holds as many values per
 *     row as the labels; gives the RMSE and the max abs error over all of
 *     them, computed in float64.
 *
 * The judged output is --output NAME, else the model's only output, else
 * (classification) its first integer output of one value per row, else its
 * first float output.
 *
 * With --reference M2 every batch goes to M2 as well, and the document adds
 * the top-1 agreement (classification: the fraction of rows where both
 * predict the same class) and the largest abs difference between any float
 * output of the model and M2's output of the same name and shape, with that
 * output's name.
 */
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "client.h"
#include "npy.h"

#define DEFAULT_EVAL_BATCH 32

/* One model's answer to one batch: the response and its outputs decoded. */
typedef struct answer {
  Inference__ModelInferResponse *resp;
  ts_tensor *outputs; /* resp->n_outputs of them; views of resp or owned */
} answer;

static void answer_free(answer *a) {
  for (size_t i = 0; a->resp && a->outputs && i < a->resp->n_outputs; i++)
    ts_tensor_free(&a->outputs[i]);
  free(a->outputs);
  if (a->resp) protobuf_c_message_free_unpacked(&a->resp->base, NULL);
  memset(a, 0, sizeof *a);
}

/* The output named `name`, or NULL. */
static const ts_tensor *answer_find(const answer *a, const char *name) {
  for (size_t i = 0; i < a->resp->n_outputs; i++)
    if (!strcmp(a->resp->outputs[i]->name, name)) return &a->outputs[i];
  return NULL;
}

/* Sends `batch` to `model` (the --output and --typed of opt); *a holds the
 * answer (answer_free releases). */
static int answer_get(cli *c, const char *model, const tensor_set *batch,
                      answer *a, ts_err *err) {
  options opt = *c->opt;
  uint8_t *req = NULL;
  size_t len = 0;
  memset(a, 0, sizeof *a);
  opt.model = model;
  int rc = cli_encode_infer_request(&opt, batch, &req, &len, err);
  if (!rc)
    rc = cli_call_bytes(c, KSERVE_SERVICE "ModelInfer", req, len,
                        &inference__model_infer_response__descriptor,
                        (ProtobufCMessage **)&a->resp, err);
  free(req);
  if (!rc) {
    a->outputs = calloc(a->resp->n_outputs + 1, sizeof *a->outputs);
    if (!a->outputs) rc = ts_err_set(err, TS_ENOMEM, "out of memory");
  }
  for (size_t i = 0; !rc && i < a->resp->n_outputs; i++)
    rc = cli_decode_output(a->resp, i, &a->outputs[i], err);
  if (rc) {
    if (rc != TS_ENOMEM) ts_err_prefix(err, "model '%s'", model);
    answer_free(a);
  }
  return rc;
}

/* Values per row of t, whose leading dim must be `rows`. */
static int values_per_row(const ts_tensor *t, const char *name, int64_t rows,
                          int64_t *per_row, ts_err *err) {
  char shape[256];
  if (t->rank < 1 || t->dims[0] != rows)
    return ts_err_set(err, TS_EINVAL,
                      "output '%s' has shape %s: not one row per input row "
                      "(%lld in this batch)",
                      name, ts_shape_str(t->dims, t->rank, shape, sizeof shape),
                      (long long)rows);
  *per_row = rows ? ts_tensor_numel(t) / rows : 0;
  return TS_OK;
}

/* Whether an output of `per_row` values per row names one class per row:
 * its value (an integer label) or its argmax (scores along the last axis). */
static bool has_classes(const ts_tensor *t, int64_t per_row) {
  if (!cli_dtype_is_float(t->dtype) && per_row == 1) return true;
  return per_row > 1 && t->dims[t->rank - 1] == per_row;
}

/* The class of row `row` of t (has_classes holds). */
static int64_t row_class(const ts_tensor *t, int64_t per_row, int64_t row) {
  if (per_row == 1) return cli_tensor_int64(t, row);
  int64_t best = 0, base = row * per_row;
  double top = cli_tensor_double(t, base);
  for (int64_t k = 1; k < per_row; k++) {
    double v = cli_tensor_double(t, base + k);
    if (v > top || (isnan(top) && !isnan(v))) {
      top = v;
      best = k;
    }
  }
  return best;
}

/* |a - b|, infinite where exactly one of them is NaN. */
static double abs_difference(double a, double b) {
  if (isnan(a) || isnan(b)) return isnan(a) && isnan(b) ? 0.0 : INFINITY;
  return fabs(a - b);
}

/* What the run has found so far. */
typedef struct eval {
  cli *c;
  const ts_tensor *labels;
  bool classify;       /* integer labels */
  int64_t label_width; /* labels per row */
  char *output;        /* the judged output, chosen on the first batch */
  long correct, agreeing;
  double sum_squares, max_error;
  double max_diff;       /* -1 until a float output was compared */
  char *max_diff_output; /* where max_diff was found */
} eval;

/* Picks the judged output from the first answer (see the top). */
static int eval_choose_output(eval *e, const answer *a, int64_t rows,
                              ts_err *err) {
  const options *opt = e->c->opt;
  const char *name = NULL;
  if (opt->outputs.n)
    name = opt->outputs.items[0];
  else if (a->resp->n_outputs == 1)
    name = a->resp->outputs[0]->name;
  for (size_t i = 0; !name && e->classify && i < a->resp->n_outputs; i++) {
    const ts_tensor *t = &a->outputs[i];
    if (!cli_dtype_is_float(t->dtype) && t->rank >= 1 && t->dims[0] == rows &&
        ts_tensor_numel(t) == rows)
      name = a->resp->outputs[i]->name;
  }
  for (size_t i = 0; !name && i < a->resp->n_outputs; i++)
    if (cli_dtype_is_float(a->outputs[i].dtype)) name = a->resp->outputs[i]->name;
  if (!name)
    return ts_err_set(err, TS_EINVAL,
                      "model '%s' has no %s output to judge; name one with "
                      "--output", opt->model, e->classify ? "label or float" : "float");
  if (!(e->output = strdup(name)))
    return ts_err_set(err, TS_ENOMEM, "out of memory");
  return TS_OK;
}

/* Compares the answer for rows [first, first + rows) with the labels, and
 * with the reference's answer `ref` (NULL without --reference). */
static int eval_batch(eval *e, const answer *a, const answer *ref,
                      int64_t first, int64_t rows, ts_err *err) {
  const char *model = e->c->opt->model;
  const ts_tensor *t = answer_find(a, e->output);
  int64_t per_row;
  if (!t)
    return ts_err_set(err, TS_EINVAL, "model '%s' did not return output '%s'",
                      model, e->output);
  int rc = values_per_row(t, e->output, rows, &per_row, err);
  if (rc) return rc;
  if (e->classify) {
    if (!has_classes(t, per_row))
      return ts_err_set(err, TS_EINVAL,
                        "output '%s' (%lld %s per row) names no class: integer "
                        "labels need an integer label output or scores [N, C]; "
                        "pick one with --output",
                        e->output, (long long)per_row,
                        ts_dtype_kserve_name(t->dtype));
    for (int64_t r = 0; r < rows; r++)
      e->correct += row_class(t, per_row, r) ==
                    cli_tensor_int64(e->labels, first + r);
  } else {
    if (per_row != e->label_width)
      return ts_err_set(err, TS_EINVAL,
                        "output '%s' has %lld values per row where --labels "
                        "has %lld",
                        e->output, (long long)per_row,
                        (long long)e->label_width);
    for (int64_t k = 0; k < rows * per_row; k++) {
      double d = cli_tensor_double(t, k) -
                 cli_tensor_double(e->labels, first * per_row + k);
      e->sum_squares += d * d;
      if (isnan(d) || fabs(d) > e->max_error) e->max_error = fabs(d);
    }
  }
  if (!ref) return TS_OK;
  for (size_t i = 0; i < a->resp->n_outputs; i++) {
    const char *name = a->resp->outputs[i]->name;
    const ts_tensor *x = &a->outputs[i], *y = answer_find(ref, name);
    char shape[256], ref_shape[256];
    if (!y)
      return ts_err_set(err, TS_EINVAL,
                        "reference model '%s' did not return output '%s'",
                        e->c->opt->reference, name);
    if (!ts_tensor_same_shape(x, y))
      return ts_err_set(err, TS_EINVAL,
                        "output '%s' has shape %s from '%s' but %s from "
                        "reference '%s'",
                        name, ts_shape_str(x->dims, x->rank, shape, sizeof shape),
                        model, ts_shape_str(y->dims, y->rank, ref_shape, sizeof ref_shape),
                        e->c->opt->reference);
    if (x == t && e->classify)
      for (int64_t r = 0; r < rows; r++)
        e->agreeing += row_class(x, per_row, r) == row_class(y, per_row, r);
    if (!cli_dtype_is_float(x->dtype)) continue;
    for (int64_t k = 0, n = ts_tensor_numel(x); k < n; k++) {
      double d = abs_difference(cli_tensor_double(x, k), cli_tensor_double(y, k));
      if (d > e->max_diff) {
        e->max_diff = d;
        if (!e->max_diff_output || strcmp(e->max_diff_output, name)) {
          free(e->max_diff_output);
          if (!(e->max_diff_output = strdup(name)))
            return ts_err_set(err, TS_ENOMEM, "out of memory");
        }
      }
    }
  }
  return TS_OK;
}

/* The rows every input and the labels share; refuses files that disagree. */
static int eval_rows(const tensor_set *in, const ts_tensor *labels,
                     const char *labels_file, int64_t *rows, ts_err *err) {
  char shape[256];
  for (int i = 0; i < in->n; i++) {
    const ts_tensor *t = &in->tensors[i];
    if (t->rank < 1 || t->dims[0] < 1 || (i && t->dims[0] != *rows))
      return ts_err_set(err, TS_EINVAL,
                        "input '%s' has shape %s: eval needs one or more rows "
                        "along the first dim, the same in every input",
                        in->names[i],
                        ts_shape_str(t->dims, t->rank, shape, sizeof shape));
    *rows = t->dims[0];
  }
  if (labels->rank < 1 || labels->dims[0] != *rows)
    return ts_err_set(err, TS_EINVAL,
                      "--labels %s has shape %s: not one row per input row "
                      "(%lld)",
                      labels_file,
                      ts_shape_str(labels->dims, labels->rank, shape, sizeof shape),
                      (long long)*rows);
  return TS_OK;
}

/* The labels file, checked: numbers; integer labels one per row. */
static int eval_load_labels(eval *e, const char *file, ts_tensor *labels,
                            ts_err *err) {
  char shape[256];
  int rc = ts_npy_read(file, labels, err);
  if (rc) return rc;
  if (!ts_dtype_is_numeric(labels->dtype))
    return ts_err_set(err, TS_EUNSUPPORTED, "--labels %s: %s labels are not numbers",
                      file, ts_dtype_kserve_name(labels->dtype));
  e->classify = !cli_dtype_is_float(labels->dtype);
  e->label_width = labels->rank >= 1 && labels->dims[0] > 0
                       ? ts_tensor_numel(labels) / labels->dims[0] : 0;
  if (e->classify && e->label_width != 1)
    return ts_err_set(err, TS_EINVAL,
                      "--labels %s has shape %s: integer labels are classes, "
                      "one per row",
                      file, ts_shape_str(labels->dims, labels->rank, shape, sizeof shape));
  return TS_OK;
}

/* The findings as a document (keys in docs/CLI.md). */
static json_t *eval_json(const eval *e, int64_t rows, long batch) {
  const options *opt = e->c->opt;
  json_t *doc = json_object();
  json_object_set_new(doc, "model", json_string(opt->model));
  if (opt->reference) json_object_set_new(doc, "reference", json_string(opt->reference));
  json_object_set_new(doc, "output", json_string(e->output));
  json_object_set_new(doc, "task", json_string(e->classify ? "classification" : "regression"));
  json_object_set_new(doc, "rows", json_integer(rows));
  json_object_set_new(doc, "batch", json_integer(batch));
  if (e->classify) {
    json_object_set_new(doc, "correct", json_integer(e->correct));
    json_object_set_new(doc, "accuracy", json_real((double)e->correct / (double)rows));
  } else {
    double n = (double)rows * (double)e->label_width;
    json_object_set_new(doc, "rmse", cli_real_json(sqrt(e->sum_squares / n)));
    json_object_set_new(doc, "max_abs_error", cli_real_json(e->max_error));
  }
  if (!opt->reference) return doc;
  if (e->classify) {
    json_object_set_new(doc, "agreeing", json_integer(e->agreeing));
    json_object_set_new(doc, "agreement", json_real((double)e->agreeing / (double)rows));
  }
  json_object_set_new(doc, "max_abs_diff",
                      e->max_diff >= 0 ? cli_real_json(e->max_diff) : json_null());
  json_object_set_new(doc, "max_abs_diff_output",
                      e->max_diff_output ? json_string(e->max_diff_output) : json_null());
  return doc;
}

int cmd_eval(cli *c, ts_err *err) {
  const options *opt = c->opt;
  long batch = opt->batch ? opt->batch : DEFAULT_EVAL_BATCH;
  eval e = {.c = c, .max_diff = -1};
  tensor_set in = {0};
  ts_tensor labels = {0};
  ts_tensor *views = NULL;
  int64_t rows = 0;
  int rc = eval_load_labels(&e, opt->labels, &labels, err);
  if (!rc) rc = cli_prepare_inputs(c, &in, err);
  if (!rc) rc = eval_rows(&in, &labels, opt->labels, &rows, err);
  if (!rc && !(views = calloc((size_t)in.n + 1, sizeof *views)))
    rc = ts_err_set(err, TS_ENOMEM, "out of memory");
  e.labels = &labels;
  for (int64_t first = 0; !rc && first < rows; first += batch) {
    int64_t n = rows - first < batch ? rows - first : batch;
    tensor_set part = {in.n, in.names, views};
    answer a = {0}, ref = {0};
    for (int i = 0; !rc && i < in.n; i++) {
      const ts_tensor *t = &in.tensors[i];
      int64_t dims[TS_MAX_RANK];
      memcpy(dims, t->dims, sizeof dims);
      dims[0] = n;
      size_t row_bytes = t->nbytes / (size_t)t->dims[0];
      rc = ts_tensor_view(&views[i], t->dtype, dims, t->rank,
                          (char *)t->data + (size_t)first * row_bytes, err);
    }
    if (!rc) rc = answer_get(c, opt->model, &part, &a, err);
    if (!rc && opt->reference) rc = answer_get(c, opt->reference, &part, &ref, err);
    if (!rc && !e.output) rc = eval_choose_output(&e, &a, n, err);
    if (!rc) rc = eval_batch(&e, &a, opt->reference ? &ref : NULL, first, n, err);
    answer_free(&a);
    answer_free(&ref);
  }
  if (!rc) {
    cli_out out = {opt->format, eval_json(&e, rows, batch)};
    rc = cli_out_print(&out, err);
  }
  free(views);
  free(e.output);
  free(e.max_diff_output);
  cli_tensor_set_free(&in);
  ts_tensor_free(&labels);
  return rc;
}
