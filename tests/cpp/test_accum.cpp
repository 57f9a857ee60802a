// tests/cpp/test_accum.cpp — GoogleTest suite of the accum family
// (lowvram/accum.h), linked against lowvram_ops only (no torch), so that it
// also runs under ASan + UBSan. It owns:
//
//  * the reference (accum_ref.c) against oracles that do not use it: a
//    hand-computed case where one rounding and two roundings differ, known
//    bf16/f16 patterns, and an independent exact computation of the contract
//    (the product exact in double, the sum by TwoSum, rounded to odd in double
//    and then to float32: correct rounding of scale * g + acc, with no fmaf);
//  * every SIMD variant the CPU supports (AVX2, AVX-512) against the reference
//    (oracle: accum_ref.c), bit for bit (any NaN equals any NaN: see the
//    contract), over every size 0..1000 and large ones, every dtype, scales
//    from tiny to huge, and data full of NaN / ±Inf / subnormals / ±max / ±0;
//    buffers ending at a guard page and padding that must stay untouched;
//  * lv_grad_accum_multi (the multi-tensor walk) against per-tensor reference
//    calls, for lists with empty tensors and every way of cutting the global
//    range, and its bad arguments.
//
// Every test says which oracle it uses. Variants the CPU lacks are skipped.

#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "lowvram/accum.h"
#include "lowvram/convert.h"

#include "test_util.h"

namespace {



using SpanFn = lv_status (*)(float *, const void *, lv_dtype, float, int64_t);

const char *DtName(lv_dtype dt) { return dt == LV_F32 ? "f32" : dt == LV_BF16 ? "bf16" : "f16"; }

SpanFn SpanOf(lv_isa isa) {
    switch (isa) {
    case LV_ISA_AVX512: return lv_grad_accum_span_avx512;
    case LV_ISA_AVX2: return lv_grad_accum_span_avx2;
    default: return lv_grad_accum_span_ref;
    }
}

const lv_dtype kDtypes[] = {LV_F32, LV_BF16, LV_F16};

// Special float32 values the data mixes in.
const float kSpecials[] = {0.0f, -0.0f, INFINITY, -INFINITY, NAN, -NAN, FLT_MAX, -FLT_MAX,
                           FLT_MIN, -FLT_MIN, 0x1p-149f, -0x1p-149f, 0x1.8p-140f, 1.0f, -1.0f,
                           65504.0f, -65504.0f, 0x1p-24f, 0x1p-14f, 3.0e38f};

// A gradient element's bits in dtype dt: random normals with a chance of a
// special (converted with the contract's rounding), or raw random bits
// (any pattern, NaNs and subnormals included) when `raw`.
uint16_t Half(lv_dtype dt, float f) { return dt == LV_BF16 ? lv_f32_to_bf16(f) : lv_f32_to_f16(f); }

struct Data {
    std::vector<float> acc;
    std::vector<uint8_t> g;  // n elements of dtype dt
    lv_dtype dt;
};

Data MakeData(int64_t n, lv_dtype dt, uint64_t seed, int special_pct = 10) {
    Rng r(seed);
    Data d{std::vector<float>((size_t)n), std::vector<uint8_t>((size_t)(n * lv_dtype_size(dt))), dt};
    for (int64_t i = 0; i < n; i++) {
        float a = r.Uniform(-4, 4), v = r.Uniform(-4, 4);
        if (r.Int(100) < special_pct) a = kSpecials[r.Int(sizeof kSpecials / sizeof *kSpecials)];
        if (r.Int(100) < special_pct) v = kSpecials[r.Int(sizeof kSpecials / sizeof *kSpecials)];
        if (r.Int(100) < special_pct / 2) a = U2F((uint32_t)r.Next());
        d.acc[(size_t)i] = a;
        if (dt == LV_F32) {
            if (r.Int(100) < special_pct / 2) v = U2F((uint32_t)r.Next());
            std::memcpy(&d.g[(size_t)(4 * i)], &v, 4);
        } else {
            uint16_t h = Half(dt, v);
            if (r.Int(100) < special_pct / 2) h = (uint16_t)r.Next();
            std::memcpy(&d.g[(size_t)(2 * i)], &h, 2);
        }
    }
    return d;
}

// Same bits, except that a NaN equals any NaN (the contract leaves which NaN).
::testing::AssertionResult SameFloats(const float *want, const float *got, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        const uint32_t a = F2U(want[i]), b = F2U(got[i]);
        if (a == b || (std::isnan(want[i]) && std::isnan(got[i]))) continue;
        char msg[160];
        std::snprintf(msg, sizeof msg, "element %lld of %lld: want 0x%08x (%g), got 0x%08x (%g)",
                      (long long)i, (long long)n, a, want[i], b, got[i]);
        return ::testing::AssertionFailure() << msg;
    }
    return ::testing::AssertionSuccess();
}

// n bytes that end where an inaccessible page begins (as in test_qgemm.cpp),
// so that a kernel touching anything past the end faults (ASan does not see
// intrinsic loads).

// The independent oracle: correctly rounded s * g + a without fmaf. s * g is
// exact in double (24 + 24 bits); TwoSum gives t + err == p + a exactly; if
// err != 0 and t is even, t moves one ulp toward err (round to odd in 53
// bits), which then rounds to float32 (24 bits) as the exact sum would.
float OracleFma(float s, float g, float a) {
    const double p = (double)s * (double)g, ad = (double)a;
    double t = p + ad;
    if (!std::isfinite(t)) return (float)t;
    const double bp = t - ad, ba = t - bp;
    const double err = (p - bp) + (ad - ba);
    uint64_t u;
    std::memcpy(&u, &t, 8);
    if (err != 0 && !(u & 1)) t = std::nextafter(t, err > 0 ? INFINITY : -INFINITY);
    return (float)t;
}

// ---- the reference against independent oracles ----------------------------

// Oracle: hand computation. (1 + 2^-12)^2 = 1 + 2^-11 + 2^-24 exactly; minus 1
// leaves 2^-11 + 2^-24 with one rounding, but 2^-11 if the product were
// rounded first (its 2^-24 is a tie that rounds to even).
TEST(AccumRef, OneRoundingHandComputed) {
    float acc = -1.0f;
    const float g = 1.0f + 0x1p-12f;
    ASSERT_EQ(lv_grad_accum_span_ref(&acc, &g, LV_F32, 1.0f + 0x1p-12f, 1), LV_OK);
    EXPECT_EQ(F2U(acc), F2U(0x1p-11f + 0x1p-24f));
    EXPECT_NE(F2U(acc), F2U(0x1p-11f));
}

// Oracle: known bf16 / f16 patterns and their float values.
TEST(AccumRef, ConvertsGradientsExactly) {
    const uint16_t bf[] = {0x3f80, 0xc040, 0x0001, 0x7f7f, 0xff80};  // 1, -3, min subnormal, max, -inf
    const float bfv[] = {1.0f, -3.0f, 0x1p-133f, 0x1.fep127f, -INFINITY};
    const uint16_t hf[] = {0x3c00, 0xc200, 0x0001, 0x7bff, 0x03ff};  // 1, -3, 2^-24, 65504, max subnormal
    const float hfv[] = {1.0f, -3.0f, 0x1p-24f, 65504.0f, 0x3ffp-24f};
    for (int i = 0; i < 5; i++) {
        float a = 0.0f;
        ASSERT_EQ(lv_grad_accum_span_ref(&a, &bf[i], LV_BF16, 1.0f, 1), LV_OK);
        EXPECT_EQ(F2U(a), F2U(bfv[i])) << "bf16 " << i;
        a = 0.0f;
        ASSERT_EQ(lv_grad_accum_span_ref(&a, &hf[i], LV_F16, 1.0f, 1), LV_OK);
        EXPECT_EQ(F2U(a), F2U(hfv[i])) << "f16 " << i;
    }
}

// Oracle: OracleFma (no fmaf), over random and special data, every dtype.
TEST(AccumRef, EqualsIndependentCorrectRounding) {
    const float scales[] = {1.0f, -0.5f, 1.0f / 3.0f, 0x1p-130f, 3.0e38f, 0.0f, -0.0f, 1e-8f};
    for (lv_dtype dt : kDtypes) {
        for (float s : scales) {
            Data d = MakeData(4000, dt, 7 + (uint64_t)dt, 15);
            std::vector<float> want(d.acc.size());
            for (size_t i = 0; i < d.acc.size(); i++)
                want[i] = OracleFma(s, lv_load_f32(d.g.data(), dt, (int64_t)i), d.acc[i]);
            ASSERT_EQ(lv_grad_accum_span_ref(d.acc.data(), d.g.data(), dt, s, 4000), LV_OK);
            ASSERT_TRUE(SameFloats(want.data(), d.acc.data(), 4000)) << DtName(dt) << " scale " << s;
        }
    }
}

// Oracle: IEEE rules. NaN and Inf propagate; no special casing.
TEST(AccumRef, NanInfPropagate) {
    float acc[] = {1.0f, INFINITY, INFINITY, 0.0f, NAN, FLT_MAX};
    const float g[] = {NAN, -1.0f, 0.0f, INFINITY, 0.0f, FLT_MAX};
    ASSERT_EQ(lv_grad_accum_span_ref(acc, g, LV_F32, 2.0f, 6), LV_OK);
    EXPECT_TRUE(std::isnan(acc[0]));
    EXPECT_EQ(acc[1], INFINITY);
    EXPECT_EQ(acc[2], INFINITY);
    EXPECT_EQ(acc[3], INFINITY);
    EXPECT_TRUE(std::isnan(acc[4]));
    EXPECT_EQ(acc[5], INFINITY);  // overflow
    float z[] = {-INFINITY};
    const float gi[] = {INFINITY};
    ASSERT_EQ(lv_grad_accum_span_ref(z, gi, LV_F32, 1.0f, 1), LV_OK);
    EXPECT_TRUE(std::isnan(z[0]));  // Inf - Inf
}

// ---- every SIMD variant against the reference --------------------------------

class Simd : public ::testing::TestWithParam<lv_isa> {
  protected:
    void SetUp() override {
        if (!lv_cpu_isa_supported(GetParam())) GTEST_SKIP() << "CPU lacks " << lv_isa_name(GetParam());
    }
    // Oracle: accum_ref.c. Runs both on copies of d with `pad` sentinel
    // floats after n, compares all of it.
    void Compare(const Data &d, float s, int64_t n, const char *what) {
        const int64_t pad = 17;
        std::vector<float> want(d.acc), got(d.acc);
        want.resize((size_t)(n + pad), U2F(0x7fa5a5a5));
        got.resize((size_t)(n + pad), U2F(0x7fa5a5a5));
        ASSERT_EQ(lv_grad_accum_span_ref(want.data(), d.g.data(), d.dt, s, n), LV_OK);
        ASSERT_EQ(SpanOf(GetParam())(got.data(), d.g.data(), d.dt, s, n), LV_OK);
        ASSERT_TRUE(SameFloats(want.data(), got.data(), n))
            << what << " " << DtName(d.dt) << " n=" << n << " scale=" << s;
        for (int64_t i = n; i < n + pad; i++)
            ASSERT_EQ(F2U(got[(size_t)i]), 0x7fa5a5a5u) << "wrote past the end, n=" << n;
    }
};

TEST_P(Simd, EverySizeTo1000) {
    for (lv_dtype dt : kDtypes)
        for (int64_t n = 0; n <= 1000; n++) {
            Data d = MakeData(n, dt, (uint64_t)(n * 3 + dt), 10);
            Compare(d, n % 2 ? 0.37f : -3.0f, n, "sizes");
        }
}

TEST_P(Simd, LargeAndScales) {
    const float scales[] = {1.0f, 1.0f / 3.0f, -1.0f / 256.0f, 0x1p-126f, 0x1p-149f, 1e30f,
                            FLT_MAX, 0.0f, -0.0f};
    for (lv_dtype dt : kDtypes)
        for (float s : scales) {
            const int64_t n = (1 << 20) + 37;
            Data d = MakeData(n, dt, 99 + (uint64_t)dt, 5);
            Compare(d, s, n, "large");
        }
}

TEST_P(Simd, AllSpecialsEveryPair) {
    // every special acc with every special gradient, in every lane position
    const int ns = (int)(sizeof kSpecials / sizeof *kSpecials);
    for (lv_dtype dt : kDtypes) {
        Data d{{}, {}, dt};
        for (int a = 0; a < ns; a++)
            for (int b = 0; b < ns; b++) {
                d.acc.push_back(kSpecials[a]);
                const float v = kSpecials[b];
                if (dt == LV_F32) {
                    uint8_t by[4];
                    std::memcpy(by, &v, 4);
                    d.g.insert(d.g.end(), by, by + 4);
                } else {
                    uint16_t h = Half(dt, v);
                    uint8_t by[2];
                    std::memcpy(by, &h, 2);
                    d.g.insert(d.g.end(), by, by + 2);
                }
            }
        const float scales[] = {1.0f, -2.0f, 0.5f, FLT_MAX, 0x1p-149f};
        for (float s : scales) Compare(d, s, (int64_t)d.acc.size(), "specials");
    }
}

TEST_P(Simd, EveryF16AndBf16Pattern) {
    // all 65536 gradient bit patterns (NaNs, subnormals, infinities)
    for (lv_dtype dt : {LV_BF16, LV_F16}) {
        Data d{std::vector<float>(65536), std::vector<uint8_t>(2 * 65536), dt};
        Rng r(5);
        for (int i = 0; i < 65536; i++) {
            const uint16_t h = (uint16_t)i;
            std::memcpy(&d.g[(size_t)(2 * i)], &h, 2);
            d.acc[(size_t)i] = r.Uniform(-2, 2);
        }
        Compare(d, 0.75f, 65536, "patterns");
    }
}

TEST_P(Simd, BuffersEndAtGuardPage) {
    for (lv_dtype dt : kDtypes)
        for (int64_t n = 1; n <= 130; n++) {
            Data d = MakeData(n, dt, (uint64_t)n, 10);
            Guarded ga((size_t)(4 * n)), gg(d.g.size());
            ASSERT_TRUE(ga.p && gg.p);
            std::memcpy(ga.p, d.acc.data(), (size_t)(4 * n));
            std::memcpy(gg.p, d.g.data(), d.g.size());
            std::vector<float> want(d.acc);
            ASSERT_EQ(lv_grad_accum_span_ref(want.data(), d.g.data(), dt, 1.5f, n), LV_OK);
            ASSERT_EQ(SpanOf(GetParam())((float *)ga.p, gg.p, dt, 1.5f, n), LV_OK);
            ASSERT_TRUE(SameFloats(want.data(), (const float *)ga.p, n)) << DtName(dt) << " n=" << n;
        }
}

TEST_P(Simd, BadArgumentsAsReference) {
    float a = 0;
    const float g = 0;
    SpanFn f = SpanOf(GetParam());
    EXPECT_EQ(f(&a, &g, LV_F32, 1.0f, -1), LV_E_INVALID);
    EXPECT_EQ(f(nullptr, &g, LV_F32, 1.0f, 1), LV_E_INVALID);
    EXPECT_EQ(f(&a, nullptr, LV_F32, 1.0f, 1), LV_E_INVALID);
    EXPECT_EQ(f(&a, &g, (lv_dtype)7, 1.0f, 1), LV_E_INVALID);
    EXPECT_EQ(f(nullptr, nullptr, LV_F32, 1.0f, 0), LV_OK);
}

INSTANTIATE_TEST_SUITE_P(Isa, Simd, ::testing::Values(LV_ISA_REF, LV_ISA_AVX2, LV_ISA_AVX512),
                         [](const ::testing::TestParamInfo<lv_isa> &i) {
                             return std::string(lv_isa_name(i.param));
                         });

// ---- the multi-tensor walk -----------------------------------------------------

struct List {
    std::vector<Data> t;
    std::vector<float *> acc;
    std::vector<const void *> g;
    std::vector<lv_dtype> dt;
    std::vector<int64_t> off{0};
    void Add(Data d) {
        t.push_back(std::move(d));
    }
    void Finish() {
        for (Data &d : t) {
            acc.push_back(d.acc.empty() ? nullptr : d.acc.data());
            g.push_back(d.g.empty() ? nullptr : d.g.data());
            dt.push_back(d.dt);
            off.push_back(off.back() + (int64_t)d.acc.size());
        }
    }
};

List MakeList(uint64_t seed) {
    Rng r(seed);
    List l;
    const int64_t sizes[] = {0, 1, 3, 17, 0, 64, 100, 1025, 0, 0, 5, 4096, 33, 1};
    for (int64_t n : sizes) l.Add(MakeData(n, kDtypes[r.Int(3)], r.Next(), 10));
    l.Finish();
    return l;
}

// Oracle: lv_grad_accum_span_ref per tensor. Every cut of the global range
// into two or three pieces (and per-element pieces) gives the same bits, for
// whatever variant dispatch picks.
TEST(AccumMulti, AnySplitEqualsPerTensorReference) {
    List want = MakeList(1);
    for (size_t t = 0; t < want.t.size(); t++)
        ASSERT_EQ(lv_grad_accum_span_ref(want.acc[t], want.g[t], want.dt[t], 0.3f,
                                         (int64_t)want.t[t].acc.size()),
                  LV_OK);
    const int64_t total = want.off.back(), count = (int64_t)want.t.size();
    Rng r(3);
    for (int trial = 0; trial < 300; trial++) {
        List got = MakeList(1);
        std::vector<int64_t> cuts{0, total};
        if (trial == 0) {
            for (int64_t e = 1; e < total; e++) cuts.push_back(e);
        } else {
            for (int k = 0; k < 1 + trial % 4; k++) cuts.push_back(r.Int((int)total + 1));
        }
        std::sort(cuts.begin(), cuts.end());
        for (size_t k = 0; k + 1 < cuts.size(); k++)
            ASSERT_EQ(lv_grad_accum_multi(got.acc.data(), got.g.data(), got.dt.data(),
                                          got.off.data(), count, 0.3f, cuts[k], cuts[k + 1]),
                      LV_OK);
        for (size_t t = 0; t < want.t.size(); t++)
            ASSERT_TRUE(SameFloats(want.t[t].acc.data(), got.t[t].acc.data(),
                                   (int64_t)want.t[t].acc.size()))
                << "tensor " << t << " trial " << trial;
    }
}

TEST(AccumMulti, Arguments) {
    List l = MakeList(2);
    const int64_t total = l.off.back(), count = (int64_t)l.t.size();
    EXPECT_EQ(lv_grad_accum_multi(nullptr, nullptr, nullptr, nullptr, 0, 1.0f, 0, 0), LV_OK);
    EXPECT_EQ(lv_grad_accum_multi(l.acc.data(), l.g.data(), l.dt.data(), l.off.data(), count,
                                  1.0f, 5, 5),
              LV_OK);
    EXPECT_EQ(lv_grad_accum_multi(l.acc.data(), l.g.data(), l.dt.data(), l.off.data(), count,
                                  1.0f, 0, total + 1),
              LV_E_INVALID);
    EXPECT_EQ(lv_grad_accum_multi(l.acc.data(), l.g.data(), l.dt.data(), l.off.data(), count,
                                  1.0f, 3, 2),
              LV_E_INVALID);
    EXPECT_EQ(lv_grad_accum_multi(l.acc.data(), l.g.data(), l.dt.data(), l.off.data(), -1, 1.0f,
                                  0, 1),
              LV_E_INVALID);
    EXPECT_EQ(lv_grad_accum_multi(nullptr, l.g.data(), l.dt.data(), l.off.data(), count, 1.0f, 0,
                                  1),
              LV_E_INVALID);
    EXPECT_EQ(lv_grad_accum_multi(l.acc.data(), l.g.data(), l.dt.data(), l.off.data(), 0, 1.0f, 0,
                                  1),
              LV_E_INVALID);
}

}  // namespace
