// bindings/registration.cpp — every lowvram op schema, one line and one
// comment each. Implementations live in bindings/<family>_{cpu,cuda}.cpp;
// fake (meta) kernels and autograd formulas in python/lowvram/ops.py, which
// lowvram/__init__.py imports (set_python_module does not import it).
#include <torch/library.h>

#include <string>

extern "C" {
#include "lowvram/common.h"
}

namespace lowvram {

// The CPU kernel variant in use ("ref", "avx2", "avx512").
static std::string cpu_isa() { return lv_isa_name(lv_cpu_isa()); }

// Forces a CPU kernel variant for later calls (tests, benchmarks).
static void set_cpu_isa(const std::string& name) {
  int isa = lv_isa_from_name(name.c_str());
  TORCH_CHECK_VALUE(isa >= 0, "lowvram.set_cpu_isa: isa must be ref, avx2 or avx512, got '",
                    name, "'");
  TORCH_CHECK(lv_cpu_set_isa(static_cast<lv_isa>(isa)) == LV_OK,
              "lowvram.set_cpu_isa: this CPU cannot run '", name, "'");
}

// Whether this CPU can run a variant.
static bool cpu_isa_supported(const std::string& name) {
  int isa = lv_isa_from_name(name.c_str());
  return isa >= 0 && lv_cpu_isa_supported(static_cast<lv_isa>(isa));
}

}  // namespace lowvram

TORCH_LIBRARY(lowvram, m) {
  m.set_python_module("lowvram.ops");
  // Per-row int8 codes and float32 scales of x [..., K] (x * act_scale when given).
  m.def("quantize_int8(Tensor x, Tensor? act_scale=None) -> (Tensor, Tensor)");
  // Per-output-channel (or per-group) int8 weights [N, K] and float32 scales.
  m.def("quantize_weight(Tensor w, int group_size=-1) -> (Tensor, Tensor)");
  // y = dequant(int8(x) @ qweight^T) + bias: int8 dynamic-quantized Linear.
  m.def("qlinear(Tensor x, Tensor qweight, Tensor wscale, Tensor? bias=None, Tensor? act_scale=None) -> Tensor");
  // qlinear into a caller-provided output of the right shape and dtype (returns nothing, so
  // that functionalization under torch.compile can handle it).
  m.def("qlinear.out(Tensor x, Tensor qweight, Tensor wscale, Tensor? bias=None, Tensor? act_scale=None, *, Tensor(a!) out) -> ()");
  // grad_y @ dequant(qweight) (* act_scale): qlinear's gradient to x, weights never dequantized.
  m.def("qlinear_grad_input(Tensor grad_y, Tensor qweight, Tensor wscale, Tensor? act_scale=None) -> Tensor");
  // N:M mask of a score [N, K]: in every m consecutive columns keep the n largest (ties: lower index).
  m.def("nm_mask(Tensor score, int n, int m) -> Tensor");
  // Kept values [N, KV] (row order) and bit mask [N, ceil(K/8)] of a weight under a bool mask.
  m.def("sparse_compress(Tensor w, Tensor mask) -> (Tensor, Tensor)");
  // The dense [N, K] weight of a compressed one (pruned entries 0).
  m.def("sparse_decompress(Tensor values, Tensor mask_bits, int K) -> Tensor");
  // y = x @ W^T (+ bias) with W compressed (float values), reading only the kept weights.
  m.def("sparse_linear(Tensor x, Tensor values, Tensor mask_bits, Tensor? bias=None) -> Tensor");
  // qlinear with the int8 weight compressed: the same bits as qlinear on the decompressed weight.
  m.def("sparse_qlinear(Tensor x, Tensor qvalues, Tensor mask_bits, Tensor wscale, Tensor? bias=None, Tensor? act_scale=None) -> Tensor");
  // grad_y @ W with W compressed (float values): sparse_linear's gradient to x.
  m.def("sparse_linear_grad_input(Tensor grad_y, Tensor values, Tensor mask_bits, int K) -> Tensor");
  // grad_y @ dequant(W) (* act_scale) with W compressed int8: sparse_qlinear's gradient to x.
  m.def("sparse_qlinear_grad_input(Tensor grad_y, Tensor qvalues, Tensor mask_bits, Tensor wscale, int K, Tensor? act_scale=None) -> Tensor");
  // acc[i] += scale * grads[i] for a whole list (fmaf, one rounding; float32 acc, f32/bf16/f16 grads).
  m.def("grad_accum_(Tensor(a!)[] acc, Tensor[] grads, float scale) -> ()");
  // CPU kernel variant in use, forcing one, and whether one is supported.
  m.def("cpu_isa() -> str", &lowvram::cpu_isa);
  m.def("set_cpu_isa(str isa) -> ()", &lowvram::set_cpu_isa);
  m.def("cpu_isa_supported(str isa) -> bool", &lowvram::cpu_isa_supported);
}
