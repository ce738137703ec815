/*
 * config.h - how a model is to be served: its file, plan and batching keys.
 *
 * The same keys come from three places, all parsed by one table
 * (TS_MODEL_KEYS in config.c), so they can never drift apart:
 *   --model NAME=FILE.onnx[,key=value...]
 *   --model NAME=ensemble:A+B[,fuse=mean|weighted_mean|vote][,weights=1+2]
 *   DIR/NAME/config.ini in a --model-repository (key = value lines)
 * Errors name the key, the value and, for files, the path and line.
 */
#ifndef TS_CONFIG_H
#define TS_CONFIG_H

#include <limits.h>
#include <stdbool.h>
#include <stdint.h>

#include "error.h"
#include "plan.h"

#define TS_MODEL_NAME_MAX 128
#define TS_ENSEMBLE_MAX 16

typedef struct ts_model_config {
  char name[TS_MODEL_NAME_MAX];
  char path[PATH_MAX];        /* the ONNX file; empty for ensembles */
  ts_strategy strategy;       /* default data */
  int shards;                 /* tensor ways (default 2 for tensor/hybrid);
                                 block: R*C of a near-square grid */
  int grid_rows, grid_cols;   /* block: grid=RxC; 0x0 = from shards */
  int stages;                 /* pipeline stages (default 2 for pipeline/hybrid) */
  int replicas;               /* 0 = auto: min(2, live workers) */
  int max_batch;              /* dynamic batching: 0 = off */
  int64_t batch_delay_us;     /* dynamic batching window */
  /* ensembles */
  bool is_ensemble;
  int n_members;
  char members[TS_ENSEMBLE_MAX][TS_MODEL_NAME_MAX];
  ts_fuse_kind fuse;          /* mean by default */
  int n_weights;
  double weights[TS_ENSEMBLE_MAX];
} ts_model_config;

/* Defaults for a model named `name` at `path` (either may be NULL). */
void ts_model_config_init(ts_model_config *c, const char *name,
                          const char *path);
/* Parses "NAME=FILE[,key=value...]" or "NAME=ensemble:A+B[,key=value...]". */
int ts_model_config_parse_spec(const char *spec, ts_model_config *c,
                               ts_err *err);
/* Applies the keys of an ini file (no sections, or a [model] section);
 * errors name path and line. */
int ts_model_config_load_ini(ts_model_config *c, const char *path, ts_err *err);

/* Scans DIR/NAME/model.onnx (+ optional DIR/NAME/config.ini); *out is a
 * malloc'd array the caller frees. Entries without model.onnx and without
 * an ensemble config are skipped. */
int ts_model_repository_scan(const char *dir, ts_model_config **out, int *n,
                             ts_err *err);

#endif
