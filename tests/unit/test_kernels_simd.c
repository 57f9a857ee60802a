/* test_kernels_simd.c — the active (SIMD) kernel table against the scalar
 * reference table, bit for bit, for every tensor type.
 *
 * Oracle: mf_traits_ref (the scalar kernels, the spec). Tolerance: none —
 * results are compared as bytes (floats by their bits), except the bf16 dot
 * on x86, whose AVX2 kernel sums in its own order by design (docs/kernels.md;
 * relative 1e-5 of sum |x*y| there). Inputs, fixed seeds: random block bytes
 * with finite f16/f32 scales (activation quants in [-127, 127], as every
 * quantizer guarantees; q8_K bsums consistent with their quants) and rows
 * quantized from random floats, at every multiple of the block up to four
 * blocks plus 2048 and 4352 (f32/f16/bf16 also 5, 7, 15, 17, 31, 33); every
 * vec_dot and each row of vec_dot4; to_float on random blocks; from_float
 * and act_from_float on random floats with awkward blocks (all zero, NaN,
 * inf, subnormal, huge, +-amax ties). Whatever table is active is checked:
 * AVX2/AVX-512 on x86, NEON on aarch64 (tests/cross/arm64.sh runs it under
 * qemu); with MF_FORCE_REF=1 it checks the reference against itself. */
#include "tensor/kernels.h"
#include "test.h"

#include <stdint.h>

static uint64_t rng = 0x2545f4914f6cdd1dull;
static uint32_t next(void) { return test_xorshift(&rng); }
static float frand(void) { return (float)(next() & 0xffffff) / 8388608.0f - 1.0f; }

/* A finite f16 (or bf16) of moderate size and random sign. */
static uint16_t rand_f16(void) {
    return (uint16_t)((next() & 0x8000) | ((6 + next() % 20) << 10) | (next() & 0x3ff));
}
static uint16_t rand_bf16(void) {
    return (uint16_t)((next() & 0x8000) | ((100 + next() % 50) << 7) | (next() & 0x7f));
}

static const int all_types[] = {MF_TYPE_F32,  MF_TYPE_F16,  MF_TYPE_BF16,  MF_TYPE_Q8_0, MF_TYPE_Q8_1,
                                MF_TYPE_Q4_0, MF_TYPE_Q4_1, MF_TYPE_Q5_0,  MF_TYPE_Q5_1, MF_TYPE_IQ4_NL,
                                MF_TYPE_Q8_K, MF_TYPE_Q2_K, MF_TYPE_Q3_K,  MF_TYPE_Q4_K, MF_TYPE_Q5_K,
                                MF_TYPE_Q6_K, MF_TYPE_IQ4_XS};
#define N_TYPES (int)(sizeof all_types / sizeof all_types[0])

/* Byte offsets of a block's f16 fields (-1 ends the list). */
static const int *f16_fields(int t) {
    static const int d0[] = {0, -1}, d02[] = {0, 2, -1}, q2k[] = {80, 82, -1}, q3k[] = {108, -1},
                     q6k[] = {208, -1}, none[] = {-1};
    switch (t) {
    case MF_TYPE_Q8_0: case MF_TYPE_Q4_0: case MF_TYPE_Q5_0: case MF_TYPE_IQ4_NL: case MF_TYPE_IQ4_XS:
        return d0;
    case MF_TYPE_Q8_1: case MF_TYPE_Q4_1: case MF_TYPE_Q5_1: case MF_TYPE_Q4_K: case MF_TYPE_Q5_K:
        return d02;
    case MF_TYPE_Q2_K: return q2k;
    case MF_TYPE_Q3_K: return q3k;
    case MF_TYPE_Q6_K: return q6k;
    default: return none;
    }
}

static void clamp_q8(uint8_t *q, int n) {
    for (int k = 0; k < n; k++)
        if (q[k] == 0x80) q[k] = 0x81;
}

/* Random bytes for nb blocks of type t, made valid as described above. */
static void rand_blocks(int t, uint8_t *p, int64_t nb) {
    const mf_type_layout *L = mf_type_layout_of(t);
    uint64_t bb = (uint64_t)L->bytes;
    for (uint64_t k = 0; k < bb * (uint64_t)nb; k++) p[k] = (uint8_t)next();
    for (int64_t b = 0; b < nb; b++, p += bb) {
        if (t == MF_TYPE_F32) {
            float v = frand();
            memcpy(p, &v, 4);
        } else if (t == MF_TYPE_F16 || t == MF_TYPE_BF16) {
            mf_wr16(p, t == MF_TYPE_F16 ? rand_f16() : rand_bf16());
        } else if (t == MF_TYPE_Q8_K) {
            float d = frand() * 1e-2f;
            memcpy(p, &d, 4);
            clamp_q8(p + 4, 256);
            for (int g = 0; g < 16; g++) {
                int s = 0;
                for (int k = 0; k < 16; k++) s += (int8_t)p[4 + 16 * g + k];
                mf_wr16(p + 260 + 2 * g, (uint16_t)(int16_t)s);
            }
        }
        if (t == MF_TYPE_Q8_0) clamp_q8(p + 2, 32);
        if (t == MF_TYPE_Q8_1) clamp_q8(p + 4, 32);
        for (const int *f = f16_fields(t); *f >= 0; f++) mf_wr16(p + *f, rand_f16());
    }
}

static bool same(float a, float b) { return memcmp(&a, &b, sizeof a) == 0; }

/* Sum of |x_i * y_i| (for the bf16 tolerance). */
static double abs_dot(int t, int64_t n, const uint8_t *x, const uint8_t *y) {
    float *a = malloc((size_t)n * sizeof *a), *b = malloc((size_t)n * sizeof *b);
    mf_traits_ref(t)->to_float(x, a, n);
    mf_traits_ref(t)->to_float(y, b, n);
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += fabs((double)a[i] * b[i]);
    free(a);
    free(b);
    return s;
}

static bool dot_ok(int t, int64_t n, const uint8_t *x, const uint8_t *y, float got, float want) {
#if !defined(__aarch64__)
    if (t == MF_TYPE_BF16) return fabs((double)got - want) <= 1e-5 * abs_dot(t, n, x, y) + 1e-30;
#else
    (void)abs_dot;
#endif
    (void)t, (void)n, (void)x, (void)y;
    return same(got, want);
}

static int64_t row_bytes(int t, int64_t n) {
    uint64_t b = 0;
    mf_type_row_bytes(t, (uint64_t)n, &b);
    return (int64_t)b;
}

static int block_of(int t) { return mf_type_layout_of(t)->block; }

/* Every multiple of the block up to four blocks, 2048, 4352 (and, for
 * one-element blocks, awkward lengths around the 16-lane width). */
static int lengths(int t, int64_t out[16]) {
    static const int64_t odd[] = {5, 7, 15, 16, 17, 31, 33};
    int bs = block_of(t), k = 0;
    for (int m = 1; m <= 4; m++) out[k++] = (int64_t)bs * m;
    if (bs == 1)
        for (int i = 0; i < 7; i++) out[k++] = odd[i];
    out[k++] = 2048;
    out[k++] = 4352;
    return k;
}

/* Four rows x (rb bytes apart) against y: vec_dot, and each row of vec_dot4,
 * against the reference's vec_dot. */
static void compare_dots(int t, int64_t n, const uint8_t *x, int64_t rb, const uint8_t *y,
                         const char *what) {
    const mf_type_traits *a = mf_traits(t), *r = mf_traits_ref(t);
    float s4[4] = {0};
    if (a->vec_dot4) a->vec_dot4(n, s4, x, (uint64_t)rb, y);
    for (int k = 0; k < 4; k++) {
        float want, got;
        r->vec_dot(n, &want, x + k * rb, y);
        a->vec_dot(n, &got, x + k * rb, y);
        CHECK(dot_ok(t, n, x + k * rb, y, got, want), "%s %s n=%lld row %d: %a, reference %a",
              mf_type_name(t), what, (long long)n, k, (double)got, (double)want);
        if (a->vec_dot4)
            CHECK(same(s4[k], want), "%s %s vec_dot4 n=%lld row %d: %a, reference %a", mf_type_name(t),
                  what, (long long)n, k, (double)s4[k], (double)want);
    }
}

static void test_dots(int t) {
    const mf_type_traits *r = mf_traits_ref(t);
    if (!r || !r->vec_dot) return;
    const mf_type_traits *rv = mf_traits_ref(r->vec_dot_type);
    mf_from_float_fn act = rv->act_from_float ? rv->act_from_float : rv->from_float;
    int64_t lens[16];
    int nl = lengths(t, lens);
    for (int i = 0; i < nl; i++) {
        int64_t n = lens[i], rb = row_bytes(t, n), yb = row_bytes(r->vec_dot_type, n);
        uint8_t *x = malloc((size_t)(4 * rb)), *y = malloc((size_t)yb);
        float *f = malloc((size_t)(5 * n) * sizeof *f);
        rand_blocks(t, x, 4 * n / block_of(t));
        rand_blocks(r->vec_dot_type, y, n / block_of(r->vec_dot_type));
        compare_dots(t, n, x, rb, y, "random blocks");
        for (int64_t k = 0; k < 5 * n; k++) f[k] = frand();
        for (int k = 0; k < 4; k++) r->from_float(f + k * n, x + k * rb, n);
        act(f + 4 * n, y, n);
        compare_dots(t, n, x, rb, y, "quantized rows");
        free(x);
        free(y);
        free(f);
    }
}

/* Random floats with awkward blocks among them (per block of bs, bs >= 32):
 * all zero, a NaN, an infinity, subnormals, huge values, +-amax both
 * present, exact halves after scaling (ties). */
static void awkward_floats(float *f, int64_t n, int bs) {
    for (int64_t i = 0; i < n; i++) f[i] = frand();
    int64_t nb = n / bs;
    for (int64_t b = 0; b < nb && b < 8; b++) {
        float *x = f + b * bs;
        for (int j = 0; j < bs; j++) {
            switch (b) {
            case 0: x[j] = 0.0f; break;
            case 3: x[j] *= 1e-40f; break;
            case 4: x[j] *= 1e30f; break;
            case 6: x[j] = (float)(j % 100) + 0.5f - 50.0f; break;
            default: break;
            }
        }
        if (b == 1) x[5] = NAN;
        if (b == 2) x[9] = -INFINITY;
        if (b == 5) x[3] = -1.5f, x[bs - 2] = 1.5f;
        if (b == 6) x[1] = 127.0f;
    }
}

/* Random bit patterns and IEEE edge values for the f16/bf16 conversions. */
static void edge_floats(float *f, int64_t n) {
    static const uint32_t bits[] = {0x7f800001u, 0x7fa00000u, 0xffc00123u, 0x7f800000u, 0xff800000u,
                                    0x477ff000u, 0x477fefffu, 0x33800000u, 0x33000000u, 0x33000001u,
                                    0x387fc000u, 0x38800000u, 0x80000001u, 0x00000000u, 0x80000000u,
                                    0x3f808000u, 0x3f818000u, 0x7f7fffffu, 0x3effffffu};
    for (int64_t i = 0; i < n; i++) {
        uint32_t u = i < 19 ? bits[i] : (i & 1) ? next() << 16 ^ next() : 0;
        if (i >= 19 && !(i & 1)) {
            float v = frand() * 70000.0f;
            memcpy(&u, &v, 4);
        }
        memcpy(&f[i], &u, 4);
    }
}

/* to_float, from_float and act_from_float where the active table has its
 * own: the same bytes as the reference. */
static void test_conversions(int t) {
    const mf_type_traits *a = mf_traits(t), *r = mf_traits_ref(t);
    int bs = block_of(t);
    int64_t n = bs == 1 ? 1037 : 8 * (int64_t)bs, rb = row_bytes(t, n);
    uint8_t *want = malloc((size_t)rb), *got = malloc((size_t)rb);
    float *f = malloc((size_t)n * sizeof *f), *fw = malloc((size_t)n * sizeof *f);
    if (a->to_float != r->to_float) {
        if (bs == 1)
            for (int64_t k = 0; k < rb; k++) want[k] = (uint8_t)next();
        else
            rand_blocks(t, want, n / bs);
        r->to_float(want, fw, n);
        a->to_float(want, f, n);
        CHECK(memcmp(f, fw, (size_t)n * sizeof *f) == 0, "%s to_float", mf_type_name(t));
    }
    if (bs == 1) edge_floats(f, n);
    else awkward_floats(f, n, bs);
    if (a->from_float != r->from_float) {
        r->from_float(f, want, n);
        a->from_float(f, got, n);
        CHECK(memcmp(got, want, (size_t)rb) == 0, "%s from_float", mf_type_name(t));
    }
    if (a->act_from_float != r->act_from_float && r->act_from_float) {
        r->act_from_float(f, want, n);
        a->act_from_float(f, got, n);
        CHECK(memcmp(got, want, (size_t)rb) == 0, "%s act_from_float", mf_type_name(t));
    }
    free(want);
    free(got);
    free(f);
    free(fw);
}

/* Names the entries the active table replaces (what this run checks). */
static void report_active(void) {
    printf("kernels_simd: active entries differing from the reference:");
    for (int i = 0; i < N_TYPES; i++) {
        const mf_type_traits *a = mf_traits(all_types[i]), *r = mf_traits_ref(all_types[i]);
        const char *parts[5] = {a->to_float != r->to_float ? "to" : "", a->from_float != r->from_float ? "from" : "",
                                a->act_from_float != r->act_from_float ? "act" : "",
                                a->vec_dot != r->vec_dot ? "dot" : "", a->vec_dot4 ? "dot4" : ""};
        char buf[64] = "";
        for (int k = 0; k < 5; k++)
            if (*parts[k]) snprintf(buf + strlen(buf), sizeof buf - strlen(buf), "%s%s", *buf ? "," : "", parts[k]);
        if (*buf) printf(" %s(%s)", mf_type_name(all_types[i]), buf);
    }
    printf("\n");
}

int main(void) {
    report_active();
    for (int i = 0; i < N_TYPES; i++) {
        CHECK(mf_traits(all_types[i]) && mf_traits_ref(all_types[i]), "type %d has traits", all_types[i]);
        if (!mf_traits(all_types[i]) || !mf_traits_ref(all_types[i])) continue;
        test_conversions(all_types[i]);
        test_dots(all_types[i]);
    }
    return test_report("kernels_simd");
}
