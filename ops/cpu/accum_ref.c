/*
 * ops/cpu/accum_ref.c — the reference of the accum family (lowvram/accum.h):
 * the contract in scalar C. fmaf is C99's correctly rounded fused
 * multiply-add (one rounding); this file is compiled without -mfma, so it
 * comes from libm (glibc's fmaf is exact), and -ffp-contract=off keeps the
 * compiler from fusing anything else.
 */
#include <math.h>

#include "accum_internal.h"
#include "lowvram/convert.h"

lv_status lv_grad_accum_span_ref(float *acc, const void *g, lv_dtype gdt, float scale,
                                 int64_t n) {
    lv_status st = lv_check_accum_span(acc, g, gdt, n);
    if (st != LV_OK) return st;
    for (int64_t i = 0; i < n; i++) acc[i] = fmaf(scale, lv_load_f32(g, gdt, i), acc[i]);
    return LV_OK;
}
