/*
 * config.c - model keys: one declarative table, three front ends (command
 * line spec, config.ini, repository scan). See config.h.
 */
#include "config.h"
#include "options.h"

#include <dirent.h>
#include <errno.h>
#include <ini.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

typedef int (*key_setter)(ts_model_config *c, const char *value, ts_err *err);

static int parse_int(const char *key, const char *value, long lo, long hi,
                     long *out, ts_err *err) {
  long long v;
  int rc = ts_integer_parse(value, lo, hi, &v, err);
  if (rc) {
    if (err) ts_err_prefix(err, "model key '%s'", key);
    return rc;
  }
  *out = (long)v;
  return TS_OK;
}

static int set_strategy(ts_model_config *c, const char *v, ts_err *err) {
  int s = ts_strategy_parse(v);
  if (s < 0)
    return ts_err_set(err, TS_EINVAL,
                      "model key 'strategy': '%s' is not one of "
                      "data|tensor|pipeline|hybrid|auto|block", v);
  c->strategy = (ts_strategy)s;
  return TS_OK;
}

static int set_precision(ts_model_config *c, const char *v, ts_err *err) {
  int p = ts_precision_parse(v);
  if (p < 0)
    return ts_err_set(err, TS_EINVAL,
                      "model key 'precision': '%s' is not one of "
                      "fp32|fp16|bf16|int8", v);
  c->precision = (ts_precision)p;
  return TS_OK;
}

#define INT_SETTER(field, lo, hi)                                        \
  static int set_##field(ts_model_config *c, const char *v, ts_err *err) { \
    long x;                                                              \
    int rc = parse_int(#field, v, lo, hi, &x, err);                      \
    if (rc == TS_OK) c->field = x;                                       \
    return rc;                                                           \
  }
INT_SETTER(shards, 1, 64)
INT_SETTER(stages, 1, 64)
INT_SETTER(replicas, 1, 64)
INT_SETTER(max_batch, 0, 65536)
INT_SETTER(batch_delay_us, 0, 10000000)
#undef INT_SETTER

/* version = N: the version served (and reported); in a repository entry
 * with version directories, the one to serve instead of the newest. */
static int set_version(ts_model_config *c, const char *v, ts_err *err) {
  long x;
  int rc = parse_int("version", v, 1, 2147483647L, &x, err);
  if (rc == TS_OK) {
    c->version = x;
    c->version_pinned = true;
  }
  return rc;
}

/* grid=RxC: R ways over a weight's input rows, C over its output columns;
 * R*C is a shard count, so at most 64 like `shards`. */
static int set_grid(ts_model_config *c, const char *v, ts_err *err) {
  long dims[2];
  const char *p = v;
  for (int q = 0; q < 2; q++) {
    char *end;
    errno = 0;
    dims[q] = p[0] >= '0' && p[0] <= '9' ? strtol(p, &end, 10) : -1;
    if (dims[q] < 1 || dims[q] > 64 || errno || *end != (q == 0 ? 'x' : '\0')) {
      dims[0] = -1;
      break;
    }
    p = end + 1;
  }
  if (dims[0] < 1 || dims[0] * dims[1] > 64)
    return ts_err_set(err, TS_EINVAL,
                      "model key 'grid': '%s' is not RxC with R, C >= 1 and "
                      "R*C <= 64 (e.g. 2x3)", v);
  c->grid_rows = (int)dims[0];
  c->grid_cols = (int)dims[1];
  return TS_OK;
}

static int set_fuse(ts_model_config *c, const char *v, ts_err *err) {
  int f = ts_fuse_parse(v);
  if (f != TS_FUSE_MEAN && f != TS_FUSE_WEIGHTED_MEAN && f != TS_FUSE_VOTE)
    return ts_err_set(err, TS_EINVAL,
                      "model key 'fuse': '%s' is not one of "
                      "mean|weighted_mean|vote", v);
  c->fuse = (ts_fuse_kind)f;
  return TS_OK;
}

/* Splits "a+b+c" into at most `max` tokens of at most `size` bytes. */
static int split_plus(const char *key, const char *v, char *out, size_t size,
                      int max, int *n, ts_err *err) {
  *n = 0;
  const char *p = v;
  while (*p) {
    const char *q = strchr(p, '+');
    size_t len = q ? (size_t)(q - p) : strlen(p);
    if (len == 0 || len >= size || *n == max)
      return ts_err_set(err, TS_EINVAL,
                        "model key '%s': '%s' is not a list a+b+... of at "
                        "most %d non-empty items", key, v, max);
    memcpy(out + (size_t)*n * size, p, len);
    out[(size_t)*n * size + len] = '\0';
    (*n)++;
    p = q ? q + 1 : p + len;
  }
  if (*n == 0)
    return ts_err_set(err, TS_EINVAL, "model key '%s' is empty", key);
  return TS_OK;
}

static int set_weights(ts_model_config *c, const char *v, ts_err *err) {
  char items[TS_ENSEMBLE_MAX][32];
  int n;
  int rc = split_plus("weights", v, &items[0][0], sizeof items[0],
                      TS_ENSEMBLE_MAX, &n, err);
  if (rc) return rc;
  for (int i = 0; i < n; i++) {
    char *end;
    errno = 0;
    double w = strtod(items[i], &end);
    if (errno || *end != '\0' || !(w >= 0.0) || w > 1e9)
      return ts_err_set(err, TS_EINVAL,
                        "model key 'weights': '%s' is not a non-negative "
                        "number", items[i]);
    c->weights[i] = w;
  }
  c->n_weights = n;
  return TS_OK;
}

static int set_members(ts_model_config *c, const char *v, ts_err *err) {
  int rc = split_plus("ensemble", v, &c->members[0][0], sizeof c->members[0],
                      TS_ENSEMBLE_MAX, &c->n_members, err);
  if (rc) return rc;
  c->is_ensemble = true;
  c->path[0] = '\0';
  return TS_OK;
}

/* The one table of model keys: name, setter, help. */
#define TS_MODEL_KEYS(X)                                                     \
  X("strategy", set_strategy, "data|tensor|pipeline|hybrid|auto|block")      \
  X("shards", set_shards, "tensor-parallel ways per split op")               \
  X("grid", set_grid, "block: RxC grid over a weight's rows and columns")    \
  X("stages", set_stages, "pipeline stages")                                 \
  X("replicas", set_replicas, "copies of every shard on distinct workers")   \
  X("precision", set_precision, "products' weights: fp32|fp16|bf16|int8")    \
  X("max_batch", set_max_batch, "dynamic batching: largest batch (0 = off)") \
  X("batch_delay_us", set_batch_delay_us, "dynamic batching window")         \
  X("ensemble", set_members, "member models a+b+...")                        \
  X("fuse", set_fuse, "ensemble fusion: mean|weighted_mean|vote")            \
  X("weights", set_weights, "ensemble weights w1+w2+...")                 \
  X("version", set_version, "the version served (default: 1, or newest)")

static const struct {
  const char *key;
  key_setter set;
  const char *help;
} model_keys[] = {
#define TS_X(k, fn, h) {k, fn, h},
    TS_MODEL_KEYS(TS_X)
#undef TS_X
};

void ts_model_config_init(ts_model_config *c, const char *name,
                          const char *path) {
  memset(c, 0, sizeof *c);
  if (name) snprintf(c->name, sizeof c->name, "%s", name);
  if (path) snprintf(c->path, sizeof c->path, "%s", path);
  c->strategy = TS_STRATEGY_DATA;
  c->shards = 2;
  c->stages = 2;
  c->replicas = 0; /* auto: min(2, live workers) */
  c->batch_delay_us = 500;
  c->fuse = TS_FUSE_MEAN;
  c->version = 1;
}

/* Applies one key = value. TS_EINVAL naming key and value when unknown or
 * malformed. */
static int config_validate(const ts_model_config *c, ts_err *err);

static int config_set(ts_model_config *c, const char *key, const char *value,
                      ts_err *err) {
  for (size_t i = 0; i < sizeof model_keys / sizeof model_keys[0]; i++)
    if (strcmp(key, model_keys[i].key) == 0)
      return model_keys[i].set(c, value, err);
  return ts_err_set(err, TS_EINVAL,
                    "unknown model key '%s' (known: strategy, shards, grid, stages, "
                    "replicas, precision, max_batch, batch_delay_us, ensemble, "
                    "fuse, weights, version)", key);
}

static int valid_name(const char *s) {
  if (!*s) return 0;
  for (; *s; s++)
    if (!(('a' <= *s && *s <= 'z') || ('A' <= *s && *s <= 'Z') ||
          ('0' <= *s && *s <= '9') || *s == '_' || *s == '-' || *s == '.'))
      return 0;
  return 1;
}

int ts_model_config_parse_spec(const char *spec, ts_model_config *c,
                               ts_err *err) {
  const char *eq = strchr(spec, '=');
  if (!eq || eq == spec)
    return ts_err_set(err, TS_EINVAL,
                      "--model '%s': expected NAME=FILE.onnx[,key=value...]",
                      spec);
  size_t name_len = (size_t)(eq - spec);
  if (name_len >= TS_MODEL_NAME_MAX)
    return ts_err_set(err, TS_EINVAL, "--model '%s': name too long", spec);
  char name[TS_MODEL_NAME_MAX];
  memcpy(name, spec, name_len);
  name[name_len] = '\0';
  if (!valid_name(name))
    return ts_err_set(err, TS_EINVAL,
                      "--model '%s': name '%s' may use only letters, digits, "
                      "'_', '-' and '.'", spec, name);
  ts_model_config_init(c, name, NULL);

  char *rest = strdup(eq + 1);
  if (!rest) return ts_err_set(err, TS_ENOMEM, "out of memory");
  char *save = NULL;
  int rc = TS_OK;
  int first = 1;
  for (char *tok = strtok_r(rest, ",", &save); tok && rc == TS_OK;
       tok = strtok_r(NULL, ",", &save), first = 0) {
    if (first) {
      if (strncmp(tok, "ensemble:", 9) == 0)
        rc = set_members(c, tok + 9, err);
      else if (strlen(tok) >= sizeof c->path)
        rc = ts_err_set(err, TS_EINVAL, "--model %s: path too long", name);
      else
        snprintf(c->path, sizeof c->path, "%s", tok);
      continue;
    }
    char *kv = strchr(tok, '=');
    if (!kv) {
      rc = ts_err_set(err, TS_EINVAL, "--model %s: '%s' is not key=value",
                      name, tok);
      break;
    }
    *kv = '\0';
    rc = config_set(c, tok, kv + 1, err);
    if (rc) ts_err_prefix(err, "--model %s", name);
  }
  free(rest);
  if (rc == TS_OK && !c->is_ensemble && !c->path[0])
    rc = ts_err_set(err, TS_EINVAL, "--model %s: no file given", name);
  if (rc == TS_OK) rc = config_validate(c, err);
  return rc;
}

typedef struct ini_ctx {
  ts_model_config *config;
  ts_err *err;
  int failed;
} ini_ctx;

static int on_ini_entry(void *user, const char *section, const char *key,
                       const char *value) {
  ini_ctx *ctx = user;
  if (ctx->failed) return 0;
  if (section[0] && strcmp(section, "model") != 0) {
    ts_err_set(ctx->err, TS_EINVAL, "unknown section [%s]", section);
    ctx->failed = 1;
    return 0;
  }
  if (config_set(ctx->config, key, value, ctx->err)) {
    ctx->failed = 1;
    return 0;
  }
  return 1;
}

/* What ini_parse* returned (0, a line number, or negative: the file could
 * not be opened or memory ran out) as our error, named `where`. */
static int ini_result(int line, const ini_ctx *ctx, const char *where) {
  if (line < 0)
    return ts_err_set(ctx->err, TS_EINVAL, "%s: cannot open: %s", where,
                      strerror(errno));
  if (line > 0) {
    if (!ctx->failed) ts_err_set(ctx->err, TS_EINVAL, "syntax error");
    return ts_err_prefix(ctx->err, "%s:%d", where, line);
  }
  return config_validate(ctx->config, ctx->err);
}

int ts_model_config_load_ini(ts_model_config *c, const char *path,
                             ts_err *err) {
  ini_ctx ctx = {c, err, 0};
  return ini_result(ini_parse(path, on_ini_entry, &ctx), &ctx, path);
}

int ts_model_config_parse_ini(ts_model_config *c, const char *text,
                              const char *name, ts_err *err) {
  ini_ctx ctx = {c, err, 0};
  return ini_result(ini_parse_string(text, on_ini_entry, &ctx), &ctx, name);
}

/* Checks cross-key consistency (weights count = members, fuse values). */
static int config_validate(const ts_model_config *c, ts_err *err) {
  if (c->is_ensemble) {
    if (c->n_members < 2)
      return ts_err_set(err, TS_EINVAL,
                        "model %s: an ensemble needs at least 2 members",
                        c->name);
    if (c->fuse == TS_FUSE_WEIGHTED_MEAN && c->n_weights != c->n_members)
      return ts_err_set(err, TS_EINVAL,
                        "model %s: weighted_mean needs one weight per member "
                        "(%d members, %d weights)", c->name, c->n_members,
                        c->n_weights);
    for (int i = 0; i < c->n_members; i++)
      if (strcmp(c->members[i], c->name) == 0)
        return ts_err_set(err, TS_EINVAL,
                          "model %s: an ensemble cannot contain itself",
                          c->name);
  } else if (c->grid_rows && c->strategy != TS_STRATEGY_BLOCK) {
    return ts_err_set(err, TS_EINVAL,
                      "model %s: 'grid' applies to strategy=block, not "
                      "strategy=%s", c->name, ts_strategy_name(c->strategy));
  } else if (c->n_weights && c->fuse != TS_FUSE_WEIGHTED_MEAN) {
    return ts_err_set(err, TS_EINVAL,
                      "model %s: 'weights' applies to ensembles with "
                      "fuse=weighted_mean", c->name);
  }
  return TS_OK;
}

static int cmp_config_name(const void *a, const void *b) {
  return strcmp(((const ts_model_config *)a)->name,
                ((const ts_model_config *)b)->name);
}

/* A version directory's name: digits only, a positive int32. */
static long version_of(const char *s) {
  long v = 0;
  if (!*s) return -1;
  for (; *s; s++) {
    if (*s < '0' || *s > '9' || v > 214748364L) return -1;
    v = v * 10 + (*s - '0');
  }
  return v >= 1 && v <= 2147483647L ? v : -1;
}

static int is_file(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

static int is_dir(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* The version directories of entry `dir` (Triton's NAME/V/model.onnx):
 * *newest gets the highest V, *count how many there are; 0 when none. A
 * version directory without model.onnx is refused, naming it. */
static int scan_versions(const char *dir, long *newest, int *count,
                         ts_err *err) {
  *newest = 0;
  *count = 0;
  DIR *d = opendir(dir);
  if (!d)
    return ts_err_set(err, TS_ENOTFOUND, "%s: %s", dir, strerror(errno));
  int rc = TS_OK;
  struct dirent *e;
  while (rc == TS_OK && (e = readdir(d))) {
    long v = version_of(e->d_name);
    char path[PATH_MAX], model[PATH_MAX];
    if (v < 0 ||
        (size_t)snprintf(path, sizeof path, "%s/%s", dir, e->d_name) >=
            sizeof path ||
        !is_dir(path))
      continue; /* not a version: Triton ignores such entries too */
    if ((size_t)snprintf(model, sizeof model, "%s/model.onnx", path) >=
            sizeof model ||
        !is_file(model)) {
      rc = ts_err_set(err, TS_EINVAL,
                      "%s: a version directory without model.onnx", path);
      break;
    }
    (*count)++;
    if (v > *newest) *newest = v;
  }
  closedir(d);
  return rc;
}

/* Whether `path` resolves (symlinks followed) to `root` or below it;
 * `root` is a realpath. A path that does not resolve is not inside. */
static int resolves_inside(const char *root, const char *path) {
  char real[PATH_MAX];
  size_t n = strlen(root);
  if (!realpath(path, real)) return 0;
  return strncmp(real, root, n) == 0 &&
         (real[n] == '/' || real[n] == '\0' || (n == 1 && root[0] == '/'));
}

/* TS_ENOTFOUND unless `path` (when it exists) stays inside `root`: a
 * symlink out of the repository is treated as no entry at all, so a
 * caller naming a model reads nothing outside --model-repository. */
static int confined(const char *root, const char *name, const char *path,
                    ts_err *err) {
  struct stat st;
  if (lstat(path, &st) != 0 || resolves_inside(root, path)) return TS_OK;
  return ts_err_set(err, TS_ENOTFOUND,
                    "model '%s': %s resolves outside the model repository",
                    name, path);
}

int ts_model_repository_entry(const char *repository, const char *name,
                              ts_model_config *c, ts_err *err) {
  char dir[PATH_MAX], flat[PATH_MAX], ini[PATH_MAX], versioned[PATH_MAX];
  char root[PATH_MAX];
  if (!valid_name(name) || name[0] == '.' ||
      strlen(name) >= TS_MODEL_NAME_MAX ||
      (size_t)snprintf(dir, sizeof dir, "%s/%s", repository, name) >=
          sizeof dir ||
      (size_t)snprintf(flat, sizeof flat, "%s/model.onnx", dir) >=
          sizeof flat ||
      (size_t)snprintf(ini, sizeof ini, "%s/config.ini", dir) >= sizeof ini) {
    char shown[2 * TS_MODEL_NAME_MAX];
    ts_text_escape(name, TS_MODEL_NAME_MAX, shown, sizeof shown);
    return ts_err_set(err, TS_EINVAL,
                      "model name '%s' is not a valid repository entry (a "
                      "name of letters, digits, '_', '-' and '.', not "
                      "starting with '.')", shown);
  }
  if (!realpath(repository, root))
    return ts_err_set(err, TS_ENOTFOUND, "model repository %s: %s",
                      repository, strerror(errno));
  int rc;
  if ((rc = confined(root, name, dir, err))) return rc;
  if (!is_dir(dir))
    return ts_err_set(err, TS_ENOTFOUND,
                      "model '%s' is not in the repository %s", name,
                      repository);
  if ((rc = confined(root, name, flat, err)) ||
      (rc = confined(root, name, ini, err)))
    return rc;
  long newest;
  int n_versions;
  rc = scan_versions(dir, &newest, &n_versions, err);
  if (rc) return rc;
  int has_flat = is_file(flat), has_ini = is_file(ini);
  if (has_flat && n_versions)
    return ts_err_set(err, TS_EINVAL,
                      "%s: both model.onnx and version directories "
                      "(N/model.onnx); keep one layout", dir);
  if (!has_flat && !n_versions && !has_ini)
    return ts_err_set(err, TS_EINVAL,
                      "%s: not a model: expected model.onnx, version "
                      "directories N/model.onnx (Triton's layout) or an "
                      "ensemble's config.ini", dir);
  ts_model_config_init(c, name, has_flat ? flat : NULL);
  if (n_versions) c->version = newest;
  if (has_ini && (rc = ts_model_config_load_ini(c, ini, err))) return rc;
  if (n_versions && !c->is_ensemble) {
    if ((size_t)snprintf(versioned, sizeof versioned, "%s/%ld/model.onnx",
                         dir, (long)c->version) >= sizeof versioned ||
        !is_file(versioned))
      return ts_err_set(err, TS_EINVAL,
                        "%s: version %ld: no %s/%ld/model.onnx", ini,
                        (long)c->version, dir, (long)c->version);
    if ((rc = confined(root, name, versioned, err))) return rc;
    snprintf(c->path, sizeof c->path, "%s", versioned);
  }
  if (!c->is_ensemble && !c->path[0])
    return ts_err_set(err, TS_EINVAL, "%s: no model.onnx and no ensemble",
                      ini);
  return TS_OK;
}

/* A model file at the top of the repository: a layout Tessera refuses
 * rather than serving nothing in silence. */
static int is_onnx_name(const char *s) {
  size_t n = strlen(s);
  return n > 5 && strcmp(s + n - 5, ".onnx") == 0;
}

int ts_model_repository_scan(const char *dir, ts_model_config **out, int *n,
                             ts_err *err) {
  *out = NULL;
  *n = 0;
  DIR *d = opendir(dir);
  if (!d)
    return ts_err_set(err, TS_ENOTFOUND, "model repository %s: %s", dir,
                      strerror(errno));
  int cap = 0, rc = TS_OK;
  ts_model_config *list = NULL;
  struct dirent *e;
  while ((e = readdir(d)) && rc == TS_OK) {
    char path[PATH_MAX];
    if (e->d_name[0] == '.') continue;
    if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, e->d_name) >=
        sizeof path) {
      rc = ts_err_set(err, TS_EINVAL, "%s/%s: path too long", dir, e->d_name);
      break;
    }
    if (!is_dir(path)) {
      if (is_onnx_name(e->d_name))
        rc = ts_err_set(err, TS_EINVAL,
                        "%s: a model file at the top of the repository; "
                        "put it in DIR/NAME/model.onnx or "
                        "DIR/NAME/VERSION/model.onnx", path);
      continue; /* other files (a README) are no models */
    }
    if (*n == cap) {
      cap = cap ? cap * 2 : 8;
      ts_model_config *grown = realloc(list, (size_t)cap * sizeof *list);
      if (!grown) {
        rc = ts_err_set(err, TS_ENOMEM, "out of memory");
        break;
      }
      list = grown;
    }
    rc = ts_model_repository_entry(dir, e->d_name, &list[*n], err);
    if (rc == TS_EINVAL && !valid_name(e->d_name))
      ts_err_set(err, TS_EINVAL,
                 "%s: '%s' is not a model name (letters, digits, '_', '-' "
                 "and '.')", path, e->d_name);
    if (rc == TS_OK) (*n)++;
  }
  closedir(d);
  if (rc) {
    free(list);
    *n = 0;
    return rc;
  }
  if (*n) qsort(list, (size_t)*n, sizeof *list, cmp_config_name);
  *out = list;
  return TS_OK;
}
