/* sampler.c — choosing the next token from logits.
 *
 * Owns the mf_sampler: its parameters, its own random generator (splitmix64,
 * seeded per sampler, so two samplers never share state and a seed replays
 * exactly), the window of recently accepted tokens for the repetition
 * penalty, and the candidate buffer (n_vocab entries, malloc'd once). The
 * order is llama.cpp's: penalty -> top_k -> temperature -> softmax -> top_p
 * -> min_p -> renormalize -> draw. With temp <= 0 the penalized logits' argmax
 * is returned (lowest id on ties), so a penalty also steers greedy decoding. */
#include "core/core.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct cand {
    float logit;
    float p;
    int32_t id;
} cand;

struct mf_sampler {
    mf_sampler_params p;
    int n_vocab;
    uint64_t rng;        /* splitmix64 state */
    int32_t *hist;       /* (repeat_last_n) ring of accepted ids */
    int hist_n, hist_pos;
    cand *c;             /* (n_vocab) candidates of the current step */
    uint8_t *seen;       /* (n_vocab) penalty applied once per distinct token */
};

mf_sampler_params mf_sampler_defaults(void) {
    return (mf_sampler_params){.temp = 0.8f, .top_k = 40, .top_p = 0.95f, .min_p = 0.05f,
                               .repeat_penalty = 1.0f, .repeat_last_n = 64, .seed = 42};
}

void mf_sampler_free(mf_sampler *s) {
    if (!s) return;
    free(s->hist);
    free(s->c);
    free(s->seen);
    free(s);
}

uint64_t mf_sampler_bytes(const mf_sampler_params *p, int n_vocab) {
    mf_sampler_params prm = p ? *p : mf_sampler_defaults();
    uint64_t hist = (uint64_t)(prm.repeat_last_n > 0 ? prm.repeat_last_n : 1);
    uint64_t nv = n_vocab > 0 ? (uint64_t)n_vocab : 0;
    return sizeof(mf_sampler) + hist * sizeof(int32_t) + nv * (sizeof(cand) + 1);
}

mf_status mf_sampler_create(const mf_sampler_params *p, int n_vocab, mf_sampler **out) {
    if (!out || n_vocab <= 0) return mf_errorf(MF_E_INVALID, "sampler: n_vocab %d", n_vocab);
    mf_sampler_params prm = p ? *p : mf_sampler_defaults();
    if (isnan(prm.temp) || isnan(prm.top_p) || isnan(prm.min_p) || !(prm.repeat_penalty > 0))
        return mf_errorf(MF_E_INVALID, "sampler: bad parameters (temp %g, top_p %g, min_p %g, "
                         "repeat_penalty %g)", prm.temp, prm.top_p, prm.min_p, prm.repeat_penalty);
    if (prm.repeat_last_n < 0) prm.repeat_last_n = 0;
    mf_sampler *s = calloc(1, sizeof *s);
    if (!s) return mf_errorf(MF_E_NOMEM, "sampler: no memory");
    s->p = prm;
    s->n_vocab = n_vocab;
    s->rng = prm.seed;
    s->hist = malloc((size_t)(prm.repeat_last_n ? prm.repeat_last_n : 1) * sizeof *s->hist);
    s->c = malloc((size_t)n_vocab * sizeof *s->c);
    s->seen = calloc((size_t)n_vocab, 1);
    if (!s->hist || !s->c || !s->seen) {
        mf_sampler_free(s);
        return mf_errorf(MF_E_NOMEM, "sampler: cannot allocate for %d tokens", n_vocab);
    }
    *out = s;
    return MF_OK;
}

void mf_sampler_accept(mf_sampler *s, int32_t id) {
    if (!s || s->p.repeat_last_n <= 0 || id < 0 || id >= s->n_vocab) return;
    s->hist[s->hist_pos] = id;
    s->hist_pos = (s->hist_pos + 1) % s->p.repeat_last_n;
    if (s->hist_n < s->p.repeat_last_n) s->hist_n++;
}

/* splitmix64 (Steele, Lea, Flood 2014): tiny, full period, good enough to
 * draw tokens; the top 53 bits make a double in [0, 1). */
static double next_uniform(mf_sampler *s) {
    uint64_t z = (s->rng += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (double)(z >> 11) * (1.0 / 9007199254740992.0);
}

/* Candidates = logits (NaN treated as -inf) with the repetition penalty
 * applied once to every distinct token in the window. */
static void load_candidates(mf_sampler *s, const float *logits) {
    for (int i = 0; i < s->n_vocab; i++) {
        float l = logits[i];
        s->c[i] = (cand){isnan(l) ? -INFINITY : l, 0.0f, i};
    }
    float pen = s->p.repeat_penalty;
    if (pen == 1.0f) return;
    for (int k = 0; k < s->hist_n; k++) {
        int32_t id = s->hist[k];
        if (s->seen[id]) continue;
        s->seen[id] = 1;
        float *l = &s->c[id].logit;
        *l = *l > 0 ? *l / pen : *l * pen;
    }
    for (int k = 0; k < s->hist_n; k++) s->seen[s->hist[k]] = 0;
}

/* a ranks before b: higher logit, then lower id */
static bool ahead(const cand *a, const cand *b) {
    return a->logit > b->logit || (a->logit == b->logit && a->id < b->id);
}

static int cmp_cand(const void *a, const void *b) {
    return ahead(a, b) ? -1 : ahead(b, a) ? 1 : 0;
}

/* The heap below keeps the worst of the best-so-far at c[0]: a parent never
 * ranks ahead of its children. */
static void sift_down(cand *c, int k, int pos) {
    cand x = c[pos];
    for (;;) {
        int ch = 2 * pos + 1;
        if (ch >= k) break;
        if (ch + 1 < k && ahead(&c[ch], &c[ch + 1])) ch++;
        if (!ahead(&x, &c[ch])) break;
        c[pos] = c[ch];
        pos = ch;
    }
    c[pos] = x;
}

/* Move the k best candidates to c[0..k) in O(n log k), best first. */
static void select_top_k(cand *c, int n, int k) {
    for (int i = k / 2 - 1; i >= 0; i--) sift_down(c, k, i);
    for (int i = k; i < n; i++) {
        if (!ahead(&c[i], &c[0])) continue;
        c[0] = c[i];
        sift_down(c, k, 0);
    }
    qsort(c, (size_t)k, sizeof *c, cmp_cand);
}

static int32_t argmax(const cand *c, int n) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (ahead(&c[i], &c[best])) best = i;
    return c[best].id;
}

/* Probabilities of c[0..n) (sorted, best first) at temperature temp; the
 * maximum is subtracted first so exp never overflows. */
static void softmax(cand *c, int n, float temp) {
    float max = c[0].logit;
    if (max == -INFINITY) { /* nothing is possible: fall back to the first */
        for (int i = 0; i < n; i++) c[i].p = i == 0;
        return;
    }
    double sum = 0;
    for (int i = 0; i < n; i++) {
        double e = exp(((double)c[i].logit - max) / temp);
        c[i].p = (float)e;
        sum += e;
    }
    for (int i = 0; i < n; i++) c[i].p = (float)(c[i].p / sum);
}

/* The smallest prefix whose probability reaches top_p (at least one). */
static int keep_top_p(const cand *c, int n, float top_p) {
    if (top_p >= 1.0f) return n;
    double cum = 0;
    for (int i = 0; i < n; i++) {
        cum += c[i].p;
        if (cum >= top_p) return i + 1;
    }
    return n;
}

/* Drop tokens less likely than min_p times the most likely one; the list is
 * sorted, so what stays is a prefix. */
static int keep_min_p(const cand *c, int n, float min_p) {
    if (min_p <= 0.0f) return n;
    float threshold = min_p * c[0].p;
    int m = 1;
    while (m < n && c[m].p >= threshold) m++;
    return m;
}

/* Draw from c[0..n) with probabilities renormalized to their sum. */
static int32_t draw(mf_sampler *s, const cand *c, int n) {
    double sum = 0;
    for (int i = 0; i < n; i++) sum += c[i].p;
    double u = next_uniform(s) * sum, cum = 0;
    for (int i = 0; i < n; i++) {
        cum += c[i].p;
        if (u < cum) return c[i].id;
    }
    return c[n - 1].id; /* u landed on the rounding error at the top */
}

int32_t mf_sampler_sample(mf_sampler *s, const float *logits) {
    if (!s || !logits) return -1;
    int n = s->n_vocab;
    load_candidates(s, logits);
    if (!(s->p.temp > 0.0f)) return argmax(s->c, n);
    int k = s->p.top_k > 0 && s->p.top_k < n ? s->p.top_k : n;
    if (k < n) select_top_k(s->c, n, k);
    else qsort(s->c, (size_t)n, sizeof *s->c, cmp_cand);
    softmax(s->c, k, s->p.temp);
    int m = keep_top_p(s->c, k, s->p.top_p);
    m = keep_min_p(s->c, m, s->p.min_p);
    return draw(s, s->c, m);
}
