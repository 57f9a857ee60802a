/* kernels_q32_avx512.c — AVX-512 (F, BW, VL, VNNI) dot products of q4_0 and
 * iq4_nl weights with q8_0 activations, one row and four rows at a time.
 *
 * Compiled with the ISA_avx512 flags and installed by mf_avx512_install over
 * the AVX2 entries once the CPU check passed. The reference (kernels_q32_ref.c)
 * fixes one float chain per output, acc = fma((float)isum_b, dw_b*dy_b, acc),
 * block after block; only the integer block sums are free. Four blocks of a
 * row are gathered into one register with a word permute (their 16-byte qs
 * fields sit at even offsets), the nibbles meet the activations in vpdpbusd
 * (unsigned weights times signed activations, exact in int32), and the
 * signed offset is taken back exactly: q4_0 multiplies q (0..15) and
 * subtracts 8*sum(y); iq4_nl multiplies level+128 (1..241) and subtracts
 * 128*sum(y). Every int8 activation, -128 included, gives the exact sum. The
 * four-row kernel's transposed sums make each 4-lane FMA perform the four
 * rows' chain steps in the reference order; four independent chains are what
 * lets one core decode near the memory bandwidth (matmul.c uses the four-row
 * kernel for one token too when the traits ask for it). */
#include "tensor/kernels_avx512.h"


#define QK 32
#define XB 18 /* q4_0 and iq4_nl blocks alike: f16 d, u8 qs[16] */
#define YB MF_Q8_0_BYTES

#define R8(s) s, s + 1, s + 2, s + 3, s + 4, s + 5, s + 6, s + 7
#define R4(v) v, v, v, v
/* Word gathers: output word t of the four blocks' fields. */
/* qs at 2 + 18k; block 3's from the second load, x + 8 */
static const uint16_t idx_xqs[32] = {R8(1), R8(10), R8(19), R8(56)};
static const uint16_t idx_ylo[32] = {R8(1), R8(18), R8(35), R8(52)}; /* y + 2 + 34k */
static const uint16_t idx_yhi[32] = {R8(5), R8(22), R8(39), R8(56)}; /* (y + 8) + 10 + 34k */
static const uint16_t idx_dy[32] = {R4(0), R4(17), R4(34), R4(51)};
static const uint16_t idx_dx1[32] = {R4(0), R4(9), R4(18), R4(27)};
/* rows r, r+1 of four blocks: word 4k + r (r even) from the first source */
static const uint16_t idx_dx2[32] = {0, 32, 0, 32, 9, 41, 9, 41, 18, 50, 18, 50, 27, 59, 27, 59};

/* iq4_nl's levels, and the same plus 128 (unsigned, as vpdpbusd wants). */
static const int8_t lev[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                               1,    13,   25,  38,  53,  69,  89,  113};

static inline __m512i ld_idx(const uint16_t *w) { return _mm512_loadu_si512(w); }

/* What four consecutive activation blocks give every row: their first and
 * second 16-byte halves (lane k = block k), the start of each row's
 * accumulation, -(off * partial sums of y), and dy of block k (x4) in lane k. */
typedef struct { __m512i lo, hi, base; __m512 dy; } ygroup;

BLOCK_FN ygroup y_group(const uint8_t *y, int lut) {
    ygroup g;
    __m512i a = _mm512_loadu_si512(y), b = _mm512_loadu_si512(y + 64);
    g.lo = _mm512_permutex2var_epi16(a, ld_idx(idx_ylo), b);
    g.hi = _mm512_permutex2var_epi16(_mm512_loadu_si512(y + 8), ld_idx(idx_yhi),
                                     _mm512_loadu_si512(y + 72));
    const __m512i one = _mm512_set1_epi8(1);
    __m512i sy = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(_mm512_setzero_si512(), one, g.lo), one, g.hi);
    sy = lut ? _mm512_slli_epi32(sy, 7) : _mm512_slli_epi32(sy, 3);
    g.base = _mm512_sub_epi32(_mm512_setzero_si512(), sy);
    __m512i h = _mm512_permutex2var_epi16(a, ld_idx(idx_dy), b);
    g.dy = _mm512_cvtph_ps(_mm512_castsi512_si256(h));
    return g;
}

/* Lane k: four int32 partial sums of block k's exact dot with the group. */
BLOCK_FN __m512i row_isums(const uint8_t *x, const ygroup *g, int lut) {
    const __m512i m4 = _mm512_set1_epi8(0x0f);
    __m512i a = _mm512_loadu_si512(x), b = _mm512_loadu_si512(x + 8);
    __m512i qs = _mm512_permutex2var_epi16(a, ld_idx(idx_xqs), b);
    __m512i lo = _mm512_and_si512(qs, m4), hi = _mm512_and_si512(_mm512_srli_epi16(qs, 4), m4);
    if (lut) {
        const __m512i t = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)mf_iq4nl_levels_u));
        lo = _mm512_shuffle_epi8(t, lo);
        hi = _mm512_shuffle_epi8(t, hi);
    }
    return _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(g->base, lo, g->lo), hi, g->hi);
}

/* acc = fma(s_k, d_k, acc) for the four 128-bit lanes k in order. */
static inline __m128 chain4(__m512 s, __m512 d, __m128 acc) {
    acc = _mm_fmadd_ps(_mm512_castps512_ps128(s), _mm512_castps512_ps128(d), acc);
    acc = _mm_fmadd_ps(_mm512_extractf32x4_ps(s, 1), _mm512_extractf32x4_ps(d, 1), acc);
    acc = _mm_fmadd_ps(_mm512_extractf32x4_ps(s, 2), _mm512_extractf32x4_ps(d, 2), acc);
    return _mm_fmadd_ps(_mm512_extractf32x4_ps(s, 3), _mm512_extractf32x4_ps(d, 3), acc);
}

/* One block the scalar way (the n % 128 tail): the exact integer sum. */
static int32_t block_isum(const uint8_t *x, const uint8_t *y, int lut) {
    const int8_t *q8 = (const int8_t *)(y + 2);
    int32_t s = 0;
    for (int j = 0; j < 16; j++) {
        int lo = x[2 + j] & 15, hi = x[2 + j] >> 4;
        s += (lut ? lev[lo] : lo - 8) * q8[j] + (lut ? lev[hi] : hi - 8) * q8[j + 16];
    }
    return s;
}

static inline float dscale(const uint8_t *x, const uint8_t *y) {
    return _cvtsh_ss(mf_rd16(x)) * _cvtsh_ss(mf_rd16(y));
}

BLOCK_FN float chain1(int64_t n, const uint8_t *x, const uint8_t *y, int lut) {
    __m128 acc = _mm_setzero_ps();
    int64_t nb = n / QK, i = 0;
    for (; i + 4 <= nb; i += 4, x += 4 * XB, y += 4 * YB) {
        ygroup g = y_group(y, lut);
        __m512i r = row_isums(x, &g, lut);
        __m512i t = hadd32(r, r); /* lane k: its total, four times */
        __m512 s = _mm512_cvtepi32_ps(hadd32(t, t));
        __m512i h = _mm512_permutexvar_epi16(ld_idx(idx_dx1), _mm512_loadu_si512(x));
        __m512 d = _mm512_mul_ps(_mm512_cvtph_ps(_mm512_castsi512_si256(h)), g.dy);
        acc = chain4(s, d, acc);
    }
    float a = _mm_cvtss_f32(acc);
    for (; i < nb; i++, x += XB, y += YB) a = __builtin_fmaf((float)block_isum(x, y, lut), dscale(x, y), a);
    return a;
}

/* Lane 4k + r: dw of block k of row r times dy of block k. */
BLOCK_FN __m512 scales4(const uint8_t *x, uint64_t xs, __m512 dy) {
    const __m512i ix = ld_idx(idx_dx2);
    __m512i p01 = _mm512_permutex2var_epi16(_mm512_loadu_si512(x), ix, _mm512_loadu_si512(x + xs));
    __m512i p23 = _mm512_permutex2var_epi16(_mm512_loadu_si512(x + 2 * xs), ix,
                                            _mm512_loadu_si512(x + 3 * xs));
    __m512i h = _mm512_mask_blend_epi16(0xccccccccu, p01, p23);
    return _mm512_mul_ps(_mm512_cvtph_ps(_mm512_castsi512_si256(h)), dy);
}

/* Groups of four blocks per pass of the four-row kernel (8192 elements,
 * 32 KiB of stack): rows up to this long are read whole, one after another
 * (passes of 4096 elements walk the rows in pieces, which reads DRAM far
 * slower here: 7.0 against 9.5 GB/s at 5632 elements per row, 1 thread). */
#define CHUNK 64

/* The four rows' chains, in two stages per chunk: the integer sums are
 * taken row after row (on this VM, DRAM streams one sequential row at ~30
 * GB/s but four rows walked side by side at ~11, software prefetch or not),
 * and kept; then the four chains run together on the kept sums (lane r of
 * each 4-lane FMA is row r's step, in the reference order). */
BLOCK_FN void chain4rows(int64_t n, float s[4], const uint8_t *x, uint64_t xs, const uint8_t *y,
                         int lut) {
    ygroup yg[CHUNK];
    __m512i isum[CHUNK][4];
    __m128 acc = _mm_setzero_ps();
    int64_t nb = n / QK, ng = nb / 4;
    for (int64_t g0 = 0; g0 < ng; g0 += CHUNK) {
        int m = ng - g0 < CHUNK ? (int)(ng - g0) : CHUNK;
        const uint8_t *a = x + g0 * 4 * XB;
        for (int g = 0; g < m; g++) yg[g] = y_group(y + (g0 + g) * 4 * YB, lut);
        for (int r = 0; r < 4; r++)
            for (int g = 0; g < m; g++) isum[g][r] = row_isums(a + r * xs + g * 4 * XB, &yg[g], lut);
        for (int g = 0; g < m; g++) {
            __m512i t = hadd32(hadd32(isum[g][0], isum[g][1]), hadd32(isum[g][2], isum[g][3]));
            acc = chain4(_mm512_cvtepi32_ps(t), scales4(a + g * 4 * XB, xs, yg[g].dy), acc);
        }
    }
    _mm_storeu_ps(s, acc);
    for (int64_t i = 4 * ng; i < nb; i++) {
        for (int r = 0; r < 4; r++) {
            const uint8_t *a = x + r * xs + i * XB;
            const uint8_t *b = y + i * YB;
            s[r] = __builtin_fmaf((float)block_isum(a, b, lut), dscale(a, b), s[r]);
        }
    }
}

static void dot_q4_0(int64_t n, float *s, const void *x, const void *y) { *s = chain1(n, x, y, 0); }
static void dot_iq4_nl(int64_t n, float *s, const void *x, const void *y) { *s = chain1(n, x, y, 1); }
static void dot4_q4_0(int64_t n, float s[4], const void *x, uint64_t xs, const void *y) {
    chain4rows(n, s, x, xs, y, 0);
}
static void dot4_iq4_nl(int64_t n, float s[4], const void *x, uint64_t xs, const void *y) {
    chain4rows(n, s, x, xs, y, 1);
}

void mf_avx512_install_q32(mf_type_traits table[MF_TYPE_COUNT]) {
    table[MF_TYPE_Q4_0].vec_dot = dot_q4_0;
    table[MF_TYPE_Q4_0].vec_dot4 = dot4_q4_0;
    table[MF_TYPE_Q4_0].dot4_decode = true;
    table[MF_TYPE_IQ4_NL].vec_dot = dot_iq4_nl;
    table[MF_TYPE_IQ4_NL].vec_dot4 = dot4_iq4_nl;
    table[MF_TYPE_IQ4_NL].dot4_decode = true;
}
