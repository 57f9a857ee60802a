/*
 * ops/cuda/accum.cu — the CUDA side of the accum family (lowvram/accum.h,
 * "CUDA launcher"): acc[t][i] = fmaf(scale, (float)g[t][i], acc[t][i]) over a
 * whole tensor list in one launch (multi-tensor apply).
 *
 * The list is one concatenation of its tensors' elements (offsets in the
 * device metadata the shim uploads). Block b owns the global elements
 * [b * CHUNK, (b + 1) * CHUNK); it finds the tensor holding its first element
 * by binary search over the offsets, and each thread walks its elements in
 * increasing order, stepping to the next tensor when it crosses an offset.
 * A chunk may straddle tensors, so no tensor is too small to fill blocks and
 * there is one launch however many tensors there are. Loads of neighbouring
 * threads are neighbouring elements (coalesced).
 *
 * Bit-exactness with ops/cpu/accum_ref.c: the one float operation is
 * __fmaf_rn (the contract's fmaf, one rounding); the conversions are
 * lowvram/convert.h's, compiled for the device; --fmad=false and no -ftz
 * (subnormals as on the CPU). The launcher never allocates, prints or
 * synchronizes.
 */
#include <cuda_runtime.h>

#include <stdint.h>
#include <stdio.h>

#include "lowvram/accum.h"
#include "lowvram/convert.h"

namespace {

thread_local char t_last_error[512] = "";

lv_status cuda_failure(const char *what, cudaError_t err) {
    snprintf(t_last_error, sizeof t_last_error, "%s: %s (%s)", what, cudaGetErrorString(err),
             cudaGetErrorName(err));
    return LV_E_CUDA;
}

constexpr int kThreads = 256;
constexpr int kPerThread = 16;
constexpr int64_t kChunk = (int64_t)kThreads * kPerThread; /* elements per block */

__global__ void __launch_bounds__(kThreads)
    grad_accum_kernel(const int64_t *__restrict__ meta, int64_t count, int64_t total,
                      float scale) {
    const int64_t *accp = meta;
    const int64_t *gp = meta + count;
    const int64_t *dtp = meta + 2 * count;
    const int64_t *off = meta + 3 * count; /* [count + 1] */
    const int64_t c0 = (int64_t)blockIdx.x * kChunk;
    const int64_t c1 = c0 + kChunk < total ? c0 + kChunk : total;
    /* the tensor holding c0: last t with off[t] <= c0 (then off[t + 1] > c0) */
    int64_t lo = 0, hi = count;
    while (hi - lo > 1) {
        const int64_t mid = lo + (hi - lo) / 2;
        if (off[mid] <= c0) lo = mid;
        else hi = mid;
    }
    int64_t t = lo;
    int64_t t_end = off[t + 1];
    float *acc = (float *)(uintptr_t)accp[t];
    const void *g = (const void *)(uintptr_t)gp[t];
    int dt = (int)dtp[t];
    int64_t base = off[t];
    for (int64_t e = c0 + threadIdx.x; e < c1; e += kThreads) {
        if (e >= t_end) {
            do t++; while (off[t + 1] <= e); /* skips empty tensors */
            t_end = off[t + 1];
            acc = (float *)(uintptr_t)accp[t];
            g = (const void *)(uintptr_t)gp[t];
            dt = (int)dtp[t];
            base = off[t];
        }
        const int64_t i = e - base;
        acc[i] = __fmaf_rn(scale, lv_load_f32(g, (lv_dtype)dt, i), acc[i]);
    }
}

}  // namespace

extern "C" lv_status lv_cuda_grad_accum(const int64_t *meta, int64_t count, int64_t total,
                                        float scale, void *stream) {
    if (count < 0 || total < 0) return LV_E_INVALID;
    if (total == 0) return LV_OK;
    if (!meta || count == 0) return LV_E_INVALID;
    const int64_t blocks = (total + kChunk - 1) / kChunk;
    if (blocks > 0x7fffffffLL) return LV_E_INVALID;
    grad_accum_kernel<<<(unsigned)blocks, kThreads, 0, (cudaStream_t)stream>>>(meta, count, total,
                                                                            scale);
    cudaError_t err = cudaGetLastError();
    return err == cudaSuccess ? LV_OK : cuda_failure("grad_accum_kernel", err);
}

extern "C" const char *lv_cuda_accum_last_error(void) { return t_last_error; }
