"""Chapter 0: build the model from a Hugging Face checkpoint folder, or from a named config with
random weights (`load_format="dummy"`, for benchmarks of large shapes without downloads).

Checkpoint weights are named as in transformers (q_proj, k_proj, v_proj, gate_proj, up_proj, ...).
Our model fuses q/k/v into qkv_proj and gate/up into gate_up_proj, as vLLM does, so the loader
copies each HF tensor into its slice of the fused parameter ("stacked parameters").

Checked by: pytest -m ch0.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from minillm.model.configs import NAMED_CONFIGS, ModelConfig
from minillm.model.llama import CausalLM

# HF name fragment -> (our fused parameter fragment, shard id)
STACKED_PARAMS = {
    ".q_proj.": (".qkv_proj.", "q"),
    ".k_proj.": (".qkv_proj.", "k"),
    ".v_proj.": (".qkv_proj.", "v"),
    ".gate_proj.": (".gate_up_proj.", 0),
    ".up_proj.": (".gate_up_proj.", 1),
}


@contextlib.contextmanager
def _default_dtype(dtype: torch.dtype):
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def read_config(model: str, load_format: str = "auto") -> tuple[ModelConfig, Path | None]:
    """Return the model config and the checkpoint folder (None for a named dummy config)."""
    if load_format not in ("auto", "safetensors", "dummy"):
        raise ValueError(f"load_format={load_format!r}: expected 'auto', 'safetensors' or 'dummy'")
    if load_format == "dummy" and model in NAMED_CONFIGS:
        return ModelConfig.from_hf(NAMED_CONFIGS[model], source=f"named config {model!r}"), None
    path = Path(model)
    if not path.is_dir():
        names = ", ".join(sorted(NAMED_CONFIGS))
        raise ValueError(
            f"model={model!r}: no such checkpoint folder (named configs for load_format='dummy': {names})"
        )
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise ValueError(f"model={model!r}: the folder has no config.json")
    return ModelConfig.from_hf(_read_json(cfg_file), source=str(cfg_file)), path


def _read_json(file: Path):
    """The parsed file; a file that is not UTF-8 JSON is a ValueError naming it and the place."""
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{file}: not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"{file}: not valid JSON (not UTF-8 text: {e.reason} at byte {e.start})") from None


def _weight_files(path: Path) -> list[Path]:
    index = path / "model.safetensors.index.json"
    if index.is_file():
        weight_map = _read_json(index)
        weight_map = weight_map.get("weight_map") if isinstance(weight_map, dict) else None
        if not isinstance(weight_map, dict) or not all(isinstance(f, str) for f in weight_map.values()):
            raise ValueError(f"{index}: expected a 'weight_map' object of weight name -> file name")
        files = [path / f for f in sorted(set(weight_map.values()))]
        for file in files:
            if not file.is_file():
                raise ValueError(f"{index}: its weight_map names {file.name!r}, which is not in the folder")
        return files
    single = path / "model.safetensors"
    if single.is_file():
        return [single]
    raise ValueError(f"model={str(path)!r}: no model.safetensors or model.safetensors.index.json")


def _required_keys(params: dict) -> set[str]:
    """Every parameter, and every shard of a fused one, must come from the checkpoint."""
    keys = set()
    for name in params:
        if ".qkv_proj." in name:
            keys |= {f"{name}:{s}" for s in ("q", "k", "v")}
        elif ".gate_up_proj." in name:
            keys |= {f"{name}:0", f"{name}:1"}
        else:
            keys.add(name)
    return keys


def _shard_slice(shard, cfg: ModelConfig) -> slice:
    if shard in ("q", "k", "v"):
        q, kv = cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim
        start = {"q": 0, "k": q, "v": q + kv}[shard]
        return slice(start, start + (q if shard == "q" else kv))
    return slice(shard * cfg.intermediate_size, (shard + 1) * cfg.intermediate_size)


def _destination(params: dict, name: str, cfg: ModelConfig) -> tuple[torch.Tensor | None, str]:
    """The parameter (or slice of a fused one) an HF weight goes to, and its key in `filled`."""
    for frag, (fused, shard) in STACKED_PARAMS.items():
        if frag in name:
            target = name.replace(frag, fused)
            if target not in params:
                return None, target
            return params[target][_shard_slice(shard, cfg)], f"{target}:{shard}"
    return params.get(name), name


def _open_safetensors(file: Path):
    """safe_open, with a truncated or corrupt file reported as a ValueError that names it."""
    try:
        return safe_open(str(file), framework="pt")
    except (SafetensorError, OSError) as e:
        hint = "; it is a Git LFS pointer: run `git lfs pull`" if _is_lfs_pointer(file) else ""
        raise ValueError(f"{file}: not a readable safetensors file ({e}){hint}") from None


def _is_lfs_pointer(file: Path) -> bool:
    try:
        with open(file, "rb") as f:
            return f.read(40).startswith(b"version https://git-lfs")
    except OSError:
        return False


def load_weights(model: CausalLM, path: Path) -> None:
    cfg = model.config
    params = dict(model.named_parameters())
    filled: set[str] = set()
    for file in _weight_files(path):
        with _open_safetensors(file) as f:
            for hf_name in f.keys():
                name = hf_name.removeprefix("model.")
                if cfg.tie_word_embeddings and name == "lm_head.weight":
                    continue  # tied: lm_head shares embed_tokens
                if "rotary_emb" in name:
                    continue
                dest, key = _destination(params, name, cfg)
                if dest is None:
                    raise ValueError(f"{file}: unexpected weight {hf_name!r}")
                try:
                    tensor = f.get_tensor(hf_name)
                except SafetensorError as e:
                    raise ValueError(f"{file}: cannot read weight {hf_name!r} ({e})") from None
                if tensor.shape != dest.shape:
                    raise ValueError(
                        f"{file}: weight {hf_name!r} has shape {tuple(tensor.shape)}, but config.json gives "
                        f"{tuple(dest.shape)}"
                    )
                with torch.no_grad():
                    dest.copy_(tensor)
                filled.add(key)
    missing = sorted(_required_keys(params) - filled)
    if missing:
        raise ValueError(f"model={str(path)!r}: checkpoint lacks weights {missing[:5]}")


def init_dummy_weights(model: CausalLM, seed: int = 0) -> None:
    """Random weights with the scale of a trained model (std 0.02), norms at one, biases at zero."""
    gen = torch.Generator(device=model.embed_tokens.weight.device).manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.fill_(1.0)
            elif name.endswith(".bias"):
                p.zero_()
            else:
                p.normal_(0.0, 0.02, generator=gen)


def load_model(
    model: str,
    *,
    load_format: str = "auto",
    dtype: torch.dtype = torch.float32,
    device: str = "cpu",
    seed: int = 0,
) -> tuple[CausalLM, ModelConfig, Path | None]:
    cfg, path = read_config(model, load_format)
    with _default_dtype(dtype), torch.device(device):
        net = CausalLM(cfg)
    if load_format == "dummy":
        init_dummy_weights(net, seed)
    else:
        load_weights(net, path)
    return net.eval(), cfg, path
