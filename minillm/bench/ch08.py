"""Chapter 8 benchmark: online serving, stage by stage. For each stage, `minillm serve` starts in a
child process on a free port, the serving client (minillm/bench/serve.py) sweeps request rates against
it over HTTP, and the server stops; the plot puts TTFT p99 and TPOT p99 against achieved throughput.

    minillm bench --chapter 8 --quick                           # paged, radix, unified on the CPU
    minillm bench serve --stages paged,radix,unified --sweep --request-rates 2,4,8,16,inf --out DIR
    minillm bench --chapter 8 --device cuda --model qwen3-0.6b --load-format dummy   # and stage triton

On CUDA the sweep adds stage triton, synchronous and with async scheduling (chapter 7; each start-up
compiles and captures for about a minute) and uses more prompts and higher rates: a GPU holds rates a
CPU cannot, and a limit is only found by passing it. Every request is greedy with EOS ignored, so in float32 every stage must return the same
text for the same prompt at every rate (`token_identical` in the JSON: the texts compared); in bf16
stages round differently and nearly tied random-weight logits can flip.

Checked by: pytest tests/test_serve_bench.py, tests/test_bench.py (quick scale).
"""

from __future__ import annotations

import asyncio
import math
import shlex
from pathlib import Path

from minillm.bench.common import Bench
from minillm.bench.report import markdown_table, save_figure
from minillm.bench.serve import ServeRequest, random_requests, run_benchmark, summary_line

STAGES = ("paged", "radix", "unified")
# on CUDA also stage triton, synchronous and with async scheduling; a label is a stage, then any
# `minillm serve` flags of its own
CUDA_STAGES = (*STAGES, "triton", "triton --async-scheduling")
SCALES = {  # prompts share a prefix of prefix_len ids (vLLM's --random-prefix-len): what radix reuses
    "quick": dict(num_prompts=16, input_len=48, prefix_len=32, output_len=16, rates=(8.0, math.inf)),
    "full": dict(
        num_prompts=80, input_len=96, prefix_len=64, output_len=64, rates=(2.0, 4.0, 8.0, 16.0, math.inf)
    ),
    "cuda": dict(
        num_prompts=240, input_len=96, prefix_len=64, output_len=64, rates=(8.0, 16.0, 32.0, 64.0, math.inf)
    ),
}
COLUMNS = [
    ("stage", "stage", ""),
    ("request_rate", "rate req/s", ""),
    ("completed", "done", "d"),
    ("request_throughput", "achieved req/s", ".2f"),
    ("output_throughput", "out tok/s", ".1f"),
    ("median_ttft_ms", "TTFT p50 ms", ".1f"),
    ("p99_ttft_ms", "TTFT p99 ms", ".1f"),
    ("median_tpot_ms", "TPOT p50 ms", ".2f"),
    ("p99_tpot_ms", "TPOT p99 ms", ".2f"),
    ("p99_itl_ms", "ITL p99 ms", ".2f"),
    ("median_e2el_ms", "E2EL p50 ms", ".1f"),
]


def vocab_size(model: str | None, load_format: str = "auto") -> int:
    """The model's vocabulary (random prompts stay inside it); the embedded model's by default."""
    from minillm.config import DEFAULT_MODEL
    from minillm.model.loader import read_config

    return read_config(model or DEFAULT_MODEL, load_format)[0].vocab_size


def with_prefix(
    requests: list[ServeRequest], prefix_len: int, vocab: int, seed: int = 0
) -> list[ServeRequest]:
    """Every prompt behind one shared prefix of random ids."""
    if prefix_len <= 0:
        return requests
    prefix = [r.prompt[0] for r in random_requests(prefix_len, 1, 1, vocab, seed=seed + 1)]
    return [ServeRequest(prefix + list(r.prompt), r.max_tokens) for r in requests]


def sweep(base_url: str, model: str, requests: list[ServeRequest], rates, **options) -> list[dict]:
    """One run per rate against one server, after a short warm-up that is not recorded."""
    warm = [ServeRequest([4 + i % 12 for i in range(8)], 2) for _ in range(4)]  # ids no workload uses
    asyncio.run(run_benchmark(base_url, model, warm, **{**options, "progress": False}))
    runs = []
    for rate in rates:
        m = asyncio.run(run_benchmark(base_url, model, requests, request_rate=rate, **options))
        print(summary_line(m))
        runs.append(m)
    return runs


def sweep_stages(stages, requests, rates, *, model=None, server_args=(), **options) -> dict[str, list[dict]]:
    """Start `minillm serve` for each stage (one torch thread on a CPU, as every CPU benchmark here),
    sweep it, stop it. A stage label may carry serve flags of its own: "triton --async-scheduling"."""
    from minillm.server.launch import launch_server

    runs = {}
    for label in stages:
        if not label.strip():
            raise ValueError(f"stages: an empty stage label in {list(stages)}")
        stage, *flags = shlex.split(label)
        args = [*server_args, *flags]
        with launch_server(model, stage=stage, args=args, env={"OMP_NUM_THREADS": "1"}) as srv:
            print(f"[stage {label}: {srv.base_url}]")
            runs[label] = sweep(srv.base_url, srv.model_name, requests, rates, **options)
    return runs


def identical_outputs(runs: dict[str, list[dict]]) -> bool:
    """Every run returned the same text for each prompt (greedy, EOS ignored: the same tokens)."""
    texts = [[r["text"] if r["success"] else None for r in m["results"]] for ms in runs.values() for m in ms]
    return all(a == b for run in texts[1:] for a, b in zip(texts[0], run) if a is not None and b is not None)


def publish_sweep(
    runs: dict[str, list[dict]],
    workload: dict,
    out: str,
    *,
    device: str = "cpu",
    model: str | None = None,
    bench=None,
) -> dict:
    """ch08.json (everything, per-request results included), ch08.md (the table) and ch08.png."""
    from minillm.config import DEFAULT_MODEL

    own = bench is None
    if own:
        bench = Bench(8, model or DEFAULT_MODEL, device=device, out=out).__enter__()
    for ms in runs.values():  # JSON has no infinity: an unpaced run's rate is written "inf"
        for m in ms:
            m["request_rate"] = "inf" if m["request_rate"] == math.inf else m["request_rate"]
    rows = [{"stage": stage, **m} for stage, ms in runs.items() for m in ms]
    identical = identical_outputs(runs)
    for ms in runs.values():  # per request: timings and counts; the texts were compared above
        for m in ms:
            m["results"] = [{k: v for k, v in r.items() if k not in ("text", "itl")} for r in m["results"]]
    header = (
        f"Chapter 8 (serving) on {bench.env['device_name']} ({device}), model {bench.model}; "
        f"torch {bench.env['torch']}. Workload: {workload}. Streamed /v1/completions over HTTP, greedy, "
        "EOS ignored; latencies in ms (client-side), medians and p99 over the run's requests."
    )
    table = markdown_table(rows, COLUMNS)
    _plot(
        runs,
        bench.png,
        f"Chapter 8 serving sweep on {bench.env['device_name']} ({device}), model {Path(bench.model).name}",
    )
    summary = [{k: v for k, v in r.items() if k != "results"} for r in rows]
    record = bench.publish(
        {"workload": workload, "token_identical": identical, "runs": summary, "raw": runs},
        header,
        table,
    )
    if own:
        bench.__exit__(None, None, None)
    return record


def _plot(runs: dict[str, list[dict]], path, title: str) -> None:
    from minillm.bench.report import pyplot

    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for stage, ms in runs.items():
        x = [m["request_throughput"] for m in ms]
        for ax, key in zip(axes, ("p99_ttft_ms", "p99_tpot_ms")):
            ax.plot(x, [m[key] for m in ms], marker="o", label=stage)
    for ax, name in zip(axes, ("TTFT p99 (ms)", "TPOT p99 (ms)")):
        ax.set_xlabel("achieved request throughput (req/s)")
        ax.set_ylabel(name)
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_figure(fig, path, title)


def run(
    model, *, device="cpu", load_format="auto", quick=False, out="results", dtype=None, progress=True
) -> dict:
    """`minillm bench --chapter 8`: the stage sweep at the chosen scale."""
    with Bench(8, model, device=device, load_format=load_format, quick=quick, out=out, dtype=dtype) as b:
        cuda = device.startswith("cuda")
        s = SCALES["cuda"] if cuda and not quick else b.scale(SCALES)
        vocab = vocab_size(model, load_format)
        requests = random_requests(s["num_prompts"], s["input_len"], s["output_len"], vocab, seed=0)
        requests = with_prefix(requests, s["prefix_len"], vocab)
        server_args = ["--device", device, "--load-format", load_format] + (
            ["--dtype", dtype] if dtype else []
        )
        stages = CUDA_STAGES if cuda and not quick else STAGES
        runs = sweep_stages(
            stages, requests, s["rates"], model=model, server_args=server_args, progress=progress
        )
        workload = {"dataset": "random", **{k: v for k, v in s.items() if k != "rates"}, "seed": 0}
        return publish_sweep(runs, workload, out, device=device, bench=b)
