"""PagedKVCache.usage against a brute-force count: every block of every sequence, a shared block once
at its fullest (prefix caching shares blocks between sequences)."""

from __future__ import annotations

import types

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minillm.kv.paged import PagedKVCache

pytestmark = pytest.mark.ch2


def brute_force(seqs, bs: int) -> int:
    filled: dict[int, int] = {}
    for s in seqs:
        for i, block in enumerate(s.block_table):
            n = min(bs, max(0, s.num_computed_tokens - i * bs))
            filled[block] = max(filled.get(block, 0), n)
    return sum(filled.values())


@st.composite
def sequences(draw):
    bs = draw(st.sampled_from([1, 4, 16]))
    num_blocks = draw(st.integers(1, 40))
    seqs = []
    for _ in range(draw(st.integers(0, 8))):
        n = draw(st.integers(0, 6))
        table = [draw(st.integers(0, num_blocks - 1)) for _ in range(n)]  # repeats: shared blocks
        computed = draw(st.integers(0, n * bs))
        seqs.append(types.SimpleNamespace(block_table=table, num_computed_tokens=computed))
    return bs, num_blocks, seqs


@settings(max_examples=200, deadline=None)
@given(sequences())
def test_usage_counts_each_block_once_at_its_fullest(case):
    bs, num_blocks, seqs = case
    kv = PagedKVCache.__new__(PagedKVCache)  # the pool's tensors play no part in the count
    kv.block_size = bs
    kv.manager = types.SimpleNamespace(num_blocks=num_blocks, num_free_blocks=num_blocks // 2)
    used, allocated, total = kv.usage(iter(seqs))
    assert used == brute_force(seqs, bs)
    assert (allocated, total) == ((num_blocks - num_blocks // 2) * bs, num_blocks * bs)
