/*
 * ops/cuda/qgemm.cu — the CUDA side of the qgemm family (lowvram/qgemm.h,
 * "CUDA launchers"): per-row/per-group int8 quantization, the int8 product
 * with its float epilogue, and the straight-through gradient to the input.
 * Every launcher validates its arguments as the CPU kernels do
 * (ops/cpu/qgemm_internal.h), enqueues work on the caller's stream, checks
 * every launch, and never allocates, prints or synchronizes.
 *
 * Bit-exactness with ops/cpu/qgemm_ref.c: integer sums are exact in any order
 * (the contract's K bound keeps them inside int32; __dp4a and cuBLASLt wrap
 * mod 2^32 like any int32 addition), and every float operation is written
 * with an explicit round-to-nearest intrinsic (__fmul_rn, __fadd_rn,
 * __fdiv_rn, and __fmaf_rn only where the contract names an fmaf) in the
 * contract's order. The target is built with --fmad=false as a second line of
 * defence, and without -ftz, so subnormals behave as on the CPU. Float
 * conversions are lowvram/convert.h's, compiled for the device.
 *
 * Paths of lv_cuda_qgemm_int8:
 *   - kernel path (any shape, any alignment, any group size): one warp per
 *     output feature n and up to 8 rows of x; lanes stride along K with
 *     16-, 4- or 1-byte loads and __dp4a, one warp reduction per group.
 *     Chosen for M <= 16 (decode), and whenever the cuBLASLt path cannot be
 *     used or declines.
 *   - cuBLASLt path (M > 16, aligned, N % 4 == 0, K / G % 16 == 0): int8
 *     tensor-core GEMM with int32 output (one strided batch entry per group,
 *     so per-channel is G = 1) into the caller's workspace, in chunks of rows
 *     that keep the int32 products under LV_LT_PRODUCTS_MAX bytes; then an
 *     epilogue kernel applies the contract's float math per output.
 * Every cuBLASLt status is checked; any failure falls back to the kernel
 * path, which gives the same bits.
 */
#include <cublasLt.h>
#include <cuda_runtime.h>

#include <stdint.h>
#include <stdio.h>

#include "lowvram/convert.h"
#include "lowvram/qgemm.h"
#include "qgemm_epilogue.cuh" /* the float epilogue, shared with sparse.cu */
#include "../cpu/qgemm_internal.h" /* the CPU kernels' argument checks, shared */

namespace {

/* ---------------------------------------------------------------------------
 * Errors: a thread-local description of the last CUDA failure.
 * ------------------------------------------------------------------------- */

thread_local char t_last_error[512] = "";
/* Which path the last lv_cuda_qgemm_int8 on this thread took (tests). */
thread_local const char *t_last_path = "";

lv_status cuda_failure(const char *what, cudaError_t err) {
    snprintf(t_last_error, sizeof t_last_error, "%s: %s (%s)", what, cudaGetErrorString(err),
             cudaGetErrorName(err));
    return LV_E_CUDA;
}

/* The launch check after every kernel: configuration errors and earlier
 * asynchronous failures both surface here. */
lv_status check_launch(const char *kernel) {
    cudaError_t err = cudaGetLastError();
    return err == cudaSuccess ? LV_OK : cuda_failure(kernel, err);
}

bool valid_dtype(lv_dtype dt) { return dt == LV_F32 || dt == LV_BF16 || dt == LV_F16; }

bool aligned(const void *p, uintptr_t a) { return ((uintptr_t)p % a) == 0; }

/* Float conversions: lowvram/convert.h's, compiled for the device too (one
 * copy of the rules, so the same bits as the CPU, NaN canonicalization
 * included). */
__device__ __forceinline__ float load_f32(const void *p, int dt, int64_t i) {
    return lv_load_f32(p, (lv_dtype)dt, i);
}

__device__ __forceinline__ void store_f32(void *p, int dt, int64_t i, float v) {
    lv_store_f32(p, (lv_dtype)dt, i, v);
}

/* ---------------------------------------------------------------------------
 * Quantization: one block per (row, group), grid-striding over all of them.
 * ------------------------------------------------------------------------- */

constexpr int kQuantMaxThreads = 256;

/* x[r, k] (* act_scale[k]) as float32: the contract's v[k]. */
__device__ __forceinline__ float quant_value(const void *x, int xdt, int64_t ldx, int64_t r,
                                             int64_t k, const float *act_scale) {
    float v = load_f32(x, xdt, r * ldx + k);
    if (act_scale) v = __fmul_rn(v, act_scale[k]);
    return v;
}

__global__ void __launch_bounds__(kQuantMaxThreads)
    quantize_kernel(const void *x, int xdt, int64_t ldx, const float *act_scale, int64_t M,
                    int64_t G, int64_t gs, int8_t *q, int64_t ldq, float *scale) {
    __shared__ float s_max[32];
    __shared__ int s_bad[32];
    __shared__ float s_res_max;
    __shared__ int s_res_bad;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int nwarps = (blockDim.x + 31) >> 5;
    for (int64_t item = blockIdx.x; item < M * G; item += gridDim.x) {
        const int64_t r = item / G, g = item % G;
        const int64_t k0 = g * gs, k1 = k0 + gs;
        /* absmax over the finite values and a flag for NaN/Inf: max is exact
         * and order-free, so the parallel reduction equals the serial one */
        float amax = 0.0f;
        int bad = 0;
        for (int64_t k = k0 + tid; k < k1; k += blockDim.x) {
            const float a = fabsf(quant_value(x, xdt, ldx, r, k, act_scale));
            if (!(a <= 3.40282347e+38f))
                bad = 1; /* NaN or Inf */
            else
                amax = fmaxf(amax, a);
        }
        for (int o = 16; o > 0; o >>= 1) {
            amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
            bad |= __shfl_xor_sync(0xffffffffu, bad, o);
        }
        if (lane == 0) {
            s_max[warp] = amax;
            s_bad[warp] = bad;
        }
        __syncthreads();
        if (tid == 0) {
            float m = s_max[0];
            int b = s_bad[0];
            for (int i = 1; i < nwarps; i++) {
                m = fmaxf(m, s_max[i]);
                b |= s_bad[i];
            }
            s_res_max = m;
            s_res_bad = b;
        }
        __syncthreads();
        amax = s_res_max;
        bad = s_res_bad;

        int8_t *qr = q + r * ldq;
        if (bad || amax < LV_QUANT_MIN_ABSMAX) {
            for (int64_t k = k0 + tid; k < k1; k += blockDim.x) qr[k] = 0;
            if (tid == 0) scale[r * G + g] = bad ? __uint_as_float(0x7fc00000u) : 0.0f;
        } else {
            const float inv = __fdiv_rn(127.0f, amax);
            for (int64_t k = k0 + tid; k < k1; k += blockDim.x) {
                const float v = quant_value(x, xdt, ldx, r, k, act_scale);
                float c = rintf(__fmul_rn(v, inv)); /* round half to even */
                c = fminf(fmaxf(c, -127.0f), 127.0f);
                qr[k] = (int8_t)(int)c;
            }
            if (tid == 0) scale[r * G + g] = __fdiv_rn(amax, 127.0f);
        }
        /* s_res_* are rewritten only after the first barrier of the next item,
         * which every thread reaches after reading them here. */
    }
}

/* ---------------------------------------------------------------------------
 * Kernel path of the product: one warp per output feature n, MR rows of x.
 * ------------------------------------------------------------------------- */

constexpr int kGemmWarps = 4; /* warps (output features) per block */

template <int VEC>
struct DotStep;

/* 16 bytes: one 128-bit load per operand, four __dp4a. */
template <>
struct DotStep<16> {
    typedef int4 word;
    static __device__ __forceinline__ word load(const int8_t *p) {
        return *reinterpret_cast<const int4 *>(p);
    }
    static __device__ __forceinline__ int dot(word a, word b, int acc) {
        acc = __dp4a(a.x, b.x, acc);
        acc = __dp4a(a.y, b.y, acc);
        acc = __dp4a(a.z, b.z, acc);
        return __dp4a(a.w, b.w, acc);
    }
};

/* 4 bytes: one 32-bit load per operand, one __dp4a. */
template <>
struct DotStep<4> {
    typedef int word;
    static __device__ __forceinline__ word load(const int8_t *p) {
        return *reinterpret_cast<const int *>(p);
    }
    static __device__ __forceinline__ int dot(word a, word b, int acc) {
        return __dp4a(a, b, acc);
    }
};

/* 1 byte: for pointers or strides that allow nothing wider. */
template <>
struct DotStep<1> {
    typedef int word;
    static __device__ __forceinline__ word load(const int8_t *p) { return (int)*p; }
    static __device__ __forceinline__ int dot(word a, word b, int acc) { return acc + a * b; }
};

__device__ __forceinline__ int warp_sum(int v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

template <int MR, int VEC>
__global__ void __launch_bounds__(32 * kGemmWarps)
    qgemm_warp_kernel(const int8_t *xq, int64_t ldx, const float *xscale, const int8_t *w,
                      int64_t ldw, const float *wscale, int64_t G, int64_t gs,
                      const float *bias, int64_t M, int64_t N, void *y, int ydt, int64_t ldy) {
    typedef DotStep<VEC> Step;
    const int lane = threadIdx.x & 31;
    const int64_t n = (int64_t)blockIdx.x * kGemmWarps + (threadIdx.x >> 5);
    if (n >= N) return; /* n is the same for all 32 lanes: whole warps leave */
    const int8_t *wr = w + n * ldw;
    const float *wsr = wscale + n * G;
    for (int64_t m0 = (int64_t)blockIdx.y * MR; m0 < M; m0 += (int64_t)gridDim.y * MR) {
        const int64_t rows = M - m0 < MR ? M - m0 : MR;
        float t[MR]; /* set by group 0 (G >= 1); zeroed only to keep compilers quiet */
#pragma unroll
        for (int r = 0; r < MR; r++) t[r] = 0.0f;
        for (int64_t g = 0; g < G; g++) {
            const int64_t k0 = g * gs, k1 = k0 + gs;
            int acc[MR];
#pragma unroll
            for (int r = 0; r < MR; r++) acc[r] = 0;
            /* whole VEC-byte words; k0 is a multiple of 64 (groups) or 0 */
            const int64_t nvec = (k1 - k0) / VEC;
            for (int64_t p = lane; p < nvec; p += 32) {
                const int64_t k = k0 + p * VEC;
                const typename Step::word wv = Step::load(wr + k);
#pragma unroll
                for (int r = 0; r < MR; r++)
                    if (r < rows) acc[r] = Step::dot(Step::load(xq + (m0 + r) * ldx + k), wv, acc[r]);
            }
            /* the bytes after the last whole word (only when VEC does not
             * divide the group: G = 1 and K % VEC != 0) */
            for (int64_t k = k0 + nvec * VEC + lane; k < k1; k += 32) {
                const int wv = wr[k];
#pragma unroll
                for (int r = 0; r < MR; r++)
                    if (r < rows) acc[r] += (int)xq[(m0 + r) * ldx + k] * wv;
            }
            /* exact int32 group sums, then the contract's float combine in
             * group order (every lane computes the same t) */
            const float ws = wsr[g];
#pragma unroll
            for (int r = 0; r < MR; r++) {
                t[r] = lv_qgemm_combine(t[r], g, lv_qgemm_group_term(warp_sum(acc[r]), ws));
            }
        }
#pragma unroll
        for (int r = 0; r < MR; r++) {
            if (r < rows && lane == r) {
                store_f32(y, ydt, (m0 + r) * ldy + n, lv_qgemm_finish(t[r], xscale[m0 + r], bias, n));
            }
        }
    }
}

template <int MR>
lv_status launch_qgemm_rows(int vec, dim3 grid, cudaStream_t st, const int8_t *xq, int64_t ldx,
                            const float *xscale, const int8_t *w, int64_t ldw,
                            const float *wscale, int64_t G, int64_t gs, const float *bias,
                            int64_t M, int64_t N, void *y, lv_dtype ydt, int64_t ldy) {
    const dim3 block(32 * kGemmWarps);
    if (vec == 16)
        qgemm_warp_kernel<MR, 16><<<grid, block, 0, st>>>(xq, ldx, xscale, w, ldw, wscale, G, gs,
                                                          bias, M, N, y, (int)ydt, ldy);
    else if (vec == 4)
        qgemm_warp_kernel<MR, 4><<<grid, block, 0, st>>>(xq, ldx, xscale, w, ldw, wscale, G, gs,
                                                         bias, M, N, y, (int)ydt, ldy);
    else
        qgemm_warp_kernel<MR, 1><<<grid, block, 0, st>>>(xq, ldx, xscale, w, ldw, wscale, G, gs,
                                                         bias, M, N, y, (int)ydt, ldy);
    return check_launch("qgemm_warp_kernel");
}

lv_status qgemm_kernel_path(const int8_t *xq, int64_t ldx, const float *xscale, const int8_t *w,
                            int64_t ldw, const float *wscale, int64_t G, int64_t gs,
                            const float *bias, int64_t M, int64_t N, void *y, lv_dtype ydt,
                            int64_t ldy, cudaStream_t st) {
    /* The widest load every row start and group start allows. With groups
     * shorter than 512 bytes, 4-byte words keep all 32 lanes busy where
     * 16-byte ones would leave most idle. */
    int vec = 1;
    if (aligned(xq, 16) && aligned(w, 16) && ldx % 16 == 0 && ldw % 16 == 0 && gs >= 512)
        vec = 16;
    else if (aligned(xq, 4) && aligned(w, 4) && ldx % 4 == 0 && ldw % 4 == 0)
        vec = 4;
    const int mr = M <= 1 ? 1 : M <= 2 ? 2 : M <= 4 ? 4 : 8;
    const int64_t mtiles = (M + mr - 1) / mr;
    const dim3 grid((unsigned)((N + kGemmWarps - 1) / kGemmWarps),
                    (unsigned)(mtiles < 65535 ? mtiles : 65535));
    switch (mr) {
    case 1:
        return launch_qgemm_rows<1>(vec, grid, st, xq, ldx, xscale, w, ldw, wscale, G, gs, bias,
                                    M, N, y, ydt, ldy);
    case 2:
        return launch_qgemm_rows<2>(vec, grid, st, xq, ldx, xscale, w, ldw, wscale, G, gs, bias,
                                    M, N, y, ydt, ldy);
    case 4:
        return launch_qgemm_rows<4>(vec, grid, st, xq, ldx, xscale, w, ldw, wscale, G, gs, bias,
                                    M, N, y, ydt, ldy);
    default:
        return launch_qgemm_rows<8>(vec, grid, st, xq, ldx, xscale, w, ldw, wscale, G, gs, bias,
                                    M, N, y, ydt, ldy);
    }
}

/* ---------------------------------------------------------------------------
 * cuBLASLt path of the product.
 * ------------------------------------------------------------------------- */

/* Rows of x below which the kernel path is used (decode). */
constexpr int64_t kLtMinRows = 17;
/* Bytes of int32 products per chunk of rows (G * rows * N * 4). */
constexpr int64_t kLtProductsMax = (int64_t)64 << 20;
/* cuBLASLt's own workspace. */
constexpr int64_t kLtWorkspace = (int64_t)4 << 20;
/* Chunks (when M needs more than one) are a multiple of this many rows. */
constexpr int64_t kLtRowQuantum = 64;

int64_t round_up(int64_t v, int64_t a) { return (v + a - 1) / a * a; }

/* Rows per cuBLASLt chunk for these sizes, or 0 when the cuBLASLt path does
 * not apply to the shape (alignment is checked separately). */
int64_t lt_chunk_rows(int64_t M, int64_t N, int64_t K, int64_t group_size) {
    if (M < kLtMinRows || N < 1 || N % 4 || K < 1 || K > LV_QGEMM_K_MAX) return 0;
    if (group_size > 0 && (K % group_size || group_size % 64)) return 0;
    const int64_t G = lv_qgemm_groups(K, group_size);
    if ((K / G) % 16) return 0; /* IMMA needs k % 4; 16 keeps every load 16-byte aligned */
    const int64_t per_row = G * N * 4;
    int64_t rows = kLtProductsMax / per_row;
    if (rows >= M) return M;
    return rows - rows % kLtRowQuantum; /* 0 when not even one quantum fits */
}

/* The largest power of two <= 256 dividing the address and every stride:
 * what cuBLASLt's heuristic may assume about this operand. */
uint32_t lt_alignment(const void *p, int64_t stride_bytes_a, int64_t stride_bytes_b) {
    uint64_t bits = (uint64_t)(uintptr_t)p | (uint64_t)stride_bytes_a |
                    (uint64_t)stride_bytes_b | 256u;
    return (uint32_t)(bits & (~bits + 1)); /* lowest set bit */
}

/* Owns the cuBLASLt descriptors of one call. */
struct LtDescs {
    cublasLtMatmulDesc_t op = nullptr;
    cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
    cublasLtMatmulPreference_t pref = nullptr;
    ~LtDescs() {
        if (pref) cublasLtMatmulPreferenceDestroy(pref);
        if (c) cublasLtMatrixLayoutDestroy(c);
        if (b) cublasLtMatrixLayoutDestroy(b);
        if (a) cublasLtMatrixLayoutDestroy(a);
        if (op) cublasLtMatmulDescDestroy(op);
    }
};

bool lt_batched(cublasLtMatrixLayout_t l, int32_t count, int64_t stride) {
    return cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &count,
                                            sizeof count) == CUBLAS_STATUS_SUCCESS &&
           cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET,
                                            &stride, sizeof stride) == CUBLAS_STATUS_SUCCESS;
}

/* int32 products of rows [0, mc) of xq (already offset to the chunk) with w,
 * one batch entry per group g:
 *     prod[g * mc * N + m * N + n] = sum over k in group g of xq[m, k] * w[n, k]
 * In cuBLASLt's column-major terms: C_g (N x mc, ld N) = op(A_g) * B_g with
 * A_g = w + g*gs viewed as gs x N (ld ldw), op(A) = T, and B_g = xq + g*gs
 * viewed as gs x mc (ld ldx), op(B) = N: the "TN" int8 IMMA form. Returns
 * false, having enqueued nothing, when any cuBLASLt call fails or the
 * heuristic offers no algorithm. */
bool lt_products(cublasLtHandle_t h, cudaStream_t st, const int8_t *xq, int64_t ldx,
                 const int8_t *w, int64_t ldw, int64_t G, int64_t gs, int64_t mc, int64_t N,
                 int32_t *prod, void *lt_ws, size_t lt_ws_bytes) {
    LtDescs d;
    if (cublasLtMatmulDescCreate(&d.op, CUBLAS_COMPUTE_32I, CUDA_R_32I) != CUBLAS_STATUS_SUCCESS)
        return false;
    const int32_t opT = CUBLAS_OP_T, opN = CUBLAS_OP_N;
    if (cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_TRANSA, &opT, sizeof opT) !=
            CUBLAS_STATUS_SUCCESS ||
        cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_TRANSB, &opN, sizeof opN) !=
            CUBLAS_STATUS_SUCCESS)
        return false;
    if (cublasLtMatrixLayoutCreate(&d.a, CUDA_R_8I, (uint64_t)gs, (uint64_t)N, ldw) !=
            CUBLAS_STATUS_SUCCESS ||
        cublasLtMatrixLayoutCreate(&d.b, CUDA_R_8I, (uint64_t)gs, (uint64_t)mc, ldx) !=
            CUBLAS_STATUS_SUCCESS ||
        cublasLtMatrixLayoutCreate(&d.c, CUDA_R_32I, (uint64_t)N, (uint64_t)mc, N) !=
            CUBLAS_STATUS_SUCCESS)
        return false;
    if (G > 1 && !(lt_batched(d.a, (int32_t)G, gs) && lt_batched(d.b, (int32_t)G, gs) &&
                   lt_batched(d.c, (int32_t)G, mc * N)))
        return false;

    /* Tell the heuristic the real alignments (its default assumes 256 bytes). */
    const uint64_t max_ws = lt_ws_bytes;
    const uint32_t al_a = lt_alignment(w, ldw, G > 1 ? gs : 0);
    const uint32_t al_b = lt_alignment(xq, ldx, G > 1 ? gs : 0);
    const uint32_t al_c = lt_alignment(prod, N * 4, G > 1 ? mc * N * 4 : 0);
    if (cublasLtMatmulPreferenceCreate(&d.pref) != CUBLAS_STATUS_SUCCESS ||
        cublasLtMatmulPreferenceSetAttribute(d.pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                             &max_ws, sizeof max_ws) != CUBLAS_STATUS_SUCCESS ||
        cublasLtMatmulPreferenceSetAttribute(d.pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES,
                                             &al_a, sizeof al_a) != CUBLAS_STATUS_SUCCESS ||
        cublasLtMatmulPreferenceSetAttribute(d.pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
                                             &al_b, sizeof al_b) != CUBLAS_STATUS_SUCCESS ||
        cublasLtMatmulPreferenceSetAttribute(d.pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES,
                                             &al_c, sizeof al_c) != CUBLAS_STATUS_SUCCESS ||
        cublasLtMatmulPreferenceSetAttribute(d.pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES,
                                             &al_c, sizeof al_c) != CUBLAS_STATUS_SUCCESS)
        return false;

    cublasLtMatmulHeuristicResult_t heur = {};
    int found = 0;
    if (cublasLtMatmulAlgoGetHeuristic(h, d.op, d.a, d.b, d.c, d.c, d.pref, 1, &heur, &found) !=
            CUBLAS_STATUS_SUCCESS ||
        found < 1 || heur.state != CUBLAS_STATUS_SUCCESS || heur.workspaceSize > lt_ws_bytes)
        return false;

    const int32_t alpha = 1, beta = 0;
    return cublasLtMatmul(h, d.op, &alpha, w, d.a, xq, d.b, &beta, prod, d.c, prod, d.c,
                          &heur.algo, lt_ws, lt_ws_bytes, st) == CUBLAS_STATUS_SUCCESS;
}

constexpr int kEpilogueThreads = 256;

/* y[m0 + m, n] from the int32 products of one chunk (the contract's float
 * epilogue, exactly as the kernel path and qgemm_ref.c do it). */
__global__ void __launch_bounds__(kEpilogueThreads)
    qgemm_epilogue_kernel(const int32_t *prod, int64_t mc, int64_t N, int64_t G,
                          const float *xscale, const float *wscale, const float *bias, void *y,
                          int ydt, int64_t ldy, int64_t m0) {
    const int64_t total = mc * N;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t m = i / N, n = i % N;
        float t = 0.0f;
        for (int64_t g = 0; g < G; g++)
            t = lv_qgemm_combine(t, g, lv_qgemm_group_term(prod[g * total + i], wscale[n * G + g]));
        store_f32(y, ydt, (m0 + m) * ldy + n, lv_qgemm_finish(t, xscale[m0 + m], bias, n));
    }
}

unsigned grid_1d(int64_t items, int threads) {
    const int64_t blocks = (items + threads - 1) / threads;
    return (unsigned)(blocks < (1 << 20) ? blocks : (1 << 20)); /* kernels grid-stride */
}

/* The cuBLASLt path over all rows. LV_OK when done; LV_E_UNSUPPORTED, having
 * written nothing the kernel path would not overwrite, when cuBLASLt declined
 * (the caller then runs the kernel path); LV_E_CUDA when an epilogue launch
 * failed. */
lv_status qgemm_lt_path(cublasLtHandle_t h, const int8_t *xq, int64_t ldx, const float *xscale,
                        const int8_t *w, int64_t ldw, const float *wscale, int64_t group_size,
                        const float *bias, int64_t M, int64_t N, int64_t K, void *y,
                        lv_dtype ydt, int64_t ldy, void *workspace, size_t workspace_bytes,
                        cudaStream_t st) {
    const int64_t rows = lt_chunk_rows(M, N, K, group_size);
    if (rows < 1) return LV_E_UNSUPPORTED;
    const int64_t G = lv_qgemm_groups(K, group_size), gs = K / G;
    const int64_t prod_bytes = round_up(G * rows * N * 4, 256);
    if (!workspace || workspace_bytes < (size_t)(prod_bytes + kLtWorkspace) ||
        !aligned(workspace, 16) || !aligned(xq, 16) || !aligned(w, 16) || ldx % 16 ||
        ldw % 16)
        return LV_E_UNSUPPORTED;
    int32_t *prod = (int32_t *)workspace;
    void *lt_ws = (char *)workspace + prod_bytes;
    const size_t lt_ws_bytes = workspace_bytes - (size_t)prod_bytes;
    for (int64_t m0 = 0; m0 < M; m0 += rows) {
        const int64_t mc = M - m0 < rows ? M - m0 : rows;
        /* Chunks run in stream order, so chunk c + 1's GEMM starts after
         * chunk c's epilogue has read the shared product buffer. */
        if (!lt_products(h, st, xq + m0 * ldx, ldx, w, ldw, G, gs, mc, N, prod, lt_ws,
                         lt_ws_bytes))
            return LV_E_UNSUPPORTED;
        qgemm_epilogue_kernel<<<grid_1d(mc * N, kEpilogueThreads), kEpilogueThreads, 0, st>>>(
            prod, mc, N, G, xscale, wscale, bias, y, (int)ydt, ldy, m0);
        lv_status s = check_launch("qgemm_epilogue_kernel");
        if (s != LV_OK) return s;
    }
    return LV_OK;
}

/* ---------------------------------------------------------------------------
 * Gradient to the input: 32 rows x 64 columns per block, n in tiles of 32
 * through shared memory; each output's fmaf chain runs over n in order.
 * ------------------------------------------------------------------------- */

constexpr int kGradBK = 64; /* columns k per block: one group (groups are multiples of 64) */
constexpr int kGradBN = 32; /* n per shared tile */
constexpr int kGradTM = 8;  /* rows per thread */
constexpr int kGradTY = 4;  /* thread rows per block */
constexpr int kGradBM = kGradTM * kGradTY;
constexpr int kGradThreads = kGradBK * kGradTY;

__global__ void __launch_bounds__(kGradThreads)
    grad_input_kernel(const void *gy, int gdt, int64_t ldg, const int8_t *w, int64_t ldw,
                      const float *wscale, int64_t G, int64_t gs, const float *act_scale,
                      int64_t M, int64_t N, int64_t K, void *gx, int xdt, int64_t ldgx) {
    __shared__ float s_s[kGradBM][kGradBN];  /* gy[m, n] * wscale[n, g] */
    __shared__ float s_w[kGradBN][kGradBK];  /* (float)w[n, k] */
    const int tx = threadIdx.x, ty = threadIdx.y, tid = ty * kGradBK + tx;
    const int64_t k0 = (int64_t)blockIdx.x * kGradBK, k = k0 + tx;
    /* k0 .. k0 + 63 lie in one group: group sizes are multiples of 64 (G = 1:
     * gs = K > k0) */
    const int64_t g = k0 / gs;
    for (int64_t m0 = (int64_t)blockIdx.y * kGradBM; m0 < M; m0 += (int64_t)gridDim.y * kGradBM) {
        float acc[kGradTM];
#pragma unroll
        for (int i = 0; i < kGradTM; i++) acc[i] = 0.0f;
        for (int64_t n0 = 0; n0 < N; n0 += kGradBN) {
            const int nb = N - n0 < kGradBN ? (int)(N - n0) : kGradBN;
            __syncthreads(); /* the previous tile has been consumed */
            for (int i = tid; i < kGradBM * kGradBN; i += kGradThreads) {
                const int mi = i / kGradBN, ni = i % kGradBN;
                const int64_t m = m0 + mi, n = n0 + ni;
                float s = 0.0f;
                if (m < M && ni < nb) s = __fmul_rn(load_f32(gy, gdt, m * ldg + n), wscale[n * G + g]);
                s_s[mi][ni] = s;
            }
            for (int i = tid; i < kGradBN * kGradBK; i += kGradThreads) {
                const int ni = i / kGradBK, ki = i % kGradBK;
                const int64_t n = n0 + ni, kk = k0 + ki;
                s_w[ni][ki] = (ni < nb && kk < K) ? (float)w[n * ldw + kk] : 0.0f;
            }
            __syncthreads();
            /* only the nb real n: a padded step would add +0 and turn a -0
             * chain into +0 */
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

}  // namespace

/* ---------------------------------------------------------------------------
 * Launchers (lowvram/qgemm.h).
 * ------------------------------------------------------------------------- */

extern "C" {

const char *lv_cuda_last_error(void) { return t_last_error; }

/* "kernel" or "cublaslt": the path the last successful lv_cuda_qgemm_int8 on
 * this thread took ("" before any). For tests that must know both paths ran. */
const char *lv_cuda_qgemm_int8_last_path(void) { return t_last_path; }

lv_status lv_cuda_quantize_int8(const void *x, lv_dtype xdt, int64_t ldx, int64_t M, int64_t K,
                                const float *act_scale, int64_t group_size, int8_t *q,
                                int64_t ldq, float *scale, void *stream) {
    lv_status s = lv_check_quantize(x, ldx, K, group_size, 0, M, q, ldq, scale);
    if (s != LV_OK) return s;
    if (!valid_dtype(xdt)) return LV_E_INVALID;
    if (M == 0) return LV_OK;
    const int64_t G = lv_qgemm_groups(K, group_size), gs = K / G;
    /* threads: up to 256, but no more warps than the group has elements */
    const int threads = gs >= kQuantMaxThreads ? kQuantMaxThreads : (int)round_up(gs, 32);
    const int64_t items = M * G;
    const unsigned blocks = (unsigned)(items < (1 << 20) ? items : (1 << 20));
    quantize_kernel<<<blocks, threads, 0, (cudaStream_t)stream>>>(x, (int)xdt, ldx, act_scale, M,
                                                                  G, gs, q, ldq, scale);
    return check_launch("quantize_kernel");
}

size_t lv_cuda_qgemm_int8_workspace(int64_t M, int64_t N, int64_t K, int64_t group_size) {
    const int64_t rows = lt_chunk_rows(M, N, K, group_size);
    if (rows < 1) return 0;
    const int64_t G = lv_qgemm_groups(K, group_size);
    return (size_t)(round_up(G * rows * N * 4, 256) + kLtWorkspace);
}

lv_status lv_cuda_qgemm_int8(const int8_t *xq, int64_t ldx, const float *xscale,
                             const int8_t *w, int64_t ldw, const float *wscale,
                             int64_t group_size, const float *bias, int64_t M, int64_t N,
                             int64_t K, void *y, lv_dtype ydt, int64_t ldy, void *workspace,
                             size_t workspace_bytes, void *cublaslt_handle, void *stream) {
    lv_status s = lv_check_qgemm((const uint8_t *)xq, ldx, xscale, w, ldw, wscale, group_size,
                                 K, 0, M, 0, N, y, ldy);
    if (s != LV_OK) return s;
    if (!valid_dtype(ydt)) return LV_E_INVALID;
    if (M == 0 || N == 0) return LV_OK;
    cudaStream_t st = (cudaStream_t)stream;
    if (cublaslt_handle) {
        s = qgemm_lt_path((cublasLtHandle_t)cublaslt_handle, xq, ldx, xscale, w, ldw, wscale,
                          group_size, bias, M, N, K, y, ydt, ldy, workspace, workspace_bytes, st);
        if (s == LV_OK) t_last_path = "cublaslt";
        if (s != LV_E_UNSUPPORTED) return s;
    }
    const int64_t G = lv_qgemm_groups(K, group_size);
    s = qgemm_kernel_path(xq, ldx, xscale, w, ldw, wscale, G, K / G, bias, M, N, y, ydt, ldy,
                          st);
    if (s == LV_OK) t_last_path = "kernel";
    return s;
}

lv_status lv_cuda_qlinear_grad_input(const void *gy, lv_dtype gdt, int64_t ldg,
                                     const int8_t *w, int64_t ldw, const float *wscale,
                                     int64_t group_size, const float *act_scale, int64_t M,
                                     int64_t N, int64_t K, void *gx, lv_dtype xdt,
                                     int64_t ldgx, void *stream) {
    lv_status s = lv_check_grad_input(gy, ldg, w, ldw, wscale, group_size, N, K, 0, M, 0, K, gx,
                                      ldgx);
    if (s != LV_OK) return s;
    if (!valid_dtype(gdt) || !valid_dtype(xdt)) return LV_E_INVALID;
    if (M == 0) return LV_OK;
    const int64_t G = lv_qgemm_groups(K, group_size);
    const int64_t mtiles = (M + kGradBM - 1) / kGradBM;
    const dim3 grid((unsigned)((K + kGradBK - 1) / kGradBK),
                    (unsigned)(mtiles < 65535 ? mtiles : 65535));
    const dim3 block(kGradBK, kGradTY);
    grad_input_kernel<<<grid, block, 0, (cudaStream_t)stream>>>(gy, (int)gdt, ldg, w, ldw, wscale,
                                                                G, K / G, act_scale, M, N, K, gx,
                                                                (int)xdt, ldgx);
    return check_launch("grad_input_kernel");
}

}  // extern "C"
