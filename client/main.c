/*
 * main.c - the `tessera` command line, a KServe v2 gRPC client: options,
 * the command table, usage and dispatch (see client.h for the rest).
 *
 *   tessera infer|models|load|unload|health|metadata|status|bench|eval ...
 *
 * It speaks public protocols (proto/inference.proto, grpc.health.v1), so it
 * works against any KServe v2 server; `status` adds Tessera's own admin API
 * (proto/admin.proto: workers, model states, shard map) where the server
 * has it, and says so where it does not.
 *
 * Layout: OPTION_LIST is the one table of options; COMMAND_LIST says which
 * options each command accepts and requires, and which function runs it.
 * main() parses and dispatches, nothing else. A command gets a `cli` with
 * an open channel, makes calls through cli_call() and prints; it returns 0
 * or a negative TS_E* code with a ts_err saying why.
 *
 * Exit status: 0 success; 1 when the server, the network or a file said no,
 * after printing "tessera: <gRPC status name>: <message>" on stderr; 2 on
 * bad usage.
 */
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client.h"
#include "options.h"
#include "ts_config.h"

#define DEFAULT_TIMEOUT_MS 30000
/* The port --server means when it names a host only: Triton's and KServe's
 * gRPC port, the one docs/CLI.md and README's examples use. */
#define DEFAULT_PORT "8001"

#define EXIT_USAGE 2

/* Prints "tessera: <gRPC status name>: <message>" for a failed command. */
static void report(const ts_err *err) {
  fprintf(stderr, "tessera: %s: %s\n",
          ts_rpc_status_name(ts_err_grpc_status(err->code)),
          err->msg[0] ? err->msg : ts_strerror(err->code));
}

/* ---- options -------------------------------------------------------- */

typedef enum {
  ARG_NONE,   /* flag: int set to 1 */
  ARG_STRING, /* const char * */
  ARG_LIST,   /* string_list, repeatable */
  ARG_COUNT,  /* long, a positive integer */
  ARG_NATURAL, /* long, an integer >= 0 */
  ARG_SECONDS, /* double, a decimal number >= 0 */
  ARG_POSITIVE, /* double, a decimal number > 0 */
} arg_kind;

/* X(id, long name, kind, options field, metavar, help) */
#define OPTION_LIST(X)                                                       \
  X(SERVER, "server", ARG_STRING, server, "ADDR[,ADDR...]",                \
    "server address, HOST[:PORT] (port 8001 when left out); a list fails " \
    "over on UNAVAILABLE, and load/unload go to each")                     \
  X(MODEL, "model", ARG_STRING, model, "NAME", "model name")                \
  X(INPUT, "input", ARG_LIST, inputs, "NAME=FILE.npy",                      \
    "input tensor NAME from a .npy file; repeat for each input (a bare "    \
    "FILE.npy is a one-input model's input)")                               \
  X(OUTPUT, "output", ARG_LIST, outputs, "NAME[=FILE.npy]",                 \
    "ask for output NAME only (repeatable); with =FILE.npy, write it "      \
    "there instead of printing it")                                         \
  X(TYPED, "typed", ARG_NONE, typed, NULL,                                  \
    "send typed InferTensorContents instead of raw_input_contents")         \
  X(TIMEOUT, "timeout-ms", ARG_COUNT, timeout_ms, "N",                      \
    "deadline of each call in milliseconds (default 30000)")                \
  X(CONCURRENCY, "concurrency", ARG_COUNT, concurrency, "C",                \
    "requests in flight at once (default 1)")                               \
  X(REQUESTS, "requests", ARG_COUNT, requests, "N",                         \
    "requests to count in all (default 100, or no limit with --duration)") \
  X(DURATION, "duration", ARG_POSITIVE, duration, "S",                      \
    "seconds to measure for, after the warmup")                            \
  X(WARMUP, "warmup", ARG_SECONDS, warmup, "S",                             \
    "seconds of requests sent first and not counted (default 0)")          \
  X(RATE, "rate", ARG_POSITIVE, rate, "R",                                  \
    "open loop: start R requests a second on a fixed schedule")            \
  X(SERVICE, "service", ARG_STRING, service, "NAME",                        \
    "health-checked service (default \"\": the whole server)")              \
  X(CA, "ca", ARG_STRING, ca, "FILE",                                       \
    "PEM roots that verify the server; turns on TLS")                       \
  X(CERT, "cert", ARG_STRING, cert, "FILE",                                 \
    "PEM client certificate for mutual TLS (with --key)")                   \
  X(KEY, "key", ARG_STRING, key, "FILE", "PEM private key of --cert")       \
  X(TOKEN, "token", ARG_STRING, token, "TOKEN",                             \
    "bearer token (default: $TESSERA_TOKEN; needs --ca)")                   \
  X(FORMAT, "format", ARG_STRING, format_name, "table|json|csv",           \
    "how to print the answer (default table)")                              \
  X(BATCH, "batch", ARG_COUNT, batch, "N",                                  \
    "rows per request: of generated inputs without --input (default 1), "  \
    "of eval's batches (default 32)")                                       \
  X(LABELS, "labels", ARG_STRING, labels, "FILE.npy",                       \
    "the expected answer of each input row")                                \
  X(REFERENCE, "reference", ARG_STRING, reference, "NAME",                  \
    "a second model to compare the answers with")                           \
  X(SEED, "seed", ARG_NATURAL, seed, "N",                                   \
    "seed of generated inputs (default 0)")                                 \
  X(HELP, "help", ARG_NONE, help, NULL, "show this help")

enum option_id {
#define TS_X(id, name, kind, field, metavar, help) OPT_##id,
  OPTION_LIST(TS_X)
#undef TS_X
      N_OPTIONS
};
#define O(id) (1u << OPT_##id)

static const struct option_info {
  const char *name;
  arg_kind kind;
  size_t offset;
  const char *metavar;
  const char *help;
} option_table[N_OPTIONS] = {
#define TS_X(id, name, kind, field, metavar, help) \
  {name, kind, offsetof(options, field), metavar, help},
    OPTION_LIST(TS_X)
#undef TS_X
};

/* ---- commands ------------------------------------------------------- */

typedef int (*command_fn)(cli *c, ts_err *err);

#define CONNECTION (O(SERVER) | O(TIMEOUT) | O(CA) | O(CERT) | O(KEY) | O(TOKEN) | O(HELP))
/* Inputs from files or generated from the model's metadata. */
#define INPUTS (O(INPUT) | O(BATCH) | O(SEED))

/* X(name, accepted options besides CONNECTION, required options, synopsis,
 *   description) */
#define COMMAND_LIST(X)                                                      \
  X(infer, O(MODEL) | INPUTS | O(OUTPUT) | O(TYPED) | O(FORMAT),             \
    O(SERVER) | O(MODEL),                                                    \
    "--server ADDR --model NAME [--input NAME=FILE.npy]... "                 \
    "[--output NAME[=FILE.npy]]... [--typed] [--format F]",                  \
    "Runs one inference (ModelInfer) and prints each output tensor: name, "  \
    "datatype, shape and values, or writes it to a .npy file. Without "      \
    "--input, random inputs of the model's datatypes and shapes are sent.")  \
  X(models, O(FORMAT), O(SERVER), "--server ADDR [--format F]",              \
    "Lists the server's models and their states (RepositoryIndex).")         \
  X(load, O(MODEL), O(SERVER) | O(MODEL), "--server ADDR --model NAME",      \
    "Loads a model from the server's repository (RepositoryModelLoad).")     \
  X(unload, O(MODEL), O(SERVER) | O(MODEL), "--server ADDR --model NAME",    \
    "Unloads a model (RepositoryModelUnload).")                              \
  X(health, O(SERVICE), O(SERVER), "--server ADDR [--service NAME]",         \
    "Asks grpc.health.v1 Check, then ServerLive and ServerReady. Exits 0 "   \
    "only if the server is serving, live and ready.")                        \
  X(metadata, O(MODEL) | O(FORMAT), O(SERVER),                               \
    "--server ADDR [--model NAME] [--format F]",                             \
    "Shows ServerMetadata, or ModelMetadata with --model (a dim of -1 is "   \
    "variable).")                                                            \
  X(status, O(FORMAT), O(SERVER), "--server ADDR [--format F]",              \
    "Shows the server, its models and each model's inputs and outputs, "    \
    "then (on Tessera) the workers, model states and the shard map.")     \
  X(bench, O(MODEL) | INPUTS | O(TYPED) | O(CONCURRENCY) | O(REQUESTS) |     \
    O(DURATION) | O(WARMUP) | O(RATE) | O(FORMAT),                           \
    O(SERVER) | O(MODEL),                                                    \
    "--server ADDR --model NAME [--input NAME=FILE.npy]... "                 \
    "[--concurrency C] [--requests N] [--duration S] [--warmup S] "          \
    "[--rate R] [--typed] [--format F]",                                     \
    "Closed-loop load keeps C inferences in flight; with --rate, an open "   \
    "loop starts R a second on schedule (at most C in flight; the rest are " \
    "dropped and counted). Runs until N requests or S seconds after the "    \
    "warmup, then prints throughput and p50/p90/p99 latency (from the "      \
    "scheduled start in an open loop). A progress line on a terminal.")      \
  X(eval, O(MODEL) | O(INPUT) | O(BATCH) | O(LABELS) | O(REFERENCE) |        \
    O(OUTPUT) | O(TYPED) | O(FORMAT),                                        \
    O(SERVER) | O(MODEL) | O(INPUT) | O(LABELS),                             \
    "--server ADDR --model NAME --input [NAME=]FILE.npy... "                 \
    "--labels FILE.npy [--reference NAME] [--output NAME] [--batch N] "      \
    "[--format F]",                                                          \
    "Sends the input rows in batches of N and compares the answers with "    \
    "the labels: accuracy for integer labels, RMSE and max abs error for "   \
    "float labels; with --reference, also the top-1 agreement and max abs "  \
    "difference of the two models' answers.")


static const struct command {
  const char *name;
  command_fn run;
  unsigned accepts, requires;
  const char *synopsis, *description;
} command_table[] = {
#define TS_X(name, accepts, requires, synopsis, description) \
  {#name, cmd_##name, (accepts) | CONNECTION, requires, synopsis, description},
    COMMAND_LIST(TS_X)
#undef TS_X
};
#define N_COMMANDS (sizeof command_table / sizeof command_table[0])

/* ---- command line ----------------------------------------------------------- */

static int set_flag(void *field, const char *arg) {
  (void)arg;
  *(int *)field = 1;
  return 0;
}

static int set_string(void *field, const char *arg) {
  *(const char **)field = arg;
  return 0;
}

static int set_list(void *field, const char *arg) {
  string_list *list = field;
  const char **items = realloc(list->items, (size_t)(list->n + 1) * sizeof *items);
  if (!items) return -1;
  items[list->n++] = arg;
  list->items = items;
  return 0;
}

static int set_count(void *field, const char *arg) {
  long long v;
  if (ts_integer_parse(arg, 1, INT32_MAX, &v, NULL)) return -1;
  *(long *)field = (long)v;
  return 0;
}

static int set_natural(void *field, const char *arg) {
  long long v;
  if (ts_integer_parse(arg, 0, INT32_MAX, &v, NULL)) return -1;
  *(long *)field = (long)v;
  return 0;
}

/* A decimal number such as "2", "0.5" or "1e3"; -1 for anything else
 * (a sign, junk after it, infinity, NaN, or below `min`). */
static int set_decimal(void *field, const char *arg, double min,
                       bool min_allowed) {
  char *end;
  if (!isdigit((unsigned char)arg[0]) && arg[0] != '.') return -1;
  errno = 0;
  double v = strtod(arg, &end);
  if (*end || errno || !isfinite(v) || v < min || (v == min && !min_allowed))
    return -1;
  *(double *)field = v;
  return 0;
}

static int set_seconds(void *field, const char *arg) {
  return set_decimal(field, arg, 0, true);
}

static int set_positive(void *field, const char *arg) {
  return set_decimal(field, arg, 0, false);
}

/* By arg_kind: stores arg into the field; -1 when arg is not acceptable. */
static int (*const option_setters[])(void *field, const char *arg) = {
    [ARG_NONE] = set_flag,
    [ARG_STRING] = set_string,
    [ARG_LIST] = set_list,
    [ARG_COUNT] = set_count,
    [ARG_NATURAL] = set_natural,
    [ARG_SECONDS] = set_seconds,
    [ARG_POSITIVE] = set_positive,
};

/* What set_* refuses, by arg_kind, for the usage message. */
static const char *const option_expects[] = {
    [ARG_COUNT] = "a positive integer",
    [ARG_NATURAL] = "an integer >= 0",
    [ARG_SECONDS] = "a number >= 0",
    [ARG_POSITIVE] = "a number > 0",
};

static bool option_given(const options *opt, int id) {
  const struct option_info *info = &option_table[id];
  const char *field = (const char *)opt + info->offset;
  switch (info->kind) {
    case ARG_STRING: return *(const char *const *)field != NULL;
    case ARG_LIST: return ((const string_list *)field)->n > 0;
    default: return true;
  }
}

static void options_free(options *opt) {
  free(opt->inputs.items);
  free(opt->outputs.items);
}

static void print_overview(FILE *f) {
  fprintf(f, "usage: tessera COMMAND [OPTIONS]\n\ncommands:\n");
  for (size_t i = 0; i < N_COMMANDS; i++)
    fprintf(f, "  %-9s %s\n", command_table[i].name,
            command_table[i].synopsis);
  fprintf(f, "\nRun 'tessera COMMAND --help' for details.\n");
}

static void print_command_help(const struct command *cmd, FILE *f) {
  fprintf(f, "usage: tessera %s %s\n\n%s\n\noptions:\n", cmd->name,
          cmd->synopsis, cmd->description);
  for (int id = 0; id < N_OPTIONS; id++) {
    if (!(cmd->accepts & (1u << id))) continue;
    char left[64];
    snprintf(left, sizeof left, "--%s%s%s", option_table[id].name,
             option_table[id].metavar ? " " : "",
             option_table[id].metavar ? option_table[id].metavar : "");
    fprintf(f, "  %-26s %s\n", left, option_table[id].help);
  }
}

/* Fails the command line: prints why and a hint; returns EXIT_USAGE. */
static int usage_error(const struct command *cmd, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static int usage_error(const struct command *cmd, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "tessera %s: ", cmd->name);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fprintf(stderr, "\nTry 'tessera %s --help'.\n", cmd->name);
  return EXIT_USAGE;
}

/* Parses argv (argv[0] is the command's name) into *opt, which
 * options_free releases. Returns 0 or EXIT_USAGE after saying why. */
static int parse_options(const struct command *cmd, int argc, char **argv,
                         options *opt) {
  struct option longopts[N_OPTIONS + 1];
  memset(opt, 0, sizeof *opt);
  opt->timeout_ms = DEFAULT_TIMEOUT_MS;
  opt->concurrency = 1;
  for (int id = 0; id < N_OPTIONS; id++)
    longopts[id] = (struct option){
        option_table[id].name,
        option_table[id].kind == ARG_NONE ? no_argument : required_argument,
        NULL, 256 + id};
  memset(&longopts[N_OPTIONS], 0, sizeof longopts[N_OPTIONS]);
  opterr = 0;
  optind = 1;
  int ch;
  while ((ch = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
    if (ch == 'h') {
      opt->help = 1;
      continue;
    }
    if (ch == '?')
      return usage_error(cmd, "unknown option '%s'", argv[optind - 1]);
    if (ch == ':')
      return usage_error(cmd, "option '%s' needs a value", argv[optind - 1]);
    int id = ch - 256;
    const struct option_info *info = &option_table[id];
    if (!(cmd->accepts & (1u << id)))
      return usage_error(cmd, "--%s does not apply to this command",
                         info->name);
    if (option_setters[info->kind]((char *)opt + info->offset, optarg))
      return usage_error(cmd, "--%s: '%s' is not %s", info->name, optarg,
                         option_expects[info->kind]);
  }
  if (optind < argc)
    return usage_error(cmd, "unexpected argument '%s'", argv[optind]);
  if (opt->help) return 0;
  for (int id = 0; id < N_OPTIONS; id++)
    if ((cmd->requires & (1u << id)) && !option_given(opt, id))
      return usage_error(cmd, "--%s is required", option_table[id].name);
  if (!opt->cert != !opt->key)
    return usage_error(cmd, "--cert and --key go together");
  for (int i = 0; i < opt->inputs.n; i++) {
    const char *spec = opt->inputs.items[i], *eq = strchr(spec, '=');
    if (!spec[0] || eq == spec || (eq && !eq[1]))
      return usage_error(cmd, "--input '%s' is not NAME=FILE.npy or FILE.npy",
                         spec);
  }
  if (opt->format_name && cli_format_parse(opt->format_name, &opt->format))
    return usage_error(cmd, "--format '%s' is not table, json or csv",
                       opt->format_name);
  for (int i = 0; i < opt->outputs.n; i++) {
    const char *spec = opt->outputs.items[i], *eq = strchr(spec, '=');
    if (eq == spec || !spec[0] || (eq && !eq[1]))
      return usage_error(cmd, "--output '%s' is not NAME or NAME=FILE.npy", spec);
  }
  if (cmd->run == cmd_eval &&
      (opt->outputs.n > 1 || (opt->outputs.n && strchr(opt->outputs.items[0], '='))))
    return usage_error(cmd, "eval judges one output: give at most one --output NAME");
  return 0;
}

/* The gRPC target of --server: as given when it has a port (or is a
 * "scheme:" target such as unix:PATH), else HOST:DEFAULT_PORT in target
 * (size bytes). A bare IPv6 address goes in brackets: "[::1]". */
static const char *server_target(const char *server, char *target,
                                 size_t size) {
  size_t host = ts_hostport_host_length(server);
  bool bracketed = server[0] == '[' && server[strlen(server) - 1] == ']';
  if (server[host] == ':' && !bracketed) return server;
  snprintf(target, size, "%s:%s", server, DEFAULT_PORT);
  return target;
}

/* The --server list into c->servers as gRPC targets; EXIT_USAGE after
 * saying why when it is not a list of at most CLI_SERVERS_MAX. */
static int parse_servers(const struct command *cmd, const char *list, cli *c) {
  char items[CLI_SERVERS_MAX][TS_ADDRESS_MAX];
  ts_err err;
  ts_err_clear(&err);
  if (ts_address_list_split(list, CLI_SERVERS_MAX, items, &c->n_servers, &err))
    return usage_error(cmd, "--server: %s", err.msg);
  for (int i = 0; i < c->n_servers; i++) {
    char target[TS_ADDRESS_MAX + 8];
    const char *t = server_target(items[i], target, sizeof target);
    if (strlen(t) >= sizeof c->servers[i])
      return usage_error(cmd, "--server: '%s' is too long", items[i]);
    snprintf(c->servers[i], sizeof c->servers[i], "%s", t);
  }
  return 0;
}

/* Opens a channel per server, runs the command, reports its error.
 * Returns the process exit status. */
static int run_command(const struct command *cmd, const options *opt) {
  ts_err err;
  ts_rpc_creds creds = {opt->cert, opt->key, opt->ca,
                        opt->token ? opt->token : getenv("TESSERA_TOKEN"), 0};
  static cli c; /* CLI_SERVERS_MAX addresses: not on the stack */
  c.opt = opt;
  if (parse_servers(cmd, opt->server, &c)) return EXIT_USAGE;
  ts_err_clear(&err);
  ts_rpc_init();
  int rc = TS_OK;
  for (int i = 0; rc == TS_OK && i < c.n_servers; i++)
    rc = ts_rpc_channel_open(c.servers[i], &creds, &c.channels[i], &err);
  if (!rc) rc = cmd->run(&c, &err);
  for (int i = 0; i < c.n_servers; i++)
    if (c.channels[i]) ts_rpc_channel_close(c.channels[i]);
  ts_rpc_shutdown();
  fflush(stdout);
  if (rc) {
    report(&err);
    return EXIT_FAILURE;
  }
  return EXIT_SUCCESS;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    print_overview(stderr);
    return EXIT_USAGE;
  }
  if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") ||
      !strcmp(argv[1], "help")) {
    print_overview(stdout);
    return EXIT_SUCCESS;
  }
  if (!strcmp(argv[1], "--version")) {
    printf("tessera %s\n", TESSERA_VERSION);
    return EXIT_SUCCESS;
  }
  const struct command *cmd = NULL;
  for (size_t i = 0; i < N_COMMANDS && !cmd; i++)
    if (!strcmp(argv[1], command_table[i].name)) cmd = &command_table[i];
  if (!cmd) {
    fprintf(stderr, "tessera: unknown command '%s'\n\n", argv[1]);
    print_overview(stderr);
    return EXIT_USAGE;
  }
  options opt;
  int rc = parse_options(cmd, argc - 1, argv + 1, &opt);
  if (!rc && opt.help)
    print_command_help(cmd, stdout);
  else if (!rc)
    rc = run_command(cmd, &opt);
  options_free(&opt);
  return rc;
}
