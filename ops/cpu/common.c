/*
 * ops/cpu/common.c — status strings, dtype sizes and the CPU variant choice
 * (common.h). The variant is chosen once from CPUID through
 * __builtin_cpu_supports, never from compile flags, so one build runs on any
 * x86-64 CPU: each ISA's kernels live in their own file compiled with that
 * ISA's flags and are only called after this check.
 */
#include <stdlib.h>
#include <string.h>

#include "lowvram/common.h"

const char *lv_status_str(lv_status s) {
    switch (s) {
    case LV_OK: return "ok";
    case LV_E_INVALID: return "invalid argument";
    case LV_E_K_TOO_LARGE: return "K too large for exact int32 sums";
    case LV_E_UNSUPPORTED: return "not supported on this CPU or build";
    case LV_E_CUDA: return "CUDA error";
    }
    return "unknown status";
}

int lv_dtype_size(lv_dtype dt) { return dt == LV_F32 ? 4 : 2; }

const char *lv_isa_name(lv_isa isa) {
    switch (isa) {
    case LV_ISA_REF: return "ref";
    case LV_ISA_AVX2: return "avx2";
    case LV_ISA_AVX512: return "avx512";
    }
    return "unknown";
}

int lv_isa_from_name(const char *name) {
    if (!name) return -1;
    if (!strcmp(name, "ref")) return LV_ISA_REF;
    if (!strcmp(name, "avx2")) return LV_ISA_AVX2;
    if (!strcmp(name, "avx512")) return LV_ISA_AVX512;
    return -1;
}

int lv_cpu_isa_supported(lv_isa isa) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    switch (isa) {
    case LV_ISA_REF: return 1;
    case LV_ISA_AVX2:
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
               __builtin_cpu_supports("f16c");
    case LV_ISA_AVX512:
        return lv_cpu_isa_supported(LV_ISA_AVX2) && __builtin_cpu_supports("avx512f") &&
               __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
               __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vnni");
    }
    return 0;
#else
    return isa == LV_ISA_REF;
#endif
}

lv_isa lv_cpu_isa_best(void) {
    if (lv_cpu_isa_supported(LV_ISA_AVX512)) return LV_ISA_AVX512;
    if (lv_cpu_isa_supported(LV_ISA_AVX2)) return LV_ISA_AVX2;
    return LV_ISA_REF;
}

/* -1 until first use. Relaxed atomics: every thread computes the same value. */
static int g_isa = -1;
static const char *g_env_error = NULL;

static lv_isa choose(void) {
    const char *env = getenv("LOWVRAM_ISA");
    if (env && *env) {
        int want = lv_isa_from_name(env);
        if (want < 0) {
            g_env_error = "LOWVRAM_ISA must be ref, avx2 or avx512; using the best supported";
        } else if (!lv_cpu_isa_supported((lv_isa)want)) {
            g_env_error = "LOWVRAM_ISA names an instruction set this CPU lacks; using the "
                          "best supported";
        } else {
            return (lv_isa)want;
        }
    }
    return lv_cpu_isa_best();
}

lv_isa lv_cpu_isa(void) {
    int isa = __atomic_load_n(&g_isa, __ATOMIC_RELAXED);
    if (isa < 0) {
        isa = (int)choose();
        __atomic_store_n(&g_isa, isa, __ATOMIC_RELAXED);
    }
    return (lv_isa)isa;
}

lv_status lv_cpu_set_isa(lv_isa isa) {
    if (!lv_cpu_isa_supported(isa)) return LV_E_UNSUPPORTED;
    __atomic_store_n(&g_isa, (int)isa, __ATOMIC_RELAXED);
    return LV_OK;
}

const char *lv_cpu_isa_env_error(void) {
    (void)lv_cpu_isa();
    return g_env_error;
}
