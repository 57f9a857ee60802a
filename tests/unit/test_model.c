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

int main(void) {
    if (!test_shared()) {
        printf("skipped: ../shared not found\n");
        return test_report("model");
    }
    check_model("models/synth-512-f16.gguf");
    check_model("models/stories260K.gguf");
    check_model("models/quantized/synth-512-Q8_0.gguf");
    check_model("models/synth-mini-f16.gguf");
    return test_report("model");
}
