"""Where a decode step's device time goes, stage by stage: the kernels of a few profiled decode steps.

  python scripts/profile_decode.py --stages unified compiled triton --batch 256 --context 1024
  python scripts/profile_decode.py --stages compiled triton --no-compile   # graphs without Inductor
  python scripts/profile_decode.py --quick            # the embedded model on a CPU: a smoke run
  python scripts/profile_decode.py --model minillm/assets/pystd-llama --stages unified --batch 256 \
      --context 512 --async-output both     # host phases at batch 256, on any machine
  python scripts/profile_decode.py --stages triton --async-output both --async-scheduling
                                            # synchronous, async output, async scheduling side by side

For each stage: dummy Qwen3-0.6B in bf16 (the embedded model with --quick), `batch` requests of
`context` prompt tokens prefilled, then `steps` decode steps under torch.profiler. Printed per stage:
host time per step (the engine's phases), device time per step, and the kernels that take most of it.
A replayed CUDA graph shows as its kernels too (the profiler records them on the device).
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile


def run_stage(stage: str, args, mode: str | None = None) -> dict:
    from minillm import DEFAULT_MODEL, LLM, SamplingParams

    cuda = torch.cuda.is_available()
    model = args.model or (DEFAULT_MODEL if args.quick else "qwen3-0.6b")
    llm = LLM(
        model,
        load_format="dummy" if model == "qwen3-0.6b" else "auto",
        stage=stage,
        device="cuda" if cuda else "cpu",
        max_num_seqs=args.batch,
        max_num_batched_tokens=8192,
        max_model_len=args.context + args.steps + 64,
        kv_cache_tokens=args.batch * (args.context + args.steps + 64 + 32),  # + a partly filled block
        **({"compile": None} if args.no_compile else {}),
        **({mode: True} if mode else {}),  # "async_output" | "async_scheduling"
    )
    engine, rng = llm.engine, random.Random(0)
    vocab = min(engine.model_config.vocab_size, 8000)
    for _ in range(args.batch):
        prompt = [rng.randrange(16, vocab) for _ in range(args.context)]
        engine.add_request(
            prompt,
            SamplingParams(
                max_tokens=10 * args.steps, temperature=0.0, ignore_eos=True, output_kind=args.output_kind
            ),
        )
    while any(s.num_computed_tokens < s.num_prompt_tokens for s in engine.scheduler.running) or (
        engine.scheduler.waiting
    ):
        engine.step()  # prefill, and the first decodes of early finishers' neighbours
    for _ in range(3):
        engine.step()  # warm: every decode kernel seen once
    engine.step_stats.clear()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        t0 = time.perf_counter()
        for _ in range(args.steps):
            engine.step()
        if cuda:
            torch.cuda.synchronize()
        wall = (time.perf_counter() - t0) / args.steps
    stats = list(engine.step_stats)
    phases = {k: statistics.median(s.phase_s.get(k, 0.0) for s in stats) * 1e3 for k in stats[0].phase_s}
    attr = "self_device_time_total" if cuda else "self_cpu_time_total"
    events = [e for e in prof.key_averages() if getattr(e, attr, 0) > 0]
    device_us = sum(getattr(e, attr) for e in events) / args.steps
    label = stage + (f" + {mode.replace('_', ' ')}" if mode else "")
    print(f"\n== stage {label}: batch {args.batch}, context {args.context}, {args.steps} decode steps")
    print(f"wall {wall * 1e3:.2f} ms/step; " + ", ".join(f"{k} {v:.2f}" for k, v in phases.items()) + " ms")
    print(f"{'device' if cuda else 'cpu (self)'} time {device_us / 1e3:.2f} ms/step; top kernels:")
    top = sorted(events, key=lambda e: -getattr(e, attr))[: args.top]
    for e in top:
        per_step = getattr(e, attr) / args.steps / 1e3
        print(f"  {per_step:8.3f} ms  x{e.count // args.steps:<4d} {e.key[:100]}")
    row = {
        "stage": stage,
        "async_output": mode == "async_output",
        "async_scheduling": mode == "async_scheduling",
        "output_kind": args.output_kind,
        "model": model,
        "batch": args.batch,
        "context": args.context,
        "steps": args.steps,
        "wall_ms": wall * 1e3,
        "phase_ms_median": phases,
        "device_ms" if cuda else "cpu_self_ms": device_us / 1e3,
        "top": [(e.key, getattr(e, attr) / args.steps / 1e3, e.count // args.steps) for e in top],
    }
    del llm, engine
    torch._dynamo.reset()
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stages", nargs="+", default=["unified", "compiled", "triton"])
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--context", type=int, default=1024)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--top", type=int, default=12)
    p.add_argument(
        "--no-compile",
        action="store_true",
        help="compile=None: CUDA graphs over eager kernels (start-up in seconds; the attention kernels are the same)",
    )
    p.add_argument(
        "--quick", action="store_true", help="the embedded model, batch 4, context 32, stage unified"
    )
    p.add_argument("--model", help="default: dummy qwen3-0.6b (the embedded model with --quick)")
    p.add_argument(
        "--async-output",
        choices=["off", "on", "both"],
        default="off",
        help="EngineConfig.async_output: the previous step's texts in an 'output' phase during the forward"
        " ('both': each stage without, then with, side by side)",
    )
    p.add_argument(
        "--async-scheduling",
        action="store_true",
        help="also run each stage with EngineConfig.async_scheduling (the next step launched before this"
        " step's tokens reach the host)",
    )
    p.add_argument(
        "--output-kind",
        choices=["cumulative", "final_only"],
        default="cumulative",
        help="SamplingParams.output_kind: an output object every step, or only when a request finishes",
    )
    p.add_argument("--json", help="also write the rows, with the machine and versions, to this file")
    args = p.parse_args()
    if args.quick:
        args.batch, args.context, args.stages = 4, 32, ["unified"]
    modes = {"off": [None], "on": ["async_output"], "both": [None, "async_output"]}[args.async_output]
    modes += ["async_scheduling"] if args.async_scheduling else []
    rows = [run_stage(stage, args, mode) for stage in args.stages for mode in modes]
    if args.json:
        from minillm.bench.report import environment

        env = environment("cuda" if torch.cuda.is_available() else "cpu")
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"env": env, "argv": sys.argv[1:], "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
