// bindings/accum_cpu.cpp — the CPU implementation of grad_accum_ (lowvram/
// accum.h): checks and flattens the lists (bindings/accum.h), then splits the
// elements of the whole list — not tensor by tensor — across threads in one
// at::parallel_for (multi-tensor apply: 200 small and large tensors keep both
// cores busy with one fork/join), each thread calling lv_grad_accum_multi on
// its global element range. Every element is computed alone, so results are
// bit-identical for any thread count.
#include <ATen/Parallel.h>

#include "accum.h"

namespace lowvram {
namespace {

// Elements per task: enough to amortize a task (the kernel streams ~10 bytes
// per element), a multiple of 64 so that splits fall on vector boundaries.
constexpr int64_t kGrain = 64 * 1024;

void grad_accum_cpu(at::TensorList acc, at::TensorList grads, double scale) {
  const char* op = "grad_accum_";
  AccumList a = prepare_grad_accum(op, acc, grads, scale);
  if (a.total == 0) return;
  const int64_t count = static_cast<int64_t>(a.acc.size());
  at::parallel_for(0, a.total, kGrain, [&](int64_t e0, int64_t e1) {
    check_status(lv_grad_accum_multi(a.acc.data(), a.g.data(), a.gdt.data(), a.offsets.data(),
                                     count, a.scale, e0, e1),
                 op, "lv_grad_accum_multi");
  });
}

// Empty lists carry no tensor, so the dispatcher has no device to pick a
// kernel by: it then runs the CompositeExplicitAutograd kernel, this one
// (backend kernels, CPU and CUDA above, and the Meta/fake kernel take
// precedence whenever there are tensors). Empty lists are a no-op; tensors on
// a device without a kernel get an error naming it.
void grad_accum_fallback(at::TensorList acc, at::TensorList grads, double scale) {
  const char* op = "grad_accum_";
  LV_CHECK_VALUE(acc.size() == grads.size(), op,
                 "acc and grads must be lists of the same length, got ", acc.size(), " and ",
                 grads.size());
  if (acc.empty()) return;
  LV_CHECK(false, op, "no kernel for device ", acc[0].device(), " (CPU and CUDA only)");
}

}  // namespace

TORCH_LIBRARY_IMPL(lowvram, CPU, m) { m.impl("grad_accum_", &grad_accum_cpu); }
TORCH_LIBRARY_IMPL(lowvram, CompositeExplicitAutograd, m) {
  m.impl("grad_accum_", &grad_accum_fallback);
}

}  // namespace lowvram
