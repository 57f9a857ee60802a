/* kernels_k2_ref.c — scalar reference kernels of q2_K, q3_K and iq4_xs:
 * quantizers (with and without an importance matrix) and dot products with
 * q8_K activations.
 *
 * These are the spec that kernels_k2_avx2.c is tested against. Without an
 * importance matrix the quantizers perform ggml's reference float operations
 * in ggml's order (quantize_row_q2_K_ref with make_qkx2_quants,
 * quantize_row_q3_K_ref with make_q3_quants, quantize_iq4_xs), so they
 * produce ggml's bytes. With one they run memfit's own weighted search
 * (docs/kernels.md) and keep, per super-block, whichever of that result and
 * the unweighted one has the smaller weighted error, so the importance
 * matrix can only help. The dots sum in the order llama.cpp's x86 CPU
 * backend does: exact integer sums per super-block, then float FMAs; the
 * layout of each is written above it. */
#include "tensor/kernels.h"

#include <math.h>

#define QK_K 256
#define Q2K_BYTES 84
#define Q3K_BYTES 110
#define IQ4XS_BYTES 136
#define GROUP_EPS 1e-15f /* ggml's GROUP_MAX_EPS: below it a group is all zero */

/* l + l+4, then + l+2, then + l+1: hsum_float_8 in ggml's x86 code. */
static float lanes8_sum(const float v[8]) {
    float s4[4];
    for (int l = 0; l < 4; l++) s4[l] = v[l] + v[l + 4];
    return (s4[0] + s4[2]) + (s4[1] + s4[3]);
}

/* ---- element access (ggml-common.h layouts) ----
 * q2_K/q3_K element e: half h = e/128 of qs, plane p = (e/32)%4 (bits 2p),
 * byte l = e%32; q3_K's third bit is bit 4h+p of hmask[l]. */

static inline int q2_at(const uint8_t *qs, int e) {
    return (qs[32 * (e >> 7) + (e & 31)] >> (2 * ((e >> 5) & 3))) & 3;
}

static inline int q3_at(const uint8_t *hm, const uint8_t *qs, int e) {
    int lo = q2_at(qs, e);
    int hbit = (hm[e & 31] >> (4 * (e >> 7) + ((e >> 5) & 3))) & 1;
    return lo - (hbit ? 0 : 4);
}

/* The iq4_nl levels (ggml's kvalues_iq4nl). */
static const int8_t iq4_levels[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                      1,    13,   25,  38,  53,  69,  89,  113};

static inline int iq4_at(const uint8_t *qs, int e) {
    int j = e & 31;
    const uint8_t *b = qs + 16 * (e >> 5);
    return iq4_levels[j < 16 ? (b[j] & 0xf) : (b[j - 16] >> 4)];
}

static void q3_scales(const uint8_t s[12], int out[16]) {
    for (int j = 0; j < 16; j++) {
        int lo = j < 8 ? (s[j] & 0xf) : (s[j - 8] >> 4);
        int hi = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
        out[j] = (lo | (hi << 4)) - 32;
    }
}

static int iq4xs_scale(const uint8_t *p, int ib) {
    int lo = (p[4 + ib / 2] >> (4 * (ib % 2))) & 0xf;
    int hi = (mf_rd16(p + 2) >> (2 * ib)) & 3;
    return (lo | (hi << 4)) - 32;
}

/* ---- dot products ----
 * Lane l (0..7) of a super-block is the exact integer sum over elements e
 * with (e % 32) / 4 == l of scale(e) * q(e) * q8(e): what maddubs + madd
 * leave in the int32 lanes of ggml_vec_dot_q3_K_q8_K and _iq4_xs_q8_K. Each
 * lane then takes one fmaf(d_w * d_y, lane) per super-block. */

void mf_ref_dot_q3_k(int64_t n, float *s, const void *x, const void *y) {
    const uint8_t *a = x, *b = y;
    float lanes[8] = {0};
    int sc[16];
    for (int64_t i = 0; i < n / QK_K; i++, a += Q3K_BYTES, b += MF_Q8_K_BYTES) {
        const int8_t *q8 = (const int8_t *)(b + 4);
        float d = mf_q8k_d(b) * mf_f16_to_f32(mf_rd16(a + 108));
        int32_t isum[8] = {0};
        q3_scales(a + 96, sc);
        for (int e = 0; e < QK_K; e++)
            isum[(e & 31) >> 2] += sc[e >> 4] * q3_at(a, a + 32, e) * q8[e];
        for (int l = 0; l < 8; l++) lanes[l] = fmaf(d, (float)isum[l], lanes[l]);
    }
    *s = lanes8_sum(lanes);
}

void mf_ref_dot_iq4_xs(int64_t n, float *s, const void *x, const void *y) {
    const uint8_t *a = x, *b = y;
    float lanes[8] = {0};
    for (int64_t i = 0; i < n / QK_K; i++, a += IQ4XS_BYTES, b += MF_Q8_K_BYTES) {
        const int8_t *q8 = (const int8_t *)(b + 4);
        float d = mf_f16_to_f32(mf_rd16(a)) * mf_q8k_d(b);
        int32_t isum[8] = {0};
        for (int e = 0; e < QK_K; e++)
            isum[(e & 31) >> 2] += iq4xs_scale(a, e >> 5) * iq4_at(a + 8, e) * q8[e];
        for (int l = 0; l < 8; l++) lanes[l] = fmaf(d, (float)isum[l], lanes[l]);
    }
    *s = lanes8_sum(lanes);
}

/* q2_K in the order of llama.cpp's x86 "repack" GEMM (block_q2_Kx8, chosen
 * on AVX-512 machines, which made ../shared/reference; its vec_dot's lane
 * order misses the references' last bits): per half super-block h, the
 * exact sums I_h = sum scale*q*q8 and M_h = sum min*bsum feed two single
 * accumulators, acc += I_h * (d_w*d_y), macc += M_h * (dmin_w*d_y); the
 * result is acc - macc. */
void mf_ref_dot_q2_k(int64_t n, float *s, const void *x, const void *y) {
    const uint8_t *a = x, *b = y;
    float acc = 0.0f, macc = 0.0f;
    for (int64_t i = 0; i < n / QK_K; i++, a += Q2K_BYTES, b += MF_Q8_K_BYTES) {
        const int8_t *q8 = (const int8_t *)(b + 4);
        float dy = mf_q8k_d(b);
        float dd = mf_f16_to_f32(mf_rd16(a + 80)) * dy;
        float dm = mf_f16_to_f32(mf_rd16(a + 82)) * dy;
        for (int h = 0; h < 2; h++) {
            int32_t isum = 0, msum = 0;
            for (int e = 128 * h; e < 128 * h + 128; e++)
                isum += (a[e >> 4] & 0xf) * q2_at(a + 16, e) * q8[e];
            for (int j = 8 * h; j < 8 * h + 8; j++)
                msum += (a[j] >> 4) * (int16_t)mf_rd16(b + 260 + 2 * j);
            acc = fmaf((float)isum, dd, acc);
            macc = fmaf((float)msum, dm, macc);
        }
    }
    *s = acc - macc;
}

/* ---- shared by the quantizers ---- */

/* sum_i w_i (x_i - deq_i)^2 over one super-block, in double. */
static double block_err(mf_to_float_fn deq, const uint8_t *blk, const float *x, const float *w) {
    float y[QK_K];
    double e = 0.0;
    deq(blk, y, QK_K);
    for (int i = 0; i < QK_K; i++) e += (double)w[i] * ((double)x[i] - y[i]) * ((double)x[i] - y[i]);
    return e;
}

/* Packs 2-bit values: byte l of half h holds elements 128h + l + 32p in
 * bits 2p (ggml's q2_K/q3_K qs). */
static void pack_2bit(const uint8_t L[QK_K], uint8_t qs[64]) {
    for (int j = 0; j < QK_K; j += 128)
        for (int l = 0; l < 32; l++)
            qs[j / 4 + l] = (uint8_t)(L[j + l] | (L[j + l + 32] << 2) | (L[j + l + 64] << 4) |
                                      (L[j + l + 96] << 6));
}

/* ---- q2_K: {u8 scales[16] (scale | min << 4); u8 qs[64]; f16 d; f16 dmin} ---- */

/* 4-bit scale and min codes against d = max/div (ggml: div = 15), then each
 * value re-rounded against its coded scale and min (quantize_row_q2_K_ref's
 * tail; the clamps change nothing when div = 15). L holds the sub-block
 * search's values, kept where a coded scale is zero. */
static void q2k_finish(const float *x, const float sc[16], const float mn[16], float div_s,
                       float div_m, uint8_t L[QK_K], uint8_t *blk) {
    float max_scale = 0, max_min = 0;
    for (int j = 0; j < 16; j++) {
        if (sc[j] > max_scale) max_scale = sc[j];
        if (mn[j] > max_min) max_min = mn[j];
    }
    memset(blk, 0, 16);
    mf_wr16(blk + 80, mf_f32_to_f16(max_scale > 0 ? max_scale / div_s : 0.0f));
    mf_wr16(blk + 82, mf_f32_to_f16(max_min > 0 ? max_min / div_m : 0.0f));
    for (int j = 0; j < 16; j++) {
        int ls = max_scale > 0 ? mf_clampi(mf_nearest_int(div_s / max_scale * sc[j]), 0, 15) : 0;
        int lm = max_min > 0 ? mf_clampi(mf_nearest_int(div_m / max_min * mn[j]), 0, 15) : 0;
        blk[j] = (uint8_t)(ls | (lm << 4));
    }
    float d = mf_f16_to_f32(mf_rd16(blk + 80)), dmin = mf_f16_to_f32(mf_rd16(blk + 82));
    for (int j = 0; j < 16; j++) {
        float dl = d * (float)(blk[j] & 0xf);
        if (!dl) continue;
        float ml = dmin * (float)(blk[j] >> 4);
        for (int i = 0; i < 16; i++)
            L[16 * j + i] = (uint8_t)mf_clampi(mf_nearest_int((x[16 * j + i] + ml) / dl), 0, 3);
    }
    pack_2bit(L, blk + 16);
}

/* quantize_row_q2_K_ref: per 16 values, weights |x| and mean absolute error. */
static void q2k_block_ref(const float *x, const float *w_unused, uint8_t *blk) {
    (void)w_unused;
    static const mf_qkx_search sp = {-0.5f, 0.1f, 15, true};
    uint8_t L[QK_K];
    float sc[16], mn[16], w[16];
    for (int j = 0; j < 16; j++) {
        for (int i = 0; i < 16; i++) w[i] = fabsf(x[16 * j + i]);
        sc[j] = mf_qkx2_quants(16, 3, x + 16 * j, w, L + 16 * j, &mn[j], &sp);
    }
    q2k_finish(x, sc, mn, 15.0f, 15.0f, L, blk);
}

/* memfit's weighted rule: the same search with the importances as weights
 * and squared error, more candidates, then the super-block scales coded
 * against three divisors each; the best weighted error wins. */
static void q2k_block_weighted(const float *x, const float *w, uint8_t *blk) {
    static const mf_qkx_search sp = {-1.0f, 0.1f, 20, false};
    static const float divs[3] = {15.0f, 14.5f, 14.0f};
    uint8_t L[QK_K], Lt[QK_K], tmp[Q2K_BYTES];
    float sc[16], mn[16];
    double best = INFINITY;
    for (int j = 0; j < 16; j++) sc[j] = mf_qkx2_quants(16, 3, x + 16 * j, w + 16 * j, L + 16 * j, &mn[j], &sp);
    for (int a = 0; a < 3; a++) {
        for (int b = 0; b < 3; b++) {
            memcpy(Lt, L, sizeof Lt);
            q2k_finish(x, sc, mn, divs[a], divs[b], Lt, tmp);
            double e = block_err(mf_ref_q2_k_to_float, tmp, x, w);
            if (e < best || (a == 0 && b == 0)) {
                best = e;
                memcpy(blk, tmp, Q2K_BYTES);
            }
        }
    }
}

/* ---- q3_K: {u8 hmask[32]; u8 qs[64]; u8 scales[12]; f16 d} ---- */

/* ggml's make_q3_quants with do_rmse (nmax = 4): L in 0..7 (value + 4) and
 * the scale, refined by coordinate descent on weights x^2. */
static float q3_quants(const float *x, int8_t *L) {
    const int nmax = 4, n = 16;
    float max = 0, amax = 0;
    for (int i = 0; i < n; i++)
        if (fabsf(x[i]) > amax) amax = fabsf(x[i]), max = x[i];
    if (amax < GROUP_EPS) {
        memset(L, 0, (size_t)n);
        return 0.0f;
    }
    float iscale = -(float)nmax / max, sumlx = 0, suml2 = 0;
    for (int i = 0; i < n; i++) {
        int l = mf_clampi(mf_nearest_int(iscale * x[i]), -nmax, nmax - 1);
        L[i] = (int8_t)l;
        float w = x[i] * x[i];
        sumlx += w * x[i] * (float)l;
        suml2 += w * (float)l * (float)l;
    }
    for (int itry = 0; itry < 5; itry++) {
        int n_changed = 0;
        for (int i = 0; i < n; i++) {
            float w = x[i] * x[i];
            float slx = sumlx - w * x[i] * (float)L[i];
            if (!(slx > 0)) continue;
            float sl2 = suml2 - w * (float)L[i] * (float)L[i];
            int new_l = mf_clampi(mf_nearest_int(x[i] * sl2 / slx), -nmax, nmax - 1);
            if (new_l == L[i]) continue;
            slx += w * x[i] * (float)new_l;
            sl2 += w * (float)new_l * (float)new_l;
            if (sl2 > 0 && slx * slx * suml2 > sumlx * sumlx * sl2) {
                L[i] = (int8_t)new_l;
                sumlx = slx;
                suml2 = sl2;
                n_changed++;
            }
        }
        if (!n_changed) break;
    }
    for (int i = 0; i < n; i++) L[i] = (int8_t)(L[i] + nmax);
    return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
}

/* Six-bit signed scale codes against d = -max/div (ggml: div = 32), values
 * re-rounded against the coded scales, then hmask and qs packed
 * (quantize_row_q3_K_ref's tail). L (0..7) is kept where a scale is 0. */
static void q3k_finish(const float *x, const float sc[16], float div, int8_t L[QK_K], uint8_t *blk) {
    float max_scale = 0, amax = 0;
    for (int j = 0; j < 16; j++)
        if (fabsf(sc[j]) > amax) amax = fabsf(sc[j]), max_scale = sc[j];
    uint8_t *s = blk + 96;
    memset(s, 0, 12);
    mf_wr16(blk + 108, 0);
    if (max_scale != 0) {
        float iscale = -div / max_scale;
        for (int j = 0; j < 16; j++) {
            int l = mf_clampi(mf_nearest_int(iscale * sc[j]), -32, 31) + 32;
            s[j % 8] |= (uint8_t)((l & 0xf) << (j < 8 ? 0 : 4));
            s[8 + j % 4] |= (uint8_t)((l >> 4) << (2 * (j / 4)));
        }
        mf_wr16(blk + 108, mf_f32_to_f16(1 / iscale));
    }
    int code[16];
    q3_scales(s, code);
    float d = mf_f16_to_f32(mf_rd16(blk + 108));
    for (int j = 0; j < 16; j++) {
        float dl = d * (float)code[j];
        if (!dl) continue;
        for (int i = 0; i < 16; i++)
            L[16 * j + i] = (int8_t)(mf_clampi(mf_nearest_int(x[16 * j + i] / dl), -4, 3) + 4);
    }
    uint8_t lo[QK_K];
    memset(blk, 0, 32);
    for (int j = 0; j < QK_K; j++) {
        if (L[j] > 3) blk[j % 32] |= (uint8_t)(1u << (j / 32));
        lo[j] = (uint8_t)(L[j] & 3);
    }
    pack_2bit(lo, blk + 32);
}

static void q3k_block_ref(const float *x, const float *w_unused, uint8_t *blk) {
    (void)w_unused;
    int8_t L[QK_K];
    float sc[16];
    for (int j = 0; j < 16; j++) sc[j] = q3_quants(x + 16 * j, L + 16 * j);
    q3k_finish(x, sc, 32.0f, L, blk);
}

/* memfit's weighted sub-block scale: 42 candidate iscales (the largest
 * magnitude mapped near -4 or near +3), each with its weighted
 * least-squares scale sum(w x l) / sum(w l^2); the one with the smallest
 * weighted error (largest sum(w x l)^2 / sum(w l^2)) wins. */
static float q3_weighted_scale(const float *x, const float *w) {
    float max = 0, amax = 0, best = 0, scale = 0;
    for (int i = 0; i < 16; i++)
        if (fabsf(x[i]) > amax) amax = fabsf(x[i]), max = x[i];
    if (amax < GROUP_EPS) return 0.0f;
    for (int t = 0; t < 42; t++) {
        float target = t < 21 ? -4.0f + 0.1f * (float)(t - 10) : 3.0f + 0.1f * (float)(t - 31);
        float iscale = target / max, sumlx = 0, suml2 = 0;
        for (int i = 0; i < 16; i++) {
            float l = (float)mf_clampi(mf_nearest_int(iscale * x[i]), -4, 3);
            sumlx += w[i] * x[i] * l;
            suml2 += w[i] * l * l;
        }
        if (suml2 > 0 && sumlx * sumlx > best * suml2) {
            best = sumlx * sumlx / suml2;
            scale = sumlx / suml2;
        }
    }
    return scale;
}

static void q3k_block_weighted(const float *x, const float *w, uint8_t *blk) {
    static const float divs[4] = {32.0f, 31.0f, 30.0f, 29.0f};
    int8_t L[QK_K];
    uint8_t tmp[Q3K_BYTES];
    float sc[16];
    double best = INFINITY;
    for (int j = 0; j < 16; j++) sc[j] = q3_weighted_scale(x + 16 * j, w + 16 * j);
    for (int a = 0; a < 4; a++) {
        memset(L, 4, sizeof L); /* value 0 where a scale codes to 0 */
        q3k_finish(x, sc, divs[a], L, tmp);
        double e = block_err(mf_ref_q3_k_to_float, tmp, x, w);
        if (e < best || a == 0) {
            best = e;
            memcpy(blk, tmp, Q3K_BYTES);
        }
    }
}

/* ---- iq4_xs: {f16 d; u16 scales_h; u8 scales_l[4]; u8 qs[128]} ---- */

/* ggml's best_index_int8: the level nearest to v (the lower one on ties). */
static int iq4_best_index(float v) {
    if (v <= iq4_levels[0]) return 0;
    if (v >= iq4_levels[15]) return 15;
    int ml = 0, mu = 15;
    while (mu - ml > 1) {
        int mav = (ml + mu) / 2;
        if (v < iq4_levels[mav]) mu = mav;
        else ml = mav;
    }
    return v - iq4_levels[mu - 1] < iq4_levels[mu] - v ? mu - 1 : mu;
}

/* sumqx = sum w q x and sumq2 = sum w q^2 for the levels nearest id*x. */
static void iq4_sums(const float *xb, const float *w, float id, float *sumqx, float *sumq2) {
    float sqx = 0, sq2 = 0;
    for (int j = 0; j < 32; j++) {
        float q = (float)iq4_levels[iq4_best_index(id * xb[j])];
        sqx += w[j] * q * xb[j];
        sq2 += w[j] * q * q;
    }
    *sumqx = sqx;
    *sumq2 = sq2;
}

/* One sub-block's scale as quantize_row_iq4_nl_impl finds it (ntry = 7):
 * the least-squares scale for iscales (k - 127)/max, k = -7..7, and for
 * 127/max, keeping the largest sumqx^2/sumq2. */
static float iq4_subblock_scale(const float *xb, const float *w) {
    float amax = 0, max = 0;
    for (int j = 0; j < 32; j++)
        if (fabsf(xb[j]) > amax) amax = fabsf(xb[j]), max = xb[j];
    if (amax < GROUP_EPS) return 0.0f;
    float d = -max / (float)iq4_levels[0], sumqx, sumq2;
    iq4_sums(xb, w, 1 / d, &sumqx, &sumq2);
    d = sumq2 > 0 ? sumqx / sumq2 : 0.0f;
    float best = d * sumqx;
    for (int itry = -7; itry <= 7; itry++) {
        iq4_sums(xb, w, (float)(itry + iq4_levels[0]) / max, &sumqx, &sumq2);
        if (sumq2 > 0 && sumqx * sumqx > best * sumq2) {
            d = sumqx / sumq2;
            best = d * sumqx;
        }
    }
    return d;
}

/* Super-block scale d = -max/div (ggml: div = 32), six-bit sub-block codes,
 * and each value's nearest level against its coded scale. */
static void iq4xs_finish(const float *x, const float sc[8], float div, uint8_t *blk) {
    float max_scale = 0, amax = 0;
    for (int ib = 0; ib < 8; ib++)
        if (fabsf(sc[ib]) > amax) amax = fabsf(sc[ib]), max_scale = sc[ib];
    float d = -max_scale / div, id = d ? 1 / d : 0.0f;
    uint16_t sh = 0;
    uint8_t L[QK_K];
    mf_wr16(blk, mf_f32_to_f16(d));
    memset(blk + 4, 0, 4);
    for (int ib = 0; ib < 8; ib++) {
        int l = mf_clampi(mf_nearest_int(id * sc[ib]), -32, 31);
        float dl = d * (float)l, idl = dl ? 1 / dl : 0.0f;
        for (int j = 0; j < 32; j++) L[32 * ib + j] = (uint8_t)iq4_best_index(idl * x[32 * ib + j]);
        l += 32;
        blk[4 + ib / 2] |= (uint8_t)((l & 0xf) << (4 * (ib % 2)));
        sh |= (uint16_t)((l >> 4) << (2 * ib));
    }
    mf_wr16(blk + 2, sh);
    for (int i = 0; i < 8; i++)
        for (int j = 0; j < 16; j++) blk[8 + 16 * i + j] = (uint8_t)(L[32 * i + j] | (L[32 * i + 16 + j] << 4));
}

/* quantize_iq4_xs without importances: weights x^2. */
static void iq4xs_block_ref(const float *x, const float *w_unused, uint8_t *blk) {
    (void)w_unused;
    float sc[8], w[32];
    for (int ib = 0; ib < 8; ib++) {
        for (int j = 0; j < 32; j++) w[j] = x[32 * ib + j] * x[32 * ib + j];
        sc[ib] = iq4_subblock_scale(x + 32 * ib, w);
    }
    iq4xs_finish(x, sc, 32.0f, blk);
}

/* memfit's weighted rule: the same candidate search with the importances
 * themselves as weights, then the super-block scale against four divisors. */
static void iq4xs_block_weighted(const float *x, const float *w, uint8_t *blk) {
    static const float divs[4] = {32.0f, 31.0f, 30.0f, 29.0f};
    uint8_t tmp[IQ4XS_BYTES];
    float sc[8];
    double best = INFINITY;
    for (int ib = 0; ib < 8; ib++) sc[ib] = iq4_subblock_scale(x + 32 * ib, w + 32 * ib);
    for (int a = 0; a < 4; a++) {
        iq4xs_finish(x, sc, divs[a], tmp);
        double e = block_err(mf_ref_iq4_xs_to_float, tmp, x, w);
        if (e < best || a == 0) {
            best = e;
            memcpy(blk, tmp, IQ4XS_BYTES);
        }
    }
}

/* ---- rows ---- */

typedef void (*block_quant_fn)(const float *x, const float *w, uint8_t *blk);

/* Every block by the unweighted rule; with importances also by the
 * weighted one, keeping whichever has the smaller weighted error. */
static uint64_t quantize_rows(block_quant_fn ref, block_quant_fn weighted, mf_to_float_fn deq,
                              size_t bytes, const float *src, void *dst, int64_t nrows,
                              int64_t n_per_row, const float *imatrix) {
    uint8_t *p = dst, tmp[IQ4XS_BYTES > Q3K_BYTES ? IQ4XS_BYTES : Q3K_BYTES];
    int64_t nb = n_per_row / QK_K;
    for (int64_t r = 0; r < nrows; r++) {
        for (int64_t b = 0; b < nb; b++, p += bytes) {
            const float *x = src + r * n_per_row + b * QK_K;
            ref(x, NULL, p);
            if (!imatrix) continue;
            const float *w = imatrix + b * QK_K;
            weighted(x, w, tmp);
            if (block_err(deq, tmp, x, w) < block_err(deq, p, x, w)) memcpy(p, tmp, bytes);
        }
    }
    return (uint64_t)nrows * (uint64_t)nb * bytes;
}

uint64_t mf_ref_quantize_q2_k(const float *src, void *dst, int64_t nrows, int64_t n_per_row,
                              const float *imatrix) {
    return quantize_rows(q2k_block_ref, q2k_block_weighted, mf_ref_q2_k_to_float, Q2K_BYTES, src,
                         dst, nrows, n_per_row, imatrix);
}

uint64_t mf_ref_quantize_q3_k(const float *src, void *dst, int64_t nrows, int64_t n_per_row,
                              const float *imatrix) {
    return quantize_rows(q3k_block_ref, q3k_block_weighted, mf_ref_q3_k_to_float, Q3K_BYTES, src,
                         dst, nrows, n_per_row, imatrix);
}

uint64_t mf_ref_quantize_iq4_xs(const float *src, void *dst, int64_t nrows, int64_t n_per_row,
                                const float *imatrix) {
    return quantize_rows(iq4xs_block_ref, iq4xs_block_weighted, mf_ref_iq4_xs_to_float,
                         IQ4XS_BYTES, src, dst, nrows, n_per_row, imatrix);
}

void mf_ref_q2_k_from_float(const float *src, void *dst, int64_t n) {
    mf_ref_quantize_q2_k(src, dst, 1, n, NULL);
}

void mf_ref_q3_k_from_float(const float *src, void *dst, int64_t n) {
    mf_ref_quantize_q3_k(src, dst, 1, n, NULL);
}

void mf_ref_iq4_xs_from_float(const float *src, void *dst, int64_t n) {
    mf_ref_quantize_iq4_xs(src, dst, 1, n, NULL);
}
