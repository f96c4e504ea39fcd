"""Who read and wrote what: record every tl.load / tl.store while Triton's interpreter runs a kernel.

In interpreter mode (TRITON_INTERPRET=1) each program instance runs as Python, one after another,
and every load and store goes through `interpreter_builder.create_masked_load/store` with the full
array of addresses and the mask. We wrap those two methods for the length of one launch and map each
address back to (tensor, element) or to the guard regions around it (see puzzles/guards.py).
An address outside every buffer ("wild") is masked off before it is touched, so a bad pointer shows
up as a diagnosis instead of a segmentation fault. On a compiled GPU kernel nothing is recorded and
the checker relies on guards and poison alone.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import numpy as np

from puzzles.guards import Guarded
from puzzles.interpreter import interpreting


@dataclass
class Access:
    """All accesses of one kind ("read" or "write") to one place, as parallel arrays."""

    pids: list = field(default_factory=list)  # linear program ids, one array per call
    where: list = field(default_factory=list)  # element offsets relative to the tensor start

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        if not self.pids:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        return np.concatenate(self.pids), np.concatenate(self.where)


@dataclass
class Trace:
    buffers: list[Guarded]
    grid: tuple[int, int, int] = (1, 1, 1)
    inside: dict = field(default_factory=dict)  # (kind, name) -> Access to elements of the tensor
    guard: dict = field(default_factory=dict)  # (kind, name) -> Access to its guard regions
    wild: dict = field(default_factory=dict)  # kind -> Access; `where` holds raw addresses

    def pid(self, linear: int) -> tuple[int, ...]:
        """Linear program id -> (x, y, z), trimmed to the launch grid's rank."""
        nx, ny, nz = self.grid
        full = (linear % nx, linear // nx % ny, linear // (nx * ny))
        rank = 3 if nz > 1 else 2 if ny > 1 else 1
        return full[:rank]

    def num_programs(self) -> int:
        return self.grid[0] * self.grid[1] * self.grid[2]

    def counts(self, kind: str, name: str, numel: int) -> np.ndarray:
        """How many times each element was read (or written), over all programs."""
        _, where = self.inside.get((kind, name), Access()).arrays()
        return np.bincount(where, minlength=numel)

    def owners(self, kind: str, name: str, numel: int) -> tuple[np.ndarray, np.ndarray]:
        """Per element: the lowest program id that touched it (-1: none) and how many distinct programs did."""
        pids, where = self.inside.get((kind, name), Access()).arrays()
        first = np.full(numel, np.iinfo(np.int64).max, np.int64)
        many = np.zeros(numel, np.int64)
        if where.size:
            pairs = np.unique(np.stack([where, pids]), axis=1)  # distinct (element, program) pairs
            many = np.bincount(pairs[0], minlength=numel)
            np.minimum.at(first, pairs[0], pairs[1])
        first[many == 0] = -1
        return first, many

    def programs_at(self, kind: str, name: str, flat: int) -> list[int]:
        """The linear ids of the programs that read (or wrote) element `flat` of tensor `name`."""
        pids, where = self.inside.get((kind, name), Access()).arrays()
        return sorted(set(pids[where == flat].tolist()))

    def _record(self, kind: str, addresses: np.ndarray, pid: int) -> np.ndarray:
        """Sort addresses into tensors and guards; returns the mask of wild ones."""
        addr = addresses.astype(np.int64)
        wild = np.ones(addr.shape, bool)
        for g in self.buffers:
            size = g.buffer.element_size()
            lo, start = g.buffer.data_ptr(), g.tensor.data_ptr()
            end, hi = start + g.tensor.numel() * size, lo + g.buffer.numel() * size
            hit = (addr >= lo) & (addr < hi)
            if not hit.any():
                continue
            wild &= ~hit
            a = addr[hit]
            ok = (a >= start) & (a < end)
            offs = (a - start) // size  # negative in the guard before the tensor
            for table, sel in ((self.inside, ok), (self.guard, ~ok)):
                if sel.any():
                    acc = table.setdefault((kind, g.name), Access())
                    acc.pids.append(np.full(int(sel.sum()), pid, np.int64))
                    acc.where.append(offs[sel])
        if wild.any():
            acc = self.wild.setdefault(kind, Access())
            acc.pids.append(np.full(int(wild.sum()), pid, np.int64))
            acc.where.append(addr[wild])
        return wild


def _interpreter_builder():
    """The interpreter's builder if this Triton runs kernels in interpreter mode, else None."""
    try:
        from triton.runtime import interpreter
    except ImportError:
        return None
    builder = getattr(interpreter, "interpreter_builder", None)
    if not interpreting() or not hasattr(builder, "create_masked_load") or not hasattr(builder, "create_masked_store"):
        return None
    return builder


@contextlib.contextmanager
def recording(buffers: list[Guarded]):
    """Yield a Trace filled in while the block runs, or None where accesses cannot be recorded."""
    builder = _interpreter_builder()
    if builder is None or any(g.buffer.device.type != "cpu" for g in buffers):
        yield None
        return
    trace = Trace(buffers)
    load, store = builder.create_masked_load, builder.create_masked_store

    def linear_pid() -> int:
        trace.grid = tuple(builder.grid_dim)
        x, y, z = builder.grid_idx
        nx, ny, _ = trace.grid
        return x + nx * (y + ny * z)

    def active(ptrs, mask) -> tuple[np.ndarray, np.ndarray]:
        on = np.broadcast_to(np.asarray(mask.data, bool), ptrs.data.shape)
        return ptrs.data[on], on

    def safe_mask(mask, on, wild):
        if not wild.any():
            return mask
        keep = on.copy()
        keep[on] = ~wild
        return type(mask)(keep, mask.dtype)

    def traced_load(ptrs, mask, *args, **kwargs):
        addrs, on = active(ptrs, mask)
        wild = trace._record("read", addrs, linear_pid())
        return load(ptrs, safe_mask(mask, on, wild), *args, **kwargs)

    def traced_store(ptrs, value, mask, *args, **kwargs):
        addrs, on = active(ptrs, mask)
        wild = trace._record("write", addrs, linear_pid())
        return store(ptrs, value, safe_mask(mask, on, wild), *args, **kwargs)

    builder.create_masked_load, builder.create_masked_store = traced_load, traced_store
    try:
        yield trace
    finally:
        del builder.create_masked_load, builder.create_masked_store  # back to the class's methods
