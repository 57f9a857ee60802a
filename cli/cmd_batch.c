/* cmd_batch.c — `memfit batch`: many prompts decoded together. Prompt tokens
 * of all sequences are packed into shared batches, then each decoding step
 * evaluates one token of every unfinished sequence in one pass, so a weight
 * read from memory (or streamed from disk under --mem) serves all of them.
 * Prints each sequence's text and the aggregate tokens/s. */
#include "cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *usage_text =
    "usage: memfit batch -m MODEL (-f PROMPTS.txt | --ids-file IDS.txt) [-n 32] [-c CTX]\n"
    "                    [-t THREADS] [-b BATCH] [--kv-type T] [--mem SIZE] [--stats]\n"
    "                    [--temp T] [--seed S] [--quiet]\n"
    "  PROMPTS.txt: one prompt per line; IDS.txt: one comma/space separated id list per line\n";

typedef struct {
    cli_model_opts mo;
    const char *file, *ids_file;
    int n_predict, quiet;
    mf_sampler_params sp;
} batch_opts;

typedef struct {
    int32_t *ids;   /* prompt then generated */
    int n_prompt, n, done;
    mf_sampler *smp;
} seq_state;

static int parse(int argc, char **argv, batch_opts *o) {
    for (int i = 1; i < argc; i++) {
        const char *v = NULL, *a = argv[i];
        bool bad = false, miss = false;
        if (cli_common_opt(argc, argv, &i, &o->mo, usage_text, &bad)) {
        } else if (!strcmp(a, "--quiet")) o->quiet = 1;
        else if (cli_opt(argc, argv, &i, "-f", "--file", &v, &miss)) o->file = v;
        else if (cli_opt(argc, argv, &i, "--ids-file", NULL, &v, &miss)) o->ids_file = v;
        else if (cli_opt(argc, argv, &i, "-n", "--n-predict", &v, &miss)) {
            if (!miss && !cli_int(v, 1, 1 << 20, &o->n_predict)) bad = true;
        } else if (cli_opt(argc, argv, &i, "--temp", NULL, &v, &miss)) {
            if (!miss && !cli_float(v, &o->sp.temp)) bad = true;
        } else if (cli_opt(argc, argv, &i, "--seed", NULL, &v, &miss)) {
            if (!miss && !cli_u64(v, &o->sp.seed)) bad = true;
        } else return cli_usage("batch", "unknown option '%s'", a);
        if (bad || miss) return cli_usage("batch", "bad or missing value for '%s'", a);
    }
    if (!o->mo.model) return cli_usage("batch", "-m MODEL is required");
    if (!o->file == !o->ids_file) return cli_usage("batch", "give one of -f or --ids-file");
    return 0;
}

/* The ids of one line: a prompt to tokenize, or an id list. */
static int line_ids(const mf_model *m, const batch_opts *o, char *line, int32_t **ids, int *k) {
    if (o->ids_file) {
        for (char *p = line; *p; p++)
            if (*p == ' ' || *p == '\t' || *p == '\r') *p = ',';
        return cli_ids(line, ids, k) ? 0 : cli_usage("batch", "bad id list '%s'", line);
    }
    return cli_tokenize(m, line, 1, ids, k) == MF_OK ? 0 : cli_fail("cannot tokenize a prompt");
}

/* One sequence per non-empty line. */
static int load_prompts(const mf_model *m, const batch_opts *o, seq_state **out, int *n_out) {
    char *text = cli_read_file(o->file ? o->file : o->ids_file, NULL);
    if (!text) return 1;
    int n = 0, rc = 0, lines = 1;
    for (char *p = text; *p; p++) lines += *p == '\n';
    seq_state *sq = calloc((size_t)lines, sizeof *sq);
    if (!sq) rc = 1;
    for (char *line = strtok(text, "\n"); line && !rc; line = strtok(NULL, "\n")) {
        int32_t *ids = NULL;
        int k = 0;
        if (!*line || (rc = line_ids(m, o, line, &ids, &k))) continue;
        sq[n].ids = realloc(ids, sizeof *ids * (size_t)(k + o->n_predict + 1));
        if (!sq[n].ids) {
            free(ids);
            rc = 1;
            break;
        }
        sq[n].n = sq[n].n_prompt = k;
        n++;
    }
    free(text);
    if (!rc && n == 0) rc = cli_usage("batch", "no prompts");
    *out = sq;
    *n_out = n;
    return rc;
}

/* After a sequence's token was evaluated (logits row t): sample the next one. */
static void advance(mf_session *s, seq_state *q, int t, int32_t eos, int n_predict) {
    int32_t id = mf_sampler_sample(q->smp, mf_session_logits(s, t));
    mf_sampler_accept(q->smp, id);
    if (id == eos) q->done = 1;
    else q->ids[q->n++] = id;
    if (q->n - q->n_prompt >= n_predict || q->n >= mf_session_n_ctx(s)) q->done = 1;
}

/* Evaluate the pending tokens of many sequences, n_batch at a time. */
static int run_batches(mf_session *s, seq_state *sq, const int32_t *seq, const int *pos, int n,
                       int32_t eos, int n_predict) {
    int B = mf_session_n_batch(s);
    int32_t *ids = malloc(sizeof *ids * (size_t)B);
    if (!ids) return 1;
    for (int done = 0; done < n; done += B) {
        int k = n - done < B ? n - done : B;
        for (int t = 0; t < k; t++) ids[t] = sq[seq[done + t]].ids[pos[done + t]];
        if (mf_session_eval_seqs(s, ids, seq + done, k) != MF_OK) {
            free(ids);
            return cli_fail("evaluation failed");
        }
        /* a sequence's last pending token gives its next token */
        for (int t = 0; t < k; t++) {
            seq_state *q = &sq[seq[done + t]];
            if (pos[done + t] == q->n - 1) advance(s, q, t, eos, n_predict);
        }
    }
    free(ids);
    return 0;
}

static int decode_all(mf_session *s, seq_state *sq, int n_seq, int32_t eos, int n_predict,
                      long *n_gen, double *t_gen) {
    int total = 0;
    for (int q = 0; q < n_seq; q++) total += sq[q].n_prompt;
    int32_t *seq = calloc((size_t)(total + n_seq), sizeof *seq);
    int *pos = calloc((size_t)(total + n_seq), sizeof *pos);
    if (!seq || !pos) {
        free(seq);
        free(pos);
        return 1;
    }
    int n = 0, rc;
    for (int q = 0; q < n_seq; q++)
        for (int i = 0; i < sq[q].n_prompt; i++) seq[n] = q, pos[n++] = i;
    rc = run_batches(s, sq, seq, pos, n, eos, n_predict);
    double t0 = cli_now();
    while (!rc) {
        n = 0;
        for (int q = 0; q < n_seq; q++)
            if (!sq[q].done) seq[n] = q, pos[n++] = sq[q].n - 1;
        if (n == 0) break;
        rc = run_batches(s, sq, seq, pos, n, eos, n_predict);
        *n_gen += n;
    }
    *t_gen = cli_now() - t0;
    free(seq);
    free(pos);
    return rc;
}

static void print_seqs(const mf_model *m, const seq_state *sq, int n_seq, bool text) {
    for (int q = 0; q < n_seq; q++) {
        printf("[%d]", q);
        for (int i = 0; i < sq[q].n; i++) {
            if (i == sq[q].n_prompt) printf(" |");
            if (text) cli_print_token(m, i ? sq[q].ids[i - 1] : -1, sq[q].ids[i]);
            else printf(" %d", sq[q].ids[i]);
        }
        printf("\n");
    }
}

int cmd_batch(int argc, char **argv) {
    batch_opts o = {.n_predict = 32, .sp = mf_sampler_defaults()};
    o.sp.temp = 0;
    int rc = parse(argc, argv, &o);
    if (rc) return rc;
    mf_model_params mp = {.tokenizer_path = o.mo.tokenizer};
    mf_model *m = NULL;
    mf_session *s = NULL;
    seq_state *sq = NULL;
    int n_seq = 0;
    if (mf_model_load(o.mo.model, &mp, &m) != MF_OK) return cli_fail("cannot load model");
    mf_model_info info;
    mf_model_get_info(m, &info);
    rc = load_prompts(m, &o, &sq, &n_seq);
    int longest = 0;
    for (int q = 0; q < n_seq; q++) longest = sq[q].n_prompt > longest ? sq[q].n_prompt : longest;
    mf_session_params sp = cli_session_params(&o.mo);
    sp.n_seq = n_seq;
    sp.reserve = (uint64_t)n_seq * (mf_sampler_bytes(&o.sp, info.n_vocab) +
                                     sizeof(int32_t) * (uint64_t)(longest + o.n_predict + 1));
    if (!sp.n_ctx) sp.n_ctx = longest + o.n_predict;
    if (!sp.n_batch) sp.n_batch = n_seq > 64 ? n_seq : 64;
    if (!rc && mf_session_create(m, &sp, &s) != MF_OK) rc = cli_fail("cannot create a session");
    if (!rc && longest >= mf_session_n_ctx(s))
        rc = cli_usage("batch", "a prompt of %d tokens does not fit the context of %d", longest,
                       mf_session_n_ctx(s));
    for (int q = 0; !rc && q < n_seq; q++) {
        o.sp.seed += 1;
        if (mf_sampler_create(&o.sp, info.n_vocab, &sq[q].smp) != MF_OK) rc = cli_fail("sampler");
    }
    long n_gen = n_seq; /* the first token of each comes from its prompt's pass */
    double t_gen = 0, t0 = cli_now();
    if (!rc) rc = decode_all(s, sq, n_seq, mf_token_eos(m), o.n_predict, &n_gen, &t_gen);
    if (!rc && !o.quiet) print_seqs(m, sq, n_seq, mf_token_eos(m) >= 0);
    if (!rc) {
        fprintf(stderr, "batch: %d sequences, %ld tokens generated in %.2f s: %.2f tok/s "
                "(decoding steps %.2f tok/s), total %.2f s, peak memory %.1f MiB\n", n_seq, n_gen,
                cli_now() - t0, n_gen / (cli_now() - t0), (n_gen - n_seq) / (t_gen > 0 ? t_gen : 1),
                cli_now() - t0, mf_peak_rss() / 1048576.0);
        if (o.mo.stats) cli_print_stats(s, (n_gen - n_seq) / (t_gen > 0 ? t_gen : 1));
    }
    for (int q = 0; sq && q < n_seq; q++) free(sq[q].ids), mf_sampler_free(sq[q].smp);
    free(sq);
    mf_session_free(s);
    mf_model_free(m);
    return rc;
}
