/*
 * test_config.c - model repository layouts (config.h):
 * ts_model_repository_scan and ts_model_repository_entry over temporary
 * directories. The files are never loaded here, so a model.onnx is any
 * bytes.
 *
 * Each layout has its case: DIR/NAME/model.onnx (version 1), Triton's
 * DIR/NAME/N/model.onnx (newest served, compared numerically, not as
 * text), a version pinned by config.ini, an ensemble given by config.ini
 * alone, other files and subdirectories ignored; and each refused layout
 * answers TS_EINVAL naming the path at fault: a model file at the top of
 * the repository, a directory that is no model, a version directory
 * without model.onnx, both layouts at once, a pinned version that is not
 * there, a bad name. Confinement to the repository: names that step out
 * of it ("..", "/", absolute, hidden, control characters) are TS_EINVAL;
 * symlinks that resolve outside it (the entry, its model.onnx, a version's
 * model.onnx, config.ini, dangling) are TS_ENOTFOUND; a symlink inside is
 * served. The precision key's values and its refusals, from a spec and an
 * ini.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check_main.h"
#include "config.h"

static char repo[64];

static void path_of(char *out, size_t size, const char *rel) {
  snprintf(out, size, "%s/%s", repo, rel);
}

/* Writes repo/rel (its directories made first) holding `text`. */
static void put(const char *rel, const char *text) {
  char path[PATH_MAX];
  path_of(path, sizeof path, rel);
  for (char *p = path + strlen(repo) + 1; (p = strchr(p, '/')); p++) {
    *p = '\0';
    mkdir(path, 0700);
    *p = '/';
  }
  FILE *f = fopen(path, "w");
  ck_assert_ptr_nonnull(f);
  fputs(text, f);
  fclose(f);
}

static void dir(const char *rel) {
  char path[PATH_MAX];
  path_of(path, sizeof path, rel);
  ck_assert_int_eq(mkdir(path, 0700), 0);
}

static void setup(void) { ts_check_tmpdir(repo, sizeof repo, "tessera_repo"); }

static void teardown(void) { ts_check_rmtree(repo); }

/* Scans the repository, expecting `want` models; returns them. */
static ts_model_config *scan_ok(int want) {
  ts_model_config *list;
  int n;
  ts_err err = {0};
  ck_assert_msg(ts_model_repository_scan(repo, &list, &n, &err) == TS_OK,
                "%s", err.msg);
  ck_assert_int_eq(n, want);
  return list;
}

/* Scans, expecting TS_EINVAL with a message containing repo/rel and `why`. */
static void scan_refused(const char *rel, const char *why) {
  ts_model_config *list = NULL;
  int n = -1;
  ts_err err = {0};
  char path[PATH_MAX];
  path_of(path, sizeof path, rel);
  ck_assert_int_eq(ts_model_repository_scan(repo, &list, &n, &err), TS_EINVAL);
  ck_assert_ptr_null(list);
  ck_assert_int_eq(n, 0);
  ck_assert_msg(strstr(err.msg, path), "'%s' lacks '%s'", err.msg, path);
  ck_assert_msg(strstr(err.msg, why), "'%s' lacks '%s'", err.msg, why);
}

static void assert_path(const ts_model_config *c, const char *rel) {
  char path[PATH_MAX];
  path_of(path, sizeof path, rel);
  ck_assert_str_eq(c->path, path);
}

START_TEST(flat_layout_is_version_1) {
  put("a/model.onnx", "x");
  put("b/model.onnx", "x");
  put("b/config.ini", "max_batch = 4\n");
  put("README.md", "not a model");
  ts_model_config *list = scan_ok(2);
  ck_assert_str_eq(list[0].name, "a");
  assert_path(&list[0], "a/model.onnx");
  ck_assert_int_eq(list[0].version, 1);
  ck_assert_str_eq(list[1].name, "b");
  ck_assert_int_eq(list[1].max_batch, 4);
  ck_assert_int_eq(list[1].version, 1);
  free(list);
}
END_TEST

START_TEST(triton_layout_serves_newest) {
  put("m/1/model.onnx", "x");
  put("m/2/model.onnx", "x");
  put("m/10/model.onnx", "x"); /* 10 > 2: numbers, not text */
  put("m/config.pbtxt", "name: \"m\"\n"); /* Triton's own: not read */
  dir("m/labels");                        /* not a version: ignored */
  ts_model_config *list = scan_ok(1);
  ck_assert_str_eq(list[0].name, "m");
  ck_assert_int_eq(list[0].version, 10);
  assert_path(&list[0], "m/10/model.onnx");
  free(list);
  char buf[TS_VERSION_STR_MAX];
  ts_model_config c;
  ts_err err = {0};
  ck_assert_int_eq(ts_model_repository_entry(repo, "m", &c, &err), TS_OK);
  ck_assert_str_eq(ts_model_config_version_str(&c, buf), "10");
}
END_TEST

START_TEST(config_pins_a_version) {
  put("m/1/model.onnx", "x");
  put("m/3/model.onnx", "x");
  put("m/config.ini", "version = 1\nstrategy = tensor\n");
  ts_model_config c;
  ts_err err = {0};
  ck_assert_msg(ts_model_repository_entry(repo, "m", &c, &err) == TS_OK, "%s",
                err.msg);
  ck_assert_int_eq(c.version, 1);
  assert_path(&c, "m/1/model.onnx");
  ck_assert_int_eq(c.strategy, TS_STRATEGY_TENSOR);
}
END_TEST

START_TEST(pinned_version_missing) {
  put("m/1/model.onnx", "x");
  put("m/config.ini", "version = 7\n");
  scan_refused("m/7/model.onnx", "version 7");
}
END_TEST

START_TEST(ensemble_is_config_only) {
  put("a/model.onnx", "x");
  put("b/1/model.onnx", "x");
  put("e/config.ini", "ensemble = a+b\n");
  ts_model_config *list = scan_ok(3);
  ck_assert_str_eq(list[2].name, "e");
  ck_assert(list[2].is_ensemble);
  ck_assert_int_eq(list[2].n_members, 2);
  free(list);
}
END_TEST

START_TEST(model_file_at_top_refused) {
  put("a/model.onnx", "x");
  put("mlp.onnx", "x");
  scan_refused("mlp.onnx", "DIR/NAME/VERSION/model.onnx");
}
END_TEST

START_TEST(directory_without_model_refused) {
  put("a/model.onnx", "x");
  put("b/model.pt", "x");
  scan_refused("b", "not a model");
}
END_TEST

START_TEST(version_without_model_refused) {
  put("m/1/model.onnx", "x");
  put("m/2/model.plan", "x");
  scan_refused("m/2", "without model.onnx");
}
END_TEST

START_TEST(both_layouts_refused) {
  put("m/model.onnx", "x");
  put("m/1/model.onnx", "x");
  scan_refused("m", "keep one layout");
}
END_TEST

START_TEST(bad_name_refused) {
  put("a b/model.onnx", "x");
  scan_refused("a b", "not a model name");
}
END_TEST

START_TEST(entry_not_there) {
  ts_model_config c;
  ts_err err = {0};
  ck_assert_int_eq(ts_model_repository_entry(repo, "nope", &c, &err),
                   TS_ENOTFOUND);
  ck_assert_ptr_nonnull(strstr(err.msg, "'nope'"));
  ck_assert_ptr_nonnull(strstr(err.msg, repo));
  ck_assert_int_eq(ts_model_repository_entry(repo, "a/../b", &c, &err),
                   TS_EINVAL);
  ck_assert_int_eq(ts_model_repository_entry(repo, "", &c, &err), TS_EINVAL);
}
END_TEST

/* Names a caller could use to step out of the repository: TS_EINVAL. */
START_TEST(escaping_names_refused) {
  put("m/model.onnx", "x");
  put("../outside_model.onnx", "x"); /* beside the repository */
  static const char *const bad[] = {
      "..", ".", ".hidden", "", "/etc", "/", "m/../m", "../m", "a/b",
      "m\n", "m\r\nFORGED", "m\x01", "..\\m",
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    ts_model_config c;
    ts_err err = {0};
    ck_assert_int_eq(ts_model_repository_entry(repo, bad[i], &c, &err),
                     TS_EINVAL);
    ck_assert_msg(strstr(err.msg, "is not a valid repository entry"), "%s",
                  err.msg);
    ck_assert_msg(!strchr(err.msg, '\n') && !strchr(err.msg, '\r'),
                  "unescaped control character in '%s'", err.msg);
  }
  ts_model_config c;
  ts_err err = {0};
  ck_assert_int_eq(ts_model_repository_entry(repo, "m", &c, &err), TS_OK);
  ts_model_repository_entry(repo, "m\n", &c, &err);
  ck_assert_ptr_nonnull(strstr(err.msg, "'m\\x0a'"));
}
END_TEST

/* Symlinks that resolve outside the repository are no entries (TS_ENOTFOUND
 * naming the path); one that stays inside is served. */
START_TEST(symlinks_out_refused) {
  char outside[64], target[PATH_MAX], link[PATH_MAX];
  ts_check_tmpdir(outside, sizeof outside, "tessera_outside");
  snprintf(target, sizeof target, "%s/model.onnx", outside);
  FILE *f = fopen(target, "w");
  ck_assert_ptr_nonnull(f);
  fputs("x", f);
  fclose(f);
  /* the entry itself a link to a directory outside */
  path_of(link, sizeof link, "dirlink");
  ck_assert_int_eq(symlink(outside, link), 0);
  /* model.onnx a link to a file outside */
  put("filelink/config.ini", "strategy = data\n");
  path_of(link, sizeof link, "filelink/model.onnx");
  ck_assert_int_eq(symlink(target, link), 0);
  /* a version's model.onnx a link outside */
  dir("verlink");
  dir("verlink/1");
  path_of(link, sizeof link, "verlink/1/model.onnx");
  ck_assert_int_eq(symlink(target, link), 0);
  /* config.ini a link outside */
  put("inilink/model.onnx", "x");
  path_of(link, sizeof link, "inilink/config.ini");
  ck_assert_int_eq(symlink(target, link), 0);
  /* a dangling link */
  path_of(link, sizeof link, "dangling");
  ck_assert_int_eq(symlink("/nonexistent/tessera", link), 0);
  static const char *const names[] = {"dirlink", "filelink", "verlink",
                                      "inilink", "dangling"};
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
    ts_model_config c;
    ts_err err = {0};
    ck_assert_msg(ts_model_repository_entry(repo, names[i], &c, &err) ==
                      TS_ENOTFOUND, "%s: %d %s", names[i], err.code, err.msg);
    ck_assert_msg(strstr(err.msg, "resolves outside the model repository"),
                  "%s", err.msg);
  }
  /* the scan refuses to start on such a repository */
  ts_model_config *list = NULL;
  int n = -1;
  ts_err err = {0};
  ck_assert_int_eq(ts_model_repository_scan(repo, &list, &n, &err),
                   TS_ENOTFOUND);
  ck_assert_ptr_nonnull(strstr(err.msg, "resolves outside"));
  ts_check_rmtree(outside);
}
END_TEST

START_TEST(symlink_inside_served) {
  put("real/model.onnx", "x");
  char link[PATH_MAX];
  path_of(link, sizeof link, "alias");
  ck_assert_int_eq(symlink("real", link), 0);
  ts_model_config c;
  ts_err err = {0};
  ck_assert_msg(ts_model_repository_entry(repo, "alias", &c, &err) == TS_OK,
                "%s", err.msg);
  assert_path(&c, "alias/model.onnx");
}
END_TEST

/* The text form reads what an ini file says, its errors named after the
 * given name and line, as ts_model_config_load_ini names path and line. */
START_TEST(ini_text_parsed) {
  ts_model_config c;
  ts_model_config_init(&c, "m", NULL);
  ts_err err = {0};
  ck_assert_int_eq(ts_model_config_parse_ini(
                       &c, "[model]\nstrategy = tensor\nshards = 4\n",
                       "m/config.ini", &err),
                   TS_OK);
  ck_assert_int_eq(c.strategy, TS_STRATEGY_TENSOR);
  ck_assert_int_eq(c.shards, 4);
  ck_assert_int_eq(ts_model_config_parse_ini(&c, "shards = 2\n[other]\nx = 1\n",
                                             "m/config.ini", &err),
                   TS_EINVAL);
  ck_assert_str_eq(err.msg, "m/config.ini:3: unknown section [other]");
  ck_assert_int_eq(ts_model_config_parse_ini(&c, "shards\n", "m/config.ini",
                                             &err),
                   TS_EINVAL);
  ck_assert_str_eq(err.msg, "m/config.ini:1: syntax error");
}
END_TEST

/* precision: fp32 by default, each of its four values from a spec and an
 * ini, anything else refused naming the key and the value. */
START_TEST(precision_key) {
  ts_model_config c;
  ts_err err = {0};
  ck_assert_int_eq(ts_model_config_parse_spec("m=m.onnx", &c, &err), TS_OK);
  ck_assert_int_eq(c.precision, TS_PRECISION_FP32);
  static const char *const names[] = {"fp32", "fp16", "bf16", "int8"};
  for (int i = 0; i < 4; i++) {
    char spec[64];
    snprintf(spec, sizeof spec, "m=m.onnx,strategy=tensor,precision=%s",
             names[i]);
    ck_assert_int_eq(ts_model_config_parse_spec(spec, &c, &err), TS_OK);
    ck_assert_int_eq(c.precision, (ts_precision)i);
    ck_assert_str_eq(ts_precision_name((ts_precision)i), names[i]);
  }
  ck_assert_int_eq(ts_model_config_parse_ini(&c, "precision = fp16\n",
                                             "m/config.ini", &err),
                   TS_OK);
  ck_assert_int_eq(c.precision, TS_PRECISION_FP16);
  ck_assert_int_eq(ts_model_config_parse_spec("m=m.onnx,precision=fp64", &c,
                                              &err),
                   TS_EINVAL);
  ck_assert_str_eq(err.msg, "--model m: model key 'precision': 'fp64' is not one of "
                            "fp32|fp16|bf16|int8");
  ck_assert_int_eq(ts_model_config_parse_ini(&c, "precision = INT8\n",
                                             "m/config.ini", &err),
                   TS_EINVAL);
  ck_assert_ptr_nonnull(strstr(err.msg, "m/config.ini:1:"));
  ck_assert_ptr_nonnull(strstr(err.msg, "model key 'precision': 'INT8'"));
  ck_assert_int_eq(ts_precision_parse("int4"), -1);
}
END_TEST

START_TEST(empty_repository_serves_nothing) {
  ts_model_config *list = scan_ok(0);
  free(list);
}
END_TEST

static void cases(Suite *s) {
  TS_CHECK_CASE(s, "repository", 30, setup, teardown,
                flat_layout_is_version_1, triton_layout_serves_newest,
                config_pins_a_version, pinned_version_missing, precision_key,
                ensemble_is_config_only, model_file_at_top_refused,
                directory_without_model_refused, version_without_model_refused,
                both_layouts_refused, bad_name_refused, entry_not_there,
                escaping_names_refused, symlinks_out_refused,
                symlink_inside_served, empty_repository_serves_nothing,
                ini_text_parsed);
}

const ts_check_suite ts_check_this_suite = {.name = "config", .cases = cases};
