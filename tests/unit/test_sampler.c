/* test_sampler.c — the sampler against properties with stated tolerances.
 *
 * Oracles: a naive argmax loop (greedy, lowest id on ties); an independent
 * double-precision softmax for the empirical frequencies of 100k draws
 * (max |freq - p| <= 0.01, about 6 standard deviations at p = 0.5); the
 * exact sets top_p / min_p must keep for hand-picked probabilities; and the
 * llama.cpp penalty rule (logit > 0 ? logit / penalty : logit * penalty).
 * Fixed seeds throughout; vocabulary sizes 1, 2, 3, 5, 7, 15, 16, 17, 31, 33. */
#include "test.h"
#include "memfit.h"

#include <stdint.h>

static uint64_t rng_state = 12345;
static float frand(void) { /* xorshift64*, independent of the sampler's generator */
    rng_state ^= rng_state >> 12, rng_state ^= rng_state << 25, rng_state ^= rng_state >> 27;
    return (float)((rng_state * 2685821657736338717ull) >> 40) / 16777216.0f * 8.0f - 4.0f;
}

static mf_sampler *make(float temp, int top_k, float top_p, float min_p, float pen, int last_n,
                        uint64_t seed, int n_vocab) {
    mf_sampler_params p = {temp, top_k, top_p, min_p, pen, last_n, seed};
    mf_sampler *s = NULL;
    CHECK(mf_sampler_create(&p, n_vocab, &s) == MF_OK, "create: %s", mf_last_error());
    return s;
}

static int naive_argmax(const float *l, int n) {
    int b = 0;
    for (int i = 1; i < n; i++)
        if (l[i] > l[b]) b = i;
    return b;
}

static void test_greedy_and_top1(void) {
    static const int sizes[] = {1, 2, 3, 5, 7, 15, 16, 17, 31, 33, 1000};
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        int n = sizes[k];
        float l[1000];
        for (int i = 0; i < n; i++) l[i] = frand();
        mf_sampler *g = make(0.0f, 40, 0.95f, 0.05f, 1.0f, 64, 1, n);
        mf_sampler *t1 = make(1.5f, 1, 1.0f, 0.0f, 1.0f, 64, 7, n);
        int32_t want = naive_argmax(l, n), a = mf_sampler_sample(g, l), same = 1;
        for (int r = 0; r < 50; r++) same &= mf_sampler_sample(t1, l) == want;
        CHECK(a == want, "greedy n=%d: %d, argmax %d", n, a, want);
        CHECK(same, "top_k=1 at temp 1.5 is greedy (n=%d)", n);
        mf_sampler_free(g);
        mf_sampler_free(t1);
    }
    float tie[8] = {0, 1, 3, 2, 3, 1, 3, 0};
    mf_sampler *g = make(-1.0f, 0, 1.0f, 0.0f, 1.0f, 0, 1, 8);
    CHECK(mf_sampler_sample(g, tie) == 2, "greedy ties go to the lowest id");
    mf_sampler_free(g);
}

static void test_seeds(void) {
    float l[33];
    for (int i = 0; i < 33; i++) l[i] = frand();
    mf_sampler *a = make(1.0f, 0, 1.0f, 0.0f, 1.0f, 64, 42, 33);
    mf_sampler *b = make(1.0f, 0, 1.0f, 0.0f, 1.0f, 64, 42, 33);
    mf_sampler *c = make(1.0f, 0, 1.0f, 0.0f, 1.0f, 64, 43, 33);
    int same_ab = 1, same_ac = 1;
    for (int r = 0; r < 200; r++) {
        int32_t x = mf_sampler_sample(a, l), y = mf_sampler_sample(b, l), z = mf_sampler_sample(c, l);
        same_ab &= x == y;
        same_ac &= x == z;
    }
    CHECK(same_ab, "same seed gives the same sequence");
    CHECK(!same_ac, "a different seed gives a different sequence");
    mf_sampler_free(a);
    mf_sampler_free(b);
    mf_sampler_free(c);
}

/* Draw n_draws times; freq[i] gets the frequency of token i. */
static void histogram(mf_sampler *s, const float *l, int n, int n_draws, double *freq) {
    for (int i = 0; i < n; i++) freq[i] = 0;
    for (int r = 0; r < n_draws; r++) {
        int32_t id = mf_sampler_sample(s, l);
        if (id >= 0 && id < n) freq[id] += 1.0 / n_draws;
    }
}

static void test_frequencies(void) {
    const float l[8] = {1.0f, 2.0f, 0.5f, -1.0f, 3.0f, 0.0f, 1.5f, 2.5f};
    const float temp = 0.7f;
    double p[8], sum = 0, freq[8], worst = 0;
    for (int i = 0; i < 8; i++) sum += p[i] = exp((double)l[i] / temp);
    mf_sampler *s = make(temp, 0, 1.0f, 0.0f, 1.0f, 64, 2024, 8);
    histogram(s, l, 8, 100000, freq);
    for (int i = 0; i < 8; i++) worst = fmax(worst, fabs(freq[i] - p[i] / sum));
    CHECK(worst <= 0.01, "100k draws: max |freq - softmax| = %.4f > 0.01", worst);
    printf("frequencies: max |freq - p| = %.4f over 100000 draws (bound 0.01)\n", worst);
    mf_sampler_free(s);
}

/* logits = log p, so the softmax at temp 1 gives p back */
static const double P5[5] = {0.5, 0.2, 0.15, 0.1, 0.05};

static void check_kept(mf_sampler *s, int n_keep, const char *what) {
    float l[5];
    double freq[5], total = 0, worst = 0;
    for (int i = 0; i < 5; i++) l[i] = (float)log(P5[i]);
    histogram(s, l, 5, 20000, freq);
    for (int i = 0; i < n_keep; i++) total += P5[i];
    for (int i = 0; i < 5; i++) {
        CHECK((freq[i] > 0) == (i < n_keep), "%s: token %d %s", what, i,
              i < n_keep ? "never drawn" : "drawn but should be excluded");
        if (i < n_keep) worst = fmax(worst, fabs(freq[i] - P5[i] / total));
    }
    CHECK(worst <= 0.02, "%s: renormalized frequencies off by %.4f (bound 0.02)", what, worst);
}

static void test_top_p_min_p(void) {
    mf_sampler *s = make(1.0f, 0, 0.8f, 0.0f, 1.0f, 64, 5, 5);
    check_kept(s, 3, "top_p 0.8 keeps 0.5+0.2+0.15"); /* 0.7 < 0.8 <= 0.85 */
    mf_sampler_free(s);
    s = make(1.0f, 0, 0.45f, 0.0f, 1.0f, 64, 5, 5);
    check_kept(s, 1, "top_p 0.45 keeps only the first");
    mf_sampler_free(s);
    s = make(1.0f, 0, 1.0f, 0.25f, 1.0f, 64, 5, 5);
    check_kept(s, 3, "min_p 0.25 drops p < 0.125"); /* 0.15 stays, 0.1 goes */
    mf_sampler_free(s);
    s = make(1.0f, 2, 1.0f, 0.0f, 1.0f, 64, 5, 5);
    check_kept(s, 2, "top_k 2");
    mf_sampler_free(s);
}

static void test_penalty(void) {
    float pos[4] = {2.0f, 1.9f, 0.0f, -3.0f}, neg[3] = {-1.0f, -1.2f, -5.0f};
    mf_sampler *s = make(0.0f, 0, 1.0f, 0.0f, 1.5f, 2, 1, 4);
    CHECK(mf_sampler_sample(s, pos) == 0, "no history: argmax 0");
    mf_sampler_accept(s, 0);
    mf_sampler_accept(s, 0); /* counted once: 2 / 1.5 = 1.33 < 1.9 */
    CHECK(mf_sampler_sample(s, pos) == 1, "penalized positive logit loses the argmax");
    mf_sampler_accept(s, 2);
    mf_sampler_accept(s, 3); /* the window of 2 no longer holds token 0 */
    CHECK(mf_sampler_sample(s, pos) == 0, "token out of the window is not penalized");
    mf_sampler_free(s);
    s = make(0.0f, 0, 1.0f, 0.0f, 1.5f, 64, 1, 3);
    mf_sampler_accept(s, 0); /* -1 * 1.5 = -1.5 < -1.2 */
    CHECK(mf_sampler_sample(s, neg) == 1, "penalized negative logit loses the argmax");
    mf_sampler_free(s);
}

static void test_api(void) {
    mf_sampler_params d = mf_sampler_defaults();
    CHECK(d.temp == 0.8f && d.top_k == 40 && d.top_p == 0.95f && d.min_p == 0.05f &&
              d.repeat_penalty == 1.0f && d.repeat_last_n == 64 && d.seed == 42, "defaults");
    mf_sampler *s = NULL;
    CHECK(mf_sampler_create(&d, 0, &s) == MF_E_INVALID, "n_vocab 0 rejected");
    d.repeat_penalty = 0.0f;
    CHECK(mf_sampler_create(&d, 10, &s) == MF_E_INVALID, "penalty 0 rejected");
    mf_sampler_free(NULL);
    float l[40];
    for (int i = 0; i < 40; i++) l[i] = frand();
    l[7] = NAN;
    s = make(0.8f, 40, 0.95f, 0.05f, 1.1f, 64, 42, 40);
    int ok = 1;
    for (int r = 0; r < 100; r++) {
        int32_t id = mf_sampler_sample(s, l);
        ok &= id >= 0 && id < 40 && id != 7;
        mf_sampler_accept(s, id);
    }
    CHECK(ok, "defaults: ids in range, NaN logit never drawn");
    mf_sampler_free(s);
}

int main(void) {
    test_greedy_and_top1();
    test_seeds();
    test_frequencies();
    test_top_p_min_p();
    test_penalty();
    test_api();
    return test_report("sampler");
}
