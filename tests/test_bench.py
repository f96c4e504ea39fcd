"""The benchmark harness: metrics arithmetic, workloads, and a smoke run of every chapter at quick scale
on a tiny checkpoint (no timings are asserted: benchmarks are commands, not tests)."""

from __future__ import annotations

import json

import pytest
import torch

from minillm.bench import CHAPTERS, run_chapter
from minillm.bench.common import Bench, load_warning, pick_cpu_threads
from minillm.bench.metrics import percentile, summarize
from minillm.bench.workloads import fixed, from_jsonl, random_lengths, to_jsonl
from minillm.request import RequestMetrics

pytestmark = pytest.mark.ch1


def test_percentile_matches_numpy():
    np = pytest.importorskip("numpy")
    xs = [3.0, 1.0, 4.0, 1.5, 9.0, 2.6]
    for q in (0, 10, 50, 90, 99, 100):
        assert percentile(xs, q) == pytest.approx(float(np.percentile(xs, q)))


def test_summarize_counts_tokens_and_rates():
    ms = [
        RequestMetrics(0.1, 0.01, [0.01, 0.01], 0.12, 0, 5, 3),
        RequestMetrics(0.2, 0.02, [0.02], 0.22, 2, 7, 2),
    ]
    s = summarize(ms, duration=0.5)
    assert s["total_input_tokens"] == 12 and s["total_output_tokens"] == 5 and s["num_cached_tokens"] == 2
    assert s["output_throughput"] == pytest.approx(10.0) and s["request_throughput"] == pytest.approx(4.0)
    assert s["median_ttft_ms"] == pytest.approx(150.0) and s["mean_itl_ms"] == pytest.approx(40 / 3)


def test_workloads_are_seeded_and_bounded(tmp_path):
    a = random_lengths(50, 40, 20, 500, dist="lognormal", max_len=64, seed=3)
    b = random_lengths(50, 40, 20, 500, dist="lognormal", max_len=64, seed=3)
    assert [r.prompt_token_ids for r in a.requests] == [r.prompt_token_ids for r in b.requests]
    assert all(len(r.prompt_token_ids) + r.max_tokens <= 64 for r in a.requests)
    w = fixed(3, 8, 4, 500)
    path = tmp_path / "w.jsonl"
    to_jsonl(w, path)
    back = from_jsonl(path)
    assert [r.prompt_token_ids for r in back.requests] == [r.prompt_token_ids for r in w.requests]
    path.write_text(json.dumps({"prompt_token_ids": [1]}) + "\n")
    with pytest.raises(ValueError, match="max_tokens"):
        from_jsonl(path)


def test_bench_picks_cpu_threads_records_the_load_and_restores_threads(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    with Bench(1, "model") as bench:
        assert torch.get_num_threads() == 1  # one thread on the CPU unless OMP_NUM_THREADS says otherwise
        load = bench.env["load"]["start"]
        assert {"loadavg_1m", "loadavg_5m", "loadavg_15m", "cpu_count", "torch_threads"} <= set(load)
        assert load["torch_threads"] == 1 and load["cpu_count"] >= 1
    assert torch.get_num_threads() == before
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    torch.set_num_threads(2)
    try:
        assert pick_cpu_threads("cpu") == 2  # the user's setting (torch reads it at start-up) stands
        assert pick_cpu_threads("cuda") == 2
    finally:
        torch.set_num_threads(before)


def test_load_warning_when_the_load_exceeds_the_cores():
    busy = {"loadavg_1m": 4.5, "loadavg_5m": 1.0, "loadavg_15m": 1.0, "cpu_count": 2, "torch_threads": 1}
    assert "load average 4.5" in load_warning(busy, "start") and "2 cores" in load_warning(busy, "start")
    assert load_warning({**busy, "loadavg_1m": 1.5}, "end") is None


@pytest.mark.parametrize("chapter", sorted(CHAPTERS))
def test_every_chapter_benchmark_runs_at_quick_scale(tiny_model_with_tokenizer, tmp_path, chapter):
    payload = run_chapter(
        chapter, model=tiny_model_with_tokenizer[0], quick=True, out=str(tmp_path), progress=False
    )
    name = f"ch{chapter:02d}"
    assert (tmp_path / f"{name}.json").is_file() and (tmp_path / f"{name}.md").is_file()
    assert {"start", "end"} <= set(payload["env"]["load"])  # the machine's load, for judging the timings
    if chapter:
        assert (tmp_path / f"{name}.png").is_file()
        assert payload["token_identical"]


def test_chapter5_benchmark_compares_three_strategies_with_valid_outputs(tiny_model_with_tokenizer, tmp_path):
    """`minillm bench --chapter 5 --quick`: every strategy and the baseline on both workloads, every
    constrained output that finished is a valid document, naive and indexed agree token for token.
    Peers (outlines-core, xgrammar, llguidance) are optional: this passes without them."""
    from minillm.cli import main

    main(
        ["bench", "--chapter", "5", "--quick", "--no-progress", "--model", tiny_model_with_tokenizer[0]]
        + ["--out", str(tmp_path)]
    )
    payload = json.loads((tmp_path / "ch05" / "ch05.json").read_text())
    rows = [r for r in payload["aggregates"] if not r.get("peer")]
    for workload in ("character card", "json-schema mix"):
        got = {r["strategy"] for r in rows if r["workload"] == workload}
        assert got == {"naive", "indexed", "compressed", "unconstrained"}
    constrained = [r for r in rows if r["strategy"] != "unconstrained"]
    assert any(r["finish_reasons"].get("stop") for r in constrained)  # something to validate
    assert all(r["valid_pct"] == 100.0 for r in constrained if r["finish_reasons"].get("stop"))
    assert payload["token_identical"]
    assert (tmp_path / "ch05" / "ch05.md").is_file() and (tmp_path / "ch05" / "ch05.png").is_file()


def test_chapter7_runs_loop_options_on_the_stage_it_built(tiny_model_with_tokenizer, tmp_path, monkeypatch):
    """A variant that differs from the one before only in step-loop options (async scheduling) reuses
    its build, so the two run on the same compiled graphs; its tokens equal the reference's."""
    import minillm.bench.ch07 as ch07
    from minillm.bench.common import Bench

    variants = {
        "unified": ("unified", {}),
        "unified + async scheduling": ("unified", {"async_scheduling": True}),
    }
    monkeypatch.setitem(ch07.VARIANTS, "cpu", variants)
    builds = []
    real = Bench.llm
    monkeypatch.setattr(
        Bench, "llm", lambda self, stage, **kw: builds.append(stage) or real(self, stage, **kw)
    )
    result = ch07.run(
        tiny_model_with_tokenizer[0], parts=("e2e",), quick=True, out=str(tmp_path), progress=False
    )
    assert builds == ["unified"]
    assert {r["variant"] for r in result["rows"]} == set(variants)
    assert all(r["token_agreement"] == 1.0 for r in result["rows"])
    # the reused build starts cold: the first variant's prompts are not served from its prefix cache
    for workload in {r["workload"] for r in result["rows"]}:
        assert {r["cached_tokens"] for r in result["rows"] if r["workload"] == workload} == {0}


def test_run_llm_warms_up_on_the_first_prompt_and_starts_cold(tiny_path):
    """The warm-up computes the first request's whole prompt (its shapes' first-call costs stay out of
    the run) and the run then starts with an empty prefix cache: nothing is served from the warm-up."""
    from minillm import LLM
    from minillm.bench.runner import run_llm

    llm = LLM(tiny_path, stage="radix", max_model_len=128, block_size=16, kv_cache_tokens=1024)
    wl = fixed(3, 40, 4, vocab_size=200, seed=0)  # 40-token prompts: two full blocks each
    seen = []
    generate = llm.generate
    llm.generate = lambda **kw: seen.append(kw["prompt_token_ids"]) or generate(**kw)
    res = run_llm(llm, wl, "warm-up", progress=False)
    assert seen == [[wl.requests[0].prompt_token_ids]]
    assert [m.num_cached_tokens for m in res.metrics] == [0, 0, 0]
