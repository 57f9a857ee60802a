"""bench/bench_qlinear.py — lowvram.qlinear side by side with what a PyTorch
user would use instead, in one run, and against this machine's limits.

Methods (each y = x W^T for x [M, K], W [N, K]):
  fp32            F.linear in float32
  bf16            F.linear in bfloat16
  qd-x86          torch.ao.quantization.quantize_dynamic, x86 (fbgemm) engine
  qd-onednn       the same, onednn engine
  torchao         torchao Int8DynamicActivationInt8WeightConfig, eager
  torchao-c       the same under torch.compile (if torchao imports)
  lowvram         torch.ops.lowvram.qlinear, weights in torch's memory (4 KiB pages)
  lowvram-hp      the same with the int8 weight in 2 MiB pages (lowvram.memory.empty_hugepages)

Timing: median of --repeats calls after a warm-up; cold runs interleave the
methods (every repeat runs each method once, in turn: this VM's memory
bandwidth drifts over minutes), hot runs call each method back to back;
methods slower than ~0.3 s a call get fewer repeats (>= 3). "cold": the caches are flushed (a 256 MiB buffer is read) before
every timed call, so the weights come from DRAM; "hot": calls back to back. Cold and hot are both measured
for M <= 8 (where reading the weights is the cost); larger M are hot only.

Limits, measured in the same run by bench/machine_limits.c: DRAM read
bandwidth for the thread count in 4 KiB and 2 MiB pages, and the vpdpbusd
int8 peak. M = 1 rows report GB/s of weight bytes (N*K for int8, 2*N*K for
bf16, 4*N*K for fp32) beside the bandwidth; M = 512 rows report GOP/s
(2*M*N*K) beside the int8 peak.

    python bench/bench_qlinear.py                      # full run -> docs/performance.md + PNG
    python bench/bench_qlinear.py --quick              # a smaller grid, printed only
"""
import argparse
import ctypes
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import warnings

import torch
import torch.nn.functional as F
from torch import nn

import lowvram

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
OUT = os.path.join(HERE, "out")

SHAPES = [(4096, 4096), (4096, 11008), (11008, 4096), (576, 1536), (1536, 576)]
MS = [1, 8, 32, 128, 512]
COLD_MAX_M = 8
COLD_BYTES = 128 << 20  # > 3x this machine's 32 MiB L3: what passes between two uses of a weight
NOTES_MARKER = "<!-- notes: kept when the tables are regenerated -->"


def build_limits():
    os.makedirs(OUT, exist_ok=True)
    so = os.path.join(OUT, "machine_limits.so")
    src = os.path.join(HERE, "machine_limits.c")
    if not os.path.exists(so) or os.path.getmtime(so) < os.path.getmtime(src):
        subprocess.check_call(["cc", "-O2", "-fopenmp", "-shared", "-fPIC", "-o", so, src])
    lib = ctypes.CDLL(so)
    lib.lv_bench_read_gbs.restype = ctypes.c_double
    lib.lv_bench_read_gbs.argtypes = [ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.lv_bench_read_once.restype = ctypes.c_double
    lib.lv_bench_read_once.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    lib.lv_bench_vnni_gops.restype = ctypes.c_double
    lib.lv_bench_vnni_gops.argtypes = [ctypes.c_int, ctypes.c_long]
    return lib


def measure_limits(lib, threads):
    lim = {}
    for t in threads:
        lim[t] = {
            "read_gbs_4k": lib.lv_bench_read_gbs(1 << 30, t, 0, 5),
            "read_gbs_2m": lib.lv_bench_read_gbs(1 << 30, t, 1, 5),
            "vnni_gops": max(lib.lv_bench_vnni_gops(t, 20_000_000) for _ in range(3)),
        }
    return lim


def measure(fns, repeats, cold, self_timed=("read-4k", "read-hp")):
    """Median seconds per call of each method (name -> list of callables, one
    per weight copy). Cold: every repeat runs every method once, in turn,
    each on its next copy (see make_methods) — interleaved, so that all
    methods also see the same periods of this VM's drifting memory bandwidth.
    Hot: each method's first copy back to back, its weights in the caches."""
    times = {name: [] for name in fns}
    reps = {}
    for name, cs in fns.items():
        for fn in cs:
            fn()  # warm-up (and lazy packing, compilation)
        t = time.perf_counter()
        cs[0]()
        reps[name] = max(3, min(repeats, int(1.0 / max(time.perf_counter() - t, 1e-6))))

    def once(name, fn):
        t = time.perf_counter()
        out = fn()
        dt = time.perf_counter() - t
        # the read passes time themselves (C, no Python around the pass)
        times[name].append(out if name in self_timed else dt)

    every = list(fns.items())
    if cold:
        for r in range(repeats):
            for name, cs in every:
                if r < reps[name]:
                    once(name, cs[r % len(cs)])
    else:
        for name, cs in every:
            cs[0]()
            for _ in range(reps[name]):
                once(name, cs[0])
    return {name: statistics.median(v) for name, v in times.items()}


def one_copy(K, N, with_torchao, seed, lib):
    """name -> (builder(x_fp32, threads) -> callable, weight bytes, weight
    tensor or None) for one set of weights. 'read-4k' / 'read-hp' are plain
    passes (C) over an int8 tensor of the weight's size in torch's memory
    (4 KiB pages) / in huge pages: the time a kernel streaming those bytes
    cannot beat; their callables return their own seconds."""
    torch.manual_seed(seed)
    lin = nn.Linear(K, N, bias=False)
    w = lin.weight.detach()
    wb = w.to(torch.bfloat16)
    methods = {
        "fp32": (lambda x, t: (lambda: F.linear(x, w)), 4 * N * K, w),
        "bf16": (lambda x, t: (lambda xb=x.bfloat16(): F.linear(xb, wb)), 2 * N * K, wb),
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for engine in ("x86", "onednn"):
            if engine not in torch.backends.quantized.supported_engines:
                continue
            torch.backends.quantized.engine = engine
            qd = torch.ao.quantization.quantize_dynamic(nn.Sequential(lin), {nn.Linear},
                                                        dtype=torch.qint8)

            def build(x, t, qd=qd, engine=engine):
                def run():
                    torch.backends.quantized.engine = engine
                    return qd(x)
                return run
            methods[f"qd-{engine}"] = (build, N * K, None)
    if with_torchao:
        try:
            from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_
            ao = nn.Sequential(nn.Linear(K, N, bias=False))
            ao[0].weight.data.copy_(w)
            quantize_(ao, Int8DynamicActivationInt8WeightConfig())
            aoc = torch.compile(ao, fullgraph=True)
            methods["torchao"] = (lambda x, t: (lambda: ao(x)), N * K, None)
            methods["torchao-c"] = (lambda x, t: (lambda: aoc(x)), N * K, None)
        except Exception as e:  # noqa: BLE001 — report and go on without it
            print(f"torchao unavailable: {type(e).__name__}: {e}", file=sys.stderr)
    qw, ws = lowvram.ops.quantize_weight(w)
    methods["lowvram"] = (lambda x, t: (lambda: torch.ops.lowvram.qlinear(x, qw, ws)), N * K, qw)
    qwh = lowvram.memory.empty_hugepages(qw.shape, torch.int8)
    qwh.copy_(qw)
    methods["lowvram-hp"] = (lambda x, t: (lambda: torch.ops.lowvram.qlinear(x, qwh, ws)), N * K,
                             qwh)
    r4 = qw.clone()
    rh = lowvram.memory.empty_hugepages(qw.shape, torch.int8)
    rh.copy_(qw)
    for name, buf in (("read-4k", r4), ("read-hp", rh)):
        methods[name] = (lambda x, t, b=buf: (lambda: lib.lv_bench_read_once(
            b.data_ptr(), b.numel(), t)), N * K, buf)
    return methods


def make_methods(K, N, with_torchao, lib):
    """name -> (builders, weight bytes, weight tensors): one builder (and
    tensor) per copy of the weights. Cold runs rotate through the copies with
    every method interleaved, so that more than COLD_BYTES of other weights
    pass between two uses of one: each call reads its weights from DRAM while
    the code and the small buffers around it stay in the caches, as in a
    model whose layers' weights together exceed the caches. (Flushing the
    caches before each call instead would also evict the framework's code and
    charge its cache misses to every method.)"""
    first = one_copy(K, N, with_torchao, 0, lib)
    per_copy = sum(v[1] for v in first.values())
    copies = max(1, -(-COLD_BYTES // per_copy))
    rest = [one_copy(K, N, with_torchao, c, lib) for c in range(1, copies)]
    return {name: ([v[0]] + [r[name][0] for r in rest], v[1], [v[2]] + [r[name][2] for r in rest])
            for name, v in first.items()}


def run(args, save):
    lib = build_limits()
    # torchao-c compiles once per (shape, M): more than dynamo's default limit
    torch._dynamo.config.recompile_limit = 1024
    threads = args.threads
    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"lowvram ISA {lowvram.cpu_isa()}", flush=True)
    limits = measure_limits(lib, threads)
    for t, lim in limits.items():
        print(f"limits, {t} thread(s): read {lim['read_gbs_4k']:.1f} GB/s (4 KiB pages), "
              f"{lim['read_gbs_2m']:.1f} GB/s (2 MiB pages); vpdpbusd {lim['vnni_gops']:.0f} GOP/s",
              flush=True)
    rows = []
    res = {"limits": {str(k): v for k, v in limits.items()}, "rows": rows,
           "machine": platform.processor() or platform.machine(),
           "torch": torch.__version__, "isa": lowvram.cpu_isa(),
           "date": time.strftime("%Y-%m-%d %H:%M")}
    for (K, N) in args.shapes:
        methods = make_methods(K, N, not args.no_torchao, lib)
        for t in threads:
            torch.set_num_threads(t)
            for M in args.ms:
                x = torch.randn(M, K)
                for cold in ([True, False] if M <= COLD_MAX_M else [False]):
                    fns = {name: [b(x, t) for b in builds]
                           for name, (builds, _, _) in methods.items()
                           if cold or not name.startswith("read")}
                    if M > 1:
                        fns = {k: v for k, v in fns.items() if not k.startswith("read")}
                    med = measure(fns, args.repeats, cold)
                    for name, sec in med.items():
                        wbytes = methods[name][1]
                        rows.append({"K": K, "N": N, "M": M, "threads": t, "cold": cold,
                                     "method": name, "ms": sec * 1e3, "weight_bytes": wbytes,
                                     "gbs": wbytes / sec / 1e9,
                                     "gops": 0.0 if name.startswith("read") else
                                     2 * M * N * K / sec / 1e9})
                    line = "  ".join(f"{r['method']} {r['ms']:.3f}" for r in rows
                                     if (r["K"], r["N"], r["M"], r["threads"], r["cold"]) ==
                                     (K, N, M, t, cold))
                    print(f"K={K} N={N} M={M} t={t} {'cold' if cold else 'hot '}: {line}",
                          flush=True)
        save(res)  # after every shape: a long run that fails keeps what it measured
    return res


def write_docs(res, md_path, png_path, command):
    rows, limits = res["rows"], res["limits"]
    methods = []
    for r in rows:
        if r["method"] not in methods:
            methods.append(r["method"])
    lines = ["# qlinear performance (CPU)", "",
             f"Measured {res['date']} on this project's dev machine ({res['machine']}, 2 cores, "
             f"Zen 4, AVX-512 VNNI), torch {res['torch']}, lowvram ISA `{res['isa']}`. "
             f"Command: `{command}`. Median of the repeats; ms per call.", ""]
    for t, lim in limits.items():
        lines.append(f"- limits with {t} thread(s): DRAM read {lim['read_gbs_4k']:.1f} GB/s in 4 KiB "
                     f"pages, {lim['read_gbs_2m']:.1f} GB/s in 2 MiB pages; vpdpbusd peak "
                     f"{lim['vnni_gops']:.0f} GOP/s")
    lines.append("")
    shapes = sorted({(r["K"], r["N"]) for r in rows}, key=lambda s: -s[0] * s[1])
    for t in sorted({r["threads"] for r in rows}):
        lim = limits[str(t)]
        for (K, N) in shapes:
            lines.append(f"## K={K}, N={N}, {t} thread(s)")
            lines.append("")
            lines.append("| M | " + " | ".join(methods) + " |")
            lines.append("|---|" + "---|" * len(methods))
            for M in sorted({r["M"] for r in rows}):
                for cold in (True, False):
                    sel = {r["method"]: r for r in rows if (r["K"], r["N"], r["M"], r["threads"],
                                                            r["cold"]) == (K, N, M, t, cold)}
                    if not sel:
                        continue
                    cells = []
                    for m in methods:
                        r = sel.get(m)
                        if r is None:
                            cells.append("")
                        elif M == 1:
                            cells.append(f"{r['ms']:.3f} ({r['gbs']:.1f} GB/s)")
                        elif M == max(x["M"] for x in rows):
                            cells.append(f"{r['ms']:.2f} ({r['gops']:.0f} GOP/s)")
                        else:
                            cells.append(f"{r['ms']:.3f}")
                    lines.append(f"| {M} {'cold' if cold else 'hot'} | " + " | ".join(cells) + " |")
            lines.append("")
            m1 = {r["method"]: r for r in rows if (r["K"], r["N"], r["M"], r["threads"], r["cold"])
                  == (K, N, 1, t, True)}
            if "lowvram" in m1:
                parts = []
                for q, rd in (("lowvram", "read-4k"), ("lowvram-hp", "read-hp")):
                    if q in m1 and rd in m1:
                        parts.append(f"{q} {m1[q]['gbs']:.1f} GB/s = "
                                     f"{100 * m1[rd]['ms'] / m1[q]['ms']:.0f}% of reading the same "
                                     f"memory alone ({rd} {m1[rd]['gbs']:.1f} GB/s)")
                best = min((m1[q]["ms"] for q in ("lowvram", "lowvram-hp") if q in m1))
                for other in ("qd-x86", "qd-onednn", "bf16"):
                    if other in m1:
                        parts.append(f"{m1[other]['ms'] / best:.2f}x faster than {other}")
                lines.append("- M=1 cold: " + "; ".join(parts))
            big = {r["method"]: r for r in rows if (r["K"], r["N"], r["threads"]) == (K, N, t)
                   and r["M"] == max(x["M"] for x in rows) and not r["cold"]}
            if "lowvram" in big and lim["vnni_gops"] > 0:
                parts = [f"M={big['lowvram']['M']}: lowvram {big['lowvram']['gops']:.0f} GOP/s = "
                         f"{100 * big['lowvram']['gops'] / lim['vnni_gops']:.0f}% of the int8 peak"]
                if "qd-onednn" in big:
                    parts.append(f"{big['qd-onednn']['ms'] / big['lowvram']['ms']:.2f}x the speed "
                                 f"of qd-onednn")
                lines.append("- " + "; ".join(parts))
            lines.append("")
    # hand-written notes below the marker survive a re-run
    notes = ""
    if os.path.exists(md_path):
        with open(md_path) as f:
            old = f.read()
        if NOTES_MARKER in old:
            notes = old[old.index(NOTES_MARKER):]
    with open(md_path, "w") as f:
        f.write(("\n".join(lines) + "\n") + ("\n" + notes if notes else ""))
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    tmax = max(int(t) for t in limits)
    fig, axes = plt.subplots(1, len(shapes), figsize=(4 * len(shapes), 3.6), squeeze=False)
    for ax, (K, N) in zip(axes[0], shapes):
        for m in methods:
            pts = sorted((r["M"], r["ms"]) for r in rows if (r["K"], r["N"], r["threads"],
                                                            r["method"]) == (K, N, tmax, m)
                         and not r["cold"])
            base = {r["M"]: r["ms"] for r in rows if (r["K"], r["N"], r["threads"], r["method"],
                                                       r["cold"]) == (K, N, tmax, "fp32", False)}
            if pts:
                ax.plot([p[0] for p in pts], [base[p[0]] / p[1] for p in pts], marker="o",
                        label=m, lw=2.5 if m.startswith("lowvram") else 1.2)
        ax.set_xscale("log", base=2)
        ax.set_title(f"K={K} N={N}, {tmax} threads")
        ax.set_xlabel("M (rows)")
        ax.set_ylabel("speed-up over F.linear fp32")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(png_path, dpi=110)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--ms", type=int, nargs="+", default=MS)
    p.add_argument("--shapes", type=lambda s: tuple(int(v) for v in s.split("x")), nargs="+",
                   default=SHAPES, help="KxN ...")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--no-torchao", action="store_true")
    p.add_argument("--quick", action="store_true", help="4096x11008 only, M 1 and 512, 2 threads")
    p.add_argument("--from-json", help="rewrite the docs from a saved bench/out/bench_qlinear.json")
    p.add_argument("--md", default=os.path.join(ROOT, "docs", "performance.md"))
    p.add_argument("--png", default=os.path.join(ROOT, "docs", "performance.png"))
    args = p.parse_args()
    if args.from_json:
        with open(args.from_json) as f:
            write_docs(json.load(f), args.md, args.png, "python bench/bench_qlinear.py")
        return
    if args.quick:
        args.shapes, args.ms, args.threads, args.repeats = [(4096, 11008)], [1, 512], [2], 5
    os.makedirs(OUT, exist_ok=True)

    def save(res):
        with open(os.path.join(OUT, "bench_qlinear.json"), "w") as f:
            json.dump(res, f, indent=1)

    res = run(args, save)
    if not args.quick:
        write_docs(res, args.md, args.png, "python bench/bench_qlinear.py " + " ".join(sys.argv[1:]))
        print(f"wrote {args.md} and {args.png}")


if __name__ == "__main__":
    main()
