"""lowvram — run and fine-tune PyTorch models bigger than your GPU (or laptop).

Three levers, each a set of torch ops (``torch.ops.lowvram.*``) with C and
CUDA kernels behind a minimal C++ shim:

* int8 dynamic-quantized Linear: ``torch.ops.lowvram.qlinear``,
  :class:`lowvram.nn.QLinear`, :func:`lowvram.quantize_`.
* pruning that really saves memory: N:M masks (``torch.ops.lowvram.nm_mask``),
  compressed storage and sparse kernels (``sparse_linear``, ``sparse_qlinear``),
  :class:`lowvram.nn.SparseLinear` / ``SparseQLinear``, :func:`lowvram.prune_`.

Loading this package loads the compiled library (``lowvram/_C*.so``) into
``torch.ops.lowvram`` and registers the fake kernels and autograd formulas
(``lowvram.ops``).
"""
import glob as _glob
import os as _os

import torch as _torch


def _load_library():
    here = _os.path.dirname(_os.path.abspath(__file__))
    libs = sorted(_glob.glob(_os.path.join(here, "_C*.so")))
    if not libs:
        raise ImportError(
            "lowvram: the compiled library lowvram/_C*.so is missing; build it with "
            "`pip install --no-build-isolation .` from the repository root"
        )
    _torch.ops.load_library(libs[0])


_load_library()

from . import ops  # noqa: E402  (fake kernels + autograd must be registered at import)
from . import nn  # noqa: E402
from . import memory  # noqa: E402
from . import reference  # noqa: E402
from .quantize import quantize_  # noqa: E402
from .prune import prune_  # noqa: E402
from .channels import prune_channels_  # noqa: E402
from . import train  # noqa: E402
from .train import MicroBatchStep  # noqa: E402
from . import lora  # noqa: E402
from .lora import lora_  # noqa: E402  (lowvram.lora.merge_, save_lora, load_lora, ...)
from .ops import cpu_isa, set_cpu_isa, cpu_isa_supported  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "ops",
    "nn",
    "memory",
    "reference",
    "quantize_",
    "prune_",
    "prune_channels_",
    "train",
    "MicroBatchStep",
    "lora",
    "lora_",
    "cpu_isa",
    "set_cpu_isa",
    "cpu_isa_supported",
]
