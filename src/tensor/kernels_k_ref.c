/* kernels_k_ref.c — scalar reference kernels of the k-quant family that
 * memfit computes with: the q8_K activation type, and the q4_K, q5_K and
 * q6_K quantizers and dot products (weights x q8_K activations).
 *
 * These are the spec the AVX2 kernels (kernels_k_avx2.c) are tested against.
 * q8_K follows ggml's quantize_row_q8_K_ref, which llama.cpp's x86 backend
 * also uses for activations. The dots sum in the order of the llama.cpp
 * x86 kernels that made ../shared/reference: exact integer sums combined
 * with the 6/8-bit scales, then float FMAs (q4_K: its repacked GEMM, one
 * scalar FMA per pair of sub-blocks; q5_K, q6_K: its AVX2 vec_dot, 8 lanes
 * per super-block); each order is written above its dot. Without an importance
 * matrix the quantizers reproduce ggml's quantize_row_qN_K_ref; with one
 * they run memfit's own weighted search (docs/kernels.md). */
#include "tensor/kernels.h"

#include <math.h>

#define QK_K 256

/* ---- q8_K {f32 d; i8 qs[256]; i16 bsums[16]} (292 bytes) ---- */

/* The value of largest magnitude keeps its sign: iscale = -127/max makes
 * it -127, so d = 1/iscale may be negative (ggml does the same). A NaN is
 * never the max (the > comparison skips it) and quantizes to 0. */
void mf_ref_q8_k_from_float(const float *src, void *dst, int64_t n) {
    uint8_t *p = dst;
    for (int64_t b = 0; b < n / QK_K; b++, p += MF_Q8_K_BYTES) {
        const float *x = src + b * QK_K;
        float amax = 0.0f, max = 0.0f;
        for (int j = 0; j < QK_K; j++) {
            if (fabsf(x[j]) > amax) {
                amax = fabsf(x[j]);
                max = x[j];
            }
        }
        int8_t *qs = (int8_t *)(p + 4);
        float d = 0.0f;
        if (amax == 0.0f || isinf(amax)) {
            /* all zero (or an infinity, which ggml does not handle) */
            memset(qs, 0, QK_K);
        } else {
            float iscale = -127.0f / max;
            for (int j = 0; j < QK_K; j++) {
                /* the clamp changes nothing for finite data (|v| <= 127
                 * up to rounding) but keeps a subnormal max's infinite
                 * iscale in range; NaN -> 0 */
                float v = iscale * x[j];
                v = v == v ? fminf(fmaxf(v, -127.0f), 127.0f) : 0.0f;
                qs[j] = (int8_t)mf_nearest_int(v);
            }
            d = 1.0f / iscale;
        }
        memcpy(p, &d, sizeof d);
        for (int g = 0; g < QK_K / 16; g++) {
            int sum = 0;
            for (int j = 0; j < 16; j++) sum += qs[16 * g + j];
            mf_wr16(p + 260 + 2 * g, (uint16_t)(int16_t)sum);
        }
    }
}

void mf_ref_q8_k_to_float(const void *src, float *dst, int64_t n) {
    const uint8_t *p = src;
    for (int64_t b = 0; b < n / QK_K; b++, p += MF_Q8_K_BYTES) {
        float d;
        memcpy(&d, p, sizeof d);
        const int8_t *qs = (const int8_t *)(p + 4);
        for (int j = 0; j < QK_K; j++) dst[b * QK_K + j] = d * (float)qs[j];
    }
}

/* ---- weight quantizers: the search steps of ggml's reference ---- */

/* 6-bit (scale, min) pair j of q4_K/q5_K's 12 scale bytes (ggml's
 * get_scale_min_k4 layout): pairs 0..3 sit in the low 6 bits of bytes j and
 * j+4; pairs 4..7 keep 4 bits in byte j+4 and their top 2 bits in the spare
 * top bits of bytes j-4 and j. */
static void scale_min_get(const uint8_t *s, int j, int *sc, int *mn) {
    if (j < 4) {
        *sc = s[j] & 63;
        *mn = s[j + 4] & 63;
    } else {
        *sc = (s[j + 4] & 0xf) | ((s[j - 4] >> 6) << 4);
        *mn = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
    }
}

/* s must start zeroed: pairs 4..7 OR their top bits into bytes 0..7. */
static void scale_min_put(uint8_t *s, int j, int sc, int mn) {
    if (j < 4) {
        s[j] = (uint8_t)(s[j] | sc);
        s[j + 4] = (uint8_t)(s[j + 4] | mn);
    } else {
        s[j + 4] = (uint8_t)((sc & 0xf) | ((mn & 0xf) << 4));
        s[j - 4] = (uint8_t)(s[j - 4] | ((sc >> 4) << 6));
        s[j] = (uint8_t)(s[j] | ((mn >> 4) << 6));
    }
}

/* x ~ scale*L - min over 32 values (ggml's make_qkx2_quants, squared
 * error): the shared search of quant_search.c. Stores -min in *neg_min. */
static float qkx2_search(const float *x, const float *w, int nmax, uint8_t *L, float *neg_min,
                         float rmin, float rdelta, int nstep) {
    const mf_qkx_search sp = {rmin, rdelta, nstep, false};
    return mf_qkx2_quants(32, nmax, x, w, L, neg_min, &sp);
}

/* x ~ scale*(L - nmax) over n values, L in 0..2*nmax-1: ggml's
 * make_qx_quants with rmse_type 1 (weights x^2, or qw when given): 19 grids
 * -(nmax + 0.1*is)/max, each with its least-squares scale. */
static float qx_search(int n, int nmax, const float *x, int8_t *L, const float *qw) {
    float max = 0, amax = 0;
    for (int i = 0; i < n; i++) {
        if (fabsf(x[i]) > amax) {
            amax = fabsf(x[i]);
            max = x[i];
        }
    }
    if (amax < 1e-15f) {
        memset(L, 0, (size_t)n);
        return 0.0f;
    }
    float scale = 0, best = 0;
    for (int is = 0; is <= 19; is++) {
        /* is = 0 is ggml's first pass (grid -nmax/max), 1..19 its -9..9 */
        if (is == 10) continue;
        float iscale = is == 0 ? -(float)nmax / max : -((float)nmax + 0.1f * (float)(is - 10)) / max;
        float sumlx = 0, suml2 = 0;
        for (int i = 0; i < n; i++) {
            int l = mf_clampi(mf_nearest_int(iscale * x[i]), -nmax, nmax - 1);
            float w = qw ? qw[i] : x[i] * x[i];
            sumlx += w * x[i] * (float)l;
            suml2 += w * (float)l * (float)l;
        }
        bool take = is == 0 ? true : (suml2 > 0 && sumlx * sumlx > best * suml2);
        if (!take) continue;
        for (int i = 0; i < n; i++)
            L[i] = (int8_t)(nmax + mf_clampi(mf_nearest_int(iscale * x[i]), -nmax, nmax - 1));
        scale = is == 0 ? (suml2 ? sumlx / suml2 : 0.0f) : sumlx / suml2;
        best = scale * sumlx;
    }
    return scale;
}

/* Importance weights of one super-block: the imatrix entries, plus a floor
 * of 1e-6 of their mean so that a sub-block of zero importances still has a
 * well-posed fit (it then gets a plain range fit, nearly unweighted). */
static void block_weights(const float *imp, float w[QK_K]) {
    double sum = 0;
    for (int i = 0; i < QK_K; i++) sum += imp[i] > 0 ? imp[i] : 0;
    float floor_w = (float)(sum / QK_K) * 1e-6f + 1e-30f;
    for (int i = 0; i < QK_K; i++) w[i] = (imp[i] > 0 ? imp[i] : 0) + floor_w;
}

/* The 6-bit code ggml gives a sub-block scale: nearest(inv * v), wrapped
 * through uint8 as ggml's uint8_t assignment does, then capped at 63. */
static int code6(float inv, float v) {
    int c = (uint8_t)mf_nearest_int(inv * v);
    return c > 63 ? 63 : c;
}

/* Levels of 32 values for the sub-block's dequantization (d*sc)*q - dmin*m
 * (ggml's rule: nearest((x + dm)/d), clamped), and their weighted error. */
static float k45_levels(const float *x, const float *w, int nmax, float dl, float ml, uint8_t *L) {
    float err = 0;
    for (int i = 0; i < 32; i++) {
        L[i] = (uint8_t)mf_clampi(mf_nearest_int((x[i] + ml) / dl), 0, nmax);
        float diff = dl * (float)L[i] - ml - x[i];
        err += (w ? w[i] : 1.0f) * diff * diff;
    }
    return err;
}

/* memfit's importance step: around the nearest 6-bit codes, try the 3 x 3
 * (scale, min) codes and keep the pair whose levels give the smallest
 * weighted error; the super-block scales d, dmin stay ggml's. */
static void k45_refine(const float *x, const float *w, int nmax, float d, float dmin, float scale,
                       float mn, float inv_s, float inv_m, int *ls, int *lm) {
    int s0 = code6(inv_s, scale), m0 = code6(inv_m, mn);
    float best = INFINITY;
    uint8_t L[32];
    *ls = s0;
    *lm = m0;
    for (int ds = 0; ds < 3; ds++) {
        for (int dm = 0; dm < 3; dm++) {
            /* the nearest pair first, so ties keep it */
            int s = s0 + (ds == 0 ? 0 : ds == 1 ? -1 : 1), m = m0 + (dm == 0 ? 0 : dm == 1 ? -1 : 1);
            if (s < 1 || s > 63 || m < 0 || m > 63) continue;
            float err = k45_levels(x, w, nmax, d * (float)s, dmin * (float)m, L);
            if (err < best) {
                best = err;
                *ls = s;
                *lm = m;
            }
        }
    }
}

/* One q4_K (nmax 15) or q5_K (nmax 31) super-block: writes d, dmin and the
 * 12 scale bytes at hdr and the levels L. Without w this is ggml's
 * quantize_row_q{4,5}_K_ref step for step (weights av_x + |x|, 6-bit codes
 * by nearest, levels by nearest); with importance weights w the
 * sub-block search uses w and a finer grid and the codes are refined. */
static void k45_quantize(const float *x, const float *w, int nmax, uint8_t *hdr, uint8_t L[QK_K]) {
    float scales[8], mins[8], max_scale = 0, max_min = 0, weights[32];
    for (int j = 0; j < 8; j++) {
        const float *xj = x + 32 * j;
        if (w) {
            memcpy(weights, w + 32 * j, sizeof weights);
            scales[j] = qkx2_search(xj, weights, nmax, L + 32 * j, &mins[j], -0.9f, 0.05f, 36);
        } else {
            float sum_x2 = 0;
            for (int l = 0; l < 32; l++) sum_x2 += xj[l] * xj[l];
            float av_x = sqrtf(sum_x2 / 32);
            for (int l = 0; l < 32; l++) weights[l] = av_x + fabsf(xj[l]);
            scales[j] = nmax == 15
                            ? qkx2_search(xj, weights, nmax, L + 32 * j, &mins[j], -1.0f, 0.1f, 20)
                            : qkx2_search(xj, weights, nmax, L + 32 * j, &mins[j], -0.5f, 0.1f, 15);
        }
        if (scales[j] > max_scale) max_scale = scales[j];
        if (mins[j] > max_min) max_min = mins[j];
    }
    float inv_s = max_scale > 0 ? 63.0f / max_scale : 0.0f;
    float inv_m = max_min > 0 ? 63.0f / max_min : 0.0f;
    uint16_t dh = mf_f32_to_f16(max_scale / 63.0f), mh = mf_f32_to_f16(max_min / 63.0f);
    float d = mf_f16_to_f32(dh), dmin = mf_f16_to_f32(mh);
    uint8_t *s = hdr + 4;
    memset(s, 0, 12);
    for (int j = 0; j < 8; j++) {
        int ls = code6(inv_s, scales[j]), lm = code6(inv_m, mins[j]);
        if (w && d > 0) k45_refine(x + 32 * j, w + 32 * j, nmax, d, dmin, scales[j], mins[j], inv_s,
                                   inv_m, &ls, &lm);
        scale_min_put(s, j, ls, lm);
    }
    mf_wr16(hdr, dh);
    mf_wr16(hdr + 2, mh);
    for (int j = 0; j < 8; j++) {
        int sc, m;
        scale_min_get(s, j, &sc, &m);
        float dl = d * (float)sc;
        if (!dl) continue; /* ggml keeps the search's levels here */
        k45_levels(x + 32 * j, NULL, nmax, dl, dmin * (float)m, L + 32 * j);
    }
}

static void q4_k_block(const float *x, const float *w, uint8_t *p) {
    uint8_t L[QK_K];
    k45_quantize(x, w, 15, p, L);
    for (int g = 0; g < 4; g++)
        for (int l = 0; l < 32; l++)
            p[16 + 32 * g + l] = (uint8_t)(L[64 * g + l] | (L[64 * g + 32 + l] << 4));
}

/* q5_K: low nibbles as q4_K, fifth bits of sub-block 2g / 2g+1 in bit 2g /
 * 2g+1 of qh[l]. */
static void q5_k_block(const float *x, const float *w, uint8_t *p) {
    uint8_t L[QK_K], *qh = p + 16, *qs = p + 48;
    k45_quantize(x, w, 31, p, L);
    memset(qh, 0, 32);
    for (int g = 0; g < 4; g++) {
        for (int l = 0; l < 32; l++) {
            int l1 = L[64 * g + l], l2 = L[64 * g + 32 + l];
            if (l1 > 15) qh[l] = (uint8_t)(qh[l] | (1u << (2 * g)));
            if (l2 > 15) qh[l] = (uint8_t)(qh[l] | (2u << (2 * g)));
            qs[32 * g + l] = (uint8_t)((l1 & 15) | ((l2 & 15) << 4));
        }
    }
}

/* Levels of 16 values for q6_K's d*sc*(L-32): nearest(x/(d*sc)) clamped to
 * -32..31 (ggml's rule); returns the weighted error. */
static float q6_levels(const float *x, const float *w, float dl, int8_t *L) {
    float err = 0;
    for (int i = 0; i < 16; i++) {
        int l = mf_clampi(mf_nearest_int(x[i] / dl), -32, 31);
        L[i] = (int8_t)(l + 32);
        float diff = dl * (float)l - x[i];
        err += (w ? w[i] : 1.0f) * diff * diff;
    }
    return err;
}

/* Importance step of q6_K: the int8 group scale nearest to the search's,
 * or one either side, whichever gives the smallest weighted error. */
static int q6_refine(const float *x, const float *w, float d, int sc0) {
    int best_sc = sc0;
    float best = INFINITY;
    int8_t L[16];
    for (int k = 0; k < 3; k++) {
        int sc = sc0 + (k == 0 ? 0 : k == 1 ? -1 : 1);
        if (sc < -128 || sc > 127 || sc == 0) continue;
        float err = q6_levels(x, w, d * (float)sc, L);
        if (err < best) {
            best = err;
            best_sc = sc;
        }
    }
    return best_sc;
}

static void q6_pack(const int8_t L[QK_K], uint8_t *p) {
    uint8_t *ql = p, *qh = p + 128;
    for (int h = 0; h < 2; h++, ql += 64, qh += 32) {
        const int8_t *Lh = L + 128 * h;
        for (int l = 0; l < 32; l++) {
            int q1 = Lh[l], q2 = Lh[l + 32], q3 = Lh[l + 64], q4 = Lh[l + 96];
            ql[l] = (uint8_t)((q1 & 15) | ((q3 & 15) << 4));
            ql[l + 32] = (uint8_t)((q2 & 15) | ((q4 & 15) << 4));
            qh[l] = (uint8_t)((q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6));
        }
    }
}

/* q6_K {u8 ql[128]; u8 qh[64]; i8 scales[16] @192; f16 d @208}: ggml's
 * quantize_row_q6_K_ref (16 group scales by make_qx_quants, int8 codes
 * with iscale = -128/max, levels by nearest); importance weights w make
 * the group search weighted and refine each code. */
static void q6_k_block(const float *x, const float *w, uint8_t *p) {
    int8_t L[QK_K];
    float scales[16], max_scale = 0, max_abs = 0;
    for (int g = 0; g < 16; g++) {
        scales[g] = qx_search(16, 32, x + 16 * g, L + 16 * g, w ? w + 16 * g : NULL);
        if (fabsf(scales[g]) > max_abs) {
            max_abs = fabsf(scales[g]);
            max_scale = scales[g];
        }
    }
    if (max_abs < 1e-15f) {
        memset(p, 0, 210);
        return;
    }
    float iscale = -128.0f / max_scale;
    uint16_t dh = mf_f32_to_f16(1 / iscale);
    float d = mf_f16_to_f32(dh);
    int8_t *sc = (int8_t *)(p + 192);
    for (int g = 0; g < 16; g++) {
        int c = mf_nearest_int(iscale * scales[g]);
        sc[g] = (int8_t)(c > 127 ? 127 : c);
        if (w && d != 0) sc[g] = (int8_t)q6_refine(x + 16 * g, w + 16 * g, d, sc[g]);
    }
    mf_wr16(p + 208, dh);
    for (int g = 0; g < 16; g++) {
        float dl = d * (float)sc[g];
        if (!dl) continue;
        q6_levels(x + 16 * g, NULL, dl, L + 16 * g);
    }
    q6_pack(L, p);
}

/* ---- row quantizers (traits .quantize and .from_float) ---- */

typedef void (*block_fn)(const float *x, const float *w, uint8_t *p);

static uint64_t quantize_rows(block_fn fn, uint64_t block_bytes, const float *src, void *dst,
                              int64_t nrows, int64_t n_per_row, const float *imatrix) {
    uint8_t *p = dst;
    float w[QK_K];
    for (int64_t r = 0; r < nrows; r++) {
        const float *x = src + r * n_per_row;
        for (int64_t b = 0; b < n_per_row / QK_K; b++, p += block_bytes) {
            if (imatrix) block_weights(imatrix + b * QK_K, w);
            fn(x + b * QK_K, imatrix ? w : NULL, p);
        }
    }
    return (uint64_t)nrows * (uint64_t)(n_per_row / QK_K) * block_bytes;
}

uint64_t mf_ref_quantize_q4_k(const float *src, void *dst, int64_t nrows, int64_t n_per_row,
                              const float *imatrix) {
    return quantize_rows(q4_k_block, 144, src, dst, nrows, n_per_row, imatrix);
}
uint64_t mf_ref_quantize_q5_k(const float *src, void *dst, int64_t nrows, int64_t n_per_row,
                              const float *imatrix) {
    return quantize_rows(q5_k_block, 176, src, dst, nrows, n_per_row, imatrix);
}
uint64_t mf_ref_quantize_q6_k(const float *src, void *dst, int64_t nrows, int64_t n_per_row,
                              const float *imatrix) {
    return quantize_rows(q6_k_block, 210, src, dst, nrows, n_per_row, imatrix);
}
void mf_ref_q4_k_from_float(const float *src, void *dst, int64_t n) {
    quantize_rows(q4_k_block, 144, src, dst, 1, n, NULL);
}
void mf_ref_q5_k_from_float(const float *src, void *dst, int64_t n) {
    quantize_rows(q5_k_block, 176, src, dst, 1, n, NULL);
}
void mf_ref_q6_k_from_float(const float *src, void *dst, int64_t n) {
    quantize_rows(q6_k_block, 210, src, dst, 1, n, NULL);
}

/* ---- dot products with q8_K activations ---- */

static float tree8(const float v[8]) {
    float s4[4];
    for (int l = 0; l < 4; l++) s4[l] = v[l] + v[l + 4];
    return (s4[0] + s4[2]) + (s4[1] + s4[3]);
}

static inline int q8k_bsum(const uint8_t *y, int g) { return (int16_t)mf_rd16(y + 260 + 2 * g); }

/* Unsigned levels of a q4_K (qh NULL) or q5_K super-block in element order:
 * sub-block 2g is the low nibbles of qs[32g..], 2g+1 the high ones. */
static void k45_unpack(const uint8_t *qs, const uint8_t *qh, uint8_t u[QK_K]) {
    for (int g = 0; g < 4; g++) {
        for (int l = 0; l < 32; l++) {
            int h1 = qh && (qh[l] >> (2 * g) & 1) ? 16 : 0, h2 = qh && (qh[l] >> (2 * g + 1) & 1) ? 16 : 0;
            u[64 * g + l] = (uint8_t)((qs[32 * g + l] & 15) + h1);
            u[64 * g + 32 + l] = (uint8_t)((qs[32 * g + l] >> 4) + h2);
        }
    }
}

/* Lane l of the 8-lane integer sum llama.cpp's AVX2 kernels form per
 * super-block: over the eight 32-chunks c, sc16[2c + l/4] times the exact
 * sum of products 4l..4l+3 of the chunk (maddubs + madd with the scale). */
static void lane_isums(const uint8_t u[QK_K], const int8_t *q8, const int sc16[16], int32_t out[8]) {
    for (int l = 0; l < 8; l++) {
        int32_t s = 0;
        for (int c = 0; c < 8; c++) {
            int32_t p = 0;
            for (int k = 4 * l; k < 4 * l + 4; k++) p += (int32_t)u[32 * c + k] * q8[32 * c + k];
            s += sc16[2 * c + l / 4] * p;
        }
        out[l] = s;
    }
}

/* q4_K in the order of llama.cpp's repacked q4_K x q8_K GEMM
 * (ggml_gemm_q4_K_8x8_q8_K, which made the references on x86): per pair p
 * of sub-blocks, acc += (float)(sc[2p]*D[2p] + sc[2p+1]*D[2p+1]) * (dx*dy)
 * and accm += (float)(m[2p]*S[2p] + m[2p+1]*S[2p+1]) * (dminx*dy), both as
 * FMAs, with D the exact sub-block dot and S the sub-block sum of the q8
 * values (from bsums); the result is acc - accm. */
void mf_ref_dot_q4_k(int64_t n, float *s, const void *x, const void *y) {
    const uint8_t *a = x, *b = y;
    float acc = 0, accm = 0;
    uint8_t u[QK_K];
    for (int64_t i = 0; i < n / QK_K; i++, a += 144, b += MF_Q8_K_BYTES) {
        const int8_t *q8 = (const int8_t *)(b + 4);
        float dy = mf_q8k_d(b);
        float dd = mf_f16_to_f32(mf_rd16(a)) * dy, dm = mf_f16_to_f32(mf_rd16(a + 2)) * dy;
        k45_unpack(a + 16, NULL, u);
        for (int p = 0; p < 4; p++) {
            int32_t isum = 0, imin = 0;
            for (int j = 2 * p; j < 2 * p + 2; j++) {
                int sc, mn;
                scale_min_get(a + 4, j, &sc, &mn);
                int32_t dot = 0;
                for (int k = 32 * j; k < 32 * j + 32; k++) dot += (int32_t)u[k] * q8[k];
                isum += sc * dot;
                imin += mn * (q8k_bsum(b, 2 * j) + q8k_bsum(b, 2 * j + 1));
            }
            acc = fmaf((float)isum, dd, acc);
            accm = fmaf((float)imin, dm, accm);
        }
    }
    *s = acc - accm;
}

/* q5_K as llama.cpp's ggml_vec_dot_q5_K_q8_K (AVX2): 8 lanes, lane l +=
 * fma(dy*dx, lane_isums[l]) per super-block; the mins go to one scalar,
 * summs = fma(-dy*dmin, sum_j m[j]*S[j], summs); result tree8(lanes) + summs. */
void mf_ref_dot_q5_k(int64_t n, float *s, const void *x, const void *y) {
    const uint8_t *a = x, *b = y;
    float lanes[8] = {0}, summs = 0;
    uint8_t u[QK_K];
    int sc16[16];
    int32_t isum[8];
    for (int64_t i = 0; i < n / QK_K; i++, a += 176, b += MF_Q8_K_BYTES) {
        float dy = mf_q8k_d(b);
        float d = dy * mf_f16_to_f32(mf_rd16(a)), dmin = -dy * mf_f16_to_f32(mf_rd16(a + 2));
        int32_t imin = 0;
        for (int j = 0; j < 8; j++) {
            int sc, mn;
            scale_min_get(a + 4, j, &sc, &mn);
            sc16[2 * j] = sc16[2 * j + 1] = sc;
            imin += mn * (q8k_bsum(b, 2 * j) + q8k_bsum(b, 2 * j + 1));
        }
        summs = fmaf(dmin, (float)imin, summs);
        k45_unpack(a + 48, a + 16, u);
        lane_isums(u, (const int8_t *)(b + 4), sc16, isum);
        for (int l = 0; l < 8; l++) lanes[l] = fmaf(d, (float)isum[l], lanes[l]);
    }
    *s = tree8(lanes) + summs;
}

/* q6_K as llama.cpp's ggml_vec_dot_q6_K_q8_K (AVX2): the unsigned 6-bit
 * levels (0..63) are multiplied, and the -32 offset is taken back per lane
 * as 32 * (sc[2l]*bsums[2l] + sc[2l+1]*bsums[2l+1]); lane l += fma(dy*dx,
 * that integer); result tree8(lanes). */
void mf_ref_dot_q6_k(int64_t n, float *s, const void *x, const void *y) {
    const uint8_t *a = x, *b = y;
    float lanes[8] = {0};
    uint8_t u[QK_K];
    int sc16[16];
    int32_t isum[8];
    for (int64_t i = 0; i < n / QK_K; i++, a += 210, b += MF_Q8_K_BYTES) {
        float d = mf_q8k_d(b) * mf_f16_to_f32(mf_rd16(a + 208));
        for (int g = 0; g < 16; g++) sc16[g] = (int8_t)a[192 + g];
        for (int h = 0; h < 2; h++) {
            const uint8_t *ql = a + 64 * h, *qh = a + 128 + 32 * h;
            uint8_t *uh = u + 128 * h;
            for (int l = 0; l < 32; l++) {
                uh[l] = (uint8_t)((ql[l] & 15) | (qh[l] & 3) << 4);
                uh[l + 32] = (uint8_t)((ql[l + 32] & 15) | (qh[l] >> 2 & 3) << 4);
                uh[l + 64] = (uint8_t)((ql[l] >> 4) | (qh[l] >> 4 & 3) << 4);
                uh[l + 96] = (uint8_t)((ql[l + 32] >> 4) | (qh[l] >> 6 & 3) << 4);
            }
        }
        lane_isums(u, (const int8_t *)(b + 4), sc16, isum);
        for (int l = 0; l < 8; l++) {
            int32_t off = 32 * (sc16[2 * l] * q8k_bsum(b, 2 * l) + sc16[2 * l + 1] * q8k_bsum(b, 2 * l + 1));
            lanes[l] = fmaf(d, (float)(isum[l] - off), lanes[l]);
        }
    }
    *s = tree8(lanes);
}
