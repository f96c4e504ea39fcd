"""Triton puzzles: reference solutions pass, stubs fail clearly, planted bugs get the right diagnosis.

    pytest -m puzzles          # about a minute on 2 CPU cores, all in Triton's interpreter

Also: the guard-only path a GPU uses (no trace), the picture, the CLI (reset and its one-line errors
included), the notebook, and that every reference kernel compiles for an H100 (sm_90) with both the CPU
and the GPU block sizes of its launch.
"""

import inspect
import subprocess
import sys
from pathlib import Path

import pytest
import triton
import triton.language as tl

import puzzles
from puzzles import PUZZLES, check, get, solutions
from puzzles import kernels as stubs
from puzzles.__main__ import main
from puzzles.gpu_compile import with_gpu_blocks
from puzzles.harness import stub_message
from puzzles.planted import PLANTED
from puzzles.stubs import find, stub

pytestmark = pytest.mark.puzzles
ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("puzzle", PUZZLES, ids=lambda p: f"{p.number:02d}-{p.name}")
def test_reference_solution_passes(puzzle):
    for seed in (0, 1):
        result = check(puzzle, getattr(solutions, puzzle.kernel), seed=seed)
        assert result.passed, result.report()
        assert result.trace is not None  # the CPU run records every access


@pytest.mark.parametrize("puzzle", PUZZLES, ids=lambda p: f"{p.number:02d}-{p.name}")
def test_stub_fails_with_its_name_and_size(puzzle):
    result = check(puzzle, getattr(stubs, puzzle.kernel))
    assert result.kinds == ["not implemented"]
    report = result.report()
    assert f"Puzzle {puzzle.number} ({puzzle.name})" in report and "roughly" in report
    assert f"python -m puzzles show {puzzle.number}" in report


@pytest.mark.parametrize("bug", PLANTED, ids=lambda b: b.name.replace(" ", "-"))
def test_planted_bug_is_diagnosed(bug):
    result = check(get(bug.puzzle), bug.kernel, seed=3)
    assert not result.passed
    for kind in bug.kinds:
        assert kind in result.kinds, result.report()
    first = next(p for p in result.problems if p.kind == bug.kinds[0])
    assert bug.mentions in first.message, result.report()
    assert "program" in result.report() or bug.kinds == ("wrong values",)  # program ids are named


def test_gpu_block_sizes_in_the_interpreter():
    """The launch wrappers pick bigger blocks on a GPU; the check sizes still span several of them."""
    for puzzle in PUZZLES:
        result = check(with_gpu_blocks(puzzle), getattr(solutions, puzzle.kernel), seed=0)
        assert result.passed, result.report()
        assert result.trace.num_programs() > 1 or puzzle.number == 1
    for bug in PLANTED:
        result = check(with_gpu_blocks(get(bug.puzzle)), bug.kernel, seed=0)
        assert set(bug.kinds) <= set(result.kinds), result.report()


def test_out_of_bounds_names_the_program_and_the_elements():
    missing_mask = next(b for b in PLANTED if b.name == "missing mask")
    report = check(get(2), missing_mask.kernel, seed=0).report()
    assert "x (shape (2000,), 2000 elements): 48 element(s) past its end (flat offsets 2000..2047)" in report
    assert "by program (7) (of 8)" in report


def test_guards_alone_catch_writes_and_leaked_reads(monkeypatch):
    """What a GPU run sees: no trace, only guards and poison."""
    import contextlib

    monkeypatch.setattr(puzzles.harness, "recording", lambda buffers: contextlib.nullcontext(None))
    off_by_one = next(b for b in PLANTED if b.name == "off-by-one mask")
    result = check(get(2), off_by_one.kernel, seed=0)
    assert "out-of-bounds write" in result.kinds and result.trace is None
    assert "flat offsets 2000" in result.report() and "TRITON_INTERPRET=1" in result.report()
    result = check(get(5), long_sum_unmasked_columns_kernel, seed=0)  # reads the guard after x: NaN leaks
    assert {"out-of-bounds read", "wrong values"} <= set(result.kinds), result.report()


@triton.jit
def long_sum_unmasked_columns_kernel(x_ptr, z_ptr, N0, T, B0: tl.constexpr, B1: tl.constexpr):
    rows = tl.program_id(0) * B0 + tl.arange(0, B0)
    acc = tl.zeros((B0,), dtype=tl.float32)
    for start in range(0, T, B1):
        cols = start + tl.arange(0, B1)
        x = tl.load(x_ptr + rows[:, None] * T + cols[None, :], mask=rows[:, None] < N0)  # no column mask
        acc += tl.sum(x, axis=1)
    tl.store(z_ptr + rows, acc, mask=rows < N0)


def test_crash_reports_the_kernel_line():
    @triton.jit
    def broken_kernel(x_ptr, z_ptr, N0, B0: tl.constexpr):
        offs = tl.arange(0, B0)
        tl.store(z_ptr + offs, tl.load(x_ptr + offs) + tl.zeros((B0 + 1,), tl.float32))

    result = check(get(1), broken_kernel, seed=0)
    assert result.kinds == ["crashed"]
    assert "test_puzzles.py line" in result.report()


def test_picture_shows_reads_writes_and_verdict(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    wrong_pid = next(b for b in PLANTED if b.name == "wrong program-id mapping")
    result = check(get(3), wrong_pid.kernel, seed=0)
    fig = result.picture(tmp_path / "all.png")
    assert (tmp_path / "all.png").stat().st_size > 10_000
    assert len(fig.axes) == 3 * 3  # x, y, z rows; reads, writes, verdict columns
    result.picture(tmp_path / "one.png", program=(1, 0))
    assert (tmp_path / "one.png").exists()


def test_cli(tmp_path, capsys):
    assert main(["list"]) == 0
    assert "paged_decode" in capsys.readouterr().out
    assert main(["show", "rmsnorm"]) == 0
    assert "rsqrt" in capsys.readouterr().out
    assert main(["check", "1"]) == 1  # the learner's stub
    assert "not implemented" in capsys.readouterr().out
    png = tmp_path / "access.png"
    assert main(["check", "2", "--solution", "--picture", str(png)]) == 0
    assert "PASSED" in capsys.readouterr().out and png.exists()
    mine = tmp_path / "mine.py"
    mine.write_text((ROOT / "puzzles" / "solutions" / "basics.py").read_text())
    assert main(["check", "3", "--file", str(mine)]) == 0


def test_stubs_in_kernels_py_are_built_from_their_puzzles():
    """Every kernel of puzzles/kernels.py still a stub is exactly what `reset` writes back."""
    text = (ROOT / "puzzles" / "kernels.py").read_text()
    lines = text.splitlines(keepends=True)
    for p in PUZZLES:
        if stub_message(getattr(stubs, p.kernel)) is None:
            continue  # written by the learner
        start, end = find(text, p.kernel)
        assert "".join(lines[start:end]) == stub(p)


def with_kernel(text: str, kernel: str, source: str) -> str:
    start, end = find(text, kernel)
    lines = text.splitlines(keepends=True)
    return "".join(lines[:start]) + source + "".join(lines[end:])


def test_reset_puts_one_stub_back_and_keeps_the_others(tmp_path, capsys):
    shipped = "import triton\nimport triton.language as tl\n\n\n" + "\n\n".join(stub(p) for p in PUZZLES)
    solved = shipped
    for kernel in ("add_masked_kernel", "outer_add_kernel"):
        solved = with_kernel(solved, kernel, inspect.getsource(getattr(solutions, kernel).fn))
    mine = tmp_path / "mine.py"
    mine.write_text(solved)
    assert main(["check", "2", "--file", str(mine)]) == 0
    assert main(["reset", "add_masked", "--file", str(mine)]) == 0
    assert "add_masked_kernel in" in capsys.readouterr().out
    kept = with_kernel(shipped, "outer_add_kernel", inspect.getsource(solutions.outer_add_kernel.fn))
    assert mine.read_text() == kept
    assert main(["check", "2", "--file", str(mine)]) == 1  # the stub again
    assert main(["check", "3", "--file", str(mine)]) == 0  # untouched
    assert main(["reset", "2", "--file", str(mine)]) == 0
    assert "already the stub" in capsys.readouterr().out
    mine.write_text(mine.read_text() + "\ndef half_written(:\n")  # a file that does not parse still resets
    assert main(["reset", "all", "--file", str(mine)]) == 0
    assert mine.read_text() == shipped + "\ndef half_written(:\n"


@pytest.mark.parametrize(
    "argv, says",
    [
        (["check", "17"], "no puzzle '17': puzzles are numbered 1-16"),
        (["show", "softmax_offline"], "no puzzle 'softmax_offline'"),
        (["reset", "0"], "no puzzle '0'"),
        (["check", "1", "--file", "no/such/kernels.py"], "--file no/such/kernels.py: no such file"),
        (["list", "--file", "no/such/kernels.py"], "no such file"),
        (["reset", "1", "--file", "no/such/kernels.py"], "no such file"),
        (["check", "1", "--file", "README.md"], "give the path of a .py file"),
        (["check", "2", "--solution", "--program", "a,b"], "--program a,b: expected X, X,Y or X,Y,Z"),
    ],
)
def test_cli_bad_input_is_one_line(argv, says, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err  # no traceback
    assert err.startswith(f"python -m puzzles {argv[0]}: error: ") and says in err, err


def test_every_reference_kernel_compiles_for_an_h100():
    """Triton compiles for a GPU without one: catches what the interpreter lets through (types, shapes).

    In a fresh process: interpreter runs leave triton.language patched (puzzles/gpu_compile.py).
    """
    try:
        from triton.backends.nvidia.compiler import CUDABackend  # noqa: F401
    except ImportError as exc:
        pytest.skip(f"this Triton has no CUDA backend: {exc}")
    run = subprocess.run(
        [sys.executable, "-m", "puzzles", "check", "all", "--solution", "--compile"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert run.stdout.count("compiles for sm_90") == len(PUZZLES)


def test_notebook_runs_top_to_bottom():
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.read(ROOT / "puzzles" / "Puzzles.ipynb", as_version=4)
    nbclient.NotebookClient(
        nb,
        timeout=300,
        kernel_name="python3",  # run from puzzles/, as Jupyter would
        resources={"metadata": {"path": str(ROOT / "puzzles")}},
    ).execute()
    outputs = "".join(
        o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
    )
    assert "PASSED" in outputs and "out-of-bounds read" in outputs
