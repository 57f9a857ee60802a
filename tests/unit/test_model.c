/* test_model.c — properties of the forward pass through the public API:
 * logits are bit-identical for any thread count, for a prompt evaluated as
 * one batch, in chunks, or token by token, and after a reset; the context
 * limit and bad token ids are errors, not crashes. */
#include "memfit.h"
#include "test.h"

#define N_IDS 37

static float *eval_all(mf_model *m, int threads, int batch, int step, const int32_t *ids, int n) {
    mf_session *s;
    mf_session_params p = {.n_ctx = 64, .n_threads = threads, .n_batch = batch};
    if (mf_session_create(m, &p, &s) != MF_OK) return NULL;
    int nv = 0;
    mf_model_info info;
    mf_model_get_info(m, &info);
    nv = info.n_vocab;
    float *out = malloc(sizeof(float) * (size_t)nv * (size_t)n);
    for (int i = 0; i < n; i += step) {
        int k = n - i < step ? n - i : step;
        if (mf_session_eval(s, ids + i, k, 1) != MF_OK) {
            free(out);
            mf_session_free(s);
            return NULL;
        }
        for (int j = 0; j < k; j++)
            memcpy(out + (size_t)(i + j) * nv, mf_session_logits(s, j), sizeof(float) * (size_t)nv);
    }
    mf_session_free(s);
    return out;
}

static void check_model(const char *rel) {
    char path[512];
    test_path(path, sizeof path, rel);
    mf_model *m;
    if (mf_model_load(path, NULL, &m) != MF_OK) {
        CHECK(0, "load %s: %s", rel, mf_last_error());
        return;
    }
    mf_model_info info;
    mf_model_get_info(m, &info);
    int32_t ids[N_IDS];
    for (int i = 0; i < N_IDS; i++) ids[i] = (int32_t)((i * 131 + 7) % info.n_vocab);
    size_t bytes = sizeof(float) * (size_t)info.n_vocab * N_IDS;
    float *base = eval_all(m, 1, 64, N_IDS, ids, N_IDS);
    CHECK(base != NULL, "%s: eval: %s", rel, mf_last_error());
    struct { int threads, batch, step; } v[] = {{2, 64, N_IDS}, {3, 64, N_IDS}, {4, 64, N_IDS},
                                                 {2, 5, 5}, {2, 64, 1}, {3, 16, 7}};
    for (size_t k = 0; base && k < sizeof v / sizeof v[0]; k++) {
        float *o = eval_all(m, v[k].threads, v[k].batch, v[k].step, ids, N_IDS);
        CHECK(o && memcmp(o, base, bytes) == 0,
              "%s: logits differ with %d threads, batch %d, steps of %d", rel, v[k].threads,
              v[k].batch, v[k].step);
        free(o);
    }
    /* reset and re-evaluate gives the same numbers; the context limit holds */
    mf_session *s;
    mf_session_params p = {.n_ctx = 8, .n_threads = 2};
    CHECK(mf_session_create(m, &p, &s) == MF_OK, "session");
    CHECK(mf_session_eval(s, ids, 8, 0) == MF_OK, "fill the context");
    CHECK(mf_session_eval(s, ids, 1, 0) == MF_E_CONTEXT_FULL, "context full is reported");
    CHECK(strstr(mf_last_error(), "context") != NULL, "message: %s", mf_last_error());
    mf_session_reset(s);
    CHECK(mf_session_eval(s, ids, 8, 1) == MF_OK, "after reset");
    if (base)
        CHECK(memcmp(mf_session_logits(s, 7), base + (size_t)7 * info.n_vocab,
                     sizeof(float) * (size_t)info.n_vocab) == 0, "reset gives the same logits");
    mf_session_reset(s);
    int32_t bad[2] = {0, info.n_vocab};
    CHECK(mf_session_eval(s, bad, 2, 0) == MF_E_INVALID, "token id out of range");
    bad[1] = -1;
    CHECK(mf_session_eval(s, bad, 2, 0) == MF_E_INVALID, "negative token id");
    CHECK(mf_session_eval(s, ids, 0, 0) == MF_E_INVALID, "empty batch");
    mf_session_free(s);
    free(base);
    mf_model_free(m);
}

/* A KV cache in f16 or q8_0 holds a half / ~0.27 of the f32 bytes and changes
 * the logits only by the rounding of K and V: KL(f32 || typed) stays small. */
static void check_kv_types(void) {
    char path[512];
    test_path(path, sizeof path, "models/synth-512-f16.gguf");
    mf_model *m;
    if (mf_model_load(path, NULL, &m) != MF_OK) return;
    int32_t ids[N_IDS];
    for (int i = 0; i < N_IDS; i++) ids[i] = (int32_t)((i * 131 + 7) % 512);
    const char *types[] = {"f32", "f16", "q8_0"};
    const double max_kl[] = {0, 1e-4, 1e-2}, ratio[] = {1, 0.5, 34.0 / 128};
    float *base = NULL;
    uint64_t base_bytes = 0;
    for (int k = 0; k < 3; k++) {
        mf_session *s;
        mf_session_params p = {.n_ctx = 64, .n_threads = 2, .kv_type = types[k]};
        if (mf_session_create(m, &p, &s) != MF_OK || mf_session_eval(s, ids, N_IDS, 1) != MF_OK) {
            CHECK(0, "kv %s: %s", types[k], mf_last_error());
            continue;
        }
        if (k == 0) {
            base = malloc(sizeof(float) * 512 * N_IDS);
            for (int t = 0; t < N_IDS; t++) memcpy(base + t * 512, mf_session_logits(s, t), 512 * 4);
            base_bytes = mf_session_kv_bytes(s);
        }
        double worst = 0;
        for (int t = 0; t < N_IDS; t++) {
            const float *a = base + t * 512, *b = mf_session_logits(s, t);
            double ma = -1e30, mb = -1e30, za = 0, zb = 0, kl = 0;
            for (int i = 0; i < 512; i++) ma = fmax(ma, a[i]), mb = fmax(mb, b[i]);
            for (int i = 0; i < 512; i++) za += exp(a[i] - ma), zb += exp(b[i] - mb);
            for (int i = 0; i < 512; i++) {
                double pa = exp(a[i] - ma) / za, pb = exp(b[i] - mb) / zb;
                kl += pa * log(pa / pb);
            }
            worst = fmax(worst, kl);
        }
        CHECK(worst <= max_kl[k] + 1e-12, "kv %s: KL vs f32 cache %.3g (bound %.0e)", types[k],
              worst, max_kl[k]);
        double r = (double)mf_session_kv_bytes(s) / (double)base_bytes;
        CHECK(fabs(r - ratio[k]) < 1e-9, "kv %s: %.4f of the f32 bytes", types[k], r);
        printf("kv %-4s: %8.1f KiB, max KL vs f32 cache %.2e\n", types[k],
               mf_session_kv_bytes(s) / 1024.0, worst);
        mf_session_free(s);
    }
    free(base);
    mf_session *s = NULL;
    mf_session_params bad = {.kv_type = "q4_0"};
    CHECK(mf_session_create(m, &bad, &s) == MF_E_INVALID && !s, "unknown kv type refused");
    mf_model_free(m);
    test_path(path, sizeof path, "models/stories260K.gguf");
    if (mf_model_load(path, NULL, &m) != MF_OK) return;
    mf_session_params q8 = {.kv_type = "q8_0"};
    CHECK(mf_session_create(m, &q8, &s) == MF_E_INVALID, "q8_0 cache needs head size %% 32");
    CHECK(strstr(mf_last_error(), "head size") != NULL, "message: %s", mf_last_error());
    mf_model_free(m);
}

/* Several sequences in one session, their tokens interleaved in shared
 * batches, give bit for bit the logits each gets alone. */
static void check_multi_seq(void) {
    char path[512];
    test_path(path, sizeof path, "models/synth-512-f16.gguf");
    mf_model *m;
    if (mf_model_load(path, NULL, &m) != MF_OK) return;
    enum { S = 3, L = 9 };
    int32_t ids[S][L];
    for (int q = 0; q < S; q++)
        for (int i = 0; i < L; i++) ids[q][i] = (int32_t)((q * 97 + i * 31 + 5) % 512);
    float *alone = malloc(sizeof(float) * S * L * 512);
    for (int q = 0; q < S; q++) {
        mf_session *s;
        mf_session_params p = {.n_ctx = 32, .n_threads = 2};
        CHECK(mf_session_create(m, &p, &s) == MF_OK, "session");
        CHECK(mf_session_eval(s, ids[q], L, 1) == MF_OK, "eval");
        for (int i = 0; i < L; i++) memcpy(alone + (q * L + i) * 512, mf_session_logits(s, i), 2048);
        mf_session_free(s);
    }
    mf_session *s;
    mf_session_params p = {.n_ctx = 32, .n_threads = 3, .n_seq = S};
    CHECK(mf_session_create(m, &p, &s) == MF_OK, "multi-sequence session: %s", mf_last_error());
    /* a prefix of sequence 0 alone, then rounds mixing all three */
    int32_t seq0[4] = {0, 0, 0, 0};
    CHECK(mf_session_eval_seqs(s, ids[0], seq0, 4) == MF_OK, "prefix");
    int bad = 0;
    for (int i = 0; i < 4; i++) bad += memcmp(mf_session_logits(s, i), alone + i * 512, 2048) != 0;
    int next[S] = {4, 0, 0};
    while (next[0] < L || next[1] < L || next[2] < L) {
        int32_t bi[2 * S], bs[2 * S];
        int n = 0, from[2 * S];
        for (int q = 0; q < S; q++)
            for (int k = 0; k < 1 + q % 2 && next[q] < L; k++)
                bs[n] = q, from[n] = next[q], bi[n++] = ids[q][next[q]++];
        CHECK(mf_session_eval_seqs(s, bi, bs, n) == MF_OK, "mixed batch: %s", mf_last_error());
        for (int t = 0; t < n; t++)
            bad += memcmp(mf_session_logits(s, t), alone + (bs[t] * L + from[t]) * 512, 2048) != 0;
    }
    CHECK(bad == 0, "%d tokens' logits differ between shared batches and lone sequences", bad);
    CHECK(mf_session_seq_pos(s, 1) == L && mf_session_seq_pos(s, 7) == -1, "positions");
    int32_t badseq[1] = {S};
    CHECK(mf_session_eval_seqs(s, ids[0], badseq, 1) == MF_E_INVALID, "sequence out of range");
    mf_session_free(s);
    free(alone);
    mf_model_free(m);
}

/* Every allocation of session creation failing in turn (MF_FAIL_ALLOC=N):
 * each gives a clean error (no crash; the sanitizer build checks leaks), and
 * the first N past the last allocation succeeds. With and without a budget. */
static void check_alloc_failures(void) {
    char path[512];
    test_path(path, sizeof path, "models/synth-512-f16.gguf");
    mf_model *m;
    if (mf_model_load(path, NULL, &m) != MF_OK) return;
    for (int budget = 0; budget < 2; budget++) {
        int n, ok_at = -1, bad = 0;
        for (n = 1; n < 64 && ok_at < 0 && !bad; n++) {
            char v[16];
            snprintf(v, sizeof v, "%d", n);
            setenv("MF_FAIL_ALLOC", v, 1);
            mf_session *s = NULL;
            /* a budget above what this process already holds (earlier checks
             * loaded models; under ASan the quarantine keeps growing) */
            uint64_t room = mf_peak_rss() + (16u << 20);
            mf_session_params p = {.n_ctx = 32, .n_threads = 2, .mem_budget = budget ? room : 0};
            mf_status st = mf_session_create(m, &p, &s);
            if (st == MF_OK) {
                ok_at = n;
                int32_t ids[3] = {1, 2, 3};
                CHECK(mf_session_eval(s, ids, 3, 0) == MF_OK, "eval after injected runs");
                mf_session_free(s);
            } else {
                bad = !(st == MF_E_NOMEM && !s && strstr(mf_last_error(), "injected"));
                CHECK(!bad, "budget %d: allocation %d: status %d, '%s'", budget, n, st,
                      mf_last_error());
            }
        }
        unsetenv("MF_FAIL_ALLOC");
        CHECK(ok_at > 5, "budget %d: session creation made %d allocations", budget, ok_at - 1);
        printf("injected failures: %d allocations (%s) each fail cleanly\n", ok_at - 1,
               budget ? "with a budget" : "no budget");
    }
    mf_model_free(m);
}

int main(void) {
    if (!test_shared()) {
        printf("skipped: ../shared not found\n");
        return test_report("model");
    }
    check_model("models/synth-512-f16.gguf");
    check_model("models/stories260K.gguf");
    check_model("models/quantized/synth-512-Q8_0.gguf");
    check_model("models/synth-mini-f16.gguf");
    check_kv_types();
    check_multi_seq();
    check_alloc_failures();
    return test_report("model");
}
