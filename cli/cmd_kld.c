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
    "  -c CTX             window length (512); --all scores every position, not the last half\n";

typedef struct kld_opts {
    cli_model_opts mo;
    const char *base_model, *base_ref, *file, *ids_file;
    int max_chunks, all;
} kld_opts;

static int parse(int argc, char **argv, kld_opts *o) {
    for (int i = 1; i < argc; i++) {
        const char *v = NULL, *a = argv[i];
        bool bad = false, miss = false;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fputs(usage_text, stdout);
            exit(0);
        }
        if (cli_model_opt(argc, argv, &i, &o->mo, &bad)) {
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
