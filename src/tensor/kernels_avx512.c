/* kernels_avx512.c — the AVX-512 (F, BW, VL, VNNI) layer of the traits
 * table: types.c calls mf_avx512_install after the AVX2 install, only when
 * the CPU reports all four extensions, and each family file replaces the
 * entries it has faster kernels for. Every kernel equals its scalar
 * reference bit for bit (tests/unit/test_kernels_avx512.c). */
#include "tensor/kernels.h"

void mf_avx512_install(mf_type_traits table[MF_TYPE_COUNT]) {
    mf_avx512_install_q32(table);
    mf_avx512_install_k(table);
    mf_avx512_install_pack(table);
}
