"""Chapter 0: one decoder for Llama 2/3, Qwen2 and Qwen3 (flags, not subclasses).

The model runs over a *flat* batch: every token of every sequence in one dimension T, with its
position. Attention is the only layer that needs to know which tokens belong together and where the
KV cache lives; it is delegated to an attention backend, the one interface the model calls
(minillm/attention/backend.py: `forward(layer_idx, q, k, v, meta)`), with the metadata its prepare()
built for the step. The forward is tensor work only: no value is read back from the device and no shape
comes from a Python int, so torch.compile traces it whole (chapter 6). Everything else (embeddings, RMSNorm, rotary, MLP) is
token-wise, so the same code serves prefill, decode, and mixed batches.

Differences between the families, as flags on ModelConfig:
  Llama 2/3  no biases; Llama 3.1+ rescales rotary frequencies (rope_type "llama3")
  Qwen2      bias on the q/k/v projections
  Qwen3      RMSNorm over each head of q and k before rotary (q_norm, k_norm)

Checked by: pytest -m ch0 (per-position logits and greedy tokens against transformers).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from minillm.attention.backend import AttentionBackend
from minillm.model.configs import ModelConfig


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Computed in float32 like transformers, then cast back: bf16 variance is too coarse.
        # F.rms_norm is x * rsqrt(mean(x^2) + eps) in one kernel where torch has a fused one.
        y = F.rms_norm(x.float(), (x.shape[-1],), eps=self.eps)
        return self.weight * y.to(x.dtype)


def rope_inv_freq(cfg: ModelConfig) -> torch.Tensor:
    """Inverse frequencies theta^(-2i/d), with Llama 3's long-context rescaling when configured."""
    d = cfg.head_dim
    # float32 throughout, as transformers computes it, so positions far out agree to the last bit.
    inv_freq = 1.0 / (cfg.rope_theta ** (torch.arange(0, d, 2, dtype=torch.int64).float() / d))  # (d/2,)
    scaling = cfg.rope_scaling or {}
    rope_type = scaling.get("rope_type", scaling.get("type", "default"))
    if rope_type == "llama3":
        # Long wavelengths (low frequencies) are divided by `factor`, short ones are kept, and the band
        # in between is interpolated smoothly (Llama 3.1's reference code and transformers agree).
        factor = scaling["factor"]
        low, high = scaling["low_freq_factor"], scaling["high_freq_factor"]
        old_ctx = scaling["original_max_position_embeddings"]
        wavelen = 2 * math.pi / inv_freq
        low_wavelen, high_wavelen = old_ctx / low, old_ctx / high
        smooth = (old_ctx / wavelen - low) / (high - low)
        interpolated = (1 - smooth) * inv_freq / factor + smooth * inv_freq
        inv_freq = torch.where(wavelen > low_wavelen, inv_freq / factor, inv_freq)
        is_medium = (wavelen <= low_wavelen) & (wavelen >= high_wavelen)
        inv_freq = torch.where(is_medium, interpolated, inv_freq)
    elif rope_type not in ("default", "linear"):
        raise ValueError(f"rope_scaling.rope_type={rope_type!r} is not supported (default, linear, llama3)")
    elif rope_type == "linear":
        inv_freq = inv_freq / scaling["factor"]
    return inv_freq


class RotaryEmbedding(nn.Module):
    """Precomputed cos/sin for every position. The model gathers the rows of this step's positions
    once per forward; every layer then rotates its q and k with them."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        inv_freq = rope_inv_freq(cfg)
        t = torch.arange(cfg.max_position_embeddings, dtype=torch.float32)
        freqs = torch.outer(t, inv_freq)  # (max_pos, d/2)
        emb = torch.cat((freqs, freqs), dim=-1)  # (max_pos, d): both halves of a pair share an angle
        self.register_buffer("cos", emb.cos(), persistent=False)
        self.register_buffer("sin", emb.sin(), persistent=False)

    def forward(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.cos[positions].unsqueeze(1), self.sin[positions].unsqueeze(1)  # (T, 1, d) each


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: (T, h, d). "Rotate half" layout, as in HF Llama: dimension i pairs with i + d/2."""
    xf = x.float()
    x1, x2 = xf.chunk(2, dim=-1)  # (T, h, d/2) each
    rotated = torch.cat((-x2, x1), dim=-1)  # (T, h, d)
    return (xf * cos + rotated * sin).to(x.dtype)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.num_heads, self.num_kv_heads, self.head_dim = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        self.q_size = self.num_heads * self.head_dim
        self.kv_size = self.num_kv_heads * self.head_dim
        # q, k and v share one matmul (vLLM's QKVParallelLinear); the loader stacks the HF weights.
        self.qkv_proj = nn.Linear(cfg.hidden_size, self.q_size + 2 * self.kv_size, bias=cfg.qkv_bias)
        self.o_proj = nn.Linear(self.q_size, cfg.hidden_size, bias=False)
        if cfg.qk_norm:
            self.q_norm = RMSNorm(self.head_dim, cfg.rms_norm_eps)
            self.k_norm = RMSNorm(self.head_dim, cfg.rms_norm_eps)
        self.qk_norm = cfg.qk_norm

    def forward(self, x, cos_sin, attn_backend: AttentionBackend, meta) -> torch.Tensor:
        T = x.shape[0]
        nh, nkv, d = self.num_heads, self.num_kv_heads, self.head_dim
        # q, k and v heads side by side: (T, nh + 2 nkv, d), split by views (no reshape that would have
        # to ask whether T is 1, which a compiled forward would then guard on)
        qkv = self.qkv_proj(x).view(T, nh + 2 * nkv, d)
        if self.qk_norm:  # Qwen3: RMSNorm over each head of q and of k, before rotary
            q, k, v = qkv.split([nh, nkv, nkv], dim=1)
            qk = torch.cat((self.q_norm(q), self.k_norm(k)), dim=1)
        else:
            qk, v = qkv.split([nh + nkv, nkv], dim=1)
        # q and k heads rotated in one pass
        q, k = apply_rotary(qk, *cos_sin).split([nh, nkv], dim=1)  # (T, nh, d), (T, nkv, d); v (T, nkv, d)
        o = attn_backend.forward(self.layer_idx, q, k, v, meta)  # (T, nh, d)
        return self.o_proj(o.reshape(T, self.q_size))


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.intermediate_size = cfg.intermediate_size
        self.gate_up_proj = nn.Linear(cfg.hidden_size, 2 * cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up_proj(x).chunk(2, dim=-1)  # (T, I) each
        return self.down_proj(F.silu(gate) * up)


class DecoderLayer(nn.Module):
    def __init__(self, cfg: ModelConfig, layer_idx: int):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = Attention(cfg, layer_idx)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, x, cos_sin, attn_backend: AttentionBackend, meta):
        x = x + self.self_attn(self.input_layernorm(x), cos_sin, attn_backend, meta)
        return x + self.mlp(self.post_attention_layernorm(x))


class CausalLM(nn.Module):
    """Decoder-only transformer over a flat batch of T tokens."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.config = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(cfg, i) for i in range(cfg.num_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.rotary = RotaryEmbedding(cfg)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        if cfg.tie_word_embeddings:
            self.lm_head.weight = self.embed_tokens.weight

    def forward(
        self, input_ids: torch.Tensor, positions: torch.Tensor, attn_backend: AttentionBackend, meta
    ) -> torch.Tensor:
        """input_ids, positions: (T,) -> hidden states (T, hidden)."""
        x = self.embed_tokens(input_ids)  # (T, H)
        cos_sin = self.rotary(positions)  # gathered once, used by every layer
        for layer in self.layers:
            x = layer(x, cos_sin, attn_backend, meta)
        return self.norm(x)

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden (B, H) at the positions that sample -> float32 logits (B, V)."""
        return self.lm_head(hidden).float()
