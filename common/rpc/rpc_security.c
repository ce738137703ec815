/*
 * rpc_security.c - the daemons' security options (rpc_auth.h): one parser
 * and one set of rules for the coordinator and the worker, so that
 * "--tls-cert" and the loopback rule mean the same to both.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>

#include "log.h"
#include "options.h"
#include "rpc_auth.h"

const char ts_security_usage[] =
    "  --tls-cert FILE        PEM certificate (chain) of this daemon; with\n"
    "                         --tls-key and --tls-ca every port serves\n"
    "                         mutual TLS and every outgoing call verifies\n"
    "                         its peer against the CA (scripts/certs.sh)\n"
    "  --tls-key FILE         its PEM private key\n"
    "  --tls-ca FILE          PEM roots of the cluster CA\n"
    "  --trust-domain NAME    SPIFFE trust domain of the roles in\n"
    "                         certificates (default: tessera)\n"
    "  --auth-token-file FILE lines 'TOKEN ROLE' (infer|admin): client calls\n"
    "                         need 'authorization: Bearer TOKEN' (re-read on\n"
    "                         SIGHUP); needs TLS\n"
    "  --insecure             allow plaintext on a non-loopback address\n"
    "  --cluster-secret-file FILE\n"
    "                         a secret (one line, 16-128 characters, mode\n"
    "                         0600) that daemon-to-daemon calls carry and\n"
    "                         need; --local-workers get a random one\n"
    "  --max-message-size BYTES\n"
    "                         largest gRPC message sent or received, K/M/G\n"
    "                         suffixes, 64K..1G (default 64M); control calls\n"
    "                         take requests of 64K at most\n"
    "  --max-streams N        concurrent calls per client connection\n"
    "                         (default 100; a worker's: 320 + --threads)\n";

/* --max-message-size: a size in TS_RPC_MAX_MESSAGE_MIN..MAX. */
static int max_message_option(ts_security_opts *s, const char *arg,
                              ts_err *err) {
  uint64_t v = 0;
  if (ts_size_parse(arg, &v, err) != TS_OK)
    return ts_err_prefix(err, "--max-message-size");
  if (v < TS_RPC_MAX_MESSAGE_MIN || v > TS_RPC_MAX_MESSAGE_MAX)
    return ts_err_set(err, TS_EINVAL,
                      "--max-message-size '%s' is not in 64K..1G (%u..%u "
                      "bytes)", arg, TS_RPC_MAX_MESSAGE_MIN,
                      TS_RPC_MAX_MESSAGE_MAX);
  s->limits.max_message = (size_t)v;
  return 1;
}

int ts_security_option(ts_security_opts *s, int opt, const char *arg,
                       ts_err *err) {
  long long n = 0;
  switch (opt - TS_SECURITY_OPTION_BASE) {
    case 0: s->tls_cert = arg; return 1;
    case 1: s->tls_key = arg; return 1;
    case 2: s->tls_ca = arg; return 1;
    case 3: s->trust_domain = arg; return 1;
    case 4: s->token_file = arg; return 1;
    case 5: s->insecure = true; return 1;
    case 6: s->secret_file = arg; return 1;
    case 7: return max_message_option(s, arg, err);
    case 8:
      if (ts_integer_parse(arg, 1, TS_RPC_MAX_STREAMS_MAX, &n, err) != TS_OK)
        return ts_err_prefix(err, "--max-streams");
      s->limits.max_streams = (int)n;
      return 1;
    default: return 0;
  }
}

int ts_security_limit_args(const ts_security_opts *s, const char **args,
                           char (*buf)[24]) {
  int a = 0;
  if (s->limits.max_message) {
    snprintf(buf[0], sizeof buf[0], "%zu", s->limits.max_message);
    args[a++] = "--max-message-size";
    args[a++] = buf[0];
  }
  if (s->limits.max_streams) {
    snprintf(buf[1], sizeof buf[1], "%d", s->limits.max_streams);
    args[a++] = "--max-streams";
    args[a++] = buf[1];
  }
  return a;
}

bool ts_address_is_loopback(const char *address) {
  if (strncmp(address, "unix:", 5) == 0) return true;
  size_t n = ts_hostport_host_length(address);
  if (n == 9 && strncmp(address, "localhost", 9) == 0) return true;
  if ((n == 5 && strncmp(address, "[::1]", 5) == 0) ||
      (n == 3 && strncmp(address, "::1", 3) == 0))
    return true;
  /* 127.0.0.0/8: "127." then digits and dots only. */
  if (n < 5 || strncmp(address, "127.", 4) != 0) return false;
  for (size_t i = 4; i < n; i++)
    if (!(address[i] == '.' || (address[i] >= '0' && address[i] <= '9')))
      return false;
  return true;
}

int ts_security_validate(const ts_security_opts *s, const char *listen,
                         ts_err *err) {
  int given = !!s->tls_cert + !!s->tls_key + !!s->tls_ca;
  if (given != 0 && given != 3)
    return ts_err_set(err, TS_EINVAL,
                      "--tls-cert, --tls-key and --tls-ca go together "
                      "(make a cluster's with scripts/certs.sh DIR)");
  if (s->token_file && given == 0)
    return ts_err_set(err, TS_EINVAL,
                      "--auth-token-file needs TLS (--tls-cert, --tls-key, "
                      "--tls-ca): tokens are never sent in plaintext");
  if (given == 0 && !s->insecure && listen && !ts_address_is_loopback(listen))
    return ts_err_set(
        err, TS_EINVAL,
        "refusing to serve plaintext on non-loopback address %s: give "
        "--tls-cert FILE --tls-key FILE --tls-ca FILE (scripts/certs.sh DIR "
        "makes a cluster CA and certificates), or pass --insecure to allow "
        "plaintext explicitly",
        listen);
  return 0;
}

int ts_security_validate_http(const ts_security_opts *s,
                              const char *http_listen, const char *flag,
                              ts_err *err) {
  if (!http_listen || s->insecure || ts_address_is_loopback(http_listen))
    return 0;
  return ts_err_set(err, TS_EINVAL,
                    "refusing to serve %s %s in plaintext HTTP on a "
                    "non-loopback address: listen on 127.0.0.1 (and scrape "
                    "through a local agent), or pass --insecure to allow it",
                    flag, http_listen);
}

/* Takes `secret` as the cluster secret if it is 16 to TS_CLUSTER_SECRET_MAX
 * - 1 printable characters without spaces, the one rule of both sources;
 * else TS_EINVAL naming where it came from (`from`). */
static int secret_take(ts_security_opts *s, const char *secret,
                       const char *from, ts_err *err) {
  size_t n = strlen(secret);
  bool printable = n >= 16 && n < TS_CLUSTER_SECRET_MAX;
  for (size_t i = 0; printable && i < n; i++)
    printable = secret[i] > ' ' && secret[i] < 127;
  if (!printable)
    return ts_err_set(err, TS_EINVAL,
                      "%s: expected one line of 16 to %d printable characters",
                      from, TS_CLUSTER_SECRET_MAX - 1);
  memcpy(s->secret, secret, n + 1);
  return 0;
}

/* Reads --cluster-secret-file: one line of printable characters. */
static int secret_read(ts_security_opts *s, ts_err *err) {
  FILE *f = fopen(s->secret_file, "r");
  struct stat st;
  if (!f || fstat(fileno(f), &st) != 0) {
    int e = errno;
    if (f) fclose(f);
    return ts_err_set(err, TS_EINVAL, "--cluster-secret-file '%s': %s",
                      s->secret_file, strerror(e));
  }
  if (st.st_mode & (S_IRWXG | S_IRWXO)) {
    fclose(f);
    return ts_err_set(err, TS_EINVAL,
                      "--cluster-secret-file '%s': group or others may "
                      "read it (chmod 600)", s->secret_file);
  }
  char line[TS_CLUSTER_SECRET_MAX + 2];
  if (!fgets(line, sizeof line, f)) line[0] = '\0';
  fclose(f);
  line[strcspn(line, "\r\n")] = '\0';
  char from[TS_ERR_MSG_MAX];
  snprintf(from, sizeof from, "--cluster-secret-file '%s'", s->secret_file);
  return secret_take(s, line, from, err);
}

int ts_security_load_secret(ts_security_opts *s, bool generate, ts_err *err) {
  s->secret[0] = '\0';
  if (s->secret_file) return secret_read(s, err);
  const char *env = getenv(TS_CLUSTER_SECRET_ENV);
  if (env && env[0]) {
    /* Checked from a copy, as unsetenv may free env: a secret refused
     * must not pass on to children either. */
    char copy[TS_CLUSTER_SECRET_MAX + 1];
    snprintf(copy, sizeof copy, "%s", env);
    unsetenv(TS_CLUSTER_SECRET_ENV);
    return secret_take(s, copy, "$" TS_CLUSTER_SECRET_ENV, err);
  }
  if (!generate) return 0;
  unsigned char raw[32];
  if (getrandom(raw, sizeof raw, 0) != (ssize_t)sizeof raw)
    return ts_err_set(err, TS_EIO, "cluster secret: getrandom: %s",
                      strerror(errno));
  for (size_t i = 0; i < sizeof raw; i++)
    snprintf(s->secret + 2 * i, 3, "%02x", raw[i]);
  return 0;
}

ts_rpc_creds ts_security_creds(const ts_security_opts *s) {
  return (ts_rpc_creds){.cert_file = s->tls_cert,
                        .key_file = s->tls_key,
                        .ca_file = s->tls_ca,
                        .client_cert_optional = s->token_file != NULL,
                        .cluster_secret = s->secret[0] ? s->secret : NULL};
}

int ts_security_auth(const ts_security_opts *s, bool with_tokens,
                     ts_rpc_auth **out, ts_err *err) {
  int rc = ts_rpc_auth_create(s->trust_domain, s->tls_ca != NULL,
                              with_tokens ? s->token_file : NULL, out, err);
  if (rc == 0) rc = ts_rpc_auth_set_secret(*out, s->secret);
  return rc;
}

void ts_security_reload(ts_rpc_auth *auth) {
  ts_err err = {0};
  ts_log_info("SIGHUP: re-reading certificates, keys, CA and tokens");
  ts_rpc_creds_reload(&err); /* logs each file set itself */
  if (ts_rpc_auth_reload(auth, &err) != TS_OK)
    ts_log_error("SIGHUP: %s (the old tokens stay in force)", err.msg);
}
