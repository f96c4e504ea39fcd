"""The model step is a pure function of device buffers: torch.compile traces the whole forward of a
real unified run (prefill chunks, decodes and mixed batches, arrivals over time) without graph breaks
and without falling back past dynamo's recompile limit, and the compiled run emits the same tokens.
A counting backend (it records each graph and runs it as traced) keeps this test to tracing cost."""

from __future__ import annotations

import pytest
import torch
import torch._dynamo
import torch.fx.experimental._config as fx_config
from mixed_run import mixed_run

from minillm import LLM

pytestmark = pytest.mark.ch6


def unified_run(llm, compiled_forward=None) -> dict[int, list[int]]:
    """mixed_run's 60 steps, with the model's forward wrapped by compiled_forward if given."""
    model = llm.engine.runner.model
    if compiled_forward is not None:
        model.forward = compiled_forward(model.forward)
    try:
        done, kinds = mixed_run(llm)
    finally:
        if compiled_forward is not None:
            del model.forward  # back to the class's forward
    assert kinds >= {"decode", "mixed"}, kinds
    return done


def test_unified_forward_compiles_without_recompile_storm(tiny_path):
    def llm():
        return LLM(
            tiny_path, stage="unified", max_num_batched_tokens=32, kv_cache_tokens=2048, max_num_seqs=8
        )

    eager = unified_run(llm())
    graphs = []

    def counting_backend(gm, example_inputs):
        graphs.append(len(gm.graph.nodes))
        return gm.forward

    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    # Every size is symbolic from the first trace (dynamic=True), sizes of 1 included (size-oblivious),
    # and equal sizes are not assumed to stay equal (no duck shaping): one graph per batch structure.
    with fx_config.patch(backed_size_oblivious=True, use_duck_shape=False):
        compiled = unified_run(llm(), lambda f: torch.compile(f, backend=counting_backend, dynamic=True))
    counters = {k: dict(v) for k, v in torch._dynamo.utils.counters.items()}
    torch._dynamo.reset()
    assert not counters.get("unimplemented"), counters["unimplemented"]  # no graph break, no fallback
    assert counters["frames"]["total"] == counters["frames"]["ok"] == len(graphs)
    # one graph per batch structure (prefill, decode, mixed) and a few size-1 cases, never one per shape
    assert len(graphs) <= 6, f"{len(graphs)} graphs: the forward guards on something that changes per step"
    assert compiled == eager
