/*
 * lowvram/common.h — what every lowvram kernel family shares: the status
 * codes kernels return (they never print, exit or allocate), the float
 * dtypes that cross the C boundary, and the CPU instruction-set dispatch.
 *
 * Float conversions (exact, shared by every variant so results match bit for
 * bit): bf16 -> f32 and f16 -> f32 are exact; f32 -> bf16 rounds to nearest
 * even and maps every NaN to 0x7fc0 (as c10::BFloat16 does); f32 -> f16
 * rounds to nearest even with IEEE subnormals and overflow to infinity (as
 * F16C's vcvtps2ph with round-to-nearest does) and maps every NaN to 0x7e00.
 * Both NaNs are positive on purpose: when two NaNs meet, which one x86
 * propagates (and so its sign) depends on the compiler's operand order.
 */
#ifndef LOWVRAM_COMMON_H
#define LOWVRAM_COMMON_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    LV_OK = 0,
    LV_E_INVALID = 1,     /* an argument breaks the kernel's contract */
    LV_E_K_TOO_LARGE = 2, /* K beyond what an exact int32 sum allows */
    LV_E_UNSUPPORTED = 3, /* variant not available on this CPU / build */
    LV_E_CUDA = 4,        /* a CUDA runtime or library call failed */
} lv_status;

/* A short English phrase for a status ("invalid argument", ...). */
const char *lv_status_str(lv_status s);

/* Float element types of activations, gradients and outputs. */
typedef enum { LV_F32 = 0, LV_BF16 = 1, LV_F16 = 2 } lv_dtype;

/* Bytes per element of a dtype (4, 2, 2). */
int lv_dtype_size(lv_dtype dt);

/* CPU instruction sets with a kernel variant. LV_ISA_AVX512 needs
 * AVX-512 F/BW/VL/DQ + VNNI + FMA + F16C; LV_ISA_AVX2 needs AVX2 + FMA + F16C. */
typedef enum { LV_ISA_REF = 0, LV_ISA_AVX2 = 1, LV_ISA_AVX512 = 2 } lv_isa;

/* The variant the dispatching entry points use. Chosen once, on first use:
 * LOWVRAM_ISA=ref|avx2|avx512 when set (an unsupported or unknown value falls
 * back to the best one; lv_cpu_isa_env_error() says why), else the best the
 * CPU supports (__builtin_cpu_supports, never -march=native). */
lv_isa lv_cpu_isa(void);
/* The best variant this CPU supports. */
lv_isa lv_cpu_isa_best(void);
/* 1 when this CPU can run the variant. */
int lv_cpu_isa_supported(lv_isa isa);
/* Force a variant for every later call (tests, benchmarks). LV_E_UNSUPPORTED
 * when this CPU cannot run it. Not thread-safe against running kernels. */
lv_status lv_cpu_set_isa(lv_isa isa);
/* "ref", "avx2", "avx512". */
const char *lv_isa_name(lv_isa isa);
/* Parses a name; returns -1 for an unknown one. */
int lv_isa_from_name(const char *name);
/* NULL, or a message when LOWVRAM_ISA held a value that could not be used. */
const char *lv_cpu_isa_env_error(void);

#ifdef __cplusplus
}
#endif

#endif /* LOWVRAM_COMMON_H */
