"""Puzzle 16: decode attention over a paged KV cache: follow the block table."""

import torch

from puzzles.puzzle import Puzzle

STATEMENT = """
    for each sequence b and query head h (one new token per sequence):
        o[b, h] = softmax_j(q[b, h] . K_b[j] * scale) @ V_b,   j < context_lens[b]
    where token j of sequence b lives in block block_tables[b, j // block_size], row j % block_size,
    kv head h // (H // KVH) of the pools
    q: (B, H, D) float16    k_cache, v_cache: (num_blocks, block_size, KVH, D) float16
    block_tables: (B, max_blocks) int32, -1 past the sequence's blocks    context_lens: (B,) int32
    o: (B, H, D) float16    scale = 1/sqrt(D)

Grid (B, H): one program per (sequence, head) walks its sequence's blocks, i = 0 .. cdiv(len, bs)-1,
loads the block id, gathers that block's (block_size, D) keys and values, and keeps the online
softmax of puzzle 13 (with a single query row, tl.sum(q[None, :] * k, axis=1) replaces tl.dot).
Read exactly the block-table entries the sequence owns: the entries past them are not yours.

Engine: chapter 2 keeps KV in blocks and chapter 7's paged decode kernel reads it this way; decode
time is the KV bytes read divided by HBM bandwidth.
"""


def spec(q, k_cache, v_cache, block_tables, context_lens):
    B, H, D = q.shape
    block_size, KVH = k_cache.shape[1], k_cache.shape[2]
    o = torch.empty_like(q)
    for b, n in enumerate(context_lens.tolist()):
        blocks = block_tables[b, : (n + block_size - 1) // block_size].long()
        k = k_cache[blocks].flatten(0, 1)[:n].float().repeat_interleave(H // KVH, dim=1)  # (n, H, D)
        v = v_cache[blocks].flatten(0, 1)[:n].float().repeat_interleave(H // KVH, dim=1)
        p = torch.softmax(torch.einsum("hd,nhd->hn", q[b].float(), k) * D**-0.5, dim=-1)  # (H, n)
        o[b] = torch.einsum("hn,nhd->hd", p, v).half()
    return {"o": o}


def make_inputs(gen, B, max_context, H, KVH, D, block_size):
    lens = torch.randint(1, max_context + 1, (B,), generator=gen)
    lens[-1] = max_context  # the last sequence fills its whole block table
    max_blocks = (max_context + block_size - 1) // block_size
    nblocks = [(n + block_size - 1) // block_size for n in lens.tolist()]
    num_blocks = sum(nblocks) + 4  # a few blocks that belong to nobody, holding stale data
    pool = torch.randperm(num_blocks, generator=gen).to(torch.int32)  # blocks are scattered in the pool
    block_tables = torch.full((B, max_blocks), -1, dtype=torch.int32)
    used = 0
    for b, nb in enumerate(nblocks):
        block_tables[b, :nb] = pool[used: used + nb]
        used += nb
    cache = (num_blocks, block_size, KVH, D)
    return {"q": torch.randn(B, H, D, generator=gen).half(),
            "k_cache": torch.randn(cache, generator=gen).half(), "v_cache": torch.randn(cache, generator=gen).half(),
            "block_tables": block_tables, "context_lens": lens.to(torch.int32)}


def launch(kernel, q, k_cache, v_cache, block_tables, context_lens, o):
    B, H, D = q.shape
    block_size, KVH = k_cache.shape[1], k_cache.shape[2]
    kernel[(B, H)](q, k_cache, v_cache, block_tables, context_lens, o, D**-0.5, block_tables.shape[1],
                   H=H, KVH=KVH, D=D, BLOCK_SIZE=block_size)


def cost(q, k_cache, v_cache, block_tables, context_lens, o):
    kv_row = k_cache.shape[2] * k_cache.shape[3] * k_cache.element_size()  # one token of one pool
    return {"bytes": 2 * int(context_lens.sum()) * kv_row + 2 * q.nbytes + block_tables.nbytes}


PUZZLE = Puzzle(
    number=16, name="paged_decode", title="Paged decode attention over a block table",
    chapter="ch2 PagedAttention, ch7 Triton decode", kernel="paged_decode_kernel", statement=STATEMENT,
    summary="One query token per sequence against its paged K/V; q, o: (B, H, D); grid (B, H).",
    spec=spec, make_inputs=make_inputs, launch=launch, lines=26,
    shapes={"check": dict(B=4, max_context=64, H=4, KVH=2, D=32, block_size=16),
            "bench": dict(B=64, max_context=2048, H=32, KVH=8, D=128, block_size=16)},
    hints=("Row b of block_tables starts at block_tables_ptr + b * max_blocks.",
           "Token r of block blk, kv head g, dim d: ((blk * BLOCK_SIZE + r) * KVH + g) * D + d.",
           "Loop `for i in range(0, tl.cdiv(n, BLOCK_SIZE))` and mask the tokens at positions >= n."),
    cost=cost,
)
