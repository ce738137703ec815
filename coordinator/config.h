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
#include <stdio.h>

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
  ts_precision precision;     /* products' weights in shards; default fp32 */
  int max_batch;              /* dynamic batching: 0 = off */
  int64_t batch_delay_us;     /* dynamic batching window */
  int64_t version;            /* the version served and reported (1, or a
                                 repository entry's newest N/) */
  bool version_pinned;        /* `version` came from a key */
  /* ensembles */
  bool is_ensemble;
  int n_members;
  char members[TS_ENSEMBLE_MAX][TS_MODEL_NAME_MAX];
  ts_fuse_kind fuse;          /* mean by default */
  int n_weights;
  double weights[TS_ENSEMBLE_MAX];
} ts_model_config;

/* The served version as the protocol writes it ("1"), in buf. */
#define TS_VERSION_STR_MAX 24
static inline char *ts_model_config_version_str(const ts_model_config *c,
                                                char *buf) {
  snprintf(buf, TS_VERSION_STR_MAX, "%lld", (long long)c->version);
  return buf;
}

/* Defaults for a model named `name` at `path` (either may be NULL). */
void ts_model_config_init(ts_model_config *c, const char *name,
                          const char *path);
/* Parses "NAME=FILE[,key=value...]" or "NAME=ensemble:A+B[,key=value...]". */
int ts_model_config_parse_spec(const char *spec, ts_model_config *c,
                               ts_err *err);
/* Applies the keys of an ini file (no sections, or a [model] section);
 * errors name path and line. */
int ts_model_config_load_ini(ts_model_config *c, const char *path, ts_err *err);
/* The same for the text of an ini file (NUL-terminated), its errors named
 * `name` and line. */
int ts_model_config_parse_ini(ts_model_config *c, const char *text,
                              const char *name, ts_err *err);

/* Reads repository entry DIR/NAME into *c, in one of two layouts:
 *   DIR/NAME/model.onnx               served as version 1 (or `version`)
 *   DIR/NAME/N/model.onnx ...         Triton's: version directories (N a
 *                                     positive integer); the newest served,
 *                                     or the one config.ini's `version` pins
 * plus an optional DIR/NAME/config.ini (an ensemble may be only that).
 * Other subdirectories of NAME are ignored, as Triton does; config.pbtxt is
 * not read. TS_ENOTFOUND when DIR/NAME is not there; TS_EINVAL naming the
 * path for a bad name, a version directory without model.onnx, both
 * layouts at once, or a directory that is none of these. */
int ts_model_repository_entry(const char *dir, const char *name,
                              ts_model_config *c, ts_err *err);

/* Every entry of DIR (ts_model_repository_entry), sorted by name; *out is
 * a malloc'd array the caller frees. A subdirectory that is not a model,
 * or a .onnx file at the top of DIR, fails the scan with its path, so an
 * unknown layout is never served as zero models; other top-level files are
 * ignored. */
int ts_model_repository_scan(const char *dir, ts_model_config **out, int *n,
                             ts_err *err);

#endif
