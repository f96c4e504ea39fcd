"""Puzzle 8: online softmax: max and sum in one pass, so two passes in all."""

from puzzles.problems.p07_softmax import diagnose, launch, make_inputs, spec
from puzzles.puzzle import Puzzle

STATEMENT = """
    same output as puzzle 7; x: (N0, T) float32    z: (N0, T) float32     one program per row

Read x only twice. In the first pass keep a running max m and a running sum l of exp(x - m) together:
when a block raises the max from m to m_new, the old sum was computed against the old max, so rescale it:
    l = l * exp(m - m_new) + sum(exp(x_block - m_new)),   m = m_new
The second pass writes exp(x - m) / l. The checker counts loads: an element of x read a third time fails.

Engine: this rescaling is the heart of FlashAttention (puzzles 13, 14, 16 and chapter 7): it lets a
kernel see the keys once, block by block, without ever holding a whole row of scores.
"""

PUZZLE = Puzzle(
    number=8, name="softmax_online", title="Online softmax in two passes", chapter="ch7 FlashAttention",
    kernel="softmax_online_kernel", statement=STATEMENT, spec=spec, make_inputs=make_inputs, launch=launch,
    summary="The same softmax reading x only twice: running max and rescaled running sum.",
    shapes={"check": dict(N0=16, T=2000), "bench": dict(N0=256, T=32000)}, lines=18,
    hints=("Keep the max and the sum as float32 scalars: m_i = float('-inf'), l_i = 0.0; exp(m_i - m_new) is then 0 on the "
           "first block, as it should be.",
           "The row max of the first block is finite because a row has at least one element."),
    max_reads={"x": 2}, diagnose=diagnose,
)
