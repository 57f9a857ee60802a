// bindings/checks.h — argument checking and preparation shared by the CPU and
// CUDA shims of every op family. Each check names the op, the argument, what
// was expected and what came ("lowvram.qlinear: qweight must be int8, got
// Float"), so that bad input is a Python exception (RuntimeError, or
// ValueError/TypeError where torch maps the check) and never reaches a kernel.
// The prepare_* functions also put tensors into the form the C kernels take
// (last dimension contiguous, float32 side inputs), copying only when the
// caller's layout cannot be used as is.
#pragma once

#include <torch/library.h>
#include <ATen/ATen.h>

#include <string>

extern "C" {
#include "lowvram/common.h"
#include "lowvram/qgemm.h"
#include "lowvram/sparse.h"
}

namespace lowvram {

#define LV_CHECK(cond, op, ...) TORCH_CHECK((cond), "lowvram.", op, ": ", __VA_ARGS__)
#define LV_CHECK_VALUE(cond, op, ...) TORCH_CHECK_VALUE((cond), "lowvram.", op, ": ", __VA_ARGS__)
#define LV_CHECK_TYPE(cond, op, ...) TORCH_CHECK_TYPE((cond), "lowvram.", op, ": ", __VA_ARGS__)

// Raises unless a kernel returned LV_OK; `what` says which kernel.
inline void check_status(lv_status st, const char* op, const char* what) {
  TORCH_CHECK(st == LV_OK, "lowvram.", op, ": ", what, " failed: ", lv_status_str(st));
}

// The C dtype of a float activation / gradient / output tensor.
inline lv_dtype float_dtype(const at::Tensor& t, const char* op, const char* arg) {
  switch (t.scalar_type()) {
    case at::kFloat: return LV_F32;
    case at::kBFloat16: return LV_BF16;
    case at::kHalf: return LV_F16;
    default:
      LV_CHECK_TYPE(false, op, arg, " must be float32, bfloat16 or float16, got ",
                    t.scalar_type());
  }
  return LV_F32;
}

inline void check_same_device(const at::Tensor& t, const at::Tensor& ref, const char* op,
                              const char* arg, const char* ref_arg) {
  LV_CHECK(t.device() == ref.device(), op, arg, " must be on the same device as ", ref_arg,
           " (", ref.device(), "), got ", t.device());
}

// [*, K] viewed as [M, K] with a contiguous last dimension. Copies only when no
// such view exists (e.g. a transposed or column-strided input).
inline at::Tensor rows_2d(const at::Tensor& x, int64_t K) {
  at::Tensor x2 = x.dim() == 2 ? x : x.reshape({-1, K});
  if (x2.size(0) > 0 && (x2.stride(1) != 1 || x2.stride(0) < K)) x2 = x2.contiguous();
  return x2;
}

// act_scale [K] on ref's device as float32 contiguous, or undefined when absent.
inline at::Tensor prepare_act_scale(const char* op, const at::Tensor& ref, const char* ref_arg,
                                    int64_t K, const c10::optional<at::Tensor>& act_scale) {
  if (!act_scale.has_value() || !act_scale->defined()) return at::Tensor();
  LV_CHECK_TYPE(at::isFloatingType(act_scale->scalar_type()), op,
                "act_scale must be a float tensor, got ", act_scale->scalar_type());
  LV_CHECK_VALUE(act_scale->dim() == 1 && act_scale->size(0) == K, op,
                 "act_scale must be [K] = [", K, "], got ", act_scale->sizes());
  check_same_device(*act_scale, ref, op, "act_scale", ref_arg);
  return act_scale->to(at::kFloat).contiguous();
}

// x of quantize_int8: a float tensor [..., K] with K >= 1; returns K.
inline int64_t check_quantize_input(const char* op, const at::Tensor& x) {
  (void)float_dtype(x, op, "x");
  LV_CHECK_VALUE(x.dim() >= 1, op, "x must have at least 1 dimension [..., K], got a 0-D tensor");
  LV_CHECK_VALUE(x.size(-1) > 0, op, "x's last dimension (K) must be >= 1, got x of shape ",
                 x.sizes());
  return x.size(-1);
}

// w and group_size of quantize_weight; returns the kernels' group size (-1:
// one scale per row, which group_size == K also means).
inline int64_t check_quantize_weight(const char* op, const at::Tensor& w, int64_t group_size) {
  (void)float_dtype(w, op, "w");
  LV_CHECK_VALUE(w.dim() == 2, op, "w must be 2-D [N, K], got ", w.dim(), "-D ", w.sizes());
  const int64_t N = w.size(0), K = w.size(1);
  LV_CHECK_VALUE(N > 0 && K > 0, op, "w must not be empty, got ", w.sizes());
  LV_CHECK_VALUE(group_size == -1 || (group_size > 0 && K % group_size == 0 && group_size % 64 == 0),
                 op, "group_size must be -1 (per output channel) or a multiple of 64 that divides K = ",
                 K, ", got ", group_size);
  return group_size == K ? -1 : group_size;
}

// quantize_weight's scales: [N], [N, 1] when group_size == K, else [N, K / group_size].
inline at::Tensor empty_wscale(const at::Tensor& w, int64_t group_size) {
  const int64_t N = w.size(0), K = w.size(1);
  auto opt = w.options().dtype(at::kFloat);
  if (group_size == -1) return at::empty({N}, opt);
  return at::empty({N, K / group_size}, opt);
}

// Everything a qlinear / qlinear_grad_input kernel needs, checked.
struct QLinearArgs {
  int64_t N = 0, K = 0, G = 1, group_size = -1;
  at::Tensor qweight;    // [N, K] int8, stride(1) == 1
  at::Tensor wscale;     // [N, G] float32, contiguous
  at::Tensor bias;       // [N] float32 or undefined
  at::Tensor act_scale;  // [K] float32 or undefined
};

// Checks qweight / wscale / bias / act_scale against each other and against
// `ref` (the activation or gradient tensor that fixes the device).
inline QLinearArgs prepare_weights(const char* op, const at::Tensor& ref, const char* ref_arg,
                                   const at::Tensor& qweight, const at::Tensor& wscale,
                                   const c10::optional<at::Tensor>& bias,
                                   const c10::optional<at::Tensor>& act_scale) {
  QLinearArgs a;
  LV_CHECK_TYPE(qweight.scalar_type() == at::kChar, op, "qweight must be int8, got ",
                qweight.scalar_type());
  LV_CHECK_VALUE(qweight.dim() == 2, op, "qweight must be 2-D [N, K] (out, in features), got ",
                 qweight.dim(), "-D ", qweight.sizes());
  check_same_device(qweight, ref, op, "qweight", ref_arg);
  a.N = qweight.size(0);
  a.K = qweight.size(1);
  LV_CHECK_VALUE(a.N > 0 && a.K > 0, op, "qweight must not be empty, got ", qweight.sizes());
  LV_CHECK_VALUE(a.K <= LV_QGEMM_K_MAX, op, "K (in-features) must be <= ", LV_QGEMM_K_MAX,
                 " so that int32 sums are exact, got ", a.K);
  a.qweight = qweight.stride(1) == 1 && qweight.stride(0) >= a.K ? qweight : qweight.contiguous();

  LV_CHECK_TYPE(wscale.scalar_type() == at::kFloat, op, "wscale must be float32, got ",
                wscale.scalar_type());
  check_same_device(wscale, ref, op, "wscale", ref_arg);
  if (wscale.dim() == 1) {
    LV_CHECK_VALUE(wscale.size(0) == a.N, op, "wscale must be [N] = [", a.N, "] or [N, G], got ",
                   wscale.sizes());
    a.G = 1;
  } else {
    LV_CHECK_VALUE(wscale.dim() == 2 && wscale.size(0) == a.N && wscale.size(1) >= 1, op,
                   "wscale must be [N] = [", a.N, "] or [N, G], got ", wscale.sizes());
    a.G = wscale.size(1);
    LV_CHECK_VALUE(a.K % a.G == 0 && (a.K / a.G) % 64 == 0, op,
                   "wscale [N, G] needs groups of K / G columns with K / G a multiple of 64; K = ",
                   a.K, ", G = ", a.G);
    if (a.G > 1) a.group_size = a.K / a.G;
  }
  a.wscale = wscale.contiguous();

  if (bias.has_value() && bias->defined()) {
    LV_CHECK_TYPE(at::isFloatingType(bias->scalar_type()), op, "bias must be a float tensor, got ",
                  bias->scalar_type());
    LV_CHECK_VALUE(bias->dim() == 1 && bias->size(0) == a.N, op, "bias must be [N] = [", a.N,
                   "], got ", bias->sizes());
    check_same_device(*bias, ref, op, "bias", ref_arg);
    a.bias = bias->to(at::kFloat).contiguous();
  }
  a.act_scale = prepare_act_scale(op, ref, ref_arg, a.K, act_scale);
  return a;
}

// x [..., K] for qlinear: a float tensor whose last dimension is K.
inline void check_activation(const char* op, const at::Tensor& x, int64_t K, const char* what) {
  (void)float_dtype(x, op, "x");
  LV_CHECK_VALUE(x.dim() >= 1, op, "x must have at least 1 dimension [..., K], got a 0-D tensor");
  LV_CHECK_VALUE(x.size(-1) == K, op, "x's last dimension must be K = ", K, " (", what,
                 "), got x of shape ", x.sizes());
}

// The output shape of a row-wise op: x's shape with the last dimension n.
inline std::vector<int64_t> out_shape(const at::Tensor& x, int64_t n) {
  std::vector<int64_t> s(x.sizes().begin(), x.sizes().end());
  s.back() = n;
  return s;
}

// qlinear's arguments, all checked: x [..., K] float, the weights, bias, act_scale.
inline QLinearArgs prepare_qlinear(const char* op, const at::Tensor& x, const at::Tensor& qweight,
                                   const at::Tensor& wscale, const c10::optional<at::Tensor>& bias,
                                   const c10::optional<at::Tensor>& act_scale) {
  (void)float_dtype(x, op, "x");
  QLinearArgs a = prepare_weights(op, x, "x", qweight, wscale, bias, act_scale);
  check_activation(op, x, a.K, "qweight's in-features");
  return a;
}

// qlinear_grad_input's arguments: grad_y [..., N] float, the weights, act_scale.
inline QLinearArgs prepare_grad_input(const char* op, const at::Tensor& grad_y,
                                      const at::Tensor& qweight, const at::Tensor& wscale,
                                      const c10::optional<at::Tensor>& act_scale) {
  (void)float_dtype(grad_y, op, "grad_y");
  QLinearArgs a = prepare_weights(op, grad_y, "grad_y", qweight, wscale, c10::nullopt, act_scale);
  LV_CHECK_VALUE(grad_y.dim() >= 1 && grad_y.size(-1) == a.N, op,
                 "grad_y's last dimension must be N = ", a.N,
                 " (qweight's out-features), got grad_y of shape ", grad_y.sizes());
  return a;
}

// `out` of an .out overload: same device, dtype and shape as the result
// (never resized: a custom op that resizes its output cannot be functionalized).
inline void check_out(const char* op, const at::Tensor& out, const at::Tensor& x,
                      at::IntArrayRef shape) {
  check_same_device(out, x, op, "out", "x");
  LV_CHECK_TYPE(out.scalar_type() == x.scalar_type(), op, "out must have x's dtype ",
                x.scalar_type(), ", got ", out.scalar_type());
  LV_CHECK_VALUE(out.sizes() == shape, op, "out must have shape ", shape, ", got ", out.sizes());
}

// Runs into(y) on `out` when it is contiguous, else on a temporary copied
// into `out` (the kernels write rows with a contiguous last dimension).
template <typename F>
inline void write_out(const char* op, at::Tensor& out, const at::Tensor& x, at::IntArrayRef shape,
                      F&& into) {
  check_out(op, out, x, shape);
  if (out.is_contiguous()) {
    into(out);
  } else {
    at::Tensor y = at::empty(shape, x.options());
    into(y);
    out.copy_(y);
  }
}

// A compressed weight (lowvram/sparse.h): values [N, KV] and mask_bits
// [N, ceil(K / 8)] uint8 on ref's device. int8 values need wscale [N] or
// [N, G] (groups of K / G columns, a multiple of 64); float values none.
struct SparseArgs {
  int64_t N = 0, K = 0, KV = 0, G = 1, group_size = -1;
  at::Tensor values;     // [N, KV], stride(1) == 1
  at::Tensor mask_bits;  // [N, KB] uint8, stride(1) == 1
  at::Tensor wscale;     // [N, G] float32 contiguous (int8 values only)
  at::Tensor bias;       // [N] float32 or undefined
  at::Tensor act_scale;  // [K] float32 or undefined
};

inline SparseArgs prepare_sparse(const char* op, const at::Tensor& ref, const char* ref_arg,
                                 int64_t K, const at::Tensor& values, const at::Tensor& mask_bits,
                                 bool int8, const at::Tensor* wscale,
                                 const c10::optional<at::Tensor>& bias,
                                 const c10::optional<at::Tensor>& act_scale) {
  SparseArgs a;
  a.K = K;
  const char* vname = int8 ? "qvalues" : "values";
  if (int8) {
    LV_CHECK_TYPE(values.scalar_type() == at::kChar, op, vname, " must be int8, got ",
                  values.scalar_type());
  } else {
    (void)float_dtype(values, op, vname);
  }
  LV_CHECK_VALUE(values.dim() == 2, op, vname, " must be 2-D [N, KV], got ", values.dim(),
                 "-D ", values.sizes());
  check_same_device(values, ref, op, vname, ref_arg);
  a.N = values.size(0);
  a.KV = values.size(1);
  LV_CHECK_VALUE(a.N > 0, op, vname, " must have at least one row, got ", values.sizes());
  LV_CHECK_VALUE(K >= 1, op, "K (in-features) must be >= 1, got ", K);
  LV_CHECK_VALUE(a.KV <= K, op, vname, " keeps more weights per row (", a.KV,
                 ") than there are columns (K = ", K, ")");
  if (int8)
    LV_CHECK_VALUE(K <= LV_QGEMM_K_MAX, op, "K (in-features) must be <= ", LV_QGEMM_K_MAX,
                   " so that int32 sums are exact, got ", K);
  a.values = values.stride(-1) == 1 && values.stride(0) >= a.KV ? values : values.contiguous();
  if (a.KV == 0) a.values = values.contiguous();

  LV_CHECK_TYPE(mask_bits.scalar_type() == at::kByte, op, "mask_bits must be uint8, got ",
                mask_bits.scalar_type());
  LV_CHECK_VALUE(mask_bits.dim() == 2 && mask_bits.size(0) == a.N &&
                     mask_bits.size(1) == lv_mask_row_bytes(K),
                 op, "mask_bits must be [N, ceil(K / 8)] = [", a.N, ", ", lv_mask_row_bytes(K),
                 "], got ", mask_bits.sizes());
  check_same_device(mask_bits, ref, op, "mask_bits", ref_arg);
  a.mask_bits = mask_bits.stride(1) == 1 ? mask_bits : mask_bits.contiguous();

  if (int8) {
    const at::Tensor& ws = *wscale;
    LV_CHECK_TYPE(ws.scalar_type() == at::kFloat, op, "wscale must be float32, got ",
                  ws.scalar_type());
    check_same_device(ws, ref, op, "wscale", ref_arg);
    if (ws.dim() == 1) {
      LV_CHECK_VALUE(ws.size(0) == a.N, op, "wscale must be [N] = [", a.N, "] or [N, G], got ",
                     ws.sizes());
    } else {
      LV_CHECK_VALUE(ws.dim() == 2 && ws.size(0) == a.N && ws.size(1) >= 1, op,
                     "wscale must be [N] = [", a.N, "] or [N, G], got ", ws.sizes());
      a.G = ws.size(1);
      LV_CHECK_VALUE(K % a.G == 0 && (K / a.G) % 64 == 0, op,
                     "wscale [N, G] needs groups of K / G columns with K / G a multiple of 64; "
                     "K = ", K, ", G = ", a.G);
      if (a.G > 1) a.group_size = K / a.G;
    }
    a.wscale = ws.contiguous();
  }
  if (bias.has_value() && bias->defined()) {
    LV_CHECK_TYPE(at::isFloatingType(bias->scalar_type()), op, "bias must be a float tensor, got ",
                  bias->scalar_type());
    LV_CHECK_VALUE(bias->dim() == 1 && bias->size(0) == a.N, op, "bias must be [N] = [", a.N,
                   "], got ", bias->sizes());
    check_same_device(*bias, ref, op, "bias", ref_arg);
    a.bias = bias->to(at::kFloat).contiguous();
  }
  a.act_scale = prepare_act_scale(op, ref, ref_arg, K, act_scale);
  return a;
}

// Raises with the op's name when a sparse kernel found a mask row that does
// not keep exactly KV weights (LV_E_INVALID after the shape checks above).
inline void check_sparse_status(lv_status st, const char* op, const char* what, int64_t KV) {
  LV_CHECK_VALUE(st != LV_E_INVALID, op, "every row of mask_bits must keep exactly KV = ", KV,
                 " weights (values' row length), and bits past K must be 0: the mask does "
                 "not match the values");
  check_status(st, op, what);
}

}  // namespace lowvram
