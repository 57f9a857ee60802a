/* cmd_perplexity.c — `memfit perplexity`: perplexity of a text over
 * non-overlapping windows of the context length. Each window starts from an
 * empty cache; every token after the first of a window is scored
 * (-log p(token | the window before it)), so a window of c tokens scores
 * c - 1 predictions. Progress goes to stderr, the result to stdout. */
#include "cli.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *usage_text =
    "usage: memfit perplexity -m MODEL [-z TOKENIZER] (-f TEXT | --ids-file IDS) [-c CTX]\n"
    "                         [--chunks N] [-t THREADS] [-b BATCH]\n"
    "  IDS: whitespace- or comma-separated token ids\n";

typedef struct {
    cli_model_opts mo;
    const char *file, *ids_file;
    int max_chunks;
} ppl_opts;

static int parse(int argc, char **argv, ppl_opts *o) {
    for (int i = 1; i < argc; i++) {
        const char *v = NULL, *a = argv[i];
        bool bad = false, miss = false;
        if (cli_common_opt(argc, argv, &i, &o->mo, usage_text, &bad)) {
        } else if (cli_opt(argc, argv, &i, "-f", "--file", &v, &miss)) o->file = v;
        else if (cli_opt(argc, argv, &i, "--ids-file", NULL, &v, &miss)) o->ids_file = v;
        else if (cli_opt(argc, argv, &i, "--chunks", NULL, &v, &miss)) {
            if (!miss && !cli_int(v, 1, 1 << 30, &o->max_chunks)) bad = true;
        } else return cli_usage("perplexity", "unknown option '%s'", a);
        if (bad || miss) return cli_usage("perplexity", "bad or missing value for '%s'", a);
    }
    if (!o->mo.model) return cli_usage("perplexity", "-m MODEL is required");
    if (!o->file == !o->ids_file) return cli_usage("perplexity", "give one of -f or --ids-file");
    return 0;
}

/* log-softmax of x at index id, in double */
static double nll(const float *x, int n, int32_t id) {
    float mx = x[0];
    for (int i = 1; i < n; i++) mx = x[i] > mx ? x[i] : mx;
    double sum = 0;
    for (int i = 0; i < n; i++) sum += exp((double)x[i] - mx);
    return log(sum) - ((double)x[id] - mx);
}

static int score(mf_session *s, const int32_t *ids, int n, int n_vocab, int max_chunks) {
    int ctx = mf_session_n_ctx(s), B = mf_session_n_batch(s);
    int n_chunks = n / ctx;
    if (max_chunks && n_chunks > max_chunks) n_chunks = max_chunks;
    if (n_chunks == 0) {
        fprintf(stderr, "memfit: the text has %d tokens, fewer than one window of %d (use -c)\n",
                n, ctx);
        return 1;
    }
    double total = 0, t0 = cli_now();
    long count = 0;
    for (int c = 0; c < n_chunks; c++) {
        const int32_t *w = ids + (size_t)c * ctx;
        mf_session_reset(s);
        for (int done = 0; done < ctx; done += B) {
            int k = ctx - done < B ? ctx - done : B;
            if (mf_session_eval(s, w + done, k, 1) != MF_OK) return cli_fail("evaluation failed");
            for (int i = 0; i < k && done + i + 1 < ctx; i++, count++)
                total += nll(mf_session_logits(s, i), n_vocab, w[done + i + 1]);
        }
        double el = cli_now() - t0;
        fprintf(stderr, "\r[%d/%d] ppl %.4f  (%.1f tok/s, ~%.0f s left)   ", c + 1, n_chunks,
                exp(total / (double)count), (double)(c + 1) * ctx / el,
                el / (c + 1) * (n_chunks - c - 1));
    }
    fprintf(stderr, "\n");
    printf("perplexity: %.4f over %ld predictions in %d windows of %d tokens\n",
           exp(total / (double)count), count, n_chunks, ctx);
    return 0;
}

int cmd_perplexity(int argc, char **argv) {
    ppl_opts o = {0};
    int rc = parse(argc, argv, &o);
    if (rc) return rc;
    mf_model_params mp = {.tokenizer_path = o.mo.tokenizer};
    mf_model *m = NULL;
    mf_session *s = NULL;
    int32_t *ids = NULL;
    int n = 0;
    if (mf_model_load(o.mo.model, &mp, &m) != MF_OK) return cli_fail("cannot load model");
    rc = 1;
    mf_model_info info;
    mf_model_get_info(m, &info);
    if (o.ids_file && !cli_read_ids(o.ids_file, &ids, &n)) goto done;
    if (o.file) {
        char *text = cli_read_file(o.file, NULL);
        mf_status st = text ? cli_tokenize(m, text, 1, &ids, &n) : MF_E_IO;
        free(text);
        if (st != MF_OK) {
            if (st != MF_E_IO) cli_fail("cannot tokenize the text");
            goto done;
        }
    }
    for (int i = 0; i < n; i++)
        if (ids[i] >= info.n_vocab) {
            fprintf(stderr, "memfit: token id %d is outside the vocabulary of %d\n", ids[i],
                    info.n_vocab);
            goto done;
        }
    mf_session_params sp = cli_session_params(&o.mo);
    if (!sp.n_ctx) sp.n_ctx = 512;
    if (mf_session_create(m, &sp, &s) != MF_OK) {
        cli_fail("cannot create a session");
        goto done;
    }
    double t0 = cli_now();
    rc = score(s, ids, n, info.n_vocab, o.max_chunks);
    if (o.mo.stats) cli_print_stats(s, (double)n / (cli_now() - t0));
done:
    free(ids);
    mf_session_free(s);
    mf_model_free(m);
    return rc;
}
