"""Benchmarks: workloads, a runner, metrics as `vllm bench serve` names them, JSON/markdown/PNG output.

Each landed chapter registers its benchmark in CHAPTERS; `minillm bench --all --quick` runs them all.
"""

from __future__ import annotations

import importlib

# chapter -> module with run(model, *, device, load_format, quick, out, dtype, progress)
CHAPTERS = {
    0: "minillm.bench.ch00",
    1: "minillm.bench.ch01",
    2: "minillm.bench.ch02",
    3: "minillm.bench.ch03",
    4: "minillm.bench.ch04",
    5: "minillm.bench.ch05",
    6: "minillm.bench.ch06",
    7: "minillm.bench.ch07",  # Triton kernels (timed on CUDA; the interpreter checks them on a CPU)
    8: "minillm.bench.ch08",  # serving: starts `minillm serve` per stage and sweeps request rates
    9: "minillm.bench.ch09",  # programs (minillm.lang) with and without the radix cache
}


def run_chapter(chapter: int, **kwargs) -> dict:
    if chapter not in CHAPTERS:
        raise ValueError(f"chapter={chapter}: no benchmark; chapters with one: {sorted(CHAPTERS)}")
    return importlib.import_module(CHAPTERS[chapter]).run(**kwargs)
