"""lowvram.ops — typed Python wrappers of ``torch.ops.lowvram.*``, with every
op's fake (meta) kernel and autograd formula beside it.

The fake kernels let ``torch.compile(fullgraph=True)`` and ``torch.export``
trace the ops without running them; they check what shapes alone can decide
(the C++ shim checks everything again, with the same messages). The autograd
formulas call other lowvram ops, never a dequantized float weight:

* ``qlinear``: gradient to ``x`` through ``qlinear_grad_input`` (straight
  through the activation quantization), to ``bias`` as a sum over rows;
  ``qweight``, ``wscale`` and ``act_scale`` are frozen.
"""
from typing import Optional, Tuple

import torch
from torch import Tensor

_FLOATS = (torch.float32, torch.bfloat16, torch.float16)


def _check(cond: bool, op: str, msg: str, exc=RuntimeError) -> None:
    if not cond:
        raise exc(f"lowvram.{op}: {msg}")


# ---------------------------------------------------------------- typed wrappers


def quantize_int8(x: Tensor, act_scale: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
    """Per-row int8 codes ``[..., K]`` and float32 scales ``[...]`` of ``x``
    (of ``x * act_scale`` when given); contract in ``lowvram/qgemm.h``."""
    return torch.ops.lowvram.quantize_int8(x, act_scale)


def quantize_weight(w: Tensor, group_size: int = -1) -> Tuple[Tensor, Tensor]:
    """int8 weights ``[N, K]`` and float32 scales ``[N]`` (or ``[N, K / group_size]``)."""
    return torch.ops.lowvram.quantize_weight(w, group_size)


def qlinear(
    x: Tensor,
    qweight: Tensor,
    wscale: Tensor,
    bias: Optional[Tensor] = None,
    act_scale: Optional[Tensor] = None,
    *,
    out: Optional[Tensor] = None,
) -> Tensor:
    """``y = dequant(int8(x) @ qweight^T) (+ bias)`` in ``x``'s dtype."""
    if out is not None:
        torch.ops.lowvram.qlinear.out(x, qweight, wscale, bias, act_scale, out=out)
        return out
    return torch.ops.lowvram.qlinear(x, qweight, wscale, bias, act_scale)


def qlinear_grad_input(
    grad_y: Tensor, qweight: Tensor, wscale: Tensor, act_scale: Optional[Tensor] = None
) -> Tensor:
    """``grad_y @ dequant(qweight)`` (``* act_scale``), the gradient of qlinear to x."""
    return torch.ops.lowvram.qlinear_grad_input(grad_y, qweight, wscale, act_scale)


def cpu_isa() -> str:
    """The CPU kernel variant in use: "ref", "avx2" or "avx512"."""
    return torch.ops.lowvram.cpu_isa()


def set_cpu_isa(isa: str) -> None:
    """Forces a CPU kernel variant ("ref", "avx2", "avx512") for later calls."""
    torch.ops.lowvram.set_cpu_isa(isa)


def cpu_isa_supported(isa: str) -> bool:
    """Whether this CPU can run a kernel variant."""
    return torch.ops.lowvram.cpu_isa_supported(isa)


# ---------------------------------------------------------------- fake kernels


def _check_float(op: str, t: Tensor, arg: str) -> None:
    _check(t.dtype in _FLOATS, op, f"{arg} must be float32, bfloat16 or float16, got {t.dtype}",
           TypeError)


def _check_devices(op: str, ref: Tensor, ref_arg: str, **others) -> None:
    for arg, t in others.items():
        if t is not None:
            _check(t.device == ref.device, op,
                   f"{arg} must be on the same device as {ref_arg} ({ref.device}), got {t.device}")


def _check_weights(op: str, qweight: Tensor, wscale: Tensor) -> Tuple[int, int]:
    _check(qweight.dtype == torch.int8, op, f"qweight must be int8, got {qweight.dtype}", TypeError)
    _check(qweight.dim() == 2, op, f"qweight must be 2-D [N, K], got {qweight.dim()}-D", ValueError)
    _check(wscale.dtype == torch.float32, op, f"wscale must be float32, got {wscale.dtype}",
           TypeError)
    N, K = qweight.shape
    _check(wscale.dim() in (1, 2), op, f"wscale must be [N] or [N, G], got {tuple(wscale.shape)}",
           ValueError)
    return N, K


@torch.library.register_fake("lowvram::quantize_int8")
def _quantize_int8_fake(x, act_scale=None):
    _check_float("quantize_int8", x, "x")
    _check_devices("quantize_int8", x, "x", act_scale=act_scale)
    _check(x.dim() >= 1, "quantize_int8", "x must have at least 1 dimension [..., K]", ValueError)
    return x.new_empty(x.shape, dtype=torch.int8), x.new_empty(x.shape[:-1], dtype=torch.float32)


@torch.library.register_fake("lowvram::quantize_weight")
def _quantize_weight_fake(w, group_size=-1):
    _check_float("quantize_weight", w, "w")
    _check(w.dim() == 2, "quantize_weight", f"w must be 2-D [N, K], got {w.dim()}-D", ValueError)
    N, K = w.shape
    q = w.new_empty((N, K), dtype=torch.int8)
    if group_size == -1:
        return q, w.new_empty((N,), dtype=torch.float32)
    torch._check(group_size > 0, lambda: "lowvram.quantize_weight: group_size must be -1 or > 0")
    return q, w.new_empty((N, K // group_size), dtype=torch.float32)


@torch.library.register_fake("lowvram::qlinear")
def _qlinear_fake(x, qweight, wscale, bias=None, act_scale=None):
    _check_float("qlinear", x, "x")
    _check_devices("qlinear", x, "x", qweight=qweight, wscale=wscale, bias=bias,
                   act_scale=act_scale)
    N, K = _check_weights("qlinear", qweight, wscale)
    torch._check(x.shape[-1] == K,
                 lambda: f"lowvram.qlinear: x's last dimension must be K = {K}, got {x.shape}")
    return x.new_empty((*x.shape[:-1], N))


@torch.library.register_fake("lowvram::qlinear.out")
def _qlinear_out_fake(x, qweight, wscale, bias=None, act_scale=None, *, out):
    return None


@torch.library.register_fake("lowvram::qlinear_grad_input")
def _qlinear_grad_input_fake(grad_y, qweight, wscale, act_scale=None):
    _check_float("qlinear_grad_input", grad_y, "grad_y")
    _check_devices("qlinear_grad_input", grad_y, "grad_y", qweight=qweight, wscale=wscale,
                   act_scale=act_scale)
    N, K = _check_weights("qlinear_grad_input", qweight, wscale)
    torch._check(grad_y.shape[-1] == N, lambda: (
        f"lowvram.qlinear_grad_input: grad_y's last dimension must be N = {N}, "
        f"got {grad_y.shape}"))
    return grad_y.new_empty((*grad_y.shape[:-1], K))


# ---------------------------------------------------------------- autograd


def _qlinear_setup_context(ctx, inputs, output):
    x, qweight, wscale, bias, act_scale = inputs
    ctx.save_for_backward(qweight, wscale, act_scale)
    ctx.bias_dtype = None if bias is None else bias.dtype


def _qlinear_backward(ctx, grad):
    qweight, wscale, act_scale = ctx.saved_tensors
    # trailing arguments left at their defaults may be missing from needs_input_grad
    need = tuple(ctx.needs_input_grad) + (False,) * 5
    if need[2] or need[4]:
        raise RuntimeError(
            "lowvram.qlinear: wscale and act_scale are frozen (no gradient); detach them or "
            "train a float copy (QLinear.to_linear) or LoRA adapters on top")
    grad_x = grad_bias = None
    if need[0]:
        grad_x = torch.ops.lowvram.qlinear_grad_input(grad, qweight, wscale, act_scale)
    if need[3]:
        grad_bias = grad.reshape(-1, grad.shape[-1]).sum(0, dtype=torch.float32).to(ctx.bias_dtype)
    return grad_x, None, None, grad_bias, None


torch.library.register_autograd(
    "lowvram::qlinear", _qlinear_backward, setup_context=_qlinear_setup_context)


# ---------------------------------------------------------------- sparse family


def nm_mask(score: Tensor, n: int, m: int) -> Tensor:
    """bool [N, K]: the n largest scores of every m consecutive columns (ties:
    lower column index); contract in ``lowvram/sparse.h``."""
    return torch.ops.lowvram.nm_mask(score, n, m)


def sparse_compress(w: Tensor, mask: Tensor) -> Tuple[Tensor, Tensor]:
    """(values [N, KV], mask_bits [N, ceil(K / 8)] uint8) of w [N, K] under a
    bool mask keeping the same number of weights in every row."""
    return torch.ops.lowvram.sparse_compress(w, mask)


def sparse_decompress(values: Tensor, mask_bits: Tensor, K: int) -> Tensor:
    """The dense [N, K] weight (pruned entries 0)."""
    return torch.ops.lowvram.sparse_decompress(values, mask_bits, K)


def sparse_linear(x: Tensor, values: Tensor, mask_bits: Tensor,
                  bias: Optional[Tensor] = None) -> Tensor:
    """``x @ W^T (+ bias)`` with W compressed (float values)."""
    return torch.ops.lowvram.sparse_linear(x, values, mask_bits, bias)


def sparse_qlinear(x: Tensor, qvalues: Tensor, mask_bits: Tensor, wscale: Tensor,
                   bias: Optional[Tensor] = None, act_scale: Optional[Tensor] = None) -> Tensor:
    """qlinear with the int8 weight compressed (the same bits as qlinear on
    the decompressed weight)."""
    return torch.ops.lowvram.sparse_qlinear(x, qvalues, mask_bits, wscale, bias, act_scale)


def _mask_bits_cols(K) -> int:
    return (K + 7) // 8


@torch.library.register_fake("lowvram::nm_mask")
def _nm_mask_fake(score, n, m):
    _check(score.dim() == 2, "nm_mask", f"score must be 2-D [N, K], got {score.dim()}-D",
           ValueError)
    return score.new_empty(score.shape, dtype=torch.bool)


@torch.library.register_fake("lowvram::sparse_compress")
def _sparse_compress_fake(w, mask):
    _check(w.dim() == 2, "sparse_compress", f"w must be 2-D [N, K], got {w.dim()}-D", ValueError)
    N, K = w.shape
    ctx = torch.library.get_ctx()
    kv = ctx.new_dynamic_size()  # how many weights each row keeps is data-dependent
    return w.new_empty((N, kv)), w.new_empty((N, _mask_bits_cols(K)), dtype=torch.uint8)


@torch.library.register_fake("lowvram::sparse_decompress")
def _sparse_decompress_fake(values, mask_bits, K):
    return values.new_empty((values.shape[0], K))


def _check_sparse(op, ref, ref_arg, values, mask_bits, **others):
    _check_devices(op, ref, ref_arg, values=values, mask_bits=mask_bits, **others)
    _check(values.dim() == 2, op, f"values must be 2-D [N, KV], got {values.dim()}-D", ValueError)
    _check(mask_bits.dtype == torch.uint8, op, f"mask_bits must be uint8, got {mask_bits.dtype}",
           TypeError)


@torch.library.register_fake("lowvram::sparse_linear")
def _sparse_linear_fake(x, values, mask_bits, bias=None):
    _check_float("sparse_linear", x, "x")
    _check_sparse("sparse_linear", x, "x", values, mask_bits, bias=bias)
    return x.new_empty((*x.shape[:-1], values.shape[0]))


@torch.library.register_fake("lowvram::sparse_qlinear")
def _sparse_qlinear_fake(x, qvalues, mask_bits, wscale, bias=None, act_scale=None):
    _check_float("sparse_qlinear", x, "x")
    _check_sparse("sparse_qlinear", x, "x", qvalues, mask_bits, wscale=wscale, bias=bias,
                  act_scale=act_scale)
    return x.new_empty((*x.shape[:-1], qvalues.shape[0]))


@torch.library.register_fake("lowvram::sparse_linear_grad_input")
def _sparse_linear_grad_input_fake(grad_y, values, mask_bits, K):
    _check_float("sparse_linear_grad_input", grad_y, "grad_y")
    _check_sparse("sparse_linear_grad_input", grad_y, "grad_y", values, mask_bits)
    return grad_y.new_empty((*grad_y.shape[:-1], K))


@torch.library.register_fake("lowvram::sparse_qlinear_grad_input")
def _sparse_qlinear_grad_input_fake(grad_y, qvalues, mask_bits, wscale, K, act_scale=None):
    _check_float("sparse_qlinear_grad_input", grad_y, "grad_y")
    _check_sparse("sparse_qlinear_grad_input", grad_y, "grad_y", qvalues, mask_bits,
                  wscale=wscale, act_scale=act_scale)
    return grad_y.new_empty((*grad_y.shape[:-1], K))


def _bias_grad(grad, dtype):
    return grad.reshape(-1, grad.shape[-1]).sum(0, dtype=torch.float32).to(dtype)


def _sparse_linear_setup_context(ctx, inputs, output):
    x, values, mask_bits, bias = (tuple(inputs) + (None,) * 4)[:4]
    ctx.save_for_backward(values, mask_bits)
    ctx.K = x.shape[-1]
    ctx.bias_dtype = None if bias is None else bias.dtype


def _sparse_linear_backward(ctx, grad):
    values, mask_bits = ctx.saved_tensors
    need = tuple(ctx.needs_input_grad) + (False,) * 4
    if need[1]:
        raise RuntimeError("lowvram.sparse_linear: values are frozen (no gradient); train LoRA "
                           "adapters on top, or decompress to a float Linear")
    gx = torch.ops.lowvram.sparse_linear_grad_input(grad, values, mask_bits, ctx.K) if need[0] \
        else None
    gb = _bias_grad(grad, ctx.bias_dtype) if need[3] else None
    return gx, None, None, gb


torch.library.register_autograd("lowvram::sparse_linear", _sparse_linear_backward,
                                setup_context=_sparse_linear_setup_context)


def _sparse_qlinear_setup_context(ctx, inputs, output):
    x, qvalues, mask_bits, wscale, bias, act_scale = (tuple(inputs) + (None,) * 6)[:6]
    ctx.save_for_backward(qvalues, mask_bits, wscale, act_scale)
    ctx.K = x.shape[-1]
    ctx.bias_dtype = None if bias is None else bias.dtype


def _sparse_qlinear_backward(ctx, grad):
    qvalues, mask_bits, wscale, act_scale = ctx.saved_tensors
    need = tuple(ctx.needs_input_grad) + (False,) * 6
    if need[3] or need[5]:
        raise RuntimeError("lowvram.sparse_qlinear: wscale and act_scale are frozen (no "
                           "gradient); train LoRA adapters on top")
    gx = torch.ops.lowvram.sparse_qlinear_grad_input(grad, qvalues, mask_bits, wscale, ctx.K,
                                                      act_scale) if need[0] else None
    gb = _bias_grad(grad, ctx.bias_dtype) if need[4] else None
    return gx, None, None, None, gb, None


torch.library.register_autograd("lowvram::sparse_qlinear", _sparse_qlinear_backward,
                                setup_context=_sparse_qlinear_setup_context)


# ---------------------------------------------------------------- grad_accum_
# Fused multi-tensor gradient accumulation (contract: lowvram/accum.h):
# acc[i] = fmaf(scale, float(grads[i]), acc[i]) elementwise, one rounding.


def grad_accum_(accs, grads, scale: float) -> None:
    """``accs[i] += scale * grads[i]`` for whole lists in one call (one
    parallel region on CPU, one kernel launch on CUDA). ``accs``: float32,
    contiguous, mutated in place; ``grads``: float32 / bfloat16 / float16 of
    the same shapes (any strides: strided ones are copied first), all on one
    device. Each element is ``fmaf(scale, g, acc)``: one rounding, the same
    bits for any thread count. ``scale`` must be finite (as float32)."""
    accs, grads = list(accs), list(grads)
    if not accs and not grads:
        return  # nothing to dispatch on (an op with no tensors has no device)
    torch.ops.lowvram.grad_accum_(accs, grads, float(scale))


def _grad_accum_fake(acc, grads, scale):
    op = "grad_accum_"
    _check(len(acc) == len(grads), op, "acc and grads must be lists of the same length, got "
           f"{len(acc)} and {len(grads)}", ValueError)
    _check(scale == scale and abs(scale) <= 3.4028234663852886e38, op,
           f"scale must be finite (as float32), got {scale}", ValueError)
    for i, (a, g) in enumerate(zip(acc, grads)):
        _check(a.dtype == torch.float32, op, f"acc[{i}] must be float32, got {a.dtype}", TypeError)
        _check(a.device == acc[0].device, op,
               f"acc[{i}] must be on the same device as acc[0] ({acc[0].device}), got {a.device}")
        _check(a.is_contiguous(), op, f"acc[{i}] must be contiguous, got strides {a.stride()}",
               ValueError)
        _check(g.dtype in _FLOATS, op,
               f"grads[{i}] must be float32, bfloat16 or float16, got {g.dtype}", TypeError)
        _check(g.device == acc[0].device, op,
               f"grads[{i}] must be on the same device as acc[0] ({acc[0].device}), got {g.device}")
        torch._check(g.shape == a.shape, lambda: (
            f"lowvram.grad_accum_: grads[{i}] must have acc[{i}]'s shape {list(a.shape)}, "
            f"got {list(g.shape)}"))
    return None


torch.library.register_fake("lowvram::grad_accum_")(_grad_accum_fake)
