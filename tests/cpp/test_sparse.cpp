// tests/cpp/test_sparse.cpp — GoogleTest suite of the sparse kernel family
// (lowvram/sparse.h), linked against lowvram_ops only (no torch), so that it
// also runs under ASan + UBSan. It owns two kinds of checks:
//
//  * the reference (sparse_ref.c) against oracles that do not use it: masks
//    chosen by hand and by a stable sort written here, compressed storage
//    built here bit by bit, sparse_qlinear against the dense qgemm reference
//    (qgemm_ref.c) on the decompressed weights, sparse_linear against the
//    contract's 16-lane fmaf order written out again with std::fma (bits) and
//    a float64 sum (tolerance), hand-computed cases where the order shows, and
//    the gradients against the dense qgemm gradient / a std::fma chain;
//  * every SIMD variant the CPU supports (AVX2; AVX-512 with VBMI2) against
//    the reference, bit for bit, on sizes that do not divide the vector
//    widths, 2:4 / 4:8 / 1:4 / 8:16 / unstructured / empty / full masks,
//    every dtype and option, sub-ranges, buffers that end at an inaccessible
//    page, corrupt masks (refused before any value is read) and bad
//    arguments. Output buffers carry a sentinel that must come back untouched
//    outside the written range.
//
// Every test says which oracle it uses. Variants the CPU lacks are skipped.

#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <numeric>
#include <string>
#include <vector>

#include "lowvram/convert.h"
#include "lowvram/qgemm.h"
#include "lowvram/sparse.h"

#include "test_util.h"

namespace {

// ---- helpers -------------------------------------------------------------------



struct SVariant {
    decltype(&lv_nm_mask_rows_ref) mask;
    decltype(&lv_sparse_compress_rows_ref) compress;
    decltype(&lv_sparse_decompress_rows_ref) decompress;
    decltype(&lv_sparse_qgemm_int8_rows_ref) qgemm;
    decltype(&lv_sparse_gemm_rows_ref) gemm;
    decltype(&lv_sparse_qlinear_grad_input_rows_ref) qgrad;
    decltype(&lv_sparse_linear_grad_input_rows_ref) grad;
};

SVariant VariantOf(lv_isa isa) {
    switch (isa) {
    case LV_ISA_AVX512:
        return {lv_nm_mask_rows_avx512,          lv_sparse_compress_rows_avx512,
                lv_sparse_decompress_rows_avx512, lv_sparse_qgemm_int8_rows_avx512,
                lv_sparse_gemm_rows_avx512,       lv_sparse_qlinear_grad_input_rows_avx512,
                lv_sparse_linear_grad_input_rows_avx512};
    case LV_ISA_AVX2:
        return {lv_nm_mask_rows_avx2,          lv_sparse_compress_rows_avx2,
                lv_sparse_decompress_rows_avx2, lv_sparse_qgemm_int8_rows_avx2,
                lv_sparse_gemm_rows_avx2,       lv_sparse_qlinear_grad_input_rows_avx2,
                lv_sparse_linear_grad_input_rows_avx2};
    default:
        return {lv_nm_mask_rows_ref,          lv_sparse_compress_rows_ref,
                lv_sparse_decompress_rows_ref, lv_sparse_qgemm_int8_rows_ref,
                lv_sparse_gemm_rows_ref,       lv_sparse_qlinear_grad_input_rows_ref,
                lv_sparse_linear_grad_input_rows_ref};
    }
}
const SVariant kRef = VariantOf(LV_ISA_REF);

// The sparse family's AVX-512 variant also needs VBMI2 (vpexpandb), as
// ops/cpu/sparse.c dispatches.
bool SparseIsaSupported(lv_isa isa) {
    if (!lv_cpu_isa_supported(isa)) return false;
    if (isa == LV_ISA_AVX512) return __builtin_cpu_supports("avx512vbmi2");
    return true;
}

const char *DtName(lv_dtype dt) { return dt == LV_F32 ? "f32" : dt == LV_BF16 ? "bf16" : "f16"; }

// A float buffer of any dtype, [rows, ld] elements (+ one guard element),
// prefilled with a sentinel byte so that writes outside the range show.
struct FBuf {
    lv_dtype dt;
    int64_t rows, ld;
    std::vector<uint8_t> bytes;
    FBuf(lv_dtype d, int64_t r, int64_t l, uint8_t fill = 0xA5)
        : dt(d), rows(r), ld(l), bytes((size_t)(r * l + 1) * (size_t)lv_dtype_size(d), fill) {}
    void *data() { return bytes.data(); }
    const void *data() const { return bytes.data(); }
    uint32_t Bits(int64_t i) const {
        if (dt == LV_F32) {
            uint32_t u;
            std::memcpy(&u, bytes.data() + 4 * i, 4);
            return u;
        }
        uint16_t h;
        std::memcpy(&h, bytes.data() + 2 * i, 2);
        return h;
    }
    void SetBits(int64_t i, uint32_t b) {
        if (dt == LV_F32) {
            std::memcpy(bytes.data() + 4 * i, &b, 4);
        } else {
            uint16_t h = (uint16_t)b;
            std::memcpy(bytes.data() + 2 * i, &h, 2);
        }
    }
    // Stores f (test data: exactly representable values stay exact).
    void Set(int64_t i, float f) {
        SetBits(i, dt == LV_F32 ? F2U(f) : dt == LV_BF16 ? lv_f32_to_bf16(f) : lv_f32_to_f16(f));
    }
    float Get(int64_t i) const { return lv_load_f32(bytes.data(), dt, i); }
};

bool IsNanBits(lv_dtype dt, uint32_t b) {
    if (dt == LV_F32) return (b & 0x7fffffffu) > 0x7f800000u;
    if (dt == LV_BF16) return (b & 0x7fffu) > 0x7f80u;
    return (b & 0x7fffu) > 0x7c00u;
}
bool IsCanonicalNan(lv_dtype dt, uint32_t b) { return dt == LV_BF16 ? b == 0x7fc0u : b == 0x7e00u; }

// Same bits everywhere (sentinels included), except that an f32 NaN equals
// any NaN (which operand's NaN x86 keeps depends on codegen); f16 / bf16 NaNs
// must be the canonical ones.
::testing::AssertionResult SameFloats(const FBuf &want, const FBuf &got) {
    if (want.bytes.size() != got.bytes.size()) return ::testing::AssertionFailure() << "sizes";
    const int64_t n = want.rows * want.ld + 1;
    for (int64_t i = 0; i < n; i++) {
        const uint32_t a = want.Bits(i), b = got.Bits(i);
        if (a == b && (want.dt == LV_F32 || !IsNanBits(want.dt, a) || IsCanonicalNan(want.dt, a)))
            continue;
        if (IsNanBits(want.dt, a) && IsNanBits(want.dt, b) &&
            (want.dt == LV_F32 || (IsCanonicalNan(want.dt, a) && IsCanonicalNan(want.dt, b))))
            continue;
        char msg[160];
        std::snprintf(msg, sizeof msg, "%s element [%lld, %lld]: want 0x%08x, got 0x%08x",
                      DtName(want.dt), (long long)(i / want.ld), (long long)(i % want.ld), a, b);
        return ::testing::AssertionFailure() << msg;
    }
    return ::testing::AssertionSuccess();
}

// n bytes that end where an inaccessible page begins (reads or writes past
// the end fault; ASan does not see vector intrinsic loads).

// ---- sparsity patterns and compressed storage built here -------------------------

// n of every m kept (m > 0), or an unstructured pattern keeping kv of K per
// row (m == 0).
struct Pattern {
    int n, m;
    int64_t kv;  // unstructured only; -1: K * 3 / 10 (70 % sparsity)
    int64_t KV(int64_t K) const {
        if (m > 0) return K * n / m;
        return kv >= 0 ? std::min(kv, K) : K - (int64_t)std::llround((double)K * 0.7);
    }
    bool Fits(int64_t K) const { return m == 0 || K % m == 0; }
    std::string Name() const {
        return m > 0 ? std::to_string(n) + ":" + std::to_string(m)
                     : "unstructured kv " + std::to_string(kv);
    }
};

// keep [N, K] (0/1) with exactly KV ones per row, chosen at random.
std::vector<uint8_t> RandomKeep(const Pattern &p, int64_t N, int64_t K, Rng &rng) {
    std::vector<uint8_t> keep(N * K, 0);
    const int64_t span = p.m > 0 ? p.m : K, take = p.m > 0 ? p.n : p.KV(K);
    std::vector<int64_t> idx(span);
    for (int64_t r = 0; r < N; r++)
        for (int64_t g = 0; g < K; g += span) {
            std::iota(idx.begin(), idx.end(), 0);
            for (int64_t i = span - 1; i > 0; i--) std::swap(idx[i], idx[rng.Int((int)i + 1)]);
            for (int64_t i = 0; i < take; i++) keep[r * K + g + idx[i]] = 1;
        }
    return keep;
}

// Compressed storage per sparse.h, built bit by bit here: values [N, ldv]
// (esz bytes each, padding bytes 0xCD) and mask_bits [N, ldb] (padding 0xEE).
struct Compressed {
    int64_t N, K, KV, ldv, ldb;
    int esz;
    std::vector<uint8_t> values, bits;
};
Compressed Compress(const void *w, int esz, const std::vector<uint8_t> &keep, int64_t N,
                    int64_t K, int64_t KV, int64_t ldv_pad = 0, int64_t ldb_pad = 0) {
    Compressed c{N, K, KV, KV + ldv_pad, (K + 7) / 8 + ldb_pad, esz, {}, {}};
    c.values.assign((size_t)(N * c.ldv * esz), 0xCD);
    c.bits.assign((size_t)(N * c.ldb), 0xEE);
    for (int64_t r = 0; r < N; r++) {
        for (int64_t b = 0; b < (K + 7) / 8; b++) c.bits[r * c.ldb + b] = 0;
        int64_t j = 0;
        for (int64_t k = 0; k < K; k++) {
            if (!keep[r * K + k]) continue;
            c.bits[r * c.ldb + k / 8] |= (uint8_t)(1u << (k % 8));
            std::memcpy(&c.values[(size_t)((r * c.ldv + j) * esz)],
                        (const uint8_t *)w + (size_t)((r * K + k) * esz), (size_t)esz);
            j++;
        }
        EXPECT_EQ(j, KV) << "test pattern keeps the wrong count";
    }
    return c;
}

// Random int8 weights [N, K], zero where pruned; extremes: only -128 / 127.
std::vector<int8_t> RandomCodes(const std::vector<uint8_t> &keep, int64_t N, int64_t K,
                                bool extremes, Rng &rng) {
    std::vector<int8_t> w(N * K);
    for (int64_t i = 0; i < N * K; i++)
        w[i] = !keep[i] ? 0 : extremes ? (rng.Int(2) ? 127 : -128) : (int8_t)(rng.Int(256) - 128);
    return w;
}

const Pattern kPatterns[] = {{2, 4, 0}, {4, 8, 0}, {1, 4, 0}, {8, 16, 0},
                             {0, 0, -1}, {0, 0, 0}, {0, 0, 1 << 30}};

// ---- masks: the reference against hand computation and a stable sort -------------

// Oracle: hand computation (sparse.h: n largest, equal scores -> lower index,
// -0 == +0, Inf ordered as any value).
TEST(SparseMaskRef, HandComputed) {
    const float s[2][8] = {{0.5f, -3.0f, 2.0f, 2.0f, /**/ -0.0f, 0.0f, -1.0f, -2.0f},
                           {INFINITY, -INFINITY, 1.0f, 1.0f, /**/ 7.0f, 7.0f, 7.0f, 7.0f}};
    uint8_t keep[2][8];
    ASSERT_EQ(lv_nm_mask_rows_ref(&s[0][0], 8, 8, 2, 4, 0, 2, &keep[0][0], 8), LV_OK);
    const uint8_t want24[2][8] = {{0, 0, 1, 1, 1, 1, 0, 0}, {1, 0, 1, 0, 1, 1, 0, 0}};
    for (int r = 0; r < 2; r++)
        for (int k = 0; k < 8; k++) EXPECT_EQ(keep[r][k], want24[r][k]) << "2:4 " << r << "," << k;
    // 1:4: the tie 2.0 / 2.0 goes to column 2; -0 vs +0 to column 4 (the lower)
    ASSERT_EQ(lv_nm_mask_rows_ref(&s[0][0], 8, 8, 1, 4, 0, 2, &keep[0][0], 8), LV_OK);
    const uint8_t want14[2][8] = {{0, 0, 1, 0, 1, 0, 0, 0}, {1, 0, 0, 0, 1, 0, 0, 0}};
    for (int r = 0; r < 2; r++)
        for (int k = 0; k < 8; k++) EXPECT_EQ(keep[r][k], want14[r][k]) << "1:4 " << r << "," << k;
    // 3:8 over a whole row: 2.0, 2.0 (columns 2, 3), then 0.5 (column 0)
    ASSERT_EQ(lv_nm_mask_rows_ref(&s[0][0], 8, 8, 3, 8, 0, 1, &keep[0][0], 8), LV_OK);
    const uint8_t want38[8] = {1, 0, 1, 1, 0, 0, 0, 0};
    for (int k = 0; k < 8; k++) EXPECT_EQ(keep[0][k], want38[k]) << "3:8 " << k;
    // n == m keeps everything, m == 1 too
    ASSERT_EQ(lv_nm_mask_rows_ref(&s[0][0], 8, 8, 4, 4, 0, 2, &keep[0][0], 8), LV_OK);
    for (int k = 0; k < 16; k++) EXPECT_EQ((&keep[0][0])[k], 1);
}

// The oracle of the mask tests: per group, indices stably sorted by score,
// larger first (std::stable_sort keeps the lower index first among equal
// scores, and -0 == +0 compares equal); the first n are kept.
std::vector<uint8_t> SortedMask(const std::vector<float> &s, int64_t rows, int64_t K, int n,
                                int m) {
    std::vector<uint8_t> keep(rows * K, 0);
    std::vector<int> idx(m);
    for (int64_t r = 0; r < rows; r++)
        for (int64_t g = 0; g < K; g += m) {
            std::iota(idx.begin(), idx.end(), 0);
            const float *sg = &s[r * K + g];
            std::stable_sort(idx.begin(), idx.end(), [&](int a, int b) { return sg[a] > sg[b]; });
            for (int i = 0; i < n; i++) keep[r * K + g + idx[i]] = 1;
        }
    return keep;
}

// Scores with many ties: a few small values, both zeros, infinities.
std::vector<float> TieScores(int64_t count, Rng &rng) {
    const float pool[] = {0.0f, -0.0f, 1.0f, -1.0f, 0.5f, 2.0f, INFINITY, -INFINITY, 1e-45f};
    std::vector<float> s(count);
    for (auto &v : s) v = rng.Int(3) ? pool[rng.Int(9)] : rng.Uniform(-4.0f, 4.0f);
    return s;
}

// Oracle: SortedMask (a stable sort written here); every group keeps exactly n.
void CheckMask(const SVariant &v, const char *name) {
    Rng rng(3);
    const int nm[][2] = {{2, 4}, {4, 8}, {1, 4}, {1, 1}, {3, 3}, {5, 7}, {8, 16}, {16, 32},
                         {1, 64}, {63, 64}, {64, 64}, {31, 64}};
    for (auto &p : nm)
        for (int64_t groups : {1, 3, 17}) {
            const int n = p[0], m = p[1];
            const int64_t K = groups * m, rows = 5, lds = K + 3, ldk = K + 2;
            std::vector<float> s = TieScores(rows * K, rng), sp(rows * lds, 9.0f);
            for (int64_t r = 0; r < rows; r++)
                std::copy(&s[r * K], &s[r * K] + K, &sp[r * lds]);
            const std::vector<uint8_t> want = SortedMask(s, rows, K, n, m);
            std::vector<uint8_t> keep(rows * ldk, 0x77);
            // two row ranges: rows are independent
            ASSERT_EQ(v.mask(sp.data(), lds, K, n, m, 0, 2, keep.data(), ldk), LV_OK);
            ASSERT_EQ(v.mask(sp.data(), lds, K, n, m, 2, rows, keep.data(), ldk), LV_OK);
            for (int64_t r = 0; r < rows; r++) {
                for (int64_t k = 0; k < K; k++)
                    ASSERT_EQ(keep[r * ldk + k], want[r * K + k])
                        << name << " " << n << ":" << m << " K " << K << " row " << r << " k " << k;
                for (int64_t k = K; k < ldk; k++) ASSERT_EQ(keep[r * ldk + k], 0x77);
                for (int64_t g = 0; g < K; g += m) {
                    int c = 0;
                    for (int i = 0; i < m; i++) c += keep[r * ldk + g + i];
                    ASSERT_EQ(c, n);
                }
            }
        }
}

TEST(SparseMaskRef, MatchesStableSort) { CheckMask(kRef, "ref"); }

// Oracle: the contract — all-equal scores keep the first n of each group
// (also all -0 / +0 mixed), whatever the group size.
TEST(SparseMaskRef, AllEqualScoresKeepFirst) {
    for (int m : {1, 4, 7, 64})
        for (int n = 1; n <= m; n += (m > 8 ? 13 : 1)) {
            const int64_t K = 3 * m;
            std::vector<float> s(K);
            for (int64_t k = 0; k < K; k++) s[k] = k % 2 ? -0.0f : 0.0f;
            std::vector<uint8_t> keep(K, 9);
            ASSERT_EQ(lv_nm_mask_rows_ref(s.data(), K, K, n, m, 0, 1, keep.data(), K), LV_OK);
            for (int64_t k = 0; k < K; k++) ASSERT_EQ(keep[k], (k % m) < n) << n << ":" << m;
        }
}

// Oracle: sparse.h — a NaN is LV_E_INVALID, rows before it are written, the
// bad row and the rows after it are not; bad shapes are LV_E_INVALID.
void CheckMaskErrors(const SVariant &v, const char *name) {
    std::vector<float> s(3 * 8, 1.0f);
    s[8 + 5] = NAN;
    std::vector<uint8_t> keep(3 * 8, 0x77);
    EXPECT_EQ(v.mask(s.data(), 8, 8, 2, 4, 0, 3, keep.data(), 8), LV_E_INVALID) << name;
    for (int k = 0; k < 8; k++) EXPECT_EQ(keep[k], k % 4 < 2) << name;
    for (int k = 8; k < 24; k++) EXPECT_EQ(keep[k], 0x77) << name << " k " << k;
    s[8 + 5] = -NAN;
    EXPECT_EQ(v.mask(s.data(), 8, 8, 2, 4, 1, 2, keep.data(), 8), LV_E_INVALID) << name;
    // rows without the NaN are fine
    EXPECT_EQ(v.mask(s.data(), 8, 8, 2, 4, 2, 3, keep.data(), 8), LV_OK) << name;
    std::vector<float> big(130, 1.0f);
    std::vector<uint8_t> kb(130, 0x77);
    EXPECT_EQ(v.mask(big.data(), 10, 10, 2, 4, 0, 1, kb.data(), 10), LV_E_INVALID);  // K % m
    EXPECT_EQ(v.mask(big.data(), 8, 8, 5, 4, 0, 1, kb.data(), 8), LV_E_INVALID);     // n > m
    EXPECT_EQ(v.mask(big.data(), 8, 8, 0, 4, 0, 1, kb.data(), 8), LV_E_INVALID);     // n < 1
    EXPECT_EQ(v.mask(big.data(), 8, 8, 0, 0, 0, 1, kb.data(), 8), LV_E_INVALID);     // m < 1
    EXPECT_EQ(v.mask(big.data(), 130, 130, 2, 65, 0, 1, kb.data(), 130), LV_E_INVALID);  // m > 64
    EXPECT_EQ(v.mask(big.data(), 0, 0, 2, 4, 0, 1, kb.data(), 8), LV_E_INVALID);     // K < 1
    EXPECT_EQ(v.mask(big.data(), 8, 8, 2, 4, 1, 0, kb.data(), 8), LV_E_INVALID);     // r1 < r0
    EXPECT_EQ(v.mask(big.data(), 7, 8, 2, 4, 0, 1, kb.data(), 8), LV_E_INVALID);     // lds < K
    EXPECT_EQ(v.mask(big.data(), 8, 8, 2, 4, 0, 1, kb.data(), 7), LV_E_INVALID);     // ldk < K
    EXPECT_EQ(v.mask(nullptr, 8, 8, 2, 4, 0, 1, kb.data(), 8), LV_E_INVALID);
    EXPECT_EQ(v.mask(big.data(), 8, 8, 2, 4, 0, 1, nullptr, 8), LV_E_INVALID);
    for (uint8_t b : kb) EXPECT_EQ(b, 0x77) << name;
    EXPECT_EQ(v.mask(nullptr, 8, 8, 2, 4, 0, 0, nullptr, 8), LV_OK);  // empty range
    EXPECT_EQ(v.mask(big.data(), 128, 128, 64, 64, 0, 1, kb.data(), 128), LV_OK);  // m = 64
}

TEST(SparseMaskRef, NanAndInvalid) { CheckMaskErrors(kRef, "ref"); }

// ---- storage round trips ------------------------------------------------------------

// Oracle: Compress (storage built here bit by bit) and the dense weight
// masked by keep. Both directions, esz 1 / 2 / 4, sub-ranges of rows; the
// row padding of values / mask / w stays untouched.
void CheckRoundTrip(const SVariant &v, const char *name) {
    Rng rng(5);
    for (int esz : {1, 2, 4})
        for (const Pattern &p : kPatterns)
            for (int64_t K : {1, 4, 8, 9, 16, 17, 64, 100}) {
                if (!p.Fits(K)) continue;
                const int64_t N = 5, KV = p.KV(K), KB = (K + 7) / 8;
                const std::vector<uint8_t> keep = RandomKeep(p, N, K, rng);
                std::vector<uint8_t> w(N * K * esz);
                for (auto &b : w) b = (uint8_t)rng.Next();
                const Compressed want = Compress(w.data(), esz, keep, N, K, KV, 2, 1);
                const int64_t ldk = K + 1, ldw = K + 3;
                std::vector<uint8_t> keepp(N * ldk, 0), wp(N * ldw * esz, 0x3C);
                for (int64_t r = 0; r < N; r++) {
                    for (int64_t k = 0; k < K; k++)
                        keepp[r * ldk + k] = keep[r * K + k] ? (uint8_t)(1 + rng.Int(255)) : 0;
                    keepp[r * ldk + K] = 1;  // past K: ignored
                    std::memcpy(&wp[r * ldw * esz], &w[r * K * esz], (size_t)(K * esz));
                }
                std::vector<uint8_t> vals(want.values.size(), 0xCD), bits(want.bits.size(), 0xEE);
                ASSERT_EQ(v.compress(wp.data(), esz, ldw, keepp.data(), ldk, K, KV, 0, 2,
                                     vals.data(), want.ldv, bits.data(), want.ldb),
                          LV_OK);
                ASSERT_EQ(v.compress(wp.data(), esz, ldw, keepp.data(), ldk, K, KV, 2, N,
                                     vals.data(), want.ldv, bits.data(), want.ldb),
                          LV_OK);
                const std::string what = std::string(name) + " esz " + std::to_string(esz) +
                                         " " + p.Name() + " K " + std::to_string(K);
                EXPECT_EQ(vals, want.values) << what;
                EXPECT_EQ(bits, want.bits) << what;
                // back: pruned elements 0, kept ones their bit patterns
                std::vector<uint8_t> back(N * ldw * esz, 0x3C);
                ASSERT_EQ(v.decompress(want.values.data(), esz, want.ldv, want.bits.data(),
                                       want.ldb, K, KV, 0, N, back.data(), ldw),
                          LV_OK);
                for (int64_t r = 0; r < N; r++)
                    for (int64_t k = 0; k < ldw; k++)
                        for (int b = 0; b < esz; b++) {
                            const uint8_t got = back[(r * ldw + k) * esz + b];
                            const uint8_t exp =
                                k >= K ? 0x3C : keep[r * K + k] ? w[(r * K + k) * esz + b] : 0;
                            ASSERT_EQ(got, exp) << what << " row " << r << " k " << k;
                        }
                (void)KB;
            }
}

TEST(SparseStorageRef, RoundTrips) { CheckRoundTrip(kRef, "ref"); }

// Oracle: sparse.h — rows that do not keep exactly KV weights are refused
// (compress: keep count; decompress: mask count, bits past K count as a
// mismatch), also with values that hold exactly KV elements per row at the
// end of an inaccessible page, so that reading the surplus would fault.
void CheckStorageErrors(const SVariant &v, const char *name) {
    Rng rng(9);
    const int64_t N = 3, K = 20, KV = 10;
    const std::vector<uint8_t> keep = RandomKeep({1, 2, 0}, N, K, rng);
    std::vector<int8_t> w(N * K);
    for (auto &c : w) c = (int8_t)rng.Next();
    Compressed c = Compress(w.data(), 1, keep, N, K, KV);
    std::vector<int8_t> vals(N * (KV + 1)), back(N * K, 7);
    std::vector<uint8_t> bits(c.bits.size());
    // compress: KV off by one, one row with an extra kept weight
    EXPECT_EQ(v.compress(w.data(), 1, K, keep.data(), K, K, KV + 1, 0, N, vals.data(), KV + 1,
                         bits.data(), c.ldb),
              LV_E_INVALID)
        << name;
    std::vector<uint8_t> keep2 = keep;
    for (int64_t k = 0; k < K; k++)
        if (!keep2[2 * K + k]) {
            keep2[2 * K + k] = 1;
            break;
        }
    EXPECT_EQ(v.compress(w.data(), 1, K, keep2.data(), K, K, KV, 0, N, vals.data(), KV,
                         bits.data(), c.ldb),
              LV_E_INVALID)
        << name;
    EXPECT_EQ(v.compress(w.data(), 3, K, keep.data(), K, K, KV, 0, N, vals.data(), KV,
                         bits.data(), c.ldb),
              LV_E_INVALID);  // esz
    EXPECT_EQ(v.compress(w.data(), 1, K, keep.data(), K, K, KV, 0, N, vals.data(), KV,
                         bits.data(), c.ldb - 1),
              LV_E_INVALID);  // ldb < KB
    // decompress with guarded values: an extra bit in the last row, a missing
    // bit, a bit past K (K = 20: bits 4..7 of byte 2)
    Guarded gv((size_t)(N * KV));
    const int8_t *pv = gv.Copy(std::vector<int8_t>(c.values.begin(), c.values.end()));
    ASSERT_EQ(v.decompress(pv, 1, KV, c.bits.data(), c.ldb, K, KV, 0, N, back.data(), K), LV_OK)
        << name;
    for (int64_t i = 0; i < N * K; i++) ASSERT_EQ(back[i], keep[i] ? w[i] : 0);
    std::vector<uint8_t> extra = c.bits, fewer = c.bits, past = c.bits;
    for (int64_t k = 0; k < K; k++)
        if (!keep[2 * K + k]) {
            extra[2 * c.ldb + k / 8] |= (uint8_t)(1u << (k % 8));
            break;
        }
    for (int64_t k = 0; k < K; k++)
        if (keep[2 * K + k]) {
            fewer[2 * c.ldb + k / 8] &= (uint8_t)~(1u << (k % 8));
            break;
        }
    past[2 * c.ldb + 2] |= 0x80;
    for (auto *b : {&extra, &fewer, &past})
        EXPECT_EQ(v.decompress(pv, 1, KV, b->data(), c.ldb, K, KV, 0, N, back.data(), K),
                  LV_E_INVALID)
            << name;
    // a bit past K replacing a kept bit (count right, position wrong)
    std::vector<uint8_t> moved = fewer;
    moved[2 * c.ldb + 2] |= 0x10;
    EXPECT_EQ(v.decompress(pv, 1, KV, moved.data(), c.ldb, K, KV, 0, N, back.data(), K),
              LV_E_INVALID)
        << name;
    EXPECT_EQ(v.decompress(pv, 1, KV, c.bits.data(), c.ldb, K, K + 1, 0, N, back.data(), K),
              LV_E_INVALID);  // KV > K
    EXPECT_EQ(v.decompress(pv, 1, KV, c.bits.data(), c.ldb, K, KV, 0, N, back.data(), K - 1),
              LV_E_INVALID);  // ldw < K
    EXPECT_EQ(v.decompress(pv, 1, KV - 1, c.bits.data(), c.ldb, K, KV, 0, N, back.data(), K),
              LV_E_INVALID);  // ldv < KV
}

TEST(SparseStorageRef, MismatchesRefused) { CheckStorageErrors(kRef, "ref"); }

// ---- sparse_qlinear: == the dense qgemm reference on decompressed weights ----------

// One sparse_qlinear case; `want` is lv_qgemm_int8_rows_ref on the
// decompressed weights (the contract's "same bits as qlinear(x, decompress)").
struct QCase {
    int64_t M, N, K, KV, gs, G, ldx, ldy;
    std::vector<uint8_t> xu, keep;
    std::vector<int8_t> w;
    std::vector<float> xs, ws, bias;
    Compressed c;
    QCase(int64_t M_, int64_t N_, int64_t K_, const Pattern &p, int64_t gs_, bool extremes,
          Rng &rng)
        : M(M_), N(N_), K(K_), KV(p.KV(K_)), gs(gs_), G(gs_ > 0 ? K_ / gs_ : 1), ldx(K_ + 5),
          ldy(N_ + 3) {
        keep = RandomKeep(p, N, K, rng);
        w = RandomCodes(keep, N, K, extremes, rng);
        c = Compress(w.data(), 1, keep, N, K, KV, 3, 2);
        xu.assign(M * ldx, 0x11);
        for (int64_t m = 0; m < M; m++)
            for (int64_t k = 0; k < K; k++)
                xu[m * ldx + k] = extremes ? (rng.Int(2) ? 1 : 255) : (uint8_t)(1 + rng.Int(255));
        xs.resize(M);
        ws.resize(N * G);
        bias.resize(N);
        for (auto &v : xs) v = rng.Uniform(1e-3f, 1e-2f);
        for (auto &v : ws) v = rng.Uniform(-1e-2f, 1e-2f);
        for (auto &v : bias) v = rng.Uniform(-1.0f, 1.0f);
    }
    const int8_t *vals() const { return (const int8_t *)c.values.data(); }
    lv_status Sparse(decltype(&lv_sparse_qgemm_int8_rows_ref) f, FBuf &y, bool b, int64_t m0,
                     int64_t m1, int64_t n0, int64_t n1) const {
        return f(xu.data(), ldx, xs.data(), vals(), c.ldv, c.bits.data(), c.ldb, KV, ws.data(),
                 gs, b ? bias.data() : nullptr, K, m0, m1, n0, n1, y.data(), y.dt, ldy);
    }
    lv_status Dense(FBuf &y, bool b, int64_t m0, int64_t m1, int64_t n0, int64_t n1) const {
        return lv_qgemm_int8_rows_ref(xu.data(), ldx, xs.data(), w.data(), K, ws.data(), gs,
                                      b ? bias.data() : nullptr, K, m0, m1, n0, n1, y.data(),
                                      y.dt, ldy);
    }
};

// Oracle: lv_qgemm_int8_rows_ref on the decompressed weights, bit for bit,
// over the whole range and a sub-range (the rest keeps its sentinel).
void CheckQgemm(const SVariant &v, const char *name, int64_t M, int64_t N, int64_t K,
                const Pattern &p, int64_t gs, lv_dtype ydt, bool bias, bool extremes, Rng &rng) {
    const QCase q(M, N, K, p, gs, extremes, rng);
    const std::string what = std::string(name) + " " + p.Name() + " M " + std::to_string(M) +
                             " N " + std::to_string(N) + " K " + std::to_string(K) + " gs " +
                             std::to_string(gs) + " " + DtName(ydt) + (bias ? " bias" : "") +
                             (extremes ? " extremes" : "");
    FBuf want(ydt, M, q.ldy), got(ydt, M, q.ldy);
    ASSERT_EQ(q.Dense(want, bias, 0, M, 0, N), LV_OK);
    ASSERT_EQ(q.Sparse(v.qgemm, got, bias, 0, M, 0, N), LV_OK) << what;
    ASSERT_TRUE(SameFloats(want, got)) << what;
    const int64_t m0 = M / 3, m1 = M - M / 4, n0 = N / 3, n1 = N - N / 5;
    FBuf want2(ydt, M, q.ldy), got2(ydt, M, q.ldy);
    ASSERT_EQ(q.Dense(want2, bias, m0, m1, n0, n1), LV_OK);
    ASSERT_EQ(q.Sparse(v.qgemm, got2, bias, m0, m1, n0, n1), LV_OK) << what;
    ASSERT_TRUE(SameFloats(want2, got2)) << what << " tile [" << m0 << "," << m1 << ")x[" << n0
                                         << "," << n1 << ")";
}

// Oracle: CheckQgemm for the reference: every pattern, awkward sizes, groups.
TEST(SparseQgemmRef, EqualsDenseOnDecompressed) {
    Rng rng(13);
    for (const Pattern &p : kPatterns)
        for (int64_t K : {1, 3, 8, 17, 64, 100, 192})
            if (p.Fits(K))
                for (int64_t gs : {(int64_t)0, (int64_t)64})
                    if (gs == 0 || K % gs == 0)
                        CheckQgemm(kRef, "ref", 3, 5, K, p, gs, LV_F32, true, false, rng);
}

// Oracle: int64 sums computed here. At K = LV_QGEMM_K_MAX with every weight
// kept and extreme codes the sums reach 131072 * 127 * 128 and are exact
// (y = (float)acc with unit scales), for 2:4 half of that.
void CheckKMax(const SVariant &v, const char *name) {
    const int64_t K = LV_QGEMM_K_MAX, M = 3, N = 3;
    for (const Pattern &p : {Pattern{1, 1, 0}, Pattern{2, 4, 0}}) {
        const int64_t KV = p.KV(K);
        std::vector<uint8_t> xu(M * K), keep(N * K);
        std::vector<int8_t> w(N * K);
        for (int64_t k = 0; k < K; k++) {
            xu[0 * K + k] = 1;
            xu[1 * K + k] = 255;
            xu[2 * K + k] = k % 2 ? 1 : 255;
            for (int64_t n = 0; n < N; n++) keep[n * K + k] = p.m == 1 || k % 4 == n % 2 || k % 4 == 3;
            w[0 * K + k] = keep[0 * K + k] ? -128 : 0;
            w[1 * K + k] = keep[1 * K + k] ? 127 : 0;
            w[2 * K + k] = keep[2 * K + k] ? (k % 2 ? -128 : 127) : 0;
        }
        const Compressed c = Compress(w.data(), 1, keep, N, K, KV);
        const std::vector<float> xs(M, 1.0f), ws(N, 1.0f);
        std::vector<float> y(M * N, -1.0f);
        ASSERT_EQ(v.qgemm(xu.data(), K, xs.data(), (const int8_t *)c.values.data(), KV,
                          c.bits.data(), c.ldb, KV, ws.data(), 0, nullptr, K, 0, M, 0, N,
                          y.data(), LV_F32, N),
                  LV_OK);
        for (int64_t m = 0; m < M; m++)
            for (int64_t n = 0; n < N; n++) {
                int64_t acc = 0;
                for (int64_t k = 0; k < K; k++) acc += ((int64_t)xu[m * K + k] - 128) * w[n * K + k];
                ASSERT_LE(std::llabs(acc), (int64_t)INT32_MAX);
                EXPECT_EQ(y[m * N + n], (float)acc) << name << " " << m << "," << n;
            }
        EXPECT_EQ(v.qgemm(xu.data(), K + 1, xs.data(), (const int8_t *)c.values.data(), KV,
                          c.bits.data(), c.ldb, KV, ws.data(), 0, nullptr, K + 1, 0, 1, 0, 1,
                          y.data(), LV_F32, N),
                  LV_E_K_TOO_LARGE);
    }
}

TEST(SparseQgemmRef, KMaxExtremes) { CheckKMax(kRef, "ref"); }

// ---- sparse_linear: the 16-lane order -------------------------------------------------

// The contract's sparse_linear written out again here: lanes of std::fma in
// k order, the fixed tree, bias; x / w given as float32 (decompressed).
float ContractLinear(const float *x, const float *w, int64_t K, const float *bias) {
    float lane[16] = {0};
    for (int64_t k = 0; k < K; k++) lane[k % 16] = std::fma(x[k], w[k], lane[k % 16]);
    float s8[8], s4[4], s2[2];
    for (int i = 0; i < 8; i++) s8[i] = lane[i] + lane[i + 8];
    for (int i = 0; i < 4; i++) s4[i] = s8[i] + s8[i + 4];
    for (int i = 0; i < 2; i++) s2[i] = s4[i] + s4[i + 2];
    float y = s2[0] + s2[1];
    if (bias) y = y + *bias;
    return y;
}

// Oracle: hand computation of the contract's order. Row 0 (K = 17, kept
// columns 0, 1, 16): lane 0 = fma(2^24, 1, 0) then fma(1, 1, 2^24) = 2^24 +
// 1 -> 2^24 (tie to even), lane 1 = -2^24; the tree gives 0 (a plain sum in k
// order would give 1). Row 1: lane 0 = -1, then lane 0 = fma(1 + 2^-12,
// 1 + 2^-12, -1) = 2^-11 + 2^-24 exactly (one rounding; a product rounded
// first would give 2^-11). Pruned columns (x = 5 there) add 5 * 0.
void CheckHandLinear(const SVariant &v, const char *name) {
    const int64_t K = 17;
    std::vector<float> x(2 * K, 5.0f);
    x[0] = 0x1p24f, x[1] = 0x1p24f, x[16] = 1.0f;
    x[K + 0] = -1.0f, x[K + 16] = 1.0f + 0x1p-12f;
    const float vals[2][3] = {{1.0f, -1.0f, 1.0f}, {1.0f, 0.0f, 1.0f + 0x1p-12f}};
    const uint8_t bits[2][3] = {{0x03, 0x00, 0x01}, {0x03, 0x00, 0x01}};
    for (int which = 0; which < 2; which++) {
        float y[2] = {-7.0f, -7.0f};
        ASSERT_EQ(v.gemm(x.data() + which * K, LV_F32, K, &vals[0][0], LV_F32, 3, &bits[0][0], 3,
                         3, nullptr, K, 0, 1, 0, 2, y, LV_F32, 2),
                  LV_OK);
        if (which == 0) {
            EXPECT_EQ(F2U(y[0]), 0u) << name;  // +0
        } else {
            EXPECT_EQ(y[1], 0x1p-11f + 0x1p-24f) << name;
        }
    }
    // bias is added last: 0 + 0.25
    const float bias[2] = {0.25f, 0.5f};
    float y[2];
    ASSERT_EQ(v.gemm(x.data(), LV_F32, K, &vals[0][0], LV_F32, 3, &bits[0][0], 3, 3, bias, K, 0,
                     1, 0, 1, y, LV_F32, 2),
              LV_OK);
    EXPECT_EQ(y[0], 0.25f) << name;
}

TEST(SparseGemmRef, HandComputedOrder) { CheckHandLinear(kRef, "ref"); }

// Float test data: exact in every dtype (integers / 64 within +-2).
float SmallExact(Rng &rng) { return (float)(rng.Int(255) - 127) / 64.0f; }

// Oracle: ContractLinear (bits equal) and a float64 sum (within a bound on
// the float32 rounding: (K / 16 + 4) roundings of sums of |x w|).
TEST(SparseGemmRef, MatchesContractAndFloat64) {
    Rng rng(17);
    for (const Pattern &p : kPatterns)
        for (int64_t K : {1, 15, 16, 17, 64, 100, 1024})
            for (lv_dtype vdt : {LV_F32, LV_BF16, LV_F16}) {
                if (!p.Fits(K)) continue;
                const int64_t M = 2, N = 3, KV = p.KV(K);
                const std::vector<uint8_t> keep = RandomKeep(p, N, K, rng);
                FBuf wd(vdt, N, K), x(LV_F32, M, K);
                std::vector<float> wf(N * K), xf(M * K), bias(N);
                for (int64_t i = 0; i < N * K; i++) {
                    wf[i] = keep[i] ? SmallExact(rng) * 0.37f : 0.0f;  // f32 gets inexact ones
                    if (vdt != LV_F32) wf[i] = keep[i] ? SmallExact(rng) : 0.0f;
                    wd.Set(i, wf[i]);
                }
                for (int64_t i = 0; i < M * K; i++) x.Set(i, xf[i] = rng.Uniform(-2.0f, 2.0f));
                for (auto &b : bias) b = rng.Uniform(-1.0f, 1.0f);
                const Compressed c = Compress(wd.data(), lv_dtype_size(vdt), keep, N, K, KV);
                std::vector<float> y(M * N);
                ASSERT_EQ(lv_sparse_gemm_rows_ref(x.data(), LV_F32, K, c.values.data(), vdt, KV,
                                                  c.bits.data(), c.ldb, KV, bias.data(), K, 0, M,
                                                  0, N, y.data(), LV_F32, N),
                          LV_OK);
                for (int64_t m = 0; m < M; m++)
                    for (int64_t n = 0; n < N; n++) {
                        const float want = ContractLinear(&xf[m * K], &wf[n * K], K, &bias[n]);
                        EXPECT_EQ(F2U(y[m * N + n]), F2U(want))
                            << p.Name() << " K " << K << " " << DtName(vdt);
                        double d = bias[n], mag = std::fabs(bias[n]);
                        for (int64_t k = 0; k < K; k++) {
                            d += (double)xf[m * K + k] * wf[n * K + k];
                            mag += std::fabs((double)xf[m * K + k] * wf[n * K + k]);
                        }
                        EXPECT_NEAR(y[m * N + n], d, ((double)K / 16 + 6) * 0x1p-24 * mag + 1e-30)
                            << p.Name() << " K " << K;
                    }
            }
}

// ---- gradients ---------------------------------------------------------------------------

// Oracle: sparse_qlinear_grad_input == lv_qlinear_grad_input_rows_ref on the
// decompressed codes (bits, every dtype, groups, act_scale, k ranges);
// sparse_linear_grad_input == the contract's std::fma chain over n on the
// decompressed float weights (bits) and a float64 sum (tolerance).
void CheckGrads(const SVariant &v, const char *name) {
    Rng rng(19);
    for (const Pattern &p : {Pattern{2, 4, 0}, Pattern{1, 4, 0}, Pattern{0, 0, -1}})
        for (int64_t K : {64, 128, 72, 640})  // 640: three column blocks of the chain
            for (lv_dtype dt : {LV_F32, LV_BF16, LV_F16}) {
                if (!p.Fits(K)) continue;
                // M = 11 at K = 640: a tile of 8 rows and a rest of 3.
                const int64_t M = K > 256 ? 11 : 3, N = 9, KV = p.KV(K), gs = K % 64 == 0 ? 64 : 0,
                              G = gs ? K / gs : 1;
                const std::vector<uint8_t> keep = RandomKeep(p, N, K, rng);
                const std::vector<int8_t> w = RandomCodes(keep, N, K, false, rng);
                const Compressed c = Compress(w.data(), 1, keep, N, K, KV, 1, 1);
                FBuf gy(dt, M, N);
                for (int64_t i = 0; i < M * N; i++) gy.Set(i, rng.Uniform(-1.0f, 1.0f));
                std::vector<float> ws(N * G), as(K);
                for (auto &s : ws) s = rng.Uniform(-0.1f, 0.1f);
                for (auto &s : as) s = rng.Uniform(0.5f, 2.0f);
                for (bool act : {false, true})
                    for (int64_t k0 : {(int64_t)0, (int64_t)5})
                        for (lv_dtype xdt : {LV_F32, dt}) {
                            const int64_t k1 = K - k0 / 2;
                            FBuf want(xdt, M, K), got(xdt, M, K);
                            ASSERT_EQ(lv_qlinear_grad_input_rows_ref(
                                          gy.data(), dt, N, w.data(), K, ws.data(), gs,
                                          act ? as.data() : nullptr, N, K, 0, M, k0, k1,
                                          want.data(), xdt, K),
                                      LV_OK);
                            ASSERT_EQ(v.qgrad(gy.data(), dt, N, (const int8_t *)c.values.data(),
                                              c.ldv, c.bits.data(), c.ldb, KV, ws.data(), gs,
                                              act ? as.data() : nullptr, N, K, 0, M, k0, k1,
                                              got.data(), xdt, K),
                                      LV_OK);
                            ASSERT_TRUE(SameFloats(want, got))
                                << name << " qgrad " << p.Name() << " K " << K << " " << DtName(dt);
                        }
                // float values of dtype dt
                FBuf wv(dt, N, K);
                std::vector<float> wf(N * K);
                for (int64_t i = 0; i < N * K; i++) wv.Set(i, wf[i] = keep[i] ? SmallExact(rng) : 0.0f);
                const Compressed cf = Compress(wv.data(), lv_dtype_size(dt), keep, N, K, KV);
                FBuf gx(LV_F32, M, K);
                ASSERT_EQ(v.grad(gy.data(), dt, N, cf.values.data(), dt, KV, cf.bits.data(),
                                 cf.ldb, KV, N, K, 0, M, 0, K, gx.data(), LV_F32, K),
                          LV_OK);
                for (int64_t m = 0; m < M; m++)
                    for (int64_t k = 0; k < K; k++) {
                        float acc = 0.0f;
                        double d = 0.0, mag = 0.0;
                        for (int64_t n = 0; n < N; n++) {
                            acc = std::fma(gy.Get(m * N + n), wf[n * K + k], acc);
                            d += (double)gy.Get(m * N + n) * wf[n * K + k];
                            mag += std::fabs((double)gy.Get(m * N + n) * wf[n * K + k]);
                        }
                        ASSERT_EQ(gx.Bits(m * K + k), F2U(acc)) << name << " grad m " << m << " k " << k;
                        EXPECT_NEAR(gx.Get(m * K + k), d, (N + 1) * 0x1p-24 * mag);
                    }
            }
}

TEST(SparseGradRef, MatchesDenseAndFma) { CheckGrads(kRef, "ref"); }

// ---- every SIMD variant against the reference ------------------------------------------

class SparseSimd : public ::testing::TestWithParam<lv_isa> {
  protected:
    void SetUp() override {
        if (!SparseIsaSupported(GetParam()))
            GTEST_SKIP() << lv_isa_name(GetParam()) << " (with the sparse family's needs) not "
                         << "supported by this CPU";
        v_ = VariantOf(GetParam());
        name_ = lv_isa_name(GetParam());
    }
    SVariant v_{};
    const char *name_ = "";
};

// Oracle: SortedMask / the contract (masks); Compress (storage).
TEST_P(SparseSimd, Masks) { CheckMask(v_, name_); }
TEST_P(SparseSimd, MaskNanAndInvalid) { CheckMaskErrors(v_, name_); }
TEST_P(SparseSimd, StorageRoundTrips) { CheckRoundTrip(v_, name_); }
TEST_P(SparseSimd, StorageMismatchesRefused) { CheckStorageErrors(v_, name_); }

// Oracle: lv_qgemm_int8_rows_ref on the decompressed weights (CheckQgemm):
// every pattern, every K up to 33 (each residue of the 16-column steps) and
// longer rows, N and M that cut the
// register tiles, per-group scales, y dtypes, bias, sub-ranges.
TEST_P(SparseSimd, QgemmPatternsSizes) {
    Rng rng(23);
    std::vector<int64_t> Ks;  // every residue mod 16 and mod 64, and longer rows
    for (int64_t K = 1; K <= 33; K++) Ks.push_back(K);
    for (int64_t K : {40, 60, 64, 100, 130, 257}) Ks.push_back(K);
    for (const Pattern &p : kPatterns)
        for (int64_t K : Ks)
            if (p.Fits(K))
                for (int64_t MN : {1, 3, 17}) {
                    const lv_dtype ydt = (lv_dtype)((K + MN) % 3);
                    CheckQgemm(v_, name_, MN, MN == 17 ? 6 : MN + 2, K, p, 0, ydt, MN != 3, false,
                               rng);
                    CheckQgemm(v_, name_, MN == 17 ? 5 : MN, MN == 17 ? 17 : 130 / MN, K, p, 0,
                               (lv_dtype)((ydt + 1) % 3), true, false, rng);
                }
}

// Oracle: CheckQgemm. Groups of 64 / 128 / 1088 (a group longer than one of
// the AVX2 kernel's 1024-byte chunks), K past 1024 ungrouped, one activation
// row (the AVX2 kernel's fused batch-1 path) and the activation-row blocks
// (M = 130 crosses 64-row blocks).
TEST_P(SparseSimd, QgemmGroupsChunksBlocks) {
    Rng rng(29);
    for (const Pattern &p : {Pattern{2, 4, 0}, Pattern{1, 4, 0}, Pattern{0, 0, -1}})
        for (lv_dtype ydt : {LV_F32, LV_BF16, LV_F16}) {
            CheckQgemm(v_, name_, 3, 5, 192, p, 64, ydt, true, false, rng);
            CheckQgemm(v_, name_, 2, 6, 256, p, 128, ydt, false, false, rng);
            CheckQgemm(v_, name_, 2, 5, 2176, p, 1088, ydt, true, false, rng);
            CheckQgemm(v_, name_, 3, 3, 2100, p, 0, ydt, true, false, rng);
            CheckQgemm(v_, name_, 1, 6, 2176, p, 1088, ydt, true, false, rng);  // one row
            CheckQgemm(v_, name_, 1, 5, 2100, p, 0, ydt, false, false, rng);
        }
    CheckQgemm(v_, name_, 130, 9, 96, Pattern{2, 4, 0}, 0, LV_F32, true, false, rng);
    CheckQgemm(v_, name_, 67, 130, 64, Pattern{4, 8, 0}, 64, LV_BF16, true, false, rng);
}

// Oracle: lv_qgemm_int8_rows_ref on the decompressed weights. Masks that
// are 2:4 except for two groups keeping 3 and 1 (the row count still K / 2),
// placed early, late and in high nibbles only, each in a tile of
// otherwise clean 2:4 rows; a kernel with a 2:4 fast path (the AVX2 one, for
// one activation row) must notice them.
TEST_P(SparseSimd, QgemmNearly2of4) {
    Rng rng(59);
    for (int64_t K : {320, 2176})
        for (int64_t M : {1, 2}) {
            const int64_t N = 24, KV = K / 2;  // tiles of 4 rows: one break each, one clean
            std::vector<uint8_t> keep = RandomKeep({2, 4, 0}, N, K, rng);
            // (row, a, b): the group at column a keeps 3, the one at b keeps 1; row 8's
            // are both high nibbles of mask bytes past the first 256 columns
            const int64_t breaks[][3] = {{3, 8, 12}, {5, K - 8, K - 4}, {8, K - 28, K - 12},
                                         {14, 4, 8}, {18, 100, 36}};
            for (auto &b : breaks)
                for (int i = 0; i < 4; i++)
                    keep[b[0] * K + b[1] + i] = i < 3, keep[b[0] * K + b[2] + i] = i == 3;
            const std::vector<int8_t> w = RandomCodes(keep, N, K, false, rng);
            const Compressed c = Compress(w.data(), 1, keep, N, K, KV);
            std::vector<uint8_t> xu(M * K);
            for (auto &b : xu) b = (uint8_t)(1 + rng.Int(255));
            std::vector<float> xs(M, 0.01f), ws(N);
            for (auto &f : ws) f = rng.Uniform(-0.1f, 0.1f);
            FBuf want(LV_F32, M, N), got(LV_F32, M, N);
            ASSERT_EQ(lv_qgemm_int8_rows_ref(xu.data(), K, xs.data(), w.data(), K, ws.data(), 0,
                                             nullptr, K, 0, M, 0, N, want.data(), LV_F32, N),
                      LV_OK);
            ASSERT_EQ(v_.qgemm(xu.data(), K, xs.data(), (const int8_t *)c.values.data(), KV,
                               c.bits.data(), c.ldb, KV, ws.data(), 0, nullptr, K, 0, M, 0, N,
                               got.data(), LV_F32, N),
                      LV_OK);
            EXPECT_TRUE(SameFloats(want, got)) << name_ << " K " << K << " M " << M;
        }
}

// Oracle: CheckQgemm with extreme codes only: activations -127 / +127 (xu 1 /
// 255), weights -128 / 127.
TEST_P(SparseSimd, QgemmExtremeCodes) {
    Rng rng(31);
    for (const Pattern &p : kPatterns)
        for (int64_t K : {12, 16, 25, 64, 200, 1024})
            if (p.Fits(K)) CheckQgemm(v_, name_, 4, 7, K, p, 0, LV_F32, false, true, rng);
}

TEST_P(SparseSimd, QgemmKMaxExtremes) { CheckKMax(v_, name_); }

// Oracle: the reference (sparse_linear, bit for bit): every pattern, value,
// activation and output dtype, awkward sizes, bias, sub-ranges, and K past
// the AVX2 kernel's 256-float chunks and M past its 32-row blocks.
void CheckGemm(const SVariant &v, const char *name, int64_t M, int64_t N, int64_t K,
               const Pattern &p, lv_dtype xdt, lv_dtype vdt, lv_dtype ydt, bool bias, Rng &rng) {
    const int64_t KV = p.KV(K), ldx = K + 3, ldy = N + 2;
    const std::vector<uint8_t> keep = RandomKeep(p, N, K, rng);
    FBuf wd(vdt, N, K), x(xdt, M, ldx);
    for (int64_t i = 0; i < N * K; i++) wd.Set(i, keep[i] ? rng.Uniform(-1.0f, 1.0f) : 0.0f);
    for (int64_t i = 0; i < M * ldx; i++) x.Set(i, rng.Uniform(-3.0f, 3.0f));
    std::vector<float> bv(N);
    for (auto &b : bv) b = rng.Uniform(-1.0f, 1.0f);
    const Compressed c = Compress(wd.data(), lv_dtype_size(vdt), keep, N, K, KV, 1, 1);
    const std::string what = std::string(name) + " " + p.Name() + " M " + std::to_string(M) +
                             " N " + std::to_string(N) + " K " + std::to_string(K) + " x " +
                             DtName(xdt) + " v " + DtName(vdt) + " y " + DtName(ydt);
    for (int split = 0; split < 2; split++) {
        const int64_t m0 = split ? M / 3 : 0, m1 = split ? M - M / 4 : M,
                      n0 = split ? N / 3 : 0, n1 = split ? N - N / 5 : N;
        FBuf want(ydt, M, ldy), got(ydt, M, ldy);
        ASSERT_EQ(lv_sparse_gemm_rows_ref(x.data(), xdt, ldx, c.values.data(), vdt, c.ldv,
                                          c.bits.data(), c.ldb, KV, bias ? bv.data() : nullptr, K,
                                          m0, m1, n0, n1, want.data(), ydt, ldy),
                  LV_OK);
        ASSERT_EQ(v.gemm(x.data(), xdt, ldx, c.values.data(), vdt, c.ldv, c.bits.data(), c.ldb,
                         KV, bias ? bv.data() : nullptr, K, m0, m1, n0, n1, got.data(), ydt, ldy),
                  LV_OK)
            << what;
        ASSERT_TRUE(SameFloats(want, got)) << what << " split " << split;
    }
}

TEST_P(SparseSimd, GemmPatternsSizesDtypes) {
    Rng rng(37);
    int i = 0;
    std::vector<int64_t> Ks;  // every residue mod 16, and rows past 256-float chunks
    for (int64_t K = 1; K <= 33; K++) Ks.push_back(K);
    for (int64_t K : {64, 100, 257, 600}) Ks.push_back(K);
    for (const Pattern &p : kPatterns)
        for (int64_t K : Ks)
            if (p.Fits(K))
                for (int64_t MN : {1, 3, 17}) {
                    i++;
                    const lv_dtype xdt = (lv_dtype)(i % 3), vdt = (lv_dtype)((i / 3) % 3),
                                   ydt = (lv_dtype)((i / 9) % 3);
                    CheckGemm(v_, name_, MN, MN == 1 ? 5 : MN, K, p, xdt, vdt, ydt, i % 2, rng);
                }
    for (lv_dtype vdt : {LV_F32, LV_BF16, LV_F16}) {
        CheckGemm(v_, name_, 70, 9, 48, Pattern{2, 4, 0}, LV_F32, vdt, LV_F32, true, rng);
        CheckGemm(v_, name_, 2, 130, 96, Pattern{1, 4, 0}, LV_BF16, vdt, LV_BF16, true, rng);
    }
}

TEST_P(SparseSimd, GemmHandComputedOrder) { CheckHandLinear(v_, name_); }

// Oracle: sparse.h — a NaN or an Inf anywhere in x, kept or pruned column,
// makes the output NaN (v * 0 is NaN for Inf); the reference agrees (bits of
// f16 / bf16 canonical NaNs).
TEST_P(SparseSimd, GemmNonFiniteInputsPropagate) {
    Rng rng(41);
    const int64_t M = 4, N = 6, K = 40, KV = 20;
    const std::vector<uint8_t> keep = RandomKeep({2, 4, 0}, N, K, rng);
    std::vector<float> wf(N * K), x(M * K);
    for (int64_t i = 0; i < N * K; i++) wf[i] = keep[i] ? rng.Uniform(-1.0f, 1.0f) : 0.0f;
    for (auto &e : x) e = rng.Uniform(-1.0f, 1.0f);
    int64_t kp = 0, kk = 0;  // a pruned and a kept column of row 0
    while (keep[kp]) kp++;
    while (!keep[kk]) kk++;
    x[0 * K + kp] = INFINITY;
    x[1 * K + kp] = NAN;
    x[2 * K + kk] = -INFINITY;  // row 3 stays finite
    const Compressed c = Compress(wf.data(), 4, keep, N, K, KV);
    for (lv_dtype ydt : {LV_F32, LV_BF16, LV_F16}) {
        FBuf want(ydt, M, N), got(ydt, M, N);
        for (const SVariant *v : {&kRef, (const SVariant *)&v_}) {
            FBuf &y = v == &kRef ? want : got;
            ASSERT_EQ(v->gemm(x.data(), LV_F32, K, c.values.data(), LV_F32, KV, c.bits.data(),
                              c.ldb, KV, nullptr, K, 0, M, 0, N, y.data(), ydt, N),
                      LV_OK);
        }
        EXPECT_TRUE(SameFloats(want, got)) << name_ << " " << DtName(ydt);
        for (int64_t n = 0; n < N; n++) {
            // Inf * 0 where row n prunes column kp; else Inf * w: +-Inf
            if (!keep[n * K + kp])
                EXPECT_TRUE(IsNanBits(ydt, got.Bits(0 * N + n))) << "Inf at a pruned column, n " << n;
            else
                EXPECT_TRUE(std::isinf(got.Get(0 * N + n))) << "Inf at a kept column, n " << n;
            EXPECT_TRUE(IsNanBits(ydt, got.Bits(1 * N + n))) << "NaN at a pruned column, n " << n;
            EXPECT_FALSE(IsNanBits(ydt, got.Bits(3 * N + n)));
        }
        // -Inf at column kk, kept by weight row 0: -Inf * w = +-Inf
        EXPECT_TRUE(std::isinf(got.Get(2 * N + 0)));
    }
}

TEST_P(SparseSimd, Grads) { CheckGrads(v_, name_); }

// Oracle: the dense reference qlinear_grad_input on the decompressed codes
// (bits), at sizes where the AVX-512 kernel's structure shows: N > 256 (the
// accumulators parked between chunks of n), M > 48 (a second block of rows,
// where each row's value positions start again), k ranges starting inside
// and past the first strip, K not a multiple of 8 or 64 (the last strip's
// mask bytes end the row), groups; values, masks and gy end at an
// inaccessible page, so a read past them faults.
TEST_P(SparseSimd, GradChunksBlocksGuarded) {
    Rng rng(61);
    struct Case { int64_t M, N, K, gs; };
    for (const Case &cs : {Case{50, 300, 200, 0}, Case{7, 513, 130, 0}, Case{53, 260, 256, 64},
                           Case{2, 40, 77, 0}})
        for (const Pattern &p : {Pattern{2, 4, 0}, Pattern{0, 0, -1}, Pattern{0, 0, 0}}) {
            const int64_t M = cs.M, N = cs.N, K = cs.K, gs = cs.gs, G = gs ? K / gs : 1;
            if (!p.Fits(K)) continue;
            const int64_t KV = p.KV(K), KB = (K + 7) / 8;
            const std::vector<uint8_t> keep = RandomKeep(p, N, K, rng);
            const std::vector<int8_t> w = RandomCodes(keep, N, K, false, rng);
            const Compressed c = Compress(w.data(), 1, keep, N, K, KV);
            std::vector<float> gyv(M * N), ws(N * G), as(K);
            for (auto &e : gyv) e = rng.Uniform(-1.0f, 1.0f);
            for (auto &e : ws) e = rng.Uniform(-0.1f, 0.1f);
            for (auto &e : as) e = rng.Uniform(0.5f, 2.0f);
            Guarded gv(N * KV + (KV == 0)), gb(N * KB), ggy(4 * M * N);
            ASSERT_TRUE(gv.p && gb.p && ggy.p);
            if (KV) std::memcpy(gv.p, c.values.data(), (size_t)(N * KV));
            const int8_t *pv = (const int8_t *)gv.p + (KV == 0);
            const uint8_t *pb = gb.Copy(c.bits);
            const float *pgy = ggy.Copy(gyv);
            for (int64_t k0 : {(int64_t)0, (int64_t)5, (int64_t)70})
                for (bool act : {false, true}) {
                    if (k0 >= K) continue;
                    const int64_t k1 = K - (k0 == 5 ? 3 : 0);
                    FBuf want(LV_F32, M, K), got(LV_F32, M, K);
                    ASSERT_EQ(lv_qlinear_grad_input_rows_ref(gyv.data(), LV_F32, N, w.data(), K,
                                                             ws.data(), gs,
                                                             act ? as.data() : nullptr, N, K, 0,
                                                             M, k0, k1, want.data(), LV_F32, K),
                              LV_OK);
                    ASSERT_EQ(v_.qgrad(pgy, LV_F32, N, pv, KV, pb, KB, KV, ws.data(), gs,
                                       act ? as.data() : nullptr, N, K, 0, M, k0, k1,
                                       got.data(), LV_F32, K),
                              LV_OK);
                    ASSERT_TRUE(SameFloats(want, got))
                        << name_ << " " << p.Name() << " M " << M << " N " << N << " K " << K
                        << " k0 " << k0;
                }
            // float values of each dtype against the reference chain (bits)
            for (lv_dtype vdt : {LV_F32, LV_BF16, LV_F16}) {
                const size_t esz = (size_t)lv_dtype_size(vdt);
                FBuf wd(vdt, N, K);
                for (int64_t i = 0; i < N * K; i++) wd.Set(i, keep[i] ? rng.Uniform(-1, 1) : 0.0f);
                const Compressed cf = Compress(wd.data(), (int)esz, keep, N, K, KV);
                Guarded gfv(KV ? N * KV * esz : esz);
                ASSERT_TRUE(gfv.p);
                if (KV) std::memcpy(gfv.p, cf.values.data(), N * KV * esz);
                const void *pfv = KV ? (const void *)gfv.p : (const void *)(gfv.p + esz);
                for (int64_t k0 : {(int64_t)0, (int64_t)70}) {
                    if (k0 >= K) continue;
                    for (lv_dtype xdt : {LV_F32, vdt}) {
                        FBuf want(xdt, M, K), got(xdt, M, K);
                        ASSERT_EQ(kRef.grad(gyv.data(), LV_F32, N, cf.values.data(), vdt, KV,
                                            cf.bits.data(), KB, KV, N, K, 0, M, k0, K,
                                            want.data(), xdt, K),
                                  LV_OK);
                        ASSERT_EQ(v_.grad(pgy, LV_F32, N, pfv, vdt, KV, pb, KB, KV, N, K, 0, M,
                                          k0, K, got.data(), xdt, K),
                                  LV_OK);
                        ASSERT_TRUE(SameFloats(want, got))
                            << name_ << " float " << DtName(vdt) << " " << p.Name() << " M " << M
                            << " N " << N << " K " << K << " k0 " << k0;
                    }
                }
            }
        }
}

// Oracle: the reference (bits) with every buffer ending at an inaccessible
// page: values exactly N * KV elements, masks N * KB bytes, x, scales, bias
// and y exact too, so vector tails that read or write past a row fault.
TEST_P(SparseSimd, BuffersEndAtGuardPage) {
    Rng rng(43);
    for (const Pattern &p : {Pattern{2, 4, 0}, Pattern{1, 4, 0}, Pattern{0, 0, -1},
                             Pattern{0, 0, 1 << 30}, Pattern{0, 0, 0}, Pattern{0, 0, 1}})
        for (int64_t K : {4, 12, 20, 36, 60, 64, 100, 132})
            for (int64_t N : {1, 5})
                for (lv_dtype dt : {LV_F32, LV_BF16, LV_F16}) {
                    if (!p.Fits(K)) continue;
                    const int64_t M = 1 + 2 * (N == 5 || dt == LV_F16), KV = p.KV(K), KB = (K + 7) / 8;
                    const size_t esz = (size_t)lv_dtype_size(dt);
                    const std::vector<uint8_t> keep = RandomKeep(p, N, K, rng);
                    const std::vector<int8_t> w = RandomCodes(keep, N, K, false, rng);
                    const Compressed c = Compress(w.data(), 1, keep, N, K, KV);
                    std::vector<uint8_t> xu(M * K);
                    for (auto &b : xu) b = (uint8_t)(1 + rng.Int(255));
                    std::vector<float> xs(M), ws(N), bias(N);
                    for (auto &s : xs) s = rng.Uniform(0.01f, 0.1f);
                    for (auto &s : ws) s = rng.Uniform(-0.1f, 0.1f);
                    for (auto &s : bias) s = rng.Uniform(-1.0f, 1.0f);
                    Guarded gx(M * K), gv(N * KV + (KV == 0)), gb(N * KB), gxs(4 * M), gws(4 * N),
                        gbias(4 * N), gy(M * N * esz);
                    ASSERT_TRUE(gx.p && gv.p && gb.p && gy.p);
                    const uint8_t *px = gx.Copy(xu);
                    const int8_t *pv = (const int8_t *)gv.p + (KV == 0);
                    if (KV) std::memcpy(gv.p, c.values.data(), (size_t)(N * KV));
                    const uint8_t *pb = gb.Copy(c.bits);
                    const float *pxs = gxs.Copy(xs), *pws = gws.Copy(ws), *pbias = gbias.Copy(bias);
                    FBuf want(dt, M, N);
                    ASSERT_EQ(kRef.qgemm(xu.data(), K, xs.data(), (const int8_t *)c.values.data(),
                                         KV, c.bits.data(), KB, KV, ws.data(), 0, bias.data(), K,
                                         0, M, 0, N, want.data(), dt, N),
                              LV_OK);
                    ASSERT_EQ(v_.qgemm(px, K, pxs, pv, KV, pb, KB, KV, pws, 0, pbias, K, 0, M, 0,
                                       N, gy.p, dt, N),
                              LV_OK);
                    EXPECT_EQ(std::memcmp(want.data(), gy.p, M * N * esz), 0)
                        << name_ << " qgemm " << p.Name() << " K " << K << " N " << N;
                    // sparse_linear with values of dtype dt and x of dtype dt
                    FBuf wd(dt, N, K), xf(dt, M, K);
                    for (int64_t i = 0; i < N * K; i++) wd.Set(i, keep[i] ? rng.Uniform(-1, 1) : 0.0f);
                    for (int64_t i = 0; i < M * K; i++) xf.Set(i, rng.Uniform(-1, 1));
                    const Compressed cf = Compress(wd.data(), (int)esz, keep, N, K, KV);
                    Guarded gfv(KV ? N * KV * esz : esz), gfx(M * K * esz), gfy(M * N * esz);
                    if (KV) std::memcpy(gfv.p, cf.values.data(), N * KV * esz);
                    const void *pfv = KV ? (const void *)gfv.p : (const void *)(gfv.p + esz);
                    std::memcpy(gfx.p, xf.data(), M * K * esz);
                    FBuf wantf(dt, M, N);
                    ASSERT_EQ(kRef.gemm(xf.data(), dt, K, cf.values.data(), dt, KV, cf.bits.data(),
                                        KB, KV, bias.data(), K, 0, M, 0, N, wantf.data(), dt, N),
                              LV_OK);
                    ASSERT_EQ(v_.gemm(gfx.p, dt, K, pfv, dt, KV, pb, KB, KV, pbias, K, 0, M, 0, N,
                                      gfy.p, dt, N),
                              LV_OK);
                    EXPECT_EQ(std::memcmp(wantf.data(), gfy.p, M * N * esz), 0)
                        << name_ << " gemm " << p.Name() << " K " << K << " N " << N;
                }
}

// Oracle: sparse.h — a mask row without exactly KV set bits (one too many in
// the last row, one too few, a bit past K) is LV_E_INVALID before any value
// of it is read: values hold exactly N * KV elements before an inaccessible
// page, so a kernel that trusted the extra bit would fault.
TEST_P(SparseSimd, CorruptMasksRefusedBeforeReading) {
    Rng rng(47);
    const int64_t M = 2, N = 4, K = 44, KV = 22, KB = 6;
    const std::vector<uint8_t> keep = RandomKeep({2, 4, 0}, N, K, rng);
    const std::vector<int8_t> w = RandomCodes(keep, N, K, false, rng);
    const Compressed c = Compress(w.data(), 1, keep, N, K, KV);
    Guarded gv(N * KV), gfv(N * KV * 4);
    const int8_t *pv = gv.Copy(std::vector<int8_t>(c.values.begin(), c.values.end()));
    std::vector<float> wf(N * K);
    for (int64_t i = 0; i < N * K; i++) wf[i] = w[i];
    const Compressed cf = Compress(wf.data(), 4, keep, N, K, KV);
    const void *pfv = gfv.Copy(cf.values);
    std::vector<uint8_t> xu(M * K, 200);
    std::vector<float> x(M * K, 1.0f), xs(M, 1.0f), ws(N, 1.0f), gy(M * N, 1.0f);
    std::vector<uint8_t> extra = c.bits, fewer = c.bits, past = c.bits;
    for (int64_t k = K - 1; k >= 0; k--)
        if (!keep[(N - 1) * K + k]) {  // the last pruned column of the last row
            extra[(N - 1) * KB + k / 8] |= (uint8_t)(1u << (k % 8));
            break;
        }
    for (int64_t k = 0; k < K; k++)
        if (keep[1 * K + k]) {
            fewer[1 * KB + k / 8] &= (uint8_t)~(1u << (k % 8));
            break;
        }
    past[(N - 1) * KB + KB - 1] |= 0x40;  // column 46 >= K
    for (const std::vector<uint8_t> *bad : {&extra, &fewer, &past}) {
        for (const SVariant *v : {&kRef, (const SVariant *)&v_}) {
            std::vector<float> y(M * N, 3.0f), gx(M * K, 3.0f);
            EXPECT_EQ(v->qgemm(xu.data(), K, xs.data(), pv, KV, bad->data(), KB, KV, ws.data(), 0,
                               nullptr, K, 0, M, 0, N, y.data(), LV_F32, N),
                      LV_E_INVALID);
            EXPECT_EQ(v->gemm(x.data(), LV_F32, K, pfv, LV_F32, KV, bad->data(), KB, KV, nullptr,
                              K, 0, M, 0, N, y.data(), LV_F32, N),
                      LV_E_INVALID);
            EXPECT_EQ(v->qgrad(gy.data(), LV_F32, N, pv, KV, bad->data(), KB, KV, ws.data(), 0,
                               nullptr, N, K, 0, M, 0, K, gx.data(), LV_F32, K),
                      LV_E_INVALID);
            EXPECT_EQ(v->grad(gy.data(), LV_F32, N, pfv, LV_F32, KV, bad->data(), KB, KV, N, K, 0,
                              M, 0, K, gx.data(), LV_F32, K),
                      LV_E_INVALID);
            EXPECT_EQ(v->decompress(pv, 1, KV, bad->data(), KB, K, KV, 0, N, gx.data(), K),
                      LV_E_INVALID);
        }
        // rows of the tile that are fine still work: the bad row left out
        const int64_t bad_row = bad == &fewer ? 1 : N - 1, ok0 = bad_row == 1 ? 2 : 0,
                      ok1 = bad_row == 1 ? N : N - 1;
        std::vector<float> ya(M * N, 3.0f), yb(M * N, 3.0f);
        ASSERT_EQ(kRef.qgemm(xu.data(), K, xs.data(), pv, KV, c.bits.data(), KB, KV, ws.data(), 0,
                             nullptr, K, 0, M, ok0, ok1, ya.data(), LV_F32, N),
                  LV_OK);
        ASSERT_EQ(v_.qgemm(xu.data(), K, xs.data(), pv, KV, bad->data(), KB, KV, ws.data(), 0,
                           nullptr, K, 0, M, ok0, ok1, yb.data(), LV_F32, N),
                  LV_OK);
        EXPECT_EQ(ya, yb);
    }
}

// Oracle: the reference, and sparse.h — with nothing kept (KV = 0) values
// may be NULL; every product is then 0 (+ bias): sparse_qlinear gives
// (0 * ws) * xs + bias, sparse_linear x * 0 summed, + bias.
TEST_P(SparseSimd, NothingKeptNullValues) {
    const int64_t M = 2, N = 3, K = 20, KB = 3;
    std::vector<uint8_t> xu(M * K, 200), bits(N * KB, 0);
    std::vector<float> x(M * K, 1.5f), xs(M, 0.5f), ws(N, 2.0f), bias = {1.0f, -2.0f, 0.25f};
    for (const SVariant *v : {&kRef, (const SVariant *)&v_}) {
        std::vector<float> yq(M * N, 9.0f), yf(M * N, 9.0f);
        ASSERT_EQ(v->qgemm(xu.data(), K, xs.data(), nullptr, 0, bits.data(), KB, 0, ws.data(), 0,
                           bias.data(), K, 0, M, 0, N, yq.data(), LV_F32, N),
                  LV_OK);
        ASSERT_EQ(v->gemm(x.data(), LV_F32, K, nullptr, LV_F32, 0, bits.data(), KB, 0,
                          bias.data(), K, 0, M, 0, N, yf.data(), LV_F32, N),
                  LV_OK);
        for (int64_t i = 0; i < M * N; i++) {
            EXPECT_EQ(yq[i], bias[i % N]) << name_;
            EXPECT_EQ(yf[i], bias[i % N]) << name_;
        }
    }
}

// Oracle: the lv_check_* rules (sparse_internal.h), shared with the
// reference: every variant refuses what the reference refuses, with the same
// status, and writes nothing.
TEST_P(SparseSimd, InvalidArguments) {
    const int64_t K = 64, KV = 32, KB = 8;
    std::vector<uint8_t> bits(4 * KB, 0x55), xu(4 * K, 128);
    std::vector<int8_t> vals(4 * KV, 1);
    std::vector<float> x(4 * K, 1.0f), xs(4, 1.0f), ws(16, 1.0f), fv(4 * KV, 1.0f), gy(16, 1.0f);
    for (const SVariant *v : {&kRef, (const SVariant *)&v_}) {
        std::vector<float> y(64, 5.0f);
        auto q = [&](int64_t ldx, int64_t ldv, int64_t ldb, int64_t kv, int64_t gs, int64_t k,
                     int64_t m0, int64_t m1, int64_t n0, int64_t n1, int64_t ldy) {
            return v->qgemm(xu.data(), ldx, xs.data(), vals.data(), ldv, bits.data(), ldb, kv,
                            ws.data(), gs, nullptr, k, m0, m1, n0, n1, y.data(), LV_F32, ldy);
        };
        EXPECT_EQ(q(K, KV, KB, KV, 0, K, 0, 2, 0, 4, 4), LV_OK);
        for (int i = 0; i < 8; i++) y[i] = 5.0f;
        EXPECT_EQ(q(K, KV, KB, KV, 0, 0, 0, 2, 0, 4, 4), LV_E_INVALID);          // K < 1
        EXPECT_EQ(q(K, KV, KB, K + 1, 0, K, 0, 2, 0, 4, 4), LV_E_INVALID);       // KV > K
        EXPECT_EQ(q(K, KV, KB, -1, 0, K, 0, 2, 0, 4, 4), LV_E_INVALID);          // KV < 0
        EXPECT_EQ(q(K, KV - 1, KB, KV, 0, K, 0, 2, 0, 4, 4), LV_E_INVALID);      // ldv < KV
        EXPECT_EQ(q(K, KV, KB - 1, KV, 0, K, 0, 2, 0, 4, 4), LV_E_INVALID);      // ldb < KB
        EXPECT_EQ(q(K - 1, KV, KB, KV, 0, K, 0, 2, 0, 4, 4), LV_E_INVALID);      // ldx < K
        EXPECT_EQ(q(K, KV, KB, KV, 32, K, 0, 2, 0, 4, 4), LV_E_INVALID);         // group % 64
        EXPECT_EQ(q(K, KV, KB, KV, 0, K, 1, 0, 0, 4, 4), LV_E_INVALID);          // m1 < m0
        EXPECT_EQ(q(K, KV, KB, KV, 0, K, 0, 2, 3, 2, 4), LV_E_INVALID);          // n1 < n0
        EXPECT_EQ(q(K, KV, KB, KV, 0, K, 0, 2, 0, 4, 3), LV_E_INVALID);          // ldy < n1
        EXPECT_EQ(q(K, KV, KB, KV - 1, 0, K, 0, 2, 0, 4, 4), LV_E_INVALID);      // counts
        EXPECT_EQ(q(LV_QGEMM_K_MAX + 1, KV, KB, KV, 0, LV_QGEMM_K_MAX + 1, 0, 2, 0, 4, 4),
                  LV_E_K_TOO_LARGE);
        EXPECT_EQ(v->qgemm(nullptr, K, xs.data(), vals.data(), KV, bits.data(), KB, KV, ws.data(),
                           0, nullptr, K, 0, 1, 0, 1, y.data(), LV_F32, 4),
                  LV_E_INVALID);
        EXPECT_EQ(v->qgemm(xu.data(), K, xs.data(), vals.data(), KV, bits.data(), KB, KV, nullptr,
                           0, nullptr, K, 0, 1, 0, 1, y.data(), LV_F32, 4),
                  LV_E_INVALID);
        EXPECT_EQ(v->qgemm(xu.data(), K, xs.data(), nullptr, KV, bits.data(), KB, KV, ws.data(),
                           0, nullptr, K, 0, 1, 0, 1, y.data(), LV_F32, 4),
                  LV_E_INVALID);
        EXPECT_EQ(q(K, KV, KB, KV, 0, K, 1, 1, 0, 4, 4), LV_OK);  // empty ranges
        EXPECT_EQ(q(K, KV, KB, KV, 0, K, 0, 2, 2, 2, 4), LV_OK);
        auto g = [&](int64_t ldx, int64_t ldv, int64_t ldb, int64_t kv, int64_t k, int64_t m0,
                     int64_t m1, int64_t n0, int64_t n1, int64_t ldy) {
            return v->gemm(x.data(), LV_F32, ldx, fv.data(), LV_F32, ldv, bits.data(), ldb, kv,
                           nullptr, k, m0, m1, n0, n1, y.data(), LV_F32, ldy);
        };
        EXPECT_EQ(g(K, KV, KB, KV, 0, 0, 2, 0, 4, 4), LV_E_INVALID);
        EXPECT_EQ(g(K, KV, KB, K + 1, K, 0, 2, 0, 4, 4), LV_E_INVALID);
        EXPECT_EQ(g(K, KV - 1, KB, KV, K, 0, 2, 0, 4, 4), LV_E_INVALID);
        EXPECT_EQ(g(K, KV, KB - 1, KV, K, 0, 2, 0, 4, 4), LV_E_INVALID);
        EXPECT_EQ(g(K - 1, KV, KB, KV, K, 0, 2, 0, 4, 4), LV_E_INVALID);
        EXPECT_EQ(g(K, KV, KB, KV, K, 0, 2, 0, 4, 3), LV_E_INVALID);
        EXPECT_EQ(g(K, KV, KB, KV, K, 2, 1, 0, 4, 4), LV_E_INVALID);
        EXPECT_EQ(g(K, KV, KB, KV + 1, K, 0, 2, 0, 4, 4), LV_E_INVALID);
        EXPECT_EQ(v->gemm(x.data(), LV_F32, K, nullptr, LV_F32, KV, bits.data(), KB, KV, nullptr,
                          K, 0, 1, 0, 1, y.data(), LV_F32, 4),
                  LV_E_INVALID);
        EXPECT_EQ(v->gemm(x.data(), LV_F32, K, fv.data(), LV_F32, KV, nullptr, KB, KV, nullptr,
                          K, 0, 1, 0, 1, y.data(), LV_F32, 4),
                  LV_E_INVALID);
        for (float f : y) ASSERT_EQ(f, 5.0f) << lv_isa_name(GetParam());
        std::vector<float> gx(4 * K, 3.0f);
        auto gr = [&](int64_t n, int64_t k0, int64_t k1, int64_t gs, const float *wsp) {
            return v->qgrad(gy.data(), LV_F32, 4, vals.data(), KV, bits.data(), KB, KV, wsp, gs,
                            nullptr, n, K, 0, 2, k0, k1, gx.data(), LV_F32, K);
        };
        EXPECT_EQ(gr(0, 0, K, 0, ws.data()), LV_E_INVALID);       // N < 1
        EXPECT_EQ(gr(4, 0, K + 1, 0, ws.data()), LV_E_INVALID);   // k1 > K
        EXPECT_EQ(gr(4, 5, 4, 0, ws.data()), LV_E_INVALID);       // k1 < k0
        EXPECT_EQ(gr(4, 0, K, 32, ws.data()), LV_E_INVALID);      // group % 64
        EXPECT_EQ(gr(4, 0, K, 0, nullptr), LV_E_INVALID);         // no wscale
        EXPECT_EQ(v->grad(gy.data(), LV_F32, 4, fv.data(), LV_F32, KV, bits.data(), KB, KV, 4, K,
                          0, 2, 0, K, gx.data(), LV_F32, K - 1),
                  LV_E_INVALID);  // ldgx < k1
        for (float f : gx) ASSERT_EQ(f, 3.0f);
    }
}

// Oracle: the reference — the dispatching entries (lowvram/sparse.h) route to
// a variant that gives the reference's bits, for each variant this CPU runs.
TEST(SparseDispatch, EntriesMatchReference) {
    Rng rng(53);
    const QCase q(5, 7, 96, {2, 4, 0}, 0, false, rng);
    FBuf want(LV_F32, q.M, q.ldy);
    ASSERT_EQ(q.Sparse(lv_sparse_qgemm_int8_rows_ref, want, true, 0, q.M, 0, q.N), LV_OK);
    const lv_isa before = lv_cpu_isa();
    for (lv_isa isa : {LV_ISA_REF, LV_ISA_AVX2, LV_ISA_AVX512}) {
        if (lv_cpu_set_isa(isa) != LV_OK) continue;
        FBuf got(LV_F32, q.M, q.ldy);
        ASSERT_EQ(q.Sparse(lv_sparse_qgemm_int8_rows, got, true, 0, q.M, 0, q.N), LV_OK);
        EXPECT_TRUE(SameFloats(want, got)) << lv_isa_name(isa);
        std::vector<uint8_t> keep(2 * 8);
        const float s[16] = {1, 2, 3, 4, 4, 3, 2, 1, 0, 0, 0, 0, 5, 5, 5, 5};
        ASSERT_EQ(lv_nm_mask_rows(s, 8, 8, 2, 4, 0, 2, keep.data(), 8), LV_OK);
        const uint8_t want_keep[16] = {0, 0, 1, 1, 1, 1, 0, 0, 1, 1, 0, 0, 1, 1, 0, 0};
        for (int i = 0; i < 16; i++) EXPECT_EQ(keep[i], want_keep[i]) << lv_isa_name(isa);
    }
    ASSERT_EQ(lv_cpu_set_isa(before), LV_OK);
}

std::string IsaName(const ::testing::TestParamInfo<lv_isa> &info) {
    return lv_isa_name(info.param);
}

INSTANTIATE_TEST_SUITE_P(Variants, SparseSimd, ::testing::Values(LV_ISA_AVX2, LV_ISA_AVX512), IsaName);

}  // namespace
