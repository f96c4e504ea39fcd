"""Chapter 3 workloads: prompts that share prefixes, in the four shapes a prefix cache meets in service.

  prefix_repetition  a few long prefixes (system prompts, documents), each reused by many requests
  multi_turn         chat: every turn's prompt is the previous turn's prompt + an answer + a new message
  few_shot           one long block of examples shared by every request, then a short question
  tree_of_thought    a root prompt, branches extending it, sub-branches extending those

Each returns a list of rounds (Workloads). A round starts when the previous one has finished: a chat
user reads the answer before sending the next turn, and a tree search expands a node after its parent
was generated. Rounds make the order in which prefixes appear (and can be evicted) a property of the
workload, not of how fast a device runs, so every cache variant meets the same sequence of prompts.
Prompts are random token ids (as in workloads.py), seeded; requests ignore EOS.

Run: minillm bench --chapter 3 [--quick] (minillm/bench/ch03.py)
"""

from __future__ import annotations

import random

from minillm.bench.workloads import BenchRequest, Workload, _random_ids


def footprint(rounds: list[Workload], block_size: int = 1) -> int:
    """KV slots the workload would hold if nothing were shared or freed: every request's prompt + output
    tokens, in whole blocks of block_size."""
    return sum(
        block_size * -(-(len(r.prompt_token_ids) + r.max_tokens) // block_size)
        for wl in rounds
        for r in wl.requests
    )


def longest_request(rounds: list[Workload]) -> int:
    return max(len(r.prompt_token_ids) + r.max_tokens for wl in rounds for r in wl.requests)


def prefix_repetition(
    num_prefixes: int,
    prefix_len: int,
    suffix_len: int,
    output_len: int,
    num_requests: int,
    vocab_size: int,
    seed: int = 0,
) -> list[Workload]:
    """num_requests prompts, prefix i % num_prefixes + a distinct suffix, in shuffled order, one round."""
    rng = random.Random(seed)
    prefixes = [_random_ids(rng, prefix_len, vocab_size) for _ in range(num_prefixes)]
    reqs = [
        BenchRequest(prefixes[i % num_prefixes] + _random_ids(rng, suffix_len, vocab_size), output_len)
        for i in range(num_requests)
    ]
    rng.shuffle(reqs)
    params = dict(
        kind="prefix-repetition",
        num_prefixes=num_prefixes,
        prefix_len=prefix_len,
        suffix_len=suffix_len,
        output_len=output_len,
        seed=seed,
    )
    return [Workload(f"prefix-{num_prefixes}x{prefix_len}", reqs, params)]


def multi_turn(
    num_conversations: int,
    num_turns: int,
    first_len: int,
    user_len: int,
    output_len: int,
    vocab_size: int,
    seed: int = 0,
) -> list[Workload]:
    """One round per turn. Turn t's prompt = turn t-1's prompt + a pseudo answer of output_len random
    tokens + a user message of user_len. The pseudo answer is not the tokens the model generated (the
    workload is fixed before it runs), so a cache can reuse the previous prompt but not the answer.
    Conversations take their turn in a new shuffled order each round: between two turns of one
    conversation every other conversation takes one, so a pool too small for all histories must evict
    some, and the admission order decides whose history survives (LRU vs longest-prefix-match)."""
    rng = random.Random(seed)
    history = [_random_ids(rng, first_len, vocab_size) for _ in range(num_conversations)]
    rounds = []
    for turn in range(num_turns):
        if turn:
            history = [
                h + _random_ids(rng, output_len, vocab_size) + _random_ids(rng, user_len, vocab_size)
                for h in history
            ]
        order = list(range(num_conversations))
        rng.shuffle(order)
        reqs = [BenchRequest(list(history[c]), output_len) for c in order]
        params = dict(
            kind="multi-turn",
            turn=turn + 1,
            num_conversations=num_conversations,
            first_len=first_len,
            user_len=user_len,
            output_len=output_len,
            seed=seed,
        )
        rounds.append(Workload(f"chat-turn{turn + 1}", reqs, params))
    return rounds


def few_shot(
    examples_len: int, question_len: int, output_len: int, num_requests: int, vocab_size: int, seed: int = 0
) -> list[Workload]:
    """One shared block of examples_len tokens + a distinct question per request, one round."""
    rng = random.Random(seed)
    examples = _random_ids(rng, examples_len, vocab_size)
    reqs = [
        BenchRequest(examples + _random_ids(rng, question_len, vocab_size), output_len)
        for _ in range(num_requests)
    ]
    params = dict(
        kind="few-shot",
        examples_len=examples_len,
        question_len=question_len,
        output_len=output_len,
        seed=seed,
    )
    return [Workload(f"few-shot-{examples_len}+{question_len}", reqs, params)]


def tree_of_thought(
    num_trees: int,
    root_len: int,
    fan_out: int,
    depth: int,
    branch_len: int,
    output_len: int,
    vocab_size: int,
    seed: int = 0,
) -> list[Workload]:
    """One round per tree level: num_trees roots, then fan_out children per node, each child's prompt
    its parent's + branch_len new tokens (a thought), down to depth levels below the roots."""
    rng = random.Random(seed)
    level = [_random_ids(rng, root_len, vocab_size) for _ in range(num_trees)]
    rounds = []
    for d in range(depth + 1):
        if d:
            level = [p + _random_ids(rng, branch_len, vocab_size) for p in level for _ in range(fan_out)]
        reqs = [BenchRequest(list(p), output_len) for p in level]
        rng.shuffle(reqs)
        params = dict(
            kind="tree-of-thought",
            level=d,
            num_trees=num_trees,
            root_len=root_len,
            fan_out=fan_out,
            branch_len=branch_len,
            output_len=output_len,
            seed=seed,
        )
        rounds.append(Workload(f"tree-level{d}", reqs, params))
    return rounds
