"""The checker: run a learner's kernel on fresh random inputs and say exactly what is wrong.

    result = check(puzzle, kernel)      # what `python -m puzzles check N` calls
    print(result.report()); result.passed; result.kinds

One launch, then a list of problems, each with a kind and a message:
  "not implemented"             the kernel is still the stub
  "crashed"                     the launch raised (with the kernel line where it happened)
  "out-of-bounds write"         a guard around some tensor changed (puzzles/guards.py)
  "out-of-bounds read"          a load touched a guard (interpreter) or a guard's NaN reached an output
  "not written"                 output elements still hold the poison value
  "written by several programs" two program instances stored to the same element
  "wrong values"                outside the tolerance for the output's dtype, with a diff
  "read too often"              a puzzle that asks for a fixed number of passes got more
In interpreter mode every message names the program ids involved (puzzles/trace.py).
"""

from __future__ import annotations

import ast
import inspect
import os
import random
import textwrap
import time
import traceback
from dataclasses import dataclass, field

import numpy as np
import torch

from puzzles.guards import Guarded, bits, guarded, poison
from puzzles.interpreter import as_interpreted, helpers_interpreted, interpreting
from puzzles.puzzle import Puzzle
from puzzles.trace import Trace, recording

TOLERANCE = {  # (atol, rtol) by output dtype; a puzzle may override per output
    torch.float64: (1e-8, 1e-8),
    torch.float32: (1e-4, 1e-4),
    torch.float16: (1e-2, 1e-2),
    torch.bfloat16: (4e-2, 4e-2),
}
ORDER = ["not implemented", "crashed", "out-of-bounds write", "out-of-bounds read", "not written",
         "written by several programs", "wrong values", "read too often"]
SHOW = 8  # how many wrong elements the diff lists


@dataclass
class Problem:
    kind: str  # one of ORDER
    message: str


@dataclass
class Result:
    puzzle: Puzzle
    seed: int
    device: str
    problems: list[Problem] = field(default_factory=list)
    inputs: dict = field(default_factory=dict)  # name -> tensor as the kernel saw it
    outputs: dict = field(default_factory=dict)  # name -> tensor the kernel wrote
    expected: dict = field(default_factory=dict)  # name -> the spec's answer
    trace: Trace | None = None
    seconds: float = 0.0  # wall time of the launch

    @property
    def passed(self) -> bool:
        return not self.problems

    @property
    def kinds(self) -> list[str]:
        return [p.kind for p in self.problems]

    def report(self) -> str:
        p = self.puzzle
        mode = "interpreter" if interpreting() else "compiled"
        head = f"Puzzle {p.number} ({p.name}), seed {self.seed}, {self.device} ({mode}), {self.seconds:.2f} s: "
        if "not implemented" in self.kinds:
            return f"Puzzle {p.number} ({p.name}): not implemented\n  " + self.problems[0].message
        if self.passed:
            return head + "PASSED"
        lines = [head + f"FAILED ({len(self.problems)} problem{'s' * (len(self.problems) > 1)})"]
        for prob in sorted(self.problems, key=lambda q: ORDER.index(q.kind)):
            lines += ["", f"* {prob.kind}: " + prob.message]
        if self.trace is None and any(k.startswith("out-of-bounds") for k in self.kinds):
            lines += ["", "Run on a CPU (TRITON_INTERPRET=1) to see which program ids did it."]
        if self.trace is not None and "not implemented" not in self.kinds:
            lines += ["", f"See who touched what: python -m puzzles check {p.number} --picture access.png"]
        return "\n".join(lines)

    def picture(self, path=None, program=None):
        """Matplotlib figure of which elements each program read and wrote (interpreter mode only)."""
        from puzzles.picture import draw

        return draw(self, path=path, program=program)


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() and not interpreting() else "cpu"


def stub_message(kernel) -> str | None:
    """The message of a `raise NotImplementedError("...")` in the kernel's body, if it has one."""
    fn = getattr(kernel, "fn", kernel)
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
    except (OSError, TypeError, SyntaxError):
        return None
    for node in ast.walk(tree):
        if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call):
            func, args = node.exc.func, node.exc.args
            if isinstance(func, ast.Name) and func.id == "NotImplementedError":
                return args[0].value if args and isinstance(args[0], ast.Constant) else "stub"
    return None


def check(puzzle: Puzzle, kernel, *, seed: int | None = None, shape: str = "check",
          device: str | None = None) -> Result:
    """Run `kernel` through `puzzle.launch` on guarded, poisoned tensors and diagnose the outcome."""
    seed = random.randrange(10**6) if seed is None else seed
    device = device or default_device()
    result = Result(puzzle, seed, device)
    stub = stub_message(kernel)
    if stub is not None:
        result.problems.append(Problem("not implemented", f"{stub}\n  `python -m puzzles show {puzzle.number}` "
                                       "prints the statement; delete the `raise` line once you start."))
        return result

    raw = puzzle.make_inputs(torch.Generator().manual_seed(seed), **puzzle.shapes[shape])
    raw = {k: v.to(device) if torch.is_tensor(v) else v for k, v in raw.items()}
    expected = puzzle.spec(**{k: v.clone() if torch.is_tensor(v) else v for k, v in raw.items()})
    guards = {k: guarded(k, v) for k, v in raw.items() if torch.is_tensor(v)}
    fresh = [k for k in expected if k not in raw]  # outputs the kernel must write every element of
    guards.update({k: guarded(k, expected[k], fill=poison(expected[k].dtype), guard_fill=poison(expected[k].dtype))
                   for k in fresh})  # a NaN guard would not notice a NaN written into it
    args = {k: guards[k].tensor if k in guards else v for k, v in raw.items()}
    args.update({k: guards[k].tensor for k in fresh})
    result.inputs = {k: guards[k].tensor for k in raw if k in guards}
    result.outputs = {k: guards[k].tensor for k in expected}
    result.expected = expected

    start = time.perf_counter()
    with helpers_interpreted(), recording(list(guards.values())) as trace:
        try:
            puzzle.launch(as_interpreted(kernel), **args)
            if device == "cuda":
                torch.cuda.synchronize()
        except Exception as exc:  # the learner's kernel may fail in any way; report it, don't die
            result.problems.append(Problem("crashed", describe_exception(exc, kernel)))
    result.seconds = time.perf_counter() - start
    result.trace = trace

    result.problems += out_of_bounds(guards, trace)
    for name in expected:
        result.problems += compare(name, guards[name].tensor, expected[name], name in fresh, puzzle, trace, raw)
    if trace is not None:
        result.problems += too_many_reads(puzzle, guards, trace)
    if "crashed" in result.kinds:  # after a crash, unwritten outputs are a consequence, not news
        result.problems = [p for p in result.problems if p.kind not in ("not written", "wrong values")]
    return result


def describe_exception(exc: BaseException, kernel) -> str:
    chain = [exc]
    while chain[-1].__cause__ is not None:  # the interpreter wraps the real error in InterpreterErrors
        chain.append(chain[-1].__cause__)
    root = chain[-1]
    text = f"{type(root).__name__}: {root}".strip()
    fn = getattr(kernel, "fn", kernel)
    try:
        source_file = inspect.getsourcefile(fn)
    except TypeError:
        source_file = None
    frames = [f for e in chain for f in traceback.extract_tb(e.__traceback__) if f.filename == source_file]
    if frames:
        text += f"\n  at {os.path.basename(frames[-1].filename)} line {frames[-1].lineno}: {frames[-1].line}"
    return text


def span(values) -> str:
    """[0, 1, 2, 5, 7, 8] -> '0..2, 5, 7..8' (at most a few runs)."""
    values = sorted(set(int(v) for v in values))
    runs, start = [], None
    for i, v in enumerate(values):
        if start is None:
            start = v
        if i + 1 == len(values) or values[i + 1] != v + 1:
            runs.append(f"{start}" if start == v else f"{start}..{v}")
            start = None
    return ", ".join(runs[:6]) + (f", ... ({len(runs) - 6} more runs)" if len(runs) > 6 else "")


def programs(trace: Trace, pids) -> str:
    pids = sorted(set(int(p) for p in pids))
    shown = ", ".join(str(trace.pid(p)).replace(",)", ")") for p in pids[:6])
    more = f" and {len(pids) - 6} more" if len(pids) > 6 else ""
    return f"program{'s' * (len(pids) > 1)} {shown}{more} (of {trace.num_programs()})"


def where(t: torch.Tensor, mask: torch.Tensor) -> str:
    """Which indices along each dimension hold a flagged element: 'dim 0 (size 70): 3..5; dim 1 ...: all'."""
    idx = mask.nonzero().cpu()
    parts = []
    for d, n in enumerate(t.shape):
        vals = idx[:, d].tolist()
        parts.append(f"dim {d} (size {n}): " + ("all" if len(set(vals)) == n and n > 1 else span(vals)))
    return "; ".join(parts)


def out_of_bounds(guards: dict[str, Guarded], trace: Trace | None) -> list[Problem]:
    problems = []
    for g in guards.values():
        numel = g.tensor.numel()
        for kind in ("read", "write"):
            changed = [pos for _, pos in g.changed_guards()] if kind == "write" else []
            if trace is not None and (kind, g.name) in trace.guard:
                pids, offs = trace.guard[(kind, g.name)].arrays()
                who = " by " + programs(trace, pids)
            elif changed:
                offs, who = torch.cat(changed).numpy(), ""
            else:
                continue
            before, after = offs[offs < 0], offs[offs >= numel]
            sides = []
            if before.size:
                sides.append(f"{np.unique(before).size} element(s) before its start (flat offsets {span(before)})")
            if after.size:
                sides.append(f"{np.unique(after).size} element(s) past its end (flat offsets {span(after)})")
            problems.append(Problem(f"out-of-bounds {kind}", f"{g.name} (shape {tuple(g.tensor.shape)}, "
                                    f"{numel} elements): " + " and ".join(sides) + who))
    if trace is not None:
        for kind, acc in trace.wild.items():
            pids, addrs = acc.arrays()
            problems.append(Problem(f"out-of-bounds {kind}", f"{addrs.size} {kind}s at addresses far outside "
                                    f"every tensor ({nearest(guards, addrs)}) by {programs(trace, pids)}. "
                                    "They were skipped here; on a GPU they are an illegal memory access."))
    return problems


def nearest(guards: dict[str, Guarded], addrs: np.ndarray) -> str:
    a = int(addrs[0])
    best = min(guards.values(), key=lambda g: abs(a - g.tensor.data_ptr()))
    offset = (a - best.tensor.data_ptr()) // best.tensor.element_size()
    return f"the first is {best.name}.flat[{offset}], for a tensor of {best.tensor.numel()} elements"


def compare(name, got, want, fresh, puzzle, trace, inputs) -> list[Problem]:
    problems = []
    numel = got.numel()
    unwritten = torch.zeros_like(got, dtype=torch.bool)
    if fresh:
        unwritten = bits(got) == bits(torch.full_like(got, poison(got.dtype)))
        if unwritten.any():
            n = int(unwritten.sum())
            problems.append(Problem("not written", f"{n} of {numel} elements of {name} still hold the poison "
                                    f"value {poison(got.dtype)}: {where(got, unwritten)}"))
    if trace is not None and fresh:
        first, many = trace.owners("write", name, numel)
        shared = many > 1
        if shared.any():
            m = torch.from_numpy(shared).view(got.shape)
            example = int(shared.nonzero()[0][0])
            idx = [int(i) for i in np.unravel_index(example, tuple(got.shape))]
            problems.append(Problem("written by several programs", f"{int(shared.sum())} elements of {name} "
                                    f"were stored by more than one program: {where(got, m)}; e.g. {name}{idx} by "
                                    f"{programs(trace, trace.programs_at('write', name, example))}. "
                                    "Check the program-id -> block mapping."))
    atol, rtol = puzzle.tolerance.get(name, TOLERANCE.get(want.dtype, (0, 0)))
    close = torch.isclose(got.double(), want.double(), atol=atol, rtol=rtol, equal_nan=True)
    wrong = ~close & ~unwritten
    if wrong.any():
        msg = (f"{int(wrong.sum())} of {numel} elements of {name} differ from the spec by more than "
               f"atol={atol:g} + rtol={rtol:g}*|expected|: {where(got, wrong)}\n" + diff(name, got, want, wrong, trace))
        nan = torch.isnan(got) & ~torch.isnan(want)
        if nan.any():
            msg += ("\n  NaN where the spec has a number: the guards around every tensor hold NaN, so this is "
                    "usually an unmasked load past the end of an input (or a 0/0).")
            if trace is None:  # no record of the loads: the NaN is the only witness of an out-of-bounds read
                problems.append(Problem("out-of-bounds read", f"{int(nan.sum())} elements of {name} are NaN where "
                                        f"the spec is finite ({where(got, nan)}): probably a load from a guard."))
        if puzzle.diagnose is not None:
            msg += "".join(f"\n  Hint: {h}" for h in puzzle.diagnose(got=got.cpu(), expected=want.cpu(),
                                                                      inputs=inputs))
        problems.append(Problem("wrong values", msg))
    return problems


def diff(name, got, want, wrong, trace) -> str:
    flat = wrong.flatten().nonzero().flatten()[:SHOW].tolist()
    writer = trace.owners("write", name, got.numel())[0] if trace is not None else None
    rows = [f"    {'element':<22}{'got':>14}{'expected':>14}{'|diff|':>12}" + ("   written by" if writer is not None
                                                                               else "")]
    g, w = got.flatten().cpu(), want.flatten().cpu()
    for i in flat:
        idx = np.unravel_index(i, tuple(got.shape))
        a, b = float(g[i]), float(w[i])
        line = f"    {name + str(list(int(j) for j in idx)):<22}{a:>14.6g}{b:>14.6g}{abs(a - b):>12.3g}"
        if writer is not None:
            line += "   " + (str(trace.pid(int(writer[i]))).replace(",)", ")") if writer[i] >= 0 else "-")
        rows.append(line)
    more = int(wrong.sum()) - len(flat)
    if more > 0:
        gap = (g.double() - w.double()).abs().nan_to_num(float("inf"))
        err = torch.where(wrong.flatten().cpu(), gap, -1.0).argmax().item()
        idx = [int(j) for j in np.unravel_index(err, tuple(got.shape))]
        rows.append(f"    ... and {more} more; the largest |diff| is at {name}{idx}: got {float(g[err]):.6g}, "
                    f"expected {float(w[err]):.6g}")
    return "\n".join(rows)


def too_many_reads(puzzle, guards, trace) -> list[Problem]:
    problems = []
    for name, limit in puzzle.max_reads.items():
        counts = trace.counts("read", name, guards[name].tensor.numel())
        if counts.size and counts.max() > limit:
            flat = int(counts.argmax())
            idx = [int(i) for i in np.unravel_index(flat, tuple(guards[name].tensor.shape))]
            problems.append(Problem("read too often", f"elements of {name} were loaded up to {counts.max()} times, "
                                    f"e.g. {name}{idx} by {programs(trace, trace.programs_at('read', name, flat))}; "
                                    f"this puzzle asks for at most {limit} pass(es) over {name}."))
    return problems
