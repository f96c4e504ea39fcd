"""Logprobs (chapter 9): attaching prompt and sampled-token logprobs to the sequences that asked.

Engine.step() finds the prompt positions of a step whose logits give a prompt logprob
(prompt_logprob_rows), has the runner return those rows beside the sampling rows, and attaches the
entries here, as it does for sampled tokens; the numbers come from sampling.token_logprobs, over the
logits as the model gave them.

Checked by: pytest -m ch9.
"""

from __future__ import annotations

import torch

from minillm.request import Sequence
from minillm.sampling import token_logprobs


def any_prompt_logprobs(seqs: list[Sequence]) -> bool:
    return any(s.prompt_logprobs is not None for s in seqs)


def prompt_logprob_rows(batch) -> list[tuple[int, Sequence, int]]:
    """(flat index in this step's tokens, sequence, the prompt token that follows) for every
    position whose logits give a prompt logprob still missing: each position once, in order (a
    recompute after preemption adds nothing twice). Position P - 1 predicts an output token."""
    rows, offset = [], 0
    for seq, n in zip(batch.seqs, batch.num_new_tokens):
        if seq.prompt_logprobs is not None:
            start = seq.num_computed_tokens
            for q in range(
                max(start, len(seq.prompt_logprobs) - 1), min(start + n, seq.num_prompt_tokens - 1)
            ):
                rows.append((offset + q - start, seq, seq.prompt_token_ids[q + 1]))
        offset += n
    return rows


def add_prompt_logprobs(rows, prompt_logits: torch.Tensor) -> None:
    entries = token_logprobs(
        prompt_logits, [t for _, _, t in rows], [s.params.prompt_logprobs for _, s, _ in rows]
    )
    for (_, seq, _), entry in zip(rows, entries):
        seq.prompt_logprobs.append(entry)


def add_logprobs(logits: torch.Tensor, sampling: list[Sequence], tokens: list[int]) -> None:
    rows = [i for i, s in enumerate(sampling) if s.logprobs is not None]
    entries = token_logprobs(
        logits[rows], [tokens[i] for i in rows], [sampling[i].params.logprobs for i in rows]
    )  # logits (len(rows), V): raw, as the model gave them
    for i, entry in zip(rows, entries):
        sampling[i].logprobs.append(entry)
