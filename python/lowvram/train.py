"""lowvram.train — one optimizer step over a batch, run as micro-batches whose
accumulated gradient equals the full batch's, under a measured memory budget.

This file owns :class:`MicroBatchStep` (and its :class:`StepOutput`), the batch
splitting, the gradient accumulation (:func:`_accumulate_`, the one place that
calls ``torch.ops.lowvram.grad_accum_`` when that op is registered), the budget
parsing, the micro-batch size search, and :func:`checkpoint_` (activation
recomputation of chosen blocks with ``torch.utils.checkpoint``).

How the gradient stays exact
----------------------------
``loss_fn(model, micro_batch)`` returns either

* a scalar **mean** over the micro-batch's samples: micro-batch ``i`` (``n_i``
  samples of ``N``) contributes ``(n_i / N) * grad(L_i)``; or
* a ``(loss_sum, count)`` pair (token-level losses, e.g. a cross-entropy summed
  over the tokens whose label is not -100, and that number of tokens): the
  full-batch loss is ``sum_i loss_sum_i / sum_i count_i`` and the total count
  is only known once every micro-batch ran, so each micro-batch's gradient of
  ``loss_sum_i`` is accumulated unscaled and the sum is divided by the total
  count at the end.

Accumulators are float32, one per trainable parameter, so bfloat16/float16
models add many micro-batches without rounding the running sum to 16 bits;
the result is written to ``p.grad`` in ``p``'s dtype once, after the last
micro-batch. A micro-batch's gradient is moved into the accumulator as soon
as autograd has produced it (a post-accumulate-grad hook per parameter) and
``p.grad`` is dropped, so a full set of micro-batch gradients never sits
beside the accumulators. Measured on 8 x Linear(1024, 1024) (32 MiB of fp32
parameters), SGD, micro-batches of 2: peak 790.6 MiB with the hooks vs 818.3
MiB draining every ``p.grad`` after each backward (the whole-process VmHWM;
the 28 MiB saved are all the gradients but one). Under DDP the gradients are
drained after each backward instead (DDP's reducer owns the hooks there).
For float32 parameters the accumulator itself becomes ``p.grad`` (no copy).
"""
import ctypes
import ctypes.util
import math
import re
import warnings
from collections.abc import Mapping
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from . import memory

_NAME = "lowvram.train.MicroBatchStep"
# The search keeps the predicted peak this fraction below the budget: a measured
# peak moves by a few pages from run to run (allocator and page-cache noise).
_MARGIN = 0.05


# --------------------------------------------------------------------------- accumulation

def _accumulate_(accs: List[Tensor], grads: List[Tensor], scale: float) -> None:
    """``acc += scale * grad`` for each pair, in float32 accumulators.

    Calls the fused multi-tensor op ``torch.ops.lowvram.grad_accum_`` when it is
    registered (schema ``grad_accum_(Tensor(a!)[] acc, Tensor[] grads, float
    scale) -> ()``); otherwise ``torch._foreach_add_`` with the gradients
    upcast to the accumulators' dtype."""
    if not accs:
        return
    if hasattr(torch.ops.lowvram, "grad_accum_"):
        torch.ops.lowvram.grad_accum_(accs, grads, float(scale))
        return
    grads = [g if g.dtype == a.dtype else g.to(a.dtype) for a, g in zip(accs, grads)]
    torch._foreach_add_(accs, grads, alpha=float(scale))


# --------------------------------------------------------------------------- budgets

_UNITS = {"": 1, "b": 1,
          "k": 1024, "kib": 1024, "kb": 1000,
          "m": 1024 ** 2, "mib": 1024 ** 2, "mb": 1000 ** 2,
          "g": 1024 ** 3, "gib": 1024 ** 3, "gb": 1000 ** 3,
          "t": 1024 ** 4, "tib": 1024 ** 4, "tb": 1000 ** 4}
_BUDGET_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*([a-zA-Z]*)\s*$")


def parse_budget(budget: Union[int, float, str]) -> int:
    """Bytes from an int/float or a string: "1.5GiB", "800MB", "512MiB", "2G".
    KiB/MiB/GiB/TiB and bare K/M/G/T are powers of 1024; KB/MB/GB/TB powers of 1000."""
    if isinstance(budget, bool):
        raise TypeError(f"{_NAME}: budget must be bytes (int) or a string like '1.5GiB', got bool")
    if isinstance(budget, (int, float)):
        if not math.isfinite(budget) or budget <= 0:
            raise ValueError(f"{_NAME}: budget must be a positive number of bytes, got {budget}")
        return int(budget)
    if not isinstance(budget, str):
        raise TypeError(f"{_NAME}: budget must be bytes (int) or a string like '1.5GiB', "
                        f"got {type(budget).__name__}")
    m = _BUDGET_RE.match(budget)
    unit = m.group(2).lower() if m else None
    if m is None or unit not in _UNITS:
        raise ValueError(f"{_NAME}: budget {budget!r} does not parse; expected a number and a "
                         f"unit such as '1.5GiB', '800MB', '512MiB' or '2G'")
    value = float(m.group(1)) * _UNITS[unit]
    if value <= 0:
        raise ValueError(f"{_NAME}: budget must be positive, got {budget!r}")
    return int(value)


# --------------------------------------------------------------------------- batches

def _batch_rows(batch: Any, path: str, found: List[Tuple[str, int]]) -> None:
    if isinstance(batch, Tensor):
        if batch.dim() >= 1:
            found.append((path, batch.shape[0]))
    elif isinstance(batch, Mapping):
        for k, v in batch.items():
            _batch_rows(v, f"{path}[{k!r}]", found)
    elif isinstance(batch, (tuple, list)):
        for i, v in enumerate(batch):
            _batch_rows(v, f"{path}[{i}]", found)


def batch_size(batch: Any) -> int:
    """The shared dim-0 size of every tensor in ``batch`` (a tensor, or tuples,
    lists and dicts of them); raises when there is none or they differ."""
    if isinstance(batch, Tensor) and batch.dim() == 0:
        raise ValueError(f"{_NAME}: batch has no dim 0 to split (a 0-dim tensor)")
    found: List[Tuple[str, int]] = []
    _batch_rows(batch, "batch", found)
    if not found:
        raise ValueError(f"{_NAME}: batch has no tensor with a dim 0 to split; expected a tensor, "
                         f"or a tuple/list/dict of tensors, got {type(batch).__name__}")
    sizes = {n for _, n in found}
    if len(sizes) > 1:
        first = found[0]
        other = next(f for f in found if f[1] != first[1])
        raise ValueError(f"{_NAME}: batch tensors must share their dim-0 size; {first[0]} has "
                         f"{first[1]} rows, {other[0]} has {other[1]}")
    n = found[0][1]
    if n == 0:
        raise ValueError(f"{_NAME}: batch is empty (dim 0 has size 0)")
    return n


def _rebuild(template: Any, values: list) -> Any:
    if isinstance(template, tuple) and hasattr(template, "_fields"):  # namedtuple
        return type(template)(*values)
    if isinstance(template, (tuple, list)):
        try:
            return type(template)(values)
        except TypeError:
            return list(values) if isinstance(template, list) else tuple(values)
    return values


def slice_batch(batch: Any, start: int, stop: int) -> Any:
    """Rows ``start:stop`` of every tensor with a dim 0 (views, no copy); 0-dim
    tensors and other values pass through."""
    if isinstance(batch, Tensor):
        return batch[start:stop] if batch.dim() >= 1 else batch
    if isinstance(batch, Mapping):
        items = {k: slice_batch(v, start, stop) for k, v in batch.items()}
        if type(batch) is dict:
            return items
        try:
            return type(batch)(items)
        except Exception:  # e.g. a Mapping whose constructor takes other arguments
            return items
    if isinstance(batch, (tuple, list)):
        return _rebuild(batch, [slice_batch(v, start, stop) for v in batch])
    return batch


# --------------------------------------------------------------------------- memory

_LIBC = None


def _malloc_trim() -> None:
    """Returns freed heap pages to the OS (glibc malloc_trim) so that a VmHWM
    reset starts from what is live, not from what the allocator keeps cached."""
    global _LIBC
    if _LIBC is None:
        try:
            _LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            _LIBC.malloc_trim.argtypes = [ctypes.c_size_t]
        except (OSError, AttributeError):
            _LIBC = False
    if _LIBC:
        _LIBC.malloc_trim(0)


_MMAP_PINNED = False
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 1 << 20


def _pin_mmap_threshold() -> None:
    """Fixes glibc's mmap threshold at 1 MiB (mallopt M_MMAP_THRESHOLD), once per
    process. glibc raises the threshold each time a mapped block is freed (up
    to 32 MiB), after which freed activations stay cached in the heap: measured
    peaks then wander by tens of MiB from step to step and recomputed
    (checkpointed) activations do not leave the resident set. With the
    threshold fixed, every tensor of 1 MiB or more is its own mapping, returned
    to the OS when freed, and a step's VmHWM repeats to within a few pages
    (measured: 850 +- 0.3 MiB vs 849..955 MiB for the same step)."""
    global _MMAP_PINNED
    if _MMAP_PINNED:
        return
    _MMAP_PINNED = True
    _malloc_trim()  # loads libc
    if _LIBC:
        try:
            _LIBC.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
        except AttributeError:
            pass


class _Meter:
    """Peak memory of the device the model lives on: VmHWM of the whole process
    on CPU, torch.cuda.max_memory_allocated on CUDA."""

    def __init__(self, device: torch.device, pin_mmap_threshold: bool):
        self.device = device
        self.cuda = device.type == "cuda"
        if self.cuda:
            self.available = True
        else:
            self.available = device.type == "cpu" and memory.reset_peak_rss()
            if self.available and pin_mmap_threshold:
                _pin_mmap_threshold()

    def reset(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)
            memory.reset_peak_cuda(self.device)
        elif self.available:
            _malloc_trim()
            memory.reset_peak_rss()

    def current(self) -> Optional[int]:
        """What is held now (resident bytes on CPU, allocated bytes on CUDA)."""
        if self.cuda:
            return int(torch.cuda.memory_allocated(self.device))
        return memory.rss() if self.available else None

    def peak(self) -> Optional[int]:
        if self.cuda:
            torch.cuda.synchronize(self.device)
            return int(memory.peak_cuda(self.device))
        return memory.peak_rss() if self.available else None


def _optimizer_state_bytes(optimizer: torch.optim.Optimizer, device: torch.device) -> int:
    """Bytes of the optimizer state tensors on ``device`` (from their storages)."""
    ts = [v for st in optimizer.state.values() for v in st.values()
          if isinstance(v, Tensor) and v.device == device]
    return memory.storage_bytes(*ts) if ts else 0


def _optimizer_state_bytes_dry(optimizer: torch.optim.Optimizer) -> Optional[int]:
    """Bytes the optimizer's state will take once its first step() ran,
    measured by running that step() on meta-device copies of the parameters
    (the real optimizer code allocates the real state shapes, on no memory).
    None when the optimizer cannot run on meta tensors."""
    try:
        groups = []
        for g in optimizer.param_groups:
            params = []
            for p in g["params"]:
                q = torch.empty_like(p, device="meta").requires_grad_(p.requires_grad)
                q.grad = torch.zeros_like(q)
                params.append(q)
            opts = {k: v for k, v in g.items() if k != "params"}
            for k in ("foreach", "fused", "capturable"):
                if k in opts:
                    opts[k] = False if k != "foreach" else None
            groups.append({"params": params, **opts})
        try:  # the groups carry every option; the defaults only matter to constructors
            dry = type(optimizer)(groups)  # that require an argument
        except TypeError:
            dry = type(optimizer)(groups, **{k: v for k, v in optimizer.defaults.items()
                                             if k not in ("foreach", "fused", "capturable")})
        dry.step()
        # meta tensors have no storage address: count each state tensor's bytes
        return sum(v.untyped_storage().nbytes() for st in dry.state.values()
                   for v in st.values() if isinstance(v, Tensor) and v.device.type == "meta")
    except Exception:
        return None


def _round_up_mib(n: float) -> int:
    return int(math.ceil(n / 2 ** 20)) * 2 ** 20


# --------------------------------------------------------------------------- checkpointing

def _block_modules(model: nn.Module, filter_fn: Optional[Callable]) -> List[Tuple[str, nn.Module]]:
    chosen: List[Tuple[str, nn.Module]] = []
    taken: List[str] = []

    def under_taken(name: str) -> bool:
        return any(name == t or name.startswith(t + ".") for t in taken)

    for name, mod in model.named_modules():
        if not name or under_taken(name):
            continue
        if filter_fn is None:
            parent = name.rpartition(".")[0]
            pick = isinstance(model.get_submodule(parent) if parent else model, nn.ModuleList)
        else:
            try:
                pick = bool(filter_fn(name, mod))
            except TypeError:
                pick = bool(filter_fn(mod))
        if pick:
            chosen.append((name, mod))
            taken.append(name)
    return chosen


def checkpoint_(model: nn.Module, filter_fn: Optional[Callable] = None) -> List[str]:
    """Recomputes the activations of chosen blocks in backward instead of
    keeping them (``torch.utils.checkpoint``, ``use_reentrant=False``), in place.

    Default blocks: every element of every outermost ``nn.ModuleList`` (Hugging
    Face decoder layers, ``model.model.layers``). ``filter_fn(name, module) ->
    bool`` (or ``filter_fn(module)``) picks others; a picked module's
    descendants are not wrapped again. The module's ``forward`` is wrapped on
    the instance, so parameter names and ``state_dict`` keys do not change; the
    wrapper only checkpoints while grad is enabled. Idempotent. Returns the
    names of the wrapped modules.

    Hugging Face models: pass ``use_cache=False`` in training (a KV cache
    updated inside a recomputed block would be updated twice)."""
    from torch.utils.checkpoint import checkpoint as _ckpt

    names = []
    for name, mod in _block_modules(model, filter_fn):
        names.append(name)
        if getattr(mod, "_lowvram_checkpointed", False):
            continue
        inner = mod.forward

        def forward(*args, __inner=inner, **kwargs):
            if torch.is_grad_enabled():
                return _ckpt(__inner, *args, use_reentrant=False, **kwargs)
            return __inner(*args, **kwargs)

        mod.forward = forward
        mod._lowvram_checkpointed = True
    return names


# --------------------------------------------------------------------------- the step

@dataclass
class StepOutput:
    """What one :class:`MicroBatchStep` call did.

    ``loss``: the full-batch loss (float). ``micro_batch_size``: the size used
    for this step (on a step that searched, the size it settled on; the
    probe sizes are in ``micro_batch_sizes``). ``peak_bytes``: measured peak of
    the step (process VmHWM on CPU, max_memory_allocated on CUDA; None where
    it cannot be measured). ``count``: what the loss was divided by (samples,
    or the total token count of ``(sum, count)`` losses, global under DDP).
    ``grad_norm``: the total norm before clipping (when max_grad_norm is set).
    """
    loss: float
    micro_batch_size: int
    num_micro_batches: int
    peak_bytes: Optional[int]
    budget: Optional[int] = None
    micro_batch_sizes: Tuple[int, ...] = ()
    count: float = 0.0
    grad_norm: Optional[float] = None
    over_budget: bool = False
    optimizer_state_bytes: int = 0


def _is_ddp(model: nn.Module) -> bool:
    return isinstance(model, nn.parallel.DistributedDataParallel)


def _model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


class MicroBatchStep:
    """One optimizer step over a batch, run as micro-batches.

    ``step(batch)`` (or ``step.step(batch)``) zeroes the gradients, runs
    ``loss_fn(model, micro_batch)`` forward and backward on each micro-batch
    (rows of every tensor in ``batch`` along dim 0), accumulates the gradients
    in float32 so that they equal the full batch's, writes them to ``p.grad``,
    clips them (``max_grad_norm``), steps the optimizer once and the scheduler
    once. See the module docstring for the two loss forms.

    ``micro_batch_size``: an int >= 1, or ``"auto"`` with ``budget=`` (bytes or
    a string such as "1.5GiB"): the largest micro-batch whose **measured**
    peak stays under the budget. On CPU the budget is for the peak resident
    set of the whole process (VmHWM, which includes torch itself, a few
    hundred MiB); on CUDA for ``torch.cuda.max_memory_allocated`` of the
    model's device. The first step searches: it runs micro-batches of 1, 2, 4,
    ... rows for real, each gradient kept as part of the step (no work is
    redone), measures each one's peak, and stops doubling when a straight
    line through the measurements predicts the next one above the budget
    (less a 5% margin); the rest of the batch runs at the largest size the
    line allows. The optimizer state, which its first step() allocates, is
    counted before it exists by running that step() on meta-device copies of
    the parameters, and measured for real afterwards. A budget that even one
    row exceeds raises ValueError naming the smallest budget that would work.
    A later step whose measured peak exceeds the budget warns and shrinks the
    micro-batch for the next step; the effective batch never changes.
    With an int ``micro_batch_size`` and a ``budget``, the int is where that
    shrinking starts. Every step's ``peak_bytes`` is measured (also without a
    budget). On CPU, with a ``budget`` or ``checkpoint``, MicroBatchStep fixes
    glibc's mmap threshold at 1 MiB for the process (:func:`_pin_mmap_threshold`):
    otherwise freed activations stay cached in the heap, the resident set stays
    higher and the measured peak wanders by tens of MiB. It costs time, since
    every tensor of 1 MiB or more is then mapped and zeroed anew by the kernel
    (SmolLM2-135M int8 + LoRA, 4 micro-batches of 8 x 256 tokens, 2-core CPU:
    55 s per step and 4.6 GiB peak pinned, 32 s and 7.3-7.7 GiB with glibc's
    default; ``bench/bench_alloc.py``, ``docs/training.md``). Without either it leaves the allocator alone.

    ``checkpoint``: True wraps every element of every outermost
    ``nn.ModuleList`` with activation checkpointing (:func:`checkpoint_`); a
    callable ``filter(name, module) -> bool`` picks the blocks.

    ``DistributedDataParallel``: every micro-batch but the last runs under
    ``model.no_sync()``; the last backward adds onto the accumulated gradient
    and DDP all-reduces the sum once. DDP averages over ranks, so lowvram
    all-reduces the sample (or token) count and rescales: the result equals a
    single process's step over the concatenation of every rank's batch, for
    mean and for ``(sum, count)`` losses, also when ranks hold different
    numbers of samples or tokens. (Under DDP the last micro-batch's gradient
    is added to the accumulator in the parameter's dtype, so bf16 models
    round that sum once more than without DDP.)
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer,
                 loss_fn: Callable[[nn.Module, Any], Any],
                 micro_batch_size: Union[int, str] = 8, budget: Union[int, str, None] = None,
                 checkpoint: Union[bool, Callable] = False, max_grad_norm: Optional[float] = None,
                 scheduler: Any = None, *, _grad_hooks: bool = True) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"{_NAME}: model must be an nn.Module, got {type(model).__name__}")
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"{_NAME}: optimizer must be a torch.optim.Optimizer, "
                            f"got {type(optimizer).__name__}")
        if not callable(loss_fn):
            raise TypeError(f"{_NAME}: loss_fn must be callable as loss_fn(model, micro_batch)")
        if isinstance(micro_batch_size, str):
            if micro_batch_size != "auto":
                raise ValueError(f"{_NAME}: micro_batch_size must be an int >= 1 or 'auto', "
                                 f"got {micro_batch_size!r}")
            if budget is None:
                raise ValueError(f"{_NAME}: micro_batch_size='auto' needs budget= (bytes or a "
                                 f"string like '1.5GiB')")
        elif isinstance(micro_batch_size, bool) or not isinstance(micro_batch_size, int):
            raise TypeError(f"{_NAME}: micro_batch_size must be an int >= 1 or 'auto', "
                            f"got {type(micro_batch_size).__name__}")
        elif micro_batch_size <= 0:
            raise ValueError(f"{_NAME}: micro_batch_size must be >= 1, got {micro_batch_size}")
        if max_grad_norm is not None and not (max_grad_norm > 0):
            raise ValueError(f"{_NAME}: max_grad_norm must be > 0, got {max_grad_norm}")
        self.model = model
        self.optimizer = optimizer
        self.loss_fn = loss_fn
        self.budget = parse_budget(budget) if budget is not None else None
        self.auto = micro_batch_size == "auto"
        self.micro_batch_size: Optional[int] = None if self.auto else int(micro_batch_size)
        self.max_grad_norm = max_grad_norm
        self.scheduler = scheduler
        self.ddp = _is_ddp(model)
        self.grad_hooks = bool(_grad_hooks) and not self.ddp
        self.device = _model_device(model)
        # the allocator setting is for steps that promise memory (a budget, checkpointing);
        # it costs time (every large tensor is mapped anew: see the class docstring)
        self.meter = _Meter(self.device,
                            pin_mmap_threshold=self.budget is not None or bool(checkpoint))
        if self.budget is not None and not self.meter.available:
            raise RuntimeError(f"{_NAME}: budget= needs a measured peak, and this process cannot "
                               f"measure one on {self.device} (CPU: resetting VmHWM through "
                               f"/proc/self/clear_refs; CUDA: max_memory_allocated)")
        self.checkpointed: List[str] = []
        if checkpoint:
            filt = checkpoint if callable(checkpoint) else None
            self.checkpointed = checkpoint_(model.module if self.ddp else model, filt)
            if not self.checkpointed:
                raise ValueError(f"{_NAME}: checkpoint={checkpoint!r} found no blocks to wrap "
                                 f"(no nn.ModuleList in the model, or the filter chose none)")
        self._line: List[Tuple[int, int]] = []  # (rows, measured peak) of one micro-batch
        self._slope: Optional[float] = None
        self.steps = 0

    # -- parameters ---------------------------------------------------------

    def _params(self) -> List[nn.Parameter]:
        seen, out = set(), []
        for p in self.model.parameters():
            if p.requires_grad and id(p) not in seen:
                seen.add(id(p))
                out.append(p)
        for g in self.optimizer.param_groups:
            for p in g["params"]:
                if p.requires_grad and id(p) not in seen:
                    seen.add(id(p))
                    out.append(p)
        return out

    # -- one micro-batch ----------------------------------------------------

    def _loss(self, mb: Any) -> Tuple[Tensor, Optional[Any], bool]:
        out = self.loss_fn(self.model, mb)
        pair = isinstance(out, (tuple, list))
        if pair:
            if len(out) != 2:
                raise ValueError(f"{_NAME}: loss_fn must return a scalar tensor or a "
                                 f"(loss_sum, count) pair, got a sequence of {len(out)}")
            loss, count = out
            if isinstance(count, Tensor):
                if count.numel() != 1:
                    raise ValueError(f"{_NAME}: loss_fn's count must be a scalar, got shape "
                                     f"{list(count.shape)}")
                count = count.detach()
            elif not isinstance(count, (int, float)) or isinstance(count, bool):
                raise TypeError(f"{_NAME}: loss_fn's count must be a number or a scalar tensor, "
                                f"got {type(count).__name__}")
        else:
            loss, count = out, None
        if not isinstance(loss, Tensor):
            raise TypeError(f"{_NAME}: loss_fn must return a scalar tensor (or a (loss_sum, count) "
                            f"pair), got {type(loss).__name__}")
        if loss.dim() != 0:
            raise ValueError(f"{_NAME}: loss_fn must return a scalar loss (a mean over the "
                             f"micro-batch, or a (loss_sum, count) pair), got a tensor of shape "
                             f"{list(loss.shape)}")
        if not loss.requires_grad:
            raise ValueError(f"{_NAME}: loss_fn's loss does not require grad (no trainable "
                             f"parameter reached it, or it ran under torch.no_grad)")
        return loss, count, pair

    def _run(self, batch: Any, start: int, stop: int, last: bool, st: Dict[str, Any]) -> None:
        """Forward + backward of rows start:stop, gradient added to st['accs']."""
        mb = slice_batch(batch, start, stop)
        n = stop - start
        sync = self.ddp and last
        ctx = self.model.no_sync() if (self.ddp and not last) else nullcontext()
        with ctx:
            loss, count, pair = self._loss(mb)
            if st["pair"] is None:
                st["pair"] = pair
            elif st["pair"] != pair:
                raise ValueError(f"{_NAME}: loss_fn returned a {'pair' if pair else 'scalar'} "
                                 f"for one micro-batch and a {'pair' if st['pair'] else 'scalar'} "
                                 f"for another; it must return the same form for every one")
            # mean losses: weight n/N (N known up front); (sum, count): weight 1 and
            # divide by the total count once it is known.
            scale = 1.0 if pair else n / st["K"]
            st["loss_num"] += loss.detach().double() * scale
            st["count"] += count if pair else n
            if sync:
                # The last micro-batch under DDP: put the accumulated gradient back
                # into p.grad so this backward adds onto it and DDP's one
                # all-reduce averages the whole sum across ranks.
                for p in st["params"]:
                    acc = st["accs"].pop(p, None)
                    if acc is not None:
                        p.grad = acc if acc.dtype == p.dtype else acc.to(p.dtype)
                (loss * scale).backward()
                return
            st["scale"] = scale
            loss.backward()
        if not self.grad_hooks:
            self._drain(st, [p for p in st["params"] if p.grad is not None])

    def _drain(self, st: Dict[str, Any], params: Sequence[nn.Parameter]) -> None:
        accs = st["accs"]
        for p in params:
            if p not in accs:
                accs[p] = torch.zeros_like(p, dtype=torch.float32,
                                           memory_format=torch.preserve_format)
        _accumulate_([accs[p] for p in params], [p.grad for p in params], st["scale"])
        for p in params:
            p.grad = None

    # -- the step -----------------------------------------------------------

    def __call__(self, batch: Any) -> StepOutput:
        return self.step(batch)

    def step(self, batch: Any) -> StepOutput:
        """Zero grads, run every micro-batch of ``batch``, write the full-batch
        gradient to ``p.grad``, clip, step the optimizer once and the scheduler."""
        N = batch_size(batch)
        params = self._params()
        for p in params:
            p.grad = None
        self.optimizer.zero_grad(set_to_none=True)
        self.model.zero_grad(set_to_none=True)
        world, K = 1, float(N)
        if self.ddp:
            import torch.distributed as dist
            world = dist.get_world_size()
            # mean losses are weighted n / (N_global / world), so that DDP's average
            # over ranks gives the global per-sample mean even for unequal N per rank
            t = torch.tensor([float(N)], dtype=torch.float64, device=self._comm_device())
            dist.all_reduce(t)
            K = float(t.item()) / world
        st: Dict[str, Any] = dict(params=params, accs={}, pair=None, scale=1.0, K=K, peaks=[],
                                  loss_num=torch.zeros((), dtype=torch.float64, device=self.device),
                                  count=0)
        hooks = []
        if self.grad_hooks:
            def hook(p, st=st):
                if p.grad is not None:
                    self._drain(st, [p])
            hooks = [p.register_post_accumulate_grad_hook(hook) for p in params]

        fresh_optimizer = len(self.optimizer.state) == 0
        sizes: List[int] = []
        try:
            if self.micro_batch_size is None:
                sizes = self._search(batch, N, st, fresh_optimizer)
            else:
                self.meter.reset()
                m = min(self.micro_batch_size, N)
                for start in range(0, N, m):
                    stop = min(start + m, N)
                    self._run(batch, start, stop, stop == N, st)
                    sizes.append(stop - start)
                st["peaks"].append(self.meter.peak())
            total, loss_num = st["count"], st["loss_num"]
            if self.ddp:
                import torch.distributed as dist
                t = torch.stack([torch.as_tensor(total, dtype=torch.float64).to(loss_num.device),
                                 loss_num]).to(self._comm_device())
                dist.all_reduce(t)
                total, loss_num = t[0], t[1]
            total = float(total)
            if st["pair"]:
                if not total > 0:
                    raise ValueError(f"{_NAME}: the counts loss_fn returned sum to {total} over "
                                     f"the whole batch; nothing to divide the summed loss by")
                loss_value = float(loss_num) / total
                factor = world / total  # DDP averaged over ranks: undo, divide by the total
            else:
                loss_value = float(loss_num) / world
                factor = 1.0  # the n/N weights were applied while accumulating
            if self.ddp:  # DDP's all-reduce left the sum in p.grad
                if factor != 1.0:
                    for p in params:
                        if p.grad is not None:
                            p.grad.mul_(factor)
            else:  # the float32 accumulators become p.grad (a copy only for bf16/fp16 p)
                for p, acc in st["accs"].items():
                    if factor != 1.0:
                        acc.mul_(factor)
                    p.grad = acc if acc.dtype == p.dtype else acc.to(p.dtype)
            st["accs"] = {}
            used = min(self.micro_batch_size, N)  # the size settled on, before any shrinking
        except BaseException:
            st["accs"] = {}
            for p in params:
                p.grad = None
            raise
        finally:
            for h in hooks:
                h.remove()

        self.meter.reset()
        grad_norm = None
        if self.max_grad_norm is not None:
            grad_norm = float(torch.nn.utils.clip_grad_norm_(
                [p for p in params if p.grad is not None], self.max_grad_norm))
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        opt_peak = self.meter.peak()
        mb_peak = max((p for p in st["peaks"] if p is not None), default=None)
        peak = None if mb_peak is None or opt_peak is None else max(mb_peak, opt_peak)
        state_bytes = _optimizer_state_bytes(self.optimizer, self.device)
        self.steps += 1
        if self.auto and fresh_optimizer and getattr(self, "_dry_state", 0) is None \
                and self._line:
            # the optimizer state could not be sized on meta: it exists now, measured
            self.micro_batch_size = min(self.micro_batch_size,
                                        self._largest_fitting(float(state_bytes), N))
        over = self.budget is not None and peak is not None and peak > self.budget
        if over:
            self._over_budget(mb_peak, opt_peak)
        return StepOutput(loss=loss_value, micro_batch_size=used, num_micro_batches=len(sizes),
                          peak_bytes=peak, budget=self.budget, micro_batch_sizes=tuple(sizes),
                          count=total, grad_norm=grad_norm, over_budget=over,
                          optimizer_state_bytes=state_bytes)

    def _comm_device(self) -> torch.device:
        return self.device if self.device.type == "cuda" else torch.device("cpu")

    # -- the budget ---------------------------------------------------------

    def _target(self, extra: float) -> float:
        return self.budget * (1.0 - _MARGIN) - extra

    def _fit(self) -> None:
        """Slope (bytes per row) through the last two measurements of different sizes."""
        pts = self._line
        for i in range(len(pts) - 2, -1, -1):
            if pts[i][0] != pts[-1][0]:
                (m1, p1), (m2, p2) = pts[i], pts[-1]
                self._slope = max((p2 - p1) / (m2 - m1), 0.0)
                return

    def _predict(self, m: int) -> float:
        m0, p0 = self._line[-1]
        return p0 + (self._slope or 0.0) * (m - m0)

    def _largest_fitting(self, extra: float, cap: int) -> int:
        """The largest m <= cap that the line through the measurements puts under
        the budget, and at least the largest measured size that fitted."""
        target = self._target(extra)
        fits = [m for m, p in self._line if p <= target]
        best = max(fits) if fits else 1
        if not self._slope:
            return max(1, min(cap, best))
        m0, p0 = self._line[-1]
        m = m0 + int(math.floor((target - p0) / self._slope))
        return max(1, min(cap, max(best, m)))

    def _search(self, batch: Any, N: int, st: Dict[str, Any], fresh_optimizer: bool) -> List[int]:
        """First step under "auto": micro-batches of 1, 2, 4, ... rows, each one's
        peak measured and its gradient kept as part of the step (so nothing is
        redone, and no probe runs far above the budget as a descending search
        would); then the rest of the batch at the chosen size."""
        extra = 0.0
        self._dry_state = 0
        if fresh_optimizer:  # the state the first optimizer.step() will allocate
            self._dry_state = _optimizer_state_bytes_dry(self.optimizer)
            extra = float(self._dry_state or 0)
        target = self._target(extra)
        sizes: List[int] = []
        self._line, self._slope = [], None
        start, m, chosen = 0, 1, None
        retried = False
        while start < N:
            size = min(m, N - start)
            self.meter.reset()
            base = self.meter.current()  # held before this micro-batch
            self._run(batch, start, start + size, start + size == N, st)
            peak = self.meter.peak()
            st["peaks"].append(peak)
            sizes.append(size)
            start += size
            if chosen is not None:
                continue
            self._line.append((size, peak))
            if len(self._line) == 1 and peak + extra > self.budget:
                need = _round_up_mib((peak + extra) / (1.0 - _MARGIN))
                raise ValueError(
                    f"{_NAME}: budget {memory.fmt_bytes(self.budget)} ({self.budget} bytes) is "
                    f"below the measured peak of a micro-batch of 1 row ({memory.fmt_bytes(peak)}"
                    + (f" + {memory.fmt_bytes(extra)} optimizer state" if extra else "")
                    + f"); the smallest budget that would work is about {memory.fmt_bytes(need)} "
                    f"(budget={need})")
            if peak > target:  # this probe missed the target: fall back to one that fitted
                fits = [s for s, p in self._line if p <= target]
                chosen = max(fits) if fits else 1
            else:
                self._fit()
                if self._slope is None and base is not None:
                    # One size measured: charge everything this micro-batch
                    # added over what was held before it to its rows (an upper
                    # bound when memory grows linearly with rows), so the next
                    # probe cannot overshoot the budget.
                    self._slope = max(float(peak - base), 0.0) / size
                nxt = 2 * size
                if self._slope is None or self._predict(nxt) <= target:
                    m = nxt
                elif not retried and size == 1:
                    # The first micro-batch also pays one-time costs (lazy
                    # initialisation, the accumulators it allocates), which
                    # the bound above charges to its one row: measure one
                    # row again, over what is held now, before settling.
                    retried, self._slope, m = True, None, 1
                else:
                    chosen = self._largest_fitting(extra, N)
            if chosen is not None:
                m = chosen
        self.micro_batch_size = chosen if chosen is not None else self._largest_fitting(extra, N)
        return sizes

    def _over_budget(self, mb_peak: Optional[int], opt_peak: Optional[int]) -> None:
        if opt_peak is not None and opt_peak > self.budget:
            warnings.warn(f"{_NAME}: step {self.steps}: the optimizer step alone measured a peak "
                          f"of {memory.fmt_bytes(opt_peak)}, over the budget "
                          f"{memory.fmt_bytes(self.budget)}; no micro-batch size can fix that "
                          f"(a budget of at least {memory.fmt_bytes(_round_up_mib(opt_peak))} "
                          f"is needed)", RuntimeWarning, stacklevel=3)
        if mb_peak is not None and mb_peak > self.budget:
            self._shrink(mb_peak)

    def _shrink(self, peak: int) -> None:
        m = self.micro_batch_size
        if self._slope and self._slope > 0:
            new = m - int(math.ceil((peak - self.budget * (1.0 - _MARGIN)) / self._slope))
        else:
            new = m // 2
        new = max(1, min(new, m - 1)) if m > 1 else 1
        warnings.warn(f"{_NAME}: step {self.steps} measured a peak of {memory.fmt_bytes(peak)}, "
                      f"over the budget {memory.fmt_bytes(self.budget)}; micro_batch_size "
                      f"{m} -> {new} for the next step"
                      + ("" if m > 1 else " (already 1: raise the budget)"), RuntimeWarning,
                      stacklevel=3)
        self.micro_batch_size = new
