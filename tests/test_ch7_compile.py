"""Chapter 7: stage triton's attention is one custom operator per layer, so a compiled decode forward
traces around it: no graph break, no recompile as the batch shrinks, the same tokens as stage unified.
On the GPU the stage compiles its decode forward with Inductor; on the CPU the kernels run in Triton's
interpreter and the stage runs eagerly, so this test compiles it by hand (aot_eager: functionalization
of the operator's in-place cache write, without Inductor's code generation).
"""

from __future__ import annotations

import pytest
import torch

from minillm import LLM, SamplingParams
from minillm.compile import InspectingBackend, compile_model

pytestmark = pytest.mark.ch7


def test_compiled_decode_forward_around_the_triton_operator(tiny_path):
    prompts = [[5, 6, 7, 8, 9], [10, 11], [12, 13, 14]]
    params = [SamplingParams(max_tokens=n, temperature=0.0, ignore_eos=True) for n in (3, 7, 5)]
    opts = dict(max_num_batched_tokens=64, max_num_seqs=4, kv_cache_tokens=512)
    want = LLM(tiny_path, stage="unified", **opts).generate(prompt_token_ids=prompts, sampling_params=params)
    llm = LLM(tiny_path, stage="triton", **opts)
    assert llm.engine.runner.decode_forward is llm.engine.model  # eager in the interpreter
    torch._dynamo.reset()
    with InspectingBackend(then="aot_eager") as b:
        llm.engine.runner.decode_forward = compile_model(llm.engine.model, "default", backend=b)
        got = llm.generate(prompt_token_ids=prompts, sampling_params=params)
    torch._dynamo.reset()
    assert [o.token_ids for o in got] == [o.token_ids for o in want]
    assert b.graphs and not b.breaks and not b.recompiles, b.report()  # batches of 3, 2 and 1: one trace
    ops = set().union(*(g.op_counts for g in b.graphs))
    assert any("triton_attention" in str(op) for op in ops), ops
