"""Reference solutions, kept apart from the stubs so a learner can avoid reading them.

`python -m puzzles check N --solution` runs these instead of puzzles/kernels.py.
"""

from puzzles.solutions.attention import (
    flash_attention_kernel,
    paged_decode_kernel,
    prefill_attention_kernel,
    store_kvcache_kernel,
)
from puzzles.solutions.basics import (
    add_kernel,
    add_masked_kernel,
    long_sum_kernel,
    mul_relu_backward_kernel,
    mul_relu_kernel,
    outer_add_kernel,
)
from puzzles.solutions.matmul import int4_matmul_kernel, matmul_kernel
from puzzles.solutions.rows import rmsnorm_kernel, rotary_kernel, softmax_kernel, softmax_online_kernel

__all__ = [
    "add_kernel", "add_masked_kernel", "outer_add_kernel", "mul_relu_kernel", "long_sum_kernel",
    "mul_relu_backward_kernel", "softmax_kernel", "softmax_online_kernel", "rmsnorm_kernel", "rotary_kernel",
    "matmul_kernel", "int4_matmul_kernel", "flash_attention_kernel", "prefill_attention_kernel",
    "store_kvcache_kernel", "paged_decode_kernel",
]
