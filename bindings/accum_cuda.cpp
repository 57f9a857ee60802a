// bindings/accum_cuda.cpp — the CUDA implementation of grad_accum_ (lowvram/
// accum.h): checks and flattens the lists with the CPU shim's checks
// (bindings/accum.h), packs the per-tensor metadata (pointers, dtypes,
// element offsets) into one int64 tensor in pinned memory, copies it to the
// device on the current stream (non-blocking; the caching host allocator
// keeps the pinned block alive until the copy is done), and launches one
// kernel for the whole list (ops/cuda/accum.cu). Nothing synchronizes.
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include <cstring>

#include "accum.h"

namespace lowvram {
namespace {

void grad_accum_cuda(at::TensorList acc, at::TensorList grads, double scale) {
  const char* op = "grad_accum_";
  AccumList a = prepare_grad_accum(op, acc, grads, scale);
  if (a.total == 0) return;
  const int64_t count = static_cast<int64_t>(a.acc.size());
  const c10::cuda::CUDAGuard guard(acc[0].device());
  at::Tensor host = at::empty({lv_grad_accum_meta_words(count)},
                              at::TensorOptions().dtype(at::kLong).pinned_memory(true));
  int64_t* m = host.data_ptr<int64_t>();
  for (int64_t t = 0; t < count; t++) {
    m[t] = static_cast<int64_t>(reinterpret_cast<uintptr_t>(a.acc[t]));
    m[count + t] = static_cast<int64_t>(reinterpret_cast<uintptr_t>(a.g[t]));
    m[2 * count + t] = static_cast<int64_t>(a.gdt[t]);
  }
  std::memcpy(m + 3 * count, a.offsets.data(), sizeof(int64_t) * (count + 1));
  at::Tensor meta = host.to(acc[0].device(), /*non_blocking=*/true);
  const lv_status st =
      lv_cuda_grad_accum(meta.data_ptr<int64_t>(), count, a.total, a.scale,
                         static_cast<void*>(at::cuda::getCurrentCUDAStream().stream()));
  TORCH_CHECK(st != LV_E_CUDA, "lowvram.", op, ": lv_cuda_grad_accum failed: ",
              lv_status_str(st), ": ", lv_cuda_accum_last_error());
  check_status(st, op, "lv_cuda_grad_accum");
}

}  // namespace

TORCH_LIBRARY_IMPL(lowvram, CUDA, m) { m.impl("grad_accum_", &grad_accum_cuda); }

}  // namespace lowvram
