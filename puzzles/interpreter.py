"""Triton's interpreter mode, made dependable for the checker.

`import puzzles` sets TRITON_INTERPRET=1 when there is no CUDA GPU. Triton reads that switch when a
function is decorated with @triton.jit, and triton.language decorates some of its own helpers
(tl.zeros, tl.sum, tl.max, tl.cdiv, ...) when it is first imported. If something imported Triton
earlier in the process (torch.compile, another library, a test), those helpers stay compiled-mode
functions that the interpreter refuses to call. `helpers_interpreted()` swaps in interpreted twins
for the length of one launch and puts the originals back afterwards; `helpers_in_mode(False)` does the
reverse, for compiling a kernel to a GPU binary inside an interpreter-mode process (gpu_compile.py).
"""

from __future__ import annotations

import contextlib
import os
import sys


def interpreting() -> bool:
    """True when @triton.jit kernels run in the interpreter (TRITON_INTERPRET=1)."""
    import triton

    knobs = getattr(triton, "knobs", None)
    if knobs is not None:
        return bool(knobs.runtime.interpret)
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on")


_twins: dict = {}  # id of a helper -> its twin of the other mode, built once


@contextlib.contextmanager
def helpers_in_mode(interpret: bool):
    """Within the block, triton.language's @jit helpers are interpreted (True) or compiled (False) ones."""
    try:
        import triton.language as tl
        from triton.runtime.interpreter import InterpretedFunction
        from triton.runtime.jit import JITFunction
    except ImportError:
        yield
        return
    owners = [m for name, m in list(sys.modules.items()) if name.startswith("triton.language") and m is not None]
    owners.append(tl.tensor)  # tensor methods such as x.sum() point at the same helpers
    swapped = []
    for owner in owners:
        for name, value in list(vars(owner).items()):
            if isinstance(value, JITFunction) and interpret and not isinstance(value, InterpretedFunction):
                twin = _twins.get(id(value)) or _twins.setdefault(id(value), InterpretedFunction(value.fn))
            elif isinstance(value, InterpretedFunction) and not interpret:
                twin = _twins.get(id(value)) or _twins.setdefault(id(value), JITFunction(value.fn))
            else:
                continue
            swapped.append((owner, name, value))
            setattr(owner, name, twin)
    try:
        yield
    finally:
        for owner, name, value in reversed(swapped):
            setattr(owner, name, value)


def helpers_interpreted():
    """For a launch: interpreted helpers if kernels run in the interpreter, else leave them alone."""
    return helpers_in_mode(True) if interpreting() else contextlib.nullcontext()


def as_interpreted(kernel):
    """A kernel decorated before interpreter mode was switched on, turned into its interpreted twin."""
    try:
        from triton.runtime.interpreter import InterpretedFunction
        from triton.runtime.jit import JITFunction
    except ImportError:
        return kernel
    if interpreting() and isinstance(kernel, JITFunction) and not isinstance(kernel, InterpretedFunction):
        return _twins.get(id(kernel)) or _twins.setdefault(id(kernel), InterpretedFunction(kernel.fn))
    return kernel
