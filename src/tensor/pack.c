/* pack.c — the interleaved in-memory layouts of q4_K, q5_K, q6_K, q8_0,
 * q4_0 and iq4_nl weights
 * ("x16": 16 rows per group) that the AVX-512 kernels read, and the
 * conversions to and from the file's row-major blocks.
 *
 * Why: a row-major q4_K row dotted with one activation row leaves 64 int32
 * partial sums per super-block that must be reduced, scaled and shuffled
 * back to one lane per row; that bookkeeping, not the multiply, bounded
 * decoding at ~56% of the read bandwidth here. With 16 rows interleaved
 * four bytes at a time, lane r of every vpdpbusd belongs to row r: the
 * reduction disappears and the weights are still one sequential stream
 * (the idea of llama.cpp's repacked q4_K x 8 layout; the byte order below
 * is memfit's own). The file is never changed: packing happens when a
 * session makes its weights resident.
 *
 * One packed super-block of a 16-row group (MF_Q4K_X16_BYTES = 16 x 144):
 *   [0, 32)      d of rows 0..15 (f16)
 *   [32, 64)     dmin of rows 0..15 (f16)
 *   [64, 256)    the 12 scale bytes transposed: byte j of row r at 64 + 16j + r
 *   [256, 2304)  quants: for pair p = 0..3 of sub-blocks and step k = 0..7,
 *                64 bytes holding qs[32p + 4k .. 32p + 4k + 3] of row r at 4r
 *                (low nibbles: sub-block 2p, high: 2p + 1).
 * Super-blocks of a group follow each other; groups follow each other. */
#include "tensor/kernels.h"

#include <string.h>

#define QK_K 256
#define XB 144

/* d, dmin and the 12 scale bytes of row r's block b into a q4_K/q5_K x16
 * super-block d (f16 x16, f16 x16, bytes transposed), and back. */
static void k4_head(const uint8_t *b, uint8_t *d, int r) {
    memcpy(d + 2 * r, b, 2);
    memcpy(d + 32 + 2 * r, b + 2, 2);
    for (int j = 0; j < 12; j++) d[64 + 16 * j + r] = b[4 + j];
}

static void k4_unhead(const uint8_t *s, uint8_t *b, int r) {
    memcpy(b, s + 2 * r, 2);
    memcpy(b + 2, s + 32 + 2 * r, 2);
    for (int j = 0; j < 12; j++) b[4 + j] = s[64 + 16 * j + r];
}

void mf_pack_q4_k_x16(const void *src, uint64_t src_stride, void *dst, int64_t n_in) {
    const uint8_t *s = src;
    uint8_t *d = dst;
    for (int64_t i = 0; i < n_in / QK_K; i++, d += MF_Q4K_X16_BYTES) {
        for (int r = 0; r < 16; r++) {
            const uint8_t *b = s + (uint64_t)r * src_stride + (uint64_t)i * XB;
            k4_head(b, d, r);
            for (int p = 0; p < 4; p++)
                for (int k = 0; k < 8; k++)
                    memcpy(d + 256 + (p * 8 + k) * 64 + 4 * r, b + 16 + 32 * p + 4 * k, 4);
        }
    }
}

void mf_unpack_q4_k_x16(const void *src, void *dst, uint64_t dst_stride, int64_t n_in) {
    const uint8_t *s = src;
    uint8_t *d = dst;
    for (int64_t i = 0; i < n_in / QK_K; i++, s += MF_Q4K_X16_BYTES) {
        for (int r = 0; r < 16; r++) {
            uint8_t *b = d + (uint64_t)r * dst_stride + (uint64_t)i * XB;
            k4_unhead(s, b, r);
            for (int p = 0; p < 4; p++)
                for (int k = 0; k < 8; k++)
                    memcpy(b + 16 + 32 * p + 4 * k, s + 256 + (p * 8 + k) * 64 + 4 * r, 4);
        }
    }
}

/* The 32-column types: a block is an f16 d and `steps` x 4 quant bytes.
 *
 * q8_0 x16: per block of 32 columns of the 16-row group (16 x 34 bytes):
 *   [0, 32)     d of rows 0..15 (f16)
 *   [32, 544)   for step l = 0..7, 64 bytes holding qs[4l .. 4l + 3] of row r
 *               at 4r, each byte XOR 0x80 (w + 128: unsigned, what vpdpbusd
 *               multiplies; the kernel takes 128 x the activation sum back).
 * q4_0 / iq4_nl x16: the same with 18-byte blocks (16 x 18 bytes): four
 * steps of qs[4k .. 4k + 3] (low nibbles: elements 4k.., high: 16 + 4k..),
 * bytes unchanged. */
static void pack_b32(const uint8_t *s, uint64_t src_stride, uint8_t *d, int64_t n_in, int bb,
                     uint8_t flip) {
    int steps = (bb - 2) / 4;
    for (int64_t i = 0; i < n_in / 32; i++, d += 16 * bb) {
        for (int r = 0; r < 16; r++) {
            const uint8_t *b = s + (uint64_t)r * src_stride + (uint64_t)i * (uint64_t)bb;
            memcpy(d + 2 * r, b, 2);
            for (int l = 0; l < steps; l++)
                for (int k = 0; k < 4; k++) d[32 + 64 * l + 4 * r + k] = b[2 + 4 * l + k] ^ flip;
        }
    }
}

static void unpack_b32(const uint8_t *s, uint8_t *d, uint64_t dst_stride, int64_t n_in, int bb,
                       uint8_t flip) {
    int steps = (bb - 2) / 4;
    for (int64_t i = 0; i < n_in / 32; i++, s += 16 * bb) {
        for (int r = 0; r < 16; r++) {
            uint8_t *b = d + (uint64_t)r * dst_stride + (uint64_t)i * (uint64_t)bb;
            memcpy(b, s + 2 * r, 2);
            for (int l = 0; l < steps; l++)
                for (int k = 0; k < 4; k++) b[2 + 4 * l + k] = s[32 + 64 * l + 4 * r + k] ^ flip;
        }
    }
}

void mf_pack_q8_0_x16(const void *src, uint64_t src_stride, void *dst, int64_t n_in) {
    pack_b32(src, src_stride, dst, n_in, MF_Q8_0_BYTES, 0x80);
}
void mf_unpack_q8_0_x16(const void *src, void *dst, uint64_t dst_stride, int64_t n_in) {
    unpack_b32(src, dst, dst_stride, n_in, MF_Q8_0_BYTES, 0x80);
}
void mf_pack_q4_0_x16(const void *src, uint64_t src_stride, void *dst, int64_t n_in) {
    pack_b32(src, src_stride, dst, n_in, MF_Q4_0_BYTES, 0);
}
void mf_unpack_q4_0_x16(const void *src, void *dst, uint64_t dst_stride, int64_t n_in) {
    unpack_b32(src, dst, dst_stride, n_in, MF_Q4_0_BYTES, 0);
}

/* q6_K x16: per super-block of the group (16 x 210 bytes):
 *   [0, 32)      d of rows 0..15 (f16)
 *   [32, 288)    the 16 int8 scales transposed: scale g of row r at 32 + 16g + r
 *   [288, 3360)  for half h = 0, 1 and step j = 0..7, 192 bytes: ql[64h + 4j ..
 *                + 3], ql[64h + 32 + 4j .. + 3] and qh[32h + 4j .. + 3] of row r,
 *                each at 4r of its 64 (the four 6-bit weights 128h + 32q + 4j
 *                + k, q = 0..3, of row r come from these 12 bytes). */
#define Q6B 210

void mf_pack_q6_k_x16(const void *src, uint64_t src_stride, void *dst, int64_t n_in) {
    const uint8_t *s = src;
    uint8_t *d = dst;
    for (int64_t i = 0; i < n_in / QK_K; i++, d += MF_Q6K_X16_BYTES) {
        for (int r = 0; r < 16; r++) {
            const uint8_t *b = s + (uint64_t)r * src_stride + (uint64_t)i * Q6B;
            memcpy(d + 2 * r, b + 208, 2);
            for (int g = 0; g < 16; g++) d[32 + 16 * g + r] = b[192 + g];
            for (int h = 0; h < 2; h++)
                for (int j = 0; j < 8; j++) {
                    uint8_t *o = d + 288 + (h * 8 + j) * 192 + 4 * r;
                    memcpy(o, b + 64 * h + 4 * j, 4);
                    memcpy(o + 64, b + 64 * h + 32 + 4 * j, 4);
                    memcpy(o + 128, b + 128 + 32 * h + 4 * j, 4);
                }
        }
    }
}

void mf_unpack_q6_k_x16(const void *src, void *dst, uint64_t dst_stride, int64_t n_in) {
    const uint8_t *s = src;
    uint8_t *d = dst;
    for (int64_t i = 0; i < n_in / QK_K; i++, s += MF_Q6K_X16_BYTES) {
        for (int r = 0; r < 16; r++) {
            uint8_t *b = d + (uint64_t)r * dst_stride + (uint64_t)i * Q6B;
            memcpy(b + 208, s + 2 * r, 2);
            for (int g = 0; g < 16; g++) b[192 + g] = s[32 + 16 * g + r];
            for (int h = 0; h < 2; h++)
                for (int j = 0; j < 8; j++) {
                    const uint8_t *o = s + 288 + (h * 8 + j) * 192 + 4 * r;
                    memcpy(b + 64 * h + 4 * j, o, 4);
                    memcpy(b + 64 * h + 32 + 4 * j, o + 64, 4);
                    memcpy(b + 128 + 32 * h + 4 * j, o + 128, 4);
                }
        }
    }
}

/* q5_K x16: per super-block of the group (16 x 176 bytes):
 *   [0, 256)     d, dmin and the scale bytes as q4_K x16
 *   [256, 768)   qh: for step j = 0..7, qh[4j .. 4j + 3] of row r at 4r
 *   [768, 2816)  qs: for pair g = 0..3 and step j = 0..7, qs[32g + 4j .. + 3]
 *                of row r at 4r (low nibbles: sub-block 2g, high: 2g + 1;
 *                their fifth bits: bits 2g, 2g + 1 of the same qh bytes). */
#define Q5B 176

void mf_pack_q5_k_x16(const void *src, uint64_t src_stride, void *dst, int64_t n_in) {
    const uint8_t *s = src;
    uint8_t *d = dst;
    for (int64_t i = 0; i < n_in / QK_K; i++, d += MF_Q5K_X16_BYTES) {
        for (int r = 0; r < 16; r++) {
            const uint8_t *b = s + (uint64_t)r * src_stride + (uint64_t)i * Q5B;
            k4_head(b, d, r);
            for (int j = 0; j < 8; j++) memcpy(d + 256 + 64 * j + 4 * r, b + 16 + 4 * j, 4);
            for (int g = 0; g < 4; g++)
                for (int j = 0; j < 8; j++) memcpy(d + 768 + (g * 8 + j) * 64 + 4 * r, b + 48 + 32 * g + 4 * j, 4);
        }
    }
}

void mf_unpack_q5_k_x16(const void *src, void *dst, uint64_t dst_stride, int64_t n_in) {
    const uint8_t *s = src;
    uint8_t *d = dst;
    for (int64_t i = 0; i < n_in / QK_K; i++, s += MF_Q5K_X16_BYTES) {
        for (int r = 0; r < 16; r++) {
            uint8_t *b = d + (uint64_t)r * dst_stride + (uint64_t)i * Q5B;
            k4_unhead(s, b, r);
            for (int j = 0; j < 8; j++) memcpy(b + 16 + 4 * j, s + 256 + 64 * j + 4 * r, 4);
            for (int g = 0; g < 4; g++)
                for (int j = 0; j < 8; j++) memcpy(b + 48 + 32 * g + 4 * j, s + 768 + (g * 8 + j) * 64 + 4 * r, 4);
        }
    }
}
