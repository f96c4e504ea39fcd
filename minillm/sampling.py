"""Batched sampling: greedy, temperature, top-k, top-p, per-request seeds.

One call samples the whole batch. Rows may mix greedy and random requests. Random rows use the
exponential-race trick vLLM uses: argmax(p / q) with q ~ Exp(1) draws from p, and lets each seeded
request draw its own q from its own generator, so its tokens do not depend on who shares the batch.

Checked by: pytest -m ch1 -k sampl.
"""

from __future__ import annotations

import torch

from minillm.request import Sequence


def apply_top_k_top_p(logits: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    """logits (B, V); top_k (B,) int, 0 = off; top_p (B,) float, 1 = off. Masked entries become -inf."""
    V = logits.shape[-1]
    sorted_logits, order = logits.sort(dim=-1, descending=True)  # (B, V)
    rank = torch.arange(V, device=logits.device)[None, :]
    k = torch.where(top_k > 0, top_k, V)[:, None]
    drop = rank >= k
    probs = sorted_logits.masked_fill(drop, float("-inf")).softmax(dim=-1)
    # Drop a token once the tokens ranked above it already reach top_p; the first one always stays.
    # Rows with top_p = 1 skip this: a float32 cumsum can reach 1.0 before the tail ends.
    drop |= ((probs.cumsum(dim=-1) - probs) >= top_p[:, None]) & (top_p[:, None] < 1)
    drop[:, 0] = False
    return logits.scatter(-1, order, sorted_logits.masked_fill(drop, float("-inf")))


class Sampler:
    def __init__(self, device: str, seed: int = 0):
        # Unseeded requests share this generator, so a whole run is reproducible from LLM(seed=...).
        self.generator = torch.Generator(device=device).manual_seed(seed)

    def __call__(self, logits: torch.Tensor, seqs: list[Sequence]) -> list[int]:
        """logits (B, V) float32 for the B sequences that sample this step -> one token id each."""
        greedy_tokens = logits.argmax(dim=-1)  # (B,)
        params = [s.params for s in seqs]
        if all(p.greedy for p in params):
            return greedy_tokens.tolist()
        dev = logits.device
        temperature = torch.tensor([p.temperature if not p.greedy else 1.0 for p in params], device=dev)
        top_k = torch.tensor([p.top_k for p in params], device=dev)
        top_p = torch.tensor([p.top_p for p in params], device=dev, dtype=logits.dtype)
        logits = apply_top_k_top_p(logits / temperature[:, None], top_k, top_p)
        probs = logits.softmax(dim=-1)  # (B, V)
        q = torch.empty_like(probs)
        q.exponential_(generator=self.generator)
        for i, s in enumerate(seqs):
            if s.generator is not None:
                q[i].exponential_(generator=s.generator)
        random_tokens = (probs / q).argmax(dim=-1)
        is_greedy = torch.tensor([p.greedy for p in params], device=dev)
        return torch.where(is_greedy, greedy_tokens, random_tokens).tolist()
