"""Run every reference solution through the checker and tabulate correctness and time.

    python -m puzzles.report              # CPU: interpreter seconds per puzzle at the check sizes
    python -m puzzles.report --out DIR    # CUDA GPU: correctness at both sizes, do_bench time at the
                                          # bench size, achieved GB/s and TFLOP/s; plus what the
                                          # guard-only checker says about each planted bug there

Writes DIR/report.md and DIR/report.json when --out is given. The tables in puzzles/README.md come
from this script.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from puzzles import PUZZLES, check, get, solutions
from puzzles.interpreter import interpreting
from puzzles.planted import PLANTED

HBM_TBPS = 2.94  # H100 80GB HBM3, a torch device-to-device copy, measured 2026-11-24
DENSE_TFLOPS = 771.0  # the same H100, a torch bf16 8192^3 matmul; fp16 dense runs at the same rate


def shape_text(shape: dict) -> str:
    """dict(seqlens=(2048,) * 8, H=32) -> 'seqlens=8x2048, H=32'."""
    parts = []
    for k, v in shape.items():
        if isinstance(v, tuple):
            v = f"{len(v)}x{v[0]}" if len(set(v)) == 1 else "/".join(map(str, v))
        parts.append(f"{k}={v}")
    return ", ".join(parts)


def environment() -> dict:
    import triton

    device = torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor() or "cpu"
    return {"date": datetime.date.today().isoformat(), "device": device, "torch": torch.__version__,
            "triton": triton.__version__, "python": platform.python_version(),
            "mode": "interpreter" if interpreting() else "compiled"}


def cpu_table(repeats: int = 3) -> tuple[list[dict], str]:
    rows = []
    for p in PUZZLES:
        kernel = getattr(solutions, p.kernel)
        check(p, kernel, seed=0)  # first call pays the interpreter's one-time rewrite of the kernel
        launch, total = [], []
        for seed in range(repeats):
            start = time.perf_counter()
            r = check(p, kernel, seed=seed)
            total.append(time.perf_counter() - start)
            launch.append(r.seconds)
            assert r.passed, r.report()
        rows.append({"number": p.number, "name": p.name, "shape": shape_text(p.shapes["check"]),
                     "launch_s": statistics.median(launch), "check_s": statistics.median(total)})
    lines = ["| # | puzzle | check size | kernel launch (s) | whole check (s) |", "|---|---|---|---:|---:|"]
    lines += [f"| {r['number']} | {r['name']} | {r['shape']} | {r['launch_s']:.2f} | {r['check_s']:.2f} |"
              for r in rows]
    lines.append(f"| | all 16 | | {sum(r['launch_s'] for r in rows):.1f} | {sum(r['check_s'] for r in rows):.1f} |")
    return rows, "\n".join(lines)


def traffic(p, tensors: dict) -> tuple[float, float]:
    """Ideal bytes (every input read once, every output written once) and flops of one launch."""
    cost = p.cost(**tensors) if p.cost is not None else {}
    nbytes = cost.get("bytes")
    if nbytes is None:
        nbytes = sum(t.nbytes for k, t in tensors.items() if torch.is_tensor(t))
    return float(nbytes), float(cost.get("flops", 0))


def gpu_table() -> tuple[list[dict], str]:
    import triton.testing

    rows = []
    for p in PUZZLES:
        try:
            rows.append(gpu_row(p, triton.testing.do_bench))
        except Exception as exc:  # one broken puzzle must not cost the rest of the table
            print(f"Puzzle {p.number} ({p.name}): {type(exc).__name__}: {exc}", flush=True)
            rows.append({"number": p.number, "name": p.name, "shape": shape_text(p.shapes["bench"]),
                         "check_passed": False, "bench_passed": False, "ms": float("nan"), "gbps": float("nan"),
                         "tflops": None, "problems": [repr(exc)]})
        torch.cuda.empty_cache()
    lines = ["| # | puzzle | bench size | correct (check / bench size) | median time | GB/s (% of 2.94 TB/s) "
             "| TFLOP/s (% of 771) |", "|---|---|---|---|---:|---:|---:|"]
    for r in rows:
        ok = " / ".join("yes" if v else "NO" for v in (r["check_passed"], r["bench_passed"]))
        t = f"{r['ms'] * 1e3:.1f} us" if r["ms"] < 1 else f"{r['ms']:.3f} ms"
        gb = f"{r['gbps']:.0f} ({100 * r['gbps'] / (HBM_TBPS * 1e3):.0f}%)"
        tf = f"{r['tflops']:.1f} ({100 * r['tflops'] / DENSE_TFLOPS:.0f}%)" if r["tflops"] else "-"
        lines.append(f"| {r['number']} | {r['name']} | {r['shape']} | {ok} | {t} | {gb} | {tf} |")
    return rows, "\n".join(lines)


def gpu_row(p, do_bench) -> dict:
    """Check at both sizes on the GPU, then time the launch at the bench size."""
    kernel = getattr(solutions, p.kernel)
    small = check(p, kernel, seed=0, shape="check")
    big = check(p, kernel, seed=0, shape="bench")
    raw = p.make_inputs(torch.Generator().manual_seed(0), **p.shapes["bench"])
    raw = {k: v.cuda() if torch.is_tensor(v) else v for k, v in raw.items()}
    tensors = {**raw, **{k: torch.empty_like(v) for k, v in big.expected.items() if k not in raw}}
    big_passed, big_kinds = big.passed, big.kinds
    del big  # its guarded copies and expected outputs hold GPU memory
    ms = do_bench(lambda: p.launch(kernel, **tensors), return_mode="median")
    nbytes, flops = traffic(p, tensors)
    row = {"number": p.number, "name": p.name, "shape": shape_text(p.shapes["bench"]),
           "check_passed": small.passed, "bench_passed": big_passed, "ms": ms,
           "gbps": nbytes / ms / 1e6, "tflops": flops / ms / 1e9 if flops else None,
           "problems": small.kinds + big_kinds}
    print(small.report(), f"bench size: {'PASSED' if big_passed else big_kinds}, {ms:.4f} ms", sep="\n", flush=True)
    return row


def planted_table() -> tuple[list[dict], str]:
    """What each planted bug looks like to the checker in this mode (on a GPU: guards and poison only)."""
    rows = []
    for bug in PLANTED:
        r = check(get(bug.puzzle), bug.kernel, seed=0)
        rows.append({"bug": bug.name, "puzzle": bug.puzzle, "expected": list(bug.kinds), "got": r.kinds})
    lines = ["| planted bug | puzzle | interpreter diagnosis | this run's diagnosis |", "|---|---|---|---|"]
    lines += [f"| {r['bug']} | {r['puzzle']} | {', '.join(r['expected'])} | {', '.join(dict.fromkeys(r['got'])) or 'passed'} |"
              for r in rows]
    return rows, "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m puzzles.report", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="write report.md and report.json here")
    args = parser.parse_args(argv)
    env = environment()
    header = ", ".join(f"{k} {v}" for k, v in env.items())
    if torch.cuda.is_available() and not interpreting():
        rows, table = gpu_table()
        planted_rows, planted = planted_table()
        text = f"{header}\n\n{table}\n\n{planted}\n"
        data = {"environment": env, "puzzles": rows, "planted": planted_rows}
    else:
        rows, table = cpu_table()
        text = f"{header}\n\n{table}\n"
        data = {"environment": env, "puzzles": rows}
    print(text)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "report.md").write_text(text)
        (args.out / "report.json").write_text(json.dumps(data, indent=1, default=str))


if __name__ == "__main__":
    main()
