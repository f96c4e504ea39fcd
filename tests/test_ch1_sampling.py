"""Chapter 1: batched sampling against brute force and against the distribution it should draw from."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from minillm.request import SamplingParams, Sequence
from minillm.sampling import Sampler, apply_top_k_top_p

pytestmark = pytest.mark.ch1


def brute_force_keep(logits: list[float], top_k: int, top_p: float) -> set[int]:
    order = sorted(range(len(logits)), key=lambda i: (-logits[i], i))
    if top_k:
        order = order[:top_k]
    z = [math.exp(logits[i] - logits[order[0]]) for i in order]
    probs = [x / sum(z) for x in z]
    kept, mass = [], 0.0
    for i, p in zip(order, probs):
        if top_p < 1 and kept and mass >= top_p - 1e-6:  # top_p = 1 keeps everything, however small
            break
        kept.append(i)
        mass += p
    return set(kept)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(-50, 50), min_size=2, max_size=12, unique=True),
    st.integers(0, 12),
    st.sampled_from([0.05, 0.3, 0.5, 0.77, 0.95, 1.0]),
)
def test_top_k_top_p_keep_the_brute_force_set(raw, top_k, top_p):
    logits = [x / 7 for x in raw]  # distinct values: no ties at the cut
    out = apply_top_k_top_p(
        torch.tensor([logits], dtype=torch.float64),
        torch.tensor([top_k]),
        torch.tensor([top_p], dtype=torch.float64),
    )
    kept = {i for i, v in enumerate(out[0].tolist()) if v != float("-inf")}
    want = brute_force_keep(logits, top_k, top_p)
    # a token whose preceding mass lands within float error of top_p may go either way
    assert kept == want or abs(len(kept) - len(want)) == 1 and kept ^ want


def seqs_for(params_list):
    return [Sequence(i, [1], p) for i, p in enumerate(params_list)]


def test_empirical_distribution_matches_softmax():
    torch.manual_seed(0)
    logits = torch.randn(6) * 2
    for temperature, top_k in ((1.0, 0), (0.5, 0), (1.0, 3)):
        n = 20000
        p = SamplingParams(temperature=temperature, top_k=top_k)
        sampler = Sampler("cpu", seed=1)
        tokens = sampler(logits.expand(n, 6).clone(), seqs_for([p] * n))
        counts = torch.bincount(torch.tensor(tokens), minlength=6).double() / n
        scaled = logits / temperature
        if top_k:
            scaled[scaled < scaled.topk(top_k).values[-1]] = float("-inf")
        expected = torch.softmax(scaled.double(), -1)
        assert (counts - expected).abs().max() < 0.015, (temperature, top_k, counts, expected)


def test_greedy_rows_and_degenerate_filters_are_argmax():
    torch.manual_seed(1)
    logits = torch.randn(4, 50)
    params = [
        SamplingParams(temperature=0),
        SamplingParams(top_k=1),
        SamplingParams(top_p=1e-6),
        SamplingParams(temperature=0, top_k=5),
    ]
    assert Sampler("cpu")(logits, seqs_for(params)) == logits.argmax(-1).tolist()


def test_seeded_rows_ignore_the_batch():
    torch.manual_seed(2)
    logits = torch.randn(3, 100)
    p = SamplingParams(temperature=1.0, seed=42)

    def draw(rows):
        seqs = seqs_for([p if r == 0 else SamplingParams() for r in range(len(rows))])
        for s in seqs:
            if s.params.seed is not None:
                s.generator = torch.Generator().manual_seed(s.params.seed)
        return Sampler("cpu", seed=len(rows))(logits[rows], seqs)[0]

    assert draw([0]) == draw([0, 1, 2]) == draw([0, 2])


def test_top_p_one_keeps_the_whole_vocabulary():
    torch.manual_seed(3)
    logits = torch.randn(2, 8192) * 3
    out = apply_top_k_top_p(logits, torch.tensor([0, 0]), torch.tensor([1.0, 1.0]))
    assert torch.equal(out, logits)
