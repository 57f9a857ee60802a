/* kernels_pack_avx512.c — AVX-512 (F, BW, VL, VNNI) products of packed
 * weight groups (pack.c): q4_K x16 with q8_K activation rows (1..4 tokens
 * per pass) and q6_K x16 (1..2), with q8_0 activation rows q8_0 x16 (1..2
 * tokens per pass) and q4_0 / iq4_nl x16 (1..4).
 *
 * Lane r of every register is row r of the group: vpdpbusd multiplies four
 * unsigned nibbles of row r by four broadcast q8 bytes, so after the eight
 * steps of a sub-block pair lane r holds row r's exact sub-block dots D_2p
 * (low nibbles) and 16 D_2p+1 (high nibbles kept in place, masked with 0xf0,
 * divided back exactly with a shift). The float steps are
 * mf_ref_dot_q4_k's, row by row: per pair p, acc = fma(I_p, d*dy, acc) and
 * accm = fma(M_p, dmin*dy, accm) with I_p = sc_2p D_2p + sc_2p+1 D_2p+1 and
 * M_p = mn_2p S_2p + mn_2p+1 S_2p+1 exact integers, the result acc - accm:
 * bit-identical to the row-major kernels for any thread count or batch. */
#include "tensor/kernels_avx512.h"


#define QK_K 256
#define PB MF_Q4K_X16_BYTES
#define NT_MAX 4

/* acc += w (unsigned bytes) x the four signed bytes at p in every lane: the
 * broadcast folded into vpdpbusd's memory operand ({1to16}), which the
 * compiler does not do by itself; one instruction instead of two in the
 * loop that bounds decoding. */
static inline __m512i dpbusd_b(__m512i acc, __m512i w, const uint8_t *p) {
    __asm__("vpdpbusd %2%{1to16%}, %1, %0" : "+v"(acc) : "v"(w), "m"(*(const int32_t *)p));
    return acc;
}

/* Scale (j < 8) or min (8 + j) of sub-block j for rows 0..15 as dwords. */
#define SM_U32(sm, j) _mm512_cvtepu8_epi32(_mm_load_si128((const __m128i *)((sm)[(j) >> 2] + 16 * ((j) & 3))))

/* The 12 transposed scale bytes of a q4_K/q5_K x16 super-block (at s) as
 * 16-byte lanes: lane j of sm[0] the 6-bit scale of sub-block j of rows
 * 0..15, sm[1] of j + 4, sm[2] and sm[3] the mins (stored, so that
 * vpmovzxbd can read each lane from memory): sc_j = s_j & 63, mn_j =
 * s_j+4 & 63 (j < 4); sc_j+4 = (s_j+8 & 15) | (s_j >> 6) << 4, mn_j+4 =
 * (s_j+8 >> 4) | (s_j+4 >> 6) << 4. */
static inline void k4_scales_x16(const uint8_t *s, uint8_t sm[4][64]) {
    const __m512i m0f = _mm512_set1_epi8(0x0f), m63 = _mm512_set1_epi8(63), m30 = _mm512_set1_epi8(0x30);
    const __m512i s03 = _mm512_loadu_si512(s), s47 = _mm512_loadu_si512(s + 64), s8b = _mm512_loadu_si512(s + 128);
    _mm512_store_si512(sm[0], _mm512_and_si512(s03, m63));
    _mm512_store_si512(sm[2], _mm512_and_si512(s47, m63));
    _mm512_store_si512(sm[1], _mm512_ternarylogic_epi32(s8b, m0f, _mm512_and_si512(_mm512_srli_epi16(s03, 2), m30),
                                                        0xEA)); /* (a & b) | c */
    _mm512_store_si512(sm[3], _mm512_ternarylogic_epi32(_mm512_srli_epi16(s8b, 4), m0f,
                                                        _mm512_and_si512(_mm512_srli_epi16(s47, 2), m30), 0xEA));
}

/* One group of 16 rows times nt (1..NT_MAX) activation rows; y[t*ldy + r]. */
BLOCK_FN void group_q4_k(int64_t n, const uint8_t *xg, const uint8_t *act, uint64_t act_row,
                         const int nt, float *y, int64_t ldy) {
    const __m512i m0f = _mm512_set1_epi8(0x0f), mf0 = _mm512_set1_epi8((char)0xf0);
    __m512 acc[NT_MAX], accm[NT_MAX];
    for (int t = 0; t < nt; t++) acc[t] = accm[t] = _mm512_setzero_ps();
    for (int64_t i = 0; i < n / QK_K; i++) {
        const uint8_t *b = xg + (uint64_t)i * PB;
        const __m512 dx = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)b));
        const __m512 mx = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(b + 32)));
        _Alignas(64) uint8_t sm[4][64];
        k4_scales_x16(b + 64, sm);
        __m512 dd[NT_MAX], dm[NT_MAX];
        _Alignas(16) int32_t sp[NT_MAX][4]; /* sp[t][p]: (S_2p, S_2p+1) as int16 */
        const uint8_t *q[NT_MAX];
#pragma GCC unroll 4
        for (int t = 0; t < nt; t++) {
            q[t] = act + (uint64_t)t * act_row + (uint64_t)i * MF_Q8_K_BYTES;
            const __m512 dy = _mm512_set1_ps(mf_q8k_d(q[t]));
            dd[t] = _mm512_mul_ps(dx, dy);
            dm[t] = _mm512_mul_ps(mx, dy);
            const __m256i bs = _mm256_loadu_si256((const __m256i *)(q[t] + 260));
            _mm_store_si128((__m128i *)sp[t], _mm_hadd_epi16(_mm256_castsi256_si128(bs), _mm256_extracti128_si256(bs, 1)));
        }
#pragma GCC unroll 4
        for (int p = 0; p < 4; p++) {
            const uint8_t *w = b + 256 + p * 8 * 64;
            /* integer dots of the pair; one token gets two chains per sum so
             * that vpdpbusd's latency is hidden (exact integers: any order) */
            const int nc = nt == 1 ? 2 : 1;
            __m512i lo[NT_MAX][2], hi[NT_MAX][2];
#pragma GCC unroll 4
            for (int t = 0; t < nt; t++)
                lo[t][0] = lo[t][1] = hi[t][0] = hi[t][1] = _mm512_setzero_si512();
#pragma GCC unroll 4
            for (int k = 0; k < 8; k += 2) {
                const __m512i v0 = _mm512_loadu_si512(w + 64 * k), v1 = _mm512_loadu_si512(w + 64 * k + 64);
                const __m512i l0 = _mm512_and_si512(v0, m0f), h0 = _mm512_and_si512(v0, mf0);
                const __m512i l1 = _mm512_and_si512(v1, m0f), h1 = _mm512_and_si512(v1, mf0);
#pragma GCC unroll 4
                for (int t = 0; t < nt; t++) {
                    const uint8_t *q8 = q[t] + 4 + 64 * p + 4 * k;
                    lo[t][0] = dpbusd_b(lo[t][0], l0, q8);
                    hi[t][0] = dpbusd_b(hi[t][0], h0, q8 + 32);
                    lo[t][nc - 1] = dpbusd_b(lo[t][nc - 1], l1, q8 + 4);
                    hi[t][nc - 1] = dpbusd_b(hi[t][nc - 1], h1, q8 + 36);
                }
            }
            const int j = 2 * p;
            const __m512i scl = SM_U32(sm, j), sch = SM_U32(sm, j + 1);
            /* dword r: (mn_2p, mn_2p+1) of row r as int16, for vpmaddwd */
            const __m512i mw = _mm512_or_si512(SM_U32(sm, 8 + j), _mm512_slli_epi32(SM_U32(sm, 9 + j), 16));
#pragma GCC unroll 4
            for (int t = 0; t < nt; t++) {
                __m512i dl = lo[t][0], dh = hi[t][0];
                if (nt == 1) {
                    dl = _mm512_add_epi32(dl, lo[t][1]);
                    dh = _mm512_add_epi32(dh, hi[t][1]);
                }
                const __m512i isum = _mm512_add_epi32(_mm512_mullo_epi32(dl, scl),
                                                      _mm512_mullo_epi32(_mm512_srai_epi32(dh, 4), sch));
                const __m512i s2 = _mm512_set1_epi32(sp[t][p]);
                const __m512i imin = _mm512_madd_epi16(mw, s2);
                acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), dd[t], acc[t]);
                accm[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(imin), dm[t], accm[t]);
            }
        }
    }
    for (int t = 0; t < nt; t++) _mm512_storeu_ps(y + t * ldy, _mm512_sub_ps(acc[t], accm[t]));
}

static void gemm_q4_k_x16(int64_t n, int n_tok, float *y, int64_t ldy, const void *xg,
                          const void *act, uint64_t act_row) {
    const uint8_t *a = act;
    int t = 0;
    for (; t + 4 <= n_tok; t += 4) group_q4_k(n, xg, a + (uint64_t)t * act_row, act_row, 4, y + t * ldy, ldy);
    switch (n_tok - t) {
    case 3: group_q4_k(n, xg, a + (uint64_t)t * act_row, act_row, 3, y + t * ldy, ldy); break;
    case 2: group_q4_k(n, xg, a + (uint64_t)t * act_row, act_row, 2, y + t * ldy, ldy); break;
    case 1: group_q4_k(n, xg, a + (uint64_t)t * act_row, act_row, 1, y + t * ldy, ldy); break;
    default: break;
    }
}

/* The eight lanes of each row added as mf_ref's tree8: (l0 + l4) + (l2 +
 * l6), then + ((l1 + l5) + (l3 + l7)), lane by lane of 16 rows. */
static inline __m512 tree8_x16(const __m512 l[8]) {
    __m512 s4[4];
    for (int k = 0; k < 4; k++) s4[k] = _mm512_add_ps(l[k], l[k + 4]);
    return _mm512_add_ps(_mm512_add_ps(s4[0], s4[2]), _mm512_add_ps(s4[1], s4[3]));
}

/* gemm_packed over a kernel that takes 1 or 2 tokens per pass. */
#define GEMM_PAIRS(name, group)                                                                    \
    static void name(int64_t n, int n_tok, float *y, int64_t ldy, const void *xg, const void *act,  \
                     uint64_t act_row) {                                                           \
        const uint8_t *a = act;                                                                    \
        int t = 0;                                                                                 \
        for (; t + 2 <= n_tok; t += 2) group(n, xg, a + (uint64_t)t * act_row, act_row, 2, y + t * ldy, ldy); \
        if (t < n_tok) group(n, xg, a + (uint64_t)t * act_row, act_row, 1, y + t * ldy, ldy);     \
    }

/* ---- q8_0 x16 ----
 * mf_ref_dot_q8_0's order, row by row: eight float lanes per row, lane l +=
 * fma(dw*da, I_l) per block with I_l the exact dot of elements 4l..4l+3,
 * then tree8. Register l of a token holds lane l of all 16 rows. The packed
 * weights are w + 128 (unsigned for vpdpbusd), so each I_l starts from
 * -128 x (the four activations' sum), which vpdpbusd of 0x80 bytes with
 * the activations gives once per block. */
#define NT8 2 /* tokens per pass: 8 accumulators each */

BLOCK_FN void group_q8_0(int64_t n, const uint8_t *xg, const uint8_t *act, uint64_t act_row,
                         const int nt, float *y, int64_t ldy) {
    __m512 acc[NT8][8];
#pragma GCC unroll 2
    for (int t = 0; t < nt; t++)
#pragma GCC unroll 8
        for (int l = 0; l < 8; l++) acc[t][l] = _mm512_setzero_ps();
    const __m256i m80 = _mm256_set1_epi8((char)0x80);
    for (int64_t i = 0; i < n / 32; i++) {
        const uint8_t *b = xg + (uint64_t)i * MF_Q8_0_X16_BYTES;
        const __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)b));
        __m512 dd[NT8];
        _Alignas(32) int32_t off[NT8][8];
        const uint8_t *q[NT8];
#pragma GCC unroll 2
        for (int t = 0; t < nt; t++) {
            q[t] = act + (uint64_t)t * act_row + (uint64_t)i * MF_Q8_0_BYTES;
            dd[t] = _mm512_mul_ps(dw, _mm512_set1_ps(_cvtsh_ss(mf_rd16(q[t]))));
            const __m256i s = _mm256_dpbusd_epi32(_mm256_setzero_si256(), m80,
                                                  _mm256_loadu_si256((const __m256i *)(q[t] + 2)));
            _mm256_store_si256((__m256i *)off[t], _mm256_sub_epi32(_mm256_setzero_si256(), s));
        }
#pragma GCC unroll 8
        for (int l = 0; l < 8; l++) {
            const __m512i v = _mm512_loadu_si512(b + 32 + 64 * l);
#pragma GCC unroll 2
            for (int t = 0; t < nt; t++) {
                const __m512i isum = dpbusd_b(_mm512_set1_epi32(off[t][l]), v, q[t] + 2 + 4 * l);
                acc[t][l] = _mm512_fmadd_ps(dd[t], _mm512_cvtepi32_ps(isum), acc[t][l]);
            }
        }
    }
#pragma GCC unroll 2
    for (int t = 0; t < nt; t++) _mm512_storeu_ps(y + t * ldy, tree8_x16(acc[t]));
}

GEMM_PAIRS(gemm_q8_0_x16, group_q8_0)

/* ---- q4_0 / iq4_nl x16 ----
 * mf_ref_dot_q4_0/iq4_nl's order (llama.cpp's repacked GEMM): one chain per
 * row, acc = fma(I_b, dw*dy, acc) per block with I_b the exact block dot.
 * q4_0: I_b = sum(u * a) - 8 sum(a) over unsigned nibbles u, the high ones
 * kept in place (x16) in their own sum and shifted back; iq4_nl: the
 * nibbles index the levels + 128 with vpshufb and I_b = sum(L * a) -
 * 128 sum(a). The activation sum comes from vpdpbusd of 1-bytes. */
BLOCK_FN void group_q4_b32(int64_t n, const uint8_t *xg, const uint8_t *act, uint64_t act_row,
                           const int nt, const bool nl, float *y, int64_t ldy) {
    const __m512i m0f = _mm512_set1_epi8(0x0f), mf0 = _mm512_set1_epi8((char)0xf0);
    const __m512i lut = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)mf_iq4nl_levels_u));
    const __m256i ones = _mm256_set1_epi8(1);
    __m512 acc[NT_MAX];
#pragma GCC unroll 4
    for (int t = 0; t < nt; t++) acc[t] = _mm512_setzero_ps();
    for (int64_t i = 0; i < n / 32; i++) {
        const uint8_t *b = xg + (uint64_t)i * MF_Q4_0_X16_BYTES;
        const __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)b));
        __m512i lo[NT_MAX], hi[NT_MAX];
        const uint8_t *q[NT_MAX];
#pragma GCC unroll 4
        for (int t = 0; t < nt; t++) {
            q[t] = act + (uint64_t)t * act_row + (uint64_t)i * MF_Q8_0_BYTES;
            const __m256i s = _mm256_dpbusd_epi32(_mm256_setzero_si256(), ones,
                                                  _mm256_loadu_si256((const __m256i *)(q[t] + 2)));
            __m128i h = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
            h = _mm_add_epi32(h, _mm_shuffle_epi32(h, _MM_SHUFFLE(1, 0, 3, 2)));
            h = _mm_add_epi32(h, _mm_shuffle_epi32(h, _MM_SHUFFLE(2, 3, 0, 1)));
            lo[t] = _mm512_set1_epi32(-(nl ? 128 : 8) * _mm_cvtsi128_si32(h));
            hi[t] = _mm512_setzero_si512();
        }
#pragma GCC unroll 4
        for (int k = 0; k < 4; k++) {
            const __m512i v = _mm512_loadu_si512(b + 32 + 64 * k);
            __m512i vl, vh;
            if (nl) {
                vl = _mm512_shuffle_epi8(lut, _mm512_and_si512(v, m0f));
                vh = _mm512_shuffle_epi8(lut, _mm512_and_si512(_mm512_srli_epi16(v, 4), m0f));
            } else {
                vl = _mm512_and_si512(v, m0f);
                vh = _mm512_and_si512(v, mf0);
            }
#pragma GCC unroll 4
            for (int t = 0; t < nt; t++) {
                lo[t] = dpbusd_b(lo[t], vl, q[t] + 2 + 4 * k);
                hi[t] = dpbusd_b(hi[t], vh, q[t] + 18 + 4 * k);
            }
        }
#pragma GCC unroll 4
        for (int t = 0; t < nt; t++) {
            const __m512i isum = _mm512_add_epi32(lo[t], nl ? hi[t] : _mm512_srai_epi32(hi[t], 4));
            const __m512 d = _mm512_mul_ps(dw, _mm512_set1_ps(_cvtsh_ss(mf_rd16(q[t]))));
            acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), d, acc[t]);
        }
    }
#pragma GCC unroll 4
    for (int t = 0; t < nt; t++) _mm512_storeu_ps(y + t * ldy, acc[t]);
}

#define GEMM_B32(name, nl)                                                                         \
    static void name(int64_t n, int n_tok, float *y, int64_t ldy, const void *xg, const void *act,  \
                     uint64_t act_row) {                                                           \
        const uint8_t *a = act;                                                                    \
        int t = 0;                                                                                 \
        for (; t + 4 <= n_tok; t += 4)                                                             \
            group_q4_b32(n, xg, a + (uint64_t)t * act_row, act_row, 4, nl, y + t * ldy, ldy);      \
        switch (n_tok - t) {                                                                       \
        case 3: group_q4_b32(n, xg, a + (uint64_t)t * act_row, act_row, 3, nl, y + t * ldy, ldy); break; \
        case 2: group_q4_b32(n, xg, a + (uint64_t)t * act_row, act_row, 2, nl, y + t * ldy, ldy); break; \
        case 1: group_q4_b32(n, xg, a + (uint64_t)t * act_row, act_row, 1, nl, y + t * ldy, ldy); break; \
        default: break;                                                                            \
        }                                                                                          \
    }
GEMM_B32(gemm_q4_0_x16, false)
GEMM_B32(gemm_iq4_nl_x16, true)

/* ---- q6_K x16 ----
 * mf_ref_dot_q6_k's order, row by row: eight float lanes per row; lane l of
 * a super-block gets the exact I_l = sum over the elements e with e % 32 in
 * 4l..4l+3 of sc[e / 16] u_e a_e (u the unsigned 6-bit level), less 32
 * (sc_2l S_2l + sc_2l+1 S_2l+1), as lane_l = fma(d, I_l - off_l, lane_l);
 * then tree8. The four weights of a row in one dword are rebuilt from ql
 * and qh with shifts and masks, `vpmaddubsw` forms the two pair sums (at
 * most 2*63*128: no saturation) and `vpdpwssd` multiplies both by the
 * row's scale, a word pair per dword, and accumulates: register l of a
 * token holds I_l of the 16 rows. */
#define NT6 2

/* dword r = (s, s) as int16, s = the signed byte r of the 16 at p */
static inline __m512i scale_pair(const uint8_t *p) {
    const __m512i v = _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)p));
    return _mm512_or_si512(_mm512_and_si512(v, _mm512_set1_epi32(0xffff)), _mm512_slli_epi32(v, 16));
}

BLOCK_FN void group_q6_k(int64_t n, const uint8_t *xg, const uint8_t *act, uint64_t act_row,
                         const int nt, float *y, int64_t ldy) {
    const __m512i m0f = _mm512_set1_epi8(0x0f), m30 = _mm512_set1_epi8(0x30);
    __m512 lanes[NT6][8];
#pragma GCC unroll 2
    for (int t = 0; t < nt; t++)
#pragma GCC unroll 8
        for (int l = 0; l < 8; l++) lanes[t][l] = _mm512_setzero_ps();
    for (int64_t i = 0; i < n / QK_K; i++) {
        const uint8_t *b = xg + (uint64_t)i * MF_Q6K_X16_BYTES, *sc = b + 32;
        const __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)b));
        const uint8_t *q[NT6];
        __m512i isum[NT6][8];
#pragma GCC unroll 2
        for (int t = 0; t < nt; t++) {
            q[t] = act + (uint64_t)t * act_row + (uint64_t)i * MF_Q8_K_BYTES;
#pragma GCC unroll 8
            for (int l = 0; l < 8; l++) isum[t][l] = _mm512_setzero_si512();
        }
#pragma GCC unroll 2
        for (int h = 0; h < 2; h++)
#pragma GCC unroll 2
            for (int jh = 0; jh < 2; jh++) {
                __m512i sp[4]; /* quadrant q's elements 32q + 16jh.. use scale 8h + 2q + jh */
#pragma GCC unroll 4
                for (int qd = 0; qd < 4; qd++) sp[qd] = scale_pair(sc + 16 * (8 * h + 2 * qd + jh));
#pragma GCC unroll 4
                for (int j = 4 * jh; j < 4 * jh + 4; j++) {
                    const uint8_t *w = b + 288 + (h * 8 + j) * 192;
                    const __m512i A = _mm512_loadu_si512(w), B = _mm512_loadu_si512(w + 64);
                    const __m512i H = _mm512_loadu_si512(w + 128);
                    __m512i u[4];
                    u[0] = _mm512_ternarylogic_epi32(A, m0f, _mm512_and_si512(_mm512_slli_epi16(H, 4), m30), 0xEA);
                    u[1] = _mm512_ternarylogic_epi32(B, m0f, _mm512_and_si512(_mm512_slli_epi16(H, 2), m30), 0xEA);
                    u[2] = _mm512_ternarylogic_epi32(_mm512_srli_epi16(A, 4), m0f, _mm512_and_si512(H, m30), 0xEA);
                    u[3] = _mm512_ternarylogic_epi32(_mm512_srli_epi16(B, 4), m0f,
                                                     _mm512_and_si512(_mm512_srli_epi16(H, 2), m30), 0xEA);
#pragma GCC unroll 4
                    for (int qd = 0; qd < 4; qd++)
#pragma GCC unroll 2
                        for (int t = 0; t < nt; t++) {
                            const __m512i a = _mm512_set1_epi32((int)mf_rd32(q[t] + 4 + 128 * h + 32 * qd + 4 * j));
                            isum[t][j] = _mm512_dpwssd_epi32(isum[t][j], _mm512_maddubs_epi16(u[qd], a), sp[qd]);
                        }
                }
            }
#pragma GCC unroll 2
        for (int t = 0; t < nt; t++) {
            const __m512 d = _mm512_mul_ps(dw, _mm512_set1_ps(mf_q8k_d(q[t])));
#pragma GCC unroll 8
            for (int l = 0; l < 8; l++) {
                /* dword r: (sc_2l, sc_2l+1) of row r, times (S_2l, S_2l+1) */
                const __m512i pr = _mm512_or_si512(
                    _mm512_and_si512(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(sc + 32 * l))),
                                     _mm512_set1_epi32(0xffff)),
                    _mm512_slli_epi32(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(sc + 32 * l + 16))), 16));
                const __m512i off = _mm512_slli_epi32(_mm512_madd_epi16(pr, _mm512_set1_epi32((int)mf_rd32(q[t] + 260 + 4 * l))), 5);
                lanes[t][l] = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(_mm512_sub_epi32(isum[t][l], off)), lanes[t][l]);
            }
        }
    }
#pragma GCC unroll 2
    for (int t = 0; t < nt; t++) _mm512_storeu_ps(y + t * ldy, tree8_x16(lanes[t]));
}

GEMM_PAIRS(gemm_q6_k_x16, group_q6_k)

/* ---- q5_K x16 ----
 * mf_ref_dot_q5_k's order, row by row: eight float lanes, lane l += fma(d,
 * I_l) with I_l = sum over the elements e with e % 32 in 4l..4l+3 of
 * sc[e / 32] u_e a_e (u the unsigned 5-bit level), plus one chain summs =
 * fma(-dy*dmin, M, summs), M = sum_j mn_j S_j; tree8(lanes) + summs. The
 * fifth bit of sub-block s is bit s of the qh bytes, added as 16 under a
 * byte mask (`vptestmb`); `vpmaddubsw` + `vpdpwssd` with the scale as a
 * word pair, as q6_K. */
BLOCK_FN void group_q5_k(int64_t n, const uint8_t *xg, const uint8_t *act, uint64_t act_row,
                         const int nt, float *y, int64_t ldy) {
    const __m512i m0f = _mm512_set1_epi8(0x0f), b16 = _mm512_set1_epi8(16);
    __m512 lanes[NT6][8], summs[NT6];
#pragma GCC unroll 2
    for (int t = 0; t < nt; t++) {
        summs[t] = _mm512_setzero_ps();
#pragma GCC unroll 8
        for (int l = 0; l < 8; l++) lanes[t][l] = _mm512_setzero_ps();
    }
    for (int64_t i = 0; i < n / QK_K; i++) {
        const uint8_t *b = xg + (uint64_t)i * MF_Q5K_X16_BYTES;
        const __m512 dx = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)b));
        const __m512 mx = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(b + 32)));
        _Alignas(64) uint8_t sm[4][64];
        k4_scales_x16(b + 64, sm);
        const uint8_t *q[NT6];
        _Alignas(16) int32_t sp[NT6][4]; /* sp[t][p]: (S_2p, S_2p+1) as int16 */
        __m512i isum[NT6][8];
#pragma GCC unroll 2
        for (int t = 0; t < nt; t++) {
            q[t] = act + (uint64_t)t * act_row + (uint64_t)i * MF_Q8_K_BYTES;
            const __m256i bs = _mm256_loadu_si256((const __m256i *)(q[t] + 260));
            _mm_store_si128((__m128i *)sp[t], _mm_hadd_epi16(_mm256_castsi256_si128(bs), _mm256_extracti128_si256(bs, 1)));
#pragma GCC unroll 8
            for (int l = 0; l < 8; l++) isum[t][l] = _mm512_setzero_si512();
        }
#pragma GCC unroll 4
        for (int g = 0; g < 4; g++) {
            /* dword r: (sc, sc) of sub-blocks 2g and 2g + 1 of row r */
            const __m512i v0 = SM_U32(sm, 2 * g), v1 = SM_U32(sm, 2 * g + 1);
            const __m512i spl = _mm512_or_si512(v0, _mm512_slli_epi32(v0, 16));
            const __m512i sph = _mm512_or_si512(v1, _mm512_slli_epi32(v1, 16));
            const __m512i bl = _mm512_set1_epi8((char)(1 << (2 * g))), bh = _mm512_set1_epi8((char)(2 << (2 * g)));
#pragma GCC unroll 8
            for (int j = 0; j < 8; j++) {
                const __m512i Q = _mm512_loadu_si512(b + 768 + (g * 8 + j) * 64);
                const __m512i H = _mm512_loadu_si512(b + 256 + 64 * j);
                __m512i ul = _mm512_and_si512(Q, m0f), uh = _mm512_and_si512(_mm512_srli_epi16(Q, 4), m0f);
                ul = _mm512_mask_add_epi8(ul, _mm512_test_epi8_mask(H, bl), ul, b16);
                uh = _mm512_mask_add_epi8(uh, _mm512_test_epi8_mask(H, bh), uh, b16);
#pragma GCC unroll 2
                for (int t = 0; t < nt; t++) {
                    const uint8_t *q8 = q[t] + 4 + 64 * g + 4 * j;
                    isum[t][j] = _mm512_dpwssd_epi32(
                        isum[t][j], _mm512_maddubs_epi16(ul, _mm512_set1_epi32((int)mf_rd32(q8))), spl);
                    isum[t][j] = _mm512_dpwssd_epi32(
                        isum[t][j], _mm512_maddubs_epi16(uh, _mm512_set1_epi32((int)mf_rd32(q8 + 32))), sph);
                }
            }
        }
#pragma GCC unroll 2
        for (int t = 0; t < nt; t++) {
            const float dy = mf_q8k_d(q[t]);
            const __m512 d = _mm512_mul_ps(_mm512_set1_ps(dy), dx), dmin = _mm512_mul_ps(_mm512_set1_ps(-dy), mx);
            __m512i m = _mm512_setzero_si512();
#pragma GCC unroll 4
            for (int p = 0; p < 4; p++) {
                /* dword r: (mn_2p, mn_2p+1) of row r */
                const __m512i mw = _mm512_or_si512(SM_U32(sm, 8 + 2 * p), _mm512_slli_epi32(SM_U32(sm, 9 + 2 * p), 16));
                m = _mm512_add_epi32(m, _mm512_madd_epi16(mw, _mm512_set1_epi32(sp[t][p])));
            }
            summs[t] = _mm512_fmadd_ps(dmin, _mm512_cvtepi32_ps(m), summs[t]);
#pragma GCC unroll 8
            for (int l = 0; l < 8; l++)
                lanes[t][l] = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(isum[t][l]), lanes[t][l]);
        }
    }
#pragma GCC unroll 2
    for (int t = 0; t < nt; t++) _mm512_storeu_ps(y + t * ldy, _mm512_add_ps(tree8_x16(lanes[t]), summs[t]));
}

GEMM_PAIRS(gemm_q5_k_x16, group_q5_k)

void mf_avx512_install_pack(mf_type_traits table[MF_TYPE_COUNT]) {
    table[MF_TYPE_Q5_K].pack_rows = 16;
    table[MF_TYPE_Q5_K].pack = mf_pack_q5_k_x16;
    table[MF_TYPE_Q5_K].gemm_packed = gemm_q5_k_x16;
    table[MF_TYPE_Q6_K].pack_rows = 16;
    table[MF_TYPE_Q6_K].pack = mf_pack_q6_k_x16;
    table[MF_TYPE_Q6_K].gemm_packed = gemm_q6_k_x16;
    table[MF_TYPE_Q4_0].pack_rows = table[MF_TYPE_IQ4_NL].pack_rows = 16;
    table[MF_TYPE_Q4_0].pack = table[MF_TYPE_IQ4_NL].pack = mf_pack_q4_0_x16;
    table[MF_TYPE_Q4_0].gemm_packed = gemm_q4_0_x16;
    table[MF_TYPE_IQ4_NL].gemm_packed = gemm_iq4_nl_x16;
    table[MF_TYPE_Q8_0].pack_rows = 16;
    table[MF_TYPE_Q8_0].pack = mf_pack_q8_0_x16;
    table[MF_TYPE_Q8_0].gemm_packed = gemm_q8_0_x16;
    table[MF_TYPE_Q4_K].pack_rows = 16;
    table[MF_TYPE_Q4_K].pack = mf_pack_q4_k_x16;
    table[MF_TYPE_Q4_K].gemm_packed = gemm_q4_k_x16;
}
