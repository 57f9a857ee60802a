/*
 * ops/cuda/sparse.cu — the CUDA side of the sparse family
 * (lowvram/sparse_cuda.h): N:M masks, compression to kept values + bit masks
 * and back, the products on compressed weights (sparse_linear,
 * sparse_qlinear), their input gradients, and the cuSPARSELt 2:4 path.
 * Launchers validate arguments as the CPU kernels do, enqueue on the caller's
 * stream, check every launch, and never allocate, print or synchronize.
 *
 * Bit-exactness with ops/cpu/sparse_ref.c, as in qgemm.cu: int32 sums are
 * exact in any order; every float operation is an explicit _rn intrinsic in
 * the contract's order (--fmad=false as a second line of defence); float
 * conversions are lowvram/convert.h's; the int8 epilogue is
 * qgemm_epilogue.cuh's, the same device code as the dense qlinear.
 *
 * Kernels and why:
 *   - masks / compress / decompress: one warp per row, 32 columns per step;
 *     a ballot (compress) or the mask word (decompress) gives each lane the
 *     index of its kept value by a popcount of the bits below it.
 *   - sparse_linear: the contract fixes 16 lanes (lane l sums k = l, l + 16,
 *     ... with fmaf) and a tree. A thread here IS a contract lane: 16
 *     consecutive threads share an output; the tree is shfl_xor 8, 4, 2, 1
 *     (a + b == b + a exactly, so both partners hold the contract's sum).
 *     M <= 16: one warp per n, its two half-warps on different rows, each
 *     thread MR rows. M > 16: 64 x 64 (M x N) tiles through shared memory,
 *     each 16-thread group 8 x 8 outputs, k in tiles of 64 (a multiple of 16,
 *     so a thread's column is always k = l mod 16). cuSPARSE SpMM would be
 *     faster at large M but sums in its own order: not used.
 *   - sparse_qlinear (M <= 16 in the shim, any M here): one warp per n, MR
 *     rows; each lane takes a 32-column chunk, finds its values' offset by a
 *     warp scan of the chunk popcounts, expands the kept codes under the mask
 *     bits into 8 packed words and __dp4a's them with the activation codes.
 *   - grad_input: qgemm.cu's tiling (32 rows x 64 columns, n in tiles of 32
 *     through shared memory, fmaf over n in order, pruned zeros included),
 *     with the weight tile expanded from the compressed form through a table
 *     of per-row, per-64-column value offsets (the caller's workspace).
 *   - cuSPARSELt (LOWVRAM_WITH_CUSPARSELT), the int8 "TN" form: structured
 *     A = W [N, K] row-major seen as column-major K x N with op(A) = A^T
 *     (2:4 along K), B = xq [Mp, K] row-major = column-major K x Mp, D =
 *     int32 column-major N x Mp = [Mp, N] row-major; then the shared epilogue. Plans are
 *     cached per (device, N, K, Mp) under a mutex; handles per device.
 */
#include <cuda_runtime.h>

#include <mutex>
#include <stdint.h>
#include <stdio.h>

#ifdef LOWVRAM_WITH_CUSPARSELT
#include <cusparseLt.h>
#include <map>
#include <tuple>
#endif

#include "lowvram/convert.h"
#include "lowvram/qgemm.h"
#include "lowvram/sparse.h"
#include "lowvram/sparse_cuda.h"
#include "qgemm_epilogue.cuh"

namespace {

thread_local char t_last_error[512] = "";

lv_status cuda_failure(const char *what, cudaError_t err) {
    snprintf(t_last_error, sizeof t_last_error, "%s: %s (%s)", what, cudaGetErrorString(err),
             cudaGetErrorName(err));
    return LV_E_CUDA;
}

lv_status check_launch(const char *kernel) {
    cudaError_t err = cudaGetLastError();
    return err == cudaSuccess ? LV_OK : cuda_failure(kernel, err);
}

bool valid_dtype(lv_dtype dt) { return dt == LV_F32 || dt == LV_BF16 || dt == LV_F16; }
bool valid_esz(int esz) { return esz == 1 || esz == 2 || esz == 4; }
bool aligned(const void *p, uintptr_t a) { return ((uintptr_t)p % a) == 0; }
int64_t round_up(int64_t v, int64_t a) { return (v + a - 1) / a * a; }
__host__ __device__ __forceinline__ int64_t mask_bytes(int64_t K) { return (K + 7) / 8; }

unsigned grid_1d(int64_t items, int per_block) {
    const int64_t blocks = (items + per_block - 1) / per_block;
    return (unsigned)(blocks < (1 << 20) ? (blocks > 0 ? blocks : 1) : (1 << 20));
}

/* Blocks of kRowWarps rows (the row kernels do not grid-stride). */
unsigned grid_rows(int64_t rows) { return (unsigned)((rows + 3) / 4); }

unsigned grid_y(int64_t tiles) { return (unsigned)(tiles < 65535 ? (tiles > 0 ? tiles : 1) : 65535); }

constexpr unsigned kFull = 0xffffffffu;
constexpr int kRowWarps = 4; /* warps (rows or output features) per block */

__device__ __forceinline__ float load_f32(const void *p, int dt, int64_t i) {
    return lv_load_f32(p, (lv_dtype)dt, i);
}
__device__ __forceinline__ void store_f32(void *p, int dt, int64_t i, float v) {
    lv_store_f32(p, (lv_dtype)dt, i, v);
}

/* Element copy of `esz` bytes (bit patterns, as the CPU's memcpy). */
__device__ __forceinline__ void copy_elem(void *dst, int64_t di, const void *src, int64_t si,
                                          int esz) {
    if (esz == 1)
        ((uint8_t *)dst)[di] = ((const uint8_t *)src)[si];
    else if (esz == 2)
        ((uint16_t *)dst)[di] = ((const uint16_t *)src)[si];
    else
        ((uint32_t *)dst)[di] = ((const uint32_t *)src)[si];
}

__device__ __forceinline__ void zero_elem(void *dst, int64_t di, int esz) {
    if (esz == 1)
        ((uint8_t *)dst)[di] = 0;
    else if (esz == 2)
        ((uint16_t *)dst)[di] = 0;
    else
        ((uint32_t *)dst)[di] = 0;
}

/* Bits [c, c + 32) of a mask row (c a multiple of 8), 0 past byte KB - 1. */
__device__ __forceinline__ uint32_t mask_word32(const uint8_t *bits, int64_t c, int64_t KB) {
    const int64_t b = c >> 3;
    uint32_t w = 0;
#pragma unroll
    for (int i = 0; i < 4; i++)
        if (b + i < KB) w |= (uint32_t)bits[b + i] << (8 * i);
    return w;
}

/* Bits [c, c + 64) of a mask row (c a multiple of 8). */
__device__ __forceinline__ uint64_t mask_word64(const uint8_t *bits, int64_t c, int64_t KB) {
    const int64_t b = c >> 3;
    uint64_t w = 0;
#pragma unroll
    for (int i = 0; i < 8; i++)
        if (b + i < KB) w |= (uint64_t)bits[b + i] << (8 * i);
    return w;
}

/* Bits [c, c + 16) (c a multiple of 16). */
__device__ __forceinline__ uint32_t mask_word16(const uint8_t *bits, int64_t c, int64_t KB) {
    const int64_t b = c >> 3;
    uint32_t w = b < KB ? bits[b] : 0u;
    if (b + 1 < KB) w |= (uint32_t)bits[b + 1] << 8;
    return w;
}

/* 1 unless the row keeps exactly KV weights and no bit past K is set. */
__device__ __forceinline__ bool row_count_bad(const uint8_t *bits, int64_t K, int64_t KV,
                                              int lane) {
    const int64_t KB = mask_bytes(K);
    int64_t c = 0;
    for (int64_t b = lane; b < KB; b += 32) c += __popc(bits[b]);
    for (int o = 16; o > 0; o >>= 1) c += __shfl_xor_sync(kFull, c, o);
    const bool past = (K % 8) && (bits[KB - 1] >> (K % 8));
    return c != KV || past;
}

__device__ __forceinline__ int warp_sum(int v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(kFull, v, o);
    return v;
}

/* Inclusive prefix sum over the warp's lanes. */
__device__ __forceinline__ int warp_scan(int v, int lane) {
    for (int o = 1; o < 32; o <<= 1) {
        const int u = __shfl_up_sync(kFull, v, o);
        if (lane >= o) v += u;
    }
    return v;
}

/* ---------------------------------------------------------------------------
 * Masks, compression, decompression: one warp per row.
 * ------------------------------------------------------------------------- */

/* One thread per (row, group of m columns): the reference's rank rule. */
__global__ void nm_mask_kernel(const float *score, int64_t lds, int64_t N, int64_t K, int n,
                               int m, uint8_t *keep, int64_t ldk, int *flags) {
    const int64_t groups = K / m, total = N * groups;
    for (int64_t item = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; item < total;
         item += (int64_t)gridDim.x * blockDim.x) {
        const int64_t r = item / groups, g0 = (item % groups) * m;
        const float *s = score + r * lds + g0;
        bool nan = false;
        for (int i = 0; i < m; i++) nan |= isnan(s[i]);
        if (nan) {
            atomicOr(flags, LV_SPARSE_FLAG_NAN);
            continue;
        }
        for (int i = 0; i < m; i++) {
            const float si = s[i];
            int ahead = 0;
            for (int j = 0; j < m; j++) {
                const float sj = s[j];
                ahead += (sj > si || (sj == si && j < i));
            }
            keep[r * ldk + g0 + i] = (uint8_t)(ahead < n);
        }
    }
}

__global__ void __launch_bounds__(32 * kRowWarps)
    compress_kernel(const void *w, int esz, int64_t ldw, const uint8_t *keep, int64_t ldk,
                    int64_t N, int64_t K, int64_t KV, void *values, int64_t ldv,
                    uint8_t *mask_bits, int64_t ldb, int *flags) {
    const int lane = threadIdx.x & 31;
    const int64_t r = (int64_t)blockIdx.x * kRowWarps + (threadIdx.x >> 5);
    if (r >= N) return;
    const int64_t KB = mask_bytes(K);
    uint8_t *bits = mask_bits + r * ldb;
    int64_t j = 0; /* values written before this step (warp-uniform) */
    for (int64_t k0 = 0; k0 < K; k0 += 32) {
        const int64_t k = k0 + lane;
        const bool kept = k < K && keep[r * ldk + k] != 0;
        const uint32_t ballot = __ballot_sync(kFull, kept);
        const int64_t pos = j + __popc(ballot & ((1u << lane) - 1u));
        if (kept && pos < KV) copy_elem(values, r * ldv + pos, w, r * ldw + k, esz);
        if (lane < 4 && (k0 >> 3) + lane < KB)
            bits[(k0 >> 3) + lane] = (uint8_t)(ballot >> (8 * lane));
        j += __popc(ballot);
    }
    if (lane == 0 && j != KV) atomicOr(flags, LV_SPARSE_FLAG_COUNT);
}

__global__ void __launch_bounds__(32 * kRowWarps)
    decompress_kernel(const void *values, int esz, int64_t ldv, const uint8_t *mask_bits,
                      int64_t ldb, int64_t N, int64_t K, int64_t KV, void *w, int64_t ldw,
                      int *flags) {
    const int lane = threadIdx.x & 31;
    const int64_t r = (int64_t)blockIdx.x * kRowWarps + (threadIdx.x >> 5);
    if (r >= N) return;
    const int64_t KB = mask_bytes(K);
    const uint8_t *bits = mask_bits + r * ldb;
    if (flags && row_count_bad(bits, K, KV, lane)) {
        if (lane == 0) atomicOr(flags, LV_SPARSE_FLAG_COUNT);
    }
    int64_t j = 0;
    for (int64_t k0 = 0; k0 < K; k0 += 32) {
        uint32_t word = mask_word32(bits, k0, KB);
        if (K - k0 < 32) word &= (1u << (K - k0)) - 1u; /* columns past K never count */
        const int64_t k = k0 + lane;
        if (k < K) {
            const int64_t pos = j + __popc(word & ((1u << lane) - 1u));
            if ((word >> lane & 1u) && pos < KV)
                copy_elem(w, r * ldw + k, values, r * ldv + pos, esz);
            else
                zero_elem(w, r * ldw + k, esz);
        }
        j += __popc(word);
    }
}

/* Per row: LV_SPARSE_FLAG_COUNT and LV_SPARSE_FLAG_NOT_2_4. */
__global__ void __launch_bounds__(32 * kRowWarps)
    check_masks_kernel(const uint8_t *mask_bits, int64_t ldb, int64_t N, int64_t K, int64_t KV,
                       int *flags) {
    const int lane = threadIdx.x & 31;
    const int64_t r = (int64_t)blockIdx.x * kRowWarps + (threadIdx.x >> 5);
    if (r >= N) return;
    const uint8_t *bits = mask_bits + r * ldb;
    const bool bad = row_count_bad(bits, K, KV, lane);
    bool not24 = K % 4 != 0;
    if (!not24)
        for (int64_t b = lane; b < K / 8 + (K % 8 ? 1 : 0); b += 32) {
            const unsigned v = bits[b];
            if (__popc(v & 15u) != 2 || (8 * b + 4 < K && __popc(v >> 4) != 2)) not24 = true;
        }
    not24 = __any_sync(kFull, not24);
    if (lane == 0) {
        int f = (bad ? LV_SPARSE_FLAG_COUNT : 0) | (not24 ? LV_SPARSE_FLAG_NOT_2_4 : 0);
        if (f) atomicOr(flags, f);
    }
}

/* offsets[n, b] = kept values of row n before column 64 b (int32), one warp
 * per row. */
__global__ void __launch_bounds__(32 * kRowWarps)
    offsets_kernel(const uint8_t *mask_bits, int64_t ldb, int64_t N, int64_t K,
                   int32_t *offsets) {
    const int lane = threadIdx.x & 31;
    const int64_t r = (int64_t)blockIdx.x * kRowWarps + (threadIdx.x >> 5);
    if (r >= N) return;
    const int64_t KB = mask_bytes(K), NB = (K + 63) / 64;
    const uint8_t *bits = mask_bits + r * ldb;
    int32_t base = 0;
    for (int64_t b0 = 0; b0 < NB; b0 += 32) {
        const int64_t b = b0 + lane;
        const int c = b < NB ? __popcll(mask_word64(bits, 64 * b, KB)) : 0;
        const int incl = warp_scan(c, lane);
        if (b < NB) offsets[r * NB + b] = base + incl - c;
        base += __shfl_sync(kFull, incl, 31);
    }
}

/* ---------------------------------------------------------------------------
 * sparse_linear: the contract's 16 lanes and tree.
 * ------------------------------------------------------------------------- */

/* The fixed tree over the 16 lanes of a 16-thread group (every thread of the
 * group ends with y): s8 = l[i] + l[i+8], s4, s2, y = s2[0] + s2[1]. */
__device__ __forceinline__ float lane_tree16(float v) {
    v = __fadd_rn(v, __shfl_xor_sync(kFull, v, 8));
    v = __fadd_rn(v, __shfl_xor_sync(kFull, v, 4));
    v = __fadd_rn(v, __shfl_xor_sync(kFull, v, 2));
    return __fadd_rn(v, __shfl_xor_sync(kFull, v, 1));
}

/* M <= 16: one warp per n; half-warp h holds rows m0 + h * MR .. + MR. */
template <int MR>
__global__ void __launch_bounds__(32 * kRowWarps)
    sparse_gemm_warp_kernel(const void *x, int xdt, int64_t ldx, const void *values, int vdt,
                            int64_t ldv, const uint8_t *mask_bits, int64_t ldb, int64_t KV,
                            const float *bias, int64_t M, int64_t N, int64_t K, void *y,
                            int ydt, int64_t ldy) {
    const int lane = threadIdx.x & 31, l = lane & 15, half = lane >> 4;
    const int64_t n = (int64_t)blockIdx.x * kRowWarps + (threadIdx.x >> 5);
    if (n >= N) return;
    const int64_t KB = mask_bytes(K);
    const uint8_t *bits = mask_bits + n * ldb;
    for (int64_t mt = (int64_t)blockIdx.y * 2 * MR; mt < M; mt += (int64_t)gridDim.y * 2 * MR) {
        const int64_t m0 = mt + half * MR;
        float acc[MR];
#pragma unroll
        for (int r = 0; r < MR; r++) acc[r] = 0.0f;
        int64_t j = 0; /* kept values before column kb (uniform) */
        for (int64_t kb = 0; kb < K; kb += 16) {
            const uint32_t word = mask_word16(bits, kb, KB);
            const int64_t k = kb + l;
            if (k < K) {
                float w = 0.0f;
                const int64_t pos = j + __popc(word & ((1u << l) - 1u));
                if ((word >> l & 1u) && pos < KV) w = load_f32(values, vdt, n * ldv + pos);
#pragma unroll
                for (int r = 0; r < MR; r++)
                    if (m0 + r < M) acc[r] = __fmaf_rn(load_f32(x, xdt, (m0 + r) * ldx + k), w, acc[r]);
            }
            j += __popc(word);
        }
#pragma unroll
        for (int r = 0; r < MR; r++) {
            const float v = lane_tree16(acc[r]); /* all 32 lanes take part */
            if (l == 0 && m0 + r < M) {
                float o = v;
                if (bias) o = __fadd_rn(o, bias[n]);
                store_f32(y, ydt, (m0 + r) * ldy + n, o);
            }
        }
    }
}

constexpr int kTileM = 32, kTileN = 32, kTileK = 64; /* sparse_gemm_tile_kernel */
constexpr int kTileThreads = 256;                    /* 16 groups of 16 contract lanes */
constexpr int kTileRM = 8, kTileRN = 8;              /* outputs per group: 8 x 8 */

/* M > 16: a kTileM x kTileN block of outputs. Group g (threads 16 g ..
 * 16 g + 15, thread = contract lane l) owns rows (g % 4) * 8 .. + 8 and
 * columns (g / 4) * 8 .. + 8 of the block; x and the expanded weights pass
 * through shared memory in k tiles of 64. */
__global__ void __launch_bounds__(kTileThreads)
    sparse_gemm_tile_kernel(const void *x, int xdt, int64_t ldx, const void *values, int vdt,
                            int64_t ldv, const uint8_t *mask_bits, int64_t ldb, int64_t KV,
                            const int32_t *offsets, const float *bias, int64_t M, int64_t N,
                            int64_t K, void *y, int ydt, int64_t ldy) {
    static_assert(kTileM / kTileRM * (kTileN / kTileRN) * 16 == kTileThreads, "tiling");
    __shared__ float s_x[kTileM][kTileK + 1];
    __shared__ float s_w[kTileN][kTileK + 1];
    __shared__ uint64_t s_bits[kTileN];
    __shared__ int32_t s_off[kTileN];
    const int tid = threadIdx.x, l = tid & 15, grp = tid >> 4;
    const int gm = grp % (kTileM / kTileRM), gn = grp / (kTileM / kTileRM);
    const int64_t n0 = (int64_t)blockIdx.x * kTileN;
    const int64_t KB = mask_bytes(K), NB = (K + 63) / 64;
    for (int64_t mt = (int64_t)blockIdx.y * kTileM; mt < M; mt += (int64_t)gridDim.y * kTileM) {
        float acc[kTileRM][kTileRN];
#pragma unroll
        for (int i = 0; i < kTileRM; i++)
#pragma unroll
            for (int c = 0; c < kTileRN; c++) acc[i][c] = 0.0f;
        for (int64_t kt = 0; kt < K; kt += kTileK) {
            __syncthreads(); /* the previous tile has been consumed */
            if (tid < kTileN) {
                const int64_t n = n0 + tid;
                s_bits[tid] = n < N ? mask_word64(mask_bits + n * ldb, kt, KB) : 0;
                s_off[tid] = n < N ? offsets[n * NB + kt / 64] : 0;
            }
            for (int i = tid; i < kTileM * kTileK; i += kTileThreads) {
                const int mi = i / kTileK, ki = i % kTileK;
                const int64_t m = mt + mi, k = kt + ki;
                s_x[mi][ki] = (m < M && k < K) ? load_f32(x, xdt, m * ldx + k) : 0.0f;
            }
            __syncthreads();
            for (int i = tid; i < kTileN * kTileK; i += kTileThreads) {
                const int ni = i / kTileK, ki = i % kTileK;
                const uint64_t word = s_bits[ni];
                const int64_t pos =
                    s_off[ni] + __popcll(ki ? word & ((~0ull) >> (64 - ki)) : 0ull);
                float w = 0.0f;
                if ((word >> ki & 1ull) && pos < KV)
                    w = load_f32(values, vdt, (n0 + ni) * ldv + pos);
                s_w[ni][ki] = w;
            }
            __syncthreads();
#pragma unroll
            for (int s = 0; s < kTileK / 16; s++) {
                const int ki = s * 16 + l;
                if (kt + ki < K) {
                    float xv[kTileRM], wv[kTileRN];
#pragma unroll
                    for (int i = 0; i < kTileRM; i++) xv[i] = s_x[gm * kTileRM + i][ki];
#pragma unroll
                    for (int c = 0; c < kTileRN; c++) wv[c] = s_w[gn * kTileRN + c][ki];
#pragma unroll
                    for (int i = 0; i < kTileRM; i++)
#pragma unroll
                        for (int c = 0; c < kTileRN; c++)
                            acc[i][c] = __fmaf_rn(xv[i], wv[c], acc[i][c]);
                }
            }
        }
#pragma unroll
        for (int i = 0; i < kTileRM; i++)
#pragma unroll
            for (int c = 0; c < kTileRN; c++) {
                const float v = lane_tree16(acc[i][c]);
                const int64_t m = mt + gm * kTileRM + i, n = n0 + gn * kTileRN + c;
                if (l == 0 && m < M && n < N) {
                    float o = v;
                    if (bias) o = __fadd_rn(o, bias[n]);
                    store_f32(y, ydt, m * ldy + n, o);
                }
            }
    }
}

/* ---------------------------------------------------------------------------
 * sparse_qlinear: one warp per n on the compressed bytes, __dp4a.
 * ------------------------------------------------------------------------- */

/* Expands the kept codes of a 32-column chunk (mask word `word`, values from
 * v[pos..]) into 8 packed words of 4 codes (0 where pruned). Never reads at
 * or past v[KV]. */
__device__ __forceinline__ void expand_chunk(uint32_t word, const int8_t *v, int64_t pos,
                                             int64_t KV, uint32_t packed[8]) {
#pragma unroll
    for (int q = 0; q < 8; q++) {
        uint32_t p = 0;
#pragma unroll
        for (int t = 0; t < 4; t++) {
            if (word >> (4 * q + t) & 1u) {
                const uint32_t c = pos < KV ? (uint32_t)(uint8_t)v[pos] : 0u;
                p |= c << (8 * t);
                pos++;
            }
        }
        packed[q] = p;
    }
}

template <int MR>
__global__ void __launch_bounds__(32 * kRowWarps)
    sparse_qgemm_warp_kernel(const int8_t *xq, int64_t ldx, const float *xscale,
                             const int8_t *qvalues, int64_t ldv, const uint8_t *mask_bits,
                             int64_t ldb, int64_t KV, const float *wscale, int64_t G,
                             int64_t gs, const float *bias, int64_t M, int64_t N, int64_t K,
                             void *y, int ydt, int64_t ldy, int xvec) {
    const int lane = threadIdx.x & 31;
    const int64_t n = (int64_t)blockIdx.x * kRowWarps + (threadIdx.x >> 5);
    if (n >= N) return;
    const int64_t KB = mask_bytes(K);
    const uint8_t *bits = mask_bits + n * ldb;
    const int8_t *vr = qvalues + n * ldv;
    for (int64_t m0 = (int64_t)blockIdx.y * MR; m0 < M; m0 += (int64_t)gridDim.y * MR) {
        float t[MR];
#pragma unroll
        for (int r = 0; r < MR; r++) t[r] = 0.0f;
        int64_t base = 0; /* kept values before the current round (uniform) */
        for (int64_t g = 0; g < G; g++) {
            const int64_t k0 = g * gs, k1 = k0 + gs;
            int acc[MR];
#pragma unroll
            for (int r = 0; r < MR; r++) acc[r] = 0;
            for (int64_t c0 = k0; c0 < k1; c0 += 32 * 32) {
                const int64_t ck = c0 + 32 * (int64_t)lane; /* this lane's chunk */
                uint32_t word = 0;
                if (ck < k1) {
                    word = mask_word32(bits, ck, KB);
                    if (K - ck < 32) word &= (1u << (K - ck)) - 1u;
                }
                const int cnt = __popc(word);
                const int incl = warp_scan(cnt, lane);
                const int64_t pos = base + incl - cnt;
                base += __shfl_sync(kFull, incl, 31);
                if (word) {
                    uint32_t wq[8];
                    expand_chunk(word, vr, pos, KV, wq);
                    if (xvec && ck + 32 <= K) {
#pragma unroll
                        for (int r = 0; r < MR; r++) {
                            if (m0 + r < M) {
                                const int *xr = (const int *)(xq + (m0 + r) * ldx + ck);
#pragma unroll
                                for (int q = 0; q < 8; q++) acc[r] = __dp4a(xr[q], (int)wq[q], acc[r]);
                            }
                        }
                    } else {
#pragma unroll
                        for (int r = 0; r < MR; r++) {
                            if (m0 + r < M) {
                                const int8_t *xr = xq + (m0 + r) * ldx + ck;
#pragma unroll
                                for (int i = 0; i < 32; i++) /* constant indices: wq stays in registers */
                                    if (ck + i < K)
                                        acc[r] += (int)xr[i] * (int)(int8_t)(wq[i >> 2] >> (8 * (i & 3)));
                            }
                        }
                    }
                }
            }
            const float ws = wscale[n * G + g];
#pragma unroll
            for (int r = 0; r < MR; r++)
                t[r] = lv_qgemm_combine(t[r], g, lv_qgemm_group_term(warp_sum(acc[r]), ws));
        }
#pragma unroll
        for (int r = 0; r < MR; r++)
            if (lane == r && m0 + r < M)
                store_f32(y, ydt, (m0 + r) * ldy + n, lv_qgemm_finish(t[r], xscale[m0 + r], bias, n));
    }
}

template <int MR>
lv_status launch_sparse_qgemm(dim3 grid, cudaStream_t st, const int8_t *xq, int64_t ldx,
                              const float *xscale, const int8_t *qv, int64_t ldv,
                              const uint8_t *mb, int64_t ldb, int64_t KV, const float *wscale,
                              int64_t G, int64_t gs, const float *bias, int64_t M, int64_t N,
                              int64_t K, void *y, lv_dtype ydt, int64_t ldy, int xvec) {
    sparse_qgemm_warp_kernel<MR><<<grid, 32 * kRowWarps, 0, st>>>(
        xq, ldx, xscale, qv, ldv, mb, ldb, KV, wscale, G, gs, bias, M, N, K, y, (int)ydt, ldy,
        xvec);
    return check_launch("sparse_qgemm_warp_kernel");
}

/* ---------------------------------------------------------------------------
 * Input gradients: qgemm.cu's tiling, weights expanded through the offsets.
 * ------------------------------------------------------------------------- */

constexpr int kGradBK = 64, kGradBN = 32, kGradTM = 8, kGradTY = 4;
constexpr int kGradBM = kGradTM * kGradTY;
constexpr int kGradThreads = kGradBK * kGradTY;

/* int8 == 1: values are int8 codes, wscale [N, G] scales gy; else float
 * values of dtype vdt and no scales. */
__global__ void __launch_bounds__(kGradThreads)
    sparse_grad_kernel(const void *gy, int gdt, int64_t ldg, const void *values, int vdt,
                       int int8, int64_t ldv, const uint8_t *mask_bits, int64_t ldb, int64_t KV,
                       const int32_t *offsets, const float *wscale, int64_t G, int64_t gs,
                       const float *act_scale, int64_t M, int64_t N, int64_t K, void *gx,
                       int xdt, int64_t ldgx) {
    __shared__ float s_s[kGradBM][kGradBN];
    __shared__ float s_w[kGradBN][kGradBK];
    __shared__ uint64_t s_bits[kGradBN];
    __shared__ int32_t s_off[kGradBN];
    const int tx = threadIdx.x, ty = threadIdx.y, tid = ty * kGradBK + tx;
    const int64_t k0 = (int64_t)blockIdx.x * kGradBK, k = k0 + tx;
    const int64_t g = k0 / gs; /* groups are multiples of 64: one group per block */
    const int64_t KB = mask_bytes(K), NB = (K + 63) / 64, kb = k0 / 64;
    for (int64_t m0 = (int64_t)blockIdx.y * kGradBM; m0 < M; m0 += (int64_t)gridDim.y * kGradBM) {
        float acc[kGradTM];
#pragma unroll
        for (int i = 0; i < kGradTM; i++) acc[i] = 0.0f;
        for (int64_t n0 = 0; n0 < N; n0 += kGradBN) {
            const int nb = N - n0 < kGradBN ? (int)(N - n0) : kGradBN;
            __syncthreads(); /* the previous tile has been consumed */
            if (tid < kGradBN) {
                const int64_t n = n0 + tid;
                s_bits[tid] = tid < nb ? mask_word64(mask_bits + n * ldb, k0, KB) : 0;
                s_off[tid] = tid < nb ? offsets[n * NB + kb] : 0;
            }
            for (int i = tid; i < kGradBM * kGradBN; i += kGradThreads) {
                const int mi = i / kGradBN, ni = i % kGradBN;
                const int64_t m = m0 + mi, n = n0 + ni;
                float s = 0.0f;
                if (m < M && ni < nb) {
                    s = load_f32(gy, gdt, m * ldg + n);
                    if (int8) s = __fmul_rn(s, wscale[n * G + g]);
                }
                s_s[mi][ni] = s;
            }
            __syncthreads();
            for (int i = tid; i < kGradBN * kGradBK; i += kGradThreads) {
                const int ni = i / kGradBK, ki = i % kGradBK;
                const uint64_t word = s_bits[ni];
                const int64_t pos =
                    s_off[ni] + __popcll(ki ? word & ((~0ull) >> (64 - ki)) : 0ull);
                float w = 0.0f;
                if (ni < nb && k0 + ki < K && (word >> ki & 1ull) && pos < KV) {
                    const int64_t idx = (n0 + ni) * ldv + pos;
                    w = int8 ? (float)((const int8_t *)values)[idx] : load_f32(values, vdt, idx);
                }
                s_w[ni][ki] = w;
            }
            __syncthreads();
            /* only the nb real n (a padded step would add +0 to a -0 chain) */
            for (int ni = 0; ni < nb; ni++) {
                const float wv = s_w[ni][tx];
#pragma unroll
                for (int i = 0; i < kGradTM; i++)
                    acc[i] = __fmaf_rn(s_s[ty * kGradTM + i][ni], wv, acc[i]);
            }
        }
        if (k < K) {
#pragma unroll
            for (int i = 0; i < kGradTM; i++) {
                const int64_t m = m0 + ty * kGradTM + i;
                if (m < M) {
                    float v = acc[i];
                    if (act_scale) v = __fmul_rn(v, act_scale[k]);
                    store_f32(gx, xdt, m * ldgx + k, v);
                }
            }
        }
    }
}

/* Offsets table into the workspace. */
lv_status build_offsets(const uint8_t *mask_bits, int64_t ldb, int64_t N, int64_t K,
                        void *workspace, size_t workspace_bytes, cudaStream_t st) {
    const int64_t NB = (K + 63) / 64;
    if (!workspace || workspace_bytes < (size_t)(N * NB * 4) || !aligned(workspace, 4))
        return LV_E_INVALID;
    offsets_kernel<<<grid_rows(N), 32 * kRowWarps, 0, st>>>(mask_bits, ldb, N, K,
                                                                    (int32_t *)workspace);
    return check_launch("offsets_kernel");
}

/* Shared argument checks of the products and gradients (the CPU's, minus
 * the mask rows, which live on the device). */
bool product_args_ok(int64_t M, int64_t N, int64_t K, int64_t KV, const void *values,
                     int64_t ldv, const uint8_t *mask_bits, int64_t ldb) {
    return M >= 0 && N >= 1 && K >= 1 && K < ((int64_t)1 << 31) && KV >= 0 && KV <= K &&
           mask_bits && (KV == 0 || values) && ldv >= KV && ldb >= mask_bytes(K);
}

#ifdef LOWVRAM_WITH_CUSPARSELT
/* ---------------------------------------------------------------------------
 * cuSPARSELt.
 * ------------------------------------------------------------------------- */

constexpr int kMaxDevices = 64;
constexpr size_t kMaxPlans = 64;
constexpr uint32_t kCsltAlign = 16;

std::mutex g_cslt_mutex;
cusparseLtHandle_t g_handles[kMaxDevices];
int g_handle_state[kMaxDevices]; /* 0 untried, 1 ready, -1 failed */

struct CsltPlan {
    cusparseLtMatDescriptor_t a, b, c;
    cusparseLtMatmulDescriptor_t mm;
    cusparseLtMatmulAlgSelection_t alg;
    cusparseLtMatmulPlan_t plan;
    size_t workspace = 0;
    bool ok = false;
};
std::map<std::tuple<int, int64_t, int64_t, int64_t>, CsltPlan *> g_plans;

int current_device() {
    int d = -1;
    return cudaGetDevice(&d) == cudaSuccess ? d : -1;
}

/* The current device's handle or NULL (caller holds g_cslt_mutex). */
cusparseLtHandle_t *cslt_handle_locked() {
    const int d = current_device();
    if (d < 0 || d >= kMaxDevices) return nullptr;
    if (g_handle_state[d] == 0)
        g_handle_state[d] = cusparseLtInit(&g_handles[d]) == CUSPARSE_STATUS_SUCCESS ? 1 : -1;
    return g_handle_state[d] == 1 ? &g_handles[d] : nullptr;
}

bool sparse_desc(cusparseLtHandle_t *h, cusparseLtMatDescriptor_t *a, int64_t N, int64_t K) {
    /* W [N, K] row-major viewed as column-major K x N (ld K), used as op(A) =
     * A^T: the "TN" int8 form; its 2:4 groups run along K, as the mask's. */
    return cusparseLtStructuredDescriptorInit(h, a, K, N, K, kCsltAlign, CUDA_R_8I,
                                              CUSPARSE_ORDER_COL,
                                              CUSPARSELT_SPARSITY_50_PERCENT) ==
           CUSPARSE_STATUS_SUCCESS;
}

/* The plan for (device, N, K, Mp), created on first use (caller holds the
 * mutex); NULL when cuSPARSELt refuses the shape. */
CsltPlan *cslt_plan_locked(int64_t N, int64_t K, int64_t Mp) {
    cusparseLtHandle_t *h = cslt_handle_locked();
    if (!h) return nullptr;
    const auto key = std::make_tuple(current_device(), N, K, Mp);
    auto it = g_plans.find(key);
    if (it != g_plans.end()) return it->second->ok ? it->second : nullptr;
    if (g_plans.size() >= kMaxPlans) {
        /* evict everything (plans are cheap to rebuild compared to a leak);
         * nothing runs concurrently under the mutex. */
        for (auto &kv : g_plans) {
            if (kv.second->ok) {
                cusparseLtMatmulPlanDestroy(&kv.second->plan);
                cusparseLtMatmulAlgSelectionDestroy(&kv.second->alg);
                cusparseLtMatDescriptorDestroy(&kv.second->a);
                cusparseLtMatDescriptorDestroy(&kv.second->b);
                cusparseLtMatDescriptorDestroy(&kv.second->c);
            }
            delete kv.second;
        }
        g_plans.clear();
    }
    CsltPlan *p = new CsltPlan();
    g_plans[key] = p;
    if (!sparse_desc(h, &p->a, N, K)) return nullptr;
    if (cusparseLtDenseDescriptorInit(h, &p->b, K, Mp, K, kCsltAlign, CUDA_R_8I,
                                      CUSPARSE_ORDER_COL) != CUSPARSE_STATUS_SUCCESS) {
        cusparseLtMatDescriptorDestroy(&p->a);
        return nullptr;
    }
    if (cusparseLtDenseDescriptorInit(h, &p->c, N, Mp, N, kCsltAlign, CUDA_R_32I,
                                      CUSPARSE_ORDER_COL) != CUSPARSE_STATUS_SUCCESS) {
        cusparseLtMatDescriptorDestroy(&p->a);
        cusparseLtMatDescriptorDestroy(&p->b);
        return nullptr;
    }
    bool ok =
        cusparseLtMatmulDescriptorInit(h, &p->mm, CUSPARSE_OPERATION_TRANSPOSE,
                                       CUSPARSE_OPERATION_NON_TRANSPOSE, &p->a, &p->b, &p->c,
                                       &p->c, CUSPARSE_COMPUTE_32I) == CUSPARSE_STATUS_SUCCESS &&
        cusparseLtMatmulAlgSelectionInit(h, &p->alg, &p->mm, CUSPARSELT_MATMUL_ALG_DEFAULT) ==
            CUSPARSE_STATUS_SUCCESS;
    if (ok) {
        ok = cusparseLtMatmulPlanInit(h, &p->plan, &p->mm, &p->alg) == CUSPARSE_STATUS_SUCCESS;
        if (!ok) cusparseLtMatmulAlgSelectionDestroy(&p->alg);
    }
    if (ok && cusparseLtMatmulGetWorkspace(h, &p->plan, &p->workspace) != CUSPARSE_STATUS_SUCCESS) {
        cusparseLtMatmulPlanDestroy(&p->plan);
        cusparseLtMatmulAlgSelectionDestroy(&p->alg);
        ok = false;
    }
    if (!ok) {
        cusparseLtMatDescriptorDestroy(&p->a);
        cusparseLtMatDescriptorDestroy(&p->b);
        cusparseLtMatDescriptorDestroy(&p->c);
        return nullptr;
    }
    p->ok = true;
    return p;
}

constexpr int kEpilogueThreads = 256;

/* y[m, n] from D = int32 [Mp, N] (row m at m * N): the shared epilogue, G = 1. */
__global__ void __launch_bounds__(kEpilogueThreads)
    cslt_epilogue_kernel(const int32_t *prod, int64_t M, int64_t N, const float *xscale,
                         const float *wscale, const float *bias, void *y, int ydt,
                         int64_t ldy) {
    const int64_t total = M * N;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t m = i / N, n = i % N;
        const float t = lv_qgemm_combine(0.0f, 0, lv_qgemm_group_term(prod[i], wscale[n]));
        store_f32(y, ydt, m * ldy + n, lv_qgemm_finish(t, xscale[m], bias, n));
    }
}
#endif /* LOWVRAM_WITH_CUSPARSELT */

}  // namespace

/* ---------------------------------------------------------------------------
 * Launchers.
 * ------------------------------------------------------------------------- */

extern "C" {

const char *lv_cuda_sparse_last_error(void) { return t_last_error; }

lv_status lv_cuda_nm_mask(const float *score, int64_t lds, int64_t N, int64_t K, int n, int m,
                          uint8_t *keep, int64_t ldk, int *flags, void *stream) {
    if (m < 1 || m > 64 || n < 1 || n > m || K < 1 || K % m || N < 0) return LV_E_INVALID;
    if (N == 0) return LV_OK;
    if (!score || !keep || !flags || lds < K || ldk < K) return LV_E_INVALID;
    const int64_t items = N * (K / m);
    nm_mask_kernel<<<grid_1d(items, 256), 256, 0, (cudaStream_t)stream>>>(score, lds, N, K, n,
                                                                         m, keep, ldk, flags);
    return check_launch("nm_mask_kernel");
}

lv_status lv_cuda_sparse_compress(const void *w, int esz, int64_t ldw, const uint8_t *keep,
                                  int64_t ldk, int64_t N, int64_t K, int64_t KV, void *values,
                                  int64_t ldv, uint8_t *mask_bits, int64_t ldb, int *flags,
                                  void *stream) {
    if (!valid_esz(esz) || K < 1 || KV < 0 || KV > K || N < 0) return LV_E_INVALID;
    if (N == 0) return LV_OK;
    if (!w || !keep || !mask_bits || !flags || (KV > 0 && !values) || ldw < K || ldk < K ||
        ldv < KV || ldb < mask_bytes(K))
        return LV_E_INVALID;
    compress_kernel<<<grid_rows(N), 32 * kRowWarps, 0, (cudaStream_t)stream>>>(
        w, esz, ldw, keep, ldk, N, K, KV, values, ldv, mask_bits, ldb, flags);
    return check_launch("compress_kernel");
}

lv_status lv_cuda_sparse_decompress(const void *values, int esz, int64_t ldv,
                                    const uint8_t *mask_bits, int64_t ldb, int64_t N, int64_t K,
                                    int64_t KV, void *w, int64_t ldw, int *flags, void *stream) {
    if (!valid_esz(esz) || K < 1 || KV < 0 || KV > K || N < 0) return LV_E_INVALID;
    if (N == 0) return LV_OK;
    if (!w || !mask_bits || (KV > 0 && !values) || ldw < K || ldv < KV || ldb < mask_bytes(K))
        return LV_E_INVALID;
    decompress_kernel<<<grid_rows(N), 32 * kRowWarps, 0, (cudaStream_t)stream>>>(
        values, esz, ldv, mask_bits, ldb, N, K, KV, w, ldw, flags);
    return check_launch("decompress_kernel");
}

lv_status lv_cuda_sparse_check_masks(const uint8_t *mask_bits, int64_t ldb, int64_t N,
                                     int64_t K, int64_t KV, int *flags, void *stream) {
    if (K < 1 || KV < 0 || KV > K || N < 0) return LV_E_INVALID;
    if (N == 0) return LV_OK;
    if (!mask_bits || !flags || ldb < mask_bytes(K)) return LV_E_INVALID;
    check_masks_kernel<<<grid_rows(N), 32 * kRowWarps, 0, (cudaStream_t)stream>>>(
        mask_bits, ldb, N, K, KV, flags);
    return check_launch("check_masks_kernel");
}

size_t lv_cuda_sparse_gemm_workspace(int64_t M, int64_t N, int64_t K) {
    if (M <= LV_CUDA_SPARSE_SMALL_M || N < 1 || K < 1) return 0;
    return (size_t)round_up(N * ((K + 63) / 64) * 4, 256);
}

size_t lv_cuda_sparse_grad_workspace(int64_t N, int64_t K) {
    if (N < 1 || K < 1) return 0;
    return (size_t)round_up(N * ((K + 63) / 64) * 4, 256);
}

lv_status lv_cuda_sparse_gemm(const void *x, lv_dtype xdt, int64_t ldx, const void *values,
                              lv_dtype vdt, int64_t ldv, const uint8_t *mask_bits, int64_t ldb,
                              int64_t KV, const float *bias, int64_t M, int64_t N, int64_t K,
                              void *y, lv_dtype ydt, int64_t ldy, void *workspace,
                              size_t workspace_bytes, void *stream) {
    if (!product_args_ok(M, N, K, KV, values, ldv, mask_bits, ldb) || !valid_dtype(xdt) ||
        !valid_dtype(vdt) || !valid_dtype(ydt))
        return LV_E_INVALID;
    if (M == 0) return LV_OK;
    if (!x || !y || ldx < K || ldy < N) return LV_E_INVALID;
    cudaStream_t st = (cudaStream_t)stream;
    if (M <= LV_CUDA_SPARSE_SMALL_M) {
        const int mr = M <= 2 ? 1 : M <= 4 ? 2 : M <= 8 ? 4 : 8; /* rows per half-warp */
        const dim3 grid((unsigned)((N + kRowWarps - 1) / kRowWarps),
                        grid_y((M + 2 * mr - 1) / (2 * mr)));
#define LV_GEMM_WARP(MR)                                                                       \
    sparse_gemm_warp_kernel<MR><<<grid, 32 * kRowWarps, 0, st>>>(                              \
        x, (int)xdt, ldx, values, (int)vdt, ldv, mask_bits, ldb, KV, bias, M, N, K, y,         \
        (int)ydt, ldy)
        switch (mr) {
        case 1: LV_GEMM_WARP(1); break;
        case 2: LV_GEMM_WARP(2); break;
        case 4: LV_GEMM_WARP(4); break;
        default: LV_GEMM_WARP(8); break;
        }
#undef LV_GEMM_WARP
        return check_launch("sparse_gemm_warp_kernel");
    }
    lv_status s = build_offsets(mask_bits, ldb, N, K, workspace, workspace_bytes, st);
    if (s != LV_OK) return s;
    const dim3 grid((unsigned)((N + kTileN - 1) / kTileN), grid_y((M + kTileM - 1) / kTileM));
    sparse_gemm_tile_kernel<<<grid, kTileThreads, 0, st>>>(
        x, (int)xdt, ldx, values, (int)vdt, ldv, mask_bits, ldb, KV,
        (const int32_t *)workspace, bias, M, N, K, y, (int)ydt, ldy);
    return check_launch("sparse_gemm_tile_kernel");
}

lv_status lv_cuda_sparse_qgemm_int8(const int8_t *xq, int64_t ldx, const float *xscale,
                                    const int8_t *qvalues, int64_t ldv,
                                    const uint8_t *mask_bits, int64_t ldb, int64_t KV,
                                    const float *wscale, int64_t group_size, const float *bias,
                                    int64_t M, int64_t N, int64_t K, void *y, lv_dtype ydt,
                                    int64_t ldy, void *stream) {
    if (K > LV_QGEMM_K_MAX) return LV_E_K_TOO_LARGE;
    if (!product_args_ok(M, N, K, KV, qvalues, ldv, mask_bits, ldb) || !valid_dtype(ydt))
        return LV_E_INVALID;
    if (group_size > 0 && (K % group_size || group_size % 64)) return LV_E_INVALID;
    if (M == 0) return LV_OK;
    if (!xq || !xscale || !wscale || !y || ldx < K || ldy < N) return LV_E_INVALID;
    const int64_t G = group_size > 0 ? K / group_size : 1;
    const int xvec = aligned(xq, 4) && ldx % 4 == 0;
    const int mr = M <= 1 ? 1 : M <= 2 ? 2 : M <= 4 ? 4 : 8;
    const dim3 grid((unsigned)((N + kRowWarps - 1) / kRowWarps), grid_y((M + mr - 1) / mr));
    cudaStream_t st = (cudaStream_t)stream;
    switch (mr) {
    case 1:
        return launch_sparse_qgemm<1>(grid, st, xq, ldx, xscale, qvalues, ldv, mask_bits, ldb, KV,
                                      wscale, G, K / G, bias, M, N, K, y, ydt, ldy, xvec);
    case 2:
        return launch_sparse_qgemm<2>(grid, st, xq, ldx, xscale, qvalues, ldv, mask_bits, ldb, KV,
                                      wscale, G, K / G, bias, M, N, K, y, ydt, ldy, xvec);
    case 4:
        return launch_sparse_qgemm<4>(grid, st, xq, ldx, xscale, qvalues, ldv, mask_bits, ldb, KV,
                                      wscale, G, K / G, bias, M, N, K, y, ydt, ldy, xvec);
    default:
        return launch_sparse_qgemm<8>(grid, st, xq, ldx, xscale, qvalues, ldv, mask_bits, ldb, KV,
                                      wscale, G, K / G, bias, M, N, K, y, ydt, ldy, xvec);
    }
}

static lv_status sparse_grad(const void *gy, lv_dtype gdt, int64_t ldg, const void *values,
                             lv_dtype vdt, int int8, int64_t ldv, const uint8_t *mask_bits,
                             int64_t ldb, int64_t KV, const float *wscale, int64_t group_size,
                             const float *act_scale, int64_t M, int64_t N, int64_t K, void *gx,
                             lv_dtype xdt, int64_t ldgx, void *workspace,
                             size_t workspace_bytes, void *stream) {
    if (!product_args_ok(M, N, K, KV, values, ldv, mask_bits, ldb) || !valid_dtype(gdt) ||
        !valid_dtype(xdt) || (!int8 && !valid_dtype(vdt)))
        return LV_E_INVALID;
    if (group_size > 0 && (K % group_size || group_size % 64)) return LV_E_INVALID;
    if (int8 && !wscale) return LV_E_INVALID;
    if (M == 0) return LV_OK;
    if (!gy || !gx || ldg < N || ldgx < K) return LV_E_INVALID;
    cudaStream_t st = (cudaStream_t)stream;
    lv_status s = build_offsets(mask_bits, ldb, N, K, workspace, workspace_bytes, st);
    if (s != LV_OK) return s;
    const int64_t G = group_size > 0 ? K / group_size : 1;
    const dim3 grid((unsigned)((K + kGradBK - 1) / kGradBK), grid_y((M + kGradBM - 1) / kGradBM));
    const dim3 block(kGradBK, kGradTY);
    sparse_grad_kernel<<<grid, block, 0, st>>>(gy, (int)gdt, ldg, values, (int)vdt, int8, ldv,
                                               mask_bits, ldb, KV, (const int32_t *)workspace,
                                               wscale, G, K / G, act_scale, M, N, K, gx,
                                               (int)xdt, ldgx);
    return check_launch("sparse_grad_kernel");
}

lv_status lv_cuda_sparse_qlinear_grad_input(const void *gy, lv_dtype gdt, int64_t ldg,
                                            const int8_t *qvalues, int64_t ldv,
                                            const uint8_t *mask_bits, int64_t ldb, int64_t KV,
                                            const float *wscale, int64_t group_size,
                                            const float *act_scale, int64_t M, int64_t N,
                                            int64_t K, void *gx, lv_dtype xdt, int64_t ldgx,
                                            void *workspace, size_t workspace_bytes,
                                            void *stream) {
    return sparse_grad(gy, gdt, ldg, qvalues, LV_F32, 1, ldv, mask_bits, ldb, KV, wscale,
                       group_size, act_scale, M, N, K, gx, xdt, ldgx, workspace,
                       workspace_bytes, stream);
}

lv_status lv_cuda_sparse_linear_grad_input(const void *gy, lv_dtype gdt, int64_t ldg,
                                           const void *values, lv_dtype vdt, int64_t ldv,
                                           const uint8_t *mask_bits, int64_t ldb, int64_t KV,
                                           int64_t M, int64_t N, int64_t K, void *gx,
                                           lv_dtype xdt, int64_t ldgx, void *workspace,
                                           size_t workspace_bytes, void *stream) {
    return sparse_grad(gy, gdt, ldg, values, vdt, 0, ldv, mask_bits, ldb, KV, nullptr, -1,
                       nullptr, M, N, K, gx, xdt, ldgx, workspace, workspace_bytes, stream);
}

/* ---- cuSPARSELt ------------------------------------------------------------ */

int64_t lv_cuda_cslt_rows(int64_t M) { return round_up(M > 0 ? M : 1, 32); }

#ifdef LOWVRAM_WITH_CUSPARSELT

int lv_cuda_cslt_supported(int64_t N, int64_t K) {
    if (N < 32 || N % 32 || K < 64 || K % 64 || K > LV_QGEMM_K_MAX) return 0;
    std::lock_guard<std::mutex> lock(g_cslt_mutex);
    return cslt_handle_locked() != nullptr;
}

lv_status lv_cuda_cslt_weight_bytes(int64_t N, int64_t K, size_t *compressed, size_t *buffer) {
    if (!lv_cuda_cslt_supported(N, K) || !compressed || !buffer) return LV_E_UNSUPPORTED;
    std::lock_guard<std::mutex> lock(g_cslt_mutex);
    cusparseLtHandle_t *h = cslt_handle_locked();
    cusparseLtMatDescriptor_t a;
    if (!h || !sparse_desc(h, &a, N, K)) return LV_E_UNSUPPORTED;
    const bool ok = cusparseLtSpMMACompressedSize2(h, &a, compressed, buffer) ==
                    CUSPARSE_STATUS_SUCCESS;
    cusparseLtMatDescriptorDestroy(&a);
    return ok ? LV_OK : LV_E_UNSUPPORTED;
}

lv_status lv_cuda_cslt_compress(const int8_t *dense, int64_t N, int64_t K, void *compressed,
                                void *buffer, void *stream) {
    if (!dense || !compressed || !lv_cuda_cslt_supported(N, K)) return LV_E_UNSUPPORTED;
    std::lock_guard<std::mutex> lock(g_cslt_mutex);
    cusparseLtHandle_t *h = cslt_handle_locked();
    cusparseLtMatDescriptor_t a;
    if (!h || !sparse_desc(h, &a, N, K)) return LV_E_UNSUPPORTED;
    const bool ok = cusparseLtSpMMACompress2(h, &a, 1, CUSPARSE_OPERATION_TRANSPOSE, dense,
                                             compressed, buffer, (cudaStream_t)stream) ==
                    CUSPARSE_STATUS_SUCCESS;
    cusparseLtMatDescriptorDestroy(&a);
    return ok ? LV_OK : LV_E_UNSUPPORTED;
}

size_t lv_cuda_cslt_qgemm_workspace(int64_t M, int64_t N, int64_t K) {
    if (M < 1 || !lv_cuda_cslt_supported(N, K)) return 0;
    const int64_t Mp = lv_cuda_cslt_rows(M);
    std::lock_guard<std::mutex> lock(g_cslt_mutex);
    CsltPlan *p = cslt_plan_locked(N, K, Mp);
    if (!p) return 0;
    return (size_t)round_up(Mp * N * 4, 256) + (size_t)round_up((int64_t)p->workspace, 256);
}

lv_status lv_cuda_cslt_qgemm_int8(const void *compressed, const int8_t *xq, int64_t ldx,
                                  const float *xscale, const float *wscale, const float *bias,
                                  int64_t M, int64_t N, int64_t K, void *y, lv_dtype ydt,
                                  int64_t ldy, void *workspace, size_t workspace_bytes,
                                  void *stream) {
    if (M < 1 || !compressed || !xq || !xscale || !wscale || !y || !valid_dtype(ydt) ||
        ldy < N || ldx != K || !aligned(xq, 16) || !aligned(workspace, 256))
        return LV_E_UNSUPPORTED;
    if (!lv_cuda_cslt_supported(N, K)) return LV_E_UNSUPPORTED;
    const int64_t Mp = lv_cuda_cslt_rows(M);
    cudaStream_t st = (cudaStream_t)stream;
    {
        std::lock_guard<std::mutex> lock(g_cslt_mutex);
        CsltPlan *p = cslt_plan_locked(N, K, Mp);
        if (!p) return LV_E_UNSUPPORTED;
        const size_t prod_bytes = (size_t)round_up(Mp * N * 4, 256);
        if (!workspace || workspace_bytes < prod_bytes + p->workspace) return LV_E_UNSUPPORTED;
        int32_t *prod = (int32_t *)workspace;
        void *lt_ws = (char *)workspace + prod_bytes;
        const float alpha = 1.0f, beta = 0.0f;
        if (cusparseLtMatmul(cslt_handle_locked(), &p->plan, &alpha, compressed, xq, &beta, prod,
                             prod, p->workspace ? lt_ws : nullptr, &st, 1) !=
            CUSPARSE_STATUS_SUCCESS)
            return LV_E_UNSUPPORTED;
    }
    cslt_epilogue_kernel<<<grid_1d(M * N, kEpilogueThreads), kEpilogueThreads, 0, st>>>(
        (const int32_t *)workspace, M, N, xscale, wscale, bias, y, (int)ydt, ldy);
    return check_launch("cslt_epilogue_kernel");
}

#else /* no cuSPARSELt in this build: every entry declines */

int lv_cuda_cslt_supported(int64_t, int64_t) { return 0; }
lv_status lv_cuda_cslt_weight_bytes(int64_t, int64_t, size_t *, size_t *) {
    return LV_E_UNSUPPORTED;
}
lv_status lv_cuda_cslt_compress(const int8_t *, int64_t, int64_t, void *, void *, void *) {
    return LV_E_UNSUPPORTED;
}
size_t lv_cuda_cslt_qgemm_workspace(int64_t, int64_t, int64_t) { return 0; }
lv_status lv_cuda_cslt_qgemm_int8(const void *, const int8_t *, int64_t, const float *,
                                  const float *, const float *, int64_t, int64_t, int64_t,
                                  void *, lv_dtype, int64_t, void *, size_t, void *) {
    return LV_E_UNSUPPORTED;
}

#endif /* LOWVRAM_WITH_CUSPARSELT */

}  // extern "C"
