"""The decode step's linear layers one by one, at small batch: cuBLAS, Inductor's max-autotune and a
Triton GEMV (CUDA).

  python scripts/probe_linear.py --json linear.json
  python scripts/probe_linear.py --batches 1 --sweep     # also the GEMV at every tile (one batch size)

A batch-1 decode step of Qwen3-0.6B spends 0.88 of its 1.41 ms of device time in cuBLAS GEMMs
(docs/benchmarks/ch07_h200_2026-12-02/run2/profile_b1.txt): 1.18 GB of weights that the read stream
would move in 0.29 ms. This script times each distinct linear layer of the model (fused qkv, o, fused
gate_up, down, lm_head) as y = x W^T with x of `batch` rows, every call a CUDA-graph replay after an L2
flush (bench.common.cuda_ms: a step reads each layer's weights from HBM, as here), for
  - F.linear (cuBLAS), what the engine runs today, and
  - the same call under torch.compile(mode="max-autotune-no-cudagraphs"): Inductor benchmarks its Triton
    GEMM templates against cuBLAS and keeps the fastest, the route to a faster step without writing a
    kernel, and
  - minillm.model.gemv (at most MAX_M rows): one program per few output features streaming its rows of
    W, at gemv_config's tile and, with --sweep, at the best of up to 80 tiles.
Printed: microseconds per call, the weight bytes read per second, and the step's total for each (the
layers' sum times their count per step). Nothing here changes the engine; it decides whether the next
change should.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import sys

import torch
import torch.nn.functional as F
import triton


def shapes(model: str) -> list[tuple[str, int, int, int]]:
    """(name, in features, out features, calls per step) of each distinct linear of a decode step."""
    from minillm.model.loader import read_config

    c = read_config(model, "dummy")[0]
    q, kv = c.num_attention_heads * c.head_dim, c.num_key_value_heads * c.head_dim
    L = c.num_hidden_layers
    return [
        ("qkv", c.hidden_size, q + 2 * kv, L),
        ("o", q, c.hidden_size, L),
        ("gate_up", c.hidden_size, 2 * c.intermediate_size, L),
        ("down", c.intermediate_size, c.hidden_size, L),
        ("lm_head", c.hidden_size, c.vocab_size, 1),
    ]


def time_call(fn, x: torch.Tensor, w: torch.Tensor, ref: torch.Tensor) -> dict:
    """One implementation's call, timed as bench.common.cuda_ms times it, with its error against cuBLAS."""
    from minillm.bench.common import cuda_ms

    err = (fn(x, w).float() - ref.float()).abs().max().item()
    ms, graphed = cuda_ms(lambda: fn(x, w))
    return {
        "us": ms * 1e3,
        "tb_s": w.numel() * 2 / (ms * 1e-3) / 1e12,
        "max_abs_err": err,
        "graph_replay": graphed,  # False: timed by direct calls, launch cost included
    }


def main() -> int:
    from minillm.bench.ch01 import read_bandwidth
    from minillm.bench.report import environment
    from minillm.model.gemv import MAX_M, TILE_ELEMENTS, gemv

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="qwen3-0.6b", help="a named dummy config")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8, 64])
    p.add_argument("--json", help="write the rows and the machine to this file")
    p.add_argument(
        "--sweep",
        action="store_true",
        help="also time the Triton GEMV at every tile (minutes per batch size: one batch size a call)",
    )
    args = p.parse_args()
    if not torch.cuda.is_available():
        print("probe_linear: needs a CUDA device")
        return 1
    torch.manual_seed(0)
    read_bw = read_bandwidth("cuda")  # bytes per second
    env = environment("cuda")
    rows = []
    for batch in args.batches:
        for name, k, n, calls in shapes(args.model):
            w = torch.randn(n, k, device="cuda", dtype=torch.bfloat16) * 0.02
            x = torch.randn(batch, k, device="cuda", dtype=torch.bfloat16)
            ref = F.linear(x, w)
            row = {"batch": batch, "layer": name, "in": k, "out": n, "calls_per_step": calls}
            # a fresh compile per shape: one compiled F.linear would pass Dynamo's recompile limit (8) and
            # fall back to eager, unseen, from the ninth shape on
            torch._dynamo.reset()
            tuned = torch.compile(
                lambda x, w: F.linear(x, w), mode="max-autotune-no-cudagraphs", dynamic=False
            )
            impls = {"cublas": F.linear, "max-autotune": tuned}
            if batch <= MAX_M:
                impls["triton gemv"] = gemv  # gemv_config's tile
            for impl, fn in impls.items():
                row[impl] = time_call(fn, x, w, ref)
            if batch <= MAX_M and args.sweep:  # every tile: the best one, and whether the default is it
                best = None
                tiles = itertools.product((1, 2, 4, 8, 16), (32, 64, 128, 256, 512, 1024, 2048, 4096), (4, 8))
                block_m = triton.next_power_of_2(batch)
                for block_n, block_k, warps in tiles:
                    if block_m * block_n * block_k > 4 * TILE_ELEMENTS or block_k > triton.next_power_of_2(k):
                        continue  # products past four times the default budget, or a step longer than a row
                    fn = functools.partial(gemv, block_n=block_n, block_k=block_k, num_warps=warps)
                    timed = {**time_call(fn, x, w, ref), "tile": [block_n, block_k, warps]}
                    best = timed if best is None or timed["us"] < best["us"] else best
                if best is not None:
                    row["triton gemv, best tile"] = best
            rows.append(row)
            print(json.dumps(row), flush=True)
            if args.json:  # rewritten after every row: a run cut short keeps what it measured
                with open(args.json, "w") as f:
                    json.dump({"env": env, "read_tb_s": read_bw / 1e12, "rows": rows}, f, indent=1)
    names = ("cublas", "max-autotune", "triton gemv", "triton gemv, best tile")
    impls = [i for i in names if any(i in r for r in rows)]
    print(f"\nread stream {read_bw / 1e12:.2f} TB/s; per call us (weight TB/s)")
    print("| batch | layer | in x out | " + " | ".join(impls) + " |")
    print("|---|---|---|" + "---|" * len(impls))
    for r in rows:
        cells = [f"{r[i]['us']:.1f} ({r[i]['tb_s']:.2f})" if i in r else "-" for i in impls]
        print(f"| {r['batch']} | {r['layer']} | {r['in']} x {r['out']} | " + " | ".join(cells) + " |")
    for batch in args.batches:
        mine = [r for r in rows if r["batch"] == batch]
        weights = sum(r["in"] * r["out"] * 2 * r["calls_per_step"] for r in mine)
        totals = ", ".join(
            f"{sum(r[i]['us'] * r['calls_per_step'] for r in mine) / 1e3:.3f} ms {i}"
            for i in impls
            if all(i in r for r in mine)
        )
        print(
            f"batch {batch}: linears per step {totals}; {weights / 1e9:.2f} GB of weights,"
            f" {weights / read_bw * 1e3:.3f} ms at the read stream"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
