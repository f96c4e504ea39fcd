"""Request lifecycle: a call owns its requests. A batch that fails validation queues nothing; a
generate interrupted by an exception or Ctrl-C and a stream left early abort their unfinished
requests; the next call returns only its own outputs and finds the KV pool entirely free.
Engine.abort_request frees a request's blocks at once, queued or running."""

from __future__ import annotations

import pytest
import torch

from minillm import DEFAULT_MODEL, LLM, SamplingParams

pytestmark = pytest.mark.ch1

GREEDY = SamplingParams(max_tokens=12, temperature=0.0, ignore_eos=True)


def pool_is_free(engine) -> bool:
    """Every block free, or owned by the prefix cache and unlocked; nothing queued or running."""
    if engine.has_unfinished():
        return False
    kv = engine.kv
    if engine.config.kv_cache == "contiguous":
        return kv.num_free_rows == kv.num_rows
    cached = getattr(getattr(kv.manager, "cache", None), "evictable_size", 0)
    if getattr(kv.manager, "cache", None) is not None and kv.manager.cache.protected_size:
        return False
    if hasattr(kv.manager.allocator, "cached"):  # hash cache: freed cached blocks stay in the free queue
        return kv.manager.num_free_blocks == kv.num_blocks
    return kv.manager.num_free_blocks + cached == kv.num_blocks


@pytest.fixture(scope="module", params=["naive", "paged", "unified"])
def llm(request):
    return LLM(DEFAULT_MODEL, stage=request.param, kv_cache_tokens=2048, max_model_len=256, max_num_seqs=8)


@pytest.fixture(scope="module")
def reference(llm):
    return llm.generate(["class C:"], GREEDY)[0]


def test_failed_batch_queues_nothing(llm, reference):
    with pytest.raises(ValueError, match="prompt 1"):
        llm.generate(["def f():", ""], GREEDY)
    assert pool_is_free(llm.engine)
    outs = list(llm.stream(["class C:"], GREEDY))
    assert {o.request_id for o in outs} == {outs[-1].request_id}
    assert "".join(o.delta_text for o in outs) == reference.text


def test_interrupted_generate_aborts_its_requests(llm, reference, monkeypatch):
    step, calls = llm.engine.step, []

    def interrupted_step():
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return step()

    monkeypatch.setattr(llm.engine, "step", interrupted_step)
    with pytest.raises(KeyboardInterrupt):
        llm.generate(["def f():", "import os", "x = 1"], GREEDY)
    monkeypatch.undo()
    assert pool_is_free(llm.engine)
    outs = llm.generate(["class C:"], GREEDY)
    assert len(outs) == 1 and outs[0].text == reference.text


def test_abandoned_stream_aborts_its_requests(llm, reference):
    for out in llm.stream(["def f():", "import os"], GREEDY):
        if out.token_ids:
            break
    assert pool_is_free(llm.engine)
    stream = llm.stream(["for i in"], GREEDY)
    next(stream)
    stream.close()
    assert pool_is_free(llm.engine)
    assert llm.generate(["class C:"], GREEDY)[0].text == reference.text


def test_abort_request_frees_blocks_at_once(llm, reference):
    engine = llm.engine
    ids = [engine.add_request(p, GREEDY) for p in ["def f():", "import os", "x = 1"]]
    engine.step()
    engine.step()
    engine.abort_request(ids[0])  # running
    engine.abort_request(ids[0])  # twice: a no-op
    engine.abort_request(12345)  # unknown: a no-op
    for rid in ids[1:]:
        engine.abort_request(rid)
    assert pool_is_free(engine)
    assert llm.generate(["class C:"], GREEDY)[0].text == reference.text


def test_abort_a_waiting_request():
    llm = LLM(DEFAULT_MODEL, stage="unified", kv_cache_tokens=2048, max_num_seqs=1)
    a = llm.engine.add_request("def f():", GREEDY)
    b = llm.engine.add_request("import os", GREEDY)
    llm.engine.step()  # a runs, b waits (max_num_seqs=1)
    llm.engine.abort_request(b)
    finished = []
    while llm.engine.has_unfinished():
        finished += [o.request_id for o in llm.engine.step() if o.finished]
    assert finished == [a]
    assert pool_is_free(llm.engine)


@pytest.mark.parametrize(
    "call, field",
    [
        (lambda llm: llm.generate(5), "prompts"),
        (lambda llm: llm.generate(["a"], {"max_tokens": 3}), "sampling_params"),
        (lambda llm: llm.generate(prompt_token_ids=torch.tensor([[1, 2]])), "prompt_token_ids"),
        (lambda llm: llm.generate(prompt_token_ids=[torch.tensor([1, 2])]), "prompt_token_ids"),
        (lambda llm: llm.generate(["a"], [GREEDY, 3]), "sampling_params"),
        (lambda llm: llm.generate(["a"], [{"max_tokens": 3}]), "sampling_params"),
    ],
)
def test_wrong_types_name_the_field(call, field):
    llm = LLM(DEFAULT_MODEL, stage="paged", kv_cache_tokens=1024)
    with pytest.raises(ValueError, match=field):
        call(llm)
    assert pool_is_free(llm.engine)


def test_max_tokens_beyond_max_model_len_warns():
    llm = LLM(DEFAULT_MODEL, stage="paged", kv_cache_tokens=1024, max_model_len=32)
    with pytest.warns(UserWarning, match="max_model_len=32"):
        out = llm.generate(["def f():"], SamplingParams(max_tokens=100, temperature=0.0, ignore_eos=True))[0]
    assert out.finish_reason == "length" and len(out.prompt_token_ids) + len(out.token_ids) == 32


def test_step_stats_are_bounded():
    llm = LLM(DEFAULT_MODEL, stage="paged", kv_cache_tokens=1024)
    assert llm.engine.step_stats.maxlen is not None
    llm.generate(["def f():"], GREEDY)
    stats = list(llm.engine.step_stats)
    assert len(stats) == GREEDY.max_tokens
    assert set(stats[-1].phase_s) == {"schedule", "prepare", "forward", "sample", "update"}


def test_a_request_aborted_from_outside_ends_the_call():
    llm = LLM(DEFAULT_MODEL, stage="paged", kv_cache_tokens=1024)
    stream = llm.stream(["def f():"], GREEDY)
    first = next(stream)
    llm.engine.abort_request(first.request_id)
    with pytest.raises(RuntimeError, match="aborted"):
        next(stream)
    assert pool_is_free(llm.engine)


@pytest.mark.parametrize("loop", [{}, {"async_output": True}, {"async_scheduling": True}])
def test_final_only_requests_emit_once_with_the_cumulative_result(loop):
    """SamplingParams.output_kind="final_only" (vLLM's RequestOutputKind.FINAL_ONLY): one output per
    request, when it finishes, equal to the last cumulative output (text, ids, reason, metrics); the
    cumulative kind still emits at every step. LLM.generate asks for final_only on copies of the
    caller's params."""
    llm = LLM(DEFAULT_MODEL, stage="unified", kv_cache_tokens=2048, max_model_len=256, **loop)
    engine = llm.engine
    prompts = ["def f():", "import os", "class Stack:"]
    kinds = {"cumulative": [], "final_only": []}
    params = {k: SamplingParams(max_tokens=9, temperature=0.0, stop=["\n\n"], output_kind=k) for k in kinds}
    ids = {engine.add_request(p, params[k]): k for k in kinds for p in prompts}
    while engine.has_unfinished():
        for out in engine.step():
            kinds[ids[out.request_id]].append(out)
    assert all(o.finished for o in kinds["final_only"]) and len(kinds["final_only"]) == len(prompts)
    assert len(kinds["cumulative"]) > len(prompts)  # one per step that advanced a request
    last = {o.request_id % len(prompts): o for o in kinds["cumulative"] if o.finished}
    for o in kinds["final_only"]:
        want = last[o.request_id % len(prompts)]
        assert (o.text, o.token_ids, o.finish_reason) == (want.text, want.token_ids, want.finish_reason)
        assert o.delta_text == o.text and o.metrics.num_output_tokens == want.metrics.num_output_tokens
    mine = SamplingParams(max_tokens=9, temperature=0.0, stop=["\n\n"])
    assert [o.text for o in llm.generate(prompts, mine)] == [last[i].text for i in range(len(prompts))]
    assert mine.output_kind == "cumulative"  # the caller's object is not changed
    with pytest.raises(ValueError, match="SamplingParams.output_kind"):
        SamplingParams(output_kind="delta")
