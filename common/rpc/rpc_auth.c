/*
 * rpc_auth.c - the access check every server call passes before its
 * handler: certificate roles (SPIFFE IDs) and bearer tokens. See rpc_auth.h
 * for the rules; this file keeps them in one place.
 *
 * Invariants: a->tokens is replaced whole under the write lock by a reload
 * and read under the read lock, so a check sees one file's tokens; a token
 * file that fails to parse leaves the old tokens in force.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <grpc/grpc.h>
#include <grpc/grpc_security.h>

#include "log.h"
#include "rpc_auth.h"
#include "rpc_int.h"

#define TOKEN_MAX 512
#define TOKEN_FILE_MAX_LINES 4096

typedef struct token {
  char value[TOKEN_MAX];
  size_t len;
  unsigned roles; /* infer: client; admin: admin */
} token;

struct ts_rpc_auth {
  char trust_domain[TS_TRUST_DOMAIN_MAX];
  bool mtls;
  char *token_file; /* NULL: no tokens */
  pthread_rwlock_t lock;
  token *tokens;
  int n_tokens;
  char secret[TS_CLUSTER_SECRET_MAX]; /* "": none */
  size_t secret_len;
};

static const struct {
  const char *name;
  unsigned bit;
} role_names[] = {
    {"coordinator", TS_ROLE_COORDINATOR},
    {"worker", TS_ROLE_WORKER},
    {"admin", TS_ROLE_ADMIN},
    {"client", TS_ROLE_CLIENT},
};
#define N_ROLES (sizeof role_names / sizeof role_names[0])

unsigned ts_role_from_spiffe(const char *id, size_t len, const char *domain) {
  static const char scheme[] = "spiffe://";
  size_t sl = sizeof scheme - 1, dl = strlen(domain);
  if (len < sl + dl + 2 || memcmp(id, scheme, sl) != 0 ||
      memcmp(id + sl, domain, dl) != 0 || id[sl + dl] != '/')
    return 0;
  const char *role = id + sl + dl + 1;
  size_t rl = len - (size_t)(role - id);
  const char *slash = memchr(role, '/', rl);
  if (slash) rl = (size_t)(slash - role);
  for (size_t i = 0; i < N_ROLES; i++)
    if (strlen(role_names[i].name) == rl &&
        memcmp(role_names[i].name, role, rl) == 0)
      return role_names[i].bit;
  return 0;
}

void ts_roles_describe(unsigned roles, char *buf, size_t size) {
  size_t used = 0;
  if (size == 0) return;
  buf[0] = '\0';
  for (size_t i = 0; i < N_ROLES; i++) {
    if (!(roles & role_names[i].bit)) continue;
    int n = snprintf(buf + used, size - used, "%s%s", used ? " or " : "",
                     role_names[i].name);
    if (n < 0 || (size_t)n >= size - used) return;
    used += (size_t)n;
  }
}

/* ---- tokens ------------------------------------------------------------- */

/* Parses "TOKEN ROLE" lines ('#' comments and blank lines skipped) of
 * `path` into a malloc'd array. Errors name the path and line. */
static int tokens_read(const char *path, token **out, int *n_out,
                       ts_err *err) {
  FILE *f = fopen(path, "r");
  if (!f)
    return ts_err_set(err, TS_EINVAL, "--auth-token-file '%s': %s", path,
                      strerror(errno));
  token *tokens = calloc(TOKEN_FILE_MAX_LINES, sizeof *tokens);
  if (!tokens) {
    fclose(f);
    return ts_err_set(err, TS_ENOMEM, "--auth-token-file: no memory");
  }
  char line[TOKEN_MAX + 64];
  int n = 0, lineno = 0, rc = 0;
  while (rc == 0 && fgets(line, sizeof line, f)) {
    lineno++;
    char *save = NULL;
    char *value = strtok_r(line, " \t\r\n", &save);
    if (!value || value[0] == '#') continue;
    char *role = strtok_r(NULL, " \t\r\n", &save);
    char *extra = role ? strtok_r(NULL, " \t\r\n", &save) : NULL;
    unsigned roles = 0;
    if (role && strcmp(role, "infer") == 0) roles = TS_ROLE_CLIENT;
    if (role && strcmp(role, "admin") == 0) roles = TS_ROLE_ADMIN;
    if (!roles || extra || strlen(value) >= TOKEN_MAX ||
        n == TOKEN_FILE_MAX_LINES)
      rc = ts_err_set(err, TS_EINVAL,
                      "--auth-token-file %s:%d: expected 'TOKEN ROLE' with "
                      "ROLE infer or admin (a token of at most %d bytes, at "
                      "most %d lines)",
                      path, lineno, TOKEN_MAX - 1, TOKEN_FILE_MAX_LINES);
    else {
      tokens[n].len = strlen(value);
      memcpy(tokens[n].value, value, tokens[n].len);
      tokens[n++].roles = roles;
    }
  }
  fclose(f);
  if (rc == 0 && n == 0)
    rc = ts_err_set(err, TS_EINVAL, "--auth-token-file %s: no token", path);
  if (rc < 0) {
    free(tokens);
    return rc;
  }
  *out = tokens;
  *n_out = n;
  return 0;
}

/* Equal without a data-dependent early exit: the time depends only on the
 * two lengths, not on where the bytes differ. */
static bool equal_constant_time(const char *a, size_t alen, const char *b,
                                size_t blen) {
  size_t n = alen > blen ? alen : blen;
  unsigned char diff = alen != blen;
  for (size_t i = 0; i < n; i++)
    diff |= (unsigned char)((i < alen ? a[i] : 0) ^ (i < blen ? b[i] : 0));
  return diff == 0;
}

/* The roles of the presented token, or 0 (unknown). Every token of the
 * file is compared, whichever matches. Read lock held. */
static unsigned token_roles(const ts_rpc_auth *a, const char *value,
                            size_t len) {
  unsigned roles = 0;
  for (int i = 0; i < a->n_tokens; i++)
    if (equal_constant_time(a->tokens[i].value, a->tokens[i].len, value, len))
      roles |= a->tokens[i].roles;
  return roles;
}

int ts_rpc_auth_create(const char *trust_domain, bool mtls,
                       const char *token_file, ts_rpc_auth **out,
                       ts_err *err) {
  *out = NULL;
  const char *td = trust_domain ? trust_domain : TS_TRUST_DOMAIN_DEFAULT;
  if (!td[0] || strlen(td) >= TS_TRUST_DOMAIN_MAX || strchr(td, '/'))
    return ts_err_set(err, TS_EINVAL,
                      "--trust-domain '%s': expected a name without '/'", td);
  ts_rpc_auth *a = calloc(1, sizeof *a);
  if (!a) return ts_err_set(err, TS_ENOMEM, "auth: no memory");
  snprintf(a->trust_domain, sizeof a->trust_domain, "%s", td);
  a->mtls = mtls;
  pthread_rwlock_init(&a->lock, NULL);
  if (token_file) {
    a->token_file = strdup(token_file);
    int rc = a->token_file ? ts_rpc_auth_reload(a, err)
                           : ts_err_set(err, TS_ENOMEM, "auth: no memory");
    if (rc < 0) {
      ts_rpc_auth_free(a);
      return rc;
    }
  }
  *out = a;
  return 0;
}

int ts_rpc_auth_reload(ts_rpc_auth *a, ts_err *err) {
  if (!a || !a->token_file) return 0;
  token *tokens = NULL;
  int n = 0;
  int rc = tokens_read(a->token_file, &tokens, &n, err);
  if (rc < 0) return rc;
  pthread_rwlock_wrlock(&a->lock);
  token *old = a->tokens;
  a->tokens = tokens;
  a->n_tokens = n;
  pthread_rwlock_unlock(&a->lock);
  if (old) memset(old, 0, TOKEN_FILE_MAX_LINES * sizeof *old);
  free(old);
  ts_log_info("auth: %d token(s) from %s", n, a->token_file);
  return 0;
}

void ts_rpc_auth_free(ts_rpc_auth *a) {
  if (!a) return;
  if (a->tokens) memset(a->tokens, 0, TOKEN_FILE_MAX_LINES * sizeof *a->tokens);
  free(a->tokens);
  free(a->token_file);
  pthread_rwlock_destroy(&a->lock);
  free(a);
}

int ts_rpc_auth_set_secret(ts_rpc_auth *a, const char *secret) {
  size_t n = secret ? strlen(secret) : 0;
  if (n >= sizeof a->secret) return TS_EINVAL;
  memcpy(a->secret, secret ? secret : "", n + 1);
  a->secret_len = n;
  return 0;
}

bool ts_rpc_auth_has_tokens(const ts_rpc_auth *a) {
  return a && a->token_file;
}

/* ---- the check ---------------------------------------------------------- */

/* The roles of the call's verified peer certificate: every SPIFFE ID among
 * its URI SANs in the trust domain. 0 for no (verified) certificate. Only
 * URI SANs count: gRPC's x509_subject_alternative_name property also holds
 * the DNS, email and IP SANs, and a DNS SAN "spiffe://tessera/admin" is no
 * SPIFFE ID (tests/python/test_security.py, Identities). */
static unsigned peer_roles(const ts_rpc_auth *a, grpc_call *call) {
  grpc_auth_context *ctx = grpc_call_auth_context(call);
  if (!ctx) return 0;
  unsigned roles = 0;
  if (grpc_auth_context_peer_is_authenticated(ctx)) {
    grpc_auth_property_iterator it = grpc_auth_context_find_properties_by_name(
        ctx, GRPC_PEER_URI_PROPERTY_NAME);
    const grpc_auth_property *p;
    while ((p = grpc_auth_property_iterator_next(&it)) != NULL)
      roles |= ts_role_from_spiffe(p->value, p->value_length, a->trust_domain);
  }
  grpc_auth_context_release(ctx);
  return roles;
}

/* The value of `key` in md (first), or NULL; *len gets its length. */
static const char *md_find(const grpc_metadata_array *md, const char *key,
                           size_t *len) {
  for (size_t i = 0; i < md->count; i++)
    if (grpc_slice_str_cmp(md->metadata[i].key, key) == 0) {
      *len = GRPC_SLICE_LENGTH(md->metadata[i].value);
      return (const char *)GRPC_SLICE_START_PTR(md->metadata[i].value);
    }
  return NULL;
}

int ts_rpc_auth_check_bearer(ts_rpc_auth *a, const char *authorization,
                             size_t len, unsigned roles, char *msg,
                             size_t size) {
  static const char bearer[] = "Bearer ";
  if (!a || !a->token_file || roles == 0) return 0;
  const char *v = authorization;
  if (!v || len <= sizeof bearer - 1 ||
      memcmp(v, bearer, sizeof bearer - 1) != 0) {
    snprintf(msg, size, "a bearer token is required "
                        "(authorization: Bearer TOKEN)");
    return TS_EUNAUTH;
  }
  pthread_rwlock_rdlock(&a->lock);
  unsigned has = token_roles(a, v + sizeof bearer - 1,
                             len - (sizeof bearer - 1));
  pthread_rwlock_unlock(&a->lock);
  if (!has) {
    snprintf(msg, size, "unknown bearer token");
    return TS_EUNAUTH;
  }
  if (!(has & roles)) {
    snprintf(msg, size, "this call needs a token of role %s",
             (roles & TS_ROLE_CLIENT) ? "infer or admin" : "admin");
    return TS_EPERM;
  }
  return 0;
}

/* The token rule on a gRPC call's metadata. */
static int check_token(ts_rpc_auth *a, const grpc_metadata_array *md,
                       unsigned roles, char *msg, size_t size) {
  size_t len = 0;
  const char *v = md_find(md, "authorization", &len);
  return ts_rpc_auth_check_bearer(a, v, len, roles, msg, size);
}

int rpc_auth_check(ts_rpc_auth *a, grpc_call *call,
                   const grpc_metadata_array *md, unsigned roles, char *msg,
                   size_t size) {
  if (!a || roles == 0) return 0;
  bool daemons_only = (roles & ~TS_ROLES_DAEMONS) == 0;
  if (daemons_only && a->secret_len) {
    size_t len = 0;
    const char *v = md_find(md, TS_RPC_SECRET_METADATA, &len);
    if (!v || !equal_constant_time(a->secret, a->secret_len, v, len)) {
      snprintf(msg, size, "this call needs the cluster secret (%s)",
               v ? "a wrong one was sent" : "none was sent");
      return TS_EUNAUTH;
    }
  }
  if (a->token_file && !daemons_only)
    return check_token(a, md, roles, msg, size);
  if (!a->mtls) return 0;
  if (peer_roles(a, call) & roles) return 0;
  char needed[64];
  ts_roles_describe(roles, needed, sizeof needed);
  snprintf(msg, size,
           "this call needs a certificate of role %s "
           "(spiffe://%s/ROLE)",
           needed, a->trust_domain);
  return TS_EPERM;
}
