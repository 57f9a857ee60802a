/*
 * ops/cpu/sparse.c — the dispatching entry points of the sparse family
 * (lowvram/sparse.h): each calls the variant lv_cpu_isa() chose (common.c),
 * as ops/cpu/qgemm.c does for the qgemm family, except that the AVX-512
 * variant needs AVX512_VBMI2 too.
 */
#include "lowvram/sparse.h"

/* The AVX-512 variant also needs AVX512_VBMI2 (vpexpandb); without it the
 * AVX2 variant runs. */
static lv_isa sparse_isa(void) {
    lv_isa isa = lv_cpu_isa();
#if defined(__x86_64__) || defined(__i386__)
    if (isa == LV_ISA_AVX512 && !__builtin_cpu_supports("avx512vbmi2")) return LV_ISA_AVX2;
#endif
    return isa;
}


lv_status lv_nm_mask_rows(const float *score, int64_t lds, int64_t K, int n, int m, int64_t r0, int64_t r1, uint8_t *keep, int64_t ldk) {
    switch (sparse_isa()) {
    case LV_ISA_AVX512: return lv_nm_mask_rows_avx512(score, lds, K, n, m, r0, r1, keep, ldk);
    case LV_ISA_AVX2: return lv_nm_mask_rows_avx2(score, lds, K, n, m, r0, r1, keep, ldk);
    default: return lv_nm_mask_rows_ref(score, lds, K, n, m, r0, r1, keep, ldk);
    }
}

lv_status lv_sparse_compress_rows(const void *w, int esz, int64_t ldw, const uint8_t *keep, int64_t ldk, int64_t K, int64_t KV, int64_t r0, int64_t r1, void *values, int64_t ldv, uint8_t *mask_bits, int64_t ldb) {
    switch (sparse_isa()) {
    case LV_ISA_AVX512: return lv_sparse_compress_rows_avx512(w, esz, ldw, keep, ldk, K, KV, r0, r1, values, ldv, mask_bits, ldb);
    case LV_ISA_AVX2: return lv_sparse_compress_rows_avx2(w, esz, ldw, keep, ldk, K, KV, r0, r1, values, ldv, mask_bits, ldb);
    default: return lv_sparse_compress_rows_ref(w, esz, ldw, keep, ldk, K, KV, r0, r1, values, ldv, mask_bits, ldb);
    }
}

lv_status lv_sparse_decompress_rows(const void *values, int esz, int64_t ldv, const uint8_t *mask_bits, int64_t ldb, int64_t K, int64_t KV, int64_t r0, int64_t r1, void *w, int64_t ldw) {
    switch (sparse_isa()) {
    case LV_ISA_AVX512: return lv_sparse_decompress_rows_avx512(values, esz, ldv, mask_bits, ldb, K, KV, r0, r1, w, ldw);
    case LV_ISA_AVX2: return lv_sparse_decompress_rows_avx2(values, esz, ldv, mask_bits, ldb, K, KV, r0, r1, w, ldw);
    default: return lv_sparse_decompress_rows_ref(values, esz, ldv, mask_bits, ldb, K, KV, r0, r1, w, ldw);
    }
}

lv_status lv_sparse_qgemm_int8_rows(const uint8_t *xu, int64_t ldx, const float *xscale, const int8_t *qvalues, int64_t ldv, const uint8_t *mask_bits, int64_t ldb, int64_t KV, const float *wscale, int64_t group_size, const float *bias, int64_t K, int64_t m0, int64_t m1, int64_t n0, int64_t n1, void *y, lv_dtype ydt, int64_t ldy) {
    switch (sparse_isa()) {
    case LV_ISA_AVX512: return lv_sparse_qgemm_int8_rows_avx512(xu, ldx, xscale, qvalues, ldv, mask_bits, ldb, KV, wscale, group_size, bias, K, m0, m1, n0, n1, y, ydt, ldy);
    case LV_ISA_AVX2: return lv_sparse_qgemm_int8_rows_avx2(xu, ldx, xscale, qvalues, ldv, mask_bits, ldb, KV, wscale, group_size, bias, K, m0, m1, n0, n1, y, ydt, ldy);
    default: return lv_sparse_qgemm_int8_rows_ref(xu, ldx, xscale, qvalues, ldv, mask_bits, ldb, KV, wscale, group_size, bias, K, m0, m1, n0, n1, y, ydt, ldy);
    }
}

lv_status lv_sparse_gemm_rows(const void *x, lv_dtype xdt, int64_t ldx, const void *values, lv_dtype vdt, int64_t ldv, const uint8_t *mask_bits, int64_t ldb, int64_t KV, const float *bias, int64_t K, int64_t m0, int64_t m1, int64_t n0, int64_t n1, void *y, lv_dtype ydt, int64_t ldy) {
    switch (sparse_isa()) {
    case LV_ISA_AVX512: return lv_sparse_gemm_rows_avx512(x, xdt, ldx, values, vdt, ldv, mask_bits, ldb, KV, bias, K, m0, m1, n0, n1, y, ydt, ldy);
    case LV_ISA_AVX2: return lv_sparse_gemm_rows_avx2(x, xdt, ldx, values, vdt, ldv, mask_bits, ldb, KV, bias, K, m0, m1, n0, n1, y, ydt, ldy);
    default: return lv_sparse_gemm_rows_ref(x, xdt, ldx, values, vdt, ldv, mask_bits, ldb, KV, bias, K, m0, m1, n0, n1, y, ydt, ldy);
    }
}

lv_status lv_sparse_qlinear_grad_input_rows(const void *gy, lv_dtype gdt, int64_t ldg, const int8_t *qvalues, int64_t ldv, const uint8_t *mask_bits, int64_t ldb, int64_t KV, const float *wscale, int64_t group_size, const float *act_scale, int64_t N, int64_t K, int64_t m0, int64_t m1, int64_t k0, int64_t k1, void *gx, lv_dtype xdt, int64_t ldgx) {
    switch (sparse_isa()) {
    case LV_ISA_AVX512: return lv_sparse_qlinear_grad_input_rows_avx512(gy, gdt, ldg, qvalues, ldv, mask_bits, ldb, KV, wscale, group_size, act_scale, N, K, m0, m1, k0, k1, gx, xdt, ldgx);
    case LV_ISA_AVX2: return lv_sparse_qlinear_grad_input_rows_avx2(gy, gdt, ldg, qvalues, ldv, mask_bits, ldb, KV, wscale, group_size, act_scale, N, K, m0, m1, k0, k1, gx, xdt, ldgx);
    default: return lv_sparse_qlinear_grad_input_rows_ref(gy, gdt, ldg, qvalues, ldv, mask_bits, ldb, KV, wscale, group_size, act_scale, N, K, m0, m1, k0, k1, gx, xdt, ldgx);
    }
}

lv_status lv_sparse_linear_grad_input_rows(const void *gy, lv_dtype gdt, int64_t ldg, const void *values, lv_dtype vdt, int64_t ldv, const uint8_t *mask_bits, int64_t ldb, int64_t KV, int64_t N, int64_t K, int64_t m0, int64_t m1, int64_t k0, int64_t k1, void *gx, lv_dtype xdt, int64_t ldgx) {
    switch (sparse_isa()) {
    case LV_ISA_AVX512: return lv_sparse_linear_grad_input_rows_avx512(gy, gdt, ldg, values, vdt, ldv, mask_bits, ldb, KV, N, K, m0, m1, k0, k1, gx, xdt, ldgx);
    case LV_ISA_AVX2: return lv_sparse_linear_grad_input_rows_avx2(gy, gdt, ldg, values, vdt, ldv, mask_bits, ldb, KV, N, K, m0, m1, k0, k1, gx, xdt, ldgx);
    default: return lv_sparse_linear_grad_input_rows_ref(gy, gdt, ldg, values, vdt, ldv, mask_bits, ldb, KV, N, K, m0, m1, k0, k1, gx, xdt, ldgx);
    }
}
