"""Command line: list, show, check and reset the puzzles.

    python -m puzzles list                          # puzzles in order, and which of yours are written
    python -m puzzles show 2                        # statement, torch spec, hints
    python -m puzzles check 2                       # your kernel from puzzles/kernels.py
    python -m puzzles check 2 --picture access.png  # plus who read and wrote what (CPU only)
    python -m puzzles check 2 --program 6           # the picture for one program instance
    python -m puzzles check all --solution          # every reference solution
    python -m puzzles check 2 --file my_kernels.py  # your kernels from another file
    python -m puzzles check 11 --compile            # also compile it for an H100, no GPU needed
    python -m puzzles check 11 --gpu-blocks         # the GPU's block sizes, run in the interpreter
    python -m puzzles reset 2                       # puzzle 2's stub back in puzzles/kernels.py, others kept

Bad input (no such puzzle, no such file) is one line on stderr and exit status 2, no traceback.
"""

import argparse
import importlib
import importlib.util
import sys
from pathlib import Path

from puzzles import PUZZLES, check, get
from puzzles.harness import stub_message
from puzzles.stubs import KERNELS, reset


class UsageError(Exception):
    """A wrong puzzle or file on the command line: main prints it on one line."""


def chosen_puzzles(key: str) -> list:
    if key == "all":
        return PUZZLES
    try:
        return [get(key)]
    except KeyError as e:
        raise UsageError(e.args[0]) from None


def kernels_file(args) -> Path:
    path = Path(args.file) if args.file else KERNELS
    if not path.is_file():
        raise UsageError(f"--file {args.file}: no such file")
    if path.suffix != ".py":
        raise UsageError(f"--file {args.file}: give the path of a .py file")
    return path


def load_kernels(args):
    if args.solution:
        return importlib.import_module("puzzles.solutions")
    if args.file:
        spec = importlib.util.spec_from_file_location("learner_kernels", kernels_file(args))
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        return module
    return importlib.import_module("puzzles.kernels")


def cmd_list(args) -> int:
    kernels = load_kernels(args)
    print(f"{'#':>3}  {'name':<19}{'title':<44}{'leads to':<36}{'lines':>5}  yours")
    for p in PUZZLES:
        fn = getattr(kernels, p.kernel, None)
        state = "missing" if fn is None else "stub" if stub_message(fn) is not None else "written"
        print(f"{p.number:>3}  {p.name:<19}{p.title:<44}{p.chapter:<36}{p.lines:>5}  {state}")
    print("\nStart with: python -m puzzles show 1, then python -m puzzles check 1")
    return 0


def cmd_show(args) -> int:
    for p in chosen_puzzles(args.puzzle):
        print(p.describe())
    return 0


def cmd_check(args) -> int:
    chosen = chosen_puzzles(args.puzzle)
    program = parse_program(args.program)
    kernels = load_kernels(args)
    failed = 0
    if args.compile:  # first: the interpreter runs below leave triton.language partly patched
        failed += compile_all(kernels, chosen)
    for p in chosen:
        kernel = getattr(kernels, p.kernel, None)
        if kernel is None:
            print(f"Puzzle {p.number}: no function `{p.kernel}` in {kernels.__name__}")
            failed += 1
            continue
        if args.gpu_blocks:
            from puzzles.gpu_compile import with_gpu_blocks

            p = with_gpu_blocks(p)
        result = check(p, kernel, seed=args.seed)
        print(result.report() + ("\n" if len(chosen) > 1 else ""))
        failed += not result.passed
        if (args.picture or args.program is not None) and len(chosen) == 1:
            if result.trace is None:
                print("(no picture: it needs the interpreter, TRITON_INTERPRET=1)")
            else:
                import matplotlib

                matplotlib.use("Agg")
                path = args.picture or "access.png"
                result.picture(path, program=program)
                print(f"Picture written to {path}")
    if len(chosen) > 1:
        print(f"{len(chosen) - failed} of {len(chosen)} passed")
    return 1 if failed else 0


def cmd_reset(args) -> int:
    path = kernels_file(args)
    for p in chosen_puzzles(args.puzzle):
        print(reset(p, path))
    return 0


def parse_program(text: str | None) -> tuple[int, ...] | None:
    """--program X[,Y[,Z]] -> a program id tuple."""
    if text is None:
        return None
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise UsageError(f"--program {text}: expected X, X,Y or X,Y,Z (program ids)") from None


def compile_all(kernels, chosen) -> int:
    from puzzles.gpu_compile import compile_for_gpu

    failed = 0
    for p in chosen:
        kernel = getattr(kernels, p.kernel, None)
        if kernel is None or stub_message(kernel) is not None:
            continue
        try:
            lines = compile_for_gpu(p, kernel)
            print(f"Puzzle {p.number} ({p.name}) compiles for sm_90: " + "; ".join(lines))
        except Exception as exc:  # report the compiler's message, which names the line
            print(f"Puzzle {p.number} ({p.name}) does not compile for a GPU:\n{exc}")
            failed += 1
    print()
    return failed


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m puzzles", description="Triton puzzles for minillm.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, doc in (("list", "list the puzzles"), ("show", "print a puzzle's statement"),
                      ("check", "check a kernel against its puzzle"),
                      ("reset", "put a puzzle's stub back in your kernels file (the others stay)")):
        p = sub.add_parser(name, help=doc)
        if name != "list":
            p.add_argument("puzzle", help="number or name, or 'all'")
        if name in ("list", "check"):
            p.add_argument("--solution", action="store_true", help="use the reference solutions")
        if name != "show":
            p.add_argument("--file", help="a .py file holding your kernels (default: puzzles/kernels.py)")
        if name == "check":
            p.add_argument("--seed", type=int, help="repeat a run: the report prints its seed")
            p.add_argument("--picture", metavar="PNG", help="save the access picture here")
            p.add_argument("--program", metavar="X[,Y[,Z]]", help="picture one program instance only")
            p.add_argument("--compile", action="store_true", help="also compile for an H100 (no GPU needed)")
            p.add_argument("--gpu-blocks", action="store_true", help="launch with the block sizes of a GPU")
    args = parser.parse_args(argv)
    command = {"list": cmd_list, "show": cmd_show, "check": cmd_check, "reset": cmd_reset}[args.command]
    try:
        return command(args)
    except UsageError as e:
        print(f"python -m puzzles {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
