"""lowvram.evaluate — quality measurements shared by the tests, the demo and
the benchmarks: perplexity over fixed, non-overlapping windows of a token
stream, and sentence embeddings (mean over the attention mask, L2-normalized,
as sentence-transformers computes them)."""
import math
from typing import Optional

import torch
from torch import Tensor, nn


@torch.no_grad()
def perplexity(model: nn.Module, ids: Tensor, window: int = 512,
               n_windows: Optional[int] = None, start: int = 0) -> float:
    """exp(mean next-token cross-entropy) over consecutive non-overlapping
    windows of `window` tokens of the 1-D token stream `ids`, starting at
    token `start` (every window predicts its tokens 2..window from the ones
    before it inside the window; windows are independent)."""
    ids = ids.reshape(-1)
    avail = (ids.numel() - start) // window
    n = avail if n_windows is None else min(n_windows, avail)
    if n < 1:
        raise ValueError(f"lowvram.perplexity: need at least {window} tokens after start={start}, "
                         f"got {ids.numel() - start}")
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for i in range(n):
        chunk = ids[start + i * window: start + (i + 1) * window].to(device)[None]
        logits = model(input_ids=chunk).logits.float()
        loss = nn.functional.cross_entropy(logits[0, :-1], chunk[0, 1:], reduction="sum")
        total += float(loss)
        count += window - 1
    return math.exp(total / count)


@torch.no_grad()
def sentence_embeddings(model: nn.Module, tokenizer, sentences) -> Tensor:
    """Mean of the last hidden states over the attention mask, L2-normalized."""
    enc = tokenizer(list(sentences), padding=True, truncation=True, return_tensors="pt")
    out = model(**enc).last_hidden_state
    mask = enc["attention_mask"].unsqueeze(-1).to(out.dtype)
    emb = (out * mask).sum(1) / mask.sum(1).clamp_min(1e-9)
    return nn.functional.normalize(emb.float(), dim=-1)
