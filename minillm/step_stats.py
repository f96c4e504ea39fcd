"""Step timing in one place: what every Engine.step() records for plots and benchmarks.

A StepStats per step: the batch's shape, the KV memory as that step computed it, the seconds of each
phase of STEP_PHASES and the host time spent on constrained decoding. Engine.step_stats keeps them in a
bounded ring; chapters 2-7 plot them and the benchmarks sum them.

Checked by: tests/test_lifecycle.py, pytest -m ch2.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

# "output": with async_output, the previous step's texts, done while the device computes this step
STEP_PHASES = ("schedule", "prepare", "forward", "output", "sample", "update")


@dataclass
class StepStats:
    time: float
    num_seqs: int  # sequences in this step's batch
    num_tokens: int  # tokens fed this step
    num_waiting: int
    num_holding_kv: int  # sequences that own KV memory (static batching: finished members too)
    kv_used: int  # KV slots holding a token's K/V
    kv_reserved: int  # KV slots allocated to sequences (used + waste inside their rows/blocks)
    kv_total: int  # KV slots in the pool
    constraint_s: float = 0.0  # host time spent on constrained decoding: masks, guide states, jumps
    phase_s: dict[str, float] = field(default_factory=dict)  # seconds in each of STEP_PHASES


def measure_step(batch, scheduler, kv, now: float) -> StepStats:
    """The step's batch shape and KV use; called after Scheduler.update, before anyone finishes."""
    holding = scheduler.seqs_holding_kv()
    used, reserved, total = kv.usage(holding) if kv is not None else (0, 0, 0)
    return StepStats(
        now,
        len(batch.seqs),
        batch.num_tokens,
        len(scheduler.waiting),
        len(holding),
        used,
        reserved,
        total,
    )


class PhaseTimer:
    """Seconds between laps; with a CUDA device, each lap first waits for the GPU (benchmarks only)."""

    def __init__(self, sync_device: str | None):
        self.sync = sync_device is not None and sync_device.startswith("cuda")
        self.phases: dict[str, float] = {}
        self.last = time.perf_counter()

    def lap(self, name: str) -> None:
        if self.sync:
            torch.cuda.synchronize()
        now = time.perf_counter()
        self.phases[name] = self.phases.get(name, 0.0) + now - self.last
        self.last = now
