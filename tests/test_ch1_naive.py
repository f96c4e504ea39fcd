"""Chapter 1: the no-cache loop and stage naive (contiguous KV, static batching) are the same
function as transformers' generate; static batching behaves as described; stops and metrics."""

from __future__ import annotations

import pytest
import torch

from minillm import LLM, SamplingParams

pytestmark = pytest.mark.ch1

GREEDY = SamplingParams(max_tokens=24, temperature=0.0, ignore_eos=True)
PROMPTS = [[5, 17, 33, 2, 9, 100, 7], [8, 9], list(range(40, 75)), [300], [11, 12, 13, 14, 15]]


@pytest.fixture(scope="module")
def model_path(tiny_model_with_tokenizer):
    return tiny_model_with_tokenizer[0]


@pytest.fixture(scope="module")
def naive(model_path):
    return LLM(model_path, stage="naive", kv_cache_tokens=1024, max_model_len=128, max_num_seqs=2)


def hf_greedy(hf, prompt, n):
    out = hf.generate(
        torch.tensor([prompt]), max_new_tokens=n, do_sample=False, eos_token_id=None, pad_token_id=0
    )
    return out[0, len(prompt) :].tolist()


def test_no_cache_and_kv_cache_and_transformers_agree(tiny_model_with_tokenizer, naive):
    path, hf = tiny_model_with_tokenizer
    no_cache = LLM(path, stage="naive", kv_cache="none", max_model_len=128, max_num_seqs=3)
    a = no_cache.generate(prompt_token_ids=PROMPTS, sampling_params=GREEDY)
    b = naive.generate(prompt_token_ids=PROMPTS, sampling_params=GREEDY)
    for p, x, y in zip(PROMPTS, a, b):
        assert x.token_ids == y.token_ids == hf_greedy(hf, p, 24)


def test_static_batching_admits_only_when_the_batch_is_done(naive):
    engine = naive.engine
    lengths = [3, 9, 5, 2, 7]
    for p, n in zip(PROMPTS, lengths):
        engine.add_request(p, SamplingParams(max_tokens=n, temperature=0.0, ignore_eos=True))
    first = engine._next_id - len(lengths)
    steps = []
    while engine.has_unfinished():
        steps.append({o.request_id - first for o in engine.step()})
    # batches of max_num_seqs=2 in arrival order; each lasts as long as its longest member
    assert steps[0] == {0, 1} and steps[8] == {1} and steps[9] == {2, 3}
    assert steps[14] == {4} and len(steps) == 9 + 5 + 7
    assert all(len(s) <= 2 for s in steps)
    assert engine.kv.num_free_rows == engine.kv.num_rows  # every row returned


def test_kv_rows_limit_the_batch(model_path):
    llm = LLM(model_path, stage="naive", kv_cache_tokens=256, max_model_len=128, max_num_seqs=8)
    assert llm.engine.kv.num_rows == 2  # 256 slots // 128 per reserved row
    outs = llm.generate(prompt_token_ids=PROMPTS, sampling_params=GREEDY)
    assert all(len(o.token_ids) == 24 for o in outs)


def test_text_in_text_out(naive):
    out = naive.generate("def fibonacci(n):", SamplingParams(max_tokens=12, temperature=0.0))[0]
    assert out.prompt == "def fibonacci(n):"
    assert out.text == naive.tokenizer.decode(out.token_ids)
    assert out.finish_reason in ("stop", "length")


def test_stop_string_truncates_text(naive):
    params = SamplingParams(max_tokens=20, temperature=0.0, ignore_eos=True)
    # a random model often emits bytes that are not UTF-8; pick a prompt whose output reads as text
    for prompt in ("import os", "class Stack:", "The quick", "def f(", "return n", "héllo"):
        free = naive.generate(prompt, params)[0]
        if "\ufffd" not in free.text and len(free.text.strip()) >= 8:
            break
    else:
        pytest.fail("no prompt gave valid text")
    stop = free.text.strip()[4:7]
    params.stop = [stop]
    out = naive.generate(prompt, params)[0]
    assert out.finish_reason == "stop"
    assert out.text == free.text[: free.text.find(stop)]
    assert stop not in out.text
    assert free.token_ids[: len(out.token_ids)] == out.token_ids


def test_stop_token_ids_and_eos(naive):
    free = naive.generate(prompt_token_ids=[PROMPTS[0]], sampling_params=GREEDY)[0]
    tok = free.token_ids[6]
    first = free.token_ids.index(tok)
    params = SamplingParams(max_tokens=24, temperature=0.0, ignore_eos=True, stop_token_ids=[tok])
    out = naive.generate(prompt_token_ids=[PROMPTS[0]], sampling_params=params)[0]
    assert out.finish_reason == "stop" and out.token_ids == free.token_ids[: first + 1]
    engine = naive.engine
    saved = engine.eos_token_ids
    engine.eos_token_ids = {tok}
    try:
        eos = naive.generate(
            prompt_token_ids=[PROMPTS[0]], sampling_params=SamplingParams(max_tokens=24, temperature=0)
        )
        ignored = naive.generate(prompt_token_ids=[PROMPTS[0]], sampling_params=GREEDY)
    finally:
        engine.eos_token_ids = saved
    assert eos[0].token_ids == out.token_ids and eos[0].finish_reason == "stop"
    assert ignored[0].token_ids == free.token_ids


def test_max_model_len_ends_with_length(model_path):
    llm = LLM(model_path, stage="naive", kv_cache_tokens=1024, max_model_len=40)
    with pytest.warns(UserWarning, match="max_model_len=40"):  # said, not capped silently
        out = llm.generate(
            prompt_token_ids=[PROMPTS[2]], sampling_params=SamplingParams(max_tokens=100, temperature=0)
        )[0]
    assert out.finish_reason == "length" and len(PROMPTS[2]) + len(out.token_ids) == 40


def test_metrics(naive):
    outs = naive.generate(prompt_token_ids=PROMPTS[:3], sampling_params=GREEDY)
    for o in outs:
        m = o.metrics
        assert m.num_output_tokens == 24 and len(m.itl) == 23
        assert 0 < m.ttft <= m.e2e
        assert m.tpot == pytest.approx(sum(m.itl) / len(m.itl))
        assert m.num_cached_tokens == 0 and m.num_prompt_tokens == len(o.prompt_token_ids)
    # static batching: the request that waited for the first batch has a later first token
    assert outs[2].metrics.ttft > outs[0].metrics.ttft


def test_streaming_deltas_add_up(naive):
    texts: dict[int, str] = {}
    final = {}
    for out in naive.stream(["class Stack:", "héllo 世界"], SamplingParams(max_tokens=16, temperature=0.0)):
        texts[out.request_id] = texts.get(out.request_id, "") + out.delta_text
        if out.finished:
            final[out.request_id] = out
    assert len(final) == 2
    for rid, out in final.items():
        assert texts[rid] == out.text


def test_seeded_sampling_is_reproducible_and_batch_independent(naive):
    p = SamplingParams(max_tokens=16, temperature=1.0, seed=1234, ignore_eos=True)
    alone = naive.generate(prompt_token_ids=[PROMPTS[0]], sampling_params=p)[0]
    others = SamplingParams(max_tokens=16, temperature=1.0, ignore_eos=True)
    batch = naive.generate(prompt_token_ids=[PROMPTS[1], PROMPTS[0]], sampling_params=[others, p])
    assert batch[1].token_ids == alone.token_ids
    other_seed = naive.generate(
        prompt_token_ids=[PROMPTS[0]],
        sampling_params=SamplingParams(max_tokens=16, temperature=1.0, seed=99, ignore_eos=True),
    )[0]
    assert other_seed.token_ids != alone.token_ids


def test_llm_seed_makes_unseeded_runs_reproducible(model_path):
    p = SamplingParams(max_tokens=12, temperature=0.8, top_p=0.9, top_k=50, ignore_eos=True)
    a = LLM(model_path, max_model_len=128, seed=7).generate(prompt_token_ids=PROMPTS, sampling_params=p)
    b = LLM(model_path, max_model_len=128, seed=7).generate(prompt_token_ids=PROMPTS, sampling_params=p)
    assert [o.token_ids for o in a] == [o.token_ids for o in b]


def test_cli_generate(model_path, capsys):
    from minillm.cli import main

    main(
        [
            "generate",
            "--model",
            model_path,
            "--stage",
            "naive",
            "--max-tokens",
            "8",
            "--temperature",
            "0",
            "def f(",
        ]
    )
    out = capsys.readouterr().out
    assert "def f(" in out and "ttft" in out


def test_streamed_text_never_shows_part_of_a_stop_string():
    from minillm import DEFAULT_MODEL

    llm = LLM(DEFAULT_MODEL, stage="naive", max_model_len=128, kv_cache_tokens=1024)
    params = SamplingParams(max_tokens=30, temperature=0.0, ignore_eos=True)
    free = llm.generate(["def fib(n):"], params)[0].text
    for i in range(0, 24, 3):  # stop strings that span token boundaries at many places
        stop = free[i : i + 2]
        if not stop.strip():
            continue
        params.stop = [stop]
        streamed, final = "", None
        for out in llm.stream(["def fib(n):"], params):
            streamed += out.delta_text
            final = out
        assert final.finish_reason == "stop" and streamed == final.text == free[: free.find(stop)]
