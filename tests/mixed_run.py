"""Helpers shared by the chapter 6 and 7 tests: a unified engine run that meets every batch structure
(a request every 5 steps, prompts up to three chunks of a 32-token budget, so steps are prefill-only,
decode-only and mixed), and an engine whose runner replays decode steps through simulated CUDA graphs."""

from __future__ import annotations

import random

import torch

from minillm import LLM, SamplingParams
from minillm.graphs import CUDAGraphRunner


def mixed_run(llm, steps: int = 60, seed: int = 0) -> tuple[dict[int, list[int]], set[str]]:
    """Every finished request's tokens, and the kinds of batch the run saw."""
    engine, rng = llm.engine, random.Random(seed)
    done, kinds = {}, set()
    for step in range(steps):
        if step % 5 == 0:
            prompt = [rng.randrange(3, 300) for _ in range(rng.randint(1, 70))]
            params = SamplingParams(max_tokens=rng.randint(1, 24), temperature=0.0, ignore_eos=True)
            engine.add_request(prompt, params)
        done.update({o.request_id: o.token_ids for o in engine.step() if o.finished})
        b = engine.step_stats[-1]
        kinds.add("decode" if b.num_tokens == b.num_seqs else "prefill" if b.num_seqs == 1 else "mixed")
    return done, kinds


def simulated_graph_llm(path, backend_cls, widths=None, **opts):
    """Stage unified with its runner swapped for a CUDAGraphRunner(simulate=True) over backend_cls (no
    graph, the same padded buffers), capture batch sizes 1, 2, 4, 8; widths: block-table widths
    captured (None: only the widest, as stage triton captures)."""
    llm = LLM(path, stage="unified", **opts)
    e = llm.engine
    runner = CUDAGraphRunner(
        e.model,
        backend_cls(e.kv),
        e.kv,
        "cpu",
        max_num_tokens=e.config.max_num_batched_tokens,
        max_num_seqs=e.config.max_num_seqs,
        max_model_len=e.max_model_len,
        batch_sizes=[1, 2, 4, 8],
        widths=widths or [-(-e.max_model_len // e.kv.block_size)],
        simulate=True,
    )
    runner.capture()
    e.runner = runner
    return llm


def assert_padded_rows_write_only_the_dummy_block(llm) -> None:
    """Three requests (block_size 4) prefilled eagerly, then one decode step of 3 rows replayed in the
    4-row graph: in every layer the K cache changes only in the three rows' current blocks and in the
    dummy block, which the padded row must have written."""
    engine, kv = llm.engine, llm.engine.kv
    for p in ([5, 6, 7], [8, 9], [10, 11, 12, 13, 14]):
        engine.add_request(p, SamplingParams(max_tokens=8, temperature=0.0, ignore_eos=True))
    engine.step()  # prefill, eager
    before = [t.clone() for t in kv.k_cache]
    batch_rows = len(engine.scheduler.running)
    engine.step()  # 3 decodes in the 4-row graph: one padded row
    assert engine.runner.num_replays == 1 and batch_rows == 3
    written = {s.block_table[(s.num_computed_tokens - 1) // 4] for s in engine.scheduler.running}
    for layer, (old, new) in enumerate(zip(before, kv.k_cache)):
        changed = {b for b in range(kv.num_blocks + 1) if not torch.equal(old[b], new[b])}
        assert changed <= written | {kv.dummy_block}, (layer, changed)
        assert kv.dummy_block in changed  # the padded row wrote there
