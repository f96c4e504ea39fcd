"""Chapter 9: the same programs over HTTP (minillm serve, in a thread) give what they give in
process, and the server's legacy completions logprobs (logprobs, echo) equal the engine's.

Run: pytest -m ch9 tests/test_ch9_endpoint.py
"""

from __future__ import annotations

import httpx
import pytest

import minillm.lang as ml
from minillm import LLM, SamplingParams
from minillm.server.launch import serve_in_thread

pytestmark = pytest.mark.ch9

FEW_SHOT = "def fibonacci(n):\n    if n < 2:\n        return n\n    return fibonacci(n - 1)\n" * 2


@pytest.fixture(scope="module")
def offline(tiny_path):
    return LLM(tiny_path, stage="fsm", max_model_len=256, kv_cache_tokens=4096, block_size=4)


@pytest.fixture(scope="module")
def server(tiny_path):
    llm = LLM(tiny_path, stage="fsm", max_model_len=256, kv_cache_tokens=4096, block_size=4)
    with serve_in_thread(llm, model_name="tiny") as url:
        yield url


@ml.function
def program(s, question):
    s += FEW_SHOT + question
    s += ml.gen("code", max_tokens=6, ignore_eos=True)
    forks = s.fork(2)
    for f, tail in zip(forks, ["\n# a\n", "\n# b\n"]):
        f += tail + ml.gen("branch", max_tokens=4, ignore_eos=True)
    s += "\n    return" + ml.select("pick", choices=[" fibonacci", " n", "(n)"])
    s += "\nid = " + ml.gen("id", max_tokens=8, regex=r"[a-z]{1,4}[0-9]")
    return [f["branch"] for f in forks]


def test_programs_agree_on_both_backends(offline, server):
    kwargs = [{"question": q} for q in ["def fib(n):", "import os\n", "class Stack:"]]
    local = program.run_batch(kwargs, backend=ml.Runtime(offline))
    remote = program.run_batch(kwargs, backend=ml.Endpoint(server))
    for a, b in zip(local, remote):
        assert a.text() == b.text()
        assert a.ret_value == b.ret_value
        assert a["pick"] == b["pick"]
        got, want = b.get_meta_info("pick")["choice_logprobs"], a.get_meta_info("pick")["choice_logprobs"]
        for g, w in zip(got, want):
            assert g == pytest.approx(w, abs=1e-4)


def test_completions_logprobs_equal_the_engine(offline, server):
    prompt = FEW_SHOT + "def fib(n):"
    body = {"model": "tiny", "prompt": prompt, "max_tokens": 3, "temperature": 0.0, "logprobs": 2}
    sp = SamplingParams(max_tokens=3, temperature=0.0, logprobs=2, prompt_logprobs=2)
    ref = offline.generate([prompt], sp)[0]
    tok = offline.tokenizer
    plain = httpx.post(server + "/v1/completions", json=body).json()["choices"][0]
    assert plain["text"] == ref.text
    assert plain["logprobs"]["token_logprobs"] == pytest.approx(
        [e[t] for t, e in zip(ref.token_ids, ref.logprobs)]
    )
    echo = httpx.post(server + "/v1/completions", json={**body, "echo": True}).json()["choices"][0]
    assert echo["text"] == prompt + ref.text
    lp = echo["logprobs"]
    ids = ref.prompt_token_ids + ref.token_ids
    assert lp["token_logprobs"][0] is None
    want = [e[t] for t, e in zip(ids[1:], ref.prompt_logprobs[1:] + ref.logprobs)]
    assert lp["token_logprobs"][1:] == pytest.approx(want, abs=1e-5)
    assert lp["text_offset"] == [len(tok.decode(ids[:j])) for j in range(len(ids))]
    assert all(len(top) >= 2 for top in lp["top_logprobs"][1:])


@pytest.mark.parametrize(
    "extra, param",
    [
        ({"logprobs": 21}, "logprobs"),
        ({"logprobs": True}, "logprobs"),
        ({"echo": True, "stream": True}, "echo"),
    ],
)
def test_bad_logprob_requests_are_400s_naming_the_field(server, extra, param):
    body = {"model": "tiny", "prompt": "def", "max_tokens": 2, **extra}
    resp = httpx.post(server + "/v1/completions", json=body)
    assert resp.status_code == 400 and resp.json()["error"]["param"] == param


def test_chat_still_refuses_logprobs(server):
    body = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "logprobs": 3}
    assert httpx.post(server + "/v1/chat/completions", json=body).status_code == 400
