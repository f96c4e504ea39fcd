"""Chapter 7 benchmark: the Triton kernels against PyTorch's attention, then stage triton end to end.

Kernels (CUDA only; each output checked against SDPA before it is timed; medians of CUDA-graph replays
with the L2 flushed before each, bench.common.cuda_ms):
  prefill   causal, head_dim 128, bf16, 16k tokens per launch as batch x length (1k, 4k, 16k): the
            paged varlen kernel (K/V read through a shuffled block table) vs SDPA's flash and cuDNN
            backends and FlexAttention on contiguous K/V. TFLOP/s count the causal half.
  decode    Qwen3-0.6B's heads (16 query, 8 KV, head_dim 128), bf16, block 16: split-KV paged decode
            and the one-pass kernel (puzzle 16) vs SDPA on contiguous K/V, at batch 1/64/256 and
            contexts 1k-8k. Bandwidth = K/V bytes the step must read / time, beside the measured read
            bandwidth (a 1 GiB sum) and copy bandwidth (bytes read + written per second).
End to end: stage compiled (torch attention) vs stage triton, and stage triton with asynchronous
scheduling (async_scheduling: the next step launched before this step's tokens reach the host), on
chapter 6's workloads plus a long-context one (prompts 4k-16k), where
attention dominates; same reporting as chapter 6.
On a CPU (the interpreter) kernel timings mean nothing: the kernels are checked against float64 at tiny
sizes instead, and the end-to-end part runs stage unified vs stage triton on a tiny workload for token
agreement (interpreter speed, not kernel speed).

Run: minillm bench --chapter 7 [--quick] [--device cuda --model qwen3-0.6b --load-format dummy]
"""

from __future__ import annotations

import gc
import json
import statistics
import time
from functools import partial
from pathlib import Path

import torch
from torch.nn import functional as F

from minillm.bench.ch01 import copy_bandwidth, read_bandwidth
from minillm.bench.ch06 import COLUMNS as CH06_COLUMNS
from minillm.bench.ch06 import roofline_tok_s, step_split, throughput, warm_up_structures
from minillm.bench.common import Bench, cuda_ms
from minillm.bench.report import markdown_table, pyplot, save_figure
from minillm.bench.runner import run_llm
from minillm.bench.workloads import fixed, random_lengths
from minillm.engine import LOOP_OPTIONS
from minillm.model.loader import read_config

SCALES = {
    "quick": dict(
        batch1=(1, 24, 8), batch=(4, 24, 8), mixed=None, long=None, max_model_len=128, max_num_seqs=4
    ),
    "full": dict(
        batch1=(1, 128, 256),
        batch=(64, 256, 256),
        mixed=(256, 562),
        long=(16, 10240, 128),  # prompts uniform in 4k-16k (range ratio 0.6), 128 new tokens each
        max_model_len=16640,
        max_num_seqs=256,
    ),
}
# stages side by side, the reference first: on a CPU the eager stage (compiling there takes a minute and
# stage triton runs eagerly in the interpreter anyway)
VARIANTS = {  # label -> (stage, engine options), the reference first
    "cuda": {
        "compiled": ("compiled", {}),
        "triton": ("triton", {}),
        # the next step scheduled and launched before this one's tokens reach the host
        # (EngineConfig.async_scheduling; it includes async_output's deferred texts). Only the step
        # loop differs, so it runs on stage triton's build, graphs included (Engine.reconfigure)
        "triton + async scheduling": ("triton", {"async_scheduling": True}),
    },
    "cpu": {"unified": ("unified", {}), "triton": ("triton", {})},
}
PREFILL_LENGTHS = (1024, 4096, 16384)
SPLIT_SWEEP = (1, 2, 4, 8, 16)  # split counts timed beside the heuristic's choice (decode_splits)
DECODE_BATCHES = (1, 64, 256)
DECODE_CONTEXTS = (1024, 2048, 4096, 8192)


def paged_copy(k: torch.Tensor, v: torch.Tensor, block_size: int, gen: torch.Generator):
    """Contiguous (B, N, KVH, D) keys and values laid into a block pool in shuffled order (plus the dummy
    block): returns k_cache, v_cache (blocks + 1, block_size, KVH, D) and block_tables (B, N/bs) int32."""
    B, N, KVH, D = k.shape
    per_seq = -(-N // block_size)
    perm = torch.randperm(B * per_seq, generator=gen).to(k.device)
    k_cache = k.new_zeros(B * per_seq + 1, block_size, KVH, D)
    v_cache = torch.zeros_like(k_cache)
    pad = per_seq * block_size - N
    kb = F.pad(k, (0, 0, 0, 0, 0, pad)).view(B * per_seq, block_size, KVH, D)
    vb = F.pad(v, (0, 0, 0, 0, 0, pad)).view(B * per_seq, block_size, KVH, D)
    k_cache[perm], v_cache[perm] = kb, vb
    return k_cache, v_cache, perm.view(B, per_seq).to(torch.int32)


def prefill_rows(device: str, num_heads: int = 16, head_dim: int = 128, total: int = 16384) -> list[dict]:
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    from minillm.attention.triton.prefill import paged_prefill

    gen, rows = torch.Generator().manual_seed(0), []
    flex = torch.compile(flex_attention)
    for N in PREFILL_LENGTHS:
        B = max(1, total // N)
        q, k, v = (
            torch.randn(B, N, num_heads, head_dim, generator=gen).to(device, torch.bfloat16) for _ in range(3)
        )
        k_cache, v_cache, tables = paged_copy(k, v, 16, gen)
        ctx = torch.full((B,), N, dtype=torch.int32, device=device)
        cu = torch.arange(0, (B + 1) * N, N, dtype=torch.int32, device=device)
        q_flat = q.view(B * N, num_heads, head_dim)
        qt, kt, vt = (x.transpose(1, 2) for x in (q, k, v))  # (B, H, N, D)
        ref = (
            F.scaled_dot_product_attention(qt, kt, vt, is_causal=True)
            .transpose(1, 2)
            .reshape(B * N, num_heads, -1)
        )
        ours = partial(paged_prefill, q_flat, k_cache, v_cache, tables, cu, ctx, N)
        err = (ours().float() - ref.float()).abs().max().item()
        block_mask = create_block_mask(lambda b, h, qi, ki: qi >= ki, B, None, N, N, device=device)
        candidates = {
            "triton paged": ours,
            "SDPA flash": partial(_sdpa, SDPBackend.FLASH_ATTENTION, sdpa_kernel, qt, kt, vt),
            "SDPA cuDNN": partial(_sdpa, SDPBackend.CUDNN_ATTENTION, sdpa_kernel, qt, kt, vt),
            "FlexAttention": partial(flex, qt, kt, vt, block_mask=block_mask),
        }
        flops = 2 * B * num_heads * head_dim * N * N  # 4 B H D N^2, halved by causality
        for name, fn in candidates.items():
            try:
                ms, graphed = cuda_ms(fn)
            except RuntimeError as e:  # a backend this build or this shape does not support
                rows.append(
                    {"kernel": "prefill", "impl": name, "tokens": N, "batch": B, "error": str(e)[:120]}
                )
                continue
            rows.append(
                {
                    "kernel": "prefill",
                    "impl": name,
                    "tokens": N,
                    "batch": B,
                    "ms": ms,
                    "graphed": graphed,
                    "tflops": flops / ms / 1e9,
                    "max_abs_err": err if name == "triton paged" else None,
                }
            )
            print(f"prefill {name:>14} N={N:6d} B={B:3d} {flops / ms / 1e9:7.1f} TFLOP/s", flush=True)
        del q, k, v, k_cache, v_cache
        torch.cuda.empty_cache()
    return rows


def _sweep_splits(name: str) -> int | None:
    """ "triton split-KV x4" -> 4; any other implementation -> None."""
    return int(name.rsplit("x", 1)[1]) if name.startswith("triton split-KV x") else None


def split_table(kernels: list[dict]) -> str:
    """Decode bandwidth by split count, one row per (batch, context), the heuristic's choice marked."""
    rows = [r for r in kernels if r["kernel"] == "decode" and r.get("splits") and "tb_s" in r]
    if not rows:
        return ""
    cases = list(dict.fromkeys((r["batch"], r["context"]) for r in rows))
    head = "| batch | context | " + " | ".join(f"{n} splits" for n in SPLIT_SWEEP) + " |"
    lines = [head, "|" + "---|" * (2 + len(SPLIT_SWEEP))]
    for b, c in cases:
        got = {r["splits"]: r for r in rows if (r["batch"], r["context"]) == (b, c)}
        cells = []
        for n in SPLIT_SWEEP:
            r = got.get(n)
            mark = "**" if r is not None and r["impl"] == "triton split-KV" else ""
            cells.append(f"{mark}{r['tb_s']:.2f}{mark}" if r is not None else "-")
        lines.append(f"| {b} | {c} | " + " | ".join(cells) + " |")
    return "Decode TB/s by split count (bold: the heuristic's choice, `decode_splits`):\n\n" + "\n".join(
        lines
    )


def _sdpa(backend, sdpa_kernel, q, k, v):
    with sdpa_kernel(backend):
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)


def decode_rows(
    device: str, copy_bw: float, read_bw: float, heads=(16, 8), head_dim: int = 128
) -> list[dict]:
    from minillm.attention.triton.decode import decode_splits, paged_decode, paged_decode_one_pass

    H, KVH = heads
    gen, rows = torch.Generator().manual_seed(1), []
    for B in DECODE_BATCHES:
        for ctx_len in DECODE_CONTEXTS:
            k, v = (
                torch.randn(B, ctx_len, KVH, head_dim, generator=gen).to(device, torch.bfloat16)
                for _ in range(2)
            )
            q = torch.randn(B, H, head_dim, generator=gen).to(device, torch.bfloat16)
            k_cache, v_cache, tables = paged_copy(k, v, 16, gen)
            ctx = torch.full((B,), ctx_len, dtype=torch.int32, device=device)
            kt, vt = k.transpose(1, 2).contiguous(), v.transpose(1, 2).contiguous()  # (B, KVH, N, D)
            sdpa = partial(F.scaled_dot_product_attention, q[:, :, None], kt, vt, enable_gqa=True)
            ref = sdpa()[:, :, 0]
            splits = decode_splits(B, KVH, ctx_len)
            candidates = {
                "triton split-KV": partial(paged_decode, q, k_cache, v_cache, tables, ctx, splits),
                "triton one-pass": partial(paged_decode_one_pass, q, k_cache, v_cache, tables, ctx),
                "SDPA contiguous": sdpa,
            }
            for n in SPLIT_SWEEP:  # what the heuristic should have picked: measured, not assumed
                if n != splits:
                    candidates[f"triton split-KV x{n}"] = partial(
                        paged_decode, q, k_cache, v_cache, tables, ctx, n
                    )
            kv_bytes = 2 * B * ctx_len * KVH * head_dim * 2
            for name, fn in candidates.items():
                try:
                    err = (fn().reshape(ref.shape).float() - ref.float()).abs().max().item()
                    ms, graphed = cuda_ms(fn)
                except RuntimeError as e:  # kept as a row: one failing shape must not end the table
                    rows.append(
                        {
                            "kernel": "decode",
                            "impl": name,
                            "batch": B,
                            "context": ctx_len,
                            "error": str(e)[:120],
                        }
                    )
                    continue
                bw = kv_bytes / ms / 1e9  # TB/s... as GB/ms
                rows.append(
                    {
                        "kernel": "decode",
                        "impl": name,
                        "batch": B,
                        "context": ctx_len,
                        "splits": splits if name == "triton split-KV" else _sweep_splits(name),
                        "ms": ms,
                        "graphed": graphed,
                        "tb_s": bw,
                        "of_copy": bw * 1e12 / copy_bw,
                        "of_read": bw * 1e12 / read_bw,
                        "max_abs_err": err,
                    }
                )
                print(
                    f"decode {name:>16} B={B:3d} ctx={ctx_len:5d} {bw:5.2f} TB/s ({bw * 1e12 / read_bw:.0%} of read)",
                    flush=True,
                )
            del k, v, k_cache, v_cache, kt, vt
            torch.cuda.empty_cache()
    return rows


def interpreter_rows() -> list[dict]:
    """On a CPU: every kernel against a float64 reference at tiny sizes (correctness, not speed)."""
    from minillm.attention.triton.decode import paged_decode, paged_decode_one_pass
    from minillm.attention.triton.prefill import paged_prefill

    gen = torch.Generator().manual_seed(0)
    B, N, H, KVH, D = 3, 40, 4, 2, 32
    k, v = (torch.randn(B, N, KVH, D, generator=gen) for _ in range(2))
    k_cache, v_cache, tables = paged_copy(k, v, 16, gen)
    q = torch.randn(B * N, H, D, generator=gen)
    ctx = torch.full((B,), N, dtype=torch.int32)
    cu = torch.arange(0, (B + 1) * N, N, dtype=torch.int32)
    qt = q.view(B, N, H, D).transpose(1, 2).double()
    kt, vt = (x.repeat_interleave(H // KVH, 2).transpose(1, 2).double() for x in (k, v))
    ref = F.scaled_dot_product_attention(qt, kt, vt, is_causal=True).transpose(1, 2).reshape(B * N, H, D)
    rows = [
        {
            "kernel": "prefill",
            "impl": "triton paged (interpreter)",
            "max_abs_err": (paged_prefill(q, k_cache, v_cache, tables, cu, ctx, N).double() - ref)
            .abs()
            .max()
            .item(),
        }
    ]
    qd = q.view(B, N, H, D)[:, -1].contiguous()  # the last position attends to every key
    want = ref.view(B, N, H, D)[:, -1]
    for name, out in (
        ("triton split-KV (interpreter)", paged_decode(qd, k_cache, v_cache, tables, ctx, 3)),
        ("triton one-pass (interpreter)", paged_decode_one_pass(qd, k_cache, v_cache, tables, ctx)),
    ):
        rows.append(
            {"kernel": "decode", "impl": name, "max_abs_err": (out.double() - want).abs().max().item()}
        )
    return rows


def workloads(s: dict, vocab: int) -> dict:
    out = {}
    n, p, o = s["batch1"]
    out["batch 1"] = fixed(n, p, o, vocab, seed=1)
    b, bp, bo = s["batch"]
    out[f"batch {b}"] = fixed(b, bp, bo, vocab, seed=2)
    if s["mixed"]:
        m, mid = s["mixed"]
        out[f"{m} requests"] = random_lengths(m, mid, mid, vocab, range_ratio=0.822, seed=3)
    if s["long"]:
        n, mid, o = s["long"]
        out["long context"] = random_lengths(n, mid, o, vocab, range_ratio=0.6, seed=4)
    return out


def end_to_end_rows(bench: Bench, s: dict, bandwidth: float | None) -> list[dict]:
    positions = read_config(bench.model, bench.load_format)[0].max_position_embeddings
    max_model_len = min(s["max_model_len"], positions)
    rows, reference = [], {}
    llm, built = None, None
    for label, (stage, options) in VARIANTS["cuda" if bench.device.startswith("cuda") else "cpu"].items():
        build = (stage, {k: v for k, v in options.items() if k not in LOOP_OPTIONS})
        if llm is not None and build == built:
            # the same stage with other step-loop options: the same compiled graphs, side by side
            llm.engine.reconfigure(**{k: options.get(k, False) for k in LOOP_OPTIONS})
            if not llm.reset_prefix_cache():  # the variant before cached these very prompts: start cold
                raise RuntimeError("the prefix cache could not be emptied between variants")
        else:
            if llm is not None:
                llm = None
                _release(bench.device)
            t0 = time.perf_counter()
            llm = bench.llm(
                stage,
                max_model_len=max_model_len,
                max_num_seqs=s["max_num_seqs"],
                max_num_batched_tokens=8192 if bench.device.startswith("cuda") else 32,
                kv_cache_tokens=s["max_num_seqs"] * min(max_model_len, 2048),
                **options,
            )
            warm_up_structures(llm)
            startup, built = time.perf_counter() - t0, build
        vocab = min(llm.engine.model_config.vocab_size, 8000)
        for name, wl in workloads(s, vocab).items():
            if max(len(r.prompt_token_ids) + r.max_tokens for r in wl.requests) > max_model_len:
                continue
            llm.engine.step_stats.clear()
            res = run_llm(llm, wl, f"{label}: {name}", progress=bench.progress)
            ref = reference.setdefault(name, res.token_ids)
            agree = sum(a == b for x, y in zip(ref, res.token_ids) for a, b in zip(x, y))
            total = sum(min(len(x), len(y)) for x, y in zip(ref, res.token_ids))
            row = {
                **throughput(label, name, res),
                **step_split(llm),
                "startup_s": startup,
                "token_agreement": agree / total if total else 1.0,
                # prompt tokens served by the prefix cache: equal across variants, or one ran warm
                "cached_tokens": sum(m.num_cached_tokens for m in res.metrics),
            }
            if bandwidth:
                mean_ctx = statistics.fmean(len(r.prompt_token_ids) + r.max_tokens / 2 for r in wl.requests)
                conc = min(len(wl.requests), s["max_num_seqs"])
                row["roofline_frac"] = row["tok_s"] / roofline_tok_s(llm, conc, mean_ctx, bandwidth)
            rows.append(keep(bench, row))
    llm = None
    _release(bench.device)
    return rows


def _release(device: str) -> None:
    """After the last reference to a stage's LLM is gone: Dynamo's compiled code keeps what it guarded
    on (the KV pool among it), so it is reset, and the memory goes back before the next stage's pool."""
    torch._dynamo.reset()
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()


def keep(bench: Bench, row: dict) -> dict:
    """Append a row to ch07_rows.jsonl at once: kept if a long run is cut short."""
    Path(bench.out).mkdir(parents=True, exist_ok=True)
    with open(Path(bench.out) / "ch07_rows.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")
    what = row.get("variant") or f"{row['kernel']} {row['impl']}"
    figure = next((f"{row[k]:.2f} {k}" for k in ("tok_s", "tflops", "tb_s", "max_abs_err") if row.get(k)), "")
    print(f"{what:>40} | {row.get('workload', ''):>14} | {figure}", flush=True)
    return row


def measure(bench: Bench, parts: tuple[str, ...] = ("kernels", "e2e")) -> dict:
    s = bench.scale(SCALES)
    cuda = bench.device.startswith("cuda")
    bandwidth, copy_bw = read_bandwidth(bench.device), copy_bandwidth(bench.device)
    kernels = []
    if "kernels" in parts:
        if cuda:
            kernels = [keep(bench, r) for r in prefill_rows(bench.device)]
            kernels += [keep(bench, r) for r in decode_rows(bench.device, copy_bw, bandwidth)]
        else:
            kernels = [keep(bench, r) for r in interpreter_rows()]
    e2e = end_to_end_rows(bench, s, bandwidth) if "e2e" in parts else []
    return {
        "kernels": kernels,
        "rows": e2e,
        "read_bandwidth": bandwidth,
        "copy_bandwidth": copy_bw,
        "scale": s,
        "token_identical": all(r["token_agreement"] == 1.0 for r in e2e),
    }


KERNEL_COLUMNS = [
    ("kernel", "kernel", ""),
    ("impl", "implementation", ""),
    ("tokens", "tokens", ""),
    ("batch", "batch", ""),
    ("context", "context", ""),
    ("tflops", "TFLOP/s", ".1f"),
    ("tb_s", "TB/s", ".2f"),
    ("of_read", "of read bw", ".0%"),
    ("of_copy", "of copy bw", ".0%"),
    ("max_abs_err", "max abs err", ".1e"),
]
HEADERS = {"variant": "stage", "token_agreement": "tokens = first stage"}
E2E_COLUMNS = [(key, HEADERS.get(key, head), fmt) for key, head, fmt in CH06_COLUMNS]  # chapter 6's table


def plot(result: dict, path, title: str) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    pre = [r for r in result["kernels"] if r["kernel"] == "prefill" and "tflops" in r]
    for impl in dict.fromkeys(r["impl"] for r in pre):
        pts = [(r["tokens"], r["tflops"]) for r in pre if r["impl"] == impl]
        axes[0].plot(*zip(*pts), marker="o", label=impl)
    axes[0].set(
        xscale="log",
        xlabel="sequence length (16k tokens per launch)",
        ylabel="TFLOP/s",
        title="causal prefill, head_dim 128",
    )
    dec = [
        r
        for r in result["kernels"]
        if r["kernel"] == "decode" and "tb_s" in r and r["batch"] == 64 and "split-KV x" not in r["impl"]
    ]
    for impl in dict.fromkeys(r["impl"] for r in dec):
        pts = [(r["context"], r["tb_s"]) for r in dec if r["impl"] == impl]
        axes[1].plot(*zip(*pts), marker="o", label=impl)
    for key, style in (("read_bandwidth", "-"), ("copy_bandwidth", "--")):
        if result.get(key):
            axes[1].axhline(result[key] / 1e12, color="gray", ls=style, label=key.split("_")[0])
    axes[1].set(xscale="log", xlabel="context", ylabel="TB/s of K/V read", title="paged decode, batch 64")
    for ax in axes:
        if ax.lines:
            ax.legend(fontsize=8)
    save_figure(fig, path, title)


def run(model: str, parts: tuple[str, ...] = ("kernels", "e2e"), **options) -> dict:
    try:
        import triton  # noqa: F401
    except ImportError:  # Triton publishes Linux wheels only: nothing to run here
        print("chapter 7: skipped, the triton package is not installed (pip install triton, Linux only)")
        return {"skipped": "triton is not installed"}
    with Bench(7, model, **options) as bench:
        result = measure(bench, parts)
        cuda = bench.device.startswith("cuda")
        title = bench.title("bfloat16" if cuda and bench.dtype is None else bench.dtype or "float32")
        bench.png.parent.mkdir(parents=True, exist_ok=True)
        plot(result, bench.png, title)
        header = (
            f"{title}\n\nKernels (CUDA: timed; CPU: interpreter, correctness only), then stages end to end."
        )
        swept = [r for r in result["kernels"] if not r["impl"].startswith("triton split-KV x")]
        tables = "\n\n".join(
            t
            for t in (
                markdown_table(swept, KERNEL_COLUMNS),
                split_table(result["kernels"]),
                markdown_table(result["rows"], E2E_COLUMNS),
            )
            if t
        )
        return bench.publish(result, header, tables)
