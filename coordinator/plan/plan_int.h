/*
 * plan_int.h - the partitioner's internals, shared by the files of
 * coordinator/plan/ (see plan.h for the data model and the invariant).
 *
 * Not a public interface: only the files of coordinator/plan/ include it.
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
 * a sliced constant, "<b>.zero<k>" for Gemm's zero C before opset 11,
 * and for a product's weight w stored in a reduced precision (plan.h,
 * writer.c) "<w>.<fp16|bf16|int8>" (the small constant), "<w>.scale"
 * (int8's scales) and "<w>.float" (the widened B the product reads), w
 * being the (sliced) constant's name.
 * Symbolic dims are named "<t>:d<i>", one name per tensor and dim.
 *
 * Refused (TS_EUNSUPPORTED): nodes with subgraph attributes (implicit
 * outer-scope inputs), graph outputs that no node computes (a constant or
 * a graph input passed through), constants of string type, and tensors that
 * cross a shard boundary with a dtype inference could not tell.
 *
 * The files, one concern each:
 *   plan.c      the entry point (ts_plan_build): options, strategy switch;
 *   context.c   the context: liveness, consumer lists, layout stages;
 *   rules.c     the split-rule lookup: per-op rules from the one op table,
 *               the ops that split their weights (Gemm, MatMul, Conv);
 *   tensor.c    tensor-parallel split groups (columns, Megatron pairs);
 *   block.c     block (R x C) splits and their nested fusions;
 *   pipeline.c  the pipeline partition (balanced contiguous cuts);
 *   data.c      data parallelism: row rules, batch_splittable;
 *   slice.c     weight slicing: each shard's cut of each constant;
 *   writer.c    writing a shard out as a serialized ONNX ModelProto;
 *   emit.c      a layout as a ts_plan (stage I/O, fusions, shards);
 *   auto.c      the `auto` search;
 *   arena.c     growable arrays, the per-shard arena, string lists.
 */
#ifndef TS_PLAN_INT_H
#define TS_PLAN_INT_H

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "op_list.h"
#include "ops.h"
#include "plan.h"

/* An arena for one shard's temporary protobuf structures: every block is
 * calloc'd and freed together once the shard is packed. */
typedef struct arena {
  void **blocks;
  int n, cap;
} arena;

/* Start of part k of a dim of size c split `ways` ways (floor). */
static inline int64_t part_start(int64_t c, int ways, int k) {
  return (int64_t)(((__int128)c * k) / ways);
}

/* An op's planner rule: its columns of the one op table (op_list.h). */
typedef struct op_rule {
  const char *domain; /* "" for the default domain */
  const char *op_type;
  ts_op_split split;
  ts_op_row row;
  int default_axis; /* of attribute "axis", for TS_OP_ROW_AXIS */
  ts_op_weights weights;
} op_rule;

struct ctx; /* the planner's context, below */

/* The ops that split their weights. Input 1 is the constant weight; the
 * bias (if any) is input `bias`. `weight_axis(n, row)` is the weight axis
 * holding output columns (row = false) or input features (row = true);
 * `in_axis(n, rank)` is the axis of input 0 holding the features (for
 * ROW_SLICE); `out_axis` is the axis of the output holding the columns
 * (the concat axis; -1: last). */
typedef struct split_op {
  bool (*usable)(const struct ctx *c, const ts_node *n, bool row);
  int (*weight_axis)(const ts_node *n, bool row);
  int (*in_axis)(const ts_node *n, int rank);
  int out_axis;
  int bias;
} split_op;

/* A node's part in its layout stage (see "Layout" above). */
typedef enum {
  ROLE_WHOLE,     /* runs unchanged on a whole stage's one shard */
  ROLE_COL,       /* the column-split op a group grew from (fuse: concat) */
  ROLE_ELEM,      /* an element-wise or per-channel op on the slices */
  ROLE_ROW,       /* the row half of a Megatron pair (fuse: sum) */
  ROLE_ROW_SLICE, /* a one-column op split by its input features alone */
  ROLE_BLOCK      /* the one op of a block stage */
} role;

/* What a value is in the stage that splits it: a slice per shard
 * (VK_SPLIT), a partial sum per shard (VK_PARTIAL), or a partial sum of a
 * column block (VK_BLOCK, block stages). */
typedef enum { VK_NONE, VK_SPLIT, VK_PARTIAL, VK_BLOCK } value_kind;

/* A layout stage: nodes that run together, whole or split `ways` ways. */
typedef struct lstage {
  int *nodes;
  int n_nodes, cap;
  int ways;     /* 1: whole; rows * (column ways) */
  int axis;     /* split tensors' axis: -1 (last) or 1 (channels) */
  int64_t dim;  /* size of the split dim (a block's output columns) */
  int rows;     /* block stages: R ways over kdim; 1 otherwise */
  int64_t kdim; /* block stages: the weight's input features */
} lstage;

/* Ways of a stage along its split dim (a block's C). */
static inline int split_ways(const lstage *st) { return st->ways / st->rows; }

/* The planner's context: the model, its live nodes and the layout being
 * built. One per ts_plan_build; auto lays out several times in one. */
typedef struct ctx {
  const ts_model *m;
  const ts_graph *g;
  bool has_slice; /* the executor has Slice: ROW_SLICE possible */
  int n_live;
  int *live;            /* node indices, topological */
  int *pos;             /* node -> position in live[], -1 if not live */
  int *cons_off, *cons; /* consumers per value (live nodes), CSR */
  double *node_bytes;   /* distinct constant bytes a node reads */
  /* layout */
  lstage *st;
  int n_st, cap_st;
  int grid_rows, grid_cols; /* block strategy: the grid; 0 otherwise */
  ts_precision precision;   /* products' weights in the shards (writer.c) */
  int *node_stage;          /* node -> layout stage, -1 */
  uint8_t *node_role;
  int *value_stage; /* value -> stage where it is split/partial, -1 */
  uint8_t *value_kind;
} ctx;

/* Shorthands: value v, whether it is a constant, its constant, and input j
 * of a node (-1 when absent). */
static inline const ts_value *val(const ctx *c, int v) {
  return &c->g->values[v];
}

static inline bool is_const(const ctx *c, int v) {
  return v >= 0 && c->g->values[v].constant != NULL;
}

static inline const ts_tensor *cst(const ctx *c, int v) {
  return c->g->values[v].constant;
}

static inline int in_value(const ts_node *n, int j) {
  return j < n->n_inputs ? n->inputs[j] : -1;
}

/* How a shard cuts a constant: along n (0..2) distinct axes, axis[q] to
 * [start[q], end[q]) (two for a block's weight). */
typedef struct const_cut {
  int n;
  int axis[2];
  int64_t start[2], end[2];
} const_cut;

/* One initializer of a shard: model value v (or -1: synthesized, with its
 * own data), cut as `cut` says. */
typedef struct init_spec {
  int value;
  const_cut cut;
  const char *name; /* arena */
  ts_dtype dtype;   /* synthesized only */
  int rank;
  int64_t dims[TS_MAX_RANK];
  void *data; /* synthesized only; arena */
} init_spec;

/* ---- arena.c: utilities ---------------------------------------------- */

/* Grows *arrp (an array of esz-byte elements, capacity *cap) to hold at
 * least `need`; TS_ENOMEM leaves it as it was. */
int plan_grow(void *arrp, int *cap, int need, size_t esz);
/* Zeroed blocks (and formatted strings) that live until plan_arena_free. */
void *plan_arena_alloc(arena *a, size_t size);
char *plan_arena_printf(arena *a, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void plan_arena_free(arena *a);
/* malloc'd copies; the caller frees (plan_names_free for a list). */
char *plan_strdup(const char *s);
int plan_names_push(char ***list, int *n, int *cap, const char *s);
void plan_names_free(char **list, int n);

/* ---- rules.c: per-op rules ---------------------------------------------- */

/* The rule of n's op; NULL for an op without a kernel (never split, never
 * row-wise; a loaded model has none). */
const op_rule *plan_rule_find(const ts_node *n);
/* The whole rule table, one entry per op of the engine (for tests). */
const op_rule *plan_rules(int *count);
/* The weight-splitting description of n's op; NULL when it has none. */
const split_op *plan_split_op_find(const ts_node *n);
/* True when only output 0 of n may be read by anything. */
bool plan_single_output(const ctx *c, const ts_node *n);

/* ---- context.c: the context and its layout stages ----------------------- */

/* Shard k's range of a stage's split dim (a block's column j = k % C). */
void plan_split_range(const lstage *st, int k, int64_t *start, int64_t *end);
/* Shard k's range of input features (ROW_SLICE: the split dim; a block's
 * row i = k / C). */
void plan_feature_range(const lstage *st, role r, int k, int64_t *start,
                        int64_t *end);
/* The share of a node's work (and weight) shard k of the stage does. */
double plan_shard_share(const lstage *st, int k);
/* Fills c for model m (liveness, consumers, constant bytes); on error c
 * still goes to plan_ctx_free. */
int plan_ctx_init(ctx *c, const ts_model *m, ts_err *err);
/* Empties the layout (every node and value unassigned). */
void plan_layout_reset(ctx *c);
void plan_ctx_free(ctx *c);
/* A new layout stage; its index, or -1 when out of memory. */
int plan_stage_new(ctx *c, int ways, int axis, int64_t dim);
/* Assigns node to stage s with role r. */
int plan_stage_add(ctx *c, int s, int node, role r);

/* ---- the strategies' layouts -------------------------------------------- */

/* tensor.c: how constant v is sliced in a group split along `axis` (see
 * there); lays out live positions [lo, hi) with `ways` (or the context's
 * block grid). */
bool plan_elem_const_axis(const ctx *c, int v, int axis, int r, int64_t dim,
                          int *sl_axis);
int plan_layout_range(ctx *c, int lo, int hi, int ways);
/* block.c: a block split of node i on the context's grid (*made: done);
 * the nested fusions of its output v. */
int plan_try_block(ctx *c, int i, bool *made);
int plan_block_fusions(const ctx *c, int s, int v, ts_stage *out, int *cap,
                       ts_err *err);
/* pipeline.c: `stages` balanced cuts, each laid out with `ways`. */
int plan_layout_pipeline(ctx *c, int stages, int ways);
/* data.c: true when stage s may be cut along its batch (dim 0). */
bool plan_stage_batch_splittable(const ctx *c, int s);

/* ---- slice.c: weight slicing -------------------------------------------- */

/* Bytes of a (possibly cut) constant. */
size_t plan_spec_bytes(const ctx *c, const init_spec *sp);
/* What shard k does with input j of node i in stage s: keep it, cut it
 * (ct->n > 0), or drop it (false). */
bool plan_input_slice(const ctx *c, int s, int k, int i, int j, const_cut *ct);
/* The index of spec (v, ct) in the list, added when new; -1: no memory. */
int plan_spec_intern(init_spec **list, int *n, int *cap, int v,
                     const const_cut *ct);
/* The weight bytes of shard k of stage s. */
int plan_shard_weight(const ctx *c, int s, int k, size_t *bytes);

/* ---- writer.c, emit.c: the plan ----------------------------------------- */

/* Packs shard k of stage s into out (owned by the plan afterwards). */
int plan_build_shard(const ctx *c, int s, int k, const ts_stage *stage,
                     const char *model_name, ts_shard *out, ts_err *err);
/* Appends fusion `name` of parts "<base>.<suffix><first + q*step>". */
int plan_add_fusion(ts_stage *out, int *cap, const char *name,
                    ts_fuse_kind kind, int axis, const char *base,
                    const char *suffix, int first, int step, int n);
/* The current layout as a plan (*out, freed by ts_plan_free). */
int plan_emit(const ctx *c, const ts_plan_opts *opts, ts_strategy strategy,
              int replicas, ts_plan **out, ts_err *err);

/* ---- auto.c ------------------------------------------------------------- */

/* The `auto` strategy (see auto.c). */
int plan_auto(ctx *c, const ts_plan_opts *opts, ts_plan **out, ts_err *err);

#endif
