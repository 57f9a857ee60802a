/* matmul.c — Y = X . W^T over the thread pool, for any weight type whose
 * traits have a vec_dot.
 *
 * Two phases. First the activation rows are converted to the weight's
 * vec_dot_type (f16, bf16, q8_0 blocks) in the caller's scratch, split over
 * threads by token rows (inline when the work is too small to be worth a
 * dispatch). Then output rows are split over threads; a thread walks its
 * rows once per tile of tokens (four rows at a time with vec_dot4 when
 * there are several tokens), dotting each with every token of the tile, so
 * a weight row is fetched from memory once per tile and re-read from L1 for
 * the other tokens. Every output is one dot product
 * of the same two rows in the same order whatever the thread count, the tile
 * or the batch (vec_dot4 is bit-identical to vec_dot by contract), which is
 * what makes the results bit-identical across all of them.
 *
 * Weights in a type's packed layout (16 rows interleaved; tensor.h) take
 * mf_matmul_packed_ld: the same conversion, then runs of row groups claimed
 * by the threads, each group multiplied by a tile's tokens in one call;
 * again every output is the reference's dot product, bit for bit. */
#include "tensor/kernels.h"

#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

/* Activation bytes a tile may hold, so the tile stays in L2 while the weight
 * rows stream past it. */
#define TILE_ACT_BYTES (192u * 1024u)
#define TILE_MAX 64
/* Below this many activation elements conversion runs on the caller. */
#define INLINE_CONVERT_ELEMS 65536

typedef struct mm_job {
    mf_vec_dot_fn dot;
    mf_gemm_packed_fn gemm;    /* packed W: one group of pack_rows rows per call */
    int pack_rows;
    atomic_llong next;         /* packed W: first unclaimed tile * groups + group */
    mf_vec_dot4_fn dot4;       /* NULL: rows one at a time */
    mf_from_float_fn convert;  /* NULL when the vec_dot_type is f32 */
    const uint8_t *w;          /* borrowed: (n_out, w_row) bytes */
    uint64_t w_row;
    const float *x;            /* borrowed: (n_tok, n_in) */
    const uint8_t *act;        /* borrowed: (n_tok, act_row) bytes of vec_dot_type */
    uint8_t *scratch;          /* borrowed: where act is written when converting */
    uint64_t act_row;
    float *y;                  /* borrowed: (n_tok, ldy), n_out used per row */
    int64_t n_in, n_out, n_tok, tile, ldy;
} mm_job;

static void convert_rows(const mm_job *j, int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; t++)
        j->convert(j->x + t * j->n_in, j->scratch + (uint64_t)t * j->act_row, j->n_in);
}

static void convert_task(void *ctx, int ith, int nth) {
    const mm_job *j = ctx;
    int64_t t0, t1;
    mf_split(j->n_tok, ith, nth, &t0, &t1);
    convert_rows(j, t0, t1);
}

/* Rows r0..r1 of the tile of tokens t0..t1: four rows at a time while the
 * kernel has a four-row form (same bits as one row at a time). */
static void dot_rows(const mm_job *j, int64_t r0, int64_t r1, int64_t t0, int64_t t1) {
    int64_t r = r0;
    for (; j->dot4 && r + 4 <= r1; r += 4) {
        const uint8_t *wr = j->w + (uint64_t)r * j->w_row;
        for (int64_t t = t0; t < t1; t++) {
            float s[4];
            j->dot4(j->n_in, s, wr, j->w_row, j->act + (uint64_t)t * j->act_row);
            for (int k = 0; k < 4; k++) j->y[t * j->ldy + r + k] = s[k];
        }
    }
    for (; r < r1; r++) {
        const uint8_t *wr = j->w + (uint64_t)r * j->w_row;
        for (int64_t t = t0; t < t1; t++)
            j->dot(j->n_in, j->y + t * j->ldy + r, wr, j->act + (uint64_t)t * j->act_row);
    }
}

static void dot_task(void *ctx, int ith, int nth) {
    const mm_job *j = ctx;
    int64_t r0, r1;
    mf_split(j->n_out, ith, nth, &r0, &r1);
    for (int64_t t0 = 0; t0 < j->n_tok; t0 += j->tile)
        dot_rows(j, r0, r1, t0, t0 + j->tile < j->n_tok ? t0 + j->tile : j->n_tok);
}

/* Packed W: threads claim runs of consecutive groups from a shared counter
 * over (tile, group), each run a sequential stream, guided-scheduling
 * style: a claim takes 1/(2 nth) of what is left of the tile (at least one
 * group), so runs start long and shrink towards the end, where a thread
 * slowed by its memory or the hypervisor would otherwise keep the others
 * waiting at the barrier. Which thread computes a group changes no bit. */
static void packed_task(void *ctx, int ith, int nth) {
    mm_job *j = ctx;
    (void)ith;
    int64_t n_groups = j->n_out / j->pack_rows, total = (j->n_tok + j->tile - 1) / j->tile * n_groups;
    uint64_t gbytes = j->w_row * (uint64_t)j->pack_rows;
    long long cur = atomic_load(&j->next);
    for (;;) {
        int64_t take;
        do {
            if (cur >= total) return;
            int64_t left = n_groups - cur % n_groups; /* in this tile */
            take = left / (2 * nth);
            if (take < 1) take = 1;
        } while (!atomic_compare_exchange_weak(&j->next, &cur, cur + take));
        int64_t t0 = cur / n_groups * j->tile, g0 = cur % n_groups;
        int nt = (int)(j->n_tok - t0 < j->tile ? j->n_tok - t0 : j->tile);
        for (int64_t g = g0; g < g0 + take; g++)
            j->gemm(j->n_in, nt, j->y + t0 * j->ldy + g * j->pack_rows, j->ldy, j->w + (uint64_t)g * gbytes,
                    j->act + (uint64_t)t0 * j->act_row, j->act_row);
        cur = atomic_load(&j->next);
    }
}

/* Vec_dot_type of wtype and the bytes of one converted activation row;
 * false if wtype cannot be multiplied or n_in is not whole blocks. */
static bool act_layout(int wtype, int64_t n_in, int *vtype, uint64_t *row) {
    if (n_in <= 0 || !mf_type_can_matmul(wtype)) return false;
    *vtype = mf_traits(wtype)->vec_dot_type;
    uint64_t wrow;
    return mf_type_row_bytes(wtype, (uint64_t)n_in, &wrow) &&
           mf_type_row_bytes(*vtype, (uint64_t)n_in, row);
}

uint64_t mf_matmul_scratch_bytes(int wtype, int64_t n_in, int64_t n_tok) {
    int vtype;
    uint64_t row, total;
    if (n_tok <= 0 || !act_layout(wtype, n_in, &vtype, &row)) return 0;
    if (vtype == MF_TYPE_F32) return 0; /* X is used as it is */
    return mf_mul_ok(row, (uint64_t)n_tok, &total) ? total : 0;
}

static int64_t tile_tokens(uint64_t act_row, int64_t n_tok) {
    int64_t tile = act_row ? (int64_t)(TILE_ACT_BYTES / act_row) : TILE_MAX;
    if (tile < 1) tile = 1;
    if (tile > TILE_MAX) tile = TILE_MAX;
    return tile < n_tok ? tile : n_tok;
}

void mf_matmul(mf_pool *pool, const void *w, int wtype, int64_t n_in, int64_t n_out,
               const float *x, int64_t n_tok, float *y, void *scratch) {
    mf_matmul_ld(pool, w, wtype, n_in, n_out, x, n_tok, y, n_out, scratch);
}

bool mf_can_pack(int wtype, int64_t n_in, int64_t n_out) {
    const mf_type_traits *tt = mf_traits(wtype);
    uint64_t row;
    if (!tt || tt->pack_rows <= 0 || n_out <= 0 || n_out % tt->pack_rows) return false;
    if (!mf_type_row_bytes(wtype, (uint64_t)n_in, &row) || n_in <= 0) return false;
    const char *e = getenv("MF_NO_REPACK");
    return !(e && *e && strcmp(e, "0") != 0);
}

bool mf_pack_rows(int wtype, const void *src, void *dst, int64_t n_in, int64_t n_out) {
    const mf_type_traits *tt = mf_traits(wtype);
    uint64_t row;
    if (!tt || tt->pack_rows <= 0 || !tt->pack || n_out % tt->pack_rows ||
        !mf_type_row_bytes(wtype, (uint64_t)n_in, &row))
        return false;
    uint64_t gbytes = row * (uint64_t)tt->pack_rows;
    uint8_t *tmp = src == dst ? malloc((size_t)gbytes) : NULL;
    if (src == dst && !tmp) return false;
    for (int64_t g = 0; g < n_out / tt->pack_rows; g++) {
        const uint8_t *s = (const uint8_t *)src + (uint64_t)g * gbytes;
        if (tmp) s = memcpy(tmp, s, (size_t)gbytes);
        tt->pack(s, row, (uint8_t *)dst + (uint64_t)g * gbytes, n_in);
    }
    free(tmp);
    return true;
}

static void matmul_any(mf_pool *pool, const void *w, int wtype, bool packed, int64_t n_in,
                       int64_t n_out, const float *x, int64_t n_tok, float *y, int64_t ldy,
                       void *scratch) {
    int vtype;
    mm_job j = {0};
    if (n_out <= 0 || n_tok <= 0) return;
    if (!act_layout(wtype, n_in, &vtype, &j.act_row) ||
        !mf_type_row_bytes(wtype, (uint64_t)n_in, &j.w_row) ||
        (vtype != MF_TYPE_F32 && !scratch) ||
        (packed && (mf_traits(wtype)->pack_rows <= 0 || n_out % mf_traits(wtype)->pack_rows))) {
        /* a caller bug (checked types are the caller's job): poison the
         * output rather than crash or leave stale numbers */
        for (int64_t t = 0; t < n_tok; t++)
            for (int64_t i = 0; i < n_out; i++) y[t * ldy + i] = NAN;
        return;
    }
    j.dot = mf_traits(wtype)->vec_dot;
    if (packed) {
        j.gemm = mf_traits(wtype)->gemm_packed;
        j.pack_rows = mf_traits(wtype)->pack_rows;
        atomic_init(&j.next, 0);
    }
    /* Decoding streams one row at a time: four interleaved row streams cost
     * a third of the DRAM bandwidth for q8_0 here (bench/bandwidth.c), while
     * with a tile of tokens the four-row kernel's extra FMA chains pay. Types
     * whose one-row kernel waits on a serial FMA chain (the AVX-512 q4_0,
     * iq4_nl, q4_K) decode four rows at a time too (those kernels read the
     * four rows one after another, not side by side): same bits either way. */
    j.dot4 = n_tok > 1 || mf_traits(wtype)->dot4_decode ? mf_traits(wtype)->vec_dot4 : NULL;
    j.w = w;
    j.x = x;
    j.y = y;
    j.n_in = n_in;
    j.n_out = n_out;
    j.ldy = ldy;
    j.n_tok = n_tok;
    j.tile = tile_tokens(j.act_row, n_tok);
    if (vtype == MF_TYPE_F32) {
        j.act = (const uint8_t *)x; /* f32 rows are their own vec_dot form */
    } else {
        const mf_type_traits *vt = mf_traits(vtype);
        j.convert = vt->act_from_float ? vt->act_from_float : vt->from_float;
        j.act = j.scratch = scratch;
        if (n_tok * n_in < INLINE_CONVERT_ELEMS || mf_pool_size(pool) == 1)
            convert_rows(&j, 0, n_tok);
        else
            mf_pool_run(pool, convert_task, &j);
    }
    mf_pool_run(pool, packed ? packed_task : dot_task, &j);
}

void mf_matmul_ld(mf_pool *pool, const void *w, int wtype, int64_t n_in, int64_t n_out,
                  const float *x, int64_t n_tok, float *y, int64_t ldy, void *scratch) {
    matmul_any(pool, w, wtype, false, n_in, n_out, x, n_tok, y, ldy, scratch);
}

void mf_matmul_packed_ld(mf_pool *pool, const void *w, int wtype, int64_t n_in, int64_t n_out,
                         const float *x, int64_t n_tok, float *y, int64_t ldy, void *scratch) {
    matmul_any(pool, w, wtype, true, n_in, n_out, x, n_tok, y, ldy, scratch);
}
