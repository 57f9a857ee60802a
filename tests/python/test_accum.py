"""Tests of torch.ops.lowvram.grad_accum_ (contract: ops/include/lowvram/accum.h):
acc[i] = fmaf(scale, float(grads[i]), acc[i]) elementwise, one rounding.

Oracles: a float64 computation of the correctly rounded fused multiply-add
(the product exact in float64, the sum by TwoSum, rounded to odd in float64,
then to float32: this equals one rounding of scale * g + acc); a float64 sum of
many micro-batch gradients (fp32 accumulation must beat bf16 accumulation);
the op itself across thread counts and CPU variants (identical bits);
torch.library.opcheck; eager vs torch.compile; the shim's error messages.
CUDA tests compare the device with the CPU bit for bit and skip without a
device.
"""
import itertools

import pytest
import torch

import lowvram
from conftest import CUDA, assert_same_bits, needs_cuda

ISAS = [i for i in ("ref", "avx2", "avx512") if lowvram.cpu_isa_supported(i)]
DTYPES = [torch.float32, torch.bfloat16, torch.float16]
# bf16 gradients of 64 micro-batches: accumulating in float32 must be at least
# this many times closer to the float64 sum than accumulating in bfloat16
# (measured here: ~150x; bf16 keeps 8 bits, fp32 24).
FP32_VS_BF16_MIN_GAIN = 20.0


@pytest.fixture(autouse=True)
def restore_isa_and_threads():
    isa, threads = lowvram.cpu_isa(), torch.get_num_threads()
    yield
    lowvram.set_cpu_isa(isa)
    torch.set_num_threads(threads)


def fma_reference(acc, g, scale):
    """fmaf(scale, g, acc) correctly rounded to float32, computed in float64
    without any fused operation: s * g is exact in float64 (24 + 24 bits);
    TwoSum gives t + err == s * g + acc exactly; rounding t to odd when err != 0
    keeps the information a second rounding (53 -> 24 bits) needs."""
    p = torch.tensor(scale, dtype=torch.float32).double() * g.double()
    a = acc.double()
    t = p + a
    bp = t - a
    err = (p - bp) + (a - (t - bp))
    even = (t.view(torch.int64) & 1) == 0
    fix = torch.isfinite(t) & (err != 0) & even
    toward = torch.where(err > 0, torch.full_like(t, float("inf")), torch.full_like(t, -float("inf")))
    t = torch.where(fix, torch.nextafter(t, toward), t)
    return t.float()


def make_list(shapes, dtypes, seed=0, specials=False, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    accs, grads = [], []
    for shape, dt in zip(shapes, itertools.cycle(dtypes)):
        a = torch.randn(shape, generator=g)
        x = torch.randn(shape, generator=g) * 3
        if specials and a.numel():
            pool = torch.tensor([0.0, -0.0, float("inf"), -float("inf"), float("nan"), 3.4e38,
                                 -3.4e38, 1e-45, -1e-40, 1.17e-38, 65504.0])
            for t in (a, x):
                idx = torch.randint(0, t.numel(), (max(1, t.numel() // 8),), generator=g)
                t.view(-1)[idx] = pool[torch.randint(0, len(pool), idx.shape, generator=g)]
        accs.append(a.to(device))
        grads.append(x.to(dt).to(device))
    return accs, grads


SHAPES = [(0,), (1,), (3, 5), (17,), (), (64, 33), (1025,), (2, 0, 3), (300, 301)]


# ---------------------------------------------------------------- vs the float64 reference


def test_reference_one_rounding_hand_computed():
    # (1 + 2^-12)^2 - 1 = 2^-11 + 2^-24 with one rounding, 2^-11 with two
    acc, g = torch.tensor([-1.0]), torch.tensor([1.0 + 2 ** -12])
    assert fma_reference(acc, g, 1.0 + 2 ** -12).item() == 2 ** -11 + 2 ** -24
    lowvram.ops.grad_accum_([acc], [g], 1.0 + 2 ** -12)
    assert acc.item() == 2 ** -11 + 2 ** -24


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("scale", [1.0, -0.5, 1 / 3, 1 / 4096, 1e-30, 3e38, 0.0])
@pytest.mark.parametrize("specials", [False, True])
def test_equals_float64_reference(isa, scale, specials):
    lowvram.set_cpu_isa(isa)
    accs, grads = make_list(SHAPES, DTYPES, seed=1, specials=specials)
    want = [fma_reference(a, g, scale) for a, g in zip(accs, grads)]
    lowvram.ops.grad_accum_(accs, grads, scale)
    for i, (w, a) in enumerate(zip(want, accs)):
        assert_same_bits(a, w, f"tensor {i} ({grads[i].dtype})")


def test_nan_inf_propagate():
    acc = torch.tensor([1.0, float("inf"), float("-inf"), 0.0, float("nan"), 3e38])
    g = torch.tensor([float("nan"), -1.0, float("inf"), float("inf"), 0.0, 3e38])
    lowvram.ops.grad_accum_([acc], [g], 2.0)
    assert torch.isnan(acc[0]) and acc[1] == float("inf") and torch.isnan(acc[2])
    assert acc[3] == float("inf") and torch.isnan(acc[4]) and acc[5] == float("inf")


def test_bf16_gradients_accumulate_in_fp32():
    # 64 micro-batch gradients in bf16, mean-scaled: fp32 accumulators stay far
    # closer to the float64 sum than a bf16 accumulator does.
    gen = torch.Generator().manual_seed(3)
    n, steps = 20000, 64
    grads = [torch.randn(n, generator=gen).bfloat16() for _ in range(steps)]
    exact = torch.zeros(n, dtype=torch.float64)
    acc = torch.zeros(n)
    acc_bf16 = torch.zeros(n, dtype=torch.bfloat16)
    for g in grads:
        exact += g.double() / steps
        lowvram.ops.grad_accum_([acc], [g], 1 / steps)
        acc_bf16 += g / steps
    err_fp32 = (acc.double() - exact).abs().max().item()
    err_bf16 = (acc_bf16.double() - exact).abs().max().item()
    assert err_fp32 < 1e-6, err_fp32
    assert err_bf16 / err_fp32 > FP32_VS_BF16_MIN_GAIN, (err_fp32, err_bf16)


def test_repeated_accumulation_equals_reference_step_by_step():
    accs, grads = make_list([(1000,), (77, 3)], [torch.bfloat16, torch.float16], seed=4)
    want = [a.clone() for a in accs]
    for k in range(10):
        s = 1 / (k + 3)
        want = [fma_reference(w, g, s) for w, g in zip(want, grads)]
        lowvram.ops.grad_accum_(accs, grads, s)
    for w, a in zip(want, accs):
        assert_same_bits(a, w)


# ---------------------------------------------------------------- properties


def test_threads_and_isas_give_identical_bits():
    # enough elements that 2 threads split the list inside tensors (grain 64 Ki)
    shapes = [(5,), (70000,), (3, 0), (123457,), (1,), (65536 * 2 + 3,)]
    base_accs, grads = make_list(shapes, DTYPES, seed=5, specials=True)
    results = []
    for isa, threads in itertools.product(ISAS, (1, 2)):
        lowvram.set_cpu_isa(isa)
        torch.set_num_threads(threads)
        accs = [a.clone() for a in base_accs]
        lowvram.ops.grad_accum_(accs, grads, 0.1)
        results.append((isa, threads, accs))
    for isa, threads, accs in results[1:]:
        for a, b in zip(accs, results[0][2]):
            assert_same_bits(a, b, f"{isa}/{threads} vs {results[0][0]}/{results[0][1]}")


def test_strided_gradients_equal_contiguous():
    acc = torch.randn(40, 30)
    g = torch.randn(30, 40).T  # strided view
    want = acc.clone()
    lowvram.ops.grad_accum_([want], [g.contiguous()], 0.7)
    lowvram.ops.grad_accum_([acc], [g], 0.7)
    assert_same_bits(acc, want)
    acc2 = torch.randn(8)
    g2 = torch.randn(16).bfloat16()[::2]
    want2 = fma_reference(acc2, g2, 2.0)
    lowvram.ops.grad_accum_([acc2], [g2], 2.0)
    assert_same_bits(acc2, want2)


def test_accumulator_may_be_its_own_gradient():
    a = torch.randn(100)
    want = fma_reference(a, a, 2.0)
    lowvram.ops.grad_accum_([a], [a], 2.0)
    assert_same_bits(a, want)


def test_empty_lists_are_a_no_op():
    lowvram.ops.grad_accum_([], [], 1.0)
    accs, grads = make_list([(0,), (2, 0)], DTYPES)
    lowvram.ops.grad_accum_(accs, grads, 1.0)


def test_wrapper_takes_parameter_lists():
    m = torch.nn.Linear(4, 3)
    accs = [torch.zeros_like(p) for p in m.parameters()]
    grads = tuple(torch.ones_like(p) for p in m.parameters())
    lowvram.ops.grad_accum_(accs, grads, 0.25)
    assert all(bool((a == 0.25).all()) for a in accs)


def test_compile_fullgraph_equals_eager():
    def step(accs, grads, s):
        torch.ops.lowvram.grad_accum_(accs, grads, s)
        return [a * 2 for a in accs]

    accs, grads = make_list([(33,), (4, 5)], [torch.bfloat16, torch.float32], seed=6)
    eager_accs = [a.clone() for a in accs]
    want = step(eager_accs, grads, 0.5)
    got = torch.compile(step, fullgraph=True)(accs, grads, 0.5)
    for w, g, ea, a in zip(want, got, eager_accs, accs):
        assert_same_bits(g, w)
        assert_same_bits(a, ea)  # the mutation reached the caller's tensors


# ---------------------------------------------------------------- opcheck


def _opcheck_samples(device="cpu"):
    samples = []
    accs, grads = make_list(SHAPES, DTYPES, seed=7, device=device)
    samples.append(([a.clone() for a in accs], grads, 0.5))
    accs, grads = make_list([(16,), (3, 4)], [torch.bfloat16], seed=8, device=device)
    samples.append((accs, grads, -2.0))
    accs, grads = make_list([(10, 6)], [torch.float16], seed=9, device=device)
    samples.append((accs, [grads[0].T.contiguous().T], 1.0))  # strided gradient
    return samples


@pytest.mark.parametrize("i", range(3))
def test_opcheck(i):
    accs, grads, s = _opcheck_samples()[i]
    torch.library.opcheck(torch.ops.lowvram.grad_accum_.default, (accs, grads, s))


@needs_cuda
@pytest.mark.parametrize("i", range(3))
def test_opcheck_cuda(i):
    accs, grads, s = _opcheck_samples("cuda")[i]
    torch.library.opcheck(torch.ops.lowvram.grad_accum_.default, (accs, grads, s))


# ---------------------------------------------------------------- bad input


def _bad_cases():
    a, b = torch.zeros(4), torch.zeros(4)
    x = torch.zeros(20)
    G = torch.ops.lowvram.grad_accum_
    return [
        ("acc and grads must be lists of the same length", lambda: G([a], [b, b], 1.0)),
        (r"acc\[0\] must be float32, got", lambda: G([a.double()], [b], 1.0)),
        (r"acc\[1\] must be float32, got", lambda: G([a, b.bfloat16()], [a.clone(), b], 1.0)),
        (r"acc\[0\] must be contiguous", lambda: G([torch.zeros(4, 4).T], [torch.zeros(4, 4)], 1.0)),
        (r"grads\[0\] must be float32, bfloat16 or float16", lambda: G([a], [b.double()], 1.0)),
        (r"grads\[0\] must be float32, bfloat16 or float16", lambda: G([a], [b.int()], 1.0)),
        (r"grads\[0\] must have acc\[0\]'s shape", lambda: G([a], [torch.zeros(5)], 1.0)),
        (r"grads\[0\] must have acc\[0\]'s shape", lambda: G([a], [torch.zeros(2, 2)], 1.0)),
        ("scale must be finite", lambda: G([a], [b], float("nan"))),
        ("scale must be finite", lambda: G([a], [b], float("inf"))),
        ("scale must be finite", lambda: G([a], [b], 1e39)),  # inf as float32
        (r"acc\[0\] overlaps acc\[1\]", lambda: G([x[:10], x[5:15]], [a.new_zeros(10)] * 2, 1.0)),
        (r"acc\[\d\] overlaps (acc|grads)\[\d\]", lambda: G([x[:10], a], [a.new_zeros(10), x[8:12]], 1.0)),
        (r"acc\[0\] overlaps grads\[0\]", lambda: G([x[:10]], [x[1:11]], 1.0)),
    ]


@pytest.mark.parametrize("i", range(14))
def test_bad_input_raises_with_op_and_argument(i):
    msg, fn = _bad_cases()[i]
    with pytest.raises((RuntimeError, ValueError, TypeError), match=rf"lowvram\.grad_accum_: {msg}"):
        fn()


def test_bad_input_leaves_accumulators_untouched():
    a = torch.ones(4)
    with pytest.raises(TypeError):
        torch.ops.lowvram.grad_accum_([a, torch.ones(4)], [torch.ones(4), torch.ones(4).int()], 1.0)
    assert bool((a == 1).all())


def test_device_mismatch_raises():
    a = torch.zeros(4)
    other = "cuda" if CUDA else "meta"
    with pytest.raises(RuntimeError, match=r"lowvram\.grad_accum_: (grads|acc)\[\d\] must be on the same device"):
        torch.ops.lowvram.grad_accum_([a, torch.zeros(3, device=other)], [a.clone(), torch.zeros(3)], 1.0)
    with pytest.raises(RuntimeError, match=r"lowvram\.grad_accum_: grads\[0\] must be on the same device"):
        torch.ops.lowvram.grad_accum_([a], [torch.zeros(4, device=other)], 1.0)


# ---------------------------------------------------------------- CUDA


@needs_cuda
@pytest.mark.parametrize("specials", [False, True])
def test_cuda_equals_cpu_bits(specials):
    shapes = SHAPES + [(70000,), (5000, 3), (1,)]
    accs, grads = make_list(shapes, DTYPES, seed=10, specials=specials)
    dacc = [a.cuda() for a in accs]
    lowvram.ops.grad_accum_(dacc, [g.cuda() for g in grads], 0.3)
    lowvram.ops.grad_accum_(accs, grads, 0.3)
    for i, (a, d) in enumerate(zip(accs, dacc)):
        assert_same_bits(d.cpu(), a, f"tensor {i}")


@needs_cuda
def test_cuda_many_small_tensors_one_launch():
    # more tensors than threads per block, many crossing a block's chunk
    shapes = [(i % 37,) for i in range(1000)] + [(4096 * 3 + 1,)]
    accs, grads = make_list(shapes, [torch.bfloat16, torch.float32, torch.float16], seed=11)
    dacc = [a.cuda() for a in accs]
    lowvram.ops.grad_accum_(dacc, [g.cuda() for g in grads], -1.5)
    want = [fma_reference(a, g, -1.5) for a, g in zip(accs, grads)]
    for i, (w, d) in enumerate(zip(want, dacc)):
        assert_same_bits(d.cpu(), w, f"tensor {i}")
