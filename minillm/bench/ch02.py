"""Chapter 2 benchmark: the same KV memory, reserved per sequence (naive) or paged in blocks.

Both stages get the same KV budget in token slots. Stage naive reserves max_model_len slots per
sequence and batches statically; stage paged hands out block_size-slot blocks on demand and batches
continuously. Workload: lognormal prompt and output lengths (seeded). Reported: KV waste (reserved but
unused slots, time-averaged), KV utilisation, most sequences holding KV at once, preemptions,
throughput and latency; then throughput across three budgets.

Run: minillm bench --chapter 2 [--quick] [--device cuda --model qwen3-0.6b --load-format dummy]
"""

from __future__ import annotations

import statistics

from minillm.bench.common import Bench
from minillm.bench.report import markdown_table, pyplot, save_figure
from minillm.bench.runner import run_llm
from minillm.bench.workloads import random_lengths

SCALES = {
    "quick": dict(
        num_requests=48,
        input_len=48,
        output_len=48,
        sigma=0.6,
        max_len=256,
        budget=2048,
        budget_factors=(0.5, 1, 2),
        block_size=16,
    ),
    "full": dict(
        num_requests=96,
        input_len=128,
        output_len=64,
        sigma=0.6,
        max_len=512,
        budget=8192,
        budget_factors=(0.5, 1, 2),
        block_size=16,
    ),
}
STAGES = ("naive", "paged")


def kv_summary(engine) -> dict:
    st = list(engine.step_stats)
    reserved = [s.kv_reserved for s in st if s.kv_reserved]
    waste = [1 - s.kv_used / s.kv_reserved for s in st if s.kv_reserved]
    return {
        "kv_waste_pct": 100 * statistics.fmean(waste) if waste else 0.0,
        "kv_used_pct_of_pool": 100 * statistics.fmean(s.kv_used / s.kv_total for s in st),
        "kv_reserved_pct_of_pool": 100 * statistics.fmean(reserved) / st[0].kv_total if reserved else 0.0,
        "max_concurrent_seqs": max(s.num_holding_kv for s in st),
        "mean_batch_seqs": statistics.fmean(s.num_seqs for s in st),
        "num_steps": len(st),
        "num_preemptions": getattr(engine.scheduler, "num_preemptions", 0),
    }


def run(model: str, **options) -> dict:
    """`minillm bench --chapter 2`; options: Bench's fields (device, load_format, quick, out, dtype, progress)."""
    with Bench(2, model, **options) as bench:
        return measure(bench)


def measure(bench: Bench) -> dict:
    s = bench.scale(SCALES)
    rows, timelines, llms = [], {}, {}
    wl = None
    for factor in s["budget_factors"]:
        budget = int(s["budget"] * factor)
        for stage in STAGES:
            if stage in llms:  # reuse the loaded weights; a fresh KV pool and scheduler for this budget
                llm = llms[stage]
                llm.engine.reconfigure(kv_cache_tokens=budget)
            else:
                llm = llms[stage] = bench.llm(
                    stage,
                    max_model_len=s["max_len"],
                    kv_cache_tokens=budget,
                    block_size=s["block_size"],
                    max_num_seqs=256,
                    max_num_batched_tokens=max(2048, s["max_len"]),
                )
            if wl is None:
                wl = random_lengths(
                    s["num_requests"],
                    s["input_len"],
                    s["output_len"],
                    llm.engine.model_config.vocab_size,
                    dist="lognormal",
                    sigma=s["sigma"],
                    max_len=s["max_len"],
                    seed=0,
                )
            llm.engine.step_stats.clear()
            r = run_llm(llm, wl, f"{stage} @ {budget} slots", progress=bench.progress)
            row = {"stage": stage, "budget": budget, **r.summary(), **kv_summary(llm.engine)}
            rows.append(row)
            if factor == 1:
                timelines[stage] = list(llm.engine.step_stats)
                row["tokens"] = r.token_ids
    ref = {r["budget"]: r for r in rows if r["stage"] == "naive"}
    for r in rows:
        r["throughput_x_naive"] = r["output_throughput"] / ref[r["budget"]]["output_throughput"]
    same = (
        next(r for r in rows if r["stage"] == "paged" and "tokens" in r)["tokens"]
        == next(r for r in rows if r["stage"] == "naive" and "tokens" in r)["tokens"]
    )
    for r in rows:
        r.pop("tokens", None)
    cols = [
        ("stage", "stage", ""),
        ("budget", "KV slots", "d"),
        ("kv_waste_pct", "KV waste %", ".1f"),
        ("kv_used_pct_of_pool", "KV used % of pool", ".1f"),
        ("max_concurrent_seqs", "max seqs", "d"),
        ("num_preemptions", "preempt", "d"),
        ("median_ttft_ms", "TTFT p50 ms", ".1f"),
        ("median_tpot_ms", "TPOT p50 ms", ".2f"),
        ("output_throughput", "out tok/s", ".1f"),
        ("throughput_x_naive", "x naive", ".2f"),
    ]
    llm = llms["paged"]
    header = (
        bench.title(llm.config.torch_dtype)
        + f"\nworkload: {s['num_requests']} requests, lognormal lengths (median prompt {s['input_len']}, median"
        f" output {s['output_len']}, sigma {s['sigma']}, capped at {s['max_len']}), all arriving at once;"
        f" greedy, EOS ignored; max_model_len {s['max_len']}, block_size {s['block_size']}."
        f" Token-identical paged vs naive: {same}."
    )
    table = markdown_table(rows, cols)
    payload = {
        "scale": s,
        "workload": wl.describe(),
        "config": {k: vars(v.config) for k, v in llms.items()},
        "token_identical": same,
        "aggregates": rows,
        "timelines": {k: [vars(x) for x in v] for k, v in timelines.items()},
    }
    record = bench.publish(payload, header, table)
    plot(rows, timelines, bench.png, header.split("\n")[0])
    return record


def plot(rows, timelines, path, title: str) -> None:
    plt = pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.2))
    colors = {"naive": "#c44", "paged": "#48c"}
    for stage, st in timelines.items():
        t0 = st[0].time
        t = [x.time - t0 for x in st]
        ax1.plot(
            t,
            [100 * x.kv_reserved / x.kv_total for x in st],
            color=colors[stage],
            ls="--",
            lw=1,
            label=f"{stage}: reserved",
        )
        ax1.plot(
            t, [100 * x.kv_used / x.kv_total for x in st], color=colors[stage], lw=1.5, label=f"{stage}: used"
        )
    ax1.set(xlabel="time (s)", ylabel="% of KV pool", title="KV memory over time (budget x1)", ylim=(0, 105))
    ax1.legend(fontsize=8)
    for stage in STAGES:
        pts = sorted((r["budget"], r["output_throughput"]) for r in rows if r["stage"] == stage)
        ax2.plot([p[0] for p in pts], [p[1] for p in pts], "o-", color=colors[stage], label=stage)
    ax2.set(
        xlabel="KV budget (token slots)", ylabel="output tokens / s", title="throughput vs KV memory budget"
    )
    ax2.set_xscale("log", base=2)
    ax2.legend()
    save_figure(fig, path, title)
