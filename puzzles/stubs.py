"""The stubs of puzzles/kernels.py, and putting one back without touching the others.

    python -m puzzles reset 7          # softmax_kernel is the stub again; your other kernels stay
    python -m puzzles reset all        # every kernel back to its stub

A stub is built from its puzzle: the reference kernel's signature (the one the launch wrapper calls),
the puzzle's summary as a comment, and a `raise NotImplementedError` that names the puzzle and its size.
tests/test_puzzles.py checks that every stub in puzzles/kernels.py is exactly `stub(puzzle)`.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path

from puzzles import solutions
from puzzles.puzzle import Puzzle

KERNELS = Path(__file__).with_name("kernels.py")


def stub(puzzle: Puzzle) -> str:
    """The stub's source, as puzzles/kernels.py ships it."""
    source = inspect.getsource(getattr(solutions, puzzle.kernel).fn).splitlines()
    start = next(i for i, line in enumerate(source) if line.startswith("def "))
    end = next(i for i in range(start, len(source)) if source[i].rstrip().endswith(":"))
    signature = "\n".join(source[start : end + 1])  # line breaks as the reference writes them
    return (
        f"@triton.jit\n{signature}\n"
        f"    # Puzzle {puzzle.number}. {puzzle.summary}\n"
        f'    raise NotImplementedError("Puzzle {puzzle.number} ({puzzle.name}) is not written yet: '
        f'roughly {puzzle.lines} lines.")\n'
    )


def find(text: str, kernel: str) -> tuple[int, int] | None:
    """Lines [start, end) of the top-level function `kernel`, decorators included, or None.

    Found by indentation alone, so a file with a syntax error elsewhere still resets. With two
    definitions, the last one: it is the one Python keeps.
    """
    lines = text.splitlines(keepends=True)
    defs = [i for i, line in enumerate(lines) if re.match(rf"def {kernel}\s*\(", line)]
    if not defs:
        return None
    start = end = defs[-1]
    while start > 0 and lines[start - 1].startswith("@"):
        start -= 1
    end += 1
    while end < len(lines) and (not lines[end].strip() or lines[end][0] in " \t"):
        end += 1  # the body: indented or blank lines
    while not lines[end - 1].strip():
        end -= 1  # the blank lines before the next definition stay where they are
    return start, end


def reset(puzzle: Puzzle, path: Path = KERNELS) -> str:
    """Put the puzzle's stub back in the file at `path`, everything else unchanged; says what it did."""
    text = path.read_text()
    lines = text.splitlines(keepends=True)
    new = stub(puzzle)
    head = f"Puzzle {puzzle.number} ({puzzle.name}):"
    span = find(text, puzzle.kernel)
    if span is None:
        path.write_text(text.rstrip("\n") + "\n\n\n" + new)
        return f"{head} {path} had no {puzzle.kernel}; its stub is added at the end"
    start, end = span
    if "".join(lines[start:end]) == new:
        return f"{head} {puzzle.kernel} in {path} is already the stub"
    path.write_text("".join(lines[:start]) + new + "".join(lines[end:]))
    return f"{head} {puzzle.kernel} in {path} is the stub again"
