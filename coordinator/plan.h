/*
 * plan.h - compiling a model into a plan of shards (the partitioner).
 *
 * This is the only place that knows how to split a model. A plan is a list
 * of stages run in order (pipeline parallel, "by layer"); each stage is a
 * list of shards run in parallel (tensor parallel, "by channel / column /
 * block"), whose partial outputs are fused into the stage's outputs. Every
 * shard is itself a small, valid ONNX ModelProto (subgraph plus its slice of
 * the weights), named by the SHA-256 of its bytes, so workers need only one
 * loader and never receive the same bytes twice.
 *
 * Names: shard inputs and fused stage outputs use the model's own tensor
 * names; a shard's partial outputs that need fusion get unique names
 * ("<name>.part<k>") listed in the stage's fusions.
 *
 * Fusions nest: a stage's fusions are evaluated in list order, and a part
 * of a fusion names either an output of one of the stage's shards or the
 * fused tensor of an EARLIER fusion of the same stage (never a later one,
 * never itself). A block (2-D) split of Y = X.W on an R x C grid uses it:
 * shard k = i*C + j computes X[:, K_i].W[K_i, N_j] ("Y.part<k>"; the bias
 * only in row i = 0), fusion "Y.col<j>" sums the R parts of column j, and
 * Y is the concat of the C columns on Y's last (column) axis. Grids with
 * one row or one column need one fusion (concat, or sum) and no nesting.
 *
 * Data parallelism is decided at dispatch time: a stage whose every input
 * and output has the batch as dim 0 and whose ops are row-independent is
 * marked `batch_splittable`, and the scheduler may cut a request's batch
 * across the replicas of its shards (fuse: concat on axis 0).
 *
 * Invariant (tested for every strategy): running the stages in order, each
 * shard on its inputs, fusing as listed, gives the unsharded outputs within
 * 1e-5 relative error in float32.
 */
#ifndef TS_PLAN_H
#define TS_PLAN_H

#include <stdbool.h>
#include <stddef.h>

#include "graph.h"
#include "tensor.h"

#define TS_FUSE_LIST(X)          \
  X(NONE, "none")                \
  X(CONCAT, "concat")            \
  X(SUM, "sum")                  \
  X(MEAN, "mean")                \
  X(WEIGHTED_MEAN, "weighted_mean") \
  X(VOTE, "vote")

typedef enum {
#define TS_X(name, str) TS_FUSE_##name,
  TS_FUSE_LIST(TS_X)
#undef TS_X
} ts_fuse_kind;

#define TS_STRATEGY_LIST(X) \
  X(DATA, "data")           \
  X(TENSOR, "tensor")       \
  X(PIPELINE, "pipeline")   \
  X(HYBRID, "hybrid")       \
  X(AUTO, "auto")           \
  X(BLOCK, "block")

typedef enum {
#define TS_X(name, str) TS_STRATEGY_##name,
  TS_STRATEGY_LIST(TS_X)
#undef TS_X
} ts_strategy;

/* The type a shard stores and sends the weights of its products in
 * (model key `precision`). FP32 keeps the model's weights; the others store
 * each constant float matrix B of a Gemm or MatMul (of 4 KiB or more; a
 * smaller one stays float) in the small type and
 * widen it with standard ONNX in front of the product, so a shard stays an
 * ONNX file any runtime runs:
 *   FP16, BF16: Cast(W_fp16 | W_bf16, to = float);
 *   INT8: DequantizeLinear(W_int8, scale, zero_point 0, axis = the output
 *         columns' axis), symmetric, one scale per output column
 *         (max |w| / 127), so the model needs opset >= 13.
 * A worker packs such a B in its small type (common/engine, quant.c), so
 * it holds and streams 1/2 or 1/4 of the float bytes. */
#define TS_PRECISION_LIST(X) \
  X(FP32, "fp32")            \
  X(FP16, "fp16")            \
  X(BF16, "bf16")            \
  X(INT8, "int8")

typedef enum {
#define TS_X(name, str) TS_PRECISION_##name,
  TS_PRECISION_LIST(TS_X)
#undef TS_X
} ts_precision;

/* Parse / name; parse returns -1 for unknown strings. */
int ts_precision_parse(const char *s);
const char *ts_precision_name(ts_precision p);
int ts_strategy_parse(const char *s);
const char *ts_strategy_name(ts_strategy s);
int ts_fuse_parse(const char *s);
const char *ts_fuse_name(ts_fuse_kind f);

typedef struct ts_shard {
  char id[65];            /* lowercase hex SHA-256 of bytes */
  char label[128];        /* "model/s0/k1" for logs and status */
  uint8_t *bytes;         /* serialized ONNX ModelProto; owned */
  size_t len;
  size_t weight_bytes;    /* bytes of initializers in this shard */
  double flops;           /* estimate, symbolic dims as 1 */
  char **inputs;          /* tensor names the shard reads; owned */
  int n_inputs;
  char **outputs;         /* tensor names the shard produces; owned */
  int n_outputs;
} ts_shard;

/* How shards' partial outputs become one tensor of the model. */
typedef struct ts_fusion {
  char *name;             /* the fused tensor's name (a model tensor) */
  ts_fuse_kind kind;      /* CONCAT or SUM inside plans */
  int axis;               /* for CONCAT; may be negative (from the end) */
  char **parts;           /* per part, in order: a shard output or an
                             earlier fusion's name (see "Fusions nest") */
  int n_parts;
} ts_fusion;

typedef struct ts_stage {
  ts_shard *shards;
  int n_shards;
  ts_fusion *fusions;
  int n_fusions;
  char **inputs;          /* tensors the stage reads (request or earlier) */
  int n_inputs;
  char **outputs;         /* tensors later stages or the response read */
  int n_outputs;
  bool batch_splittable;
} ts_stage;

typedef struct ts_plan {
  ts_strategy strategy;
  ts_stage *stages;
  int n_stages;
  int replicas;           /* every shard on this many distinct workers */
  size_t weight_bytes;    /* sum over shards */
} ts_plan;

typedef struct ts_plan_opts {
  ts_strategy strategy;
  int stages;             /* pipeline / hybrid: number of stages (>= 1) */
  int shards;             /* tensor / hybrid: ways per split op (>= 1);
                             block without a grid: R*C = shards */
  int grid_rows;          /* block: R ways over the weight's input rows */
  int grid_cols;          /* block: C ways over its output columns; both 0:
                             the near-square grid of ts_plan_grid(shards) */
  int replicas;           /* >= 1 */
  ts_precision precision; /* how products' weights are stored (FP32: as
                             the model has them) */
  /* auto: the workers' resources, to fit a model no single worker holds */
  int n_workers;
  size_t worker_memory_limit; /* smallest limit among workers; 0 = none */
  /* auto: the links to the workers, to weigh candidate plans (the median
   * measured round trip and bytes per second; 0: the defaults below) */
  double link_rtt_s;
  double link_bytes_per_s;
  const char *model_name;     /* for labels */
} ts_plan_opts;

/* The link figures auto assumes where nothing is measured yet: 0.2 ms and
 * 1 Gbit/s. */
#define TS_PLAN_DEFAULT_RTT_S 0.0002
#define TS_PLAN_DEFAULT_BYTES_PER_S 125e6

/* What a plan sends between the coordinator and its workers for one
 * request of batch 1: every shard's inputs and outputs (sized from the
 * model's static shapes, symbolic dims as 1), and one round trip per stage
 * (stages run in sequence). */
typedef struct ts_plan_traffic {
  size_t bytes;
  int hops;
  double seconds; /* hops * rtt_s + bytes / bytes_per_s */
} ts_plan_traffic;

/* Estimates plan's traffic; `model` is the one the plan was built from. */
void ts_plan_traffic_estimate(const ts_plan *plan, const ts_model *model,
                              double rtt_s, double bytes_per_s,
                              ts_plan_traffic *out);

/* The near-square grid of `shards` cells used by block plans without an
 * explicit grid: R*C = shards exactly, R the largest divisor <= sqrt, so
 * C >= R (column splits need no partial sums): 4 -> 2x2, 6 -> 2x3,
 * 2 -> 1x2, 3 -> 1x3. shards < 1 gives 0x0. */
void ts_plan_grid(int shards, int *rows, int *cols);

/* Builds the plan for `model`. TS_EINVAL on impossible options (more stages
 * than nodes, ...), TS_EEXHAUSTED when `auto` cannot fit the model. The plan
 * does not reference the model afterwards. */
int ts_plan_build(const ts_model *model, const ts_plan_opts *opts,
                  ts_plan **out, ts_err *err);
void ts_plan_free(ts_plan *plan);

#endif
