/*
 * model_api.h - Triton's model APIs: a served model's ModelConfig and
 * ModelStatistics messages (Triton's model_config.proto and
 * grpc_service.proto, as proto/inference.proto carries them).
 *
 * ModelConfig is built from what Tessera knows of the model: its tensors
 * (registry.h's ts_io_info), its batching keys and its plan. Triton's
 * rules for shapes hold: a model that batches (ts_batcher_batches) reports
 * max_batch_size = its max_batch key and dims without the batch dim, plus
 * dynamic_batching with its window; any other model reports
 * max_batch_size 0 and its full dims (-1 for a dynamic dim). An ensemble
 * reports platform "ensemble" and its members as ensemble_scheduling
 * steps, so a tool can walk to them; other models report platform
 * "onnxruntime_onnx", the name Triton's tools know ONNX models by (their
 * file is ONNX), and backend "tessera", which runs them. The plan goes in
 * `parameters` (strategy, stages, shards, replicas, weight_bytes, plan).
 *
 * ModelStatistics reads the coordinator's metrics (metrics.h), the same
 * counters /metrics exposes.
 *
 * No RPC: frontend.c answers with these. Strings in the messages point into
 * the model (which must outlive the message) or into `arena`; every array
 * comes from `arena`. Depends on registry.h, batcher.h, metrics.h and the
 * generated inference.pb-c.h.
 */
#ifndef TS_FRONTEND_MODEL_API_H
#define TS_FRONTEND_MODEL_API_H

#include "inference.pb-c.h"
#include "registry.h"
#include "rpc_message.h"

/* Fills *out (initialised here) with m's configuration. TS_ENOMEM when the
 * arena runs out. */
int ts_model_api_config(const ts_served_model *m, ts_rpc_arena *arena,
                        Inference__ModelConfig *out, ts_err *err);

/* Fills *out (initialised here) with m's cumulative statistics. TS_ENOMEM
 * when the arena runs out. */
int ts_model_api_statistics(const ts_served_model *m, ts_rpc_arena *arena,
                            Inference__ModelStatistics *out, ts_err *err);

#endif
