/* test_reference.c — memfit against llama.cpp's outputs (../shared/reference).
 *
 * For each model: run `memfit logits` (the CLI, as a user would) on the
 * reference's tokens and compare every position's logits with llama.cpp's,
 * as max |Δ| / std(reference row):
 *  - position 0 (RoPE is the identity there): memfit multiplies in llama.cpp's
 *    summation order (rows that are multiples of 16) and quantizes
 *    activations as it does, so for such models position 0 must agree bit
 *    for bit (bound 0); stories260K (FFN 172, head size 8) and the dim-8
 *    model take llama.cpp's other kernels there: bound 1e-5;
 *  - every position within `tol`: 1e-3 for models whose activations stay f32.
 *    With f16 or q8_0 weights the activations are rounded to f16 / int8
 *    before each product, and a last-bit difference upstream flips some of
 *    those roundings. The reference's cosf/sinf differ from glibc's
 *    correctly rounded ones in the last bit (cos(2.0f): -0.416146815 there,
 *    -0.416146845 here), and that alone accounts for the whole difference
 *    (docs/numerics.md); the stated bounds are 1e-2 (f16) and 0.2 (q8_0).
 * Then the greedy continuation through the API with teacher forcing: our
 * argmax must equal llama.cpp's token unless our top two logits are closer
 * than the tolerance (a near-tie, where the comparison stops). */
#include "memfit.h"
#include "test.h"

typedef struct {
    int n_tokens, n_vocab, n_gen;
    int32_t *tokens, *gen;
    float *logits;
} ref_file;

static bool read_ref(const char *path, ref_file *r) {
    size_t len;
    unsigned char *b = test_read_file(path, &len);
    memset(r, 0, sizeof *r);
    if (!b || len < 20 || memcmp(b, "MFRF", 4)) goto fail;
    memcpy(&r->n_tokens, b + 8, 4);
    memcpy(&r->n_vocab, b + 12, 4);
    size_t off = 16, nl = (size_t)r->n_tokens * (size_t)r->n_vocab;
    if (r->n_tokens <= 0 || r->n_vocab <= 0 || len < off + 4 * (r->n_tokens + nl) + 4) goto fail;
    r->tokens = malloc(4 * (size_t)r->n_tokens);
    r->logits = malloc(4 * nl);
    memcpy(r->tokens, b + off, 4 * (size_t)r->n_tokens);
    off += 4 * (size_t)r->n_tokens;
    memcpy(r->logits, b + off, 4 * nl);
    off += 4 * nl;
    memcpy(&r->n_gen, b + off, 4);
    off += 4;
    if (r->n_gen < 0 || len < off + 4 * (size_t)r->n_gen) goto fail;
    r->gen = malloc(4 * (size_t)r->n_gen + 4);
    memcpy(r->gen, b + off, 4 * (size_t)r->n_gen);
    free(b);
    return true;
fail:
    free(b);
    return false;
}

static void free_ref(ref_file *r) {
    free(r->tokens);
    free(r->gen);
    free(r->logits);
}

static double row_std(const float *x, int n) {
    double s = 0, s2 = 0;
    for (int i = 0; i < n; i++) s += x[i], s2 += (double)x[i] * x[i];
    double m = s / n;
    return sqrt(s2 / n - m * m);
}

/* Worst |Δ| / std over positions [t0, t1) of two logit sets. */
static double worst_ratio(const ref_file *a, const ref_file *b, int t0, int t1) {
    double worst = 0;
    for (int t = t0; t < t1; t++) {
        const float *x = a->logits + (size_t)t * a->n_vocab, *y = b->logits + (size_t)t * a->n_vocab;
        double sd = row_std(x, a->n_vocab), md = 0;
        for (int i = 0; i < a->n_vocab; i++) md = fmax(md, fabs((double)x[i] - y[i]));
        worst = fmax(worst, md / sd);
    }
    return worst;
}

/* Teacher-forced greedy check; returns the number of steps compared. */
static int check_greedy(const char *model, const ref_file *r, double tol, const char *tok) {
    mf_model *m;
    mf_session *s;
    mf_model_params mp = {.tokenizer_path = tok};
    if (mf_model_load(model, &mp, &m) != MF_OK) return -1;
    mf_session_params sp = {.n_ctx = r->n_tokens + r->n_gen + 1};
    if (mf_session_create(m, &sp, &s) != MF_OK) return -1;
    int steps = 0;
    mf_status st = mf_session_eval(s, r->tokens, r->n_tokens, 0);
    for (int g = 0; st == MF_OK && g < r->n_gen; g++) {
        const float *x = mf_session_logits(s, -1);
        int a = 0, b = -1;
        for (int i = 1; i < r->n_vocab; i++)
            if (x[i] > x[a]) b = a, a = i;
            else if (b < 0 || x[i] > x[b]) b = i;
        if (x[a] - x[b] < tol * row_std(x, r->n_vocab)) break;  /* near-tie: stop */
        CHECK(a == r->gen[g], "%s: greedy step %d: ours %d, llama.cpp %d", model, g, a, r->gen[g]);
        if (a != r->gen[g]) break;
        steps++;
        st = mf_session_eval(s, &r->gen[g], 1, 0);
    }
    CHECK(st == MF_OK, "%s: eval failed: %s", model, mf_last_error());
    mf_session_free(s);
    mf_model_free(m);
    return steps;
}

static char *ids_arg(const ref_file *r) {
    char *s = malloc((size_t)r->n_tokens * 12 + 1), *p = s;
    for (int i = 0; i < r->n_tokens; i++) p += sprintf(p, i ? ",%d" : "%d", r->tokens[i]);
    return s;
}

static void check_model(const char *model_rel, const char *ref_rel, double tol, double tol0) {
    const char *tok_rel = NULL;
    char model[512], refp[512], tokp[512], cmd[4096 + 2048];
    test_path(model, sizeof model, model_rel);
    test_path(refp, sizeof refp, ref_rel);
    if (tok_rel) test_path(tokp, sizeof tokp, tok_rel);
    ref_file ref, ours;
    if (!read_ref(refp, &ref)) {
        CHECK(0, "cannot read reference %s", refp);
        return;
    }
    char *ids = ids_arg(&ref);
    char out[] = "/tmp/mf_test_ref_XXXXXX";
    int fd = mkstemp(out);
    close(fd);
    char *big = malloc(strlen(ids) + 2048);
    sprintf(big, "%s logits -m %s --ids %s --gen %d -o %s -t 2", getenv("MEMFIT") ? getenv("MEMFIT") : "./memfit",
            model, ids, ref.n_gen, out);
    int rc = system(big);
    CHECK(rc == 0, "%s: memfit logits exited %d", model_rel, rc);
    if (rc == 0 && read_ref(out, &ours)) {
        CHECK(ours.n_tokens == ref.n_tokens && ours.n_vocab == ref.n_vocab, "%s: shape", model_rel);
        double w = worst_ratio(&ref, &ours, 0, ref.n_tokens), w0 = worst_ratio(&ref, &ours, 0, 1);
        CHECK(w <= tol, "%s: max |dlogit| = %.3g x std (bound %.3g)", model_rel, w, tol);
        CHECK(w0 <= tol0, "%s: position 0: max |dlogit| = %.3g x std (bound %g)", model_rel, w0, tol0);
        int steps = check_greedy(model, &ref, tol, tok_rel ? tokp : NULL);
        int same = 0;
        while (same < ref.n_gen && ours.gen[same] == ref.gen[same]) same++;
        CHECK(same >= steps, "%s: CLI greedy ids diverge at %d before a near-tie (%d)", model_rel,
              same, steps);
        printf("%-36s pos0 %.1e, all %.2e x std (bound %.0e), greedy %d/%d (%d before a near-tie)\n",
               model_rel, w0, w, tol, same, ref.n_gen, steps);
        free_ref(&ours);
    }
    (void)cmd;
    remove(out);
    free(big);
    free(ids);
    free_ref(&ref);
}

int main(void) {
    if (!test_shared()) {
        printf("skipped: ../shared not found\n");
        return test_report("reference");
    }
    check_model("models/synth-512-f16.gguf", "reference/synth-512-f16.ref", 1e-2, 0);
    check_model("models/stories260K.gguf", "reference/stories260K.ref", 1e-3, 1e-5);
    check_model("models/stories260K.gguf", "reference/stories260K.story.ref", 1e-3, 1e-5);
    check_model("models/stories260K.bin", "reference/stories260K.ref", 1e-3, 1e-5);
    check_model("models/stories260K.bin", "reference/stories260K.story.ref", 1e-3, 1e-5);
    check_model("models/synth-mini-f16.gguf", "reference/synth-mini-f16.ref", 1e-2, 0);
    check_model("models/llama-2-tiny-random.gguf", "reference/llama-2-tiny-random.ref", 1e-3, 1e-5);
    /* every llama.cpp-quantized fixture, mixtures included: position 0 bit for
     * bit, the rest within the bound that the RoPE last-bit difference allows */
    const char *q[] = {"Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q2_K", "Q3_K_M", "Q4_K_M",
                       "Q5_K_M", "Q6_K", "pure-Q2_K", "pure-Q3_K", "pure-Q4_K", "pure-Q5_K",
                       "pure-Q6_K"};
    for (size_t i = 0; i < sizeof q / sizeof q[0]; i++) {
        char m[128], r[128];
        snprintf(m, sizeof m, "models/quantized/synth-512-%s.gguf", q[i]);
        snprintf(r, sizeof r, "reference/synth-512-%s.ref", q[i]);
        check_model(m, r, 0.2, 0);
    }
    check_model("models/quantized/synth-mini-Q4_K_M.gguf", "reference/synth-mini-Q4_K_M.ref", 0.2, 0);
    return test_report("reference");
}
