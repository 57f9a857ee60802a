"""lowvram.channels — ``prune_channels_(model)``: structured pruning that
makes matrices physically smaller. Whole FFN neurons (rows of the up
projections, columns of the down projection) and whole attention heads
(rows of q/k/v, columns of the output projection) are removed, the model's
config is updated, and the model still saves and reloads with Hugging Face.

Architectures are recognized by module structure, not by class name:

* Llama family: an MLP with ``gate_proj``/``up_proj``/``down_proj`` and an
  attention with ``q_proj``/``k_proj``/``v_proj``/``o_proj`` and ``head_dim``
  (Llama, Mistral, Qwen2, SmolLM2, ...). Heads are removed by whole KV groups
  (one kv head and the num_attention_heads / num_key_value_heads query heads
  that read it), so the GQA ratio stays valid.
* BERT family: a layer with ``intermediate.dense`` / ``output.dense`` and an
  attention with ``self.{query,key,value}`` / ``output.dense``.

Every layer loses the SAME number of neurons (heads), so that one
``intermediate_size`` (``num_attention_heads``) describes the model; which
ones is chosen per layer from that layer's scores.

Scores (the larger, the more a unit is kept) — the size of the unit's
contribution to the block's output, which is what removing it takes away:

* ``activation`` (default when ``calib`` is given): the mean over calibration
  tokens of the L2 norm of the unit's contribution to the block output.
  FFN neuron j: mean_t |h_tj| · ‖W_down[:, j]‖₂ (h = the input of the down
  projection), which is exact since the contribution is h_tj · W_down[:, j].
  Head h: mean_t ‖W_o[:, h] · a_th‖₂ (a_th = head h's attention output, the
  input of o_proj), computed exactly in the hook; a KV group's score is the
  sum of its query heads'. Forward pre-hooks on the down / output
  projections keep one running float64 sum per layer; no activation is
  stored.
* ``norm`` (default without calib): weights only, a weak fallback. FFN
  neuron j: max_i |W_down[i, j]|, the largest single residual coordinate it
  writes per unit of activation. That protects the few neurons whose huge
  down-projection entries create the residual stream's massive activations
  ("super weights", Yu et al. 2024, arXiv:2411.07191); a product of L2 norms
  (‖W_gate[j]‖·‖W_up[j]‖·‖W_down[:, j]‖) drops them: measured on
  SmolLM2-135M at ffn=0.25, perplexity on tinyshakespeare's first windows
  of 512 tokens went 45 -> 7.8e5 with the L2 product, -> 244 with this
  score, -> 64 with ``activation`` (8 calibration windows from the end of
  the text; 4 evaluation windows, 2 for this score); on all-MiniLM-L6-v2 (ffn=0.25,
  heads=0.25) the mean sentence-embedding cosine to the float model was
  0.745 (L2 product), 0.749 (this), 0.826 (activation). Head h:
  ‖W_v(h)‖_F · ‖W_o[:, h]‖_F (its value rows, with their bias for BERT,
  times its output columns: a bound on the head's output for unit-norm
  inputs, since attention averages value vectors); a KV group's score is
  the sum over its query heads. Use ``calib`` whenever you can.

Counts: ``ffn`` and ``heads`` are fractions to remove. An FFN keeps
I - round(ffn·I) neurons, then rounded to the nearest multiple of
``multiple_of`` (default 8, so the down projection's K stays SIMD / tensor
core friendly; kept within [multiple_of, I]; no rounding when I <
multiple_of). An attention keeps G - round(heads·G) of its G KV groups
(G = number of heads without GQA), at least one — then the nearest count the
model's config accepts (ties: more), since transformers' strict configs
(LlamaConfig) refuse hidden_size % num_attention_heads != 0 even with an
explicit head_dim, and such a model would not reload (the summary records
the requested and the kept counts); it raises when no smaller count works.

QLinear modules are sliced on their int8 codes: removing rows takes the
rows' scales with them (exactly what quantizing the smaller weight gives,
since each row has its own scale); removing columns of a per-channel
QLinear keeps the codes and scales (still the same weight on the kept
columns, though a row's scale may now be larger than its kept maximum
needs) and slices ``act_scale``. Per-group QLinears (group_size < K) cannot
lose input columns without breaking groups: that raises; prune channels
first, then quantize. SparseLinear / SparseQLinear raise too: prune channels
first, then N:M.

BERT: transformers' BertSelfAttention derives the head size from
hidden_size / num_attention_heads, which no longer holds after removing
heads; the pruned model runs, saves, but plain ``from_pretrained`` cannot
rebuild it (it raises). The config records the head size
(``lowvram_attention_head_size``) and :func:`from_pretrained` here rebuilds
the shapes, then loads the weights. Llama keeps ``head_dim`` explicit in its
config, and plain ``from_pretrained`` works.
"""
import copy
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple, Union

import torch
from torch import Tensor, nn

from . import memory
from .nn import QLinear, SparseLinear, SparseQLinear
from .prune import float_weight
from .quantize import _set_submodule, run_calibration

Calib = Union[Iterable[Any], Callable[[nn.Module], Any]]
_FN = "lowvram.prune_channels_"
_TOKEN_CHUNK = 2048  # tokens per step of the exact per-head contribution in the hook


# ------------------------------------------------------------ discovery


class _FFN:
    """One FFN: rows (fqns of the Linears whose output rows are neurons) and
    col (fqn of the Linear whose input columns are neurons)."""

    def __init__(self, name: str, kind: str, module: nn.Module, rows: List[str], col: str):
        self.name, self.kind, self.module, self.rows, self.col = name, kind, module, rows, col


class _Attn:
    """One attention: q, k, v (fqns, rows = heads), o (fqn, columns = heads),
    holder (the module whose runtime attributes describe its heads)."""

    def __init__(self, name: str, kind: str, holder: nn.Module, q: str, k: str, v: str, o: str,
                 head_dim: int):
        self.name, self.kind, self.holder = name, kind, holder
        self.q, self.k, self.v, self.o, self.head_dim = q, k, v, o, head_dim
        self.n_q = self.n_kv = 0


def _join(*parts: str) -> str:
    return ".".join(p for p in parts if p)


def _find(model: nn.Module) -> Tuple[List[_FFN], List[_Attn]]:
    ffns, attns = [], []
    for name, m in model.named_modules():
        ch = dict(m.named_children())
        if all(k in ch for k in ("gate_proj", "up_proj", "down_proj")):
            ffns.append(_FFN(name, "llama", m, [_join(name, "gate_proj"), _join(name, "up_proj")],
                             _join(name, "down_proj")))
        elif ("intermediate" in ch and "output" in ch
              and isinstance(getattr(ch["intermediate"], "dense", None), nn.Module)
              and isinstance(getattr(ch["output"], "dense", None), nn.Module)):
            ffns.append(_FFN(name, "bert", m, [_join(name, "intermediate.dense")],
                             _join(name, "output.dense")))
        if all(k in ch for k in ("q_proj", "k_proj", "v_proj", "o_proj")):
            cfg = getattr(m, "config", None)
            hd = getattr(m, "head_dim", None) or getattr(cfg, "head_dim", None)
            if hd is None and cfg is not None:
                hd = cfg.hidden_size // cfg.num_attention_heads
            attns.append(_Attn(name, "llama", m, _join(name, "q_proj"), _join(name, "k_proj"),
                               _join(name, "v_proj"), _join(name, "o_proj"), int(hd or 0)))
        elif "self" in ch and "output" in ch:
            s = ch["self"]
            if (all(isinstance(getattr(s, k, None), nn.Module) for k in ("query", "key", "value"))
                    and hasattr(s, "attention_head_size")
                    and isinstance(getattr(ch["output"], "dense", None), nn.Module)):
                attns.append(_Attn(name, "bert", s, _join(name, "self.query"),
                                   _join(name, "self.key"), _join(name, "self.value"),
                                   _join(name, "output.dense"), int(s.attention_head_size)))
    return ffns, attns


def _dims(mod: nn.Module) -> Tuple[int, int]:
    return mod.out_features, mod.in_features


def _check_module(fqn: str, mod: nn.Module) -> None:
    if isinstance(mod, (SparseLinear, SparseQLinear)):
        raise ValueError(f"{_FN}: {fqn} is a {type(mod).__name__} (N:M / unstructured "
                         f"pruned); prune channels first, then lowvram.prune_")
    if type(mod) not in (nn.Linear, QLinear):
        raise TypeError(f"{_FN}: {fqn} must be an nn.Linear or lowvram.nn.QLinear, "
                        f"got {type(mod).__name__}")


def _check_cols(fqn: str, mod: nn.Module) -> None:
    if isinstance(mod, QLinear) and mod.group_size not in (-1, mod.in_features):
        raise ValueError(f"{_FN}: cannot remove input columns of {fqn}: it is a QLinear with "
                         f"group_size={mod.group_size}, and removing columns would split its "
                         f"scale groups; prune channels before quantize_, or quantize per "
                         f"channel (group_size=-1)")


# ------------------------------------------------------------ slicing


def _alloc_like(src: Tensor, t: Tensor) -> Tensor:
    """t, in 2 MiB pages when src (a CPU QLinear weight) was big enough to be."""
    if src.device.type == "cpu" and t.numel() >= memory.HUGEPAGE:
        h = memory.empty_hugepages(t.shape, t.dtype)
        h.copy_(t)
        return h
    return t.contiguous()


def _param(t: Tensor, like: Tensor) -> nn.Parameter:
    return nn.Parameter(t.detach().clone().contiguous(), requires_grad=like.requires_grad)


def slice_rows(mod: nn.Module, idx: Tensor) -> nn.Module:
    """A copy of an nn.Linear / QLinear keeping output rows ``idx`` (sorted)."""
    if isinstance(mod, QLinear):
        idx = idx.to(mod.qweight.device)
        q = QLinear(mod.in_features, idx.numel(), bias=mod.bias is not None,
                    group_size=mod.group_size, smooth=mod.act_scale is not None, device="meta")
        q.qweight = _alloc_like(mod.qweight, mod.qweight.index_select(0, idx))
        q.wscale = mod.wscale.index_select(0, idx).contiguous()
        if mod.act_scale is not None:
            q.act_scale = mod.act_scale.clone()
        if mod.bias is not None:
            q.bias = _param(mod.bias.index_select(0, idx.to(mod.bias.device)), mod.bias)
        return q
    w = mod.weight
    idx = idx.to(w.device)
    lin = nn.Linear(mod.in_features, idx.numel(), bias=mod.bias is not None, device="meta")
    lin.weight = _param(w.index_select(0, idx), w)
    if mod.bias is not None:
        lin.bias = _param(mod.bias.index_select(0, idx), mod.bias)
    return lin


def slice_cols(mod: nn.Module, idx: Tensor) -> nn.Module:
    """A copy of an nn.Linear / per-channel QLinear keeping input columns ``idx``."""
    if isinstance(mod, QLinear):
        idx = idx.to(mod.qweight.device)
        single = mod.group_size == mod.in_features  # one group: it shrinks with K
        q = QLinear(idx.numel(), mod.out_features, bias=mod.bias is not None,
                    group_size=idx.numel() if single else -1,
                    smooth=mod.act_scale is not None, device="meta")
        q.qweight = _alloc_like(mod.qweight, mod.qweight.index_select(1, idx))
        q.wscale = mod.wscale.clone()
        if mod.act_scale is not None:
            q.act_scale = mod.act_scale.index_select(0, idx).contiguous()
        if mod.bias is not None:
            q.bias = _param(mod.bias, mod.bias)
        return q
    w = mod.weight
    idx = idx.to(w.device)
    lin = nn.Linear(idx.numel(), mod.out_features, bias=mod.bias is not None, device="meta")
    lin.weight = _param(w.index_select(1, idx), w)
    if mod.bias is not None:
        lin.bias = _param(mod.bias, mod.bias)
    return lin


def _bias(mod: nn.Module) -> Optional[Tensor]:
    b = getattr(mod, "bias", None)
    return None if b is None else b.detach().to(torch.float64)


# ------------------------------------------------------------ scores


def _ffn_norm_scores(ffn: _FFN, mods: Dict[str, nn.Module]) -> Tensor:
    """max_i |W_down[i, j]|: the largest residual coordinate neuron j writes per
    unit of activation (see the module docstring for why not a product of L2 norms)."""
    return float_weight(mods[ffn.col]).to(torch.float64).abs().amax(dim=0)


def _head_norm_scores(att: _Attn, mods: Dict[str, nn.Module]) -> Tensor:
    """One score per query head: ‖W_v(kv head of h)‖_F · ‖W_o[:, h]‖_F."""
    hd, n_q, n_kv = att.head_dim, att.n_q, att.n_kv
    wv = float_weight(mods[att.v]).to(torch.float64)
    b = _bias(mods[att.v])
    if b is not None:
        wv = torch.cat([wv, b.to(wv.device)[:, None]], 1)
    v = wv.reshape(n_kv, hd, -1).pow(2).sum((1, 2)).sqrt()
    wo = float_weight(mods[att.o]).to(torch.float64)
    o = wo.reshape(wo.shape[0], n_q, hd).pow(2).sum((0, 2)).sqrt().to(v.device)
    return o * v.repeat_interleave(n_q // n_kv)


def _collect_activation_scores(model: nn.Module, ffns: List[_FFN], attns: List[_Attn],
                               mods: Dict[str, nn.Module], calib: Calib
                               ) -> Tuple[Dict[str, Tensor], Dict[str, Tensor]]:
    """Runs calib with forward pre-hooks on the down / output projections that
    keep running float64 sums of each unit's contribution norm; returns the
    per-neuron and per-query-head means over tokens."""
    sums: Dict[str, Tensor] = {}
    counts: Dict[str, int] = {}
    hooks = []

    def ffn_hook(key):
        def hook(module, args):
            x = args[0].detach()
            x = x.reshape(-1, x.shape[-1])
            s = x.abs().to(torch.float64).sum(0)
            sums[key] = s if key not in sums else sums[key] + s
            counts[key] = counts.get(key, 0) + x.shape[0]
        return hook

    def head_hook(key, att):
        def hook(module, args):
            x = args[0].detach()
            x = x.reshape(-1, att.n_q, att.head_dim).float()
            w = float_weight(module).to(x.device).reshape(-1, att.n_q, att.head_dim)
            s = torch.zeros(att.n_q, dtype=torch.float64, device=x.device)
            for i in range(0, x.shape[0], _TOKEN_CHUNK):
                # [T, H, hidden]: head h's exact contribution to the output per token
                y = torch.einsum("thd,ohd->tho", x[i:i + _TOKEN_CHUNK], w)
                s += y.norm(dim=-1).to(torch.float64).sum(0)
            sums[key] = s if key not in sums else sums[key] + s
            counts[key] = counts.get(key, 0) + x.shape[0]
        return hook

    for f in ffns:
        hooks.append(mods[f.col].register_forward_pre_hook(ffn_hook("ffn:" + f.name)))
    for a in attns:
        hooks.append(mods[a.o].register_forward_pre_hook(head_hook("attn:" + a.name, a)))
    try:
        run_calibration(model, calib)
    finally:
        for h in hooks:
            h.remove()
    ffn_s, head_s = {}, {}
    for f in ffns:
        k = "ffn:" + f.name
        if k not in sums:
            raise RuntimeError(f"{_FN}: {f.col} saw no calibration input; check calib")
        down = float_weight(mods[f.col]).to(torch.float64).norm(dim=0)
        ffn_s[f.name] = sums[k] / counts[k] * down.to(sums[k].device)
    for a in attns:
        k = "attn:" + a.name
        if k not in sums:
            raise RuntimeError(f"{_FN}: {a.o} saw no calibration input; check calib")
        head_s[a.name] = sums[k] / counts[k]
    return ffn_s, head_s


def _keep(score: Tensor, n_keep: int) -> Tensor:
    """Indices of the n_keep largest scores, in ascending index order (ties:
    the lower index, as a stable sort gives)."""
    order = torch.sort(score.cpu(), descending=True, stable=True).indices
    return torch.sort(order[:n_keep]).values


def _n_keep_ffn(inter: int, ffn: float, multiple_of: int) -> int:
    n = inter - round(ffn * inter)
    if ffn > 0 and multiple_of > 1 and inter >= multiple_of:
        n = min(inter, max(multiple_of, multiple_of * round(n / multiple_of)))
    return max(n, 1)


# ------------------------------------------------------------ config


def _configs(model: nn.Module) -> List[Any]:
    out, seen = [], set()
    for m in [model] + list(model.modules()):
        c = getattr(m, "config", None)
        if c is not None and hasattr(c, "to_dict") and id(c) not in seen:
            seen.add(id(c))
            out.append(c)
    return out


def _config_accepts(model: nn.Module, n_q: int, n_kv: int, head_dim: int) -> bool:
    """Whether the model's config validates with these head counts (transformers'
    strict configs, e.g. LlamaConfig, require hidden_size % num_attention_heads
    == 0 even when head_dim is explicit; from_pretrained would refuse otherwise)."""
    c = getattr(model, "config", None)
    if c is None or not callable(getattr(c, "validate", None)):
        return True
    c = copy.deepcopy(c)
    c.num_attention_heads = n_q
    if hasattr(c, "num_key_value_heads"):
        c.num_key_value_heads = n_kv
    if hasattr(c, "head_dim"):
        c.head_dim = head_dim
    try:
        c.validate()
    except Exception:  # huggingface_hub's StrictDataclassClassValidationError is no ValueError
        return False
    return True


def _check_fraction(name: str, v) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise TypeError(f"{_FN}: {name} must be a float in [0, 1), got {type(v).__name__}")
    v = float(v)
    if not 0.0 <= v < 1.0:
        raise ValueError(f"{_FN}: {name} must be in [0, 1), got {v}")
    return v


# ------------------------------------------------------------ API


def prune_channels_(model: nn.Module, ffn: float = 0.25, heads: float = 0.0,
                    calib: Optional[Calib] = None, importance: Optional[str] = None,
                    multiple_of: int = 8, verbose: bool = False) -> nn.Module:
    """Removes FFN neurons and attention heads of ``model`` in place (the
    Linear / QLinear modules are replaced by smaller ones and the config is
    updated); returns the model. See the module docstring for the scores.

    Args:
        ffn: fraction of FFN neurons to remove in every layer, in [0, 1).
        heads: fraction of attention heads (KV groups under GQA) to remove in
            every layer, in [0, 1); at least one group is kept.
        calib: model inputs for activation-aware scores (an iterable of
            tensors / tuples / dicts, or a callable run with the model), as
            for ``prune_(method="wanda")``.
        importance: "activation" (needs calib) or "norm"; default:
            "activation" when calib is given, else "norm".
        multiple_of: the kept FFN width is rounded to a multiple of this
            (1: exactly I - round(ffn·I)).
        verbose: print one line per pruned layer.

    The summary (kept indices per layer, counts, score) is left in
    ``model.lowvram_pruned_channels``. Optimizers holding the old parameters
    must be rebuilt: the modules are new.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"{_FN}: model must be an nn.Module, got {type(model).__name__}")
    ffn = _check_fraction("ffn", ffn)
    heads = _check_fraction("heads", heads)
    if importance is None:
        importance = "activation" if calib is not None else "norm"
    if importance not in ("activation", "norm"):
        raise ValueError(f"{_FN}: importance must be 'activation' or 'norm', got {importance!r}")
    if importance == "activation" and calib is None:
        raise ValueError(f"{_FN}: importance='activation' needs calib (model inputs whose "
                         f"activations weigh the neurons and heads)")
    if importance == "norm" and calib is not None:
        raise ValueError(f"{_FN}: calib is only used with importance='activation'")
    if isinstance(multiple_of, bool) or not isinstance(multiple_of, int) or multiple_of < 1:
        raise ValueError(f"{_FN}: multiple_of must be an int >= 1, got {multiple_of!r}")
    if ffn == 0.0 and heads == 0.0:
        return model

    ffns, attns = _find(model)
    if ffn == 0.0:
        ffns = []
    if heads == 0.0:
        attns = []
    if ffn > 0 and not ffns:
        raise ValueError(f"{_FN}: ffn={ffn} but {type(model).__name__} has no recognized FFN "
                         f"(a Llama-style MLP with gate_proj/up_proj/down_proj or a BERT-style "
                         f"layer with intermediate.dense/output.dense)")
    if heads > 0 and not attns:
        raise ValueError(f"{_FN}: heads={heads} but {type(model).__name__} has no recognized "
                         f"attention (q_proj/k_proj/v_proj/o_proj with head_dim, or BERT's "
                         f"self.query/key/value + output.dense)")
    mods = dict(model.named_modules())

    # ---- validate everything before changing anything
    inter = None
    for f in ffns:
        for fq in f.rows + [f.col]:
            _check_module(fq, mods[fq])
        _check_cols(f.col, mods[f.col])
        i = mods[f.col].in_features
        if any(mods[r].out_features != i for r in f.rows):
            raise ValueError(f"{_FN}: {f.name}: the up projections' out_features "
                             f"{[mods[r].out_features for r in f.rows]} differ from the down "
                             f"projection's in_features {i}")
        if inter is not None and i != inter:
            raise ValueError(f"{_FN}: FFN widths differ across layers ({inter} vs {i} at "
                             f"{f.name}); one intermediate_size must describe the model")
        inter = i
    n_groups = None
    for a in attns:
        for fq in (a.q, a.k, a.v, a.o):
            _check_module(fq, mods[fq])
        _check_cols(a.o, mods[a.o])
        hd = a.head_dim
        qo, ko, vo, oi = (mods[a.q].out_features, mods[a.k].out_features,
                          mods[a.v].out_features, mods[a.o].in_features)
        if hd <= 0 or qo % hd or ko % hd or ko != vo or oi != qo:
            raise ValueError(f"{_FN}: cannot prune heads of {a.name}: head_dim {hd} does not "
                             f"divide q/k/v out_features ({qo}, {ko}, {vo}) or o_proj's "
                             f"in_features {oi} differs from q's")
        a.n_q, a.n_kv = qo // hd, ko // hd
        if a.n_q % a.n_kv:
            raise ValueError(f"{_FN}: cannot prune heads of {a.name}: {a.n_q} query heads are "
                             f"not a multiple of {a.n_kv} key/value heads")
        if n_groups is not None and (a.n_kv, a.n_q) != n_groups:
            raise ValueError(f"{_FN}: head counts differ across layers ({n_groups} vs "
                             f"{(a.n_kv, a.n_q)} at {a.name})")
        n_groups = (a.n_kv, a.n_q)

    # ---- scores
    if importance == "activation":
        ffn_s, head_s = _collect_activation_scores(model, ffns, attns, mods, calib)
    else:
        ffn_s = {f.name: _ffn_norm_scores(f, mods) for f in ffns}
        head_s = {a.name: _head_norm_scores(a, mods) for a in attns}

    summary: Dict[str, Any] = {"importance": importance, "ffn": None, "heads": None,
                               "kept": {}}
    plan = []  # (fqn, "rows" | "cols", idx)
    if ffns:
        n_keep = _n_keep_ffn(inter, ffn, multiple_of)
        summary["ffn"] = {"before": inter, "after": n_keep, "removed_per_layer": inter - n_keep,
                          "layers": len(ffns)}
        for f in ffns:
            idx = _keep(ffn_s[f.name], n_keep)
            summary["kept"][f.name] = idx
            plan += [(r, "rows", idx) for r in f.rows] + [(f.col, "cols", idx)]
    if attns:
        n_kv, n_q = n_groups
        rep = n_q // n_kv
        g_want = max(1, n_kv - round(heads * n_kv))
        valid = [g for g in range(1, n_kv) if _config_accepts(model, g * rep, g,
                                                               attns[0].head_dim)]
        if g_want == n_kv:  # round(heads * G) == 0: nothing to remove
            g_keep = n_kv
        elif not valid:
            raise ValueError(
                f"{_FN}: heads={heads} cannot be honoured: {type(model.config).__name__} accepts "
                f"no smaller head count (transformers requires hidden_size to be a multiple "
                f"of num_attention_heads)")
        else:
            # the nearest count the config can express (ties: keep more)
            g_keep = min(valid, key=lambda g: (abs(g - g_want), -g))
        summary["heads"] = {"kv_before": n_kv, "kv_after": g_keep, "kv_requested": g_want,
                            "q_before": n_q, "q_after": g_keep * rep,
                            "removed_per_layer": (n_kv - g_keep) * rep, "layers": len(attns)}
        for a in attns:
            hd = a.head_dim
            groups = _keep(head_s[a.name].reshape(n_kv, rep).sum(1), g_keep)
            qh = (groups[:, None] * rep + torch.arange(rep)).reshape(-1)
            summary["kept"][a.name] = qh
            kv_rows = (groups[:, None] * hd + torch.arange(hd)).reshape(-1)
            q_rows = (qh[:, None] * hd + torch.arange(hd)).reshape(-1)
            plan += [(a.q, "rows", q_rows), (a.k, "rows", kv_rows), (a.v, "rows", kv_rows),
                     (a.o, "cols", q_rows)]

    # ---- apply
    for fqn, how, idx in plan:
        mod = mods[fqn]
        _set_submodule(model, fqn, slice_rows(mod, idx) if how == "rows" else slice_cols(mod, idx))
    if ffns:
        n_keep = summary["ffn"]["after"]
        for f in ffns:
            if hasattr(f.module, "intermediate_size"):
                f.module.intermediate_size = n_keep
        for c in _configs(model):
            if hasattr(c, "intermediate_size"):
                c.intermediate_size = n_keep
        if verbose:
            print(f"{_FN}: FFN {inter} -> {n_keep} neurons in each of {len(ffns)} layers "
                  f"({importance} scores)")
    if attns:
        h = summary["heads"]
        kinds = {a.kind for a in attns}
        for a in attns:
            s = a.holder
            if a.kind == "bert":
                s.num_attention_heads = h["q_after"]
                s.all_head_size = h["q_after"] * a.head_dim
            else:
                for attr, v in (("num_heads", h["q_after"]), ("num_attention_heads", h["q_after"]),
                                ("num_key_value_heads", h["kv_after"])):
                    if isinstance(getattr(s, attr, None), int):
                        setattr(s, attr, v)
                if hasattr(s, "num_key_value_groups"):
                    s.num_key_value_groups = h["q_after"] // h["kv_after"]
        hd = attns[0].head_dim
        for c in _configs(model):
            if hasattr(c, "num_attention_heads"):
                c.num_attention_heads = h["q_after"]
            if "llama" in kinds:
                if hasattr(c, "num_key_value_heads"):
                    c.num_key_value_heads = h["kv_after"]
                c.head_dim = hd  # explicit: hidden_size != heads * head_dim now
            if "bert" in kinds:
                c.lowvram_attention_head_size = hd
                # the count BertSelfAttention derives head size from (pruning twice keeps the first)
                if getattr(c, "lowvram_num_attention_heads_before", None) is None:
                    c.lowvram_num_attention_heads_before = h["q_before"]
        if verbose:
            print(f"{_FN}: attention {h['q_before']} -> {h['q_after']} query heads, "
                  f"{h['kv_before']} -> {h['kv_after']} key/value heads in each of "
                  f"{len(attns)} layers ({importance} scores)")
    model.lowvram_pruned_channels = summary
    return model


def from_pretrained(cls, path: str, **kwargs) -> nn.Module:
    """``cls.from_pretrained(path, **kwargs)`` that also rebuilds BERT models
    whose heads ``prune_channels_`` removed (their head size is no longer
    hidden_size / num_attention_heads, which BertSelfAttention assumes): the
    model is built with the original head count, its attention Linears are
    shrunk to the saved shapes, then the saved weights are loaded strictly.
    Other models (Llama included) go straight to ``cls.from_pretrained``."""
    from transformers import AutoConfig
    config = kwargs.pop("config", None) or AutoConfig.from_pretrained(path)
    hd = getattr(config, "lowvram_attention_head_size", None)
    if hd is None:
        return cls.from_pretrained(path, config=config, **kwargs)
    import glob
    import os
    from safetensors.torch import load_file
    dtype = kwargs.pop("dtype", None) or kwargs.pop("torch_dtype", None)
    if kwargs:
        raise TypeError(f"lowvram.channels.from_pretrained: unsupported arguments for a "
                        f"head-pruned BERT: {sorted(kwargs)}")
    kept = config.num_attention_heads
    orig = copy.deepcopy(config)
    orig.num_attention_heads = config.lowvram_num_attention_heads_before
    build = getattr(cls, "from_config", None) or cls._from_config
    model = build(orig)
    _, attns = _find(model)
    for a in attns:
        rows = torch.arange(kept * hd)
        for fq in (a.q, a.k, a.v):
            _set_submodule(model, fq, slice_rows(model.get_submodule(fq), rows))
        _set_submodule(model, a.o, slice_cols(model.get_submodule(a.o), rows))
        a.holder.num_attention_heads = kept
        a.holder.all_head_size = kept * hd
    for c in _configs(model):
        c.num_attention_heads = kept
        c.lowvram_attention_head_size = hd
        c.lowvram_num_attention_heads_before = orig.num_attention_heads
    files = sorted(glob.glob(os.path.join(path, "*.safetensors")))
    if not files:
        raise FileNotFoundError(f"lowvram.channels.from_pretrained: no *.safetensors in {path}")
    state = {}
    for fname in files:
        state.update(load_file(fname))
    missing, unexpected = model.load_state_dict(state, strict=False)
    # tied / non-persistent entries HF does not save are fine; anything else is not
    tied = set(getattr(model, "_tied_weights_keys", None) or [])
    missing = [k for k in missing if k not in tied]
    if missing or unexpected:
        raise RuntimeError(f"lowvram.channels.from_pretrained: {path} does not match the "
                           f"rebuilt model: missing {missing[:5]}, unexpected {unexpected[:5]}")
    if dtype is not None:
        model = model.to(dtype)
    return model.eval()
