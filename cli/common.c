/* common.c — option parsing and error reporting shared by the subcommands. */
#include "cli.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int cli_fail(const char *what) {
    fprintf(stderr, "memfit: %s: %s\n", what, mf_last_error());
    return 1;
}

int cli_usage(const char *cmd, const char *fmt, ...) {
    va_list ap;
    fprintf(stderr, "memfit %s: ", cmd);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, " (see 'memfit %s --help')\n", cmd);
    return 1;
}

bool cli_opt(int argc, char **argv, int *i, const char *name, const char *alt,
             const char **val, bool *missing) {
    const char *a = argv[*i];
    if (strcmp(a, name) != 0 && !(alt && strcmp(a, alt) == 0)) return false;
    if (*i + 1 >= argc) {
        *missing = true;
        return true;
    }
    *val = argv[++*i];
    return true;
}

bool cli_int(const char *s, long lo, long hi, int *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (end == s || *end || errno || v < lo || v > hi) return false;
    *out = (int)v;
    return true;
}

bool cli_float(const char *s, float *out) {
    char *end;
    errno = 0;
    float v = strtof(s, &end);
    if (end == s || *end || errno || !isfinite(v)) return false;
    *out = v;
    return true;
}

bool cli_u64(const char *s, uint64_t *out) {
    char *end;
    errno = 0;
    if (*s == '-') return false;
    unsigned long long v = strtoull(s, &end, 10);
    if (end == s || *end || errno) return false;
    *out = v;
    return true;
}

bool cli_ids(const char *s, int32_t **ids, int *n) {
    int cap = 16, k = 0;
    int32_t *a = malloc(sizeof *a * (size_t)cap);
    if (!a) return false;
    const char *p = s;
    while (*p) {
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (end == p || errno || v < 0 || v > INT32_MAX || (*end && *end != ',')) goto fail;
        if (k == cap) {
            int32_t *b = realloc(a, sizeof *a * (size_t)(cap *= 2));
            if (!b) goto fail;
            a = b;
        }
        a[k++] = (int32_t)v;
        p = *end ? end + 1 : end;
    }
    if (k == 0) goto fail;
    *ids = a;
    *n = k;
    return true;
fail:
    free(a);
    return false;
}

char *cli_read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "memfit: cannot open '%s': %s\n", path, strerror(errno));
        return NULL;
    }
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        n += fread(buf + n, 1, cap - n - 1, f);
        if (n < cap - 1) break;
        char *b = realloc(buf, cap *= 2);
        if (!b) free(buf);
        buf = b;
    }
    bool err = ferror(f);
    fclose(f);
    if (!buf || err) {
        fprintf(stderr, "memfit: cannot read '%s'\n", path);
        free(buf);
        return NULL;
    }
    buf[n] = 0;
    if (len) *len = n;
    return buf;
}

bool cli_read_ids(const char *path, int32_t **ids, int *n) {
    char *text = cli_read_file(path, NULL);
    if (!text) return false;
    for (char *p = text; *p; p++)
        if (*p == ',' || *p == '\n' || *p == '\r' || *p == '\t') *p = ' ';
    int cap = 1024, k = 0;
    int32_t *a = malloc(sizeof *a * (size_t)cap);
    char *p = text, *end;
    while (a) {
        while (*p == ' ') p++;
        if (!*p) break;
        long v = strtol(p, &end, 10);
        if (end == p || v < 0 || v > INT32_MAX || (*end && *end != ' ')) {
            fprintf(stderr, "memfit: '%s' is not a list of token ids\n", path);
            free(a);
            a = NULL;
            break;
        }
        if (k == cap) {
            int32_t *b = realloc(a, sizeof *a * (size_t)(cap *= 2));
            if (!b) free(a);
            a = b;
            if (!a) break;
        }
        a[k++] = (int32_t)v;
        p = end;
    }
    free(text);
    *ids = a;
    *n = k;
    return a != NULL;
}

bool cli_model_opt(int argc, char **argv, int *i, cli_model_opts *o, bool *bad) {
    const char *v = NULL;
    bool missing = false;
    if (cli_opt(argc, argv, i, "-m", "--model", &v, &missing)) o->model = v;
    else if (cli_opt(argc, argv, i, "-z", "--tokenizer", &v, &missing)) o->tokenizer = v;
    else if (cli_opt(argc, argv, i, "--kv-type", "-ctk", &v, &missing)) o->kv_type = v;
    else if (!strcmp(argv[*i], "--stats")) o->stats = 1;
    else if (cli_opt(argc, argv, i, "--mem", NULL, &v, &missing)) {
        if (!missing && mf_parse_size(v, &o->mem) != MF_OK) *bad = true;
    }
    else if (cli_opt(argc, argv, i, "-t", "--threads", &v, &missing)) {
        if (!missing && !cli_int(v, 1, 256, &o->n_threads)) *bad = true;
    } else if (cli_opt(argc, argv, i, "-c", "--ctx-size", &v, &missing)) {
        if (!missing && !cli_int(v, 1, 1 << 24, &o->n_ctx)) *bad = true;
    } else if (cli_opt(argc, argv, i, "-b", "--batch-size", &v, &missing)) {
        if (!missing && !cli_int(v, 1, 1 << 20, &o->n_batch)) *bad = true;
    } else return false;
    if (missing) *bad = true;
    return true;
}

bool cli_common_opt(int argc, char **argv, int *i, cli_model_opts *o, const char *usage,
                    bool *bad) {
    if (!strcmp(argv[*i], "-h") || !strcmp(argv[*i], "--help")) {
        fputs(usage, stdout);
        exit(0);
    }
    return cli_model_opt(argc, argv, i, o, bad);
}

mf_status cli_tokenize(const mf_model *m, const char *text, int add_bos, int32_t **ids, int *n) {
    size_t len = strlen(text);
    int cap = (int)(len < (1u << 28) ? len : (1u << 28)) + 8;
    int32_t *a = malloc(sizeof *a * (size_t)cap);
    if (!a) return MF_E_NOMEM;
    mf_status st = mf_tokenize(m, text, len, add_bos, a, cap, n);
    if (st == MF_E_INVALID && *n > cap) {
        int32_t *b = realloc(a, sizeof *a * (size_t)*n);
        if (!b) st = MF_E_NOMEM;
        else {
            a = b;
            st = mf_tokenize(m, text, len, add_bos, a, *n, n);
        }
    }
    if (st != MF_OK) {
        free(a);
        return st;
    }
    *ids = a;
    return MF_OK;
}

void cli_print_token(const mf_model *m, int32_t prev, int32_t id) {
    char buf[256];
    size_t len = 0;
    if (mf_token_to_piece(m, prev, id, buf, sizeof buf, &len) != MF_OK) return;
    fwrite(buf, 1, len < sizeof buf ? len : sizeof buf, stdout);
    fflush(stdout);
}

double cli_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

mf_session_params cli_session_params(const cli_model_opts *o) {
    mf_session_params p = {.n_ctx = o->n_ctx, .n_threads = o->n_threads, .n_batch = o->n_batch,
                           .kv_type = o->kv_type, .mem_budget = o->mem};
    return p;
}

void cli_print_stats(const mf_session *s, double tok_s) {
    mf_session_stats st;
    mf_session_get_stats(s, &st);
    const double mib = 1048576.0;
    fprintf(stderr, "stats: peak memory (VmHWM) %.1f MiB", st.peak_rss / mib);
    if (st.budget)
        fprintf(stderr, " | budget %.1f MiB, predicted peak %.1f MiB (%+.1f%%)", st.budget / mib,
                st.predicted_peak / mib,
                100.0 * ((double)st.peak_rss - (double)st.predicted_peak) / (double)st.predicted_peak);
    fprintf(stderr, "\nstats: read %.1f MiB from disk (%s), %.2f s in reads, %.2f s waiting | "
            "%d streamed units, %.1f MiB resident, %.1f MiB streamed per pass | prefill chunk %d | "
            "%.1f MiB repacked\n",
            st.bytes_read / mib, st.direct_io ? "O_DIRECT" : "buffered", st.io_seconds,
            st.wait_seconds, st.n_streamed_layers, st.resident_bytes / mib,
            st.streamed_bytes_per_pass / mib, st.n_batch, st.packed_bytes / mib);
    if (st.budget)
        fprintf(stderr, "stats: %.2f tok/s measured, %.2f predicted for decoding\n", tok_s,
                st.predicted_decode_tps);
}
