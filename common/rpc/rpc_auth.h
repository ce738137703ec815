/*
 * rpc_auth.h - who may call what: roles from verified certificates, bearer
 * tokens, and the daemons' security options (--tls-cert, --tls-key,
 * --tls-ca, --trust-domain, --auth-token-file, --insecure, and the gRPC
 * limits --max-message-size and --max-streams).
 *
 * A role is the ROLE of a certificate's SPIFFE ID, a URI SAN
 * "spiffe://TRUST_DOMAIN/ROLE[/NAME]" (trust domain "tessera" by default),
 * ROLE one of coordinator, worker, admin, client. Every method table entry
 * names the roles it admits (ts_rpc_method.roles, ts_rpc_handler.roles;
 * 0 = anyone, the health check) and the server checks them in one place,
 * before a handler sees the call:
 *   - entries for daemons only (coordinator and/or worker roles) go by the
 *     peer certificate's role alone;
 *   - with a token file, every other entry needs "authorization: Bearer
 *     TOKEN" naming a token of the file: none or an unknown one is
 *     UNAUTHENTICATED, a token whose role is not admitted (infer on an
 *     admin or repository call) PERMISSION_DENIED;
 *   - without one, a mutual-TLS server admits a certificate whose role is
 *     listed; a wrong role is PERMISSION_DENIED naming the role needed;
 *   - a plaintext server (loopback only, see ts_security_validate) admits
 *     everyone.
 * Tokens are compared in constant time (for a given presented length) and
 * the file is re-read by ts_rpc_auth_reload (SIGHUP); a removed token stops
 * working at the next call.
 *
 * Threads: ts_rpc_auth is read by every poller (under a read lock) and
 * reloaded from any thread.
 */
#ifndef TS_RPC_AUTH_H
#define TS_RPC_AUTH_H

#include <stdbool.h>
#include <stddef.h>

#include "error.h"
#include "rpc.h"

/* The roles, as bits of ts_rpc_method.roles. */
#define TS_ROLE_COORDINATOR (1u << 0)
#define TS_ROLE_WORKER (1u << 1)
#define TS_ROLE_ADMIN (1u << 2)
#define TS_ROLE_CLIENT (1u << 3)
/* What the client API admits: inference and metadata, and the admin part. */
#define TS_ROLES_INFER (TS_ROLE_CLIENT | TS_ROLE_ADMIN)
#define TS_ROLES_DAEMONS (TS_ROLE_COORDINATOR | TS_ROLE_WORKER)

#define TS_TRUST_DOMAIN_DEFAULT "tessera"
#define TS_TRUST_DOMAIN_MAX 128
#define TS_CLUSTER_SECRET_MAX 129 /* 128 characters and the NUL */
/* How the coordinator hands its secret to --local-workers (never argv). */
#define TS_CLUSTER_SECRET_ENV "TESSERA_CLUSTER_SECRET"

/* The role named by a SPIFFE ID in trust domain `domain`, or 0. */
unsigned ts_role_from_spiffe(const char *id, size_t len, const char *domain);
/* "admin" or "client or admin": the roles of a mask, for messages. */
void ts_roles_describe(unsigned roles, char *buf, size_t size);

/* ---- the server's policy ---------------------------------------------- */

typedef struct ts_rpc_auth ts_rpc_auth;

/* A policy for a server: `mtls` when it verifies client certificates,
 * `token_file` (NULL: none) read now. trust_domain NULL means "tessera".
 * Free with ts_rpc_auth_free after the server stopped. */
int ts_rpc_auth_create(const char *trust_domain, bool mtls,
                       const char *token_file, ts_rpc_auth **out,
                       ts_err *err);
/* Re-reads the token file; on error the old tokens stay. */
int ts_rpc_auth_reload(ts_rpc_auth *a, ts_err *err);
void ts_rpc_auth_free(ts_rpc_auth *a);
/* The cluster secret (NUL-terminated, shorter than TS_CLUSTER_SECRET_MAX;
 * NULL or "": none): once set, every daemon-only method (coordinator and
 * worker roles) needs it as TS_RPC_SECRET_METADATA, compared in constant
 * time, or is UNAUTHENTICATED; with certificates too, both are needed. */
int ts_rpc_auth_set_secret(ts_rpc_auth *a, const char *secret);
/* Whether a token file is in force (the client port then accepts TLS
 * clients without a certificate). */
bool ts_rpc_auth_has_tokens(const ts_rpc_auth *a);

/* The token rule for a transport of its own (the coordinator's REST
 * port): `authorization` (len bytes, NULL: none sent) must be "Bearer
 * TOKEN" naming a token of the file, else TS_EUNAUTH; a token whose role
 * is not in `roles` is TS_EPERM; msg says why. 0 when there is no token
 * file (a NULL a included) or roles is 0. */
int ts_rpc_auth_check_bearer(ts_rpc_auth *a, const char *authorization,
                             size_t len, unsigned roles, char *msg,
                             size_t size);

/* ---- the daemons' options --------------------------------------------- */

typedef struct ts_security_opts {
  const char *tls_cert, *tls_key, *tls_ca; /* all or none */
  const char *trust_domain;                /* NULL: "tessera" */
  const char *token_file;                  /* NULL: certificates only */
  bool insecure; /* plaintext allowed on non-loopback addresses */
  const char *secret_file; /* --cluster-secret-file; NULL: none */
  char secret[TS_CLUSTER_SECRET_MAX]; /* loaded (ts_security_load_secret) */
  ts_rpc_limits limits; /* --max-message-size, --max-streams; 0: default */
} ts_security_opts;

/* getopt_long entries (include <getopt.h>) with values from
 * TS_SECURITY_OPTION_BASE; ts_security_option stores one. */
#define TS_SECURITY_OPTION_BASE 0x5ec0
#define TS_SECURITY_LONGOPTS                                          \
  {"tls-cert", required_argument, 0, TS_SECURITY_OPTION_BASE + 0},    \
      {"tls-key", required_argument, 0, TS_SECURITY_OPTION_BASE + 1}, \
      {"tls-ca", required_argument, 0, TS_SECURITY_OPTION_BASE + 2},  \
      {"trust-domain", required_argument, 0,                          \
       TS_SECURITY_OPTION_BASE + 3},                                  \
      {"auth-token-file", required_argument, 0,                       \
       TS_SECURITY_OPTION_BASE + 4},                                  \
      {"insecure", no_argument, 0, TS_SECURITY_OPTION_BASE + 5},     \
      {"cluster-secret-file", required_argument, 0,                   \
       TS_SECURITY_OPTION_BASE + 6},                                  \
      {"max-message-size", required_argument, 0,                      \
       TS_SECURITY_OPTION_BASE + 7},                                  \
      {"max-streams", required_argument, 0, TS_SECURITY_OPTION_BASE + 8}
/* The help text of those options. */
extern const char ts_security_usage[];

/* Stores option `opt` (a getopt_long value) with argument `arg`; returns 1
 * when it was a security option, 0 when not, TS_EINVAL (err names the
 * option) when its value is bad: --max-message-size not a size in 64K..1G,
 * --max-streams not an integer in 1..TS_RPC_MAX_STREAMS_MAX. */
int ts_security_option(ts_security_opts *s, int opt, const char *arg,
                       ts_err *err);
/* The arguments that give a child daemon (--local-workers) the same
 * limits: up to 4 strings into args (pointing into s and buf, which must
 * outlive them), returns how many. */
int ts_security_limit_args(const ts_security_opts *s, const char **args,
                           char (*buf)[24]);
/* Checks the options together and against the listen address: cert, key
 * and CA come together; a token file needs TLS; plaintext is refused on a
 * non-loopback address unless --insecure, with a message saying how to
 * give certificates. */
int ts_security_validate(const ts_security_opts *s, const char *listen,
                         ts_err *err);
/* The loopback rule for a plaintext HTTP port (--metrics-listen, never
 * TLS): refused on a non-loopback address unless --insecure; TS_OK when
 * http_listen is NULL. */
int ts_security_validate_http(const ts_security_opts *s,
                              const char *http_listen, const char *flag,
                              ts_err *err);
/* Whether HOST of "HOST:PORT" is a loopback address (127.0.0.0/8, ::1,
 * localhost) or a unix: socket. */
bool ts_address_is_loopback(const char *address);
/* The cluster secret into s->secret: from --cluster-secret-file (one line;
 * refused when group or others may read it), else from the environment
 * (TS_CLUSTER_SECRET_ENV, then removed from it), else, when `generate`, 32
 * random bytes in hex; else none. Either source must hold 16 to 128
 * printable characters without spaces, else TS_EINVAL naming it. */
int ts_security_load_secret(ts_security_opts *s, bool generate, ts_err *err);
/* The credentials for servers and outgoing calls (pointing into s). */
ts_rpc_creds ts_security_creds(const ts_security_opts *s);
/* The server's policy for these options (see ts_rpc_auth_create); with
 * with_tokens false the token file is ignored (daemon-only ports). */
int ts_security_auth(const ts_security_opts *s, bool with_tokens,
                     ts_rpc_auth **out, ts_err *err);

/* SIGHUP: re-reads every certificate, key and CA file in use
 * (ts_rpc_creds_reload) and auth's token file (auth may be NULL); a file
 * that fails keeps the old bytes and is logged as an error. */
void ts_security_reload(ts_rpc_auth *auth);

#endif
