"""Shared fixtures: tiny random checkpoints of each model family, built with transformers'
save_pretrained (no downloads), plus a tiny byte-level BPE tokenizer for text in and out."""

from __future__ import annotations

import os
import random

import pytest
import torch

# Chapter 7's kernels run in Triton's interpreter without a GPU. `import minillm` sets this too, but a test
# module that imports torch._dynamo first (which imports Triton) would have Triton's helpers decorated
# for compiling: set it before any test module is imported.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

FAMILIES = ("llama", "llama3", "qwen2", "qwen3")
VOCAB = 384


def _hf_config(family: str):
    from transformers import LlamaConfig, Qwen2Config, Qwen3Config

    common = dict(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=112,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        eos_token_id=2,
        bos_token_id=1,
    )
    if family == "llama":
        return LlamaConfig(**common, tie_word_embeddings=False)
    if family == "llama3":
        rope = dict(
            rope_type="llama3",
            rope_theta=500000.0,
            factor=8.0,
            low_freq_factor=1.0,
            high_freq_factor=4.0,
            original_max_position_embeddings=32,
        )
        return LlamaConfig(**common, tie_word_embeddings=True, rope_scaling=rope)
    if family == "qwen2":
        return Qwen2Config(**common, tie_word_embeddings=True)
    if family == "qwen3":
        return Qwen3Config(**common, head_dim=32, tie_word_embeddings=False)
    raise ValueError(family)


def make_tiny_checkpoint(path, family: str, seed: int = 0, max_shard_size: str | None = None):
    """Save a random-init transformers model of `family`; returns the HF model (float32, eval)."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    hf = AutoModelForCausalLM.from_config(_hf_config(family)).float().eval()
    with torch.no_grad():  # random init is too tame to tell heads apart: make the weights bolder
        for name, p in hf.named_parameters():
            if "norm" in name:
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            else:
                p.normal_(0.0, 0.08)
    kwargs = {"max_shard_size": max_shard_size} if max_shard_size else {}
    hf.save_pretrained(path, **kwargs)
    return hf


@pytest.fixture(scope="session", params=FAMILIES)
def tiny_checkpoint(request, tmp_path_factory):
    """(path, hf_model) for each family."""
    path = tmp_path_factory.mktemp(f"tiny-{request.param}")
    return str(path), make_tiny_checkpoint(path, request.param)


TOKENIZER_TEXT = (
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return fibonacci(n - 1) + fibonacci(n - 2)\n"
    "The quick brown fox jumps over the lazy dog. Héllo wörld, 世界, naïve café 🚀 ✓ — ünïcödé.\n"
    "import os\nimport sys\nclass Stack:\n    def __init__(self):\n        self.items = []\n"
) * 20


def save_tiny_tokenizer(path, vocab_size: int = VOCAB) -> None:
    """A real byte-level BPE (256 byte tokens + merges), saved as an HF fast tokenizer."""
    import json

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - 3,
        special_tokens=["<pad>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator([TOKENIZER_TEXT], trainer)
    tok.save(f"{path}/tokenizer.json")
    cfg = {"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "</s>", "bos_token": "<s>"}
    with open(f"{path}/tokenizer_config.json", "w") as f:
        json.dump(cfg, f)


@pytest.fixture(scope="session")
def tiny_model_with_tokenizer(tmp_path_factory):
    """A tiny Llama 3 checkpoint with its own byte-level BPE tokenizer: text in, text out."""
    path = tmp_path_factory.mktemp("tiny-llama-tok")
    hf = make_tiny_checkpoint(path, "llama3")
    save_tiny_tokenizer(path)
    return str(path), hf


@pytest.fixture(scope="session")
def tiny_path(tiny_model_with_tokenizer):
    return tiny_model_with_tokenizer[0]


def shared_prefix_workload(n, seed, num_prefixes=3, prefix_len=40):
    """n requests: one of num_prefixes shared random prefixes + a random suffix; greedy, EOS ignored."""
    from minillm import SamplingParams

    rng = random.Random(seed)
    prefixes = [[rng.randrange(3, 384) for _ in range(prefix_len)] for _ in range(num_prefixes)]
    prompts = [
        rng.choice(prefixes) + [rng.randrange(3, 384) for _ in range(rng.randint(1, 20))] for _ in range(n)
    ]
    params = [
        SamplingParams(max_tokens=rng.randint(1, 16), temperature=0.0, ignore_eos=True) for _ in prompts
    ]
    return prompts, params


@pytest.fixture(scope="session")
def shared_prefix_reference(tiny_path):
    """A shared-prefix workload and its greedy outputs with no prefix cache (chapter 3's reference)."""
    from minillm import LLM

    prompts, params = shared_prefix_workload(30, seed=0)
    llm = LLM(tiny_path, stage="paged", max_model_len=128, kv_cache_tokens=4096)
    return (
        prompts,
        params,
        [o.token_ids for o in llm.generate(prompt_token_ids=prompts, sampling_params=params)],
    )
