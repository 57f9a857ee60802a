"""Tests of lowvram.train.MicroBatchStep.

Oracles: the full-batch gradient and loss of the same model on the same batch
(one forward + backward, no micro-batching), in float32, or in float64 for
bf16 models; a plain PyTorch training loop (zero_grad, backward, clip,
optimizer.step, scheduler.step) for the optimizer-side behaviour; the measured
peak (VmHWM on CPU) for budgets and checkpointing; a single process's step for
DDP. Where a naive way exists (per-micro-batch mean losses, bf16 accumulation,
a forgotten zero_grad), the test shows it fails the same check.
"""
import functools
import gc
import os
import subprocess
import sys
import warnings

import pytest
import torch
from torch import nn
import torch.nn.functional as F

import lowvram  # noqa: F401  (loads the library)
from lowvram import memory
from lowvram.train import MicroBatchStep, StepOutput, _accumulate_, checkpoint_, parse_budget

MiB = 2 ** 20
RTOL = 1e-5  # fp32 micro-batched vs full-batch gradients (issue 10)


def rel_err(a, b):
    """||a - b|| / ||b|| in float64."""
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def max_rel_err(model, ref_grads):
    return max(rel_err(p.grad, g) for p, g in zip(model.parameters(), ref_grads))


def mlp(seed=0, dtype=torch.float32):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(8, 32), nn.Tanh(), nn.Linear(32, 3)).to(dtype)


def ce_mean(model, b):
    x, y = b
    return F.cross_entropy(model(x), y)


def full_grads(model, loss_fn, batch):
    model.zero_grad(set_to_none=True)
    loss = loss_fn(model, batch)
    loss.backward()
    g = [p.grad.detach().clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    return float(loss.detach()), g


def data(n=10, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 8, generator=g), torch.randint(0, 3, (n,), generator=g)


# ----------------------------------------------------------------------------- exactness

@pytest.mark.parametrize("grad_hooks", [True, False])
@pytest.mark.parametrize("mbs", [1, 3, 4, 10, 64])
def test_mean_loss_uneven_last_micro_batch_equals_full_batch(mbs, grad_hooks):
    model = mlp()
    batch = data(10)
    loss_ref, g_ref = full_grads(model, ce_mean, batch)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    out = MicroBatchStep(model, opt, ce_mean, micro_batch_size=mbs, _grad_hooks=grad_hooks)(batch)
    assert isinstance(out, StepOutput)
    m = min(mbs, 10)
    assert out.micro_batch_sizes == tuple([m] * (10 // m) + ([10 % m] if 10 % m else []))
    assert out.num_micro_batches == len(out.micro_batch_sizes) and out.micro_batch_size == m
    assert max_rel_err(model, g_ref) <= RTOL
    assert out.loss == pytest.approx(loss_ref, rel=1e-6)
    assert out.count == 10 and (out.peak_bytes is None or out.peak_bytes > 0)


def _tiny_llama(seed=0):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64,
                                   num_hidden_layers=2, num_attention_heads=4,
                                   num_key_value_heads=2, max_position_embeddings=64,
                                   use_cache=False)
    torch.manual_seed(seed)
    return transformers.LlamaForCausalLM(cfg).train()


def _padded_batch(lengths, T=12, seed=2):
    """HF-style dict: right-padded input_ids, attention_mask, labels -100 on padding."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 64, (len(lengths), T), generator=g)
    mask = torch.zeros(len(lengths), T, dtype=torch.long)
    for i, n in enumerate(lengths):
        mask[i, :n] = 1
    ids = ids.masked_fill(mask == 0, 0)
    labels = ids.masked_fill(mask == 0, -100)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def token_sum_loss(model, mb):
    """(sum of next-token cross-entropies over real tokens, their number)."""
    logits = model(input_ids=mb["input_ids"], attention_mask=mb["attention_mask"]).logits
    logits, labels = logits[:, :-1].float(), mb["labels"][:, 1:]
    s = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1),
                        ignore_index=-100, reduction="sum")
    return s, (labels != -100).sum()


def hf_mean_loss(model, mb):
    """What a user writes first: the model's own (token-mean) loss."""
    return model(**mb).loss


def test_token_level_sum_count_equals_full_batch_and_naive_mean_fails():
    model = _tiny_llama()
    batch = _padded_batch([12, 2, 11, 3, 12, 4, 12, 2])  # micro-batches of 2: 14/14/16/14 tokens
    # oracle: the HF model's loss over the whole batch = mean over every real token
    loss_ref, g_ref = full_grads(model, hf_mean_loss, batch)

    # the naive way (HF Trainer before 4.46): average the micro-batches' mean losses
    model.zero_grad(set_to_none=True)
    k = 4
    for i in range(k):
        mb = {key: v[2 * i:2 * i + 2] for key, v in batch.items()}
        (hf_mean_loss(model, mb) / k).backward()
    naive = max_rel_err(model, g_ref)
    model.zero_grad(set_to_none=True)

    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    # lowvram with a per-micro-batch mean (weighted by samples) is just as wrong here
    MicroBatchStep(model, opt, hf_mean_loss, micro_batch_size=2)(batch)
    sample_weighted = max_rel_err(model, g_ref)

    out = MicroBatchStep(model, opt, token_sum_loss, micro_batch_size=2)(batch)
    exact = max_rel_err(model, g_ref)
    print(f"token loss rel err: lowvram {exact:.2e}, naive mean-of-means {naive:.2e}, "
          f"sample-weighted means {sample_weighted:.2e}")
    assert exact <= RTOL, exact
    assert naive > 1e-2 and sample_weighted > 1e-2, (naive, sample_weighted)
    assert out.loss == pytest.approx(loss_ref, rel=1e-6)
    assert out.count == sum(n - 1 for n in [12, 2, 11, 3, 12, 4, 12, 2])
    assert out.num_micro_batches == 4


def test_bf16_accumulates_in_fp32_closer_to_float64_than_bf16_accumulation():
    torch.manual_seed(0)
    ref = nn.Linear(64, 64).double()
    g = torch.Generator().manual_seed(3)
    x = torch.randn(128, 64, generator=g, dtype=torch.float64) + 1.0
    y = torch.randn(128, 64, generator=g, dtype=torch.float64)

    def mse(m, b):
        return ((m(b[0].to(m.weight.dtype)) - b[1].to(m.weight.dtype)).float() ** 2).mean()

    _, g64 = full_grads(ref, mse, (x, y))
    model = nn.Linear(64, 64).to(torch.bfloat16)
    model.load_state_dict(ref.state_dict())

    # naive: p.grad accumulates in bf16 across micro-batches
    model.zero_grad(set_to_none=True)
    for i in range(0, 128, 4):
        (mse(model, (x[i:i + 4], y[i:i + 4])) * (4 / 128)).backward()
    naive = max(rel_err(p.grad, r) for p, r in zip(model.parameters(), g64))

    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    MicroBatchStep(model, opt, mse, micro_batch_size=4)((x, y))
    assert all(p.grad.dtype == torch.bfloat16 for p in model.parameters())
    ours = max(rel_err(p.grad, r) for p, r in zip(model.parameters(), g64))
    print(f"bf16 grad rel err vs float64: fp32 accumulators {ours:.2e}, bf16 p.grad {naive:.2e}")
    assert ours < 0.5 * naive, (ours, naive)
    assert ours < 1e-2


def test_accumulate_upcasts_into_float32():
    acc = [torch.zeros(3), torch.zeros(2)]
    grads = [torch.tensor([1.0, 2.0, 3.0], dtype=torch.bfloat16), torch.tensor([0.5, 1.0])]
    _accumulate_(acc, grads, 2.0)
    _accumulate_(acc, grads, 2.0)
    assert acc[0].tolist() == [4.0, 8.0, 12.0] and acc[1].tolist() == [2.0, 4.0]
    assert acc[0].dtype == torch.float32


# ----------------------------------------------------------------------------- optimizer side

def test_optimizer_steps_once_and_grads_are_zeroed_the_articles_bug():
    batches = [data(10, seed=s) for s in (5, 6)]

    def reference(forget_zero_grad):
        model = mlp()
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        for b in batches:
            if not forget_zero_grad:
                opt.zero_grad()
            ce_mean(model, b).backward()
            opt.step()
        return [p.detach().clone() for p in model.parameters()]

    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    calls = []
    opt.register_step_post_hook(lambda *a: calls.append(1))
    for p in model.parameters():  # stale gradients from before must not leak in
        p.grad = torch.full_like(p, 100.0)
    step = MicroBatchStep(model, opt, ce_mean, micro_batch_size=3)
    for i, b in enumerate(batches):
        step(b)
        assert len(calls) == i + 1  # exactly one optimizer.step per call
    good, buggy = reference(False), reference(True)
    got = [p.detach() for p in model.parameters()]
    assert max(rel_err(a, b) for a, b in zip(got, good)) <= RTOL
    assert max(rel_err(a, b) for a, b in zip(buggy, good)) > 1e-3  # the bug is detectable


def test_clipping_and_scheduler_act_on_the_full_batch_gradient():
    batches = [data(12, seed=s) for s in (7, 8, 9)]

    def make():
        model = mlp()
        opt = torch.optim.SGD(model.parameters(), lr=0.5)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
        return model, opt, sched

    model_r, opt_r, sched_r = make()
    norms = []
    for b in batches:
        opt_r.zero_grad()
        ce_mean(model_r, b).backward()
        norms.append(float(nn.utils.clip_grad_norm_(model_r.parameters(), 0.05)))
        opt_r.step()
        sched_r.step()

    model, opt, sched = make()
    step = MicroBatchStep(model, opt, ce_mean, micro_batch_size=5, max_grad_norm=0.05,
                          scheduler=sched)
    outs = [step(b) for b in batches]
    assert all(n > 0.05 for n in norms)  # clipping did act
    for o, n in zip(outs, norms):
        assert o.grad_norm == pytest.approx(n, rel=1e-5)
    assert opt.param_groups[0]["lr"] == opt_r.param_groups[0]["lr"] == 0.5 * 0.5 ** 3
    assert max(rel_err(a, b) for a, b in zip(model.parameters(), model_r.parameters())) <= RTOL


def test_batch_forms_and_pass_through_values():
    model = mlp()
    x, y = data(7)
    _, g_ref = full_grads(model, ce_mean, (x, y))
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    seen = []

    def loss_dict(m, mb):
        assert mb["tag"] == "keep" and mb["temperature"].dim() == 0
        seen.append(mb["x"].shape[0])
        return F.cross_entropy(m(mb["x"]) / mb["temperature"], mb["y"])

    batch = {"x": x, "y": y, "tag": "keep", "temperature": torch.tensor(1.0)}
    MicroBatchStep(model, opt, loss_dict, micro_batch_size=3)(batch)
    assert seen == [3, 3, 1] and max_rel_err(model, g_ref) <= RTOL

    def loss_list(m, mb):
        return F.cross_entropy(m(mb[0]), mb[1])
    MicroBatchStep(model, opt, loss_list, micro_batch_size=2)([x, y, None])
    assert max_rel_err(model, g_ref) <= RTOL

    def loss_tensor(m, mb):  # a bare tensor batch: labels folded in as the last column
        return F.cross_entropy(m(mb[:, :8]), mb[:, 8].long())
    MicroBatchStep(model, opt, loss_tensor, micro_batch_size=4)(torch.cat([x, y[:, None]], 1))
    assert max_rel_err(model, g_ref) <= RTOL


# ----------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("batch, match", [
    (torch.tensor(3.0), "batch has no dim 0 to split"),
    ({"a": "text", "b": 3}, "batch has no tensor with a dim 0"),
    ((torch.zeros(4, 8), torch.zeros(3)),
     r"batch tensors must share their dim-0 size; batch\[0\] has 4 rows, batch\[1\] has 3"),
    ({"x": torch.zeros(0, 8)}, "batch is empty"),
])
def test_bad_batches_raise(batch, match):
    model = mlp()
    step = MicroBatchStep(model, torch.optim.SGD(model.parameters(), lr=0.1), ce_mean)
    with pytest.raises(ValueError, match="lowvram.train.MicroBatchStep: " + match):
        step(batch)


def test_bad_loss_fn_results_raise_and_leave_no_gradient():
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    before = [p.detach().clone() for p in model.parameters()]
    cases = [
        (lambda m, b: F.cross_entropy(m(b[0]), b[1], reduction="none"), ValueError,
         r"loss_fn must return a scalar loss .* shape \[3\]"),
        (lambda m, b: 1.0, TypeError, "loss_fn must return a scalar tensor"),
        (lambda m, b: (m(b[0]).sum(), torch.ones(2)), ValueError, "loss_fn's count must be a scalar"),
        (lambda m, b: (m(b[0]).sum(), 0), ValueError, "the counts loss_fn returned sum to 0"),
        (lambda m, b: m(b[0]).sum().detach(), ValueError, "loss_fn's loss does not require grad"),
    ]
    for fn, exc, match in cases:
        with pytest.raises(exc, match="lowvram.train.MicroBatchStep: " + match):
            MicroBatchStep(model, opt, fn, micro_batch_size=3)(data(7))
        assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    flip = iter([True, False] * 4)

    def mixed(m, b):
        s = F.cross_entropy(m(b[0]), b[1], reduction="sum")
        return (s, b[0].shape[0]) if next(flip) else s / b[0].shape[0]
    with pytest.raises(ValueError, match="same form for every one"):
        MicroBatchStep(model, opt, mixed, micro_batch_size=3)(data(7))


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(micro_batch_size=0), ValueError, "micro_batch_size must be >= 1, got 0"),
    (dict(micro_batch_size=-2), ValueError, "micro_batch_size must be >= 1, got -2"),
    (dict(micro_batch_size=2.5), TypeError, "micro_batch_size must be an int"),
    (dict(micro_batch_size="big"), ValueError, "micro_batch_size must be an int >= 1 or 'auto'"),
    (dict(micro_batch_size="auto"), ValueError, "needs budget="),
    (dict(micro_batch_size="auto", budget="lots"), ValueError, "budget 'lots' does not parse"),
    (dict(micro_batch_size="auto", budget="1.5 GiBs"), ValueError, "does not parse"),
    (dict(micro_batch_size="auto", budget=-5), ValueError, "positive"),
    (dict(micro_batch_size="auto", budget=[1]), TypeError, "budget must be bytes"),
    (dict(max_grad_norm=0.0), ValueError, "max_grad_norm must be > 0"),
    (dict(checkpoint=True), ValueError, "found no blocks"),
])
def test_bad_arguments_raise(kwargs, exc, match):
    model = mlp()
    with pytest.raises(exc, match="lowvram.train.MicroBatchStep: .*" + match):
        MicroBatchStep(model, torch.optim.SGD(model.parameters(), lr=0.1), ce_mean, **kwargs)


def test_parse_budget():
    assert parse_budget("1.5GiB") == 3 * 2 ** 29
    assert parse_budget("800MB") == 800_000_000
    assert parse_budget("512MiB") == 512 * MiB
    assert parse_budget("2G") == 2 * 2 ** 30
    assert parse_budget(" 64 kib ") == 65536
    assert parse_budget(123456) == 123456
    assert parse_budget("1000") == 1000


# ----------------------------------------------------------------------------- memory

class Block(nn.Module):
    def __init__(self, d, h):
        super().__init__()
        self.up, self.down = nn.Linear(d, h), nn.Linear(h, d)

    def forward(self, x):
        return x + self.down(F.gelu(self.up(x)))


class ActNet(nn.Module):
    """Activations dominate: ~8 MiB kept per sample (4 blocks x 2 x 128 x 2048
    floats), 0.5 MiB of parameters, few flops (d = 8)."""

    def __init__(self, d=8, h=2048, layers=4):
        super().__init__()
        self.blocks = nn.ModuleList(Block(d, h) for _ in range(layers))
        self.head = nn.Linear(d, 1)

    def forward(self, x):
        for b in self.blocks:
            x = b(x)
        return self.head(x).squeeze(-1)


def mse_loss(m, b):
    return ((m(b[0]) - b[1]) ** 2).mean()


def act_batch(n=16):
    g = torch.Generator().manual_seed(4)
    return torch.randn(n, 128, 8, generator=g), torch.randn(n, 128, generator=g)


def act_step(seed=0, **kw):
    torch.manual_seed(seed)
    model = ActNet()
    return model, MicroBatchStep(model, torch.optim.Adam(model.parameters(), lr=1e-3), mse_loss, **kw)


_vmhwm_mark = pytest.mark.skipif(not memory.reset_peak_rss(),
                                 reason="/proc/self/clear_refs cannot reset VmHWM here")


def needs_vmhwm(fn):
    """Peaks are the whole process's VmHWM: in a process that already ran
    hundreds of tests, freed-but-resident heap absorbs new tensors and hides
    part of a peak. So these tests run alone in a fresh interpreter (pytest on
    just this test, marked by LOWVRAM_TEST_CHILD), and the parent reports its
    result."""
    @functools.wraps(fn)
    def wrapper():
        if os.environ.get("LOWVRAM_TEST_CHILD") == fn.__name__:
            # a step without a budget leaves the allocator alone, one with a budget pins
            # its mmap threshold: pinned from the start, every step a test compares is
            # measured under the same setting
            lowvram.train._pin_mmap_threshold()
            return fn()
        env = dict(os.environ, LOWVRAM_TEST_CHILD=fn.__name__)
        r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider",
                            f"{os.path.abspath(__file__)}::{fn.__name__}"],
                           env=env, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, (r.stdout[-4000:], r.stderr[-2000:])
    return _vmhwm_mark(wrapper)


@needs_vmhwm
def test_checkpoint_lowers_the_measured_peak_and_keeps_gradients():
    batch = act_batch()
    gc.collect()
    peaks, grads = {}, {}
    for ck in (False, True):
        model, step = act_step(micro_batch_size=16, checkpoint=ck)
        step.optimizer.param_groups[0]["lr"] = 0.0  # step 2 sees the same weights
        step(batch)
        grads[ck] = [p.grad.clone() for p in model.parameters()]
        peaks[ck] = step(batch).peak_bytes  # optimizer state allocated: a steady step
        if ck:
            assert step.checkpointed == ["blocks.0", "blocks.1", "blocks.2", "blocks.3"]
    plain, ck = peaks[False], peaks[True]
    print(f"peak at 16 rows: {plain / MiB:.1f} MiB plain, {ck / MiB:.1f} MiB checkpointed")
    assert ck < plain - 48 * MiB, (plain / MiB, ck / MiB)
    assert max(rel_err(a, b) for a, b in zip(grads[True], grads[False])) <= RTOL


@_vmhwm_mark
def test_allocator_setting_only_for_steps_that_promise_memory():
    """The 1 MiB mmap threshold costs time (docs/training.md): a step without a
    budget or checkpointing leaves glibc's allocator alone; one with a budget
    pins it. A fresh interpreter, since the setting is process-wide."""
    code = ("import torch, lowvram.train as t\n"
            "m = torch.nn.Linear(2, 2); o = torch.optim.SGD(m.parameters(), lr=0.1)\n"
            "f = lambda m, b: m(b).sum()\n"
            "t.MicroBatchStep(m, o, f, micro_batch_size=2); print(t._MMAP_PINNED)\n"
            "t.MicroBatchStep(m, o, f, micro_batch_size=2, budget='64GiB'); "
            "print(t._MMAP_PINNED)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split() == ["False", "True"], r.stdout


def test_checkpoint_hf_decoder_layers_same_gradients():
    batch = _padded_batch([12, 5, 9, 12])
    model = _tiny_llama()
    _, g_ref = full_grads(model, hf_mean_loss, batch)
    step = MicroBatchStep(model, torch.optim.SGD(model.parameters(), lr=0.0), token_sum_loss,
                          micro_batch_size=3, checkpoint=True)
    assert step.checkpointed == ["model.layers.0", "model.layers.1"]
    step(batch)
    assert max_rel_err(model, g_ref) <= RTOL


def test_checkpoint_filter_and_state_dict_keys():
    torch.manual_seed(0)
    model = ActNet()
    keys = list(model.state_dict())
    names = checkpoint_(model, lambda name, mod: name == "blocks.1")
    assert names == ["blocks.1"] and list(model.state_dict()) == keys
    assert checkpoint_(model, lambda name, mod: name == "blocks.1") == ["blocks.1"]  # idempotent
    x, y = act_batch(2)
    with torch.no_grad():
        torch.testing.assert_close(model(x), ActNet.forward(model, x))


@needs_vmhwm
def test_grad_hooks_keep_the_peak_below_draining_after_backward():
    """8 Linear(1024, 1024): 32 MiB of parameters. Draining p.grad after each
    backward holds every micro-batch gradient beside the accumulators; the hooks
    hold one parameter's at a time (~28 MiB less)."""
    x = torch.randn(8, 4, 1024)
    peaks = {}
    for hooks in (False, True):
        torch.manual_seed(0)
        model = nn.Sequential(*[nn.Linear(1024, 1024) for _ in range(8)])
        step = MicroBatchStep(model, torch.optim.SGD(model.parameters(), lr=1e-3),
                              mse_loss, micro_batch_size=2, _grad_hooks=hooks)
        peaks.setdefault(hooks, []).append(max(step((x, x)).peak_bytes for _ in range(2)))
    print(f"peak: drain after backward {min(peaks[False]) / MiB:.1f} MiB, "
          f"hooks {max(peaks[True]) / MiB:.1f} MiB")
    assert max(peaks[True]) < min(peaks[False]) - 16 * MiB


@needs_vmhwm
def test_auto_keeps_every_measured_peak_under_the_budget():
    batch = act_batch()
    gc.collect()
    _, step1 = act_step(micro_batch_size=1)
    p1 = step1(batch).peak_bytes
    _, step16 = act_step(micro_batch_size=16)
    p16 = step16(batch).peak_bytes
    del step1, step16
    assert p16 > p1 + 64 * MiB  # activations dominate: there is something to choose
    budget = (p1 + p16) // 2
    model, step = act_step(micro_batch_size="auto", budget=budget)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an over-budget step warns: make it fail here
        outs = [step(batch) for _ in range(2)]
    print(f"p1 {p1 / MiB:.1f} MiB, p16 {p16 / MiB:.1f} MiB, budget {budget / MiB:.1f} MiB: "
          + ", ".join(f"{o.micro_batch_sizes} peak {o.peak_bytes / MiB:.1f}" for o in outs))
    for o in outs:
        assert o.peak_bytes <= budget and not o.over_budget
        assert sum(o.micro_batch_sizes) == 16  # the effective batch never changes
    assert outs[0].micro_batch_sizes[:2] == (1, 2)  # the search ran real micro-batches
    assert 1 <= outs[-1].micro_batch_size < 16
    assert outs[0].optimizer_state_bytes == 2 * sum(p.numel() * 4 for p in model.parameters()) \
        + 4 * len(list(model.parameters()))  # Adam: exp_avg, exp_avg_sq, step


@needs_vmhwm
def test_auto_budget_too_small_names_the_smallest_that_works():
    batch = act_batch(8)
    model, step = act_step(micro_batch_size="auto", budget="64MiB")
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(ValueError, match=r"lowvram.train.MicroBatchStep: budget 64.00 MiB .* "
                                         r"smallest budget that would work is about") as e:
        step(batch)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert all(p.grad is None for p in model.parameters())
    need = int(str(e.value).rsplit("budget=", 1)[1].rstrip(")"))
    model, step = act_step(micro_batch_size="auto", budget=need)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        outs = [step(batch) for _ in range(2)]
    assert all(o.peak_bytes <= need for o in outs), [o.peak_bytes for o in outs]


@needs_vmhwm
def test_over_budget_step_warns_and_shrinks_next_step():
    batch = act_batch()
    _, probe = act_step(micro_batch_size=2)
    p2 = probe(batch).peak_bytes
    model, step = act_step(micro_batch_size=16, budget=p2 + 8 * MiB)
    with pytest.warns(RuntimeWarning, match="over the budget .* micro_batch_size 16 -> "):
        out = step(batch)
    assert out.over_budget and step.micro_batch_size < 16
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # it may still be over: it shrinks again
        out = step(batch)
    assert sum(out.micro_batch_sizes) == 16 and max(out.micro_batch_sizes) < 16


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_auto_on_cuda_keeps_max_memory_allocated_under_the_budget():
    dev = torch.device("cuda")
    x, y = (t.to(dev) for t in act_batch())

    def make(**kw):
        torch.manual_seed(0)
        model = ActNet().to(dev)
        return model, MicroBatchStep(model, torch.optim.Adam(model.parameters()), mse_loss, **kw)
    p1 = max(make(micro_batch_size=1)[1]((x, y)).peak_bytes for _ in range(2))
    p16 = max(make(micro_batch_size=16)[1]((x, y)).peak_bytes for _ in range(2))
    budget = (p1 + p16) // 2
    _, step = make(micro_batch_size="auto", budget=budget)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        outs = [step((x, y)) for _ in range(3)]
    assert all(o.peak_bytes <= budget for o in outs) and 1 < outs[-1].micro_batch_size < 16


# ----------------------------------------------------------------------------- DDP

DDP_ROWS = (7, 5)  # rows of each rank's batch: unequal on purpose


def _ddp_batches():
    x, y = data(sum(DDP_ROWS), seed=11)
    tok = torch.randint(0, 2, (sum(DDP_ROWS), 3), generator=torch.Generator().manual_seed(12))
    tok[:, 0] = 1  # every sample has at least one counted token
    return x, y, tok


def _pair_loss(m, b):
    x, y, tok = b
    per = F.cross_entropy(m(x), y, reduction="none")[:, None] * tok  # "tokens" of each sample
    return per.sum(), tok.sum()


def _mean_loss3(m, b):
    return F.cross_entropy(m(b[0]), b[1])


def _ddp_worker(rank, outdir):
    import datetime
    import torch.distributed as dist
    from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook
    # The rendezvous store is a file, not a TCP server inside rank 0: once rank 0 was done
    # it could exit while rank 1 still talked to its store, and rank 1 aborted ("terminate
    # called without an active exception", seen once in CI). Gloo's own traffic is TCP on
    # loopback either way.
    dist.init_process_group("gloo", init_method="file://" + os.path.join(outdir, "store"),
                            rank=rank, world_size=2, timeout=datetime.timedelta(seconds=120))
    try:
        x, y, tok = _ddp_batches()
        lo = sum(DDP_ROWS[:rank])
        mine = (x[lo:lo + DDP_ROWS[rank]], y[lo:lo + DDP_ROWS[rank]], tok[lo:lo + DDP_ROWS[rank]])
        result = {}
        for name, fn in (("mean", _mean_loss3), ("pair", _pair_loss)):
            model = nn.parallel.DistributedDataParallel(mlp())
            reduces = []

            def counting_allreduce(state, bucket):
                reduces.append(1)
                return allreduce_hook(None, bucket)
            model.register_comm_hook(None, counting_allreduce)
            opt = torch.optim.SGD(model.parameters(), lr=0.1)
            out = MicroBatchStep(model, opt, fn, micro_batch_size=3)(mine)
            result[name] = dict(loss=out.loss, count=out.count, sizes=out.micro_batch_sizes,
                                reduces=len(reduces),
                                grads=[p.grad.clone() for p in model.module.parameters()],
                                params=[p.detach().clone() for p in model.module.parameters()])
        torch.save(result, os.path.join(outdir, f"rank{rank}.pt"))
        dist.barrier()  # neither rank tears gloo down while the other still uses it
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not (torch.distributed.is_available() and torch.distributed.is_gloo_available()),
                    reason="torch.distributed with gloo is unavailable")
def test_ddp_two_processes_equal_a_single_process_full_batch(tmp_path):
    import torch.multiprocessing as mp
    mp.spawn(_ddp_worker, args=(str(tmp_path),), nprocs=2, join=True)
    results = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    batch = _ddp_batches()
    for name, fn in (("mean", _mean_loss3), ("pair", _pair_loss)):
        model = mlp()
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        model.zero_grad()
        out = fn(model, batch)
        loss = out[0] / out[1] if isinstance(out, tuple) else out
        loss.backward()
        opt.step()
        for r, res in enumerate(results):
            got = res[name]
            assert got["sizes"] == ((3, 3, 1) if r == 0 else (3, 2))
            assert got["reduces"] == 1  # one all-reduce (one bucket): the rest ran in no_sync
            assert got["loss"] == pytest.approx(float(loss.detach()), rel=1e-6), (name, r)
            for a, b in zip(got["grads"], model.parameters()):
                assert rel_err(a, b.grad) <= RTOL, (name, r)
            for a, b in zip(got["params"], model.parameters()):
                assert rel_err(a, b.detach()) <= RTOL, (name, r)
