/* test_quant_k.c — q4_K, q5_K, q6_K (quantize and multiply) and q8_K.
 *
 * Oracles: ggml's block vectors in ../shared/quant (our quantizer must give
 * the same bytes, hence the same error); the rule of ggml's q8_K quantizer
 * checked element by element; a weighted-error comparison (with an
 * importance matrix <= without); a double-precision dot of the dequantized
 * rows (tolerance 1e-5 of sum |w_i x_i|); bit-identity of the AVX2 kernels
 * with the scalar reference on random and on extreme blocks, of the
 * four-row kernels with the one-row ones, and of mf_matmul across thread
 * counts and batching; and llama.cpp's logits of the pure-K models in
 * ../shared/reference (position 0 bit for bit). */
#include "tensor/kernels.h"
#include "test.h"

#define NTYPES 3
static const int ktypes[NTYPES] = {MF_TYPE_Q4_K, MF_TYPE_Q5_K, MF_TYPE_Q6_K};
static const char *const kfiles[NTYPES] = {"q4_K", "q5_K", "q6_K"};

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint64_t rnd(void) {
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545f4914f6cdd1dull;
}
/* uniform in [-1, 1) */
static float frand(void) { return (float)((double)(rnd() >> 40) / (double)(1ull << 23) - 1.0); }

static uint64_t row_bytes(int type, int64_t n) {
    uint64_t b = 0;
    mf_type_row_bytes(type, (uint64_t)n, &b);
    return b;
}

static float *read_f32(const char *rel, size_t *n) {
    char p[512];
    size_t len = 0;
    float *v = (float *)test_read_file(test_path(p, sizeof p, rel), &len);
    *n = len / 4;
    return v;
}

/* ---- q8_K ---- */

static void test_q8_k(void) {
    float x[512];
    uint8_t q[2 * MF_Q8_K_BYTES];
    for (int i = 0; i < 512; i++) x[i] = frand() * (i < 256 ? 3.0f : 0.01f);
    x[77] = -5.0f; /* block 0: the max-|x| value is negative */
    x[300] = 0.02f;
    const mf_type_traits *t = mf_traits(MF_TYPE_Q8_K);
    CHECK(t && t->from_float && t->to_float, "q8_K is a full type");
    if (!t) return;
    t->from_float(x, q, 512);
    int bad_q = 0, bad_sum = 0;
    for (int b = 0; b < 2; b++) {
        const uint8_t *p = q + b * MF_Q8_K_BYTES;
        float d, mx = b ? 0.02f : -5.0f, iscale = -127.0f / mx;
        memcpy(&d, p, 4);
        CHECK(d == 1 / iscale, "block %d: d = 1/iscale (%g vs %g)", b, d, 1 / iscale);
        for (int j = 0; j < 256; j++) {
            /* nearbyint: ties to even, what ggml's nearest_int does */
            float want = nearbyintf(iscale * x[256 * b + j]);
            bad_q += (float)((const int8_t *)p + 4)[j] != fminf(want, 127.0f);
        }
        for (int g = 0; g < 16; g++) {
            int s = 0;
            for (int j = 0; j < 16; j++) s += ((const int8_t *)p + 4)[16 * g + j];
            bad_sum += (int16_t)mf_rd16(p + 260 + 2 * g) != s;
        }
    }
    CHECK(bad_q == 0 && bad_sum == 0, "q8_K rule: %d quants, %d bsums differ", bad_q, bad_sum);
    CHECK(((const int8_t *)q + 4)[77] == -127, "the max-|x| value becomes -127");
    memset(x, 0, sizeof x);
    memset(q, 0xff, sizeof q);
    t->from_float(x, q, 256);
    int nz = 0;
    for (int i = 0; i < MF_Q8_K_BYTES; i++) nz += q[i] != 0;
    CHECK(nz == 0, "an all-zero block is all zero bytes (%d non-zero)", nz);
}

/* ---- quantizers against ggml's vectors ---- */

static void test_ggml_vectors(void) {
    for (int k = 0; k < NTYPES; k++) {
        char rel[128];
        size_t n_in = 0, n_out = 0, n_bl = 0;
        snprintf(rel, sizeof rel, "quant/%s.in.f32", kfiles[k]);
        float *in = read_f32(rel, &n_in);
        snprintf(rel, sizeof rel, "quant/%s.out.f32", kfiles[k]);
        float *out = read_f32(rel, &n_out);
        char p[512];
        snprintf(rel, sizeof rel, "quant/%s.blocks", kfiles[k]);
        uint8_t *blocks = test_read_file(test_path(p, sizeof p, rel), &n_bl);
        uint64_t rb = row_bytes(ktypes[k], 256);
        uint8_t *q = malloc(rb * 16);
        float *deq = malloc(4096 * 4);
        if (!in || !out || !blocks || n_in != 4096 || n_bl != rb * 16 || !q || !deq) {
            CHECK(0, "%s: cannot read the vectors", kfiles[k]);
        } else {
            uint64_t w = mf_quantize_rows(ktypes[k], in, q, 16, 256, NULL);
            CHECK(w == rb * 16, "%s: bytes written", kfiles[k]);
            CHECK(memcmp(q, blocks, rb * 16) == 0, "%s: blocks differ from ggml's reference", kfiles[k]);
            mf_traits(ktypes[k])->to_float(q, deq, 4096);
            double e_ours = 0, e_ggml = 0;
            for (int i = 0; i < 4096; i++) {
                e_ours += ((double)deq[i] - in[i]) * ((double)deq[i] - in[i]);
                e_ggml += ((double)out[i] - in[i]) * ((double)out[i] - in[i]);
            }
            CHECK(e_ours <= e_ggml, "%s: error %.6g > ggml's %.6g", kfiles[k], e_ours, e_ggml);
            /* from_float is the same rule, one row */
            mf_traits(ktypes[k])->from_float(in, q, 256);
            CHECK(memcmp(q, blocks, rb) == 0, "%s: from_float differs", kfiles[k]);
        }
        free(in); free(out); free(blocks); free(q); free(deq);
    }
}

/* ---- importance matrix ---- */

/* sum_i imp_i (x_i - deq_i)^2 over rows of n */
static double weighted_error(int type, const float *x, const void *q, int64_t rows, int64_t n,
                             const float *imp) {
    float *deq = malloc((size_t)(rows * n) * 4);
    double e = 0;
    if (!deq) return INFINITY;
    mf_traits(type)->to_float(q, deq, rows * n);
    for (int64_t i = 0; i < rows * n; i++) {
        double d = (double)x[i] - deq[i];
        e += imp[i % n] * d * d;
    }
    free(deq);
    return e;
}

/* Random rows (with a few outliers), random importances spread over four
 * decades: the weighted error with the imatrix must not exceed the plain
 * quantizer's, and should be clearly smaller. */
static void test_imatrix(void) {
    const int64_t rows = 32, n = 1024;
    float *x = malloc((size_t)(rows * n) * 4), *imp = malloc((size_t)n * 4);
    uint8_t *q0 = malloc(row_bytes(MF_TYPE_Q5_K, n) * rows), *q1 = malloc(row_bytes(MF_TYPE_Q5_K, n) * rows);
    if (!x || !imp || !q0 || !q1) {
        CHECK(0, "out of memory");
        goto done;
    }
    for (int64_t i = 0; i < rows * n; i++) x[i] = frand() * (rnd() % 50 == 0 ? 4.0f : 1.0f);
    for (int64_t i = 0; i < n; i++) imp[i] = powf(10.0f, 2.0f * frand() - 2.0f);
    for (int k = 0; k < NTYPES; k++) {
        mf_quantize_rows(ktypes[k], x, q0, rows, n, NULL);
        mf_quantize_rows(ktypes[k], x, q1, rows, n, imp);
        double e0 = weighted_error(ktypes[k], x, q0, rows, n, imp);
        double e1 = weighted_error(ktypes[k], x, q1, rows, n, imp);
        CHECK(e1 <= e0, "%s: weighted error with imatrix %.6g > without %.6g", kfiles[k], e1, e0);
        printf("%s: weighted error with imatrix / without = %.3f\n", kfiles[k], e1 / e0);
        /* zero importances must still give finite, sane blocks */
        float *zero = calloc((size_t)n, 4);
        if (zero) {
            mf_quantize_rows(ktypes[k], x, q1, rows, n, zero);
            double ez = weighted_error(ktypes[k], x, q1, rows, n, imp);
            CHECK(isfinite(ez) && ez < 20 * e0, "%s: all-zero imatrix gives error %.3g", kfiles[k], ez);
            free(zero);
        }
    }
done:
    free(x); free(imp); free(q0); free(q1);
}
