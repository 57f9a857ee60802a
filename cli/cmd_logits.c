/* cmd_logits.c — `memfit logits`: the logits of every prompt position and a
 * greedy continuation, written as an MFRF file (the format of the llama.cpp
 * references in ../shared/reference: "MFRF", u32 version 1, i32 n_tokens,
 * i32 n_vocab, i32 tokens[n_tokens], f32 logits[n_tokens][n_vocab],
 * i32 n_gen, i32 gen[n_gen]; little-endian). */
#include "cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *usage_text =
    "usage: memfit logits -m MODEL [-z TOKENIZER] (--ids 1,2,3 | -p TEXT) [--gen N]\n"
    "                     -o OUT.ref [-t THREADS] [-c CTX] [-b BATCH] [--kv-type f32|f16|q8_0] [--mem SIZE] [--stats]\n";

typedef struct {
    cli_model_opts mo;
    const char *ids, *prompt, *out;
    int n_gen;
} logits_opts;

static int parse(int argc, char **argv, logits_opts *o) {
    for (int i = 1; i < argc; i++) {
        const char *v = NULL, *a = argv[i];
        bool bad = false, miss = false;
        if (cli_common_opt(argc, argv, &i, &o->mo, usage_text, &bad)) {
        } else if (cli_opt(argc, argv, &i, "--ids", NULL, &v, &miss)) o->ids = v;
        else if (cli_opt(argc, argv, &i, "-p", "--prompt", &v, &miss)) o->prompt = v;
        else if (cli_opt(argc, argv, &i, "-o", "--output", &v, &miss)) o->out = v;
        else if (cli_opt(argc, argv, &i, "--gen", NULL, &v, &miss)) {
            if (!miss && !cli_int(v, 0, 1 << 20, &o->n_gen)) bad = true;
        } else return cli_usage("logits", "unknown option '%s'", a);
        if (bad || miss) return cli_usage("logits", "bad or missing value for '%s'", a);
    }
    if (!o->mo.model || !o->out) return cli_usage("logits", "-m MODEL and -o OUT are required");
    if (!o->ids == !o->prompt) return cli_usage("logits", "give exactly one of --ids or -p");
    return 0;
}

static int32_t argmax(const float *x, int n) {
    int32_t best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

/* Buffer: header, tokens, logits, n_gen, gen — filled in place. */
static int compute(mf_session *s, const int32_t *ids, int n, int n_vocab, int n_gen,
                   int n_batch, char *buf, size_t hdr) {
    float *logits = (float *)(buf + hdr);
    for (int done = 0; done < n;) {
        int chunk = n - done < n_batch ? n - done : n_batch;
        if (mf_session_eval(s, ids + done, chunk, 1) != MF_OK) return cli_fail("evaluation failed");
        for (int i = 0; i < chunk; i++)
            memcpy(logits + (size_t)(done + i) * n_vocab, mf_session_logits(s, i),
                   sizeof(float) * (size_t)n_vocab);
        done += chunk;
    }
    char *tail = buf + hdr + sizeof(float) * (size_t)n * (size_t)n_vocab;
    int32_t gen_n = n_gen;
    memcpy(tail, &gen_n, 4);
    for (int g = 0; g < n_gen; g++) {
        int32_t id = argmax(mf_session_logits(s, -1), n_vocab);
        memcpy(tail + 4 + 4 * (size_t)g, &id, 4);
        if (g + 1 < n_gen && mf_session_eval(s, &id, 1, 0) != MF_OK)
            return cli_fail("greedy continuation failed");
    }
    return 0;
}

static int write_ref(mf_session *s, const logits_opts *o, const int32_t *ids, int n, int n_vocab) {
    size_t hdr = 16 + 4 * (size_t)n;
    size_t total = hdr + sizeof(float) * (size_t)n * (size_t)n_vocab + 4 + 4 * (size_t)o->n_gen;
    char *buf = malloc(total);
    if (!buf) {
        fprintf(stderr, "memfit: out of memory for %zu bytes of logits\n", total);
        return 1;
    }
    uint32_t version = 1;
    int32_t nt = n, nv = n_vocab;
    memcpy(buf, "MFRF", 4);
    memcpy(buf + 4, &version, 4);
    memcpy(buf + 8, &nt, 4);
    memcpy(buf + 12, &nv, 4);
    memcpy(buf + 16, ids, 4 * (size_t)n);
    int rc = compute(s, ids, n, n_vocab, o->n_gen, mf_session_n_batch(s), buf, hdr);
    if (rc == 0 && mf_write_file(o->out, buf, total) != MF_OK) rc = cli_fail("cannot write");
    free(buf);
    return rc;
}

int cmd_logits(int argc, char **argv) {
    logits_opts o = {0};
    int rc = parse(argc, argv, &o);
    if (rc) return rc;
    mf_model_params mp = {.tokenizer_path = o.mo.tokenizer};
    mf_model *m = NULL;
    mf_session *s = NULL;
    int32_t *ids = NULL;
    int n = 0;
    if (mf_model_load(o.mo.model, &mp, &m) != MF_OK) return cli_fail("cannot load model");
    rc = 1;
    if (o.ids && !cli_ids(o.ids, &ids, &n)) {
        cli_usage("logits", "bad --ids list '%s'", o.ids);
        goto done;
    }
    if (o.prompt && cli_tokenize(m, o.prompt, 1, &ids, &n) != MF_OK) {
        cli_fail("cannot tokenize the prompt");
        goto done;
    }
    mf_model_info info;
    mf_model_get_info(m, &info);
    int need = n + (o.n_gen > 0 ? o.n_gen - 1 : 0);
    mf_session_params sp = cli_session_params(&o.mo);
    /* the MFRF output buffer: every position's logits */
    sp.reserve = 16 + 8 + 4 * ((uint64_t)n + (uint64_t)o.n_gen) +
                 sizeof(float) * (uint64_t)n * (uint64_t)info.n_vocab;
    if (!sp.n_ctx && need > info.n_ctx_train) sp.n_ctx = need;
    if (mf_session_create(m, &sp, &s) != MF_OK) {
        cli_fail("cannot create a session");
        goto done;
    }
    if (need > mf_session_n_ctx(s)) {
        fprintf(stderr, "memfit: %d prompt + %d generated tokens exceed the context of %d\n", n,
                o.n_gen, mf_session_n_ctx(s));
        goto done;
    }
    rc = write_ref(s, &o, ids, n, info.n_vocab);
    if (o.mo.stats) cli_print_stats(s, 0.0);
done:
    free(ids);
    mf_session_free(s);
    mf_model_free(m);
    return rc;
}
