/* test_kernels_avx512.c — the AVX-512 VNNI kernels against the scalar
 * reference, bit for bit.
 *
 * For every type with an AVX-512 kernel: random block bytes (scales made
 * finite, q8_K bsums consistent with their qs, everything else any byte,
 * -128 activations included) and rows quantized from random floats, at
 * lengths from one block to 17152 (more than one pass of the four-row
 * kernels: 8192 elements for q4_0/iq4_nl, 16384 for q4_K); the one-row
 * kernel and each row of the four-row kernel must give exactly the
 * reference's float; so must the packed x16 kernels (q4_K, q5_K,
 * q6_K, q8_0, q4_0, iq4_nl) for every row and token count. The active table holds the AVX-512 kernels only on a
 * CPU with AVX-512 F/BW/VL/VNNI and without MF_FORCE_REF; otherwise the
 * test says so and checks nothing. */
#include "tensor/kernels.h"
#include "test.h"

#include <stdint.h>

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint32_t next(void) { return test_xorshift(&rng); }
static float frand(void) { return (float)(next() & 0xffffff) / 8388608.0f - 1.0f; }

/* A finite f16 of moderate size and random sign. */
static uint16_t rand_f16(void) {
    return (uint16_t)((next() & 0x8000) | ((6 + next() % 20) << 10) | (next() & 0x3ff));
}

static const int types[] = {MF_TYPE_Q4_0, MF_TYPE_IQ4_NL, MF_TYPE_Q4_K};

/* Make the float fields of n_blocks blocks of type t finite (and q8_K's bsums true). */
static void fix_blocks(int t, uint8_t *p, int64_t nb) {
    uint64_t bb = (uint64_t)mf_type_layout_of(t)->bytes;
    for (int64_t b = 0; b < nb; b++, p += bb) {
        if (t == MF_TYPE_Q8_K) {
            float d = frand() * 1e-2f;
            memcpy(p, &d, 4);
            for (int g = 0; g < 16; g++) {
                int16_t s = 0;
                for (int k = 0; k < 16; k++) s = (int16_t)(s + (int8_t)p[4 + 16 * g + k]);
                memcpy(p + 260 + 2 * g, &s, 2);
            }
            continue;
        }
        mf_wr16(p + (t == MF_TYPE_Q6_K ? 208 : 0), rand_f16()); /* q6_K's d is last */
        if (t == MF_TYPE_Q4_K || t == MF_TYPE_Q5_K) mf_wr16(p + 2, rand_f16());
    }
}

static bool same(float a, float b) { return memcmp(&a, &b, sizeof a) == 0; }

/* Four rows x (stride rb) against y: one-row and four-row kernels vs the reference. */
static void compare(int t, int64_t n, const uint8_t *x, uint64_t rb, const uint8_t *y, const char *what) {
    const mf_type_traits *a = mf_traits(t), *r = mf_traits_ref(t);
    float s4[4] = {0};
    if (a->vec_dot4) a->vec_dot4(n, s4, x, rb, y);
    for (int k = 0; k < 4; k++) {
        float want, got;
        r->vec_dot(n, &want, x + k * rb, y);
        a->vec_dot(n, &got, x + k * rb, y);
        CHECK(same(want, got), "%s %s n=%lld row %d: %.9g vs ref %.9g", mf_type_name(t), what,
              (long long)n, k, got, want);
        if (a->vec_dot4)
            CHECK(same(want, s4[k]), "%s %s n=%lld dot4 row %d: %.9g vs ref %.9g",
                  mf_type_name(t), what, (long long)n, k, s4[k], want);
    }
}

static void test_type(int t, int64_t n) {
    int vt = mf_traits(t)->vec_dot_type;
    uint64_t rb, yb;
    if (!mf_type_row_bytes(t, (uint64_t)n, &rb) || !mf_type_row_bytes(vt, (uint64_t)n, &yb)) {
        CHECK(0, "row bytes of %s", mf_type_name(t));
        return;
    }
    /* exact-size buffers, so ASan sees any read past the rows */
    uint8_t *x = malloc(4 * rb), *y = malloc(yb);
    float *f = malloc(sizeof(float) * 4 * (size_t)n);
    for (int rep = 0; rep < 3; rep++) {
        for (uint64_t i = 0; i < 4 * rb; i++) x[i] = (uint8_t)next();
        for (uint64_t i = 0; i < yb; i++) y[i] = (uint8_t)next();
        fix_blocks(t, x, 4 * n / mf_type_layout_of(t)->block);
        fix_blocks(vt, y, n / mf_type_layout_of(vt)->block);
        compare(t, n, x, rb, y, "random bytes");
    }
    for (int64_t i = 0; i < 4 * n; i++) f[i] = frand() * (i % 29 == 0 ? 4.0f : 1.0f);
    mf_quantize_rows(t, f, x, 4, n, NULL);
    const mf_type_traits *v = mf_traits(vt);
    (v->act_from_float ? v->act_from_float : v->from_float)(f + n, y, n);
    compare(t, n, x, rb, y, "quantized");
    free(x);
    free(y);
    free(f);
}

/* The packed layouts (pack.c): 16 rows of random blocks (with runs of the
 * extreme bytes: q4_K nibbles 15, q8_0 weights -128 and 127, activations
 * -128) and n_tok activation rows; gemm_packed on each count of tokens
 * 1..9 must give exactly the reference's float for every row and token,
 * and unpacking must give the rows back. */
static void test_packed(int t, int64_t n, int n_tok) {
    const mf_type_traits *a = mf_traits(t), *r = mf_traits_ref(t);
    int vt = a->vec_dot_type, pr = a->pack_rows, blk = mf_type_layout_of(t)->block;
    uint64_t rb, yb, bb = (uint64_t)mf_type_layout_of(t)->bytes, vbb = (uint64_t)mf_type_layout_of(vt)->bytes;
    CHECK(pr > 0 && a->gemm_packed && a->pack, "%s: no packed kernel", mf_type_name(t));
    if (!(pr > 0 && a->gemm_packed && a->pack)) return;
    void (*unpack)(const void *, void *, uint64_t, int64_t) =
        t == MF_TYPE_Q4_K ? mf_unpack_q4_k_x16 : t == MF_TYPE_Q5_K ? mf_unpack_q5_k_x16
        : t == MF_TYPE_Q6_K ? mf_unpack_q6_k_x16
        : t == MF_TYPE_Q8_0 ? mf_unpack_q8_0_x16 : mf_unpack_q4_0_x16;
    mf_type_row_bytes(t, (uint64_t)n, &rb);
    mf_type_row_bytes(vt, (uint64_t)n, &yb);
    uint8_t *x = malloc(pr * rb), *xp = malloc(pr * rb), *xu = malloc(pr * rb), *y = malloc(n_tok * yb);
    float *out = malloc(sizeof(float) * (size_t)(n_tok * pr));
    for (uint64_t i = 0; i < pr * rb; i++) x[i] = (uint8_t)next();
    for (uint64_t i = 0; i < n_tok * yb; i++) y[i] = (uint8_t)next();
    int64_t nb = n / blk;
    for (int k = 0; k < 16; k++) {
        uint8_t *blkp = x + rb * (next() % (uint64_t)pr) + bb * (next() % (uint64_t)nb);
        if (t == MF_TYPE_Q4_K) memset(blkp + 16, 0xff, 128);
        else if (t == MF_TYPE_Q6_K) memset(blkp, 0xff, 192), memset(blkp + 192, k & 1 ? 0x80 : 0x7f, 16);
        else if (t == MF_TYPE_Q5_K) memset(blkp + 4, 0xff, 172);
        else if (t == MF_TYPE_Q8_0) memset(blkp + 2, k & 1 ? 0x80 : 0x7f, 32);
        else memset(blkp + 2, k & 1 ? 0x00 : 0xff, 16);
        memset(y + yb * (next() % (uint64_t)n_tok) + vbb * (next() % (uint64_t)(n / mf_type_layout_of(vt)->block)) +
                   (vt == MF_TYPE_Q8_K ? 4 : 2),
               0x80, vt == MF_TYPE_Q8_K ? 256 : 32);
    }
    fix_blocks(t, x, pr * nb);
    fix_blocks(vt, y, n_tok * n / mf_type_layout_of(vt)->block);
    a->pack(x, rb, xp, n);
    unpack(xp, xu, rb, n);
    CHECK(memcmp(x, xu, pr * rb) == 0, "%s n=%lld: unpack(pack(rows)) differs", mf_type_name(t), (long long)n);
    for (int nt = 1; nt <= n_tok; nt++) {
        a->gemm_packed(n, nt, out, pr, xp, y, yb);
        for (int tk = 0; tk < nt; tk++)
            for (int row = 0; row < pr; row++) {
                float want;
                r->vec_dot(n, &want, x + row * rb, y + tk * yb);
                CHECK(same(want, out[tk * pr + row]), "%s packed n=%lld tokens %d: token %d row %d: %.9g vs ref %.9g",
                      mf_type_name(t), (long long)n, nt, tk, row, out[tk * pr + row], want);
            }
    }
    free(x), free(xp), free(xu), free(y), free(out);
}

/* The q8_K activation conversion against mf_ref_q8_k_from_float, byte for
 * byte: random rows, rows whose largest |x| appears with both signs, exact
 * halves (ties), subnormals, zeros, a NaN, an infinity. */
static void test_q8_k_convert(void) {
    const mf_type_traits *a = mf_traits(MF_TYPE_Q8_K);
    mf_from_float_fn conv = a->act_from_float ? a->act_from_float : a->from_float;
    enum { N = 1024 };
    float x[N];
    uint8_t want[4 * MF_Q8_K_BYTES], got[4 * MF_Q8_K_BYTES];
    for (int rep = 0; rep < 40; rep++) {
        for (int i = 0; i < N; i++) x[i] = frand() * (rep % 3 == 0 ? 1e-3f : 7.0f);
        if (rep % 4 == 1) x[next() % 256] = -8.0f, x[next() % 256] = 8.0f;      /* ±max, first wins */
        if (rep % 5 == 2) for (int i = 256; i < 512; i++) x[i] = (float)(int)(next() % 255) - 127.0f + 0.5f;
        if (rep % 6 == 3) for (int i = 512; i < 768; i++) x[i] = 0.0f;
        if (rep % 7 == 4) x[768 + next() % 256] = NAN;
        if (rep % 8 == 5) x[next() % 256] = -INFINITY;
        if (rep % 9 == 6) for (int i = 0; i < 256; i++) x[i] = frand() * 1e-40f;
        mf_ref_q8_k_from_float(x, want, N);
        conv(x, got, N);
        CHECK(memcmp(want, got, sizeof want) == 0, "q8_K conversion rep %d differs from the reference", rep);
    }
}

/* Whether types.c installed the AVX-512 kernels (its own condition). */
static bool avx512_active(void) {
    const char *force = getenv("MF_FORCE_REF");
    if (force && force[0] && strcmp(force, "0") != 0) return false;
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
           __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni");
#else
    return false;
#endif
}

int main(void) {
    if (!avx512_active()) {
        printf("kernels_avx512: no AVX-512 VNNI kernels in use (CPU or MF_FORCE_REF); skipped\n");
        return test_report("kernels_avx512");
    }
    static const int64_t len32[] = {32, 64, 96, 128, 160, 224, 256, 512, 2048, 4352, 17152};
    static const int64_t len256[] = {256, 512, 768, 2048, 4352, 17152};
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        int t = types[i];
        bool k = mf_type_layout_of(t)->block == 256;
        const int64_t *len = k ? len256 : len32;
        size_t nl = k ? sizeof len256 / sizeof len256[0] : sizeof len32 / sizeof len32[0];
        for (size_t j = 0; j < nl; j++) test_type(t, len[j]);
    }
    test_q8_k_convert();
    for (size_t j = 0; j < sizeof len256 / sizeof len256[0]; j++) {
        test_packed(MF_TYPE_Q4_K, len256[j], 9);
        test_packed(MF_TYPE_Q5_K, len256[j], 9);
        test_packed(MF_TYPE_Q6_K, len256[j], 9);
    }
    for (size_t j = 0; j < sizeof len32 / sizeof len32[0]; j++) {
        test_packed(MF_TYPE_Q8_0, len32[j], 9);
        test_packed(MF_TYPE_Q4_0, len32[j], 9);
        test_packed(MF_TYPE_IQ4_NL, len32[j], 9);
    }
    return test_report("kernels_avx512");
}
