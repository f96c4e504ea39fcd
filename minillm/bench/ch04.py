"""Chapter 4 benchmark: what one token budget per step does to decode latency when long prompts arrive.

Steady decode traffic (short prompts, longer outputs, Poisson arrivals) shares the engine with long
prompts that arrive periodically. Two schedulers over the same model and KV pool:
  radix        chapter 3's stage: prefill first. A step that admits a long prompt computes all of it,
               and every running decode waits for that step (its token budget must hold a whole prompt)
  unified @ B  chapter 4's stage: running requests first, then new ones, within B tokens per step. A long
               prompt is cut into chunks that share steps with the decodes
Arrival rates are set in units of one measured decode step (at the concurrency the short requests
reach), so the engine is as loaded on a laptop CPU as on a GPU: the workload line states the rates in
requests per second that this gave. Prompts are random token ids, so nothing is shared and the prefix
cache plays no part. Reported per variant: ITL p50/p99, TPOT p99 and TTFT p50/p99 of the short
requests, TTFT of the long ones, output throughput, engine steps and the most tokens in one step.
Greedy outputs must equal radix's.

Run: minillm bench --chapter 4 [--quick] [--device cuda --model qwen3-0.6b --load-format dummy]
"""

from __future__ import annotations

import statistics

import torch

from minillm.bench.common import Bench, warm_up
from minillm.bench.metrics import summarize
from minillm.bench.report import markdown_table, pyplot, save_figure
from minillm.bench.runner import run_llm
from minillm.bench.workloads import poisson_with_long_prompts
from minillm.config import STAGES
from minillm.model.loader import read_config
from minillm.request import SamplingParams

SCALES = {
    # The default model on a CPU: a decode step of 8 sequences is ~8 ms, a 900-token prefill ~150 ms.
    # Long prompts are scaled down to fit a model with fewer positions (the tests' tiny one has 256).
    "quick": dict(
        num_short=40,
        short_input_len=32,
        short_output_len=64,
        short_gap_steps=8,  # mean decode steps between short arrivals: ~64 / 8 = 8 decoding at once
        num_long=4,
        long_input_len=(512, 900),
        long_output_len=8,
        long_period_steps=80,
        budgets=(64, 128, 512),
        kv_cache_tokens=8192,  # room for everyone: no preemption, the comparison is about scheduling
        max_num_seqs=64,
        block_size=16,
    ),
    # Sized for one GPU call: ~1,000 engine steps per variant (qwen3-0.6b's eager step is ~55 ms on an H100).
    "full": dict(
        num_short=160,
        short_input_len=128,
        short_output_len=128,
        short_gap_steps=4,  # ~32 decoding at once
        num_long=8,
        long_input_len=(2048, 4096),
        long_output_len=16,
        long_period_steps=80,
        budgets=(256, 512, 2048),
        kv_cache_tokens=32768,
        max_num_seqs=128,
        block_size=16,
    ),
}


def decode_step_time(llm, num_seqs: int, steps: int = 24) -> float:
    """Median seconds of one decode step of num_seqs sequences: the clock that sets the arrival rates.
    Warm-up ids (below 16) never occur in workload prompts, so nothing cached here can be hit."""
    prompts = [[4 + (i + j) % 12 for j in range(16)] for i in range(num_seqs)]
    llm.engine.step_stats.clear()
    llm.generate(
        prompt_token_ids=prompts,
        sampling_params=SamplingParams(max_tokens=steps, temperature=0.0, ignore_eos=True),
    )
    st = list(llm.engine.step_stats)
    return statistics.median(b.time - a.time for a, b in zip(st[1:], st[2:]))  # st[0] is the prefill


def variants(budgets, radix_budget: int) -> dict[str, dict]:
    """name -> Engine.reconfigure overrides: stage radix, then stage unified at each token budget."""
    out = {"radix": dict(stage="radix", **STAGES["radix"], max_num_batched_tokens=radix_budget)}
    for b in budgets:
        out[f"unified @ {b}"] = dict(stage="unified", **STAGES["unified"], max_num_batched_tokens=b)
    return out


def token_times(arrival: float, m) -> list[tuple[float, float]]:
    """(seconds after the run's start, gap before it in ms) for every token after a request's first."""
    t, out = arrival + m.ttft, []
    for gap in m.itl:
        t += gap
        out.append((t, 1000 * gap))
    return out


def run(model: str, **options) -> dict:
    """`minillm bench --chapter 4`; options: Bench's fields (device, load_format, quick, out, dtype, progress)."""
    with Bench(4, model, **options) as bench:
        return measure(bench)


def measure(bench: Bench) -> dict:
    s, progress = bench.scale(SCALES), bench.progress
    mc = read_config(bench.model, bench.load_format)[0]
    lo, hi = s["long_input_len"]
    fit = min(1.0, (mc.max_position_embeddings - s["long_output_len"]) / hi)
    long_len = (int(lo * fit), int(hi * fit))
    short_max = int(s["short_input_len"] * 1.5) + int(s["short_output_len"] * 1.5)  # range_ratio 0.5
    max_len = max(long_len[1] + s["long_output_len"], short_max)
    radix_budget = max(2048, max_len)  # prefill first cannot split a prompt: one must fit a step
    llm = bench.llm(
        "radix",
        max_model_len=max_len,
        kv_cache_tokens=s["kv_cache_tokens"],
        block_size=s["block_size"],
        max_num_seqs=s["max_num_seqs"],
        max_num_batched_tokens=radix_budget,
    )
    warm_up(llm, 2, max_len - 2)  # the largest prefill shapes once
    concurrency = round(s["short_output_len"] / s["short_gap_steps"])
    step_s = decode_step_time(llm, concurrency)
    rate = 1 / (s["short_gap_steps"] * step_s)
    period = s["long_period_steps"] * step_s
    wl = poisson_with_long_prompts(
        s["num_short"],
        s["short_input_len"],
        s["short_output_len"],
        rate,
        s["num_long"],
        long_len,
        s["long_output_len"],
        period,
        mc.vocab_size,
        seed=0,
    )
    is_long = set(wl.params["long"])
    rows, itl_points, timelines = [], {}, {}
    for name, knobs in variants(s["budgets"], radix_budget).items():
        llm.engine.reconfigure(**knobs)  # a fresh KV pool and scheduler, the same weights
        warm_up(llm, 1, 8)
        if bench.device.startswith("cuda"):
            # cuDNN plans a new attention shape once (tens of ms): an untimed pass
            run_llm(llm, wl, f"{name}: shape warm-up", progress=progress, warmup=False)
            llm.engine.reconfigure(**knobs)
        llm.engine.step_stats.clear()
        r = run_llm(llm, wl, name, progress=progress, warmup=False)
        short = [m for i, m in enumerate(r.metrics) if i not in is_long]
        longs = [m for i, m in enumerate(r.metrics) if i in is_long]
        st = list(llm.engine.step_stats)
        row = {
            "variant": name,
            "budget": knobs["max_num_batched_tokens"],
            **r.summary(),
            **{f"short_{k}": v for k, v in summarize(short, r.duration).items()},
            **{f"long_{k}": v for k, v in summarize(longs, r.duration).items()},
            "num_steps": len(st),
            "max_step_tokens": max(x.num_tokens for x in st),
            "num_preemptions": llm.engine.scheduler.num_preemptions,
        }
        if name == "radix":  # first in variants(): the reference outputs
            ref = r.token_ids
        row["same_tokens"] = r.token_ids == ref
        rows.append(row)
        itl_points[name] = [
            p
            for i, m in enumerate(r.metrics)
            if i not in is_long
            for p in token_times(wl.requests[i].arrival_time, m)
        ]
        timelines[name] = [(x.time - st[0].time, x.num_seqs, x.num_tokens) for x in st]
    same = all(r["same_tokens"] for r in rows)
    cols = [
        ("variant", "variant", ""),
        ("short_median_itl_ms", "ITL p50 ms", ".1f"),
        ("short_p99_itl_ms", "ITL p99 ms", ".1f"),
        ("short_p99_tpot_ms", "TPOT p99 ms", ".1f"),
        ("short_median_ttft_ms", "TTFT p50 ms", ".1f"),
        ("short_p99_ttft_ms", "TTFT p99 ms", ".1f"),
        ("long_median_ttft_ms", "long TTFT p50 ms", ".0f"),
        ("long_p99_ttft_ms", "long TTFT p99 ms", ".0f"),
        ("output_throughput", "out tok/s", ".1f"),
        ("num_steps", "steps", "d"),
        ("max_step_tokens", "max step tokens", "d"),
        ("num_preemptions", "preempt", "d"),
        ("same_tokens", "same tokens", ""),
    ]
    dt = llm.config.torch_dtype
    scaled = (
        f" (scaled x{fit:.2f} from {lo}-{hi} to fit {mc.max_position_embeddings} positions)"
        if fit < 1
        else ""
    )
    header = (
        bench.title(dt)
        + f"\nworkload: {s['num_short']} short requests (prompt {s['short_input_len']}, output"
        f" {s['short_output_len']} tokens, each uniform +-50%) arriving as a Poisson process at {rate:.1f}/s"
        f" (one per {s['short_gap_steps']} decode steps of {concurrency} sequences, measured at"
        f" {1000 * step_s:.1f} ms), and {s['num_long']} long prompts of {long_len[0]}-{long_len[1]}"
        f" tokens{scaled} (output {s['long_output_len']}) every {period:.2f} s from {period / 2:.2f} s."
        f" Random token ids, greedy, EOS ignored; max_model_len {max_len}, KV pool {s['kv_cache_tokens']}"
        f" slots, block_size {s['block_size']}, max_num_seqs {s['max_num_seqs']}. radix: prefill first,"
        f" token budget {radix_budget}; unified @ B: token budget B per step. ITL, TPOT and TTFT are the"
        f" short requests'. Token-identical to radix: {same}"
        f"{'.' if dt == torch.float32 else ' (bf16 sums in another order can flip near-ties).'}"
    )
    table = markdown_table(rows, cols)
    payload = {
        "scale": s,
        "workload": wl.describe(),
        "decode_step_s": step_s,
        "config": {"engine": vars(llm.config), "variants": variants(s["budgets"], radix_budget)},
        "token_identical": same,
        "aggregates": rows,
        "timelines": timelines,  # per step: (seconds after the first step, sequences, tokens)
    }
    record = bench.publish(payload, header, table)
    arrivals = [wl.requests[i].arrival_time for i in sorted(is_long)]
    plot(rows, itl_points, arrivals, bench.png, header.split("\n")[0])
    return record


def plot(rows, itl_points, long_arrivals, path, title: str) -> None:
    plt = pyplot()
    names = list(itl_points)
    colors = dict(zip(names, ["#c44", "#4a6", "#48c", "#84c", "#c84"]))
    fig = plt.figure(figsize=(15, 1.6 + 1.6 * len(names)))
    grid = fig.add_gridspec(len(names), 2, width_ratios=(2.2, 1))
    top = None
    for i, name in enumerate(names):
        ax = fig.add_subplot(grid[i, 0], sharex=top, sharey=top)
        top = top or ax
        pts = itl_points[name]
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=3, color=colors[name], lw=0)
        for t in long_arrivals:
            ax.axvline(t, color="#888", ls=":", lw=1)
        ax.set_ylabel("ITL (ms)")
        ax.text(0.005, 0.9, name, transform=ax.transAxes, va="top", fontsize=9, weight="bold")
        if i < len(names) - 1:
            ax.tick_params(labelbottom=False)
    top.set_title("inter-token gaps of the short requests (dotted: a long prompt arrives)", fontsize=10)
    ax.set_xlabel("time since start (s)")
    ax2 = fig.add_subplot(grid[:, 1])
    for r in rows:
        x, y = r["short_p99_itl_ms"], r["output_throughput"]
        ax2.plot(x, y, "o", color=colors[r["variant"]], ms=8)
        ax2.annotate(r["variant"], (x, y), textcoords="offset points", xytext=(6, 4), fontsize=8)
    ax2.set(xlabel="ITL p99 of the short requests (ms)", ylabel="output tokens / s")
    ax2.set_title("throughput vs ITL p99 across budgets", fontsize=10)
    ax2.margins(0.25)
    save_figure(fig, path, title)
