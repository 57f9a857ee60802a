"""bench/bench_alloc.py — what glibc's allocator setting costs a CPU training
step, and where a full-batch step spends the time four micro-batches save.

MicroBatchStep with a budget (or checkpointing) fixes glibc's mmap threshold
at 1 MiB for the process (lowvram.train._pin_mmap_threshold), so freed
activations go back to the OS and measured peaks repeat. This script measures
the price: the model of bench_train.py's (b) (SmolLM2-135M, int8 base, LoRA
rank 16), MicroBatchStep(micro_batch_size=8) on batches of 32 x 256 tokens of
tinyshakespeare, each allocator setting in a fresh process (the setting is
process-wide and one-way):

    1 MiB     the threshold MicroBatchStep pins
    32 MiB    glibc's largest fixed threshold
    default   glibc's own moving threshold (what a step without a budget gets)
    hugetlb   1 MiB with GLIBC_TUNABLES=glibc.malloc.hugetlb=1 (transparent
              huge pages for malloc's mappings; --hugetlb, slow)

Per step: time, peak (VmHWM, reset before each step) and minor page faults.
--profile adds torch.profiler over one step of 1 x 32 and one of 4 x 8 rows
(1 MiB threshold) and prints the operators whose time differs.

    python bench/bench_alloc.py [--steps 2] [--profile] [--hugetlb] [--threads 2]
"""
import argparse
import gc
import json
import os
import resource
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
MiB = 1 << 20


def child(args):
    import torch
    import lowvram
    import lowvram.train as lt
    import bench_train as bt

    torch.set_num_threads(args.threads)
    if args.child != "default":
        lt.MMAP_THRESHOLD = 1 * MiB if args.child == "hugetlb" else int(args.child) * MiB
        lt._pin_mmap_threshold()
    model, tok = bt.load_smollm2()
    with open(os.path.join(bt.SHARED, "data", "tinyshakespeare.txt"), encoding="utf-8") as f:
        ids = tok(f.read(), return_tensors="pt").input_ids[0]
    lowvram.quantize_(model, progress=False)
    lowvram.lora_(model, rank=16, alpha=32)
    gc.collect()
    batches = bt.make_batches(ids[:int(ids.numel() * 0.9)], args.steps, 32, 256, 0)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.0)
    rows = []
    for mb in ([8] + ([32] if args.profile else [])):
        step = lt.MicroBatchStep(model, opt, bt.loss_sum_count, micro_batch_size=mb)
        for i, batch in enumerate(batches if mb == 8 else batches[:1]):
            f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            t0 = time.perf_counter()
            out = step(batch)
            dt = time.perf_counter() - t0
            rows.append(dict(mode=args.child, micro_batch_size=mb, step=i + 1, time=dt,
                             peak=out.peak_bytes,
                             faults=resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0))
            print(json.dumps(rows[-1]), flush=True)
    prof = {}
    if args.profile:
        from torch.profiler import ProfilerActivity, profile
        for mb in (32, 8):
            step = lt.MicroBatchStep(model, opt, bt.loss_sum_count, micro_batch_size=mb)
            with profile(activities=[ProfilerActivity.CPU]) as p:
                t0 = time.perf_counter()
                step(batches[0])
                wall = time.perf_counter() - t0
            ops = {e.key: e.self_cpu_time_total / 1e6 for e in p.key_averages()}
            prof[mb] = dict(wall=wall, ops=ops)
    print("RESULT " + json.dumps(dict(rows=rows, profile=prof)), flush=True)


def run_child(mode, args):
    env = dict(os.environ)
    if mode == "hugetlb":
        env["GLIBC_TUNABLES"] = "glibc.malloc.hugetlb=1"
    cmd = [sys.executable, os.path.abspath(__file__), "--child", mode, "--steps",
           str(1 if mode == "hugetlb" else args.steps), "--threads", str(args.threads)]
    if args.profile and mode == "1":
        cmd.append("--profile")
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=HERE)
    for line in r.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    sys.exit(f"bench_alloc: the {mode} process failed:\n{r.stderr[-3000:]}")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--profile", action="store_true")
    p.add_argument("--hugetlb", action="store_true")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(args)
    modes = ["1", "32", "default"] + (["hugetlb"] if args.hugetlb else [])
    print(f"SmolLM2-135M int8 + LoRA r16, MicroBatchStep 4 x 8 rows of 256 tokens, "
          f"{args.threads} threads, each setting in a fresh process")
    print(f"{'mmap threshold':<16}{'step times':>22}{'peak (VmHWM)':>22}{'minor faults/step':>22}")
    profile = None
    for mode in modes:
        res = run_child(mode, args)
        rows = [r for r in res["rows"] if r["micro_batch_size"] == 8]
        name = {"1": "1 MiB", "32": "32 MiB", "default": "glibc default",
                "hugetlb": "1 MiB + hugetlb"}[mode]
        times = ", ".join("%.1f" % r["time"] for r in rows) + " s"
        peaks = ", ".join("%.0f" % (r["peak"] / MiB) for r in rows) + " MiB"
        faults = ", ".join(str(r["faults"]) for r in rows)
        print(f"{name:<16}{times:>22}{peaks:>22}{faults:>22}")
        if res["profile"]:
            profile = res
    if profile:
        full = [r for r in profile["rows"] if r["micro_batch_size"] == 32][0]
        print(f"\n1 MiB threshold, 1 x 32 rows (unprofiled): {full['time']:.1f} s, peak "
              f"{full['peak'] / MiB:.0f} MiB, {full['faults']} minor faults")
        a, b = profile["profile"]["32"], profile["profile"]["8"]
        print(f"torch.profiler, self CPU seconds of one step: 1 x 32 ({a['wall']:.1f} s wall) "
              f"vs 4 x 8 ({b['wall']:.1f} s wall)")
        keys = sorted(set(a["ops"]) | set(b["ops"]),
                      key=lambda k: -max(a["ops"].get(k, 0), b["ops"].get(k, 0)))[:14]
        for k in keys:
            print(f"  {k[:58]:<58}{a['ops'].get(k, 0):8.2f}{b['ops'].get(k, 0):8.2f}")


if __name__ == "__main__":
    main()
