"""lowvram.reference — the kernels' contracts (``ops/include/lowvram/*.h``) in
plain PyTorch: slow, obvious, independent of the C code, and the oracle of
the Python tests.

``quantize_int8``, ``quantize_weight`` and ``qlinear`` give the kernels' bits
exactly (same float32 operations in the same order). ``qlinear_grad_input``
follows the contract's fmaf chain in float64 then rounds, so it matches the
kernels to float32 rounding (a fused multiply-add has no exact eager-PyTorch
spelling). ``dequantize_weight`` and ``linear_ste`` are the float function
whose gradient qlinear's autograd formula implements (straight through the
activation quantization); they run in float64 for gradcheck.
"""
from typing import Optional, Tuple

import torch
from torch import Tensor

K_MAX = 131072           # LV_QGEMM_K_MAX: exact int32 sums for any int8 weights
MIN_ABSMAX = 2.0 ** -100  # LV_QUANT_MIN_ABSMAX: smaller groups quantize to zero


def _quantize_groups(v: Tensor) -> Tuple[Tensor, Tensor]:
    """v [..., G, gs] float32 -> codes int8 [..., G, gs], scales float32 [..., G]."""
    absmax = v.abs().amax(dim=-1)                       # NaN propagates, Inf stays Inf
    nonfinite = ~torch.isfinite(absmax)
    tiny = absmax < MIN_ABSMAX
    safe = torch.where(nonfinite | tiny, torch.ones_like(absmax), absmax)
    # tensor / tensor: torch computes `127.0 / t` as reciprocal(t) * 127 (two
    # roundings); the contract is one correctly rounded division
    c127 = torch.full_like(safe, 127.0)
    scale = safe / c127
    inv = c127 / safe
    q = torch.round(v * inv.unsqueeze(-1)).clamp_(-127, 127)  # round half to even
    q = torch.where((nonfinite | tiny).unsqueeze(-1), torch.zeros_like(q), q)
    q = torch.nan_to_num(q, nan=0.0)  # rows already zeroed; keeps the int cast defined
    scale = torch.where(nonfinite, torch.full_like(scale, float("nan")), scale)
    scale = torch.where(tiny & ~nonfinite, torch.zeros_like(scale), scale)
    return q.to(torch.int8), scale


def quantize_int8(x: Tensor, act_scale: Optional[Tensor] = None,
                  group_size: int = -1) -> Tuple[Tensor, Tensor]:
    """Codes [..., K] int8 and scales [...] (or [..., G]) float32 of x (* act_scale)."""
    K = x.shape[-1]
    v = x.to(torch.float32)
    if act_scale is not None:
        v = v * act_scale.to(torch.float32)
    gs = K if group_size <= 0 else group_size
    q, s = _quantize_groups(v.reshape(*v.shape[:-1], K // gs, gs))
    q = q.reshape(x.shape)
    return q, (s.squeeze(-1) if group_size <= 0 else s)


def quantize_weight(w: Tensor, group_size: int = -1) -> Tuple[Tensor, Tensor]:
    """qweight [N, K] int8 and wscale [N] (or [N, K / group_size]) float32."""
    N, K = w.shape
    if group_size == K:
        q, s = quantize_int8(w, group_size=-1)
        return q, s.reshape(N, 1)
    return quantize_int8(w, group_size=group_size)


def _groups(wscale: Tensor) -> int:
    return 1 if wscale.dim() == 1 else wscale.shape[1]


def qlinear(x: Tensor, qweight: Tensor, wscale: Tensor, bias: Optional[Tensor] = None,
            act_scale: Optional[Tensor] = None) -> Tensor:
    """The kernels' output, bit for bit: exact int sums, then float32 in the
    contract's order, rounded to x's dtype."""
    N, K = qweight.shape
    G = _groups(wscale)
    gs = K // G
    q, xs = quantize_int8(x.reshape(-1, K), act_scale)
    qg = q.to(torch.int64).reshape(-1, G, gs)
    wg = qweight.to(torch.int64).reshape(N, G, gs)
    acc = torch.einsum("mgk,ngk->mng", qg, wg)           # exact int64 sums
    ws = wscale.reshape(N, G)
    t = acc[:, :, 0].to(torch.float32) * ws[:, 0]
    for g in range(1, G):
        t = t + acc[:, :, g].to(torch.float32) * ws[:, g]
    y = t * xs.unsqueeze(-1)
    if bias is not None:
        y = y + bias.to(torch.float32)
    return y.to(x.dtype).reshape(*x.shape[:-1], N)


def dequantize_weight(qweight: Tensor, wscale: Tensor,
                      act_scale: Optional[Tensor] = None,
                      dtype: torch.dtype = torch.float32) -> Tensor:
    """The float weight [N, K] that qweight and wscale stand for (the weight
    of the original Linear when act_scale is given: column k times act_scale[k])."""
    N, K = qweight.shape
    G = _groups(wscale)
    w = qweight.to(dtype).reshape(N, G, K // G) * wscale.to(dtype).reshape(N, G, 1)
    w = w.reshape(N, K)
    if act_scale is not None:
        w = w * act_scale.to(dtype)
    return w


def linear_ste(x: Tensor, qweight: Tensor, wscale: Tensor, bias: Optional[Tensor] = None,
               act_scale: Optional[Tensor] = None) -> Tensor:
    """The float function whose gradient qlinear's backward computes: x times
    the dequantized weight (activation quantization passed straight through),
    in x's dtype (use float64 for gradcheck)."""
    w = dequantize_weight(qweight, wscale, act_scale, dtype=x.dtype)
    y = x @ w.T
    return y if bias is None else y + bias.to(x.dtype)


def qlinear_grad_input(grad_y: Tensor, qweight: Tensor, wscale: Tensor,
                       act_scale: Optional[Tensor] = None) -> Tensor:
    """gx[m, k] = fmaf chain over n of (gy[m, n] * wscale[n, g(k)]) * w[n, k],
    then * act_scale[k]: each fmaf done in float64 and rounded to float32."""
    N, K = qweight.shape
    G = _groups(wscale)
    gy = grad_y.reshape(-1, N).to(torch.float32)
    wsk = wscale.reshape(N, G).repeat_interleave(K // G, dim=1)   # [N, K] float32
    w = qweight.to(torch.float64)
    acc = torch.zeros(gy.shape[0], K, dtype=torch.float32, device=gy.device)
    for n in range(N):
        s = gy[:, n:n + 1] * wsk[n]                                  # float32 product
        acc = (s.to(torch.float64) * w[n] + acc.to(torch.float64)).to(torch.float32)
    if act_scale is not None:
        acc = acc * act_scale.to(torch.float32)
    return acc.to(grad_y.dtype).reshape(*grad_y.shape[:-1], K)


# ---------------------------------------------------------------- sparse (lowvram/sparse.h)


def nm_mask(score: Tensor, n: int, m: int) -> Tensor:
    """bool [N, K]: in every m consecutive columns of a row keep the n largest
    scores; equal scores keep the lower column index first."""
    N, K = score.shape
    s = score.to(torch.float32).reshape(N, K // m, m)
    order = torch.sort(-s, dim=-1, stable=True).indices   # larger first, ties by index
    keep = torch.zeros(s.shape, dtype=torch.bool, device=score.device)
    keep.scatter_(-1, order[..., :n], True)
    return keep.reshape(N, K)


def kept_per_row(K: int, sparsity: float) -> int:
    """KV of unstructured pruning at a per-row sparsity: K - round(K * s),
    rounding half to even (Python's round)."""
    return K - round(K * sparsity)


def unstructured_mask(score: Tensor, sparsity: float) -> Tensor:
    """bool [N, K]: per row, the K - round(K * sparsity) largest scores (ties:
    lower column index first) — Wanda's per-output comparison group."""
    N, K = score.shape
    kv = kept_per_row(K, sparsity)
    order = torch.sort(-score.to(torch.float32), dim=-1, stable=True).indices
    keep = torch.zeros((N, K), dtype=torch.bool, device=score.device)
    keep.scatter_(-1, order[:, :kv], True)
    return keep


def pack_mask(keep: Tensor) -> Tensor:
    """bool [N, K] -> uint8 [N, ceil(K / 8)], bit k % 8 of byte k / 8 (LSB first)."""
    N, K = keep.shape
    KB = (K + 7) // 8
    pad = torch.zeros((N, KB * 8), dtype=torch.uint8, device=keep.device)
    pad[:, :K] = keep.to(torch.uint8)
    weights = (1 << torch.arange(8, device=keep.device, dtype=torch.int32))
    return (pad.reshape(N, KB, 8).to(torch.int32) * weights).sum(-1).to(torch.uint8)


def unpack_mask(mask_bits: Tensor, K: int) -> Tensor:
    """uint8 [N, ceil(K / 8)] -> bool [N, K]."""
    N, KB = mask_bits.shape
    shifts = torch.arange(8, device=mask_bits.device, dtype=torch.int32)
    bits = (mask_bits.to(torch.int32).unsqueeze(-1) >> shifts) & 1
    return bits.reshape(N, KB * 8)[:, :K].to(torch.bool)


def sparse_compress(w: Tensor, keep: Tensor) -> Tuple[Tensor, Tensor]:
    """(values [N, KV] in row order, mask_bits [N, ceil(K / 8)]) of w under keep."""
    N, K = w.shape
    return w[keep].reshape(N, -1), pack_mask(keep)


def sparse_decompress(values: Tensor, mask_bits: Tensor, K: int) -> Tensor:
    """The dense [N, K] weight (pruned entries 0) of a compressed one."""
    keep = unpack_mask(mask_bits, K)
    w = torch.zeros((values.shape[0], K), dtype=values.dtype, device=values.device)
    w[keep] = values.reshape(-1)
    return w


def sparse_qlinear(x: Tensor, qvalues: Tensor, mask_bits: Tensor, wscale: Tensor,
                   bias: Optional[Tensor] = None, act_scale: Optional[Tensor] = None) -> Tensor:
    """qlinear on the decompressed int8 weight: the kernels' bits exactly."""
    return qlinear(x, sparse_decompress(qvalues, mask_bits, x.shape[-1]), wscale, bias, act_scale)


def sparse_linear(x: Tensor, values: Tensor, mask_bits: Tensor,
                  bias: Optional[Tensor] = None) -> Tensor:
    """x @ W^T (+ bias) with the decompressed weight, computed in x's dtype
    (use float64 as the oracle of the kernels' float32 sums)."""
    w = sparse_decompress(values, mask_bits, x.shape[-1]).to(x.dtype)
    y = x @ w.T
    return y if bias is None else y + bias.to(x.dtype)
