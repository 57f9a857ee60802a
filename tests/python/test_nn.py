"""lowvram.nn.QLinear, lowvram.quantize_ and lowvram.memory on plain modules
and on Hugging Face architectures built from small configs (random weights:
they pin shapes and code paths, not quality).

Oracles: the float model (outputs close: SQNR in dB), the op called
directly, eager mode (torch.compile(fullgraph=True) and torch.export must
give eager's bits), the saved model (state_dict -> safetensors -> a fresh
model gives identical outputs), storage sizes computed by hand.
"""
import io
import os

import pytest
import torch
from torch import nn

import lowvram
from lowvram.nn import QLinear
from conftest import assert_same_bits, sqnr_db

# A quantized random-weight transformer's logits against the float model's
# (per-row int8 activations, per-channel weights; ~25-35 dB measured here).
MODEL_SQNR_MIN_DB = 20.0


def mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, 128), nn.GELU(), nn.Linear(128, 32, bias=False),
                         nn.LayerNorm(32), nn.Linear(32, 16))


# ---------------------------------------------------------------- QLinear


def test_from_linear_equals_op_and_to_linear_inverts():
    lin = nn.Linear(96, 40)
    q = QLinear.from_linear(lin)
    x = torch.randn(5, 96)
    qw, ws = lowvram.ops.quantize_weight(lin.weight.detach())
    assert torch.equal(q.qweight, qw) and torch.equal(q.wscale, ws)
    assert_same_bits(q(x), lowvram.ops.qlinear(x, qw, ws, lin.bias.detach()))
    back = q.to_linear()
    # dequantized weight within half a quantization step of the original
    step = ws[:, None] / 2
    assert ((back.weight - lin.weight).abs() <= step * 1.0001).all()
    assert torch.equal(back.bias, lin.bias)


def test_from_linear_with_act_scale_keeps_the_product():
    lin = nn.Linear(128, 32)
    a = torch.rand(128) + 0.5
    q = QLinear.from_linear(lin, act_scale=a)
    x = torch.randn(8, 128)
    exact = x.double() @ lin.weight.double().T + lin.bias.double()
    assert sqnr_db(exact, q(x)) > 30
    torch.testing.assert_close(q.to_linear().weight, lin.weight, atol=0.02, rtol=0)
    with pytest.raises(ValueError, match="act_scale must be"):
        QLinear.from_linear(lin, act_scale=-a)


def test_group_size_and_bad_arguments():
    lin = nn.Linear(256, 8)
    q = QLinear.from_linear(lin, group_size=64)
    assert q.wscale.shape == (8, 4)
    x = torch.randn(3, 256)
    assert_same_bits(q(x), lowvram.reference.qlinear(x, q.qweight, q.wscale, q.bias.detach()))
    with pytest.raises(ValueError, match="group_size must be -1 or a multiple of 64"):
        QLinear.from_linear(lin, group_size=48)
    with pytest.raises(TypeError, match="expected an nn.Linear"):
        QLinear.from_linear(nn.Conv2d(3, 3, 1))


def test_extra_repr_shows_bytes():
    q = QLinear.from_linear(nn.Linear(1024, 256))
    r = repr(q)
    assert "int8 per-channel" in r and "weight 257.00 KiB" in r and "fp32 1.00 MiB" in r


def test_bf16_model_keeps_dtype():
    lin = nn.Linear(64, 16).to(torch.bfloat16)
    q = QLinear.from_linear(lin)
    y = q(torch.randn(4, 64, dtype=torch.bfloat16))
    assert y.dtype == torch.bfloat16 and q.bias.dtype == torch.bfloat16


def test_gradients_flow_to_input_and_bias():
    q = QLinear.from_linear(nn.Linear(64, 16))
    x = torch.randn(4, 64, requires_grad=True)
    q(x).pow(2).sum().backward()
    assert x.grad is not None and q.bias.grad is not None
    assert q.qweight.grad is None and not q.qweight.requires_grad


# ---------------------------------------------------------------- quantize_


def test_quantize_replaces_linears_in_place():
    m = mlp()
    x = torch.randn(10, 64)
    ref_y = m(x)
    out = lowvram.quantize_(m)
    assert out is m
    assert [type(mod).__name__ for mod in m] == ["QLinear", "GELU", "QLinear", "LayerNorm",
                                                   "QLinear"]
    assert sqnr_db(ref_y, m(x)) > 25


def test_quantize_filter_and_verbose(capsys):
    m = mlp()
    lowvram.quantize_(m, filter_fn=lambda mod, fqn: fqn == "2")
    assert isinstance(m[2], QLinear) and isinstance(m[0], nn.Linear)
    assert capsys.readouterr().out == ""  # prints nothing unless asked
    lowvram.quantize_(mlp(), verbose=True)
    assert "lowvram.quantize_: 0:" in capsys.readouterr().out


def test_quantize_keeps_multihead_attention_out_proj():
    m = nn.TransformerEncoderLayer(64, 4, 128, batch_first=True)
    lowvram.quantize_(m)
    assert not isinstance(m.self_attn.out_proj, QLinear)  # MHA reads its weight directly
    assert isinstance(m.linear1, QLinear)
    m(torch.randn(2, 5, 64))


def test_quantize_smooth_needs_calib_and_improves_outliers():
    torch.manual_seed(0)
    lin = nn.Linear(256, 64)
    x = torch.randn(64, 256)
    x[:, :4] *= 60  # outlier channels, as LLM activations have
    exact = lin(x).double()
    plain = lowvram.quantize_(nn.Sequential(lin_copy(lin)))
    smooth = lowvram.quantize_(nn.Sequential(lin_copy(lin)), calib=[x[:32]], smooth=0.5)
    assert isinstance(smooth[0], QLinear) and smooth[0].act_scale is not None
    db_plain, db_smooth = sqnr_db(exact, plain(x)), sqnr_db(exact, smooth(x))
    assert db_smooth > db_plain + 3, (db_plain, db_smooth)
    with pytest.raises(ValueError, match="smooth needs calib"):
        lowvram.quantize_(mlp(), smooth=0.5)
    with pytest.raises(ValueError, match=r"smooth \(alpha\) must be in \[0, 1\]"):
        lowvram.quantize_(mlp(), calib=[x], smooth=2.0)


def lin_copy(lin):
    c = nn.Linear(lin.in_features, lin.out_features)
    c.load_state_dict(lin.state_dict())
    return c


# ---------------------------------------------------------------- memory


def test_footprint_counts_storage_bytes():
    m = mlp()
    fp = lowvram.memory.footprint(m)
    expect = sum(p.numel() * 4 for p in m.parameters())
    assert fp.total == expect and fp.by_dtype == {"float32": expect}
    assert fp.linear_weights == 4 * (64 * 128 + 128 * 32 + 32 * 16)
    lowvram.quantize_(m)
    fp = lowvram.memory.footprint(m)
    assert fp.linear_weights == (64 * 128 + 128 * 32 + 32 * 16) + 4 * (128 + 32 + 16)
    assert fp.by_dtype["int8"] == 64 * 128 + 128 * 32 + 32 * 16
    assert "QLinear" in fp.by_module_type and "total" in str(fp)


def test_footprint_counts_tied_weights_once():
    emb = nn.Embedding(100, 32)
    head = nn.Linear(32, 100, bias=False)
    head.weight = emb.weight
    fp = lowvram.memory.footprint(nn.ModuleList([emb, head]))
    assert fp.total == 100 * 32 * 4


def test_peak_rss_moves():
    if lowvram.memory.peak_rss() is None:
        pytest.skip("no /proc/self/status")
    assert lowvram.memory.reset_peak_rss()
    before = lowvram.memory.peak_rss()
    # 64 MiB of fresh pages (a new mapping: torch's allocator could reuse freed,
    # still-resident memory), touched
    buf = lowvram.memory.empty_hugepages((64 << 20,), torch.uint8).fill_(1)
    after = lowvram.memory.peak_rss()
    del buf
    assert after - before >= 60 * 1024 * 1024


# ---------------------------------------------------------------- compile / export / save


def test_compile_fullgraph_equals_eager():
    # only exact ops around qlinear (ReLU): the compiled graph gives eager's bits
    torch.manual_seed(0)
    m = lowvram.quantize_(nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 16)))
    x = torch.randn(7, 64)
    compiled = torch.compile(m, fullgraph=True)
    assert_same_bits(compiled(x), m(x))
    x2 = torch.randn(3, 64)
    assert_same_bits(compiled(x2), m(x2))
    # with GELU and LayerNorm, Inductor's own fused kernels round differently
    # from eager's in the last bit: equal to float32 rounding
    m = lowvram.quantize_(mlp())
    torch.testing.assert_close(torch.compile(m, fullgraph=True)(x), m(x), rtol=1e-5, atol=1e-6)


def test_export_equals_eager():
    m = lowvram.quantize_(mlp())
    x = torch.randn(7, 64)
    ep = torch.export.export(m, (x,))
    assert "lowvram.qlinear" in str(ep.graph)
    assert_same_bits(ep.module()(x), m(x))


def test_state_dict_safetensors_round_trip(tmp_path):
    st = pytest.importorskip("safetensors.torch")
    m = lowvram.quantize_(mlp(seed=1), calib=[torch.randn(16, 64)], smooth=0.5)
    x = torch.randn(5, 64)
    path = os.path.join(tmp_path, "q.safetensors")
    st.save_file(m.state_dict(), path)
    fresh = lowvram.quantize_(mlp(seed=2), calib=[torch.randn(16, 64)], smooth=0.5)
    assert not torch.equal(fresh(x), m(x))
    fresh.load_state_dict(st.load_file(path))
    assert_same_bits(fresh(x), m(x))
    sd = m.state_dict()
    assert sd["0.qweight"].dtype == torch.int8 and sd["0.wscale"].dtype == torch.float32


def test_bad_checkpoints_raise():
    m = lowvram.quantize_(mlp())
    sd = m.state_dict()
    missing = {k: v for k, v in sd.items() if k != "0.wscale"}
    with pytest.raises(RuntimeError, match=r"Missing key\(s\) in state_dict: \"0.wscale\""):
        lowvram.quantize_(mlp()).load_state_dict(missing)
    extra = dict(sd, **{"0.act_scale": torch.ones(64)})
    with pytest.raises(RuntimeError, match=r"Unexpected key\(s\) in state_dict: \"0.act_scale\""):
        lowvram.quantize_(mlp()).load_state_dict(extra)
    wrong = dict(sd, **{"0.qweight": sd["0.qweight"].float()})
    with pytest.raises(RuntimeError, match=r"lowvram.QLinear: 0.qweight must be torch.int8"):
        lowvram.quantize_(mlp()).load_state_dict(wrong)
    shape = dict(sd, **{"0.wscale": torch.ones(3)})
    with pytest.raises(RuntimeError, match=r"lowvram.QLinear: 0.wscale must have shape"):
        lowvram.quantize_(mlp()).load_state_dict(shape)
    # a float checkpoint into a quantized model: the float weight is unexpected
    with pytest.raises(RuntimeError, match=r"Unexpected key\(s\).*0.weight"):
        lowvram.quantize_(mlp()).load_state_dict(mlp().state_dict())


def test_torch_save_round_trip():
    m = lowvram.quantize_(mlp())
    buf = io.BytesIO()
    torch.save(m, buf)
    buf.seek(0)
    m2 = torch.load(buf, weights_only=False)
    x = torch.randn(3, 64)
    assert_same_bits(m2(x), m(x))


# ---------------------------------------------------------------- Hugging Face architectures


def hf_models():
    tr = pytest.importorskip("transformers")
    torch.manual_seed(0)
    llama = tr.LlamaForCausalLM(tr.LlamaConfig(
        vocab_size=256, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
        tie_word_embeddings=True))
    bert = tr.BertModel(tr.BertConfig(
        vocab_size=256, hidden_size=128, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=256, max_position_embeddings=64))
    gpt2 = tr.GPT2LMHeadModel(tr.GPT2Config(
        vocab_size=256, n_embd=128, n_layer=2, n_head=4, n_positions=64))
    return {"llama": llama, "bert": bert, "gpt2": gpt2}


def _outputs(model, ids):
    out = model(input_ids=ids)
    return out.logits if hasattr(out, "logits") else out.last_hidden_state


@pytest.mark.parametrize("arch,expect_q,head", [
    ("llama", 14, "lm_head"), ("bert", 13, None), ("gpt2", 8, "lm_head")])
def test_hf_architectures(arch, expect_q, head):
    model = hf_models()[arch].eval()
    ids = torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref_out = _outputs(model, ids)
        lowvram.quantize_(model)
        n_q = sum(isinstance(m, QLinear) for m in model.modules())
        assert n_q == expect_q
        if head:
            assert not isinstance(model.get_submodule(head), QLinear), "output head stays float"
        out = _outputs(model, ids)
    assert sqnr_db(ref_out, out) > MODEL_SQNR_MIN_DB


def test_hf_llama_compile_generate_and_save(tmp_path):
    tr = pytest.importorskip("transformers")
    model = hf_models()["llama"].eval()
    lowvram.quantize_(model)
    ids = torch.randint(0, 256, (1, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        eager = model(input_ids=ids).logits
        compiled = torch.compile(model, fullgraph=True)
        torch.testing.assert_close(compiled(input_ids=ids).logits, eager, rtol=1e-5, atol=1e-5)
        gen = model.generate(ids, max_new_tokens=5, do_sample=False)
        ep = torch.export.export(model, (), {"input_ids": ids, "use_cache": False})
        assert str(ep.graph).count("lowvram.qlinear") == 14
        assert_same_bits(ep.module()(input_ids=ids, use_cache=False).logits, eager)
    assert gen.shape == (1, 17)
    # save_pretrained's state dict reloads into a fresh quantized model
    sd = model.state_dict()
    fresh = tr.LlamaForCausalLM(model.config).eval()
    lowvram.quantize_(fresh)
    fresh.load_state_dict(sd)
    with torch.no_grad():
        assert_same_bits(fresh(input_ids=ids).logits, eager)


def _anon_huge_kib():
    with open("/proc/self/smaps_rollup") as f:
        for line in f:
            if line.startswith("AnonHugePages:"):
                return int(line.split()[1])
    return 0


def test_hugepage_weights():
    t = lowvram.memory.empty_hugepages((4096, 1024), torch.int8)
    assert t.shape == (4096, 1024) and t.dtype == torch.int8
    assert t.data_ptr() % (2 << 20) == 0
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            thp = f.read()
    except OSError:
        pytest.skip("no transparent huge pages on this system")
    if "[never]" in thp or not os.path.exists("/proc/self/smaps_rollup"):
        pytest.skip("transparent huge pages are off")
    before = _anon_huge_kib()
    t.fill_(1)
    assert _anon_huge_kib() - before >= 2048, "a 4 MiB weight should take huge pages"
    # QLinear puts weights of >= 2 MiB there by default, small ones in torch's memory
    big = QLinear.from_linear(nn.Linear(2048, 1024, bias=False))
    assert big.qweight.data_ptr() % (2 << 20) == 0
    x = torch.randn(2, 2048)
    assert_same_bits(big(x), lowvram.ops.qlinear(x, big.qweight.clone(), big.wscale))
