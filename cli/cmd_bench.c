/* cmd_bench.c — `memfit bench`: prompt processing (ppN: N tokens as one
 * batch) and generation (tgN: N tokens one at a time) in tokens/s, mean ± std
 * over repetitions after one warm-up, printed as a table shaped like
 * llama-bench's. For generation it also reports the GB/s of weights read
 * (every matrix once per token; only one row of an untied embedding table)
 * next to the GB/s of a pass that only reads those weights, in the memory
 * they occupy, with the same threads: the bandwidth ceiling of decoding. */
#include "cli.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *usage_text =
    "usage: memfit bench -m MODEL [-t THREADS] [-p 64] [-n 32] [-r 3] [-b BATCH] [--kv-type T]\n";

typedef struct {
    cli_model_opts mo;
    int n_prompt, n_gen, reps;
} bench_opts;

static int parse(int argc, char **argv, bench_opts *o) {
    for (int i = 1; i < argc; i++) {
        const char *v = NULL, *a = argv[i];
        bool bad = false, miss = false;
        int *dst = NULL;
        if (cli_common_opt(argc, argv, &i, &o->mo, usage_text, &bad)) {
        } else if (cli_opt(argc, argv, &i, "-p", "--n-prompt", &v, &miss)) dst = &o->n_prompt;
        else if (cli_opt(argc, argv, &i, "-n", "--n-gen", &v, &miss)) dst = &o->n_gen;
        else if (cli_opt(argc, argv, &i, "-r", "--repetitions", &v, &miss)) dst = &o->reps;
        else return cli_usage("bench", "unknown option '%s'", a);
        if (dst && !miss && !cli_int(v, 0, 1 << 20, dst)) bad = true;
        if (bad || miss) return cli_usage("bench", "bad or missing value for '%s'", a);
    }
    if (!o->mo.model) return cli_usage("bench", "-m MODEL is required");
    if (o->reps < 1) o->reps = 1;
    return 0;
}

/* Seconds to run one test: pp evaluates n tokens at once, tg one by one. */
static double run_once(mf_session *s, const int32_t *ids, int n, bool pp, bool *ok) {
    mf_session_reset(s);
    double t0 = cli_now();
    if (pp) *ok = mf_session_eval(s, ids, n, 0) == MF_OK;
    for (int i = 0; !pp && i < n && *ok; i++) *ok = mf_session_eval(s, ids + i, 1, 0) == MF_OK;
    return cli_now() - t0;
}

static uint64_t weight_bytes_per_token(const mf_model *m, const mf_model_info *info) {
    uint64_t total = 0;
    for (int i = 0; i < info->n_tensors; i++) {
        mf_tensor_info t;
        mf_model_tensor(m, i, &t);
        if (!strcmp(t.name, "token_embd.weight") && !info->tied_embeddings)
            total += t.n_bytes / (uint64_t)(t.ne[1] > 0 ? t.ne[1] : 1);
        else total += t.n_bytes;
    }
    return total;
}

static int run_test(mf_session *s, const mf_model_info *info, const bench_opts *o, bool pp,
                    const char *model_desc, uint64_t wbytes, double *tps) {
    int n = pp ? o->n_prompt : o->n_gen;
    if (n <= 0) return 0;
    int32_t *ids = malloc(sizeof *ids * (size_t)n);
    if (!ids) return 1;
    for (int i = 0; i < n; i++) ids[i] = (int32_t)((i * 7919u + 13) % (unsigned)info->n_vocab);
    bool ok = true;
    double sum = 0, sum2 = 0;
    run_once(s, ids, n, pp, &ok); /* warm-up: page in the weights */
    for (int r = 0; r < o->reps && ok; r++) {
        double ts = n / run_once(s, ids, n, pp, &ok);
        sum += ts;
        sum2 += ts * ts;
    }
    free(ids);
    if (!ok) return cli_fail("evaluation failed");
    double mean = sum / o->reps, var = o->reps > 1 ? (sum2 - sum * mean) / (o->reps - 1) : 0;
    *tps = mean;
    char test[32], gbs[32] = "";
    snprintf(test, sizeof test, "%s%d", pp ? "pp" : "tg", n);
    if (!pp) snprintf(gbs, sizeof gbs, "%.2f", mean * (double)wbytes / 1e9);
    printf("| %-24s | %8.2f GiB | %7.2f B | CPU     | %7d | %6s | %10.2f ± %-7.2f | %9s |\n",
           model_desc, (double)info->n_bytes / 1073741824.0, (double)info->n_params / 1e9,
           o->mo.n_threads, test, mean, sqrt(var > 0 ? var : 0), gbs);
    fflush(stdout);
    return 0;
}

static void describe(const mf_model *m, const mf_model_info *info, char *buf, size_t n) {
    mf_tensor_info t = {0};
    const char *type = "?";
    for (int i = 0; i < info->n_tensors; i++)
        if (mf_model_tensor(m, i, &t) == MF_OK && strstr(t.name, "ffn_down")) {
            type = t.type_name;
            break;
        }
    snprintf(buf, n, "%s %.1fB %s", info->arch, (double)info->n_params / 1e9, type);
}

int cmd_bench(int argc, char **argv) {
    bench_opts o = {.n_prompt = 64, .n_gen = 32, .reps = 3};
    int rc = parse(argc, argv, &o);
    if (rc) return rc;
    mf_model_params mp = {.tokenizer_path = o.mo.tokenizer};
    mf_model *m = NULL;
    mf_session *s = NULL;
    if (mf_model_load(o.mo.model, &mp, &m) != MF_OK) return cli_fail("cannot load model");
    mf_model_info info;
    mf_model_get_info(m, &info);
    int need = o.n_prompt > o.n_gen ? o.n_prompt : o.n_gen;
    mf_session_params sp = cli_session_params(&o.mo);
    if (!sp.n_ctx) sp.n_ctx = need > 0 ? need : 1;
    if (!o.mo.n_threads) o.mo.n_threads = (int)sysconf(_SC_NPROCESSORS_ONLN);
    rc = 1;
    if (mf_session_create(m, &sp, &s) != MF_OK) {
        cli_fail("cannot create a session");
        goto done;
    }
    char desc[64];
    describe(m, &info, desc, sizeof desc);
    printf("| %-24s | %12s | %9s | backend | threads | %6s | %20s | %9s |\n", "model", "size",
           "params", "test", "t/s", "weights GB/s");
    printf("| %.24s | -----------: | --------: | ------- | ------: | -----: | -------------------: "
           "| --------: |\n", "------------------------------");
    uint64_t wb = weight_bytes_per_token(m, &info);
    double pp_tps = 0, tg_tps = 0, read_gbs = 0;
    rc = run_test(s, &info, &o, true, desc, wb, &pp_tps) || run_test(s, &info, &o, false, desc, wb, &tg_tps);
    printf("\npeak memory (VmHWM): %.1f MiB\n", (double)mf_peak_rss() / 1048576.0);
    /* the decode ceiling on the memory these weights occupy, same threads */
    if (!rc && o.n_gen > 0 && !sp.mem_budget && mf_session_read_weights(s, 3, &read_gbs) == MF_OK)
        printf("weights read alone: %.2f GB/s; generation reached %.0f%% of it\n", read_gbs,
               100.0 * tg_tps * (double)wb / 1e9 / read_gbs);
done:
    mf_session_free(s);
    mf_model_free(m);
    return rc;
}
