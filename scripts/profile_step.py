"""Where a step's time goes, and what the engine delivers: the figures the seam is judged by.

  python scripts/profile_step.py run --out DIR [--label NAME]   # one engine (the one on PYTHONPATH)
  python scripts/profile_step.py table DIR                      # side by side, every label in DIR

`run` measures, on dummy Qwen3-0.6B in bf16 with stage unified (eager):
  1. host time per decode step split into schedule / prepare / forward / sample / update, at batch 1
     and batch 64 (the GPU is synchronised at each phase boundary, so a phase includes its kernels);
  2. output tokens/s of three workloads, unsynchronised: batch 1 (prompt 128, 256 new), batch 64
     (256 + 256), and 256 requests with prompt and output lengths uniform in 100..1024 (nano-vllm's
     benchmark), all greedy with EOS ignored, random prompt ids from a fixed seed;
  3. the first 8 outputs of the batch-64 workload, so `table` can report token agreement.
It wraps methods that every version of the engine has (scheduler.schedule, runner.prepare, model
forward, sampler), so the same script measures an older checkout beside the current one.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

PHASES = ("schedule", "prepare", "forward", "sample", "update")


def sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def make_llm(device: str, quick: bool):
    from minillm import DEFAULT_MODEL, LLM

    return LLM(
        DEFAULT_MODEL if quick else "qwen3-0.6b",
        load_format="auto" if quick else "dummy",
        stage="unified",
        device=device,
        max_num_seqs=256,
        max_num_batched_tokens=8192,
        kv_cache_tokens=256 * 2048,
    )


def requests(n, prompt_len, out_len, seed=0):
    rng = random.Random(seed)
    reqs = []
    for _ in range(n):
        p = prompt_len() if callable(prompt_len) else prompt_len
        o = out_len() if callable(out_len) else out_len
        reqs.append(([rng.randrange(100, 8000) for _ in range(p)], o))
    return reqs


def run_requests(llm, reqs):
    """Add every request at once, step to the end; returns (seconds, output tokens, token ids)."""
    from minillm import SamplingParams

    engine = llm.engine
    ids = [
        engine.add_request(p, SamplingParams(max_tokens=o, temperature=0.0, ignore_eos=True)) for p, o in reqs
    ]
    outs = {}
    sync()
    t0 = time.perf_counter()
    while engine.has_unfinished():
        for out in engine.step():
            if out.finished:
                outs[out.request_id] = out.token_ids
    sync()
    seconds = time.perf_counter() - t0
    return seconds, sum(len(outs[i]) for i in ids), [outs[i] for i in ids]


def phase_profile(llm, num_seqs: int, decode_steps: int = 48) -> dict:
    """Median seconds per phase over decode steps of num_seqs sequences."""
    engine = llm.engine
    acc: dict[str, float] = defaultdict(float)
    wrapped = []

    def wrap(obj, name, phase):
        f = getattr(obj, name)

        def timed(*args, **kwargs):
            sync()
            t = time.perf_counter()
            r = f(*args, **kwargs)
            sync()
            acc[phase] += time.perf_counter() - t
            return r

        setattr(obj, name, timed)
        wrapped.append((obj, name))

    model = engine.runner.model
    wrap(engine.scheduler, "schedule", "schedule")
    wrap(engine.runner, "prepare", "prepare")
    wrap(model, "forward", "forward")
    wrap(model, "compute_logits", "forward")
    sampler = engine.sampler
    engine.sampler = lambda logits, seqs: timed_sample(sampler, logits, seqs, acc)
    from minillm import SamplingParams

    for i in range(num_seqs):
        prompt = [100 + (7 * i + j) % 5000 for j in range(128)]
        engine.add_request(
            prompt, SamplingParams(max_tokens=decode_steps + 2, temperature=0.0, ignore_eos=True)
        )
    steps = []
    while engine.has_unfinished():
        acc.clear()
        sync()
        t = time.perf_counter()
        batch_outs = engine.step()
        sync()
        total = time.perf_counter() - t
        acc["update"] = total - sum(acc[p] for p in PHASES if p != "update")
        if batch_outs and all(len(o.token_ids) > 1 for o in batch_outs) and len(batch_outs) == num_seqs:
            steps.append({**{p: acc[p] for p in PHASES}, "total": total})
    for obj, name in wrapped:
        delattr(obj, name)
    engine.sampler = sampler
    keys = (*PHASES, "total")
    return {k: statistics.median(s[k] for s in steps) for k in keys} | {"num_steps": len(steps)}


def timed_sample(sampler, logits, seqs, acc):
    sync()
    t = time.perf_counter()
    r = sampler(logits, seqs)
    sync()
    acc["sample"] += time.perf_counter() - t
    return r


def cmd_run(args):
    import minillm

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    llm = make_llm(device, args.quick)
    n = 8 if args.quick else 1  # --quick: the default model on a CPU, every size divided by 8
    run_requests(llm, requests(4, 64, 8))  # warm-up: allocator, kernels, library plans
    result = {
        "label": args.label,
        "minillm": str(Path(minillm.__file__).parent),
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        "torch": torch.__version__,
        "phases": {},
        "workloads": {},
    }
    for bs in () if args.no_phases else (1, 64):
        result["phases"][f"batch {bs}"] = phase_profile(llm, bs, decode_steps=48 // n)
        print(args.label, "phases at batch", bs, result["phases"][f"batch {bs}"], flush=True)
    rng = random.Random(1)
    workloads = {
        "batch 1, 128 + 256": requests(1, 128, 256 // n),
        "batch 64, 256 + 256": requests(64, 256 // n, 256 // n),
        "256 requests, 100-1024 each way": requests(
            256 // n, lambda: rng.randint(100, 1024) // n, lambda: rng.randint(100, 1024) // n, seed=2
        ),
    }
    for name, reqs in workloads.items():
        if args.workloads and not any(name.startswith(w) for w in args.workloads):
            continue
        run_requests(llm, reqs[:2] if len(reqs) > 2 else [(reqs[0][0], 4)])  # this shape's plans, untimed
        repeats = []
        for _ in range(2 if name.startswith("256") else 1):  # the long one twice: its spread is the noise
            seconds, tokens, token_ids = run_requests(llm, reqs)
            repeats.append(tokens / seconds)
        result["workloads"][name] = {
            "seconds": seconds,
            "output_tokens": tokens,
            "tok_s": statistics.median(repeats),
            "repeats_tok_s": repeats,
        }
        if name.startswith("batch 64"):
            result["sample_outputs"] = token_ids[:8]
        print(args.label, name, " ".join(f"{r:.1f}" for r in repeats), "tok/s", flush=True)
    (out / f"{args.label}.json").write_text(json.dumps(result, indent=1))


def cmd_diagnose(args):
    """Two checks behind the headline figures. (a) Where workload 3's time goes: every step synchronised
    and classed as decode-only or with prefill tokens. (b) Numerics: the logits of every step of a small
    chunked, mixed workload, saved so that two versions can be compared step by step."""
    import numpy as np

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    llm = make_llm(device, args.quick)
    n = 8 if args.quick else 1
    engine = llm.engine
    run_requests(llm, requests(4, 64, 8))
    rng = random.Random(1)
    reqs = requests(
        256 // n, lambda: rng.randint(100, 1024) // n, lambda: rng.randint(100, 1024) // n, seed=2
    )
    from minillm import SamplingParams

    for p, o in reqs:
        engine.add_request(p, SamplingParams(max_tokens=o, temperature=0.0, ignore_eos=True))
    kinds: dict[str, list[float]] = defaultdict(list)
    while engine.has_unfinished():
        sync()
        t = time.perf_counter()
        engine.step()
        sync()
        st = engine.step_stats[-1]
        kind = "decode only" if st.num_tokens == st.num_seqs else "with prefill"
        kinds[kind].append(time.perf_counter() - t)
    steps = {
        k: {"steps": len(v), "total_s": sum(v), "median_ms": statistics.median(v) * 1e3}
        for k, v in kinds.items()
    }
    print(args.label, "workload 3 by step kind", steps, flush=True)
    captured = []
    model = engine.runner.model
    compute_logits = model.compute_logits
    model.compute_logits = lambda h: captured.append(compute_logits(h).float().cpu()) or captured[-1]
    small = requests(16, lambda: rng.randint(50, 600), 24, seed=3)
    engine.reconfigure(max_num_batched_tokens=512)
    run_requests(llm, small)
    del model.compute_logits
    np.savez(out / f"{args.label}_logits.npz", *[c.numpy() for c in captured])
    (out / f"{args.label}_steps.json").write_text(json.dumps(steps, indent=1))


def cmd_compare(args):
    import numpy as np

    a, b = (np.load(Path(args.dir) / f"{label}_logits.npz") for label in ("before", "after"))
    rows = []
    for i, key in enumerate(a.files):
        x, y = a[key], b[key]
        if x.shape != y.shape:
            rows.append(f"step {i}: shapes differ {x.shape} {y.shape}: the runs diverged")
            break
        diff = float(np.abs(x - y).max())
        same = int((x.argmax(-1) == y.argmax(-1)).sum())
        rows.append(
            f"step {i}: rows {x.shape[0]}, max |logit diff| {diff:.3g}, argmax equal {same}/{x.shape[0]}"
        )
    text = "\n".join(rows)
    print(text)
    (Path(args.dir) / "logits_compare.txt").write_text(text + "\n")


def cmd_table(args):
    runs = [json.loads(p.read_text()) for p in sorted(Path(args.dir).glob("*.json"))]
    runs.sort(key=lambda r: r["label"] != "before")
    lines = [
        f"device: {runs[0]['device']}, torch {runs[0]['torch']}; dummy qwen3-0.6b bf16, stage unified, eager",
        "",
    ]
    head = "| | " + " | ".join(r["label"] for r in runs) + " |"
    lines += [
        "Decode step, median ms per phase (GPU synchronised at each boundary):",
        "",
        head,
        "|---" * (len(runs) + 1) + "|",
    ]
    for bs in ("batch 1", "batch 64"):
        for p in (*PHASES, "total"):
            lines.append(
                f"| {bs} {p} | " + " | ".join(f"{r['phases'][bs][p] * 1e3:.2f}" for r in runs) + " |"
            )
    lines += ["", "Output tokens/s (unsynchronised):", "", head, "|---" * (len(runs) + 1) + "|"]
    for name in runs[0]["workloads"]:
        cells = [
            " / ".join(
                f"{x:.0f}" for x in r["workloads"][name].get("repeats_tok_s", [r["workloads"][name]["tok_s"]])
            )
            for r in runs
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if len(runs) > 1 and all("sample_outputs" in r for r in runs):
        a, b = runs[0]["sample_outputs"], runs[-1]["sample_outputs"]
        same = sum(x == y for s, t in zip(a, b) for x, y in zip(s, t))
        total = sum(min(len(s), len(t)) for s, t in zip(a, b))
        lines += [
            "",
            f"Greedy token agreement {runs[0]['label']} vs {runs[-1]['label']} (8 x 256 tokens): "
            f"{same}/{total}",
        ]
    text = "\n".join(lines)
    print(text)
    (Path(args.dir) / "table.md").write_text(text + "\n")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--out", required=True)
    r.add_argument("--label", default="after")
    r.add_argument("--quick", action="store_true", help="the default model, sizes / 8: a CPU smoke run")
    r.add_argument("--no-phases", action="store_true", help="throughput only")
    r.add_argument("--workloads", nargs="*", help="names' beginnings, e.g. 'batch 1' (default: all)")
    d = sub.add_parser("diagnose")
    d.add_argument("--out", required=True)
    d.add_argument("--label", default="after")
    d.add_argument("--quick", action="store_true")
    t = sub.add_parser("table")
    t.add_argument("dir")
    c = sub.add_parser("compare")
    c.add_argument("dir")
    args = p.parse_args(argv)
    {"run": cmd_run, "table": cmd_table, "diagnose": cmd_diagnose, "compare": cmd_compare}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
