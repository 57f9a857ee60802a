"""lowvram.nn — modules that swap in for ``torch.nn.Linear``.

``QLinear`` holds int8 weights per output channel (or per group of input
columns) and quantizes its input per row on every call
(``torch.ops.lowvram.qlinear``). Its ``state_dict`` holds the canonical,
device-independent tensors: ``qweight`` int8 [N, K], ``wscale`` float32 [N]
(or [N, G]), ``bias`` when the Linear had one, and ``act_scale`` float32 [K]
when SmoothQuant factors were applied. Loading a checkpoint with missing,
extra or wrongly typed keys raises (torch's strict loading plus dtype and
shape checks here).
"""
from typing import Optional

import torch
from torch import Tensor, nn

from . import memory, ops


def _fmt_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return f"{n} B"


def is_hf_conv1d(module: nn.Module) -> bool:
    """Hugging Face's Conv1D (transformers.pytorch_utils): a Linear whose weight
    is stored transposed, [in_features, out_features] (GPT-2 family)."""
    return (type(module).__name__ == "Conv1D" and hasattr(module, "nf")
            and isinstance(getattr(module, "weight", None), Tensor)
            and module.weight.dim() == 2 and module.weight.shape[1] == module.nf)


def linear_weight(module: nn.Module) -> Optional[Tensor]:
    """The [out, in] weight of an nn.Linear or a Hugging Face Conv1D, else None."""
    if isinstance(module, nn.Linear):
        return module.weight
    if is_hf_conv1d(module):
        return module.weight.t()
    return None


class QLinear(nn.Module):
    """int8 dynamic-quantized Linear: ``y = x W^T + b`` with W stored as int8
    codes times float32 scales and x quantized per row on the fly.

    Build one from a float Linear with :meth:`from_linear`, or let
    :func:`lowvram.quantize_` replace every Linear of a model. ``x`` may be
    float32, bfloat16 or float16; the output has ``x``'s dtype. Gradients flow
    to ``x`` (straight through the activation quantization) and to ``bias``;
    the int8 weight is frozen (train LoRA adapters on top of it).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 group_size: int = -1, smooth: bool = False, device=None,
                 dtype: Optional[torch.dtype] = None) -> None:
        super().__init__()
        if in_features < 1 or out_features < 1:
            raise ValueError(f"lowvram.QLinear: in_features and out_features must be >= 1, "
                             f"got {in_features}, {out_features}")
        if group_size not in (-1, in_features) and (
                group_size <= 0 or in_features % group_size or group_size % 64):
            raise ValueError(f"lowvram.QLinear: group_size must be -1 or a multiple of 64 "
                             f"dividing in_features = {in_features}, got {group_size}")
        self.in_features = in_features
        self.out_features = out_features
        self.group_size = group_size
        self.register_buffer("qweight", torch.zeros(out_features, in_features, dtype=torch.int8,
                                                    device=device))
        wshape = (out_features,) if group_size == -1 else (
            out_features, in_features // group_size)
        self.register_buffer("wscale", torch.zeros(wshape, dtype=torch.float32, device=device))
        if bias:
            self.bias = nn.Parameter(torch.zeros(out_features, device=device,
                                                 dtype=dtype or torch.float32))
        else:
            self.register_parameter("bias", None)
        if smooth:
            self.register_buffer("act_scale", torch.ones(in_features, dtype=torch.float32,
                                                         device=device))
        else:
            self.act_scale = None

    @classmethod
    def from_linear(cls, linear: nn.Module, group_size: int = -1,
                    act_scale: Optional[Tensor] = None,
                    hugepages: Optional[bool] = None) -> "QLinear":
        """Quantizes a float Linear's weight (per output channel, or per group
        of ``group_size`` input columns). With ``act_scale`` [K] (SmoothQuant),
        the module will quantize ``x * act_scale`` and its weight is quantized
        after dividing column k by ``act_scale[k]``, so the product is unchanged
        in exact arithmetic. Hugging Face's ``Conv1D`` (GPT-2's Linear, weight
        stored [in, out]) is accepted too.

        ``hugepages``: keep a CPU int8 weight in 2 MiB pages
        (lowvram.memory.empty_hugepages); default: when it is at least 2 MiB."""
        w = linear_weight(linear)
        if w is None:
            raise TypeError(f"lowvram.QLinear.from_linear: expected an nn.Linear (or a Hugging "
                            f"Face Conv1D), got {type(linear).__name__}")
        w = w.detach()
        if w.dtype not in (torch.float32, torch.bfloat16, torch.float16):
            w = w.float()
        N, K = w.shape
        # built on the meta device, then given real tensors: no zero-filled
        # temporary the size of the weight
        m = cls(K, N, bias=linear.bias is not None, group_size=group_size,
                smooth=act_scale is not None, device="meta",
                dtype=linear.bias.dtype if linear.bias is not None else None)
        if act_scale is not None:
            a = act_scale.detach().to(device=w.device, dtype=torch.float32)
            if a.shape != (K,) or not bool(torch.isfinite(a).all()) or not bool((a > 0).all()):
                raise ValueError("lowvram.QLinear.from_linear: act_scale must be [K] = "
                                 f"[{K}], finite and > 0, got shape {tuple(a.shape)}")
            w = w.float() / a
            m.act_scale = a.clone()
        qw, ws = ops.quantize_weight(w.contiguous(), group_size)
        if hugepages is None:
            hugepages = qw.device.type == "cpu" and qw.numel() >= memory.HUGEPAGE
        if hugepages and qw.device.type == "cpu":
            qwh = memory.empty_hugepages(qw.shape, torch.int8)
            qwh.copy_(qw)
            qw = qwh
        m.qweight = qw
        m.wscale = ws.reshape(m.wscale.shape).contiguous()
        if linear.bias is not None:
            m.bias = nn.Parameter(linear.bias.detach().clone(),
                                  requires_grad=linear.bias.requires_grad)
        return m

    def to_linear(self, dtype: torch.dtype = torch.float32) -> nn.Linear:
        """A float Linear with the dequantized weight (what this module computes,
        up to the activations' quantization)."""
        from .reference import dequantize_weight
        lin = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None,
                        device=self.qweight.device, dtype=dtype)
        with torch.no_grad():
            lin.weight.copy_(dequantize_weight(self.qweight, self.wscale, self.act_scale,
                                               dtype=torch.float32))
            if self.bias is not None:
                lin.bias.copy_(self.bias)
        return lin

    def forward(self, x: Tensor) -> Tensor:
        return torch.ops.lowvram.qlinear(x, self.qweight, self.wscale, self.bias,
                                         self.act_scale)

    def weight_bytes(self) -> int:
        """Bytes of the stored weight (int8 codes + scales + act_scale)."""
        n = self.qweight.numel() + 4 * self.wscale.numel()
        if self.act_scale is not None:
            n += 4 * self.act_scale.numel()
        return n

    def extra_repr(self) -> str:
        g = "per-channel" if self.group_size == -1 else f"group_size={self.group_size}"
        float_bytes = 4 * self.in_features * self.out_features
        s = (f"in_features={self.in_features}, out_features={self.out_features}, "
             f"bias={self.bias is not None}, int8 {g}, weight {_fmt_bytes(self.weight_bytes())}"
             f" (fp32 {_fmt_bytes(float_bytes)})")
        if self.act_scale is not None:
            s += ", smoothed"
        return s

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        _check_state(self, state_dict, prefix, ("qweight", "wscale", "act_scale"),
                     unexpected_keys, error_msgs)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)


def _check_state(module: nn.Module, state_dict, prefix: str, names, unexpected_keys,
                 error_msgs) -> None:
    """torch copies across dtypes silently (an int8 buffer would take float
    values, truncated): refuse wrong dtypes and shapes with the key's name,
    and an act_scale the module was not built with."""
    cls = type(module).__name__
    for name in names:
        mine = getattr(module, name, None)
        t = state_dict.get(prefix + name)
        if t is None:
            continue
        if mine is None:
            unexpected_keys.append(prefix + name)
        elif t.dtype != mine.dtype:
            error_msgs.append(f"lowvram.{cls}: {prefix}{name} must be {mine.dtype}, got {t.dtype}")
        elif tuple(t.shape) != tuple(mine.shape):
            error_msgs.append(f"lowvram.{cls}: {prefix}{name} must have shape "
                              f"{tuple(mine.shape)}, got {tuple(t.shape)}")


def _pattern_str(n: Optional[int], m: Optional[int], kept: int, K: int) -> str:
    return f"{n}:{m}" if n else f"{100 * (1 - kept / K):.0f}% unstructured"


class SparseLinear(nn.Module):
    """A pruned Linear stored compressed: the kept weights ``values`` [N, KV]
    (in the weight's float dtype) and a bit mask ``mask_bits`` [N, ceil(K/8)]
    (lowvram/sparse.h), multiplied by ``torch.ops.lowvram.sparse_linear``,
    which reads only those bytes. Every row keeps the same number of weights
    (N:M patterns, or unstructured pruning at a per-row sparsity)."""

    def __init__(self, in_features: int, out_features: int, kept: int, bias: bool = True,
                 n: Optional[int] = None, m: Optional[int] = None, device=None,
                 dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        if not 0 <= kept <= in_features:
            raise ValueError(f"lowvram.SparseLinear: kept must be in [0, in_features = "
                             f"{in_features}], got {kept}")
        self.in_features, self.out_features, self.kept = in_features, out_features, kept
        self.n, self.m = n, m
        self.register_buffer("values", torch.zeros(out_features, kept, dtype=dtype,
                                                   device=device))
        self.register_buffer("mask_bits", torch.zeros(out_features, (in_features + 7) // 8,
                                                      dtype=torch.uint8, device=device))
        self.bias = nn.Parameter(torch.zeros(out_features, dtype=dtype, device=device)) \
            if bias else None

    @classmethod
    def from_linear(cls, linear: nn.Module, mask: Tensor, n: Optional[int] = None,
                    m: Optional[int] = None) -> "SparseLinear":
        """Compresses a float Linear (or HF Conv1D) under a bool mask [N, K]."""
        w = linear_weight(linear)
        if w is None:
            raise TypeError(f"lowvram.SparseLinear.from_linear: expected an nn.Linear, "
                            f"got {type(linear).__name__}")
        w = w.detach().contiguous()
        N, K = w.shape
        values, bits = ops.sparse_compress(w, mask.to(w.device))
        mod = cls(K, N, values.shape[1], bias=linear.bias is not None, n=n, m=m, device="meta",
                  dtype=w.dtype)
        mod.values, mod.mask_bits = values, bits
        if linear.bias is not None:
            mod.bias = nn.Parameter(linear.bias.detach().clone(),
                                    requires_grad=linear.bias.requires_grad)
        return mod

    def dense_weight(self) -> Tensor:
        """The decompressed [N, K] weight (pruned entries 0)."""
        return ops.sparse_decompress(self.values, self.mask_bits, self.in_features)

    def to_linear(self) -> nn.Linear:
        lin = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None,
                        device=self.values.device, dtype=self.values.dtype)
        with torch.no_grad():
            lin.weight.copy_(self.dense_weight())
            if self.bias is not None:
                lin.bias.copy_(self.bias)
        return lin

    def forward(self, x: Tensor) -> Tensor:
        return torch.ops.lowvram.sparse_linear(x, self.values, self.mask_bits, self.bias)

    def weight_bytes(self) -> int:
        return memory.storage_bytes(self.values, self.mask_bits)

    def extra_repr(self) -> str:
        dense = self.in_features * self.out_features * self.values.element_size()
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, "
                f"{_pattern_str(self.n, self.m, self.kept, self.in_features)} "
                f"{str(self.values.dtype).replace('torch.', '')}, weight "
                f"{_fmt_bytes(self.weight_bytes())} (dense {_fmt_bytes(dense)})")

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        _check_state(self, state_dict, prefix, ("values", "mask_bits"), unexpected_keys,
                     error_msgs)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)


class SparseQLinear(nn.Module):
    """A pruned int8 Linear stored compressed: kept int8 codes ``qvalues``
    [N, KV], ``mask_bits`` and QLinear's ``wscale`` (and ``act_scale``), run by
    ``torch.ops.lowvram.sparse_qlinear`` — the same bits as QLinear on the
    decompressed weight, reading 0.625 bytes per weight at 2:4."""

    def __init__(self, in_features: int, out_features: int, kept: int, bias: bool = True,
                 group_size: int = -1, smooth: bool = False, n: Optional[int] = None,
                 m: Optional[int] = None, device=None, dtype: Optional[torch.dtype] = None) -> None:
        super().__init__()
        self.in_features, self.out_features, self.kept = in_features, out_features, kept
        self.group_size, self.n, self.m = group_size, n, m
        self.register_buffer("qvalues", torch.zeros(out_features, kept, dtype=torch.int8,
                                                    device=device))
        self.register_buffer("mask_bits", torch.zeros(out_features, (in_features + 7) // 8,
                                                      dtype=torch.uint8, device=device))
        wshape = (out_features,) if group_size == -1 else (
            out_features, in_features // group_size)
        self.register_buffer("wscale", torch.zeros(wshape, dtype=torch.float32, device=device))
        self.bias = nn.Parameter(torch.zeros(out_features, dtype=dtype or torch.float32,
                                             device=device)) if bias else None
        if smooth:
            self.register_buffer("act_scale", torch.ones(in_features, dtype=torch.float32,
                                                         device=device))
        else:
            self.act_scale = None

    @classmethod
    def from_qlinear(cls, q: "QLinear", mask: Tensor, n: Optional[int] = None,
                     m: Optional[int] = None) -> "SparseQLinear":
        """Prunes a QLinear: its int8 codes under a bool mask [N, K], its scales kept."""
        qvalues, bits = ops.sparse_compress(q.qweight, mask.to(q.qweight.device))
        mod = cls(q.in_features, q.out_features, qvalues.shape[1], bias=q.bias is not None,
                  group_size=q.group_size, smooth=q.act_scale is not None, n=n, m=m,
                  device="meta")
        mod.qvalues, mod.mask_bits, mod.wscale = qvalues, bits, q.wscale.clone()
        if q.act_scale is not None:
            mod.act_scale = q.act_scale.clone()
        if q.bias is not None:
            mod.bias = nn.Parameter(q.bias.detach().clone(), requires_grad=q.bias.requires_grad)
        return mod

    @classmethod
    def from_sparse_linear(cls, s: SparseLinear, group_size: int = -1,
                           act_scale: Optional[Tensor] = None) -> "SparseQLinear":
        """Quantizes a SparseLinear: scales from the kept weights (pruned ones
        are 0 and never raise a row's absmax), the same mask."""
        q = QLinear.from_linear(s.to_linear(), group_size=group_size, act_scale=act_scale,
                                hugepages=False)
        keep = ops.sparse_decompress(torch.ones_like(s.values, dtype=torch.int8), s.mask_bits,
                                     s.in_features).bool()
        return cls.from_qlinear(q, keep, n=s.n, m=s.m)

    def to_qlinear(self) -> "QLinear":
        """The dense QLinear with the decompressed codes (pruned codes 0)."""
        q = QLinear(self.in_features, self.out_features, bias=self.bias is not None,
                    group_size=self.group_size, smooth=self.act_scale is not None,
                    device="meta")
        q.qweight = ops.sparse_decompress(self.qvalues, self.mask_bits, self.in_features)
        q.wscale = self.wscale.clone()
        if self.act_scale is not None:
            q.act_scale = self.act_scale.clone()
        if self.bias is not None:
            q.bias = nn.Parameter(self.bias.detach().clone())
        return q

    def to_linear(self, dtype: torch.dtype = torch.float32) -> nn.Linear:
        return self.to_qlinear().to_linear(dtype)

    def forward(self, x: Tensor) -> Tensor:
        return torch.ops.lowvram.sparse_qlinear(x, self.qvalues, self.mask_bits, self.wscale,
                                                self.bias, self.act_scale)

    def weight_bytes(self) -> int:
        t = [self.qvalues, self.mask_bits, self.wscale]
        if self.act_scale is not None:
            t.append(self.act_scale)
        return memory.storage_bytes(*t)

    def extra_repr(self) -> str:
        g = "per-channel" if self.group_size == -1 else f"group_size={self.group_size}"
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, "
                f"{_pattern_str(self.n, self.m, self.kept, self.in_features)} int8 {g}, weight "
                f"{_fmt_bytes(self.weight_bytes())} (fp32 "
                f"{_fmt_bytes(4 * self.in_features * self.out_features)})"
                + (", smoothed" if self.act_scale is not None else ""))

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        _check_state(self, state_dict, prefix, ("qvalues", "mask_bits", "wscale", "act_scale"),
                     unexpected_keys, error_msgs)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)
