"""Stage triton with and without async scheduling, interleaved and repeated on one build (CUDA).

  python scripts/async_scheduling_repeats.py --json repeats.json
  python scripts/async_scheduling_repeats.py --workloads "batch 64" --repeats 5
  python scripts/async_scheduling_repeats.py --quick   # the embedded model, stage unified, on a CPU

Chapter 7's end-to-end table runs each variant once. On a shared host one run of a host-bound engine
moves by 10-30% from one process to the next, so this script runs the workloads of that table (full
scale, dummy Qwen3-0.6B, bf16) as synchronous / async pairs, `repeats` times, on one engine whose
compiled graphs both modes share (Engine.reconfigure changes only the step loop): one untimed run per
workload first, then the pairs in alternating order. The prefix cache is emptied before every run
(LLM.reset_prefix_cache), so no run is served the prompts of the one before.
Per run: output tok/s, the median gap between decode-only steps, TTFT and TPOT medians, the steps
that carried prefill, and the share of output tokens equal to the first synchronous run's (greedy:
async scheduling must not change a token). Printed last: the medians per workload and mode.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys

import torch


def one_run(llm, workload, name: str) -> tuple[dict, list[list[int]]]:
    from minillm.bench.runner import run_llm

    llm.engine.step_stats.clear()
    res = run_llm(llm, workload, name, progress=False)
    steps = list(llm.engine.step_stats)
    pairs = list(zip(steps, steps[1:]))
    decode = [b.time - a.time for a, b in pairs if b.num_tokens == b.num_seqs]
    out_tokens = sum(m.num_output_tokens for m in res.metrics)
    return {
        "tok_s": out_tokens / res.duration,
        "duration_s": res.duration,
        "decode_step_ms": statistics.median(decode) * 1e3 if decode else None,
        "ttft_p50_ms": statistics.median(m.ttft for m in res.metrics) * 1e3,
        "tpot_p50_ms": statistics.median(m.tpot for m in res.metrics) * 1e3,
        "steps": len(steps),
        "prefill_steps": sum(1 for s in steps if s.num_tokens != s.num_seqs),
        "cached_tokens": sum(m.num_cached_tokens for m in res.metrics),
        "output_tokens": out_tokens,
    }, res.token_ids


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None  # e.g. no decode-only step in a run


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def main() -> int:
    from minillm import DEFAULT_MODEL, LLM
    from minillm.bench.ch06 import warm_up_structures
    from minillm.bench.ch07 import SCALES, workloads
    from minillm.bench.report import environment

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workloads", nargs="+", help="default: every workload of the scale")
    p.add_argument("--repeats", type=int, default=3, help="synchronous / async pairs per workload")
    p.add_argument("--json", help="write the runs, the medians and the machine to this file")
    p.add_argument("--quick", action="store_true", help="a smoke run: quick scale, stage unified, CPU")
    args = p.parse_args()
    if not args.quick and not torch.cuda.is_available():
        print("async_scheduling_repeats: needs a CUDA device (or --quick, a smoke run on the CPU)")
        return 1
    s = SCALES["quick" if args.quick else "full"]
    device = "cpu" if args.quick else "cuda"
    llm = LLM(
        DEFAULT_MODEL if args.quick else "qwen3-0.6b",
        stage="unified" if args.quick else "triton",
        device=device,
        load_format="auto" if args.quick else "dummy",
        max_model_len=s["max_model_len"],
        max_num_seqs=s["max_num_seqs"],
        max_num_batched_tokens=32 if args.quick else 8192,
        kv_cache_tokens=s["max_num_seqs"] * min(s["max_model_len"], 2048),
    )
    warm_up_structures(llm)
    available = workloads(s, min(llm.engine.model_config.vocab_size, 8000))
    runs, medians = [], []
    for name in args.workloads or list(available):
        reference = None
        one_run(llm, available[name], name)  # untimed: the workload's first-call costs, in neither mode
        for i in range(2 * args.repeats):
            # pairs in alternating order (off, on, on, off, ...): neither mode always runs first
            mode = (i % 2 == 1) != (i // 2 % 2 == 1)
            llm.engine.reconfigure(async_scheduling=mode)
            if not llm.reset_prefix_cache():
                raise RuntimeError("the prefix cache could not be emptied between runs")
            row, ids = one_run(llm, available[name], name)
            reference = reference if reference is not None or mode else ids  # the first synchronous run
            same = sum(a == b for x, y in zip(reference, ids) for a, b in zip(x, y))
            row = {"workload": name, "async_scheduling": mode, "repeat": i // 2, **row}
            row["tokens_equal"] = same / sum(len(x) for x in reference)
            runs.append(row)
            print(json.dumps(row), flush=True)
        for mode in (False, True):
            mine = [r for r in runs if r["workload"] == name and r["async_scheduling"] == mode]
            medians.append(
                {
                    "workload": name,
                    "async_scheduling": mode,
                    **{
                        k: _median([r[k] for r in mine if r[k] is not None])
                        for k in ("tok_s", "decode_step_ms", "ttft_p50_ms", "tpot_p50_ms")
                    },
                    "tok_s_runs": [round(r["tok_s"], 1) for r in mine],
                    "tokens_equal": min(r["tokens_equal"] for r in mine),
                }
            )
    print(
        "\n| workload | async scheduling | out tok/s (median) | runs | decode step ms | TPOT p50 ms | tokens equal |"
    )
    print("|---|---|---|---|---|---|---|")
    for m in medians:
        runs_text = " / ".join(f"{t:,.0f}" for t in m["tok_s_runs"])
        print(
            f"| {m['workload']} | {'on' if m['async_scheduling'] else 'off'} | {m['tok_s']:,.1f} | {runs_text} |"
            f" {_ms(m['decode_step_ms'])} | {_ms(m['tpot_p50_ms'])} | {100 * m['tokens_equal']:.1f}% |"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"env": environment(device), "runs": runs, "medians": medians}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
