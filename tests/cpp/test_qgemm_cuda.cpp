// tests/cpp/test_qgemm_cuda.cpp — the CUDA launchers of the qgemm family
// (ops/cuda/qgemm.cu) against the scalar reference (ops/cpu/qgemm_ref.c), the
// oracle for every test here: int8 codes, scales and int32-derived outputs
// must be bit-identical (an f32 NaN only has to be a NaN: x86 and the GPU
// produce different NaN payloads from arithmetic, and the contract fixes no
// payload for f32; bf16/f16 stores canonicalize NaN, so those compare exactly).
// Whole buffers are compared, row padding included, so a kernel writing past a
// row's end fails too. Linked against the kernels only (no torch). Every test
// skips when no CUDA device is present.
#include <gtest/gtest.h>

#include <cublasLt.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <sstream>
#include <string>
#include <vector>

extern "C" {
#include "lowvram/qgemm.h"
}
#include "lowvram/convert.h"

namespace {

#define CUDA_OK(expr) ASSERT_EQ(cudaSuccess, (expr)) << #expr

// ---- helpers -----------------------------------------------------------------------

struct Rng {
  uint64_t s;
  explicit Rng(uint64_t seed) : s(seed * 0x9E3779B97F4A7C15ull + 0x2545F4914F6CDD1Dull) {}
  uint64_t next() {
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    return s;
  }
  float uniform() { return (float)(next() >> 40) * 0x1p-24f; }  // [0, 1)
  float symmetric() { return 2.0f * uniform() - 1.0f; }         // [-1, 1)
  int range(int lo, int hi) { return lo + (int)(next() % (uint64_t)(hi - lo + 1)); }
};

// Device memory with room for a byte offset (to test unaligned operands).
class DeviceBuffer {
 public:
  explicit DeviceBuffer(size_t bytes) : bytes_(bytes) {
    if (cudaMalloc(&base_, bytes + 64) != cudaSuccess) base_ = nullptr;
  }
  ~DeviceBuffer() {
    if (base_) cudaFree(base_);
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  bool ok() const { return base_ != nullptr; }
  char* at(size_t offset) const { return static_cast<char*>(base_) + offset; }
  size_t bytes() const { return bytes_; }

 private:
  void* base_ = nullptr;
  size_t bytes_;
};

template <typename T>
void upload(const DeviceBuffer& d, size_t offset, const std::vector<T>& h) {
  ASSERT_TRUE(d.ok());
  CUDA_OK(cudaMemcpy(d.at(offset), h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice));
}

template <typename T>
void download(std::vector<T>& h, const DeviceBuffer& d, size_t offset) {
  CUDA_OK(cudaMemcpy(h.data(), d.at(offset), h.size() * sizeof(T), cudaMemcpyDeviceToHost));
}

// Element i of a float buffer of dtype dt, as its bits.
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

bool is_nan_bits(lv_dtype dt, uint32_t u) {
  if (dt == LV_F32) return (u & 0x7fffffffu) > 0x7f800000u;
  if (dt == LV_BF16) return (u & 0x7fffu) > 0x7f80u;
  return (u & 0x7fffu) > 0x7c00u;
}

// want and got hold rows x ld elements of dtype dt; they must match bit for
// bit (f32 NaNs: any NaN), padding included.
void expect_same_floats(const std::vector<uint8_t>& want, const std::vector<uint8_t>& got,
                        lv_dtype dt, int64_t rows, int64_t ld, const char* what) {
  int64_t bad = 0;
  for (int64_t i = 0; i < rows * ld; i++) {
    const uint32_t a = bits_at(want, dt, (size_t)i), b = bits_at(got, dt, (size_t)i);
    if (a == b || (dt == LV_F32 && is_nan_bits(dt, a) && is_nan_bits(dt, b))) continue;
    if (++bad <= 5)
      ADD_FAILURE() << what << "[" << i / ld << ", " << i % ld << "]: want 0x" << std::hex << a
                    << ", got 0x" << b << std::dec;
  }
  EXPECT_EQ(0, bad) << what << ": mismatching elements of " << rows * ld;
}

void expect_same_bytes(const std::vector<int8_t>& want, const std::vector<int8_t>& got,
                       int64_t ld, const char* what) {
  int64_t bad = 0;
  for (size_t i = 0; i < want.size(); i++) {
    if (want[i] == got[i]) continue;
    if (++bad <= 5)
      ADD_FAILURE() << what << "[" << (int64_t)i / ld << ", " << (int64_t)i % ld << "]: want "
                    << (int)want[i] << ", got " << (int)got[i];
  }
  EXPECT_EQ(0, bad) << what << ": mismatching elements of " << want.size();
}

void put(std::vector<uint8_t>& b, lv_dtype dt, size_t i, float v) { lv_store_f32(b.data(), dt, (int64_t)i, v); }

const char* dtype_name(lv_dtype dt) { return dt == LV_F32 ? "f32" : dt == LV_BF16 ? "bf16" : "f16"; }

const lv_dtype kDtypes[] = {LV_F32, LV_BF16, LV_F16};
const int64_t kAwkward[] = {1, 3, 15, 17, 31, 33, 63, 65, 1025};

class QgemmCuda : public ::testing::Test {
 protected:
  void SetUp() override {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess || n < 1) GTEST_SKIP() << "no CUDA device";
    CUDA_OK(cudaStreamCreate(&stream_));
  }
  void TearDown() override {
    if (stream_) cudaStreamDestroy(stream_);
  }
  // One cuBLASLt handle for the process, created on first use (after the
  // device check).
  static cublasLtHandle_t lt() {
    static cublasLtHandle_t h = [] {
      cublasLtHandle_t x = nullptr;
      return cublasLtCreate(&x) == CUBLAS_STATUS_SUCCESS ? x : nullptr;
    }();
    return h;
  }
  cudaStream_t stream_ = nullptr;
};

// ---- quantization ---------------------------------------------------------------------

enum Fill { kRandom, kZero, kConst, kMax, kNaN, kInf, kTiny, kSmall, kTies, kFillCount };

struct QuantCase {
  int64_t M, K, group_size = -1;
  lv_dtype dt = LV_F32;
  bool act_scale = false;
  int64_t ldx_pad = 0, ldq_pad = 0;
  bool specials = true;
  uint64_t seed = 1;
};

std::string describe(const QuantCase& c) {
  std::ostringstream o;
  o << "quantize M=" << c.M << " K=" << c.K << " group_size=" << c.group_size << " "
    << dtype_name(c.dt) << " act_scale=" << c.act_scale << " ldx=K+" << c.ldx_pad
    << " ldq=K+" << c.ldq_pad;
  return o.str();
}

float largest(lv_dtype dt) {
  return dt == LV_F32 ? 3.40282347e+38f : dt == LV_BF16 ? lv_bf16_to_f32(0x7f7f) : 65504.0f;
}

// Row r of x, following the row's fill kind (edge rows of the contract).
void fill_row(std::vector<uint8_t>& x, lv_dtype dt, int64_t ldx, int64_t r, int64_t K, Fill f,
              Rng& rng) {
  const int emax = dt == LV_F16 ? 10 : 20;
  const float rs = std::ldexp(1.0f, rng.range(-emax, emax));
  for (int64_t k = 0; k < K; k++) {
    float v = rng.symmetric() * rs;
    switch (f) {
      case kZero: v = (k & 1) ? -0.0f : 0.0f; break;
      case kConst: v = 0.7f; break;
      case kMax: v = (k % 3 == 0) ? ((k & 1) ? -largest(dt) : largest(dt)) : rng.symmetric() * 1e3f; break;
      case kNaN: if (k == K / 2) v = NAN; break;
      case kInf: if (k == (K - 1) / 3) v = -INFINITY; break;
      case kTiny: v = rng.symmetric() * 0x1p-101f; break;  // absmax < 2^-100: zero codes
      case kSmall: v = rng.symmetric() * 0x1p-99f; if (k == 0) v = 0x1p-99f; break;
      case kTies: v = (float)((k % 254) - 127) + 0.5f; if (k == 0) v = 127.0f; break;
      default: break;
    }
    put(x, dt, (size_t)(r * ldx + k), v);
  }
}

class QuantizeTest : public QgemmCuda {
 protected:
  void run(const QuantCase& c) {
    SCOPED_TRACE(describe(c));
    const int64_t G = c.group_size > 0 ? c.K / c.group_size : 1;
    const int64_t ldx = c.K + c.ldx_pad, ldq = c.K + c.ldq_pad;
    const size_t esz = (size_t)lv_dtype_size(c.dt);
    Rng rng(c.seed * 1000003u + (uint64_t)c.K);
    std::vector<uint8_t> x((size_t)(c.M * ldx) * esz, 0);
    for (int64_t r = 0; r < c.M; r++)
      fill_row(x, c.dt, ldx, r, c.K, c.specials ? (Fill)(r % kFillCount) : kRandom, rng);
    std::vector<float> as((size_t)c.K);
    for (auto& v : as) v = 0.5f + 1.5f * rng.uniform();

    std::vector<int8_t> q_ref((size_t)(c.M * ldq), 0x55), q_got(q_ref.size());
    std::vector<float> s_ref((size_t)(c.M * G), -1.0f), s_got(s_ref.size());
    ASSERT_EQ(LV_OK, lv_quantize_int8_rows_ref(x.data(), c.dt, ldx, c.K,
                                               c.act_scale ? as.data() : nullptr, c.group_size, 0,
                                               c.M, q_ref.data(), ldq, s_ref.data(), 0));

    DeviceBuffer dx(x.size()), das(as.size() * 4), dq(q_ref.size()), ds(s_ref.size() * 4);
    ASSERT_NO_FATAL_FAILURE(upload(dx, 0, x));
    ASSERT_NO_FATAL_FAILURE(upload(das, 0, as));
    ASSERT_NO_FATAL_FAILURE(upload(dq, 0, std::vector<int8_t>(q_ref.size(), 0x55)));
    ASSERT_NO_FATAL_FAILURE(upload(ds, 0, std::vector<float>(s_ref.size(), -1.0f)));
    const lv_status st = lv_cuda_quantize_int8(
        dx.at(0), c.dt, ldx, c.M, c.K, c.act_scale ? (const float*)das.at(0) : nullptr,
        c.group_size, (int8_t*)dq.at(0), ldq, (float*)ds.at(0), stream_);
    ASSERT_EQ(LV_OK, st) << lv_cuda_last_error();
    CUDA_OK(cudaStreamSynchronize(stream_));
    ASSERT_NO_FATAL_FAILURE(download(q_got, dq, 0));
    ASSERT_NO_FATAL_FAILURE(download(s_got, ds, 0));
    expect_same_bytes(q_ref, q_got, ldq, "q");
    // scales: exact bits, NaN included (both sides write 0x7fc00000)
    std::vector<uint8_t> sr(s_ref.size() * 4), sg(s_got.size() * 4);
    std::memcpy(sr.data(), s_ref.data(), sr.size());
    std::memcpy(sg.data(), s_got.data(), sg.size());
    for (size_t i = 0; i < s_ref.size(); i++)
      EXPECT_EQ(bits_at(sr, LV_F32, i), bits_at(sg, LV_F32, i)) << "scale[" << i << "]";
  }
};

TEST_F(QuantizeTest, AwkwardSizesDtypesEdgeRows) {
  for (lv_dtype dt : kDtypes)
    for (int64_t K : kAwkward)
      for (int as = 0; as < 2; as++) {
        QuantCase c{2 * kFillCount + 1, K};
        c.dt = dt;
        c.act_scale = as;
        run(c);
        if (HasFatalFailure()) return;
      }
}

TEST_F(QuantizeTest, PaddedRowStrides) {
  for (lv_dtype dt : kDtypes)
    for (int64_t K : {17, 64, 1025}) {
      QuantCase c{kFillCount, K};
      c.dt = dt;
      c.ldx_pad = 3;
      c.ldq_pad = 5;
      c.act_scale = K == 64;
      run(c);
      if (HasFatalFailure()) return;
    }
}

TEST_F(QuantizeTest, Groups) {
  struct { int64_t K, gs; } cases[] = {{64, 64}, {128, 64}, {192, 64}, {1024, 256}, {1024, 512},
                                       {4096, 128}, {15, 5}, {33, 11}, {65, 13}};
  for (lv_dtype dt : kDtypes)
    for (auto g : cases) {
      QuantCase c{kFillCount + 2, g.K, g.gs};
      c.dt = dt;
      c.act_scale = g.K % 2 == 0;
      run(c);
      if (HasFatalFailure()) return;
    }
}

TEST_F(QuantizeTest, LongRowsAndManyRows) {
  QuantCase a{3, LV_QGEMM_K_MAX};  // one block per row, long strides
  a.specials = false;
  run(a);
  QuantCase b{(1 << 20) + 3, 2};  // more (row, group) items than blocks: grid-stride loop
  b.specials = false;
  run(b);
}

TEST_F(QuantizeTest, RejectsWhatTheReferenceRejects) {
  int8_t* q = reinterpret_cast<int8_t*>(16);
  float* s = reinterpret_cast<float*>(16);
  const float* x = reinterpret_cast<const float*>(16);
  EXPECT_EQ(LV_E_INVALID, lv_cuda_quantize_int8(x, LV_F32, 8, 1, 0, nullptr, -1, q, 8, s, stream_));
  EXPECT_EQ(LV_E_INVALID, lv_cuda_quantize_int8(x, LV_F32, 8, -1, 8, nullptr, -1, q, 8, s, stream_));
  EXPECT_EQ(LV_E_INVALID, lv_cuda_quantize_int8(x, LV_F32, 8, 1, 8, nullptr, 3, q, 8, s, stream_));
  EXPECT_EQ(LV_E_INVALID, lv_cuda_quantize_int8(x, LV_F32, 7, 1, 8, nullptr, -1, q, 8, s, stream_));
  EXPECT_EQ(LV_E_INVALID, lv_cuda_quantize_int8(x, LV_F32, 8, 1, 8, nullptr, -1, q, 7, s, stream_));
  EXPECT_EQ(LV_E_INVALID, lv_cuda_quantize_int8(nullptr, LV_F32, 8, 1, 8, nullptr, -1, q, 8, s, stream_));
  EXPECT_EQ(LV_E_INVALID, lv_cuda_quantize_int8(x, LV_F32, 8, 1, 8, nullptr, -1, q, 8, nullptr, stream_));
  EXPECT_EQ(LV_OK, lv_cuda_quantize_int8(x, LV_F32, 8, 0, 8, nullptr, -1, q, 8, s, stream_));
}

// ---- product ---------------------------------------------------------------------------

struct GemmCase {
  int64_t M, N, K, group_size = -1;
  lv_dtype ydt = LV_F32;
  bool bias = true;
  bool use_lt = false;  // pass a cuBLASLt handle and the workspace it asks for
  int64_t ldx_pad = 0, ldw_pad = 0, ldy_pad = 0;
  size_t x_off = 0, w_off = 0;        // byte offsets of xq and w (alignment)
  const char* expect_path = nullptr;  // "kernel", "cublaslt", or nullptr for either
  int extreme = 0;                    // 1: x = 127, w = -128; 2: x = +-127, w in {-128, 127}
  size_t ws_short = 0;                // bytes withheld from the workspace asked for
  uint64_t seed = 1;
};

std::string describe(const GemmCase& c) {
  std::ostringstream o;
  o << "qgemm M=" << c.M << " N=" << c.N << " K=" << c.K << " group_size=" << c.group_size << " "
    << dtype_name(c.ydt) << " bias=" << c.bias << " lt=" << c.use_lt << " ldx=K+" << c.ldx_pad
    << " ldw=K+" << c.ldw_pad << " ldy=N+" << c.ldy_pad << " x_off=" << c.x_off
    << " w_off=" << c.w_off << " extreme=" << c.extreme << " ws_short=" << c.ws_short;
  return o.str();
}

class GemmTest : public QgemmCuda {
 protected:
  void run(const GemmCase& c) {
    SCOPED_TRACE(describe(c));
    const int64_t G = c.group_size > 0 ? c.K / c.group_size : 1;
    const int64_t ldx = c.K + c.ldx_pad, ldw = c.K + c.ldw_pad, ldy = c.N + c.ldy_pad;
    const size_t esz = (size_t)lv_dtype_size(c.ydt);
    Rng rng(c.seed * 7919u + (uint64_t)(c.M * 31 + c.N * 17 + c.K));

    std::vector<int8_t> xq((size_t)(c.M * ldx), 0), w((size_t)(c.N * ldw), 0);
    for (int64_t m = 0; m < c.M; m++)
      for (int64_t k = 0; k < c.K; k++)
        xq[(size_t)(m * ldx + k)] = (int8_t)(c.extreme == 1   ? 127
                                             : c.extreme == 2 ? ((rng.next() & 1) ? 127 : -127)
                                                              : rng.range(-127, 127));
    for (int64_t n = 0; n < c.N; n++)
      for (int64_t k = 0; k < c.K; k++)
        w[(size_t)(n * ldw + k)] = (int8_t)(c.extreme == 1   ? -128
                                            : c.extreme == 2 ? ((rng.next() & 1) ? 127 : -128)
                                                             : rng.range(-128, 127));
    std::vector<float> xs((size_t)c.M), ws((size_t)(c.N * G)), bias((size_t)c.N);
    for (int64_t m = 0; m < c.M; m++)
      xs[(size_t)m] = c.extreme ? 1.0f
                      : m % 7 == 5 ? 0.0f
                      : m % 11 == 7 ? NAN
                                    : (1.0f + rng.uniform()) * 0x1p-8f;
    for (auto& v : ws) v = c.extreme ? 1.0f : (1.0f + rng.uniform()) * 0x1p-9f;
    if (!c.extreme && ws.size() > 3) ws[2] = 0.0f;
    for (auto& v : bias) v = rng.symmetric();

    // the reference takes codes + 128 as uint8
    std::vector<uint8_t> xu(xq.size());
    for (size_t i = 0; i < xq.size(); i++) xu[i] = (uint8_t)(xq[i] + 128);
    std::vector<uint8_t> y_ref((size_t)(c.M * ldy) * esz, 0xA5), y_got(y_ref.size());
    ASSERT_EQ(LV_OK, lv_qgemm_int8_rows_ref(xu.data(), ldx, xs.data(), w.data(), ldw, ws.data(),
                                            c.group_size, c.bias ? bias.data() : nullptr, c.K, 0,
                                            c.M, 0, c.N, y_ref.data(), c.ydt, ldy));

    DeviceBuffer dx(xq.size() + c.x_off), dw(w.size() + c.w_off), dxs(xs.size() * 4),
        dws(ws.size() * 4), db(bias.size() * 4), dy(y_ref.size());
    ASSERT_NO_FATAL_FAILURE(upload(dx, c.x_off, xq));
    ASSERT_NO_FATAL_FAILURE(upload(dw, c.w_off, w));
    ASSERT_NO_FATAL_FAILURE(upload(dxs, 0, xs));
    ASSERT_NO_FATAL_FAILURE(upload(dws, 0, ws));
    ASSERT_NO_FATAL_FAILURE(upload(db, 0, bias));
    ASSERT_TRUE(dy.ok());
    CUDA_OK(cudaMemset(dy.at(0), 0xA5, y_ref.size()));

    size_t ws_bytes = c.use_lt ? lv_cuda_qgemm_int8_workspace(c.M, c.N, c.K, c.group_size) : 0;
    ws_bytes = ws_bytes > c.ws_short ? ws_bytes - c.ws_short : 0;
    DeviceBuffer dwork(ws_bytes);
    ASSERT_TRUE(dwork.ok());
    void* handle = nullptr;
    if (c.use_lt) {
      handle = lt();
      ASSERT_NE(nullptr, handle) << "cublasLtCreate failed";
    }
    const lv_status st = lv_cuda_qgemm_int8(
        (const int8_t*)dx.at(c.x_off), ldx, (const float*)dxs.at(0), (const int8_t*)dw.at(c.w_off),
        ldw, (const float*)dws.at(0), c.group_size, c.bias ? (const float*)db.at(0) : nullptr,
        c.M, c.N, c.K, dy.at(0), c.ydt, ldy, ws_bytes ? dwork.at(0) : nullptr, ws_bytes, handle,
        stream_);
    ASSERT_EQ(LV_OK, st) << lv_cuda_last_error();
    CUDA_OK(cudaStreamSynchronize(stream_));
    ASSERT_NO_FATAL_FAILURE(download(y_got, dy, 0));
    expect_same_floats(y_ref, y_got, c.ydt, c.M, ldy, "y");
    if (c.expect_path) {
      EXPECT_STREQ(c.expect_path, lv_cuda_qgemm_int8_last_path());
    }
  }
};

// Decode-sized M: the warp kernel, every row count it specializes for
// (1, 2, 4, 8 rows per warp) and the tails between them.
TEST_F(GemmTest, KernelPathSmallM) {
  for (int64_t M : {1, 2, 3, 5, 8, 16})
    for (int64_t K : kAwkward)
      for (int64_t N : {1, 3, 17, 64}) {
        GemmCase c{M, N, K};
        c.ydt = kDtypes[(M + K + N) % 3];
        c.bias = (M + N) % 2 == 0;
        c.use_lt = (K % 2) == 1;  // with a handle too: M <= 16 stays on the kernel
        c.expect_path = "kernel";
        run(c);
        if (HasFatalFailure()) return;
      }
}

// The three load widths: 16-byte words (aligned, groups >= 512), 4-byte words,
// single bytes (odd offsets), each with a tail of bytes after the last word.
TEST_F(GemmTest, KernelPathLoadWidths) {
  for (lv_dtype dt : kDtypes) {
    GemmCase v16{5, 33, 1025};  // ld 1040: 16-byte words + a 1-byte tail
    v16.ydt = dt;
    v16.ldx_pad = v16.ldw_pad = 15;
    v16.ldy_pad = 3;
    run(v16);
    GemmCase v16b{3, 17, 4096};
    v16b.ydt = dt;
    run(v16b);
    GemmCase v4{4, 31, 65};  // ld 68: 4-byte words + a 1-byte tail
    v4.ydt = dt;
    v4.ldx_pad = v4.ldw_pad = 3;
    run(v4);
    GemmCase v1{7, 15, 1025};  // odd offsets: single bytes
    v1.ydt = dt;
    v1.x_off = 1;
    v1.w_off = 3;
    run(v1);
    if (HasFatalFailure()) return;
  }
}

TEST_F(GemmTest, KernelPathGroups) {
  struct { int64_t K, gs; } cases[] = {{128, 64}, {192, 64}, {1024, 256}, {1024, 512}, {2048, 1024}};
  for (auto g : cases)
    for (int64_t M : {1, 3, 9})
      for (lv_dtype dt : kDtypes) {
        GemmCase c{M, 19, g.K, g.gs};
        c.ydt = dt;
        c.expect_path = "kernel";
        run(c);
        if (HasFatalFailure()) return;
      }
}

// Larger M without a handle (or shapes cuBLASLt cannot take): the kernel path
// tiles rows 8 at a time; and more row tiles than a grid's y dimension holds.
TEST_F(GemmTest, KernelPathLargeM) {
  for (int64_t M : {17, 33, 130}) {
    GemmCase c{M, 65, 63};
    c.expect_path = "kernel";
    run(c);
    GemmCase odd_n{M, 17, 64};  // N % 4 != 0: no cuBLASLt even with a handle
    odd_n.use_lt = true;
    odd_n.ydt = LV_BF16;
    odd_n.expect_path = "kernel";
    run(odd_n);
    GemmCase groups{M, 64, 256, 64};
    groups.ydt = LV_F16;
    run(groups);
    if (HasFatalFailure()) return;
  }
  GemmCase tall{65535 * 8 + 20, 1, 4};
  tall.bias = false;
  tall.expect_path = "kernel";
  run(tall);
}

// Tensor-core path: per-channel scales, every output dtype, with and without
// bias, padded (16-byte multiple) strides.
TEST_F(GemmTest, CublasLtPath) {
  struct { int64_t M, N, K; } shapes[] = {{17, 64, 64}, {64, 256, 1024}, {130, 260, 112},
                                          {300, 4, 16}, {64, 1024, 4096}};
  for (auto s : shapes)
    for (lv_dtype dt : kDtypes) {
      GemmCase c{s.M, s.N, s.K};
      c.ydt = dt;
      c.bias = dt != LV_BF16;
      c.use_lt = true;
      if (s.N >= 64) c.expect_path = "cublaslt";
      run(c);
      if (HasFatalFailure()) return;
    }
  GemmCase padded{96, 128, 256};
  padded.use_lt = true;
  padded.ldx_pad = 16;
  padded.ldw_pad = 48;
  padded.ldy_pad = 5;
  padded.expect_path = "cublaslt";
  run(padded);
}

// Per-group scales on the tensor-core path: one strided batch entry per group,
// the epilogue combining the groups in order.
TEST_F(GemmTest, CublasLtPathGroups) {
  struct { int64_t M, N, K, gs; } shapes[] = {{64, 64, 256, 64}, {130, 128, 1024, 256},
                                              {33, 96, 192, 64}};
  for (auto s : shapes)
    for (lv_dtype dt : kDtypes) {
      GemmCase c{s.M, s.N, s.K, s.gs};
      c.ydt = dt;
      c.use_lt = true;
      c.expect_path = "cublaslt";
      run(c);
      if (HasFatalFailure()) return;
    }
}

// More rows than one chunk of int32 products holds (64 MiB / (G * N * 4) =
// 1024 rows here): two GEMMs and two epilogues sharing the workspace.
TEST_F(GemmTest, CublasLtPathChunks) {
  GemmCase c{1100, 4096, 256, 64};
  c.use_lt = true;
  c.ydt = LV_BF16;
  c.expect_path = "cublaslt";
  run(c);
}

// What rules the tensor-core path out must fall back to the kernel, same bits.
TEST_F(GemmTest, CublasLtFallbacks) {
  GemmCase misaligned{64, 64, 64};
  misaligned.use_lt = true;
  misaligned.x_off = 4;
  misaligned.expect_path = "kernel";
  run(misaligned);
  GemmCase short_ws{64, 64, 64};
  short_ws.use_lt = true;
  short_ws.ws_short = 1;
  short_ws.expect_path = "kernel";
  run(short_ws);
  GemmCase odd_ld{64, 64, 64};
  odd_ld.use_lt = true;
  odd_ld.ldw_pad = 4;  // ldw % 16 != 0
  odd_ld.expect_path = "kernel";
  run(odd_ld);
  GemmCase k_not_16{64, 64, 36};
  k_not_16.use_lt = true;
  k_not_16.expect_path = "kernel";
  run(k_not_16);
}

// K = LV_QGEMM_K_MAX with the largest products: sums reach -127 * 128 * K,
// the edge of int32, on both paths.
TEST_F(GemmTest, KMaxExtremeWeights) {
  for (int extreme : {1, 2})
    for (int64_t M : {1, 20}) {
      GemmCase c{M, 64, LV_QGEMM_K_MAX};
      c.extreme = extreme;
      c.bias = false;
      c.use_lt = true;
      c.expect_path = M > 16 ? "cublaslt" : "kernel";
      run(c);
      GemmCase k{M, 8, LV_QGEMM_K_MAX};  // kernel path at large M too
      k.extreme = extreme;
      k.bias = false;
      k.ydt = LV_F16;
      run(k);
      if (HasFatalFailure()) return;
    }
}

TEST_F(GemmTest, RejectsWhatTheReferenceRejects) {
  const int8_t* p8 = reinterpret_cast<const int8_t*>(16);
  const float* pf = reinterpret_cast<const float*>(16);
  void* y = reinterpret_cast<void*>(16);
  auto call = [&](const int8_t* xq, int64_t ldx, int64_t ldw, int64_t gs, int64_t M, int64_t N,
                  int64_t K, int64_t ldy) {
    return lv_cuda_qgemm_int8(xq, ldx, pf, p8, ldw, pf, gs, nullptr, M, N, K, y, LV_F32, ldy,
                              nullptr, 0, nullptr, stream_);
  };
  EXPECT_EQ(LV_E_K_TOO_LARGE, call(p8, LV_QGEMM_K_MAX + 1, LV_QGEMM_K_MAX + 1, -1, 1, 1,
                                   LV_QGEMM_K_MAX + 1, 1));
  EXPECT_EQ(LV_E_INVALID, call(p8, 8, 8, -1, 1, 1, 0, 1));      // K < 1
  EXPECT_EQ(LV_E_INVALID, call(p8, 128, 128, 32, 1, 1, 128, 1));  // group not a multiple of 64
  EXPECT_EQ(LV_E_INVALID, call(p8, 128, 128, 192, 1, 1, 128, 1)); // group does not divide K
  EXPECT_EQ(LV_E_INVALID, call(p8, 7, 8, -1, 1, 1, 8, 1));      // ldx < K
  EXPECT_EQ(LV_E_INVALID, call(p8, 8, 7, -1, 1, 1, 8, 1));      // ldw < K
  EXPECT_EQ(LV_E_INVALID, call(p8, 8, 8, -1, 1, 4, 8, 3));      // ldy < N
  EXPECT_EQ(LV_E_INVALID, call(nullptr, 8, 8, -1, 1, 1, 8, 1));
  EXPECT_EQ(LV_E_INVALID, call(p8, 8, 8, -1, -1, 1, 8, 1));     // M < 0
  EXPECT_EQ(LV_E_INVALID, call(p8, 8, 8, -1, 1, -1, 8, 1));     // N < 0
  EXPECT_EQ(LV_OK, call(p8, 8, 8, -1, 0, 4, 8, 4));             // nothing to do
}

TEST_F(GemmTest, WorkspaceSizes) {
  EXPECT_EQ(0u, lv_cuda_qgemm_int8_workspace(16, 64, 64, -1));  // decode: kernel path
  EXPECT_EQ(0u, lv_cuda_qgemm_int8_workspace(64, 63, 64, -1));  // N % 4
  EXPECT_EQ(0u, lv_cuda_qgemm_int8_workspace(64, 64, 72, -1));  // K % 16
  EXPECT_EQ(0u, lv_cuda_qgemm_int8_workspace(64, 64, LV_QGEMM_K_MAX + 16, -1));
  const size_t one = lv_cuda_qgemm_int8_workspace(17, 64, 64, -1);
  EXPECT_GE(one, (size_t)(17 * 64 * 4));
  EXPECT_EQ(0u, one % 256);
  // products are chunked: the workspace stays bounded however large M grows
  const size_t big = lv_cuda_qgemm_int8_workspace((int64_t)1 << 24, 4096, 4096, 128);
  EXPECT_GT(big, 0u);
  EXPECT_LE(big, (size_t)(68u << 20) + 256);
}

// ---- gradient to the input ---------------------------------------------------------------

struct GradCase {
  int64_t M, N, K, group_size = -1;
  lv_dtype gdt = LV_F32, xdt = LV_F32;
  bool act_scale = false;
  int64_t ldg_pad = 0, ldw_pad = 0, ldgx_pad = 0;
  bool specials = false;  // NaN/Inf rows, zero rows, subnormal products
  uint64_t seed = 1;
};

std::string describe(const GradCase& c) {
  std::ostringstream o;
  o << "grad_input M=" << c.M << " N=" << c.N << " K=" << c.K << " group_size=" << c.group_size
    << " gy " << dtype_name(c.gdt) << " gx " << dtype_name(c.xdt) << " act_scale="
    << c.act_scale << " ldg=N+" << c.ldg_pad << " ldw=K+" << c.ldw_pad << " ldgx=K+"
    << c.ldgx_pad << " specials=" << c.specials;
  return o.str();
}

class GradTest : public QgemmCuda {
 protected:
  void run(const GradCase& c) {
    SCOPED_TRACE(describe(c));
    const int64_t G = c.group_size > 0 ? c.K / c.group_size : 1;
    const int64_t ldg = c.N + c.ldg_pad, ldw = c.K + c.ldw_pad, ldgx = c.K + c.ldgx_pad;
    Rng rng(c.seed * 104729u + (uint64_t)(c.M * 131 + c.N * 7 + c.K));
    std::vector<uint8_t> gy((size_t)(c.M * ldg) * (size_t)lv_dtype_size(c.gdt), 0);
    for (int64_t m = 0; m < c.M; m++) {
      const int kind = c.specials ? (int)(m % 6) : 0;
      const float rs = std::ldexp(1.0f, rng.range(-6, 6));
      for (int64_t n = 0; n < c.N; n++) {
        float v = rng.symmetric() * rs;
        if (kind == 2) v = (n & 1) ? -0.0f : 0.0f;
        if (kind == 3 && n == c.N / 2) v = NAN;
        if (kind == 4 && n == 0) v = INFINITY;
        if (kind == 5) v = rng.symmetric() * 0x1p-60f;  // with tiny wscale: subnormal s
        put(gy, c.gdt, (size_t)(m * ldg + n), v);
      }
    }
    std::vector<int8_t> w((size_t)(c.N * ldw), 0);
    for (int64_t n = 0; n < c.N; n++)
      for (int64_t k = 0; k < c.K; k++) w[(size_t)(n * ldw + k)] = (int8_t)rng.range(-128, 127);
    std::vector<float> ws((size_t)(c.N * G)), as((size_t)c.K);
    for (size_t i = 0; i < ws.size(); i++)
      ws[i] = (c.specials && i % 13 == 5) ? 0x1p-70f : (1.0f + rng.uniform()) * 0x1p-7f;
    for (auto& v : as) v = 0.5f + 1.5f * rng.uniform();

    const size_t xsz = (size_t)lv_dtype_size(c.xdt);
    std::vector<uint8_t> gx_ref((size_t)(c.M * ldgx) * xsz, 0x5A), gx_got(gx_ref.size());
    ASSERT_EQ(LV_OK, lv_qlinear_grad_input_rows_ref(gy.data(), c.gdt, ldg, w.data(), ldw,
                                                    ws.data(), c.group_size,
                                                    c.act_scale ? as.data() : nullptr, c.N, c.K,
                                                    0, c.M, 0, c.K, gx_ref.data(), c.xdt, ldgx));

    DeviceBuffer dg(gy.size()), dw(w.size()), dws(ws.size() * 4), das(as.size() * 4),
        dgx(gx_ref.size());
    ASSERT_NO_FATAL_FAILURE(upload(dg, 0, gy));
    ASSERT_NO_FATAL_FAILURE(upload(dw, 0, w));
    ASSERT_NO_FATAL_FAILURE(upload(dws, 0, ws));
    ASSERT_NO_FATAL_FAILURE(upload(das, 0, as));
    ASSERT_TRUE(dgx.ok());
    CUDA_OK(cudaMemset(dgx.at(0), 0x5A, gx_ref.size()));
    const lv_status st = lv_cuda_qlinear_grad_input(
        dg.at(0), c.gdt, ldg, (const int8_t*)dw.at(0), ldw, (const float*)dws.at(0),
        c.group_size, c.act_scale ? (const float*)das.at(0) : nullptr, c.M, c.N, c.K, dgx.at(0),
        c.xdt, ldgx, stream_);
    ASSERT_EQ(LV_OK, st) << lv_cuda_last_error();
    CUDA_OK(cudaStreamSynchronize(stream_));
    ASSERT_NO_FATAL_FAILURE(download(gx_got, dgx, 0));
    expect_same_floats(gx_ref, gx_got, c.xdt, c.M, ldgx, "gx");
  }
};

// Every output is a sequential fmaf chain over n: the n tiles (32) and their
// tail, the k blocks (64) and theirs, the row tiles (32) and theirs.
TEST_F(GradTest, AwkwardSizes) {
  for (int64_t M : {1, 3, 33, 65})
    for (int64_t N : {1, 3, 17, 33, 65, 1025})
      for (int64_t K : {1, 3, 63, 65, 130, 1025}) {
        GradCase c{M, N, K};
        c.gdt = c.xdt = kDtypes[(M + N + K) % 3];
        c.act_scale = (N + K) % 2 == 0;
        c.specials = M >= 33;
        run(c);
        if (HasFatalFailure()) return;
      }
}

TEST_F(GradTest, DtypesStridesActScale) {
  for (lv_dtype gdt : kDtypes)
    for (lv_dtype xdt : kDtypes) {
      GradCase c{7, 45, 200};
      c.gdt = gdt;
      c.xdt = xdt;
      c.act_scale = true;
      c.ldg_pad = 3;
      c.ldw_pad = 5;
      c.ldgx_pad = 7;
      c.specials = true;
      run(c);
      if (HasFatalFailure()) return;
    }
}

TEST_F(GradTest, Groups) {
  struct { int64_t K, gs; } cases[] = {{128, 64}, {192, 64}, {1024, 256}, {4096, 1024}};
  for (auto g : cases)
    for (int64_t M : {1, 40}) {
      GradCase c{M, 70, g.K, g.gs};
      c.gdt = c.xdt = M == 1 ? LV_BF16 : LV_F32;
      c.act_scale = true;
      c.specials = M > 1;
      run(c);
      if (HasFatalFailure()) return;
    }
}

// More row tiles than a grid's y dimension holds: the grid-stride loop.
TEST_F(GradTest, ManyRows) {
  GradCase c{65535 * 32 + 5, 1, 1};
  run(c);
}

TEST_F(GradTest, RejectsWhatTheReferenceRejects) {
  const int8_t* w = reinterpret_cast<const int8_t*>(16);
  const float* f = reinterpret_cast<const float*>(16);
  void* gx = reinterpret_cast<void*>(16);
  auto call = [&](const void* gy, int64_t ldg, int64_t ldw, int64_t gs, int64_t M, int64_t N,
                  int64_t K, int64_t ldgx) {
    return lv_cuda_qlinear_grad_input(gy, LV_F32, ldg, w, ldw, f, gs, nullptr, M, N, K, gx,
                                      LV_F32, ldgx, stream_);
  };
  EXPECT_EQ(LV_E_INVALID, call(f, 1, 1, -1, 1, 0, 1, 1));         // N < 1
  EXPECT_EQ(LV_E_INVALID, call(f, 1, 1, -1, 1, 1, 0, 1));         // K < 1
  EXPECT_EQ(LV_E_INVALID, call(f, 1, 128, 32, 1, 1, 128, 128));   // group not a multiple of 64
  EXPECT_EQ(LV_E_INVALID, call(f, 3, 8, -1, 1, 4, 8, 8));         // ldg < N
  EXPECT_EQ(LV_E_INVALID, call(f, 4, 7, -1, 1, 4, 8, 8));         // ldw < K
  EXPECT_EQ(LV_E_INVALID, call(f, 4, 8, -1, 1, 4, 8, 7));         // ldgx < K
  EXPECT_EQ(LV_E_INVALID, call(nullptr, 4, 8, -1, 1, 4, 8, 8));
  EXPECT_EQ(LV_E_INVALID, call(f, 4, 8, -1, -1, 4, 8, 8));        // M < 0
  EXPECT_EQ(LV_OK, call(f, 4, 8, -1, 0, 4, 8, 8));                // nothing to do
}

}  // namespace
