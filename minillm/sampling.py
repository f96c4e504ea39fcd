"""Batched sampling: greedy, temperature, top-k, top-p, per-request seeds.

One call samples the whole batch. Rows may mix greedy and random requests. Logits processors run
first, in order, each `(logits (B, V), seqs) -> logits`: constrained decoding's FSM mask (chapter 5)
is one (GuideMask), as vLLM applies structured-output bitmasks to the logits before sampling. Random rows use the
exponential-race trick vLLM uses: argmax(p / q) with q ~ Exp(1) draws from p, and lets each seeded
request draw its own q from its own generator, so its tokens do not depend on who shares the batch.

Logprobs (chapter 9): token_logprobs turns rows of logits into vLLM's {token id: logprob} entries.

Checked by: pytest -m ch1 -k sampl; logprobs by pytest -m ch9.
"""

from __future__ import annotations

import time

import torch

from minillm.constrained.guide import mask_logits
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


class GuideMask:
    """Rows of constrained requests keep only the tokens their guide allows in its current state.
    `seconds` adds up the time spent here (chapter 5 reports constrained decoding's host cost)."""

    def __init__(self):
        self.seconds = 0.0

    def __call__(self, logits: torch.Tensor, seqs: list[Sequence]) -> torch.Tensor:
        if all(s.guide is None for s in seqs):
            return logits
        t0 = time.perf_counter()
        logits = mask_logits(logits, [(s.guide, s.guide_state) if s.guide else None for s in seqs])
        self.seconds += time.perf_counter() - t0
        return logits


class Sampler:
    def __init__(self, device: str, seed: int = 0, logits_processors=()):
        # Unseeded requests share this generator, so a whole run is reproducible from LLM(seed=...).
        self.generator = torch.Generator(device=device).manual_seed(seed)
        self.logits_processors = list(logits_processors)

    def __call__(self, logits: torch.Tensor, seqs: list[Sequence]) -> list[int]:
        """logits (B, V) float32 for the B sequences that sample this step -> one token id each."""
        return self.sample(logits, seqs).tolist()

    def sample(self, logits: torch.Tensor, seqs: list[Sequence]) -> torch.Tensor:
        """The same, left on the device: (B,) int64 (async scheduling reads it one step later)."""
        for process in self.logits_processors:
            logits = process(logits, seqs)
        greedy_tokens = logits.argmax(dim=-1)  # (B,)
        params = [s.params for s in seqs]
        if all(p.greedy for p in params):
            return greedy_tokens
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
        return torch.where(is_greedy, greedy_tokens, random_tokens)


def token_logprobs(logits: torch.Tensor, token_ids: list[int], k: list[int]) -> list[dict[int, float]]:
    """logits (N, V) float32; row i's entry: {token_ids[i]: its logprob, then the k[i] most likely
    tokens} (vLLM's shape: the actual token is always there, ranked or not)."""
    logprobs = logits.log_softmax(dim=-1)  # (N, V)
    ids = torch.tensor(token_ids, device=logits.device)
    chosen = logprobs.gather(-1, ids[:, None])[:, 0].tolist()  # (N,)
    top = logprobs.topk(max(k), dim=-1) if max(k, default=0) > 0 else None  # (N, K) each
    entries = []
    for i, (tok, lp) in enumerate(zip(token_ids, chosen)):
        entry = {tok: lp}
        if top is not None and k[i] > 0:
            for t, v in zip(top.indices[i, : k[i]].tolist(), top.values[i, : k[i]].tolist()):
                entry.setdefault(t, v)
        entries.append(entry)
    return entries
