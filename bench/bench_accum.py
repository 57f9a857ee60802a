"""bench/bench_accum.py — torch.ops.lowvram.grad_accum_ beside what a user
would write instead, in one run: torch._foreach_add_(accs, [g.float() for g
in grads], alpha=scale) (bf16 grads need converting first), and the same with
float32 grads already given (no conversion, the lower bound of that route).

The list has SmolLM2-135M's parameter shapes (272 tensors, 134.5M values),
bf16 gradients, float32 accumulators; methods interleaved, medians. Memory:
the process's peak RSS (VmHWM, reset through /proc/self/clear_refs) above
what was resident before one call of each method (glibc's mmap threshold
fixed at 1 MiB, as MicroBatchStep does, so freed tensors leave the resident set).

    python bench/bench_accum.py [threads] [repeats]
"""
import gc
import statistics
import sys
import time

import torch

import lowvram
from lowvram.memory import peak_rss, reset_peak_rss, rss
from lowvram.train import _pin_mmap_threshold

threads = int(sys.argv[1]) if len(sys.argv) > 1 else 2
repeats = int(sys.argv[2]) if len(sys.argv) > 2 else 30
torch.set_num_threads(threads)
# Freed tensors must leave the resident set, or the converted copies of one
# call hide in the heap the next call reuses (glibc's moving mmap threshold).
_pin_mmap_threshold()
# SmolLM2-135M: hidden 576, intermediate 1536, 30 layers, vocab 49152, 3 kv heads of 64
H, I, L, V, KVD = 576, 1536, 30, 49152, 192
shapes = [(V, H)]
for _ in range(L):
    shapes += [(H, H), (KVD, H), (KVD, H), (H, H), (I, H), (I, H), (H, I), (H,), (H,)]
shapes += [(H,)]
n = sum(torch.Size(s).numel() for s in shapes)
gen = torch.Generator().manual_seed(0)
accs = [torch.randn(s, generator=gen) for s in shapes]
grads = [torch.randn(s, generator=gen).bfloat16() for s in shapes]
grads_f32 = [g.float() for g in grads]
accs2 = [a.clone() for a in accs]
scale = 1 / 8

fns = {
    "lowvram grad_accum_ (bf16 grads)": lambda: lowvram.ops.grad_accum_(accs, grads, scale),
    "_foreach_add_(g.float() for bf16 grads)":
        lambda: torch._foreach_add_(accs2, [g.float() for g in grads], alpha=scale),
    "_foreach_add_ (f32 grads given)":
        lambda: torch._foreach_add_(accs2, grads_f32, alpha=scale),
}
print(f"{len(shapes)} tensors, {n / 1e6:.1f}M values, {threads} threads, "
      f"ISA {lowvram.cpu_isa()}, {repeats} interleaved repeats")
extra = {}
for k, f in fns.items():
    f()
    gc.collect()
    before = rss()
    if reset_peak_rss() and before:
        f()
        extra[k] = peak_rss() - before
times = {k: [] for k in fns}
for _ in range(repeats):
    for k, f in fns.items():
        t = time.perf_counter()
        f()
        times[k].append(time.perf_counter() - t)
base = statistics.median(times["lowvram grad_accum_ (bf16 grads)"])
for k, v in times.items():
    m = statistics.median(v)
    mem = f"{extra[k] / 2**20:7.1f} MiB" if k in extra else "n/a"
    print(f"{k:42s} median {m * 1e3:7.1f} ms  min {min(v) * 1e3:7.1f} ms  "
          f"{m / base:5.2f}x lowvram  peak above resident {mem}")
