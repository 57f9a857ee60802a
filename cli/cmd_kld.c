/* cmd_kld.c — `memfit kld`: how far a model's next-token distributions are
 * from a base model's over the same tokens, as llama.cpp's
 * `perplexity --kl-divergence` reports it: KL(base || model) per position
 * (mean, percentiles), how often both rank the same token first, and the
 * perplexity of each. The base is a second model evaluated in lockstep, or
 * an MFRF file of its logits (`memfit logits`, or the llama.cpp references).
 *
 * Tokens are cut into windows of -c tokens, each evaluated from an empty
 * cache; as in llama.cpp only the second half of each window is scored (the
 * first half is context), unless --all. A reference file is one window. All
 * sums are in double; log-probabilities come from a log-sum-exp of the
 * float logits. */
#include "cli.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *usage_text =
    "usage: memfit kld -m MODEL (--base-model BASE | --base BASE.ref)\n"
    "                  [-f TEXT | --ids-file IDS] [-c CTX] [--chunks N] [--all] [-t N] [-b N]\n"
    "  --base-model BASE  evaluate BASE over the same windows\n"
    "  --base BASE.ref    base logits from an MFRF file (memfit logits); its tokens are used\n"
    "  -c CTX             window length (512; --base-model only); --all scores every position,\n"
    "                     not only the second half of each window\n";

typedef struct kld_opts {
    cli_model_opts mo;
    const char *base_model, *base_ref, *file, *ids_file;
    int max_chunks, all;
} kld_opts;

static int parse(int argc, char **argv, kld_opts *o) {
    for (int i = 1; i < argc; i++) {
        const char *v = NULL, *a = argv[i];
        bool bad = false, miss = false;
        if (cli_common_opt(argc, argv, &i, &o->mo, usage_text, &bad)) {
        } else if (cli_opt(argc, argv, &i, "--base-model", NULL, &v, &miss)) o->base_model = v;
        else if (cli_opt(argc, argv, &i, "--base", NULL, &v, &miss)) o->base_ref = v;
        else if (cli_opt(argc, argv, &i, "-f", "--file", &v, &miss)) o->file = v;
        else if (cli_opt(argc, argv, &i, "--ids-file", NULL, &v, &miss)) o->ids_file = v;
        else if (cli_opt(argc, argv, &i, "--chunks", NULL, &v, &miss)) {
            if (!miss && !cli_int(v, 1, 1 << 30, &o->max_chunks)) bad = true;
        } else if (!strcmp(a, "--all")) o->all = 1;
        else return cli_usage("kld", "unknown option '%s'", a);
        if (bad || miss) return cli_usage("kld", "bad or missing value for '%s'", a);
    }
    if (!o->mo.model) return cli_usage("kld", "-m MODEL is required");
    if (!o->base_model == !o->base_ref)
        return cli_usage("kld", "give one of --base-model or --base");
    if (o->file && o->ids_file) return cli_usage("kld", "give at most one of -f and --ids-file");
    if (o->base_model && !o->file && !o->ids_file)
        return cli_usage("kld", "--base-model needs tokens: -f TEXT or --ids-file IDS");
    if (o->base_ref && o->mo.n_ctx)
        return cli_usage("kld", "-c does not apply to --base: the reference is one window");
    return 0;
}

/* ---- statistics ---- */

typedef struct kstats {
    double *kl;          /* (n) every scored position's KL, for percentiles */
    long n, cap;
    double sum_kl, sum_kl2, nll_q, nll_b, sum_d2, dp2;
    long same_top;
} kstats;

/* log-sum-exp of x and its argmax */
static double lse(const float *x, int n, int *arg) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    double mx = x[best], s = 0;
    for (int i = 0; i < n; i++) s += exp((double)x[i] - mx);
    *arg = best;
    return mx + log(s);
}

static bool score(kstats *k, const float *base, const float *q, int n_vocab, int32_t next) {
    if (k->n == k->cap) {
        long cap = k->cap ? 2 * k->cap : 4096;
        double *a = realloc(k->kl, sizeof *a * (size_t)cap);
        if (!a) return false;
        k->kl = a;
        k->cap = cap;
    }
    int ab, aq;
    double zb = lse(base, n_vocab, &ab), zq = lse(q, n_vocab, &aq), kl = 0;
    for (int i = 0; i < n_vocab; i++) {
        double lb = (double)base[i] - zb, lq = (double)q[i] - zq;
        kl += exp(lb) * (lb - lq);
    }
    if (kl < 0) kl = 0; /* rounding when the two are equal */
    double nb = zb - base[next], nq = zq - q[next], dp = exp(-nq) - exp(-nb);
    k->kl[k->n++] = kl;
    k->sum_kl += kl;
    k->sum_kl2 += kl * kl;
    k->nll_b += nb;
    k->nll_q += nq;
    k->sum_d2 += (nq - nb) * (nq - nb);
    k->dp2 += dp * dp;
    k->same_top += ab == aq;
    return true;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* llama.cpp's percentile: linear between the two nearest sorted values */
static double percentile(const double *v, long n, double f) {
    double p = f * (double)(n - 1);
    long i = (long)p;
    return i + 1 < n ? (1 - (p - (double)i)) * v[i] + (p - (double)i) * v[i + 1] : v[n - 1];
}

static int report(kstats *k) {
    if (k->n < 2) {
        fprintf(stderr, "memfit: only %ld position(s) scored; need at least 2 (longer text "
                "or --all)\n", k->n);
        return 1;
    }
    double n = (double)k->n, mean = k->sum_kl / n;
    double err = sqrt(fmax(k->sum_kl2 / n - mean * mean, 0) / (n - 1));
    double top = (double)k->same_top / n, top_err = sqrt(top * (1 - top) / (n - 1));
    double dl = (k->nll_q - k->nll_b) / n, dl_err = sqrt(fmax(k->sum_d2 / n - dl * dl, 0) / (n - 1));
    qsort(k->kl, (size_t)k->n, sizeof *k->kl, cmp_double);
    printf("====== Perplexity statistics ======\n");
    printf("Mean PPL(Q)                   : %10.6f\n", exp(k->nll_q / n));
    printf("Mean PPL(base)                : %10.6f\n", exp(k->nll_b / n));
    printf("Mean ln(PPL(Q)/PPL(base))     : %10.6f ± %.6f\n", dl, dl_err);
    printf("\n====== KL divergence statistics ======\n");
    printf("Mean    KLD: %10.6f ± %.6f\n", mean, err);
    printf("Maximum KLD: %10.6f\n", k->kl[k->n - 1]);
    printf("99.9%%   KLD: %10.6f\n", percentile(k->kl, k->n, 0.999));
    printf("99.0%%   KLD: %10.6f\n", percentile(k->kl, k->n, 0.99));
    printf("Median  KLD: %10.6f\n", percentile(k->kl, k->n, 0.5));
    printf("Minimum KLD: %10.6f\n", k->kl[0]);
    printf("\n====== Token probability statistics ======\n");
    printf("RMS Δp    : %8.4f %%\n", 100 * sqrt(k->dp2 / n));
    printf("Same top p: %8.4f ± %.4f %%\n", 100 * top, 100 * top_err);
    printf("\nkld_summary n=%ld mean=%.6g p99=%.6g median=%.6g max=%.6g top1=%.4f "
           "ppl_model=%.6g ppl_base=%.6g\n", k->n, mean, percentile(k->kl, k->n, 0.99),
           percentile(k->kl, k->n, 0.5), k->kl[k->n - 1], 100 * top, exp(k->nll_q / n),
           exp(k->nll_b / n));
    return 0;
}

/* ---- evaluation ---- */

typedef struct kctx {
    mf_session *s, *sb;  /* the model; the base model (NULL with a reference) */
    const float *ref;    /* reference logits (n_tokens, n_vocab) or NULL */
    int n_vocab, all;
    kstats k;
} kctx;

static int eval_window(kctx *c, const int32_t *w, int len) {
    int B = mf_session_n_batch(c->s), first = c->all ? 0 : len / 2;
    if (c->sb && mf_session_n_batch(c->sb) < B) B = mf_session_n_batch(c->sb);
    mf_session_reset(c->s);
    if (c->sb) mf_session_reset(c->sb);
    for (int done = 0; done < len; done += B) {
        int k = len - done < B ? len - done : B;
        if (mf_session_eval(c->s, w + done, k, 1) != MF_OK) return cli_fail("evaluation failed");
        if (c->sb && mf_session_eval(c->sb, w + done, k, 1) != MF_OK)
            return cli_fail("evaluation of the base model failed");
        for (int i = 0; i < k; i++) {
            int pos = done + i;
            if (pos < first || pos + 1 >= len) continue;
            const float *base = c->sb ? mf_session_logits(c->sb, i)
                                      : c->ref + (size_t)pos * (size_t)c->n_vocab;
            if (!score(&c->k, base, mf_session_logits(c->s, i), c->n_vocab, w[pos + 1])) {
                fprintf(stderr, "memfit: out of memory\n");
                return 1;
            }
        }
    }
    return 0;
}

static int run_windows(kctx *c, const int32_t *ids, int n, int ctx, int max_chunks) {
    int n_chunks = n / ctx;
    if (max_chunks && n_chunks > max_chunks) n_chunks = max_chunks;
    if (n_chunks == 0) {
        fprintf(stderr, "memfit: %d tokens are fewer than one window of %d (use -c)\n", n, ctx);
        return 1;
    }
    double t0 = cli_now();
    for (int w = 0; w < n_chunks; w++) {
        if (eval_window(c, ids + (size_t)w * ctx, ctx)) return 1;
        fprintf(stderr, "\r[%d/%d] mean KLD %.6f  (%.1f s)   ", w + 1, n_chunks,
                c->k.n ? c->k.sum_kl / (double)c->k.n : 0.0, cli_now() - t0);
    }
    fputc('\n', stderr);
    return report(&c->k);
}

/* An MFRF file: "MFRF", u32 1, i32 n, i32 n_vocab, i32 tokens[n], f32 logits[n][n_vocab], ... */
static char *read_ref(const char *path, int32_t *n, int32_t *n_vocab) {
    size_t len = 0;
    char *buf = cli_read_file(path, &len);
    if (!buf) return NULL;
    uint32_t version = 0;
    if (len >= 16) {
        memcpy(&version, buf + 4, 4);
        memcpy(n, buf + 8, 4);
        memcpy(n_vocab, buf + 12, 4);
    }
    uint64_t need = 16 + 4 * (uint64_t)(uint32_t)*n * (1 + (uint64_t)(uint32_t)*n_vocab);
    if (len < 16 || memcmp(buf, "MFRF", 4) || version != 1 || *n <= 0 || *n_vocab <= 0 ||
        need > len) {
        fprintf(stderr, "memfit: '%s' is not an MFRF logits file (or is truncated)\n", path);
        free(buf);
        return NULL;
    }
    return buf;
}

static int tokens_for(const kld_opts *o, const mf_model *m, int32_t **ids, int *n) {
    if (o->ids_file) return cli_read_ids(o->ids_file, ids, n) ? 0 : 1;
    char *text = cli_read_file(o->file, NULL);
    if (!text) return 1;
    mf_status st = cli_tokenize(m, text, 1, ids, n);
    free(text);
    return st == MF_OK ? 0 : cli_fail("cannot tokenize the text");
}

static int check_ids(const int32_t *ids, int n, int n_vocab) {
    for (int i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= n_vocab) {
            fprintf(stderr, "memfit: token id %d is outside the vocabulary of %d\n", ids[i], n_vocab);
            return 1;
        }
    return 0;
}

static int make_session(mf_model *m, const kld_opts *o, int ctx, mf_session **s) {
    mf_session_params sp = cli_session_params(&o->mo);
    sp.n_ctx = ctx;
    return mf_session_create(m, &sp, s) == MF_OK ? 0 : cli_fail("cannot create a session");
}

/* The reference's tokens are the text; -f / --ids-file, if given, must agree. */
static int ref_tokens(const kld_opts *o, const mf_model *m, const char *ref, int32_t n,
                      int32_t **ids) {
    *ids = malloc(sizeof **ids * (size_t)n);
    if (!*ids) return 1;
    memcpy(*ids, ref + 16, 4 * (size_t)n);
    if (!o->file && !o->ids_file) return 0;
    int32_t *mine = NULL;
    int k = 0, rc = tokens_for(o, m, &mine, &k);
    if (!rc && (k != n || memcmp(mine, *ids, 4 * (size_t)n))) {
        fprintf(stderr, "memfit: the tokens differ from those in '%s'\n", o->base_ref);
        rc = 1;
    }
    free(mine);
    return rc;
}

int cmd_kld(int argc, char **argv) {
    kld_opts o = {0};
    int rc = parse(argc, argv, &o), n = 0, ctx = o.mo.n_ctx ? o.mo.n_ctx : 512;
    if (rc) return rc;
    mf_model_params mp = {.tokenizer_path = o.mo.tokenizer};
    mf_model *m = NULL, *mb = NULL;
    kctx c = {.all = o.all};
    int32_t *ids = NULL, ref_n = 0, ref_nv = 0;
    char *ref = NULL;
    mf_model_info info, binfo;
    if (mf_model_load(o.mo.model, &mp, &m) != MF_OK) return cli_fail("cannot load the model");
    mf_model_get_info(m, &info);
    c.n_vocab = info.n_vocab;
    rc = 1;
    if (o.base_model) {
        if (mf_model_load(o.base_model, &mp, &mb) != MF_OK) {
            cli_fail("cannot load the base model");
            goto done;
        }
        mf_model_get_info(mb, &binfo);
        if (binfo.n_vocab != info.n_vocab) {
            fprintf(stderr, "memfit: vocabularies differ (%d and %d)\n", info.n_vocab, binfo.n_vocab);
            goto done;
        }
        if (tokens_for(&o, mb, &ids, &n) || make_session(mb, &o, ctx, &c.sb)) goto done;
    } else {
        if (!(ref = read_ref(o.base_ref, &ref_n, &ref_nv))) goto done;
        if (ref_nv != info.n_vocab) {
            fprintf(stderr, "memfit: '%s' has %d logits per token, the model %d\n", o.base_ref,
                    ref_nv, info.n_vocab);
            goto done;
        }
        if (ref_tokens(&o, m, ref, ref_n, &ids)) goto done;
        n = ctx = ref_n; /* the reference is one window from an empty cache */
        c.ref = (const float *)(const void *)(ref + 16 + 4 * (size_t)ref_n);
    }
    if (check_ids(ids, n, info.n_vocab) || make_session(m, &o, ctx, &c.s)) goto done;
    rc = run_windows(&c, ids, n, ctx, o.max_chunks);
done:
    free(c.k.kl);
    free(ids);
    free(ref);
    mf_session_free(c.s);
    mf_session_free(c.sb);
    mf_model_free(m);
    mf_model_free(mb);
    return rc;
}
