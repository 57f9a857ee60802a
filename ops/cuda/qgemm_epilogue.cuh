/*
 * ops/cuda/qgemm_epilogue.cuh — the float epilogue of qgemm.h's contract as
 * device functions, shared by every CUDA path that turns exact int32 group
 * sums into outputs (qgemm.cu's __dp4a kernels and cuBLASLt epilogue,
 * sparse.cu's compressed-weight kernel and cuSPARSELt epilogue), so that the
 * float math exists once:
 *
 *     t = (float)acc_0 * wscale[n, 0];  t = t + (float)acc_g * wscale[n, g]
 *     v = t * xscale[m];  v = v + bias[n] (when given)
 *
 * each operation rounded to float32 with an explicit _rn intrinsic (no FMA
 * contraction). Compiling for the host (scratch harnesses) needs the _rn
 * intrinsics defined there as plain float operations.
 */
#ifndef LOWVRAM_QGEMM_EPILOGUE_CUH
#define LOWVRAM_QGEMM_EPILOGUE_CUH

#include <stdint.h>

#ifdef __CUDACC__
#define LV_EPI_FN __device__ __forceinline__
#else
#define LV_EPI_FN static inline
#endif

/* Group g's term of t: (float)acc * ws (both roundings of the contract). */
LV_EPI_FN float lv_qgemm_group_term(int32_t acc, float ws) {
    return __fmul_rn(__int2float_rn(acc), ws);
}

/* t after group g: the term itself for g == 0, else t + term (rounded). */
LV_EPI_FN float lv_qgemm_combine(float t, int64_t g, float term) {
    return g == 0 ? term : __fadd_rn(t, term);
}

/* The output value before its store: t * xscale (+ bias). */
LV_EPI_FN float lv_qgemm_finish(float t, float xscale, const float *bias, int64_t n) {
    float v = __fmul_rn(t, xscale);
    if (bias) v = __fadd_rn(v, bias[n]);
    return v;
}

#endif /* LOWVRAM_QGEMM_EPILOGUE_CUH */
