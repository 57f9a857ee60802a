// bindings/qlinear_cpu.cpp — the CPU implementations of the qgemm family's ops
// (quantize_int8, quantize_weight, qlinear, qlinear.out, qlinear_grad_input).
// The shim checks and prepares tensors (checks.h), allocates outputs and
// scratch, splits rows or columns across threads with at::parallel_for, and
// calls the C kernels (ops/include/lowvram/qgemm.h), which pick their SIMD
// variant themselves. Each output element is computed the same way whatever
// the split, so results are bit-identical for any thread count.
#include <ATen/Parallel.h>

#include "checks.h"

namespace lowvram {
namespace {

constexpr int64_t kPanel = 16;  // output columns per unit of work when splitting N

// Splits [0, rows) across threads with at least `grain` rows per task.
template <typename F>
void parallel_rows(int64_t rows, int64_t grain, const F& f) {
  at::parallel_for(0, rows, std::max<int64_t>(grain, 1), f);
}

// Quantizes rows of x2 [M, K] into codes (int8, or + 128 as uint8) and scales.
void quantize_rows(const char* op, const at::Tensor& x2, const at::Tensor& act_scale,
                   int64_t group_size, at::Tensor& q, at::Tensor& scale, int offset128) {
  const int64_t M = x2.size(0), K = x2.size(1);
  const lv_dtype dt = float_dtype(x2, op, "x");
  const float* as = act_scale.defined() ? act_scale.data_ptr<float>() : nullptr;
  const void* xp = x2.data_ptr();
  const int64_t ldx = M > 1 ? x2.stride(0) : K;
  void* qp = q.data_ptr();
  float* sp = scale.data_ptr<float>();
  parallel_rows(M, std::max<int64_t>(1, 16384 / K), [&](int64_t r0, int64_t r1) {
    check_status(lv_quantize_int8_rows(xp, dt, ldx, K, as, group_size, r0, r1, qp, K, sp,
                                       offset128),
                 op, "lv_quantize_int8_rows");
  });
}

std::tuple<at::Tensor, at::Tensor> quantize_int8_cpu(const at::Tensor& x,
                                                     const c10::optional<at::Tensor>& act_scale) {
  const char* op = "quantize_int8";
  const int64_t K = check_quantize_input(op, x);
  at::Tensor as = prepare_act_scale(op, x, "x", K, act_scale);
  at::Tensor x2 = rows_2d(x, K);
  at::Tensor q = at::empty(x.sizes(), x.options().dtype(at::kChar));
  std::vector<int64_t> sshape(x.sizes().begin(), x.sizes().end() - 1);
  at::Tensor scale = at::empty(sshape, x.options().dtype(at::kFloat));
  if (x2.size(0) > 0) quantize_rows(op, x2, as, -1, q, scale, 0);
  return {q, scale};
}

std::tuple<at::Tensor, at::Tensor> quantize_weight_cpu(const at::Tensor& w, int64_t group_size) {
  const char* op = "quantize_weight";
  const int64_t gs = check_quantize_weight(op, w, group_size);
  at::Tensor q = at::empty(w.sizes(), w.options().dtype(at::kChar));
  at::Tensor scale = empty_wscale(w, group_size);
  quantize_rows(op, rows_2d(w, w.size(1)), at::Tensor(), gs, q, scale, 0);
  return {q, scale};
}

// y = qlinear(x, ...) written into y (contiguous [..., N]).
void qlinear_into(const char* op, const at::Tensor& x, const QLinearArgs& a, at::Tensor& y) {
  const int64_t K = a.K, N = a.N;
  at::Tensor x2 = rows_2d(x, K);
  const int64_t M = x2.size(0);
  if (M == 0) return;
  at::Tensor xu = at::empty({M, K}, x.options().dtype(at::kByte));
  at::Tensor xs = at::empty({M}, x.options().dtype(at::kFloat));
  quantize_rows(op, x2, a.act_scale, -1, xu, xs, 1);

  const uint8_t* xup = xu.data_ptr<uint8_t>();
  const float* xsp = xs.data_ptr<float>();
  const int8_t* wp = a.qweight.data_ptr<int8_t>();
  const int64_t ldw = a.qweight.stride(0);
  const float* wsp = a.wscale.data_ptr<float>();
  const float* bp = a.bias.defined() ? a.bias.data_ptr<float>() : nullptr;
  const lv_dtype ydt = float_dtype(y, op, "out");
  void* yp = y.data_ptr();
  const int64_t nthreads = at::get_num_threads();
  if (M < 8 * nthreads) {
    // Few rows: split the output features, so that each thread streams its
    // own share of the weights once for all rows.
    const int64_t panels = (N + kPanel - 1) / kPanel;
    at::parallel_for(0, panels, 1, [&](int64_t p0, int64_t p1) {
      check_status(lv_qgemm_int8_rows(xup, K, xsp, wp, ldw, wsp, a.group_size, bp, K, 0, M,
                                      p0 * kPanel, std::min(N, p1 * kPanel), yp, ydt, N),
                   op, "lv_qgemm_int8_rows");
    });
  } else {
    // Many rows: split the rows; each thread's kernel blocks for its caches.
    at::parallel_for(0, M, 8, [&](int64_t m0, int64_t m1) {
      check_status(lv_qgemm_int8_rows(xup, K, xsp, wp, ldw, wsp, a.group_size, bp, K, m0, m1, 0,
                                      N, yp, ydt, N),
                   op, "lv_qgemm_int8_rows");
    });
  }
}

at::Tensor qlinear_cpu(const at::Tensor& x, const at::Tensor& qweight, const at::Tensor& wscale,
                       const c10::optional<at::Tensor>& bias,
                       const c10::optional<at::Tensor>& act_scale) {
  const char* op = "qlinear";
  QLinearArgs a = prepare_qlinear(op, x, qweight, wscale, bias, act_scale);
  at::Tensor y = at::empty(out_shape(x, a.N), x.options());
  qlinear_into(op, x, a, y);
  return y;
}

void qlinear_out_cpu(const at::Tensor& x, const at::Tensor& qweight, const at::Tensor& wscale,
                     const c10::optional<at::Tensor>& bias,
                     const c10::optional<at::Tensor>& act_scale, at::Tensor& out) {
  const char* op = "qlinear";
  QLinearArgs a = prepare_qlinear(op, x, qweight, wscale, bias, act_scale);
  write_out(op, out, x, out_shape(x, a.N), [&](at::Tensor& y) { qlinear_into(op, x, a, y); });
}

at::Tensor qlinear_grad_input_cpu(const at::Tensor& grad_y, const at::Tensor& qweight,
                                  const at::Tensor& wscale,
                                  const c10::optional<at::Tensor>& act_scale) {
  const char* op = "qlinear_grad_input";
  QLinearArgs a = prepare_grad_input(op, grad_y, qweight, wscale, act_scale);
  const lv_dtype gdt = float_dtype(grad_y, op, "grad_y");
  const int64_t N = a.N, K = a.K;
  at::Tensor g2 = rows_2d(grad_y, N);
  const int64_t M = g2.size(0);
  at::Tensor gx = at::empty(out_shape(grad_y, K), grad_y.options());
  if (M == 0) return gx;
  const void* gp = g2.data_ptr();
  const int64_t ldg = M > 1 ? g2.stride(0) : N;
  const int8_t* wp = a.qweight.data_ptr<int8_t>();
  const int64_t ldw = a.qweight.stride(0);
  const float* wsp = a.wscale.data_ptr<float>();
  const float* asp = a.act_scale.defined() ? a.act_scale.data_ptr<float>() : nullptr;
  void* xp = gx.data_ptr();
  const int64_t nthreads = at::get_num_threads();
  if (M < 4 * nthreads) {
    // Few rows: split the input features in 64-column blocks.
    const int64_t blocks = (K + 63) / 64;
    at::parallel_for(0, blocks, 1, [&](int64_t b0, int64_t b1) {
      check_status(lv_qlinear_grad_input_rows(gp, gdt, ldg, wp, ldw, wsp, a.group_size, asp, N,
                                              K, 0, M, b0 * 64, std::min(K, b1 * 64), xp, gdt,
                                              K),
                   op, "lv_qlinear_grad_input_rows");
    });
  } else {
    at::parallel_for(0, M, 4, [&](int64_t m0, int64_t m1) {
      check_status(lv_qlinear_grad_input_rows(gp, gdt, ldg, wp, ldw, wsp, a.group_size, asp, N,
                                              K, m0, m1, 0, K, xp, gdt, K),
                   op, "lv_qlinear_grad_input_rows");
    });
  }
  return gx;
}

}  // namespace

TORCH_LIBRARY_IMPL(lowvram, CPU, m) {
  m.impl("quantize_int8", &quantize_int8_cpu);
  m.impl("quantize_weight", &quantize_weight_cpu);
  m.impl("qlinear", &qlinear_cpu);
  m.impl("qlinear.out", &qlinear_out_cpu);
  m.impl("qlinear_grad_input", &qlinear_grad_input_cpu);
}

}  // namespace lowvram
