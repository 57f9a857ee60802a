"""The sparse family's CUDA ops (bindings/sparse_cuda.cpp, ops/cuda/sparse.cu)
against their CPU ops (whose oracle, ops/cpu/sparse_ref.c, test_sparse.py
checks): masks, compressed bytes, sparse_qlinear outputs and every float
product and gradient must be identical bit for bit, because the contract
(ops/include/lowvram/sparse.h) names every rounding and the order of float
operations. Every path of sparse_qlinear is covered (own __dp4a kernel for
M <= 16; cuSPARSELt for 2:4 at larger M; the decompress + cuBLASLt fallback
for other patterns and group-wise scales), bad input raises with the op's
message, and torch.library.opcheck runs on CUDA samples.

Skips without a CUDA device. LOWVRAM_TEST_SPARSE_DEVICE=cpu runs the same
tests with the CPU as the "device" (a dry run of the test logic on machines
without a GPU; it compares the CPU ops with themselves)."""
import os

import pytest
import torch

import lowvram
from lowvram import reference as ref
from conftest import assert_same_bits

DEV = os.environ.get("LOWVRAM_TEST_SPARSE_DEVICE", "cuda")
pytestmark = pytest.mark.skipif(DEV == "cuda" and not torch.cuda.is_available(),
                                reason="no CUDA device")

PATTERNS = [(2, 4), (1, 4), (4, 8), (3, 4)]
DTYPES = [torch.float32, torch.bfloat16, torch.float16]


def gen(seed):
    return torch.Generator().manual_seed(seed)


def weight(N, K, n, m, seed=0, dtype=torch.float32, unstructured=None):
    g = gen(seed)
    w = (torch.randn(N, K, generator=g) / K ** 0.5).to(dtype)
    if unstructured is not None:
        keep = ref.unstructured_mask(w.float().abs(), unstructured)
    else:
        keep = ref.nm_mask(w.float().abs(), n, m)
    return w, keep


def qweight(N, K, n, m, seed=0, group_size=-1, unstructured=None):
    w, keep = weight(N, K, n, m, seed, unstructured=unstructured)
    qw, ws = lowvram.ops.quantize_weight(w * keep, group_size)
    qv, bits = lowvram.ops.sparse_compress(qw, keep)
    return qv, bits, ws


def d(t):
    return None if t is None else t.to(DEV)


# ---------------------------------------------------------------- masks, compression


@pytest.mark.parametrize("n,m", PATTERNS + [(16, 64), (1, 1)])
def test_nm_mask_equals_cpu(n, m):
    # coarse scores: many ties, where the lower index must win
    s = torch.randint(-3, 4, (37, m * 5), generator=gen(n * 100 + m)).float() * 0.5
    assert torch.equal(torch.ops.lowvram.nm_mask(d(s), n, m).cpu(),
                       torch.ops.lowvram.nm_mask(s, n, m))
    assert torch.equal(torch.ops.lowvram.nm_mask(d(s.half()), n, m).cpu(),
                       torch.ops.lowvram.nm_mask(s.half(), n, m))


@pytest.mark.parametrize("dtype", DTYPES + [torch.int8])
@pytest.mark.parametrize("K", [1, 7, 8, 33, 64, 1025])
def test_compress_decompress_equal_cpu(dtype, K):
    g = gen(K)
    w = (torch.randn(9, K, generator=g) * 50).to(dtype)
    kv = max(1, K // 3)
    keep = torch.zeros(9, K, dtype=torch.bool)
    for r in range(9):
        keep[r, torch.randperm(K, generator=g)[:kv]] = True
    v_cpu, b_cpu = torch.ops.lowvram.sparse_compress(w, keep)
    v_dev, b_dev = torch.ops.lowvram.sparse_compress(d(w), d(keep))
    assert_same_bits(v_dev.cpu(), v_cpu)
    assert torch.equal(b_dev.cpu(), b_cpu)
    assert_same_bits(torch.ops.lowvram.sparse_decompress(v_dev, b_dev, K).cpu(),
                     torch.ops.lowvram.sparse_decompress(v_cpu, b_cpu, K))


def test_masks_and_compression_raise_like_cpu():
    s = torch.ones(4, 8)
    s[2, 3] = float("nan")
    with pytest.raises(ValueError, match="lowvram.nm_mask: score must not contain NaN"):
        torch.ops.lowvram.nm_mask(d(s), 2, 4)
    with pytest.raises(ValueError, match="lowvram.nm_mask: K"):
        torch.ops.lowvram.nm_mask(d(torch.ones(4, 6)), 2, 4)
    keep = torch.zeros(4, 8, dtype=torch.bool)
    keep[:, :2] = True
    keep[3, 5] = True
    with pytest.raises(ValueError, match="lowvram.sparse_compress: every row of mask"):
        torch.ops.lowvram.sparse_compress(d(torch.ones(4, 8)), d(keep))
    keep[3, 5] = False
    v, b = torch.ops.lowvram.sparse_compress(torch.ones(4, 8), keep)
    bad = b.clone()
    bad[1, 0] ^= 1
    with pytest.raises(ValueError, match="lowvram.sparse_decompress: every row of mask_bits"):
        torch.ops.lowvram.sparse_decompress(d(v), d(bad), 8)


# ---------------------------------------------------------------- products


@pytest.mark.parametrize("n,m", PATTERNS)
@pytest.mark.parametrize("M", [1, 3, 16, 17, 100])
@pytest.mark.parametrize("dtype", DTYPES)
def test_sparse_linear_equals_cpu(n, m, M, dtype):
    N, K = 48, 40 * m  # a multiple of m and of 8
    w, keep = weight(N, K, n, m, seed=M, dtype=dtype)
    values, bits = lowvram.ops.sparse_compress(w, keep)
    x = torch.randn(M, K, generator=gen(M)).to(dtype)
    if M > 2:
        x[1, 0] = float("nan")
        x[2, K - 1] = float("inf")
    b = torch.randn(N, generator=gen(1))
    want = lowvram.ops.sparse_linear(x, values, bits, b)
    got = lowvram.ops.sparse_linear(d(x), d(values), d(bits), d(b))
    assert_same_bits(got.cpu(), want)
    # no bias, a 3-D input
    x3 = x.reshape(1, M, K)
    assert_same_bits(lowvram.ops.sparse_linear(d(x3), d(values), d(bits)).cpu(),
                     lowvram.ops.sparse_linear(x3, values, bits))


@pytest.mark.parametrize("K", [1, 3, 15, 17, 63, 65, 1025])
@pytest.mark.parametrize("M", [1, 17])
def test_sparse_linear_unstructured_awkward_k(K, M):
    w, keep = weight(33, K, 0, 0, seed=K, unstructured=0.6 if K > 1 else 0.0)
    values, bits = lowvram.ops.sparse_compress(w, keep)
    x = torch.randn(M, K, generator=gen(K))
    assert_same_bits(lowvram.ops.sparse_linear(d(x), d(values), d(bits)).cpu(),
                     lowvram.ops.sparse_linear(x, values, bits))


# M <= 16: own kernel; M > 16: cuSPARSELt (2:4, per-channel, N % 32, K % 64) or
# the decompress + cuBLASLt fallback (other patterns, groups, odd shapes).
@pytest.mark.parametrize("n,m", PATTERNS)
@pytest.mark.parametrize("M", [1, 2, 5, 16, 17, 64, 300])
@pytest.mark.parametrize("group_size", [-1, 64])
def test_sparse_qlinear_equals_cpu(n, m, M, group_size):
    N, K = 64, 256 if m != 3 else 192
    qv, bits, ws = qweight(N, K, n, m, seed=M, group_size=group_size)
    x = torch.randn(M, K, generator=gen(M)) * 3
    if M > 3:
        x[1] = 0
        x[2, 5] = float("nan")
        x[3, 7] = float("inf")
    b = torch.randn(N, generator=gen(2))
    a = torch.rand(K, generator=gen(3)) + 0.5
    for dtype in DTYPES:
        xd = x.to(dtype)
        want = lowvram.ops.sparse_qlinear(xd, qv, bits, ws, b, a)
        got = lowvram.ops.sparse_qlinear(d(xd), d(qv), d(bits), d(ws), d(b), d(a))
        assert_same_bits(got.cpu(), want, f"{dtype}")


@pytest.mark.parametrize("N,K", [(33, 100), (96, 1024), (31, 64), (128, 4096)])
@pytest.mark.parametrize("M", [1, 20, 129])
def test_sparse_qlinear_shapes(N, K, M):
    qv, bits, ws = qweight(N, K, 2, 4, seed=N + K)
    x = torch.randn(2, M, K, generator=gen(M))
    assert_same_bits(lowvram.ops.sparse_qlinear(d(x), d(qv), d(bits), d(ws)).cpu(),
                     lowvram.ops.sparse_qlinear(x, qv, bits, ws))


def test_sparse_qlinear_cusparselt_cache_follows_in_place_updates():
    # The cuSPARSELt form is cached per weight; an in-place change of the
    # values (version counter) must rebuild it, and a new tensor at a reused
    # address must not hit the old entry.
    N, K, M = 64, 256, 64
    qv, bits, ws = qweight(N, K, 2, 4, seed=7)
    x = torch.randn(M, K, generator=gen(8))
    qd, bd, wd = d(qv).clone(), d(bits), d(ws)  # clone: with DEV=cpu, d() is the same tensor
    first = lowvram.ops.sparse_qlinear(d(x), qd, bd, wd).cpu()
    assert_same_bits(first, lowvram.ops.sparse_qlinear(x, qv, bits, ws))
    qd.neg_()
    assert_same_bits(lowvram.ops.sparse_qlinear(d(x), qd, bd, wd).cpu(),
                     lowvram.ops.sparse_qlinear(x, qv.neg(), bits, ws))
    del qd
    for seed in (9, 10):
        qv2, bits2, ws2 = qweight(N, K, 2, 4, seed=seed)
        assert_same_bits(lowvram.ops.sparse_qlinear(d(x), d(qv2), d(bits2), d(ws2)).cpu(),
                         lowvram.ops.sparse_qlinear(x, qv2, bits2, ws2))


# ---------------------------------------------------------------- gradients


@pytest.mark.parametrize("n,m", [(2, 4), (1, 4), (4, 8)])
@pytest.mark.parametrize("M", [1, 7, 40])
@pytest.mark.parametrize("dtype", DTYPES)
def test_grad_inputs_equal_cpu(n, m, M, dtype):
    N, K = 70, 192
    gy = torch.randn(M, N, generator=gen(M)).to(dtype)
    if M > 2:
        gy[1, 0] = float("inf")  # inf * a pruned 0 = NaN, as the dense product
        gy[2, N - 1] = -0.0
    w, keep = weight(N, K, n, m, seed=M, dtype=dtype)
    values, bits = lowvram.ops.sparse_compress(w, keep)
    assert_same_bits(
        torch.ops.lowvram.sparse_linear_grad_input(d(gy), d(values), d(bits), K).cpu(),
        torch.ops.lowvram.sparse_linear_grad_input(gy, values, bits, K))
    for gs in (-1, 64):
        qv, qbits, ws = qweight(N, K, n, m, seed=M + 1, group_size=gs)
        a = torch.rand(K, generator=gen(4)) + 0.5
        assert_same_bits(
            torch.ops.lowvram.sparse_qlinear_grad_input(d(gy), d(qv), d(qbits), d(ws), K,
                                                        d(a)).cpu(),
            torch.ops.lowvram.sparse_qlinear_grad_input(gy, qv, qbits, ws, K, a))


def test_autograd_on_device_equals_cpu():
    N, K, M = 32, 128, 6
    qv, bits, ws = qweight(N, K, 2, 4, seed=11)
    x = torch.randn(M, K, generator=gen(12))
    b = torch.randn(N, generator=gen(13))
    xc = x.clone().requires_grad_()
    lowvram.ops.sparse_qlinear(xc, qv, bits, ws, b).square().sum().backward()
    xd = d(x).requires_grad_()
    lowvram.ops.sparse_qlinear(xd, d(qv), d(bits), d(ws), d(b)).square().sum().backward()
    assert_same_bits(xd.grad.cpu(), xc.grad)


# ---------------------------------------------------------------- checks, opcheck


def test_bad_input_raises_with_the_ops_message():
    qv, bits, ws = qweight(16, 64, 2, 4)
    x = d(torch.randn(3, 64))
    with pytest.raises(ValueError, match=r"lowvram.sparse_qlinear: mask_bits must be \[N, ceil"):
        lowvram.ops.sparse_qlinear(d(torch.randn(3, 56)), d(qv), d(bits), d(ws))
    with pytest.raises(TypeError, match="lowvram.sparse_qlinear: qvalues must be int8"):
        torch.ops.lowvram.sparse_qlinear(x, d(qv.float()), d(bits), d(ws))
    with pytest.raises(TypeError, match="lowvram.sparse_qlinear: wscale must be float32"):
        torch.ops.lowvram.sparse_qlinear(x, d(qv), d(bits), d(ws.double()))
    if DEV != "cpu":
        with pytest.raises(RuntimeError, match="must be on the same device"):
            torch.ops.lowvram.sparse_qlinear(x, qv, d(bits), d(ws))
        with pytest.raises(RuntimeError, match="must be on the same device"):
            torch.ops.lowvram.sparse_linear(x, d(qv.float()), bits)


def _samples():
    K, N = 64, 32
    w, keep = weight(N, K, 2, 4)
    values, bits = lowvram.ops.sparse_compress(w, keep)
    qv, qbits, ws = qweight(N, K, 2, 4)
    x = d(torch.randn(5, K)).requires_grad_()
    x_big = d(torch.randn(40, K))
    b = d(torch.randn(N)).requires_grad_()
    return [
        (torch.ops.lowvram.nm_mask.default, (d(w.abs()), 2, 4)),
        (torch.ops.lowvram.sparse_decompress.default, (d(values), d(bits), K)),
        (torch.ops.lowvram.sparse_linear.default, (x, d(values), d(bits), b)),
        (torch.ops.lowvram.sparse_linear.default, (x_big, d(values), d(bits), None)),
        (torch.ops.lowvram.sparse_qlinear.default, (x, d(qv), d(qbits), d(ws), b)),
        (torch.ops.lowvram.sparse_qlinear.default, (x_big, d(qv), d(qbits), d(ws), None)),
        (torch.ops.lowvram.sparse_linear_grad_input.default,
         (d(torch.randn(5, N)), d(values), d(bits), K)),
        (torch.ops.lowvram.sparse_qlinear_grad_input.default,
         (d(torch.randn(5, N)), d(qv), d(qbits), d(ws), K)),
    ]


@pytest.mark.parametrize("i", range(8))
def test_opcheck_on_device(i):
    op, args = _samples()[i]
    torch.library.opcheck(op, args)


def test_opcheck_compress_on_device():
    w, keep = weight(16, 64, 2, 4)
    torch.library.opcheck(torch.ops.lowvram.sparse_compress.default, (d(w), d(keep)),
                          test_utils=("test_schema", "test_faketensor"))
