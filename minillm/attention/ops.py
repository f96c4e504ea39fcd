"""Writing a step's K/V into the paged cache, as one opaque operator.

`cache.view(-1, nkv, d)[slot_mapping] = k` is the obvious eager code. Traced by torch.compile it turns
into a functional copy of the whole cache followed by a copy back, unless a later pass re-inplaces it,
and its broadcasting rule makes the compiled forward guard on a one-token step. vLLM and SGLang register
their cache writes as custom operators for these reasons; so does this one: torch.compile sees a call
that mutates `k_cache` and `v_cache` in place and returns nothing, and keeps it that way.

Checked by: pytest -m ch6 (the compiled stage's tokens equal eager), pytest -k padded_rows.
"""

from __future__ import annotations

import torch


def write_kv(k, v, k_cache, v_cache, slot_mapping) -> None:
    """k, v: (T, nkv, d) this step's; k_cache, v_cache: (blocks, block_size, nkv, d) one layer's;
    slot_mapping: (T,) int64, slot = block * block_size + offset."""
    nkv, d = k.shape[1:]
    k_cache.view(-1, nkv, d).index_copy_(0, slot_mapping, k)
    v_cache.view(-1, nkv, d).index_copy_(0, slot_mapping, v)


@torch.library.custom_op("minillm::store_kv", mutates_args=("k_cache", "v_cache"))
def _store_kv_op(
    k: torch.Tensor, v: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, slot_mapping: torch.Tensor
) -> None:
    write_kv(k, v, k_cache, v_cache, slot_mapping)


@_store_kv_op.register_fake
def _(k, v, k_cache, v_cache, slot_mapping) -> None:
    return None


def store_kv(k, v, k_cache, v_cache, slot_mapping) -> None:
    """The operator while torch.compile traces; eagerly, the same code called directly (a custom op's
    Python dispatch costs tens of microseconds a call, paid per layer per step)."""
    if torch.compiler.is_compiling():
        _store_kv_op(k, v, k_cache, v_cache, slot_mapping)
    else:
        write_kv(k, v, k_cache, v_cache, slot_mapping)
