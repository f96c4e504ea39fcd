#!/usr/bin/env bash
# Chapter benchmarks on one CUDA GPU, plus the CPU test suite run against that machine's library
# versions. Usage: scripts/bench_gpu.sh OUT_DIR [chapter ...]   (default: every landed chapter)
# Needs torch with CUDA, transformers, safetensors, tokenizers, tqdm, matplotlib already installed.
set -uo pipefail
out=${1:?usage: scripts/bench_gpu.sh OUT_DIR [chapter ...]}; shift
chapters=${*:-1}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"
python3 -c "import torch, transformers, triton; print('torch', torch.__version__, 'transformers', transformers.__version__, 'triton', triton.__version__)" | tee -a "$out/gpu.txt"
if python3 -c "import pytest, hypothesis" 2>/dev/null; then
  python3 -m pytest -q -x -m "ch0 or ch1" tests/test_ch0_model.py tests/test_ch1_naive.py 2>&1 | tail -3 | tee -a "$out/gpu.txt"
fi
for ch in $chapters; do
  python3 -m minillm.cli bench --chapter "$ch" --device cuda --model qwen3-0.6b --load-format dummy \
    --out "$out/qwen3" --no-progress
  python3 -m minillm.cli bench --chapter "$ch" --device cuda --out "$out/default" --no-progress
done
