/*
 * ops/cpu/accum_internal.h — argument checks shared by every CPU variant of
 * the accum family (internal), so that each variant refuses exactly what the
 * reference refuses.
 */
#ifndef LOWVRAM_CPU_ACCUM_INTERNAL_H
#define LOWVRAM_CPU_ACCUM_INTERNAL_H

#include "lowvram/accum.h"

static inline lv_status lv_check_accum_span(const float *acc, const void *g, lv_dtype gdt,
                                            int64_t n) {
    if (n < 0 || (gdt != LV_F32 && gdt != LV_BF16 && gdt != LV_F16)) return LV_E_INVALID;
    if (n > 0 && (!acc || !g)) return LV_E_INVALID;
    return LV_OK;
}

#endif /* LOWVRAM_CPU_ACCUM_INTERNAL_H */
