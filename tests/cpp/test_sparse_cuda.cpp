// tests/cpp/test_sparse_cuda.cpp — the CUDA launchers of the sparse family
// (ops/cuda/sparse.cu, lowvram/sparse_cuda.h) against the scalar reference
// (ops/cpu/sparse_ref.c, lv_*_ref), the oracle of every test here: masks,
// compressed bytes, int8-derived outputs and the float products (whose order
// the contract names) must be bit-identical; an f32 NaN only has to be a NaN
// (payloads differ between x86 and the GPU; bf16/f16 stores canonicalize).
// Whole output buffers are compared, row padding included. Linked against the
// kernels only (no torch). Every test skips when no CUDA device is present.
#include <gtest/gtest.h>

#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

extern "C" {
#include "lowvram/qgemm.h"
#include "lowvram/sparse.h"
#include "lowvram/sparse_cuda.h"
}
#include "lowvram/convert.h"

namespace {

#define CUDA_OK(expr) ASSERT_EQ(cudaSuccess, (expr)) << #expr

struct Rng {
  uint64_t s;
  explicit Rng(uint64_t seed) : s(seed * 0x9E3779B97F4A7C15ull + 0x2545F4914F6CDD1Dull) {}
  uint64_t next() {
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    return s;
  }
  float uniform() { return (float)(next() >> 40) * 0x1p-24f; }
  float symmetric() { return 2.0f * uniform() - 1.0f; }
  int range(int lo, int hi) { return lo + (int)(next() % (uint64_t)(hi - lo + 1)); }
};

class DeviceBuffer {
 public:
  explicit DeviceBuffer(size_t bytes) {
    if (cudaMalloc(&p_, bytes + 64) != cudaSuccess) p_ = nullptr;
  }
  ~DeviceBuffer() {
    if (p_) cudaFree(p_);
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  bool ok() const { return p_ != nullptr; }
  template <typename T = void>
  T* get() const { return static_cast<T*>(p_); }

 private:
  void* p_ = nullptr;
};

template <typename T>
void upload(const DeviceBuffer& d, const std::vector<T>& h) {
  ASSERT_TRUE(d.ok());
  if (!h.empty())
    CUDA_OK(cudaMemcpy(d.get(), h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice));
}

template <typename T>
void download(std::vector<T>& h, const DeviceBuffer& d) {
  if (!h.empty())
    CUDA_OK(cudaMemcpy(h.data(), d.get(), h.size() * sizeof(T), cudaMemcpyDeviceToHost));
}

uint32_t bits_at(const std::vector<uint8_t>& b, lv_dtype dt, size_t i) {
  if (dt == LV_F32) {
    uint32_t u;
    std::memcpy(&u, b.data() + 4 * i, 4);
    return u;
  }
  uint16_t h;
  std::memcpy(&h, b.data() + 2 * i, 2);
  return h;
}

bool is_f32_nan(uint32_t u) { return (u & 0x7fffffffu) > 0x7f800000u; }

void expect_same_floats(const std::vector<uint8_t>& want, const std::vector<uint8_t>& got,
                        lv_dtype dt, int64_t rows, int64_t ld, const char* what) {
  int64_t bad = 0;
  for (int64_t i = 0; i < rows * ld; i++) {
    const uint32_t a = bits_at(want, dt, (size_t)i), b = bits_at(got, dt, (size_t)i);
    if (a == b || (dt == LV_F32 && is_f32_nan(a) && is_f32_nan(b))) continue;
    if (++bad <= 5)
      ADD_FAILURE() << what << "[" << i / ld << ", " << i % ld << "]: want 0x" << std::hex << a
                    << ", got 0x" << b << std::dec;
  }
  EXPECT_EQ(0, bad) << what << ": mismatching elements of " << rows * ld;
}

template <typename T>
void expect_same_bytes(const std::vector<T>& want, const std::vector<T>& got, const char* what) {
  ASSERT_EQ(want.size(), got.size());
  int64_t bad = 0;
  for (size_t i = 0; i < want.size(); i++) {
    if (std::memcmp(&want[i], &got[i], sizeof(T)) == 0) continue;
    if (++bad <= 5) ADD_FAILURE() << what << "[" << i << "] differs";
  }
  EXPECT_EQ(0, bad) << what << ": mismatching elements of " << want.size();
}

const lv_dtype kDtypes[] = {LV_F32, LV_BF16, LV_F16};
int dsize(lv_dtype dt) { return lv_dtype_size(dt); }

void fill_floats(std::vector<uint8_t>& b, lv_dtype dt, size_t count, Rng& r, float scale = 1.0f) {
  b.assign(count * dsize(dt), 0);
  for (size_t i = 0; i < count; i++) lv_store_f32(b.data(), dt, (int64_t)i, scale * r.symmetric());
}

// keep [N, K] with exactly KV ones per row: an n:m pattern when m > 0, else KV
// random positions.
std::vector<uint8_t> make_keep(int64_t N, int64_t K, int n, int m, int64_t KV, Rng& r) {
  std::vector<uint8_t> keep((size_t)(N * K), 0);
  for (int64_t row = 0; row < N; row++) {
    uint8_t* kr = keep.data() + row * K;
    if (m > 0) {
      for (int64_t g = 0; g < K; g += m) {
        int kept = 0;
        while (kept < n) {
          const int i = r.range(0, m - 1);
          if (!kr[g + i]) kr[g + i] = 1, kept++;
        }
      }
    } else {
      int64_t kept = 0;
      while (kept < KV) {
        const int64_t k = (int64_t)(r.next() % (uint64_t)K);
        if (!kr[k]) kr[k] = 1, kept++;
      }
    }
  }
  return keep;
}

// A compressed weight: values [N, ldv] (esz bytes) + mask [N, ldb].
struct Compressed {
  int64_t N = 0, K = 0, KV = 0, ldv = 0, ldb = 0;
  int esz = 1;
  std::vector<uint8_t> values, bits, dense;
};

Compressed make_weight(int64_t N, int64_t K, int n, int m, int64_t KV, int esz, lv_dtype vdt,
                       Rng& r, int64_t ldv_pad = 0, int64_t ldb_pad = 0) {
  Compressed c;
  c.N = N, c.K = K, c.esz = esz;
  c.KV = m > 0 ? K / m * n : KV;
  c.ldv = c.KV + ldv_pad;
  c.ldb = lv_mask_row_bytes(K) + ldb_pad;
  std::vector<uint8_t> keep = make_keep(N, K, n, m, c.KV, r);
  c.dense.assign((size_t)(N * K * esz), 0);
  for (int64_t i = 0; i < N * K; i++) {
    if (esz == 1)
      c.dense[(size_t)i] = (uint8_t)(int8_t)r.range(-128, 127);
    else
      lv_store_f32(c.dense.data(), vdt, i, r.symmetric());
  }
  c.values.assign((size_t)(N * c.ldv * esz), 0xEE);
  c.bits.assign((size_t)(N * c.ldb), 0);
  EXPECT_EQ(LV_OK, lv_sparse_compress_rows_ref(c.dense.data(), esz, K, keep.data(), K, K, c.KV,
                                               0, N, c.values.data(), c.ldv, c.bits.data(),
                                               c.ldb));
  return c;
}

class SparseCuda : public ::testing::Test {
 protected:
  void SetUp() override {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess || n < 1) GTEST_SKIP() << "no CUDA device";
    CUDA_OK(cudaStreamCreate(&stream_));
  }
  void TearDown() override {
    if (stream_) cudaStreamDestroy(stream_);
  }
  int read_flags(const DeviceBuffer& d) {
    int f = -1;
    EXPECT_EQ(cudaSuccess, cudaStreamSynchronize(stream_));
    EXPECT_EQ(cudaSuccess, cudaMemcpy(&f, d.get(), 4, cudaMemcpyDeviceToHost));
    return f;
  }
  cudaStream_t stream_ = nullptr;
};

// ---- masks -----------------------------------------------------------------------------

TEST_F(SparseCuda, NmMaskMatchesReference) {
  Rng r(1);
  struct { int n, m; } pats[] = {{2, 4}, {1, 4}, {4, 8}, {1, 1}, {3, 7}, {16, 64}, {64, 64}};
  for (auto p : pats)
    for (int64_t N : {1, 3, 33}) {
      const int64_t K = p.m * (int64_t)r.range(1, 9);
      std::vector<float> s((size_t)(N * K));
      // coarse values: many ties (lower index wins), and -0 == +0
      for (auto& v : s) v = (float)r.range(-3, 3) * 0.5f;
      if (s.size() > 2) s[1] = -0.0f, s[2] = 0.0f;
      std::vector<uint8_t> want((size_t)(N * K)), got(want.size());
      ASSERT_EQ(LV_OK, lv_nm_mask_rows_ref(s.data(), K, K, p.n, p.m, 0, N, want.data(), K));
      DeviceBuffer ds(s.size() * 4), dk(got.size()), df(4);
      ASSERT_NO_FATAL_FAILURE(upload(ds, s));
      CUDA_OK(cudaMemset(df.get(), 0, 4));
      ASSERT_EQ(LV_OK, lv_cuda_nm_mask(ds.get<float>(), K, N, K, p.n, p.m, dk.get<uint8_t>(), K,
                                       df.get<int>(), stream_))
          << lv_cuda_sparse_last_error();
      EXPECT_EQ(0, read_flags(df));
      ASSERT_NO_FATAL_FAILURE(download(got, dk));
      expect_same_bytes(want, got, "keep");
      if (HasFailure()) return;
    }
}

TEST_F(SparseCuda, NmMaskFlagsNaN) {
  std::vector<float> s(8, 1.0f);
  s[5] = NAN;
  DeviceBuffer ds(32), dk(8), df(4);
  ASSERT_NO_FATAL_FAILURE(upload(ds, s));
  CUDA_OK(cudaMemset(df.get(), 0, 4));
  ASSERT_EQ(LV_OK, lv_cuda_nm_mask(ds.get<float>(), 8, 1, 8, 2, 4, dk.get<uint8_t>(), 8,
                                   df.get<int>(), stream_));
  EXPECT_EQ(LV_SPARSE_FLAG_NAN, read_flags(df));
  EXPECT_EQ(LV_E_INVALID, lv_cuda_nm_mask(ds.get<float>(), 8, 1, 8, 2, 3, dk.get<uint8_t>(), 8,
                                          df.get<int>(), stream_));  // K % m
}

// ---- compression ---------------------------------------------------------------------

TEST_F(SparseCuda, CompressDecompressRoundTrip) {
  Rng r(2);
  for (int esz : {1, 2, 4})
    for (int64_t N : {1, 5, 33})
      for (int64_t K : {1, 3, 8, 17, 31, 32, 33, 63, 65, 1025}) {
        const int64_t KV = K == 1 ? 1 : (int64_t)r.range(0, (int)K);
        const lv_dtype vdt = esz == 2 ? LV_BF16 : LV_F32;
        Compressed c = make_weight(N, K, 0, 0, KV, esz, vdt, r);
        std::vector<uint8_t> keep((size_t)(N * K));
        for (int64_t i = 0; i < N * K; i++) {
          const int64_t row = i / K, k = i % K;
          keep[(size_t)i] = (uint8_t)(c.bits[(size_t)(row * c.ldb + k / 8)] >> (k % 8) & 1);
        }
        // compress on the device: same values and mask bytes
        DeviceBuffer dw(c.dense.size()), dkp(keep.size()), dv(c.values.size() + 1),
            db(c.bits.size()), df(4), dd(c.dense.size());
        ASSERT_NO_FATAL_FAILURE(upload(dw, c.dense));
        ASSERT_NO_FATAL_FAILURE(upload(dkp, keep));
        CUDA_OK(cudaMemset(dv.get(), 0xEE, c.values.size()));
        CUDA_OK(cudaMemset(db.get(), 0x77, c.bits.size()));
        CUDA_OK(cudaMemset(df.get(), 0, 4));
        ASSERT_EQ(LV_OK, lv_cuda_sparse_compress(dw.get(), esz, K, dkp.get<uint8_t>(), K, N, K,
                                                 c.KV, dv.get(), c.ldv, db.get<uint8_t>(), c.ldb,
                                                 df.get<int>(), stream_));
        EXPECT_EQ(0, read_flags(df));
        std::vector<uint8_t> v(c.values.size()), b(c.bits.size());
        ASSERT_NO_FATAL_FAILURE(download(v, dv));
        ASSERT_NO_FATAL_FAILURE(download(b, db));
        expect_same_bytes(c.values, v, "values");
        expect_same_bytes(c.bits, b, "mask_bits");
        // decompress: the reference's dense weight
        std::vector<uint8_t> want(c.dense.size()), got(c.dense.size());
        ASSERT_EQ(LV_OK, lv_sparse_decompress_rows_ref(c.values.data(), esz, c.ldv,
                                                       c.bits.data(), c.ldb, K, c.KV, 0, N,
                                                       want.data(), K));
        CUDA_OK(cudaMemset(df.get(), 0, 4));
        ASSERT_EQ(LV_OK, lv_cuda_sparse_decompress(dv.get(), esz, c.ldv, db.get<uint8_t>(), c.ldb,
                                                   N, K, c.KV, dd.get(), K, df.get<int>(),
                                                   stream_));
        EXPECT_EQ(0, read_flags(df));
        ASSERT_NO_FATAL_FAILURE(download(got, dd));
        expect_same_bytes(want, got, "dense");
        if (HasFailure()) return;
      }
}

TEST_F(SparseCuda, BadMasksAreFlagged) {
  Rng r(3);
  Compressed c = make_weight(4, 20, 0, 0, 10, 1, LV_F32, r);
  std::vector<uint8_t> bits = c.bits;
  bits[1 * c.ldb] ^= 1;  // row 1 keeps 9 or 11
  DeviceBuffer dv(c.values.size()), db(bits.size()), dd(c.dense.size()), df(4);
  ASSERT_NO_FATAL_FAILURE(upload(dv, c.values));
  ASSERT_NO_FATAL_FAILURE(upload(db, bits));
  CUDA_OK(cudaMemset(df.get(), 0, 4));
  ASSERT_EQ(LV_OK, lv_cuda_sparse_decompress(dv.get(), 1, c.ldv, db.get<uint8_t>(), c.ldb, 4, 20,
                                             10, dd.get(), 20, df.get<int>(), stream_));
  EXPECT_EQ(LV_SPARSE_FLAG_COUNT, read_flags(df) & LV_SPARSE_FLAG_COUNT);
  bits = c.bits;
  bits[2 * c.ldb + 2] |= 0x80;  // bit 23 >= K = 20
  ASSERT_NO_FATAL_FAILURE(upload(db, bits));
  CUDA_OK(cudaMemset(df.get(), 0, 4));
  ASSERT_EQ(LV_OK, lv_cuda_sparse_check_masks(db.get<uint8_t>(), c.ldb, 4, 20, 10, df.get<int>(),
                                              stream_));
  EXPECT_EQ(LV_SPARSE_FLAG_COUNT, read_flags(df) & LV_SPARSE_FLAG_COUNT);
  // 2:4 detection
  Compressed t = make_weight(8, 64, 2, 4, 0, 1, LV_F32, r);
  ASSERT_NO_FATAL_FAILURE(upload(db, t.bits));
  CUDA_OK(cudaMemset(df.get(), 0, 4));
  ASSERT_EQ(LV_OK, lv_cuda_sparse_check_masks(db.get<uint8_t>(), t.ldb, 8, 64, 32, df.get<int>(),
                                              stream_));
  EXPECT_EQ(0, read_flags(df));
  Compressed u = make_weight(8, 64, 4, 8, 0, 1, LV_F32, r);  // 4:8 is not 2:4 (almost surely)
  ASSERT_NO_FATAL_FAILURE(upload(db, u.bits));
  CUDA_OK(cudaMemset(df.get(), 0, 4));
  ASSERT_EQ(LV_OK, lv_cuda_sparse_check_masks(db.get<uint8_t>(), u.ldb, 8, 64, 32, df.get<int>(),
                                              stream_));
  EXPECT_EQ(LV_SPARSE_FLAG_NOT_2_4, read_flags(df));
}

// ---- sparse_linear ---------------------------------------------------------------------

struct GemmCase {
  int64_t M, N, K;
  int n = 2, m = 4;  // m == 0: unstructured with KV = K / 3
  lv_dtype xdt = LV_F32, vdt = LV_F32;
  bool bias = true, specials = false;
  int64_t ldx_pad = 0, ldy_pad = 0, ldv_pad = 0;
};

class SparseGemm : public SparseCuda {
 protected:
  void run(const GemmCase& g) {
    SCOPED_TRACE(::testing::Message() << "M=" << g.M << " N=" << g.N << " K=" << g.K
                                      << " n:m=" << g.n << ":" << g.m << " xdt=" << g.xdt
                                      << " vdt=" << g.vdt);
    Rng r((uint64_t)(g.M * 131 + g.N * 17 + g.K));
    const int m = (g.m > 0 && g.K % g.m == 0) ? g.m : 0;
    Compressed c = make_weight(g.N, g.K, g.n, m, std::max<int64_t>(1, g.K / 3),
                               dsize(g.vdt), g.vdt, r, g.ldv_pad);
    const int64_t ldx = g.K + g.ldx_pad, ldy = g.N + g.ldy_pad;
    std::vector<uint8_t> x;
    fill_floats(x, g.xdt, (size_t)(g.M * ldx), r);
    if (g.specials && g.M > 2) {
      lv_store_f32(x.data(), g.xdt, 1 * ldx + 0, NAN);
      lv_store_f32(x.data(), g.xdt, 2 * ldx + g.K - 1, INFINITY);
    }
    std::vector<float> bias((size_t)g.N);
    for (auto& b : bias) b = r.symmetric();
    std::vector<uint8_t> want((size_t)(g.M * ldy * dsize(g.xdt)), 0x5A), got(want.size());
    ASSERT_EQ(LV_OK, lv_sparse_gemm_rows_ref(x.data(), g.xdt, ldx, c.values.data(), g.vdt, c.ldv,
                                             c.bits.data(), c.ldb, c.KV,
                                             g.bias ? bias.data() : nullptr, g.K, 0, g.M, 0, g.N,
                                             want.data(), g.xdt, ldy));
    DeviceBuffer dx(x.size()), dv(c.values.size()), db(c.bits.size()), dbias(bias.size() * 4),
        dy(want.size());
    ASSERT_NO_FATAL_FAILURE(upload(dx, x));
    ASSERT_NO_FATAL_FAILURE(upload(dv, c.values));
    ASSERT_NO_FATAL_FAILURE(upload(db, c.bits));
    ASSERT_NO_FATAL_FAILURE(upload(dbias, bias));
    CUDA_OK(cudaMemset(dy.get(), 0x5A, want.size()));
    const size_t wsb = lv_cuda_sparse_gemm_workspace(g.M, g.N, g.K);
    DeviceBuffer dws(wsb);
    ASSERT_EQ(LV_OK, lv_cuda_sparse_gemm(dx.get(), g.xdt, ldx, dv.get(), g.vdt, c.ldv,
                                         db.get<uint8_t>(), c.ldb, c.KV,
                                         g.bias ? dbias.get<float>() : nullptr, g.M, g.N, g.K,
                                         dy.get(), g.xdt, ldy, wsb ? dws.get() : nullptr, wsb,
                                         stream_))
        << lv_cuda_sparse_last_error();
    CUDA_OK(cudaStreamSynchronize(stream_));
    ASSERT_NO_FATAL_FAILURE(download(got, dy));
    expect_same_floats(want, got, g.xdt, g.M, ldy, "y");
  }
};

// Both kernels (warp: M <= 16, tile: M > 16), sizes that divide nothing.
TEST_F(SparseGemm, AwkwardSizes) {
  for (int64_t M : {1, 2, 3, 5, 9, 16, 17, 33, 65})
    for (int64_t N : {1, 3, 17, 33, 65})
      for (int64_t K : {4, 12, 16, 20, 64, 68, 132, 1028}) {
        GemmCase g{M, N, K};
        g.xdt = kDtypes[(M + N) % 3];
        g.vdt = kDtypes[(N + K) % 3];
        g.bias = (M + K) % 2 == 0;
        g.specials = M % 2 == 1;
        run(g);
        if (HasFatalFailure() || HasFailure()) return;
      }
}

TEST_F(SparseGemm, PatternsAndStrides) {
  struct { int n, m; } pats[] = {{2, 4}, {1, 4}, {4, 8}, {1, 2}, {0, 0}};
  for (auto p : pats)
    for (int64_t M : {1, 7, 40})
      for (int64_t K : {1, 15, 31, 64, 65, 1025}) {
        GemmCase g{M, 19, K, p.n, p.m};
        g.ldx_pad = 3;
        g.ldy_pad = 5;
        g.ldv_pad = 2;
        run(g);
        if (HasFatalFailure() || HasFailure()) return;
      }
}

// ---- sparse_qlinear ---------------------------------------------------------------------

struct QCase {
  int64_t M, N, K, group_size = -1;
  int n = 2, m = 4;
  lv_dtype ydt = LV_F32;
  bool bias = true, specials = false, odd_ldx = false;
};

class SparseQgemm : public SparseCuda {
 protected:
  // Reference: the CPU quantization (codes + 128) and lv_sparse_qgemm_int8_rows_ref.
  // Device: lv_cuda_quantize_int8 codes and lv_cuda_sparse_qgemm_int8 (or cuSPARSELt).
  void run(const QCase& q, bool cslt = false) {
    SCOPED_TRACE(::testing::Message() << "M=" << q.M << " N=" << q.N << " K=" << q.K
                                      << " gs=" << q.group_size << " n:m=" << q.n << ":" << q.m
                                      << " cslt=" << cslt);
    Rng r((uint64_t)(q.M * 7 + q.N * 1009 + q.K * 3));
    const int m = (q.m > 0 && q.K % q.m == 0) ? q.m : 0;
    Compressed c = make_weight(q.N, q.K, q.n, m, std::max<int64_t>(1, q.K / 2), 1, LV_F32, r);
    const int64_t G = q.group_size > 0 ? q.K / q.group_size : 1;
    std::vector<float> ws((size_t)(q.N * G)), bias((size_t)q.N);
    for (auto& v : ws) v = 0.001f + 0.01f * r.uniform();
    for (auto& v : bias) v = r.symmetric();
    std::vector<uint8_t> x;
    fill_floats(x, LV_F32, (size_t)(q.M * q.K), r, 4.0f);
    if (q.specials && q.M > 3) {
      for (int64_t k = 0; k < q.K; k++) lv_store_f32(x.data(), LV_F32, 1 * q.K + k, 0.0f);
      lv_store_f32(x.data(), LV_F32, 2 * q.K, NAN);
      lv_store_f32(x.data(), LV_F32, 3 * q.K, INFINITY);
    }
    // reference
    std::vector<uint8_t> xu((size_t)(q.M * q.K));
    std::vector<float> xs((size_t)q.M);
    ASSERT_EQ(LV_OK, lv_quantize_int8_rows_ref(x.data(), LV_F32, q.K, q.K, nullptr, -1, 0, q.M,
                                               xu.data(), q.K, xs.data(), 1));
    const int64_t ldy = q.N + 1;
    std::vector<uint8_t> want((size_t)(q.M * ldy * dsize(q.ydt)), 0x5A), got(want.size());
    ASSERT_EQ(LV_OK, lv_sparse_qgemm_int8_rows_ref(
                         xu.data(), q.K, xs.data(), (const int8_t*)c.values.data(), c.ldv,
                         c.bits.data(), c.ldb, c.KV, ws.data(), q.group_size,
                         q.bias ? bias.data() : nullptr, q.K, 0, q.M, 0, q.N, want.data(), q.ydt,
                         ldy));
    // device
    const int64_t Mp = cslt ? lv_cuda_cslt_rows(q.M) : q.M;
    const int64_t ldq = cslt ? q.K : q.K + (q.odd_ldx ? 1 : 0);
    DeviceBuffer dx(x.size()), dq((size_t)(Mp * ldq)), dxs((size_t)q.M * 4), dv(c.values.size()),
        db(c.bits.size()), dws(ws.size() * 4), dbias(bias.size() * 4), dy(want.size());
    ASSERT_NO_FATAL_FAILURE(upload(dx, x));
    ASSERT_NO_FATAL_FAILURE(upload(dv, c.values));
    ASSERT_NO_FATAL_FAILURE(upload(db, c.bits));
    ASSERT_NO_FATAL_FAILURE(upload(dws, ws));
    ASSERT_NO_FATAL_FAILURE(upload(dbias, bias));
    CUDA_OK(cudaMemset(dq.get(), 0, (size_t)(Mp * ldq)));
    CUDA_OK(cudaMemset(dy.get(), 0x5A, want.size()));
    ASSERT_EQ(LV_OK, lv_cuda_quantize_int8(dx.get(), LV_F32, q.K, q.M, q.K, nullptr, -1,
                                           dq.get<int8_t>(), ldq, dxs.get<float>(), stream_))
        << lv_cuda_last_error();
    if (!cslt) {
      ASSERT_EQ(LV_OK, lv_cuda_sparse_qgemm_int8(
                           dq.get<int8_t>(), ldq, dxs.get<float>(), dv.get<int8_t>(), c.ldv,
                           db.get<uint8_t>(), c.ldb, c.KV, dws.get<float>(), q.group_size,
                           q.bias ? dbias.get<float>() : nullptr, q.M, q.N, q.K, dy.get(), q.ydt,
                           ldy, stream_))
          << lv_cuda_sparse_last_error();
    } else {
      size_t cb = 0, bb = 0;
      ASSERT_EQ(LV_OK, lv_cuda_cslt_weight_bytes(q.N, q.K, &cb, &bb));
      DeviceBuffer dd(c.dense.size()), dc(cb), dbuf(bb + 1);
      ASSERT_NO_FATAL_FAILURE(upload(dd, c.dense));
      ASSERT_EQ(LV_OK, lv_cuda_cslt_compress(dd.get<int8_t>(), q.N, q.K, dc.get(), dbuf.get(),
                                             stream_));
      const size_t wsb = lv_cuda_cslt_qgemm_workspace(q.M, q.N, q.K);
      ASSERT_GT(wsb, 0u) << "cuSPARSELt has no plan for this shape";
      DeviceBuffer dwork(wsb);
      ASSERT_EQ(LV_OK, lv_cuda_cslt_qgemm_int8(dc.get(), dq.get<int8_t>(), ldq, dxs.get<float>(),
                                               dws.get<float>(),
                                               q.bias ? dbias.get<float>() : nullptr, q.M, q.N,
                                               q.K, dy.get(), q.ydt, ldy, dwork.get(), wsb,
                                               stream_))
          << lv_cuda_sparse_last_error();
      CUDA_OK(cudaStreamSynchronize(stream_));
    }
    CUDA_OK(cudaStreamSynchronize(stream_));
    ASSERT_NO_FATAL_FAILURE(download(got, dy));
    expect_same_floats(want, got, q.ydt, q.M, ldy, "y");
  }
};

TEST_F(SparseQgemm, AwkwardSizes) {
  for (int64_t M : {1, 2, 3, 5, 8, 16, 17, 40})
    for (int64_t N : {1, 3, 17, 33})
      for (int64_t K : {4, 8, 28, 32, 36, 64, 100, 1024, 1028, 4100}) {
        QCase q{M, N, K};
        q.ydt = kDtypes[(M + N + K) % 3];
        q.bias = (N + K) % 2 == 1;
        q.specials = M >= 5;
        q.odd_ldx = M % 2 == 1;
        run(q);
        if (HasFatalFailure() || HasFailure()) return;
      }
}

TEST_F(SparseQgemm, PatternsAndGroups) {
  struct { int n, m; } pats[] = {{2, 4}, {1, 4}, {4, 8}, {16, 32}, {0, 0}};
  struct { int64_t K, gs; } groups[] = {{128, 64}, {192, 64}, {1024, 256}, {2048, 1024}, {2048, -1}};
  for (auto p : pats)
    for (auto g : groups)
      for (int64_t M : {1, 4, 9}) {
        QCase q{M, 21, g.K, g.gs, p.n, p.m};
        run(q);
        if (HasFatalFailure() || HasFailure()) return;
      }
}

TEST_F(SparseQgemm, CuSparseLtPath) {
  if (!lv_cuda_cslt_supported(64, 128)) GTEST_SKIP() << "built without cuSPARSELt, or it refuses";
  for (int64_t M : {17, 32, 100, 257})
    for (auto nk : {std::pair<int64_t, int64_t>{64, 128}, {96, 1024}, {256, 4096}})
      for (lv_dtype dt : kDtypes) {
        QCase q{M, nk.first, nk.second};
        q.ydt = dt;
        q.specials = true;
        run(q, true);
        if (HasFatalFailure() || HasFailure()) return;
      }
}

// ---- input gradients ----------------------------------------------------------------------

struct GradCase {
  int64_t M, N, K, group_size = -1;
  bool int8 = true, act_scale = false, specials = false;
  lv_dtype gdt = LV_F32, vdt = LV_F32;
  int n = 2, m = 4;
};

class SparseGrad : public SparseCuda {
 protected:
  void run(const GradCase& g) {
    SCOPED_TRACE(::testing::Message() << "M=" << g.M << " N=" << g.N << " K=" << g.K
                                      << " gs=" << g.group_size << " int8=" << g.int8);
    Rng r((uint64_t)(g.M * 3 + g.N * 5 + g.K * 7 + g.int8));
    const int m = (g.m > 0 && g.K % g.m == 0) ? g.m : 0;
    const int esz = g.int8 ? 1 : dsize(g.vdt);
    Compressed c = make_weight(g.N, g.K, g.n, m, std::max<int64_t>(1, g.K / 3), esz, g.vdt, r, 1);
    const int64_t G = g.group_size > 0 ? g.K / g.group_size : 1;
    std::vector<float> ws((size_t)(g.N * G)), as((size_t)g.K);
    for (auto& v : ws) v = 0.001f + 0.01f * r.uniform();
    for (auto& v : as) v = 0.5f + r.uniform();
    std::vector<uint8_t> gy;
    fill_floats(gy, g.gdt, (size_t)(g.M * g.N), r);
    if (g.specials && g.M > 2) {
      lv_store_f32(gy.data(), g.gdt, 1 * g.N, INFINITY);  // Inf * pruned 0 = NaN
      lv_store_f32(gy.data(), g.gdt, 2 * g.N + g.N - 1, -0.0f);
    }
    const int64_t ldgx = g.K + 3;
    std::vector<uint8_t> want((size_t)(g.M * ldgx * dsize(g.gdt)), 0x5A), got(want.size());
    if (g.int8)
      ASSERT_EQ(LV_OK, lv_sparse_qlinear_grad_input_rows_ref(
                           gy.data(), g.gdt, g.N, (const int8_t*)c.values.data(), c.ldv,
                           c.bits.data(), c.ldb, c.KV, ws.data(), g.group_size,
                           g.act_scale ? as.data() : nullptr, g.N, g.K, 0, g.M, 0, g.K,
                           want.data(), g.gdt, ldgx));
    else
      ASSERT_EQ(LV_OK, lv_sparse_linear_grad_input_rows_ref(
                           gy.data(), g.gdt, g.N, c.values.data(), g.vdt, c.ldv, c.bits.data(),
                           c.ldb, c.KV, g.N, g.K, 0, g.M, 0, g.K, want.data(), g.gdt, ldgx));
    DeviceBuffer dg(gy.size()), dv(c.values.size()), db(c.bits.size()), dws(ws.size() * 4),
        das(as.size() * 4), dgx(want.size());
    ASSERT_NO_FATAL_FAILURE(upload(dg, gy));
    ASSERT_NO_FATAL_FAILURE(upload(dv, c.values));
    ASSERT_NO_FATAL_FAILURE(upload(db, c.bits));
    ASSERT_NO_FATAL_FAILURE(upload(dws, ws));
    ASSERT_NO_FATAL_FAILURE(upload(das, as));
    CUDA_OK(cudaMemset(dgx.get(), 0x5A, want.size()));
    const size_t wsb = lv_cuda_sparse_grad_workspace(g.N, g.K);
    DeviceBuffer dwork(wsb);
    lv_status st;
    if (g.int8)
      st = lv_cuda_sparse_qlinear_grad_input(
          dg.get(), g.gdt, g.N, dv.get<int8_t>(), c.ldv, db.get<uint8_t>(), c.ldb, c.KV,
          dws.get<float>(), g.group_size, g.act_scale ? das.get<float>() : nullptr, g.M, g.N,
          g.K, dgx.get(), g.gdt, ldgx, dwork.get(), wsb, stream_);
    else
      st = lv_cuda_sparse_linear_grad_input(dg.get(), g.gdt, g.N, dv.get(), g.vdt, c.ldv,
                                            db.get<uint8_t>(), c.ldb, c.KV, g.M, g.N, g.K,
                                            dgx.get(), g.gdt, ldgx, dwork.get(), wsb, stream_);
    ASSERT_EQ(LV_OK, st) << lv_cuda_sparse_last_error();
    CUDA_OK(cudaStreamSynchronize(stream_));
    ASSERT_NO_FATAL_FAILURE(download(got, dgx));
    expect_same_floats(want, got, g.gdt, g.M, ldgx, "gx");
  }
};

TEST_F(SparseGrad, AwkwardSizes) {
  for (bool int8 : {true, false})
    for (int64_t M : {1, 3, 33, 65})
      for (int64_t N : {1, 3, 17, 33, 65})
        for (int64_t K : {4, 12, 64, 68, 132, 1028}) {
          GradCase g{M, N, K};
          g.int8 = int8;
          g.gdt = kDtypes[(M + N) % 3];
          g.vdt = kDtypes[(N + K) % 3];
          g.act_scale = int8 && (N + K) % 2 == 0;
          g.specials = M >= 33;
          run(g);
          if (HasFatalFailure() || HasFailure()) return;
        }
}

TEST_F(SparseGrad, GroupsAndPatterns) {
  struct { int64_t K, gs; } groups[] = {{128, 64}, {192, 64}, {1024, 256}};
  struct { int n, m; } pats[] = {{2, 4}, {1, 4}, {0, 0}};
  for (auto gr : groups)
    for (auto p : pats)
      for (int64_t M : {1, 40}) {
        GradCase g{M, 70, gr.K, gr.gs};
        g.n = p.n, g.m = p.m;
        g.act_scale = true;
        run(g);
        if (HasFatalFailure() || HasFailure()) return;
      }
}

TEST_F(SparseCuda, RejectsBadArguments) {
  const void* p = reinterpret_cast<const void*>(256);
  void* q = reinterpret_cast<void*>(256);
  const uint8_t* b = reinterpret_cast<const uint8_t*>(256);
  const float* f = reinterpret_cast<const float*>(256);
  const int8_t* c = reinterpret_cast<const int8_t*>(256);
  EXPECT_EQ(LV_E_INVALID, lv_cuda_sparse_gemm(p, LV_F32, 8, p, LV_F32, 4, b, 1, 5, nullptr, 1, 1,
                                              8, q, LV_F32, 1, nullptr, 0, stream_));  // KV > ldv
  EXPECT_EQ(LV_E_INVALID, lv_cuda_sparse_gemm(p, LV_F32, 7, p, LV_F32, 4, b, 1, 4, nullptr, 1, 1,
                                              8, q, LV_F32, 1, nullptr, 0, stream_));  // ldx < K
  EXPECT_EQ(LV_E_INVALID, lv_cuda_sparse_gemm(p, LV_F32, 8, p, LV_F32, 4, b, 0, 4, nullptr, 1, 1,
                                              8, q, LV_F32, 1, nullptr, 0, stream_));  // ldb
  EXPECT_EQ(LV_E_INVALID, lv_cuda_sparse_gemm(p, LV_F32, 8, p, LV_F32, 4, b, 1, 4, nullptr, 17, 1,
                                              8, q, LV_F32, 1, nullptr, 0, stream_));  // no workspace
  EXPECT_EQ(LV_E_K_TOO_LARGE,
            lv_cuda_sparse_qgemm_int8(c, 200000, f, c, 4, b, 25000, 4, f, -1, nullptr, 1, 1,
                                      200000, q, LV_F32, 1, stream_));
  EXPECT_EQ(LV_E_INVALID, lv_cuda_sparse_qgemm_int8(c, 128, f, c, 4, b, 16, 4, f, 32, nullptr, 1,
                                                    1, 128, q, LV_F32, 1, stream_));  // group 32
  EXPECT_EQ(LV_OK, lv_cuda_sparse_qgemm_int8(c, 128, f, c, 4, b, 16, 4, f, -1, nullptr, 0, 1, 128,
                                             q, LV_F32, 1, stream_));  // M = 0: nothing
  EXPECT_EQ(LV_E_INVALID, lv_cuda_sparse_linear_grad_input(p, LV_F32, 1, p, LV_F32, 4, b, 1, 4, 1,
                                                           1, 8, q, LV_F32, 8, nullptr, 0,
                                                           stream_));  // no workspace
}

}  // namespace
