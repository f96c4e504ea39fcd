"""Chapter 6: the inspecting backend sees planted breaks and recompiles; stage compiled emits the same
tokens as stage unified over a real mixed run without a recompile storm; the CUDA-graph data path
(padded rows, buckets, the dummy block, the fallback for wide tables) equals eager on the CPU."""

from __future__ import annotations

import random

import pytest
import torch
import torch._dynamo
from mixed_run import assert_padded_rows_write_only_the_dummy_block, mixed_run, simulated_graph_llm

from minillm import LLM, SamplingParams
from minillm.attention.capture import CapturablePagedAttention
from minillm.compile import InspectingBackend
from minillm.graphs import capture_batch_sizes, capture_widths

pytestmark = pytest.mark.ch6


def test_inspecting_backend_reports_breaks_and_recompiles():
    def f(x):
        y = x.sin() + 1
        if y.sum().item() > 0:  # reading a tensor back: a graph break
            y = y * 2
        return y.cos()

    torch._dynamo.reset()
    with InspectingBackend() as b:
        g = torch.compile(f, backend=b)
        for n in (4, 5, 6):  # 4 -> 5 fails a size guard once; then the size is symbolic
            x = torch.randn(n)
            torch.testing.assert_close(g(x), f(x))
    report = b.report()
    assert len(b.breaks) >= 1 and "item" in b.breaks[0].reason and "y.sum().item()" in b.breaks[0].line
    assert any("size" in r for r in b.recompiles), b.recompiles
    assert len(b.graphs) >= 2 and b.graphs[0].op_counts["sin"] + b.graphs[0].op_counts[".sin"] == 1
    assert "graph break" in report and "recompile" in report
    torch._dynamo.reset()


def test_compiled_stage_equals_unified_without_recompile_storm(tiny_path):
    opts = dict(max_num_batched_tokens=32, kv_cache_tokens=2048, max_num_seqs=8)
    eager, kinds = mixed_run(LLM(tiny_path, stage="unified", **opts))
    assert kinds >= {"decode", "mixed"}
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    compiled, _ = mixed_run(LLM(tiny_path, stage="compiled", **opts))
    counters = {k: dict(v) for k, v in torch._dynamo.utils.counters.items()}
    torch._dynamo.reset()
    assert not counters.get("unimplemented"), counters["unimplemented"]  # no break, no fallback
    assert counters["stats"]["unique_graphs"] <= 2, counters["stats"]  # decode steps only, every batch size
    assert compiled == eager


def test_compiled_decode_runs_attention_as_one_operator(tiny_path):
    """Under torch.compile a decode step's cache write, gather and SDPA are one opaque operator per layer
    (as vLLM registers its attention), so Inductor never lowers them itself; tokens equal eager's."""
    opts = dict(max_num_batched_tokens=32, kv_cache_tokens=2048, max_num_seqs=8)
    eager, _ = mixed_run(LLM(tiny_path, stage="unified", **opts), steps=30)
    llm = LLM(tiny_path, stage="unified", **opts)
    torch._dynamo.reset()
    with InspectingBackend() as b:
        runner = llm.engine.runner
        runner.decode_forward = torch.compile(runner.decode_forward, backend=b)
        compiled, _ = mixed_run(llm, steps=30)
    torch._dynamo.reset()
    assert compiled == eager and b.graphs
    layers = llm.engine.model_config.num_layers
    for g in b.graphs:
        assert g.op_counts["paged_decode_attention.default"] == layers, g.op_counts
        assert not any("scaled_dot_product" in op or op == "index_copy_" for op in g.op_counts), g.op_counts


def graph_llm(tiny_path, **opts):
    """Tables wider than 4 blocks (16 tokens at block_size 4) fall back to eager."""
    return simulated_graph_llm(tiny_path, CapturablePagedAttention, widths=[2, 4], **opts)


def test_graph_replay_equals_eager(tiny_path):
    opts = dict(max_num_batched_tokens=64, kv_cache_tokens=1024, max_num_seqs=8, block_size=4)
    rng = random.Random(1)
    prompts = [[rng.randrange(3, 300) for _ in range(rng.randint(1, 9))] for _ in range(7)]
    # different lengths: sequences finish mid-batch, so the batch shrinks between buckets (7, 6, 5, 3)
    params = [SamplingParams(max_tokens=n, temperature=0.0, ignore_eos=True) for n in (3, 9, 4, 14, 6, 11, 2)]
    want = LLM(tiny_path, stage="unified", **opts).generate(prompt_token_ids=prompts, sampling_params=params)
    llm = graph_llm(tiny_path, **opts)
    got = llm.generate(prompt_token_ids=prompts, sampling_params=params)
    assert [o.token_ids for o in got] == [o.token_ids for o in want]
    runner = llm.engine.runner
    assert runner.num_replays > 0  # decode steps replayed (and wide tables fell back to eager)


def test_one_token_prefill_chunks_do_not_replay(tiny_path):
    """With long_prefill_token_threshold=1 every step gives each row one token, but a row in the middle
    of its prompt samples nothing: such a step must not replay a graph (which returns every row's
    logits), or the tokens of the rows after it go to the wrong requests."""
    opts = dict(max_num_batched_tokens=64, kv_cache_tokens=1024, max_num_seqs=8, block_size=4)
    opts["long_prefill_token_threshold"] = 1
    prompts = [[5, 6, 7], [8, 9, 10, 11, 12], [13, 14]]
    params = SamplingParams(max_tokens=4, temperature=0.0, ignore_eos=True)
    want = LLM(tiny_path, stage="unified", **opts).generate(prompt_token_ids=prompts, sampling_params=params)
    llm = graph_llm(tiny_path, **opts)
    got = llm.generate(prompt_token_ids=prompts, sampling_params=params)
    assert [o.token_ids for o in got] == [o.token_ids for o in want]
    assert llm.engine.runner.num_replays > 0  # the steps where every row samples still replay


def test_padded_rows_write_only_the_dummy_block(tiny_path):
    llm = graph_llm(tiny_path, max_num_batched_tokens=64, kv_cache_tokens=1024, max_num_seqs=8, block_size=4)
    assert_padded_rows_write_only_the_dummy_block(llm)


def test_capture_sizes():
    assert capture_batch_sizes(64) == [1, 2, 4, 8, 16, 32, 48, 64]
    assert capture_batch_sizes(3) == [1, 2, 3]
    assert capture_batch_sizes(20) == [1, 2, 4, 8, 16, 20]
    assert capture_widths(128, 16) == [16, 32, 64, 128]
    assert capture_widths(4, 16) == [4]
