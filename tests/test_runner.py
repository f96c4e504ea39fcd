"""The runner owns its buffers: the flat batch it builds with numpy equals the per-token definition,
padded block-table entries are the dummy block, every step reuses the same device buffers, and no
module in minillm/kv imports minillm.attention (the floors of the design)."""

from __future__ import annotations

import ast
import random
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from minillm import DEFAULT_MODEL, LLM, SamplingParams
from minillm.attention.paged import PagedAttention
from minillm.kv.paged import PagedKVCache
from minillm.request import Sequence
from minillm.runner import ModelRunner
from minillm.scheduler import ScheduledBatch

pytestmark = pytest.mark.ch2


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 40), st.integers(0, 40), st.integers(0, 8)), min_size=1, max_size=6))
def test_prepare_equals_the_per_token_definition(shapes):
    """shapes: per sequence (prompt length, tokens already computed, output tokens so far)."""
    bs = 4
    kv = PagedKVCache(1, 64, bs, 1, 8, torch.float32, "cpu")
    runner = ModelRunner(None, PagedAttention(kv), kv, "cpu", max_num_tokens=512, max_num_seqs=8)
    free = list(range(64))
    random.Random(len(shapes)).shuffle(free)
    seqs, num_new = [], []
    for i, (p, c, o) in enumerate(shapes):
        seq = Sequence(i, [100 + i * 50 + j for j in range(p)], SamplingParams())
        seq.output_token_ids = [7000 + j for j in range(o)]
        seq.num_computed_tokens = min(c, seq.num_tokens - 1)
        seq.block_table = [free.pop() for _ in range(-(-seq.num_tokens // bs))]
        seqs.append(seq)
        num_new.append(seq.num_tokens - seq.num_computed_tokens)
    input_ids, positions, meta, logits_indices = runner.prepare(ScheduledBatch(seqs, num_new))
    step = meta.step
    ids, pos, slots = [], [], []
    for seq, n in zip(seqs, num_new):  # the definition, one token at a time
        for p in range(seq.num_computed_tokens, seq.num_computed_tokens + n):
            ids.append(seq.token_ids[p])
            pos.append(p)
            slots.append(seq.block_table[p // bs] * bs + p % bs)
    assert input_ids.tolist() == ids and positions.tolist() == pos and step.slot_mapping.tolist() == slots
    width = max(len(s.block_table) for s in seqs)
    tables = [s.block_table + [kv.dummy_block] * (width - len(s.block_table)) for s in seqs]
    assert step.block_tables.tolist() == tables
    assert all(0 <= s < kv.dummy_block * bs for s in slots)  # real tokens never touch the dummy block
    ends = [sum(num_new[: b + 1]) - 1 for b in range(len(seqs))]
    assert logits_indices.tolist() == ends
    assert step.context_lens.tolist() == [s.num_computed_tokens + n for s, n in zip(seqs, num_new)]
    # the views are the front of the runner's persistent buffers
    assert input_ids.data_ptr() == runner.input_ids.data_ptr()
    assert step.block_tables.data_ptr() == runner.block_tables.data_ptr()


def test_steps_reuse_the_same_buffers():
    llm = LLM(DEFAULT_MODEL, stage="unified", max_num_batched_tokens=32, kv_cache_tokens=2048, max_num_seqs=4)
    runner = llm.engine.runner
    names = ("input_ids", "positions", "slot_mapping", "block_tables", "context_lens", "cu_seqlens_q")
    before = {n: getattr(runner, n).data_ptr() for n in names}
    llm.generate(["def f(x):", "import os\nimport sys\n" * 4], SamplingParams(max_tokens=8, temperature=0.0))
    assert {n: getattr(runner, n).data_ptr() for n in names} == before
    pool = llm.engine.kv
    assert pool.k_cache[0].shape[0] == pool.num_blocks + 1  # the dummy block, beyond the manager's blocks


def test_kv_never_imports_attention():
    kv_dir = Path(__file__).parents[1] / "minillm" / "kv"
    for path in kv_dir.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                assert not (node.module or "").startswith("minillm.attention"), path.name
            elif isinstance(node, ast.Import):
                assert not any(a.name.startswith("minillm.attention") for a in node.names), path.name
