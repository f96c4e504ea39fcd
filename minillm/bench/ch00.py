"""Chapter 0 benchmark: one forward pass of minillm's decoder against transformers' on the same weights.

For a few prompt lengths (batch 1, one prefill, no cache): median time, tokens/s, and the relative error
of the last position's logits against transformers. It shows the decoder of chapter 0 is the same
function as the reference and costs about the same, before any later chapter makes serving faster.

Run: minillm bench --chapter 0 [--quick] [--device cuda --model qwen3-0.6b --load-format dummy]
"""

from __future__ import annotations

import statistics
import time

import torch

from minillm.bench.ch01 import hf_model_for
from minillm.bench.common import Bench
from minillm.bench.report import markdown_table

SCALES = {
    "quick": dict(lengths=(64, 256, 1024), repeats=5),
    "full": dict(lengths=(128, 512, 2048, 8192), repeats=10),
}


def _median_time(fn, device: str, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def run(model: str, **options) -> dict:
    """`minillm bench --chapter 0`; options: Bench's fields (device, load_format, quick, out, dtype, progress)."""
    with Bench(0, model, **options) as bench:
        return measure(bench)


def measure(bench: Bench) -> dict:
    from minillm.attention.sdpa import NoCacheAttention
    from minillm.request import SamplingParams, Sequence
    from minillm.runner import ModelRunner
    from minillm.scheduler import ScheduledBatch

    s, device = bench.scale(SCALES), bench.device
    llm = bench.llm("naive", kv_cache="none")
    ours = llm.engine.model
    cfg = llm.engine.model_config
    hf = hf_model_for(llm, bench.model, bench.load_format)
    if bench.load_format == "dummy":  # same weights in both, so the logits can be compared
        _copy_weights(ours, hf)
    lengths = [n for n in s["lengths"] if n <= cfg.max_position_embeddings]
    runner = ModelRunner(ours, NoCacheAttention(), None, device, max_num_tokens=max(lengths))
    g = torch.Generator().manual_seed(0)
    rows = []
    for L in lengths:
        ids = torch.randint(16, cfg.vocab_size, (L,), generator=g).tolist()
        inputs, positions, meta, _ = runner.prepare(ScheduledBatch([Sequence(0, ids, SamplingParams())], [L]))
        hf_ids = torch.tensor([ids], device=device)

        def mine(inputs=inputs, positions=positions, meta=meta):
            return ours.compute_logits(ours(inputs, positions, runner.attn_backend, meta)[-1:])

        def ref(hf_ids=hf_ids):
            return hf(hf_ids, use_cache=False).logits[0, -1:].float()

        with torch.inference_mode():
            a, b = mine(), ref()
            err = ((a - b).norm() / b.norm()).item()
            t_ours = _median_time(mine, device, s["repeats"])
            t_hf = _median_time(ref, device, s["repeats"])
        rows.append(
            {
                "tokens": L,
                "minillm_ms": 1000 * t_ours,
                "transformers_ms": 1000 * t_hf,
                "minillm_tok_s": L / t_ours,
                "transformers_tok_s": L / t_hf,
                "speed_ratio": t_hf / t_ours,
                "logits_rel_err": err,
            }
        )
    cols = [
        ("tokens", "prompt tokens", "d"),
        ("minillm_ms", "minillm ms", ".2f"),
        ("transformers_ms", "transformers ms", ".2f"),
        ("minillm_tok_s", "minillm tok/s", ".0f"),
        ("speed_ratio", "minillm speed x", ".2f"),
        ("logits_rel_err", "logits rel. error", ".1e"),
    ]
    header = bench.title(llm.config.torch_dtype) + (
        f"\nOne prefill forward at batch 1, no KV cache; median of {s['repeats']}."
    )
    return bench.publish({"scale": s, "rows": rows}, header, markdown_table(rows, cols))


def _copy_weights(ours, hf) -> None:
    """Dummy weights: give transformers the same tensors minillm drew (split the fused projections)."""
    from minillm.model.loader import STACKED_PARAMS, _shard_slice

    params = dict(ours.named_parameters())
    with torch.no_grad():
        for name, p in hf.named_parameters():
            key = name.removeprefix("model.")
            for frag, (fused, shard) in STACKED_PARAMS.items():
                if frag in key:
                    p.copy_(params[key.replace(frag, fused)][_shard_slice(shard, ours.config)])
                    break
            else:
                p.copy_(
                    params["embed_tokens.weight"]
                    if key == "lm_head.weight" and key not in params
                    else params[key]
                )
