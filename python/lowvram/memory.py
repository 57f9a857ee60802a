"""lowvram.memory — memory measured, not estimated.

* :func:`footprint` counts the bytes of a model's parameters and buffers from
  their storages (each storage once, so tied weights count once), by dtype
  and by module type.
* :func:`peak_rss` / :func:`reset_peak_rss` read and reset the process's peak
  resident set (VmHWM in /proc/self/status; writing 5 to
  /proc/self/clear_refs resets it) on Linux.
* :func:`peak_cuda` / :func:`reset_peak_cuda` wrap
  ``torch.cuda.max_memory_allocated``.
* :func:`empty_hugepages` allocates a CPU tensor in transparent huge pages
  (2 MiB): weights streamed once per token are read at the DRAM bandwidth of
  2 MiB pages (no TLB walk every 4 KiB), which on this project's machine is
  ~1.5x that of the 4 KiB pages torch's allocator uses by default.
"""
import mmap
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Dict, Optional

import torch
from torch import nn


def fmt_bytes(n: float) -> str:
    """1536 -> '1.50 KiB'."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{int(n)} B" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024.0
    return f"{n} B"


@dataclass
class Footprint:
    """Bytes of a model's parameters and buffers."""
    total: int = 0
    by_dtype: Dict[str, int] = field(default_factory=dict)
    by_module_type: Dict[str, int] = field(default_factory=dict)
    linear_weights: int = 0  # weights of Linear-like modules (float or quantized)

    def __str__(self) -> str:
        lines = [f"total {fmt_bytes(self.total)} ({self.total} bytes); "
                 f"Linear weights {fmt_bytes(self.linear_weights)}"]
        lines.append("  by dtype: " + ", ".join(
            f"{k} {fmt_bytes(v)}" for k, v in sorted(self.by_dtype.items(), key=lambda kv: -kv[1])))
        lines.append("  by module: " + ", ".join(
            f"{k} {fmt_bytes(v)}" for k, v in sorted(self.by_module_type.items(),
                                                    key=lambda kv: -kv[1])))
        return "\n".join(lines)


def _storage_key(t: torch.Tensor):
    s = t.untyped_storage()
    return (t.device.type, t.device.index, s.data_ptr(), s.nbytes())


def footprint(model: nn.Module) -> Footprint:
    """Bytes of every parameter and buffer storage of ``model`` (each storage
    counted once, so tied weights count once), by dtype and by the type of the
    module that owns it."""
    from .nn import QLinear, SparseLinear, SparseQLinear, is_hf_conv1d
    quantized = {QLinear: ("qweight", "wscale", "act_scale"), SparseLinear: ("values", "mask_bits"),
                 SparseQLinear: ("qvalues", "mask_bits", "wscale", "act_scale")}
    fp = Footprint()
    seen = set()
    by_dtype: Dict[str, int] = defaultdict(int)
    by_type: Dict[str, int] = defaultdict(int)
    for mod in model.modules():
        tensors = list(mod.named_parameters(recurse=False)) + list(mod.named_buffers(recurse=False))
        for name, t in tensors:
            if t is None:
                continue
            key = _storage_key(t)
            if key in seen:
                continue
            seen.add(key)
            n = t.untyped_storage().nbytes()
            fp.total += n
            by_dtype[str(t.dtype).replace("torch.", "")] += n
            by_type[type(mod).__name__] += n
            if name in quantized.get(type(mod), ()):
                fp.linear_weights += n
            elif (isinstance(mod, nn.Linear) or is_hf_conv1d(mod)) and name == "weight":
                fp.linear_weights += n
    fp.by_dtype = dict(by_dtype)
    fp.by_module_type = dict(by_type)
    return fp


def linear_weight_bytes(model: nn.Module) -> int:
    """Bytes of the weights of Linear and QLinear modules (see footprint)."""
    return footprint(model).linear_weights


def _status_kib(key: str) -> Optional[int]:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def rss() -> Optional[int]:
    """Current resident set in bytes (VmRSS), or None off Linux."""
    k = _status_kib("VmRSS")
    return None if k is None else k * 1024


def peak_rss() -> Optional[int]:
    """Peak resident set since the last reset, in bytes (VmHWM), or None off Linux."""
    k = _status_kib("VmHWM")
    return None if k is None else k * 1024


def reset_peak_rss() -> bool:
    """Resets VmHWM to the current RSS (writes 5 to /proc/self/clear_refs).
    Returns False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_cuda(device=None) -> int:
    """torch.cuda.max_memory_allocated(device)."""
    return torch.cuda.max_memory_allocated(device)


def reset_peak_cuda(device=None) -> None:
    """torch.cuda.reset_peak_memory_stats(device)."""
    torch.cuda.reset_peak_memory_stats(device)


HUGEPAGE = 2 << 20


def empty_hugepages(shape, dtype: torch.dtype) -> torch.Tensor:
    """An uninitialized CPU tensor whose memory is a private anonymous mapping
    advised MADV_HUGEPAGE and aligned to 2 MiB (so every full 2 MiB of it can
    be a huge page when the kernel's THP mode is "madvise" or "always"). The
    mapping lives as long as the tensor (torch.frombuffer keeps it). Where
    madvise or MADV_HUGEPAGE is unavailable, a plain torch.empty."""
    shape = tuple(int(s) for s in shape)
    numel = 1
    for s in shape:
        numel *= s
    nbytes = numel * torch.empty((), dtype=dtype).element_size()
    if nbytes == 0 or not hasattr(mmap, "MADV_HUGEPAGE") or not hasattr(mmap, "MAP_PRIVATE"):
        return torch.empty(shape, dtype=dtype)
    mm = mmap.mmap(-1, nbytes + HUGEPAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    mm.madvise(mmap.MADV_HUGEPAGE)  # before the first touch: faults then take 2 MiB pages
    base = torch.frombuffer(mm, dtype=torch.uint8, count=1).data_ptr()
    offset = (-base) % HUGEPAGE
    t = torch.frombuffer(mm, dtype=torch.uint8, count=nbytes, offset=offset)
    return t.view(dtype).view(shape)


def storage_bytes(*tensors: torch.Tensor) -> int:
    """Bytes of the distinct storages behind tensors."""
    seen = set()
    total = 0
    for t in tensors:
        key = _storage_key(t)
        if key not in seen:
            seen.add(key)
            total += t.untyped_storage().nbytes()
    return total


