"""Triton puzzles: graded kernel exercises that lead to the kernels of minillm, solvable on a CPU.

    python -m puzzles list            # the puzzles, in order, with the chapter each leads to
    python -m puzzles show 1          # statement, torch spec and hints of puzzle 1
    python -m puzzles check 1         # run your kernel from puzzles/kernels.py through the checker
    python -m puzzles reset 1         # start puzzle 1 over: its stub back, your other kernels kept

Without a CUDA GPU the kernels run in Triton's interpreter (TRITON_INTERPRET=1, set here before any
kernel is defined); on a GPU the same code is compiled. The checker is in puzzles/harness.py.
"""

import os

import torch

if not torch.cuda.is_available():  # must happen before any @triton.jit runs: it decides interpret vs compile
    os.environ.setdefault("TRITON_INTERPRET", "1")

from puzzles.harness import Result, check  # noqa: E402
from puzzles.problems import PUZZLES  # noqa: E402
from puzzles.puzzle import Puzzle  # noqa: E402


def get(key) -> Puzzle:
    """A puzzle by number (1, "1") or by name ("add_masked")."""
    for p in PUZZLES:
        if str(key) in (str(p.number), p.name):
            return p
    raise KeyError(
        f"no puzzle {key!r}: puzzles are numbered 1-{len(PUZZLES)} or named; `python -m puzzles list` shows them"
    )


__all__ = ["PUZZLES", "Puzzle", "Result", "check", "get"]
