/* ops/cpu/sparse_avx512.c — placeholder: forwards to the reference until the avx512 kernels land. */
#include "lowvram/sparse.h"


lv_status lv_nm_mask_rows_avx512(const float *score, int64_t lds, int64_t K, int n, int m, int64_t r0, int64_t r1, uint8_t *keep, int64_t ldk) {
    return lv_nm_mask_rows_ref(score, lds, K, n, m, r0, r1, keep, ldk);
}

lv_status lv_sparse_compress_rows_avx512(const void *w, int esz, int64_t ldw, const uint8_t *keep, int64_t ldk, int64_t K, int64_t KV, int64_t r0, int64_t r1, void *values, int64_t ldv, uint8_t *mask_bits, int64_t ldb) {
    return lv_sparse_compress_rows_ref(w, esz, ldw, keep, ldk, K, KV, r0, r1, values, ldv, mask_bits, ldb);
}

lv_status lv_sparse_decompress_rows_avx512(const void *values, int esz, int64_t ldv, const uint8_t *mask_bits, int64_t ldb, int64_t K, int64_t KV, int64_t r0, int64_t r1, void *w, int64_t ldw) {
    return lv_sparse_decompress_rows_ref(values, esz, ldv, mask_bits, ldb, K, KV, r0, r1, w, ldw);
}

lv_status lv_sparse_qgemm_int8_rows_avx512(const uint8_t *xu, int64_t ldx, const float *xscale, const int8_t *qvalues, int64_t ldv, const uint8_t *mask_bits, int64_t ldb, int64_t KV, const float *wscale, int64_t group_size, const float *bias, int64_t K, int64_t m0, int64_t m1, int64_t n0, int64_t n1, void *y, lv_dtype ydt, int64_t ldy) {
    return lv_sparse_qgemm_int8_rows_ref(xu, ldx, xscale, qvalues, ldv, mask_bits, ldb, KV, wscale, group_size, bias, K, m0, m1, n0, n1, y, ydt, ldy);
}

lv_status lv_sparse_gemm_rows_avx512(const void *x, lv_dtype xdt, int64_t ldx, const void *values, lv_dtype vdt, int64_t ldv, const uint8_t *mask_bits, int64_t ldb, int64_t KV, const float *bias, int64_t K, int64_t m0, int64_t m1, int64_t n0, int64_t n1, void *y, lv_dtype ydt, int64_t ldy) {
    return lv_sparse_gemm_rows_ref(x, xdt, ldx, values, vdt, ldv, mask_bits, ldb, KV, bias, K, m0, m1, n0, n1, y, ydt, ldy);
}

lv_status lv_sparse_qlinear_grad_input_rows_avx512(const void *gy, lv_dtype gdt, int64_t ldg, const int8_t *qvalues, int64_t ldv, const uint8_t *mask_bits, int64_t ldb, int64_t KV, const float *wscale, int64_t group_size, const float *act_scale, int64_t N, int64_t K, int64_t m0, int64_t m1, int64_t k0, int64_t k1, void *gx, lv_dtype xdt, int64_t ldgx) {
    return lv_sparse_qlinear_grad_input_rows_ref(gy, gdt, ldg, qvalues, ldv, mask_bits, ldb, KV, wscale, group_size, act_scale, N, K, m0, m1, k0, k1, gx, xdt, ldgx);
}

lv_status lv_sparse_linear_grad_input_rows_avx512(const void *gy, lv_dtype gdt, int64_t ldg, const void *values, lv_dtype vdt, int64_t ldv, const uint8_t *mask_bits, int64_t ldb, int64_t KV, int64_t N, int64_t K, int64_t m0, int64_t m1, int64_t k0, int64_t k1, void *gx, lv_dtype xdt, int64_t ldgx) {
    return lv_sparse_linear_grad_input_rows_ref(gy, gdt, ldg, values, vdt, ldv, mask_bits, ldb, KV, N, K, m0, m1, k0, k1, gx, xdt, ldgx);
}
