/* cli.h — what the subcommands share: option parsing helpers, the error
 * exit, and loading a model from the common flags. The CLI uses only the
 * public API (include/memfit.h). */
#ifndef MF_CLI_H
#define MF_CLI_H

#include "memfit.h"

#include <stdbool.h>

/* Print "memfit: what: <last error>" to stderr; returns 1 (the exit code). */
int cli_fail(const char *what);
/* Print a usage error; returns 1. */
int cli_usage(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* If argv[*i] is `name` (or `alt`), take its value: advances *i and sets *val.
 * Sets *missing if the value is absent. */
bool cli_opt(int argc, char **argv, int *i, const char *name, const char *alt,
             const char **val, bool *missing);
bool cli_int(const char *s, long lo, long hi, int *out);
bool cli_float(const char *s, float *out);
bool cli_u64(const char *s, uint64_t *out);
/* Parse "1,2,3" into a malloc'd array. */
bool cli_ids(const char *s, int32_t **ids, int *n);
/* Token ids separated by whitespace or commas from a file (malloc'd);
 * false with a message printed on failure. */
bool cli_read_ids(const char *path, int32_t **ids, int *n);
/* Read a whole file (malloc'd, NUL-terminated). NULL on failure (message printed). */
char *cli_read_file(const char *path, size_t *len);

/* Common model flags. */
typedef struct cli_model_opts {
    const char *model, *tokenizer;
    int n_threads, n_ctx, n_batch;
    const char *kv_type;
    uint64_t mem;      /* --mem: the memory budget in bytes, 0 = none */
    int stats;         /* --stats */
} cli_model_opts;
/* Consume -m/-z/-t/-c/-b/--kv-type/--mem/--stats at argv[*i] if present; returns true if consumed.
 * *bad is set on a malformed value. */
bool cli_model_opt(int argc, char **argv, int *i, cli_model_opts *o, bool *bad);

/* -h/--help (prints usage, exits 0) or one of the common model flags. */
bool cli_common_opt(int argc, char **argv, int *i, cli_model_opts *o, const char *usage,
                    bool *bad);

/* Tokenize text with BOS per the model (grows the buffer as needed). */
mf_status cli_tokenize(const mf_model *m, const char *text, int add_bos, int32_t **ids, int *n);
double cli_now(void); /* monotonic seconds */
void cli_print_token(const mf_model *m, int32_t prev, int32_t id);

int cmd_run(int argc, char **argv);
int cmd_info(int argc, char **argv);
int cmd_logits(int argc, char **argv);
int cmd_perplexity(int argc, char **argv);
int cmd_synth(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_plan(int argc, char **argv);
int cmd_batch(int argc, char **argv);
/* The session parameters the common flags ask for. */
mf_session_params cli_session_params(const cli_model_opts *o);
/* With --stats: peak memory, bytes read, I/O wait, tokens/s, beside the plan. */
void cli_print_stats(const mf_session *s, double tok_s);
int cmd_quantize(int argc, char **argv);
int cmd_kld(int argc, char **argv);

#endif
