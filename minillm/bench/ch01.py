"""Chapter 1 benchmark: what a KV cache buys.

Three ways to decode the same prompts with the same weights:
  no cache        recompute K/V of the whole sequence at every step (O(n) work per token, O(n^2) total)
  naive (KV)      stage naive: keep K/V in a contiguous per-sequence cache; each step feeds one token
  transformers    Hugging Face generate (dynamic KV cache), the outside reference
Part A: one sequence, per-token latency against position (the no-cache line climbs, the others stay flat).
Part B: a static batch of equal-length requests: throughput and latency side by side.

Run: minillm bench --chapter 1 [--quick] [--device cuda --model qwen3-0.6b --load-format dummy]
"""

from __future__ import annotations

import torch

from minillm.bench.common import Bench, cuda_ms
from minillm.bench.report import markdown_table, pyplot, save_figure
from minillm.bench.runner import RunResult, run_hf_generate, run_llm
from minillm.bench.workloads import fixed

SCALES = {
    # latency run (batch 1) and throughput run (static batch)
    "quick": dict(lat_prompt=16, lat_tokens=96, num_requests=8, input_len=32, output_len=48),
    "full": dict(lat_prompt=64, lat_tokens=320, num_requests=32, input_len=128, output_len=128),
}


def hf_model_for(llm, model: str, load_format: str):
    """The transformers model for the same checkpoint (random weights of the same shape for dummy)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    dtype, device = llm.config.torch_dtype, llm.config.device
    if load_format == "dummy":
        from minillm.model.configs import NAMED_CONFIGS

        if model in NAMED_CONFIGS:
            spec = dict(NAMED_CONFIGS[model])
            arch = spec.pop("architectures")[0]
            model_type = {
                "LlamaForCausalLM": "llama",
                "Qwen2ForCausalLM": "qwen2",
                "Qwen3ForCausalLM": "qwen3",
            }[arch]
            cfg = AutoConfig.for_model(model_type, **spec)
        else:
            cfg = AutoConfig.from_pretrained(model)
        hf = AutoModelForCausalLM.from_config(cfg, dtype=dtype)
    else:
        hf = AutoModelForCausalLM.from_pretrained(model, dtype=dtype)
    return hf.to(device).eval()


def copy_bandwidth(device: str) -> float | None:
    """Measured device-to-device copy bandwidth (bytes read + written per second), CUDA only: a 1 GiB
    copy, long enough that its launch is noise, timed by events (bench.common.cuda_ms)."""
    if not device.startswith("cuda"):
        return None
    x = torch.empty(1 << 30, dtype=torch.uint8, device=device)
    y = torch.empty_like(x)
    ms, _ = cuda_ms(lambda: y.copy_(x), reps=10)
    return 2 * x.numel() / (ms / 1e3)


def read_bandwidth(device: str) -> float | None:
    """Measured read bandwidth (bytes read per second), CUDA only: a sum over 1 GiB of bfloat16, timed as
    copy_bandwidth is. A decode step reads its weights and K/V and writes next to nothing, so this, not a
    copy, is its roofline: on the H200 a copy moves 2.7 TB/s of bytes read and written, a read stream 4.0
    (docs/benchmarks/ch07_h200_2026-12-02/run2)."""
    if not device.startswith("cuda"):
        return None
    x = torch.ones(1 << 29, dtype=torch.bfloat16, device=device)
    ms, _ = cuda_ms(lambda: x.sum(), reps=10)
    return x.numel() * x.element_size() / (ms / 1e3)


def run(model: str, **options) -> dict:
    """`minillm bench --chapter 1`; options: Bench's fields (device, load_format, quick, out, dtype, progress)."""
    with Bench(1, model, **options) as bench:
        return measure(bench)


def measure(bench: Bench) -> dict:
    s, progress = bench.scale(SCALES), bench.progress
    max_len = max(s["lat_prompt"] + s["lat_tokens"], s["input_len"] + s["output_len"]) + 8
    common = dict(
        max_model_len=max_len,
        max_num_seqs=s["num_requests"],
        max_num_batched_tokens=max(2048, s["num_requests"] * s["input_len"]),
    )
    kv = bench.llm("naive", kv_cache_tokens=max_len * s["num_requests"], **common)
    no_cache = bench.llm("naive", kv_cache="none", **common)
    hf = hf_model_for(kv, bench.model, bench.load_format)
    vocab = kv.engine.model_config.vocab_size

    lat = fixed(1, s["lat_prompt"], s["lat_tokens"], vocab, seed=1)
    thr = fixed(s["num_requests"], s["input_len"], s["output_len"], vocab, seed=2)
    runs: dict[str, dict[str, RunResult]] = {"latency": {}, "throughput": {}}
    for part, wl, bs in (("latency", lat, 1), ("throughput", thr, s["num_requests"])):
        runs[part]["no cache"] = run_llm(no_cache, wl, f"{part}: no cache", progress=progress)
        runs[part]["naive (KV cache)"] = run_llm(kv, wl, f"{part}: naive", progress=progress)
        runs[part]["transformers generate"] = run_hf_generate(
            hf, wl, bs, f"{part}: transformers", progress=progress
        )
    same_tokens = all(runs[p]["no cache"].token_ids == runs[p]["naive (KV cache)"].token_ids for p in runs)

    rows = []
    base = runs["throughput"]["no cache"].summary()["output_throughput"]
    for part in ("latency", "throughput"):
        for label, r in runs[part].items():
            row = {**r.summary(), "part": part, "label": label}
            row["speedup_vs_no_cache"] = row["output_throughput"] / base if part == "throughput" else None
            rows.append(row)
    bw = read_bandwidth(bench.device)
    weight_bytes = sum(p.numel() * p.element_size() for p in kv.engine.model.parameters())
    roofline = bw / weight_bytes if bw else None  # batch-1 decode can't beat reading every weight once
    for row in rows:
        if roofline and row["part"] == "latency":
            row["decode_roofline_frac"] = 1000 / row["median_itl_ms"] / roofline
    cols = [
        ("part", "part", ""),
        ("label", "engine", ""),
        ("median_ttft_ms", "TTFT p50 ms", ".2f"),
        ("median_tpot_ms", "TPOT p50 ms", ".2f"),
        ("p99_itl_ms", "ITL p99 ms", ".2f"),
        ("median_e2el_ms", "E2EL p50 ms", ".1f"),
        ("output_throughput", "out tok/s", ".1f"),
        ("speedup_vs_no_cache", "x no-cache", ".2f"),
    ]
    if roofline:
        cols.append(("decode_roofline_frac", "of HBM roofline", ".1%"))
    table = markdown_table(rows, cols)
    header = (
        bench.title(kv.config.torch_dtype)
        + f"\nlatency: 1 request, {s['lat_prompt']} prompt + {s['lat_tokens']}"
        f" output tokens; throughput: {s['num_requests']} requests x ({s['input_len']} + {s['output_len']})"
        f" tokens, one static batch; greedy, EOS ignored. Token-identical no-cache vs KV: {same_tokens}"
        f"{'.' if kv.config.torch_dtype == torch.float32 else ' (bf16 sums in another order can flip near-ties).'}"
    )
    payload = {
        "scale": s,
        "config": {"naive": vars(kv.config), "no_cache": vars(no_cache.config)},
        "workloads": {"latency": lat.describe(), "throughput": thr.describe()},
        "read_bandwidth_Bps": bw,
        "weight_bytes": weight_bytes,
        "token_identical": same_tokens,
        "aggregates": rows,
        "per_request": {p: {k: r.metrics for k, r in v.items()} for p, v in runs.items()},
    }
    record = bench.publish(payload, header, table)
    plot(runs, bench.png, header.split("\n")[0])
    return record


def plot(runs, path, title: str) -> None:
    plt = pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.2))
    for label, r in runs["latency"].items():
        itl = [x * 1000 for x in r.metrics[0].itl]
        ax1.plot(range(2, len(itl) + 2), itl, label=label, lw=1.2)
    ax1.set(
        xlabel="output token index", ylabel="inter-token latency (ms)", title="per-token latency vs position"
    )
    ax1.legend()
    labels = list(runs["throughput"])
    vals = [runs["throughput"][k].summary()["output_throughput"] for k in labels]
    ax2.bar(labels, vals, color=["#c44", "#48c", "#888"])
    for i, v in enumerate(vals):
        ax2.text(i, v, f"{v:.0f}", ha="center", va="bottom")
    ax2.set(ylabel="output tokens / s", title="static batch throughput")
    save_figure(fig, path, title)
