"""Chapter 8: the OpenAI-compatible server, exercised with the real `openai` client.

One server over the embedded default model (stage fsm, so constraints work), started in a thread on a
free port for the whole module, behind an API key; a second tiny one without a chat template; one
child process for the SIGTERM test. Outputs are checked against the offline LLM (greedy: the same
text), constraints against `re` and `json`, and the KV pool through /metrics.

Run: pytest -m ch8 (or pytest tests/test_serve.py).
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import threading
import time

import httpx
import pytest

openai = pytest.importorskip("openai")

from minillm import LLM, SamplingParams  # noqa: E402
from minillm.server.chat import ChatTemplate, find_chat_template  # noqa: E402
from minillm.server.launch import launch_server, serve_in_thread, stop_server  # noqa: E402

pytestmark = pytest.mark.ch8

KEY = "test-key"
MODEL = "pystd-llama"
PROMPTS = ["def fibonacci(n):", "import os\n", "class Stack:", "for i in range(10):"]


@pytest.fixture(scope="module")
def llm():
    return LLM(stage="fsm")


@pytest.fixture(scope="module")
def server(llm):
    with serve_in_thread(llm, model_name=MODEL, api_key=KEY) as url:
        yield url


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server + "/v1", api_key=KEY, max_retries=0)


@pytest.fixture(scope="module")
def reference():
    """Greedy outputs of the same model offline (a separate engine: the server's belongs to its loop)."""
    offline = LLM(stage="fsm")

    def run(prompt, max_tokens, **kw):
        return offline.generate([prompt], SamplingParams(max_tokens=max_tokens, temperature=0.0, **kw))[0]

    return run


def metrics(server) -> dict[str, float]:
    """/metrics as {name: value} for the unlabelled-by-reason series (histograms: their _count)."""
    text = httpx.get(server + "/metrics").text
    out = {}
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        name, value = line.rsplit(" ", 1)
        out[re.sub(r"\{.*\}", "", name) if "finished_reason" not in name and "le=" not in name else name] = (
            float(value)
        )
    return out


def wait_until(predicate, tries: int = 400, pause_s: float = 0.05):
    """Poll a condition a bounded number of times (the work is bounded, not the clock)."""
    for _ in range(tries):
        if predicate():
            return True
        time.sleep(pause_s)
    return False


# -- answers ----------------------------------------------------------------------------------------------
def test_models_health_and_metrics_names(server, client):
    assert [m.id for m in client.models.list().data] == [MODEL]
    assert httpx.get(server + "/health").status_code == 200  # open without the key, as vLLM's
    names = set(metrics(server))
    for name in (
        "minillm:num_requests_running",
        "minillm:num_requests_waiting",
        "minillm:kv_cache_usage_perc",
        "minillm:prefix_cache_hit_rate",
        "minillm:prefix_cache_queries_total",
        "minillm:time_to_first_token_seconds_count",
        "minillm:time_per_output_token_seconds_count",
    ):
        assert name in names


def test_completion_equals_offline_greedy_and_counts_usage(client, reference):
    for prompt in PROMPTS[:2]:
        out = client.completions.create(model=MODEL, prompt=prompt, max_tokens=20, temperature=0)
        ref = reference(prompt, 20)
        assert out.choices[0].text == ref.text and out.choices[0].finish_reason == ref.finish_reason
        assert out.usage.prompt_tokens == len(ref.prompt_token_ids)
        assert out.usage.completion_tokens == len(ref.token_ids)
        assert out.usage.total_tokens == out.usage.prompt_tokens + out.usage.completion_tokens


def test_streamed_completion_joins_to_the_same_text_with_usage_last(client, reference):
    chunks = list(
        client.completions.create(
            model=MODEL,
            prompt=PROMPTS[2],
            max_tokens=24,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    ref = reference(PROMPTS[2], 24)
    assert "".join(c.choices[0].text for c in chunks if c.choices) == ref.text
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert not chunks[-1].choices and chunks[-1].usage.completion_tokens == 24
    assert len({c.id for c in chunks}) == 1
    # a chunk per step's token, or fewer when a slow reader lets outputs merge (RequestStream)
    assert 1 <= len([c for c in chunks if c.choices]) <= 24


def test_held_back_text_still_streams_and_joins_to_the_same_text(client, reference):
    stop = "@" * 40  # never produced, and holds back 39 characters until the request finishes
    chunks = [
        c
        for c in client.completions.create(
            model=MODEL, prompt=PROMPTS[3], max_tokens=12, temperature=0, stream=True, stop=[stop]
        )
        if c.choices
    ]
    assert 1 <= len(chunks) <= 12
    assert "".join(c.choices[0].text for c in chunks) == reference(PROMPTS[3], 12).text


def test_every_output_with_new_tokens_is_a_chunk_even_without_text():
    """Tokens whose text is empty (held back for a stop string, or ending mid-character; most tokens of
    random weights) still stream a chunk, as vLLM's do: clients time tokens by chunks."""
    from minillm.request import RequestOutput
    from minillm.server.app import _sse

    def out(n, text, finished=False):
        ids = list(range(n))
        return RequestOutput(0, None, [1], "", ids, finished, "length" if finished else None, delta_text=text)

    class Stream:  # what RequestStream yields: (prompt index, output)
        closed = False

        def __init__(self, outputs):
            self.outputs = outputs

        async def __aiter__(self):
            for o in self.outputs:
                yield 0, o

        def close(self):
            self.closed = True

    async def events(stream):
        response = _sse(stream, lambda i, o: {"text": o.delta_text, "n": len(o.token_ids)}, {}, True)
        return [e async for e in response.body_iterator]

    outputs = [out(1, ""), out(2, ""), out(2, ""), out(3, "ab"), out(4, "", finished=True)]
    stream = Stream(outputs)
    sent = asyncio.run(events(stream))
    data = [json.loads(e[len("data: ") :]) for e in sent[:-1]]
    assert [d.get("n") for d in data] == [1, 2, 3, 4, None]  # no chunk for an output with no new token
    assert data[-1]["choices"] == [] and sent[-1] == "data: [DONE]\n\n" and stream.closed


def test_token_id_prompts_and_a_batch_of_prompts(client, llm, reference):
    ids = llm.tokenizer.encode(PROMPTS[0])
    by_ids = client.completions.create(model=MODEL, prompt=ids, max_tokens=10, temperature=0)
    assert by_ids.choices[0].text == reference(PROMPTS[0], 10).text
    batch = client.completions.create(model=MODEL, prompt=PROMPTS, max_tokens=6, temperature=0)
    assert [c.index for c in batch.choices] == list(range(len(PROMPTS)))
    assert [c.text for c in batch.choices] == [reference(p, 6).text for p in PROMPTS]


def test_chat_through_the_embedded_template(client, llm, reference):
    messages = [
        {"role": "system", "content": "Answer in Python."},
        {"role": "user", "content": "Sort a list"},
    ]
    source = find_chat_template(llm.tokenizer.path)
    prompt = ChatTemplate(source).render(messages)
    assert prompt == "# system: Answer in Python.\n# user: Sort a list\n# assistant:\n"
    out = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=16, temperature=0)
    ref = reference(prompt, 16)
    assert out.choices[0].message.role == "assistant" and out.choices[0].message.content == ref.text
    stream = client.chat.completions.create(
        model=MODEL, messages=messages, max_tokens=16, temperature=0, stream=True
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == ref.text
    assert chunks[-1].choices[0].finish_reason == out.choices[0].finish_reason


def test_stop_strings_seed_and_sampling_options(client):
    out = client.completions.create(model=MODEL, prompt=PROMPTS[0], max_tokens=40, temperature=0, stop=["\n"])
    assert "\n" not in out.choices[0].text and out.choices[0].finish_reason == "stop"
    kw = dict(model=MODEL, prompt=PROMPTS[1], max_tokens=12, temperature=0.9, top_p=0.9, seed=7)
    a = client.completions.create(**kw, extra_body={"top_k": 20}).choices[0].text
    b = client.completions.create(**kw, extra_body={"top_k": 20}).choices[0].text
    assert a == b  # a seeded request draws the same tokens whoever shares its batch
    long = client.completions.create(
        model=MODEL, prompt=PROMPTS[1], max_tokens=30, temperature=0, extra_body={"ignore_eos": True}
    )
    assert long.usage.completion_tokens == 30


def test_constraints_as_vllm_takes_them(client):
    regex = client.completions.create(
        model=MODEL, prompt="port = ", max_tokens=10, extra_body={"guided_regex": "[0-9]{4}"}
    )
    assert re.fullmatch("[0-9]{4}", regex.choices[0].text)
    choice = client.completions.create(
        model=MODEL, prompt="mode = ", max_tokens=10, extra_body={"guided_choice": ["read", "write"]}
    )
    assert choice.choices[0].text in ("read", "write")
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string", "maxLength": 8}, "age": {"type": "integer"}},
        "required": ["name", "age"],
    }
    card = client.completions.create(
        model=MODEL, prompt="card = ", max_tokens=60, temperature=0, extra_body={"guided_json": schema}
    )
    if card.choices[0].finish_reason == "stop":
        assert set(json.loads(card.choices[0].text)) == {"name", "age"}
    chat = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "a person"}],
        max_tokens=60,
        temperature=0,
        response_format={"type": "json_schema", "json_schema": {"name": "card", "schema": schema}},
    )
    if chat.choices[0].finish_reason == "stop":
        assert set(json.loads(chat.choices[0].message.content)) == {"name", "age"}


# -- errors -----------------------------------------------------------------------------------------------
BAD = [  # (body fields over a valid completion, the param the 400 must name)
    ({"temperature": -1}, "temperature"),
    ({"top_p": 0}, "top_p"),
    ({"top_k": -2}, "top_k"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"seed": 2**70}, "seed"),
    ({"stop": [""]}, "stop"),
    ({"stop_token_ids": [-1]}, "stop_token_ids"),
    ({"ignore_eos": "yes"}, "ignore_eos"),
    ({"max_tokens": "3"}, "max_tokens"),  # no silent conversion
    ({"temperature": "hot"}, "temperature"),
    ({"max_token": 3}, "max_token"),  # unknown field
    ({"stream_options": {"include_usage": True, "extra": 1}}, "stream_options.extra"),
    ({"n": 2}, "n"),
    ({"logit_bias": {"5": 1.0}}, "logit_bias"),
    ({"guided_regex": "("}, "guided_regex"),
    ({"guided_choice": []}, "guided_choice"),
    ({"guided_regex": "a", "guided_choice": ["b"]}, "guided_choice"),
    ({"prompt": list(range(16, 1100))}, "prompt"),  # longer than max_model_len
    ({"prompt": [10**6]}, "prompt"),  # outside the vocabulary
    ({"prompt": ""}, "prompt"),
    ({"prompt": [1, "a"]}, "prompt"),
]


@pytest.mark.parametrize("fields,param", BAD, ids=[p for _, p in BAD])
def test_bad_completion_input_is_400_naming_the_field(client, fields, param):
    body = {"model": MODEL, "prompt": "x = ", "max_tokens": 4, **fields}
    with pytest.raises(openai.BadRequestError) as err:
        client.post("/completions", body=body, cast_to=httpx.Response)
    assert err.value.status_code == 400
    assert err.value.body["param"] == param and err.value.body["type"] == "invalid_request_error"
    assert err.value.body["message"]


@pytest.mark.parametrize(
    "messages,param",
    [
        ([], "messages"),
        ([{"role": "tool", "content": "x"}], "messages[0].role"),
        ([{"role": "user"}], "messages[0].content"),
        ([{"role": "user", "content": "x", "mood": "happy"}], "messages[0].mood"),
    ],
)
def test_bad_chat_input_is_400_naming_the_field(client, messages, param):
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model=MODEL, messages=messages, max_tokens=4)
    assert err.value.body["param"] == param


def test_malformed_json_and_non_object_bodies_are_400(server):
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    for body in ('{"model": "pystd-llama", "prompt": ', "[1, 2]", "null"):
        r = httpx.post(server + "/v1/completions", content=body, headers=headers)
        assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error", body


def test_api_key_and_unknown_model(server, client):
    for key in ("wrong", ""):
        unauthorized = openai.OpenAI(base_url=server + "/v1", api_key=key or "x", max_retries=0)
        if not key:
            r = httpx.get(server + "/v1/models")
            assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
            continue
        with pytest.raises(openai.AuthenticationError):
            unauthorized.completions.create(model=MODEL, prompt="x", max_tokens=2)
    with pytest.raises(openai.NotFoundError) as err:
        client.completions.create(model="gpt-5", prompt="x", max_tokens=2)
    assert err.value.body["param"] == "model" and err.value.body["code"] == "model_not_found"
    assert client.completions.create(model=MODEL, prompt="x", max_tokens=2).usage.completion_tokens >= 1


def test_a_model_without_chat_template_is_400_unless_one_is_given(tiny_path, tmp_path):
    tiny = LLM(tiny_path, stage="paged", max_model_len=128)
    with serve_in_thread(tiny, model_name="tiny") as url:
        c = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0)
        with pytest.raises(openai.BadRequestError) as err:
            c.chat.completions.create(
                model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=2
            )
        assert err.value.body["param"] == "chat_template"
        assert c.completions.create(model="tiny", prompt="def", max_tokens=3).usage.completion_tokens >= 1
    template = tmp_path / "t.jinja"
    template.write_text("{% for m in messages %}{{ m['content'] }}{% endfor %}")
    with serve_in_thread(tiny, model_name="tiny", chat_template=str(template)) as url:
        c = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0)
        out = c.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "def"}], max_tokens=3
        )
        assert out.usage.prompt_tokens == len(tiny.tokenizer.encode("def"))


# -- reliability ------------------------------------------------------------------------------------------
def test_disconnect_mid_stream_aborts_and_frees_kv_blocks(server):
    before = metrics(server)
    body = {"model": MODEL, "prompt": PROMPTS[0], "max_tokens": 900, "ignore_eos": True, "stream": True}
    headers = {"Authorization": f"Bearer {KEY}"}
    with (
        httpx.Client(timeout=30) as http,
        http.stream("POST", server + "/v1/completions", json=body, headers=headers) as r,
    ):
        lines = r.iter_lines()  # held: a dropped line iterator closes the connection (httpx)
        assert sum(next(lines).startswith("data: ") for _ in range(6)) == 3
        during = metrics(server)
        assert during["minillm:num_requests_running"] == 1 and during["minillm:kv_cache_usage_perc"] > 0
    # the connection is closed: the server notices at its next write and aborts the request
    assert wait_until(lambda: metrics(server)["minillm:num_requests_running"] == 0)
    after = metrics(server)
    assert after["minillm:kv_cache_usage_perc"] == 0.0
    assert after["minillm:num_aborted_requests_total"] == before["minillm:num_aborted_requests_total"] + 1


def test_disconnect_while_waiting_for_a_non_streamed_answer_aborts(server):
    before = metrics(server)
    body = {"model": MODEL, "prompt": PROMPTS[1], "max_tokens": 900, "ignore_eos": True}
    headers = {"Authorization": f"Bearer {KEY}"}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(server + "/v1/completions", json=body, headers=headers, timeout=0.5)
    assert wait_until(
        lambda: (
            metrics(server)["minillm:num_aborted_requests_total"]
            > before["minillm:num_aborted_requests_total"]
        )
    )
    assert wait_until(lambda: metrics(server)["minillm:kv_cache_usage_perc"] == 0.0)


def test_100_concurrent_streams_equal_their_non_streamed_greedy_text(server):
    prompts = [f"def f{i}(x):\n    return x * {i}" for i in range(100)]
    aclient = openai.AsyncOpenAI(base_url=server + "/v1", api_key=KEY, max_retries=0)

    async def plain(p):
        out = await aclient.completions.create(model=MODEL, prompt=p, max_tokens=12, temperature=0)
        return out.choices[0].text

    async def streamed(p):
        ids, text, finishes = set(), "", 0
        async for c in await aclient.completions.create(
            model=MODEL, prompt=p, max_tokens=12, temperature=0, stream=True
        ):
            ids.add(c.id)
            text += c.choices[0].text
            finishes += c.choices[0].finish_reason is not None
        assert len(ids) == 1 and finishes == 1  # one answer, finished once
        return text, ids.pop()

    async def run():
        expected = await asyncio.gather(*(plain(p) for p in prompts))
        got = await asyncio.gather(*(streamed(p) for p in prompts))
        await aclient.close()
        return expected, got

    expected, got = asyncio.run(run())
    assert [t for t, _ in got] == expected
    assert len({i for _, i in got}) == len(prompts)  # no stream answered twice
    m = metrics(server)
    assert m["minillm:num_requests_running"] == 0 and m["minillm:kv_cache_usage_perc"] == 0.0


def test_sigterm_shuts_down_cleanly_with_a_stream_in_flight(tiny_path):
    with launch_server(tiny_path, stage="paged", args=["--max-model-len", "256"]) as srv:
        body = {
            "model": srv.model_name,
            "prompt": [5, 6, 7],
            "max_tokens": 250,
            "ignore_eos": True,
            "stream": True,
        }
        started, ended = threading.Event(), threading.Event()

        def stream():
            try:
                with httpx.stream("POST", srv.api_url + "/completions", json=body, timeout=60) as r:
                    for _ in r.iter_lines():
                        started.set()
            except httpx.HTTPError:
                pass  # the server closed the connection: aborted, as it should
            finally:
                started.set()
                ended.set()

        threading.Thread(target=stream, daemon=True).start()
        assert started.wait(60)
        # uvicorn drains for up to 5 s, cancels what is left, the engine loop stops, then the signal
        # is raised again: the exit status is SIGTERM's, and no SIGKILL was needed
        assert stop_server(srv.process, timeout_s=60) in (0, -signal.SIGTERM)
        assert ended.wait(30)
        assert any("minillm serve: stopped" in line for line in srv.log), list(srv.log)
        assert not any("Traceback" in line for line in srv.log), list(srv.log)


# -- pieces -----------------------------------------------------------------------------------------------
def test_param_of_maps_engine_messages_to_request_fields():
    from minillm.server.protocol import param_of

    assert param_of("SamplingParams.top_p must be a number in (0, 1], got 0", "prompt") == "top_p"
    assert param_of("SamplingParams.regex: unbalanced parenthesis", "prompt") == "guided_regex"
    assert param_of("prompt 0: 1100 tokens leave no room", "messages") == "messages"
    assert param_of("chat_template: no template", "messages") == "chat_template"


def test_chat_template_file_override_and_errors(tmp_path):
    path = tmp_path / "t.jinja"
    path.write_text("{{ raise_exception('no system messages') if messages[0]['role'] == 'system' }}ok")
    template = ChatTemplate(find_chat_template(None, path))
    assert template.render([{"role": "user", "content": "x"}]) == "ok"
    with pytest.raises(ValueError, match="chat_template: no system messages"):
        template.render([{"role": "system", "content": "x"}])
    with pytest.raises(ValueError, match="chat_template"):
        ChatTemplate(None).render([{"role": "user", "content": "x"}])
    with pytest.raises(ValueError, match="--chat-template"):
        find_chat_template(None, tmp_path / "missing.jinja")


def test_metrics_count_latencies_and_prefix_cache_hits(server, client):
    before = metrics(server)
    prompt = "import collections\n" * 12  # several full KV blocks: the second request finds them cached
    for _ in range(2):
        client.completions.create(model=MODEL, prompt=prompt, max_tokens=3, temperature=0)
    after = metrics(server)
    ttft = "minillm:time_to_first_token_seconds_count"
    assert after[ttft] == before[ttft] + 2
    assert after["minillm:prefix_cache_hits_total"] > before["minillm:prefix_cache_hits_total"]
    assert 0 < after["minillm:prefix_cache_hit_rate"] <= 1


@pytest.mark.parametrize("mode", ["async_output", "async_scheduling"])
def test_a_server_with_async_modes_streams_the_same_texts(reference, mode):
    """EngineConfig.async_output and async_scheduling under the server's engine loop: outputs come a step
    later, the texts (streamed and not) are the offline engine's."""
    with serve_in_thread(LLM(stage="fsm", **{mode: True}), model_name=MODEL) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0)
        for prompt in PROMPTS[:2]:
            want = reference(prompt, 16).text
            out = client.completions.create(model=MODEL, prompt=prompt, max_tokens=16, temperature=0)
            stream = client.completions.create(
                model=MODEL, prompt=prompt, max_tokens=16, temperature=0, stream=True
            )
            assert out.choices[0].text == want
            assert "".join(c.choices[0].text for c in stream if c.choices) == want
