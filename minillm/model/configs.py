"""Chapter 0: the model's shape, read from a Hugging Face config.json or taken from a named config.

Named configs serve benchmarks with random weights (`load_format="dummy"`): the shapes of real
models without downloading them. Only the fields the decoder uses are kept.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

# architectures -> (qkv_bias, qk_norm): the only ways the three families differ in the decoder.
ARCHITECTURES = {
    "LlamaForCausalLM": (False, False),
    "Qwen2ForCausalLM": (True, False),
    "Qwen3ForCausalLM": (False, True),
}
# rope_type -> the rope_scaling keys it reads (minillm/model/llama.py: rope_inv_freq)
ROPE_TYPES = {
    "default": (),
    "linear": ("factor",),
    "llama3": ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"),
}


def _positive_int(hf: dict, key: str, source: str, default: int | None = None) -> int:
    """hf[key] as a positive int; a missing or null key takes the default, if there is one."""
    value = hf.get(key)
    if value is None:
        if default is None:
            raise ValueError(f"{source}: missing required key {key!r}")
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{source}: {key} must be a positive int, got {value!r}")
    return value


def _positive_float(value, key: str, source: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= sys.float_info.max:
        raise ValueError(f"{source}: {key} must be a positive number, got {value!r}")
    return float(value)


def _token_ids(value, key: str, source: str) -> tuple[int, ...]:
    """An int, a list of ints, or null -> a tuple of token ids."""
    ids = () if value is None else tuple(value) if isinstance(value, list) else (value,)
    if any(isinstance(t, bool) or not isinstance(t, int) or t < 0 for t in ids):
        raise ValueError(f"{source}: {key} must be a token id >= 0, a list of them, or null; got {value!r}")
    return ids


@dataclass(frozen=True)
class ModelConfig:
    architecture: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float
    rope_theta: float
    max_position_embeddings: int
    tie_word_embeddings: bool
    qkv_bias: bool = False  # Qwen2
    qk_norm: bool = False  # Qwen3
    rope_scaling: dict | None = None  # e.g. {"rope_type": "llama3", "factor": 32.0, ...}
    eos_token_ids: tuple[int, ...] = ()
    bos_token_id: int | None = None
    extra: dict = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_hf(cls, hf: dict, source: str = "config.json") -> ModelConfig:
        """Build from a config.json dict (transformers 4.x `rope_scaling` or 5.x `rope_parameters`).

        source names the file (or named config) in errors: a missing key or a wrong type is a
        ValueError that says which, not a KeyError or a TypeError from inside the model."""
        if not isinstance(hf, dict):
            raise ValueError(f"{source}: expected a JSON object, got {type(hf).__name__}")
        archs = hf.get("architectures") or []
        if not isinstance(archs, list):
            raise ValueError(f"{source}: architectures must be a list of class names, got {archs!r}")
        arch = next((a for a in archs if a in ARCHITECTURES), None)
        if arch is None:
            raise ValueError(
                f"{source}: architectures={archs!r} is not supported; expected one of {sorted(ARCHITECTURES)}"
            )
        qkv_bias, qk_norm = ARCHITECTURES[arch]
        if arch == "LlamaForCausalLM" and hf.get("attention_bias"):
            qkv_bias = True
        if hf.get("use_sliding_window"):
            raise ValueError(f"{source}: use_sliding_window=true is not supported")
        rope = cls._rope(hf, source)
        rope_theta = _positive_float(
            rope.pop("rope_theta", hf.get("rope_theta", 10000.0)), "rope_theta", source
        )
        if rope.get("rope_type", rope.get("type", "default")) == "default":
            rope = {}
        hidden_size = _positive_int(hf, "hidden_size", source)
        num_heads = _positive_int(hf, "num_attention_heads", source)
        num_kv_heads = _positive_int(hf, "num_key_value_heads", source, default=num_heads)
        if num_heads % num_kv_heads:
            raise ValueError(
                f"{source}: num_attention_heads={num_heads} is not a multiple of num_key_value_heads={num_kv_heads}"
            )
        if hf.get("head_dim") is None and hidden_size % num_heads:
            raise ValueError(
                f"{source}: hidden_size={hidden_size} is not a multiple of num_attention_heads={num_heads}"
                " (and there is no head_dim)"
            )
        tie = hf.get("tie_word_embeddings", False)
        if not isinstance(tie, bool):
            raise ValueError(f"{source}: tie_word_embeddings must be true or false, got {tie!r}")
        bos = _token_ids(hf.get("bos_token_id"), "bos_token_id", source)
        if len(bos) > 1:
            raise ValueError(
                f"{source}: bos_token_id must be one token id or null, got {hf['bos_token_id']!r}"
            )
        return cls(
            architecture=arch,
            vocab_size=_positive_int(hf, "vocab_size", source),
            hidden_size=hidden_size,
            intermediate_size=_positive_int(hf, "intermediate_size", source),
            num_layers=_positive_int(hf, "num_hidden_layers", source),
            num_heads=num_heads,
            num_kv_heads=num_kv_heads,
            head_dim=_positive_int(hf, "head_dim", source, default=hidden_size // num_heads),
            rms_norm_eps=_positive_float(hf.get("rms_norm_eps", 1e-6), "rms_norm_eps", source),
            rope_theta=rope_theta,
            max_position_embeddings=_positive_int(hf, "max_position_embeddings", source, default=2048),
            tie_word_embeddings=tie,
            qkv_bias=qkv_bias,
            qk_norm=qk_norm,
            rope_scaling=rope or None,
            eos_token_ids=_token_ids(hf.get("eos_token_id"), "eos_token_id", source),
            bos_token_id=bos[0] if bos else None,
        )

    @staticmethod
    def _rope(hf: dict, source: str) -> dict:
        """rope_parameters (transformers 5.x) or rope_scaling (4.x), checked against ROPE_TYPES."""
        key = "rope_parameters" if hf.get("rope_parameters") else "rope_scaling"
        rope = hf.get(key) or {}
        if not isinstance(rope, dict):
            raise ValueError(f"{source}: {key} must be an object or null, got {rope!r}")
        rope_type = rope.get("rope_type", rope.get("type", "default"))
        if rope_type not in ROPE_TYPES:
            raise ValueError(
                f"{source}: {key}.rope_type={rope_type!r} is not supported ({', '.join(ROPE_TYPES)})"
            )
        for name in ROPE_TYPES[rope_type]:
            if name not in rope:
                raise ValueError(f"{source}: {key} of rope_type {rope_type!r} needs {name!r}")
            _positive_float(rope[name], f"{key}.{name}", source)
        return dict(rope)


# Shapes of public checkpoints, for `load_format="dummy"` (random weights, no download).
NAMED_CONFIGS: dict[str, dict] = {
    "qwen3-0.6b": dict(
        architectures=["Qwen3ForCausalLM"],
        vocab_size=151936,
        hidden_size=1024,
        intermediate_size=3072,
        num_hidden_layers=28,
        num_attention_heads=16,
        num_key_value_heads=8,
        head_dim=128,
        rms_norm_eps=1e-6,
        rope_theta=1000000.0,
        max_position_embeddings=40960,
        tie_word_embeddings=True,
        eos_token_id=151645,
    ),
    "qwen2.5-0.5b": dict(
        architectures=["Qwen2ForCausalLM"],
        vocab_size=151936,
        hidden_size=896,
        intermediate_size=4864,
        num_hidden_layers=24,
        num_attention_heads=14,
        num_key_value_heads=2,
        head_dim=64,
        rms_norm_eps=1e-6,
        rope_theta=1000000.0,
        max_position_embeddings=32768,
        tie_word_embeddings=True,
        eos_token_id=151645,
    ),
    "llama-3.2-1b": dict(
        architectures=["LlamaForCausalLM"],
        vocab_size=128256,
        hidden_size=2048,
        intermediate_size=8192,
        num_hidden_layers=16,
        num_attention_heads=32,
        num_key_value_heads=8,
        head_dim=64,
        rms_norm_eps=1e-5,
        rope_theta=500000.0,
        max_position_embeddings=131072,
        tie_word_embeddings=True,
        rope_scaling=dict(
            rope_type="llama3",
            factor=32.0,
            low_freq_factor=1.0,
            high_freq_factor=4.0,
            original_max_position_embeddings=8192,
        ),
        eos_token_id=[128001, 128008, 128009],
        bos_token_id=128000,
    ),
}
