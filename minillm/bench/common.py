"""What every chapter's benchmark shares (chapters 0-5): its options, the machine it runs on, and its
warm-up.

A chapter's run(model, **options) opens `with Bench(chapter, model, **options) as b:` and measures.
Bench holds the command's options (device, dtype, load format, scale, output folder), builds the LLM
with them, and on entering picks torch's CPU threads and records the machine's load (os.getloadavg,
cores, threads) in the result's env, warning when the load makes the timings meaningless. b.publish
writes chNN.json and chNN.md (minillm/bench/report.py). warm_up keeps first-call costs out of the
numbers.

Run: minillm bench --chapter N [--quick]; checked by pytest tests/test_bench.py.
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch

from minillm.bench import report
from minillm.request import SamplingParams

L2_FLUSH_BYTES = 1 << 28  # written before each timed call: more than any GPU's L2 (the H200's is 50 MB)


def cuda_ms(fn, reps: int = 20) -> tuple[float, bool]:
    """Median device milliseconds of one fn() call, and whether it was timed as a CUDA graph.

    After warm-up (autotuning and compilation happen there), fn is captured once as a CUDA graph and
    the graph replayed: the replay launches every kernel at once, so Python's launch cost (tens of
    microseconds for a Triton kernel) stays out of a kernel's time. Before each replay a write of
    L2_FLUSH_BYTES evicts the L2, so every call reads its inputs from HBM, as a decode step reads each
    layer's K/V, and keeps the GPU busy while the host queues the call. Events around the call alone
    time it. A callable that cannot be captured is timed by direct calls the same way."""
    side = torch.cuda.Stream()  # warm-up on a side stream, as capture wants (PyTorch's CUDA-graph notes)
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    torch.cuda.synchronize()
    run, graphed = fn, False
    try:
        # the capture stream entered here, so that a failed capture still leaves the caller's stream current
        with torch.cuda.stream(side):
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, stream=side):
                fn()
        run, graphed = graph.replay, True
    except RuntimeError:
        torch.cuda.synchronize()
    flush = torch.empty(L2_FLUSH_BYTES, dtype=torch.int8, device="cuda")
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    for start, end in zip(starts, ends):
        flush.zero_()
        start.record()
        run()
        end.record()
    torch.cuda.synchronize()
    times = sorted(s.elapsed_time(e) for s, e in zip(starts, ends))
    return times[len(times) // 2], graphed


def pick_cpu_threads(device: str) -> int:
    """Set torch's intra-op threads for a benchmark and return them: 1 on the CPU, unless
    OMP_NUM_THREADS says otherwise (then torch already follows it); other devices are left alone.

    Why one: the CPU benchmarks run a small model whose every op is short, and with one thread per core
    each op ends at a barrier that waits for the slowest thread. Any other process on the machine
    deschedules one of them and every op pays for it: on a loaded 2-core machine chapter 1's quick run
    took 3 min at a TPOT of 75.9 ms with torch's default, against 19 s and 7.3 ms with one thread. One
    thread is also the same setting on every machine, so numbers compare. To measure large matrices on
    an idle many-core machine, set OMP_NUM_THREADS."""
    if device.startswith("cpu") and "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(1)
    return torch.get_num_threads()


def machine_load() -> dict:
    """The load averages (runnable processes over 1, 5 and 15 minutes), the cores this process may use,
    and torch's threads: timings only mean something when the load stays below the cores."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    one, five, fifteen = os.getloadavg() if hasattr(os, "getloadavg") else (math.nan,) * 3
    return {
        "loadavg_1m": one,
        "loadavg_5m": five,
        "loadavg_15m": fifteen,
        "cpu_count": cores,
        "torch_threads": torch.get_num_threads(),
    }


def load_warning(load: dict, when: str) -> str | None:
    """A sentence when the 1-minute load average exceeds the cores (other work then takes CPU time from
    every step, and the timings measure the machine more than minillm); None otherwise."""
    if not load["loadavg_1m"] > load["cpu_count"]:
        return None
    return (
        f"warning: load average {load['loadavg_1m']:.1f} over the last minute on {load['cpu_count']} cores"
        f" at the {when} of the run: other processes compete for the CPU, so timings are not meaningful"
    )


def warm_up(llm, num_prompts: int, prompt_len: int) -> None:
    """First-call costs stay out of the numbers. Warm-up prompts use ids below 16, which workload prompts
    never do (workloads._random_ids), so nothing they leave in a cache can be hit."""
    prompt = [4 + i % 12 for i in range(prompt_len)]
    llm.generate(
        prompt_token_ids=[prompt] * num_prompts,
        sampling_params=SamplingParams(max_tokens=2, temperature=0.0, ignore_eos=True),
    )


@dataclass
class Bench:
    """One chapter's benchmark run: the options of `minillm bench` and the machine it runs on. Use it
    as a context manager: entering picks the CPU threads and records the load; leaving restores the
    threads (tests run benchmarks inside one process)."""

    chapter: int
    model: str
    device: str = "cpu"
    load_format: str = "auto"  # "dummy": random weights of a named config's shape
    quick: bool = False  # the "quick" scale of the chapter's SCALES, else "full"
    out: str = "results"  # folder for chNN.json, chNN.md and chNN.png
    dtype: str | None = None  # None: the device's default
    progress: bool = True  # tqdm bars
    env: dict = field(default_factory=dict, init=False)  # report.environment + the load, for the JSON
    warnings: list[str] = field(default_factory=list, init=False)
    _saved_threads: int = field(default=0, init=False, repr=False)

    def __enter__(self) -> Bench:
        self._saved_threads = torch.get_num_threads()
        pick_cpu_threads(self.device)
        self.env = report.environment(self.device)
        self.env["load"] = {"start": self._check_load("start")}
        return self

    def __exit__(self, *exc) -> None:
        torch.set_num_threads(self._saved_threads)

    def _check_load(self, when: str) -> dict:
        load = machine_load()
        warning = load_warning(load, when)
        if warning:
            print(warning, file=sys.stderr)
            self.warnings.append(warning)
        return load

    def scale(self, scales: dict) -> dict:
        return scales["quick" if self.quick else "full"]

    def llm(self, stage: str, **engine_options):
        """An LLM of this run's model, device, dtype and load format; engine_options: EngineConfig fields."""
        from minillm import LLM

        return LLM(
            self.model,
            stage=stage,
            device=self.device,
            dtype=self.dtype,
            load_format=self.load_format,
            **engine_options,
        )

    def title(self, dtype) -> str:
        return report.title(self.chapter, self.env, dtype, self.model, self.load_format)

    @property
    def png(self) -> Path:
        """Where the chapter's plot goes, beside chNN.json."""
        return Path(self.out) / f"ch{self.chapter:02d}.png"

    def publish(self, payload: dict, header: str, table: str) -> dict:
        """Record the load at the end, then write chNN.json (env, model, load format and the payload)
        and chNN.md (header, any load warning, table); returns the JSON record."""
        self.env["load"]["end"] = self._check_load("end")
        record = {"env": self.env, "model": self.model, "load_format": self.load_format, **payload}
        report.publish(self.out, self.chapter, record, "\n".join([header, *self.warnings]), table)
        return record
