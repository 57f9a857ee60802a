// tests/cpp/test_qgemm.cpp — GoogleTest suite of the qgemm kernel family
// (lowvram/qgemm.h), linked against lowvram_ops only (no torch), so that it
// also runs under ASan + UBSan. It owns two kinds of checks:
//
//  * the reference itself (qgemm_ref.c) against oracles that do not use it:
//    hand-computed codes and scales, known f16/bf16 bit patterns, and an
//    independent re-implementation of the contract in this file (int64 sums,
//    the named float operations, std::fma);
//  * every SIMD variant the CPU supports (AVX2, AVX-512) against the reference
//    (oracle: qgemm_ref.c), bit for bit: int8 codes, scales, int32 sums, and
//    float outputs (f32 compared by bits with any NaN equal to any NaN, f16 and
//    bf16 by exact bits, canonical NaNs included), on sizes that do not divide
//    the vector widths, every dtype and option, edge rows, the int32 extremes
//    at LV_QGEMM_K_MAX, arbitrary tile splits and bad arguments. Buffers carry
//    padding filled with a sentinel, and it must come back untouched.
//
// Every test says which oracle it uses. Variants the CPU lacks are skipped.

#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "lowvram/qgemm.h"

#include "test_util.h"

namespace {

// ---- helpers -------------------------------------------------------------------



using QuantFn = lv_status (*)(const void *, lv_dtype, int64_t, int64_t, const float *, int64_t,
                              int64_t, int64_t, void *, int64_t, float *, int);
using GemmFn = lv_status (*)(const uint8_t *, int64_t, const float *, const int8_t *, int64_t,
                             const float *, int64_t, const float *, int64_t, int64_t, int64_t,
                             int64_t, int64_t, void *, lv_dtype, int64_t);
using GradFn = lv_status (*)(const void *, lv_dtype, int64_t, const int8_t *, int64_t,
                             const float *, int64_t, const float *, int64_t, int64_t, int64_t,
                             int64_t, int64_t, int64_t, void *, lv_dtype, int64_t);

struct Variant {
    QuantFn quant;
    GemmFn gemm;
    GradFn grad;
};

Variant VariantOf(lv_isa isa) {
    switch (isa) {
    case LV_ISA_AVX512:
        return {lv_quantize_int8_rows_avx512, lv_qgemm_int8_rows_avx512,
                lv_qlinear_grad_input_rows_avx512};
    case LV_ISA_AVX2:
        return {lv_quantize_int8_rows_avx2, lv_qgemm_int8_rows_avx2,
                lv_qlinear_grad_input_rows_avx2};
    default:
        return {lv_quantize_int8_rows_ref, lv_qgemm_int8_rows_ref, lv_qlinear_grad_input_rows_ref};
    }
}
const Variant kRef = VariantOf(LV_ISA_REF);

const char *DtName(lv_dtype dt) { return dt == LV_F32 ? "f32" : dt == LV_BF16 ? "bf16" : "f16"; }

// A float row buffer of any dtype, [rows, ld] elements, prefilled with a
// sentinel byte so that writes outside the intended range show.
struct FBuf {
    lv_dtype dt;
    int64_t rows, ld;
    std::vector<uint8_t> bytes;
    FBuf(lv_dtype d, int64_t r, int64_t l, uint8_t fill = 0xA5)
        : dt(d), rows(r), ld(l), bytes((size_t)(r * l) * (size_t)lv_dtype_size(d) + 1, fill) {}
    void *data() { return bytes.data(); }
    const void *data() const { return bytes.data(); }
    uint32_t Bits(int64_t i) const {  // element i's bits (16 or 32 of them)
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
};

bool IsNanBits(lv_dtype dt, uint32_t b) {
    if (dt == LV_F32) return (b & 0x7fffffffu) > 0x7f800000u;
    if (dt == LV_BF16) return (b & 0x7fffu) > 0x7f80u;
    return (b & 0x7fffu) > 0x7c00u;
}

// The canonical NaNs of common.h: bf16 0x7fc0, f16 0x7e00.
bool IsCanonicalNan(lv_dtype dt, uint32_t b) {
    return dt == LV_BF16 ? b == 0x7fc0u : b == 0x7e00u;
}

// Same bits everywhere (padding included), except that a NaN equals any NaN:
// when two NaNs meet, x86 keeps one operand's (sign and payload), and which
// one depends on the operand order the compiler chose for a commutative
// operation, so the contract does not determine them. f16 / bf16 NaNs must
// still be canonical.
::testing::AssertionResult SameFloats(const FBuf &want, const FBuf &got) {
    if (want.bytes.size() != got.bytes.size()) return ::testing::AssertionFailure() << "sizes";
    const int64_t n = want.rows * want.ld;
    for (int64_t i = 0; i < n; i++) {
        const uint32_t a = want.Bits(i), b = got.Bits(i);
        if (a == b && (want.dt == LV_F32 || !IsNanBits(want.dt, a) || IsCanonicalNan(want.dt, a)))
            continue;
        if (IsNanBits(want.dt, a) && IsNanBits(want.dt, b) &&
            (want.dt == LV_F32 || (IsCanonicalNan(want.dt, a) && IsCanonicalNan(want.dt, b))))
            continue;
        char msg[160];
        std::snprintf(msg, sizeof msg, "%s element [%lld, %lld]: want 0x%08x, got 0x%08x",
                      DtName(want.dt), (long long)(i / want.ld), (long long)(i % want.ld), a,
                      b);
        return ::testing::AssertionFailure() << msg;
    }
    if (want.bytes.back() != got.bytes.back())
        return ::testing::AssertionFailure() << "wrote past the end of the buffer";
    return ::testing::AssertionSuccess();
}

::testing::AssertionResult SameFloatVec(const std::vector<float> &want,
                                        const std::vector<float> &got) {
    if (want.size() != got.size()) return ::testing::AssertionFailure() << "sizes";
    for (size_t i = 0; i < want.size(); i++) {
        const uint32_t a = F2U(want[i]), b = F2U(got[i]);
        if (a != b && !(std::isnan(want[i]) && std::isnan(got[i])))
            return ::testing::AssertionFailure()
                   << "element " << i << ": want " << want[i] << " (0x" << std::hex << a
                   << "), got " << got[i] << " (0x" << b << ")";
    }
    return ::testing::AssertionSuccess();
}

template <typename T>
::testing::AssertionResult SameVec(const std::vector<T> &want, const std::vector<T> &got) {
    if (want.size() != got.size()) return ::testing::AssertionFailure() << "sizes";
    for (size_t i = 0; i < want.size(); i++)
        if (want[i] != got[i])
            return ::testing::AssertionFailure() << "element " << i << ": want " << +want[i]
                                                 << ", got " << +got[i];
    return ::testing::AssertionSuccess();
}

// n bytes that end where an inaccessible page begins, so that a kernel
// reading or writing past the end of a buffer faults (ASan does not see
// intrinsic loads). The start is as unaligned as n makes it.

// Test data in a dtype: bf16 keeps the top half of the float (exact for the
// value it then stands for); f16 rounds toward zero (test data only — the
// conversions under test are checked against known patterns below).
uint32_t ToBits(lv_dtype dt, float f) {
    const uint32_t u = F2U(f);
    if (dt == LV_F32) return u;
    if (dt == LV_BF16) return (u & 0x7fffffffu) > 0x7f800000u ? 0x7fc0u : u >> 16;
    const uint32_t sign = (u >> 16) & 0x8000u, a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return 0x7e00u;
    if (a >= 0x47800000u) return sign | 0x7c00u;  // >= 65536 (and inf): inf
    if (a < 0x33800000u) return sign;              // < 2^-24: zero
    if (a < 0x38800000u) return sign | (uint32_t)(std::fabs(f) * 0x1p24f);  // subnormal
    return sign | ((a - 0x38000000u) >> 13);
}

// Kinds of rows for the quantizer, each an edge of the contract.
enum RowKind {
    kRandom, kZeros, kConstant, kHuge, kNaN, kInf, kSubnormal, kThreshold, kTies, kWideRange,
    kNumKinds
};

float RowValue(RowKind kind, lv_dtype dt, int64_t k, int64_t K, Rng &rng) {
    const float big = dt == LV_F32 ? FLT_MAX : dt == LV_BF16 ? U2F(0x7f7f0000u) : 65504.0f;
    switch (kind) {
    case kRandom: return rng.Uniform(-8.0f, 8.0f);
    case kZeros: return rng.Int(2) ? 0.0f : -0.0f;
    case kConstant: return -0.75f;
    case kHuge: return rng.Int(2) ? big : -big * rng.Uniform(0.0f, 1.0f);
    case kNaN: return k == K / 2 ? NAN : rng.Uniform(-1.0f, 1.0f);
    case kInf: return k == (K - 1) / 3 ? (k % 2 ? -INFINITY : INFINITY) : rng.Uniform(-1.0f, 1.0f);
    case kSubnormal:
        return dt == LV_F16 ? (float)(rng.Int(2047) - 1023) * 0x1p-24f
                            : U2F((uint32_t)rng.Int(0x7fffff) | (rng.Int(2) ? 0x80000000u : 0));
    case kThreshold: {
        // absmax at, just above or just below 2^-100 (f32 / bf16 spell these)
        const float t = LV_QUANT_MIN_ABSMAX;
        const float pick[] = {t, std::nextafter(t, 0.0f), std::nextafter(t, 1.0f), t * 0.5f};
        return k == 0 ? pick[(K + (int)dt) % 4] : t * rng.Uniform(-0.5f, 0.5f);
    }
    case kTies: return k == 0 ? 127.0f : (float)(rng.Int(255) - 127) * 0.5f;
    case kWideRange: return k % 7 == 0 ? 3.0e4f : rng.Uniform(-1e-3f, 1e-3f);
    default: return 0.0f;
    }
}

// ---- an independent implementation of the contract (oracle for the ref) -------

// y[m, n] per qgemm.h, with exact int64 sums (checked to fit int32).
float ContractProduct(const uint8_t *xr, const int8_t *wr, int64_t K, int64_t gs,
                      const float *wsr, float xs, const float *bias) {
    float t = 0.0f;
    for (int64_t g = 0; g < K / gs; g++) {
        int64_t acc = 0;
        for (int64_t k = g * gs; k < (g + 1) * gs; k++) acc += ((int64_t)xr[k] - 128) * wr[k];
        EXPECT_LE(std::llabs(acc), (int64_t)INT32_MAX);
        const float p = (float)acc * wsr[g];
        t = g == 0 ? p : t + p;
    }
    float v = t * xs;
    if (bias) v = v + *bias;
    return v;
}

// ---- the reference against hand computation -------------------------------------

// Oracle: hand computation. absmax 2: scale = 2/127, inv = 63.5; 1 * 63.5 =
// 63.5 is a tie and goes to the even 64; 0.5 * 63.5 = 31.75 -> 32.
TEST(QuantizeRef, HandComputedRow) {
    const float x[3] = {1.0f, -2.0f, 0.5f};
    int8_t q[3];
    float s;
    ASSERT_EQ(lv_quantize_int8_rows_ref(x, LV_F32, 3, 3, nullptr, 0, 0, 1, q, 3, &s, 0), LV_OK);
    EXPECT_EQ(F2U(s), F2U(2.0f / 127.0f));
    EXPECT_EQ(q[0], 64);
    EXPECT_EQ(q[1], -127);
    EXPECT_EQ(q[2], 32);
    uint8_t qu[3];
    ASSERT_EQ(lv_quantize_int8_rows_ref(x, LV_F32, 3, 3, nullptr, 0, 0, 1, qu, 3, &s, 1), LV_OK);
    EXPECT_EQ(qu[0], 192);
    EXPECT_EQ(qu[1], 1);
    EXPECT_EQ(qu[2], 160);
}

// Oracle: hand computation. absmax 127 makes inv exactly 1, so every x.5 is a
// tie: 62.5 -> 62, 63.5 -> 64, -0.5 -> 0, 1.5 -> 2, 2.5 -> 2, -3.5 -> -4.
TEST(QuantizeRef, TiesToEven) {
    const float x[7] = {127.0f, 62.5f, 63.5f, -0.5f, 1.5f, 2.5f, -3.5f};
    const int8_t want[7] = {127, 62, 64, 0, 2, 2, -4};
    int8_t q[7];
    float s;
    ASSERT_EQ(lv_quantize_int8_rows_ref(x, LV_F32, 7, 7, nullptr, 0, 0, 1, q, 7, &s, 0), LV_OK);
    EXPECT_EQ(s, 1.0f);
    for (int k = 0; k < 7; k++) EXPECT_EQ(q[k], want[k]) << "k = " << k;
}

// Oracle: hand computation. act_scale multiplies first (v = [2, 1]); groups
// of two get their own scales: [1, 2] -> 2/127, codes [64, 127]; [3, 4] ->
// 4/127, inv 31.75, 3 * 31.75 = 95.25 -> 95.
TEST(QuantizeRef, ActScaleAndGroups) {
    const float x2[2] = {1.0f, 2.0f}, as[2] = {2.0f, 0.5f};
    int8_t q[4];
    float s[2];
    ASSERT_EQ(lv_quantize_int8_rows_ref(x2, LV_F32, 2, 2, as, 0, 0, 1, q, 2, s, 0), LV_OK);
    EXPECT_EQ(s[0], 2.0f / 127.0f);
    EXPECT_EQ(q[0], 127);
    EXPECT_EQ(q[1], 64);
    const float x4[4] = {1.0f, 2.0f, 3.0f, 4.0f};
    ASSERT_EQ(lv_quantize_int8_rows_ref(x4, LV_F32, 4, 4, nullptr, 2, 0, 1, q, 4, s, 0), LV_OK);
    EXPECT_EQ(s[0], 2.0f / 127.0f);
    EXPECT_EQ(s[1], 4.0f / 127.0f);
    const int8_t want[4] = {64, 127, 95, 127};
    for (int k = 0; k < 4; k++) EXPECT_EQ(q[k], want[k]) << "k = " << k;
}

// Oracle: the contract's edge cases, by hand. Zero rows: scale 0, codes 0
// (128 with the offset); NaN or Inf anywhere: scale NaN, codes 0; absmax
// exactly 2^-100 still quantizes, one ulp below does not.
TEST(QuantizeRef, EdgeRows) {
    const float t = LV_QUANT_MIN_ABSMAX;
    const float rows[5][3] = {{0.0f, -0.0f, 0.0f},
                              {1.0f, NAN, 2.0f},
                              {INFINITY, 1.0f, 0.0f},
                              {t, -t / 2, 0.0f},
                              {std::nextafter(t, 0.0f), 0.0f, 0.0f}};
    uint8_t q[5][3];
    float s[5];
    ASSERT_EQ(lv_quantize_int8_rows_ref(rows, LV_F32, 3, 3, nullptr, 0, 0, 5, q, 3, s, 1), LV_OK);
    EXPECT_EQ(F2U(s[0]), 0u);
    EXPECT_TRUE(std::isnan(s[1]));
    EXPECT_TRUE(std::isnan(s[2]));
    EXPECT_EQ(s[3], t / 127.0f);
    EXPECT_EQ(F2U(s[4]), 0u);
    const uint8_t want[5][3] = {
        {128, 128, 128}, {128, 128, 128}, {128, 128, 128}, {255, 128 - 64, 128}, {128, 128, 128}};
    // -t/2 * (127/t) = -63.5, a tie -> -64
    for (int r = 0; r < 5; r++)
        for (int k = 0; k < 3; k++) EXPECT_EQ(q[r][k], want[r][k]) << r << "," << k;
    // an act_scale product that overflows counts as Inf
    const float big[2] = {FLT_MAX, 1.0f}, as[2] = {2.0f, 1.0f};
    int8_t qi[2];
    ASSERT_EQ(lv_quantize_int8_rows_ref(big, LV_F32, 2, 2, as, 0, 0, 1, qi, 2, s, 0), LV_OK);
    EXPECT_TRUE(std::isnan(s[0]));
    EXPECT_EQ(qi[0], 0);
    EXPECT_EQ(qi[1], 0);
}

// Oracle: known bf16 / f16 bit patterns (IEEE 754 binary16 and the top half
// of binary32), decoded by the reference's grad kernel: with N = 1, w = 1 and
// wscale = 1, gx = fma(gy * 1, 1, 0) = gy exactly.
TEST(ConvertRef, HalfToFloatKnownPatterns) {
    struct P {
        lv_dtype dt;
        uint16_t h;
        float f;
    } cases[] = {
        {LV_F16, 0x3c00, 1.0f},          {LV_F16, 0xc000, -2.0f},
        {LV_F16, 0x0001, 0x1p-24f},      {LV_F16, 0x03ff, 1023 * 0x1p-24f},
        {LV_F16, 0x0400, 0x1p-14f},      {LV_F16, 0x7bff, 65504.0f},
        {LV_F16, 0x7c00, INFINITY},      {LV_F16, 0xfc00, -INFINITY},
        {LV_F16, 0x3555, 0x1.554p-2f},   {LV_BF16, 0x3f80, 1.0f},
        {LV_BF16, 0x0001, 0x1p-133f},    {LV_BF16, 0x7f7f, 0x1.fep127f},
        {LV_BF16, 0xff80, -INFINITY},    {LV_BF16, 0x3eab, 0x1.56p-2f},
    };
    for (const P &c : cases) {
        const int8_t w = 1;
        const float ws = 1.0f;
        float gx = -1.0f;
        ASSERT_EQ(lv_qlinear_grad_input_rows_ref(&c.h, c.dt, 1, &w, 1, &ws, 0, nullptr, 1, 1, 0,
                                                 1, 0, 1, &gx, LV_F32, 1),
                  LV_OK);
        EXPECT_EQ(F2U(gx), F2U(c.f)) << DtName(c.dt) << " 0x" << std::hex << c.h;
    }
    const uint16_t nan16 = 0x7e00;
    const int8_t w = 1;
    const float ws = 1.0f;
    float gx = 0.0f;
    ASSERT_EQ(lv_qlinear_grad_input_rows_ref(&nan16, LV_F16, 1, &w, 1, &ws, 0, nullptr, 1, 1, 0,
                                             1, 0, 1, &gx, LV_F32, 1),
              LV_OK);
    EXPECT_TRUE(std::isnan(gx));
}

// Stores v through the reference's qgemm epilogue: K = 1, code 129 (q = 1),
// w = 1, xscale 1 and wscale v give y = (1 * v) * 1 = v, in dtype dt.
uint32_t StoreViaRef(float v, lv_dtype dt) {
    const uint8_t xu = 129;
    const int8_t w = 1;
    const float xs = 1.0f;
    FBuf y(dt, 1, 1);
    EXPECT_EQ(lv_qgemm_int8_rows_ref(&xu, 1, &xs, &w, 1, &v, 0, nullptr, 1, 0, 1, 0, 1, y.data(),
                                     dt, 1),
              LV_OK);
    return y.Bits(0);
}

// Oracle: known patterns of round-to-nearest-even f32 -> f16 / bf16 (ties,
// subnormals, overflow to infinity, canonical NaNs: bf16 0x7fc0, f16
// 0x7e00 as common.h states).
TEST(ConvertRef, FloatToHalfKnownPatterns) {
    struct P {
        uint32_t f;
        uint16_t h;
    };
    const P f16[] = {
        {0x3f800000u, 0x3c00}, {0x477fe000u, 0x7bff},  // 1, 65504
        {0x477fefffu, 0x7bff}, {0x477ff000u, 0x7c00},  // just below 65520 / 65520 -> inf
        {0x33800000u, 0x0001}, {0x33000000u, 0x0000},  // 2^-24, 2^-25 (tie -> 0)
        {0x33c00000u, 0x0002}, {0x38800000u, 0x0400},  // 1.5 * 2^-24 (tie -> 2), 2^-14
        {0x387fc000u, 0x03ff}, {0x3f801000u, 0x3c00},  // 1023 * 2^-24, 1 + 2^-11 (tie)
        {0x3f803000u, 0x3c02}, {0x3f801001u, 0x3c01},  // 1 + 3 * 2^-11 (tie up), above tie
        {0xff800000u, 0xfc00}, {0x7fc00000u, 0x7e00},  // -inf, NaN
        {0xffc00001u, 0x7e00}, {0x7f800001u, 0x7e00},  // -NaN with payload, signalling NaN
        {0x80000001u, 0x8000}, {0x00000000u, 0x0000},  // -tiny -> -0, 0
    };
    for (const P &c : f16)
        EXPECT_EQ(StoreViaRef(U2F(c.f), LV_F16), c.h) << "f16 of 0x" << std::hex << c.f;
    const P bf16[] = {
        {0x3f800000u, 0x3f80}, {0x3f808000u, 0x3f80},  // 1, tie -> even
        {0x3f818000u, 0x3f82}, {0x3f808001u, 0x3f81},  // tie -> even (up), above tie
        {0x7f7fffffu, 0x7f80}, {0x7f7f7fffu, 0x7f7f},  // FLT_MAX -> inf, below the tie
        {0x00018000u, 0x0002}, {0x00008000u, 0x0000},  // subnormal ties
        {0x7fc00000u, 0x7fc0}, {0xffc12345u, 0x7fc0},  // NaNs -> 0x7fc0
        {0xff800000u, 0xff80}, {0x80000000u, 0x8000},  // -inf, -0
    };
    for (const P &c : bf16)
        EXPECT_EQ(StoreViaRef(U2F(c.f), LV_BF16), c.h) << "bf16 of 0x" << std::hex << c.f;
}

// Oracle: ContractProduct above (int64 sums, the contract's float operations
// written out again) — bits equal; and a double-precision product within a
// loose relative tolerance, so that both could not be wrong the same way.
TEST(QgemmRef, MatchesIndependentContract) {
    Rng rng(7);
    for (int64_t gs : {0, 64}) {
        const int64_t M = 5, N = 7, K = 192, G = gs ? K / gs : 1;
        std::vector<uint8_t> xu(M * K);
        std::vector<int8_t> w(N * K);
        std::vector<float> xs(M), ws(N * G), bias(N);
        for (auto &v : xu) v = (uint8_t)(1 + rng.Int(255));
        for (auto &v : w) v = (int8_t)(rng.Int(256) - 128);
        for (auto &v : xs) v = rng.Uniform(1e-3f, 1e-2f);
        for (auto &v : ws) v = rng.Uniform(-1e-2f, 1e-2f);
        for (auto &v : bias) v = rng.Uniform(-1.0f, 1.0f);
        std::vector<float> y(M * N);
        ASSERT_EQ(lv_qgemm_int8_rows_ref(xu.data(), K, xs.data(), w.data(), K, ws.data(), gs,
                                         bias.data(), K, 0, M, 0, N, y.data(), LV_F32, N),
                  LV_OK);
        for (int64_t m = 0; m < M; m++)
            for (int64_t n = 0; n < N; n++) {
                const float want = ContractProduct(&xu[m * K], &w[n * K], K, gs ? gs : K,
                                                   &ws[n * G], xs[m], &bias[n]);
                EXPECT_EQ(F2U(y[m * N + n]), F2U(want)) << m << "," << n;
                double d = 0;
                for (int64_t k = 0; k < K; k++)
                    d += ((double)xu[m * K + k] - 128) * w[n * K + k] *
                         (double)ws[n * G + k / (gs ? gs : K)];
                d = d * xs[m] + bias[n];
                EXPECT_NEAR(y[m * N + n], d, 1e-5 * (1.0 + std::fabs(d)));
            }
    }
}

// Oracle: the contract's fmaf chain written out with std::fma (bits equal),
// and a double-precision sum within a tolerance.
TEST(GradRef, MatchesIndependentContract) {
    Rng rng(11);
    const int64_t M = 3, N = 9, K = 128, gs = 64, G = 2;
    std::vector<float> gy(M * N), ws(N * G), as(K);
    std::vector<int8_t> w(N * K);
    for (auto &v : gy) v = rng.Uniform(-1.0f, 1.0f);
    for (auto &v : ws) v = rng.Uniform(-0.1f, 0.1f);
    for (auto &v : as) v = rng.Uniform(0.5f, 2.0f);
    for (auto &v : w) v = (int8_t)(rng.Int(256) - 128);
    std::vector<float> gx(M * K);
    ASSERT_EQ(lv_qlinear_grad_input_rows_ref(gy.data(), LV_F32, N, w.data(), K, ws.data(), gs,
                                             as.data(), N, K, 0, M, 0, K, gx.data(), LV_F32, K),
              LV_OK);
    for (int64_t m = 0; m < M; m++)
        for (int64_t k = 0; k < K; k++) {
            float acc = 0.0f;
            double d = 0;
            for (int64_t n = 0; n < N; n++) {
                const float s = gy[m * N + n] * ws[n * G + k / gs];
                acc = std::fma(s, (float)w[n * K + k], acc);
                d += (double)gy[m * N + n] * ws[n * G + k / gs] * w[n * K + k];
            }
            acc = acc * as[k];
            d *= as[k];
            EXPECT_EQ(F2U(gx[m * K + k]), F2U(acc)) << m << "," << k;
            EXPECT_NEAR(gx[m * K + k], d, 1e-4 * (1.0 + std::fabs(d)));
        }
}

// Oracle: an int64 sum computed here. At K = LV_QGEMM_K_MAX the exact sums
// reach +-131072 * 127 * 128 and must come out exactly (y = (float)acc with
// wscale = xscale = 1); the same holds for every variant, whose vpdpbusd
// partial sums wrap around int32 on the way.
void CheckKMax(const Variant &v) {
    const int64_t K = LV_QGEMM_K_MAX, M = 3, N = 4;
    std::vector<uint8_t> xu(M * K);
    std::vector<int8_t> w(N * K);
    for (int64_t k = 0; k < K; k++) {
        xu[0 * K + k] = 1;                       // q = -127
        xu[1 * K + k] = 255;                     // q = +127
        xu[2 * K + k] = k % 2 ? 1 : 255;         // alternating
        w[0 * K + k] = -128;
        w[1 * K + k] = 127;
        w[2 * K + k] = -127;
        w[3 * K + k] = k % 2 ? -128 : 127;
    }
    const std::vector<float> xs(M, 1.0f), ws(N, 1.0f);
    std::vector<float> y(M * N, -1.0f);
    ASSERT_EQ(v.gemm(xu.data(), K, xs.data(), w.data(), K, ws.data(), 0, nullptr, K, 0, M, 0, N,
                     y.data(), LV_F32, N),
              LV_OK);
    for (int64_t m = 0; m < M; m++)
        for (int64_t n = 0; n < N; n++) {
            int64_t acc = 0;
            for (int64_t k = 0; k < K; k++) acc += ((int64_t)xu[m * K + k] - 128) * w[n * K + k];
            ASSERT_LE(std::llabs(acc), (int64_t)INT32_MAX);
            EXPECT_EQ(y[m * N + n], (float)acc) << m << "," << n << " exact " << acc;
        }
    // one more k is refused, whatever else is wrong
    EXPECT_EQ(v.gemm(xu.data(), K + 1, xs.data(), w.data(), K + 1, ws.data(), 0, nullptr, K + 1,
                     0, 1, 0, 1, y.data(), LV_F32, N),
              LV_E_K_TOO_LARGE);
}

// Oracle: the int64 sums of CheckKMax.
TEST(QgemmRef, KMaxExtremes) { CheckKMax(kRef); }

// ---- dispatch --------------------------------------------------------------------

// Oracle: common.h's documented behaviour.
TEST(Dispatch, NamesAndSupport) {
    EXPECT_EQ(lv_isa_from_name("ref"), LV_ISA_REF);
    EXPECT_EQ(lv_isa_from_name("avx2"), LV_ISA_AVX2);
    EXPECT_EQ(lv_isa_from_name("avx512"), LV_ISA_AVX512);
    EXPECT_EQ(lv_isa_from_name("AVX2"), -1);
    EXPECT_EQ(lv_isa_from_name("sse"), -1);
    EXPECT_EQ(lv_isa_from_name(nullptr), -1);
    for (lv_isa isa : {LV_ISA_REF, LV_ISA_AVX2, LV_ISA_AVX512})
        EXPECT_EQ(lv_isa_from_name(lv_isa_name(isa)), isa);
    EXPECT_EQ(lv_cpu_isa_supported(LV_ISA_REF), 1);
    EXPECT_TRUE(lv_cpu_isa_supported(lv_cpu_isa_best()));
    // AVX-512 implies AVX2 here (the variant needs both)
    if (lv_cpu_isa_supported(LV_ISA_AVX512)) EXPECT_TRUE(lv_cpu_isa_supported(LV_ISA_AVX2));
    EXPECT_EQ(lv_dtype_size(LV_F32), 4);
    EXPECT_EQ(lv_dtype_size(LV_BF16), 2);
    EXPECT_EQ(lv_dtype_size(LV_F16), 2);
    EXPECT_STRNE(lv_status_str(LV_E_K_TOO_LARGE), lv_status_str(LV_E_INVALID));
}

// Oracle: the variant called directly. The dispatching entry points run the
// variant lv_cpu_set_isa chose; an unsupported one is refused.
TEST(Dispatch, SetIsaRoutesEntryPoints) {
    const lv_isa before = lv_cpu_isa();
    Rng rng(3);
    const int64_t M = 3, N = 17, K = 65;
    std::vector<uint8_t> xu(M * K);
    std::vector<int8_t> w(N * K);
    std::vector<float> xs(M, 0.01f), ws(N, 0.02f), xf(M * K), gy(M * N);
    for (auto &v : xu) v = (uint8_t)rng.Next();
    for (auto &v : w) v = (int8_t)rng.Next();
    for (auto &v : xf) v = rng.Uniform(-3.0f, 3.0f);
    for (auto &v : gy) v = rng.Uniform(-3.0f, 3.0f);
    for (lv_isa isa : {LV_ISA_REF, LV_ISA_AVX2, LV_ISA_AVX512}) {
        if (!lv_cpu_isa_supported(isa)) {
            EXPECT_EQ(lv_cpu_set_isa(isa), LV_E_UNSUPPORTED);
            continue;
        }
        ASSERT_EQ(lv_cpu_set_isa(isa), LV_OK);
        EXPECT_EQ(lv_cpu_isa(), isa);
        const Variant v = VariantOf(isa);
        std::vector<float> a(M * N), b(M * N), ga(M * K), gb(M * K), sa(M), sb(M);
        std::vector<int8_t> qa(M * K), qb(M * K);
        ASSERT_EQ(lv_qgemm_int8_rows(xu.data(), K, xs.data(), w.data(), K, ws.data(), 0, nullptr,
                                     K, 0, M, 0, N, a.data(), LV_F32, N),
                  LV_OK);
        ASSERT_EQ(v.gemm(xu.data(), K, xs.data(), w.data(), K, ws.data(), 0, nullptr, K, 0, M, 0,
                         N, b.data(), LV_F32, N),
                  LV_OK);
        EXPECT_TRUE(SameFloatVec(a, b)) << lv_isa_name(isa);
        ASSERT_EQ(lv_quantize_int8_rows(xf.data(), LV_F32, K, K, nullptr, 0, 0, M, qa.data(), K,
                                        sa.data(), 0),
                  LV_OK);
        ASSERT_EQ(v.quant(xf.data(), LV_F32, K, K, nullptr, 0, 0, M, qb.data(), K, sb.data(), 0),
                  LV_OK);
        EXPECT_TRUE(SameVec(qa, qb)) << lv_isa_name(isa);
        ASSERT_EQ(lv_qlinear_grad_input_rows(gy.data(), LV_F32, N, w.data(), K, ws.data(), 0,
                                             nullptr, N, K, 0, M, 0, K, ga.data(), LV_F32, K),
                  LV_OK);
        ASSERT_EQ(v.grad(gy.data(), LV_F32, N, w.data(), K, ws.data(), 0, nullptr, N, K, 0, M, 0,
                         K, gb.data(), LV_F32, K),
                  LV_OK);
        EXPECT_TRUE(SameFloatVec(ga, gb)) << lv_isa_name(isa);
    }
    ASSERT_EQ(lv_cpu_set_isa(before), LV_OK);
}

// ---- every SIMD variant against the reference -----------------------------------

class Simd : public ::testing::TestWithParam<lv_isa> {
  protected:
    void SetUp() override {
        if (!lv_cpu_isa_supported(GetParam()))
            GTEST_SKIP() << lv_isa_name(GetParam()) << " not supported by this CPU";
        v_ = VariantOf(GetParam());
    }
    Variant v_{};
};

const int64_t kSizes[] = {1, 3, 15, 17, 31, 33, 63, 65, 1025};

// Quantizes rows of every kind with the variant and the reference.
// Oracle: qgemm_ref.c (codes and scales bit for bit, padding untouched).
void CheckQuantize(const Variant &v, lv_dtype dt, int64_t K, int64_t gs, bool act, int off,
                   uint64_t seed) {
    Rng rng(seed);
    const int64_t M = kNumKinds, ldx = K + 3, ldq = K + 5;
    const int64_t G = gs > 0 ? K / gs : 1;
    FBuf x(dt, M, ldx);
    for (int64_t r = 0; r < M; r++)
        for (int64_t k = 0; k < K; k++)
            x.SetBits(r * ldx + k, ToBits(dt, RowValue((RowKind)r, dt, k, K, rng)));
    std::vector<float> as(K);
    for (int64_t k = 0; k < K; k++)
        as[k] = k % 11 == 5 ? 0.0f : rng.Uniform(0.25f, 4.0f);  // zero factors included
    const float *asp = act ? as.data() : nullptr;
    std::vector<uint8_t> qa(M * ldq, 0x5A), qb(M * ldq, 0x5A);
    std::vector<float> sa(M * G + 1, -7.0f), sb(M * G + 1, -7.0f);
    ASSERT_EQ(kRef.quant(x.data(), dt, ldx, K, asp, gs, 0, M, qa.data(), ldq, sa.data(), off),
              LV_OK);
    // in two row ranges, to show that rows are independent
    ASSERT_EQ(v.quant(x.data(), dt, ldx, K, asp, gs, 0, 4, qb.data(), ldq, sb.data(), off), LV_OK);
    ASSERT_EQ(v.quant(x.data(), dt, ldx, K, asp, gs, 4, M, qb.data(), ldq, sb.data(), off), LV_OK);
    EXPECT_TRUE(SameVec(qa, qb)) << DtName(dt) << " K " << K << " gs " << gs << " act " << act
                                 << " off " << off;
    EXPECT_TRUE(SameFloatVec(sa, sb)) << DtName(dt) << " K " << K << " gs " << gs;
    // rows [2, 5) alone: the others keep their sentinels
    std::vector<uint8_t> qc(M * ldq, 0x5A);
    std::vector<float> sc(M * G + 1, -7.0f);
    ASSERT_EQ(v.quant(x.data(), dt, ldx, K, asp, gs, 2, 5, qc.data(), ldq, sc.data(), off), LV_OK);
    for (int64_t i = 0; i < M * ldq; i++) {
        const int64_t r = i / ldq, k = i % ldq;
        ASSERT_EQ(qc[i], r >= 2 && r < 5 && k < K ? qa[i] : 0x5A) << "row " << r << " k " << k;
    }
    for (int64_t i = 0; i < M * G + 1; i++)
        ASSERT_EQ(F2U(sc[i]), i >= 2 * G && i < 5 * G ? F2U(sa[i]) : F2U(-7.0f)) << i;
}

// Oracle: qgemm_ref.c (CheckQuantize), over every size, input dtype, group
// size (none, 1, a third of K, the product's 64 / 128), act_scale and offset.
TEST_P(Simd, QuantizeAllSizesDtypesOptions) {
    uint64_t seed = 1;
    for (int64_t K : kSizes)
        for (lv_dtype dt : {LV_F32, LV_BF16, LV_F16})
            for (int64_t gs : {(int64_t)0, (int64_t)1, K > 3 && K % 3 == 0 ? K / 3 : K})
                for (int act = 0; act < 2; act++)
                    for (int off = 0; off < 2; off++)
                        CheckQuantize(v_, dt, K, gs, act, off, seed++);
    // group sizes of the product (multiples of 64), and long rows
    for (int64_t K : {64, 128, 192, 4096})
        for (int64_t gs : {64, 128})
            if (K % gs == 0)
                for (lv_dtype dt : {LV_F32, LV_BF16, LV_F16}) CheckQuantize(v_, dt, K, gs, 1, 1, seed++);
}

// Oracle: qgemm_ref.c. Every f16 and every bf16 pattern through the variant's
// loads: one group per element (group_size 1), so codes are +-127 or 0 and
// the scale is |x| / 127 of the exact decoded value.
TEST_P(Simd, QuantizeEveryHalfPattern) {
    for (lv_dtype dt : {LV_F16, LV_BF16}) {
        const int64_t K = 65536;
        std::vector<uint16_t> x(K);
        for (int64_t k = 0; k < K; k++) x[k] = (uint16_t)k;
        std::vector<int8_t> qa(K), qb(K);
        std::vector<float> sa(K), sb(K);
        ASSERT_EQ(kRef.quant(x.data(), dt, K, K, nullptr, 1, 0, 1, qa.data(), K, sa.data(), 0), LV_OK);
        ASSERT_EQ(v_.quant(x.data(), dt, K, K, nullptr, 1, 0, 1, qb.data(), K, sb.data(), 0), LV_OK);
        EXPECT_TRUE(SameVec(qa, qb)) << DtName(dt);
        EXPECT_TRUE(SameFloatVec(sa, sb)) << DtName(dt);
    }
}

// Inputs for a product; xscale / wscale / bias include the values that make
// outputs NaN, infinite, zero, negative zero and subnormal.
struct GemmCase {
    int64_t M, N, K, gs, G, ldx, ldw, ldy;
    std::vector<uint8_t> xu;
    std::vector<int8_t> w;
    std::vector<float> xs, ws, bias;
    GemmCase(int64_t m, int64_t n, int64_t k, int64_t g, Rng &rng)
        : M(m), N(n), K(k), gs(g), G(g > 0 ? k / g : 1), ldx(k + 7), ldw(k + 1), ldy(n + 2),
          xu(m * ldx), w(n * ldw), xs(m), ws(n * G), bias(n) {
        for (auto &v : xu) v = (uint8_t)rng.Next();  // 0 (q = -128) included
        for (auto &v : w) v = (int8_t)rng.Next();    // -128 included
        for (int64_t i = 0; i < M; i++) {
            const int c = rng.Int(16);
            xs[i] = c == 0 ? NAN : c == 1 ? 0.0f : c == 2 ? FLT_MAX : c == 3 ? 1e-38f
                                                                     : rng.Uniform(1e-4f, 1e-2f);
        }
        for (auto &v : ws) {
            const int c = rng.Int(32);
            v = c == 0 ? -0.0f : c == 1 ? INFINITY : c == 2 ? 1e30f : rng.Uniform(-1e-2f, 1e-2f);
        }
        for (auto &v : bias) {
            const int c = rng.Int(32);
            v = c == 0 ? NAN : c == 1 ? -INFINITY : rng.Uniform(-1.0f, 1.0f);
        }
    }
    lv_status Run(GemmFn f, FBuf &y, bool use_bias, int64_t m0, int64_t m1, int64_t n0,
                  int64_t n1) const {
        return f(xu.data(), ldx, xs.data(), w.data(), ldw, ws.data(), gs,
                 use_bias ? bias.data() : nullptr, K, m0, m1, n0, n1, y.data(), y.dt, ldy);
    }
};

// Oracle: qgemm_ref.c — the variant's whole output, padding included, with
// the reference's bits (SameFloats).
void CheckGemm(const Variant &v, int64_t M, int64_t N, int64_t K, int64_t gs, lv_dtype ydt,
               bool use_bias, uint64_t seed) {
    Rng rng(seed);
    GemmCase c(M, N, K, gs, rng);
    FBuf ya(ydt, M, c.ldy), yb(ydt, M, c.ldy);
    ASSERT_EQ(c.Run(kRef.gemm, ya, use_bias, 0, M, 0, N), LV_OK);
    ASSERT_EQ(c.Run(v.gemm, yb, use_bias, 0, M, 0, N), LV_OK);
    EXPECT_TRUE(SameFloats(ya, yb)) << "M " << M << " N " << N << " K " << K << " gs " << gs
                                    << " y " << DtName(ydt) << " bias " << use_bias;
}

// Oracle: qgemm_ref.c, bit for bit, over sizes that do not divide 16, 64 or
// the register tiles, every output dtype, with and without bias.
TEST_P(Simd, QgemmSizesPerChannel) {
    uint64_t seed = 100;
    const int ns = sizeof kSizes / sizeof *kSizes;
    for (int ik = 0; ik < ns; ik++)
        for (int im = 0; im < ns; im++)
            for (int t = 0; t < 2; t++) {
                const int64_t K = kSizes[ik], M = kSizes[im];
                const int64_t N = kSizes[(im * (t + 2) + ik + 3 * t) % ns];
                if (M * N * K > 3000000) continue;
                CheckGemm(v_, M, N, K, 0, (lv_dtype)((im + ik + t) % 3), (im + t) % 2, seed++);
            }
}

// Oracle: qgemm_ref.c. Per-group scales (64, 128; K a multiple), and
// group_size = K (one group, like per-channel).
TEST_P(Simd, QgemmSizesGrouped) {
    uint64_t seed = 200;
    for (int64_t K : {64, 128, 192, 640})
        for (int64_t gs : {(int64_t)64, (int64_t)128, K})
            if (K % gs == 0)
                for (int64_t M : {1, 3, 8, 17, 65})
                    for (int64_t N : {1, 15, 33, 63})
                        CheckGemm(v_, M, N, K, gs, (lv_dtype)((M + N + gs) % 3), (M + N) % 2,
                                  seed++);
}

// Oracle: qgemm_ref.c. Shapes where the variants change tile or path: every
// block height up to 8 rows, several blocks of them (up to 32 rows), larger
// blocks, partial panels, and K over several chunks of a few KiB.
TEST_P(Simd, QgemmBlockBoundaries) {
    uint64_t seed = 300;
    for (int64_t M : {2, 4, 5, 6, 7, 8, 9, 17, 32, 33, 64, 67})
        CheckGemm(v_, M, 97, 4161, 0, (lv_dtype)(M % 3), M % 2, seed++);
    for (int64_t M : {1, 8, 20, 70}) CheckGemm(v_, M, 50, 8192, 128, LV_BF16, 1, seed++);
    CheckGemm(v_, 3, 200, 30000, 0, LV_F32, 1, seed++);
}

// Oracle: the int64 sums of CheckKMax.
TEST_P(Simd, QgemmKMaxExtremes) { CheckKMax(v_); }

// Oracle: one call of the same variant. Any tiling of the output gives the
// same bits, and each call writes its tile only.
TEST_P(Simd, QgemmTileSplits) {
    Rng rng(17);
    for (int64_t gs : {0, 64}) {
        GemmCase c(33, 65, 192, gs, rng);
        for (lv_dtype ydt : {LV_F32, LV_F16}) {
            FBuf whole(ydt, c.M, c.ldy), tiled(ydt, c.M, c.ldy), ref(ydt, c.M, c.ldy);
            ASSERT_EQ(c.Run(v_.gemm, whole, true, 0, c.M, 0, c.N), LV_OK);
            ASSERT_EQ(c.Run(kRef.gemm, ref, true, 0, c.M, 0, c.N), LV_OK);
            EXPECT_TRUE(SameFloats(ref, whole));
            const int64_t mc[] = {0, 1, 2, 9, 10, 31, 33}, nc[] = {0, 5, 6, 7, 30, 49, 64, 65};
            for (int i = 0; i + 1 < 7; i++)
                for (int j = 0; j + 1 < 8; j++)
                    ASSERT_EQ(c.Run(v_.gemm, tiled, true, mc[i], mc[i + 1], nc[j], nc[j + 1]), LV_OK);
            EXPECT_TRUE(SameFloats(whole, tiled)) << "gs " << gs << " " << DtName(ydt);
            // a single interior tile touches nothing else
            FBuf one(ydt, c.M, c.ldy);
            ASSERT_EQ(c.Run(v_.gemm, one, false, 9, 10, 6, 7), LV_OK);
            for (int64_t i = 0; i < c.M * c.ldy; i++)
                if (!(i / c.ldy == 9 && i % c.ldy == 6))
                    ASSERT_EQ(one.Bits(i), FBuf(ydt, 1, 1).Bits(0)) << "element " << i;
        }
    }
}

// Oracle: qgemm_ref.c on the codes the reference quantizer made from edge
// rows (a NaN row's output is NaN, the other rows stay exact).
TEST_P(Simd, QuantizeThenQgemmEdgeRows) {
    Rng rng(23);
    for (lv_dtype xdt : {LV_F32, LV_BF16, LV_F16}) {
        const int64_t M = kNumKinds, K = 257, N = 19;
        FBuf x(xdt, M, K);
        for (int64_t r = 0; r < M; r++)
            for (int64_t k = 0; k < K; k++)
                x.SetBits(r * K + k, ToBits(xdt, RowValue((RowKind)r, xdt, k, K, rng)));
        std::vector<uint8_t> qa(M * K), qb(M * K);
        std::vector<float> sa(M), sb(M);
        ASSERT_EQ(kRef.quant(x.data(), xdt, K, K, nullptr, 0, 0, M, qa.data(), K, sa.data(), 1), LV_OK);
        ASSERT_EQ(v_.quant(x.data(), xdt, K, K, nullptr, 0, 0, M, qb.data(), K, sb.data(), 1), LV_OK);
        ASSERT_TRUE(SameVec(qa, qb));
        ASSERT_TRUE(std::isnan(sa[kNaN]) && std::isnan(sa[kInf]));
        std::vector<int8_t> w(N * K);
        for (auto &v : w) v = (int8_t)rng.Next();
        std::vector<float> ws(N, 0.01f);
        for (lv_dtype ydt : {LV_F32, LV_BF16, LV_F16}) {
            FBuf ya(ydt, M, N), yb(ydt, M, N);
            ASSERT_EQ(kRef.gemm(qa.data(), K, sa.data(), w.data(), K, ws.data(), 0, nullptr, K, 0,
                                M, 0, N, ya.data(), ydt, N),
                      LV_OK);
            ASSERT_EQ(v_.gemm(qb.data(), K, sb.data(), w.data(), K, ws.data(), 0, nullptr, K, 0, M,
                              0, N, yb.data(), ydt, N),
                      LV_OK);
            EXPECT_TRUE(SameFloats(ya, yb)) << DtName(xdt) << " -> " << DtName(ydt);
            for (int64_t n = 0; n < N; n++) {
                EXPECT_TRUE(IsNanBits(ydt, yb.Bits(kNaN * N + n)));
                EXPECT_FALSE(IsNanBits(ydt, yb.Bits(kRandom * N + n)));
            }
        }
    }
}

// Oracle: qgemm_ref.c. The variant's f32 -> f16 / bf16 stores against the
// reference's on values spread over all 2^32 patterns plus the boundaries of
// both formats (y = wscale exactly, see StoreViaRef).
TEST_P(Simd, QgemmOutputConversions) {
    std::vector<float> vals;
    for (uint64_t u = 0; u < (1ull << 32); u += 65537) vals.push_back(U2F((uint32_t)u));
    const uint32_t edges[] = {0x477fe000u, 0x477fefffu, 0x477ff000u, 0x33000000u, 0x33000001u,
                              0x33800000u, 0x33c00000u, 0x387fc000u, 0x387fe000u, 0x38800000u,
                              0x3f801000u, 0x3f803000u, 0x3f808000u, 0x3f818000u, 0x7f7fffffu,
                              0x7f7f8000u, 0x7f7f7fffu, 0x7f800000u, 0x7f800001u, 0x7fc00000u,
                              0x7fffffffu, 0x00008000u, 0x00018000u, 0x00000001u, 0x80000000u};
    for (uint32_t e : edges)
        for (uint32_t s : {0u, 0x80000000u})
            for (int d = -2; d <= 2; d++) vals.push_back(U2F((e ^ s) + (uint32_t)d));
    const int64_t N = (int64_t)vals.size();
    const uint8_t xu = 129;
    const float xs = 1.0f;
    std::vector<int8_t> w(N, 1);
    for (lv_dtype ydt : {LV_F32, LV_BF16, LV_F16}) {
        FBuf ya(ydt, 1, N), yb(ydt, 1, N);
        ASSERT_EQ(kRef.gemm(&xu, 1, &xs, w.data(), 1, vals.data(), 0, nullptr, 1, 0, 1, 0, N,
                            ya.data(), ydt, N),
                  LV_OK);
        ASSERT_EQ(v_.gemm(&xu, 1, &xs, w.data(), 1, vals.data(), 0, nullptr, 1, 0, 1, 0, N,
                          yb.data(), ydt, N),
                  LV_OK);
        EXPECT_TRUE(SameFloats(ya, yb)) << DtName(ydt);
    }
}

struct GradCase {
    int64_t M, N, K, gs, G, ldg, ldw, ldgx;
    lv_dtype gdt;
    FBuf gy;
    std::vector<int8_t> w;
    std::vector<float> ws, as;
    GradCase(int64_t m, int64_t n, int64_t k, int64_t g, lv_dtype gd, Rng &rng)
        : M(m), N(n), K(k), gs(g), G(g > 0 ? k / g : 1), ldg(n + 3), ldw(k + 5), ldgx(k + 1),
          gdt(gd), gy(gd, m, n + 3), w(n * ldw), ws(n * G), as(k) {
        for (int64_t i = 0; i < M; i++)
            for (int64_t j = 0; j < N; j++) {
                const int c = rng.Int(64);
                const float f = c == 0 && i % 5 == 4 ? NAN
                                : c == 1             ? INFINITY
                                : c == 2             ? 0.0f
                                                     : rng.Uniform(-2.0f, 2.0f);
                gy.SetBits(i * ldg + j, ToBits(gd, f));
            }
        for (auto &v : w) v = (int8_t)rng.Next();
        for (auto &v : ws) v = rng.Int(40) == 0 ? 0.0f : rng.Uniform(-0.05f, 0.05f);
        for (auto &v : as) v = rng.Uniform(0.5f, 2.0f);
    }
    lv_status Run(GradFn f, FBuf &gx, bool act, int64_t m0, int64_t m1, int64_t k0,
                  int64_t k1) const {
        return f(gy.data(), gdt, ldg, w.data(), ldw, ws.data(), gs, act ? as.data() : nullptr, N,
                 K, m0, m1, k0, k1, gx.data(), gx.dt, ldgx);
    }
};

// Oracle: qgemm_ref.c, bit for bit (the fma chain over n in order).
TEST_P(Simd, GradSizesDtypes) {
    uint64_t seed = 400;
    const int ns = sizeof kSizes / sizeof *kSizes;
    for (int ik = 0; ik < ns; ik++)
        for (int in = 0; in < ns; in++) {
            const int64_t K = kSizes[ik], N = kSizes[in], M = kSizes[(in + 2 * ik) % ns];
            if (M * N * K > 2000000) continue;
            Rng rng(seed++);
            const lv_dtype gdt = (lv_dtype)((in + ik) % 3), xdt = (lv_dtype)((in + 2 * ik) % 3);
            GradCase c(M, N, K, 0, gdt, rng);
            for (int act = 0; act < 2; act++) {
                FBuf a(xdt, M, c.ldgx), b(xdt, M, c.ldgx);
                ASSERT_EQ(c.Run(kRef.grad, a, act, 0, M, 0, K), LV_OK);
                ASSERT_EQ(c.Run(v_.grad, b, act, 0, M, 0, K), LV_OK);
                EXPECT_TRUE(SameFloats(a, b)) << "M " << M << " N " << N << " K " << K << " gy "
                                              << DtName(gdt) << " gx " << DtName(xdt);
            }
        }
}

// Oracle: qgemm_ref.c; groups of 64 and 128, N over several of the kernels'
// chunks of n, and tiles of the output over m and k (k cut off the 16 / 64
// grid) give the reference's bits.
TEST_P(Simd, GradGroupedAndTiles) {
    uint64_t seed = 500;
    for (int64_t gs : {0, 64, 128})
        for (lv_dtype gdt : {LV_F32, LV_BF16, LV_F16}) {
            Rng rng(seed++);
            GradCase c(13, 300, 256, gs, gdt, rng);  // N crosses the kernels' n chunks
            for (lv_dtype xdt : {LV_F32, LV_BF16, LV_F16}) {
                FBuf a(xdt, c.M, c.ldgx), b(xdt, c.M, c.ldgx);
                ASSERT_EQ(c.Run(kRef.grad, a, true, 0, c.M, 0, c.K), LV_OK);
                const int64_t mc[] = {0, 1, 7, 13}, kc[] = {0, 3, 17, 64, 100, 129, 255, 256};
                for (int i = 0; i + 1 < 4; i++)
                    for (int j = 0; j + 1 < 8; j++)
                        ASSERT_EQ(c.Run(v_.grad, b, true, mc[i], mc[i + 1], kc[j], kc[j + 1]), LV_OK);
                EXPECT_TRUE(SameFloats(a, b)) << "gs " << gs << " gy " << DtName(gdt) << " gx "
                                              << DtName(xdt);
            }
        }
}

// Oracle: IEEE 754 signed zeros, and qgemm_ref.c. The first group's product
// starts the sum (t = p, not 0 + p): when every group's product is -0 (a
// zero sum times a negative scale), y is -0.
TEST_P(Simd, QgemmSignedZeroGroups) {
    const int64_t M = 2, N = 3, K = 192, gs = 64, G = 3;
    std::vector<uint8_t> xu(M * K, 128);  // row 0: q = 0 everywhere
    for (int64_t k = 0; k < K; k++) xu[K + k] = (uint8_t)(200 + k % 50);  // q > 0
    std::vector<int8_t> w(N * K, 3);
    for (int64_t k = 0; k < K; k++) w[k] = 0;  // weight row 0: zeros
    const std::vector<float> xs(M, 0.5f), ws(N * G, -0.25f);
    for (const Variant *v : {&kRef, (const Variant *)&v_}) {
        std::vector<float> y(M * N, 1.0f);
        ASSERT_EQ(v->gemm(xu.data(), K, xs.data(), w.data(), K, ws.data(), gs, nullptr, K, 0, M,
                          0, N, y.data(), LV_F32, N),
                  LV_OK);
        for (int64_t n = 0; n < N; n++) EXPECT_EQ(F2U(y[n]), 0x80000000u) << "n " << n;
        EXPECT_EQ(F2U(y[N]), 0x80000000u);
        EXPECT_LT(y[N + 1], 0.0f);
    }
}

// Oracle: qgemm_ref.c, with every buffer ending at an inaccessible page: the
// variants' vector tails stay inside their buffers (reads and writes).
TEST_P(Simd, BuffersEndAtGuardPage) {
    Rng rng(29);
    for (int64_t K : {1, 17, 63, 64, 100, 120, 192})
        for (int64_t M : {1, 3, 9})
            for (int64_t N : {1, 5, 17, 50})
                for (lv_dtype dt : {LV_F32, LV_BF16, LV_F16}) {
                    const int64_t gs = K % 64 == 0 && (M + N) % 2 ? 64 : 0, G = gs ? K / gs : 1;
                    const size_t esz = (size_t)lv_dtype_size(dt);
                    std::vector<uint8_t> xu(M * K);
                    std::vector<int8_t> w(N * K);
                    std::vector<float> xs(M), ws(N * G), bias(N), as(K), xf(M * K);
                    for (auto &v : xu) v = (uint8_t)rng.Next();
                    for (auto &v : w) v = (int8_t)rng.Next();
                    for (auto &v : xs) v = rng.Uniform(0.01f, 0.1f);
                    for (auto &v : ws) v = rng.Uniform(-0.1f, 0.1f);
                    for (auto &v : bias) v = rng.Uniform(-1.0f, 1.0f);
                    for (auto &v : as) v = rng.Uniform(0.5f, 2.0f);
                    FBuf xin(dt, M, K), gyin(dt, M, N);
                    for (int64_t i = 0; i < M * K; i++) xin.SetBits(i, ToBits(dt, rng.Uniform(-4, 4)));
                    for (int64_t i = 0; i < M * N; i++) gyin.SetBits(i, ToBits(dt, rng.Uniform(-4, 4)));
                    Guarded gx_(M * K), gw(N * K), gxs(4 * M), gws(4 * N * G), gb(4 * N),
                        gas(4 * K), gy(M * N * esz), gxin(M * K * esz), gq(M * K), gsc(4 * M * G),
                        ggy(M * N * esz), ggx(M * K * esz);
                    ASSERT_TRUE(gx_.p && gw.p && gy.p && ggx.p);
                    const uint8_t *pxu = gx_.Copy(xu);
                    const int8_t *pw = gw.Copy(w);
                    const float *pxs = gxs.Copy(xs), *pws = gws.Copy(ws), *pb = gb.Copy(bias),
                                *pas = gas.Copy(as);
                    FBuf ya(dt, M, N);
                    ASSERT_EQ(kRef.gemm(xu.data(), K, xs.data(), w.data(), K, ws.data(), gs,
                                        bias.data(), K, 0, M, 0, N, ya.data(), dt, N),
                              LV_OK);
                    ASSERT_EQ(v_.gemm(pxu, K, pxs, pw, K, pws, gs, pb, K, 0, M, 0, N, gy.p, dt, N),
                              LV_OK);
                    EXPECT_EQ(std::memcmp(ya.data(), gy.p, M * N * esz), 0)
                        << "gemm M " << M << " N " << N << " K " << K << " " << DtName(dt);

                    std::memcpy(gxin.p, xin.data(), M * K * esz);
                    std::vector<int8_t> qa(M * K);
                    std::vector<float> sa(M * G);
                    ASSERT_EQ(kRef.quant(xin.data(), dt, K, K, as.data(), gs, 0, M, qa.data(), K,
                                         sa.data(), 1),
                              LV_OK);
                    ASSERT_EQ(v_.quant(gxin.p, dt, K, K, pas, gs, 0, M, gq.p, K, (float *)gsc.p, 1),
                              LV_OK);
                    EXPECT_EQ(std::memcmp(qa.data(), gq.p, M * K), 0) << "quant K " << K;
                    EXPECT_EQ(std::memcmp(sa.data(), gsc.p, 4 * M * G), 0) << "quant K " << K;

                    std::memcpy(ggy.p, gyin.data(), M * N * esz);
                    FBuf ga(dt, M, K);
                    ASSERT_EQ(kRef.grad(gyin.data(), dt, N, w.data(), K, ws.data(), gs, as.data(),
                                        N, K, 0, M, 0, K, ga.data(), dt, K),
                              LV_OK);
                    ASSERT_EQ(v_.grad(ggy.p, dt, N, pw, K, pws, gs, pas, N, K, 0, M, 0, K, ggx.p,
                                      dt, K),
                              LV_OK);
                    EXPECT_EQ(std::memcmp(ga.data(), ggx.p, M * K * esz), 0)
                        << "grad M " << M << " N " << N << " K " << K << " " << DtName(dt);
                }
}

// Oracle: the sentinel. A tile of the gradient writes its [m0, m1) x [k0, k1)
// only, also when k0 and k1 cut vectors in the middle.
TEST_P(Simd, GradWritesItsTileOnly) {
    Rng rng(31);
    GradCase c(9, 21, 200, 0, LV_F32, rng);
    for (lv_dtype xdt : {LV_F32, LV_BF16, LV_F16})
        for (int64_t k0 : {0, 5, 16, 63, 70})
            for (int64_t k1 : {k0 + 1, k0 + 9, k0 + 58, (int64_t)200}) {
                FBuf gx(xdt, c.M, c.ldgx), blank(xdt, 1, 1);
                ASSERT_EQ(c.Run(v_.grad, gx, true, 2, 5, k0, k1), LV_OK);
                for (int64_t i = 0; i < c.M * c.ldgx; i++) {
                    const int64_t m = i / c.ldgx, k = i % c.ldgx;
                    if (m >= 2 && m < 5 && k >= k0 && k < k1) continue;
                    ASSERT_EQ(gx.Bits(i), blank.Bits(0)) << "m " << m << " k " << k << " tile ["
                                                         << k0 << ", " << k1 << ")";
                }
            }
}

// Oracle: qgemm_ref.c's checks (lv_check_*): every variant refuses what the
// reference refuses, with the same status, and writes nothing.
TEST_P(Simd, InvalidArguments) {
    for (const Variant *v : {&kRef, (const Variant *)&v_}) {
        std::vector<uint8_t> xu(256, 128);
        std::vector<int8_t> w(256, 1);
        std::vector<float> xs(4, 1.0f), ws(16, 1.0f), y(64, 5.0f);
        auto gemm = [&](int64_t ldx, int64_t ldw, int64_t gs, int64_t K, int64_t m0, int64_t m1,
                        int64_t n0, int64_t n1, int64_t ldy) {
            return v->gemm(xu.data(), ldx, xs.data(), w.data(), ldw, ws.data(), gs, nullptr, K,
                           m0, m1, n0, n1, y.data(), LV_F32, ldy);
        };
        EXPECT_EQ(gemm(64, 64, 0, 0, 0, 1, 0, 1, 4), LV_E_INVALID);    // K < 1
        EXPECT_EQ(gemm(64, 64, 0, 64, 1, 0, 0, 1, 4), LV_E_INVALID);   // m1 < m0
        EXPECT_EQ(gemm(64, 64, 0, 64, -1, 1, 0, 1, 4), LV_E_INVALID);  // m0 < 0
        EXPECT_EQ(gemm(64, 64, 0, 64, 0, 1, 2, 1, 4), LV_E_INVALID);   // n1 < n0
        EXPECT_EQ(gemm(63, 64, 0, 64, 0, 1, 0, 1, 4), LV_E_INVALID);   // ldx < K
        EXPECT_EQ(gemm(64, 63, 0, 64, 0, 1, 0, 1, 4), LV_E_INVALID);   // ldw < K
        EXPECT_EQ(gemm(64, 64, 0, 64, 0, 1, 0, 4, 3), LV_E_INVALID);   // ldy < n1
        EXPECT_EQ(gemm(64, 64, 32, 64, 0, 1, 0, 1, 4), LV_E_INVALID);  // group not x64
        EXPECT_EQ(gemm(192, 192, 128, 192, 0, 1, 0, 1, 4), LV_E_INVALID);  // not dividing K
        EXPECT_EQ(v->gemm(nullptr, 64, xs.data(), w.data(), 64, ws.data(), 0, nullptr, 64, 0, 1, 0,
                          1, y.data(), LV_F32, 4),
                  LV_E_INVALID);
        EXPECT_EQ(v->gemm(xu.data(), 64, nullptr, w.data(), 64, ws.data(), 0, nullptr, 64, 0, 1,
                          0, 1, y.data(), LV_F32, 4),
                  LV_E_INVALID);
        EXPECT_EQ(v->gemm(xu.data(), 64, xs.data(), w.data(), 64, nullptr, 0, nullptr, 64, 0, 1,
                          0, 1, y.data(), LV_F32, 4),
                  LV_E_INVALID);
        EXPECT_EQ(v->gemm(xu.data(), 64, xs.data(), w.data(), 64, ws.data(), 0, nullptr, 64, 0, 1,
                          0, 1, nullptr, LV_F32, 4),
                  LV_E_INVALID);
        // empty ranges are fine, even with NULL buffers, and write nothing
        EXPECT_EQ(v->gemm(nullptr, 0, nullptr, nullptr, 0, nullptr, 0, nullptr, 64, 2, 2, 0, 4,
                          nullptr, LV_F32, 0),
                  LV_OK);
        for (float f : y) ASSERT_EQ(f, 5.0f);
        EXPECT_EQ(gemm(LV_QGEMM_K_MAX + 1, LV_QGEMM_K_MAX + 1, 0, LV_QGEMM_K_MAX + 1, 0, 1, 0, 1,
                       4),
                  LV_E_K_TOO_LARGE);

        std::vector<float> x(64, 1.0f), s(8, 9.0f);
        std::vector<int8_t> q(64, 9);
        EXPECT_EQ(v->quant(x.data(), LV_F32, 16, 0, nullptr, 0, 0, 1, q.data(), 16, s.data(), 0),
                  LV_E_INVALID);  // K < 1
        EXPECT_EQ(v->quant(x.data(), LV_F32, 16, 16, nullptr, 5, 0, 1, q.data(), 16, s.data(), 0),
                  LV_E_INVALID);  // group does not divide K
        EXPECT_EQ(v->quant(x.data(), LV_F32, 16, 16, nullptr, 0, 2, 1, q.data(), 16, s.data(), 0),
                  LV_E_INVALID);  // r1 < r0
        EXPECT_EQ(v->quant(x.data(), LV_F32, 15, 16, nullptr, 0, 0, 1, q.data(), 16, s.data(), 0),
                  LV_E_INVALID);  // ldx < K
        EXPECT_EQ(v->quant(x.data(), LV_F32, 16, 16, nullptr, 0, 0, 1, q.data(), 15, s.data(), 0),
                  LV_E_INVALID);  // ldq < K
        EXPECT_EQ(v->quant(nullptr, LV_F32, 16, 16, nullptr, 0, 0, 1, q.data(), 16, s.data(), 0),
                  LV_E_INVALID);
        EXPECT_EQ(v->quant(x.data(), LV_F32, 16, 16, nullptr, 0, 0, 1, q.data(), 16, nullptr, 0),
                  LV_E_INVALID);
        EXPECT_EQ(v->quant(nullptr, LV_F32, 16, 16, nullptr, 0, 1, 1, nullptr, 16, nullptr, 0),
                  LV_OK);
        for (int8_t c : q) ASSERT_EQ(c, 9);
        for (float f : s) ASSERT_EQ(f, 9.0f);

        std::vector<float> gy(16, 1.0f), gx(64, 3.0f);
        auto grad = [&](int64_t N, int64_t K, int64_t m0, int64_t m1, int64_t k0, int64_t k1,
                        int64_t gs, int64_t ldgx) {
            return v->grad(gy.data(), LV_F32, N, w.data(), K, ws.data(), gs, nullptr, N, K, m0,
                           m1, k0, k1, gx.data(), LV_F32, ldgx);
        };
        EXPECT_EQ(grad(0, 64, 0, 1, 0, 64, 0, 64), LV_E_INVALID);   // N < 1
        EXPECT_EQ(grad(4, 0, 0, 1, 0, 0, 0, 64), LV_E_INVALID);     // K < 1
        EXPECT_EQ(grad(4, 64, 0, 1, 0, 65, 0, 65), LV_E_INVALID);   // k1 > K
        EXPECT_EQ(grad(4, 64, 0, 1, 5, 4, 0, 64), LV_E_INVALID);    // k1 < k0
        EXPECT_EQ(grad(4, 64, 1, 0, 0, 64, 0, 64), LV_E_INVALID);   // m1 < m0
        EXPECT_EQ(grad(4, 64, 0, 1, 0, 64, 32, 64), LV_E_INVALID);  // group not x64
        EXPECT_EQ(grad(4, 64, 0, 1, 0, 64, 0, 63), LV_E_INVALID);   // ldgx < k1
        for (float f : gx) ASSERT_EQ(f, 3.0f);
    }
}

std::string IsaName(const ::testing::TestParamInfo<lv_isa> &info) {
    return lv_isa_name(info.param);
}

INSTANTIATE_TEST_SUITE_P(Variants, Simd, ::testing::Values(LV_ISA_AVX2, LV_ISA_AVX512), IsaName);

}  // namespace
