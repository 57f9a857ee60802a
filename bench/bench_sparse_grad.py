"""bench/bench_sparse_grad.py — the backward to x (what LoRA training through a
frozen base runs) of a pruned 2:4 layer beside the dense int8 one, in one run:
QLinear (qlinear_grad_input), SparseLinear and SparseQLinear
(sparse_*_grad_input), medians of interleaved repeats.

    python bench/bench_sparse_grad.py [--threads 2] [--shape 576x1536] [--m 64]
"""
import argparse
import statistics
import time

import torch

import lowvram  # noqa: F401  (loads the ops)
from lowvram.nn import QLinear, SparseLinear, SparseQLinear


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--shape", default="576x1536", help="KxN (in x out)")
    p.add_argument("--m", type=int, default=64, help="rows of x")
    p.add_argument("--repeats", type=int, default=9)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    K, N = (int(v) for v in a.shape.split("x"))
    lin = torch.nn.Linear(K, N)
    mask = torch.ops.lowvram.nm_mask(lin.weight.abs(), 2, 4).bool()
    q = QLinear.from_linear(lin)
    mods = {"QLinear (dense int8)": q,
            "SparseLinear 2:4 (fp32 values)": SparseLinear.from_linear(lin, mask, n=2, m=4),
            "SparseQLinear 2:4 (int8 values)": SparseQLinear.from_qlinear(q, mask, n=2, m=4)}
    x = torch.randn(a.m, K, requires_grad=True)
    times = {k: [] for k in mods}
    for r in range(a.repeats + 1):
        for name, mod in mods.items():
            y = mod(x)
            g = torch.ones_like(y)
            t0 = time.perf_counter()
            y.backward(g)
            if r:  # the first round pays one-time costs
                times[name].append(time.perf_counter() - t0)
    base = statistics.median(times["QLinear (dense int8)"])
    print(f"backward to x of [{a.m}x{K}] -> {N}, {a.threads} threads, ISA {lowvram.cpu_isa()}")
    for k, v in times.items():
        m = statistics.median(v)
        print(f"{k:34s} {m * 1e3:9.2f} ms  {m / base:7.1f}x dense int8")


if __name__ == "__main__":
    main()
