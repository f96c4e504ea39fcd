"""Chapter 0: the model against transformers, family by family (tiny random checkpoints)."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import make_tiny_checkpoint

from minillm import LLM, SamplingParams
from minillm.attention.sdpa import NoCacheAttention
from minillm.model.configs import NAMED_CONFIGS, ModelConfig
from minillm.model.llama import rope_inv_freq
from minillm.model.loader import load_model, read_config
from minillm.request import Sequence
from minillm.runner import ModelRunner
from minillm.scheduler import ScheduledBatch

pytestmark = pytest.mark.ch0


def all_position_logits(model, prompts: list[list[int]]) -> list[torch.Tensor]:
    """Logits at every position of every prompt, in one flat no-cache forward."""
    seqs = [Sequence(i, p, SamplingParams()) for i, p in enumerate(prompts)]
    runner = ModelRunner(model, NoCacheAttention(), None, "cpu", max_num_tokens=sum(map(len, prompts)))
    input_ids, positions, meta, _ = runner.prepare(ScheduledBatch(seqs, [len(p) for p in prompts]))
    with torch.no_grad():
        logits = model.compute_logits(model(input_ids, positions, runner.attn_backend, meta))
    return list(logits.split([len(p) for p in prompts]))


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


def test_logits_match_transformers(tiny_checkpoint):
    path, hf = tiny_checkpoint
    model, _, _ = load_model(path)
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(0, 384, (n,), generator=g).tolist() for n in (1, 7, 64, 150)]
    ours = all_position_logits(model, prompts)
    for p, mine in zip(prompts, ours):
        with torch.no_grad():
            ref = hf(torch.tensor([p])).logits[0].float()
        assert mine.shape == ref.shape
        assert rel_err(mine, ref) < 1e-4


def test_greedy_generation_matches_transformers(tiny_checkpoint):
    path, hf = tiny_checkpoint
    llm = LLM(path, stage="naive", kv_cache_tokens=2048, max_model_len=256)
    prompts = [[5, 17, 33, 2, 9, 100, 7], [8, 9], list(range(40, 90))]
    outs = llm.generate(
        prompt_token_ids=prompts,
        sampling_params=SamplingParams(max_tokens=32, temperature=0.0, ignore_eos=True),
    )
    for p, out in zip(prompts, outs):
        ref = hf.generate(
            torch.tensor([p]), max_new_tokens=32, do_sample=False, eos_token_id=None, pad_token_id=0
        )[0, len(p) :]
        assert out.token_ids == ref.tolist()
        assert out.finish_reason == "length"


def test_sharded_checkpoint_loads_identically(tmp_path):
    single, sharded = tmp_path / "single", tmp_path / "sharded"
    make_tiny_checkpoint(single, "qwen3", seed=3)
    make_tiny_checkpoint(sharded, "qwen3", seed=3, max_shard_size="100KB")
    assert (sharded / "model.safetensors.index.json").is_file()
    a, _, _ = load_model(str(single))
    b, _, _ = load_model(str(sharded))
    for (na, pa), (nb, pb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert na == nb and torch.equal(pa, pb)


def test_llama3_rope_frequencies_match_transformers():
    from transformers import LlamaConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    rope = dict(
        rope_type="llama3",
        rope_theta=500000.0,
        factor=32.0,
        low_freq_factor=1.0,
        high_freq_factor=4.0,
        original_max_position_embeddings=8192,
    )
    hf_cfg = LlamaConfig(hidden_size=2048, num_attention_heads=32, head_dim=64, rope_scaling=rope)
    ref, _ = ROPE_INIT_FUNCTIONS["llama3"](hf_cfg, "cpu")
    cfg = ModelConfig.from_hf({**hf_cfg.to_dict(), "architectures": ["LlamaForCausalLM"]})
    assert cfg.rope_scaling["rope_type"] == "llama3"
    assert torch.equal(rope_inv_freq(cfg), ref)


def test_named_configs_have_real_shapes():
    qwen = ModelConfig.from_hf(NAMED_CONFIGS["qwen3-0.6b"])
    assert (qwen.num_layers, qwen.hidden_size, qwen.num_heads, qwen.num_kv_heads, qwen.head_dim) == (
        28,
        1024,
        16,
        8,
        128,
    )
    assert qwen.qk_norm and not qwen.qkv_bias and qwen.tie_word_embeddings
    llama, path = read_config("llama-3.2-1b", "dummy")
    assert (
        path is None
        and llama.rope_scaling["factor"] == 32.0
        and llama.eos_token_ids == (128001, 128008, 128009)
    )


def test_dummy_weights_from_a_checkpoint_config(tmp_path):
    make_tiny_checkpoint(tmp_path, "qwen2")
    model, cfg, _ = load_model(str(tmp_path), load_format="dummy", seed=1)
    again, _, _ = load_model(str(tmp_path), load_format="dummy", seed=1)
    assert cfg.qkv_bias
    assert torch.equal(model.layers[0].self_attn.qkv_proj.weight, again.layers[0].self_attn.qkv_proj.weight)
    assert model.layers[0].self_attn.qkv_proj.weight.std().item() == pytest.approx(0.02, rel=0.1)


def test_unsupported_architecture_is_named(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["GPT2LMHeadModel"]}))
    with pytest.raises(ValueError, match="architectures"):
        load_model(str(tmp_path))


def test_missing_model_path_is_named(tmp_path):
    with pytest.raises(ValueError, match="model="):
        LLM(str(tmp_path / "nope"))
    with pytest.raises(ValueError, match="config.json"):
        load_model(str(tmp_path))


def test_checkpoint_missing_a_weight_is_named(tmp_path):
    from safetensors.torch import load_file, save_file

    make_tiny_checkpoint(tmp_path, "llama")
    weights = load_file(tmp_path / "model.safetensors")
    del weights["model.layers.1.self_attn.k_proj.weight"]
    save_file(weights, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match="k_proj|qkv_proj"):
        load_model(str(tmp_path))
