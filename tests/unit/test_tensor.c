/* test_tensor.c — the type table: conversions, block formats, dot products.
 *
 * Oracles: ggml's own blocks and dequantized rows in ../shared/quant (bit for
 * bit); hand-derived IEEE-754 constants for f16/bf16 special values and
 * rounding ties; exhaustive round trips over all 65536 halves; a double-
 * precision dot product of the dequantized rows (tolerance 1e-5 of the sum
 * of |x_i*y_i|, far above f32 summation error at these lengths, far below
 * any indexing or scaling bug); and the scalar reference kernels for the
 * SIMD ones: identical bits for conversions and for the f32, f16 and q8_0
 * dots (same operations in the same order), the tolerance above for bf16. */
#include "tensor/tensor.h"
#include "tensor/vec.h"
#include "test.h"

#include <stdint.h>

#define DOT_TOL 1e-5

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static float frand(void) { /* xorshift64*, uniform in [-1, 1) */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    uint64_t r = rng_state * 0x2545f4914f6cdd1dull;
    return (float)((double)(r >> 40) / (double)(1ull << 23) - 1.0);
}

static uint32_t fbits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static float bitsf(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

static uint64_t row_bytes(int type, int64_t n) {
    uint64_t b = 0;
    mf_type_row_bytes(type, (uint64_t)n, &b);
    return b;
}

/* ---- ../shared/quant fixtures ---- */

static void check_fixture(const char *name, int type, bool writable) {
    char p[512], rel[64];
    size_t nb = 0, nin = 0, nout = 0;
    snprintf(rel, sizeof rel, "quant/%s.blocks", name);
    unsigned char *blocks = test_read_file(test_path(p, sizeof p, rel), &nb);
    snprintf(rel, sizeof rel, "quant/%s.in.f32", name);
    float *in = (float *)test_read_file(test_path(p, sizeof p, rel), &nin);
    snprintf(rel, sizeof rel, "quant/%s.out.f32", name);
    float *out = (float *)test_read_file(test_path(p, sizeof p, rel), &nout);
    int64_t n = (int64_t)(nout / 4);
    CHECK(blocks && in && out && nin == nout && nb == row_bytes(type, n), "%s fixture sizes", name);
    if (!blocks || !in || !out || nb != row_bytes(type, n)) goto done;
    float *got = malloc((size_t)n * 4);
    unsigned char *q = malloc(nb);
    const mf_type_traits *tr[2] = {mf_traits_ref(type), mf_traits(type)};
    for (int k = 0; k < 2; k++) {
        CHECK(tr[k] && tr[k]->to_float, "%s has to_float", name);
        if (!tr[k]) continue;
        tr[k]->to_float(blocks, got, n);
        CHECK(memcmp(got, out, (size_t)n * 4) == 0, "%s to_float (%s) == ggml out.f32 bitwise",
              name, k ? "active" : "ref");
        if (!writable) continue;
        tr[k]->from_float(in, q, n);
        /* ggml's reference quantizers are deterministic: same bytes */
        CHECK(memcmp(q, blocks, nb) == 0, "%s from_float (%s) == ggml blocks", name,
              k ? "active" : "ref");
    }
    free(got);
    free(q);
done:
    free(blocks);
    free(in);
    free(out);
}

static void test_fixtures(void) {
    if (!test_shared()) {
        printf("skip: ../shared not found, block fixtures not checked\n");
        return;
    }
    check_fixture("f16", MF_TYPE_F16, true);
    check_fixture("bf16", MF_TYPE_BF16, true);
    check_fixture("q8_0", MF_TYPE_Q8_0, true);
    static const struct { const char *name; int type; } ro[] = {
        {"q4_0", MF_TYPE_Q4_0}, {"q4_1", MF_TYPE_Q4_1}, {"q5_0", MF_TYPE_Q5_0},
        {"q5_1", MF_TYPE_Q5_1}, {"q2_K", MF_TYPE_Q2_K}, {"q3_K", MF_TYPE_Q3_K},
        {"q4_K", MF_TYPE_Q4_K}, {"q5_K", MF_TYPE_Q5_K}, {"q6_K", MF_TYPE_Q6_K},
        {"iq4_nl", MF_TYPE_IQ4_NL}, {"iq4_xs", MF_TYPE_IQ4_XS},
    };
    for (size_t i = 0; i < sizeof ro / sizeof ro[0]; i++) check_fixture(ro[i].name, ro[i].type, false);
}

/* ---- f16 / bf16 special values ---- */

/* (f32 bits, expected half bits), derived by hand from IEEE 754 binary16:
 * max 65504 = 0x7bff, min normal 2^-14 = 0x0400, min subnormal 2^-24 = 1. */
static const uint32_t f16_cases[][2] = {
    {0x00000000, 0x0000}, {0x80000000, 0x8000},           /* +-0 */
    {0x3f800000, 0x3c00}, {0xc0000000, 0xc000},           /* 1, -2 */
    {0x477fe000, 0x7bff},                                 /* 65504 */
    {0x477fefff, 0x7bff},                                 /* just under 65520 */
    {0x477ff000, 0x7c00},                                 /* 65520: tie, 0x3ff odd -> inf */
    {0x501502f9, 0x7c00}, {0xff800000, 0xfc00},           /* 1e10, -inf */
    {0x33800000, 0x0001},                                 /* 2^-24 */
    {0x33000000, 0x0000},                                 /* 2^-25: tie -> even 0 */
    {0x33000001, 0x0001},                                 /* just above 2^-25 */
    {0x33c00000, 0x0002},                                 /* 3*2^-25: tie 1|2 -> 2 */
    {0x34200000, 0x0002},                                 /* 5*2^-25: tie 2|3 -> 2 */
    {0x34400000, 0x0003},                                 /* 3*2^-24: exact */
    {0x387fc000, 0x03ff},                                 /* 1023*2^-24, max subnormal */
    {0x387fe000, 0x0400},                                 /* 1023.5*2^-24: tie -> 0x400 */
    {0x38800000, 0x0400},                                 /* 2^-14 */
    {0x3f801000, 0x3c00},                                 /* 1+2^-11: tie -> even */
    {0x3f803000, 0x3c02},                                 /* 1+3*2^-11: tie -> even */
    {0x3f801001, 0x3c01},                                 /* above the tie */
    {0x00000001, 0x0000}, {0x80000001, 0x8000},           /* f32 subnormals */
    {0x7fc00000, 0x7e00}, {0xffc00000, 0xfe00},           /* quiet NaN */
    {0x7f800001, 0x7e00},                                 /* signalling NaN is quieted */
    {0x7fa00000, 0x7f00},                                 /* NaN payload top bits kept */
    {0x7f800000, 0x7c00},                                 /* inf */
};

static const uint32_t bf16_cases[][2] = {
    {0x00000000, 0x0000}, {0x80000000, 0x8000}, {0x3f800000, 0x3f80},
    {0x3f808000, 0x3f80},                       /* 1+2^-8: tie -> even */
    {0x3f818000, 0x3f82},                       /* 1+3*2^-8: tie -> even */
    {0x3f808001, 0x3f81},                       /* above the tie */
    {0x7f7f7fff, 0x7f7f}, {0x7f7f8000, 0x7f80}, /* below / at the tie to inf */
    {0x7f7fffff, 0x7f80},                       /* FLT_MAX rounds to inf */
    {0x00000001, 0x0000},                       /* tiny subnormal */
    {0x00008000, 0x0000}, {0x00018000, 0x0002}, /* subnormal ties -> even */
    {0x00008001, 0x0001},
    {0xff800000, 0xff80}, {0x7fc00000, 0x7fc0}, {0x7f800001, 0x7fc0}, /* -inf, NaNs */
};

static void test_special_values(void) {
    float f;
    for (size_t i = 0; i < sizeof f16_cases / sizeof f16_cases[0]; i++) {
        f = bitsf(f16_cases[i][0]);
        CHECK(mf_f32_to_f16(f) == f16_cases[i][1], "f16(0x%08x) = 0x%04x, want 0x%04x",
              f16_cases[i][0], mf_f32_to_f16(f), f16_cases[i][1]);
        uint16_t v[8];
        mf_traits(MF_TYPE_F16)->from_float((float[8]){f, f, f, f, f, f, f, f}, v, 8);
        CHECK(v[0] == f16_cases[i][1] && v[7] == f16_cases[i][1], "SIMD f16(0x%08x) = 0x%04x",
              f16_cases[i][0], v[0]);
    }
    for (size_t i = 0; i < sizeof bf16_cases / sizeof bf16_cases[0]; i++) {
        f = bitsf(bf16_cases[i][0]);
        CHECK(mf_f32_to_bf16(f) == bf16_cases[i][1], "bf16(0x%08x) = 0x%04x, want 0x%04x",
              bf16_cases[i][0], mf_f32_to_bf16(f), bf16_cases[i][1]);
        uint16_t v[8];
        mf_traits(MF_TYPE_BF16)->from_float((float[8]){f, f, f, f, f, f, f, f}, v, 8);
        CHECK(v[0] == bf16_cases[i][1] && v[7] == bf16_cases[i][1], "SIMD bf16(0x%08x) = 0x%04x",
              bf16_cases[i][0], v[0]);
    }
    CHECK(fbits(mf_f16_to_f32(0x0001)) == 0x33800000, "half 1 = 2^-24");
    CHECK(fbits(mf_f16_to_f32(0x03ff)) == 0x387fc000, "max subnormal");
    CHECK(fbits(mf_f16_to_f32(0x8000)) == 0x80000000, "-0");
    CHECK(mf_f16_to_f32(0x7bff) == 65504.0f, "max half");
    CHECK(fbits(mf_f16_to_f32(0xfc00)) == 0xff800000, "-inf");
    CHECK(fbits(mf_f16_to_f32(0x7e00)) == 0x7fc00000, "quiet NaN");
    CHECK(mf_f16_to_f32(0x3555) == 0.333251953125f, "0x3555");
    CHECK(fbits(mf_bf16_to_f32(0x3f81)) == 0x3f810000, "bf16 widen");
}

/* Every half converts to f32 and back to itself (quiet NaNs included), and
 * the SIMD conversions agree with the scalar ones on all of them. */
static void test_f16_exhaustive(void) {
    uint16_t *all = malloc(65536 * 2), *back = malloc(65536 * 2);
    float *ref = malloc(65536 * 4), *simd = malloc(65536 * 4);
    for (int i = 0; i < 65536; i++) all[i] = (uint16_t)i;
    int bad = 0, bad_simd = 0;
    const mf_type_traits *t16 = mf_traits(MF_TYPE_F16), *tb = mf_traits(MF_TYPE_BF16);
    for (int pass = 0; pass < 2; pass++) {
        const mf_type_traits *t = pass ? tb : t16;
        for (int i = 0; i < 65536; i++)
            ref[i] = pass ? mf_bf16_to_f32(all[i]) : mf_f16_to_f32(all[i]);
        t->to_float(all, simd, 65536);
        bad_simd += memcmp(ref, simd, 65536 * 4) != 0;
        t->from_float(ref, back, 65536);
        for (int i = 0; i < 65536; i++) {
            bool signalling = pass ? (i & 0x7f80) == 0x7f80 && (i & 0x7f) && !(i & 0x40)
                                   : (i & 0x7c00) == 0x7c00 && (i & 0x3ff) && !(i & 0x200);
            uint16_t want = signalling ? (uint16_t)(i | (pass ? 0x40 : 0x200)) : (uint16_t)i;
            uint16_t scalar = pass ? mf_f32_to_bf16(ref[i]) : mf_f32_to_f16(ref[i]);
            bad += scalar != want || back[i] != want;
        }
    }
    CHECK(bad == 0, "%d halves/bfloats do not round-trip", bad);
    CHECK(bad_simd == 0, "SIMD widening differs from scalar");
    /* narrowing of random floats over a wide exponent range: SIMD == scalar */
    float *x = malloc(65536 * 4);
    for (int i = 0; i < 65536; i++) x[i] = frand() * ldexpf(1.0f, (i % 48) - 30);
    int diff = 0;
    t16->from_float(x, back, 65536);
    for (int i = 0; i < 65536; i++) diff += back[i] != mf_f32_to_f16(x[i]);
    tb->from_float(x, back, 65536);
    for (int i = 0; i < 65536; i++) diff += back[i] != mf_f32_to_bf16(x[i]);
    CHECK(diff == 0, "%d SIMD narrowings differ from scalar", diff);
    free(all); free(back); free(ref); free(simd); free(x);
}

/* ---- q8_0 quantizer details ---- */

static void test_q8_0_rounding(void) {
    /* amax 127 makes d = 1 and id = 1: the quants are roundf of the inputs,
     * so ties must go away from zero (roundf), not to even. */
    float x[32] = {127, -3.5f, 2.5f, 0.5f, -0.5f, 1.5f, -126.5f, 0.49999997f};
    static const int8_t want[8] = {127, -4, 3, 1, -1, 2, -127, 0};
    uint8_t a[34], b[34];
    mf_traits_ref(MF_TYPE_Q8_0)->from_float(x, a, 32);
    mf_traits(MF_TYPE_Q8_0)->from_float(x, b, 32);
    CHECK(a[0] == 0x00 && a[1] == 0x3c, "d = 1.0 as f16 (0x3c00), got %02x%02x", a[1], a[0]);
    CHECK(memcmp(a + 2, want, 8) == 0, "roundf ties away from zero");
    CHECK(memcmp(a, b, 34) == 0, "SIMD q8_0 quantizer == reference");
    /* all zero: d = 0, id = 0, every quant 0; NaN/inf give the same bytes */
    float z[32] = {0};
    mf_traits_ref(MF_TYPE_Q8_0)->from_float(z, a, 32);
    CHECK(a[0] == 0 && a[1] == 0 && a[2] == 0 && a[33] == 0, "zero block");
    z[3] = NAN;
    z[9] = INFINITY;
    z[20] = -1.0f;
    mf_traits_ref(MF_TYPE_Q8_0)->from_float(z, a, 32);
    mf_traits(MF_TYPE_Q8_0)->from_float(z, b, 32);
    CHECK(memcmp(a, b, 34) == 0, "non-finite block: SIMD == reference");
    /* random rows of mixed magnitude */
    enum { N = 32 * 256 };
    float *r = malloc(N * 4);
    uint8_t *qa = malloc(N / 32 * 34), *qb = malloc(N / 32 * 34);
    for (int i = 0; i < N; i++) r[i] = frand() * ldexpf(1.0f, (i / 32) % 20 - 10);
    mf_traits_ref(MF_TYPE_Q8_0)->from_float(r, qa, N);
    mf_traits(MF_TYPE_Q8_0)->from_float(r, qb, N);
    CHECK(memcmp(qa, qb, N / 32 * 34) == 0, "SIMD q8_0 quantizer == reference (random)");
    free(r); free(qa); free(qb);
}

/* ---- dot products ---- */

static void check_dot(int type, int64_t n) {
    const mf_type_traits *ref = mf_traits_ref(type), *act = mf_traits(type);
    int vt = ref->vec_dot_type;
    float *x = malloc((size_t)n * 4), *y = malloc((size_t)n * 4);
    float *xd = malloc((size_t)n * 4), *yd = malloc((size_t)n * 4);
    uint8_t *xq = malloc(row_bytes(type, n)), *yq = malloc(row_bytes(vt, n));
    for (int64_t i = 0; i < n; i++) {
        x[i] = frand();
        y[i] = frand() * 3.0f;
    }
    ref->from_float(x, xq, n);
    mf_traits_ref(vt)->from_float(y, yq, n);
    ref->to_float(xq, xd, n);
    mf_traits_ref(vt)->to_float(yq, yd, n);
    double exact = 0, mag = 0;
    for (int64_t i = 0; i < n; i++) {
        exact += (double)xd[i] * yd[i];
        mag += fabs((double)xd[i] * yd[i]);
    }
    float sr = 0, sa = 0;
    ref->vec_dot(n, &sr, xq, yq);
    act->vec_dot(n, &sa, xq, yq);
    double tol = DOT_TOL * mag + 1e-30;
    CHECK(fabs(sr - exact) <= tol, "%s n=%lld ref dot %g vs %g", mf_type_name(type),
          (long long)n, sr, exact);
    CHECK(fabs(sa - exact) <= tol, "%s n=%lld SIMD dot %g vs %g", mf_type_name(type),
          (long long)n, sa, exact);
    CHECK(fabs(sa - sr) <= tol, "%s n=%lld SIMD vs ref", mf_type_name(type), (long long)n);
    /* f32, f16, q8_0: SIMD lanes are the reference's lanes (llama.cpp's order) */
    if (type != MF_TYPE_BF16)
        CHECK(memcmp(&sa, &sr, 4) == 0, "%s n=%lld SIMD %.9g != ref %.9g bitwise",
              mf_type_name(type), (long long)n, sa, sr);
    free(x); free(y); free(xd); free(yd); free(xq); free(yq);
}

/* vec_dot4 on four rows gives vec_dot's bits for each row. */
static void check_dot4(int type, int64_t n) {
    const mf_type_traits *t = mf_traits(type);
    if (!t->vec_dot4) return;
    uint64_t rb = row_bytes(type, n);
    float *x = malloc((size_t)n * 4 * 4), *y = malloc((size_t)n * 4);
    uint8_t *xq = malloc(rb * 4), *yq = malloc(row_bytes(t->vec_dot_type, n));
    for (int64_t i = 0; i < 4 * n; i++) x[i] = frand();
    for (int64_t i = 0; i < n; i++) y[i] = frand();
    t->from_float(x, xq, 4 * n);
    mf_traits(t->vec_dot_type)->from_float(y, yq, n);
    float s4[4], s1[4];
    t->vec_dot4(n, s4, xq, rb, yq);
    for (int k = 0; k < 4; k++) t->vec_dot(n, &s1[k], xq + rb * (uint64_t)k, yq);
    CHECK(memcmp(s4, s1, sizeof s4) == 0, "%s n=%lld vec_dot4 == vec_dot bitwise",
          mf_type_name(type), (long long)n);
    free(x); free(y); free(xq); free(yq);
}

static void test_dots(void) {
    static const int64_t blocked[] = {32, 64, 96, 256, 2048, 5632};
    static const int64_t odd[] = {1, 2, 3, 5, 7, 15, 16, 17, 31, 33, 100};
    static const int types[] = {MF_TYPE_F32, MF_TYPE_F16, MF_TYPE_BF16, MF_TYPE_Q8_0};
    for (size_t t = 0; t < 4; t++) {
        CHECK(mf_type_can_matmul(types[t]), "%s can matmul", mf_type_name(types[t]));
        for (size_t i = 0; i < sizeof blocked / sizeof blocked[0]; i++) {
            check_dot(types[t], blocked[i]);
            check_dot4(types[t], blocked[i]);
        }
        if (types[t] == MF_TYPE_Q8_0) continue;
        for (size_t i = 0; i < sizeof odd / sizeof odd[0]; i++) {
            check_dot(types[t], odd[i]);
            check_dot4(types[t], odd[i]);
        }
    }
    CHECK(mf_traits_ref(MF_TYPE_F16)->vec_dot_type == MF_TYPE_F16, "f16 meets f16");
    CHECK(mf_traits_ref(MF_TYPE_BF16)->vec_dot_type == MF_TYPE_BF16, "bf16 meets bf16");
    CHECK(mf_traits_ref(MF_TYPE_Q8_0)->vec_dot_type == MF_TYPE_Q8_0, "q8_0 meets q8_0");
    CHECK(mf_traits_ref(MF_TYPE_F32)->vec_dot_type == MF_TYPE_F32, "f32 meets f32");
    CHECK(mf_type_can_matmul(MF_TYPE_Q4_K) &&
              mf_traits_ref(MF_TYPE_Q4_K)->vec_dot_type == MF_TYPE_Q8_K,
          "q4_K meets q8_K");
    CHECK(!mf_traits(MF_TYPE_IQ2_XXS) && !mf_traits(-1) && !mf_traits(MF_TYPE_COUNT),
          "unknown types have no traits");
}

static void test_get_row(void) {
    float x[3 * 64], row[64];
    uint8_t q[3 * 68];
    for (int i = 0; i < 3 * 64; i++) x[i] = frand();
    mf_traits(MF_TYPE_Q8_0)->from_float(x, q, 3 * 64);
    mf_get_row(q, MF_TYPE_Q8_0, 64, 2, row);
    float want[64];
    mf_traits_ref(MF_TYPE_Q8_0)->to_float(q + 2 * 68, want, 64);
    CHECK(memcmp(row, want, sizeof row) == 0, "mf_get_row reads row 2");
}

/* The attention vector kernels in use (AVX2 where the CPU has it) equal
 * their scalar references bit for bit: dot16, fma and the 16-lane
 * reduction at lengths around the vector widths; scores of a run of rows
 * and the 16-lane value sums for 1..75 positions. */
static void test_vec_kernels(void) {
    uint32_t r = 12345;
    for (int64_t n = 1; n <= 136; n += (n < 20 ? 1 : 13)) {
        float a[16 * 136], b[136], y0[136], y1[136], o0[136], o1[136];
        for (int64_t i = 0; i < 16 * n; i++) r = r * 1664525u + 1013904223u, a[i] = (float)(int32_t)r / 1e9f;
        for (int64_t i = 0; i < n; i++) r = r * 1664525u + 1013904223u, b[i] = (float)(int32_t)r / 3e8f;
        float d0 = mf_vec_dot16_ref(n, a, b), d1 = mf_vec_dot16(n, a, b);
        CHECK(memcmp(&d0, &d1, 4) == 0, "dot16 n=%lld: %.9g vs ref %.9g", (long long)n, d1, d0);
        memcpy(y0, a + n, sizeof(float) * (size_t)n);
        memcpy(y1, a + n, sizeof(float) * (size_t)n);
        mf_vec_fma_ref(n, y0, b, 0.37f);
        mf_vec_fma(n, y1, b, 0.37f);
        CHECK(memcmp(y0, y1, sizeof(float) * (size_t)n) == 0, "fma n=%lld differs", (long long)n);
        mf_vec_reduce16_ref(n, a, o0);
        mf_vec_reduce16(n, a, o1);
        CHECK(memcmp(o0, o1, sizeof(float) * (size_t)n) == 0, "reduce16 n=%lld differs", (long long)n);
    }
    /* attention over a run of cached rows: scores and the 16-lane V sums */
    enum { NMAX = 72, POS = 75, STRIDE = 80 };
    static float rows[POS * STRIDE], q[NMAX], sc0[POS], sc1[POS], l0[16 * NMAX], l1[16 * NMAX];
    for (int i = 0; i < POS * STRIDE; i++) r = r * 1664525u + 1013904223u, rows[i] = (float)(int32_t)r / 2e9f;
    for (int i = 0; i < NMAX; i++) r = r * 1664525u + 1013904223u, q[i] = (float)(int32_t)r / 7e8f;
    static const int64_t ns[] = {16, 37, 64, 72};
    for (size_t k = 0; k < sizeof ns / sizeof *ns; k++)
        for (int64_t np = 1; np <= POS; np += (np < 20 ? 1 : 11)) {
            int64_t n = ns[k];
            for (int64_t j = 0; j < np; j++) sc0[j] = mf_vec_dot16_ref(n, q, rows + j * STRIDE);
            mf_vec_dot16_rows(n, q, rows, STRIDE, np, sc1);
            CHECK(memcmp(sc0, sc1, sizeof(float) * (size_t)np) == 0, "dot16_rows n=%lld rows=%lld differs",
                  (long long)n, (long long)np);
            mf_vec_fma_lanes16_ref(n, rows, STRIDE, sc0, np, l0);
            mf_vec_fma_lanes16(n, rows, STRIDE, sc0, np, l1);
            CHECK(memcmp(l0, l1, sizeof(float) * 16 * (size_t)n) == 0, "fma_lanes16 n=%lld positions=%lld differs",
                  (long long)n, (long long)np);
        }
}

int main(void) {
    test_vec_kernels();
    test_fixtures();
    test_special_values();
    test_f16_exhaustive();
    test_q8_0_rounding();
    test_dots();
    test_get_row();
    return test_report("tensor");
}
