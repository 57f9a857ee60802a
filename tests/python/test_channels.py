"""prune_channels_: FFN neuron and attention head pruning that shrinks matrices.

Oracles: the dense model with the removed units' output-projection columns
zeroed (down_proj / output.dense for neurons, o_proj / attention.output.dense
for heads), which computes the same function in exact arithmetic — compared
in float64; the removed units recovered independently by matching the
pruned weights' rows against the original ones; scores recomputed in the
test from their definitions (weight norms; activations captured whole on
tiny inputs); Hugging Face's save_pretrained / from_pretrained (logits bit
for bit); QLinear codes and scales against quantizing the sliced float
weights; lowvram.memory.footprint against the bytes the removed rows and
columns held.
"""
import copy
import tempfile

import pytest
import torch
from torch import nn

import lowvram
from lowvram import reference as ref
from lowvram.nn import QLinear, SparseLinear
from conftest import assert_same_bits

transformers = pytest.importorskip("transformers")
from transformers import (BertConfig, BertModel, GPT2Config, GPT2LMHeadModel,  # noqa: E402
                          LlamaConfig, LlamaForCausalLM)

VOCAB = 128


def tiny_llama(heads=4, kv=2, head_dim=16, hidden=64, inter=96, layers=2, seed=0,
               dtype=torch.float32, bias=False):
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=hidden, intermediate_size=inter,
                      num_hidden_layers=layers, num_attention_heads=heads,
                      num_key_value_heads=kv, head_dim=head_dim, max_position_embeddings=64,
                      attention_bias=bias, mlp_bias=bias, tie_word_embeddings=False)
    return LlamaForCausalLM(cfg).to(dtype).eval()


def tiny_bert(heads=4, hidden=64, inter=128, layers=2, seed=0, dtype=torch.float32):
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=VOCAB, hidden_size=hidden, num_hidden_layers=layers,
                     num_attention_heads=heads, intermediate_size=inter,
                     max_position_embeddings=64)
    m = BertModel(cfg).to(dtype).eval()
    with torch.no_grad():  # random biases too, so that slicing them is checked
        for mod in m.modules():
            if isinstance(mod, nn.Linear) and mod.bias is not None:
                mod.bias.normal_(0, 0.1)
    return m


def ids(batch=2, seq=12, seed=1):
    return torch.randint(0, VOCAB, (batch, seq), generator=torch.Generator().manual_seed(seed))


def matched_rows(new, old):
    """Indices i of old's rows such that new == old[i] (recovered from the
    weights, independently of prune_channels_'s own bookkeeping)."""
    d = torch.cdist(new.double(), old.double())
    i = d.argmin(1)
    assert torch.equal(new, old[i]), "every kept row is an original row"
    return i


def llama_logits(m, x):
    with torch.no_grad():
        return m(x).logits


def bert_out(m, x):
    with torch.no_grad():
        return m(x).last_hidden_state


# ---------------------------------------------------------------- shapes


def test_llama_shapes_config_and_generate():
    m = tiny_llama(heads=4, kv=2, inter=96)
    out = lowvram.prune_channels_(m, ffn=0.25, heads=0.5, multiple_of=1)
    assert out is m
    for layer in m.model.layers:
        mlp, at = layer.mlp, layer.self_attn
        assert mlp.gate_proj.weight.shape == (72, 64) and mlp.up_proj.weight.shape == (72, 64)
        assert mlp.down_proj.weight.shape == (64, 72) and mlp.intermediate_size == 72
        assert at.q_proj.weight.shape == (32, 64)      # 2 query heads of 16
        assert at.k_proj.weight.shape == (16, 64) and at.v_proj.weight.shape == (16, 64)
        assert at.o_proj.weight.shape == (64, 32)
        assert at.num_key_value_groups == 2 and at.head_dim == 16
    c = m.config
    assert (c.intermediate_size, c.num_attention_heads, c.num_key_value_heads, c.head_dim) == \
        (72, 2, 1, 16)
    s = m.lowvram_pruned_channels
    assert s["ffn"]["removed_per_layer"] == 24 and s["heads"]["removed_per_layer"] == 2
    assert s["importance"] == "norm"
    x = ids()
    assert llama_logits(m, x).shape == (2, 12, VOCAB)
    g = m.generate(x[:1], max_new_tokens=4, do_sample=False)
    assert g.shape == (1, 16)


def test_multiple_of_rounds_the_kept_width():
    m = tiny_llama(inter=96)
    lowvram.prune_channels_(m, ffn=0.3)  # 96 - 29 = 67 -> nearest multiple of 8: 64
    assert m.config.intermediate_size == 64
    assert m.model.layers[0].mlp.down_proj.in_features == 64
    m = tiny_llama(inter=96)
    lowvram.prune_channels_(m, ffn=0.3, multiple_of=1)
    assert m.config.intermediate_size == 67


def test_heads_keep_at_least_one_group():
    m = tiny_llama(heads=4, kv=2)
    lowvram.prune_channels_(m, ffn=0.0, heads=0.9)  # round(1.8) = 2 groups -> keep 1
    assert m.config.num_key_value_heads == 1 and m.config.num_attention_heads == 2
    assert llama_logits(m, ids()).isfinite().all()


def test_head_counts_round_to_what_the_config_accepts():
    # LlamaConfig refuses hidden_size % num_attention_heads != 0: 4 -> 3 heads of a
    # 64-wide model would not reload, so the nearest valid smaller count (2) is kept
    m = tiny_llama(heads=4, kv=4)
    lowvram.prune_channels_(m, ffn=0.0, heads=0.25)
    h = m.lowvram_pruned_channels["heads"]
    assert (h["kv_requested"], h["kv_after"], h["q_after"]) == (3, 2, 2)
    m.config.validate()
    with tempfile.TemporaryDirectory() as d:
        m.save_pretrained(d)
        assert LlamaForCausalLM.from_pretrained(d).config.num_attention_heads == 2
    # BERT's config accepts any count (its attention is rebuilt by channels.from_pretrained)
    b = lowvram.prune_channels_(tiny_bert(heads=4), ffn=0.0, heads=0.25)
    assert b.config.num_attention_heads == 3


def test_tiny_head_fraction_removes_nothing():
    m = tiny_llama(heads=4, kv=2)
    lowvram.prune_channels_(m, ffn=0.0, heads=0.2)  # round(0.4) = 0 groups
    assert m.config.num_attention_heads == 4
    assert m.model.layers[0].self_attn.q_proj.out_features == 64


def test_zero_fractions_leave_the_model_unchanged():
    m = tiny_llama()
    before = copy.deepcopy(m.state_dict())
    cfg = m.config.to_dict()
    mods = list(m.modules())
    assert lowvram.prune_channels_(m, ffn=0.0, heads=0.0) is m
    assert list(m.modules()) == mods and m.config.to_dict() == cfg
    for k, v in m.state_dict().items():
        assert_same_bits(v, before[k], k)


# ---------------------------------------------------------------- equals the zeroed dense model


@pytest.mark.parametrize("heads,kv", [(4, 4), (4, 2), (6, 2)])
def test_llama_equals_dense_with_zeroed_columns(heads, kv):
    hidden = heads * 16
    dense = tiny_llama(heads=heads, kv=kv, hidden=hidden, dtype=torch.float64, bias=True)
    pruned = lowvram.prune_channels_(copy.deepcopy(dense), ffn=0.25, heads=0.5, multiple_of=1)
    rep = heads // kv
    zeroed = copy.deepcopy(dense)
    n_removed_q = 0
    for i, (dl, pl, zl) in enumerate(zip(dense.model.layers, pruned.model.layers,
                                         zeroed.model.layers)):
        kept = matched_rows(pl.mlp.gate_proj.weight, dl.mlp.gate_proj.weight)
        assert torch.equal(kept, pruned.lowvram_pruned_channels["kept"][f"model.layers.{i}.mlp"])
        gone = sorted(set(range(96)) - set(kept.tolist()))
        assert len(gone) == 24
        with torch.no_grad():
            zl.mlp.down_proj.weight[:, gone] = 0
        # heads: recovered from the query rows, whole groups with their kv head
        hd = 16
        qk = matched_rows(pl.self_attn.q_proj.weight.reshape(-1, hd * hidden),
                          dl.self_attn.q_proj.weight.reshape(heads, hd * hidden))
        kk = matched_rows(pl.self_attn.k_proj.weight.reshape(-1, hd * hidden),
                          dl.self_attn.k_proj.weight.reshape(kv, hd * hidden))
        assert torch.equal(qk, (kk[:, None] * rep + torch.arange(rep)).reshape(-1)), \
            "the kept query heads are exactly those of the kept kv heads"
        gone_q = sorted(set(range(heads)) - set(qk.tolist()))
        n_removed_q = len(gone_q)
        with torch.no_grad():
            for h in gone_q:
                zl.self_attn.o_proj.weight[:, h * hd:(h + 1) * hd] = 0
    assert n_removed_q == (kv - max(1, kv - round(0.5 * kv))) * rep
    x = ids()
    torch.testing.assert_close(llama_logits(pruned, x), llama_logits(zeroed, x),
                               rtol=1e-12, atol=1e-12)


def test_bert_equals_dense_with_zeroed_columns():
    dense = tiny_bert(heads=4, inter=128, dtype=torch.float64)
    pruned = lowvram.prune_channels_(copy.deepcopy(dense), ffn=0.25, heads=0.25, multiple_of=1)
    zeroed = copy.deepcopy(dense)
    hd = 16
    for dl, pl, zl in zip(dense.encoder.layer, pruned.encoder.layer, zeroed.encoder.layer):
        w_in = torch.cat([dl.intermediate.dense.weight, dl.intermediate.dense.bias[:, None]], 1)
        p_in = torch.cat([pl.intermediate.dense.weight, pl.intermediate.dense.bias[:, None]], 1)
        kept = matched_rows(p_in, w_in)
        assert kept.numel() == 96
        gone = sorted(set(range(128)) - set(kept.tolist()))
        qk = matched_rows(pl.attention.self.query.weight.reshape(-1, hd * 64),
                          dl.attention.self.query.weight.reshape(4, hd * 64))
        assert qk.numel() == 3
        for name in ("key", "value"):
            kk = matched_rows(getattr(pl.attention.self, name).weight.reshape(-1, hd * 64),
                              getattr(dl.attention.self, name).weight.reshape(4, hd * 64))
            assert torch.equal(kk, qk)
        assert pl.attention.self.num_attention_heads == 3
        assert pl.attention.self.all_head_size == 48
        with torch.no_grad():
            zl.output.dense.weight[:, gone] = 0
            for h in sorted(set(range(4)) - set(qk.tolist())):
                zl.attention.output.dense.weight[:, h * hd:(h + 1) * hd] = 0
    assert pruned.config.intermediate_size == 96 and pruned.config.num_attention_heads == 3
    x = ids()
    torch.testing.assert_close(bert_out(pruned, x), bert_out(zeroed, x), rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------- scores


def test_norm_scores_pick_the_largest():
    dense = tiny_llama(heads=4, kv=2)
    pruned = lowvram.prune_channels_(copy.deepcopy(dense), ffn=0.5, heads=0.5, multiple_of=1)
    for i, l in enumerate(dense.model.layers):
        mlp, at = l.mlp, l.self_attn
        s = mlp.down_proj.weight.double().abs().amax(dim=0)  # the largest entry of each column
        want = torch.sort(torch.topk(s, 48).indices).values
        assert torch.equal(pruned.lowvram_pruned_channels["kept"][f"model.layers.{i}.mlp"], want)
        v = at.v_proj.weight.double().reshape(2, -1).norm(dim=1)
        o = at.o_proj.weight.double().reshape(64, 4, 16).permute(1, 0, 2).reshape(4, -1).norm(dim=1)
        g = (o.reshape(2, 2) * v[:, None]).sum(1)
        kv = int(g.argmax())
        assert torch.equal(pruned.lowvram_pruned_channels["kept"][f"model.layers.{i}.self_attn"],
                           torch.tensor([2 * kv, 2 * kv + 1]))


def test_activation_scores_pick_the_largest_mean_contribution():
    dense = tiny_llama(heads=4, kv=4, layers=1, dtype=torch.float64)
    calib = [ids(2, 16, seed=s) for s in (5, 6)]
    l = dense.model.layers[0]
    seen = {"h": [], "a": []}
    hooks = [l.mlp.down_proj.register_forward_pre_hook(lambda m, a: seen["h"].append(a[0])),
             l.self_attn.o_proj.register_forward_pre_hook(lambda m, a: seen["a"].append(a[0]))]
    with torch.no_grad():
        for b in calib:
            dense(b)
    for h in hooks:
        h.remove()
    h = torch.cat([t.reshape(-1, 96) for t in seen["h"]])
    s_ffn = h.abs().mean(0) * l.mlp.down_proj.weight.norm(dim=0)
    a = torch.cat([t.reshape(-1, 4, 16) for t in seen["a"]])
    wo = l.self_attn.o_proj.weight.reshape(64, 4, 16)
    s_head = torch.stack([(a[:, j] @ wo[:, j].T).norm(dim=1).mean() for j in range(4)])
    pruned = lowvram.prune_channels_(copy.deepcopy(dense), ffn=0.5, heads=0.5, calib=calib,
                                     multiple_of=1)
    kept = pruned.lowvram_pruned_channels["kept"]
    assert pruned.lowvram_pruned_channels["importance"] == "activation"
    assert torch.equal(kept["model.layers.0.mlp"], torch.sort(torch.topk(s_ffn, 48).indices).values)
    assert torch.equal(kept["model.layers.0.self_attn"],
                       torch.sort(torch.topk(s_head, 2).indices).values)
    # the norm score is a different, also valid choice: same shapes, runs
    normed = lowvram.prune_channels_(copy.deepcopy(dense), ffn=0.5, heads=0.5, multiple_of=1)
    assert normed.model.layers[0].mlp.down_proj.weight.shape == \
        pruned.model.layers[0].mlp.down_proj.weight.shape
    assert llama_logits(normed, ids()).isfinite().all()


def test_activation_calib_dict_and_callable_bert():
    dense = tiny_bert()
    batch = {"input_ids": ids(), "attention_mask": torch.ones(2, 12, dtype=torch.long)}
    a = lowvram.prune_channels_(copy.deepcopy(dense), ffn=0.5, heads=0.5, calib=[batch])
    b = lowvram.prune_channels_(copy.deepcopy(dense), ffn=0.5, heads=0.5,
                                calib=lambda m: m(**batch))
    for k, v in a.lowvram_pruned_channels["kept"].items():
        assert torch.equal(v, b.lowvram_pruned_channels["kept"][k]), k
    assert bert_out(a, ids()).shape == (2, 12, 64)


# ---------------------------------------------------------------- save / load


def test_llama_save_pretrained_round_trip():
    m = lowvram.prune_channels_(tiny_llama(heads=6, kv=3, hidden=96), ffn=0.25, heads=0.34)
    x = ids()
    with tempfile.TemporaryDirectory() as d:
        m.save_pretrained(d)
        m2 = LlamaForCausalLM.from_pretrained(d).eval()
    assert m2.config.num_key_value_heads == 2 and m2.config.num_attention_heads == 4
    assert m2.config.head_dim == 16 and m2.config.intermediate_size == 72
    assert_same_bits(llama_logits(m2, x), llama_logits(m, x), "reloaded logits")


def test_bert_save_pretrained_round_trip():
    m = lowvram.prune_channels_(tiny_bert(heads=4), ffn=0.25, heads=0.25)
    x = ids()
    with tempfile.TemporaryDirectory() as d:
        m.save_pretrained(d)
        # plain from_pretrained cannot express head size != hidden / heads: it must fail loudly
        with pytest.raises((ValueError, RuntimeError)):
            BertModel.from_pretrained(d)
        m2 = lowvram.channels.from_pretrained(BertModel, d)
    assert m2.encoder.layer[0].attention.self.all_head_size == 48
    assert_same_bits(bert_out(m2, x), bert_out(m, x), "reloaded hidden states")
    # FFN-only pruning needs no help: plain from_pretrained
    f = lowvram.prune_channels_(tiny_bert(), ffn=0.5)
    with tempfile.TemporaryDirectory() as d:
        f.save_pretrained(d)
        f2 = BertModel.from_pretrained(d).eval()
    assert_same_bits(bert_out(f2, x), bert_out(f, x), "reloaded FFN-pruned BERT")


def test_bert_pruned_twice_round_trips(capsys):
    m = tiny_bert(heads=4)
    lowvram.prune_channels_(m, ffn=0.25, heads=0.25, verbose=True)  # 4 -> 3 heads
    lowvram.prune_channels_(m, ffn=0.0, heads=0.34, verbose=True)   # 3 -> 2 heads
    out = capsys.readouterr().out
    assert "4 -> 3 query heads" in out and "3 -> 2 query heads" in out
    assert m.config.lowvram_num_attention_heads_before == 4  # head size = 64 / 4 = 16
    x = ids()
    with tempfile.TemporaryDirectory() as d:
        m.save_pretrained(d)
        m2 = lowvram.channels.from_pretrained(BertModel, d)
    assert m2.encoder.layer[1].attention.self.all_head_size == 32
    assert_same_bits(bert_out(m2, x), bert_out(m, x), "reloaded twice-pruned BERT")


# ---------------------------------------------------------------- QLinear


def test_qlinear_prune_commutes_with_quantize_on_rows():
    dense = tiny_llama(heads=4, kv=2)
    qp = lowvram.prune_channels_(lowvram.quantize_(copy.deepcopy(dense)), ffn=0.25, heads=0.5)
    pq = lowvram.quantize_(lowvram.prune_channels_(copy.deepcopy(dense), ffn=0.25, heads=0.5))
    kq, kp = qp.lowvram_pruned_channels["kept"], pq.lowvram_pruned_channels["kept"]
    # scores from the dequantized vs float weights: same choice on this seed
    for k in kp:
        assert torch.equal(kq[k], kp[k]), k
    for i, (lq, lp, ld) in enumerate(zip(qp.model.layers, pq.model.layers, dense.model.layers)):
        # rows: each row has its own scale, so slicing and quantizing commute bit for bit
        for name in ("mlp.gate_proj", "mlp.up_proj", "self_attn.q_proj", "self_attn.k_proj",
                     "self_attn.v_proj"):
            a, b = lq.get_submodule(name), lp.get_submodule(name)
            assert isinstance(a, QLinear) and isinstance(b, QLinear)
            assert_same_bits(a.qweight, b.qweight, name)
            assert_same_bits(a.wscale, b.wscale, name)
        # columns: the original codes and scales, sliced — the same dequantized
        # weight on the kept columns (not quantize(slice), whose row scales are tighter)
        for name, full in (("mlp.down_proj", 96), ("self_attn.o_proj", 64)):
            a = lq.get_submodule(name)
            orig = QLinear.from_linear(ld.get_submodule(name))
            if name == "mlp.down_proj":
                cols = kq[f"model.layers.{i}.mlp"]
            else:
                h = kq[f"model.layers.{i}.self_attn"]
                cols = (h[:, None] * 16 + torch.arange(16)).reshape(-1)
            assert a.in_features == cols.numel() < full
            assert_same_bits(a.qweight, orig.qweight[:, cols], name)
            assert_same_bits(a.wscale, orig.wscale, name)
            assert_same_bits(ref.dequantize_weight(a.qweight, a.wscale),
                             ref.dequantize_weight(orig.qweight, orig.wscale)[:, cols], name)
            x = torch.randn(5, cols.numel())
            assert_same_bits(a(x), ref.qlinear(x, a.qweight, a.wscale, a.bias, a.act_scale), name)
    x = ids()
    assert llama_logits(qp, x).isfinite().all() and llama_logits(pq, x).isfinite().all()


def test_qlinear_smoothquant_act_scale_slices_with_columns():
    dense = tiny_llama()
    calib = [ids(2, 16, seed=s) for s in (7, 8)]
    q = lowvram.quantize_(copy.deepcopy(dense), calib=calib, smooth=0.5)
    before = q.model.layers[0].mlp.down_proj.act_scale.clone()
    lowvram.prune_channels_(q, ffn=0.25, calib=calib)
    kept = q.lowvram_pruned_channels["kept"]["model.layers.0.mlp"]
    d = q.model.layers[0].mlp.down_proj
    assert_same_bits(d.act_scale, before[kept], "act_scale")
    assert llama_logits(q, ids()).isfinite().all()


def test_qlinear_per_group_columns_raise_and_leave_the_model_alone():
    m = lowvram.quantize_(tiny_llama(inter=128), group_size=64)
    mods = list(m.modules())
    with pytest.raises(ValueError, match=r"lowvram\.prune_channels_: .*down_proj.*group_size=64"):
        lowvram.prune_channels_(m, ffn=0.25)
    assert list(m.modules()) == mods, "validated before anything changed"


def test_memory_footprint_counts_the_smaller_modules():
    m = tiny_llama(heads=4, kv=2, layers=2)
    before = lowvram.memory.footprint(m)
    lowvram.prune_channels_(m, ffn=0.25, heads=0.5, multiple_of=1)
    after = lowvram.memory.footprint(m)
    # per layer: 24 neurons x (gate row + up row + down column) x 64; one kv group:
    # 2 q heads + 1 k + 1 v head rows (16 x 64 each) and 2 heads' o_proj columns
    removed = 2 * 4 * (24 * 64 * 3 + (2 + 1 + 1) * 16 * 64 + 2 * 16 * 64)
    assert before.total - after.total == removed
    assert before.linear_weights - after.linear_weights == removed
    q = lowvram.quantize_(tiny_llama(heads=4, kv=2, layers=2))
    qb = lowvram.memory.footprint(q)
    lowvram.prune_channels_(q, ffn=0.25, heads=0.5, multiple_of=1)
    qa = lowvram.memory.footprint(q)
    # int8 codes (1 byte) + the removed rows' float32 scales (gate, up, q, k, v rows)
    removed_q = 2 * (24 * 64 * 3 + 4 * 16 * 64 + 2 * 16 * 64 + 4 * (24 * 2 + 4 * 16))
    assert qb.linear_weights - qa.linear_weights == removed_q


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("kw,exc,match", [
    ({"ffn": 1.0}, ValueError, "ffn must be in"),
    ({"ffn": -0.1}, ValueError, "ffn must be in"),
    ({"ffn": "0.5"}, TypeError, "ffn must be a float"),
    ({"ffn": True}, TypeError, "ffn must be a float"),
    ({"heads": 1.0}, ValueError, "heads must be in"),
    ({"importance": "random"}, ValueError, "importance must be"),
    ({"importance": "activation"}, ValueError, "importance=.activation. needs calib"),
    ({"importance": "norm", "calib": [torch.zeros(1, 4, dtype=torch.long)]}, ValueError,
     "calib is only used"),
    ({"multiple_of": 0}, ValueError, "multiple_of"),
])
def test_bad_arguments_raise(kw, exc, match):
    with pytest.raises(exc, match=r"lowvram\.prune_channels_: " + match):
        lowvram.prune_channels_(tiny_llama(layers=1), **kw)


def test_unsupported_architectures_raise():
    with pytest.raises(TypeError, match=r"lowvram\.prune_channels_: model must be"):
        lowvram.prune_channels_("model")
    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=VOCAB))
    with pytest.raises(ValueError, match=r"lowvram\.prune_channels_: ffn=0.25 .*no recognized FFN"):
        lowvram.prune_channels_(gpt2, ffn=0.25)
    with pytest.raises(ValueError, match=r"lowvram\.prune_channels_: heads=0.5 .*no recognized"):
        lowvram.prune_channels_(nn.Sequential(nn.Linear(4, 4)), ffn=0.0, heads=0.5)


def test_sparse_modules_raise():
    m = tiny_llama(layers=1)
    lowvram.prune_(m, "2:4")
    assert isinstance(m.model.layers[0].mlp.down_proj, SparseLinear)
    with pytest.raises(ValueError, match=r"lowvram\.prune_channels_: .*SparseLinear.*prune "
                                         r"channels first"):
        lowvram.prune_channels_(m, ffn=0.25)


def test_heads_that_do_not_divide_raise():
    m = tiny_llama(heads=4, kv=2, layers=1)
    at = m.model.layers[0].self_attn
    at.k_proj = nn.Linear(64, 24, bias=False)  # 24 rows: not a whole number of 16-wide heads
    at.v_proj = nn.Linear(64, 24, bias=False)
    with pytest.raises(ValueError, match=r"lowvram\.prune_channels_: cannot prune heads"):
        lowvram.prune_channels_(m, ffn=0.0, heads=0.5)
    m = tiny_llama(heads=4, kv=2, layers=1)
    m.model.layers[0].self_attn.k_proj = nn.Linear(64, 48, bias=False)  # 3 kv heads, 4 q heads
    m.model.layers[0].self_attn.v_proj = nn.Linear(64, 48, bias=False)
    with pytest.raises(ValueError, match=r"not a multiple of 3 key/value heads"):
        lowvram.prune_channels_(m, ffn=0.0, heads=0.5)


# ---------------------------------------------------------------- a trained model


def test_minilm_pruned_equals_zeroed_and_round_trips(minilm):
    model, tok = minilm
    batch = dict(tok(["The quick brown fox jumps over the lazy dog.",
                      "Channel pruning removes whole neurons and heads."],
                     padding=True, return_tensors="pt"))
    dense = copy.deepcopy(model).double()
    pruned = lowvram.prune_channels_(copy.deepcopy(dense), ffn=0.25, heads=0.25, calib=[batch])
    s = pruned.lowvram_pruned_channels
    assert s["ffn"]["after"] == 1152 and s["heads"]["q_after"] == 9
    zeroed = copy.deepcopy(dense)
    for i, zl in enumerate(zeroed.encoder.layer):
        gone = sorted(set(range(1536)) - set(s["kept"][f"encoder.layer.{i}"].tolist()))
        heads = s["kept"][f"encoder.layer.{i}.attention"].tolist()
        with torch.no_grad():
            zl.output.dense.weight[:, gone] = 0
            for h in sorted(set(range(12)) - set(heads)):
                zl.attention.output.dense.weight[:, h * 32:(h + 1) * 32] = 0
    with torch.no_grad():
        a, b = pruned(**batch).last_hidden_state, zeroed(**batch).last_hidden_state
    torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    fb, fa = lowvram.memory.footprint(dense), lowvram.memory.footprint(pruned)
    # float64, per layer: 384 neurons (in row + bias, out column), 3 heads of 32
    # (q/k/v rows + biases, o columns)
    ffn_b = 2 * 384 * 384 + 384
    head_b = 4 * 96 * 384 + 3 * 96
    assert fb.total - fa.total == 8 * 6 * (ffn_b + head_b)
    with tempfile.TemporaryDirectory() as d:
        pruned.save_pretrained(d)
        re = lowvram.channels.from_pretrained(BertModel, d)
    with torch.no_grad():
        assert_same_bits(re(**batch).last_hidden_state, a, "reloaded MiniLM")
