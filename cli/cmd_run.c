/* cmd_run.c — `memfit run`: evaluate a prompt as one batch, then sample and
 * stream tokens until EOS, -n, or a full context; end with a timing line. */
#include "cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *usage_text =
    "usage: memfit run -m MODEL [-z TOKENIZER] (-p PROMPT | -f FILE | --ids 1,2,3) [-n N]\n"
    "                  [-t THREADS] [-c CTX] [-b BATCH] [--kv-type f32|f16|q8_0] [--mem SIZE] [--stats]\n"
    "                  [--temp T] [--top-k K] [--top-p P] [--min-p P] [--repeat-penalty R]\n"
    "                  [--repeat-last-n N] [--seed S]\n";

typedef struct {
    cli_model_opts mo;
    const char *prompt, *prompt_file, *ids;
    int n_predict;
    mf_sampler_params sp;
} run_opts;

static bool sampler_opt(int argc, char **argv, int *i, mf_sampler_params *sp, bool *bad) {
    const char *v = NULL;
    bool miss = false;
    if (cli_opt(argc, argv, i, "--temp", NULL, &v, &miss)) {
        if (!miss && !cli_float(v, &sp->temp)) *bad = true;
    } else if (cli_opt(argc, argv, i, "--top-k", NULL, &v, &miss)) {
        if (!miss && !cli_int(v, 0, 1 << 30, &sp->top_k)) *bad = true;
    } else if (cli_opt(argc, argv, i, "--top-p", NULL, &v, &miss)) {
        if (!miss && !cli_float(v, &sp->top_p)) *bad = true;
    } else if (cli_opt(argc, argv, i, "--min-p", NULL, &v, &miss)) {
        if (!miss && !cli_float(v, &sp->min_p)) *bad = true;
    } else if (cli_opt(argc, argv, i, "--repeat-penalty", NULL, &v, &miss)) {
        if (!miss && (!cli_float(v, &sp->repeat_penalty) || sp->repeat_penalty <= 0)) *bad = true;
    } else if (cli_opt(argc, argv, i, "--repeat-last-n", NULL, &v, &miss)) {
        if (!miss && !cli_int(v, 0, 1 << 20, &sp->repeat_last_n)) *bad = true;
    } else if (cli_opt(argc, argv, i, "--seed", "-s", &v, &miss)) {
        if (!miss && !cli_u64(v, &sp->seed)) *bad = true;
    } else return false;
    if (miss) *bad = true;
    return true;
}

static int parse(int argc, char **argv, run_opts *o) {
    for (int i = 1; i < argc; i++) {
        const char *v = NULL, *a = argv[i];
        bool bad = false, miss = false;
        if (cli_common_opt(argc, argv, &i, &o->mo, usage_text, &bad) || sampler_opt(argc, argv, &i, &o->sp, &bad)) {
        } else if (cli_opt(argc, argv, &i, "-p", "--prompt", &v, &miss)) o->prompt = v;
        else if (cli_opt(argc, argv, &i, "-f", "--file", &v, &miss)) o->prompt_file = v;
        else if (cli_opt(argc, argv, &i, "--ids", NULL, &v, &miss)) o->ids = v;
        else if (cli_opt(argc, argv, &i, "-n", "--n-predict", &v, &miss)) {
            if (!miss && !cli_int(v, -1, 1 << 30, &o->n_predict)) bad = true;
        } else return cli_usage("run", "unknown option '%s'", a);
        if (bad || miss) return cli_usage("run", "bad or missing value for '%s'", a);
    }
    if (!o->mo.model) return cli_usage("run", "-m MODEL is required");
    if (!o->prompt && !o->prompt_file && !o->ids)
        return cli_usage("run", "a prompt is required (-p, -f or --ids)");
    return 0;
}

static mf_status prompt_ids(const mf_model *m, const run_opts *o, int32_t **ids, int *n) {
    if (o->ids) {
        if (!cli_ids(o->ids, ids, n)) return MF_E_INVALID;
        return MF_OK;
    }
    char *text = NULL;
    if (o->prompt_file && !(text = cli_read_file(o->prompt_file, NULL))) return MF_E_IO;
    mf_status st = cli_tokenize(m, text ? text : o->prompt, 1, ids, n);
    free(text);
    return st;
}

static void emit(const mf_model *m, bool text, int32_t prev, int32_t id) {
    if (text) cli_print_token(m, prev, id);
    else {
        printf("%d ", id);
        fflush(stdout);
    }
}

static int generate(mf_model *m, mf_session *s, mf_sampler *smp, const run_opts *o,
                    const int32_t *ids, int n) {
    bool text = mf_token_bos(m) >= 0 || mf_token_eos(m) >= 0;
    for (int i = 0; i < n; i++) mf_sampler_accept(smp, ids[i]);
    double t0 = cli_now();
    if (mf_session_eval(s, ids, n, 0) != MF_OK) return cli_fail("evaluating the prompt failed");
    double t_prompt = cli_now() - t0, t_gen = 0;
    int32_t prev = ids[n - 1], eos = mf_token_eos(m);
    int n_gen = 0, n_dec = 0;
    while (o->n_predict < 0 || n_gen < o->n_predict) {
        int32_t id = mf_sampler_sample(smp, mf_session_logits(s, -1));
        mf_sampler_accept(smp, id);
        if (id == eos) break;
        emit(m, text, prev, id);
        prev = id;
        if (++n_gen == o->n_predict) break;
        if (mf_session_pos(s) >= mf_session_n_ctx(s)) {
            fprintf(stderr, "\nmemfit: context full (%d tokens): stopping\n",
                    mf_session_n_ctx(s));
            break;
        }
        double t = cli_now();
        if (mf_session_eval(s, &id, 1, 0) != MF_OK) return cli_fail("decoding failed");
        t_gen += cli_now() - t;
        n_dec++;
    }
    fprintf(stderr, "\n\nprompt: %d tokens, %.2f tok/s | generation: %d tokens, %.2f tok/s | "
            "KV cache %.1f MiB | peak memory %.1f MiB\n", n, n / t_prompt, n_gen,
            n_dec ? n_dec / t_gen : 0.0, (double)mf_session_kv_bytes(s) / 1048576.0,
            (double)mf_peak_rss() / 1048576.0);
    if (o->mo.stats) cli_print_stats(s, n_dec ? n_dec / t_gen : 0.0);
    return 0;
}

int cmd_run(int argc, char **argv) {
    run_opts o = {.n_predict = 128, .sp = mf_sampler_defaults()};
    int rc = parse(argc, argv, &o);
    if (rc) return rc;
    mf_model_params mp = {.tokenizer_path = o.mo.tokenizer};
    mf_model *m = NULL;
    mf_session *s = NULL;
    mf_sampler *smp = NULL;
    int32_t *ids = NULL;
    int n = 0;
    if (mf_model_load(o.mo.model, &mp, &m) != MF_OK) return cli_fail("cannot load model");
    rc = 1;
    if (prompt_ids(m, &o, &ids, &n) != MF_OK) {
        if (o.ids) cli_usage("run", "bad --ids list '%s'", o.ids);
        else cli_fail("cannot tokenize the prompt");
        goto done;
    }
    mf_model_info info;
    mf_model_get_info(m, &info);
    mf_session_params sp = cli_session_params(&o.mo);
    sp.reserve = mf_sampler_bytes(&o.sp, info.n_vocab);
    if (mf_session_create(m, &sp, &s) != MF_OK) {
        cli_fail("cannot create a session");
        goto done;
    }
    if (n > mf_session_n_ctx(s)) {
        fprintf(stderr, "memfit: the prompt has %d tokens but the context holds %d (use -c)\n",
                n, mf_session_n_ctx(s));
        goto done;
    }
    if (mf_sampler_create(&o.sp, info.n_vocab, &smp) != MF_OK) {
        cli_fail("cannot create the sampler");
        goto done;
    }
    rc = generate(m, s, smp, &o, ids, n);
done:
    free(ids);
    mf_sampler_free(smp);
    mf_session_free(s);
    mf_model_free(m);
    return rc;
}
