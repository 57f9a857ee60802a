"""The sparse family's ops (nm_mask, sparse_compress/decompress, sparse_linear,
sparse_qlinear and their gradients), SparseLinear / SparseQLinear and prune_.

Oracles: lowvram.reference (masks, compression — exact), the dense ops on the
decompressed weights (sparse_qlinear == qlinear bit for bit; sparse_linear vs
a float64 product), float64 finite differences (gradcheck of the dense
function the sparse one computes), torch.library.opcheck, eager mode for
torch.compile, the saved model for state_dict round trips, and properties
(masks keep exactly n of every m, the largest; bytes shrink).
"""
import itertools
import os

import pytest
import torch
from hypothesis import given, settings, strategies as st
from torch import nn

import lowvram
from lowvram import reference as ref
from lowvram.nn import QLinear, SparseLinear, SparseQLinear
from conftest import assert_same_bits, needs_cuda, sqnr_db

ISAS = [i for i in ("ref", "avx2", "avx512") if lowvram.cpu_isa_supported(i)]
PATTERNS = [(2, 4), (4, 8), (1, 4), (3, 4), (8, 16)]


@pytest.fixture(autouse=True)
def restore_isa_and_threads():
    isa, threads = lowvram.cpu_isa(), torch.get_num_threads()
    yield
    lowvram.set_cpu_isa(isa)
    torch.set_num_threads(threads)


def sparse_weight(N, K, n, m, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    w = (torch.randn(N, K, generator=g) / K ** 0.5).to(dtype)
    keep = ref.nm_mask(w.float().abs(), n, m)
    return w, keep


# ---------------------------------------------------------------- masks


@pytest.mark.parametrize("n,m", PATTERNS)
def test_nm_mask_keeps_the_n_largest(n, m):
    score = torch.randn(13, 16 * m).abs()
    keep = lowvram.ops.nm_mask(score, n, m)
    assert torch.equal(keep, ref.nm_mask(score, n, m))
    g = keep.reshape(13, -1, m)
    assert (g.sum(-1) == n).all(), "exactly n of every m"
    s = score.reshape(13, -1, m)
    kept_min = torch.where(g, s, torch.full_like(s, float("inf"))).amin(-1)
    pruned_max = torch.where(~g, s, torch.full_like(s, -float("inf"))).amax(-1)
    assert (kept_min >= pruned_max).all(), "the kept ones are the largest"


def test_nm_mask_ties_keep_the_lower_index():
    score = torch.tensor([[1.0, 1.0, 1.0, 1.0, 0.0, -0.0, 0.0, 2.0]])
    assert lowvram.ops.nm_mask(score, 2, 4).tolist() == [[True, True, False, False,
                                                          True, False, False, True]]
    allsame = torch.full((3, 64), 7.0)
    keep = lowvram.ops.nm_mask(allsame, 3, 8)
    assert keep.reshape(3, 8, 8)[:, :, :3].all() and not keep.reshape(3, 8, 8)[:, :, 3:].any()
    inf = torch.tensor([[float("inf"), 1.0, -float("inf"), 2.0]])
    assert lowvram.ops.nm_mask(inf, 2, 4).tolist() == [[True, False, False, True]]


@pytest.mark.parametrize("msg,args", [
    (r"K \(score's columns\) must be a multiple of m = 4", (torch.rand(3, 10), 2, 4)),
    (r"n must be in \[1, m\]", (torch.rand(3, 8), 5, 4)),
    (r"n must be in \[1, m\]", (torch.rand(3, 8), 0, 4)),
    (r"m must be in \[1, 64\]", (torch.rand(3, 128), 2, 128)),
    (r"score must be 2-D", (torch.rand(8), 2, 4)),
    (r"score must not contain NaN", (torch.tensor([[1.0, float("nan"), 0.0, 2.0]]), 2, 4)),
    (r"score must be a float tensor", (torch.ones(2, 4, dtype=torch.int32), 2, 4)),
])
def test_nm_mask_bad_input(msg, args):
    with pytest.raises((ValueError, TypeError, RuntimeError), match=rf"lowvram\.nm_mask: {msg}"):
        lowvram.ops.nm_mask(*args)


def test_unstructured_mask_per_row():
    score = torch.randn(5, 37).abs()
    keep = ref.unstructured_mask(score, 0.5)
    assert (keep.sum(1) == 37 - round(37 * 0.5)).all()
    kept_min = torch.where(keep, score, torch.full_like(score, float("inf"))).amin(1)
    pruned_max = torch.where(~keep, score, torch.full_like(score, -float("inf"))).amax(1)
    assert (kept_min >= pruned_max).all()


# ---------------------------------------------------------------- storage


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.int8])
@pytest.mark.parametrize("K", [8, 12, 1028])
def test_compress_round_trip(dtype, K):
    w, keep = sparse_weight(9, K, 2, 4)
    w = (w * 100).to(dtype) if dtype == torch.int8 else w.to(dtype)
    values, bits = lowvram.ops.sparse_compress(w, keep)
    rv, rb = ref.sparse_compress(w, keep)
    assert torch.equal(values, rv) and torch.equal(bits, rb)
    assert values.shape == (9, K // 2) and bits.shape == (9, (K + 7) // 8)
    dense = lowvram.ops.sparse_decompress(values, bits, K)
    assert torch.equal(dense, torch.where(keep, w, torch.zeros_like(w)))
    # 2:4 int8: 0.5 + 0.125 bytes per weight
    if dtype == torch.int8 and K % 8 == 0:
        assert values.numel() + bits.numel() == 9 * K * 0.625


def test_compress_bad_input():
    w, keep = sparse_weight(4, 16, 2, 4)
    ragged = keep.clone()
    ragged[1, :] = True
    with pytest.raises(ValueError, match=r"lowvram\.sparse_compress: every row of mask must keep "
                                         r"the same number"):
        lowvram.ops.sparse_compress(w, ragged)
    with pytest.raises(ValueError, match=r"lowvram\.sparse_compress: mask must have w's shape"):
        lowvram.ops.sparse_compress(w, keep[:, :8])
    with pytest.raises(TypeError, match=r"lowvram\.sparse_compress: mask must be bool"):
        lowvram.ops.sparse_compress(w, keep.int())


def test_corrupt_mask_bits_raise():
    w, keep = sparse_weight(4, 16, 2, 4)
    values, bits = lowvram.ops.sparse_compress(w, keep)
    bad = bits.clone()
    bad[2, 0] |= 0xFF  # that row now claims more weights than values holds
    x = torch.randn(3, 16)
    with pytest.raises(ValueError, match=r"lowvram\.sparse_linear: every row of mask_bits must "
                                         r"keep exactly KV = 8"):
        lowvram.ops.sparse_linear(x, values, bad)
    w12, keep12 = sparse_weight(4, 12, 2, 4)
    v12, b12 = lowvram.ops.sparse_compress(w12, keep12)
    b12 = b12.clone()
    b12[0, 1] |= 0x80  # a bit past K = 12
    with pytest.raises(ValueError, match=r"bits past K must be 0"):
        lowvram.ops.sparse_decompress(v12, b12, 12)


# ---------------------------------------------------------------- products


@pytest.mark.parametrize("n,m", PATTERNS)
@pytest.mark.parametrize("M", [1, 7, 40])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_sparse_qlinear_equals_qlinear_on_the_decompressed_weight(n, m, M, dtype):
    K, N = 16 * m * 3, 33
    w, keep = sparse_weight(N, K, n, m)
    qw, ws = lowvram.ops.quantize_weight(w * keep)
    qv, bits = lowvram.ops.sparse_compress(qw, keep)
    x = torch.randn(M, K).to(dtype)
    b = torch.randn(N)
    a = torch.rand(K) + 0.5
    assert_same_bits(lowvram.ops.sparse_qlinear(x, qv, bits, ws, b, a),
                     lowvram.ops.qlinear(x, qw, ws, b, a))
    assert_same_bits(lowvram.ops.sparse_qlinear(x, qv, bits, ws, b, a),
                     ref.sparse_qlinear(x, qv, bits, ws, b, a))


@pytest.mark.parametrize("n,m", PATTERNS + [(None, None)])
@pytest.mark.parametrize("vdtype", [torch.float32, torch.bfloat16, torch.float16])
def test_sparse_linear_vs_float64(n, m, vdtype):
    K, N = 96, 20
    if n is None:  # unstructured, 50% per row
        w, _ = sparse_weight(N, K, 1, 1)
        keep = ref.unstructured_mask(w.abs(), 0.5)
    else:
        w, keep = sparse_weight(N, K, n, m)
    w = w.to(vdtype)
    values, bits = lowvram.ops.sparse_compress(w, keep)
    x = torch.randn(5, 3, K)
    b = torch.randn(N)
    y = lowvram.ops.sparse_linear(x, values, bits, b)
    exact = ref.sparse_linear(x.double(), values, bits, b.double())
    torch.testing.assert_close(y.double(), exact, rtol=1e-5, atol=1e-5)


def test_threads_and_isas_give_identical_bits():
    K, N = 1024 + 64, 300
    w, keep = sparse_weight(N, K, 2, 4)
    qw, ws = lowvram.ops.quantize_weight(w * keep)
    qv, qbits = lowvram.ops.sparse_compress(qw, keep)
    values, bits = lowvram.ops.sparse_compress(w, keep)
    outs = []
    for isa, threads, M in itertools.product(ISAS, (1, 2), (1, 33)):
        lowvram.set_cpu_isa(isa)
        torch.set_num_threads(threads)
        x = torch.randn(M, K, generator=torch.Generator().manual_seed(M))
        gy = torch.randn(M, N, generator=torch.Generator().manual_seed(M + 1))
        outs.append(((isa, threads, M), lowvram.ops.sparse_qlinear(x, qv, qbits, ws),
                     lowvram.ops.sparse_linear(x, values, bits),
                     torch.ops.lowvram.sparse_qlinear_grad_input(gy, qv, qbits, ws, K),
                     torch.ops.lowvram.sparse_linear_grad_input(gy, values, bits, K)))
    for M in (1, 33):
        same = [o for o in outs if o[0][2] == M]
        for o in same[1:]:
            for a, b in zip(o[1:], same[0][1:]):
                assert_same_bits(a, b, f"{o[0]} vs {same[0][0]}")


@settings(max_examples=40, deadline=None)
@given(n_m=st.sampled_from(PATTERNS), groups=st.integers(1, 4), N=st.integers(1, 40),
       lead=st.lists(st.integers(1, 3), max_size=2), seed=st.integers(0, 9999),
       bias=st.booleans())
def test_hypothesis_sparse_qlinear(n_m, groups, N, lead, seed, bias):
    n, m = n_m
    K = m * 4 * groups
    w, keep = sparse_weight(N, K, n, m, seed)
    qw, ws = lowvram.ops.quantize_weight(w * keep)
    qv, bits = lowvram.ops.sparse_compress(qw, keep)
    x = torch.randn(*lead, K, generator=torch.Generator().manual_seed(seed))
    b = torch.randn(N) if bias else None
    assert_same_bits(lowvram.ops.sparse_qlinear(x, qv, bits, ws, b),
                     lowvram.ops.qlinear(x, qw, ws, b))


# ---------------------------------------------------------------- gradients


def test_gradients_equal_the_dense_ones():
    K, N = 128, 24
    w, keep = sparse_weight(N, K, 2, 4)
    qw, ws = lowvram.ops.quantize_weight(w * keep, 64)
    qv, qbits = lowvram.ops.sparse_compress(qw, keep)
    a = torch.rand(K) + 0.5
    gy = torch.randn(6, N)
    assert_same_bits(torch.ops.lowvram.sparse_qlinear_grad_input(gy, qv, qbits, ws, K, a),
                     lowvram.ops.qlinear_grad_input(gy, qw, ws, a))
    values, bits = lowvram.ops.sparse_compress(w, keep)
    gx = torch.ops.lowvram.sparse_linear_grad_input(gy, values, bits, K)
    torch.testing.assert_close(gx.double(), gy.double() @ (w * keep).double(), rtol=1e-5,
                               atol=1e-5)


def test_autograd_and_gradcheck():
    K, N = 32, 8
    w, keep = sparse_weight(N, K, 2, 4)
    values, bits = lowvram.ops.sparse_compress(w, keep)
    x = torch.randn(3, K, requires_grad=True)
    b = torch.randn(N, requires_grad=True)
    y = lowvram.ops.sparse_linear(x, values, bits, b)
    gy = torch.randn_like(y)
    y.backward(gy)
    xd, bd = x.detach().double().requires_grad_(), b.detach().double().requires_grad_()
    ref.sparse_linear(xd, values, bits, bd).backward(gy.double())
    torch.testing.assert_close(x.grad.double(), xd.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(b.grad.double(), bd.grad, rtol=1e-5, atol=1e-5)
    # finite differences on the float64 function the op computes
    assert torch.autograd.gradcheck(
        lambda x_, b_: ref.sparse_linear(x_, values, bits, b_),
        (x.detach().double().requires_grad_(), b.detach().double().requires_grad_()))


# ---------------------------------------------------------------- opcheck


def _opcheck_samples():
    K, N = 64, 16
    w, keep = sparse_weight(N, K, 2, 4)
    values, bits = lowvram.ops.sparse_compress(w, keep)
    qw, ws = lowvram.ops.quantize_weight(w * keep)
    qv, qbits = lowvram.ops.sparse_compress(qw, keep)
    x = torch.randn(5, K, requires_grad=True)
    b = torch.randn(N, requires_grad=True)
    return [
        (torch.ops.lowvram.nm_mask.default, (w.abs(), 2, 4)),
        (torch.ops.lowvram.sparse_decompress.default, (values, bits, K)),
        (torch.ops.lowvram.sparse_linear.default, (x, values, bits, b)),
        (torch.ops.lowvram.sparse_qlinear.default, (x, qv, qbits, ws, b)),
        (torch.ops.lowvram.sparse_linear_grad_input.default, (torch.randn(5, N), values, bits, K)),
        (torch.ops.lowvram.sparse_qlinear_grad_input.default,
         (torch.randn(5, N), qv, qbits, ws, K)),
    ]


@pytest.mark.parametrize("i", range(6))
def test_opcheck(i):
    op, args = _opcheck_samples()[i]
    torch.library.opcheck(op, args)


def test_opcheck_compress_data_dependent_shape():
    # sparse_compress's output width depends on the mask's data: its fake kernel
    # declares a dynamic size, and the op runs eagerly in every check but the
    # ones that need static shapes
    w, keep = sparse_weight(16, 64, 2, 4)
    torch.library.opcheck(torch.ops.lowvram.sparse_compress.default, (w, keep),
                          test_utils=("test_schema", "test_faketensor"))


# ---------------------------------------------------------------- modules, prune_


def mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 32), nn.ReLU(),
                         nn.Linear(32, 16))


@pytest.mark.parametrize("sparsity", ["2:4", "4:8", 0.5])
def test_prune_magnitude_replaces_and_matches_masked_dense(sparsity):
    m = mlp()
    dense = mlp()
    lowvram.prune_(m, sparsity)
    assert [type(x).__name__ for x in m][::2] == ["SparseLinear"] * 3
    # oracle: the dense model with the same weights zeroed by the reference mask
    for i in (0, 2, 4):
        lin = dense[i]
        if isinstance(sparsity, str):
            n, mm = map(int, sparsity.split(":"))
            keep = ref.nm_mask(lin.weight.abs(), n, mm)
        else:
            keep = ref.unstructured_mask(lin.weight.abs(), sparsity)
        with torch.no_grad():
            lin.weight.mul_(keep)
    x = torch.randn(9, 64)
    torch.testing.assert_close(m(x), dense(x), rtol=1e-5, atol=1e-5)


def test_prune_wanda_uses_activation_norms():
    torch.manual_seed(0)
    lin = nn.Linear(8, 4, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, 2.0, 3.0, 4.0] * 2] * 4))
    x = torch.ones(16, 8)
    x[:, 0] = 100.0  # column 0 fires hard: Wanda keeps it despite its small weight
    model = nn.Sequential(lin)
    lowvram.prune_(model, "2:4", method="wanda", calib=[x])
    keep = ref.unpack_mask(model[0].mask_bits, 8)
    assert keep[:, 0].all() and keep[:, 3].all() and not keep[:, 1].any()
    mag = lowvram.prune_(nn.Sequential(lin_from(lin)), "2:4")
    assert not ref.unpack_mask(mag[0].mask_bits, 8)[:, 0].any()


def lin_from(lin):
    c = nn.Linear(lin.in_features, lin.out_features, bias=lin.bias is not None)
    c.load_state_dict(lin.state_dict())
    return c


@pytest.mark.parametrize("order", ["prune_then_quantize", "quantize_then_prune"])
def test_prune_and_quantize_compose(order):
    m = mlp()
    x = torch.randn(7, 64)
    ref_y = m(x)
    if order == "prune_then_quantize":
        lowvram.prune_(m, "2:4")
        lowvram.quantize_(m)
    else:
        lowvram.quantize_(m)
        lowvram.prune_(m, "2:4")
    assert all(isinstance(m[i], SparseQLinear) for i in (0, 2, 4))
    y = m(x)
    assert torch.isfinite(y).all() and sqnr_db(ref_y, y) > 3
    # each SparseQLinear computes exactly its dense QLinear
    for i in (0, 2, 4):
        h = torch.randn(3, m[i].in_features)
        assert_same_bits(m[i](h), m[i].to_qlinear()(h))


def test_prune_then_quantize_scales_come_from_kept_weights():
    lin = nn.Linear(64, 8)
    s = SparseLinear.from_linear(lin, ref.nm_mask(lin.weight.abs(), 2, 4), 2, 4)
    q = SparseQLinear.from_sparse_linear(s)
    expect = (lin.weight.detach() * ref.nm_mask(lin.weight.abs(), 2, 4)).abs().amax(1) / 127
    torch.testing.assert_close(q.wscale, expect)


def test_footprint_and_bytes_shrink():
    m = mlp()
    fp32 = lowvram.memory.footprint(m).linear_weights
    lowvram.prune_(m, "2:4")
    lowvram.quantize_(m)
    lw = lowvram.memory.footprint(m).linear_weights
    n_w = 64 * 128 + 128 * 32 + 32 * 16
    assert lw == n_w // 2 + n_w // 8 + 4 * (128 + 32 + 16)  # values + bits + scales
    assert lw <= 0.16 * fp32 + 4 * (128 + 32 + 16)


def test_sparse_state_dict_round_trip(tmp_path):
    st_ = pytest.importorskip("safetensors.torch")
    m = lowvram.quantize_(lowvram.prune_(mlp(seed=3), "2:4"))
    path = os.path.join(tmp_path, "s.safetensors")
    st_.save_file(m.state_dict(), path)
    fresh = lowvram.quantize_(lowvram.prune_(mlp(seed=4), "2:4"))
    fresh.load_state_dict(st_.load_file(path))
    x = torch.randn(4, 64)
    assert_same_bits(fresh(x), m(x))
    sd = m.state_dict()
    assert sd["0.qvalues"].dtype == torch.int8 and sd["0.mask_bits"].dtype == torch.uint8
    wrong = dict(sd, **{"0.mask_bits": sd["0.mask_bits"].int()})
    with pytest.raises(RuntimeError, match=r"lowvram.SparseQLinear: 0.mask_bits must be "
                                           r"torch.uint8"):
        fresh.load_state_dict(wrong)


def test_compile_and_autograd_through_pruned_model():
    m = lowvram.prune_(mlp(), "2:4")
    x = torch.randn(5, 64)
    torch.testing.assert_close(torch.compile(m, fullgraph=True)(x), m(x), rtol=1e-6, atol=1e-6)
    q = lowvram.quantize_(lowvram.prune_(mlp(), "2:4"))
    assert_same_bits(torch.compile(q, fullgraph=True)(x), q(x))
    xg = x.clone().requires_grad_()
    q(xg).pow(2).sum().backward()
    assert xg.grad is not None and q[0].bias.grad is not None


@pytest.mark.parametrize("kwargs,msg", [
    ({"sparsity": "5:4"}, r"sparsity 'n:m' needs 1 <= n <= m <= 64"),
    ({"sparsity": "a:b"}, r"sparsity must be 'n:m' or a float in \[0, 1\)"),
    ({"sparsity": 1.0}, r"sparsity must be in \[0, 1\)"),
    ({"sparsity": -0.1}, r"sparsity must be in \[0, 1\)"),
    ({"method": "random"}, r"method must be 'magnitude' or 'wanda'"),
    ({"method": "wanda"}, r"method='wanda' needs calib"),
])
def test_prune_bad_arguments(kwargs, msg):
    with pytest.raises((ValueError, TypeError), match=rf"lowvram\.prune_: {msg}"):
        lowvram.prune_(mlp(), **kwargs)


def test_prune_k_not_multiple_of_m():
    with pytest.raises(ValueError, match=r"lowvram\.prune_: cannot prune 0: .*multiple of m = 8"):
        lowvram.prune_(nn.Sequential(nn.Linear(12, 4)), "4:8")


@needs_cuda
def test_cuda_sparse_equals_cpu():
    K, N = 256, 64
    w, keep = sparse_weight(N, K, 2, 4)
    qw, ws = lowvram.ops.quantize_weight(w * keep)
    qv, bits = lowvram.ops.sparse_compress(qw, keep)
    for M in (1, 5, 300):
        x = torch.randn(M, K)
        assert_same_bits(lowvram.ops.sparse_qlinear(x.cuda(), qv.cuda(), bits.cuda(),
                                                    ws.cuda()).cpu(),
                         lowvram.ops.sparse_qlinear(x, qv, bits, ws))
