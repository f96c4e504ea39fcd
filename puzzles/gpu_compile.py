"""What a GPU would do with your kernel, found out on a machine without one.

    python -m puzzles check 11 --compile      # before the interpreter run: does it compile for real?
    python -m puzzles check 11 --gpu-blocks   # run it in the interpreter with the GPU's block sizes

The interpreter runs kernels as NumPy and forgives things the compiler does not (a loop variable that
changes type, a non-constexpr block shape, an unsupported Python construct). Triton can compile to a
GPU binary without a GPU, so this catches them on a laptop. The launch wrapper is called with a
recorder in place of the kernel to learn the argument types and constexprs, once with the CPU block
sizes and once with tensors that claim to be on a GPU (the wrappers pick bigger blocks there).
Compile before any interpreter run in the same process: the interpreter leaves parts of
triton.language patched after it calls helper functions. `with_gpu_blocks` reuses the same trick to
run the GPU launch configuration through the interpreter, where the checker sees every access.
"""

from __future__ import annotations

import dataclasses

import torch

from puzzles.interpreter import helpers_in_mode
from puzzles.puzzle import Puzzle

TYPES = {torch.float16: "*fp16", torch.bfloat16: "*bf16", torch.float32: "*fp32", torch.int32: "*i32",
         torch.int64: "*i64"}
LAUNCH_OPTIONS = ("num_warps", "num_stages")  # launch keywords that are compiler options, not arguments


class _OnGPU(torch.Tensor):
    """A CPU tensor that says it is on a GPU, so a launch wrapper picks its GPU block sizes."""

    @property
    def is_cuda(self):
        return True


class _Recorder:
    """Stands in for a kernel: `kernel[grid](*args, **kwargs)` records the arguments."""

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            self.args, self.kwargs = args, kwargs

        return launch


def compile_for_gpu(puzzle: Puzzle, kernel, arch: int = 90) -> list[str]:
    """Compile `kernel` for both launch configurations; one line per configuration, raises on failure."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from triton.runtime.jit import JITFunction

    jit = JITFunction(getattr(kernel, "fn", kernel))  # compiled-mode twin, whatever TRITON_INTERPRET says
    raw = puzzle.make_inputs(torch.Generator().manual_seed(0), **puzzle.shapes["check"])
    outputs = {k: v for k, v in puzzle.spec(**raw).items() if k not in raw}
    done = []
    for where in ("cpu", "gpu"):
        recorder = _Recorder()
        args = {k: v.as_subclass(_OnGPU) if where == "gpu" and torch.is_tensor(v) else v
                for k, v in {**raw, **outputs}.items()}
        puzzle.launch(recorder, **args)
        signature = {n: TYPES[a.dtype] if torch.is_tensor(a) else "fp32" if isinstance(a, float) else "i32"
                     for n, a in zip(jit.arg_names, recorder.args)}
        constexprs = {n: v for n, v in recorder.kwargs.items() if n not in LAUNCH_OPTIONS}
        options = {n: v for n, v in recorder.kwargs.items() if n in LAUNCH_OPTIONS}
        signature.update({n: "constexpr" for n in constexprs})
        with helpers_in_mode(interpret=False):
            binary = triton.compile(ASTSource(jit, signature, constexprs=constexprs),
                                    target=GPUTarget("cuda", arch, 32), options=options)
        done.append(f"{where} blocks {constexprs}: {binary.metadata.shared} bytes of shared memory")
    return done


def with_gpu_blocks(puzzle: Puzzle) -> Puzzle:
    """The same puzzle, launched with the block sizes its wrapper picks on a GPU."""

    def launch(kernel, **tensors):
        return puzzle.launch(kernel, **{k: v.as_subclass(_OnGPU) if torch.is_tensor(v) else v
                                        for k, v in tensors.items()})

    return dataclasses.replace(puzzle, launch=launch)
