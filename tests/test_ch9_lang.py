"""Chapter 9: minillm.lang programs on the in-process Runtime, each mechanism against an oracle:
run_batch's generations equal LLM.generate on the same texts, forks equal independent requests,
select equals a brute-force likelihood computed with transformers, constraints inside gen hold
(`re`, `jsonschema`), and the radix cache reports a shared prefix as cached tokens.

Run: pytest -m ch9 tests/test_ch9_lang.py
"""

from __future__ import annotations

import json
import re

import jsonschema
import pytest
import torch

import minillm.lang as ml
from minillm import LLM, SamplingParams

pytestmark = pytest.mark.ch9

GREEDY = dict(temperature=0.0, ignore_eos=True)
QUESTIONS = ["def fib(n):", "import os\n", "The quick brown", "class Stack:", "Héllo wörld"]
FEW_SHOT = "def fibonacci(n):\n    if n < 2:\n        return n\n    return fibonacci(n - 1)\n" * 2


@pytest.fixture(scope="module")
def llm(tiny_path):
    return LLM(tiny_path, stage="fsm", max_model_len=256, kv_cache_tokens=4096, block_size=4)


@pytest.fixture(scope="module")
def runtime(llm):
    return ml.Runtime(llm)


@pytest.fixture(scope="module")
def reference(tiny_path):
    """No prefix cache, no programs: the texts a program should produce, one request at a time."""
    ref = LLM(tiny_path, stage="paged", max_model_len=256, kv_cache_tokens=4096)
    return lambda text, n: ref.generate([text], SamplingParams(max_tokens=n, **GREEDY))[0].text


@ml.function
def two_turns(s, question):
    s += FEW_SHOT + question
    s += ml.gen("first", max_tokens=6, ignore_eos=True)
    s += "\n# next\n"
    s += ml.gen("second", max_tokens=5, ignore_eos=True)
    return len(s["first"])


def test_run_batch_equals_generate_on_the_same_texts(runtime, reference):
    states = two_turns.run_batch([{"question": q} for q in QUESTIONS], backend=runtime)
    for q, state in zip(QUESTIONS, states):
        first = reference(FEW_SHOT + q, 6)
        second = reference(FEW_SHOT + q + first + "\n# next\n", 5)
        assert (state["first"], state["second"]) == (first, second)
        assert state.text() == FEW_SHOT + q + first + "\n# next\n" + second
        assert state.ret_value == len(first)


def test_shared_prefix_is_reported_cached(runtime, llm):
    bs = llm.config.block_size
    states = two_turns.run_batch([{"question": q} for q in QUESTIONS], backend=runtime)
    shared = (len(llm.tokenizer.encode(FEW_SHOT)) - 1) // bs * bs - bs  # whole blocks inside the prefix
    for s in states:  # the module's earlier test ran the same programs: everything shared is cached
        assert s.get_meta_info("first")["cached_tokens"] >= shared
        assert (
            s.get_meta_info("second")["cached_tokens"] >= s.get_meta_info("first")["prompt_tokens"] - 2 * bs
        )


@ml.function
def branches(s, suffixes):
    s += FEW_SHOT
    forks = s.fork(len(suffixes))
    for f, suffix in zip(forks, suffixes):
        f += suffix + ml.gen("out", max_tokens=5, ignore_eos=True)
    return [f["out"] for f in forks]


def test_forks_equal_independent_requests(runtime, reference):
    suffixes = ["def a(", "def b(", "import sys"]
    state = branches.run(suffixes=suffixes, backend=runtime)
    assert state.ret_value == [reference(FEW_SHOT + x, 5) for x in suffixes]
    assert state.text() == FEW_SHOT  # forks do not write into their parent


def brute_force_select(hf, tokenizer, prefix: str, choices: list[str]) -> tuple[int, list[list[float]]]:
    """Each choice's token logprobs after prefix, one full transformers forward per choice."""
    scores = []
    for c in choices:
        ids = tokenizer.encode(prefix + c)
        # the choice starts at the last token that starts at or before the prefix's end (every token tried)
        k = max(j for j in range(len(ids)) if len(tokenizer.decode(ids[:j])) <= len(prefix))
        with torch.no_grad():
            logp = hf(torch.tensor([ids])).logits[0].float().log_softmax(-1)
        scores.append([logp[p - 1, ids[p]].item() for p in range(k, len(ids))])
    means = [sum(s) / len(s) for s in scores]
    return means.index(max(means)), scores


@pytest.mark.parametrize("choices", [[" return", " if", " def fibonacci"], ["(n)", "(n - 2)", "ö", "世界"]])
def test_select_equals_brute_force_likelihood(runtime, llm, tiny_model_with_tokenizer, choices):
    hf = tiny_model_with_tokenizer[1].float().eval()

    @ml.function
    def pick(s):
        s += FEW_SHOT + "    return fibonacci"
        s += ml.select("choice", choices=choices)

    state = pick.run(backend=runtime)
    index, scores = brute_force_select(hf, llm.tokenizer, FEW_SHOT + "    return fibonacci", choices)
    assert state["choice"] == choices[index]
    got = state.get_meta_info("choice")["choice_logprobs"]
    assert [len(g) for g in got] == [len(s) for s in scores]
    for g, s in zip(got, scores):
        assert g == pytest.approx(s, abs=1e-4)
    assert state.get_meta_info("choice")["cached_tokens"] > 0  # the prefix stayed cached


def test_choices_methods():
    """SGLang's documented rules on hand-made logprobs: the mean, and the first token (ties: next)."""
    lp = [[-0.5], [-0.6, -0.1]]  # means -0.5 and -0.35; first tokens -0.5 and -0.6
    assert ml.token_length_normalized(lp) == 1
    assert ml.greedy_token_selection(lp) == 0
    assert ml.greedy_token_selection([[-0.2], [-0.2, -0.3]]) == 0  # the short one extended by its mean


def test_choice_start_search_equals_a_scan():
    import random

    rng = random.Random(0)
    for _ in range(300):
        offsets = sorted(rng.randrange(0, 40) for _ in range(rng.randint(1, 12)))
        prefix_len = rng.randrange(0, 45)
        scan = max((j for j in range(len(offsets)) if offsets[j] <= prefix_len), default=0)
        assert ml.ir.choice_start(offsets.__getitem__, len(offsets), prefix_len) == scan


def test_constraints_inside_gen_hold(runtime):
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}

    @ml.function
    def constrained(s):
        s += FEW_SHOT + "id = "
        s += ml.gen("id", max_tokens=12, regex=r"[a-z]{2,5}_[0-9]{1,3}")
        s += "\nobj = "
        s += ml.gen("obj", max_tokens=64, json_schema=schema)
        s += "\nanswer:" + ml.gen("yn", choices=[" yes", " no"])

    state = constrained.run(backend=runtime)
    assert re.fullmatch(r"[a-z]{2,5}_[0-9]{1,3}", state["id"])
    jsonschema.validate(json.loads(state["obj"]), schema)
    assert state["yn"] in (" yes", " no")


def test_bad_input_names_the_field(runtime):
    with pytest.raises(ValueError, match="max_tokens"):
        ml.gen("x", max_tokens=0)
    with pytest.raises(ValueError, match="choices"):
        ml.select("x", choices="yes")
    with pytest.raises(ValueError, match="choices_method"):
        ml.select("x", choices=["a"], choices_method="best")
    with pytest.raises(ValueError, match="name"):
        ml.gen(3)

    @ml.function
    def forks_zero(s):
        s.fork(0)

    with pytest.raises(ValueError, match="fork"):
        forks_zero.run(backend=runtime)

    @ml.function
    def too_long(s):
        s += "x" * 4000 + ml.gen("y", max_tokens=2)

    with pytest.raises(ValueError, match="prompt"):  # intake's error, raised in the program
        too_long.run(backend=runtime)
    with pytest.raises(ValueError, match="backend"):
        too_long.run()
    assert not runtime.engine.has_unfinished()
