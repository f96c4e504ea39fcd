"""The puzzles, in order: each module holds one statement, torch spec, input maker and launch wrapper."""

from puzzles.problems import (
    p01_add,
    p02_add_masked,
    p03_outer_add,
    p04_mul_relu,
    p05_long_sum,
    p06_mul_relu_backward,
    p07_softmax,
    p08_softmax_online,
    p09_rmsnorm,
    p10_rotary,
    p11_matmul,
    p12_int4_matmul,
    p13_flash_attention,
    p14_prefill_attention,
    p15_store_kvcache,
    p16_paged_decode,
)

PUZZLES = [m.PUZZLE for m in (
    p01_add, p02_add_masked, p03_outer_add, p04_mul_relu, p05_long_sum, p06_mul_relu_backward,
    p07_softmax, p08_softmax_online, p09_rmsnorm, p10_rotary, p11_matmul, p12_int4_matmul,
    p13_flash_attention, p14_prefill_attention, p15_store_kvcache, p16_paged_decode,
)]
assert [p.number for p in PUZZLES] == list(range(1, len(PUZZLES) + 1))
