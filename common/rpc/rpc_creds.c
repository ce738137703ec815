/*
 * rpc_creds.c - TLS and mutual-TLS credentials from PEM files (see
 * ts_rpc_creds in rpc.h): the files are read once, when a server starts or
 * a channel opens, and their bytes are freed as soon as gRPC has them.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <grpc/grpc.h>
#include <grpc/grpc_security.h>

#include "rpc.h"
#include "rpc_int.h"

#define PEM_MAX_BYTES (1 << 20)

/* Reads a whole PEM file into a NUL-terminated malloc'd string. */
static int read_pem(const char *path, const char *what, char **out,
                    ts_err *err) {
  *out = NULL;
  if (!path) return 0;
  FILE *f = fopen(path, "rb");
  if (!f)
    return ts_err_set(err, TS_EINVAL, "cannot read %s file '%s': %s", what,
                      path, strerror(errno));
  char *buf = malloc(PEM_MAX_BYTES + 1);
  if (!buf) {
    fclose(f);
    return ts_err_set(err, TS_ENOMEM, "no memory for %s file '%s'", what,
                      path);
  }
  size_t n = fread(buf, 1, PEM_MAX_BYTES + 1, f);
  int bad = ferror(f);
  fclose(f);
  if (bad || n == 0 || n > PEM_MAX_BYTES) {
    free(buf);
    return ts_err_set(err, TS_EINVAL, "cannot read %s file '%s': %s", what,
                      path,
                      bad ? "read error"
                          : (n == 0 ? "empty file" : "larger than 1 MiB"));
  }
  buf[n] = '\0';
  *out = buf;
  return 0;
}

typedef struct pem_set {
  char *cert, *key, *ca;
} pem_set;

static void pem_free(pem_set *p) {
  free(p->cert);
  free(p->key);
  free(p->ca);
  memset(p, 0, sizeof *p);
}

/* Loads the files named by creds; cert and key come together or not at all.
 * Returns 0 with an empty set for NULL / all-NULL creds (plaintext). */
static int pem_load(const ts_rpc_creds *creds, pem_set *p, ts_err *err) {
  memset(p, 0, sizeof *p);
  if (!creds) return 0;
  if (!creds->cert_file != !creds->key_file)
    return ts_err_set(err, TS_EINVAL,
                      "creds: cert_file and key_file go together (got %s)",
                      creds->cert_file ? "cert_file only" : "key_file only");
  int rc = read_pem(creds->cert_file, "certificate", &p->cert, err);
  if (rc == 0) rc = read_pem(creds->key_file, "private key", &p->key, err);
  if (rc == 0) rc = read_pem(creds->ca_file, "CA", &p->ca, err);
  if (rc < 0) pem_free(p);
  return rc;
}

/* The server's credentials into *out (release them); reads the files. */
int rpc_server_creds(const ts_rpc_creds *creds, grpc_server_credentials **out,
                     ts_err *err) {
  pem_set pem;
  *out = NULL;
  int rc = pem_load(creds, &pem, err);
  if (rc < 0) return rc;
  if (!pem.cert) {
    if (pem.ca) {
      pem_free(&pem);
      return ts_err_set(err, TS_EINVAL,
                        "creds: a TLS server needs cert_file and key_file, "
                        "not only ca_file");
    }
    *out = grpc_insecure_server_credentials_create();
    return 0;
  }
  grpc_ssl_pem_key_cert_pair pair = {.private_key = pem.key,
                                     .cert_chain = pem.cert};
  grpc_server_credentials *sc = grpc_ssl_server_credentials_create_ex(
      pem.ca, &pair, 1,
      !pem.ca ? GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE
      : creds->client_cert_optional
          ? GRPC_SSL_REQUEST_CLIENT_CERTIFICATE_AND_VERIFY
          : GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY,
      NULL);
  pem_free(&pem);
  *out = sc;
  if (!sc)
    return ts_err_set(err, TS_EINVAL,
                      "creds: certificate '%s' or key '%s' rejected",
                      creds->cert_file, creds->key_file);
  return 0;
}

/* The channel's credentials into *out (release them); reads the files.
 * ca alone verifies the server; cert and key add a client certificate. */
int rpc_channel_creds(const ts_rpc_creds *creds, const char *target,
                      grpc_channel_credentials **out, ts_err *err) {
  *out = NULL;
  pem_set pem;
  int rc = pem_load(creds, &pem, err);
  if (rc < 0) return rc;
  grpc_channel_credentials *cc;
  if (pem.cert || pem.ca) {
    grpc_ssl_pem_key_cert_pair pair = {.private_key = pem.key,
                                       .cert_chain = pem.cert};
    cc = grpc_ssl_credentials_create_ex(pem.ca, pem.cert ? &pair : NULL, NULL,
                                        NULL);
  } else {
    cc = grpc_insecure_credentials_create();
  }
  pem_free(&pem);
  if (!cc)
    return ts_err_set(err, TS_EINVAL, "creds: TLS credentials for %s rejected",
                      target);
  if (creds && creds->token) {
    /* gRPC sends call credentials only over TLS: a token needs a CA. */
    if (!creds->ca_file) {
      grpc_channel_credentials_release(cc);
      return ts_err_set(err, TS_EINVAL,
                        "creds: a bearer token for %s needs TLS (a CA file)",
                        target);
    }
    grpc_call_credentials *token =
        grpc_access_token_credentials_create(creds->token, NULL);
    grpc_channel_credentials *both =
        grpc_composite_channel_credentials_create(cc, token, NULL);
    grpc_call_credentials_release(token);
    grpc_channel_credentials_release(cc);
    if (!both)
      return ts_err_set(err, TS_EINVAL, "creds: token for %s rejected",
                        target);
    cc = both;
  }
  *out = cc;
  return 0;
}
