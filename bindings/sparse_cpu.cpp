// bindings/sparse_cpu.cpp — the CPU implementations of the sparse family's ops
// (nm_mask, sparse_compress, sparse_decompress, sparse_linear, sparse_qlinear
// and their input gradients). The shim checks and prepares tensors
// (checks.h), allocates outputs and scratch, splits rows or columns across
// threads with at::parallel_for and calls the C kernels
// (ops/include/lowvram/sparse.h). As for qlinear, each output element is
// computed the same way whatever the split: bit-identical for any thread count.
#include <ATen/Parallel.h>

#include "checks.h"

namespace lowvram {
namespace {

constexpr int64_t kPanel = 16;  // output columns per unit of work when splitting N

// Bytes per element of a compressible weight: int8 codes or a float dtype.
int elem_size(const char* op, const at::Tensor& t, const char* arg) {
  if (t.scalar_type() == at::kChar) return 1;
  return lv_dtype_size(float_dtype(t, op, arg));
}

at::Tensor nm_mask_cpu(const at::Tensor& score, int64_t n, int64_t m) {
  const char* op = "nm_mask";
  LV_CHECK_TYPE(at::isFloatingType(score.scalar_type()), op, "score must be a float tensor, got ",
                score.scalar_type());
  LV_CHECK_VALUE(score.dim() == 2, op, "score must be 2-D [N, K], got ", score.dim(), "-D ",
                 score.sizes());
  LV_CHECK_VALUE(m >= 1 && m <= 64, op, "m must be in [1, 64], got ", m);
  LV_CHECK_VALUE(n >= 1 && n <= m, op, "n must be in [1, m] = [1, ", m, "], got ", n);
  const int64_t N = score.size(0), K = score.size(1);
  LV_CHECK_VALUE(N > 0 && K > 0, op, "score must not be empty, got ", score.sizes());
  LV_CHECK_VALUE(K % m == 0, op, "K (score's columns) must be a multiple of m = ", m, ", got ", K);
  at::Tensor s = score.to(at::kFloat).contiguous();
  at::Tensor keep = at::empty({N, K}, score.options().dtype(at::kBool));
  const float* sp = s.data_ptr<float>();
  uint8_t* kp = reinterpret_cast<uint8_t*>(keep.data_ptr<bool>());
  std::atomic<int> bad{0};
  at::parallel_for(0, N, std::max<int64_t>(1, 65536 / K), [&](int64_t r0, int64_t r1) {
    if (lv_nm_mask_rows(sp, K, K, (int)n, (int)m, r0, r1, kp, K) != LV_OK) bad = 1;
  });
  LV_CHECK_VALUE(!bad, op, "score must not contain NaN (a NaN score has no place in the order)");
  return keep;
}

std::tuple<at::Tensor, at::Tensor> sparse_compress_cpu(const at::Tensor& w, const at::Tensor& mask) {
  const char* op = "sparse_compress";
  const int esz = elem_size(op, w, "w");
  LV_CHECK_VALUE(w.dim() == 2, op, "w must be 2-D [N, K], got ", w.dim(), "-D ", w.sizes());
  const int64_t N = w.size(0), K = w.size(1);
  LV_CHECK_VALUE(N > 0 && K > 0, op, "w must not be empty, got ", w.sizes());
  LV_CHECK_TYPE(mask.scalar_type() == at::kBool, op, "mask must be bool, got ", mask.scalar_type());
  LV_CHECK_VALUE(mask.sizes() == w.sizes(), op, "mask must have w's shape ", w.sizes(), ", got ",
                 mask.sizes());
  check_same_device(mask, w, op, "mask", "w");
  at::Tensor w2 = w.contiguous(), m2 = mask.contiguous();
  const int64_t KV = m2[0].sum().item<int64_t>();
  at::Tensor values = at::empty({N, KV}, w.options());
  at::Tensor bits = at::empty({N, lv_mask_row_bytes(K)}, w.options().dtype(at::kByte));
  const uint8_t* kp = reinterpret_cast<const uint8_t*>(m2.data_ptr<bool>());
  std::atomic<int> bad{0};
  at::parallel_for(0, N, std::max<int64_t>(1, 65536 / K), [&](int64_t r0, int64_t r1) {
    if (lv_sparse_compress_rows(w2.data_ptr(), esz, K, kp, K, K, KV, r0, r1, values.data_ptr(),
                                KV, bits.data_ptr<uint8_t>(), bits.size(1)) != LV_OK)
      bad = 1;
  });
  LV_CHECK_VALUE(!bad, op, "every row of mask must keep the same number of weights (row 0 keeps ",
                 KV, ")");
  return {values, bits};
}

at::Tensor sparse_decompress_cpu(const at::Tensor& values, const at::Tensor& mask_bits, int64_t K) {
  const char* op = "sparse_decompress";
  const bool int8 = values.scalar_type() == at::kChar;
  const int esz = elem_size(op, values, "values");
  LV_CHECK_VALUE(values.dim() == 2, op, "values must be 2-D [N, KV], got ", values.dim(), "-D ",
                 values.sizes());
  (void)int8;
  LV_CHECK_VALUE(K >= 1, op, "K (in-features) must be >= 1, got ", K);
  const int64_t N = values.size(0), KV = values.size(1);
  LV_CHECK_VALUE(N > 0, op, "values must have at least one row, got ", values.sizes());
  LV_CHECK_VALUE(KV <= K, op, "values keeps more weights per row (", KV,
                 ") than there are columns (K = ", K, ")");
  LV_CHECK_TYPE(mask_bits.scalar_type() == at::kByte, op, "mask_bits must be uint8, got ",
                mask_bits.scalar_type());
  LV_CHECK_VALUE(mask_bits.dim() == 2 && mask_bits.size(0) == N &&
                     mask_bits.size(1) == lv_mask_row_bytes(K),
                 op, "mask_bits must be [N, ceil(K / 8)] = [", N, ", ", lv_mask_row_bytes(K),
                 "], got ", mask_bits.sizes());
  check_same_device(mask_bits, values, op, "mask_bits", "values");
  at::Tensor v = values.contiguous(), b = mask_bits.contiguous();
  at::Tensor w = at::empty({N, K}, values.options());
  std::atomic<int> bad{0};
  at::parallel_for(0, N, std::max<int64_t>(1, 65536 / K), [&](int64_t r0, int64_t r1) {
    if (lv_sparse_decompress_rows(v.data_ptr(), esz, KV, b.data_ptr<uint8_t>(), b.size(1), K, KV,
                                  r0, r1, w.data_ptr(), K) != LV_OK)
      bad = 1;
  });
  check_sparse_status(bad ? LV_E_INVALID : LV_OK, op, "lv_sparse_decompress_rows", KV);
  return w;
}

// Splits the outputs of a product: few rows -> columns (each thread streams
// its share of the weights once), many rows -> rows. f(m0, m1, n0, n1).
template <typename F>
void split_product(int64_t M, int64_t N, const F& f) {
  const int64_t nthreads = at::get_num_threads();
  if (M < 8 * nthreads) {
    const int64_t panels = (N + kPanel - 1) / kPanel;
    at::parallel_for(0, panels, 1, [&](int64_t p0, int64_t p1) {
      f(0, M, p0 * kPanel, std::min(N, p1 * kPanel));
    });
  } else {
    at::parallel_for(0, M, 8, [&](int64_t m0, int64_t m1) { f(m0, m1, 0, N); });
  }
}

// Splits the outputs of an input gradient [M, K]: rows, or 64-column blocks.
template <typename F>
void split_grad(int64_t M, int64_t K, const F& f) {
  const int64_t nthreads = at::get_num_threads();
  if (M < 4 * nthreads) {
    const int64_t blocks = (K + 63) / 64;
    at::parallel_for(0, blocks, 1, [&](int64_t b0, int64_t b1) {
      f(0, M, b0 * 64, std::min(K, b1 * 64));
    });
  } else {
    at::parallel_for(0, M, 4, [&](int64_t m0, int64_t m1) { f(m0, m1, 0, K); });
  }
}

// Collects the first failing status of parallel calls.
struct StatusBox {
  std::atomic<int> st{LV_OK};
  void put(lv_status s) {
    int ok = LV_OK;
    if (s != LV_OK) st.compare_exchange_strong(ok, (int)s);
  }
  lv_status get() const { return (lv_status)st.load(); }
};

at::Tensor sparse_linear_cpu(const at::Tensor& x, const at::Tensor& values,
                             const at::Tensor& mask_bits, const c10::optional<at::Tensor>& bias) {
  const char* op = "sparse_linear";
  const lv_dtype xdt = float_dtype(x, op, "x");
  LV_CHECK_VALUE(x.dim() >= 1, op, "x must have at least 1 dimension [..., K], got a 0-D tensor");
  const int64_t K = x.size(-1);
  SparseArgs a = prepare_sparse(op, x, "x", K, values, mask_bits, false, nullptr, bias,
                                c10::nullopt);
  at::Tensor x2 = rows_2d(x, K);
  const int64_t M = x2.size(0), N = a.N;
  at::Tensor y = at::empty(out_shape(x, N), x.options());
  if (M == 0) return y;
  const lv_dtype vdt = float_dtype(a.values, op, "values");
  const int64_t ldx = M > 1 ? x2.stride(0) : K;
  const float* bp = a.bias.defined() ? a.bias.data_ptr<float>() : nullptr;
  StatusBox st;
  split_product(M, N, [&](int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
    st.put(lv_sparse_gemm_rows(x2.data_ptr(), xdt, ldx, a.values.data_ptr(), vdt,
                               std::max<int64_t>(a.values.stride(0), a.KV),
                               a.mask_bits.data_ptr<uint8_t>(), a.mask_bits.stride(0), a.KV, bp,
                               K, m0, m1, n0, n1, y.data_ptr(), xdt, N));
  });
  check_sparse_status(st.get(), op, "lv_sparse_gemm_rows", a.KV);
  return y;
}

at::Tensor sparse_qlinear_cpu(const at::Tensor& x, const at::Tensor& qvalues,
                              const at::Tensor& mask_bits, const at::Tensor& wscale,
                              const c10::optional<at::Tensor>& bias,
                              const c10::optional<at::Tensor>& act_scale) {
  const char* op = "sparse_qlinear";
  const lv_dtype xdt = float_dtype(x, op, "x");
  LV_CHECK_VALUE(x.dim() >= 1, op, "x must have at least 1 dimension [..., K], got a 0-D tensor");
  const int64_t K = x.size(-1);
  SparseArgs a = prepare_sparse(op, x, "x", K, qvalues, mask_bits, true, &wscale, bias,
                                act_scale);
  at::Tensor x2 = rows_2d(x, K);
  const int64_t M = x2.size(0), N = a.N;
  at::Tensor y = at::empty(out_shape(x, N), x.options());
  if (M == 0) return y;
  // activation codes + 128 and scales, as qlinear
  at::Tensor xu = at::empty({M, K}, x.options().dtype(at::kByte));
  at::Tensor xs = at::empty({M}, x.options().dtype(at::kFloat));
  const float* as = a.act_scale.defined() ? a.act_scale.data_ptr<float>() : nullptr;
  const int64_t ldx = M > 1 ? x2.stride(0) : K;
  StatusBox qst;
  at::parallel_for(0, M, std::max<int64_t>(1, 16384 / K), [&](int64_t r0, int64_t r1) {
    qst.put(lv_quantize_int8_rows(x2.data_ptr(), xdt, ldx, K, as, -1, r0, r1, xu.data_ptr(), K,
                                  xs.data_ptr<float>(), 1));
  });
  check_status(qst.get(), op, "lv_quantize_int8_rows");
  const float* bp = a.bias.defined() ? a.bias.data_ptr<float>() : nullptr;
  StatusBox st;
  split_product(M, N, [&](int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
    st.put(lv_sparse_qgemm_int8_rows(
        xu.data_ptr<uint8_t>(), K, xs.data_ptr<float>(), a.values.data_ptr<int8_t>(),
        std::max<int64_t>(a.values.stride(0), a.KV), a.mask_bits.data_ptr<uint8_t>(),
        a.mask_bits.stride(0), a.KV, a.wscale.data_ptr<float>(), a.group_size, bp, K, m0, m1, n0,
        n1, y.data_ptr(), xdt, N));
  });
  check_sparse_status(st.get(), op, "lv_sparse_qgemm_int8_rows", a.KV);
  return y;
}

// grad_y [..., N] -> [..., K] for both sparse products (qvalues + wscale when int8).
at::Tensor sparse_grad_input(const char* op, const at::Tensor& grad_y, const at::Tensor& values,
                             const at::Tensor& mask_bits, const at::Tensor* wscale, int64_t K,
                             const c10::optional<at::Tensor>& act_scale) {
  const lv_dtype gdt = float_dtype(grad_y, op, "grad_y");
  const bool int8 = wscale != nullptr;
  SparseArgs a = prepare_sparse(op, grad_y, "grad_y", K, values, mask_bits, int8, wscale,
                                c10::nullopt, act_scale);
  LV_CHECK_VALUE(grad_y.dim() >= 1 && grad_y.size(-1) == a.N, op,
                 "grad_y's last dimension must be N = ", a.N, " (the weight's out-features), "
                 "got grad_y of shape ", grad_y.sizes());
  const int64_t N = a.N;
  at::Tensor g2 = rows_2d(grad_y, N);
  const int64_t M = g2.size(0);
  at::Tensor gx = at::empty(out_shape(grad_y, K), grad_y.options());
  if (M == 0) return gx;
  const int64_t ldg = M > 1 ? g2.stride(0) : N;
  const int64_t ldv = std::max<int64_t>(a.values.stride(0), a.KV);
  StatusBox st;
  split_grad(M, K, [&](int64_t m0, int64_t m1, int64_t k0, int64_t k1) {
    if (int8)
      st.put(lv_sparse_qlinear_grad_input_rows(
          g2.data_ptr(), gdt, ldg, a.values.data_ptr<int8_t>(), ldv,
          a.mask_bits.data_ptr<uint8_t>(), a.mask_bits.stride(0), a.KV,
          a.wscale.data_ptr<float>(), a.group_size,
          a.act_scale.defined() ? a.act_scale.data_ptr<float>() : nullptr, N, K, m0, m1, k0, k1,
          gx.data_ptr(), gdt, K));
    else
      st.put(lv_sparse_linear_grad_input_rows(
          g2.data_ptr(), gdt, ldg, a.values.data_ptr(), float_dtype(a.values, op, "values"), ldv,
          a.mask_bits.data_ptr<uint8_t>(), a.mask_bits.stride(0), a.KV, N, K, m0, m1, k0, k1,
          gx.data_ptr(), gdt, K));
  });
  check_sparse_status(st.get(), op, int8 ? "lv_sparse_qlinear_grad_input_rows"
                                         : "lv_sparse_linear_grad_input_rows", a.KV);
  return gx;
}

at::Tensor sparse_linear_grad_input_cpu(const at::Tensor& grad_y, const at::Tensor& values,
                                        const at::Tensor& mask_bits, int64_t K) {
  return sparse_grad_input("sparse_linear_grad_input", grad_y, values, mask_bits, nullptr, K,
                           c10::nullopt);
}

at::Tensor sparse_qlinear_grad_input_cpu(const at::Tensor& grad_y, const at::Tensor& qvalues,
                                         const at::Tensor& mask_bits, const at::Tensor& wscale,
                                         int64_t K, const c10::optional<at::Tensor>& act_scale) {
  return sparse_grad_input("sparse_qlinear_grad_input", grad_y, qvalues, mask_bits, &wscale, K,
                           act_scale);
}

}  // namespace

TORCH_LIBRARY_IMPL(lowvram, CPU, m) {
  m.impl("nm_mask", &nm_mask_cpu);
  m.impl("sparse_compress", &sparse_compress_cpu);
  m.impl("sparse_decompress", &sparse_decompress_cpu);
  m.impl("sparse_linear", &sparse_linear_cpu);
  m.impl("sparse_qlinear", &sparse_qlinear_cpu);
  m.impl("sparse_linear_grad_input", &sparse_linear_grad_input_cpu);
  m.impl("sparse_qlinear_grad_input", &sparse_qlinear_grad_input_cpu);
}

}  // namespace lowvram
