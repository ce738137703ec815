/*
 * nesting.c - how deep a ModelProto's messages nest, measured on its wire
 * bytes before protobuf-c unpacks them.
 *
 * protobuf-c unpacks nested messages by recursion and has no depth limit,
 * so a 63 KB model whose graphs nest 3 000 levels deep in attribute
 * subgraphs overflows the stack of whichever daemon parses it (a remote
 * crash through LoadShard or a repository load). ts_model_check_nesting()
 * walks only the fields through which ONNX messages can recurse (graphs in
 * attributes, types in sequences, maps and optionals, functions, training
 * graphs) and refuses bytes nested deeper than the limit. Every other field
 * (initializers, strings, tensors) is skipped by its length, so the walk
 * costs little beside the unpack.
 *
 * The walk judges depth only: bytes it cannot read are left for protobuf-c
 * to reject with its own error. That is safe: both read a message's fields
 * in order and protobuf-c fails a message before descending into it when
 * one of its fields is unreadable, so the walk reaches at least every
 * message protobuf-c would. Its own recursion is bounded by the limit.
 */
#include "graph.h"
#include "protowire.h"

/* The messages on recursive paths of onnx.proto. */
typedef enum kind {
  K_NONE, K_MODEL, K_GRAPH, K_NODE, K_ATTRIBUTE, K_FUNCTION, K_VALUE_INFO,
  K_TYPE, K_TYPE_SEQUENCE, K_TYPE_MAP, K_TYPE_OPTIONAL, K_TRAINING
} kind;

/* Which message field `number` of a `parent` holds, K_NONE when it is not
 * on a recursive path (field numbers from onnx.proto). */
static kind child(kind parent, uint64_t number) {
  switch (parent) {
  case K_MODEL: /* graph, training_info, functions */
    return number == 7 ? K_GRAPH : number == 20 ? K_TRAINING
           : number == 25 ? K_FUNCTION : K_NONE;
  case K_TRAINING: /* initialization, algorithm */
    return number == 1 || number == 2 ? K_GRAPH : K_NONE;
  case K_GRAPH: /* node; input, output, value_info */
    return number == 1 ? K_NODE
           : number >= 11 && number <= 13 ? K_VALUE_INFO : K_NONE;
  case K_NODE: /* attribute */
    return number == 5 ? K_ATTRIBUTE : K_NONE;
  case K_FUNCTION: /* node, attribute_proto */
    return number == 7 ? K_NODE : number == 11 ? K_ATTRIBUTE : K_NONE;
  case K_ATTRIBUTE: /* g, graphs, tp */
    return number == 6 || number == 11 ? K_GRAPH
           : number == 14 ? K_TYPE : K_NONE;
  case K_VALUE_INFO: /* type */
    return number == 2 ? K_TYPE : K_NONE;
  case K_TYPE: /* sequence_type, map_type, optional_type */
    return number == 4 ? K_TYPE_SEQUENCE : number == 5 ? K_TYPE_MAP
           : number == 9 ? K_TYPE_OPTIONAL : K_NONE;
  case K_TYPE_SEQUENCE: /* elem_type */
  case K_TYPE_OPTIONAL:
    return number == 1 ? K_TYPE : K_NONE;
  case K_TYPE_MAP: /* value_type */
    return number == 2 ? K_TYPE : K_NONE;
  case K_NONE:
    break;
  }
  return K_NONE;
}

typedef enum walk { W_OK, W_DEEP, W_UNREADABLE } walk;

/* Walks the message of kind k in [p, end) at depth `depth` (the model is
 * depth 1). */
static walk walk_message(kind k, const uint8_t *p, const uint8_t *end,
                         int depth, int limit) {
  if (depth > limit) return W_DEEP;
  ts_wire_cursor c = {p, end};
  ts_wire_field f;
  while (c.p < c.end) {
    if (!ts_wire_next(&c, &f)) return W_UNREADABLE;
    kind sub = f.type == TS_WT_LEN ? child(k, f.number) : K_NONE;
    if (sub == K_NONE) continue;
    walk w = walk_message(sub, f.value, f.end, depth + 1, limit);
    if (w != W_OK) return w;
  }
  return W_OK;
}

int ts_model_check_nesting(const uint8_t *bytes, size_t len, int limit,
                           ts_err *err) {
  if (!bytes) return TS_OK;
  if (walk_message(K_MODEL, bytes, bytes + len, 1, limit) == W_DEEP)
    return ts_err_set(err, TS_EINVAL,
                      "model nests messages (subgraphs or types) deeper "
                      "than the limit of %d levels",
                      limit);
  return TS_OK;
}
