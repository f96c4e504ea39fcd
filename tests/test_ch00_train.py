"""Chapter 0: the training script's quick mode writes a loadable checkpoint, and the shipped default
model loads in transformers with a tokenizer that round-trips any text.
Run: pytest -m ch0 tests/test_ch00_train.py"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.ch0

REPO = Path(__file__).resolve().parents[1]
ASSET = REPO / "minillm/assets/pystd-llama"
TEXTS = [
    "héllo 世界 🚀",
    "def f(x):\n\treturn x ** 2  # ½ ≠ ∞\r\n",
    "  leading and trailing  ",
    "<|endoftext|>",
]


def test_quick_training_writes_loadable_checkpoint(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "ckpt"
    subprocess.run(
        [sys.executable, str(REPO / "chapters/ch00_model/train.py"), "--quick", "--out", str(out)],
        check=True,
        timeout=120,
        cwd=tmp_path,
    )
    (log_path,) = tmp_path.glob("ckpt_train_cpu_*.json")  # beside the checkpoint, not inside it
    log = json.loads(log_path.read_text())
    assert log["steps"] == 30 and log["val"], "quick mode runs 30 steps with evaluations"
    assert log["val"][-1]["val_code"]["loss"] < log["val"][0]["val_code"]["loss"]
    assert log_path.with_suffix(".png").stat().st_size > 0
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(out)
    ids = tok("import os\n", return_tensors="pt").input_ids
    assert model(ids).logits.shape == (1, ids.shape[1], model.config.vocab_size)


def test_shipped_checkpoint_is_a_small_gqa_llama():
    config = json.loads((ASSET / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert config["num_key_value_heads"] < config["num_attention_heads"]
    assert config["hidden_size"] // config["num_attention_heads"] == config["head_dim"] == 64
    assert config["tie_word_embeddings"] and config["eos_token_id"] == 0
    assert sum(f.stat().st_size for f in ASSET.iterdir()) <= 25_000_000


def test_shipped_checkpoint_loads_and_writes_python():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(ASSET, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(ASSET)
    assert tok.eos_token_id == model.config.eos_token_id == model.generation_config.eos_token_id
    ids = tok("def fibonacci(n):\n", return_tensors="pt").input_ids
    out = model.generate(ids, max_new_tokens=12, do_sample=False)
    text = tok.decode(out[0, ids.shape[1] :])
    assert text.startswith(" ") or text.strip(), "a continuation, not empty"
    with torch.no_grad():  # the model has learnt something: it predicts held-in code well
        loss = model(ids, labels=ids).loss
    assert loss < 6.0


def test_shipped_tokenizer_round_trips_non_ascii():
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(ASSET)
    assert tok.vocab_size == 8192 and tok.bos_token_id == tok.eos_token_id == 0
    for s in TEXTS + [Path(json.__file__).read_text(encoding="utf-8")[:3000]]:
        ids = tok.encode(s)
        assert tok.decode(ids) == s
    assert len(tok.encode("    return self")) <= 3, "a real BPE: frequent code pieces are single tokens"
