"""Guarded buffers: every tensor a kernel sees sits inside a larger buffer filled with a sentinel.

    [ guard (sentinel) | the tensor the kernel gets | guard (sentinel) ]

After the launch a changed guard is an out-of-bounds write; a sentinel (NaN for floats) showing up
in an output is an out-of-bounds read that leaked into the result. Fresh outputs start "poisoned"
(a value no correct kernel writes), guards included, so an element that still holds it was never
written, and a NaN stored past an output's end still changes its guard. This works
the same in the interpreter and on a GPU; puzzles/trace.py adds who-touched-what in the interpreter.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

INT_SENTINEL = -999_999  # guard value for integer tensors: as an index it points far away
FLOAT_POISON = 31337.0  # fresh outputs start here; bit-exact equality means "never written"
INT_POISON = -31337
ALIGN = 64  # guard lengths are multiples of 64 elements, so the tensor keeps 16-byte alignment


def sentinel(dtype: torch.dtype):
    return float("nan") if dtype.is_floating_point else INT_SENTINEL


def poison(dtype: torch.dtype):
    return FLOAT_POISON if dtype.is_floating_point else INT_POISON


def bits(t: torch.Tensor) -> torch.Tensor:
    """The raw bits of `t` as integers, so NaN == NaN and equality is exact."""
    if not t.dtype.is_floating_point:
        return t
    view = {2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()]
    return t.view(view)


@dataclass
class Guarded:
    """One tensor inside its guarded buffer."""

    name: str
    buffer: torch.Tensor  # (guard + numel + guard,) flat, same dtype
    tensor: torch.Tensor  # the interior view handed to the kernel, contiguous, original shape
    guard: int  # elements in each guard region
    guard_fill: float | int  # what the guards hold

    @property
    def before(self) -> torch.Tensor:
        return self.buffer[: self.guard]

    @property
    def after(self) -> torch.Tensor:
        return self.buffer[self.guard + self.tensor.numel():]

    def changed_guards(self) -> list[tuple[str, torch.Tensor]]:
        """[(side, positions)] of guard elements that no longer hold the sentinel.

        Positions are element offsets relative to the tensor: -1 is just before it, numel just after.
        """
        out = []
        fill = bits(torch.full((1,), self.guard_fill, dtype=self.buffer.dtype, device=self.buffer.device))
        for side, region, base in (("before", self.before, -self.guard),
                                   ("after", self.after, self.tensor.numel())):
            hit = (bits(region) != fill).nonzero().flatten()
            if hit.numel():
                out.append((side, (hit + base).cpu()))
        return out


def guard_length(numel: int) -> int:
    """As long as the tensor (a wrong stride often lands a tensor-length away), at least a GPU-sized block."""
    n = max(4096, numel)
    return (n + ALIGN - 1) // ALIGN * ALIGN


def guarded(name: str, like: torch.Tensor, fill=None, guard_fill=None) -> Guarded:
    """A guarded copy of `like` (fill=None) or a guarded tensor of its shape filled with `fill`.

    The guards hold `guard_fill`, by default the read sentinel of the dtype.
    """
    g = guard_length(like.numel())
    guard_fill = sentinel(like.dtype) if guard_fill is None else guard_fill
    buf = torch.full((2 * g + like.numel(),), guard_fill, dtype=like.dtype, device=like.device)
    inner = buf[g: g + like.numel()].view(like.shape)
    if fill is None:
        inner.copy_(like)
    else:
        inner.fill_(fill)
    return Guarded(name, buf, inner, g, guard_fill)
