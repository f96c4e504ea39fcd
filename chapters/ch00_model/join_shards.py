"""Chapter 0: join a sharded safetensors checkpoint into one model.safetensors, tensors unchanged.

The idea: the device that trained the model hands files back in pieces of at most 16 MiB, so train.py
was run with --shard-mb 12 there; the shipped folder holds a single file, which every loader reads.
config.json and generation_config.json are copied byte for byte, the tokenizer from the asset folder.

Run:
    python chapters/ch00_model/join_shards.py SHARDED_DIR minillm/assets/pystd-llama
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from safetensors.torch import load_file, save_file


def join(src: Path, dst: Path) -> int:
    index = json.loads((src / "model.safetensors.index.json").read_text())
    tensors = {}
    for shard in sorted(set(index["weight_map"].values())):
        tensors |= load_file(src / shard)
    assert set(tensors) == set(index["weight_map"]), "the index and the shards disagree"
    dst.mkdir(parents=True, exist_ok=True)
    save_file(tensors, dst / "model.safetensors", metadata={"format": "pt"})
    for name in ("config.json", "generation_config.json"):
        shutil.copyfile(src / name, dst / name)
    return sum(t.numel() for t in tensors.values())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("src", type=Path)
    p.add_argument("dst", type=Path)
    args = p.parse_args()
    print(f"{join(args.src, args.dst):,} parameters -> {args.dst / 'model.safetensors'}")


if __name__ == "__main__":
    main()
