"""The qgemm family's ops (quantize_int8, quantize_weight, qlinear,
qlinear.out, qlinear_grad_input) on CPU, and on CUDA when a device exists.

Oracles: lowvram.reference (the contract in PyTorch: bit-exact for codes,
scales and qlinear's floats; to float32 rounding for the gradient's fmaf
chain), nn.Linear in float64 (SQNR), float64 finite differences (gradcheck
on the straight-through float function), torch.library.opcheck, and
properties (any thread count and any CPU variant give the same bits).
"""
import itertools

import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st

import lowvram
from lowvram import reference as ref
from conftest import CUDA, assert_same_bits, needs_cuda, sqnr_db

# SQNR of qlinear against a float64 Linear on Gaussian data (int8 per-row x
# per-channel: ~35-40 dB measured here); below this something is broken.
SQNR_MIN_DB = 30.0
ISAS = [i for i in ("ref", "avx2", "avx512") if lowvram.cpu_isa_supported(i)]
DTYPES = [torch.float32, torch.bfloat16, torch.float16]


@pytest.fixture(autouse=True)
def restore_isa_and_threads():
    isa, threads = lowvram.cpu_isa(), torch.get_num_threads()
    yield
    lowvram.set_cpu_isa(isa)
    torch.set_num_threads(threads)


def make(M, K, N, dtype=torch.float32, bias=True, group_size=-1, smooth=False, seed=0,
         device="cpu"):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(M, K, generator=g).to(dtype)
    w = torch.randn(N, K, generator=g) / K ** 0.5
    qw, ws = ref.quantize_weight(w, group_size)
    b = torch.randn(N, generator=g).to(dtype) if bias else None
    a = (torch.rand(K, generator=g) + 0.5) if smooth else None
    mv = lambda t: None if t is None else t.to(device)  # noqa: E731
    return mv(x), w, mv(qw), mv(ws), mv(b), mv(a)


# ---------------------------------------------------------------- reference itself


def test_reference_quantize_hand_computed():
    # absmax 2 -> scale 2/127, inv 63.5: 1*63.5 = 63.5 -> 64 (ties to even),
    # -2 -> -127, 0.5*63.5 = 31.75 -> 32
    q, s = ref.quantize_int8(torch.tensor([[1.0, -2.0, 0.5]]))
    assert q.tolist() == [[64, -127, 32]]
    assert s.item() == torch.tensor(2.0 / 127, dtype=torch.float32).item()
    # 0.5 * 127 = 63.5 -> 64 and 1.5/3 * 127 = 63.5 -> 64; 2.5 * (127/2.5)...
    q, _ = ref.quantize_int8(torch.tensor([[0.5, 1.0, -0.5]]))
    assert q.tolist() == [[64, 127, -64]]
    # all-zero row -> zeros, scale 0; NaN row -> zeros, scale NaN
    q, s = ref.quantize_int8(torch.tensor([[0.0, 0.0], [float("nan"), 1.0]]))
    assert q.tolist() == [[0, 0], [0, 0]] and s[0].item() == 0.0 and torch.isnan(s[1])


def test_reference_qlinear_matches_integer_math():
    x, _, qw, ws, b, _ = make(5, 70, 9)
    q, xs = ref.quantize_int8(x)
    acc = q.long() @ qw.long().T
    expect = ((acc.double() * ws.double()) * xs.double()[:, None] + b.double())
    assert torch.allclose(ref.qlinear(x, qw, ws, b).double(), expect, rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------- exactness vs reference


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("M,K,N", [(1, 64, 16), (3, 17, 5), (17, 65, 33), (33, 1025, 31),
                                   (64, 256, 128)])
@pytest.mark.parametrize("bias", [True, False])
def test_qlinear_equals_reference(dtype, M, K, N, bias):
    x, _, qw, ws, b, _ = make(M, K, N, dtype, bias)
    assert_same_bits(lowvram.ops.qlinear(x, qw, ws, b), ref.qlinear(x, qw, ws, b))


@pytest.mark.parametrize("group_size", [64, 128])
@pytest.mark.parametrize("smooth", [False, True])
def test_qlinear_groups_and_act_scale_equal_reference(group_size, smooth):
    x, w, _, _, b, a = make(7, 256, 24, smooth=smooth)
    qw, ws = lowvram.ops.quantize_weight(w, group_size)
    rqw, rws = ref.quantize_weight(w, group_size)
    assert torch.equal(qw, rqw) and torch.equal(ws, rws)
    assert_same_bits(lowvram.ops.qlinear(x, qw, ws, b, a), ref.qlinear(x, qw, ws, b, a))


@pytest.mark.parametrize("dtype", DTYPES)
def test_quantize_int8_equals_reference(dtype):
    x = torch.randn(4, 3, 100).to(dtype)
    a = torch.rand(100) + 0.5
    for act in (None, a):
        q, s = lowvram.ops.quantize_int8(x, act)
        rq, rs = ref.quantize_int8(x, act)
        assert q.shape == (4, 3, 100) and s.shape == (4, 3)
        assert torch.equal(q, rq)
        assert_same_bits(s, rs)


def test_edge_rows():
    K = 40
    rows = [
        torch.zeros(K),
        torch.full((K,), 3.0),
        torch.full((K,), -3.4e38),
        torch.tensor([3.4e38, -3.4e38] * (K // 2)),
        torch.full((K,), 1e-39),                # subnormals -> zero row
        torch.full((K,), 2.0 ** -101),          # below the 2^-100 threshold
        torch.full((K,), 2.0 ** -99),           # above it
        torch.randn(K),
    ]
    x = torch.stack(rows)
    nan_row = torch.randn(K); nan_row[5] = float("nan")
    inf_row = torch.randn(K); inf_row[7] = float("inf")
    x = torch.cat([x, nan_row[None], inf_row[None]])
    _, _, qw, ws, b, _ = make(1, K, 12)
    y = lowvram.ops.qlinear(x, qw, ws, b)
    assert_same_bits(y, ref.qlinear(x, qw, ws, b))
    assert torch.isnan(y[-2:]).all(), "NaN/Inf rows must give NaN rows"
    # the other rows stay finite (the ±FLT_MAX rows 2-3 may overflow, as a float Linear does)
    assert torch.isfinite(y[[0, 1, 4, 5, 6, 7]]).all(), "other rows must stay finite"
    assert torch.equal(y[0], b) and torch.equal(y[4], b) and torch.equal(y[5], b)
    q, s = lowvram.ops.quantize_int8(x)
    assert (q[4] == 0).all() and s[4] == 0 and (q[6] != 0).all() and s[6] > 0


def test_noncontiguous_inputs():
    x, _, qw, ws, b, _ = make(6, 128, 20)
    xt = torch.randn(128, 6).T  # column-strided
    assert_same_bits(lowvram.ops.qlinear(xt, qw, ws, b), ref.qlinear(xt.contiguous(), qw, ws, b))
    xs = torch.randn(6, 256)[:, ::2]  # strided columns
    assert_same_bits(lowvram.ops.qlinear(xs, qw, ws, b), ref.qlinear(xs.contiguous(), qw, ws, b))
    xr = torch.randn(12, 128)[::2]  # strided rows: used as a view
    assert_same_bits(lowvram.ops.qlinear(xr, qw, ws, b), ref.qlinear(xr.contiguous(), qw, ws, b))
    qwt = qw.T.contiguous().T  # column-major weight
    assert_same_bits(lowvram.ops.qlinear(x, qwt, ws, b), ref.qlinear(x, qw, ws, b))


def test_leading_dims_and_empty_rows():
    x, _, qw, ws, b, _ = make(24, 64, 8)
    x3 = x.reshape(2, 3, 4, 64)
    y = lowvram.ops.qlinear(x3, qw, ws, b)
    assert y.shape == (2, 3, 4, 8)
    assert_same_bits(y.reshape(24, 8), ref.qlinear(x, qw, ws, b))
    # zero rows behave as nn.Linear does: an empty output
    assert lowvram.ops.qlinear(torch.empty(0, 64), qw, ws, b).shape == (0, 8)
    x1 = x[0]
    assert_same_bits(lowvram.ops.qlinear(x1, qw, ws, b), ref.qlinear(x1[None], qw, ws, b)[0])


def test_out_overload():
    x, _, qw, ws, b, _ = make(5, 64, 8)
    out = torch.empty(5, 8)
    r = lowvram.ops.qlinear(x, qw, ws, b, out=out)
    assert r.data_ptr() == out.data_ptr()
    assert_same_bits(out, ref.qlinear(x, qw, ws, b))
    out_t = torch.empty(8, 5).T  # non-contiguous out
    lowvram.ops.qlinear(x, qw, ws, b, out=out_t)
    assert_same_bits(out_t, ref.qlinear(x, qw, ws, b))
    with pytest.raises(ValueError, match=r"lowvram\.qlinear: out must have shape"):
        lowvram.ops.qlinear(x, qw, ws, b, out=torch.empty(3, 3))
    with pytest.raises(TypeError, match=r"lowvram\.qlinear: out must have x's dtype"):
        lowvram.ops.qlinear(x, qw, ws, b, out=torch.empty(5, 8, dtype=torch.float64))


# ---------------------------------------------------------------- properties


@pytest.mark.parametrize("M", [1, 7, 64])
def test_threads_and_isas_give_identical_bits(M):
    x, _, qw, ws, b, a = make(M, 1025, 300, smooth=True)
    gy = torch.randn(M, 300)
    results = []
    for isa, threads in itertools.product(ISAS, (1, 2)):
        lowvram.set_cpu_isa(isa)
        torch.set_num_threads(threads)
        results.append((isa, threads, lowvram.ops.qlinear(x, qw, ws, b, a),
                        lowvram.ops.qlinear_grad_input(gy, qw, ws, a),
                        lowvram.ops.quantize_int8(x, a)))
    first = results[0]
    for isa, threads, y, gx, (q, s) in results[1:]:
        tag = f"{isa}/{threads} threads vs {first[0]}/{first[1]}"
        assert_same_bits(y, first[2], tag)
        assert_same_bits(gx, first[3], tag)
        assert torch.equal(q, first[4][0]), tag
        assert_same_bits(s, first[4][1], tag)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_sqnr_vs_float64_linear(dtype):
    x, w, qw, ws, b, _ = make(64, 512, 256, dtype)
    y = lowvram.ops.qlinear(x, qw, ws, b)
    exact = x.double() @ w.double().T + b.double()
    db = sqnr_db(exact, y)
    assert db >= SQNR_MIN_DB - (6 if dtype == torch.bfloat16 else 0), f"SQNR {db:.1f} dB"


def test_k_limit_is_exact():
    # the largest K with every product at its extreme: the int32 sum must be exact
    K = ref.K_MAX
    x = torch.full((1, K), -1.0)
    qw = torch.full((2, K), -128, dtype=torch.int8)
    qw[1] = 127
    ws = torch.ones(2)
    y = lowvram.ops.qlinear(x, qw, ws)  # codes -127: sums 127*128*K and -127*127*K
    xs = 1.0 / 127
    expect = torch.tensor([[float(127 * 128 * K), float(-127 * 127 * K)]]) * torch.tensor(xs)
    assert_same_bits(y, expect)
    with pytest.raises(ValueError, match=r"lowvram\.qlinear: K \(in-features\) must be <= 131072"):
        lowvram.ops.qlinear(torch.ones(1, K + 1), torch.zeros(1, K + 1, dtype=torch.int8),
                            torch.ones(1))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lead=st.lists(st.integers(1, 4), min_size=0, max_size=2),
       K=st.integers(1, 200), N=st.integers(1, 70),
       dtype=st.sampled_from(DTYPES), bias=st.booleans(), smooth=st.booleans(),
       transpose=st.booleans(), seed=st.integers(0, 2 ** 16))
def test_hypothesis_qlinear(lead, K, N, dtype, bias, smooth, transpose, seed):
    g = torch.Generator().manual_seed(seed)
    shape = (*lead, K)
    if transpose and lead:
        x = torch.randn(*shape[:-2], K, shape[-2], generator=g).transpose(-1, -2).to(dtype)
    else:
        x = torch.randn(*shape, generator=g).to(dtype)
    w = torch.randn(N, K, generator=g)
    qw, ws = lowvram.ops.quantize_weight(w)
    b = torch.randn(N, generator=g) if bias else None
    a = torch.rand(K, generator=g) + 0.25 if smooth else None
    y = lowvram.ops.qlinear(x, qw, ws, b, a)
    assert y.shape == (*lead, N) and y.dtype == dtype
    assert_same_bits(y, ref.qlinear(x.contiguous(), qw, ws, b, a))
    gy = torch.randn(*lead, N, generator=g).to(dtype)
    gx = lowvram.ops.qlinear_grad_input(gy, qw, ws, a)
    r = ref.qlinear_grad_input(gy, qw, ws, a)
    tol = 1e-5 if dtype == torch.float32 else 1e-2
    torch.testing.assert_close(gx.float(), r.float(), rtol=tol, atol=tol)


# ---------------------------------------------------------------- gradients


@pytest.mark.parametrize("group_size,smooth", [(-1, False), (-1, True), (64, False)])
def test_grad_input_equals_reference(group_size, smooth):
    _, w, _, _, _, a = make(1, 128, 40, smooth=smooth)
    qw, ws = ref.quantize_weight(w, group_size)
    gy = torch.randn(9, 40)
    gx = lowvram.ops.qlinear_grad_input(gy, qw, ws, a)
    torch.testing.assert_close(gx, ref.qlinear_grad_input(gy, qw, ws, a), rtol=1e-6, atol=1e-6)
    # and the float64 product with the dequantized weight (independent of the fmaf chain)
    wd = ref.dequantize_weight(qw, ws, a, dtype=torch.float64)
    torch.testing.assert_close(gx.double(), gy.double() @ wd, rtol=1e-5, atol=1e-5)


def test_gradcheck_straight_through_function():
    # finite differences in float64 on the float function qlinear's backward implements
    x, _, qw, ws, b, a = make(3, 16, 5, smooth=True)
    xd = x.double().requires_grad_()
    bd = b.double().requires_grad_()
    assert torch.autograd.gradcheck(lambda x_, b_: ref.linear_ste(x_, qw, ws, b_, a), (xd, bd))


@pytest.mark.parametrize("smooth", [False, True])
def test_autograd_matches_straight_through_gradient(smooth):
    x, _, qw, ws, b, a = make(4, 96, 24, smooth=smooth)
    x = x.reshape(2, 2, 96).requires_grad_()
    b = b.clone().requires_grad_()
    y = lowvram.ops.qlinear(x, qw, ws, b, a)
    gy = torch.randn_like(y)
    y.backward(gy)
    xd = x.detach().double().requires_grad_()
    bd = b.detach().double().requires_grad_()
    ref.linear_ste(xd, qw, ws, bd, a).backward(gy.double())
    torch.testing.assert_close(x.grad.double(), xd.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(b.grad.double(), bd.grad, rtol=1e-5, atol=1e-5)


def test_frozen_scales_raise_on_backward():
    x, _, qw, ws, b, _ = make(2, 64, 8)
    ws = ws.clone().requires_grad_()
    y = lowvram.ops.qlinear(x.requires_grad_(), qw, ws, b)
    with pytest.raises(RuntimeError, match=r"lowvram\.qlinear: wscale and act_scale are frozen"):
        y.sum().backward()


# ---------------------------------------------------------------- opcheck


def _opcheck_samples(device="cpu"):
    x, w, qw, ws, b, a = make(5, 128, 16, smooth=True, device=device)
    qwg, wsg = ref.quantize_weight(w, 64)
    qwg, wsg = qwg.to(device), wsg.to(device)
    xg = x.clone().requires_grad_()
    bg = b.clone().requires_grad_()
    return [
        (torch.ops.lowvram.quantize_int8.default, (x,), {}),
        (torch.ops.lowvram.quantize_int8.default, (x.bfloat16(), a), {}),
        (torch.ops.lowvram.quantize_weight.default, (w.to(device),), {}),
        (torch.ops.lowvram.quantize_weight.default, (w.to(device), 64), {}),
        (torch.ops.lowvram.qlinear.default, (xg, qw, ws, bg, a), {}),
        (torch.ops.lowvram.qlinear.default, (x.half(), qwg, wsg, None, None), {}),
        (torch.ops.lowvram.qlinear.default, (torch.randn(128, 5, device=device).T, qw, ws), {}),
        (torch.ops.lowvram.qlinear.out, (x, qw, ws, b, a), {"out": torch.empty(5, 16, device=device)}),
        (torch.ops.lowvram.qlinear_grad_input.default, (torch.randn(5, 16, device=device), qw, ws, a), {}),
    ]


@pytest.mark.parametrize("i", range(9))
def test_opcheck(i):
    op, args, kwargs = _opcheck_samples()[i]
    torch.library.opcheck(op, args, kwargs)


@needs_cuda
@pytest.mark.parametrize("i", range(9))
def test_opcheck_cuda(i):
    op, args, kwargs = _opcheck_samples("cuda")[i]
    torch.library.opcheck(op, args, kwargs)


# ---------------------------------------------------------------- bad input


def _bad_cases():
    x, _, qw, ws, b, _ = make(4, 64, 8)
    Q = torch.ops.lowvram.qlinear
    G = torch.ops.lowvram.qlinear_grad_input
    W = torch.ops.lowvram.quantize_weight
    I8 = torch.ops.lowvram.quantize_int8
    return [
        ("qlinear", "x must be float32, bfloat16 or float16", lambda: Q(x.double(), qw, ws)),
        ("qlinear", "x must be float32, bfloat16 or float16", lambda: Q(x.int(), qw, ws)),
        ("qlinear", "qweight must be int8", lambda: Q(x, qw.float(), ws)),
        ("qlinear", "qweight must be 2-D", lambda: Q(x, qw[0], ws)),
        ("qlinear", "qweight must not be empty", lambda: Q(x[:, :0], qw[:, :0], ws)),
        ("qlinear", "qweight must not be empty", lambda: Q(x, qw[:0], ws[:0])),
        ("qlinear", "wscale must be float32", lambda: Q(x, qw, ws.double())),
        ("qlinear", r"wscale must be \[N\]", lambda: Q(x, qw, ws[:3])),
        ("qlinear", r"wscale \[N, G\] needs groups", lambda: Q(x, qw, torch.ones(8, 3))),
        ("qlinear", "x's last dimension must be K", lambda: Q(x[:, :32], qw, ws)),
        ("qlinear", "x must have at least 1 dimension", lambda: Q(torch.tensor(1.0), qw, ws)),
        ("qlinear", r"bias must be \[N\]", lambda: Q(x, qw, ws, b[:3])),
        ("qlinear", "bias must be a float tensor", lambda: Q(x, qw, ws, b.int())),
        ("qlinear", r"act_scale must be \[K\]", lambda: Q(x, qw, ws, None, torch.ones(3))),
        ("qlinear_grad_input", "grad_y's last dimension must be N", lambda: G(x, qw, ws)),
        ("qlinear_grad_input", "grad_y must be float32", lambda: G(x.double(), qw, ws)),
        ("quantize_weight", "w must be 2-D", lambda: W(x[0])),
        ("quantize_weight", "group_size must be -1", lambda: W(x, 3)),
        ("quantize_weight", "w must not be empty", lambda: W(x[:0])),
        ("quantize_int8", "x must be float32", lambda: I8(qw)),
        ("quantize_int8", r"x's last dimension \(K\) must be >= 1", lambda: I8(x[:, :0])),
    ]


@pytest.mark.parametrize("i", range(21))
def test_bad_input_raises_with_op_and_argument(i):
    op, msg, fn = _bad_cases()[i]
    with pytest.raises((RuntimeError, ValueError, TypeError), match=rf"lowvram\.{op}: {msg}"):
        fn()


def test_device_mismatch_raises():
    if not CUDA:
        # a meta tensor is another device: the check must fire before any kernel
        x, _, qw, ws, _, _ = make(2, 64, 8)
        with pytest.raises(RuntimeError, match=r"lowvram\.qlinear: (qweight|wscale|x) must"):
            torch.ops.lowvram.qlinear(x, qw, ws.to("meta"))
        return
    x, _, qw, ws, _, _ = make(2, 64, 8)
    with pytest.raises(RuntimeError, match=r"lowvram\.qlinear: qweight must be on the same device"):
        torch.ops.lowvram.qlinear(x.cuda(), qw, ws.cuda())


# ---------------------------------------------------------------- CUDA


@needs_cuda
@pytest.mark.parametrize("M", [1, 3, 17, 64, 300])
@pytest.mark.parametrize("dtype", DTYPES)
def test_cuda_equals_reference(M, dtype):
    x, _, qw, ws, b, a = make(M, 320, 96, dtype, smooth=True)
    y = lowvram.ops.qlinear(x.cuda(), qw.cuda(), ws.cuda(), b.cuda(), a.cuda())
    assert_same_bits(y.cpu(), ref.qlinear(x, qw, ws, b, a))
    q, s = lowvram.ops.quantize_int8(x.cuda(), a.cuda())
    rq, rs = ref.quantize_int8(x, a)
    assert torch.equal(q.cpu(), rq)
    assert_same_bits(s.cpu(), rs)
    gy = torch.randn(M, 96).to(dtype)
    gx = lowvram.ops.qlinear_grad_input(gy.cuda(), qw.cuda(), ws.cuda(), a.cuda())
    assert_same_bits(gx.cpu(), lowvram.ops.qlinear_grad_input(gy, qw, ws, a))
