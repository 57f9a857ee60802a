"""bench/bench_sparse.py — pruned Linears side by side with dense ones, in one run.

Methods (y = x W^T, x [M, K], W [N, K]):
  fp32, bf16        F.linear, dense
  qlinear           lowvram int8, dense (the baseline the 2:4 target is against)
  sparse-q 2:4      lowvram.sparse_qlinear, 2:4 int8 compressed (0.625 B/weight)
  sparse-f 2:4      lowvram.sparse_linear, 2:4 float32 values (2.125 B/weight)
  qlinear ch-25%    lowvram int8 on a weight with 25% of its rows removed (FFN
                    channel pruning: up/gate lose rows; down loses columns — both
                    shapes are timed as the pruned [0.75N, K] and [N, 0.75K])
  torch-2:4         torch.sparse.to_sparse_semi_structured, where it runs (CUDA only)

Timing as bench/bench_qlinear.py (whose `measure` this uses): cold = weights
rotated through copies so >128 MiB of other weights pass between uses, methods
interleaved; hot = back to back. Prints a table; --md writes docs tables.

    python bench/bench_sparse.py [--md bench/out/pruning_speed.md]   (docs/pruning.md's tables)
"""
import argparse
import os
import sys
import time

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import lowvram  # noqa: E402
from lowvram import reference as ref  # noqa: E402
from bench_qlinear import COLD_BYTES, measure  # noqa: E402

SHAPES = [(4096, 11008), (11008, 4096), (576, 1536), (1536, 576)]
MS = [1, 8, 512]


def one_copy(K, N, seed):
    """name -> (builder(x), weight bytes)."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(N, K, generator=g) / K ** 0.5
    keep = ref.nm_mask(w.abs(), 2, 4)
    wb = w.to(torch.bfloat16)
    qw, ws = lowvram.ops.quantize_weight(w)
    qwm, wsm = lowvram.ops.quantize_weight(w * keep)
    qv, qbits = lowvram.ops.sparse_compress(qwm, keep)
    fv, fbits = lowvram.ops.sparse_compress(w, keep)
    rows = (3 * N) // 4
    qr, wr = lowvram.ops.quantize_weight(w[:rows].contiguous())
    cols = ((3 * K) // 4 + 63) // 64 * 64
    qc, wc = lowvram.ops.quantize_weight(w[:, :cols].contiguous())
    m = {
        "fp32": (lambda x: (lambda: F.linear(x, w)), 4 * N * K),
        "bf16": (lambda x: (lambda xb=x.bfloat16(): F.linear(xb, wb)), 2 * N * K),
        "qlinear": (lambda x: (lambda: torch.ops.lowvram.qlinear(x, qw, ws)), N * K),
        "sparse-q 2:4": (lambda x: (lambda: torch.ops.lowvram.sparse_qlinear(x, qv, qbits, ws)),
                         qv.numel() + qbits.numel()),
        "sparse-f 2:4": (lambda x: (lambda: torch.ops.lowvram.sparse_linear(x, fv, fbits)),
                         4 * fv.numel() + fbits.numel()),
        "qlinear rows-25%": (lambda x: (lambda: torch.ops.lowvram.qlinear(x, qr, wr)), rows * K),
        "qlinear cols-25%": (lambda x: (lambda xc=x[:, :cols].contiguous():
                                        torch.ops.lowvram.qlinear(xc, qc, wc)), N * cols),
    }
    if torch.cuda.is_available():
        try:
            from torch.sparse import to_sparse_semi_structured
            wsp = to_sparse_semi_structured((w * keep).half().cuda())
            m["torch-2:4"] = (lambda x: (lambda xh=x.half().cuda(): F.linear(xh, wsp)), N * K)
        except Exception as e:  # noqa: BLE001
            print(f"to_sparse_semi_structured unavailable: {e}", file=sys.stderr)
    else:
        print("torch-2:4 (to_sparse_semi_structured) needs CUDA: not run on this machine",
              file=sys.stderr)
    return m


def make_methods(K, N):
    first = one_copy(K, N, 0)
    per_copy = sum(v[1] for v in first.values())
    copies = max(1, -(-COLD_BYTES // per_copy))
    rest = [one_copy(K, N, c) for c in range(1, copies)]
    return {name: ([v[0]] + [r[name][0] for r in rest], v[1]) for name, v in first.items()}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--ms", type=int, nargs="+", default=MS)
    p.add_argument("--shapes", type=lambda s: tuple(int(v) for v in s.split("x")), nargs="+",
                   default=SHAPES)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--md", help="write a markdown table here")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    lines = [f"Measured {time.strftime('%Y-%m-%d %H:%M')}, {a.threads} threads, lowvram ISA "
             f"`{lowvram.cpu_isa()}`; ms per call (median), command `python bench/bench_sparse.py`.",
             ""]
    for (K, N) in a.shapes:
        methods = make_methods(K, N)
        names = list(methods)
        lines += [f"### K={K}, N={N}", "", "| M | " + " | ".join(names) + " |",
                  "|---|" + "---|" * len(names)]
        for M in a.ms:
            x = torch.randn(M, K)
            for cold in ([True, False] if M <= 8 else [False]):
                fns = {n: [b(x) for b in builds] for n, (builds, _) in methods.items()}
                med = measure(fns, a.repeats, cold, self_timed=())
                base = med["qlinear"]
                cells = [f"{med[n] * 1e3:.3f} ({base / med[n]:.2f}x)" for n in names]
                lines.append(f"| {M} {'cold' if cold else 'hot'} | " + " | ".join(cells) + " |")
                print(f"K={K} N={N} M={M} {'cold' if cold else 'hot '}: " + "  ".join(
                    f"{n} {med[n] * 1e3:.3f}" for n in names), flush=True)
        lines.append("")
    lines.append("(x): speed relative to dense `qlinear` in the same row (> 1 is faster).")
    if a.md:
        with open(a.md, "w") as f:
            f.write("\n".join(lines) + "\n")
        print(f"wrote {a.md}")


if __name__ == "__main__":
    main()
