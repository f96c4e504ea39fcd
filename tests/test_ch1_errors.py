"""Bad input gets a ValueError that names the field, and leaves the engine usable."""

from __future__ import annotations

import pytest

from minillm import LLM, SamplingParams

pytestmark = pytest.mark.ch1


@pytest.fixture(scope="module")
def llm(tiny_model_with_tokenizer):
    return LLM(
        tiny_model_with_tokenizer[0],
        stage="naive",
        kv_cache_tokens=512,
        max_model_len=64,
        max_num_batched_tokens=64,
    )


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(max_tokens=0), "max_tokens"),
        (dict(max_tokens=-3), "max_tokens"),
        (dict(temperature=-0.1), "temperature"),
        (dict(top_p=0.0), "top_p"),
        (dict(top_p=1.5), "top_p"),
        (dict(top_k=-1), "top_k"),
        (dict(stop=[""]), "stop"),
        (dict(stop_token_ids=[-1]), "stop_token_ids"),
        (dict(seed="x"), "seed"),
        (dict(top_k=True), "top_k"),
        (dict(max_tokens=True), "max_tokens"),
    ],
)
def test_sampling_params_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        SamplingParams(**kwargs)


@pytest.mark.parametrize(
    "call, field",
    [
        (lambda llm: llm.generate([""]), "empty"),
        (lambda llm: llm.generate(prompt_token_ids=[[]]), "empty"),
        (lambda llm: llm.generate(prompt_token_ids=[list(range(1, 70))]), "max_model_len"),
        (lambda llm: llm.generate(prompt_token_ids=[[1, 10**6]]), "vocabulary"),
        (lambda llm: llm.generate(["a", "b"], [SamplingParams()]), "sampling_params"),
        (lambda llm: llm.generate(["a"], SamplingParams(regex="[0-9]+")), "regex"),
        (lambda llm: llm.generate(), "prompts"),
        (lambda llm: llm.generate(["a"], prompt_token_ids=[[1]]), "prompt_token_ids"),
    ],
)
def test_generate_rejects_bad_requests_before_queueing(llm, call, field):
    with pytest.raises(ValueError, match=field):
        call(llm)
    assert not llm.engine.has_unfinished()
    assert llm.engine.kv.num_free_rows == llm.engine.kv.num_rows


def test_one_bad_prompt_queues_nothing(llm):
    with pytest.raises(ValueError, match="prompt 1"):
        llm.generate(prompt_token_ids=[[1, 2], [], [3]])
    assert not llm.engine.has_unfinished()
    assert len(llm.generate(prompt_token_ids=[[1, 2]], sampling_params=SamplingParams(max_tokens=2))) == 1


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(stage="warp"), "stage"),
        (dict(block_size=0), "block_size"),
        (dict(kv_cache_tokens=-1), "kv_cache_tokens"),
        (dict(max_num_seqs=0), "max_num_seqs"),
        (dict(dtype="int8"), "dtype"),
        (dict(device="tpu"), "device"),
        (dict(max_model_len=10_000), "max_model_len"),
        (dict(stage="naive", kv_cache_tokens=32, max_model_len=64), "kv_cache_tokens"),
        (dict(not_an_option=1), "not_an_option"),
        (dict(load_format="pickle"), "load_format"),
        (dict(seed=2**70), "seed"),
        (dict(seed=True), "seed"),
        (dict(kv_cache_tokens=True), "kv_cache_tokens"),
    ],
)
def test_engine_options_name_the_field(tiny_model_with_tokenizer, kwargs, field):
    with pytest.raises(ValueError, match=field):
        LLM(tiny_model_with_tokenizer[0], **kwargs)


def test_gpu_memory_utilization_on_the_cpu_says_it_is_ignored(tiny_model_with_tokenizer):
    with pytest.warns(UserWarning, match="gpu_memory_utilization is ignored on the CPU"):
        LLM(tiny_model_with_tokenizer[0], stage="paged", gpu_memory_utilization=0.5)
