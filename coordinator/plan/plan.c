/*
 * plan.c - the partitioner's entry point: checks the options and runs the
 * strategy (plan.h; internals in plan_int.h).
 */
#include "plan_int.h"

void ts_plan_grid(int shards, int *rows, int *cols) {
  *rows = *cols = 0;
  if (shards < 1) return;
  int r = 1;
  for (int d = 1; (int64_t)d * d <= shards; d++)
    if (shards % d == 0) r = d;
  *rows = r;
  *cols = shards / r;
}

static int check_opts(const ts_model *model, const ts_plan_opts *o,
                      ts_err *err) {
  if (!model || !model->proto || !o)
    return ts_err_set(err, TS_EINVAL, "plan: model and options are required");
  if ((int)o->strategy < 0 || (int)o->strategy > TS_STRATEGY_BLOCK)
    return ts_err_set(err, TS_EINVAL, "plan: unknown strategy %d",
                      (int)o->strategy);
  if (o->replicas < 1)
    return ts_err_set(err, TS_EINVAL, "plan: replicas must be >= 1, got %d",
                      o->replicas);
  bool staged = o->strategy == TS_STRATEGY_PIPELINE ||
                o->strategy == TS_STRATEGY_HYBRID;
  bool sharded = o->strategy == TS_STRATEGY_TENSOR ||
                 o->strategy == TS_STRATEGY_HYBRID;
  if (staged && o->stages < 1)
    return ts_err_set(err, TS_EINVAL, "plan: stages must be >= 1, got %d",
                      o->stages);
  if (sharded && o->shards < 1)
    return ts_err_set(err, TS_EINVAL, "plan: shards must be >= 1, got %d",
                      o->shards);
  if (o->strategy == TS_STRATEGY_BLOCK) {
    bool grid = o->grid_rows || o->grid_cols;
    if (grid && (o->grid_rows < 1 || o->grid_cols < 1))
      return ts_err_set(err, TS_EINVAL,
                        "plan: block grid %dx%d needs both dims >= 1",
                        o->grid_rows, o->grid_cols);
    if (!grid && o->shards < 1)
      return ts_err_set(err, TS_EINVAL, "plan: shards must be >= 1, got %d",
                        o->shards);
  }
  if (o->n_workers < 0)
    return ts_err_set(err, TS_EINVAL, "plan: n_workers must be >= 0, got %d",
                      o->n_workers);
  if ((int)o->precision < 0 || (int)o->precision > TS_PRECISION_INT8)
    return ts_err_set(err, TS_EINVAL, "plan: unknown precision %d",
                      (int)o->precision);
  /* DequantizeLinear's axis and Cast from bfloat16 are opset 13's. */
  if ((o->precision == TS_PRECISION_INT8 ||
       o->precision == TS_PRECISION_BF16) && model->opset < 13)
    return ts_err_set(err, TS_EINVAL,
                      "plan: precision=%s needs opset >= 13 (per-channel "
                      "DequantizeLinear, Cast from bfloat16); the model has "
                      "opset %lld",
                      ts_precision_name(o->precision), (long long)model->opset);
  return TS_OK;
}

int ts_plan_build(const ts_model *model, const ts_plan_opts *opts,
                  ts_plan **out, ts_err *err) {
  *out = NULL;
  int rc = check_opts(model, opts, err);
  if (rc) return rc;
  ctx c;
  rc = plan_ctx_init(&c, model, err);
  if (rc) {
    plan_ctx_free(&c);
    return rc;
  }
  if (c.n_live < 1) {
    plan_ctx_free(&c);
    return ts_err_set(err, TS_EINVAL, "plan: the model computes nothing");
  }
  plan_layout_reset(&c);
  c.precision = opts->precision;
  switch (opts->strategy) {
    case TS_STRATEGY_DATA:
      rc = plan_layout_range(&c, 0, c.n_live, 1);
      break;
    case TS_STRATEGY_TENSOR:
      rc = plan_layout_range(&c, 0, c.n_live, opts->shards);
      break;
    case TS_STRATEGY_PIPELINE:
    case TS_STRATEGY_HYBRID:
      if (opts->stages > c.n_live) {
        plan_ctx_free(&c);
        return ts_err_set(err, TS_EINVAL,
                          "plan: %d stages requested but the model has only "
                          "%d nodes to run",
                          opts->stages, c.n_live);
      }
      rc = plan_layout_pipeline(
          &c, opts->stages,
          opts->strategy == TS_STRATEGY_HYBRID ? opts->shards : 1);
      break;
    case TS_STRATEGY_BLOCK:
      c.grid_rows = opts->grid_rows;
      c.grid_cols = opts->grid_cols;
      if (!c.grid_rows) ts_plan_grid(opts->shards, &c.grid_rows, &c.grid_cols);
      rc = plan_layout_range(&c, 0, c.n_live, 1);
      break;
    case TS_STRATEGY_AUTO:
      rc = plan_auto(&c, opts, out, err);
      plan_ctx_free(&c);
      return rc;
  }
  if (rc) {
    plan_ctx_free(&c);
    return ts_err_set(err, rc, "plan: %s", ts_strerror(rc));
  }
  rc = plan_emit(&c, opts, opts->strategy, opts->replicas, out, err);
  plan_ctx_free(&c);
  return rc;
}
