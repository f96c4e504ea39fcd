"""Chapter 5 in the engine: constrained requests under the three strategies, on the default model.

Oracles: Python's re for regex outputs, the jsonschema package for JSON outputs, and transformers for
every sampling decision made after a jump-forward (the K/V reused from the prefix cache must give the
logits a fresh forward gives).
"""

from __future__ import annotations

import re

import pytest
import torch
from json_schemas import SCHEMAS
from test_ch5_json_schema import assert_valid

from minillm import DEFAULT_MODEL, LLM, SamplingParams
from minillm.constrained import compile_regex, json_schema_to_regex

pytestmark = pytest.mark.ch5

STRATEGIES = ("naive", "indexed", "compressed")
REGEXES = [
    r"[a-z]{2,8}@[a-z]{2,8}\.(com|org|net)",
    r"\((\d{3})\) \d{3}-\d{4}",
    r"(19|20)\d{2}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])",
    r'\{"x": -?\d{1,3}, "ok": (true|false)\}',
    r"caf[eé] [αβγ]{1,3}!",
]
PROMPTS = ["# contact\nemail = '", "phone = '", "date = '", "data = ", "x = '"]


@pytest.fixture(scope="module")
def llm():
    return LLM(stage="fsm", kv_cache_tokens=4096, max_num_seqs=64)


def generate(llm, strategy, prompts, params):
    llm.engine.reconfigure(constrained_decoding=strategy)
    return llm.generate(prompts, params)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_regex_outputs_match_under_every_strategy(llm, strategy):
    params = [
        SamplingParams(regex=r, temperature=0.9, seed=i, max_tokens=64) for i, r in enumerate(REGEXES * 2)
    ]
    outs = generate(llm, strategy, PROMPTS * 2, params)
    for out, p in zip(outs, params):
        assert out.finish_reason == "stop", (p.regex, out.text)
        assert re.fullmatch(p.regex, out.text, re.ASCII), (p.regex, out.text)
    assert not llm.engine.has_unfinished()


def test_naive_and_indexed_choose_the_same_tokens(llm):
    params = [SamplingParams(regex=r, temperature=0.0, max_tokens=64) for r in REGEXES]
    naive = generate(llm, "naive", PROMPTS, params)
    indexed = generate(llm, "indexed", PROMPTS, params)
    assert [o.token_ids for o in naive] == [o.token_ids for o in indexed]


def test_json_schemas_validate():
    """Every schema of the catalogue (46, from all JSON types, pydantic models, $ref, recursion,
    formats), sampled at temperature 0.8; a finished output must validate."""
    llm = LLM(stage="fsm", kv_cache_tokens=16384, max_num_seqs=64)
    params = [
        SamplingParams(json_schema=c.schema, temperature=0.8, seed=i, max_tokens=160)
        for i, c in enumerate(SCHEMAS)
    ]
    outs = llm.generate(["# JSON\ndata = "] * len(SCHEMAS), params)
    finished = 0
    for case, out in zip(SCHEMAS, outs):
        if out.finish_reason == "stop":
            assert_valid(case, out.text)
            finished += 1
        else:  # max_tokens cut it short: still a prefix of a match
            dfa = compile_regex(json_schema_to_regex(case.schema))
            assert dfa.walk(dfa.initial, out.text.encode()) is not None
    assert finished >= 30


def test_compressed_uses_fewer_passes_and_jumps(llm):
    schema = next(c.schema for c in SCHEMAS if c.id == "character_card")
    params = SamplingParams(json_schema=schema, temperature=0.0, max_tokens=200)
    indexed = generate(llm, "indexed", ["card = "], params)[0]
    compressed = generate(llm, "compressed", ["card = "], params)[0]
    assert compressed.finish_reason == indexed.finish_reason == "stop"
    assert compressed.metrics.num_forced_tokens > 10
    assert compressed.metrics.num_steps < indexed.metrics.num_steps / 2


def test_every_choice_after_a_jump_is_what_a_fresh_forward_picks(llm):
    """Record each greedy sampling decision (context, allowed tokens, token) under the compressed FSM,
    then recompute it with transformers on the whole context: a stale or misplaced K/V after a jump
    (requeue + prefix-cache hit) would change the logits."""
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(DEFAULT_MODEL, torch_dtype=torch.float32).eval()
    engine = llm.engine
    engine.reconfigure(constrained_decoding="compressed")
    decisions, sample = [], engine.sampler

    def recording_sampler(logits, seqs):
        tokens = sample(logits, seqs)
        for s, t in zip(seqs, tokens):
            allowed = s.guide.allowed_tokens(s.guide_state)
            decisions.append((list(s.token_ids), allowed, t))
        return tokens

    engine.sampler = recording_sampler
    try:
        schema = next(c.schema for c in SCHEMAS if c.id == "character_card")
        params = [SamplingParams(json_schema=schema, temperature=0.0, max_tokens=120)]
        params += [SamplingParams(regex=REGEXES[3], temperature=0.0, max_tokens=40)]
        outs = llm.generate(["card = ", "data = "], params)
    finally:
        engine.sampler = sample
    assert sum(o.metrics.num_forced_tokens for o in outs) > 10
    with torch.no_grad():
        for context, allowed, token in decisions:
            logits = hf(torch.tensor([context])).logits[0, -1]
            best = logits[allowed].max()
            assert logits[token] >= best - 1e-4, (context, token)


def test_choice(llm):
    choices = ["Gryffindor", "Hufflepuff", "Ravenclaw", "Slytherin"]
    outs = generate(
        llm,
        "compressed",
        ["house = '"] * 8,
        [SamplingParams(choice=choices, temperature=1.0, seed=i) for i in range(8)],
    )
    assert all(o.text in choices and o.finish_reason == "stop" for o in outs)


def test_a_jump_that_completes_the_match_finishes_without_another_pass(llm):
    out = generate(llm, "compressed", ["x = "], SamplingParams(regex=r'\{"done": true\}', temperature=0))[0]
    assert out.text == '{"done": true}' and out.finish_reason == "stop"
    assert out.metrics.num_steps == 1 and llm.engine.eos_token_ids.isdisjoint(out.token_ids)


def test_streaming_with_jumps_adds_up(llm):
    llm.engine.reconfigure(constrained_decoding="compressed")
    params = SamplingParams(regex=REGEXES[3], temperature=0.0, max_tokens=40)
    pieces, final = [], None
    for out in llm.stream(["data = "], params):
        pieces.append(out.delta_text)
        final = out
    assert "".join(pieces) == final.text and re.fullmatch(REGEXES[3], final.text)
    assert len(final.metrics.itl) == len(final.token_ids) - 1


def test_max_tokens_and_stop_strings_hold_under_jumps(llm):
    pattern = r'\{"name": "[a-z]{1,8}", "house": "(Gryffindor|Slytherin)"\}'
    short = generate(llm, "compressed", ["x = "], SamplingParams(regex=pattern, max_tokens=5, temperature=0))[
        0
    ]
    assert len(short.token_ids) <= 5 and short.finish_reason == "length"
    stopped = generate(
        llm, "compressed", ["x = "], SamplingParams(regex=pattern, stop="house", max_tokens=60, temperature=0)
    )[0]
    assert stopped.finish_reason == "stop" and "house" not in stopped.text
    assert stopped.text.startswith('{"name": "')


def test_unconstrained_requests_are_unchanged_by_the_stage(tiny_path):
    prompts = [[5, 9, 13, 2], [7, 7, 7, 8, 1, 3]]
    p = SamplingParams(max_tokens=12, temperature=0.0, ignore_eos=True)
    unified = LLM(tiny_path, stage="unified").generate(prompt_token_ids=prompts, sampling_params=p)
    fsm = LLM(tiny_path, stage="fsm").generate(prompt_token_ids=prompts, sampling_params=p)
    assert [o.token_ids for o in fsm] == [o.token_ids for o in unified]


@pytest.mark.parametrize(
    "params, field",
    [
        (dict(regex="a(?=b)"), "regex"),
        (dict(regex="(ab"), "regex"),
        (dict(json_schema={"type": "string", "not": {}}), "json_schema"),
        (dict(json_schema="{not json"), "json_schema"),
        (dict(regex="a", choice=["a"]), "at most one"),
        (dict(choice=[]), "choice"),
        (dict(choice="abc"), "choice"),
        (dict(json_schema=3.5), "json_schema"),
    ],
)
def test_bad_constraints_are_rejected_by_field(llm, params, field):
    with pytest.raises(ValueError, match=field):
        llm.generate(["x"], SamplingParams(**params))
    assert not llm.engine.has_unfinished()  # nothing half-queued


def test_constraints_need_a_constrained_stage(tiny_path):
    with pytest.raises(ValueError, match="stage 'fsm'"):
        LLM(tiny_path, stage="unified").generate(["x"], SamplingParams(regex="a"))
    with pytest.raises(ValueError, match="prefix_cache"):
        LLM(tiny_path, stage="paged", constrained_decoding="compressed")


def test_limits_inside_forced_text_end_the_request_where_decoding_would(llm):
    """A stop string or a stop token inside forced text: the jump is not taken, so decoding stops where
    token-by-token masking stops. A jump that completes the match exactly at max_tokens is taken."""
    cases = [
        SamplingParams(regex=r'a: "hello world", [0-9]+', stop="hello", temperature=0, max_tokens=30),
        SamplingParams(regex=r'\{"done": true, "x": [0-9]+\}', stop_token_ids=[953], temperature=0),
        SamplingParams(regex=r'\{"done": true\}', max_tokens=6, temperature=0),
    ]
    indexed = generate(llm, "indexed", ["x = "] * 3, cases)
    compressed = generate(llm, "compressed", ["x = "] * 3, cases)
    for a, b in zip(indexed[:2], compressed[:2]):
        assert (b.text, b.finish_reason) == (a.text, a.finish_reason)
    # the last: jump-forward spells the match in 6 tokens (token by token takes 12), which fit
    assert compressed[0].text == 'a: "' and compressed[1].finish_reason == "stop"
    assert compressed[2].text == '{"done": true}' and compressed[2].finish_reason == "stop"


def test_a_bad_constraint_in_a_batch_queues_nothing(llm):
    with pytest.raises(ValueError, match="regex"):
        llm.generate(["x", "y"], [SamplingParams(regex="[a-z]+"), SamplingParams(regex="(ab")])
    assert not llm.engine.has_unfinished()


def test_cache_statistics_count_the_first_admission_only(llm):
    llm.engine.reconfigure(constrained_decoding="compressed")  # a fresh, empty cache
    prompt = "# a long enough prompt to fill a block of sixteen tokens\nx = "
    out = llm.generate([prompt], SamplingParams(regex=r'\{"done": true, "x": [0-9]\}', temperature=0))[0]
    assert out.metrics.num_forced_tokens > 0 and out.metrics.num_prompt_tokens > 16
    assert out.metrics.num_cached_tokens == 0  # re-admissions after jumps hit, but are not first


def test_jumps_never_end_inside_a_character(tiny_path):
    """The tiny tokenizer has tokens that start with a UTF-8 continuation byte: leaving such a token
    to the model must not cut the forced text inside a character."""
    llm = LLM(tiny_path, stage="fsm")
    pattern = 'x = "ü[a-zï]{1,8}"'
    outs = llm.generate(
        ["a"] * 40, [SamplingParams(regex=pattern, temperature=1.0, seed=i, max_tokens=40) for i in range(40)]
    )
    for o in outs:
        assert re.fullmatch(pattern, o.text), o.text


def test_equal_constraints_share_one_compiled_guide(llm):
    llm.engine.reconfigure(constrained_decoding="indexed")
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    same = {"required": ["a"], "properties": {"a": {"type": "integer"}}, "type": "object"}
    guides = llm.engine.guides
    assert guides.guide_for(SamplingParams(json_schema=schema)) is guides.guide_for(
        SamplingParams(json_schema=same)
    )
    assert guides.guide_for(SamplingParams(choice=["x", "y"])) is not guides.guide_for(
        SamplingParams(choice=["y"])
    )
