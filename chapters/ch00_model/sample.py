"""Chapter 0: check the shipped checkpoint from the outside, with transformers alone, on the CPU.

The idea: whatever trained the model, the folder must stand on its own. This loads it with
AutoModelForCausalLM / AutoTokenizer (bfloat16 weights upcast to float32), recomputes the held-out loss
with the same windows as train.py, and prints greedy and sampled continuations as markdown (the
README's samples come from here).

Run:
    python chapters/ch00_model/sample.py                  # samples only
    python chapters/ch00_model/sample.py --eval           # + held-out loss (a few minutes on 2 cores)
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from train import ASSET_DIR, REPO, TrainConfig, evaluate, token_byte_lengths

PROMPTS = [
    "def fibonacci(n):", "import os\n", "class Stack:", "for line in open(path):",
    "The list data type", "The \"if\" statement is used for",
]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, default=ASSET_DIR)
    p.add_argument("--max-new-tokens", type=int, default=80)
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval", action="store_true", help="held-out loss from the token streams in --data")
    p.add_argument("--data", type=Path, default=REPO / ".data/ch00")
    args = p.parse_args()

    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(args.model)
    if args.eval:
        cfg = TrainConfig()
        byte_len = token_byte_lengths(cfg.vocab_size)
        for name in ("val_code", "val_text"):
            data = torch.from_numpy(np.fromfile(args.data / f"{name}.bin", dtype=np.uint16).astype(np.int32))
            r = evaluate(model, data, byte_len, cfg, lambda: torch.autocast("cpu", enabled=False))
            print(f"{name}: {r['loss']:.3f} nats/token (ppl {r['ppl']:.2f}), {r['bits_per_byte']:.3f} bits/byte "
                  f"over {r['tokens']:,} tokens")
    for prompt in PROMPTS:
        ids = tok(prompt, return_tensors="pt").input_ids  # (1, T); no BOS is added
        for label, kw in (("greedy", {"do_sample": False}),
                          (f"temperature {args.temperature}, seed {args.seed}",
                           {"do_sample": True, "temperature": args.temperature, "top_k": 0})):
            torch.manual_seed(args.seed)
            out = model.generate(ids, max_new_tokens=args.max_new_tokens, **kw)  # (1, T + new)
            text = tok.decode(out[0], skip_special_tokens=False)
            print(f"**{prompt!r}**, {label}:\n\n```\n{text}\n```\n")


if __name__ == "__main__":
    main()
