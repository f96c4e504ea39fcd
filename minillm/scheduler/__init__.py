"""Schedulers decide, each step, which sequences run and how many new tokens each feeds."""

from __future__ import annotations

from dataclasses import dataclass

from minillm.request import Sequence


@dataclass
class ScheduledBatch:
    seqs: list[Sequence]
    num_new_tokens: list[int]  # per sequence: tokens fed this step, from seq.num_computed_tokens on

    @property
    def num_tokens(self) -> int:
        return sum(self.num_new_tokens)
