"""Tests of lowvram.lora: lora_, merge_, the adapter state dicts and files,
and PEFT's custom-module registration.

Oracles: the model before lora_ (bit-identical outputs at init); a float64
straight-through reference (the frozen base's forward values as constants,
its dequantized / decompressed weight as the derivative, the adapters in
float64) for adapter gradients through int8 and sparse bases;
torch.autograd.gradcheck (finite differences, float64) on float bases; the
unmerged model for merge_ on float bases (float64: 1e-12, float32: 1e-5);
QLinear.from_linear / SparseLinear.from_linear of the dequantized weight plus
the update for merge_(requantize=True); one full-batch step for
MicroBatchStep; PEFT's own LoRA forward for peft_register; the bases' bits
before training for "frozen".
"""
import copy
import math

import pytest
import torch
from torch import nn
import torch.nn.functional as F

import lowvram
from lowvram import ops, reference
from lowvram.lora import (has_lora, load_lora, load_lora_state_dict, lora_, lora_modules,
                          lora_state_dict, merge_, peft_register, save_lora)
from lowvram.nn import QLinear, SparseLinear, SparseQLinear

from conftest import assert_same_bits, sqnr_db

RTOL_GRAD = 1e-5  # fp32 lowvram gradients vs the float64 reference (relative, whole tensor)
KINDS = ["qlinear", "sparse_qlinear", "sparse_linear", "linear"]


def rel_err(a, b):
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def make_base(kind, K, N, seed=0, bias=True):
    """One base module of the given kind, from a seeded float Linear."""
    torch.manual_seed(seed)
    lin = nn.Linear(K, N, bias=bias)
    if kind == "linear":
        return lin
    if kind == "qlinear":
        return QLinear.from_linear(lin)
    mask = ops.nm_mask(lin.weight.detach().abs(), 2, 4)
    s = SparseLinear.from_linear(lin, mask, n=2, m=4)
    return s if kind == "sparse_linear" else SparseQLinear.from_sparse_linear(s)


class Net(nn.Module):
    """base1 -> tanh -> base2, with a LayerNorm and a head that lora_ must freeze."""

    def __init__(self, kind1, kind2, K=32, H=48, N=16, seed=0):
        super().__init__()
        self.norm = nn.LayerNorm(K)
        self.fc1 = make_base(kind1, K, H, seed)
        self.fc2 = make_base(kind2, H, N, seed + 1)
        torch.manual_seed(seed + 2)
        self.lm_head = nn.Linear(N, 4)

    def forward(self, x):
        return self.lm_head(self.fc2(torch.tanh(self.fc1(self.norm(x)))))


def base_state(model):
    """Every tensor of the model that is not an adapter, cloned."""
    return {k: v.detach().clone() for k, v in model.state_dict().items() if ".lora_" not in k}


def randomize_B(model, std=0.2, seed=5):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, m in lora_modules(model):
            w = m.lora_B.weight
            w.copy_(torch.randn(w.shape, generator=g, dtype=torch.float64) * std)


# ----------------------------------------------------------------------------- adding adapters

@pytest.mark.parametrize("kind", KINDS)
def test_outputs_bit_identical_at_init_every_base_kind(kind):
    model = Net(kind, kind)
    x = torch.randn(6, 32)
    y0 = model(x)
    keys0 = list(model.state_dict().keys())
    lora_(model, rank=4, alpha=8, dropout=0.5)  # dropout too: B = 0 hides it
    assert [n for n, _ in lora_modules(model)] == ["fc1", "fc2"]  # lm_head skipped
    assert type(model.fc1) is type(make_base(kind, 4, 4))  # the base keeps its class
    for mode in ("train", "eval"):
        getattr(model, mode)()
        assert_same_bits(model(x), y0, f"{kind} {mode}")
    # base keys unchanged; adapter keys added with PEFT's names
    keys = list(model.state_dict().keys())
    assert [k for k in keys if ".lora_" not in k] == keys0
    assert sorted(k for k in keys if ".lora_" in k) == [
        "fc1.lora_A.weight", "fc1.lora_B.weight", "fc2.lora_A.weight", "fc2.lora_B.weight"]


def test_init_as_peft_and_shapes():
    model = lora_(Net("qlinear", "linear"), rank=4, alpha=12)
    m = model.fc1
    assert m.lora_A.weight.shape == (4, 32) and m.lora_B.weight.shape == (48, 4)
    assert m.lora_scaling == 3.0 and m.lora_rank == 4 and m.lora_alpha == 12.0
    assert m.lora_A.weight.dtype == torch.float32  # int8 base -> float32 adapters
    assert torch.count_nonzero(m.lora_B.weight) == 0
    # kaiming_uniform_(a=sqrt(5)): U(-1/sqrt(K), 1/sqrt(K)), not all zero
    bound = 1 / math.sqrt(32)
    A = m.lora_A.weight
    amax = float(A.detach().abs().max())
    assert 0.5 * bound < amax <= bound
    # float bases: adapters in the weight's dtype
    model64 = lora_(Net("linear", "linear").double(), rank=2)
    assert model64.fc1.lora_A.weight.dtype == torch.float64


def test_only_adapters_require_grad():
    model = Net("sparse_qlinear", "qlinear")
    lora_(model, rank=2)
    trainable = sorted(n for n, p in model.named_parameters() if p.requires_grad)
    assert trainable == ["fc1.lora_A.weight", "fc1.lora_B.weight",
                         "fc2.lora_A.weight", "fc2.lora_B.weight"]
    # base biases, the norm and the head are frozen
    assert not model.fc1.bias.requires_grad and not model.norm.weight.requires_grad
    assert not model.lm_head.weight.requires_grad


def test_filter_fn_chooses_modules_and_second_call_adds_more():
    model = Net("qlinear", "sparse_linear")
    lora_(model, rank=2, filter_fn=lambda m, name: name == "fc2")
    assert [n for n, _ in lora_modules(model)] == ["fc2"]
    assert not has_lora(model.fc1)
    # a second call on other modules: every adapter stays trainable
    lora_(model, rank=3, filter_fn=lambda m, name: name == "lm_head")
    assert [n for n, _ in lora_modules(model)] == ["fc2", "lm_head"]
    assert all(m.lora_A.weight.requires_grad for _, m in lora_modules(model))
    with pytest.raises(ValueError, match=r"lowvram.lora_: fc2 already has LoRA adapters"):
        lora_(model, filter_fn=lambda m, name: name == "fc2")


@pytest.mark.parametrize("kwargs, match", [
    (dict(rank=0), r"lowvram.lora_: rank must be an int >= 1, got 0"),
    (dict(rank=-2), r"lowvram.lora_: rank must be"),
    (dict(rank=2.5), r"lowvram.lora_: rank must be"),
    (dict(alpha=0), r"lowvram.lora_: alpha must be a finite number > 0, got 0"),
    (dict(alpha=-1.0), r"lowvram.lora_: alpha must be"),
    (dict(alpha=float("nan")), r"lowvram.lora_: alpha must be"),
    (dict(dropout=-0.1), r"lowvram.lora_: dropout must be in \[0, 1\), got -0.1"),
    (dict(dropout=1.0), r"lowvram.lora_: dropout must be in \[0, 1\), got 1.0"),
    (dict(filter_fn=lambda m, n: False), r"lowvram.lora_: no target modules found.*filter_fn"),
])
def test_bad_arguments_raise_and_leave_the_model_alone(kwargs, match):
    model = Net("qlinear", "linear")
    before = base_state(model)
    with pytest.raises(ValueError, match=match):
        lora_(model, **kwargs)
    assert not lora_modules(model) and all(p.requires_grad for p in model.parameters())
    assert base_state(model).keys() == before.keys()


def test_no_targets_without_filter_names_the_output_head():
    model = nn.Sequential(nn.Embedding(10, 8))
    model.lm_head = nn.Linear(8, 10)
    with pytest.raises(ValueError, match=r"lowvram.lora_: no target modules found.*output head"):
        lora_(model)
    with pytest.raises(TypeError, match=r"lowvram.lora_: model must be an nn.Module"):
        lora_("model")


# ----------------------------------------------------------------------------- gradients

def test_gradcheck_float64_linear_base():
    """Finite differences (float64) on the adapted function, w.r.t. A, B and x."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3)).double()
    lora_(model, rank=2, alpha=6)
    randomize_B(model)
    names = ["0.lora_A.weight", "0.lora_B.weight", "2.lora_A.weight", "2.lora_B.weight"]
    params = dict(model.named_parameters())

    def f(x, *ps):
        return torch.func.functional_call(model, dict(zip(names, ps)), (x,))

    x = torch.randn(4, 5, dtype=torch.float64, requires_grad=True)
    inputs = (x, *[params[n].detach().clone().requires_grad_(True) for n in names])
    assert torch.autograd.gradcheck(f, inputs)


def _dense_weight64(m):
    """The weight whose product the base's backward computes (straight through
    the activation quantization), float64."""
    if isinstance(m, QLinear):
        return reference.dequantize_weight(m.qweight, m.wscale, m.act_scale, torch.float64)
    if isinstance(m, SparseQLinear):
        q = m.to_qlinear()
        return reference.dequantize_weight(q.qweight, q.wscale, q.act_scale, torch.float64)
    if isinstance(m, SparseLinear):
        return m.dense_weight().double()
    return m.weight.detach().double()


@pytest.mark.parametrize("kind", ["qlinear", "sparse_qlinear", "sparse_linear"])
def test_adapter_gradients_match_float64_straight_through_reference(kind):
    """Gradients of both layers' adapters, the first reached through the
    frozen second base's backward (qlinear_grad_input / sparse grads)."""
    model = Net(kind, kind)
    lora_(model, rank=3, alpha=6)
    randomize_B(model)
    x = torch.randn(5, 32)
    w_out = torch.randn(5, 4)
    # lowvram, float32; record each base's input and output value
    seen = {}
    hooks = [getattr(model, n).register_forward_pre_hook(
        lambda mod, a, n=n: seen.__setitem__(n + ".in", a[0].detach())) for n in ("fc1", "fc2")]
    (model(x) * w_out).sum().backward()
    for h in hooks:
        h.remove()
    with torch.no_grad():
        for n in ("fc1", "fc2"):
            m = getattr(model, n)
            # the base alone (the adapter hook is a forward hook; call the op directly)
            seen[n + ".base"] = type(m).forward(m, seen[n + ".in"]).double()

    # float64 reference: value of the base from lowvram (a constant), derivative W
    def ref_layer(n, h):
        m = getattr(model, n)
        W = _dense_weight64(m)
        lin = h @ W.T
        base = seen[n + ".base"] + (lin - lin.detach())
        A = ref[n + ".A"]
        B = ref[n + ".B"]
        return base + (h @ A.T) @ B.T * m.lora_scaling

    ref = {}
    for n in ("fc1", "fc2"):
        m = getattr(model, n)
        ref[n + ".A"] = m.lora_A.weight.detach().double().requires_grad_(True)
        ref[n + ".B"] = m.lora_B.weight.detach().double().requires_grad_(True)
    md = copy.deepcopy(model).double()
    h = md.norm(x.double())
    h = torch.tanh(ref_layer("fc1", h))
    y = md.lm_head(ref_layer("fc2", h))
    (y * w_out.double()).sum().backward()
    for n in ("fc1", "fc2"):
        m = getattr(model, n)
        for p, r in ((m.lora_A.weight, ref[n + ".A"]), (m.lora_B.weight, ref[n + ".B"])):
            assert p.grad is not None and float(p.grad.norm()) > 0
            assert rel_err(p.grad, r.grad) <= RTOL_GRAD, (kind, n)
    # nothing else got a gradient
    assert all(p.grad is None for nm, p in model.named_parameters() if ".lora_" not in nm)


@pytest.mark.parametrize("kind", ["qlinear", "sparse_qlinear", "sparse_linear"])
def test_compile_fullgraph_equals_eager(kind):
    """The adapter's forward hook traces without graph breaks (aot_eager: the
    autograd graph is traced too; inductor is left to test_qlinear/test_sparse)."""
    model = lora_(Net(kind, kind), rank=4)
    randomize_B(model)
    x = torch.randn(5, 32)
    model(x).square().sum().backward()
    grads = [p.grad.clone() for p in model.parameters() if p.requires_grad]
    model.zero_grad()
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    y = compiled(x)
    assert_same_bits(y, model(x), kind)
    y.square().sum().backward()
    for p, g in zip([p for p in model.parameters() if p.requires_grad], grads):
        assert rel_err(p.grad, g) <= RTOL_GRAD


# ----------------------------------------------------------------------------- training

def _teacher_student(kind, seed=0):
    """student: the frozen base; teacher: the float base + a rank-2 change per layer."""
    student = Net(kind, kind, seed=seed)
    teacher = Net("linear", "linear", seed=seed)
    teacher.lm_head = student.lm_head
    g = torch.Generator().manual_seed(seed + 10)
    with torch.no_grad():
        for lin in (teacher.fc1, teacher.fc2):
            N, K = lin.weight.shape
            lin.weight += 0.3 * torch.randn(N, 2, generator=g) @ torch.randn(2, K, generator=g) \
                / math.sqrt(K)
    return student, teacher


@pytest.mark.parametrize("kind", ["qlinear", "sparse_qlinear", "sparse_linear"])
def test_adamw_loss_falls_and_base_bits_unchanged(kind):
    student, teacher = _teacher_student(kind)
    lora_(student, rank=4, alpha=8)
    frozen = base_state(student)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(64, 32, generator=g)
    with torch.no_grad():
        y = teacher(x)
    opt = torch.optim.AdamW([p for p in student.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(40):
        opt.zero_grad()
        loss = F.mse_loss(student(x), y)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.3 * losses[0], losses
    after = base_state(student)
    assert after.keys() == frozen.keys()
    for k in frozen:  # int8 codes, scales, compressed values, masks, biases, norm, head
        assert_same_bits(after[k], frozen[k], k)


def test_micro_batch_step_equals_full_batch_step():
    model = Net("qlinear", "sparse_qlinear")
    lora_(model, rank=4)
    randomize_B(model, std=0.05)
    ref = copy.deepcopy(model)
    g = torch.Generator().manual_seed(4)
    batch = (torch.randn(10, 32, generator=g), torch.randn(10, 4, generator=g))

    def loss_fn(m, b):
        return F.mse_loss(m(b[0]), b[1])

    params = [p for p in model.parameters() if p.requires_grad]
    out = lowvram.MicroBatchStep(model, torch.optim.SGD(params, lr=0.5), loss_fn,
                                 micro_batch_size=3)(batch)
    assert out.num_micro_batches == 4  # 3 + 3 + 3 + 1
    # oracle: one full-batch forward/backward and SGD step
    ref_params = [p for p in ref.parameters() if p.requires_grad]
    opt = torch.optim.SGD(ref_params, lr=0.5)
    loss = loss_fn(ref, batch)
    loss.backward()
    before = [p.detach().clone() for p in ref_params]
    opt.step()
    assert out.loss == pytest.approx(float(loss.detach()), rel=1e-6)
    for p, r, b in zip(params, ref_params, before):
        assert rel_err(p.grad, r.grad) <= RTOL_GRAD
        assert rel_err(p.detach() - b, r.detach() - b) <= RTOL_GRAD
    for k, v in base_state(ref).items():
        assert_same_bits(base_state(model)[k], v, k)


# ----------------------------------------------------------------------------- saving

def test_save_load_adapters_alone_through_safetensors(tmp_path):
    from safetensors import safe_open
    model = lora_(Net("qlinear", "sparse_linear"), rank=4, alpha=8, dropout=0.1)
    randomize_B(model)
    model.eval()
    x = torch.randn(3, 32)
    y = model(x)
    path = str(tmp_path / "adapter.safetensors")
    save_lora(model, path)
    with safe_open(path, framework="pt") as f:
        assert sorted(f.keys()) == sorted(lora_state_dict(model).keys())  # adapters only

    # a fresh model, no adapters: load_lora adds them from the file's metadata
    fresh = Net("qlinear", "sparse_linear").eval()
    load_lora(fresh, path)
    assert_same_bits(fresh(x), y, "load_lora on a fresh model")
    assert fresh.fc1.lora_dropout.p == 0.1 and not fresh.fc1.lora_dropout.training
    assert sorted(n for n, p in fresh.named_parameters() if p.requires_grad) == sorted(
        lora_state_dict(model).keys())
    # lora_ first, then load: the same
    fresh2 = lora_(Net("qlinear", "sparse_linear"), rank=4, alpha=8).eval()
    load_lora(fresh2, path)
    assert_same_bits(fresh2(x), y, "lora_ + load_lora")
    # the in-memory state dict path
    fresh3 = lora_(Net("qlinear", "sparse_linear"), rank=4, alpha=8).eval()
    load_lora_state_dict(fresh3, lora_state_dict(model))
    assert_same_bits(fresh3(x), y, "load_lora_state_dict")
    # a whole-model state_dict (base + adapters) round-trips through torch's own loading
    fresh4 = lora_(Net("qlinear", "sparse_linear"), rank=4, alpha=8).eval()
    fresh4.load_state_dict(model.state_dict())
    assert_same_bits(fresh4(x), y, "load_state_dict")


def test_loading_mismatched_adapters_raises(tmp_path):
    model = lora_(Net("qlinear", "linear"), rank=4, alpha=8)
    sd = lora_state_dict(model)
    other_rank = lora_(Net("qlinear", "linear"), rank=2, alpha=8)
    with pytest.raises(ValueError, match=r"load_lora_state_dict: fc1.lora_A.weight must have "
                                         r"shape \(2, 32\), got \(4, 32\)"):
        load_lora_state_dict(other_rank, sd)
    with pytest.raises(ValueError, match=r"missing 2 keys"):
        load_lora_state_dict(model, {k: v for k, v in sd.items() if k.startswith("fc1")})
    with pytest.raises(ValueError, match=r"unexpected 1 keys.*fc9"):
        load_lora_state_dict(model, {**sd, "fc9.lora_A.weight": sd["fc1.lora_A.weight"]})
    with pytest.raises(ValueError, match=r"the model has no LoRA adapters"):
        load_lora_state_dict(Net("qlinear", "linear"), sd)
    path = str(tmp_path / "a.safetensors")
    save_lora(model, path)
    other_alpha = lora_(Net("qlinear", "linear"), rank=4, alpha=16)
    with pytest.raises(ValueError, match=r"load_lora: fc1 has alpha 16.0, the file 8.0"):
        load_lora(other_alpha, path)
    with pytest.raises(ValueError, match=r"save_lora: the model has no LoRA adapters"):
        save_lora(Net("qlinear", "linear"), path)


# ----------------------------------------------------------------------------- merging

@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_merge_float_bases_equals_unmerged(dtype, tol):
    from transformers.pytorch_utils import Conv1D
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, 20), nn.Tanh(), Conv1D(9, 20)).to(dtype)
    lora_(model, rank=3, alpha=5)
    randomize_B(model)
    x = torch.randn(7, 12, dtype=dtype)
    y = model(x).detach()
    keys = [k for k in model.state_dict() if ".lora_" not in k]
    assert merge_(model) is model
    assert not lora_modules(model) and list(model.state_dict().keys()) == keys
    assert not any(model[i]._forward_hooks for i in (0, 2))
    y_merged = model(x).detach()
    assert float((y_merged - y).abs().max() / y.abs().max()) <= tol
    # the merged modules alone (no hook left) give it
    y_alone = model[2](model[1](model[0](x))).detach()
    assert float((y - y_alone).abs().max()) <= tol * float(y.abs().max())


def test_merge_int8_and_sparse_bases_refuses_without_requantize():
    for kind, words in (("qlinear", "re-quantization"), ("sparse_qlinear", "N:M mask"),
                        ("sparse_linear", "break the N:M mask")):
        model = lora_(Net("linear", kind), rank=2)
        before = {k: v.clone() for k, v in model.state_dict().items()}
        with pytest.raises(ValueError, match=rf"lowvram.merge_: fc2 is a .*{words}.*"
                                             rf"requantize=True"):
            merge_(model)
        # nothing changed, not even the float fc1 listed before it
        assert len(lora_modules(model)) == 2
        for k, v in model.state_dict().items():
            assert_same_bits(v, before[k], k)
    with pytest.raises(ValueError, match=r"lowvram.merge_: the model has no LoRA adapters"):
        merge_(Net("linear", "linear"))


def test_merge_requantize_qlinear_equals_quantizing_the_merged_weight():
    model = lora_(Net("qlinear", "qlinear"), rank=4, alpha=8)
    randomize_B(model, std=0.05)
    x = torch.randn(16, 32)
    y = model(x).detach()
    expected = {}
    for n in ("fc1", "fc2"):
        m = getattr(model, n)
        w = m.to_linear()
        with torch.no_grad():
            w.weight += (m.lora_B.weight @ m.lora_A.weight) * m.lora_scaling
        expected[n] = QLinear.from_linear(w)
    with pytest.warns(UserWarning, match=r"re-quantized 2 int8 base"):
        merge_(model, requantize=True)
    for n in ("fc1", "fc2"):
        m = getattr(model, n)
        assert type(m) is QLinear and not has_lora(m) and not m.bias.requires_grad
        assert_same_bits(m.qweight, expected[n].qweight, n)
        assert_same_bits(m.wscale, expected[n].wscale, n)
    assert sqnr_db(y, model(x).detach()) > 30  # int8 rounding of the merged weights only


def test_merge_requantize_sparse_keeps_the_mask():
    model = lora_(Net("sparse_linear", "sparse_qlinear"), rank=4, alpha=8)
    randomize_B(model, std=0.05)
    masks = {n: getattr(model, n).mask_bits.clone() for n in ("fc1", "fc2")}
    m = model.fc1
    keep = ops.sparse_decompress(torch.ones_like(m.values, dtype=torch.int8), m.mask_bits,
                                 32).bool()
    with torch.no_grad():
        merged = m.dense_weight() + (m.lora_B.weight @ m.lora_A.weight) * m.lora_scaling
        want = torch.where(keep, merged, torch.zeros_like(merged))
    with pytest.warns(UserWarning, match=r"kept the masks of 2 pruned base.*dropped"):
        merge_(model, requantize=True)
    assert type(model.fc1) is SparseLinear and type(model.fc2) is SparseQLinear
    for n in ("fc1", "fc2"):
        assert_same_bits(getattr(model, n).mask_bits, masks[n], n)
        assert getattr(model, n).n == 2 and getattr(model, n).m == 4
    assert_same_bits(model.fc1.dense_weight(), want, "fc1 merged values")


# ----------------------------------------------------------------------------- PEFT

def _qmodel(seed=0):
    torch.manual_seed(seed)
    m = nn.Sequential()
    m.up = nn.Linear(16, 32)
    m.act = nn.Tanh()
    m.down = nn.Linear(32, 4)
    return lowvram.quantize_(m)


# PEFT warns about every layer type it does not know, also registered custom ones
@pytest.mark.filterwarnings("ignore:Unsupported layer type")
def test_peft_lora_config_targets_qlinear_trains_and_keeps_codes():
    peft = pytest.importorskip("peft")
    model = _qmodel()
    x = torch.randn(32, 16)
    y0 = model(x)
    frozen = base_state(model)
    cfg = peft_register(peft.LoraConfig(r=4, lora_alpha=8, target_modules=["up", "down"]))
    pm = peft.get_peft_model(model, cfg)
    assert_same_bits(pm(x), y0, "PEFT at init")
    assert type(pm.base_model.model.up.base_layer) is QLinear
    trainable = [n for n, p in pm.named_parameters() if p.requires_grad]
    assert len(trainable) == 4 and all(".lora_" in n for n in trainable)

    target = torch.randn(32, 4, generator=torch.Generator().manual_seed(1))
    opt = torch.optim.AdamW([p for p in pm.parameters() if p.requires_grad], lr=2e-2)
    losses = []
    for _ in range(30):
        opt.zero_grad()
        loss = F.mse_loss(pm(x), target)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.7 * losses[0], losses
    for n in ("up", "down"):
        base = getattr(pm.base_model.model, n).base_layer
        assert_same_bits(base.qweight, frozen[f"{n}.qweight"], n)
        assert_same_bits(base.wscale, frozen[f"{n}.wscale"], n)
        assert_same_bits(base.bias, frozen[f"{n}.bias"], n)

    # the same adapters in lowvram.lora_ compute the same bits (PEFT's key names load)
    ours = lora_(_qmodel(), rank=4, alpha=8)
    load_lora_state_dict(ours, peft.get_peft_model_state_dict(pm))
    assert_same_bits(ours(x), pm(x), "lowvram.lora_ vs PEFT")
    with pytest.raises(ValueError, match=r"merging a PEFT adapter into a QLinear"):
        pm.merge_and_unload()


# ----------------------------------------------------------------------------- Hugging Face

def test_hf_llama_quantize_then_lora_backward_and_generate():
    transformers = pytest.importorskip("transformers")
    cfg = transformers.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64,
                                   num_hidden_layers=2, num_attention_heads=4,
                                   num_key_value_heads=2, max_position_embeddings=64)
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(cfg).eval()
    lowvram.quantize_(model)
    ids = torch.randint(1, 64, (2, 10))
    gen0 = model.generate(ids[:1, :4], max_new_tokens=5, do_sample=False)
    logits0 = model(ids).logits
    lora_(model, rank=4)
    adapted = [n for n, _ in lora_modules(model)]
    assert len(adapted) == 2 * 7 and "lm_head" not in adapted  # q k v o gate up down
    assert all(type(model.get_submodule(n)) is QLinear for n in adapted)
    assert_same_bits(model(ids).logits, logits0, "llama logits at init")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_" in n for n in trainable)

    model.train()
    out = model(input_ids=ids, labels=ids)
    out.loss.backward()
    for n in adapted:
        m = model.get_submodule(n)
        assert m.lora_B.weight.grad is not None and float(m.lora_B.weight.grad.norm()) > 0
    assert model.model.embed_tokens.weight.grad is None
    model.eval()
    gen = model.generate(ids[:1, :4], max_new_tokens=5, do_sample=False)
    assert torch.equal(gen, gen0)  # B = 0: the same greedy tokens
