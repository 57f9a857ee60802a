/* test_quant_q32.c — the 32-element block formats q4_0, q4_1, q5_0, q5_1,
 * iq4_nl and the q8_1 activation type: quantizers, dot products, matmul.
 *
 * Oracles: ggml's vectors in ../shared/quant (dequantization bit for bit;
 * without an imatrix our quantizers must write ggml's exact bytes, hence be
 * as close to in.f32 as out.f32 is); the importance-weighted error, which
 * must not grow when the imatrix is given (random data, random importances);
 * the scalar reference kernels, which the AVX2 ones must equal bit for bit
 * (random blocks, many lengths, one row and four rows); a double-precision
 * dot of the dequantized operands (tolerance 1e-5 of sum |w_i*x_i|, the
 * float rounding of ~n/32 block FMAs); and mf_matmul's bits for pools of
 * 1, 2 and 3 threads. Fixed seeds throughout. */
#include "tensor/tensor.h"
#include "test.h"

#define DOT_TOL 1e-5

static const int q32_types[] = {MF_TYPE_Q4_0, MF_TYPE_Q4_1, MF_TYPE_Q5_0, MF_TYPE_Q5_1,
                                MF_TYPE_IQ4_NL};
#define N_Q32 5

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static float frand(void) { /* uniform in [-1, 1) */
    rng ^= rng >> 12;
    rng ^= rng << 25;
    rng ^= rng >> 27;
    return (float)((double)((rng * 0x2545f4914f6cdd1dull) >> 40) / (double)(1ull << 23) - 1.0);
}

static uint64_t row_bytes(int type, int64_t n) {
    uint64_t b = 0;
    mf_type_row_bytes(type, (uint64_t)n, &b);
    return b;
}

/* ---- ggml's vectors ---- */

static void test_shared_vectors(void) {
    if (!test_shared()) {
        printf("skip: ../shared absent, no ggml vectors\n");
        return;
    }
    for (int t = 0; t < N_Q32; t++) {
        int type = q32_types[t];
        char p[512], rel[64];
        size_t nin = 0, nblk = 0, nout = 0;
        snprintf(rel, sizeof rel, "quant/%s.in.f32", mf_type_name(type));
        float *in = (float *)test_read_file(test_path(p, sizeof p, rel), &nin);
        snprintf(rel, sizeof rel, "quant/%s.blocks", mf_type_name(type));
        uint8_t *blk = test_read_file(test_path(p, sizeof p, rel), &nblk);
        snprintf(rel, sizeof rel, "quant/%s.out.f32", mf_type_name(type));
        float *out = (float *)test_read_file(test_path(p, sizeof p, rel), &nout);
        int64_t n = (int64_t)(nin / 4);
        uint8_t *mine = malloc(nblk + 1);
        float *deq = malloc(nin + 1);
        CHECK(in && blk && out && mine && deq && nin == nout && nblk == row_bytes(type, n),
              "%s: vectors readable", mf_type_name(type));
        if (in && blk && out && mine && deq && nin == nout && nblk == row_bytes(type, n)) {
            const mf_type_traits *tr = mf_traits_ref(type);
            tr->to_float(blk, deq, n);
            CHECK(memcmp(deq, out, nin) == 0, "%s: dequantization bit-exact", mf_type_name(type));
            uint64_t w = mf_quantize_rows(type, in, mine, 16, n / 16, NULL);
            CHECK(w == nblk && memcmp(mine, blk, nblk) == 0, "%s: ggml's bytes",
                  mf_type_name(type));
            tr->to_float(mine, deq, n);
            double e_ours = 0, e_ggml = 0;
            for (int64_t i = 0; i < n; i++) {
                e_ours += ((double)deq[i] - in[i]) * ((double)deq[i] - in[i]);
                e_ggml += ((double)out[i] - in[i]) * ((double)out[i] - in[i]);
            }
            CHECK(e_ours <= e_ggml, "%s: error %.6g vs ggml %.6g", mf_type_name(type), e_ours,
                  e_ggml);
        }
        free(in); free(blk); free(out); free(mine); free(deq);
    }
}

/* ---- importance matrix ---- */

static double weighted_error(int type, const float *x, const float *imp, int64_t rows,
                             int64_t n, const void *q) {
    float *y = malloc((size_t)(rows * n) * 4);
    double e = 0;
    mf_traits_ref(type)->to_float(q, y, rows * n);
    for (int64_t r = 0; r < rows; r++)
        for (int64_t i = 0; i < n; i++) {
            double d = (double)x[r * n + i] - y[r * n + i];
            e += imp[i] * d * d;
        }
    free(y);
    return e;
}

/* Rows with a few outliers and importances spread over three decades. */
static void test_imatrix(void) {
    enum { ROWS = 24, N = 512 };
    float *x = malloc(ROWS * N * 4), imp[N];
    uint8_t *q = malloc(ROWS * N * 2);
    for (int i = 0; i < ROWS * N; i++) x[i] = frand() * (i % 53 == 0 ? 6.0f : 1.0f);
    for (int i = 0; i < N; i++) imp[i] = powf(10.0f, 1.5f * (frand() + 1.0f));
    for (int t = 0; t < N_Q32; t++) {
        int type = q32_types[t];
        mf_quantize_rows(type, x, q, ROWS, N, NULL);
        double plain = weighted_error(type, x, imp, ROWS, N, q);
        uint64_t w = mf_quantize_rows(type, x, q, ROWS, N, imp);
        double weighted = weighted_error(type, x, imp, ROWS, N, q);
        CHECK(w == row_bytes(type, N) * ROWS, "%s: bytes written", mf_type_name(type));
        CHECK(weighted <= plain && weighted < 0.97 * plain,
              "%s: weighted error %.6g with imatrix vs %.6g without", mf_type_name(type),
              weighted, plain);
        printf("%s: imatrix-weighted error %.4g -> %.4g (%.1f%% lower)\n", mf_type_name(type),
               plain, weighted, 100.0 * (1.0 - weighted / plain));
    }
    /* degenerate blocks: zeros, zero importances, a NaN, huge values */
    for (int i = 0; i < N; i++) {
        x[i] = i < 64 ? 0.0f : (i < 96 ? 1e30f : frand());
        imp[i] = i < 160 ? 0.0f : 1.0f;
    }
    x[200] = NAN;
    for (int t = 0; t < N_Q32; t++)
        CHECK(mf_quantize_rows(q32_types[t], x, q, 1, N, imp) == row_bytes(q32_types[t], N),
              "%s: degenerate blocks quantize", mf_type_name(q32_types[t]));
    free(x);
    free(q);
}

/* ---- kernels: AVX2 == reference, and close to exact ---- */

static const float *act_of(int type, const float *x, int64_t n, void *dst, bool ref) {
    int vt = mf_traits(type)->vec_dot_type;
    const mf_type_traits *v = ref ? mf_traits_ref(vt) : mf_traits(vt);
    (v->act_from_float ? v->act_from_float : v->from_float)(x, dst, n);
    return x;
}

/* q4_1/q5_1 meet q8_1, whose s = f16(d*sum(qs)) stands for the exact
 * d*sum(qs) in the min's term m*s: the dot is exact up to float rounding
 * only with that stored s, so add m*(s - d*sum qs) to the oracle. */
static double q8_1_term(int type, const uint8_t *w, const uint8_t *a, int64_t n) {
    if (mf_traits(type)->vec_dot_type != MF_TYPE_Q8_1) return 0;
    uint64_t wb = row_bytes(type, 32);
    double c = 0;
    for (int64_t b = 0; b < n / 32; b++, w += wb, a += 36) {
        uint16_t m, d, s;
        memcpy(&m, w + 2, 2);
        memcpy(&d, a, 2);
        memcpy(&s, a + 2, 2);
        int sum = 0;
        for (int j = 0; j < 32; j++) sum += (int8_t)a[4 + j];
        c += (double)mf_f16_to_f32(m) *
             ((double)mf_f16_to_f32(s) - (double)mf_f16_to_f32(d) * sum);
    }
    return c;
}

/* Four rows of random weights and one activation row of length n. */
static void check_kernels(int type, int64_t n) {
    const mf_type_traits *ref = mf_traits_ref(type), *act = mf_traits(type);
    int vt = ref->vec_dot_type;
    uint64_t wb = row_bytes(type, n), ab = row_bytes(vt, n);
    float *w = malloc((size_t)(4 * n) * 4), *x = malloc((size_t)n * 4);
    float *wd = malloc((size_t)(4 * n) * 4), *xd = malloc((size_t)n * 4);
    uint8_t *qw = malloc(4 * wb), *qa = malloc(ab), *qa_ref = malloc(ab);
    float scale = frand() > 0 ? 1.0f : 1e-3f;
    for (int64_t i = 0; i < 4 * n; i++) w[i] = frand() * scale + (i % 3 == 0 ? 0.2f : 0.0f);
    for (int64_t i = 0; i < n; i++) x[i] = frand() * (i % 37 == 0 ? 8.0f : 1.0f);
    mf_quantize_rows(type, w, qw, 4, n, NULL);
    act_of(type, x, n, qa, false);
    act_of(type, x, n, qa_ref, true);
    CHECK(memcmp(qa, qa_ref, ab) == 0, "%s n=%lld: activation bytes equal", mf_type_name(type),
          (long long)n);
    ref->to_float(qw, wd, 4 * n);
    mf_traits_ref(vt)->to_float(qa_ref, xd, n);
    float s4[4];
    if (act->vec_dot4) act->vec_dot4(n, s4, qw, wb, qa);
    for (int r = 0; r < 4; r++) {
        float sr, sa;
        ref->vec_dot(n, &sr, qw + r * wb, qa_ref);
        act->vec_dot(n, &sa, qw + r * wb, qa);
        CHECK(memcmp(&sr, &sa, 4) == 0, "%s n=%lld row %d: avx2 %.9g ref %.9g",
              mf_type_name(type), (long long)n, r, sa, sr);
        if (act->vec_dot4)
            CHECK(memcmp(&s4[r], &sa, 4) == 0, "%s n=%lld row %d: dot4 %.9g dot %.9g",
                  mf_type_name(type), (long long)n, r, s4[r], sa);
        double exact = q8_1_term(type, qw + r * wb, qa_ref, n), mag = 0;
        for (int64_t i = 0; i < n; i++) {
            exact += (double)wd[r * n + i] * xd[i];
            mag += fabs((double)wd[r * n + i] * xd[i]);
        }
        CHECK(fabs(sr - exact) <= DOT_TOL * mag + 1e-30, "%s n=%lld: dot %.9g exact %.9g",
              mf_type_name(type), (long long)n, sr, exact);
    }
    free(w); free(x); free(wd); free(xd); free(qw); free(qa); free(qa_ref);
}

static void test_kernels(void) {
    static const int64_t lens[] = {32, 64, 96, 160, 256, 288, 2048, 4096 + 32};
    for (int t = 0; t < N_Q32; t++)
        for (size_t l = 0; l < sizeof lens / sizeof *lens; l++)
            for (int rep = 0; rep < 3; rep++) check_kernels(q32_types[t], lens[l]);
}

/* q8_1: s = f16(d * sum(qs)) for both quantizers, and edge blocks (all
 * zero, a NaN, an infinity) give the same bytes in AVX2 and reference. */
static void test_q8_1(void) {
    float x[128];
    uint8_t a[4 * 36], b[4 * 36];
    for (int i = 0; i < 128; i++) x[i] = frand() * 3.0f;
    for (int i = 0; i < 32; i++) x[i] = 0.0f; /* an all-zero block */
    x[40] = NAN;
    x[70] = INFINITY;
    mf_traits(MF_TYPE_Q8_1)->act_from_float(x, a, 128);
    mf_traits_ref(MF_TYPE_Q8_1)->act_from_float(x, b, 128);
    CHECK(memcmp(a, b, sizeof a) == 0, "q8_1 act: avx2 == ref on edge blocks");
    for (int i = 0; i < 128; i++) x[i] = frand() * 3.0f;
    for (int k = 0; k < 2; k++) {
        mf_from_float_fn f = k ? mf_traits_ref(MF_TYPE_Q8_1)->act_from_float
                               : mf_traits_ref(MF_TYPE_Q8_1)->from_float;
        f(x, a, 128);
        bool ok = true;
        for (int blk = 0; blk < 4; blk++) {
            const uint8_t *p = a + 36 * blk;
            int sum = 0;
            for (int j = 0; j < 32; j++) sum += (int8_t)p[4 + j];
            uint16_t d, s;
            memcpy(&d, p, 2);
            memcpy(&s, p + 2, 2);
            float amax = 0;
            for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(x[32 * blk + j]));
            ok = ok && d == mf_f32_to_f16(amax / 127.0f) &&
                 s == mf_f32_to_f16(amax / 127.0f * (float)sum);
        }
        CHECK(ok, "q8_1 %s: d = amax/127, s = d*sum", k ? "act" : "weights");
    }
}

/* ---- matmul: the same bits for any pool ---- */

static void test_matmul_threads(void) {
    enum { N_IN = 256, N_OUT = 37 };
    mf_pool *pools[4] = {NULL};
    for (int p = 1; p <= 3; p++)
        if (mf_pool_create(p, &pools[p]) != MF_OK) CHECK(0, "pool %d", p);
    static const int64_t toks[] = {1, 3, 70};
    float *w = malloc(N_IN * N_OUT * 4), *x = malloc(N_IN * 70 * 4);
    float *y1 = malloc(N_OUT * 70 * 4), *yk = malloc(N_OUT * 70 * 4);
    uint8_t *q = malloc(N_IN * N_OUT * 2);
    for (int i = 0; i < N_IN * N_OUT; i++) w[i] = frand();
    for (int i = 0; i < N_IN * 70; i++) x[i] = frand();
    for (int t = 0; t < N_Q32; t++) {
        int type = q32_types[t];
        void *scratch = malloc(mf_matmul_scratch_bytes(type, N_IN, 70) + 1);
        mf_quantize_rows(type, w, q, N_OUT, N_IN, NULL);
        for (size_t k = 0; k < 3; k++) {
            size_t ny = (size_t)(toks[k] * N_OUT) * 4;
            mf_matmul(pools[1], q, type, N_IN, N_OUT, x, toks[k], y1, scratch);
            bool finite = true;
            for (size_t i = 0; i < ny / 4; i++) finite = finite && isfinite(y1[i]);
            CHECK(finite, "%s n_tok=%lld: finite", mf_type_name(type), (long long)toks[k]);
            for (int p = 2; p <= 3; p++) {
                mf_matmul(pools[p], q, type, N_IN, N_OUT, x, toks[k], yk, scratch);
                CHECK(memcmp(y1, yk, ny) == 0, "%s n_tok=%lld: %d threads differ",
                      mf_type_name(type), (long long)toks[k], p);
            }
        }
        /* a token alone equals the same token inside the batch of 70 */
        mf_matmul(pools[2], q, type, N_IN, N_OUT, x + 69 * N_IN, 1, yk, scratch);
        CHECK(memcmp(yk, y1 + 69 * N_OUT, N_OUT * 4) == 0, "%s: alone == batched",
              mf_type_name(type));
        free(scratch);
    }
    free(w); free(x); free(y1); free(yk); free(q);
    for (int p = 1; p <= 3; p++) mf_pool_free(pools[p]);
}

int main(void) {
    for (int t = 0; t < N_Q32; t++)
        CHECK(mf_type_can_matmul(q32_types[t]), "%s can matmul", mf_type_name(q32_types[t]));
    CHECK(mf_traits(MF_TYPE_Q4_1)->vec_dot_type == MF_TYPE_Q8_1 &&
              mf_traits(MF_TYPE_Q5_1)->vec_dot_type == MF_TYPE_Q8_1 &&
              mf_traits(MF_TYPE_Q4_0)->vec_dot_type == MF_TYPE_Q8_0,
          "vec_dot_types as llama.cpp");
    test_shared_vectors();
    test_imatrix();
    test_q8_1();
    test_kernels();
    test_matmul_threads();
    return test_report("quant_q32");
}
