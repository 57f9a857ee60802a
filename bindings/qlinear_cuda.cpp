// bindings/qlinear_cuda.cpp — the CUDA implementations of the qgemm family's ops
// (quantize_int8, quantize_weight, qlinear, qlinear.out, qlinear_grad_input).
// The shim checks and prepares tensors with the CPU shim's checks (checks.h),
// guards x's device, allocates outputs, activation codes and the cuBLASLt
// workspace through the caching allocator, and calls the CUDA launchers
// (ops/include/lowvram/qgemm.h, ops/cuda/qgemm.cu) on the current stream with
// torch's cuBLASLt handle. Nothing here synchronizes. The launchers match the
// CPU reference bit for bit, so a model gives the same outputs on either device.
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include "checks.h"

namespace lowvram {
namespace {

// Raises unless a launcher returned LV_OK; for LV_E_CUDA the message carries
// the CUDA or cuBLASLt error the launcher recorded.
void check_cuda_status(lv_status st, const char* op, const char* what) {
  if (st == LV_E_CUDA) {
    TORCH_CHECK(false, "lowvram.", op, ": ", what, " failed: ", lv_status_str(st), ": ",
                lv_cuda_last_error());
  }
  check_status(st, op, what);
}

void* current_stream() { return static_cast<void*>(at::cuda::getCurrentCUDAStream().stream()); }

// Quantizes rows of x2 [M, K] into int8 codes q (row stride K) and scales.
void quantize_rows(const char* op, const at::Tensor& x2, const at::Tensor& act_scale,
                   int64_t group_size, at::Tensor& q, at::Tensor& scale) {
  const int64_t M = x2.size(0), K = x2.size(1);
  if (M == 0) return;
  const lv_dtype dt = float_dtype(x2, op, "x");
  const float* as = act_scale.defined() ? act_scale.data_ptr<float>() : nullptr;
  const int64_t ldx = M > 1 ? x2.stride(0) : K;
  check_cuda_status(lv_cuda_quantize_int8(x2.data_ptr(), dt, ldx, M, K, as, group_size,
                                          q.data_ptr<int8_t>(), K, scale.data_ptr<float>(),
                                          current_stream()),
                    op, "lv_cuda_quantize_int8");
}

std::tuple<at::Tensor, at::Tensor> quantize_int8_cuda(const at::Tensor& x,
                                                      const c10::optional<at::Tensor>& act_scale) {
  const char* op = "quantize_int8";
  const int64_t K = check_quantize_input(op, x);
  at::Tensor as = prepare_act_scale(op, x, "x", K, act_scale);
  const c10::cuda::CUDAGuard guard(x.device());
  at::Tensor x2 = rows_2d(x, K);
  at::Tensor q = at::empty(x.sizes(), x.options().dtype(at::kChar));
  std::vector<int64_t> sshape(x.sizes().begin(), x.sizes().end() - 1);
  at::Tensor scale = at::empty(sshape, x.options().dtype(at::kFloat));
  quantize_rows(op, x2, as, -1, q, scale);
  return {q, scale};
}

std::tuple<at::Tensor, at::Tensor> quantize_weight_cuda(const at::Tensor& w, int64_t group_size) {
  const char* op = "quantize_weight";
  const int64_t gs = check_quantize_weight(op, w, group_size);
  const c10::cuda::CUDAGuard guard(w.device());
  at::Tensor q = at::empty(w.sizes(), w.options().dtype(at::kChar));
  at::Tensor scale = empty_wscale(w, group_size);
  quantize_rows(op, rows_2d(w, w.size(1)), at::Tensor(), gs, q, scale);
  return {q, scale};
}

// y = qlinear(x, ...) written into y (contiguous [..., N]); x's device is current.
void qlinear_into(const char* op, const at::Tensor& x, const QLinearArgs& a, at::Tensor& y) {
  const int64_t K = a.K, N = a.N;
  at::Tensor x2 = rows_2d(x, K);
  const int64_t M = x2.size(0);
  if (M == 0) return;
  // Activation codes (plain int8 on CUDA) and per-row scales: scratch.
  at::Tensor xq = at::empty({M, K}, x.options().dtype(at::kChar));
  at::Tensor xs = at::empty({M}, x.options().dtype(at::kFloat));
  quantize_rows(op, x2, a.act_scale, -1, xq, xs);

  // int32 products + cuBLASLt's workspace for the tensor-core path; 0 bytes
  // when the launcher will use its own kernel.
  const size_t ws_bytes = lv_cuda_qgemm_int8_workspace(M, N, K, a.group_size);
  at::Tensor ws;
  if (ws_bytes > 0) ws = at::empty({static_cast<int64_t>(ws_bytes)}, x.options().dtype(at::kByte));
  void* handle = ws_bytes > 0 ? static_cast<void*>(at::cuda::getCurrentCUDABlasLtHandle()) : nullptr;

  check_cuda_status(
      lv_cuda_qgemm_int8(xq.data_ptr<int8_t>(), K, xs.data_ptr<float>(),
                         a.qweight.data_ptr<int8_t>(), a.qweight.stride(0),
                         a.wscale.data_ptr<float>(), a.group_size,
                         a.bias.defined() ? a.bias.data_ptr<float>() : nullptr, M, N, K,
                         y.data_ptr(), float_dtype(y, op, "out"), N,
                         ws_bytes > 0 ? ws.data_ptr() : nullptr, ws_bytes, handle,
                         current_stream()),
      op, "lv_cuda_qgemm_int8");
}

at::Tensor qlinear_cuda(const at::Tensor& x, const at::Tensor& qweight, const at::Tensor& wscale,
                        const c10::optional<at::Tensor>& bias,
                        const c10::optional<at::Tensor>& act_scale) {
  const char* op = "qlinear";
  QLinearArgs a = prepare_qlinear(op, x, qweight, wscale, bias, act_scale);
  const c10::cuda::CUDAGuard guard(x.device());
  at::Tensor y = at::empty(out_shape(x, a.N), x.options());
  qlinear_into(op, x, a, y);
  return y;
}

// Returns nothing, as the schema says (functionalization under torch.compile).
void qlinear_out_cuda(const at::Tensor& x, const at::Tensor& qweight, const at::Tensor& wscale,
                      const c10::optional<at::Tensor>& bias,
                      const c10::optional<at::Tensor>& act_scale, at::Tensor& out) {
  const char* op = "qlinear";
  QLinearArgs a = prepare_qlinear(op, x, qweight, wscale, bias, act_scale);
  const c10::cuda::CUDAGuard guard(x.device());
  write_out(op, out, x, out_shape(x, a.N), [&](at::Tensor& y) { qlinear_into(op, x, a, y); });
}

at::Tensor qlinear_grad_input_cuda(const at::Tensor& grad_y, const at::Tensor& qweight,
                                   const at::Tensor& wscale,
                                   const c10::optional<at::Tensor>& act_scale) {
  const char* op = "qlinear_grad_input";
  QLinearArgs a = prepare_grad_input(op, grad_y, qweight, wscale, act_scale);
  const lv_dtype gdt = float_dtype(grad_y, op, "grad_y");
  const c10::cuda::CUDAGuard guard(grad_y.device());
  const int64_t N = a.N, K = a.K;
  at::Tensor g2 = rows_2d(grad_y, N);
  const int64_t M = g2.size(0);
  at::Tensor gx = at::empty(out_shape(grad_y, K), grad_y.options());
  if (M == 0) return gx;
  const int64_t ldg = M > 1 ? g2.stride(0) : N;
  check_cuda_status(
      lv_cuda_qlinear_grad_input(g2.data_ptr(), gdt, ldg, a.qweight.data_ptr<int8_t>(),
                                 a.qweight.stride(0), a.wscale.data_ptr<float>(), a.group_size,
                                 a.act_scale.defined() ? a.act_scale.data_ptr<float>() : nullptr,
                                 M, N, K, gx.data_ptr(), gdt, K, current_stream()),
      op, "lv_cuda_qlinear_grad_input");
  return gx;
}

}  // namespace

TORCH_LIBRARY_IMPL(lowvram, CUDA, m) {
  m.impl("quantize_int8", &quantize_int8_cuda);
  m.impl("quantize_weight", &quantize_weight_cuda);
  m.impl("qlinear", &qlinear_cuda);
  m.impl("qlinear.out", &qlinear_out_cuda);
  m.impl("qlinear_grad_input", &qlinear_grad_input_cuda);
}

}  // namespace lowvram
