"""Chapter 6 benchmark: what compiling the model step and replaying decode steps as CUDA graphs buy.

Variants, all on the same weights and workloads (greedy, EOS ignored, requests all queued at once):
  unified             stage unified: eager PyTorch, every kernel launched from Python
  compiled            compile="default", cuda_graphs=False: Inductor fuses the element-wise ops
  compiled + graphs   stage compiled: the above, and decode steps replayed as CUDA graphs (CUDA only)
  transformers        generate (eager, dynamic cache) and, on CUDA, with a static cache, with which
                      generate compiles the forward: the path a transformers user takes
                      (the equal-length workloads only: generate batches statically)
Workloads: batch 1 (one decode stream), a batch of equal requests, and requests with prompt and output
lengths uniform in a range (nano-vllm's benchmark at full scale: 256 requests, 100-1024 each way).
Reported per variant and workload: output tok/s, TPOT p50/p99, the per-step split of host time (schedule
+ prepare + forward launch + update) and waiting for the device (inside sample), start-up (compile and
capture), greedy token agreement with unified, and on CUDA the fraction of the HBM roofline (weight and
KV bytes a decode step must read, over the measured read bandwidth, ch01.read_bandwidth).

Run: minillm bench --chapter 6 [--quick] [--device cuda --model qwen3-0.6b --load-format dummy]
"""

from __future__ import annotations

import gc
import json
import statistics
import time
from pathlib import Path
from types import SimpleNamespace

import torch

from minillm.bench.ch01 import hf_model_for, read_bandwidth
from minillm.bench.common import Bench
from minillm.bench.metrics import percentile
from minillm.bench.report import markdown_table, pyplot, save_figure
from minillm.bench.runner import run_hf_generate, run_llm
from minillm.bench.workloads import fixed, random_lengths
from minillm.model.loader import read_config

SCALES = {
    "quick": dict(batch1=(1, 32, 48), batch=(8, 32, 32), mixed=(16, 64), max_model_len=512, max_num_seqs=16),
    "full": dict(
        batch1=(1, 128, 256), batch=(64, 256, 256), mixed=(256, 562), max_model_len=2048, max_num_seqs=256
    ),
}
VARIANTS = {  # label -> (stage, engine options); the reference first
    "unified": ("unified", {}),
    "compiled + graphs": ("compiled", {}),
    "compiled": ("compiled", dict(cuda_graphs=False)),
}


def roofline_tok_s(llm, num_seqs: int, mean_context: float, bandwidth: float) -> float:
    """Decode tok/s if every step only streamed the weights once and each sequence's K/V once."""
    e = llm.engine
    mc, itemsize = e.model_config, e.config.torch_dtype.itemsize
    weight_bytes = sum(p.numel() * p.element_size() for p in e.model.parameters())
    kv_bytes = num_seqs * mean_context * 2 * mc.num_layers * mc.num_kv_heads * mc.head_dim * itemsize
    return num_seqs * bandwidth / (weight_bytes + kv_bytes)


def step_split(llm) -> dict:
    """Median ms per step of host work and of waiting for the device (the sampler's read-back)."""
    stats = [s for s in llm.engine.step_stats if s.phase_s]
    host = [sum(v for k, v in s.phase_s.items() if k != "sample") * 1e3 for s in stats]
    wait = [s.phase_s.get("sample", 0.0) * 1e3 for s in stats]
    return {"host_ms": statistics.median(host), "device_wait_ms": statistics.median(wait)}


def warm_up_structures(llm) -> None:
    """One request of every batch structure a serving step meets (a lone prefill, a mixed step, decodes
    of several sequences, then of one), so that compilation happens here and not inside a timed run."""
    from minillm import SamplingParams

    engine = llm.engine
    ids = [4 + i % 12 for i in range(24)]  # ids below 16: never in a workload prompt
    engine.add_request(ids, SamplingParams(max_tokens=8, temperature=0.0, ignore_eos=True))
    engine.step()  # a prefill alone
    for n in (3, 5):
        engine.add_request(ids[:20], SamplingParams(max_tokens=n, temperature=0.0, ignore_eos=True))
    while engine.has_unfinished():  # mixed, then decodes of 3, 2 and 1 sequences
        engine.step()


def workloads(s: dict, vocab: int) -> dict:
    n, p, o = s["batch1"]
    b, bp, bo = s["batch"]
    m, mid = s["mixed"]
    return {
        "batch 1": fixed(n, p, o, vocab, seed=1),
        f"batch {b}": fixed(b, bp, bo, vocab, seed=2),
        f"{m} requests": random_lengths(m, mid, mid, vocab, range_ratio=0.822, seed=3),
    }


def measure(bench: Bench) -> dict:
    s = bench.scale(SCALES)
    cuda = bench.device.startswith("cuda")
    bandwidth = read_bandwidth(bench.device)
    rows, reference = [], {}
    Path(bench.out).mkdir(parents=True, exist_ok=True)
    positions = read_config(bench.model, bench.load_format)[0].max_position_embeddings
    max_model_len = min(s["max_model_len"], positions)
    for label, (stage, options) in VARIANTS.items():
        if label.endswith("graphs") and not cuda:
            continue  # CUDA graphs need CUDA: on a CPU stage compiled runs without them
        t0 = time.perf_counter()
        llm = bench.llm(
            stage,
            max_model_len=max_model_len,
            max_num_seqs=s["max_num_seqs"],
            max_num_batched_tokens=8192,
            kv_cache_tokens=s["max_num_seqs"] * max_model_len,
            **options,
        )
        warm_up_structures(llm)
        startup = time.perf_counter() - t0  # loading, compiling and capturing
        runner = llm.engine.runner
        vocab = min(llm.engine.model_config.vocab_size, 8000)  # ids the default tokenizer also knows
        # each workload draws its own random prompts: none shares a cached block with another
        for name, wl in workloads(s, vocab).items():
            llm.engine.step_stats.clear()  # the step split below is this workload's
            res = run_llm(llm, wl, f"{label}: {name}", progress=bench.progress)
            ref = reference.setdefault(name, res.token_ids)
            agree = sum(a == b for x, y in zip(ref, res.token_ids) for a, b in zip(x, y))
            total = sum(min(len(x), len(y)) for x, y in zip(ref, res.token_ids))
            row = {
                **throughput(label, name, res),
                **step_split(llm),
                "token_agreement": agree / total if total else 1.0,
                "graph_replays": getattr(runner, "num_replays", None),
                "capture_s": getattr(runner, "capture_s", None),
                "startup_s": startup,
            }
            if bandwidth:
                reqs = wl.requests
                mean_ctx = statistics.fmean(len(r.prompt_token_ids) + r.max_tokens / 2 for r in reqs)
                concurrency = min(len(reqs), s["max_num_seqs"])
                row["roofline_frac"] = row["tok_s"] / roofline_tok_s(llm, concurrency, mean_ctx, bandwidth)
            rows.append(keep(bench, row))
        shape = SimpleNamespace(config=llm.config, vocab=vocab)  # for transformers' copy of the model
        del llm, runner
        # Dynamo's compiled code keeps what it guarded on (the KV cache among it): drop it before the next
        # variant allocates its own cache, or a second 60 GB pool does not fit.
        torch._dynamo.reset()
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()
    rows += transformers_rows(bench, shape, s, cuda)
    ours = [r["token_agreement"] for r in rows if "token_agreement" in r]
    return {
        "rows": rows,
        "read_bandwidth": bandwidth,
        "scale": s,
        "max_model_len": max_model_len,
        "token_identical": all(a == 1.0 for a in ours),  # float32 on a CPU: every variant, every token
    }


def transformers_rows(bench: Bench, shape, s: dict, cuda: bool) -> list[dict]:
    """transformers' generate on the equal-length workloads, one static batch each."""
    hf = hf_model_for(shape, bench.model, bench.load_format)
    vocab = shape.vocab
    rows = []
    variants = (
        {"transformers": None, "transformers static + compile": "static"} if cuda else {"transformers": None}
    )
    for label, cache in variants.items():
        for name, wl in list(workloads(s, vocab).items())[:2]:
            res = run_hf_generate(
                hf,
                wl,
                len(wl.requests),
                f"{label}: {name}",
                progress=bench.progress,
                cache_implementation=cache,
            )
            rows.append(keep(bench, throughput(label, name, res)))
    return rows


def throughput(label: str, workload: str, res) -> dict:
    """Output tok/s over the run's wall time, and TPOT percentiles, of one RunResult."""
    tpot = [m.tpot * 1e3 for m in res.metrics if m.num_output_tokens > 1]
    n_out = sum(m.num_output_tokens for m in res.metrics)
    return {
        "variant": label,
        "workload": workload,
        "tok_s": n_out / res.duration,
        "tpot_p50_ms": percentile(tpot, 50),
        "tpot_p99_ms": percentile(tpot, 99),
    }


def keep(bench: Bench, row: dict) -> dict:
    """Print a row and append it to ch06_rows.jsonl at once: kept if a long run is cut short."""
    with open(Path(bench.out) / "ch06_rows.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")
    print(f"{row['variant']:>30} | {row['workload']:>14} | {row['tok_s']:9.1f} tok/s", flush=True)
    return row


COLUMNS = [
    ("variant", "variant", ""),
    ("workload", "workload", ""),
    ("tok_s", "out tok/s", ".1f"),
    ("tpot_p50_ms", "TPOT p50 ms", ".2f"),
    ("tpot_p99_ms", "TPOT p99 ms", ".2f"),
    ("host_ms", "host ms/step", ".2f"),
    ("device_wait_ms", "device wait ms/step", ".2f"),
    ("roofline_frac", "HBM roofline", ".1%"),
    ("token_agreement", "tokens = unified", ".1%"),
    ("startup_s", "start-up s", ".1f"),
]


def plot(result: dict, path, title: str) -> None:
    plt = pyplot()
    rows = result["rows"]
    names = list(dict.fromkeys(r["workload"] for r in rows))
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    width = 0.8 / len(variants)
    for i, v in enumerate(variants):
        xs = [j + i * width for j in range(len(names))]
        ys = [
            next((r["tok_s"] for r in rows if r["variant"] == v and r["workload"] == n), 0.0) for n in names
        ]
        axes[0].bar(xs, ys, width, label=v)
    axes[0].set(xticks=[j + 0.4 - width / 2 for j in range(len(names))], ylabel="output tok/s", yscale="log")
    axes[0].set_xticklabels(names)
    axes[0].legend(fontsize=8)
    split = [r for r in rows if r["workload"] == names[0] and "host_ms" in r]
    axes[1].bar([r["variant"] for r in split], [r["host_ms"] for r in split], label="host")
    axes[1].bar(
        [r["variant"] for r in split],
        [r["device_wait_ms"] for r in split],
        bottom=[r["host_ms"] for r in split],
        label="waiting for the device",
    )
    axes[1].set(ylabel=f"ms per step ({names[0]})")
    axes[1].legend(fontsize=8)
    save_figure(fig, path, title)


def run(model: str, **options) -> dict:
    with Bench(6, model, **options) as bench:
        result = measure(bench)
        dtype = (
            "bfloat16"
            if bench.device.startswith("cuda") and bench.dtype is None
            else bench.dtype or "float32"
        )
        title = bench.title(dtype)
        bench.png.parent.mkdir(parents=True, exist_ok=True)
        plot(result, bench.png, title)
        header = (
            f"{title}\n\nGreedy, EOS ignored, all requests queued at once; max_model_len "
            f"{result['max_model_len']}, max_num_seqs {result['scale']['max_num_seqs']}."
        )
        return bench.publish(result, header, markdown_table(result["rows"], COLUMNS))
