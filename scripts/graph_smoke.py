"""CUDA-graph smoke check on the embedded default model: stage compiled without compile (graphs only)
against stage unified, greedy, a batch whose size falls between capture buckets and whose members
finish at different steps; also checks that a replay allocates nothing.

    python scripts/graph_smoke.py        # needs CUDA
"""

import torch

from minillm import LLM, SamplingParams

opts = dict(device="cuda", max_model_len=512, max_num_seqs=16, kv_cache_tokens=8192)
prompts = [[16 + (7 * i + j) % 3000 for j in range(5 + 3 * i)] for i in range(11)]
params = [SamplingParams(max_tokens=4 + 5 * i, temperature=0.0, ignore_eos=True) for i in range(11)]
want = LLM(stage="unified", **opts).generate(prompt_token_ids=prompts, sampling_params=params)
llm = LLM(stage="compiled", compile=None, **opts)
runner = llm.engine.runner
print(f"captured {len(runner.graphs)} graphs in {runner.capture_s:.2f} s")
replay = runner.forward
counts = []


def counting_forward(*args):
    before = torch.cuda.memory_stats()["allocation.all.allocated"]
    out = replay(*args)
    counts.append(torch.cuda.memory_stats()["allocation.all.allocated"] - before)
    return out


runner.forward = counting_forward
got = llm.generate(prompt_token_ids=prompts, sampling_params=params)
same = sum(a.token_ids == b.token_ids for a, b in zip(got, want))
print(f"replays {runner.num_replays}; outputs equal to unified: {same}/{len(prompts)}")
print(f"allocations during replayed forwards: {sum(counts[-runner.num_replays :])} (expect 0)")
