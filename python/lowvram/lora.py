"""lowvram.lora — low-rank adapters (LoRA, Hu et al., 2021, arXiv:2106.09685)
on frozen int8, pruned and float Linears: ``lora_(model)`` adds them in place,
``merge_(model)`` folds them into the bases, ``lora_state_dict`` /
``load_lora_state_dict`` and ``save_lora`` / ``load_lora`` (safetensors) move
the adapters alone, and ``peft_register(config)`` lets Hugging Face PEFT's
``LoraConfig`` target lowvram's modules.

What an adapted module computes
-------------------------------
For a base ``y = base(x)`` (QLinear, SparseQLinear, SparseLinear, nn.Linear or
Hugging Face's Conv1D) with ``K`` inputs and ``N`` outputs::

    y = base(x) + (B @ (A @ dropout(x))) * (alpha / rank)

with ``A`` [rank, K] initialised as PEFT does (``kaiming_uniform_(a=sqrt(5))``,
nn.Linear's default) and ``B`` [N, rank] zeros, so a freshly adapted model
computes bit for bit what it computed before. The order of operations is
PEFT's (``lora_B(lora_A(dropout(x))) * scaling``, added to the base output),
so the same A and B give the same bits in both. The adapter runs in the
adapters' dtype (float32 for int8 bases, the weight's dtype for float bases)
and is cast to the base output's dtype before the addition.

Gradients reach ``x`` through the frozen bases by their own autograd formulas
(``lowvram.ops``: ``qlinear_grad_input``, ``sparse_*_grad_input``), which never
materialize a float weight; the bases' codes, scales, values, masks and biases
get no gradient.

Where the adapters live (the checkpoint question)
-------------------------------------------------
The adapters are registered as submodules **of the base module itself**
(``lora_A``, ``lora_B``: bias-free nn.Linear, ``lora_dropout``) and added by a
forward hook; the base keeps its class and its state_dict keys. So a model's
``state_dict`` after ``lora_`` is the one before plus
``<name>.lora_A.weight`` / ``<name>.lora_B.weight`` (PEFT's adapter key names,
without PEFT's ``base_model.model.`` prefix); an int8 checkpoint saved before
``lora_`` still loads into the adapted model (``strict=False``: only the
adapter keys are missing), and ``isinstance(m, QLinear)`` still holds. A
wrapper module (PEFT's design) would rename every base key to
``<name>.base_layer.*``.

Merging
-------
``merge_`` adds ``(alpha / rank) · B @ A`` to float bases (exact up to the
rounding of the weight's dtype) and removes the adapters. int8 and pruned
bases cannot absorb a dense float update without changing what they store:
``merge_`` refuses them with the reason and, with ``requantize=True``,
dequantizes the int8 weight, adds the update and quantizes again (new codes
and scales; the same group size and SmoothQuant factors), and for pruned bases
adds the update and keeps the **original mask**: the update's entries on
pruned positions are dropped (the N:M pattern, and the memory it saves,
survive). A single warning reports what was lost, measured: the int8 rounding
error of the merged weights and the fraction of the update's norm that fell on
pruned positions.
"""
import json
import math
import warnings
from collections import OrderedDict
from typing import Callable, Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn

from . import ops
from .nn import QLinear, SparseLinear, SparseQLinear, is_hf_conv1d, linear_weight
from .quantize import _output_heads, _set_submodule

FilterFn = Callable[[nn.Module, str], bool]

_FORMAT = "lowvram.lora"
_FORMAT_VERSION = "1"


# --------------------------------------------------------------------------- targets


def is_lora_target(module: nn.Module) -> bool:
    """Whether lora_ can adapt this module: QLinear, SparseQLinear, SparseLinear,
    a plain nn.Linear (not a subclass: nn.MultiheadAttention reads its
    ``out_proj`` weight directly and would bypass the adapter) or a Hugging
    Face Conv1D."""
    return (type(module) in (QLinear, SparseQLinear, SparseLinear, nn.Linear)
            or is_hf_conv1d(module))


def has_lora(module: nn.Module) -> bool:
    """Whether ``module`` carries adapters added by :func:`lora_`."""
    return "lora_A" in module._modules and any(
        h is _lora_hook for h in module._forward_hooks.values())


def lora_modules(model: nn.Module) -> List[Tuple[str, nn.Module]]:
    """(name, module) of every module of ``model`` that carries adapters."""
    return [(n, m) for n, m in model.named_modules() if has_lora(m)]


def default_filter(model: nn.Module) -> FilterFn:
    """Every target module except the output head: a module named ``lm_head``
    or a Linear whose weight is the input embedding (tied weights), as
    :func:`lowvram.quantize_` decides."""
    heads = _output_heads(model)

    def keep(module: nn.Module, fqn: str) -> bool:
        return is_lora_target(module) and fqn not in heads \
            and fqn.split(".")[-1] != "lm_head"

    return keep


def _features(module: nn.Module) -> Tuple[int, int]:
    """(K in-features, N out-features) of a target."""
    if is_hf_conv1d(module):
        return module.weight.shape[0], module.nf
    return module.in_features, module.out_features


def _base_device_dtype(module: nn.Module) -> Tuple[torch.device, torch.dtype]:
    """Where the adapters go and their default dtype: the weight's float dtype
    for float bases, float32 for int8 bases."""
    if isinstance(module, QLinear):
        return module.qweight.device, torch.float32
    if isinstance(module, SparseQLinear):
        return module.qvalues.device, torch.float32
    if isinstance(module, SparseLinear):
        return module.values.device, module.values.dtype
    w = module.weight
    return w.device, w.dtype


# --------------------------------------------------------------------------- the adapter


def _lora_hook(module: nn.Module, args, kwargs, output: Tensor) -> Tensor:
    """The forward hook of an adapted module: base output + scaled adapter.
    A module-level function (not a closure) so that deepcopy and pickling of
    the model keep it, and has_lora can recognise it."""
    x = args[0] if args else next(iter(kwargs.values()))
    a = module.lora_A
    h = module.lora_dropout(x.to(a.weight.dtype))
    d = module.lora_B(a(h)) * module.lora_scaling
    return output + d.to(output.dtype)


def _add_adapter(module: nn.Module, rank: int, alpha: float, dropout: float,
                 dtype: Optional[torch.dtype]) -> None:
    K, N = _features(module)
    device, base_dtype = _base_device_dtype(module)
    dtype = dtype or base_dtype
    a = nn.Linear(K, rank, bias=False, device=device, dtype=dtype)
    b = nn.Linear(rank, N, bias=False, device=device, dtype=dtype)
    # PEFT's init (init_lora_weights=True): A as nn.Linear's default, B zeros
    nn.init.kaiming_uniform_(a.weight, a=math.sqrt(5))
    nn.init.zeros_(b.weight)
    module.lora_A = a
    module.lora_B = b
    # new modules start in train mode: follow the base's (an eval() model stays eval)
    module.lora_dropout = (nn.Dropout(dropout) if dropout > 0 else nn.Identity()) \
        .train(module.training)
    a.train(module.training)
    b.train(module.training)
    module.lora_rank = rank
    module.lora_alpha = float(alpha)
    module.lora_scaling = float(alpha) / rank
    module.register_forward_hook(_lora_hook, with_kwargs=True)


def _remove_adapter(module: nn.Module) -> None:
    for k in [k for k, h in module._forward_hooks.items() if h is _lora_hook]:
        del module._forward_hooks[k]
        module._forward_hooks_with_kwargs.pop(k, None)
        getattr(module, "_forward_hooks_always_called", {}).pop(k, None)
    for name in ("lora_A", "lora_B", "lora_dropout"):
        delattr(module, name)
    for name in ("lora_rank", "lora_alpha", "lora_scaling"):
        module.__dict__.pop(name, None)


def _freeze_all_but_adapters(model: nn.Module) -> None:
    for p in model.parameters():
        p.requires_grad_(False)
    for _, m in lora_modules(model):
        m.lora_A.weight.requires_grad_(True)
        m.lora_B.weight.requires_grad_(True)


def _check_args(rank, alpha, dropout) -> None:
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise ValueError(f"lowvram.lora_: rank must be an int >= 1, got {rank!r}")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) \
            or not math.isfinite(alpha) or alpha <= 0:
        raise ValueError(f"lowvram.lora_: alpha must be a finite number > 0, got {alpha!r}")
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) \
            or not 0.0 <= dropout < 1.0:
        raise ValueError(f"lowvram.lora_: dropout must be in [0, 1), got {dropout!r}")


def lora_(model: nn.Module, rank: int = 8, alpha: float = 16, dropout: float = 0.0,
          filter_fn: Optional[FilterFn] = None, dtype: Optional[torch.dtype] = None,
          verbose: bool = False) -> nn.Module:
    """Adds trainable LoRA adapters to ``model`` in place, freezes every other
    parameter (base weights and biases, norms, embeddings, heads) and returns
    the model.

    Args:
        rank: the adapters' rank r >= 1.
        alpha: the update is scaled by ``alpha / rank``.
        dropout: dropout on the adapter's input, in [0, 1) (active in train mode).
        filter_fn: ``filter_fn(module, fqn) -> bool`` chooses the modules
            (the convention of quantize_ / prune_); only QLinear,
            SparseQLinear, SparseLinear, plain nn.Linear and HF Conv1D can be
            chosen. Default: all of them except the output head.
        dtype: the adapters' dtype; default the base weight's float dtype,
            float32 for int8 bases.
        verbose: print one line per adapted module.

    Calling lora_ again on other modules adds adapters there too (every
    adapter stays trainable); a module that already has adapters raises.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"lowvram.lora_: model must be an nn.Module, got {type(model).__name__}")
    _check_args(rank, alpha, dropout)
    if dtype is not None and not dtype.is_floating_point:
        raise ValueError(f"lowvram.lora_: dtype must be a float dtype, got {dtype}")
    user_filter = filter_fn is not None
    if filter_fn is None:
        filter_fn = default_filter(model)
    targets = [(n, m) for n, m in model.named_modules()
               if is_lora_target(m) and filter_fn(m, n)]
    if not targets:
        raise ValueError(
            "lowvram.lora_: no target modules found: no QLinear, SparseQLinear, SparseLinear, "
            "nn.Linear or HF Conv1D " + ("passes filter_fn" if user_filter else
                                         "besides the output head") + " in the model")
    again = [n for n, m in targets if has_lora(m)]
    if again:
        raise ValueError(f"lowvram.lora_: {again[0]} already has LoRA adapters "
                         f"({len(again)} of the chosen modules do); merge_ them first or "
                         f"exclude them with filter_fn")
    for name, m in targets:
        _add_adapter(m, rank, alpha, dropout, dtype)
        if verbose:
            K, N = _features(m)
            print(f"lowvram.lora_: {name}: {type(m).__name__} [{N}, {K}] + rank {rank}")
    _freeze_all_but_adapters(model)
    return model


# --------------------------------------------------------------------------- adapters alone


def lora_state_dict(model: nn.Module) -> "OrderedDict[str, Tensor]":
    """The adapters alone: ``<name>.lora_A.weight`` [r, K] and
    ``<name>.lora_B.weight`` [N, r] of every adapted module (detached, shared
    with the model as state_dict's tensors are)."""
    sd = OrderedDict()
    for name, m in lora_modules(model):
        p = f"{name}." if name else ""
        sd[p + "lora_A.weight"] = m.lora_A.weight.detach()
        sd[p + "lora_B.weight"] = m.lora_B.weight.detach()
    return sd


def load_lora_state_dict(model: nn.Module, state_dict: Dict[str, Tensor],
                         strict: bool = True) -> nn.Module:
    """Copies adapter tensors (``lora_state_dict``'s keys) into the model's
    adapters. ``strict``: every adapter of the model must be in
    ``state_dict`` and every key must name one. Shapes must match; floats of
    another dtype are converted. A PEFT adapter's state dict (keys
    ``base_model.model.<name>.lora_A.weight``) loads too: the keys are the
    same but for that prefix (the rank and alpha must be PEFT's r and
    lora_alpha)."""
    name = "lowvram.load_lora_state_dict"
    peft_prefix = "base_model.model."
    if state_dict and all(k.startswith(peft_prefix) for k in state_dict):
        # PEFT's saved adapter (get_peft_model_state_dict / adapter_model.safetensors)
        state_dict = {k[len(peft_prefix):]: v for k, v in state_dict.items()}
    mine = lora_state_dict(model)
    if not mine:
        raise ValueError(f"{name}: the model has no LoRA adapters; call lowvram.lora_(model, "
                         f"...) with the rank and modules the adapters were trained with "
                         f"(or use lowvram.load_lora, which reads them from the file)")
    unexpected = [k for k in state_dict if k not in mine]
    missing = [k for k in mine if k not in state_dict]
    if unexpected or (strict and missing):
        parts = []
        if missing and strict:
            parts.append(f"missing {len(missing)} keys (first: {missing[:3]})")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} keys (first: {unexpected[:3]})")
        raise ValueError(f"{name}: state_dict does not match the model's adapters: "
                         + "; ".join(parts))
    for k, t in state_dict.items():
        dst = mine[k]
        if tuple(t.shape) != tuple(dst.shape):
            raise ValueError(f"{name}: {k} must have shape {tuple(dst.shape)}, got "
                             f"{tuple(t.shape)} (a different rank or layer size)")
        if not t.dtype.is_floating_point:
            raise TypeError(f"{name}: {k} must be a float tensor, got {t.dtype}")
    with torch.no_grad():
        for k, t in state_dict.items():
            mine[k].copy_(t)
    return model


def save_lora(model: nn.Module, path: str) -> None:
    """Writes the adapters alone to a safetensors file; the metadata records
    each adapted module's rank, alpha and dropout, so that :func:`load_lora`
    can rebuild them on a fresh model."""
    from safetensors.torch import save_file
    sd = {k: v.contiguous() for k, v in lora_state_dict(model).items()}
    if not sd:
        raise ValueError("lowvram.save_lora: the model has no LoRA adapters (call lowvram.lora_)")
    modules = {}
    for name, m in lora_modules(model):
        drop = m.lora_dropout.p if isinstance(m.lora_dropout, nn.Dropout) else 0.0
        modules[name] = {"rank": m.lora_rank, "alpha": m.lora_alpha, "dropout": drop}
    save_file(sd, path, metadata={"format": _FORMAT, "version": _FORMAT_VERSION,
                                  "modules": json.dumps(modules)})


def load_lora(model: nn.Module, path: str) -> nn.Module:
    """Loads adapters saved by :func:`save_lora`. A model without adapters gets
    them first, on the modules the file names with their rank, alpha and
    dropout (and everything else frozen, as lora_ does); a model with
    adapters must match the file (names, shapes, alpha)."""
    from safetensors import safe_open
    name = "lowvram.load_lora"
    with safe_open(path, framework="pt", device="cpu") as f:
        meta = f.metadata() or {}
        sd = {k: f.get_tensor(k) for k in f.keys()}
    if meta.get("format") != _FORMAT:
        raise ValueError(f"{name}: {path} is not a lowvram LoRA file (metadata format "
                         f"{meta.get('format')!r}, expected {_FORMAT!r})")
    modules = json.loads(meta["modules"])
    mods = dict(model.named_modules())
    if not lora_modules(model):
        for mname, cfg in modules.items():
            m = mods.get(mname)
            if m is None or not is_lora_target(m):
                raise ValueError(f"{name}: the file has adapters for {mname!r}, which the model "
                                 f"{'lacks' if m is None else 'cannot adapt'}")
        for mname, cfg in modules.items():
            _add_adapter(mods[mname], int(cfg["rank"]), float(cfg["alpha"]),
                         float(cfg.get("dropout", 0.0)), None)
        _freeze_all_but_adapters(model)
    else:
        for mname, cfg in modules.items():
            m = mods.get(mname)
            if m is not None and has_lora(m) and m.lora_alpha != float(cfg["alpha"]):
                raise ValueError(f"{name}: {mname} has alpha {m.lora_alpha}, the file "
                                 f"{cfg['alpha']}: the adapter would be scaled differently")
    return load_lora_state_dict(model, sd)


# --------------------------------------------------------------------------- merging


def _delta(m: nn.Module) -> Tensor:
    """(alpha / rank) · B @ A, [N, K], in float64 for float64 adapters and
    float32 otherwise."""
    a, b = m.lora_A.weight.detach(), m.lora_B.weight.detach()
    acc = torch.float64 if torch.float64 in (a.dtype, b.dtype) else torch.float32
    return (b.to(acc) @ a.to(acc)) * m.lora_scaling


def _keep_mask(values: Tensor, mask_bits: Tensor, K: int) -> Tensor:
    return ops.sparse_decompress(torch.ones_like(values, dtype=torch.int8), mask_bits, K).bool()


def _rel(err: Tensor, ref: Tensor) -> float:
    return float(err.double().norm() / ref.double().norm().clamp_min(1e-30))


def _replace_like(old: nn.Module, new: nn.Module) -> nn.Module:
    """Keeps the old module's mode and its bias's requires_grad."""
    new.train(old.training)
    if getattr(old, "bias", None) is not None and new.bias is not None:
        new.bias.requires_grad_(old.bias.requires_grad)
    return new


def merge_(model: nn.Module, requantize: bool = False) -> nn.Module:
    """Folds every adapter into its base and removes the adapters; returns
    the model.

    nn.Linear / Conv1D bases: ``W += (alpha / rank) · B @ A`` (computed in
    float32, float64 for float64 adapters, and rounded once to W's dtype).
    int8 and pruned bases raise ValueError unless ``requantize=True``:

    * QLinear: dequantize, add, quantize again (same group_size and
      act_scale); the new int8 codes round the merged weight.
    * SparseQLinear: the same, then the original mask is applied again.
    * SparseLinear: add, and keep the original mask.

    For pruned bases the update on pruned positions is dropped. One warning
    reports the measured int8 rounding error and the dropped fraction.
    Nothing changes when a refusal is raised.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"lowvram.merge_: model must be an nn.Module, got {type(model).__name__}")
    mods = lora_modules(model)
    if not mods:
        raise ValueError("lowvram.merge_: the model has no LoRA adapters (added by lowvram.lora_)")
    if not requantize:
        for name, m in mods:
            if isinstance(m, (QLinear, SparseQLinear)):
                raise ValueError(
                    f"lowvram.merge_: {name} is a {type(m).__name__} (int8 base): folding the "
                    f"adapter in needs re-quantization (dequantize, add scale·B@A, quantize to "
                    f"int8 again), which gives new int8 codes and scales and rounds the merged "
                    f"update to int8 precision, so the merged model only approximates the "
                    f"adapted one"
                    + (" and the N:M mask drops the update on pruned weights"
                       if isinstance(m, SparseQLinear) else "")
                    + ". Pass requantize=True to do it, or keep the adapters unmerged "
                    f"(rank·(in + out) floats per layer)")
            if isinstance(m, SparseLinear):
                raise ValueError(
                    f"lowvram.merge_: {name} is a SparseLinear (pruned base stored compressed): "
                    f"the update scale·B@A is dense, so adding it would break the N:M mask and "
                    f"the compressed storage. Pass requantize=True to add it and keep the "
                    f"original mask (the update on pruned positions is dropped), or keep the "
                    f"adapters unmerged")
    q_err, dropped, nq, ns = 0.0, 0.0, 0, 0
    with torch.no_grad():
        for name, m in mods:
            d = _delta(m)
            _remove_adapter(m)
            if isinstance(m, (nn.Linear,)) or is_hf_conv1d(m):
                w = linear_weight(m)  # Conv1D: a transposed view of its weight
                w.add_(d.to(device=w.device, dtype=w.dtype))
                continue
            if isinstance(m, SparseLinear):
                lin = m.to_linear()
                keep = _keep_mask(m.values, m.mask_bits, m.in_features)
                d = d.to(lin.weight.device)
                dropped = max(dropped, _rel(d[~keep], d))
                lin.weight.add_(d.to(lin.weight.dtype))
                new = SparseLinear.from_linear(lin, keep, n=m.n, m=m.m)
                ns += 1
            else:  # QLinear, SparseQLinear
                lin = m.to_linear(torch.float32)
                d = d.to(device=lin.weight.device, dtype=torch.float32)
                lin.weight.add_(d)
                keep = None
                if isinstance(m, SparseQLinear):
                    keep = _keep_mask(m.qvalues, m.mask_bits, m.in_features)
                    dropped = max(dropped, _rel(d[~keep], d))
                    lin.weight.mul_(keep)  # scales from the kept weights only
                    ns += 1
                target = lin.weight.clone()
                q = QLinear.from_linear(lin, group_size=m.group_size, act_scale=m.act_scale)
                new = SparseQLinear.from_qlinear(q, keep, n=m.n, m=m.m) if keep is not None \
                    else q
                q_err = max(q_err, _rel(q.to_linear().weight - target, target))
                nq += 1
            _set_submodule(model, name, _replace_like(m, new))
    if nq or ns:
        parts = []
        if nq:
            parts.append(f"re-quantized {nq} int8 base(s) to int8 (relative error of the merged "
                         f"weights up to {q_err:.2e})")
        if ns:
            parts.append(f"kept the masks of {ns} pruned base(s) (up to {100 * dropped:.1f}% "
                         f"of an update's norm fell on pruned positions and was dropped)")
        warnings.warn("lowvram.merge_: " + "; ".join(parts), stacklevel=2)
    return model


# --------------------------------------------------------------------------- PEFT


_PEFT_LAYER = None


def peft_layer_class():
    """PEFT's LoRA layer for lowvram's modules (a ``peft.tuners.lora.LoraLayer``
    around QLinear, SparseQLinear or SparseLinear; built on first use so that
    importing lowvram does not import peft)."""
    global _PEFT_LAYER
    if _PEFT_LAYER is not None:
        return _PEFT_LAYER
    from peft.tuners.lora.layer import LoraLayer

    class LowvramLoraLinear(nn.Module, LoraLayer):
        """PEFT LoRA on a frozen lowvram base: base_layer(x) plus every active
        adapter, ``lora_B(lora_A(dropout(x))) * scaling``, as PEFT's Linear."""

        def __init__(self, base_layer, adapter_name, config, r: int = 0,
                     lora_alpha: int = 1, **kwargs):
            if config.use_dora:
                raise ValueError("lowvram.peft_register: DoRA is not supported on lowvram "
                                 "bases (its magnitude needs the float weight)")
            super().__init__()
            LoraLayer.__init__(self, base_layer)
            self._active_adapter = adapter_name
            self.update_layer(adapter_name, r, lora_alpha=lora_alpha, config=config, **kwargs)

        def forward(self, x: Tensor, *args, **kwargs) -> Tensor:
            result = self.base_layer(x, *args, **kwargs)
            if self.disable_adapters:
                return result
            for active in self.active_adapters:
                if active not in self.lora_A.keys():
                    continue
                a, b = self.lora_A[active], self.lora_B[active]
                h = self.lora_dropout[active](x.to(a.weight.dtype))
                result = result + (b(a(h)) * self.scaling[active]).to(result.dtype)
            return result

        def merge(self, safe_merge: bool = False, adapter_names=None) -> None:
            raise ValueError(
                f"lowvram.peft_register: merging a PEFT adapter into a "
                f"{type(self.get_base_layer()).__name__} needs re-quantization or breaks its "
                f"N:M mask; use lowvram.lora_ and lowvram.merge_(model, requantize=True), or "
                f"keep the adapter unmerged")

        def unmerge(self) -> None:
            raise ValueError("lowvram.peft_register: lowvram bases are never merged")

        def __repr__(self) -> str:
            return "lora." + super().__repr__()

    LowvramLoraLinear.__module__ = __name__
    _PEFT_LAYER = LowvramLoraLinear
    return _PEFT_LAYER


def peft_register(config):
    """Lets a ``peft.LoraConfig`` target QLinear, SparseQLinear and SparseLinear
    modules (PEFT's experimental ``_register_custom_module``); returns the
    config. Use before ``peft.get_peft_model(model, config)``."""
    if not hasattr(config, "_register_custom_module"):
        raise TypeError(f"lowvram.peft_register: config must be a peft.LoraConfig with "
                        f"_register_custom_module (peft >= 0.14), got {type(config).__name__}")
    cls = peft_layer_class()
    config._register_custom_module({QLinear: cls, SparseQLinear: cls, SparseLinear: cls})
    return config
