"""quantize_ on the trained models of ../shared/README.md.

Oracles: the float model. Sentence embeddings of all-MiniLM-L6-v2 (cosine to
the float model's, with torch's deprecated quantize_dynamic beside it) and
perplexity of SmolLM2-135M-Instruct on tinyshakespeare (thresholds from the
issue, measured beforehand with a pure-PyTorch version of the contract).

Perplexity protocol (stated in docs/quantization.md): the text tokenized
whole, the first 8 consecutive non-overlapping windows of 512 tokens; the
SmoothQuant calibration uses 16 windows of 512 tokens from the last 32768
tokens of the text, which the evaluation never sees.
"""
import copy
import warnings

import pytest
import torch

import lowvram
from lowvram.evaluate import perplexity, sentence_embeddings

EMBED_COSINE_MIN = 0.99      # quantize_ vs float embeddings, every sentence
PPL_DEFAULT_MAX_REL = 0.025  # default quantize_ (output head float): within 2.5%
PPL_SMOOTH_MAX_REL = 0.01    # SmoothQuant alpha 0.7 with calibration: within 1%
WINDOW, N_WINDOWS = 512, 8

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "A man is playing a guitar on stage.",
    "Quantization stores weights in eight bits instead of thirty-two.",
    "The weather in Paris is mild in the spring.",
    "She sold her old car and bought a bicycle.",
    "Gradient accumulation splits a batch into micro-batches.",
    "How many moons does Jupiter have?",
    "Le chat dort sur le canapé.",
]


def test_minilm_embeddings_cosine(minilm, record_property):
    model, tok = minilm
    ref = sentence_embeddings(model, tok, SENTENCES)
    q = lowvram.quantize_(copy.deepcopy(model))
    emb = sentence_embeddings(q, tok, SENTENCES)
    cos = (emb * ref).sum(-1)
    # torch's deprecated dynamic quantization, beside it for the record
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # quantize_dynamic is deprecated
        qd = torch.ao.quantization.quantize_dynamic(copy.deepcopy(model), {torch.nn.Linear},
                                                   dtype=torch.qint8)
    cos_qd = (sentence_embeddings(qd, tok, SENTENCES) * ref).sum(-1)
    record_property("cosine_min_lowvram", float(cos.min()))
    record_property("cosine_min_quantize_dynamic", float(cos_qd.min()))
    print(f"all-MiniLM-L6-v2 cosine to float: lowvram min {cos.min():.5f} mean {cos.mean():.5f}; "
          f"quantize_dynamic min {cos_qd.min():.5f} mean {cos_qd.mean():.5f}")
    assert cos.min() >= EMBED_COSINE_MIN, cos


@pytest.fixture(scope="module")
def smollm2_ids(smollm2, shakespeare):
    _, tok = smollm2
    return tok(shakespeare, return_tensors="pt").input_ids[0]


@pytest.fixture(scope="module")
def float_ppl(smollm2, smollm2_ids):
    return perplexity(smollm2[0], smollm2_ids, WINDOW, N_WINDOWS)


def test_smollm2_perplexity_default(smollm2, smollm2_ids, float_ppl, record_property):
    q = lowvram.quantize_(copy.deepcopy(smollm2[0]))
    assert not isinstance(q.lm_head, lowvram.nn.QLinear)
    assert sum(isinstance(m, lowvram.nn.QLinear) for m in q.modules()) == 210
    ppl = perplexity(q, smollm2_ids, WINDOW, N_WINDOWS)
    rel = ppl / float_ppl - 1
    record_property("ppl_float", float_ppl)
    record_property("ppl_int8", ppl)
    print(f"SmolLM2 ppl float {float_ppl:.3f}, int8 default {ppl:.3f} ({rel * 100:+.2f}%)")
    assert rel <= PPL_DEFAULT_MAX_REL


def test_smollm2_perplexity_smoothquant(smollm2, smollm2_ids, float_ppl, record_property):
    tail = smollm2_ids[-32768:]
    calib = [tail[i * WINDOW:(i + 1) * WINDOW][None] for i in range(16)]
    q = lowvram.quantize_(copy.deepcopy(smollm2[0]), calib=calib, smooth=0.7)
    ppl = perplexity(q, smollm2_ids, WINDOW, N_WINDOWS)
    rel = ppl / float_ppl - 1
    record_property("ppl_int8_smooth", ppl)
    print(f"SmolLM2 ppl float {float_ppl:.3f}, int8 + SmoothQuant 0.7 {ppl:.3f} ({rel * 100:+.2f}%)")
    assert rel <= PPL_SMOOTH_MAX_REL
