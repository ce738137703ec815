/*
 * fuzz_config.c - a model repository's config.ini (coordinator/config.c)
 * from untrusted bytes: parsed as the coordinator reads DIR/NAME/config.ini,
 * and the config it yields must satisfy what config_validate promises.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "fuzz_check.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char *text = malloc(size + 1);
  if (!text) return 0;
  memcpy(text, data, size);
  text[size] = '\0';
  ts_model_config c;
  ts_model_config_init(&c, "fuzzed", NULL);
  ts_err err = {0};
  int rc = ts_model_config_parse_ini(&c, text, "fuzzed/config.ini", &err);
  fuzz_check_refusal(rc, &err, "ts_model_config_parse_ini");
  if (rc == TS_OK) {
    if (c.n_members < 0 || c.n_members > TS_ENSEMBLE_MAX ||
        c.n_weights < 0 || c.n_weights > TS_ENSEMBLE_MAX)
      abort();
    if (c.is_ensemble && c.n_members < 2) abort();
  }
  free(text);
  return 0;
}
