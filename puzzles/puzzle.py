"""What one puzzle is: a statement, a torch spec, an input maker and a launch wrapper.

Each puzzle lives in its own module under puzzles/problems/ and builds one `Puzzle`. The learner
writes only the Triton kernel; the launch wrapper fixes the grid, the block sizes and the argument
order, so a kernel that passes here runs unchanged on a GPU. `python -m puzzles show N` prints one.
"""

from __future__ import annotations

import inspect
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Puzzle:
    number: int
    name: str  # short slug: `python -m puzzles check add_masked` works as well as `check 2`
    title: str
    chapter: str  # the engine chapter the kernel leads to, e.g. "ch2 PagedAttention"
    kernel: str  # the name of the @triton.jit function the learner writes in puzzles/kernels.py
    statement: str  # formula, shapes, and what the engine uses it for
    spec: Callable[..., dict]  # torch reference: inputs -> {output name: tensor}
    make_inputs: Callable[..., dict]  # (torch.Generator, **shape) -> {name: CPU tensor or int}
    launch: Callable[..., None]  # (kernel, **inputs, **outputs) -> None: fixed grid and block sizes
    shapes: dict[str, dict]  # "check": small enough for the interpreter; "bench": a GPU-sized run
    lines: int  # roughly how many lines the reference kernel body takes
    summary: str  # the task in one line: the comment of its stub in puzzles/kernels.py (puzzles/stubs.py)
    hints: tuple[str, ...] = ()
    tolerance: dict = field(default_factory=dict)  # {output name: (atol, rtol)} overriding the dtype default
    max_reads: dict = field(default_factory=dict)  # {input name: n}: each element may be loaded at most n times
    diagnose: Callable[..., list[str]] | None = None  # extra, puzzle-specific advice on wrong values
    cost: Callable[..., dict] | None = None  # ideal {"bytes", "flops"} of a launch, for the GPU table

    def describe(self) -> str:
        """The statement, the spec's source and the hints, as `python -m puzzles show N` prints them."""
        spec_src = inspect.getsource(self.spec).rstrip()
        parts = [f"Puzzle {self.number}: {self.title}  [{self.chapter}]", "", textwrap.dedent(self.statement).strip("\n"), "",
                 "Spec (torch):", spec_src, "",
                 f"Write `{self.kernel}` in puzzles/kernels.py (roughly {self.lines} lines).",
                 f"Check it with: python -m puzzles check {self.number}"]
        if self.hints:
            parts += ["", "Hints:"] + [f"  - {h}" for h in self.hints]
        return "\n".join(parts)
