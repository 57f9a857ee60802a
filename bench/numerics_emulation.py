#!/usr/bin/env python3
"""bench/numerics_emulation.py — the evidence behind docs/numerics.md.

Re-computes synth-512-f16's logits for the first positions of
../shared/reference/synth-512-f16.ref in NumPy, doing llama.cpp's CPU
operations in its order (f16-rounded activations, 16-lane accumulation with a
tree reduction, RMSNorm summed in double, RoPE with the angle advanced by
repeated multiplication), and prints max|dlogit|/std per position twice: with
NumPy's float32 sin/cos, and with correctly rounded ones (what glibc's
cosf/sinf give and memfit uses). Needs: pip install numpy gguf.
Usage: python3 bench/numerics_emulation.py [positions]   (slow: pure NumPy)
"""
import sys
import numpy as np
import gguf

SHARED = "../shared"
f32 = np.float32
r = gguf.GGUFReader(f"{SHARED}/models/synth-512-f16.gguf")
T = {t.name: np.array(t.data) for t in r.tensors}
eps, nl, nh, nkv, hd, base = f32(1e-5), 4, 8, 4, 32, 10000.0


def read_ref(path):
    b = open(path, "rb").read()
    nt, nv = np.frombuffer(b[8:16], np.int32)
    toks = np.frombuffer(b[16:16 + 4 * nt], np.int32)
    logits = np.frombuffer(b[16 + 4 * nt:16 + 4 * nt + 4 * nt * nv], np.float32).reshape(nt, nv)
    return toks, logits


toks, L = read_ref(f"{SHARED}/reference/synth-512-f16.ref")


def tree16(acc):
    s8 = acc[..., :8] + acc[..., 8:]
    s4 = s8[..., :4] + s8[..., 4:]
    return (s4[..., 0] + s4[..., 2]) + (s4[..., 1] + s4[..., 3])


def dot16(W, X):  # W (o, n), X (t, n) -> (t, o): lane l sums terms l, l+16, ...
    acc = np.zeros((X.shape[0], W.shape[0], 16), f32)
    for k in range(0, W.shape[1], 16):
        acc = (acc + (X[:, None, k:k + 16] * W[None, :, k:k + 16]).astype(f32)).astype(f32)
    return tree16(acc).astype(f32)


def rms(x, w):
    s = np.sum((x * x).astype(np.float64), axis=-1, keepdims=True)
    sc = (f32(1) / np.sqrt((s / x.shape[-1]).astype(f32) + eps)).astype(f32)
    return ((x * sc).astype(f32) * w).astype(f32)


def mm(W, X):
    return dot16(W.astype(f32), X.astype(np.float16).astype(f32))


def rope(x, exact_trig):
    out, ts = x.copy(), f32(base) ** f32(-2.0 / hd)
    for t in range(x.shape[0]):
        theta = f32(t)
        for i in range(0, hd, 2):
            if exact_trig:
                c, s = f32(np.cos(np.float64(theta))), f32(np.sin(np.float64(theta)))
            else:
                c, s = np.cos(theta).astype(f32), np.sin(theta).astype(f32)
            x0, x1 = x[t, :, i], x[t, :, i + 1]
            out[t, :, i] = (x0 * c - x1 * s).astype(f32)
            out[t, :, i + 1] = (x0 * s + x1 * c).astype(f32)
            theta = f32(theta * ts)
    return out


def attention(q, k, v, n):
    att = np.zeros((n, nh, hd), f32)
    for h in range(nh):
        kh, vh = k[:, h // (nh // nkv), :], v[:, h // (nh // nkv), :]
        S = (dot16(kh, q[:, h, :]) * f32(1 / np.sqrt(f32(hd)))).astype(f32)
        for t in range(n):
            e = np.exp((S[t, :t + 1] - S[t, :t + 1].max()).astype(f32)).astype(f32)
            p = (e * f32(1.0 / np.sum(e.astype(np.float64)))).astype(f32)
            acc = np.zeros((16, hd), f32)
            for j in range(t + 1):
                acc[j % 16] = (acc[j % 16] + (p[j] * vh[j]).astype(f32)).astype(f32)
            att[t, h] = tree16(acc.T)
    return att


def run(n, exact_trig):
    x = T["token_embd.weight"][toks[:n]].astype(f32)
    for layer in range(nl):
        p = f"blk.{layer}."
        xb = rms(x, T[p + "attn_norm.weight"])
        q = rope(mm(T[p + "attn_q.weight"], xb).reshape(n, nh, hd), exact_trig)
        k = rope(mm(T[p + "attn_k.weight"], xb).reshape(n, nkv, hd), exact_trig)
        v = mm(T[p + "attn_v.weight"], xb).reshape(n, nkv, hd)
        x = (x + mm(T[p + "attn_output.weight"], attention(q, k, v, n).reshape(n, -1))).astype(f32)
        xb = rms(x, T[p + "ffn_norm.weight"])
        g, u = mm(T[p + "ffn_gate.weight"], xb), mm(T[p + "ffn_up.weight"], xb)
        h = ((g / (f32(1) + np.exp(-g).astype(f32))).astype(f32) * u).astype(f32)
        x = (x + mm(T[p + "ffn_down.weight"], h)).astype(f32)
    lo = mm(T["output.weight"], rms(x, T["output_norm.weight"]))
    return np.abs(lo - L[:n]).max(1) / L[:n].std(1)


n = int(sys.argv[1]) if len(sys.argv) > 1 else 5
print("NumPy float32 sin/cos:     ", " ".join(f"{v:.3e}" for v in run(n, False)))
print("correctly rounded sin/cos: ", " ".join(f"{v:.3e}" for v in run(n, True)))
