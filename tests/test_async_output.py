"""Asynchronous output processing (EngineConfig.async_output) and asynchronous scheduling
(EngineConfig.async_scheduling).

async_output: a step's texts and stop strings are done while the next step computes, so each output
comes one step later, and a request that a stop string ends has one more token computed and dropped.
async_scheduling goes further: the next step is scheduled and launched before the host knows this
step's tokens, which reach the next step's inputs on the device (placeholders on the host); EOS and stop
tokens are then found one step late too. What a caller gets must not change in either mode: the same
token ids, text and finish reason for every request, with stop strings, stop tokens, EOS, max_tokens,
seeded sampling, constrained and logprob requests mixed in, chunked prefill, preemption, and aborts.

Run: pytest tests/test_async_output.py
"""

from __future__ import annotations

import functools
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_lifecycle import pool_is_free

from minillm import LLM, SamplingParams

MODES = ["async_output", "async_scheduling"]


def prompts_of(seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    words = "def class return import self value list print while for in if else".split()
    return [" ".join(rng.choice(words) for _ in range(rng.randint(1, 12))) for _ in range(14)]


def mid_run_stop(text: str) -> list[str]:
    """A stop string this greedy output reaches mid-run: its first new character after the start."""
    i = next((i for i in range(2, len(text)) if text[i] not in text[:i]), None)
    return [text[i], "@@@@"] if i is not None else ["@@@@"]


def workload(path) -> tuple[list[str], list[SamplingParams]]:
    prompts = prompts_of()
    greedy = SamplingParams(max_tokens=24, temperature=0.0, ignore_eos=True)
    texts = [o.text for o in LLM(path, stage="unified").generate(prompts, greedy)]
    params = []
    for i, text in enumerate(texts):
        kind = i % 6
        if kind == 0:
            p = SamplingParams(max_tokens=1 + (7 * i) % 20, temperature=0.0, ignore_eos=True)
        elif kind == 1:  # a stop string the output reaches, and one it never does
            p = SamplingParams(max_tokens=24, temperature=0.0, stop=mid_run_stop(text), ignore_eos=True)
        elif kind == 2:  # seeded sampling: its own generator, whoever shares the batch
            p = SamplingParams(max_tokens=16, temperature=0.9, top_p=0.9, seed=100 + i, ignore_eos=True)
        elif kind == 3:  # a constrained request steps synchronously
            p = SamplingParams(max_tokens=16, temperature=0.0, regex=r"[a-z]{2,6}( [a-z]{2,6}){0,3}")
        elif kind == 4:  # logprobs step synchronously too
            p = SamplingParams(max_tokens=10, temperature=0.0, logprobs=2, ignore_eos=True)
        else:  # EOS ends it (the test makes a frequent token the EOS)
            p = SamplingParams(max_tokens=30, temperature=0.0)
        params.append(p)
    return prompts, params


def run(path, mode: str | None, eos: int | None, **opts):
    prompts, params = workload(path)
    llm = LLM(path, **({mode: True} if mode else {}), **opts)
    if eos is not None:
        llm.engine.eos_token_ids = {eos}
    outs = llm.generate(prompts, params)
    assert pool_is_free(llm.engine)  # every block back (the radix cache may keep some, unreferenced)
    return llm, [(o.token_ids, o.text, o.finish_reason, o.logprobs) for o in outs]


@functools.cache
def frequent_token(path) -> int:
    """A token greedy decoding produces often: as EOS it ends some requests early."""
    llm = LLM(path, stage="unified")
    outs = llm.generate(prompts_of(), SamplingParams(max_tokens=12, temperature=0.0, ignore_eos=True))
    counts: dict[int, int] = {}
    for o in outs:
        for t in o.token_ids[2:]:
            counts[t] = counts.get(t, 0) + 1
    return max(counts, key=counts.get)


@pytest.mark.parametrize(
    "opts",
    [
        dict(stage="paged", constrained_decoding="indexed"),
        dict(stage="fsm", max_num_batched_tokens=16),  # chunked prefill, mixed steps, the radix cache
        dict(stage="fsm", kv_cache_tokens=160, block_size=4, max_num_batched_tokens=32),  # preemption
    ],
    ids=["paged", "fsm-chunked", "fsm-preempting"],
)
@pytest.mark.parametrize("mode", MODES)
def test_async_modes_give_every_request_the_same_output(tiny_path, opts, mode):
    eos = frequent_token(tiny_path)
    _, want = run(tiny_path, None, eos, **opts)
    async_llm, got = run(tiny_path, mode, eos, **opts)
    assert [g[:3] for g in got] == [w[:3] for w in want]  # token ids, text, finish reason
    for (*_, got_lp), (*_, want_lp) in zip(got, want):
        # the same tokens ranked; values to float32 rounding (a step's batch can differ by a row)
        assert (got_lp is None) == (want_lp is None)
        for g, w in zip(got_lp or [], want_lp or []):
            assert list(g) == list(w) and all(abs(g[t] - w[t]) < 1e-4 for t in g)
    reasons = {r for _, _, r, _ in want}
    assert reasons == {"stop", "length"}  # stop strings, EOS and max_tokens all ended someone
    if opts.get("kv_cache_tokens"):
        assert async_llm.engine.scheduler.num_preemptions > 0


@pytest.mark.parametrize("mode", MODES)
def test_async_modes_stream_one_step_late_and_join_to_the_same_text(tiny_path, mode):
    prompts, params = workload(tiny_path)
    want = [o.text for o in LLM(tiny_path, stage="fsm").generate(prompts, params)]
    llm = LLM(tiny_path, stage="fsm", **{mode: True})
    texts: dict[int, str] = {}
    finished = 0
    for out in llm.stream(prompts, params):
        texts[out.request_id] = texts.get(out.request_id, "") + out.delta_text
        finished += out.finished
    assert finished == len(prompts) and [texts[i] for i in sorted(texts)] == want


@pytest.mark.parametrize("mode", MODES)
def test_a_stop_string_found_late_drops_the_token_computed_meanwhile(tiny_path, mode):
    """The stop string ends the request while its next token is already being computed: that token must
    not reach token_ids, and the request's blocks go back at once."""
    params = SamplingParams(max_tokens=40, temperature=0.0, ignore_eos=True)
    ref = LLM(tiny_path, stage="unified").generate(["def fibonacci(n):"], params)[0]
    first_new = next(i for i in range(2, len(ref.text)) if ref.text[i] not in ref.text[:i])
    stop = ref.text[first_new]  # a character the output reaches mid-run, for the first time
    stopped = SamplingParams(max_tokens=40, temperature=0.0, ignore_eos=True, stop=[stop])
    want = LLM(tiny_path, stage="unified").generate(["def fibonacci(n):"], stopped)[0]
    assert want.finish_reason == "stop" and len(want.token_ids) < len(ref.token_ids)
    llm = LLM(tiny_path, stage="unified", **{mode: True})
    llm.engine.add_request("def fibonacci(n):", stopped)
    final = None
    while llm.engine.has_unfinished():
        for out in llm.engine.step():
            final = out if out.finished else final
    assert (final.token_ids, final.text, final.finish_reason) == (want.token_ids, want.text, "stop")
    assert pool_is_free(llm.engine)


@pytest.mark.parametrize("mode", MODES)
def test_abort_between_steps_drops_the_pending_text(tiny_path, mode):
    llm = LLM(tiny_path, stage="unified", **{mode: True})
    engine = llm.engine
    rid = engine.add_request("import os", SamplingParams(max_tokens=30, temperature=0.0, ignore_eos=True))
    keep = engine.add_request("class Stack:", SamplingParams(max_tokens=6, temperature=0.0, ignore_eos=True))
    for _ in range(3):
        engine.step()
    engine.abort_request(rid)
    outs = []
    while engine.has_unfinished():
        outs += engine.step()
    assert all(o.request_id == keep for o in outs) and outs[-1].finished
    assert pool_is_free(engine)


def test_async_options_are_checked():
    with pytest.raises(ValueError, match="async_output"):
        LLM(stage="paged", async_output="yes")
    with pytest.raises(ValueError, match="async_scheduling must be True or False"):
        LLM(stage="paged", async_scheduling=1)
    with pytest.raises(ValueError, match="async_scheduling needs scheduler='continuous' or 'unified'"):
        LLM(stage="naive", async_scheduling=True)


@pytest.mark.parametrize("mode", MODES)
@settings(
    max_examples=int(__import__("os").environ.get("HYP_N", 12)),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_random_arrivals_stops_and_aborts_give_the_same_outputs(tiny_path, mode, data):
    """Random operation sequences against the synchronous engine: requests (token-id prompts, lengths,
    stop strings from a fixed set, EOS on or off) arriving at random steps, some aborted at a random
    step. Every request that was not aborted ends with the same tokens, text and finish reason."""
    n = data.draw(st.integers(1, 8), label="requests")
    reqs = [
        (
            data.draw(st.integers(0, 6), label="arrival step"),
            data.draw(st.lists(st.integers(3, 300), min_size=1, max_size=30), label="prompt"),
            SamplingParams(
                max_tokens=data.draw(st.integers(1, 16)),
                temperature=0.0,
                stop=data.draw(st.sampled_from([None, ["S"], ["+", "i"], ["\x7f\x7f"]])),
                ignore_eos=data.draw(st.booleans()),
            ),
        )
        for _ in range(n)
    ]
    aborts = {
        i: data.draw(st.integers(0, 10), label=f"abort step of {i}")
        for i in range(n)
        if data.draw(st.booleans(), label=f"abort {i}")
    }
    block_size = data.draw(st.sampled_from([4, 16]))
    kv_cache_tokens = data.draw(st.sampled_from([128, 512]), label="pool")  # 128: preemption
    eos = frequent_token(tiny_path) if data.draw(st.booleans(), label="frequent EOS") else None

    def play(mode: str | None) -> dict:
        llm = LLM(
            tiny_path,
            stage="fsm",
            **({mode: True} if mode else {}),
            max_num_batched_tokens=24,
            block_size=block_size,
            kv_cache_tokens=kv_cache_tokens,
        )
        engine, ids, done, step = llm.engine, {}, {}, 0
        if eos is not None:
            engine.eos_token_ids = {eos}
        while step < 200 and (step <= 6 or engine.has_unfinished()):
            for i, (at, prompt, params) in enumerate(reqs):
                if at == step:
                    ids[i] = engine.add_request(prompt, params)
            for i, at in aborts.items():
                if at == step and i in ids:
                    engine.abort_request(ids[i])
            for out in engine.step():
                if out.finished:
                    done[out.request_id] = (out.token_ids, out.text, out.finish_reason)
            step += 1
        assert not engine.has_unfinished() and pool_is_free(engine)
        return {i: done.get(rid) for i, rid in ids.items() if i not in aborts}

    assert play(mode) == play(None)


# async_scheduling's own mechanism


def test_async_scheduling_keeps_tokens_on_the_device_between_steps(tiny_path, monkeypatch):
    """Plain requests never take the synchronous sampler: between steps their newest token is a
    placeholder on the host, and the next step's input ids take it from the device. The outputs equal the
    synchronous engine's (so every placeholder was filled with the right token on both sides)."""
    params = SamplingParams(max_tokens=12, temperature=0.0, ignore_eos=True)
    prompts = prompts_of(3)[:6]
    want = [o.token_ids for o in LLM(tiny_path, stage="unified").generate(prompts, params)]
    llm = LLM(tiny_path, stage="unified", async_scheduling=True)
    engine = llm.engine

    def no_sync(*args):
        raise AssertionError("the synchronous sampler ran")

    monkeypatch.setattr(type(engine.sampler), "__call__", no_sync)  # Python looks dunders up on the type
    ids = [engine.add_request(p, params) for p in prompts]
    done, awaiting = {}, 0
    while engine.has_unfinished():
        for out in engine.step():
            if out.finished:
                done[out.request_id] = out.token_ids
        awaiting += sum(s.awaiting_token for s in engine._seqs.values())
    assert awaiting > 0 and [done[i] for i in ids] == want
    assert all(t >= 0 for toks in want for t in toks)
    assert pool_is_free(engine)


def test_async_scheduling_through_replayed_graphs(tiny_path):
    """The CUDA-graph data path (simulated on the CPU): a replayed decode step reads the tokens the step
    before left in the runner's `sampled` buffer."""
    from mixed_run import simulated_graph_llm

    from minillm.attention.capture import CapturablePagedAttention

    prompts, params = workload(tiny_path)
    keep = [i for i, p in enumerate(params) if p.regex is None and p.logprobs is None]
    prompts, params = [prompts[i] for i in keep], [params[i] for i in keep]
    want = [(o.token_ids, o.text) for o in LLM(tiny_path, stage="unified").generate(prompts, params)]
    llm = simulated_graph_llm(tiny_path, CapturablePagedAttention, async_scheduling=True)
    got = [(o.token_ids, o.text) for o in llm.generate(prompts, params)]
    assert got == want and llm.engine.runner.num_replays > 0


def test_a_preempted_request_waits_for_its_newest_token(tiny_path):
    """A request preempted while its newest token is still on the device is not prefilled again until
    that token is known: its blocks would otherwise cache a placeholder as a token."""
    llm = LLM(tiny_path, stage="unified", prefix_cache="radix")
    engine, sched = llm.engine, llm.engine.scheduler
    rid = engine.add_request([5, 6, 7, 8], SamplingParams(max_tokens=4, temperature=0.0, ignore_eos=True))
    seq = engine._seqs[rid]
    engine.step()  # prefilled, first token sampled
    sched.requeue(seq)  # preempted
    seq.output_token_ids.append(-1)  # as async scheduling leaves it: the next token still on the device
    assert seq.awaiting_token and sched.schedule() is None and sched.waiting[0] is seq
    seq.output_token_ids[-1] = 9  # resolved
    batch = sched.schedule()
    assert batch is not None and batch.seqs == [seq]


def test_async_scheduling_caches_no_placeholder_by_hash(tiny_path):
    """vLLM's hash prefix cache registers a block when it is allocated; a block that a decoded token
    completes must wait until that token is known: the same keys, and the same hits, as synchronously."""
    params = SamplingParams(max_tokens=40, temperature=0.0, ignore_eos=True)
    got = []
    for mode in (None, "async_scheduling"):
        llm = LLM(
            tiny_path, stage="unified", prefix_cache="hash", block_size=4, **({mode: True} if mode else {})
        )
        first = llm.generate(["def fibonacci(n):"], params)[0]
        keys = sorted(llm.engine.kv.manager.allocator.block_key.values(), key=repr)
        assert all(t >= 0 for key in keys for t in key[2])
        again = SamplingParams(max_tokens=4, temperature=0.0)
        follow = llm.generate(
            prompt_token_ids=[first.prompt_token_ids + first.token_ids], sampling_params=again
        )
        got.append((keys, follow[0].metrics.num_cached_tokens))
    assert got[1] == got[0] and got[0][1] > 40


@pytest.mark.parametrize("mode", MODES)
def test_unseeded_sampling_draws_as_without_deferral(tiny_path, mode):
    """Requests that EOS ends one step late leave the step already running without being sampled, so
    unseeded requests draw from the shared generator exactly as the synchronous engine makes them."""
    prompts = prompts_of(5)[:6]
    greedy = SamplingParams(max_tokens=20, temperature=0.0, ignore_eos=True)
    first = LLM(tiny_path, stage="unified").generate(prompts[:1], greedy)[0].token_ids
    eos = first[3]  # ends the first request mid-run, maybe others
    params = [SamplingParams(max_tokens=20, temperature=0.0)] * 3
    params += [SamplingParams(max_tokens=20, temperature=1.0, ignore_eos=True)] * 3
    outs = []
    for m in (None, mode):
        llm = LLM(tiny_path, stage="unified", **({m: True} if m else {}))
        llm.engine.eos_token_ids = {eos}
        outs.append([(o.token_ids, o.finish_reason) for o in llm.generate(prompts, params)])
    assert outs[1] == outs[0] and any(r == "stop" for _, r in outs[0])


@pytest.mark.parametrize("mode", MODES)
def test_leaving_a_stream_early_leaves_nothing_in_flight(tiny_path, mode):
    llm = LLM(tiny_path, stage="unified", **{mode: True})
    params = SamplingParams(max_tokens=30, temperature=0.0, ignore_eos=True)
    for i, _ in enumerate(llm.stream(prompts_of(6)[:4], params)):
        if i == 9:
            break
    assert not llm.engine.has_unfinished() and pool_is_free(llm.engine)
    llm.engine.reconfigure(max_num_seqs=8)  # only between runs: this is one
    assert llm.generate(["import os"], params)[0].finish_reason == "length"


def test_reconfigure_switches_the_loop_options_without_building_again(tiny_path):
    """async_output and async_scheduling are read by step() only: reconfigure keeps the stage's build
    (KV pool, runner, compiled graphs), so a benchmark compares the modes on the same graphs."""
    llm = LLM(tiny_path, stage="unified")
    runner, kv = llm.engine.runner, llm.engine.kv
    params = SamplingParams(max_tokens=10, temperature=0.0, ignore_eos=True)
    want = [o.token_ids for o in llm.generate(prompts_of(7)[:3], params)]
    llm.engine.reconfigure(async_scheduling=True)
    assert llm.engine.runner is runner and llm.engine.kv is kv and llm.engine.config.async_scheduling
    engine = llm.engine
    engine.add_request(prompts_of(7)[0], params)
    assert engine.step() == []  # the step loop really switched: the token is in flight, a placeholder
    assert [s.output_token_ids for s in engine.scheduler.running] == [[-1]]
    while engine.has_unfinished():
        engine.step()
    assert [o.token_ids for o in llm.generate(prompts_of(7)[:3], params)] == want
    with pytest.raises(ValueError, match="async_scheduling must be True or False"):
        llm.engine.reconfigure(async_scheduling="on")
    assert llm.engine.config.async_scheduling is True  # nothing changed
    llm.engine.reconfigure(async_scheduling=False, max_num_seqs=4)  # a build option: built again
    assert llm.engine.runner is not runner and not llm.engine.config.async_scheduling
    runner = llm.engine.runner
    llm.engine.reconfigure()  # nothing changed: a fresh build all the same (an empty pool and cache)
    assert llm.engine.runner is not runner
