"""lowvram.quantize — ``quantize_(model)``: replace a model's ``nn.Linear``
modules by :class:`lowvram.nn.QLinear` in place, as torchao's ``quantize_``
does, optionally after SmoothQuant calibration.

By default every plain ``nn.Linear`` (and Hugging Face's ``Conv1D``, GPT-2's
transposed Linear, and lowvram's SparseLinear, which becomes SparseQLinear)
is replaced except the output head: a
module named ``lm_head`` or any Linear whose weight is the model's input
embedding (tied weights), which stay float as the Hugging Face integrations
of bitsandbytes keep them. Subclasses of Linear that other modules read as
tensors (``nn.MultiheadAttention``'s ``out_proj``) are left alone.

SmoothQuant (Xiao et al., 2023, arXiv:2211.10438): with ``calib`` (model inputs)
and ``smooth=alpha``, forward hooks record each Linear's per-input-channel
activation maximum amax_x[k]; with amax_w[k] the weight column's maximum,
``s_k = amax_x[k]^alpha / amax_w[k]^(1 - alpha)``. The module then quantizes
``x * (1 / s)`` and its weight is quantized from ``W * s`` (columns), which
moves activation outliers into the weights where per-channel scales absorb
them.
"""
from typing import Any, Callable, Dict, Iterable, Optional, Union

import torch
from torch import nn

from .nn import QLinear, SparseLinear, SparseQLinear, is_hf_conv1d, linear_weight

FilterFn = Callable[[nn.Module, str], bool]


def _output_heads(model: nn.Module) -> set:
    """Names of Linears that are the model's output head."""
    heads = set()
    emb = None
    get = getattr(model, "get_input_embeddings", None)
    if callable(get):
        try:
            emb = get()
        except (NotImplementedError, AttributeError):
            emb = None
    emb_w = getattr(emb, "weight", None)
    for name, m in model.named_modules():
        if not isinstance(m, nn.Linear):
            continue
        if name.split(".")[-1] == "lm_head" or (emb_w is not None and m.weight is emb_w):
            heads.add(name)
    return heads


def default_filter(model: nn.Module) -> FilterFn:
    """The filter quantize_ uses when none is given (see the module docstring)."""
    heads = _output_heads(model)

    def keep(module: nn.Module, fqn: str) -> bool:
        return (type(module) in (nn.Linear, SparseLinear) or is_hf_conv1d(module)) \
            and fqn not in heads

    return keep


def run_calibration(model: nn.Module, calib: Union[Iterable[Any], Callable[[nn.Module], Any]]):
    """Runs calibration inputs through the model without gradients: ``calib``
    is a callable taking the model, or an iterable whose items are a tensor
    (``model(x)``), a tuple/list (``model(*x)``) or a dict (``model(**x)``)."""
    with torch.no_grad():
        if callable(calib) and not isinstance(calib, (list, tuple)):
            calib(model)
            return
        for item in calib:
            if isinstance(item, dict):
                model(**item)
            elif isinstance(item, (tuple, list)):
                model(*item)
            else:
                model(item)


def collect_act_amax(model: nn.Module, names: Iterable[str],
                     calib: Union[Iterable[Any], Callable[[nn.Module], Any]]) -> Dict[str, torch.Tensor]:
    """Per-input-channel max |x| seen by each named Linear over the calibration
    inputs (forward pre-hooks keep one running [K] maximum per module; no
    activation is stored)."""
    mods = dict(model.named_modules())
    amax: Dict[str, torch.Tensor] = {}
    hooks = []

    def make_hook(name):
        def hook(module, args):
            x = args[0].detach()
            cur = x.reshape(-1, x.shape[-1]).abs().amax(dim=0).float()
            prev = amax.get(name)
            amax[name] = cur if prev is None else torch.maximum(prev, cur)
        return hook

    for name in names:
        hooks.append(mods[name].register_forward_pre_hook(make_hook(name)))
    try:
        run_calibration(model, calib)
    finally:
        for h in hooks:
            h.remove()
    return amax


def smooth_factors(act_amax: torch.Tensor, weight: torch.Tensor, alpha: float) -> torch.Tensor:
    """SmoothQuant's s [K] for one Linear: amax_x^alpha / amax_w^(1-alpha),
    with channels that never fired (or all-zero weight columns) left at 1."""
    w_amax = weight.detach().abs().amax(dim=0).float().to(act_amax.device)
    s = act_amax.clamp(min=1e-5).pow(alpha) / w_amax.clamp(min=1e-5).pow(1.0 - alpha)
    dead = (act_amax <= 0) | (w_amax <= 0) | ~torch.isfinite(s)
    return torch.where(dead, torch.ones_like(s), s).clamp(min=1e-5, max=1e5)


def _set_submodule(model: nn.Module, fqn: str, new: nn.Module) -> None:
    parent_name, _, child = fqn.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def quantize_(model: nn.Module, filter_fn: Optional[FilterFn] = None, group_size: int = -1,
              calib: Optional[Union[Iterable[Any], Callable[[nn.Module], Any]]] = None,
              smooth: Optional[float] = None, progress: Optional[bool] = None,
              verbose: bool = False) -> nn.Module:
    """Replaces ``nn.Linear`` modules of ``model`` by :class:`QLinear` in place
    and returns the model.

    Args:
        filter_fn: ``filter_fn(module, fqn) -> bool`` chooses the Linears to
            replace; default: every plain Linear except the output head.
        group_size: -1 for one scale per output channel, or a multiple of 64
            dividing in_features for one scale per group of input columns.
        calib: model inputs for SmoothQuant calibration (an iterable of
            tensors / tuples / dicts, or a callable run with the model).
        smooth: SmoothQuant's alpha in [0, 1] (0.5–0.8 typical); needs calib.
        progress: show a tqdm bar (default: for models with >= 50M Linear weights).
        verbose: print one line per replaced module.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"lowvram.quantize_: model must be an nn.Module, got {type(model).__name__}")
    if smooth is not None:
        if calib is None:
            raise ValueError("lowvram.quantize_: smooth needs calib (model inputs to measure "
                             "activation ranges on)")
        if not (0.0 <= float(smooth) <= 1.0):
            raise ValueError(f"lowvram.quantize_: smooth (alpha) must be in [0, 1], got {smooth}")
    if filter_fn is None:
        filter_fn = default_filter(model)
    targets = [(name, m) for name, m in model.named_modules()
               if (linear_weight(m) is not None or isinstance(m, SparseLinear))
               and filter_fn(m, name)]

    act_amax: Dict[str, torch.Tensor] = {}
    if smooth is not None:
        act_amax = collect_act_amax(model, [n for n, _ in targets], calib)
    elif calib is not None:
        raise ValueError("lowvram.quantize_: calib is only used with smooth=alpha")

    total = sum(m.in_features * m.out_features if isinstance(m, SparseLinear)
                else linear_weight(m).numel() for _, m in targets)
    if progress is None:
        progress = total >= 50_000_000
    it = targets
    if progress:
        from tqdm.auto import tqdm
        it = tqdm(targets, desc="lowvram.quantize_", unit="linear")
    for name, lin in it:
        a = None
        sparse = isinstance(lin, SparseLinear)
        if smooth is not None and name in act_amax:
            w = lin.dense_weight() if sparse else linear_weight(lin)
            a = 1.0 / smooth_factors(act_amax[name], w, float(smooth))
        if sparse:  # prune then quantize: scales from the kept weights, same mask
            q = SparseQLinear.from_sparse_linear(lin, group_size=group_size, act_scale=a)
        else:
            q = QLinear.from_linear(lin, group_size=group_size, act_scale=a)
        _set_submodule(model, name, q)
        if verbose:
            print(f"lowvram.quantize_: {name}: {q.extra_repr()}")
    return model
