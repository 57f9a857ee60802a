// bindings/accum.h — argument checking and preparation of grad_accum_, shared
// by its CPU and CUDA shims (bindings/accum_{cpu,cuda}.cpp). Each check names
// the op and the argument (checks.h's convention). The result is the flat
// form the kernels take (lowvram/accum.h): per tensor an acc pointer, a
// gradient pointer and dtype, and element offsets of the concatenated list.
#pragma once

#include <algorithm>
#include <cmath>
#include <vector>

#include "checks.h"

extern "C" {
#include "lowvram/accum.h"
}

namespace lowvram {

struct AccumList {
  std::vector<at::Tensor> grads;  // contiguous: the caller's, or copies of strided ones
  std::vector<float*> acc;
  std::vector<const void*> g;
  std::vector<lv_dtype> gdt;
  std::vector<int64_t> offsets;  // [count + 1]
  int64_t total = 0;
  float scale = 0.0f;
};

// Raises when an accumulator overlaps any other accumulator or gradient in
// memory (a race and a wrong sum), except a gradient that is exactly its own
// accumulator (acc[i] += scale * acc[i] is still elementwise). Sort-and-sweep
// over byte ranges: O(n log n).
inline void check_no_overlap(const char* op, const AccumList& a) {
  struct Range {
    uintptr_t b, e;
    int64_t i;
    bool is_acc;
  };
  std::vector<Range> r;
  const int64_t n = static_cast<int64_t>(a.acc.size());
  r.reserve(2 * n);
  for (int64_t i = 0; i < n; i++) {
    const int64_t len = a.offsets[i + 1] - a.offsets[i];
    if (len == 0) continue;
    const uintptr_t ab = reinterpret_cast<uintptr_t>(a.acc[i]);
    r.push_back({ab, ab + 4 * len, i, true});
    const uintptr_t gb = reinterpret_cast<uintptr_t>(a.g[i]);
    if (gb == ab && a.gdt[i] == LV_F32) continue;  // its own accumulator
    r.push_back({gb, gb + lv_dtype_size(a.gdt[i]) * len, i, false});
  }
  std::sort(r.begin(), r.end(), [](const Range& x, const Range& y) { return x.b < y.b; });
  const Range* far_any = nullptr;  // the earlier range reaching furthest
  const Range* far_acc = nullptr;  // the earlier accumulator reaching furthest
  for (const Range& x : r) {
    const Range* hit = x.is_acc ? far_any : far_acc;
    if (hit && x.b < hit->e) {
      const Range& p = hit->is_acc ? *hit : x;  // name an accumulator first
      const Range& q = hit->is_acc ? x : *hit;
      LV_CHECK_VALUE(false, op, "acc[", p.i, "] overlaps ", q.is_acc ? "acc[" : "grads[", q.i,
                     "] in memory (accumulators must not alias anything but themselves)");
    }
    if (!far_any || x.e > far_any->e) far_any = &x;
    if (x.is_acc && (!far_acc || x.e > far_acc->e)) far_acc = &x;
  }
}

inline AccumList prepare_grad_accum(const char* op, at::TensorList acc, at::TensorList grads,
                                    double scale) {
  LV_CHECK_VALUE(acc.size() == grads.size(), op,
                 "acc and grads must be lists of the same length, got ", acc.size(), " and ",
                 grads.size());
  AccumList a;
  a.scale = static_cast<float>(scale);
  // A NaN or infinite scale would silently poison every accumulator.
  LV_CHECK_VALUE(std::isfinite(a.scale), op, "scale must be finite (as float32), got ", scale);
  const int64_t n = static_cast<int64_t>(acc.size());
  a.grads.reserve(n);
  a.acc.reserve(n);
  a.g.reserve(n);
  a.gdt.reserve(n);
  a.offsets.reserve(n + 1);
  a.offsets.push_back(0);
  for (int64_t i = 0; i < n; i++) {
    const at::Tensor& x = acc[i];
    const at::Tensor& g = grads[i];
    LV_CHECK_TYPE(x.scalar_type() == at::kFloat, op, "acc[", i, "] must be float32, got ",
                  x.scalar_type());
    LV_CHECK(x.device() == acc[0].device(), op, "acc[", i,
             "] must be on the same device as acc[0] (", acc[0].device(), "), got ", x.device());
    LV_CHECK_VALUE(x.is_contiguous(), op, "acc[", i, "] must be contiguous, got strides ",
                   x.strides());
    switch (g.scalar_type()) {
      case at::kFloat: a.gdt.push_back(LV_F32); break;
      case at::kBFloat16: a.gdt.push_back(LV_BF16); break;
      case at::kHalf: a.gdt.push_back(LV_F16); break;
      default:
        LV_CHECK_TYPE(false, op, "grads[", i, "] must be float32, bfloat16 or float16, got ",
                      g.scalar_type());
    }
    LV_CHECK(g.device() == acc[0].device(), op, "grads[", i,
             "] must be on the same device as acc[0] (", acc[0].device(), "), got ", g.device());
    LV_CHECK_VALUE(g.sizes() == x.sizes(), op, "grads[", i, "] must have acc[", i, "]'s shape ",
                   x.sizes(), ", got ", g.sizes());
    // Strided gradients (rare: autograd gives parameters' layouts) are copied once.
    a.grads.push_back(g.is_contiguous() ? g : g.contiguous());
    a.acc.push_back(x.numel() ? x.data_ptr<float>() : nullptr);
    a.g.push_back(x.numel() ? a.grads.back().data_ptr() : nullptr);
    a.offsets.push_back(a.offsets.back() + x.numel());
  }
  a.total = a.offsets.back();
  check_no_overlap(op, a);
  return a;
}

}  // namespace lowvram
