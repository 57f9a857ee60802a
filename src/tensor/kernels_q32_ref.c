/* kernels_q32_ref.c — scalar reference kernels of the 32-element block
 * formats q4_0, q4_1, q5_0, q5_1 and iq4_nl: their weight quantizers (with
 * and without an importance matrix), the q8_1 activation type that q4_1 and
 * q5_1 pair with, and the dot products of each against its activations.
 *
 * These are the spec the AVX2 kernels (kernels_q32_avx2.c) are tested
 * against bit for bit. Without an importance matrix the quantizers write the
 * bytes ggml's reference quantizers write (quantize_row_q4_0_ref etc., and
 * quantize_iq4_nl's scale search). The dots sum in the order of the
 * llama.cpp x86 kernels that made ../shared/reference (docs/kernels.md):
 * q4_0 and iq4_nl as its repacked 8-row GEMM (one FMA per block of the exact
 * block sum), q5_0 as tinyBLAS (8 lanes), q4_1 and q5_1 as
 * ggml_vec_dot_qN_1_q8_1 (8 lanes plus a scalar sum of m*s). Dequantization
 * lives in kernels_quant_ref.c. */
#include "tensor/kernels.h"

#include <float.h>
#include <math.h>

#define QK 32

/* The levels plus 128 (unsigned), for the vpdpbusd kernels. */
const uint8_t mf_iq4nl_levels_u[16] = {1, 24, 45, 63, 79, 93, 106, 118, 129, 141, 153, 166, 181, 197, 217, 241};

/* ggml's kvalues_iq4nl: the 16 non-uniform levels of iq4_nl. */
static const int8_t iq4nl_levels[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                        1,    13,   25,  38,  53,  69,  89,  113};

/* ---- unpacking: a block's 32 quants as small ints, element order ---- */

static void nibbles(const uint8_t *qs, int q[QK]) {
    for (int j = 0; j < 16; j++) {
        q[j] = qs[j] & 0xf;
        q[j + 16] = qs[j] >> 4;
    }
}

static void fifth_bits(const uint8_t *qh4, int q[QK]) {
    uint32_t qh = mf_rd32(qh4);
    for (int j = 0; j < QK; j++) q[j] |= (int)((qh >> j) & 1) << 4;
}

static void unpack_q4_0(const uint8_t *b, int q[QK]) {
    nibbles(b + 2, q);
    for (int j = 0; j < QK; j++) q[j] -= 8;
}
static void unpack_q4_1(const uint8_t *b, int q[QK]) { nibbles(b + 4, q); }
static void unpack_q5_0(const uint8_t *b, int q[QK]) {
    nibbles(b + 6, q);
    fifth_bits(b + 2, q);
    for (int j = 0; j < QK; j++) q[j] -= 16;
}
static void unpack_q5_1(const uint8_t *b, int q[QK]) {
    nibbles(b + 8, q);
    fifth_bits(b + 4, q);
}
static void unpack_iq4_nl(const uint8_t *b, int q[QK]) {
    nibbles(b + 2, q);
    for (int j = 0; j < QK; j++) q[j] = iq4nl_levels[q[j]];
}

static void pack_nibbles(const uint8_t L[QK], uint8_t *qs) {
    for (int j = 0; j < 16; j++) qs[j] = (uint8_t)((L[j] & 0xf) | ((L[j + 16] & 0xf) << 4));
}

/* 5-bit quants: low nibbles as q4, bit 4 of element j is bit j of qh. */
static void pack_q5(const uint8_t L[QK], uint8_t *qh4, uint8_t *qs) {
    uint32_t qh = 0;
    for (int j = 0; j < QK; j++) qh |= (uint32_t)((L[j] >> 4) & 1) << j;
    memcpy(qh4, &qh, 4);
    pack_nibbles(L, qs);
}

/* ---- q8_1 {f16 d; f16 s; i8 qs[32]}, s = d * sum(qs) ---- */

void mf_ref_q8_1_to_float(const void *src, float *dst, int64_t n) {
    const uint8_t *p = src;
    for (int64_t b = 0; b < n / QK; b++, p += MF_Q8_1_BYTES) {
        float d = mf_f16_to_f32(mf_rd16(p));
        const int8_t *qs = (const int8_t *)(p + 4);
        for (int j = 0; j < QK; j++) dst[b * QK + j] = (float)qs[j] * d;
    }
}

static float block_amax(const float *x) {
    float amax = 0.0f;
    for (int j = 0; j < QK; j++) amax = fmaxf(amax, fabsf(x[j]));
    return amax;
}

/* v rounded by rnd, clamped to [-127, 127]; NaN (a non-finite input) -> 0. */
static int8_t q8_clamp(float v) {
    if (v != v) return 0;
    return (int8_t)fminf(fmaxf(v, -127.0f), 127.0f);
}

/* ggml's quantize_row_q8_1_ref: id = 1/d, roundf; s = f16((float)sum * d). */
void mf_ref_q8_1_from_float(const float *src, void *dst, int64_t n) {
    uint8_t *p = dst;
    for (int64_t b = 0; b < n / QK; b++, p += MF_Q8_1_BYTES) {
        const float *x = src + b * QK;
        float d = block_amax(x) / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
        int8_t *qs = (int8_t *)(p + 4);
        int sum = 0;
        for (int j = 0; j < QK; j++) sum += qs[j] = q8_clamp(roundf(x[j] * id));
        mf_wr16(p, mf_f32_to_f16(d));
        mf_wr16(p + 2, mf_f32_to_f16((float)sum * d));
    }
}

/* llama.cpp's x86 quantize_row_q8_1 (the one that made the references):
 * id = 127/amax, ties to even, s = f16(d * (float)sum) with the unrounded
 * f32 d = amax/127. */
void mf_ref_q8_1_act_from_float(const float *src, void *dst, int64_t n) {
    uint8_t *p = dst;
    for (int64_t b = 0; b < n / QK; b++, p += MF_Q8_1_BYTES) {
        const float *x = src + b * QK;
        float amax = block_amax(x), d = amax / 127.0f;
        float id = amax != 0.0f ? 127.0f / amax : 0.0f;
        int8_t *qs = (int8_t *)(p + 4);
        int sum = 0;
        for (int j = 0; j < QK; j++) sum += qs[j] = q8_clamp(nearbyintf(x[j] * id));
        mf_wr16(p, mf_f32_to_f16(d));
        mf_wr16(p + 2, mf_f32_to_f16(d * (float)sum));
    }
}

/* ---- dot products ---- */

typedef void (*unpack_fn)(const uint8_t *blk, int q[QK]);

static float tree8(const float v[8]) {
    float s4[4];
    for (int l = 0; l < 4; l++) s4[l] = v[l] + v[l + 4];
    return (s4[0] + s4[2]) + (s4[1] + s4[3]);
}

/* Exact integer sum of products 4l..4l+3 (what maddubs+madd or dpbusd leave
 * in 32-bit lane l); |q| <= 127 keeps every pair inside int16. */
static int32_t lane_isum(const int q[QK], const int8_t *y, int l) {
    int32_t s = 0;
    for (int j = 4 * l; j < 4 * l + 4; j++) s += q[j] * y[j];
    return s;
}

/* llama.cpp's repacked GEMM/GEMV (gemm_q4_b32_8x8_q8_0_lut_avx): one chain
 * per output, acc = fma((float)block_sum, d_w*d_y, acc), block after block. */
static float dot_chain(int64_t n, const uint8_t *x, int xbytes, unpack_fn unpack,
                       const uint8_t *y) {
    float acc = 0.0f;
    int q[QK];
    for (int64_t b = 0; b < n / QK; b++, x += xbytes, y += MF_Q8_0_BYTES) {
        unpack(x, q);
        int32_t isum = 0;
        for (int l = 0; l < 8; l++) isum += lane_isum(q, (const int8_t *)(y + 2), l);
        float d = mf_f16_to_f32(mf_rd16(x)) * mf_f16_to_f32(mf_rd16(y));
        acc = fmaf((float)isum, d, acc);
    }
    return acc;
}

/* tinyBLAS_Q0_AVX and ggml_vec_dot_q5_0_q8_0: 8 lanes, lane l +=
 * fma(d_w*d_y, lane sum l) per block, then the tree. */
static float dot_lanes(int64_t n, const uint8_t *x, int xbytes, unpack_fn unpack,
                       const uint8_t *y) {
    float lanes[8] = {0};
    int q[QK];
    for (int64_t b = 0; b < n / QK; b++, x += xbytes, y += MF_Q8_0_BYTES) {
        unpack(x, q);
        float d = mf_f16_to_f32(mf_rd16(x)) * mf_f16_to_f32(mf_rd16(y));
        for (int l = 0; l < 8; l++)
            lanes[l] = fmaf(d, (float)lane_isum(q, (const int8_t *)(y + 2), l), lanes[l]);
    }
    return tree8(lanes);
}

/* ggml_vec_dot_q4_1_q8_1 / q5_1 on x86: the lanes as above on the unsigned
 * quants, plus summs += m*s, one fma per block (GCC contracts it: ggml is
 * built as gnu11), added after the tree: x = q*d + m, so sum x*y =
 * d*dy*sum(q*qy) + m*(dy*sum qy) and s carries dy*sum(qy). */
static float dot_lanes_q8_1(int64_t n, const uint8_t *x, int xbytes, unpack_fn unpack,
                            const uint8_t *y) {
    float lanes[8] = {0}, summs = 0.0f;
    int q[QK];
    for (int64_t b = 0; b < n / QK; b++, x += xbytes, y += MF_Q8_1_BYTES) {
        unpack(x, q);
        summs = fmaf(mf_f16_to_f32(mf_rd16(x + 2)), mf_f16_to_f32(mf_rd16(y + 2)), summs);
        float d = mf_f16_to_f32(mf_rd16(x)) * mf_f16_to_f32(mf_rd16(y));
        for (int l = 0; l < 8; l++)
            lanes[l] = fmaf(d, (float)lane_isum(q, (const int8_t *)(y + 4), l), lanes[l]);
    }
    return tree8(lanes) + summs;
}

void mf_ref_dot_q4_0(int64_t n, float *s, const void *x, const void *y) {
    *s = dot_chain(n, x, MF_Q4_0_BYTES, unpack_q4_0, y);
}
void mf_ref_dot_iq4_nl(int64_t n, float *s, const void *x, const void *y) {
    *s = dot_chain(n, x, MF_IQ4_NL_BYTES, unpack_iq4_nl, y);
}
void mf_ref_dot_q5_0(int64_t n, float *s, const void *x, const void *y) {
    *s = dot_lanes(n, x, MF_Q5_0_BYTES, unpack_q5_0, y);
}
void mf_ref_dot_q4_1(int64_t n, float *s, const void *x, const void *y) {
    *s = dot_lanes_q8_1(n, x, MF_Q4_1_BYTES, unpack_q4_1, y);
}
void mf_ref_dot_q5_1(int64_t n, float *s, const void *x, const void *y) {
    *s = dot_lanes_q8_1(n, x, MF_Q5_1_BYTES, unpack_q5_1, y);
}

/* ---- weight quantizers: ggml's reference rules ---- */

/* (int8_t)v clamped to [0, hi], as ggml's MIN(hi, (int8_t)(v)) on the
 * values that rule sees (v >= 0); NaN and negatives give 0 instead of the
 * undefined conversion. */
static uint8_t trunc_to(float v, int hi) {
    if (!(v >= 0.0f)) return 0;
    return v >= (float)hi ? (uint8_t)hi : (uint8_t)(int)v;
}

/* The value of largest magnitude, with its sign (first one wins ties). */
static float signed_max(const float *x) {
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < QK; j++) {
        if (amax < fabsf(x[j])) {
            amax = fabsf(x[j]);
            max = x[j];
        }
    }
    return max;
}

/* q4_0 / q5_0: d = max/-2^(bits-1), so the largest magnitude maps to the
 * lowest level; q = trunc(x/d + half + 0.5), clamped to the top level. */
static void sym_block(const float *x, int half, uint16_t *dh, uint8_t L[QK]) {
    float d = signed_max(x) / (float)-half;
    float id = d != 0.0f ? 1.0f / d : 0.0f;
    *dh = mf_f32_to_f16(d);
    for (int j = 0; j < QK; j++) L[j] = trunc_to(x[j] * id + ((float)half + 0.5f), 2 * half - 1);
}

/* q4_1 / q5_1: d = (max - min)/nmax, m = min, q = trunc((x - min)/d + 0.5). */
static void asym_block(const float *x, int nmax, uint16_t *dh, uint16_t *mh, uint8_t L[QK]) {
    float min = FLT_MAX, max = -FLT_MAX;
    for (int j = 0; j < QK; j++) {
        if (x[j] < min) min = x[j];
        if (x[j] > max) max = x[j];
    }
    float d = (max - min) / (float)nmax, id = d != 0.0f ? 1.0f / d : 0.0f;
    *dh = mf_f32_to_f16(d);
    *mh = mf_f32_to_f16(min);
    for (int j = 0; j < QK; j++) L[j] = trunc_to((x[j] - min) * id + 0.5f, nmax);
}

void mf_ref_q4_0_from_float(const float *src, void *dst, int64_t n) {
    uint8_t *p = dst, L[QK];
    uint16_t dh;
    for (int64_t b = 0; b < n / QK; b++, p += MF_Q4_0_BYTES) {
        sym_block(src + b * QK, 8, &dh, L);
        mf_wr16(p, dh);
        pack_nibbles(L, p + 2);
    }
}

void mf_ref_q5_0_from_float(const float *src, void *dst, int64_t n) {
    uint8_t *p = dst, L[QK];
    uint16_t dh;
    for (int64_t b = 0; b < n / QK; b++, p += MF_Q5_0_BYTES) {
        sym_block(src + b * QK, 16, &dh, L);
        mf_wr16(p, dh);
        pack_q5(L, p + 2, p + 6);
    }
}

void mf_ref_q4_1_from_float(const float *src, void *dst, int64_t n) {
    uint8_t *p = dst, L[QK];
    uint16_t dh, mh;
    for (int64_t b = 0; b < n / QK; b++, p += MF_Q4_1_BYTES) {
        asym_block(src + b * QK, 15, &dh, &mh, L);
        mf_wr16(p, dh);
        mf_wr16(p + 2, mh);
        pack_nibbles(L, p + 4);
    }
}

void mf_ref_q5_1_from_float(const float *src, void *dst, int64_t n) {
    uint8_t *p = dst, L[QK];
    uint16_t dh, mh;
    for (int64_t b = 0; b < n / QK; b++, p += MF_Q5_1_BYTES) {
        asym_block(src + b * QK, 31, &dh, &mh, L);
        mf_wr16(p, dh);
        mf_wr16(p + 2, mh);
        pack_q5(L, p + 4, p + 8);
    }
}

/* ggml's best_index_int8: the nearest level (ties to the upper one). */
static int nearest_level(const int8_t *lev, int n, float v) {
    if (v <= lev[0]) return 0;
    if (v >= lev[n - 1]) return n - 1;
    int lo = 0, hi = n - 1;
    while (hi - lo > 1) {
        int mid = (lo + hi) / 2;
        if (v < lev[mid]) hi = mid;
        else lo = mid;
    }
    return v - lev[hi - 1] < lev[hi] - v ? hi - 1 : hi;
}

/* Sums of the least-squares fit of x onto the levels that inverse scale id
 * picks, weights w: sumqx = sum w*q*x, sumq2 = sum w*q*q (d = sumqx/sumq2).
 * Fused multiply-adds because GCC contracts ggml's `sumqx += w*q*x` so. */
typedef struct fit { float sumqx, sumq2; } fit;

static fit iq4_fit(const float *x, const float *w, float id) {
    fit f = {0.0f, 0.0f};
    for (int j = 0; j < QK; j++) {
        float q = iq4nl_levels[nearest_level(iq4nl_levels, 16, id * x[j])], wq = w[j] * q;
        f.sumqx = fmaf(wq, x[j], f.sumqx);
        f.sumq2 = fmaf(wq, q, f.sumq2);
    }
    return f;
}

/* quantize_iq4_nl's block search (7 tries either side): start at
 * d = max/127 and refit, then try inverse scales (t - 127)/max and keep the
 * fit with the largest sumqx^2/sumq2, i.e. the smallest weighted error;
 * the levels are then picked again with the chosen (unrounded) d. */
static void iq4_nl_block(const float *x, const float *w, uint16_t *dh, uint8_t L[QK]) {
    float max = signed_max(x);
    memset(L, 0, QK);
    *dh = 0;
    if (!(fabsf(max) >= 1e-15f)) return; /* GROUP_MAX_EPS; NaN lands here too */
    fit f = iq4_fit(x, w, 1.0f / (max / 127.0f));
    float d = f.sumq2 > 0.0f ? f.sumqx / f.sumq2 : 0.0f, best = d * f.sumqx;
    for (int t = -7; t <= 7; t++) {
        f = iq4_fit(x, w, (float)(t - 127) / max);
        if (f.sumq2 > 0.0f && f.sumqx * f.sumqx > best * f.sumq2) {
            d = f.sumqx / f.sumq2;
            best = d * f.sumqx;
        }
    }
    *dh = mf_f32_to_f16(d);
    float id = d != 0.0f ? 1.0f / d : 0.0f;
    for (int j = 0; j < QK; j++) L[j] = (uint8_t)nearest_level(iq4nl_levels, 16, id * x[j]);
}

void mf_ref_iq4_nl_from_float(const float *src, void *dst, int64_t n) {
    uint8_t *p = dst, L[QK];
    float w[QK];
    uint16_t dh;
    for (int64_t b = 0; b < n / QK; b++, p += MF_IQ4_NL_BYTES) {
        const float *x = src + b * QK;
        for (int j = 0; j < QK; j++) w[j] = x[j] * x[j];
        iq4_nl_block(x, w, &dh, L);
        mf_wr16(p, dh);
        pack_nibbles(L, p + 2);
    }
}

/* ---- with an importance matrix: memfit's weighted search ----
 * The error minimised is exactly sum_j imatrix[j] * (x_j - xhat_j)^2 over
 * the block, where xhat is what dequantization gives (f16 scales included).
 * Candidates: the inverse scale that sends the largest |x| to one end of the
 * grid, moved in quarter-level steps over +-6 steps at both ends (q4_0, q5_0,
 * iq4_nl), or the range mapped to nmax +-6 quarter steps (q4_1, q5_1); for
 * each, the levels picked, the weighted least-squares scale (and min) refit,
 * rounded to f16 and the levels picked again. The reference rule's own
 * block is a candidate too, so the result is never worse than it. */

#define SEARCH_STEPS 6

typedef struct grid { const int8_t *lev; int n; } grid;

static const int8_t q4_levels[16] = {-8, -7, -6, -5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 5, 6, 7};
static const int8_t q5_levels[32] = {-16, -15, -14, -13, -12, -11, -10, -9, -8, -7, -6,
                                     -5,  -4,  -3,  -2,  -1,  0,   1,   2,  3,  4,  5,
                                     6,   7,   8,   9,   10,  11,  12,  13, 14, 15};

/* Levels for inverse scale id, refit d, round it to f16, pick again; the
 * weighted error of the result (INFINITY if the fit degenerates). */
static double sym_try(const float *x, const float *w, const grid *g, float id, uint8_t L[QK],
                      uint16_t *dh) {
    double sqx = 0, sq2 = 0;
    for (int j = 0; j < QK; j++) {
        double q = g->lev[nearest_level(g->lev, g->n, id * x[j])];
        sqx += w[j] * q * x[j];
        sq2 += w[j] * q * q;
    }
    if (!(sq2 > 0)) return INFINITY;
    *dh = mf_f32_to_f16((float)(sqx / sq2));
    float d = mf_f16_to_f32(*dh), idr = d != 0.0f ? 1.0f / d : 0.0f;
    double err = 0;
    for (int j = 0; j < QK; j++) {
        L[j] = (uint8_t)nearest_level(g->lev, g->n, idr * x[j]);
        double e = x[j] - (double)g->lev[L[j]] * d;
        err += w[j] * e * e;
    }
    return err == err ? err : INFINITY;
}

/* Best of the candidates into *dh and L (indices into the grid); false if
 * none was usable (all-zero block or weights). */
static bool sym_search(const float *x, const float *w, const grid *g, uint16_t *dh, uint8_t L[QK]) {
    float max = signed_max(x), step = (float)(g->lev[g->n - 1] - g->lev[0]) / (float)(g->n - 1) / 4;
    double best = INFINITY;
    uint8_t Lt[QK];
    uint16_t dt = 0;
    if (!(fabsf(max) > 0.0f) || !isfinite(max)) return false;
    for (int end = 0; end < 2; end++) {
        float edge = end ? g->lev[g->n - 1] : g->lev[0];
        for (int t = -SEARCH_STEPS; t <= SEARCH_STEPS; t++) {
            double e = sym_try(x, w, g, (edge + (float)t * step) / max, Lt, &dt);
            if (e < best) {
                best = e;
                *dh = dt;
                memcpy(L, Lt, QK);
            }
        }
    }
    return best < INFINITY;
}

/* Levels for x - min at inverse scale iscale, weighted least-squares (d, m)
 * refit, both rounded to f16, levels picked again; the weighted error. */
static double asym_try(const float *x, const float *w, int nmax, float min, float iscale,
                       uint8_t L[QK], uint16_t *dh, uint16_t *mh) {
    double sw = 0, sq = 0, sq2 = 0, sx = 0, sqx = 0;
    for (int j = 0; j < QK; j++) {
        double q = fminf(fmaxf(nearbyintf((x[j] - min) * iscale), 0.0f), (float)nmax);
        sw += w[j];
        sq += w[j] * q;
        sq2 += w[j] * q * q;
        sx += w[j] * x[j];
        sqx += w[j] * q * x[j];
    }
    double det = sw * sq2 - sq * sq;
    if (!(det > 0)) return INFINITY;
    *dh = mf_f32_to_f16((float)((sw * sqx - sq * sx) / det));
    *mh = mf_f32_to_f16((float)((sq2 * sx - sq * sqx) / det));
    float d = mf_f16_to_f32(*dh), m = mf_f16_to_f32(*mh);
    if (!(d > 0.0f) || !isfinite(m)) return INFINITY;
    double err = 0;
    for (int j = 0; j < QK; j++) {
        float q = fminf(fmaxf(nearbyintf((x[j] - m) / d), 0.0f), (float)nmax);
        L[j] = (uint8_t)q;
        double e = x[j] - ((double)q * d + m);
        err += w[j] * e * e;
    }
    return err == err ? err : INFINITY;
}

static bool asym_search(const float *x, const float *w, int nmax, uint16_t *dh, uint16_t *mh,
                        uint8_t L[QK]) {
    float min = x[0], max = x[0];
    for (int j = 1; j < QK; j++) {
        min = fminf(min, x[j]);
        max = fmaxf(max, x[j]);
    }
    if (!(max > min) || !isfinite(max - min)) return false;
    double best = INFINITY;
    uint8_t Lt[QK];
    uint16_t dt = 0, mt = 0;
    for (int t = -SEARCH_STEPS; t <= SEARCH_STEPS; t++) {
        float target = (float)nmax + (float)t * 0.25f * (float)nmax / 15.0f;
        double e = asym_try(x, w, nmax, min, target / (max - min), Lt, &dt, &mt);
        if (e < best) {
            best = e;
            *dh = dt;
            *mh = mt;
            memcpy(L, Lt, QK);
        }
    }
    return best < INFINITY;
}

/* One block of each type by the search; false: keep the rule's block. */
typedef bool (*search_fn)(const float *x, const float *w, uint8_t *blk);

static bool search_q4_0(const float *x, const float *w, uint8_t *blk) {
    static const grid g = {q4_levels, 16};
    uint8_t L[QK];
    uint16_t dh;
    if (!sym_search(x, w, &g, &dh, L)) return false;
    mf_wr16(blk, dh);
    pack_nibbles(L, blk + 2);
    return true;
}

static bool search_q5_0(const float *x, const float *w, uint8_t *blk) {
    static const grid g = {q5_levels, 32};
    uint8_t L[QK];
    uint16_t dh;
    if (!sym_search(x, w, &g, &dh, L)) return false;
    mf_wr16(blk, dh);
    pack_q5(L, blk + 2, blk + 6);
    return true;
}

static bool search_iq4_nl(const float *x, const float *w, uint8_t *blk) {
    static const grid g = {iq4nl_levels, 16};
    uint8_t L[QK];
    uint16_t dh;
    if (!sym_search(x, w, &g, &dh, L)) return false;
    mf_wr16(blk, dh);
    pack_nibbles(L, blk + 2);
    return true;
}

static bool search_q4_1(const float *x, const float *w, uint8_t *blk) {
    uint8_t L[QK];
    uint16_t dh, mh;
    if (!asym_search(x, w, 15, &dh, &mh, L)) return false;
    mf_wr16(blk, dh);
    mf_wr16(blk + 2, mh);
    pack_nibbles(L, blk + 4);
    return true;
}

static bool search_q5_1(const float *x, const float *w, uint8_t *blk) {
    uint8_t L[QK];
    uint16_t dh, mh;
    if (!asym_search(x, w, 31, &dh, &mh, L)) return false;
    mf_wr16(blk, dh);
    mf_wr16(blk + 2, mh);
    pack_q5(L, blk + 4, blk + 8);
    return true;
}

typedef struct qtype {
    int bytes;
    mf_from_float_fn rule;
    mf_to_float_fn to_float;
    search_fn search;
} qtype;

static double weighted_err(const float *x, const float *w, const uint8_t *blk, const qtype *t) {
    float y[QK];
    double err = 0;
    t->to_float(blk, y, QK);
    for (int j = 0; j < QK; j++) err += (double)w[j] * ((double)x[j] - y[j]) * ((double)x[j] - y[j]);
    return err == err ? err : INFINITY;
}

/* Rows by the rule without an imatrix; with one, per block the better (by
 * weighted error as dequantized) of the rule's block and the search's. */
static uint64_t quantize_rows(const qtype *t, const float *src, void *dst, int64_t nrows,
                              int64_t n_per_row, const float *imatrix) {
    uint8_t *p = dst, cand[MF_Q5_1_BYTES];
    for (int64_t r = 0; r < nrows; r++) {
        const float *row = src + r * n_per_row;
        for (int64_t b = 0; b < n_per_row / QK; b++, p += t->bytes) {
            const float *x = row + b * QK;
            t->rule(x, p, QK);
            if (!imatrix) continue;
            const float *w = imatrix + b * QK;
            if (t->search(x, w, cand) && weighted_err(x, w, cand, t) < weighted_err(x, w, p, t))
                memcpy(p, cand, (size_t)t->bytes);
        }
    }
    return (uint64_t)(p - (uint8_t *)dst);
}

uint64_t mf_ref_quantize_q4_0(const float *src, void *dst, int64_t nrows, int64_t n_per_row,
                              const float *imatrix) {
    static const qtype t = {MF_Q4_0_BYTES, mf_ref_q4_0_from_float, mf_ref_q4_0_to_float,
                            search_q4_0};
    return quantize_rows(&t, src, dst, nrows, n_per_row, imatrix);
}

uint64_t mf_ref_quantize_q4_1(const float *src, void *dst, int64_t nrows, int64_t n_per_row,
                              const float *imatrix) {
    static const qtype t = {MF_Q4_1_BYTES, mf_ref_q4_1_from_float, mf_ref_q4_1_to_float,
                            search_q4_1};
    return quantize_rows(&t, src, dst, nrows, n_per_row, imatrix);
}

uint64_t mf_ref_quantize_q5_0(const float *src, void *dst, int64_t nrows, int64_t n_per_row,
                              const float *imatrix) {
    static const qtype t = {MF_Q5_0_BYTES, mf_ref_q5_0_from_float, mf_ref_q5_0_to_float,
                            search_q5_0};
    return quantize_rows(&t, src, dst, nrows, n_per_row, imatrix);
}

uint64_t mf_ref_quantize_q5_1(const float *src, void *dst, int64_t nrows, int64_t n_per_row,
                              const float *imatrix) {
    static const qtype t = {MF_Q5_1_BYTES, mf_ref_q5_1_from_float, mf_ref_q5_1_to_float,
                            search_q5_1};
    return quantize_rows(&t, src, dst, nrows, n_per_row, imatrix);
}

uint64_t mf_ref_quantize_iq4_nl(const float *src, void *dst, int64_t nrows, int64_t n_per_row,
                                const float *imatrix) {
    static const qtype t = {MF_IQ4_NL_BYTES, mf_ref_iq4_nl_from_float, mf_ref_iq4_nl_to_float,
                            search_iq4_nl};
    return quantize_rows(&t, src, dst, nrows, n_per_row, imatrix);
}
