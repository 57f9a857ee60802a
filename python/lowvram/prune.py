"""lowvram.prune — ``prune_(model)``: N:M (2:4, 4:8, ...) or unstructured
pruning that stores the pruned Linears compressed (:class:`SparseLinear`,
:class:`SparseQLinear`), so that the bytes really shrink and the kernels read
only the kept weights. Zeroing entries of a dense tensor saves nothing and is
not what this does.

Scores (the larger, the more a weight is kept):

* ``magnitude``: |W[n, k]|.
* ``wanda``: |W[n, k]| · ‖X[:, k]‖₂ (Sun et al., 2023, arXiv:2306.11695), with
  the input-column norms collected over calibration batches by forward
  pre-hooks that keep one running [K] sum of squares per Linear (float64);
  no activation is stored. Scores are compared within each group of m
  columns of a row (N:M) or within each row (unstructured: Wanda's per-output
  comparison group, every row keeping K - round(K·s) weights).

QLinear modules are pruned on their int8 codes (scores from the dequantized
weight) and become SparseQLinear with their scales unchanged; pruning first
and quantizing after (``quantize_`` turns SparseLinear into SparseQLinear)
gives scales from the kept weights only.
"""
from typing import Any, Callable, Dict, Iterable, Optional, Tuple, Union

import torch
from torch import nn

from . import ops, reference
from .nn import QLinear, SparseLinear, SparseQLinear, is_hf_conv1d, linear_weight
from .quantize import _output_heads, _set_submodule, run_calibration

FilterFn = Callable[[nn.Module, str], bool]
Calib = Union[Iterable[Any], Callable[[nn.Module], Any]]


def parse_sparsity(sparsity: Union[str, float]) -> Tuple[Optional[int], Optional[int], float]:
    """'n:m' -> (n, m, 1 - n/m); a float s in [0, 1) -> (None, None, s)."""
    if isinstance(sparsity, str):
        try:
            n_s, m_s = sparsity.split(":")
            n, m = int(n_s), int(m_s)
        except ValueError:
            raise ValueError(f"lowvram.prune_: sparsity must be 'n:m' or a float in [0, 1), "
                             f"got {sparsity!r}") from None
        if not 1 <= n <= m <= 64:
            raise ValueError(f"lowvram.prune_: sparsity 'n:m' needs 1 <= n <= m <= 64, "
                             f"got {sparsity!r}")
        return n, m, 1.0 - n / m
    if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float)):
        raise TypeError(f"lowvram.prune_: sparsity must be 'n:m' or a float in [0, 1), "
                        f"got {type(sparsity).__name__}")
    s = float(sparsity)
    if not 0.0 <= s < 1.0:
        raise ValueError(f"lowvram.prune_: sparsity must be in [0, 1), got {s}")
    return None, None, s


def _prunable(module: nn.Module) -> bool:
    return type(module) is nn.Linear or is_hf_conv1d(module) or type(module) is QLinear


def default_filter(model: nn.Module) -> FilterFn:
    """Every Linear, HF Conv1D and QLinear except the output head."""
    heads = _output_heads(model)
    return lambda module, fqn: _prunable(module) and fqn not in heads


def float_weight(module: nn.Module) -> torch.Tensor:
    """The [N, K] float weight a module computes with (dequantized for QLinear,
    in the original input's domain when it was smoothed)."""
    if isinstance(module, QLinear):
        return reference.dequantize_weight(module.qweight, module.wscale, module.act_scale)
    return linear_weight(module).detach().float()


def collect_input_norms(model: nn.Module, names: Iterable[str], calib: Calib) -> Dict[str, torch.Tensor]:
    """‖X[:, k]‖₂ over every calibration token, per input column, for each
    named module (a running float64 sum of squares per module)."""
    mods = dict(model.named_modules())
    sums: Dict[str, torch.Tensor] = {}
    hooks = []

    def make(name):
        def hook(module, args):
            x = args[0].detach()
            sq = x.reshape(-1, x.shape[-1]).to(torch.float64).pow(2).sum(0)
            sums[name] = sq if name not in sums else sums[name] + sq
        return hook

    for name in names:
        hooks.append(mods[name].register_forward_pre_hook(make(name)))
    try:
        run_calibration(model, calib)
    finally:
        for h in hooks:
            h.remove()
    return {k: v.sqrt().to(torch.float32) for k, v in sums.items()}


def score_weights(module: nn.Module, method: str, norm: Optional[torch.Tensor]) -> torch.Tensor:
    w = float_weight(module)
    s = w.abs()
    if method == "wanda":
        s = s * norm.to(s.device)[None, :]
    return s


def make_mask(score: torch.Tensor, n: Optional[int], m: Optional[int], s: float) -> torch.Tensor:
    if n is not None:
        return ops.nm_mask(score, n, m)
    return reference.unstructured_mask(score, s)


def prune_(model: nn.Module, sparsity: Union[str, float] = "2:4", method: str = "magnitude",
           calib: Optional[Calib] = None, filter_fn: Optional[FilterFn] = None,
           progress: Optional[bool] = None, verbose: bool = False) -> nn.Module:
    """Prunes the Linear (and QLinear) modules of ``model`` in place and
    stores them compressed; returns the model.

    Args:
        sparsity: "n:m" (keep n of every m consecutive input columns, e.g.
            "2:4") or a float s in [0, 1): every row keeps K - round(K·s).
        method: "magnitude" or "wanda" (needs ``calib``).
        calib: model inputs for Wanda (an iterable of tensors / tuples /
            dicts, or a callable run with the model), e.g. a few batches of a
            text the evaluation does not use.
        filter_fn: ``filter_fn(module, fqn) -> bool``; default: every Linear,
            HF Conv1D and QLinear except the output head.
        progress: tqdm bar over the layers (default: for >= 50M weights).
        verbose: print one line per pruned module.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"lowvram.prune_: model must be an nn.Module, got {type(model).__name__}")
    n, m, s = parse_sparsity(sparsity)
    if method not in ("magnitude", "wanda"):
        raise ValueError(f"lowvram.prune_: method must be 'magnitude' or 'wanda', got {method!r}")
    if method == "wanda" and calib is None:
        raise ValueError("lowvram.prune_: method='wanda' needs calib (model inputs whose "
                         "activation norms weigh the weights)")
    if filter_fn is None:
        filter_fn = default_filter(model)
    targets = [(name, mod) for name, mod in model.named_modules()
               if _prunable(mod) and filter_fn(mod, name)]
    norms = collect_input_norms(model, [t[0] for t in targets], calib) if method == "wanda" \
        else {}
    total = sum(mod.in_features * mod.out_features if isinstance(mod, QLinear)
                else linear_weight(mod).numel() for _, mod in targets)
    if progress is None:
        progress = total >= 50_000_000
    it = targets
    if progress:
        from tqdm.auto import tqdm
        it = tqdm(targets, desc="lowvram.prune_", unit="linear")
    for name, mod in it:
        if method == "wanda" and name not in norms:
            raise RuntimeError(f"lowvram.prune_: {name} saw no calibration input; check calib")
        try:
            mask = make_mask(score_weights(mod, method, norms.get(name)), n, m, s)
        except (RuntimeError, ValueError) as e:
            raise ValueError(f"lowvram.prune_: cannot prune {name}: {e}") from e
        if isinstance(mod, QLinear):
            new = SparseQLinear.from_qlinear(mod, mask, n=n, m=m)
        else:
            new = SparseLinear.from_linear(mod, mask, n=n, m=m)
        _set_submodule(model, name, new)
        if verbose:
            print(f"lowvram.prune_: {name}: {new.extra_repr()}")
    return model
