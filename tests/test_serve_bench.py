"""Chapter 8: the serving benchmark's arithmetic (vLLM's definitions) and a small run against a live
server (no timings asserted: a benchmark is a command, not a test).

Run: pytest -m ch8 -k bench.
"""

from __future__ import annotations

import asyncio
import json
import math
import statistics

import pytest

from minillm.bench.serve import (
    RequestResult,
    ServeRequest,
    calculate_metrics,
    jsonl_requests,
    parse_goodput,
    parse_rates,
    run_benchmark,
    send_completion,
    send_times,
)

pytestmark = pytest.mark.ch8


def test_send_times_are_poisson_with_the_asked_rate_and_seeded():
    times = send_times(4000, request_rate=8.0, seed=1)
    gaps = [b - a for a, b in zip([0.0, *times], times)]
    assert statistics.fmean(gaps) == pytest.approx(1 / 8, rel=0.05)
    assert statistics.pstdev(gaps) == pytest.approx(1 / 8, rel=0.08)  # exponential: std = mean
    assert send_times(10, 8.0, seed=1) == times[:10] and send_times(10, 8.0, seed=2) != times[:10]
    bursty = send_times(4000, 8.0, burstiness=0.25, seed=1)  # gamma shape 1/4: same mean, twice the std
    gaps = [b - a for a, b in zip([0.0, *bursty], bursty)]
    assert statistics.fmean(gaps) == pytest.approx(1 / 8, rel=0.1) and statistics.pstdev(gaps) > 1.5 / 8
    assert send_times(3, math.inf) == [0.0, 0.0, 0.0]


def test_metrics_follow_vllm_definitions():
    a = RequestResult(True, prompt_len=10, output_tokens=5, ttft=0.1, itl=[0.05] * 4, latency=0.3)
    b = RequestResult(True, prompt_len=20, output_tokens=1, ttft=0.2, itl=[], latency=0.2)
    c = RequestResult(False, error="HTTP 500")
    m = calculate_metrics([a, b, c], duration=2.0, goodput={"ttft": 150, "tpot": 60})
    assert m["completed"] == 2 and m["failed"] == 1 and m["errors"] == ["HTTP 500"]
    assert m["total_input_tokens"] == 30 and m["total_output_tokens"] == 6
    assert (
        m["request_throughput"] == 1.0
        and m["output_throughput"] == 3.0
        and m["total_token_throughput"] == 18.0
    )
    assert m["mean_tpot_ms"] == pytest.approx(50.0)  # (E2EL - TTFT) / (n - 1); one-token requests have none
    assert m["median_ttft_ms"] == pytest.approx(150.0) and m["p99_itl_ms"] == pytest.approx(50.0)
    assert m["request_goodput"] == 0.5  # only a meets both SLOs (b's TTFT is 200 ms)


def test_tokens_whose_text_is_empty_are_still_timed():
    """Random weights (and byte-level tokens that end mid-character) stream chunks with empty text: each
    is a token, so the first one sets TTFT and every later one adds an inter-token latency."""
    import httpx

    texts = ["", "", "a", "", "b"]
    chunks = [{"choices": [{"index": 0, "text": t, "finish_reason": None}]} for t in texts]
    chunks.append({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 5}})
    body = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"

    async def go():
        transport = httpx.MockTransport(lambda request: httpx.Response(200, text=body))
        async with httpx.AsyncClient(transport=transport) as http:
            req = ServeRequest(prompt=[1, 2, 3], max_tokens=5)
            return await send_completion(http, "http://x/v1/completions", "m", req, {}, 0.0)

    res = asyncio.run(go())
    assert res.success and res.text == "ab" and res.output_tokens == 5
    assert res.ttft > 0 and len(res.itl) == 4 and res.latency >= res.ttft


def test_option_parsing_names_what_is_wrong(tmp_path):
    assert parse_goodput(["ttft:1000", "tpot:50"]) == {"ttft": 1000.0, "tpot": 50.0}
    with pytest.raises(ValueError, match="--goodput"):
        parse_goodput(["latency:5"])
    assert parse_rates("1, 2,inf") == [1.0, 2.0, math.inf]
    with pytest.raises(ValueError, match="--request-rates"):
        parse_rates("0,1")
    path = tmp_path / "reqs.jsonl"
    path.write_text(
        json.dumps({"prompt": "def f():", "max_tokens": 4})
        + "\n"
        + json.dumps({"prompt_token_ids": [5, 6], "max_tokens": 2})
        + "\n"
    )
    assert jsonl_requests(path) == [ServeRequest("def f():", 4), ServeRequest([5, 6], 2)]
    path.write_text(json.dumps({"prompt": "x"}) + "\n")
    with pytest.raises(ValueError, match="max_tokens"):
        jsonl_requests(path)


def test_a_run_against_a_live_server_counts_every_token(tiny_path, tmp_path):
    from minillm import LLM
    from minillm.cli import main
    from minillm.server.launch import serve_in_thread

    llm = LLM(tiny_path, stage="unified", max_model_len=128)
    requests = [ServeRequest([20 + i, 30, 40, 50], 6 + i) for i in range(6)] + [ServeRequest("def f", 5)]
    with serve_in_thread(llm, model_name="tiny", api_key="k") as url:
        m = asyncio.run(
            run_benchmark(
                url, "tiny", requests, request_rate=50.0, max_concurrency=3, api_key="k", progress=False
            )
        )
        assert m["completed"] == len(requests) and m["failed"] == 0
        assert m["total_output_tokens"] == sum(r.max_tokens for r in requests)  # EOS ignored
        assert m["total_input_tokens"] == 6 * 4 + len(llm.tokenizer.encode("def f"))
        assert all(r["ttft"] > 0 and r["latency"] >= r["ttft"] for r in m["results"])
        bad = asyncio.run(run_benchmark(url, "tiny", requests[:2], api_key="wrong", progress=False))
        assert bad["failed"] == 2 and "HTTP 401" in bad["errors"][0]
        main(
            [
                "bench",
                "serve",
                "--base-url",
                url,
                "--api-key",
                "k",
                "--num-prompts",
                "5",
                "--random-input-len",
                "8",
            ]
            + ["--random-output-len", "4", "--vocab-size", "384", "--sweep", "--request-rates", "20,inf"]
            + ["--goodput", "ttft:5000", "--no-progress", "--out", str(tmp_path)]
        )
    record = json.loads((tmp_path / "ch08.json").read_text())
    assert [r["request_rate"] for r in record["runs"]] == [20.0, "inf"]
    assert all(r["completed"] == 5 and "request_goodput" in r for r in record["runs"])
    assert (
        record["token_identical"] and (tmp_path / "ch08.png").is_file() and (tmp_path / "ch08.md").is_file()
    )


def test_a_stage_label_carries_its_own_serve_flags(monkeypatch):
    """sweep_stages("triton --async-scheduling"): the server starts as stage triton with that flag, after
    the flags every stage gets, and the runs are filed under the whole label."""
    import contextlib
    import types

    import minillm.server.launch as launch
    from minillm.bench import ch08

    started = []

    @contextlib.contextmanager
    def fake_launch(model, *, stage=None, args=(), env=None):
        started.append((stage, list(args)))
        yield types.SimpleNamespace(base_url="http://x", model_name="m")

    monkeypatch.setattr(launch, "launch_server", fake_launch)
    monkeypatch.setattr(ch08, "sweep", lambda url, model, requests, rates, **kw: [f"{url} {model}"])
    runs = ch08.sweep_stages(
        ["paged", "triton --async-scheduling"], [], [1.0], server_args=["--device", "cuda"]
    )
    assert started == [
        ("paged", ["--device", "cuda"]),
        ("triton", ["--device", "cuda", "--async-scheduling"]),
    ]
    assert list(runs) == ["paged", "triton --async-scheduling"]
    assert "triton --async-scheduling" in ch08.CUDA_STAGES
