// bindings/sparse_cuda.cpp — the CUDA implementations of the sparse family's ops
// (nm_mask, sparse_compress, sparse_decompress, sparse_linear, sparse_qlinear and
// their input gradients). The shim checks and prepares tensors with the CPU
// shim's checks (checks.h), guards the device, allocates outputs and scratch
// through the caching allocator, and calls the CUDA launchers
// (ops/include/lowvram/sparse_cuda.h, ops/cuda/sparse.cu) on the current stream.
//
// Synchronization: the products and gradients never synchronize. Masks live on
// the device, so their rows are checked (exactly KV kept weights) only by the
// ops that synchronize anyway or are load-time: nm_mask (NaN scores),
// sparse_compress (KV is read from the mask, as on the CPU), sparse_decompress,
// and the first cuSPARSELt use of a weight. A product on a bad mask gives
// unspecified outputs; the kernels never read outside values and mask_bits.
//
// sparse_qlinear paths (see ops/cuda/sparse.cu):
//   M <= LV_CUDA_SPARSE_SMALL_M (16): the own __dp4a kernel on the compressed bytes.
//   M > 16, 2:4 mask, per-channel wscale, N % 32 == 0, K % 64 == 0, built with
//     cuSPARSELt: cuSPARSELt int8 -> int32 + the shared epilogue. The weight's
//     cuSPARSELt form is made at first use and cached here (below), keyed by
//     qvalues' data pointer and checked against its storage (weak reference:
//     a freed and reused address never hits) and the version counters of
//     qvalues and mask_bits (an in-place update rebuilds it). Not saved
//     (DESIGN: device packings are derived). It is an extra ~0.56 byte per
//     weight on the device while cached; LOWVRAM_CUSPARSELT=0 turns the path off.
//   otherwise: N-chunks of the weight decompressed into a scratch int8 tile
//     (<= 64 MiB) and the dense lv_cuda_qgemm_int8 (cuBLASLt) — exact, the
//     contract is qlinear on the decompressed weight. (cuSPARSE's int8 CSR SpMM
//     would save the tile but is slower than int8 tensor cores at 50% density.)
// sparse_linear: own exact kernels for every M (the contract's 16-lane order).
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include <cstdlib>
#include <cstring>
#include <mutex>
#include <unordered_map>

#include "checks.h"

extern "C" {
#include "lowvram/sparse_cuda.h"
}

namespace lowvram {
namespace {

// Raises unless a launcher returned LV_OK; LV_E_CUDA carries the CUDA error.
void check_cuda(lv_status st, const char* op, const char* what, bool sparse_launcher = true) {
  if (st == LV_E_CUDA) {
    TORCH_CHECK(false, "lowvram.", op, ": ", what, " failed: ", lv_status_str(st), ": ",
                sparse_launcher ? lv_cuda_sparse_last_error() : lv_cuda_last_error());
  }
  check_status(st, op, what);
}

void* stream() { return static_cast<void*>(at::cuda::getCurrentCUDAStream().stream()); }

int elem_size(const char* op, const at::Tensor& t, const char* arg) {
  if (t.scalar_type() == at::kChar) return 1;
  return lv_dtype_size(float_dtype(t, op, arg));
}

at::Tensor zero_flags(const at::Tensor& like) {
  return at::zeros({1}, like.options().dtype(at::kInt));
}

at::Tensor scratch(const at::Tensor& like, size_t bytes) {
  return at::empty({static_cast<int64_t>(bytes)}, like.options().dtype(at::kByte));
}

// ---- masks, compression ----------------------------------------------------------------

at::Tensor nm_mask_cuda(const at::Tensor& score, int64_t n, int64_t m) {
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
  const c10::cuda::CUDAGuard guard(score.device());
  at::Tensor s = score.to(at::kFloat).contiguous();
  at::Tensor keep = at::empty({N, K}, score.options().dtype(at::kBool));
  at::Tensor flags = zero_flags(score);
  check_cuda(lv_cuda_nm_mask(s.data_ptr<float>(), K, N, K, (int)n, (int)m,
                             reinterpret_cast<uint8_t*>(keep.data_ptr<bool>()), K,
                             flags.data_ptr<int>(), stream()),
             op, "lv_cuda_nm_mask");
  LV_CHECK_VALUE(!(flags.item<int>() & LV_SPARSE_FLAG_NAN), op,
                 "score must not contain NaN (a NaN score has no place in the order)");
  return keep;
}

std::tuple<at::Tensor, at::Tensor> sparse_compress_cuda(const at::Tensor& w,
                                                        const at::Tensor& mask) {
  const char* op = "sparse_compress";
  const int esz = elem_size(op, w, "w");
  LV_CHECK_VALUE(w.dim() == 2, op, "w must be 2-D [N, K], got ", w.dim(), "-D ", w.sizes());
  const int64_t N = w.size(0), K = w.size(1);
  LV_CHECK_VALUE(N > 0 && K > 0, op, "w must not be empty, got ", w.sizes());
  LV_CHECK_TYPE(mask.scalar_type() == at::kBool, op, "mask must be bool, got ", mask.scalar_type());
  LV_CHECK_VALUE(mask.sizes() == w.sizes(), op, "mask must have w's shape ", w.sizes(), ", got ",
                 mask.sizes());
  check_same_device(mask, w, op, "mask", "w");
  const c10::cuda::CUDAGuard guard(w.device());
  at::Tensor w2 = w.contiguous(), m2 = mask.contiguous();
  const int64_t KV = m2[0].sum().item<int64_t>();
  at::Tensor values = at::empty({N, KV}, w.options());
  at::Tensor bits = at::empty({N, lv_mask_row_bytes(K)}, w.options().dtype(at::kByte));
  at::Tensor flags = zero_flags(w);
  check_cuda(lv_cuda_sparse_compress(w2.data_ptr(), esz, K,
                                     reinterpret_cast<const uint8_t*>(m2.data_ptr<bool>()), K, N,
                                     K, KV, values.data_ptr(), KV, bits.data_ptr<uint8_t>(),
                                     bits.size(1), flags.data_ptr<int>(), stream()),
             op, "lv_cuda_sparse_compress");
  LV_CHECK_VALUE(!(flags.item<int>() & LV_SPARSE_FLAG_COUNT), op,
                 "every row of mask must keep the same number of weights (row 0 keeps ", KV, ")");
  return {values, bits};
}

// Checks of sparse_decompress (the CPU shim's, same messages).
void check_decompress_args(const char* op, const at::Tensor& values, const at::Tensor& mask_bits,
                           int64_t K) {
  (void)elem_size(op, values, "values");
  LV_CHECK_VALUE(values.dim() == 2, op, "values must be 2-D [N, KV], got ", values.dim(), "-D ",
                 values.sizes());
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
}

at::Tensor sparse_decompress_cuda(const at::Tensor& values, const at::Tensor& mask_bits,
                                  int64_t K) {
  const char* op = "sparse_decompress";
  check_decompress_args(op, values, mask_bits, K);
  const c10::cuda::CUDAGuard guard(values.device());
  const int64_t N = values.size(0), KV = values.size(1);
  at::Tensor v = values.contiguous(), b = mask_bits.contiguous();
  at::Tensor w = at::empty({N, K}, values.options());
  at::Tensor flags = zero_flags(values);
  check_cuda(lv_cuda_sparse_decompress(v.data_ptr(), elem_size(op, values, "values"), KV,
                                       b.data_ptr<uint8_t>(), b.size(1), N, K, KV, w.data_ptr(),
                                       K, flags.data_ptr<int>(), stream()),
             op, "lv_cuda_sparse_decompress");
  check_sparse_status((flags.item<int>() & LV_SPARSE_FLAG_COUNT) ? LV_E_INVALID : LV_OK, op,
                      "lv_cuda_sparse_decompress", KV);
  return w;
}

// ---- sparse_linear --------------------------------------------------------------------

int64_t ldv_of(const SparseArgs& a) { return std::max<int64_t>(a.values.stride(0), a.KV); }

at::Tensor sparse_linear_cuda(const at::Tensor& x, const at::Tensor& values,
                              const at::Tensor& mask_bits, const c10::optional<at::Tensor>& bias) {
  const char* op = "sparse_linear";
  const lv_dtype xdt = float_dtype(x, op, "x");
  LV_CHECK_VALUE(x.dim() >= 1, op, "x must have at least 1 dimension [..., K], got a 0-D tensor");
  const int64_t K = x.size(-1);
  SparseArgs a = prepare_sparse(op, x, "x", K, values, mask_bits, false, nullptr, bias,
                                c10::nullopt);
  const c10::cuda::CUDAGuard guard(x.device());
  at::Tensor x2 = rows_2d(x, K);
  const int64_t M = x2.size(0), N = a.N;
  at::Tensor y = at::empty(out_shape(x, N), x.options());
  if (M == 0) return y;
  const int64_t ldx = M > 1 ? x2.stride(0) : K;
  const size_t ws_bytes = lv_cuda_sparse_gemm_workspace(M, N, K);
  at::Tensor ws;
  if (ws_bytes > 0) ws = scratch(x, ws_bytes);
  const lv_status st = lv_cuda_sparse_gemm(
      x2.data_ptr(), xdt, ldx, a.values.data_ptr(), float_dtype(a.values, op, "values"),
      ldv_of(a), a.mask_bits.data_ptr<uint8_t>(), a.mask_bits.stride(0), a.KV,
      a.bias.defined() ? a.bias.data_ptr<float>() : nullptr, M, N, K, y.data_ptr(), xdt, N,
      ws_bytes > 0 ? ws.data_ptr() : nullptr, ws_bytes, stream());
  check_cuda(st, op, "lv_cuda_sparse_gemm");
  return y;
}

// ---- cuSPARSELt weight cache -------------------------------------------------------------

struct CsltEntry {
  c10::weak_intrusive_ptr<c10::StorageImpl> vstore{c10::intrusive_ptr<c10::StorageImpl>()};
  c10::weak_intrusive_ptr<c10::StorageImpl> mstore{c10::intrusive_ptr<c10::StorageImpl>()};
  const void* mptr = nullptr;
  int64_t vversion = -1, mversion = -1, N = 0, K = 0;
  bool usable = false;     // false: the mask is not 2:4 (or cuSPARSELt refused): other path
  at::Tensor compressed;   // cuSPARSELt's form, when usable
};

std::mutex g_cslt_mu;
std::unordered_map<const void*, CsltEntry> g_cslt;
constexpr size_t kCsltCacheMax = 4096;

bool cslt_enabled() {
  static const bool on = [] {
    const char* e = std::getenv("LOWVRAM_CUSPARSELT");
    return !(e && (std::strcmp(e, "0") == 0 || std::strcmp(e, "off") == 0));
  }();
  return on;
}

bool entry_matches(const CsltEntry& e, const SparseArgs& a) {
  return !e.vstore.expired() && !e.mstore.expired() &&
         e.vstore._unsafe_get_target() == a.values.storage().unsafeGetStorageImpl() &&
         e.mstore._unsafe_get_target() == a.mask_bits.storage().unsafeGetStorageImpl() &&
         e.mptr == a.mask_bits.data_ptr() && e.vversion == a.values._version() &&
         e.mversion == a.mask_bits._version() && e.N == a.N && e.K == a.K;
}

// The cached cuSPARSELt form of a weight, built on first use; undefined when
// the weight cannot take the cuSPARSELt path. Called with x's device current.
at::Tensor cslt_weight(const char* op, const SparseArgs& a) {
  const void* key = a.values.data_ptr();
  {
    std::lock_guard<std::mutex> lock(g_cslt_mu);
    auto it = g_cslt.find(key);
    if (it != g_cslt.end() && entry_matches(it->second, a))
      return it->second.usable ? it->second.compressed : at::Tensor();
  }
  CsltEntry e;
  e.vstore = a.values.storage().getWeakStorageImpl();
  e.mstore = a.mask_bits.storage().getWeakStorageImpl();
  e.mptr = a.mask_bits.data_ptr();
  e.vversion = a.values._version();
  e.mversion = a.mask_bits._version();
  e.N = a.N;
  e.K = a.K;
  // One synchronization per weight: is the mask valid and 2:4?
  at::Tensor flags = zero_flags(a.values);
  check_cuda(lv_cuda_sparse_check_masks(a.mask_bits.data_ptr<uint8_t>(), a.mask_bits.stride(0),
                                        a.N, a.K, a.KV, flags.data_ptr<int>(), stream()),
             op, "lv_cuda_sparse_check_masks");
  const int f = flags.item<int>();
  check_sparse_status((f & LV_SPARSE_FLAG_COUNT) ? LV_E_INVALID : LV_OK, op,
                      "lv_cuda_sparse_check_masks", a.KV);
  size_t cbytes = 0, bbytes = 0;
  if (!(f & LV_SPARSE_FLAG_NOT_2_4) &&
      lv_cuda_cslt_weight_bytes(a.N, a.K, &cbytes, &bbytes) == LV_OK) {
    at::Tensor dense = at::empty({a.N, a.K}, a.values.options());
    check_cuda(lv_cuda_sparse_decompress(a.values.data_ptr(), 1, ldv_of(a),
                                         a.mask_bits.data_ptr<uint8_t>(), a.mask_bits.stride(0),
                                         a.N, a.K, a.KV, dense.data_ptr(), a.K, nullptr, stream()),
               op, "lv_cuda_sparse_decompress");
    at::Tensor comp = scratch(a.values, std::max<size_t>(cbytes, 1));
    at::Tensor buf = scratch(a.values, std::max<size_t>(bbytes, 1));
    if (lv_cuda_cslt_compress(dense.data_ptr<int8_t>(), a.N, a.K, comp.data_ptr(),
                              buf.data_ptr(), stream()) == LV_OK) {
      e.usable = true;
      e.compressed = comp;
    }
    // dense and buf go back to the caching allocator in stream order.
  }
  std::lock_guard<std::mutex> lock(g_cslt_mu);
  if (g_cslt.size() >= kCsltCacheMax) {
    for (auto it = g_cslt.begin(); it != g_cslt.end();)
      it = it->second.vstore.expired() ? g_cslt.erase(it) : std::next(it);
    if (g_cslt.size() >= kCsltCacheMax) g_cslt.clear();
  }
  g_cslt[key] = e;
  return e.usable ? e.compressed : at::Tensor();
}

// ---- sparse_qlinear -----------------------------------------------------------------------

constexpr int64_t kTileBytes = (int64_t)64 << 20;  // decompressed int8 tile of the fallback

at::Tensor sparse_qlinear_cuda(const at::Tensor& x, const at::Tensor& qvalues,
                               const at::Tensor& mask_bits, const at::Tensor& wscale,
                               const c10::optional<at::Tensor>& bias,
                               const c10::optional<at::Tensor>& act_scale) {
  const char* op = "sparse_qlinear";
  const lv_dtype xdt = float_dtype(x, op, "x");
  LV_CHECK_VALUE(x.dim() >= 1, op, "x must have at least 1 dimension [..., K], got a 0-D tensor");
  const int64_t K = x.size(-1);
  SparseArgs a = prepare_sparse(op, x, "x", K, qvalues, mask_bits, true, &wscale, bias,
                                act_scale);
  const c10::cuda::CUDAGuard guard(x.device());
  at::Tensor x2 = rows_2d(x, K);
  const int64_t M = x2.size(0), N = a.N;
  at::Tensor y = at::empty(out_shape(x, N), x.options());
  if (M == 0) return y;
  const float* bp = a.bias.defined() ? a.bias.data_ptr<float>() : nullptr;
  const float* asp = a.act_scale.defined() ? a.act_scale.data_ptr<float>() : nullptr;

  // cuSPARSELt wants Mp rows of codes (the pad rows zero) with row stride K.
  at::Tensor cw;
  const bool large = M > LV_CUDA_SPARSE_SMALL_M;
  if (large && a.G == 1 && cslt_enabled() && lv_cuda_cslt_supported(N, K)) cw = cslt_weight(op, a);
  const int64_t rows = cw.defined() ? lv_cuda_cslt_rows(M) : M;
  const int64_t ldq = cw.defined() ? K : (K + 15) / 16 * 16;  // 16: cuBLASLt / __dp4a words
  at::Tensor xq = at::empty({rows, ldq}, x.options().dtype(at::kChar));
  at::Tensor xs = at::empty({M}, x.options().dtype(at::kFloat));
  if (rows > M) xq.narrow(0, M, rows - M).zero_();
  const int64_t ldx = M > 1 ? x2.stride(0) : K;
  check_cuda(lv_cuda_quantize_int8(x2.data_ptr(), xdt, ldx, M, K, asp, -1, xq.data_ptr<int8_t>(),
                                   ldq, xs.data_ptr<float>(), stream()),
             op, "lv_cuda_quantize_int8", false);

  if (cw.defined()) {
    const size_t wsb = lv_cuda_cslt_qgemm_workspace(M, N, K);
    if (wsb > 0) {
      at::Tensor ws = scratch(x, wsb);
      const lv_status st = lv_cuda_cslt_qgemm_int8(
          cw.data_ptr(), xq.data_ptr<int8_t>(), ldq, xs.data_ptr<float>(),
          a.wscale.data_ptr<float>(), bp, M, N, K, y.data_ptr(), xdt, N, ws.data_ptr(), wsb,
          stream());
      if (st != LV_E_UNSUPPORTED) {
        check_cuda(st, op, "lv_cuda_cslt_qgemm_int8");
        return y;
      }
    }
  }
  if (!large) {
    check_cuda(lv_cuda_sparse_qgemm_int8(xq.data_ptr<int8_t>(), ldq, xs.data_ptr<float>(),
                                         a.values.data_ptr<int8_t>(), ldv_of(a),
                                         a.mask_bits.data_ptr<uint8_t>(), a.mask_bits.stride(0),
                                         a.KV, a.wscale.data_ptr<float>(), a.group_size, bp, M, N,
                                         K, y.data_ptr(), xdt, N, stream()),
               op, "lv_cuda_sparse_qgemm_int8");
    return y;
  }
  // Large M without cuSPARSELt: decompress N-chunks and run the dense product.
  int64_t nc = std::max<int64_t>(1, kTileBytes / K);
  if (nc >= 4) nc -= nc % 4;  // cuBLASLt wants N % 4 == 0
  nc = std::min(nc, N);
  at::Tensor tile = at::empty({nc, K}, x.options().dtype(at::kChar));
  const size_t wsb = lv_cuda_qgemm_int8_workspace(M, nc, K, a.group_size);
  at::Tensor ws;
  if (wsb > 0) ws = scratch(x, wsb);
  void* lt = wsb > 0 ? static_cast<void*>(at::cuda::getCurrentCUDABlasLtHandle()) : nullptr;
  const int64_t ysz = lv_dtype_size(xdt);
  for (int64_t n0 = 0; n0 < N; n0 += nc) {
    const int64_t nn = std::min(nc, N - n0);
    check_cuda(lv_cuda_sparse_decompress(
                   static_cast<const int8_t*>(a.values.data_ptr()) + n0 * ldv_of(a), 1, ldv_of(a),
                   a.mask_bits.data_ptr<uint8_t>() + n0 * a.mask_bits.stride(0),
                   a.mask_bits.stride(0), nn, K, a.KV, tile.data_ptr(), K, nullptr, stream()),
               op, "lv_cuda_sparse_decompress");
    const size_t wsn = nn == nc ? wsb : lv_cuda_qgemm_int8_workspace(M, nn, K, a.group_size);
    check_cuda(lv_cuda_qgemm_int8(xq.data_ptr<int8_t>(), ldq, xs.data_ptr<float>(),
                                  tile.data_ptr<int8_t>(), K, a.wscale.data_ptr<float>() + n0 * a.G,
                                  a.group_size, bp ? bp + n0 : nullptr, M, nn, K,
                                  static_cast<char*>(y.data_ptr()) + n0 * ysz, xdt, N,
                                  wsn > 0 && wsn <= wsb ? ws.data_ptr() : nullptr,
                                  wsn <= wsb ? wsn : 0, wsn > 0 && wsn <= wsb ? lt : nullptr,
                                  stream()),
               op, "lv_cuda_qgemm_int8", false);
  }
  return y;
}

// ---- input gradients ------------------------------------------------------------------------

at::Tensor sparse_grad_input_cuda(const char* op, const at::Tensor& grad_y,
                                  const at::Tensor& values, const at::Tensor& mask_bits,
                                  const at::Tensor* wscale, int64_t K,
                                  const c10::optional<at::Tensor>& act_scale) {
  const lv_dtype gdt = float_dtype(grad_y, op, "grad_y");
  const bool int8 = wscale != nullptr;
  SparseArgs a = prepare_sparse(op, grad_y, "grad_y", K, values, mask_bits, int8, wscale,
                                c10::nullopt, act_scale);
  LV_CHECK_VALUE(grad_y.dim() >= 1 && grad_y.size(-1) == a.N, op,
                 "grad_y's last dimension must be N = ", a.N, " (the weight's out-features), "
                 "got grad_y of shape ", grad_y.sizes());
  const c10::cuda::CUDAGuard guard(grad_y.device());
  const int64_t N = a.N;
  at::Tensor g2 = rows_2d(grad_y, N);
  const int64_t M = g2.size(0);
  at::Tensor gx = at::empty(out_shape(grad_y, K), grad_y.options());
  if (M == 0) return gx;
  const int64_t ldg = M > 1 ? g2.stride(0) : N;
  const size_t wsb = lv_cuda_sparse_grad_workspace(N, K);
  at::Tensor ws = scratch(grad_y, wsb);
  lv_status st;
  if (int8)
    st = lv_cuda_sparse_qlinear_grad_input(
        g2.data_ptr(), gdt, ldg, a.values.data_ptr<int8_t>(), ldv_of(a),
        a.mask_bits.data_ptr<uint8_t>(), a.mask_bits.stride(0), a.KV, a.wscale.data_ptr<float>(),
        a.group_size, a.act_scale.defined() ? a.act_scale.data_ptr<float>() : nullptr, M, N, K,
        gx.data_ptr(), gdt, K, ws.data_ptr(), wsb, stream());
  else
    st = lv_cuda_sparse_linear_grad_input(
        g2.data_ptr(), gdt, ldg, a.values.data_ptr(), float_dtype(a.values, op, "values"),
        ldv_of(a), a.mask_bits.data_ptr<uint8_t>(), a.mask_bits.stride(0), a.KV, M, N, K,
        gx.data_ptr(), gdt, K, ws.data_ptr(), wsb, stream());
  check_cuda(st, op, int8 ? "lv_cuda_sparse_qlinear_grad_input" : "lv_cuda_sparse_linear_grad_input");
  return gx;
}

at::Tensor sparse_linear_grad_input_cuda(const at::Tensor& grad_y, const at::Tensor& values,
                                         const at::Tensor& mask_bits, int64_t K) {
  return sparse_grad_input_cuda("sparse_linear_grad_input", grad_y, values, mask_bits, nullptr,
                                K, c10::nullopt);
}

at::Tensor sparse_qlinear_grad_input_cuda(const at::Tensor& grad_y, const at::Tensor& qvalues,
                                          const at::Tensor& mask_bits, const at::Tensor& wscale,
                                          int64_t K, const c10::optional<at::Tensor>& act_scale) {
  return sparse_grad_input_cuda("sparse_qlinear_grad_input", grad_y, qvalues, mask_bits, &wscale,
                                K, act_scale);
}

}  // namespace

TORCH_LIBRARY_IMPL(lowvram, CUDA, m) {
  m.impl("nm_mask", &nm_mask_cuda);
  m.impl("sparse_compress", &sparse_compress_cuda);
  m.impl("sparse_decompress", &sparse_decompress_cuda);
  m.impl("sparse_linear", &sparse_linear_cuda);
  m.impl("sparse_qlinear", &sparse_qlinear_cuda);
  m.impl("sparse_linear_grad_input", &sparse_linear_grad_input_cuda);
  m.impl("sparse_qlinear_grad_input", &sparse_qlinear_grad_input_cuda);
}

}  // namespace lowvram
