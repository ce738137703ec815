/*
 * rpc_creds.c - TLS and mutual-TLS credentials from PEM files (see
 * ts_rpc_creds in rpc.h), and their rotation without downtime.
 *
 * Keysets. The files named by one ts_rpc_creds (certificate, key, CA) are
 * read into a keyset, shared by every server and channel of the process
 * that names the same files and counted by them; the last to go frees it.
 * ts_rpc_creds_reload (SIGHUP) re-reads every keyset: new bytes that parse
 * (a certificate chain whose first certificate matches the key, a CA
 * bundle of at least one certificate) replace the old ones and bump the
 * keyset's generation; a file that is missing, unreadable or does not
 * parse leaves the old bytes in force and is reported.
 *
 * Who sees a new generation, and when:
 *   - a server gives gRPC a certificate-config fetcher, which gRPC asks at
 *     every new TLS handshake; it answers UNCHANGED until the generation
 *     moves, then NEW with the keyset's current bytes. Connections already
 *     up keep the configuration they were made with;
 *   - a channel compares the generation at every call it creates and, when
 *     it moved, makes a new gRPC channel with new credentials (rpc_client.c);
 *     calls already running on the old one finish there.
 *
 * Threads: a keyset's bytes and generation change under its mutex; the
 * fetcher runs on whichever gRPC thread handshakes and takes that mutex.
 * The registry of keysets has a mutex of its own, taken before any keyset's.
 */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "log.h"
#include "rpc.h"
#include "rpc_int.h"

#define PEM_MAX_BYTES (1 << 20)

int ts_rpc_pem_read(const char *path, const char *what, char **out,
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
  if (p->key) OPENSSL_cleanse(p->key, strlen(p->key));
  free(p->key);
  free(p->ca);
  memset(p, 0, sizeof *p);
}

static bool str_eq(const char *a, const char *b) {
  return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

/* ---- checking PEM bytes before they are used ---------------------------- */

/* The certificates of a PEM string, at least one; the first into *first
 * (X509_free it) when first is non-NULL. */
static int pem_certs(const char *pem, const char *what, const char *path,
                     X509 **first, ts_err *err) {
  BIO *bio = BIO_new_mem_buf(pem, -1);
  if (!bio) return ts_err_set(err, TS_ENOMEM, "no memory for %s", what);
  int n = 0;
  X509 *x;
  while ((x = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL) {
    if (n++ == 0 && first)
      *first = x;
    else
      X509_free(x);
  }
  ERR_clear_error(); /* the read that ended the loop */
  BIO_free(bio);
  if (n == 0)
    return ts_err_set(err, TS_EINVAL, "%s file '%s' holds no PEM certificate",
                      what, path);
  return 0;
}

/* The certificate chain's first certificate belongs to the key; the CA file
 * holds certificates. Nothing is kept. */
static int pem_check(const ts_rpc_creds *creds, const pem_set *p,
                     ts_err *err) {
  int rc = 0;
  if (p->ca) rc = pem_certs(p->ca, "CA", creds->ca_file, NULL, err);
  if (rc < 0 || !p->cert) return rc;
  X509 *leaf = NULL;
  rc = pem_certs(p->cert, "certificate", creds->cert_file, &leaf, err);
  if (rc < 0) return rc;
  BIO *bio = BIO_new_mem_buf(p->key, -1);
  EVP_PKEY *key = bio ? PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL) : NULL;
  if (!key)
    rc = ts_err_set(err, TS_EINVAL, "private key file '%s' holds no PEM "
                    "private key", creds->key_file);
  else if (X509_check_private_key(leaf, key) != 1)
    rc = ts_err_set(err, TS_EINVAL, "private key '%s' does not belong to "
                    "certificate '%s'", creds->key_file, creds->cert_file);
  ERR_clear_error();
  EVP_PKEY_free(key);
  BIO_free(bio);
  X509_free(leaf);
  return rc;
}

/* The serial number of the chain's first certificate, in hex, for logs. */
static void pem_serial(const char *cert, char *buf, size_t size) {
  snprintf(buf, size, "?");
  if (!cert) return;
  BIO *bio = BIO_new_mem_buf(cert, -1);
  X509 *x = bio ? PEM_read_bio_X509(bio, NULL, NULL, NULL) : NULL;
  BIGNUM *bn = x ? ASN1_INTEGER_to_BN(X509_get_serialNumber(x), NULL) : NULL;
  char *hex = bn ? BN_bn2hex(bn) : NULL;
  if (hex) snprintf(buf, size, "%s", hex);
  OPENSSL_free(hex);
  BN_free(bn);
  X509_free(x);
  BIO_free(bio);
  ERR_clear_error();
}

/* Loads and checks the files named by creds; cert and key come together or
 * not at all. */
static int pem_load(const ts_rpc_creds *creds, pem_set *p, ts_err *err) {
  memset(p, 0, sizeof *p);
  if (!creds->cert_file != !creds->key_file)
    return ts_err_set(err, TS_EINVAL,
                      "creds: cert_file and key_file go together (got %s)",
                      creds->cert_file ? "cert_file only" : "key_file only");
  int rc = ts_rpc_pem_read(creds->cert_file, "certificate", &p->cert, err);
  if (rc == 0)
    rc = ts_rpc_pem_read(creds->key_file, "private key", &p->key, err);
  if (rc == 0) rc = ts_rpc_pem_read(creds->ca_file, "CA", &p->ca, err);
  if (rc == 0) rc = pem_check(creds, p, err);
  if (rc < 0) pem_free(p);
  return rc;
}

/* ---- keysets ------------------------------------------------------------ */

struct rpc_keyset {
  rpc_keyset *next;  /* registry list */
  int refs;          /* under registry_mu */
  ts_rpc_creds files; /* the paths (strdup'd; token unused) */
  pthread_mutex_t mu;
  pem_set pem;         /* current bytes, under mu */
  unsigned generation; /* bumped when the bytes change, under mu */
};

static pthread_mutex_t registry_mu = PTHREAD_MUTEX_INITIALIZER;
static rpc_keyset *registry;

static void keyset_free(rpc_keyset *ks) {
  pem_free(&ks->pem);
  free((char *)ks->files.cert_file);
  free((char *)ks->files.key_file);
  free((char *)ks->files.ca_file);
  pthread_mutex_destroy(&ks->mu);
  free(ks);
}

static char *strdup_or_null(const char *s, bool *failed) {
  if (!s) return NULL;
  char *d = strdup(s);
  if (!d) *failed = true;
  return d;
}

int rpc_keyset_get(const ts_rpc_creds *creds, rpc_keyset **out, ts_err *err) {
  *out = NULL;
  if (!creds || (!creds->cert_file && !creds->key_file && !creds->ca_file))
    return 0;
  pthread_mutex_lock(&registry_mu);
  for (rpc_keyset *ks = registry; ks; ks = ks->next)
    if (str_eq(ks->files.cert_file, creds->cert_file) &&
        str_eq(ks->files.key_file, creds->key_file) &&
        str_eq(ks->files.ca_file, creds->ca_file)) {
      ks->refs++;
      pthread_mutex_unlock(&registry_mu);
      *out = ks;
      return 0;
    }
  rpc_keyset *ks = calloc(1, sizeof *ks);
  bool failed = !ks;
  if (ks) {
    ks->files.cert_file = strdup_or_null(creds->cert_file, &failed);
    ks->files.key_file = strdup_or_null(creds->key_file, &failed);
    ks->files.ca_file = strdup_or_null(creds->ca_file, &failed);
    pthread_mutex_init(&ks->mu, NULL);
  }
  int rc = failed ? ts_err_set(err, TS_ENOMEM, "creds: no memory")
                  : pem_load(creds, &ks->pem, err);
  if (rc < 0) {
    pthread_mutex_unlock(&registry_mu);
    if (ks) keyset_free(ks);
    return rc;
  }
  ks->refs = 1;
  ks->next = registry;
  registry = ks;
  pthread_mutex_unlock(&registry_mu);
  *out = ks;
  return 0;
}

void rpc_keyset_put(rpc_keyset *ks) {
  if (!ks) return;
  pthread_mutex_lock(&registry_mu);
  bool last = --ks->refs == 0;
  if (last)
    for (rpc_keyset **p = &registry; *p; p = &(*p)->next)
      if (*p == ks) {
        *p = ks->next;
        break;
      }
  pthread_mutex_unlock(&registry_mu);
  if (last) keyset_free(ks);
}

unsigned rpc_keyset_generation(rpc_keyset *ks) {
  pthread_mutex_lock(&ks->mu);
  unsigned g = ks->generation;
  pthread_mutex_unlock(&ks->mu);
  return g;
}

/* Re-reads one keyset (registry_mu held). */
static int keyset_reload(rpc_keyset *ks, ts_err *err) {
  pem_set fresh;
  int rc = pem_load(&ks->files, &fresh, err);
  if (rc < 0) return rc;
  pthread_mutex_lock(&ks->mu);
  bool same = str_eq(fresh.cert, ks->pem.cert) &&
              str_eq(fresh.key, ks->pem.key) && str_eq(fresh.ca, ks->pem.ca);
  pem_set old = ks->pem;
  if (!same) {
    ks->pem = fresh;
    ks->generation++;
  }
  pthread_mutex_unlock(&ks->mu);
  char serial[80];
  pem_serial(same ? old.cert : fresh.cert, serial, sizeof serial);
  if (same)
    ts_log_info("credentials unchanged: %s (serial %s)",
                ks->files.cert_file ? ks->files.cert_file : ks->files.ca_file,
                serial);
  else
    ts_log_info("credentials reloaded: %s%s%s (serial %s): new connections "
                "use them",
                ks->files.cert_file ? ks->files.cert_file : "",
                ks->files.cert_file && ks->files.ca_file ? ", CA " : "",
                ks->files.ca_file ? ks->files.ca_file : "", serial);
  pem_free(same ? &fresh : &old);
  return 0;
}

int ts_rpc_creds_reload(ts_err *err) {
  int first = 0;
  pthread_mutex_lock(&registry_mu);
  for (rpc_keyset *ks = registry; ks; ks = ks->next) {
    ts_err one = {0};
    if (keyset_reload(ks, &one) < 0) {
      ts_log_error("credentials not reloaded, the old ones stay in force: %s",
                   one.msg);
      if (first == 0) {
        first = one.code;
        if (err) *err = one;
      }
    }
  }
  pthread_mutex_unlock(&registry_mu);
  return first;
}

/* ---- servers ------------------------------------------------------------ */

struct rpc_server_tls {
  rpc_keyset *keys;
  bool fetched;  /* the first configuration was given */
  unsigned seen; /* the generation gRPC has */
};

/* gRPC's certificate-config fetcher, asked at every new handshake (and once
 * when the port is added): the keyset's bytes when they are new to this
 * server. gRPC takes the config; a config it cannot use (never, as the
 * bytes were checked) keeps the old one. */
static grpc_ssl_certificate_config_reload_status fetch_config(
    void *user, grpc_ssl_server_certificate_config **config) {
  rpc_server_tls *t = user;
  rpc_keyset *ks = t->keys;
  grpc_ssl_certificate_config_reload_status status =
      GRPC_SSL_CERTIFICATE_CONFIG_RELOAD_UNCHANGED;
  pthread_mutex_lock(&ks->mu);
  if (!t->fetched || t->seen != ks->generation) {
    grpc_ssl_pem_key_cert_pair pair = {.private_key = ks->pem.key,
                                       .cert_chain = ks->pem.cert};
    *config = grpc_ssl_server_certificate_config_create(ks->pem.ca, &pair, 1);
    if (*config) {
      t->fetched = true;
      t->seen = ks->generation;
      status = GRPC_SSL_CERTIFICATE_CONFIG_RELOAD_NEW;
    } else {
      status = GRPC_SSL_CERTIFICATE_CONFIG_RELOAD_FAIL;
    }
  }
  pthread_mutex_unlock(&ks->mu);
  return status;
}

void rpc_server_tls_free(rpc_server_tls *t) {
  if (!t) return;
  rpc_keyset_put(t->keys);
  free(t);
}

int rpc_server_creds(const ts_rpc_creds *creds, grpc_server_credentials **out,
                     rpc_server_tls **tls, ts_err *err) {
  *out = NULL;
  *tls = NULL;
  rpc_keyset *ks = NULL;
  int rc = rpc_keyset_get(creds, &ks, err);
  if (rc < 0) return rc;
  if (!ks) {
    *out = grpc_insecure_server_credentials_create();
    return 0;
  }
  if (!ks->files.cert_file) {
    rpc_keyset_put(ks);
    return ts_err_set(err, TS_EINVAL,
                      "creds: a TLS server needs cert_file and key_file, "
                      "not only ca_file");
  }
  if (!ks->files.ca_file) {
    /* gRPC 1.51's fetcher needs client roots (it asserts them), so a
     * server-only TLS port (no CA: never a daemon's, whose options give
     * all three files) is read once and not rotated. */
    grpc_ssl_pem_key_cert_pair pair = {.private_key = ks->pem.key,
                                       .cert_chain = ks->pem.cert};
    *out = grpc_ssl_server_credentials_create_ex(
        NULL, &pair, 1, GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE, NULL);
    rpc_keyset_put(ks);
    return *out ? 0
                : ts_err_set(err, TS_EINVAL,
                             "creds: certificate '%s' or key '%s' rejected",
                             creds->cert_file, creds->key_file);
  }
  rpc_server_tls *t = calloc(1, sizeof *t);
  if (!t) {
    rpc_keyset_put(ks);
    return ts_err_set(err, TS_ENOMEM, "creds: no memory");
  }
  t->keys = ks;
  grpc_ssl_client_certificate_request_type request =
      creds->client_cert_optional
          ? GRPC_SSL_REQUEST_CLIENT_CERTIFICATE_AND_VERIFY
          : GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY;
  grpc_ssl_server_credentials_options *o =
      grpc_ssl_server_credentials_create_options_using_config_fetcher(
          request, fetch_config, t);
  grpc_server_credentials *sc =
      o ? grpc_ssl_server_credentials_create_with_options(o) : NULL;
  if (!sc) {
    rpc_server_tls_free(t);
    return ts_err_set(err, TS_EINVAL,
                      "creds: certificate '%s' or key '%s' rejected",
                      creds->cert_file, creds->key_file);
  }
  *out = sc;
  *tls = t;
  return 0;
}

/* ---- channels ----------------------------------------------------------- */

int rpc_channel_creds(rpc_keyset *ks, const char *token, const char *target,
                      grpc_channel_credentials **out, unsigned *generation,
                      ts_err *err) {
  *out = NULL;
  *generation = 0;
  grpc_channel_credentials *cc;
  if (ks) {
    pthread_mutex_lock(&ks->mu);
    grpc_ssl_pem_key_cert_pair pair = {.private_key = ks->pem.key,
                                       .cert_chain = ks->pem.cert};
    cc = grpc_ssl_credentials_create_ex(ks->pem.ca,
                                        ks->pem.cert ? &pair : NULL, NULL,
                                        NULL);
    *generation = ks->generation;
    pthread_mutex_unlock(&ks->mu);
  } else {
    cc = grpc_insecure_credentials_create();
  }
  if (!cc)
    return ts_err_set(err, TS_EINVAL, "creds: TLS credentials for %s rejected",
                      target);
  if (token) {
    /* gRPC sends call credentials only over TLS: a token needs a CA. */
    if (!ks || !ks->files.ca_file) {
      grpc_channel_credentials_release(cc);
      return ts_err_set(err, TS_EINVAL,
                        "creds: a bearer token for %s needs TLS (a CA file)",
                        target);
    }
    grpc_call_credentials *call_creds =
        grpc_access_token_credentials_create(token, NULL);
    grpc_channel_credentials *both =
        grpc_composite_channel_credentials_create(cc, call_creds, NULL);
    grpc_call_credentials_release(call_creds);
    grpc_channel_credentials_release(cc);
    if (!both)
      return ts_err_set(err, TS_EINVAL, "creds: token for %s rejected",
                        target);
    cc = both;
  }
  *out = cc;
  return 0;
}
