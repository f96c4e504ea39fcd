"""Chapter 3 benchmark: what a prefix cache buys, and what its eviction and admission order decide.

Four variants of stage paged run the same workloads under the same KV budget (token slots):
  no cache    every prompt is prefilled in full (chapter 2)
  hash        vLLM's chained block hashes, LRU eviction of free cached blocks, FCFS admission
  radix       SGLang's radix tree over the cached blocks, LRU eviction of unlocked leaves, FCFS
  radix+lpm   the radix tree with longest-prefix-match admission: waiting requests whose prefix is
              cached go first, before other admissions evict it
Workloads (minillm/bench/workloads_prefix.py): prefix repetition, multi-turn chat, few-shot, and
tree-of-thought branching; the multi-round ones (chat turns, tree levels) start a round when the
previous one has finished, so every variant sees the same prompts in the same order. Budgets are
fractions of the workload's footprint (prompt + output tokens of all requests, in whole blocks): 1
keeps everything, the small ones hold a few sequences and force evictions. Reported per (workload,
budget, variant): hit rate (prompt tokens served from the cache / prompt tokens), prefill tokens
computed (tokens fed to the model less one per generated token after the first, so recomputation after
preemption counts), TTFT, output throughput and its ratio to no cache. Greedy outputs must equal no
cache's.

Run: minillm bench --chapter 3 [--quick] [--device cuda --model qwen3-0.6b --load-format dummy]
"""

from __future__ import annotations

import torch

from minillm.bench import workloads_prefix as wp
from minillm.bench.common import Bench, warm_up
from minillm.bench.report import markdown_table, pyplot, save_figure
from minillm.bench.runner import RunResult, run_llm
from minillm.model.loader import read_config

SCALES = {
    "quick": dict(
        prefix=dict(num_prefixes=4, prefix_len=96, suffix_len=16, output_len=8, num_requests=24),
        chat=dict(num_conversations=6, num_turns=3, first_len=32, user_len=16, output_len=8),
        few_shot=dict(examples_len=128, question_len=16, output_len=8, num_requests=16),
        tree=dict(num_trees=2, root_len=64, fan_out=3, depth=2, branch_len=16, output_len=8),
        budget_fractions=(1.0, 0.15),
        block_size=16,
    ),
    # Sized for one GPU call (about 4 minutes for qwen3-0.6b on an H100). Outputs are short because the
    # cache saves prefill work; long decodes would only dilute it. Prefix: 10 requests per prefix, so
    # at most 9/10 of the 256 shared tokens of each 512-token prompt can be hits (45%).
    "full": dict(
        prefix=dict(num_prefixes=10, prefix_len=256, suffix_len=256, output_len=32, num_requests=100),
        chat=dict(num_conversations=8, num_turns=3, first_len=256, user_len=64, output_len=32),
        few_shot=dict(examples_len=768, question_len=64, output_len=32, num_requests=48),
        tree=dict(num_trees=2, root_len=256, fan_out=3, depth=2, branch_len=64, output_len=32),
        budget_fractions=(1.0, 0.3, 0.12),
        block_size=16,
    ),
}
WORKLOADS = {  # table name -> builder in workloads_prefix
    "prefix": wp.prefix_repetition,
    "chat": wp.multi_turn,
    "few_shot": wp.few_shot,
    "tree": wp.tree_of_thought,
}
VARIANTS = {  # name -> EngineConfig overrides on stage paged
    "no cache": dict(prefix_cache=None, schedule_policy="fcfs"),
    "hash": dict(prefix_cache="hash", schedule_policy="fcfs"),
    "radix": dict(prefix_cache="radix", schedule_policy="fcfs"),
    "radix+lpm": dict(prefix_cache="radix", schedule_policy="lpm"),
}


def run_rounds(llm, rounds, label: str, *, progress: bool = True) -> RunResult:
    """Run the rounds back to back on one engine (its cache carries over); metrics in workload order,
    duration = the rounds' durations summed (the idle moment between rounds is not counted)."""
    results = [run_llm(llm, wl, f"{label}: {wl.name}", progress=progress, warmup=False) for wl in rounds]
    return RunResult(
        label,
        [m for r in results for m in r.metrics],
        sum(r.duration for r in results),
        [t for r in results for t in r.token_ids],
    )


def budgets(rounds, fractions, block_size: int) -> list[int]:
    """KV budgets: fractions of the footprint in whole blocks (1: every request's blocks at once, so
    nothing is evicted or preempted), at least four of the longest request (a few sequences run at once)."""
    floor = 4 * wp.longest_request(rounds)
    fp = wp.footprint(rounds, block_size)
    return [block_size * -(-max(int(f * fp), floor) // block_size) for f in fractions]


def cache_summary(engine, result: RunResult) -> dict:
    n_prompt = sum(m.num_prompt_tokens for m in result.metrics)
    n_cached = sum(m.num_cached_tokens for m in result.metrics)
    fed = sum(s.num_tokens for s in engine.step_stats)
    decoded = sum(max(0, m.num_output_tokens - 1) for m in result.metrics)
    return {
        "hit_rate_pct": 100 * n_cached / n_prompt,
        "prefill_tokens": fed - decoded,
        "num_preemptions": getattr(engine.scheduler, "num_preemptions", 0),
    }


def run(model: str, **options) -> dict:
    """`minillm bench --chapter 3`; options: Bench's fields (device, load_format, quick, out, dtype, progress)."""
    with Bench(3, model, **options) as bench:
        return measure(bench)


def measure(bench: Bench) -> dict:
    s, progress = bench.scale(SCALES), bench.progress
    vocab = read_config(bench.model, bench.load_format)[0].vocab_size
    workloads = {k: build(**s[k], vocab_size=vocab, seed=i) for i, (k, build) in enumerate(WORKLOADS.items())}
    max_len = max(wp.longest_request(w) for w in workloads.values())
    llm = bench.llm(
        "paged",
        max_model_len=max_len,
        block_size=s["block_size"],
        max_num_seqs=256,
        max_num_batched_tokens=max(2048, max_len),
    )
    warm_up(llm, 4, max_len - 2)  # the largest prefill shapes once, before the pool is rebuilt
    rows = []
    for name, rounds in workloads.items():
        for frac, budget in zip(
            s["budget_fractions"], budgets(rounds, s["budget_fractions"], s["block_size"])
        ):
            if bench.device.startswith("cuda"):
                # cuDNN attention builds a plan for each new (batch, query, key) shape (40-95 ms on an
                # H100, < 1 ms once built); cache hits create shapes full prefills never do. One untimed
                # pass with and without a cache, so no variant pays for shapes another one then reuses.
                for variant in ("no cache", "radix"):
                    llm.engine.reconfigure(kv_cache_tokens=budget, **VARIANTS[variant])
                    run_rounds(llm, rounds, f"{name} @ {budget}: shape warm-up", progress=progress)
            for variant, knobs in VARIANTS.items():
                llm.engine.reconfigure(kv_cache_tokens=budget, **knobs)  # an empty cache for every run
                warm_up(llm, 1, 8)  # less than a block: nothing is cached
                llm.engine.step_stats.clear()
                r = run_rounds(llm, rounds, f"{name} {variant} @ {budget}", progress=progress)
                row = {
                    "workload": name,
                    "budget": budget,
                    "budget_fraction": frac,
                    "variant": variant,
                    **r.summary(),
                    **cache_summary(llm.engine, r),
                }
                if variant == "no cache":  # first in VARIANTS: the reference for this workload and budget
                    ref, ref_tput = r.token_ids, row["output_throughput"]
                row["same_tokens"] = r.token_ids == ref
                row["throughput_x_no_cache"] = row["output_throughput"] / ref_tput
                rows.append(row)
    same = all(r["same_tokens"] for r in rows)
    cols = [
        ("workload", "workload", ""),
        ("budget", "KV slots", "d"),
        ("variant", "variant", ""),
        ("hit_rate_pct", "hit %", ".1f"),
        ("prefill_tokens", "prefill tokens", "d"),
        ("num_preemptions", "preempt", "d"),
        ("median_ttft_ms", "TTFT p50 ms", ".1f"),
        ("p99_ttft_ms", "TTFT p99 ms", ".1f"),
        ("output_throughput", "out tok/s", ".1f"),
        ("throughput_x_no_cache", "x no cache", ".2f"),
        ("same_tokens", "same tokens", ""),
    ]
    dt = llm.config.torch_dtype
    header = (
        bench.title(dt)
        + "\nworkloads: "
        + "; ".join(describe(k, w) for k, w in workloads.items())
        + f". Greedy, EOS ignored; block_size {s['block_size']}, max_model_len {llm.engine.max_model_len};"
        f" KV budgets {', '.join(f'{f:g}' for f in s['budget_fractions'])} x each workload's footprint"
        " (prompt + output tokens of all requests in whole blocks; at least four of its longest request)."
        f" Token-identical to no cache: {same}"
        f"{'.' if dt == torch.float32 else ' (bf16 sums in another order can flip near-ties).'}"
    )
    table = markdown_table(rows, cols)
    payload = {
        "scale": s,
        "workload": {k: [wl.describe() for wl in w] for k, w in workloads.items()},
        "config": {"engine": vars(llm.config), "variants": VARIANTS},
        "token_identical": same,
        "aggregates": rows,
    }
    record = bench.publish(payload, header, table)
    plot(rows, bench.png, header.split("\n")[0])
    return record


def describe(name: str, rounds) -> str:
    """One line for the table's header."""
    p = rounds[0].params
    n = sum(len(w.requests) for w in rounds)
    out = f"{p['output_len']} out"
    if name == "prefix":
        return (
            f"prefix: {n} requests, {p['num_prefixes']} prefixes x {p['prefix_len']}"
            f" + {p['suffix_len']}-token suffixes, shuffled, {out}"
        )
    if name == "chat":
        return (
            f"chat: {p['num_conversations']} conversations x {len(rounds)} turns (first message"
            f" {p['first_len']}, then + {p['output_len']} answer + {p['user_len']} user tokens), {out}"
        )
    if name == "few_shot":
        return f"few_shot: {n} requests, {p['examples_len']} shared + {p['question_len']} tokens, {out}"
    return (
        f"tree: {p['num_trees']} roots of {p['root_len']}, fan-out {p['fan_out']}, {len(rounds) - 1}"
        f" levels of +{p['branch_len']} tokens ({n} requests), {out}"
    )


def plot(rows, path, title: str) -> None:
    plt = pyplot()
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(16, 4.4))
    colors = {"no cache": "#888", "hash": "#c84", "radix": "#48c", "radix+lpm": "#4a6"}
    names = list(dict.fromkeys(r["workload"] for r in rows))
    variants = list(VARIANTS)
    width = 0.8 / len(variants)

    def at(name, variant, pick):
        pts = [r for r in rows if r["workload"] == name and r["variant"] == variant]
        return pick(pts, key=lambda r: r["budget"])

    for i, v in enumerate(variants):
        x = [j + (i - (len(variants) - 1) / 2) * width for j in range(len(names))]
        big = [at(n, v, max) for n in names]
        small = [at(n, v, min) for n in names]
        ref_big = [at(n, "no cache", max)["prefill_tokens"] for n in names]
        ref_small = [at(n, "no cache", min)["prefill_tokens"] for n in names]
        ax1.bar(x, [r["hit_rate_pct"] for r in big], width, color=colors[v], label=v)
        ax1.plot(x, [r["hit_rate_pct"] for r in small], "k_", ms=10, mew=2)
        ax2.bar(
            x, [100 * r["prefill_tokens"] / b for r, b in zip(big, ref_big)], width, color=colors[v], label=v
        )
        ax2.plot(x, [100 * r["prefill_tokens"] / b for r, b in zip(small, ref_small)], "k_", ms=10, mew=2)
        pts = sorted(
            (r["budget"], r["output_throughput"])
            for r in rows
            if r["workload"] == names[0] and r["variant"] == v
        )
        ax3.plot([p[0] for p in pts], [p[1] for p in pts], "o-", color=colors[v], label=v)
    for ax in (ax1, ax2):
        ax.set_xticks(range(len(names)), names)
    ax1.set(ylabel="prompt tokens from the cache (%)", title="hit rate (bars: largest budget, -: smallest)")
    ax2.set(
        ylabel="% of no cache's (bars: largest budget, -: smallest)",
        title="prefill tokens computed, vs no cache at the same budget",
    )
    ax3.set(
        xlabel="KV budget (token slots)",
        ylabel="output tokens / s",
        title=f"throughput vs budget: {names[0]}",
    )
    ax3.set_xscale("log", base=2)
    ax3.legend(fontsize=8)  # the same colours in every panel
    save_figure(fig, path, title)
