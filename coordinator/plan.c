/*
 * plan.c - the partitioner: compiles a loaded model into stages of shards
 * (see plan.h for the data model and the invariant).
 *
 * Building a plan has two phases:
 *
 *  1. Layout. The live nodes (those whose outputs are needed and not folded
 *     to constants) are assigned to layout stages in topological order. A
 *     layout stage is either "whole" (ways == 1: its nodes run unchanged on
 *     one shard) or "split" (ways >= 2: every shard runs every node of the
 *     stage on its slice of one dimension of size `dim`, along `axis`).
 *     Split stages are groups grown from one column-split op (Gemm, MatMul
 *     with a constant 2-D weight, Conv with constant weights and group 1):
 *       - the op itself (role COL) computes a slice of its output columns /
 *         channels (fuse: concat);
 *       - element-wise ops (role ELEM) whose non-constant inputs are all
 *         split tensors of the group run on the slices; their constant
 *         operands are sliced where they vary along the split axis;
 *       - Gemm / MatMul / Conv consumers of a split tensor (role ROW) take
 *         the matching rows / input channels of their weights and produce a
 *         partial sum (fuse: sum) - the Megatron pairing, one fusion per
 *         pair. The bias of a ROW op is added by shard 0 only.
 *     A split op whose output has one column but whose input has several
 *     features splits by rows on its own (role ROW_SLICE): each shard slices
 *     its features out of the full input with an inserted Slice node.
 *     A group reads only its first op's input, so emitting the whole group
 *     at that op's topological position keeps the stage order valid; every
 *     other node joins the current whole stage.
 *     Block stages (strategy block, an R x C grid) hold one Gemm, MatMul
 *     or Conv (role BLOCK) and nothing else: shard k = i*C + j slices
 *     features K_i of its input (an inserted Slice, when R > 1) and holds
 *     the weight block [K_i, N_j] (cut along two axes), the bias of N_j in
 *     row 0 only; its output is VK_BLOCK, fused by nested fusions (plan.h).
 *     The grid is clamped per op to its weight's dims (R <= features,
 *     C <= columns); an op that cannot split runs in a whole stage.
 *
 *  2. Emission. Each shard of each stage becomes a serialized ONNX
 *     ModelProto: node copies with renamed inputs/outputs, the initializers
 *     its nodes read (sliced for split stages; folded constants included),
 *     graph inputs = the non-constant tensors it reads and does not produce,
 *     graph outputs = what later stages or the response read (or the
 *     partial outputs "<name>.part<k>" of a split stage). Types and shapes
 *     come from the IR; unknown dims become unique dim_param names.
 *
 * Invariants:
 *  - every stage reads only request inputs and tensors of earlier stages;
 *  - within a split stage all shards read the same inputs (model names) and
 *    produce parts in the order of the stage's fusions;
 *  - uneven splits: shard k of a dim of size C with W ways gets
 *    [k*C/W, (k+1)*C/W) (floor), W = min(requested ways, C), so no part is
 *    empty;
 *  - the plan owns copies of everything; the model is not referenced after
 *    ts_plan_build returns.
 *
 * Names the partitioner makes (refused with TS_EUNSUPPORTED if the model
 * already uses one): "<t>.part<k>" for shard k's slice or partial sum of
 * tensor t, "<t>.col<j>" for column j's sum of a block split, "<t>.rows<k>"
 * for a ROW_SLICE or block input slice (and its Slice
 * parameters "<t>.rows<k>.starts|ends|axes"), "<w>.slice<axis>_<a>_<b>" for
 * a sliced constant, "<b>.zero<k>" for Gemm's zero C before opset 11.
 * Symbolic dims are named "<t>:d<i>", one name per tensor and dim.
 *
 * auto: weight bytes decide. If the largest shard of the data plan (the
 * whole model) fits worker_memory_limit (or there is no limit), the plan is
 * data with one replica per worker (or opts->replicas when > 1). Otherwise
 * the fewest tensor ways 2..n_workers (64 without a worker count) whose
 * every shard fits, cutting whole stages greedily into pipeline pieces
 * where they alone do not fit (strategy hybrid then); pipeline pieces only
 * when no op splits. 1-D splits come first: for the same number of shards
 * they hold the same weight bytes with one fusion and R times less partial
 * output to send back. Only when no 1-D split fits does auto try block
 * grids (strategy block; R >= 2, at most n_workers cells, fewest cells
 * first): they fit where 1-D splits cannot when a weight has fewer output
 * columns than there are workers (a column split stops at the columns),
 * or when a Megatron pair's two weights together exceed the limit on one
 * shard but each alone, cut R x C, does not. TS_EEXHAUSTED when one
 * unsplittable node exceeds the limit, nothing fits, or all shards together
 * exceed n_workers * limit. Activation memory is not modelled.
 *
 * Refused (TS_EUNSUPPORTED): nodes with subgraph attributes (implicit
 * outer-scope inputs), graph outputs that no node computes (a constant or
 * a graph input passed through), constants of string type, and tensors that
 * cross a shard boundary with a dtype inference could not tell.
 *
 * Data parallelism (batch_splittable) is a conservative proof: every
 * non-constant tensor a stage reads or writes has a symbolic dim 0, and
 * every node passes its op's row rule (table op_rules): row-wise ops
 * (element-wise with constants that do not vary along dim 0, Gemm/MatMul
 * with constant weights, Conv, pools, normalizations over axes != 0,
 * Softmax on axis != 0, Flatten with axis >= 1, Reshape whose constant shape
 * keeps dim 0 (0, or -1 with static rest of equal size), Transpose with
 * perm[0] == 0, Concat/Split/Slice/Squeeze/Unsqueeze/Reduce* away from
 * axis 0, Gather of an embedding table). Anything else (Shape, attention's
 * dynamic reshapes, ...) makes the stage not batch-splittable.
 */
#include "plan.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hash.h"
#include "ops.h"

/* ---- small utilities ---------------------------------------------------- */

/* Grows *arr (elements of esz bytes) to hold at least `need`. */
static int grow(void *arrp, int *cap, int need, size_t esz) {
  void **arr = arrp;
  if (need <= *cap) return TS_OK;
  int ncap = *cap ? *cap * 2 : 8;
  while (ncap < need) ncap *= 2;
  void *p = realloc(*arr, (size_t)ncap * esz);
  if (!p) return TS_ENOMEM;
  *arr = p;
  *cap = ncap;
  return TS_OK;
}

/* An arena for one shard's temporary protobuf structures: every block is
 * calloc'd and freed together once the shard is packed. */
typedef struct arena {
  void **blocks;
  int n, cap;
} arena;

static void *arena_alloc(arena *a, size_t size) {
  if (grow(&a->blocks, &a->cap, a->n + 1, sizeof *a->blocks)) return NULL;
  void *p = calloc(1, size ? size : 1);
  if (p) a->blocks[a->n++] = p;
  return p;
}

static char *arena_printf(arena *a, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static char *arena_printf(arena *a, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  if (n < 0) return NULL;
  char *s = arena_alloc(a, (size_t)n + 1);
  if (!s) return NULL;
  va_start(ap, fmt);
  vsnprintf(s, (size_t)n + 1, fmt, ap);
  va_end(ap);
  return s;
}

static void arena_free(arena *a) {
  for (int i = 0; i < a->n; i++) free(a->blocks[i]);
  free(a->blocks);
  memset(a, 0, sizeof *a);
}

static char *xstrdup(const char *s) {
  size_t n = strlen(s) + 1;
  char *d = malloc(n);
  if (d) memcpy(d, s, n);
  return d;
}

/* Appends a copy of s to a malloc'd string list. */
static int names_push(char ***list, int *n, int *cap, const char *s) {
  if (grow(list, cap, *n + 1, sizeof **list)) return TS_ENOMEM;
  char *d = xstrdup(s);
  if (!d) return TS_ENOMEM;
  (*list)[(*n)++] = d;
  return TS_OK;
}

static void names_free(char **list, int n) {
  for (int i = 0; i < n; i++) free(list[i]);
  free(list);
}

/* Start of part k of a dim of size c split `ways` ways (floor). */
static int64_t part_start(int64_t c, int ways, int k) {
  return (int64_t)(((__int128)c * k) / ways);
}

/* ---- op tables ---------------------------------------------------------- */

/* How an op behaves inside a split group.
 *  ELEM: element-wise; runs on slices along any axis, constant operands
 *        sliced where they vary along it.
 *  CHANNEL: per-channel (pools, BatchNormalization, ...); runs on channel
 *        slices (axis 1); inputs after the first are [C] parameters.
 *  NONE: cannot run on a slice. */
typedef enum { SPLIT_NONE, SPLIT_ELEM, SPLIT_CHANNEL } split_class;

struct ctx;
/* Row rule: true when the node never mixes rows (dim 0) of its tensors. */
typedef bool (*row_rule)(const struct ctx *c, const ts_node *n);

static bool row_any(const struct ctx *c, const ts_node *n);
static bool row_bcast(const struct ctx *c, const ts_node *n);
static bool row_axis(const struct ctx *c, const ts_node *n);
static bool row_gemm(const struct ctx *c, const ts_node *n);
static bool row_matmul(const struct ctx *c, const ts_node *n);
static bool row_reshape(const struct ctx *c, const ts_node *n);
static bool row_transpose(const struct ctx *c, const ts_node *n);
static bool row_concat(const struct ctx *c, const ts_node *n);
static bool row_gather(const struct ctx *c, const ts_node *n);
static bool row_axes(const struct ctx *c, const ts_node *n);

/* X(op_type, split class, row rule, default of attribute "axis") */
#define OP_RULES(X)                                        \
  X("Relu", SPLIT_ELEM, row_bcast, 0)                      \
  X("Tanh", SPLIT_ELEM, row_bcast, 0)                      \
  X("Sigmoid", SPLIT_ELEM, row_bcast, 0)                   \
  X("Erf", SPLIT_ELEM, row_bcast, 0)                       \
  X("Exp", SPLIT_ELEM, row_bcast, 0)                       \
  X("Log", SPLIT_ELEM, row_bcast, 0)                       \
  X("Abs", SPLIT_ELEM, row_bcast, 0)                       \
  X("Neg", SPLIT_ELEM, row_bcast, 0)                       \
  X("Sqrt", SPLIT_ELEM, row_bcast, 0)                      \
  X("Reciprocal", SPLIT_ELEM, row_bcast, 0)                \
  X("Floor", SPLIT_ELEM, row_bcast, 0)                     \
  X("Ceil", SPLIT_ELEM, row_bcast, 0)                      \
  X("Round", SPLIT_ELEM, row_bcast, 0)                     \
  X("Sign", SPLIT_ELEM, row_bcast, 0)                      \
  X("Sin", SPLIT_ELEM, row_bcast, 0)                       \
  X("Cos", SPLIT_ELEM, row_bcast, 0)                       \
  X("Not", SPLIT_ELEM, row_bcast, 0)                       \
  X("LeakyRelu", SPLIT_ELEM, row_bcast, 0)                 \
  X("Elu", SPLIT_ELEM, row_bcast, 0)                       \
  X("Selu", SPLIT_ELEM, row_bcast, 0)                      \
  X("Celu", SPLIT_ELEM, row_bcast, 0)                      \
  X("Softplus", SPLIT_ELEM, row_bcast, 0)                  \
  X("Softsign", SPLIT_ELEM, row_bcast, 0)                  \
  X("HardSigmoid", SPLIT_ELEM, row_bcast, 0)               \
  X("HardSwish", SPLIT_ELEM, row_bcast, 0)                 \
  X("Mish", SPLIT_ELEM, row_bcast, 0)                      \
  X("Gelu", SPLIT_ELEM, row_bcast, 0)                      \
  X("ThresholdedRelu", SPLIT_ELEM, row_bcast, 0)           \
  X("PRelu", SPLIT_ELEM, row_bcast, 0)                     \
  X("Clip", SPLIT_ELEM, row_bcast, 0)                      \
  X("Cast", SPLIT_ELEM, row_bcast, 0)                      \
  X("Identity", SPLIT_ELEM, row_bcast, 0)                  \
  X("Dropout", SPLIT_ELEM, row_bcast, 0)                   \
  X("Add", SPLIT_ELEM, row_bcast, 0)                       \
  X("Sub", SPLIT_ELEM, row_bcast, 0)                       \
  X("Mul", SPLIT_ELEM, row_bcast, 0)                       \
  X("Div", SPLIT_ELEM, row_bcast, 0)                       \
  X("Pow", SPLIT_ELEM, row_bcast, 0)                       \
  X("Max", SPLIT_ELEM, row_bcast, 0)                       \
  X("Min", SPLIT_ELEM, row_bcast, 0)                       \
  X("Sum", SPLIT_ELEM, row_bcast, 0)                       \
  X("Where", SPLIT_ELEM, row_bcast, 0)                     \
  X("Equal", SPLIT_ELEM, row_bcast, 0)                     \
  X("Less", SPLIT_ELEM, row_bcast, 0)                      \
  X("Greater", SPLIT_ELEM, row_bcast, 0)                   \
  X("LessOrEqual", SPLIT_ELEM, row_bcast, 0)               \
  X("GreaterOrEqual", SPLIT_ELEM, row_bcast, 0)            \
  X("And", SPLIT_ELEM, row_bcast, 0)                       \
  X("Or", SPLIT_ELEM, row_bcast, 0)                        \
  X("Xor", SPLIT_ELEM, row_bcast, 0)                       \
  X("BatchNormalization", SPLIT_CHANNEL, row_any, 0)       \
  X("InstanceNormalization", SPLIT_CHANNEL, row_any, 0)    \
  X("MaxPool", SPLIT_CHANNEL, row_any, 0)                  \
  X("AveragePool", SPLIT_CHANNEL, row_any, 0)              \
  X("GlobalAveragePool", SPLIT_CHANNEL, row_any, 0)        \
  X("GlobalMaxPool", SPLIT_CHANNEL, row_any, 0)            \
  X("Conv", SPLIT_NONE, row_any, 0)                        \
  X("LRN", SPLIT_NONE, row_any, 0)                         \
  X("Gemm", SPLIT_NONE, row_gemm, 0)                       \
  X("MatMul", SPLIT_NONE, row_matmul, 0)                   \
  X("Softmax", SPLIT_NONE, row_axis, -1)                   \
  X("LogSoftmax", SPLIT_NONE, row_axis, -1)                \
  X("Hardmax", SPLIT_NONE, row_axis, -1)                   \
  X("LayerNormalization", SPLIT_NONE, row_axis, -1)        \
  X("Flatten", SPLIT_NONE, row_axis, 1)                    \
  X("Split", SPLIT_NONE, row_axis, 0)                      \
  X("Concat", SPLIT_NONE, row_concat, 0)                   \
  X("Reshape", SPLIT_NONE, row_reshape, 0)                 \
  X("Transpose", SPLIT_NONE, row_transpose, 0)             \
  X("Gather", SPLIT_NONE, row_gather, 0)                   \
  X("Squeeze", SPLIT_NONE, row_axes, 0)                    \
  X("Unsqueeze", SPLIT_NONE, row_axes, 0)                  \
  X("Slice", SPLIT_NONE, row_axes, 0)                      \
  X("ReduceMean", SPLIT_NONE, row_axes, 0)                 \
  X("ReduceSum", SPLIT_NONE, row_axes, 0)                  \
  X("ReduceMax", SPLIT_NONE, row_axes, 0)                  \
  X("ReduceMin", SPLIT_NONE, row_axes, 0)                  \
  X("ReduceProd", SPLIT_NONE, row_axes, 0)                 \
  X("ReduceL2", SPLIT_NONE, row_axes, 0)

typedef struct op_rule {
  const char *op_type;
  split_class split;
  row_rule row;
  int default_axis;
} op_rule;

static const op_rule op_rules[] = {
#define TS_X(op, split, row, axis) {op, split, row, axis},
    OP_RULES(TS_X)
#undef TS_X
};

static bool default_domain(const ts_node *n) {
  return !n->domain || !n->domain[0] || strcmp(n->domain, "ai.onnx") == 0;
}

/* The rule of a default-domain op; NULL for unknown ops (never split, never
 * row-wise). */
static const op_rule *rule_find(const ts_node *n) {
  if (!default_domain(n)) return NULL;
  for (size_t i = 0; i < sizeof op_rules / sizeof op_rules[0]; i++)
    if (strcmp(op_rules[i].op_type, n->op_type) == 0) return &op_rules[i];
  return NULL;
}

/* The ops that split their weights. Input 1 is the constant weight; the
 * bias (if any) is input `bias`. `weight_axis(n, row)` is the weight axis
 * holding output columns (row = false) or input features (row = true);
 * `in_axis(n, rank)` is the axis of input 0 holding the features (for
 * ROW_SLICE); `out_axis` is the axis of the output holding the columns
 * (the concat axis; -1: last). */
typedef struct split_op {
  const char *op_type;
  bool (*usable)(const struct ctx *c, const ts_node *n, bool row);
  int (*weight_axis)(const ts_node *n, bool row);
  int (*in_axis)(const ts_node *n, int rank);
  int out_axis;
  int bias;
} split_op;

static bool gemm_usable(const struct ctx *c, const ts_node *n, bool row);
static bool matmul_usable(const struct ctx *c, const ts_node *n, bool row);
static bool conv_usable(const struct ctx *c, const ts_node *n, bool row);

static int gemm_weight_axis(const ts_node *n, bool row) {
  bool tb = ts_attr_int(n, "transB", 0) != 0;
  return row ? (tb ? 1 : 0) : (tb ? 0 : 1);
}
static int matmul_weight_axis(const ts_node *n, bool row) {
  (void)n;
  return row ? 0 : 1;
}
static int conv_weight_axis(const ts_node *n, bool row) {
  (void)n;
  return row ? 1 : 0;
}
static int gemm_in_axis(const ts_node *n, int rank) {
  (void)rank;
  return ts_attr_int(n, "transA", 0) ? 0 : 1;
}
static int matmul_in_axis(const ts_node *n, int rank) {
  (void)n;
  return rank - 1;
}
static int conv_in_axis(const ts_node *n, int rank) {
  (void)n, (void)rank;
  return 1;
}

static const split_op split_ops[] = {
    {"Gemm", gemm_usable, gemm_weight_axis, gemm_in_axis, -1, 2},
    {"MatMul", matmul_usable, matmul_weight_axis, matmul_in_axis, -1, -1},
    {"Conv", conv_usable, conv_weight_axis, conv_in_axis, 1, 2},
};

static const split_op *split_op_find(const ts_node *n) {
  if (!default_domain(n)) return NULL;
  for (size_t i = 0; i < sizeof split_ops / sizeof split_ops[0]; i++)
    if (strcmp(split_ops[i].op_type, n->op_type) == 0) return &split_ops[i];
  return NULL;
}

/* ---- the planner's context ---------------------------------------------- */

typedef enum {
  ROLE_WHOLE,
  ROLE_COL,
  ROLE_ELEM,
  ROLE_ROW,
  ROLE_ROW_SLICE,
  ROLE_BLOCK
} role;
/* VK_BLOCK: shard k holds a partial sum of a column block (block stages). */
typedef enum { VK_NONE, VK_SPLIT, VK_PARTIAL, VK_BLOCK } value_kind;

typedef struct lstage {
  int *nodes;
  int n_nodes, cap;
  int ways;    /* 1: whole; rows * (column ways) */
  int axis;    /* split tensors' axis: -1 (last) or 1 (channels) */
  int64_t dim; /* size of the split dim (a block's output columns) */
  int rows;    /* block stages: R ways over kdim; 1 otherwise */
  int64_t kdim; /* block stages: the weight's input features */
} lstage;

/* Ways of a stage along its split dim (a block's C). */
static int split_ways(const lstage *st) { return st->ways / st->rows; }

/* Shard k's range [*start, *end) of the split dim: shard k of a 1-D split,
 * column j = k % C of a block grid. */
static void split_range(const lstage *st, int k, int64_t *start,
                        int64_t *end) {
  int ways = split_ways(st), j = k % ways;
  *start = part_start(st->dim, ways, j);
  *end = part_start(st->dim, ways, j + 1);
}

/* Shard k's range of input features it reads: a ROW_SLICE stage's split
 * dim, or row i = k / C of a block grid. */
static void feature_range(const lstage *st, role r, int k, int64_t *start,
                          int64_t *end) {
  if (r != ROLE_BLOCK) {
    split_range(st, k, start, end);
    return;
  }
  int i = k / split_ways(st);
  *start = part_start(st->kdim, st->rows, i);
  *end = part_start(st->kdim, st->rows, i + 1);
}

/* Share of the node's work (and of its weight) shard k does. */
static double shard_share(const lstage *st, int k) {
  int64_t a, b;
  if (st->ways < 2) return 1.0;
  split_range(st, k, &a, &b);
  double share = (double)(b - a) / (double)st->dim;
  if (st->rows > 1) {
    feature_range(st, ROLE_BLOCK, k, &a, &b);
    share *= (double)(b - a) / (double)st->kdim;
  }
  return share;
}

typedef struct ctx {
  const ts_model *m;
  const ts_graph *g;
  bool has_slice;       /* the executor has Slice: ROW_SLICE possible */
  int n_live;
  int *live;            /* node indices, topological */
  int *pos;             /* node -> position in live[], -1 if not live */
  int *cons_off, *cons; /* consumers per value (live nodes), CSR */
  double *node_bytes;   /* distinct constant bytes a node reads */
  /* layout */
  lstage *st;
  int n_st, cap_st;
  int grid_rows, grid_cols; /* block strategy: the grid; 0 otherwise */
  int *node_stage;   /* node -> layout stage, -1 */
  uint8_t *node_role;
  int *value_stage;  /* value -> stage where it is split/partial, -1 */
  uint8_t *value_kind;
} ctx;

static const ts_value *val(const ctx *c, int v) { return &c->g->values[v]; }
static bool is_const(const ctx *c, int v) {
  return v >= 0 && c->g->values[v].constant != NULL;
}
static const ts_tensor *cst(const ctx *c, int v) {
  return c->g->values[v].constant;
}
static int in_value(const ts_node *n, int j) {
  return j < n->n_inputs ? n->inputs[j] : -1;
}

/* Rejects nodes whose attributes hold subgraphs: they may read outer-scope
 * tensors implicitly, which a cut cannot see. */
static int check_no_subgraph(const ts_node *n, ts_err *err) {
  if (!n->proto) return TS_OK;
  for (size_t i = 0; i < n->proto->n_attribute; i++) {
    const Onnx__AttributeProto *a = n->proto->attribute[i];
    if (a && (a->g || a->n_graphs)) {
      char d[160];
      return ts_err_set(err, TS_EUNSUPPORTED,
                        "%s: attribute '%s' holds a subgraph; models with "
                        "control flow cannot be partitioned",
                        ts_node_desc(n, d, sizeof d), a->name ? a->name : "");
    }
  }
  return TS_OK;
}

/* Liveness, positions, consumer lists and per-node constant bytes. */
static int ctx_init(ctx *c, const ts_model *m, ts_err *err) {
  memset(c, 0, sizeof *c);
  c->m = m;
  c->g = &m->graph;
  const ts_graph *g = c->g;
  int nv = g->n_values, nn = g->n_nodes;
  bool *needed = calloc((size_t)nv + 1, sizeof *needed);
  c->live = calloc((size_t)nn + 1, sizeof *c->live);
  c->pos = malloc(((size_t)nn + 1) * sizeof *c->pos);
  c->cons_off = calloc((size_t)nv + 1, sizeof *c->cons_off);
  c->node_bytes = calloc((size_t)nn + 1, sizeof *c->node_bytes);
  c->node_stage = malloc(((size_t)nn + 1) * sizeof *c->node_stage);
  c->node_role = calloc((size_t)nn + 1, 1);
  c->value_stage = malloc(((size_t)nv + 1) * sizeof *c->value_stage);
  c->value_kind = calloc((size_t)nv + 1, 1);
  if (!needed || !c->live || !c->pos || !c->cons_off || !c->node_bytes ||
      !c->node_stage || !c->node_role || !c->value_stage || !c->value_kind) {
    free(needed);
    return ts_err_set(err, TS_ENOMEM, "plan: out of memory");
  }
  c->has_slice = ts_op_find("", "Slice") != NULL;

  for (int i = 0; i < g->n_outputs; i++) {
    int v = g->outputs[i];
    if (v < 0 || v >= nv) continue;
    if (g->values[v].producer < 0) {
      free(needed);
      return ts_err_set(err, TS_EUNSUPPORTED,
                        "graph output '%s' is %s, not computed by a node; "
                        "such models cannot be partitioned",
                        g->values[v].name,
                        g->values[v].constant ? "a constant" : "a graph input");
    }
    needed[v] = true;
  }
  /* Backwards: a node is live when it computes a needed, non-constant
   * value; its non-constant inputs become needed. */
  bool *is_live = calloc((size_t)nn + 1, sizeof *is_live);
  if (!is_live) {
    free(needed);
    return ts_err_set(err, TS_ENOMEM, "plan: out of memory");
  }
  for (int i = nn - 1; i >= 0; i--) {
    const ts_node *n = &g->nodes[i];
    bool live = false;
    for (int j = 0; j < n->n_outputs; j++) {
      int v = n->outputs[j];
      if (v >= 0 && needed[v] && !is_const(c, v)) live = true;
    }
    if (!live) continue;
    is_live[i] = true;
    for (int j = 0; j < n->n_inputs; j++) {
      int v = n->inputs[j];
      if (v >= 0 && !is_const(c, v)) needed[v] = true;
    }
  }
  free(needed);
  int rc = TS_OK;
  for (int i = 0; i < nn; i++) {
    c->pos[i] = -1;
    if (!is_live[i]) continue;
    rc = check_no_subgraph(&g->nodes[i], err);
    if (rc) break;
    c->pos[i] = c->n_live;
    c->live[c->n_live++] = i;
  }
  free(is_live);
  if (rc) return rc;

  /* Consumer lists (CSR over live nodes, each node once per value). */
  for (int p = 0; p < c->n_live; p++) {
    const ts_node *n = &g->nodes[c->live[p]];
    for (int j = 0; j < n->n_inputs; j++) {
      int v = n->inputs[j];
      bool dup = false;
      for (int q = 0; q < j; q++) dup |= n->inputs[q] == v;
      if (v >= 0 && !dup) c->cons_off[v + 1]++;
    }
  }
  for (int v = 0; v < nv; v++) c->cons_off[v + 1] += c->cons_off[v];
  c->cons = malloc(((size_t)c->cons_off[nv] + 1) * sizeof *c->cons);
  int *fill = calloc((size_t)nv + 1, sizeof *fill);
  if (!c->cons || !fill) {
    free(fill);
    return ts_err_set(err, TS_ENOMEM, "plan: out of memory");
  }
  for (int p = 0; p < c->n_live; p++) {
    const ts_node *n = &g->nodes[c->live[p]];
    double bytes = 0;
    for (int j = 0; j < n->n_inputs; j++) {
      int v = n->inputs[j];
      bool dup = false;
      for (int q = 0; q < j; q++) dup |= n->inputs[q] == v;
      if (v < 0 || dup) continue;
      c->cons[c->cons_off[v] + fill[v]++] = c->live[p];
      if (is_const(c, v)) bytes += (double)cst(c, v)->nbytes;
    }
    c->node_bytes[c->live[p]] = bytes;
  }
  free(fill);
  return TS_OK;
}

static void layout_reset(ctx *c) {
  for (int i = 0; i < c->n_st; i++) free(c->st[i].nodes);
  c->n_st = 0;
  for (int i = 0; i < c->g->n_nodes; i++) {
    c->node_stage[i] = -1;
    c->node_role[i] = ROLE_WHOLE;
  }
  for (int v = 0; v < c->g->n_values; v++) {
    c->value_stage[v] = -1;
    c->value_kind[v] = VK_NONE;
  }
}

static void ctx_free(ctx *c) {
  if (c->node_stage) layout_reset(c);
  free(c->st);
  free(c->live);
  free(c->pos);
  free(c->cons_off);
  free(c->cons);
  free(c->node_bytes);
  free(c->node_stage);
  free(c->node_role);
  free(c->value_stage);
  free(c->value_kind);
  memset(c, 0, sizeof *c);
}

static int stage_new(ctx *c, int ways, int axis, int64_t dim) {
  if (grow(&c->st, &c->cap_st, c->n_st + 1, sizeof *c->st)) return -1;
  lstage *s = &c->st[c->n_st];
  memset(s, 0, sizeof *s);
  s->ways = ways;
  s->axis = axis;
  s->dim = dim;
  s->rows = 1;
  return c->n_st++;
}

static int stage_add(ctx *c, int s, int node, role r) {
  lstage *st = &c->st[s];
  if (grow(&st->nodes, &st->cap, st->n_nodes + 1, sizeof *st->nodes))
    return TS_ENOMEM;
  st->nodes[st->n_nodes++] = node;
  c->node_stage[node] = s;
  c->node_role[node] = (uint8_t)r;
  return TS_OK;
}

/* ---- splitting rules ---------------------------------------------------- */

/* True when output j >= 1 of n is absent or unused (only output 0 may be
 * read by anything). */
static bool single_output(const ctx *c, const ts_node *n) {
  if (n->n_outputs < 1 || n->outputs[0] < 0) return false;
  for (int j = 1; j < n->n_outputs; j++) {
    int v = n->outputs[j];
    if (v >= 0 && (c->cons_off[v + 1] > c->cons_off[v] ||
                   c->g->values[v].is_graph_output))
      return false;
  }
  return true;
}

/* Shared preconditions of the weight-splitting ops: input 0 non-constant,
 * weight constant of rank >= min_rank with a known element size, bias
 * absent or constant, and one output. */
static bool weights_usable(const ctx *c, const ts_node *n, int min_rank,
                           int bias) {
  int x = in_value(n, 0), w = in_value(n, 1);
  if (x < 0 || is_const(c, x) || !is_const(c, w)) return false;
  if (cst(c, w)->rank < min_rank || ts_dtype_size(cst(c, w)->dtype) == 0)
    return false;
  int b = bias >= 0 ? in_value(n, bias) : -1;
  if (b >= 0 && !is_const(c, b)) return false;
  return single_output(c, n);
}

static bool gemm_usable(const ctx *c, const ts_node *n, bool row) {
  (void)row;
  return weights_usable(c, n, 2, 2) && cst(c, in_value(n, 1))->rank == 2;
}

static bool matmul_usable(const ctx *c, const ts_node *n, bool row) {
  (void)row;
  return weights_usable(c, n, 2, -1) && cst(c, in_value(n, 1))->rank == 2 &&
         val(c, in_value(n, 0))->rank >= 1;
}

static bool conv_usable(const ctx *c, const ts_node *n, bool row) {
  (void)row;
  return weights_usable(c, n, 3, 2) && ts_attr_int(n, "group", 1) == 1;
}

/* How constant input j of node n (in a group split along `axis` of size
 * dim, split tensors of rank r) is sliced: sets *sl_axis to the constant's
 * axis to slice, or -1 to keep it whole. False when the constant varies
 * along the split axis in a way slices cannot follow. */
static bool elem_const_axis(const ctx *c, int v, int axis, int r, int64_t dim,
                            int *sl_axis) {
  const ts_tensor *t = cst(c, v);
  *sl_axis = -1;
  int a;
  if (axis < 0) {
    a = t->rank - 1;
  } else {
    if (t->rank > r) return false;
    a = axis - (r - t->rank);
  }
  if (a < 0) return true;
  if (t->dims[a] == 1) return true;
  if (t->dims[a] != dim || ts_dtype_size(t->dtype) == 0) return false;
  *sl_axis = a;
  return true;
}

/* True when node n can join split stage s as an element-wise (or
 * per-channel) op: all its non-constant inputs are split tensors of s of
 * one known rank, and its constants can be sliced to match. */
static bool elem_joins(const ctx *c, const ts_node *n, int s) {
  const op_rule *r = rule_find(n);
  const lstage *st = &c->st[s];
  if (!r || r->split == SPLIT_NONE || !single_output(c, n)) return false;
  if (r->split == SPLIT_CHANNEL) {
    int x = in_value(n, 0);
    if (st->axis != 1 || x < 0 || c->value_stage[x] != s ||
        c->value_kind[x] != VK_SPLIT)
      return false;
    for (int j = 1; j < n->n_inputs; j++) {
      int v = n->inputs[j];
      if (v < 0) continue;
      if (!is_const(c, v) || cst(c, v)->rank != 1 ||
          cst(c, v)->dims[0] != st->dim ||
          ts_dtype_size(cst(c, v)->dtype) == 0)
        return false;
    }
    return true;
  }
  int rank = -2;
  for (int j = 0; j < n->n_inputs; j++) {
    int v = n->inputs[j];
    if (v < 0 || is_const(c, v)) continue;
    if (c->value_stage[v] != s || c->value_kind[v] != VK_SPLIT) return false;
    int rv = val(c, v)->rank;
    if (rv < 1 || (rank != -2 && rv != rank)) return false;
    rank = rv;
  }
  if (rank == -2) return false;
  for (int j = 0; j < n->n_inputs; j++) {
    int v = n->inputs[j], a;
    if (is_const(c, v) && !elem_const_axis(c, v, st->axis, rank, st->dim, &a))
      return false;
  }
  return true;
}

/* True when node n can join split stage s as the row-split half of a
 * Megatron pair: a weight-splitting op reading a split tensor of s as
 * input 0 whose feature axis is the split axis. */
static bool row_joins(const ctx *c, const ts_node *n, int s) {
  const split_op *op = split_op_find(n);
  const lstage *st = &c->st[s];
  int x = in_value(n, 0);
  if (!op || x < 0 || c->value_stage[x] != s || c->value_kind[x] != VK_SPLIT)
    return false;
  if (!op->usable(c, n, true) || op->out_axis != st->axis) return false;
  if (strcmp(n->op_type, "Gemm") == 0 && ts_attr_int(n, "transA", 0) != 0)
    return false;
  const ts_tensor *w = cst(c, in_value(n, 1));
  return w->dims[op->weight_axis(n, true)] == st->dim;
}

/* Grows a split group from its column-split op `a` (at live position pa),
 * within live positions [pa, hi). */
static int grow_group(ctx *c, int a, int s, int hi) {
  int rc = stage_add(c, s, a, ROLE_COL);
  if (rc) return rc;
  int y = c->g->nodes[a].outputs[0];
  c->value_stage[y] = s;
  c->value_kind[y] = VK_SPLIT;
  /* Scan forward in topological order while some consumer of a split
   * tensor lies ahead: every node that may join is such a consumer. */
  int last = -1;
  for (int q = c->cons_off[y]; q < c->cons_off[y + 1]; q++)
    if (c->pos[c->cons[q]] > last) last = c->pos[c->cons[q]];
  for (int p = c->pos[a] + 1; p <= last && p < hi; p++) {
    int i = c->live[p];
    const ts_node *n = &c->g->nodes[i];
    if (c->node_stage[i] >= 0) continue;
    if (elem_joins(c, n, s)) {
      if ((rc = stage_add(c, s, i, ROLE_ELEM))) return rc;
      int v = n->outputs[0];
      c->value_stage[v] = s;
      c->value_kind[v] = VK_SPLIT;
      for (int q = c->cons_off[v]; q < c->cons_off[v + 1]; q++)
        if (c->pos[c->cons[q]] > last) last = c->pos[c->cons[q]];
    } else if (row_joins(c, n, s)) {
      if ((rc = stage_add(c, s, i, ROLE_ROW))) return rc;
      c->value_stage[n->outputs[0]] = s;
      c->value_kind[n->outputs[0]] = VK_PARTIAL;
    }
  }
  return TS_OK;
}

/* Tries to start a split group at node i with up to `ways` shards: by
 * output columns when there are at least two, else by input features. */
static int try_group(ctx *c, int i, int ways, int hi, bool *made) {
  const ts_node *n = &c->g->nodes[i];
  const split_op *op = split_op_find(n);
  *made = false;
  if (!op || ways < 2 || !op->usable(c, n, false)) return TS_OK;
  const ts_tensor *w = cst(c, in_value(n, 1));
  int64_t cols = w->dims[op->weight_axis(n, false)];
  int64_t rows = w->dims[op->weight_axis(n, true)];
  role r = ROLE_COL;
  int64_t dim = cols;
  if (cols < 2) {
    int xr = val(c, in_value(n, 0))->rank;
    if (rows < 2 || !c->has_slice || xr < 1) return TS_OK;
    r = ROLE_ROW_SLICE;
    dim = rows;
  }
  int w_eff = dim < ways ? (int)dim : ways;
  int s = stage_new(c, w_eff, op->out_axis, dim);
  if (s < 0) return TS_ENOMEM;
  *made = true;
  if (r == ROLE_COL) return grow_group(c, i, s, hi);
  int rc = stage_add(c, s, i, ROLE_ROW_SLICE);
  if (rc) return rc;
  c->value_stage[n->outputs[0]] = s;
  c->value_kind[n->outputs[0]] = VK_PARTIAL;
  return TS_OK;
}

/* Tries a block split of node i on the context's grid, clamped to the
 * weight's dims (R <= input features, C <= output columns; R = 1 when the
 * input cannot be sliced): a stage of the node alone, R * C >= 2 shards.
 * Shard k = i*C + j reads features K_i of input 0 (an inserted Slice when
 * R > 1) and holds the weight block [K_i, N_j]. */
static int try_block(ctx *c, int i, bool *made) {
  const ts_node *n = &c->g->nodes[i];
  const split_op *op = split_op_find(n);
  *made = false;
  if (!op || !op->usable(c, n, true)) return TS_OK;
  const ts_tensor *w = cst(c, in_value(n, 1));
  int64_t cols = w->dims[op->weight_axis(n, false)];
  int64_t rows = w->dims[op->weight_axis(n, true)];
  int r = rows < c->grid_rows ? (int)rows : c->grid_rows;
  int k = cols < c->grid_cols ? (int)cols : c->grid_cols;
  if (!c->has_slice || val(c, in_value(n, 0))->rank < 1) r = 1;
  if (r < 1 || k < 1 || r * k < 2) return TS_OK;
  int s = stage_new(c, r * k, op->out_axis, cols);
  if (s < 0) return TS_ENOMEM;
  c->st[s].rows = r;
  c->st[s].kdim = rows;
  *made = true;
  int rc = stage_add(c, s, i, ROLE_BLOCK);
  if (rc) return rc;
  c->value_stage[n->outputs[0]] = s;
  c->value_kind[n->outputs[0]] = VK_BLOCK;
  return TS_OK;
}

/* Lays out live positions [lo, hi): split groups with `ways` shards (or
 * block splits, with a grid) where possible (ways <= 1: never), consecutive
 * other nodes in whole stages. */
static int layout_range(ctx *c, int lo, int hi, int ways) {
  int whole = -1;
  for (int p = lo; p < hi; p++) {
    int i = c->live[p];
    if (c->node_stage[i] >= 0) continue;
    bool made = false;
    int rc = c->grid_rows ? try_block(c, i, &made)
                          : try_group(c, i, ways, hi, &made);
    if (rc) return rc;
    if (made) {
      whole = -1;
      continue;
    }
    if (whole < 0 && (whole = stage_new(c, 1, 0, 1)) < 0) return TS_ENOMEM;
    if ((rc = stage_add(c, whole, i, ROLE_WHOLE))) return rc;
  }
  return TS_OK;
}

/* ---- pipeline partition ------------------------------------------------- */

/* Greedy packing: the fewest contiguous parts of costs[0..m) with sums
 * <= cap (optimal for non-negative costs); writes part starts into starts
 * (room for m) when non-NULL. */
static int pack_parts(const double *costs, int m, double cap, int *starts) {
  int parts = 0;
  double sum = 0;
  for (int i = 0; i < m; i++) {
    if (i == 0 || sum + costs[i] > cap) {
      if (starts) starts[parts] = i;
      parts++;
      sum = 0;
    }
    sum += costs[i];
  }
  return parts;
}

/* Splits costs[0..m) (m >= k >= 1) into exactly k non-empty contiguous parts
 * whose largest sum is minimal (to floating-point precision): bisection on
 * the bottleneck with greedy packing as the test, then parts with several
 * items are split until there are k. Writes the part starts into
 * starts[0..k). O(m) memory, about 100 passes over costs. */
static int linear_partition(const double *costs, int m, int k, int *starts) {
  int *tmp = malloc(((size_t)m + 1) * sizeof *tmp);
  if (!tmp) return TS_ENOMEM;
  double lo = 0, hi = 0;
  for (int i = 0; i < m; i++) {
    lo = fmax(lo, costs[i]);
    hi += costs[i];
  }
  /* Invariant: packing under hi needs <= k parts; under lo, > k (or lo is
   * the largest single cost, below which nothing packs). */
  for (int it = 0; it < 100 && hi > lo * (1 + 1e-12); it++) {
    double mid = lo + (hi - lo) / 2;
    if (pack_parts(costs, m, mid, NULL) <= k)
      hi = mid;
    else
      lo = mid;
  }
  int parts = pack_parts(costs, m, hi, tmp);
  /* Fewer parts than k: split parts (never raising a part's sum) by
   * starting a new part at every item not yet a start, left to right. */
  int extra = k - parts, w = 0;
  tmp[parts] = m;
  for (int p = 0; p < parts; p++) {
    starts[w++] = tmp[p];
    for (int i = tmp[p] + 1; i < tmp[p + 1] && extra > 0; i++, extra--)
      starts[w++] = i;
  }
  free(tmp);
  return w == k ? TS_OK : TS_EINTERNAL;
}

/* Pipeline cuts over all live nodes, balanced by normalized FLOPs plus
 * normalized weight bytes, then each slice laid out with `ways`. */
static int layout_pipeline(ctx *c, int stages, int ways) {
  int m = c->n_live;
  double *cost = malloc(((size_t)m + 1) * sizeof *cost);
  int *starts = malloc(((size_t)stages + 1) * sizeof *starts);
  if (!cost || !starts) {
    free(cost), free(starts);
    return TS_ENOMEM;
  }
  double tf = 0, tb = 0;
  for (int p = 0; p < m; p++) {
    double f = ts_graph_node_flops(c->m, c->live[p]);
    cost[p] = f > 0 ? f : 0;
    tf += cost[p];
    tb += c->node_bytes[c->live[p]];
  }
  for (int p = 0; p < m; p++)
    cost[p] = (tf > 0 ? cost[p] / tf : 0) +
              (tb > 0 ? c->node_bytes[c->live[p]] / tb : 0) + 1e-9;
  int rc = linear_partition(cost, m, stages, starts);
  starts[stages] = m;
  for (int s = 0; !rc && s < stages; s++)
    rc = layout_range(c, starts[s], starts[s + 1], ways);
  free(cost), free(starts);
  return rc;
}

/* ---- per-shard initializers ---------------------------------------------- */

/* How a shard cuts a constant: along n (0..2) distinct axes, axis[q] to
 * [start[q], end[q]) (two for a block's weight). */
typedef struct const_cut {
  int n;
  int axis[2];
  int64_t start[2], end[2];
} const_cut;

static void cut_add(const_cut *ct, int axis, int64_t start, int64_t end) {
  ct->axis[ct->n] = axis;
  ct->start[ct->n] = start;
  ct->end[ct->n] = end;
  ct->n++;
}

static bool cut_equal(const const_cut *a, const const_cut *b) {
  if (a->n != b->n) return false;
  for (int q = 0; q < a->n; q++)
    if (a->axis[q] != b->axis[q] || a->start[q] != b->start[q] ||
        a->end[q] != b->end[q])
      return false;
  return true;
}

/* One initializer of a shard: model value v (or -1: synthesized, with its
 * own data), cut as `cut` says. */
typedef struct init_spec {
  int value;
  const_cut cut;
  const char *name; /* arena */
  ts_dtype dtype;   /* synthesized only */
  int rank;
  int64_t dims[TS_MAX_RANK];
  void *data;       /* synthesized only; arena */
} init_spec;

/* Bytes of a (possibly sliced) constant. */
static size_t spec_bytes(const ctx *c, const init_spec *sp) {
  if (sp->value < 0) {
    return (size_t)ts_shape_nbytes(sp->dtype, sp->dims, sp->rank);
  }
  const ts_tensor *t = cst(c, sp->value);
  size_t bytes = t->nbytes;
  for (int q = 0; q < sp->cut.n; q++) {
    int64_t d = t->dims[sp->cut.axis[q]];
    if (d == 0) return 0;
    bytes = bytes / (size_t)d * (size_t)(sp->cut.end[q] - sp->cut.start[q]);
  }
  return bytes;
}

/* What shard k must do with input j of node i (in stage s): keep the
 * value, cut a constant (ct->n > 0), or drop it (returns false: the bias of
 * a ROW op outside shard 0, of a block outside grid row 0). */
static bool input_slice(const ctx *c, int s, int k, int i, int j, const_cut *ct) {
  const lstage *st = &c->st[s];
  const ts_node *n = &c->g->nodes[i];
  int v = n->inputs[j];
  memset(ct, 0, sizeof *ct);
  if (st->ways < 2 || !is_const(c, v)) return true;
  int64_t start, end;
  split_range(st, k, &start, &end);
  role r = c->node_role[i];
  if (r == ROLE_ELEM) {
    const op_rule *rule = rule_find(n);
    int axis = 0;
    if (!rule || rule->split != SPLIT_CHANNEL) {
      int rank = -1;
      for (int q = 0; q < n->n_inputs && rank < 0; q++)
        if (n->inputs[q] >= 0 && !is_const(c, n->inputs[q]))
          rank = val(c, n->inputs[q])->rank;
      elem_const_axis(c, v, st->axis, rank, st->dim, &axis);
    }
    if (axis >= 0) cut_add(ct, axis, start, end);
    return true;
  }
  const split_op *op = split_op_find(n);
  bool row = r == ROLE_ROW || r == ROLE_ROW_SLICE;
  /* A block cuts its weight's features by grid row (R > 1) and its columns
   * by grid column (C > 1); row i > 0 drops the bias. */
  bool block_rows = r == ROLE_BLOCK && st->rows > 1;
  bool block_cols = r == ROLE_BLOCK && split_ways(st) > 1;
  if (j == 1) {
    if (block_rows) {
      int64_t a, b;
      feature_range(st, r, k, &a, &b);
      cut_add(ct, op->weight_axis(n, true), a, b);
    }
    if (r != ROLE_BLOCK || block_cols)
      cut_add(ct, op->weight_axis(n, row), start, end);
  } else if (j == op->bias) {
    if (row) return k == 0;
    if (r == ROLE_BLOCK && k >= split_ways(st)) return false;
    /* Column split: slice the bias's last axis where it has the columns. */
    const ts_tensor *b = cst(c, v);
    if ((r != ROLE_BLOCK || block_cols) && b->rank >= 1 &&
        b->dims[b->rank - 1] == st->dim)
      cut_add(ct, b->rank - 1, start, end);
  }
  return true;
}

/* Finds or adds the spec (v, cut) in list; returns its index or -1 when out
 * of memory. */
static int spec_intern(init_spec **list, int *n, int *cap, int v,
                       const const_cut *ct) {
  for (int q = 0; q < *n; q++) {
    init_spec *sp = &(*list)[q];
    if (sp->value == v && cut_equal(&sp->cut, ct)) return q;
  }
  if (grow(list, cap, *n + 1, sizeof **list)) return -1;
  init_spec *sp = &(*list)[*n];
  memset(sp, 0, sizeof *sp);
  sp->value = v;
  sp->cut = *ct;
  return (*n)++;
}

/* The weight bytes of shard k of stage s (its distinct sliced constants). */
static int shard_weight(const ctx *c, int s, int k, size_t *bytes) {
  init_spec *list = NULL;
  int n = 0, cap = 0;
  *bytes = 0;
  const lstage *st = &c->st[s];
  for (int q = 0; q < st->n_nodes; q++) {
    const ts_node *node = &c->g->nodes[st->nodes[q]];
    for (int j = 0; j < node->n_inputs; j++) {
      int v = node->inputs[j];
      const_cut ct;
      if (!is_const(c, v)) continue;
      if (!input_slice(c, s, k, st->nodes[q], j, &ct)) continue;
      int before = n;
      int idx = spec_intern(&list, &n, &cap, v, &ct);
      if (idx < 0) {
        free(list);
        return TS_ENOMEM;
      }
      if (n > before) *bytes += spec_bytes(c, &list[idx]);
    }
  }
  free(list);
  return TS_OK;
}

/* ---- emission ----------------------------------------------------------- */

/* Builder for one shard's GraphProto; everything lives in `a`. */
typedef struct shard_build {
  const ctx *c;
  int s, k;
  arena a;
  Onnx__NodeProto **nodes;
  int n_nodes, cap_nodes;
  init_spec *inits;
  int n_inits, cap_inits;
  Onnx__ValueInfoProto **inputs;
  int n_inputs, cap_inputs;
  Onnx__ValueInfoProto **outputs;
  int n_outputs, cap_outputs;
  ts_err *err;
} shard_build;

static int oom(shard_build *b) {
  return ts_err_set(b->err, TS_ENOMEM, "plan: out of memory building shard");
}

/* A generated name; refused when the model already uses it, since the
 * shard would then mean two tensors by one name. */
static const char *fresh_name(shard_build *b, const char *base,
                              const char *suffix, int k) {
  const char *name = arena_printf(&b->a, "%s.%s%d", base, suffix, k);
  if (!name) return NULL;
  if (ts_graph_find_value(b->c->g, name) >= 0) {
    ts_err_set(b->err, TS_EUNSUPPORTED,
               "tensor name '%s' is used by the model and by the "
               "partitioner's naming scheme",
               name);
    return NULL;
  }
  return name;
}

/* The shard-local name of value v: the part name for values split or
 * partial in this stage, the model's name otherwise. */
static const char *local_name(shard_build *b, int v) {
  const ctx *c = b->c;
  if (c->value_stage[v] == b->s && c->value_kind[v] != VK_NONE)
    return fresh_name(b, val(c, v)->name, "part", b->k);
  return val(c, v)->name;
}

/* A ValueInfo for name with the given dtype and dims (-1 -> dim_param
 * "<name>:d<i>"; rank < 0: no shape). */
static Onnx__ValueInfoProto *value_info(shard_build *b, const char *name,
                                        ts_dtype dtype, int rank,
                                        const int64_t *dims) {
  if (dtype == TS_DTYPE_UNDEFINED) {
    ts_err_set(b->err, TS_EUNSUPPORTED,
               "tensor '%s' crosses a shard boundary but its dtype is not "
               "known statically",
               name);
    return NULL;
  }
  Onnx__ValueInfoProto *vi = arena_alloc(&b->a, sizeof *vi);
  Onnx__TypeProto *tp = arena_alloc(&b->a, sizeof *tp);
  Onnx__TypeProto__Tensor *tt = arena_alloc(&b->a, sizeof *tt);
  if (!vi || !tp || !tt) return oom(b), NULL;
  onnx__value_info_proto__init(vi);
  onnx__type_proto__init(tp);
  onnx__type_proto__tensor__init(tt);
  vi->name = (char *)name;
  vi->type = tp;
  tp->value_case = ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE;
  tp->tensor_type = tt;
  tt->has_elem_type = 1;
  tt->elem_type = (int32_t)dtype;
  if (rank < 0) return vi;
  Onnx__TensorShapeProto *sh = arena_alloc(&b->a, sizeof *sh);
  Onnx__TensorShapeProto__Dimension **dl =
      arena_alloc(&b->a, (size_t)(rank + 1) * sizeof *dl);
  if (!sh || !dl) return oom(b), NULL;
  onnx__tensor_shape_proto__init(sh);
  for (int i = 0; i < rank; i++) {
    dl[i] = arena_alloc(&b->a, sizeof *dl[i]);
    if (!dl[i]) return oom(b), NULL;
    onnx__tensor_shape_proto__dimension__init(dl[i]);
    if (dims[i] >= 0) {
      dl[i]->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE;
      dl[i]->dim_value = dims[i];
    } else {
      dl[i]->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM;
      dl[i]->dim_param = arena_printf(&b->a, "%s:d%d", name, i);
      if (!dl[i]->dim_param) return oom(b), NULL;
    }
  }
  sh->n_dim = (size_t)rank;
  sh->dim = dl;
  tt->shape = sh;
  return vi;
}

/* ValueInfo of model value v under `name`; for a split value, the split
 * axis holds this shard's width. */
static Onnx__ValueInfoProto *value_info_of(shard_build *b, int v,
                                           const char *name) {
  const ctx *c = b->c;
  const ts_value *x = val(c, v);
  int64_t dims[TS_MAX_RANK];
  int rank = x->rank;
  if (rank > TS_MAX_RANK) rank = -1;
  if (rank > 0) memcpy(dims, x->dims, (size_t)rank * sizeof dims[0]);
  if (rank > 0 && c->value_stage[v] == b->s &&
      (c->value_kind[v] == VK_SPLIT || c->value_kind[v] == VK_BLOCK)) {
    const lstage *st = &c->st[b->s];
    int a = st->axis < 0 ? rank - 1 : st->axis;
    int64_t start, end;
    split_range(st, b->k, &start, &end);
    if (a < rank && dims[a] >= 0) dims[a] = end - start;
  }
  return value_info(b, name, x->dtype, rank, dims);
}

/* Adds a graph input for external value v once. */
static int add_input(shard_build *b, int v) {
  const char *name = val(b->c, v)->name;
  for (int q = 0; q < b->n_inputs; q++)
    if (strcmp(b->inputs[q]->name, name) == 0) return TS_OK;
  Onnx__ValueInfoProto *vi = value_info_of(b, v, name);
  if (!vi) return b->err->code;
  if (grow(&b->inputs, &b->cap_inputs, b->n_inputs + 1, sizeof *b->inputs))
    return oom(b);
  b->inputs[b->n_inputs++] = vi;
  return TS_OK;
}

static int add_node(shard_build *b, Onnx__NodeProto *np) {
  if (grow(&b->nodes, &b->cap_nodes, b->n_nodes + 1, sizeof *b->nodes))
    return oom(b);
  b->nodes[b->n_nodes++] = np;
  return TS_OK;
}

/* Name of a constant input after cutting (interned in the shard's list):
 * the model's name with ".slice<axis>_<start>_<end>" per cut axis. */
static const char *const_name(shard_build *b, int v, const const_cut *ct) {
  int before = b->n_inits;
  int q = spec_intern(&b->inits, &b->n_inits, &b->cap_inits, v, ct);
  if (q < 0) return oom(b), NULL;
  init_spec *sp = &b->inits[q];
  if (b->n_inits > before) {
    sp->name = val(b->c, v)->name;
    for (int e = 0; e < ct->n && sp->name; e++)
      sp->name = arena_printf(&b->a, "%s.slice%d_%lld_%lld", sp->name,
                              ct->axis[e], (long long)ct->start[e],
                              (long long)ct->end[e]);
    if (!sp->name) return oom(b), NULL;
  }
  return sp->name;
}

/* Adds a synthesized initializer (int64 vector or zeros) named `name`. */
static int add_synth(shard_build *b, const char *name, ts_dtype dtype,
                     int rank, const int64_t *dims, const void *data) {
  if (grow(&b->inits, &b->cap_inits, b->n_inits + 1, sizeof *b->inits))
    return oom(b);
  init_spec *sp = &b->inits[b->n_inits];
  memset(sp, 0, sizeof *sp);
  sp->value = -1;
  sp->name = name;
  sp->dtype = dtype;
  sp->rank = rank;
  memcpy(sp->dims, dims, (size_t)rank * sizeof dims[0]);
  size_t nb = (size_t)ts_shape_nbytes(dtype, dims, rank);
  sp->data = arena_alloc(&b->a, nb);
  if (!sp->data) return oom(b);
  if (data) memcpy(sp->data, data, nb);
  b->n_inits++;
  return TS_OK;
}

/* An INTS attribute. */
static Onnx__AttributeProto *ints_attr(shard_build *b, const char *name,
                                       int64_t value) {
  Onnx__AttributeProto *at = arena_alloc(&b->a, sizeof *at);
  int64_t *vals = arena_alloc(&b->a, sizeof *vals);
  if (!at || !vals) return NULL;
  onnx__attribute_proto__init(at);
  at->name = (char *)name;
  at->has_type = 1;
  at->type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS;
  vals[0] = value;
  at->n_ints = 1;
  at->ints = vals;
  return at;
}

/* Emits a Slice taking [start, end) of x along `axis` into `out`: inputs
 * (opset >= 10) or attributes (older opsets). */
static int emit_slice(shard_build *b, const char *x, const char *out, int axis,
                      int64_t start, int64_t end) {
  Onnx__NodeProto *np = arena_alloc(&b->a, sizeof *np);
  char **in = arena_alloc(&b->a, 4 * sizeof *in);
  char **outs = arena_alloc(&b->a, sizeof *outs);
  if (!np || !in || !outs) return oom(b);
  onnx__node_proto__init(np);
  np->op_type = "Slice";
  np->name = (char *)out;
  np->domain = "";
  in[0] = (char *)x;
  outs[0] = (char *)out;
  np->n_input = 1;
  np->input = in;
  np->n_output = 1;
  np->output = outs;
  int64_t vals[3] = {start, end, axis};
  if (b->c->m->opset >= 10) {
    static const char *const suffix[3] = {"starts", "ends", "axes"};
    int64_t one = 1;
    for (int q = 0; q < 3; q++) {
      in[q + 1] = arena_printf(&b->a, "%s.%s", out, suffix[q]);
      if (!in[q + 1]) return oom(b);
      int rc = add_synth(b, in[q + 1], TS_DTYPE_INT64, 1, &one, &vals[q]);
      if (rc) return rc;
    }
    np->n_input = 4;
  } else {
    static const char *const names[3] = {"starts", "ends", "axes"};
    Onnx__AttributeProto **attrs = arena_alloc(&b->a, 3 * sizeof *attrs);
    if (!attrs) return oom(b);
    for (int q = 0; q < 3; q++)
      if (!(attrs[q] = ints_attr(b, names[q], vals[q]))) return oom(b);
    np->n_attribute = 3;
    np->attribute = attrs;
  }
  return add_node(b, np);
}

/* Copies node i into the shard with its inputs and outputs renamed and its
 * constants sliced for shard k. */
static int emit_node(shard_build *b, int i) {
  const ctx *c = b->c;
  const ts_node *n = &c->g->nodes[i];
  Onnx__NodeProto *np = arena_alloc(&b->a, sizeof *np);
  char **in = arena_alloc(&b->a, ((size_t)n->n_inputs + 1) * sizeof *in);
  char **out = arena_alloc(&b->a, ((size_t)n->n_outputs + 1) * sizeof *out);
  if (!np || !in || !out) return oom(b);
  *np = *n->proto; /* attributes, name, domain: shared with the model */
  np->input = in;
  np->output = out;
  np->n_input = (size_t)n->n_inputs;
  np->n_output = (size_t)n->n_outputs;
  const lstage *st = &c->st[b->s];
  int rc;
  role r = c->node_role[i];
  for (int j = 0; j < n->n_inputs; j++) {
    int v = n->inputs[j];
    const_cut ct;
    if (v < 0) {
      in[j] = "";
    } else if (is_const(c, v)) {
      if (!input_slice(c, b->s, b->k, i, j, &ct)) {
        /* The bias of a ROW op belongs to shard 0 only. Gemm needs its C
         * before opset 11: give it zeros there. */
        if (strcmp(n->op_type, "Gemm") == 0 && c->m->opset < 11) {
          int64_t one = 1;
          in[j] = (char *)fresh_name(b, val(c, v)->name, "zero", b->k);
          if (!in[j]) return b->err->code;
          rc = add_synth(b, in[j], cst(c, v)->dtype, 1, &one, NULL);
          if (rc) return rc;
        } else {
          np->n_input = (size_t)j; /* the bias is the last input */
          break;
        }
      } else if (!(in[j] = (char *)const_name(b, v, &ct))) {
        return b->err->code;
      }
    } else if (j == 0 && (r == ROLE_ROW_SLICE ||
                          (r == ROLE_BLOCK && st->rows > 1))) {
      /* The shard's features of the whole input. */
      const split_op *op = split_op_find(n);
      int ax = op->in_axis(n, val(c, v)->rank);
      int64_t start, end;
      feature_range(st, r, b->k, &start, &end);
      in[j] = (char *)fresh_name(b, val(c, v)->name, "rows", b->k);
      if (!in[j]) return b->err->code;
      if ((rc = add_input(b, v))) return rc;
      rc = emit_slice(b, val(c, v)->name, in[j], ax, start, end);
      if (rc) return rc;
    } else {
      if (!(in[j] = (char *)local_name(b, v))) return b->err->code;
      int p = val(c, v)->producer;
      if ((p < 0 || c->node_stage[p] != b->s) && (rc = add_input(b, v)))
        return rc;
    }
  }
  for (int j = 0; j < n->n_outputs; j++) {
    int v = n->outputs[j];
    out[j] = v < 0 ? "" : (char *)local_name(b, v);
    if (!out[j]) return b->err->code;
  }
  return add_node(b, np);
}

/* Copies the box [lo, hi) of a row-major tensor (dims, rank, element size
 * esz) to dst, one contiguous run per index of the axes outside the
 * innermost cut axis `a` (axes after `a` are whole). */
static void box_copy(uint8_t *dst, const uint8_t *src, const int64_t *dims,
                     int rank, size_t esz, const int64_t *lo,
                     const int64_t *hi, int a) {
  int64_t stride[TS_MAX_RANK], idx[TS_MAX_RANK];
  int64_t s = (int64_t)esz;
  for (int d = rank - 1; d >= 0; d--) {
    stride[d] = s;
    s *= dims[d];
  }
  size_t run = (size_t)((hi[a] - lo[a]) * stride[a]);
  for (int d = 0; d < a; d++) idx[d] = lo[d];
  for (;;) {
    int64_t off = lo[a] * stride[a];
    for (int d = 0; d < a; d++) off += idx[d] * stride[d];
    memcpy(dst, src + off, run);
    dst += run;
    int d = a - 1;
    while (d >= 0 && ++idx[d] == hi[d]) idx[d] = lo[d], d--;
    if (d < 0) return;
  }
}

/* Builds the TensorProto of one initializer spec; cut data is copied into
 * the arena, whole constants are referenced. */
static Onnx__TensorProto *tensor_proto(shard_build *b, const init_spec *sp) {
  const ctx *c = b->c;
  Onnx__TensorProto *tp = arena_alloc(&b->a, sizeof *tp);
  int64_t *dims = arena_alloc(&b->a, TS_MAX_RANK * sizeof *dims);
  if (!tp || !dims) return oom(b), NULL;
  onnx__tensor_proto__init(tp);
  tp->name = (char *)sp->name;
  tp->has_data_type = 1;
  tp->has_raw_data = 1;
  if (sp->value < 0) {
    tp->data_type = (int32_t)sp->dtype;
    memcpy(dims, sp->dims, (size_t)sp->rank * sizeof *dims);
    tp->n_dims = (size_t)sp->rank;
    tp->dims = dims;
    tp->raw_data.data = sp->data;
    tp->raw_data.len = spec_bytes(c, sp);
    return tp;
  }
  const ts_tensor *t = cst(c, sp->value);
  size_t esz = ts_dtype_size(t->dtype);
  if (esz == 0) {
    ts_err_set(b->err, TS_EUNSUPPORTED,
               "constant '%s' has dtype %s, which shards cannot carry",
               val(c, sp->value)->name, ts_dtype_name(t->dtype));
    return NULL;
  }
  tp->data_type = (int32_t)t->dtype;
  memcpy(dims, t->dims, (size_t)t->rank * sizeof *dims);
  tp->n_dims = (size_t)t->rank;
  tp->dims = dims;
  if (sp->cut.n == 0) {
    tp->raw_data.data = t->data;
    tp->raw_data.len = t->nbytes;
    return tp;
  }
  int64_t lo[TS_MAX_RANK] = {0}, hi[TS_MAX_RANK];
  int inner = 0;
  memcpy(hi, t->dims, (size_t)t->rank * sizeof *hi);
  for (int q = 0; q < sp->cut.n; q++) {
    int a = sp->cut.axis[q];
    lo[a] = sp->cut.start[q];
    hi[a] = sp->cut.end[q];
    dims[a] = hi[a] - lo[a];
    if (a > inner) inner = a;
  }
  size_t len = spec_bytes(c, sp);
  uint8_t *data = arena_alloc(&b->a, len);
  if (!data) return oom(b), NULL;
  if (len)
    box_copy(data, t->data, t->dims, t->rank, esz, lo, hi, inner);
  tp->raw_data.data = data;
  tp->raw_data.len = len;
  return tp;
}

/* ---- the plan ----------------------------------------------------------- */

/* Stage index of the last reader of each value (n_st for graph outputs,
 * -1 for unread). */
static int *last_use(const ctx *c) {
  int *lu = malloc(((size_t)c->g->n_values + 1) * sizeof *lu);
  if (!lu) return NULL;
  for (int v = 0; v < c->g->n_values; v++) {
    lu[v] = c->g->values[v].is_graph_output ? c->n_st : -1;
    for (int q = c->cons_off[v]; q < c->cons_off[v + 1]; q++) {
      int s = c->node_stage[c->cons[q]];
      if (s > lu[v]) lu[v] = s;
    }
  }
  for (int i = 0; i < c->g->n_outputs; i++)
    if (c->g->outputs[i] >= 0) lu[c->g->outputs[i]] = c->n_st;
  return lu;
}

static bool dim0_symbolic(const ctx *c, int v) {
  return val(c, v)->rank >= 1 && val(c, v)->dims[0] < 0;
}

/* Normalizes axis for rank; -1 when out of range. */
static int norm_axis(int64_t axis, int rank) {
  if (axis < 0) axis += rank;
  return axis >= 0 && axis < rank ? (int)axis : -1;
}

static int out_rank(const ctx *c, const ts_node *n) {
  return n->n_outputs > 0 && n->outputs[0] >= 0 ? val(c, n->outputs[0])->rank
                                                : -1;
}

/* Ops that work per sample on input 0 with constant parameters (Conv,
 * pools, normalizations): any non-constant input after the first would be
 * a batched tensor used as a parameter. */
static bool row_any(const ctx *c, const ts_node *n) {
  for (int j = 1; j < n->n_inputs; j++)
    if (n->inputs[j] >= 0 && !is_const(c, n->inputs[j])) return false;
  return true;
}

/* Broadcasting ops: non-constant inputs have the output's rank (their
 * dim 0 is the batch); constants do not vary along dim 0. */
static bool row_bcast(const ctx *c, const ts_node *n) {
  int r = out_rank(c, n);
  if (r < 1) return false;
  for (int j = 0; j < n->n_inputs; j++) {
    int v = n->inputs[j];
    if (v < 0) continue;
    if (!is_const(c, v)) {
      if (val(c, v)->rank != r) return false;
    } else if (cst(c, v)->rank == r && cst(c, v)->dims[0] != 1) {
      return false;
    }
  }
  return true;
}

static bool row_axis(const ctx *c, const ts_node *n) {
  const op_rule *r = rule_find(n);
  int x = in_value(n, 0);
  if (x < 0) return false;
  int a = norm_axis(ts_attr_int(n, "axis", r->default_axis), val(c, x)->rank);
  return a > 0;
}

static bool row_gemm(const ctx *c, const ts_node *n) {
  int b = in_value(n, 1), bias = in_value(n, 2);
  if (ts_attr_int(n, "transA", 0) != 0 || !is_const(c, b)) return false;
  if (bias >= 0 && (!is_const(c, bias) ||
                    (cst(c, bias)->rank == 2 && cst(c, bias)->dims[0] != 1)))
    return false;
  return true;
}

static bool row_matmul(const ctx *c, const ts_node *n) {
  int a = in_value(n, 0), b = in_value(n, 1);
  if (a < 0 || b < 0 || is_const(c, a)) return false;
  if (is_const(c, b)) return cst(c, b)->rank <= 2 && val(c, a)->rank >= 2;
  return val(c, a)->rank >= 3 && val(c, a)->rank == val(c, b)->rank;
}

/* Reshape keeps dim 0 when its constant shape starts with 0 (copy, without
 * allowzero), or with -1 when every other dim is static and the input's
 * non-batch elements equal the output's. */
static bool row_reshape(const ctx *c, const ts_node *n) {
  int x = in_value(n, 0), sv = in_value(n, 1);
  if (x < 0 || !is_const(c, sv)) return false;
  const ts_tensor *s = cst(c, sv);
  if (s->dtype != TS_DTYPE_INT64 || s->rank != 1 || s->dims[0] < 1)
    return false;
  const int64_t *shape = s->data;
  if (shape[0] == 0) return ts_attr_int(n, "allowzero", 0) == 0;
  if (shape[0] != -1) return false;
  const ts_value *xi = val(c, x);
  if (xi->rank < 1) return false;
  int64_t in_rest = ts_shape_numel(xi->dims + 1, xi->rank - 1);
  int64_t out_rest = 1;
  for (int64_t i = 1; i < s->dims[0]; i++) {
    if (shape[i] <= 0) return false;
    out_rest *= shape[i];
  }
  return in_rest > 0 && in_rest == out_rest;
}

static bool row_transpose(const ctx *c, const ts_node *n) {
  (void)c;
  const int64_t *perm;
  size_t count;
  if (ts_attr_ints(n, "perm", &perm, &count, NULL)) return false;
  return count >= 1 && perm[0] == 0;
}

static bool row_concat(const ctx *c, const ts_node *n) {
  for (int j = 0; j < n->n_inputs; j++)
    if (n->inputs[j] < 0 || is_const(c, n->inputs[j])) return false;
  return norm_axis(ts_attr_int(n, "axis", 0), out_rank(c, n)) > 0;
}

/* Gather rows of a constant table (embedding: the batch is the indices'),
 * or constant indices away from axis 0 of a batched tensor. */
static bool row_gather(const ctx *c, const ts_node *n) {
  int d = in_value(n, 0), i = in_value(n, 1);
  if (d < 0 || i < 0) return false;
  int64_t axis = ts_attr_int(n, "axis", 0);
  if (is_const(c, d) && !is_const(c, i))
    return norm_axis(axis, cst(c, d)->rank) == 0;
  if (!is_const(c, d) && is_const(c, i))
    return norm_axis(axis, val(c, d)->rank) > 0;
  return false;
}

/* Ops with an "axes" list (attribute, or constant input 1 / 3 for Slice):
 * row-wise when the axes are given and none is 0. Unsqueeze's axes index
 * the output. */
static bool row_axes(const ctx *c, const ts_node *n) {
  bool slice = strcmp(n->op_type, "Slice") == 0;
  bool unsq = strcmp(n->op_type, "Unsqueeze") == 0;
  int x = in_value(n, 0);
  if (x < 0) return false;
  int rank = unsq ? out_rank(c, n) : val(c, x)->rank;
  const int64_t *axes = NULL;
  size_t count = 0;
  int av = in_value(n, slice ? 3 : 1);
  if (ts_attr_ints(n, "axes", &axes, &count, NULL) != 0) {
    if (slice && n->n_inputs < 2) return false; /* opset < 10, no axes */
    if (!is_const(c, av) || cst(c, av)->dtype != TS_DTYPE_INT64 ||
        cst(c, av)->rank != 1)
      return false;
    axes = cst(c, av)->data;
    count = (size_t)cst(c, av)->dims[0];
  }
  if (slice)
    for (int j = 1; j < n->n_inputs; j++)
      if (n->inputs[j] >= 0 && !is_const(c, n->inputs[j])) return false;
  if (count == 0 || rank < 1) return false;
  for (size_t q = 0; q < count; q++)
    if (norm_axis(axes[q], rank) <= 0) return false;
  return true;
}

/* See the file comment: every non-constant tensor read or written has a
 * symbolic dim 0 and every node passes its op's row rule. */
static bool stage_batch_splittable(const ctx *c, int s) {
  const lstage *st = &c->st[s];
  for (int q = 0; q < st->n_nodes; q++) {
    const ts_node *n = &c->g->nodes[st->nodes[q]];
    const op_rule *r = rule_find(n);
    if (!r || !r->row(c, n)) return false;
    for (int j = 0; j < n->n_inputs; j++)
      if (n->inputs[j] >= 0 && !is_const(c, n->inputs[j]) &&
          !dim0_symbolic(c, n->inputs[j]))
        return false;
    for (int j = 0; j < n->n_outputs; j++) {
      int v = n->outputs[j];
      if (v >= 0 && (c->cons_off[v + 1] > c->cons_off[v] ||
                     val(c, v)->is_graph_output) &&
          !dim0_symbolic(c, v))
        return false;
    }
  }
  return true;
}

/* Appends fusion `name` = kind (on `axis`) of the n parts
 * "<base>.<suffix><first + q*step>", q < n. */
static int add_fusion(ts_stage *out, int *cap, const char *name,
                      ts_fuse_kind kind, int axis, const char *base,
                      const char *suffix, int first, int step, int n) {
  if (grow(&out->fusions, cap, out->n_fusions + 1, sizeof *out->fusions))
    return TS_ENOMEM;
  ts_fusion *f = &out->fusions[out->n_fusions++];
  memset(f, 0, sizeof *f);
  f->name = xstrdup(name);
  f->kind = kind;
  f->axis = kind == TS_FUSE_CONCAT ? axis : 0;
  f->parts = calloc((size_t)n, sizeof *f->parts);
  if (!f->name || !f->parts) return TS_ENOMEM;
  for (int q = 0; q < n; q++) {
    size_t len = strlen(base) + strlen(suffix) + 32;
    if (!(f->parts[q] = malloc(len))) return TS_ENOMEM;
    snprintf(f->parts[q], len, "%s.%s%d", base, suffix, first + q * step);
    f->n_parts = q + 1;
  }
  return TS_OK;
}

/* The fusions of block-split value v of stage s (see plan.h, "Fusions
 * nest"): one row or one column needs one fusion; a full grid sums each
 * column's R parts into "<v>.col<j>", then concatenates the columns. */
static int block_fusions(const ctx *c, int s, int v, ts_stage *out, int *cap,
                         ts_err *err) {
  const lstage *st = &c->st[s];
  const char *name = val(c, v)->name;
  int cols = split_ways(st);
  if (st->rows == 1 || cols == 1)
    return add_fusion(out, cap, name, cols > 1 ? TS_FUSE_CONCAT : TS_FUSE_SUM,
                      st->axis, name, "part", 0, 1, st->ways);
  for (int j = 0; j < cols; j++) {
    char col[512];
    snprintf(col, sizeof col, "%s.col%d", name, j);
    if (ts_graph_find_value(c->g, col) >= 0)
      return ts_err_set(err, TS_EUNSUPPORTED,
                        "tensor name '%s' is used by the model and by the "
                        "partitioner's naming scheme",
                        col);
    int rc = add_fusion(out, cap, col, TS_FUSE_SUM, 0, name, "part", j, cols,
                        st->rows);
    if (rc) return rc;
  }
  return add_fusion(out, cap, name, TS_FUSE_CONCAT, st->axis, name, "col", 0,
                    1, cols);
}

/* Fills the stage's inputs, outputs and fusions from the layout. */
static int fill_stage_io(const ctx *c, int s, const int *lu, ts_stage *out,
                         ts_err *err) {
  const lstage *st = &c->st[s];
  int cap_in = 0, cap_out = 0, cap_f = 0;
  for (int q = 0; q < st->n_nodes; q++) {
    const ts_node *n = &c->g->nodes[st->nodes[q]];
    for (int j = 0; j < n->n_inputs; j++) {
      int v = n->inputs[j];
      if (v < 0 || is_const(c, v)) continue;
      int p = val(c, v)->producer;
      if (p >= 0 && c->node_stage[p] == s) continue;
      bool dup = false;
      for (int e = 0; e < out->n_inputs && !dup; e++)
        dup = strcmp(out->inputs[e], val(c, v)->name) == 0;
      if (!dup && names_push(&out->inputs, &out->n_inputs, &cap_in,
                             val(c, v)->name))
        return ts_err_set(err, TS_ENOMEM, "plan: out of memory");
    }
    for (int j = 0; j < n->n_outputs; j++) {
      int v = n->outputs[j];
      if (v < 0 || lu[v] <= s) continue;
      if (names_push(&out->outputs, &out->n_outputs, &cap_out,
                     val(c, v)->name))
        return ts_err_set(err, TS_ENOMEM, "plan: out of memory");
      if (st->ways < 2) continue;
      const char *name = val(c, v)->name;
      int rc = c->value_kind[v] == VK_BLOCK
                   ? block_fusions(c, s, v, out, &cap_f, err)
                   : add_fusion(out, &cap_f, name,
                                c->value_kind[v] == VK_PARTIAL ? TS_FUSE_SUM
                                                               : TS_FUSE_CONCAT,
                                st->axis, name, "part", 0, 1, st->ways);
      if (rc == TS_ENOMEM) return ts_err_set(err, rc, "plan: out of memory");
      if (rc) return rc;
    }
  }
  out->batch_splittable = stage_batch_splittable(c, s);
  return TS_OK;
}

/* Builds and packs shard k of stage s into out. */
static int build_shard(const ctx *c, int s, int k, const ts_stage *stage,
                       const char *model_name, ts_shard *out, ts_err *err) {
  shard_build b = {.c = c, .s = s, .k = k, .err = err};
  const lstage *st = &c->st[s];
  int rc = TS_OK;
  Onnx__TensorProto **inits = NULL;
  Onnx__GraphProto gp;
  Onnx__ModelProto mp;
  int len = snprintf(out->label, sizeof out->label, "%s/s%d/k%d", model_name,
                     s, k);
  if (len < 0 || (size_t)len >= sizeof out->label)
    snprintf(out->label, sizeof out->label, "%.96s.../s%d/k%d", model_name, s,
             k);

  double flops = 0;
  for (int q = 0; q < st->n_nodes && !rc; q++) {
    rc = emit_node(&b, st->nodes[q]);
    double f = ts_graph_node_flops(c->m, st->nodes[q]) * shard_share(st, k);
    flops += f > 0 ? f : 0;
  }
  if (rc) goto done;

  /* Outputs: the part names of the fusions, or the stage's outputs. */
  for (int q = 0; q < stage->n_outputs; q++) {
    int v = ts_graph_find_value(c->g, stage->outputs[q]);
    const char *name = st->ways > 1 ? local_name(&b, v) : val(c, v)->name;
    Onnx__ValueInfoProto *vi = name ? value_info_of(&b, v, name) : NULL;
    if (!vi) {
      rc = err->code;
      goto done;
    }
    if (grow(&b.outputs, &b.cap_outputs, b.n_outputs + 1,
             sizeof *b.outputs)) {
      rc = oom(&b);
      goto done;
    }
    b.outputs[b.n_outputs++] = vi;
  }

  inits = calloc((size_t)b.n_inits + 1, sizeof *inits);
  if (!inits) {
    rc = oom(&b);
    goto done;
  }
  out->weight_bytes = 0;
  for (int q = 0; q < b.n_inits; q++) {
    if (!(inits[q] = tensor_proto(&b, &b.inits[q]))) {
      rc = err->code;
      goto done;
    }
    out->weight_bytes += inits[q]->raw_data.len;
  }

  onnx__graph_proto__init(&gp);
  gp.name = out->label;
  gp.n_node = (size_t)b.n_nodes;
  gp.node = b.nodes;
  gp.n_initializer = (size_t)b.n_inits;
  gp.initializer = inits;
  gp.n_input = (size_t)b.n_inputs;
  gp.input = b.inputs;
  gp.n_output = (size_t)b.n_outputs;
  gp.output = b.outputs;
  onnx__model_proto__init(&mp);
  const Onnx__ModelProto *src = c->m->proto;
  mp.has_ir_version = src->has_ir_version;
  mp.ir_version = src->ir_version;
  mp.n_opset_import = src->n_opset_import;
  mp.opset_import = src->opset_import;
  mp.producer_name = "tessera-plan";
  mp.graph = &gp;
  out->len = onnx__model_proto__get_packed_size(&mp);
  out->bytes = malloc(out->len ? out->len : 1);
  if (!out->bytes) {
    rc = oom(&b);
    goto done;
  }
  onnx__model_proto__pack(&mp, out->bytes);
  ts_sha256_hex(out->bytes, out->len, out->id);
  out->flops = flops;

  /* The shard's own input and output names. */
  int cap = 0;
  for (int q = 0; q < b.n_inputs && !rc; q++)
    rc = names_push(&out->inputs, &out->n_inputs, &cap, b.inputs[q]->name);
  cap = 0;
  for (int q = 0; q < b.n_outputs && !rc; q++)
    rc = names_push(&out->outputs, &out->n_outputs, &cap, b.outputs[q]->name);
  if (rc) rc = oom(&b);

done:
  free(inits);
  free(b.nodes);
  free(b.inits);
  free(b.inputs);
  free(b.outputs);
  arena_free(&b.a);
  return rc;
}

static void stage_free(ts_stage *st) {
  for (int k = 0; k < st->n_shards; k++) {
    ts_shard *sh = &st->shards[k];
    free(sh->bytes);
    names_free(sh->inputs, sh->n_inputs);
    names_free(sh->outputs, sh->n_outputs);
  }
  free(st->shards);
  for (int f = 0; f < st->n_fusions; f++) {
    free(st->fusions[f].name);
    names_free(st->fusions[f].parts, st->fusions[f].n_parts);
  }
  free(st->fusions);
  names_free(st->inputs, st->n_inputs);
  names_free(st->outputs, st->n_outputs);
}

void ts_plan_free(ts_plan *plan) {
  if (!plan) return;
  for (int s = 0; s < plan->n_stages; s++) stage_free(&plan->stages[s]);
  free(plan->stages);
  free(plan);
}

/* Emits the current layout as a plan. */
static int emit_plan(const ctx *c, const ts_plan_opts *opts,
                     ts_strategy strategy, int replicas, ts_plan **out,
                     ts_err *err) {
  ts_plan *p = calloc(1, sizeof *p);
  int *lu = last_use(c);
  if (!p || !lu || !(p->stages = calloc((size_t)c->n_st, sizeof *p->stages))) {
    free(p), free(lu);
    return ts_err_set(err, TS_ENOMEM, "plan: out of memory");
  }
  p->strategy = strategy;
  p->replicas = replicas;
  const char *name = opts->model_name ? opts->model_name : "model";
  int rc = TS_OK;
  for (int s = 0; s < c->n_st && !rc; s++) {
    ts_stage *st = &p->stages[s];
    p->n_stages = s + 1;
    if ((rc = fill_stage_io(c, s, lu, st, err))) break;
    st->shards = calloc((size_t)c->st[s].ways, sizeof *st->shards);
    if (!st->shards) {
      rc = ts_err_set(err, TS_ENOMEM, "plan: out of memory");
      break;
    }
    for (int k = 0; k < c->st[s].ways && !rc; k++) {
      st->n_shards = k + 1;
      rc = build_shard(c, s, k, st, name, &st->shards[k], err);
      p->weight_bytes += st->shards[k].weight_bytes;
    }
  }
  free(lu);
  if (rc) {
    ts_plan_free(p);
    return rc;
  }
  *out = p;
  return TS_OK;
}

/* ---- auto --------------------------------------------------------------- */

/* Largest weight bytes of any shard of the layout, and their total. */
static int layout_weights(const ctx *c, size_t *max, size_t *total) {
  *max = *total = 0;
  for (int s = 0; s < c->n_st; s++)
    for (int k = 0; k < c->st[s].ways; k++) {
      size_t w;
      if (shard_weight(c, s, k, &w)) return TS_ENOMEM;
      if (w > *max) *max = w;
      *total += w;
    }
  return TS_OK;
}

/* Cuts whole stages whose weights exceed `limit` into consecutive pieces
 * that fit, greedily. Sets *cut when any stage was cut; TS_EEXHAUSTED when
 * one node alone exceeds the limit. */
static int cut_whole_stages(ctx *c, size_t limit, bool *cut, ts_err *err) {
  lstage *old = c->st;
  int n_old = c->n_st;
  c->st = NULL;
  c->n_st = c->cap_st = 0;
  *cut = false;
  int *stamp = calloc((size_t)c->g->n_values + 1, sizeof *stamp);
  int *remap = malloc(((size_t)n_old + 1) * sizeof *remap);
  int rc = stamp && remap ? TS_OK : TS_ENOMEM, piece = 0;
  for (int s = 0; s < n_old && !rc; s++) {
    lstage *st = &old[s];
    size_t w = 0;
    if (st->ways > 1) {
      int ns = stage_new(c, st->ways, st->axis, st->dim);
      if (ns < 0) {
        rc = TS_ENOMEM;
        break;
      }
      c->st[ns].rows = st->rows;
      c->st[ns].kdim = st->kdim;
      for (int q = 0; q < st->n_nodes && !rc; q++)
        rc = stage_add(c, ns, st->nodes[q], c->node_role[st->nodes[q]]);
      remap[s] = ns;
      continue;
    }
    int cur = -1;
    for (int q = 0; q < st->n_nodes && !rc; q++) {
      int i = st->nodes[q];
      const ts_node *n = &c->g->nodes[i];
      /* Bytes this node adds to the current piece (distinct constants). */
      size_t add = 0;
      for (int j = 0; j < n->n_inputs; j++) {
        int v = n->inputs[j];
        if (is_const(c, v) && stamp[v] != piece + 1) add += cst(c, v)->nbytes;
      }
      if (cur >= 0 && w + add > limit) {
        cur = -1;
        *cut = true;
      }
      if (cur < 0) {
        if ((cur = stage_new(c, 1, 0, 1)) < 0) {
          rc = TS_ENOMEM;
          break;
        }
        piece++;
        w = 0;
        add = (size_t)c->node_bytes[i];
      }
      if ((size_t)c->node_bytes[i] > limit) {
        char d[160];
        rc = ts_err_set(err, TS_EEXHAUSTED,
                        "%s alone needs %.0f weight bytes, above the worker "
                        "memory limit of %zu",
                        ts_node_desc(n, d, sizeof d), c->node_bytes[i], limit);
        break;
      }
      for (int j = 0; j < n->n_inputs; j++)
        if (is_const(c, n->inputs[j])) stamp[n->inputs[j]] = piece + 1;
      w += add;
      rc = stage_add(c, cur, i, ROLE_WHOLE);
    }
  }
  /* Split values follow their stage (only split stages have any). */
  for (int v = 0; !rc && v < c->g->n_values; v++)
    if (c->value_stage[v] >= 0) c->value_stage[v] = remap[c->value_stage[v]];
  for (int s = 0; s < n_old; s++) free(old[s].nodes);
  free(old);
  free(stamp);
  free(remap);
  if (rc == TS_ENOMEM) ts_err_set(err, rc, "plan: out of memory");
  return rc;
}

/* True when some live node can split (at `ways` = 2). */
static bool any_splittable(ctx *c) {
  layout_reset(c);
  bool any = false;
  if (layout_range(c, 0, c->n_live, 2) == TS_OK)
    for (int s = 0; s < c->n_st; s++) any |= c->st[s].ways > 1;
  return any;
}

/* Lays out with `ways` (or the context's block grid), cuts whole stages
 * that exceed the worker memory limit, and emits the plan when every shard
 * fits (*done). TS_OK with !*done: try the next candidate. */
static int fit_layout(ctx *c, const ts_plan_opts *opts, int ways, bool splits,
                      ts_err *last_err, bool *done, ts_plan **out,
                      ts_err *err) {
  size_t limit = opts->worker_memory_limit, max = 0, total = 0;
  bool cut = false;
  *done = false;
  layout_reset(c);
  int rc = layout_range(c, 0, c->n_live, ways);
  if (rc) return ts_err_set(err, rc, "plan: out of memory");
  rc = cut_whole_stages(c, limit, &cut, last_err);
  if (rc == TS_EEXHAUSTED) return TS_OK;
  if (rc) return ts_err_set(err, rc, "%s", last_err->msg);
  if ((rc = layout_weights(c, &max, &total)))
    return ts_err_set(err, rc, "plan: out of memory");
  if (max > limit) return TS_OK;
  *done = true;
  /* Every shard fits some worker; all of them together must fit too. */
  if (opts->n_workers > 0 && total / (size_t)opts->n_workers > limit)
    return ts_err_set(err, TS_EEXHAUSTED,
                      "auto plan: shards of %zu weight bytes in all do not "
                      "fit %d workers of %zu bytes",
                      total, opts->n_workers, limit);
  ts_strategy strategy = c->grid_rows ? TS_STRATEGY_BLOCK
                         : !splits    ? TS_STRATEGY_PIPELINE
                         : cut        ? TS_STRATEGY_HYBRID
                                      : TS_STRATEGY_TENSOR;
  return emit_plan(c, opts, strategy, opts->replicas, out, err);
}

/* auto: data when the model fits one worker; else the fewest tensor ways
 * (whole stages cut further where they alone do not fit), or pipeline
 * stages when nothing splits; else the smallest block grid that fits (see
 * the file comment). A shard fits when its weight bytes are within the
 * limit. */
static int plan_auto(ctx *c, const ts_plan_opts *opts, ts_plan **out,
                     ts_err *err) {
  size_t limit = opts->worker_memory_limit, max = 0, total = 0;
  int rc;
  layout_reset(c);
  if ((rc = layout_range(c, 0, c->n_live, 1)) ||
      (rc = layout_weights(c, &max, &total)))
    return ts_err_set(err, rc, "plan: out of memory");
  if (limit == 0 || max <= limit) {
    int replicas = opts->replicas;
    if (replicas == 1 && opts->n_workers > 1) replicas = opts->n_workers;
    return emit_plan(c, opts, TS_STRATEGY_DATA, replicas, out, err);
  }
  int max_ways = opts->n_workers > 0 ? opts->n_workers : 64;
  bool splits = max_ways >= 2 && any_splittable(c);
  int first = splits ? 2 : 1, last = splits ? max_ways : 1;
  ts_err last_err = {0};
  bool done = false;
  for (int ways = first; ways <= last && !rc && !done; ways++)
    rc = fit_layout(c, opts, ways, splits, &last_err, &done, out, err);
  /* Block grids R x C (R >= 2) of at most max_ways cells, fewest cells
   * first, then fewest rows. */
  for (int cells = 2; splits && cells <= max_ways && !rc && !done; cells++)
    for (int r = 2; r <= cells && !rc && !done; r++) {
      if (cells % r) continue;
      c->grid_rows = r;
      c->grid_cols = cells / r;
      rc = fit_layout(c, opts, 1, splits, &last_err, &done, out, err);
    }
  c->grid_rows = c->grid_cols = 0;
  if (rc || done) return rc;
  if (last_err.code)
    return ts_err_set(err, TS_EEXHAUSTED, "auto plan: %s", last_err.msg);
  return ts_err_set(err, TS_EEXHAUSTED,
                    "auto plan: %zu weight bytes do not fit workers of %zu "
                    "bytes even split %d ways",
                    c->m->weight_bytes, limit, last);
}

/* ---- entry point -------------------------------------------------------- */

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
  return TS_OK;
}

int ts_plan_build(const ts_model *model, const ts_plan_opts *opts,
                  ts_plan **out, ts_err *err) {
  *out = NULL;
  int rc = check_opts(model, opts, err);
  if (rc) return rc;
  ctx c;
  rc = ctx_init(&c, model, err);
  if (rc) {
    ctx_free(&c);
    return rc;
  }
  if (c.n_live < 1) {
    ctx_free(&c);
    return ts_err_set(err, TS_EINVAL, "plan: the model computes nothing");
  }
  layout_reset(&c);
  switch (opts->strategy) {
    case TS_STRATEGY_DATA:
      rc = layout_range(&c, 0, c.n_live, 1);
      break;
    case TS_STRATEGY_TENSOR:
      rc = layout_range(&c, 0, c.n_live, opts->shards);
      break;
    case TS_STRATEGY_PIPELINE:
    case TS_STRATEGY_HYBRID:
      if (opts->stages > c.n_live) {
        ctx_free(&c);
        return ts_err_set(err, TS_EINVAL,
                          "plan: %d stages requested but the model has only "
                          "%d nodes to run",
                          opts->stages, c.n_live);
      }
      rc = layout_pipeline(
          &c, opts->stages,
          opts->strategy == TS_STRATEGY_HYBRID ? opts->shards : 1);
      break;
    case TS_STRATEGY_BLOCK:
      c.grid_rows = opts->grid_rows;
      c.grid_cols = opts->grid_cols;
      if (!c.grid_rows) ts_plan_grid(opts->shards, &c.grid_rows, &c.grid_cols);
      rc = layout_range(&c, 0, c.n_live, 1);
      break;
    case TS_STRATEGY_AUTO:
      rc = plan_auto(&c, opts, out, err);
      ctx_free(&c);
      return rc;
  }
  if (rc) {
    ctx_free(&c);
    return ts_err_set(err, rc, "plan: %s", ts_strerror(rc));
  }
  rc = emit_plan(&c, opts, opts->strategy, opts->replicas, out, err);
  ctx_free(&c);
  return rc;
}
