"""The access picture: which program instance read and wrote each element, and which outputs are wrong.

    result = check(puzzle, kernel); result.picture("access.png")        # or, from the shell:
    python -m puzzles check 3 --picture access.png [--program 1,2]

One row of panels per tensor: its reads, its writes and, for outputs, the verdict per element.
A tensor is drawn as a 2-D grid: 2-D tensors as they are, 1-D ones wrapped every 32 elements, and
higher ones with their last two dimensions across (a KV pool's row is one slot: all heads of a token).
Long vectors wrap wider, so that a guard row stays visible.
Colour = program id; dark grey = touched by several programs; white = untouched.
Guard rows above or below the tensor appear only when a program touched them: red cells there are
out-of-bounds accesses. Needs the interpreter's trace (puzzles/trace.py), so CPU / TRITON_INTERPRET=1.
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.patches import Patch

from puzzles.guards import bits, poison

WHITE, GREY, RED, PINK = (1, 1, 1, 1), (0.22, 0.22, 0.28, 1), (0.85, 0.05, 0.05, 1), (1, 0.88, 0.88, 1)
OTHERS = (0.85, 0.85, 0.85, 1)  # accesses of the programs not in focus
PALETTE = [c for i, c in enumerate(plt.get_cmap("tab20").colors) if i not in (6, 7, 14, 15)]  # no reds, greys
MAX_GUARD_ROWS = 4


def layout(shape) -> tuple[int, int]:
    """(rows, columns) a tensor of this shape is drawn as."""
    numel = math.prod(shape)
    if len(shape) == 1:
        cols = 32
        while numel > 24 * cols:  # keep long vectors to about two dozen rows, so one row stays visible
            cols *= 2
        cols = min(numel, cols)
    else:
        cols = shape[-1] if len(shape) == 2 else shape[-2] * shape[-1]
    return math.ceil(numel / cols), cols


def colours(pids: np.ndarray, num_programs: int) -> np.ndarray:
    """RGBA per program id: a qualitative palette for small grids, a colour ramp for large ones."""
    if num_programs <= len(PALETTE):
        return np.array([(*PALETTE[p], 1.0) for p in pids]).reshape(-1, 4)
    return plt.get_cmap("viridis")(pids / max(1, num_programs - 1)).reshape(-1, 4)  # no red: red is for errors


def access_image(trace, kind, name, shape, program):
    """RGBA image of one kind of access to one tensor, with guard rows where they were touched."""
    numel = math.prod(shape)
    rows, cols = layout(shape)
    first, many = trace.owners(kind, name, numel)
    pids, offs = trace.guard[(kind, name)].arrays() if (kind, name) in trace.guard else ([], np.zeros(0, int))
    offs = offs[np.asarray(pids) == program] if program is not None else offs
    above = min(MAX_GUARD_ROWS, math.ceil(-offs.min() / cols)) if (offs < 0).any() else 0
    past = offs.max() + 1 - rows * cols if offs.size else 0
    below = min(MAX_GUARD_ROWS, math.ceil(past / cols)) if past > 0 else 0
    cells = np.tile(PINK, ((above + rows + below) * cols, 1))  # guards, and the tail of a wrapped last row
    inner = cells[above * cols: above * cols + numel]
    inner[:] = WHITE
    if program is None:
        inner[many == 1] = colours(first[many == 1], trace.num_programs())
        inner[many > 1] = GREY
    else:
        pids_in, where_in = trace.inside[(kind, name)].arrays() if (kind, name) in trace.inside else ([], [])
        inner[many > 0] = OTHERS
        inner[np.asarray(where_in)[np.asarray(pids_in) == program]] = RED
    shown = offs + above * cols
    shown = shown[(shown >= 0) & (shown < len(cells))]
    cells[shown] = RED
    return cells.reshape(-1, cols, 4), above, len(np.unique(offs)), shown


def outline(ax, flat_cells, cols, start):
    """A thick box around the out-of-bounds cells, which may be a sliver of a tall picture."""
    from matplotlib.patches import Rectangle

    flat_cells = np.asarray(flat_cells)
    rows, columns = np.divmod(flat_cells, cols)
    for part in (flat_cells < start, flat_cells >= start):  # the guard before the tensor, the one after
        if part.any():
            r, c = rows[part], columns[part]
            ax.add_patch(Rectangle((c.min() - 0.5, r.min() - 0.5), c.max() - c.min() + 1, r.max() - r.min() + 1,
                                   fill=False, edgecolor=RED, linewidth=2.5))


def verdict_image(got, want, atol, rtol, fresh):
    """Green: right; red: wrong; black: never written (still poison)."""
    rows, cols = layout(tuple(got.shape))
    g, w = got.flatten().cpu(), want.flatten().cpu()
    ok = torch.isclose(g.double(), w.double(), atol=atol, rtol=rtol, equal_nan=True).numpy()
    unwritten = (bits(g) == bits(torch.full_like(g, poison(g.dtype)))).numpy() if fresh else np.zeros_like(ok)
    cells = np.ones((rows * cols, 4)) * 0.96
    cells[: g.numel()] = np.where(ok[:, None], (0.3, 0.75, 0.35, 1), RED)
    cells[: g.numel()][unwritten] = (0, 0, 0, 1)
    return cells.reshape(rows, cols, 4)


def draw(result, path=None, program=None):
    """Draw result's access picture; save it to `path` if given. `program`: (x, y, z) or a linear id."""
    from puzzles.harness import TOLERANCE

    trace = result.trace
    if trace is None:
        raise RuntimeError("the access picture needs the interpreter's trace: run on a CPU (TRITON_INTERPRET=1)")
    if isinstance(program, (tuple, list)):
        x, y, z = (list(program) + [0, 0])[:3]
        program = x + trace.grid[0] * (y + trace.grid[1] * z)
    tensors = {**result.inputs, **result.outputs}
    touched = [n for n in tensors if any((k, n) in trace.inside or (k, n) in trace.guard for k in ("read", "write"))]
    fig, axes = plt.subplots(len(touched), 3, figsize=(13, 1.2 + 1.9 * len(touched)), squeeze=False)
    for row, name in zip(axes, touched):
        shape = tuple(tensors[name].shape)
        for ax, kind in zip(row[:2], ("read", "write")):
            ax.set_xticks([]), ax.set_yticks([])
            if (kind, name) not in trace.inside and (kind, name) not in trace.guard:
                ax.axis("off")
                ax.text(0.5, 0.5, f"{name}: no {kind}s", ha="center", va="center", color="0.6", fontsize=9)
                continue
            image, above, oob, cells = access_image(trace, kind, name, shape, program)
            ax.imshow(image, aspect="auto", interpolation="nearest")
            outline(ax, cells, image.shape[1], above * image.shape[1])
            if above:
                ax.axhline(above - 0.5, color="k", lw=0.8)
            if image.shape[0] - above > layout(shape)[0]:
                ax.axhline(above + layout(shape)[0] - 0.5, color="k", lw=0.8)
            title = f"{name} {shape}: {kind}s" + (f"  ({oob} elements out of bounds)" if oob else "")
            ax.set_title(title, fontsize=9, color="firebrick" if oob else "black")
        row[2].axis("off")
        if name in result.expected:
            want = result.expected[name]
            atol, rtol = result.puzzle.tolerance.get(name, TOLERANCE.get(want.dtype, (0, 0)))
            fresh = name not in result.inputs
            row[2].imshow(verdict_image(tensors[name], want, atol, rtol, fresh), aspect="auto",
                          interpolation="nearest")
            row[2].set_title(f"{name}: green right, red wrong, black not written", fontsize=9)
    n = trace.num_programs()
    if program is not None:
        handles = [Patch(color=RED, label=f"program {trace.pid(program)}"), Patch(color=OTHERS, label="other programs")]
    else:
        ends = range(n) if n <= len(PALETTE) else (0, n - 1)
        handles = [Patch(color=colours(np.array([p]), n)[0], label=str(trace.pid(p))) for p in ends]
        handles.append(Patch(color=GREY, label="several programs"))
    handles.append(Patch(color=PINK, label="guard"))
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 12), fontsize=8, frameon=False)
    status = "passed" if result.passed else ", ".join(dict.fromkeys(result.kinds))
    fig.suptitle(f"Puzzle {result.puzzle.number} ({result.puzzle.name}), grid {trace.grid}: {status}", fontsize=11)
    fig.tight_layout(rect=(0, 0.06, 1, 0.97))
    if path is not None:
        fig.savefig(path, dpi=110)
    return fig
