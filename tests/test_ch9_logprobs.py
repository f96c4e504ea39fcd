"""Chapter 9: prompt and sampled-token logprobs against transformers (float32, CPU), on every stage
that batches, with and without the prefix cache serving part of the prompt.

Run: pytest -m ch9 tests/test_ch9_logprobs.py
"""

from __future__ import annotations

import pytest
import torch

from minillm import LLM, SamplingParams

pytestmark = pytest.mark.ch9

PROMPTS = [
    [5, 17, 42, 99, 3, 250, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21],
    [5, 17, 42, 99, 3, 250, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 30, 31],
    [60, 61, 62],
]


def hf_logprobs(hf, ids: list[int]) -> torch.Tensor:
    """(len(ids), V) log-softmax of the logits at every position of ids, from transformers."""
    with torch.no_grad():
        logits = hf(torch.tensor([ids])).logits[0].float()
    return logits.log_softmax(dim=-1)


@pytest.fixture(scope="module")
def hf_tiny(tiny_model_with_tokenizer):
    return tiny_model_with_tokenizer[1].float().eval()


@pytest.mark.parametrize("stage", ["paged", "radix", "unified"])
def test_prompt_logprobs_equal_transformers(tiny_path, hf_tiny, stage):
    llm = LLM(
        tiny_path,
        stage=stage,
        max_model_len=128,
        kv_cache_tokens=2048,
        block_size=4,
        max_num_batched_tokens=16 if stage == "unified" else 256,
    )
    sp = SamplingParams(max_tokens=3, temperature=0.0, ignore_eos=True, prompt_logprobs=2, logprobs=1)
    for _ in range(2):  # the second round finds the prompts cached: logprobs must not change
        outs = llm.generate(prompt_token_ids=PROMPTS, sampling_params=sp)
        for ids, out in zip(PROMPTS, outs):
            ref = hf_logprobs(hf_tiny, ids + out.token_ids)
            assert out.prompt_logprobs[0] is None and len(out.prompt_logprobs) == len(ids)
            for p in range(1, len(ids)):
                entry = out.prompt_logprobs[p]
                assert list(entry)[0] == ids[p]
                top = ref[p - 1].topk(2).indices.tolist()
                assert set(top) <= set(entry)
                for t, lp in entry.items():
                    assert lp == pytest.approx(ref[p - 1, t].item(), abs=1e-4)
            assert len(out.logprobs) == len(out.token_ids)
            for j, (tok, entry) in enumerate(zip(out.token_ids, out.logprobs)):
                pos = len(ids) - 1 + j
                assert entry[tok] == pytest.approx(ref[pos, tok].item(), abs=1e-4)
                assert ref[pos].argmax().item() in entry  # greedy: the top token is the sampled one


def test_logprob_start_len_keeps_the_prefix_cached(tiny_path, hf_tiny):
    """SGLang's rule: the radix cache may serve tokens before logprob_start_len - 1, no further."""
    llm = LLM(tiny_path, stage="radix", max_model_len=128, kv_cache_tokens=2048, block_size=4)
    prefix = PROMPTS[0][:16]
    llm.generate(prompt_token_ids=[prefix + [1]], sampling_params=SamplingParams(max_tokens=1))
    ids = prefix + [77, 78, 79]
    sp = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0, logprob_start_len=16)
    out = llm.generate(prompt_token_ids=[ids], sampling_params=sp)[0]
    assert out.metrics.num_cached_tokens == 12  # blocks wholly before position 15
    assert out.prompt_logprobs[:16] == [None] * 16
    ref = hf_logprobs(hf_tiny, ids)
    for p in range(16, len(ids)):
        assert out.prompt_logprobs[p] == {ids[p]: pytest.approx(ref[p - 1, ids[p]].item(), abs=1e-4)}
    no_logprobs = llm.generate(prompt_token_ids=[ids], sampling_params=SamplingParams(max_tokens=1))[0]
    assert no_logprobs.metrics.num_cached_tokens == 16 and no_logprobs.prompt_logprobs is None


def test_default_requests_carry_no_logprobs(tiny_path):
    llm = LLM(tiny_path, stage="radix", max_model_len=64)
    out = llm.generate(prompt_token_ids=[PROMPTS[2]], sampling_params=SamplingParams(max_tokens=2))[0]
    assert out.logprobs is None and out.prompt_logprobs is None


@pytest.mark.parametrize(
    "field, value",
    [("logprobs", -1), ("prompt_logprobs", 1.5), ("logprob_start_len", -2), ("logprobs", True)],
)
def test_bad_logprob_fields_name_the_field(field, value):
    with pytest.raises(ValueError, match=f"SamplingParams.{field}"):
        SamplingParams(**{field: value})
