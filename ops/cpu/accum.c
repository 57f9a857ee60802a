/*
 * ops/cpu/accum.c — the dispatching entry points of the accum family
 * (lowvram/accum.h): lv_grad_accum_span calls the variant lv_cpu_isa() chose
 * (common.c); lv_grad_accum_multi walks a global element range of a tensor
 * list and hands each tensor's part to it, so that the shim can split the
 * whole list across threads in one parallel region.
 */
#include "accum_internal.h"

lv_status lv_grad_accum_span(float *acc, const void *g, lv_dtype gdt, float scale, int64_t n) {
    switch (lv_cpu_isa()) {
    case LV_ISA_AVX512: return lv_grad_accum_span_avx512(acc, g, gdt, scale, n);
    case LV_ISA_AVX2: return lv_grad_accum_span_avx2(acc, g, gdt, scale, n);
    default: return lv_grad_accum_span_ref(acc, g, gdt, scale, n);
    }
}

/* The tensor holding global element e: the last t with offsets[t] <= e and
 * offsets[t + 1] > e (binary search; empty tensors are skipped). */
static int64_t find_tensor(const int64_t *offsets, int64_t count, int64_t e) {
    int64_t lo = 0, hi = count; /* offsets[lo] <= e < offsets[hi] */
    while (hi - lo > 1) {
        int64_t mid = lo + (hi - lo) / 2;
        if (offsets[mid] <= e) lo = mid;
        else hi = mid;
    }
    return lo;
}

lv_status lv_grad_accum_multi(float *const *acc, const void *const *g, const lv_dtype *gdt,
                              const int64_t *offsets, int64_t count, float scale, int64_t e0,
                              int64_t e1) {
    if (count < 0 || e0 < 0 || e1 < e0) return LV_E_INVALID;
    if (e1 == e0) return LV_OK;
    if (count == 0 || !offsets || !acc || !g || !gdt) return LV_E_INVALID;
    if (offsets[0] != 0 || e1 > offsets[count]) return LV_E_INVALID;
    for (int64_t t = find_tensor(offsets, count, e0); t < count && offsets[t] < e1; t++) {
        if (offsets[t + 1] < offsets[t]) return LV_E_INVALID;
        const int64_t b = e0 > offsets[t] ? e0 : offsets[t];
        const int64_t e = e1 < offsets[t + 1] ? e1 : offsets[t + 1];
        if (e <= b) continue;
        const int64_t i0 = b - offsets[t];
        const int esz = lv_dtype_size(gdt[t]);
        lv_status st = lv_grad_accum_span(acc[t] ? acc[t] + i0 : NULL,
                                          g[t] ? (const char *)g[t] + i0 * esz : NULL, gdt[t],
                                          scale, e - b);
        if (st != LV_OK) return st;
    }
    return LV_OK;
}
